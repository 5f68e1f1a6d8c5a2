"""Simulator pricing shapes of other datasets, how labels treat them, and the pipeline on each."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.dataset import load_dataset
from features.rollup import ensure_rollups
from training.labels import expansion_labels, observation_dates
from training.simulator import SimulationConfig, simulate

BASE = {"accounts": 300, "months": 8, "seed": 11}


def _sim(tmp_path, name: str, **shape) -> object:
    out = tmp_path / name
    simulate(SimulationConfig(**BASE, **shape), out)
    return out


def _changes(path) -> pd.DataFrame:
    ds = load_dataset(path)
    ensure_rollups(ds)
    return ds.engine.df("SELECT * FROM subscription_changes")


def test_the_default_shape_is_unchanged_by_the_options(tmp_path):
    a = _sim(tmp_path, "a")
    b = _sim(tmp_path, "b", annual_share=0.0, discount_share=0.0)
    for table in ("plans", "subscriptions", "plan_limits", "outreach"):
        assert (a / f"{table}.parquet").read_bytes() == (b / f"{table}.parquet").read_bytes()


def test_flat_prices_have_no_seat_price_and_seats_are_not_expansions(tmp_path):
    path = _sim(tmp_path, "flat", flat_pricing=True)
    plans = pd.read_parquet(path / "plans.parquet")
    assert plans["seat_mrr"].isna().all() and plans["base_mrr"].is_monotonic_increasing
    changes = _changes(path)
    assert (changes["change_kind"] == "upgrade").sum() > 0
    assert (changes["change_kind"] == "expansion").sum() == 0  # added seats add no mrr
    per_plan = changes[changes["status"] == "active"].groupby("plan_id")["mrr"].nunique()
    assert (per_plan == 1).all()


def test_each_tier_is_sold_in_two_billing_periods_and_accounts_keep_theirs(tmp_path):
    path = _sim(tmp_path, "annual", annual_share=0.4)
    plans = pd.read_parquet(path / "plans.parquet")
    assert len(plans) == 8 and plans.groupby("tier").size().eq(2).all()
    subs = pd.read_parquet(path / "subscriptions.parquet")
    annual = subs["plan_id"].str.endswith("_annual")
    assert 0.25 < subs.groupby("account_id").apply(lambda s: annual[s.index].all()).mean() < 0.55
    assert subs.assign(a=annual).groupby("account_id")["a"].nunique().eq(1).all()
    limits = pd.read_parquet(path / "plan_limits.parquet")
    assert set(limits["plan_id"]) == set(plans["plan_id"])


def test_a_discount_that_ends_is_repricing_not_an_expansion(tmp_path):
    plain = _sim(tmp_path, "plain")
    disc = _sim(tmp_path, "disc", discount_share=0.5)
    changes = _changes(disc)
    repriced = changes[changes["change_kind"] == "repricing"]
    assert len(repriced) > 30
    assert (repriced["mrr"] > repriced["prev_mrr"]).all()
    # the same behaviour with and without discounts: the same expansion labels
    ds_plain, ds_disc = load_dataset(plain), load_dataset(disc)
    dates = observation_dates(ds_plain, horizon_days=60, warmup_days=30)
    key = ["as_of", "account_id"]
    a = expansion_labels(ds_plain, dates).sort_values(key).reset_index(drop=True)
    b = expansion_labels(ds_disc, dates).sort_values(key).reset_index(drop=True)
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b)


def test_upgrades_happen_only_on_a_renewal_day(tmp_path):
    path = _sim(tmp_path, "renewal", upgrades_at_renewal=True)
    changes = _changes(path)
    accounts = pd.read_parquet(path / "accounts.parquet")[["account_id", "created_at"]]
    up = changes[changes["change_kind"] == "upgrade"].merge(accounts, on="account_id")
    assert len(up) > 5
    start = pd.Timestamp("2023-12-01")
    day = ((up["effective_at"] - start).dt.days - (up["created_at"] - start).dt.days).to_numpy()
    assert (day % 30 == 0).all()
    assert (changes["change_kind"] == "expansion").sum() > 0  # seats still any day


def test_no_plan_limits_and_no_outreach_leave_the_tables_out(tmp_path):
    path = _sim(tmp_path, "bare", plan_limits=False, outreach=False)
    assert not (path / "plan_limits.parquet").exists()
    assert not (path / "outreach.parquet").exists()
    assert load_dataset(path).report.tables["subscriptions"].time_max is not None


def test_shares_out_of_range_are_refused():
    with pytest.raises(ValueError, match="annual_share"):
        SimulationConfig(annual_share=1.5)


SHAPES = {
    "flat": {"flat_pricing": True},
    "annual": {"annual_share": 0.4},
    "discounts": {"discount_share": 0.5},
    "renewal": {"upgrades_at_renewal": True},
    "bare": {"plan_limits": False, "outreach": False},
}


@pytest.mark.slow
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_train_promote_and_score_run_on_each_shape(shape, tmp_path):
    """The real `expansion` CLI in its own process (MLflow state is per process)."""
    import os
    import subprocess
    import sys

    data = tmp_path / "data"
    # Flat prices make seat cuts free, so fewer upsells end below their old mrr: more accounts.
    accounts = 1500 if shape == "flat" else 1000
    simulate(SimulationConfig(accounts=accounts, months=12, seed=5, **SHAPES[shape]), data)
    env = {**os.environ, "EXPANSION_MODELS_DIR": str(tmp_path / "models")}
    env.pop("MLFLOW_TRACKING_URI", None)
    for args in (
        ["train", "--data", str(data)],
        ["promote"],
        ["score", "--data", str(data), "--to", str(tmp_path / "scores.parquet")],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "training.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    live = scores[scores["suppression_reason"] != "canceled"]
    assert len(live) > 400
    assert np.isfinite(live["expected_net_value"]).all()
    assert np.isfinite(live["p_expand"]).all() and np.isfinite(live["p_post_upsell_churn"]).all()


def test_the_next_tier_offered_is_in_the_customers_billing_period():
    from serving.scoring import next_steps
    from training.simulator.pricing import PricingShape, plans_table

    plans = plans_table(PricingShape(annual_share=0.5)).to_pandas()
    current = ["plan_starter", "plan_starter_annual", "plan_team_annual", "plan_team", "unknown"]
    frame = pd.DataFrame(
        {
            "ctx_plan_id": current,
            "plan_tier": [1, 1, 2, 2, 1],
            "seats": [5, 5, 5, 5, 5],
            "mrr": [100.0, 80.0, 200.0, 250.0, 100.0],
            "quota_util_max": [0.9] * 5,  # pressing on the plan: a tier up
            "premium_trial_features_30d": [0] * 5,
            "paywall_hits_30d": [0] * 5,
        }
    )
    steps = next_steps(frame, plans)["next_step"].tolist()
    assert steps[:4] == [
        "upgrade to plan_team",
        "upgrade to plan_team_annual",
        "upgrade to plan_business_annual",
        "upgrade to plan_business",
    ]
    assert steps[4] in ("upgrade to plan_team", "upgrade to plan_team_annual")
