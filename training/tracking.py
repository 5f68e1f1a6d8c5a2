"""MLflow bookkeeping: runs, the model registry, promotion and comparison.

Embedded by default (a SQLite store and artifacts under `models/`, no server); any
`MLFLOW_TRACKING_URI` is respected. A new model version gets the alias `challenger`;
`promote` moves `champion` to it only if it clears the quality floor (enough test rows and
positives, test ROC-AUC above 0.5 beyond its bootstrap interval, not below the rule baseline on
the same rows) and beats the champion on the same test rows. The verdict is tagged on the
version (`quality_floor`: passed, failed or forced), where serving reads it.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature

from serving.baseline import RULE_NAMES, rule_score
from serving.model import PyfuncScoringModel
from serving.registry import (
    FLOOR_FAILURES_TAG,
    FLOOR_TAG,
    configure_mlflow,
    load_scoring_model,
)
from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL, Settings
from training.config import QualityFloor
from training.evaluate import bootstrap_auc_interval, probability_metrics, ranking_metrics
from training.train import FittedModel

LABELS = {PROPENSITY_MODEL: "expanded", POST_UPSELL_MODEL: "churned_after_upsell"}
# Which test metric decides a promotion, and whether higher is better.
DECIDING_METRIC = ("roc_auc", True)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=5
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def experiment_id(settings: Settings) -> str:
    configure_mlflow(settings)
    client = MlflowClient()
    exp = client.get_experiment_by_name(settings.experiment)
    if exp is not None:
        return exp.experiment_id
    settings.artifact_root.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(
        settings.experiment, artifact_location=settings.artifact_root.as_uri()
    )


def log_and_register(
    fitted: FittedModel, settings: Settings, *, training_id: str, config_json: str
) -> str:
    """Log one model's run (params, metrics, contract, plots, model) and register a version."""
    model = fitted.model
    contract = model.contract
    exp = experiment_id(settings)
    commit = git_commit()
    with mlflow.start_run(experiment_id=exp, run_name=f"{contract.name}-{training_id}") as run:
        mlflow.log_params(dict(fitted.params))
        mlflow.log_metrics({k: float(v) for k, v in fitted.metrics.items() if np.isfinite(v)})
        mlflow.set_tags(
            {
                "model_name": contract.name,
                "training_id": training_id,
                "git_commit": commit,
                "feature_set_version": contract.feature_set_version,
                "data_fingerprint": contract.metadata.get("data_fingerprint", ""),
                "model_kind": contract.kind,
                "notes": "; ".join(fitted.notes),
            }
        )
        contract.metadata.update(
            {"git_commit": commit, "run_id": run.info.run_id, "metrics": fitted.metrics}
        )
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "feature_list.json").write_text(json.dumps(contract.features, indent=1))
            (tmp / "training_config.json").write_text(config_json)
            if fitted.test_frame is not None:
                fitted.test_frame.to_parquet(tmp / "test_frame.parquet", index=False)
            mlflow.log_artifacts(str(tmp), artifact_path="contract")
        for path in fitted.plots.values():
            mlflow.log_artifact(str(path), artifact_path="plots")
        example = fitted.test_frame[contract.features].head(5)
        example = example.astype(object).where(example.notna(), None)
        example = example.astype(
            {c: "float64" for c in contract.features if c not in contract.categorical}
        )
        signature = infer_signature(
            example, pd.DataFrame({"probability": model.predict_proba(example)})
        )
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=PyfuncScoringModel(model),
            signature=signature,
            input_example=example,
            registered_model_name=contract.name,
        )
    client = MlflowClient()
    version = str(info.registered_model_version)
    client.set_registered_model_alias(contract.name, "challenger", version)
    return version


@dataclass
class PromotionDecision:
    model_name: str
    promoted: bool
    challenger: str | None
    champion: str | None
    reason: str
    numbers: dict[str, float]
    # The quality floor's failed criteria, one sentence each (empty when it passed).
    failures: list[str] = field(default_factory=list)
    refused: bool = False  # the challenger was judged and turned down: `promote` exits 2
    forced: bool = False  # promoted with --force below the quality floor


@dataclass
class FloorCheck:
    """The quality floor's verdict on one version: failed criteria and the numbers read."""

    failures: list[str]
    numbers: dict[str, float]

    @property
    def passed(self) -> bool:
        return not self.failures


