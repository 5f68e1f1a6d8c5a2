"""Load models from the MLflow registry and check them against the feature registry.

Serving loads the `champion` of each model (or a named version) and refuses, at start-up, a
model whose recorded feature list differs from the one this code computes, printing the diff.

`expansion promote` records on each version it judges whether it cleared the quality floor
(version tag `quality_floor`: passed, failed or forced). `model_source` reads it: a champion
that passed is served; so is one promoted with `--force` below the floor (the user's explicit
override), with its source saying so on every run and in `/model_info`. With no champion, or
one whose verdict is failed, the scoring core serves the rule baseline instead
(`serving.baseline`). A champion
without a verdict (promoted before floors existed, or the alias set by hand) is served, and its
source says no verdict is recorded.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from features.registry import FEATURE_SET_VERSION
from serving.baseline import describe_rules
from serving.model import ScoringModel
from serving.settings import Settings


class ModelContractError(RuntimeError):
    """A registered model does not match the features this code builds."""


class ModelStoreError(RuntimeError):
    """The MLflow store cannot be used as it is (an empty or unreadable SQLite file)."""


SQLITE_HEADER = b"SQLite format 3\x00"


def check_model_store(uri: str) -> None:
    """Refuse a local SQLite store that is empty or not a database, before MLflow opens it.

    MLflow would silently turn a 0-byte file (a failed copy, a full disk) into a new, empty
    store, and answers an unreadable one with SQL errors deep in SQLAlchemy. A missing file is
    fine: that is a new store. Only the header and the schema are read (cheap, no write lock).
    """
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    if not path.is_file():
        return
    if path.stat().st_size == 0:
        raise ModelStoreError(
            f"the MLflow store {path} is empty (0 bytes), not a database: restore it from a "
            "backup, or delete it to start a new store"
        )
    with path.open("rb") as file:
        header = file.read(len(SQLITE_HEADER))
    problem = None if header == SQLITE_HEADER else "not an SQLite database"
    if problem is None:
        try:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as con:
                con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as exc:  # locked by a writer: not a sign of damage
            if "locked" not in str(exc) and "busy" not in str(exc):
                problem = str(exc)
        except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
            problem = str(exc)
    if problem:
        raise ModelStoreError(
            f"the MLflow store {path} is unreadable ({problem}): restore it from a backup, "
            "or move it away to start a new store"
        )


def configure_mlflow(settings: Settings) -> None:
    """Point MLflow at the configured store (the embedded SQLite one by default).

    Raises `ModelStoreError` for an empty or unreadable SQLite store.
    """
    if settings.tracking_uri is None:
        settings.models_dir.mkdir(parents=True, exist_ok=True)
    check_model_store(settings.resolved_tracking_uri)
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
        if verdict == "forced":  # --force overrides the floor: served, and said on every run
            why = f"promoted by --force below the quality floor: {failures}"
            return ModelSource(name, True, version, None, why)
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
