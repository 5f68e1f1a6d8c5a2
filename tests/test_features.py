"""Point-in-time account features on tiny hand-made datasets whose answers can be checked by eye."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.build import (
    WINDOWS,
    _highest_bit,
    as_of_blocks_frame,
    build_feature_frame,
    build_features,
)
from features.dataset import load_dataset
from features.registry import feature_names
from features.rollup import BLOCK_DAYS

CATALOG = [
    {"event": "login", "feature": None, "workflow": "core"},
    {
        "event": "report",
        "feature": "reports",
        "workflow": "analytics",
        "power": True,
        "min_tier": 2,
        "quota_metric": "reports",
    },
    {"event": "pricing", "signal": "pricing_page"},
    {"event": "invite", "signal": "invite", "workflow": "team"},
    {"event": "paywall", "signal": "paywall"},
]
LIMITS = [{"plan_id": "starter", "metric": "reports", "monthly_limit": 10}]


def ev(i, account, ts, event, user="u1", qty=1.0):
    return {
        "account_id": account,
        "timestamp": ts,
        "event": event,
        "user_id": user,
        "event_id": f"x{i}",
        "quantity": qty,
    }


EVENTS = [
    ev(1, "a1", "2024-01-20T10:00:00", "report", qty=5.0),
    ev(2, "a1", "2024-02-01T00:00:00", "report", qty=5.0),
    ev(3, "a1", "2024-01-25T08:00:00", "pricing"),
    ev(4, "a1", "2024-01-28T08:00:00", "pricing"),
    ev(5, "a1", "2024-01-29T08:00:00", "invite"),
    ev(6, "a1", "2024-01-30T08:00:00", "paywall", user=None),
]


@pytest.fixture
def tiny(make_dataset):
    path = make_dataset(extra={"events": EVENTS, "event_catalog": CATALOG, "plan_limits": LIMITS})
    return load_dataset(path)


def row(frame, account, as_of):
    sel = frame[(frame.account_id == account) & (frame.as_of == pd.Timestamp(as_of))]
    assert len(sel) == 1
    return sel.iloc[0]


def test_columns_follow_the_registry_order(tiny):
    frame = build_features(tiny, "2024-02-01")
    assert list(frame.columns) == ["as_of", "account_id", *feature_names(["reports"])]
    assert frame["account_id"].tolist() == ["a1", "a2"]


def test_activity_family(tiny):
    r = row(build_features(tiny, "2024-02-01"), "a1", "2024-02-01")
    # Jan 3 login, Jan 20 report, Jan 25 + 28 pricing, Jan 29 invite, Jan 30 paywall;
    # the Feb 1 report is on the as-of day itself and must not count.
    assert r.events_30d == 6
    assert r.events_7d == 4  # Jan 25..31
    assert r.active_days_30d == 6
    assert r.active_users_30d == 1  # the paywall event has no user
    assert r.user_days_30d == 5
    assert r.days_since_last_event == 2  # Jan 30
    assert math.isclose(r.stickiness_30d, 5 / 30)


def test_breadth_family(tiny):
    r = row(build_features(tiny, "2024-02-01"), "a1", "2024-02-01")
    assert r.distinct_features_30d == 5  # login, reports, pricing, invite, paywall
    assert r.distinct_workflows_30d == 3  # core, analytics, team
    assert r.power_events_14d == 1 and r.power_events_30d == 1  # Jan 20 is within 14 days
    assert r.distinct_power_features_30d == 1
    assert r.premium_trial_events_30d == 1  # reports needs tier 2; a1 is on tier 1
    assert r.paywall_hits_30d == 1
    assert r.new_features_30d == 5
    # The starter plan (tier 1) includes 4 catalog features (all but reports); 4 used.
    assert r.plan_features_used_30d == 4
    assert r.plan_feature_share_30d == 1.0


def test_intent_and_team_family(tiny):
    r = row(build_features(tiny, "2024-02-01"), "a1", "2024-02-01")
    assert r.pricing_page_visits_7d == 2 and r.pricing_page_visits_30d == 2  # Jan 25, 28
    assert r.invites_30d == 1
    assert r.seats == 3 and r.seats_in_use == 1
    assert math.isclose(r.seat_utilization, 1 / 3)
    r2 = row(build_features(tiny, "2024-02-01"), "a2", "2024-02-01")
    assert r2.users_added_30d == 1  # u2 created Jan 2, inside [Jan 2, Feb 1)


def test_quota_family(tiny):
    frame = build_feature_frame(tiny, ["2024-02-01", "2024-02-02"])
    feb1, feb2 = row(frame, "a1", "2024-02-01"), row(frame, "a1", "2024-02-02")
    assert feb1.quota_util_30d__reports == 0.5
    assert feb1.quota_util_last_month__reports == 0.5
    assert math.isnan(feb1.quota_util_mtd__reports)  # day 1 of the month: nothing elapsed
    assert feb2.quota_util_30d__reports == 1.0  # Jan 20 + Feb 1
    assert math.isclose(feb2.quota_util_mtd__reports, 5 / (10 * 1 / 29))
    assert feb2.quotas_above_85 == 1
    assert feb2.quota_days_above_85 == 0  # neither calendar month reached 8.5 by itself
    # a2 is on a plan without limits: quota features are empty, not zero.
    assert math.isnan(row(frame, "a2", "2024-02-01").quota_util_max)


def test_days_above_85_counts_days_after_the_crossing(make_dataset):
    events = [
        ev(i, "a1", f"2024-03-{d:02d}T10:00:00", "report", qty=3.0)
        for i, d in enumerate((2, 4, 6, 8))
    ]  # cum 3, 6, 9 (>= 8.5 on Mar 6), 12
    path = make_dataset(extra={"events": events, "event_catalog": CATALOG, "plan_limits": LIMITS})
    r = row(build_features(load_dataset(path), "2024-03-16"), "a1", "2024-03-16")
    assert r.quota_days_above_85 == 10  # Mar 6 .. Mar 15


def test_commercial_family_and_history(make_dataset):
    subs = [
        {
            "account_id": "a1",
            "effective_at": "2024-03-01",
            "plan_id": "pro",
            "seats": 3,
            "mrr": 160.0,
            "status": "active",
        },  # upgrade
        {
            "account_id": "a1",
            "effective_at": "2024-04-01",
            "plan_id": "pro",
            "seats": 2,
            "mrr": 140.0,
            "status": "active",
        },  # contraction
        {
            "account_id": "a2",
            "effective_at": "2024-03-01",
            "plan_id": "pro",
            "seats": 0,
            "mrr": 0.0,
            "status": "canceled",
        },  # churn: a2 leaves the population
    ]
    ds = load_dataset(make_dataset(extra={"subscriptions": subs}))
    frame = build_feature_frame(ds, ["2024-03-01", "2024-03-02", "2024-04-15"])
    assert set(frame[frame.as_of == "2024-03-02"].account_id) == {"a1"}
    before = row(frame, "a1", "2024-03-01")  # the change at the as-of instant is not seen
    assert before.plan_tier == 1 and before.past_expansions == 0
    after = row(frame, "a1", "2024-04-15")
    assert after.plan_tier == 2 and after.mrr == 140.0
    assert after.past_expansions == 1 and after.past_contractions == 1
    assert after.days_since_last_expansion == 45
    assert after.tenure_days == 105
    assert after.segment == "smb"


def test_missing_optional_tables_leave_their_features_empty(make_dataset):
    ds = load_dataset(make_dataset(extra={"events": EVENTS}))  # no catalog, no limits
    r = row(build_features(ds, "2024-02-01"), "a1", "2024-02-01")
    assert r.distinct_features_30d == 5  # each event is its own feature
    assert math.isnan(r.power_events_30d) and math.isnan(r.pricing_page_visits_30d)
    assert math.isnan(r.quota_util_max)
    assert r.events_30d == 6


def test_trends_compare_last_30_days_with_the_30_before(make_dataset):
    events = [ev(i, "a1", f"2024-01-{d:02d}T10:00:00", "login") for i, d in enumerate((5, 6))]
    events += [
        ev(10 + i, "a1", f"2024-02-{d:02d}T10:00:00", "login")
        for i, d in enumerate((10, 11, 12, 13, 14))
    ]
    ds = load_dataset(make_dataset(replace={"events": events}))
    r = row(build_features(ds, "2024-03-01"), "a1", "2024-03-01")
    assert r.events_30d == 5 and r.events_prev_30d == 2
    assert r.events_trend_30d == 6 / 3


def test_rfm_scores_use_fixed_bins(tiny):
    frame = build_features(tiny, "2024-02-01").set_index("account_id")
    assert frame.loc["a1", "rfm_recency_score"] == 4  # 2 days since the last event
    assert frame.loc["a2", "rfm_recency_score"] == 3  # 29 days
    assert frame.loc["a1", "rfm_frequency_score"] == 2  # 6 active days
    # The cheapest paid plan costs 60 (50 base + one 10 seat): 80 -> 1x, 200 -> 3.3x.
    assert frame.loc["a1", "rfm_monetary_score"] == 1
    assert frame.loc["a2", "rfm_monetary_score"] == 2


def test_pairs_restrict_to_account_and_date(tiny):
    pairs = pd.DataFrame({"as_of": ["2024-02-01"], "account_id": ["a2"]})
    frame = build_feature_frame(tiny, [], pairs=pairs)
    assert frame[["account_id"]].to_dict("records") == [{"account_id": "a2"}]
    full = build_features(tiny, "2024-02-01")
    pd.testing.assert_frame_equal(frame, full[full.account_id == "a2"].reset_index(drop=True))


def test_progress_reports_every_step_in_order(tiny):
    from features.build import STEPS

    seen: list[str] = []
    build_feature_frame(tiny, ["2024-02-01"], progress=seen.append)
    assert tuple(seen) == STEPS


# --- day masks: 32-day blocks with one bit per day (features.rollup) -------------------------

# Day 19744 (2024-01-22) is the first day of a block; 19743 (2024-01-21) the last of the one
# before; the base dataset's login on 2024-01-03 (19725) is in that earlier block too.
EDGE_EVENTS = [
    ev(11, "a1", "2024-01-21T23:59:59", "login", user="u1"),
    ev(12, "a1", "2024-01-22T00:00:00", "login", user="u3"),
]


@pytest.mark.parametrize(
    ("as_of", "since_last", "days_7", "days_30", "days_90", "users_7", "user_days_30"),
    [
        ("2024-01-22", 1, 1, 2, 2, 1, 2),  # the date starts a block: no day of it counts yet
        ("2024-01-23", 1, 2, 3, 3, 2, 3),  # the date cuts the block after its first day
        ("2024-04-01", 70, 0, 0, 3, 0, 0),  # the last event is in a whole block, far back
    ],
)
def test_active_days_users_and_recency_at_block_edges(
    make_dataset, as_of, since_last, days_7, days_30, days_90, users_7, user_days_30
):
    users = [{"user_id": "u3", "account_id": "a1", "created_at": "2024-01-01"}]
    ds = load_dataset(make_dataset(extra={"events": EDGE_EVENTS, "users": users}))
    r = row(build_features(ds, as_of), "a1", as_of)
    assert r.days_since_last_event == since_last
    assert (r.active_days_7d, r.active_days_30d, r.active_days_90d) == (days_7, days_30, days_90)
    assert r.active_users_7d == users_7
    assert r.user_days_30d == user_days_30


@given(t=st.integers(-40_000, 40_000), window=st.sampled_from(sorted(WINDOWS)))
def test_window_masks_cover_exactly_the_window_days(t, window):
    """The masks of `as_of_blocks` hold exactly the days the window rule counts."""
    dates = pd.DataFrame({"as_of": [pd.Timestamp("2024-01-01")], "t": [t]})
    days = set()
    for b, mask in as_of_blocks_frame(dates)[["b", f"w_{window}"]].itertuples(index=False):
        days |= {BLOCK_DAYS * b + i for i in range(BLOCK_DAYS) if mask >> i & 1}
    w = WINDOWS[window]
    assert days == set(range(t - w.start, t - w.end)) == {d for d in days if w.contains(d, t)}


def test_highest_bit_sql_is_exact(tiny):
    """The recency's highest set bit, around every power of two a block mask can hold."""
    values = sorted({v for k in range(33) for v in (2**k - 1, 2**k, 2**k + 1) if 0 < v < 2**32})
    sql = " UNION ALL ".join(
        f"SELECT {v} AS v, {_highest_bit(f'CAST({v} AS BIGINT)')} AS h" for v in values
    )
    got = tiny.engine.df(sql)
    assert got["h"].tolist() == [v.bit_length() - 1 for v in got["v"]]


def test_distinct_counts_beyond_one_word_of_bits(make_dataset):
    """A set of values is held in 63-bit words: 70 catalog features need two of them."""
    catalog = [
        {"event": f"f{i}", "feature": f"feat{i}", "workflow": f"wf{i % 3}"} for i in range(70)
    ]
    events = [ev(100 + i, "a1", "2024-01-20T10:00:00", f"f{i}") for i in range(66)]
    ds = load_dataset(make_dataset(extra={"events": events}, replace={"event_catalog": catalog}))
    r = row(build_features(ds, "2024-02-01"), "a1", "2024-02-01")
    assert r.distinct_features_30d == 67  # 66 catalog features and the base dataset's login
    assert r.distinct_workflows_30d == 3
    assert r.new_features_30d == 67