def check_quality_floor(
    name: str, metrics: dict[str, float], floor: QualityFloor | None = None
) -> FloorCheck:
    """Enough test rows and positives, ROC-AUC above 0.5 beyond its bootstrap interval, and
    not below the rule baseline on the same rows; one sentence per failed criterion."""
    floor = floor or QualityFloor()
    nan = float("nan")
    rows = float(metrics.get("rows_test", nan))
    positives = float(metrics.get("positives_test", nan))
    auc = float(metrics.get("test_roc_auc", nan))
    low, high = (float(metrics.get(f"test_roc_auc_ci_{k}", nan)) for k in ("low", "high"))
    level = float(metrics.get("test_roc_auc_ci_level", floor.interval_level))
    rules = float(metrics.get("rules_roc_auc", nan))
    failures = []
    if not rows >= floor.min_test_rows:
        failures.append(f"test rows: {rows:,.0f}, fewer than the minimum {floor.min_test_rows:,}")
    if not positives >= floor.min_test_positives:
        failures.append(
            f"test positives: {positives:,.0f}, fewer than the minimum {floor.min_test_positives:,}"
        )
    if not np.isfinite(auc):
        failures.append("test ROC-AUC undefined: the test rows hold a single class")
    elif not low > 0.5:
        failures.append(
            f"test ROC-AUC {auc:.4f} is not above 0.5 by more than its uncertainty "
            f"({level:.0%} bootstrap interval {low:.4f} to {high:.4f})"
        )
    if np.isfinite(auc) and np.isfinite(rules) and auc < rules:
        failures.append(
            f"test ROC-AUC {auc:.4f} is below the rule baseline's {rules:.4f} "
            f"({RULE_NAMES[name]}) on the same test rows"
        )
    numbers = {
        "floor_rows_test": rows,
        "floor_positives_test": positives,
        "floor_test_roc_auc": auc,
        "floor_test_roc_auc_ci_low": low,
        "floor_test_roc_auc_ci_high": high,
        "floor_rules_roc_auc": rules,
    }
    return FloorCheck(failures, numbers)


FLOOR_METRICS = ("positives_test", "test_roc_auc_ci_low", "test_roc_auc_ci_high", "rules_roc_auc")


def floor_metrics_of(
    settings: Settings, client: MlflowClient, name: str, version: str, floor: QualityFloor
) -> dict[str, float]:
    """The run's logged metrics, with what the floor needs computed from its logged test frame
    when the run predates the floor (no interval or rule baseline logged)."""
    run = client.get_run(client.get_model_version(name, version).run_id)
    metrics = dict(run.data.metrics)
    if all(k in metrics for k in FLOOR_METRICS):
        return metrics
    test = _test_frame(client, name, version)
    y = test[LABELS[name]].to_numpy()
    scorer, _ = load_scoring_model(settings, name, version=version)
    p = scorer.predict_proba(test)
    low, high = bootstrap_auc_interval(
        y,
        p,
        int(run.data.params.get("seed", 42)),
        samples=floor.bootstrap_samples,
        level=floor.interval_level,
    )
    rules = ranking_metrics(y, rule_score(name, test)).get("roc_auc", float("nan"))
    return {
        **metrics,
        "rows_test": float(len(test)),
        "positives_test": float(y.sum()),
        "test_roc_auc": ranking_metrics(y, p).get("roc_auc", float("nan")),
        "test_roc_auc_ci_low": low,
        "test_roc_auc_ci_high": high,
        "test_roc_auc_ci_level": floor.interval_level,
        "rules_roc_auc": rules,
    }


