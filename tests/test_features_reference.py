"""The fast builder equals slow, obviously correct references on simulated data, feature by
feature: the analyst's SQL generated from the same declarations (`features.reference`, every
event and user feature on every account), and plain pandas loops for the account state and
quota features that the generated reference does not cover."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.build import build_feature_frame
from features.dataset import load_dataset
from features.reference import reference_features, reference_sql
from features.registry import metric_slug

DATES = [pd.Timestamp("2024-07-01"), pd.Timestamp("2024-09-15"), pd.Timestamp("2025-01-01")]


def reference_row(acc, t, events, catalog, subs, plans, limits, users, accounts):
    """State and quota features of one account at one as-of date, the slow and obvious way."""
    out = {}
    ev = events[(events.account_id == acc) & (events.timestamp < t)]
    s = subs[(subs.account_id == acc) & (subs.effective_at < t)].sort_values("effective_at")
    current = s.iloc[-1]
    tier = plans.loc[current.plan_id, "tier"]
    out["plan_tier"], out["mrr"], out["seats"] = tier, current.mrr, current.seats
    out["tenure_days"] = (t.normalize() - accounts.loc[acc, "created_at"].normalize()).days
    w30 = ev[ev.timestamp >= t - pd.Timedelta(days=30)].join(catalog, on="event")
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
    assert checked > 200


@pytest.mark.integration
def test_fast_builder_equals_generated_reference_on_every_account(sim_data):
    """Every event and user feature, and the ratios over them, on every account and date:
    the builder's roll-ups, masks and bit sets against plain `COUNT ... FILTER` SQL."""
    ds = load_dataset(sim_data)
    feats = reference_features()
    assert len(feats) >= 40
    sql = reference_sql(feats)
    fast = build_feature_frame(ds, DATES)
    nonzero = 0
    for t in DATES:
        got = fast[fast.as_of == t]
        ref = ds.engine.df(sql, {"t": t.to_pydatetime()})
        both = got.merge(ref, on="account_id", how="left", suffixes=("", "_ref"), indicator=True)
        assert (both["_merge"] == "both").all(), "the reference lacks accounts the builder has"
        for f in feats:
            a, b = both[f.name].to_numpy(float), both[f"{f.name}_ref"].to_numpy(float)
            same = np.isclose(a, b, rtol=1e-12, atol=1e-12) | (np.isnan(a) & np.isnan(b))
            assert same.all(), (
                f"{f.name} at {t.date()}: {int((~same).sum())} accounts differ, e.g. "
                f"{both.loc[~same, 'account_id'].iloc[0]}: fast {a[~same][0]} != "
                f"reference {b[~same][0]}"
            )
            nonzero += int((a > 0).any())
    assert nonzero >= 0.9 * len(feats) * len(DATES)  # the columns are not all zero


def test_benchmark_reference_computes_the_same_columns(sim_data):
    """`make bench` compares the builder with one naive SQL query per date; that ratio means
    something only if the query returns the builder's values, so check it on every account."""
    from benchmarks.pipeline import _naive, reference_mismatches

    ds = load_dataset(sim_data)
    t = DATES[-1]
    fast = build_feature_frame(ds, [t])
    _, naive = _naive(str(sim_data), [t.date()])
    columns, compared, bad = reference_mismatches(fast, naive)
    assert len(columns) == 27  # activity and breadth columns the reference covers
    assert compared > 0.9 * len(fast)
    assert bad == {}
