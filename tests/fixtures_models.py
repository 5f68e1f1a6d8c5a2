"""Session-wide simulated data and trained models, shared by the training, service and batch tests.

Training takes ~20 s, so it happens once per test session: import the fixtures into a test
module (`from tests.fixtures_models import sim_data, trained  # noqa: F401`) or use them via
tests/conftest.py, which re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from features.dataset import Dataset, load_dataset
from serving.scoring import Models
from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL, Settings
from serving.snapshot import Snapshot, build_snapshot, read_snapshot, write_snapshot
from training.config import TrainingConfig
from training.pipeline import TrainingResult, train_models
from training.simulator import SimulationConfig, simulate
from training.tracking import PromotionDecision, promote

SIM = SimulationConfig(accounts=1500, months=15, seed=7)


@dataclass
class Trained:
    data_dir: Path
    dataset: Dataset
    settings: Settings
    result: TrainingResult
    promotions: dict[str, PromotionDecision]


@pytest.fixture(scope="session")
def sim_data(tmp_path_factory) -> Path:
    """A small simulated dataset (1,500 accounts x 15 months)."""
    out = tmp_path_factory.mktemp("sim") / "data"
    simulate(SIM, out)
    return out


@pytest.fixture(scope="session")
def trained(sim_data, tmp_path_factory) -> Trained:
    """Both models trained on `sim_data` and promoted where they clear the quality floor, and a
    snapshot written.

    The propensity model clears the floor at this size. The post-upsell churn model, on ~110
    prospective test rows, does not (its test ROC-AUC is near 0.5): promote refuses it, and
    the scoring core serves the health-rule baseline in its place, as it would for a user.
    """
    models_dir = tmp_path_factory.mktemp("models")
    settings = Settings(models_dir=models_dir, tracking_uri=None, auth_enabled=False)
    dataset = load_dataset(sim_data)
    result = train_models(dataset, TrainingConfig(), settings)
    promotions = {name: promote(settings, name) for name in (PROPENSITY_MODEL, POST_UPSELL_MODEL)}
    assert promotions[PROPENSITY_MODEL].promoted, promotions[PROPENSITY_MODEL]
    write_snapshot(build_snapshot(dataset), models_dir / "snapshot")
    return Trained(sim_data, dataset, settings, result, promotions)


@pytest.fixture(scope="module")
def snapshot(trained: Trained) -> Snapshot:
    """The default snapshot (as of the day after the last event), written by `trained`."""
    return read_snapshot(trained.settings.models_dir / "snapshot")


@pytest.fixture(scope="module")
def models(trained: Trained, snapshot: Snapshot) -> Models:
    """Both served models (the churn model's rule baseline where it is below the floor)."""
    return Models.load(trained.settings, snapshot.feature_names)
