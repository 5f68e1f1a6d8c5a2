"""Label boundaries and censoring on tiny hand-made histories."""

from __future__ import annotations

from datetime import date

import pandas as pd

from features.dataset import load_dataset
from training.config import TrainingConfig
from training.labels import expansion_events, expansion_labels, propensity_training_set
from training.train import time_split


def sub(account, at, plan, seats, mrr, status="active"):
    return {
        "account_id": account,
        "effective_at": at,
        "plan_id": plan,
        "seats": seats,
        "mrr": mrr,
        "status": status,
    }


def test_expansion_at_t_counts_and_at_t_plus_horizon_does_not(make_dataset):
    subs = [
        sub("a1", "2024-03-01T00:00:00", "pro", 3, 160.0),  # exactly at t
        sub("a2", "2024-04-30T00:00:00", "pro", 6, 220.0),
    ]  # exactly at t + 60 days
    ds = load_dataset(make_dataset(extra={"subscriptions": subs}))
    labels = expansion_labels(ds, [date(2024, 3, 1)], horizon_days=60)
    assert labels["account_id"].tolist() == ["a1"]


def test_censored_observation_dates_are_dropped(make_dataset):
    events = [{"account_id": "a1", "timestamp": "2024-05-01", "event": "login", "event_id": "late"}]
    ds = load_dataset(make_dataset(extra={"events": events}))
    frame = propensity_training_set(ds, [date(2024, 2, 1), date(2024, 4, 1)])
    # Data ends on May 1: Feb 1 + 60 days is observed, Apr 1 + 60 days is not.
    assert frame["as_of"].dt.date.unique().tolist() == [date(2024, 2, 1)]
    assert set(frame["expanded"]) == {0}


def test_post_upsell_outcomes_and_censoring(make_dataset):
    subs = [
        sub("a1", "2024-02-01", "pro", 3, 160.0),  # upgrade from starter at 80
        sub("a1", "2024-03-15", "pro", 1, 120.0),  # contraction but above 80: not churn
        sub("a2", "2024-02-10", "pro", 8, 260.0),  # expansion from 200
        sub("a2", "2024-04-01", "pro", 0, 0.0, "canceled"),  # churn within 90 days
    ]
    events = [{"account_id": "a1", "timestamp": "2024-06-01", "event": "login", "event_id": "end"}]
    ds = load_dataset(make_dataset(extra={"subscriptions": subs, "events": events}))
    out = expansion_events(ds).set_index("account_id")
    assert out.loc["a1", "change_kind"] == "upgrade"
    assert out.loc["a1", "churned_after_upsell"] == 0
    assert out.loc["a2", "change_kind"] == "expansion"
    assert out.loc["a2", "churned_after_upsell"] == 1
    assert out.loc["a2", "expansion_mrr_delta"] == 60.0
    assert not out["censored"].any()  # data runs to Jun 1, > 90 days after both
    # With data ending earlier, the same expansions lack 90 days of follow-up.
    short = load_dataset(make_dataset(extra={"subscriptions": subs}, name="short"))
    assert expansion_events(short)["censored"].all()


def test_adoption_counts_only_features_unlocked_by_the_upgrade(make_dataset):
    catalog = [{"event": "basic"}, {"event": "pro_only", "min_tier": 2}]
    events = [
        {"account_id": "a1", "timestamp": "2024-02-05", "event": "pro_only", "event_id": "p1"},
        {"account_id": "a1", "timestamp": "2024-02-06", "event": "basic", "event_id": "b1"},
        {"account_id": "a1", "timestamp": "2024-03-20", "event": "pro_only", "event_id": "p2"},
    ]
    subs = [sub("a1", "2024-02-01", "pro", 3, 160.0)]
    ds = load_dataset(
        make_dataset(extra={"subscriptions": subs, "events": events, "event_catalog": catalog})
    )
    row = expansion_events(ds).set_index("account_id").loc["a1"]
    assert row["new_tier_events_30d"] == 1  # Feb 5 only: Mar 20 is after 30 days
    assert row["new_tier_features_30d"] == 1


def test_time_split_leaves_a_horizon_between_parts():
    dates = [d.date() for d in pd.date_range("2024-01-01", periods=12, freq="MS")]
    split = time_split(dates, TrainingConfig())
    assert split.test == dates[-2:]
    gap = pd.Timedelta(days=60)
    assert pd.Timestamp(split.validation[-1]) + gap <= pd.Timestamp(split.test[0])
    assert pd.Timestamp(split.train[-1]) + gap <= pd.Timestamp(split.validation[0])
    assert not set(split.train) & set(split.validation)
