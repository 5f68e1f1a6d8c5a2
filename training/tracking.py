"""MLflow bookkeeping: runs, the model registry, promotion and comparison.

Embedded by default (a SQLite store and artifacts under `models/`, no server); any
`MLFLOW_TRACKING_URI` is respected. A new model version gets the alias `challenger`;
`promote` moves `champion` to it only if it beats the champion on the same test rows.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature

from features.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL, Settings
from serving.model import PyfuncScoringModel
from serving.registry import configure_mlflow, load_scoring_model
from training.evaluate import probability_metrics, ranking_metrics
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


def _version_for(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def promote(settings: Settings, model_name: str, *, force: bool = False) -> PromotionDecision:
    """Move `champion` to the challenger if it beats the champion on the challenger's test rows."""
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
    numbers: dict[str, float] = {}
    if champion is not None:
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
            )
        reason = (
            f"challenger {metric} {c_val:.4f} vs champion {k_val:.4f} on the same "
            f"{len(test):,} test rows" + (" (forced)" if not better else "")
        )
    else:
        reason = "no champion yet"
    client.set_registered_model_alias(model_name, "champion", challenger)
    return PromotionDecision(model_name, True, challenger, champion, reason, numbers)


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
