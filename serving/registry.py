"""Load models from the MLflow registry and check them against the feature registry.

Serving loads the `champion` of each model (or a named version) and refuses, at start-up, a
model whose recorded feature list differs from the one this code computes, printing the diff.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow import MlflowClient

from features.registry import FEATURE_SET_VERSION
from features.settings import Settings
from serving.model import ScoringModel


class ModelContractError(RuntimeError):
    """A registered model does not match the features this code builds."""


def configure_mlflow(settings: Settings) -> None:
    """Point MLflow at the configured store (the embedded SQLite one by default)."""
    if settings.tracking_uri is None:
        settings.models_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    mlflow.set_registry_uri(settings.resolved_tracking_uri)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    aliases: list[str]
    run_id: str
    metadata: dict[str, Any]


def load_scoring_model(
    settings: Settings, name: str, *, alias: str | None = "champion", version: str | None = None
) -> tuple[ScoringModel, ModelInfo]:
    """The registered model `name` at `alias` (or `version`), unwrapped to a ScoringModel."""
    configure_mlflow(settings)
    client = MlflowClient()
    try:
        mv = (
            client.get_model_version(name, version)
            if version is not None
            else client.get_model_version_by_alias(name, alias)
        )
    except mlflow.exceptions.MlflowException as exc:
        which = f"version {version}" if version is not None else f"alias @{alias}"
        raise ModelContractError(
            f"no registered model {name!r} at {which} in {settings.resolved_tracking_uri}: "
            "run `expansion train` and `expansion promote` first"
        ) from exc
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}")
    model: ScoringModel = pyfunc.unwrap_python_model().model
    _ = model.tree_shap  # build the explainer's tables (and compile it) now, not per request
    info = ModelInfo(name, str(mv.version), list(mv.aliases), mv.run_id, model.contract.metadata)
    return model, info


def check_feature_contract(model: ScoringModel, expected: list[str]) -> None:
    """Fail with the diff when the model's features are not the ones this code builds.

    `expected` is the registry's list for the dataset. A model may add inputs the scoring core
    supplies itself (recorded as `extra_features`, e.g. the post-upsell adoption columns), and a
    model recorded as `registry_subset` (the small-data churn model) may use a subset of the
    registry, in any order; every other model must match the registry exactly, in order.
    """
    meta = model.contract.metadata
    extra = set(meta.get("extra_features", []))
    recorded = [f for f in model.contract.features if f not in extra]
    problems = []
    if model.contract.feature_set_version != FEATURE_SET_VERSION:
        problems.append(
            f"feature-set version {model.contract.feature_set_version} != {FEATURE_SET_VERSION}"
        )
    missing = [f for f in recorded if f not in set(expected)]
    added = [] if meta.get("registry_subset") else [f for f in expected if f not in set(recorded)]
    if missing:
        problems.append(f"the model needs features this code does not build: {missing}")
    if added:
        problems.append(f"this code builds features the model was not trained on: {added}")
    if not meta.get("registry_subset") and not missing and not added and recorded != expected:
        problems.append("the same features in a different order")
    if problems:
        raise ModelContractError(f"{model.contract.name}: " + "; ".join(problems))