def _version_for(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def _record_verdict(
    client: MlflowClient, name: str, version: str, verdict: str, failures: list[str]
) -> None:
    """The floor's verdict on the version, where serving reads it (`serving.registry`)."""
    client.set_model_version_tag(name, version, FLOOR_TAG, verdict)
    client.set_model_version_tag(name, version, FLOOR_FAILURES_TAG, "; ".join(failures))


def promote(
    settings: Settings,
    model_name: str,
    *,
    force: bool = False,
    floor: QualityFloor | None = None,
) -> PromotionDecision:
    """Move `champion` to the challenger if it clears the quality floor and beats the champion
    on the challenger's test rows. `force` overrides both; below the floor the version is
    tagged `quality_floor=forced`; serving then scores with it and says so on every run."""
    floor = floor or QualityFloor()
    configure_mlflow(settings)
    client = MlflowClient()
    challenger = _version_for(client, model_name, "challenger")
    champion = _version_for(client, model_name, "champion")
    if challenger is None:
        return PromotionDecision(
            model_name,
            False,
            None,
            champion,
            "no challenger version: run `expansion train` first",
            {},
        )
    if champion == challenger:
        return PromotionDecision(
            model_name, False, challenger, champion, "the challenger is already the champion", {}
        )
    check = check_quality_floor(
        model_name, floor_metrics_of(settings, client, model_name, challenger, floor), floor
    )
    numbers: dict[str, float] = dict(check.numbers)
    if not check.passed and not force:
        _record_verdict(client, model_name, challenger, "failed", check.failures)
        return PromotionDecision(
            model_name,
            False,
            challenger,
            champion,
            "below the quality floor",
            numbers,
            failures=check.failures,
            refused=True,
        )
    champion_verdict = (
        client.get_model_version(model_name, champion).tags.get(FLOOR_TAG)
        if champion is not None
        else None
    )
    if champion is not None and champion_verdict in ("failed", "forced"):
        reason = f"champion v{champion} is below the quality floor ({champion_verdict})"
    elif champion is not None:
        metric, higher = DECIDING_METRIC
        test = _test_frame(client, model_name, challenger)
        y = test[LABELS[model_name]].to_numpy()
        for role, version in (("challenger", challenger), ("champion", champion)):
            scorer, _ = load_scoring_model(settings, model_name, version=version)
            try:
                p = scorer.predict_proba(test)
            except KeyError as exc:  # a different feature list cannot be compared on these rows
                if not force:
                    return PromotionDecision(
                        model_name,
                        False,
                        challenger,
                        champion,
                        f"cannot compare on the same rows ({exc}); use --force",
                        numbers,
                        refused=True,
                    )
                p = np.full(len(test), np.nan)
            if np.isfinite(p).all():
                numbers.update(
                    {
                        f"{role}_{k}": v
                        for k, v in {**ranking_metrics(y, p), **probability_metrics(y, p)}.items()
                    }
                )
        c_val = numbers.get(f"challenger_{metric}", float("nan"))
        k_val = numbers.get(f"champion_{metric}", float("nan"))
        better = (c_val > k_val) if higher else (c_val < k_val)
        if not better and not force:
            return PromotionDecision(
                model_name,
                False,
                challenger,
                champion,
                f"challenger {metric} {c_val:.4f} does not beat champion {k_val:.4f} "
                f"on the same {len(test):,} test rows",
                numbers,
                refused=True,
            )
        reason = (
            f"challenger {metric} {c_val:.4f} vs champion {k_val:.4f} on the same "
            f"{len(test):,} test rows" + (" (forced)" if not better else "")
        )
    else:
        reason = "no champion yet"
    if check.passed:
        _record_verdict(client, model_name, challenger, "passed", [])
    else:
        _record_verdict(client, model_name, challenger, "forced", check.failures)
        reason += "; forced below the quality floor"
    client.set_registered_model_alias(model_name, "champion", challenger)
    return PromotionDecision(
        model_name,
        True,
        challenger,
        champion,
        reason,
        numbers,
        failures=check.failures,
        forced=not check.passed,
    )


def _test_frame(client: MlflowClient, name: str, version: str) -> pd.DataFrame:
    run_id = client.get_model_version(name, version).run_id
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="contract/test_frame.parquet", dst_path=tmp
        )
        return pd.read_parquet(path)


def compare_runs(
    settings: Settings, limit: int = 10, model_name: str | None = None
) -> pd.DataFrame:
    """Recent runs side by side: one row per run, metrics as columns."""
    exp = experiment_id(settings)
    query = f"tags.model_name = '{model_name}'" if model_name else ""
    runs = mlflow.search_runs(
        experiment_ids=[exp],
        filter_string=query,
        max_results=limit,
        order_by=["attributes.start_time DESC"],
    )
    if runs.empty:
        return runs
    client = MlflowClient()
    versions = {}
    for name in (PROPENSITY_MODEL, POST_UPSELL_MODEL):
        try:
            for found in client.search_model_versions(f"name = '{name}'"):
                # search results do not carry aliases; the version lookup does
                mv = client.get_model_version(name, found.version)
                versions[mv.run_id] = (mv.version, ",".join(mv.aliases))
        except mlflow.exceptions.MlflowException:
            continue
    runs["version"] = runs["run_id"].map(lambda r: versions.get(r, ("", ""))[0])
    runs["aliases"] = runs["run_id"].map(lambda r: versions.get(r, ("", ""))[1])
    return runs
