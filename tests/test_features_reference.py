"""The fast builder equals a slow, obviously correct reference (plain pandas loops over the raw
events) on simulated data, feature by feature."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.build import build_feature_frame
from features.dataset import load_dataset
from features.registry import metric_slug

DATES = [pd.Timestamp("2024-07-01"), pd.Timestamp("2024-09-15"), pd.Timestamp("2025-01-01")]


def reference_row(acc, t, events, catalog, subs, plans, limits, users, accounts):
    """Features of one account at one as-of date, computed the slow and obvious way."""
    out = {}
    ev = events[(events.account_id == acc) & (events.timestamp < t)]
    s = subs[(subs.account_id == acc) & (subs.effective_at < t)].sort_values("effective_at")
    current = s.iloc[-1]
    tier = plans.loc[current.plan_id, "tier"]
    out["plan_tier"], out["mrr"], out["seats"] = tier, current.mrr, current.seats
    out["tenure_days"] = (t.normalize() - accounts.loc[acc, "created_at"].normalize()).days

    def window(days):
        return ev[ev.timestamp >= t - pd.Timedelta(days=days)]

    for days in (7, 30, 90):
        w = window(days)
        out[f"events_{days}d"] = len(w)
        out[f"active_days_{days}d"] = w.timestamp.dt.normalize().nunique()
    for days in (7, 30):
        out[f"active_users_{days}d"] = window(days).user_id.dropna().nunique()
    for days in (30, 90):
        w = window(days).join(catalog, on="event")
        out[f"distinct_features_{days}d"] = w.feature.fillna(w.event).nunique()
        out[f"distinct_workflows_{days}d"] = w.workflow.dropna().nunique()
    w14 = window(14).join(catalog, on="event")
    out["power_events_14d"] = int(w14.power.fillna(False).astype(bool).sum())
    w30 = window(30).join(catalog, on="event")
    out["pricing_page_visits_30d"] = int((w30.signal == "pricing_page").sum())
    out["premium_trial_events_30d"] = int((w30.min_tier > tier).sum())
    last = ev.timestamp.max()
    out["days_since_last_event"] = (
        np.nan if pd.isna(last) else (t.normalize() - last.normalize()).days
    )
    u = users[(users.account_id == acc) & (users.created_at < t)]
    out["seats_in_use"] = int((u.deactivated_at.isna() | (u.deactivated_at >= t)).sum())
    out["users_added_30d"] = int((u.created_at >= t - pd.Timedelta(days=30)).sum())
    plan_limits = limits[limits.plan_id == current.plan_id].set_index("metric")
    month_start = t.replace(day=1)
    last_month = (month_start - pd.Timedelta(days=1)).replace(day=1)
    quota = w30.dropna(subset=["quota_metric"])
    full = ev.join(catalog, on="event").dropna(subset=["quota_metric"])
    for metric, row in plan_limits.iterrows():
        q30 = quota[quota.quota_metric == metric].quantity.sum()
        out[f"quota_util_30d__{metric_slug(metric)}"] = q30 / row.monthly_limit
        lm = full[
            (full.quota_metric == metric)
            & (full.timestamp >= last_month)
            & (full.timestamp < month_start)
        ].quantity.sum()
        out[f"quota_util_last_month__{metric_slug(metric)}"] = lm / row.monthly_limit
    return out


@pytest.mark.integration
def test_fast_builder_equals_slow_reference(sim_data):
    ds = load_dataset(sim_data)
    fast = build_feature_frame(ds, DATES).set_index(["as_of", "account_id"])
    events = ds.frame("events")
    catalog = ds.frame("event_catalog").set_index("event")
    subs, users, accounts = ds.frame("subscriptions"), ds.frame("users"), ds.frame("accounts")
    plans = ds.frame("plans").set_index("plan_id")
    limits = ds.frame("plan_limits")
    accounts = accounts.set_index("account_id")
    rng = np.random.default_rng(3)
    checked = 0
    for t in DATES:
        ids = fast.loc[t].index.to_numpy()
        for acc in rng.choice(ids, size=min(15, len(ids)), replace=False):
            expected = reference_row(acc, t, events, catalog, subs, plans, limits, users, accounts)
            got = fast.loc[(t, acc)]
            for name, value in expected.items():
                assert got[name] == pytest.approx(value, nan_ok=True, rel=1e-9, abs=1e-9), (
                    f"{name} for {acc} at {t.date()}: fast {got[name]} != reference {value}"
                )
                checked += 1
    assert checked > 500


def test_benchmark_reference_computes_the_same_columns(sim_data):
    """`make bench` compares the builder with one naive SQL query per date; that ratio means
    something only if the query returns the builder's values, so check it on every account."""
    from benchmarks.pipeline import _naive, reference_mismatches

    ds = load_dataset(sim_data)
    t = DATES[-1]
    fast = build_feature_frame(ds, [t])
    _, naive = _naive(str(sim_data), [t.date()])
    columns, compared, bad = reference_mismatches(fast, naive)
    assert len(columns) == 26
    assert compared > 0.9 * len(fast)
    assert bad == {}
