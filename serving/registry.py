"""Load models from the MLflow registry and check them against the feature registry.

Serving loads the `champion` of each model (or a named version) and refuses, at start-up, a
model whose recorded feature list differs from the one this code computes, printing the diff.

`expansion promote` records on each version it judges whether it cleared the quality floor
(version tag `quality_floor`: passed, failed or forced). `model_source` reads it: a champion
that passed is served; with no champion, or one below the floor (failed, or promoted with
`--force`), the scoring core serves the rule baseline instead (`serving.baseline`). A champion
without a verdict (promoted before floors existed, or the alias set by hand) is served, and its
source says no verdict is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow import MlflowClient

from features.registry import FEATURE_SET_VERSION
from features.settings import Settings
from serving.baseline import describe_rules
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
    info = ModelInfo(name, str(mv.version), list(mv.aliases), mv.run_id, model.contract.metadata)
    return model, info


FLOOR_TAG = "quality_floor"  # passed | failed | forced
FLOOR_FAILURES_TAG = "quality_floor_failures"  # the failed criteria, "; "-separated


@dataclass(frozen=True)
class ModelSource:
    """Where a model's scores come from: its champion, or the rule baseline and why."""

    name: str
    use_model: bool
    version: str | None  # the champion's version (None when there is none)
    rates_version: str | None  # the version whose recorded metadata the baseline uses
    reason: str

    @property
    def key(self) -> str:
        """Changes whenever what would be served changes (for the service's hot reload)."""
        return f"{self.version}:{self.use_model}:{self.rates_version}"

    def describe(self) -> str:
        """`model v3`, or `baseline (rules; why)`: the field run summaries and /model_info show."""
        if not self.use_model:
            return f"baseline ({describe_rules(self.name)}; {self.reason})"
        return f"model v{self.version}" + (f" ({self.reason})" if self.reason else "")


def model_source(settings: Settings, name: str) -> ModelSource:
    """Whether `name`'s champion is served or the rule baseline, read from the registry."""
    configure_mlflow(settings)
    return model_source_in(MlflowClient(), name)


def model_source_in(client: MlflowClient, name: str) -> ModelSource:
    """`model_source` with a client already pointed at the store (the report's)."""
    try:
        champion = client.get_model_version_by_alias(name, "champion")
    except mlflow.exceptions.MlflowException:
        champion = None
    if champion is not None:
        verdict = champion.tags.get(FLOOR_TAG)
        version = str(champion.version)
        if verdict in (None, "passed"):
            note = (
                ""
                if verdict
                else "no quality-floor verdict recorded: promoted before floors existed, or the "
                "alias was set by hand"
            )
            return ModelSource(name, True, version, None, note)
        failures = champion.tags.get(FLOOR_FAILURES_TAG, "")
        why = f"champion v{version} is below the quality floor ({verdict}: {failures})"
        return ModelSource(name, False, version, version, why)
    try:
        found = client.search_model_versions(f"name = '{name}'")
    except mlflow.exceptions.MlflowException:
        found = []
    if not found:
        return ModelSource(name, False, None, None, "no registered version")
    newest = str(max(int(v.version) for v in found))
    why = "no champion: no version has cleared the quality floor"
    return ModelSource(name, False, None, newest, why)


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
