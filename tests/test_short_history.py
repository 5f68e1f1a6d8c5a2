"""Short histories: the training plan shortens only what it must, says so, and refuses clearly."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from features.dataset import load_dataset
from serving.settings import PROPENSITY_MODEL, get_settings
from training.config import TrainingConfig
from training.history import hold_out_accounts, plan_history
from training.labels import NotEnoughData
from training.simulator import SimulationConfig, simulate


def _sim(tmp_path, months: int, accounts: int = 150):
    out = tmp_path / f"sim{months}"
    simulate(SimulationConfig(accounts=accounts, months=months, seed=3), out)
    return out


def test_a_long_history_keeps_the_standard_plan(tmp_path):
    plan = plan_history(load_dataset(_sim(tmp_path, 15)), TrainingConfig())
    assert not plan.shortened and plan.statements == []
    assert plan.cadence == "monthly" and plan.warmup_days == 90
    assert plan.validation and not plan.validation_on_accounts


def test_ten_months_shortens_only_the_validation_gap(tmp_path):
    dataset = load_dataset(_sim(tmp_path, 9))  # + the simulator's warm-up month: 10 months
    with pytest.raises(NotEnoughData, match="not enough history"):
        plan_history(dataset, TrainingConfig(short_history="refuse"))
    plan = plan_history(dataset, TrainingConfig())
    assert plan.validation_on_accounts and plan.validation == []
    assert plan.cadence == "monthly" and plan.warmup_days == 90  # nothing else shortened
    assert len(plan.statements) == 1 and "held out" in plan.statements[0]
    assert len(plan.train) >= 2
    # the test period keeps a full label horizon after the last training date
    gap = pd.Timestamp(plan.test[0]) - pd.Timestamp(plan.train[-1])
    assert gap >= pd.Timedelta(days=60)


def test_six_months_shortens_cadence_and_warm_up(tmp_path):
    plan = plan_history(load_dataset(_sim(tmp_path, 5)), TrainingConfig())
    assert plan.cadence == "weekly" and plan.warmup_days < 90
    assert len(plan.statements) == 3
    assert plan.params()["history_shortened"] == "true"
    assert pd.Timestamp(plan.test[0]) - pd.Timestamp(plan.train[-1]) >= pd.Timedelta(days=60)
    assert plan.train[0] >= date(2023, 12, 1) + pd.Timedelta(days=plan.warmup_days)


def test_held_out_accounts_keep_all_their_dates_together():
    ids = pd.Series([f"a{i % 500}" for i in range(5000)])
    held = hold_out_accounts(ids, 0.2, seed=1)
    assert 0.15 < held.mean() < 0.25
    per_account = pd.Series(held).groupby(ids).nunique()
    assert (per_account == 1).all()
    assert (hold_out_accounts(ids, 0.2, seed=1) == held).all()
    assert not (hold_out_accounts(ids, 0.2, seed=2) == held).all()


def _cli_train(data, models_dir, monkeypatch):
    from typer.testing import CliRunner

    from training.cli import app

    monkeypatch.setenv("EXPANSION_MODELS_DIR", str(models_dir))
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, ["train", "--data", str(data)])
    finally:
        get_settings.cache_clear()


def test_an_even_shorter_history_refuses_in_one_line(tmp_path, monkeypatch):
    result = _cli_train(_sim(tmp_path, 3), tmp_path / "models", monkeypatch)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "not enough history to train: events span 121 days" in text
    assert "Supply a longer history" in text
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_six_months_train_through_the_cli_and_say_what_was_shortened(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from serving.registry import configure_mlflow
    from serving.settings import Settings

    data = _sim(tmp_path, 5, accounts=1200)  # 6 months of events; enough churned upsells
    result = _cli_train(data, tmp_path / "models", monkeypatch)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "short history: weekly observation dates instead of monthly" in text
    assert "30-day warm-up instead of 90" in text
    configure_mlflow(Settings(models_dir=tmp_path / "models", auth_enabled=False))
    client = MlflowClient()
    mv = client.get_model_version_by_alias(PROPENSITY_MODEL, "challenger")
    run = client.get_run(mv.run_id)
    assert run.data.params["history_shortened"] == "true"
    assert run.data.params["history_cadence"] == "weekly"
    assert run.data.params["history_warmup_days"] == "30"
    assert run.data.params["history_validation"] == "held_out_accounts"
    assert "warm-up" in run.data.tags["notes"]
    assert run.data.metrics["test_roc_auc"] > 0.6
