"""`expansion train`: build both training sets, fit, evaluate, log and register both models."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from features.build import Progress
from features.dataset import Dataset
from serving.scoring import next_steps, prospective_inputs
from serving.settings import Settings
from training.config import TrainingConfig
from training.decision_metric import decision_metrics
from training.tracking import log_and_register
from training.train import FittedModel, train_post_upsell, train_propensity


@dataclass
class TrainingResult:
    training_id: str
    propensity: FittedModel
    post_upsell: FittedModel
    versions: dict[str, str]
    seconds: float


def net_value_decision_metrics(
    dataset: Dataset, config: TrainingConfig, propensity: FittedModel, post_upsell: FittedModel
) -> dict[str, float]:
    """Top-decile retained-MRR capture of net value and its baselines on the test period.

    Net value is computed as the service does (`serving.scoring`), from the two models just fitted
    and the dataset's price list.
    """
    test = propensity.test_frame
    p_expand = propensity.model.predict_proba(test)
    steps = next_steps(test, dataset.frame("plans"))
    p_churn = post_upsell.model.predict_proba(
        prospective_inputs(test, steps, post_upsell.model.contract.metadata)
    )
    net = p_expand * steps["expected_uplift_mrr"].to_numpy() * (1 - p_churn)
    return decision_metrics(
        dataset,
        test,
        {"net_value": net, "propensity": p_expand},
        config.horizon_days,
        config.seed,
    )


def train_models(
    dataset: Dataset, config: TrainingConfig, settings: Settings, progress: Progress | None = None
) -> TrainingResult:
    """Fit both models on `dataset` and register them as new `challenger` versions."""
    started = time.perf_counter()
    note = progress or (lambda _step: None)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "propensity").mkdir()
        (tmp / "post_upsell").mkdir()
        note("propensity model")
        propensity = train_propensity(dataset, config, tmp / "propensity")
        note("post-upsell churn model")
        post_upsell = train_post_upsell(dataset, config, tmp / "post_upsell")
        note("decision metric")
        decision = net_value_decision_metrics(dataset, config, propensity, post_upsell)
        propensity.metrics.update(decision)
        training_id = propensity.model.contract.metadata["data_fingerprint"][:8]
        note("logging to MLflow")
        config_json = config.model_dump_json(indent=1)
        versions = {
            fitted.model.contract.name: log_and_register(
                fitted, settings, training_id=training_id, config_json=config_json
            )
            for fitted in (propensity, post_upsell)
        }
    return TrainingResult(
        training_id, propensity, post_upsell, versions, time.perf_counter() - started
    )
