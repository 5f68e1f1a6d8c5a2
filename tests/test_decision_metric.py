"""The decision metric: retained expansion MRR per (as_of, account) and top-decile capture."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.dataset import load_dataset
from training.decision_metric import retained_expansion_mrr, top_share_capture


def _sub(account, when, plan, seats, mrr, status="active", list_mrr=None):
    return {
        "account_id": account,
        "effective_at": when,
        "plan_id": plan,
        "seats": seats,
        "mrr": mrr,
        "status": status,
        "list_mrr": list_mrr,
    }


def test_retained_mrr_is_the_gain_still_paid_90_days_later(make_dataset):
    accounts = [{"account_id": a, "created_at": "2024-01-01"} for a in ("a3", "a4")]
    subs = [
        # a1: +40 on 2024-03-10 (seats 3 -> 7), then 20 of it given back within 90 days
        _sub("a1", "2024-03-10", "starter", 7, 120.0),
        _sub("a1", "2024-04-20", "starter", 5, 100.0),
        # a2: upgrade +100, then churn within 90 days: nothing retained
        _sub("a2", "2024-03-05", "pro", 10, 300.0),
        _sub("a2", "2024-05-01", "pro", 10, 0.0, "canceled"),
        # a3: +20 and held; a discount ending later (repricing) must not add to it
        _sub("a3", "2024-01-01", "starter", 1, 60.0, list_mrr=70.0),
        _sub("a3", "2024-03-02", "starter", 3, 80.0, list_mrr=90.0),
        _sub("a3", "2024-04-01", "starter", 3, 90.0, list_mrr=90.0),
        # a4: a discount ending alone (same list_mrr): no expansion at all
        _sub("a4", "2024-01-01", "starter", 1, 45.0, list_mrr=60.0),
        _sub("a4", "2024-03-03", "starter", 1, 60.0, list_mrr=60.0),
    ]
    events = [
        {"account_id": "a1", "timestamp": "2024-09-30T10:00:00", "event": "login", "event_id": "z"}
    ]
    path = make_dataset(extra={"accounts": accounts, "subscriptions": subs, "events": events})
    ds = load_dataset(path)
    pairs = pd.DataFrame(
        {"as_of": pd.Timestamp("2024-03-01"), "account_id": ["a1", "a2", "a3", "a4"]}
    )
    out = retained_expansion_mrr(ds, pairs, horizon_days=60).set_index("account_id")
    assert set(out.index) == {"a1", "a2", "a3"}
    assert out.loc["a1", "gained_mrr"] == pytest.approx(40.0)
    assert out.loc["a1", "retained_mrr"] == pytest.approx(20.0)
    assert out.loc["a2", "gained_mrr"] == pytest.approx(100.0)
    assert out.loc["a2", "retained_mrr"] == pytest.approx(0.0)
    assert out.loc["a3", "retained_mrr"] == pytest.approx(20.0)
    assert not out["censored"].any()


def test_top_share_capture_counts_within_each_date():
    value = np.array([100.0, 0, 0, 0, 0, 0, 0, 0, 0, 0] * 2)
    groups = np.repeat(["d1", "d2"], 10)
    right = 10 - np.arange(20) % 10  # ranks row 0 of each date first
    assert top_share_capture(right.astype(float), value, groups) == pytest.approx(1.0)
    wrong = np.arange(20) % 10
    assert top_share_capture(wrong.astype(float), value, groups) == 0.0
    # ties give no credit: a constant score keeps the original order only by position
    assert top_share_capture(np.zeros(20), value[::-1].copy(), groups) == 0.0
