"""`expansion train`: build both training sets, fit, evaluate, log and register both models."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from features.build import Progress
from features.dataset import Dataset
from serving.settings import Settings
from training.config import TrainingConfig
from training.tracking import log_and_register
from training.train import FittedModel, train_post_upsell, train_propensity


@dataclass
class TrainingResult:
    training_id: str
    propensity: FittedModel
    post_upsell: FittedModel
    versions: dict[str, str]
    seconds: float


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
