"""Upsell analytics checked against answers computed by hand on a six-account dataset.

The story (money is monthly mrr; "live" = active or trialing):

- a1 starter 100 since 2023-06-01, upgrades to pro 250 on 2024-02-15 (upgrade +150).
- a2 pro 400 since 2023-06-15, drops to 300 on 2024-02-20 (contraction -100).
- a3 signs up 2024-02-10 trialing 100 (new +100), active from 2024-03-10 (no move).
- a4 starter 200 since 2023-12-01, cancels 2024-02-05 (churn -200), returns at 150 on
  2024-03-20 (reactivation +150).
- a5 pro 500 since 2023-07-01, grows to 600 on 2024-02-25 (expansion +100), shrinks to 450 on
  2024-06-01 (contraction -150).
- a6 starter 100 since 2023-05-01, cancels 2024-01-15 (churn -100).

A last event on 2024-12-31 makes the data end 2025-01-01.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features import analytics as an
from features.analytics.stats import duration_summary, newcombe_interval, wilson_interval
from features.dataset import load_dataset

YEAR = {"start": "2024-01-01", "end": "2025-01-01"}

ACCOUNTS = [
    {"account_id": "a1", "created_at": "2023-06-01", "segment": "smb"},
    {"account_id": "a2", "created_at": "2023-06-15", "segment": "enterprise"},
    {"account_id": "a3", "created_at": "2024-02-10", "segment": "smb"},
    {"account_id": "a4", "created_at": "2023-12-01", "segment": "smb"},
    {"account_id": "a5", "created_at": "2023-07-01", "segment": "enterprise"},
    {"account_id": "a6", "created_at": "2023-05-01", "segment": "smb"},
]
PLANS = [
    {"plan_id": "starter", "tier": 1, "name": "Starter", "base_mrr": 50.0, "seat_mrr": 10.0},
    {"plan_id": "pro", "tier": 2, "name": "Pro", "base_mrr": 100.0, "seat_mrr": 20.0},
]


def sub(account, at, plan, mrr, status="active", seats=5):
    return {
        "account_id": account,
        "effective_at": at,
        "plan_id": plan,
        "seats": seats,
        "mrr": mrr,
        "status": status,
    }


SUBSCRIPTIONS = [
    sub("a1", "2023-06-01", "starter", 100.0),
    sub("a1", "2024-02-15", "pro", 250.0),
    sub("a2", "2023-06-15", "pro", 400.0),
    sub("a2", "2024-02-20", "pro", 300.0),
    sub("a3", "2024-02-10", "starter", 100.0, "trialing"),
    sub("a3", "2024-03-10", "starter", 100.0),
    sub("a4", "2023-12-01", "starter", 200.0),
    sub("a4", "2024-02-05", "starter", 200.0, "canceled"),
    sub("a4", "2024-03-20", "starter", 150.0),
    sub("a5", "2023-07-01", "pro", 500.0),
    sub("a5", "2024-02-25", "pro", 600.0),
    sub("a5", "2024-06-01", "pro", 450.0),
    sub("a6", "2023-05-01", "starter", 100.0),
    sub("a6", "2024-01-15", "starter", 100.0, "canceled"),
]
USERS = [
    {"user_id": f"u{a[-1]}", "account_id": a, "created_at": "2023-05-01"}
    for a in ("a1", "a2", "a3", "a4", "a5", "a6")
]
EVENTS = [
    {
        "account_id": "a1",
        "timestamp": "2024-01-03T10:00:00",
        "event": "login",
        "user_id": "u1",
        "event_id": "e1",
    },
    {
        "account_id": "a2",
        "timestamp": "2024-02-20T10:00:00",
        "event": "pricing_viewed",
        "user_id": "u2",
        "event_id": "e2",
    },
    {
        "account_id": "a1",
        "timestamp": "2024-12-31T12:00:00",
        "event": "login",
        "user_id": "u1",
        "event_id": "e3",
    },
]
CATALOG = [{"event": "login"}, {"event": "pricing_viewed", "signal": "pricing_page"}]


def touch(account, at, channel, trigger, holdout=False):
    return {
        "account_id": account,
        "sent_at": at,
        "channel": channel,
        "trigger": trigger,
        "holdout": holdout,
    }


OUTREACH = [
    touch("a1", "2024-01-20", "email", "quota_85"),  # upgrade 26 days later: converted
    touch("a2", "2024-01-25", "csm", "quota_85"),  # only a contraction follows
    touch("a5", "2024-02-01", "in_app", "breadth"),  # expansion 24 days later: converted
    touch("a4", "2024-01-10", "email", "breadth", holdout=True),
    touch("a3", "2024-02-15", "in_app", "quota_85", holdout=True),
    touch("a2", "2024-11-15", "email", "breadth"),  # 60-day window runs past the data: censored
]


@pytest.fixture
def ds(make_dataset):
    path = make_dataset(
        replace={
            "accounts": ACCOUNTS,
            "plans": PLANS,
            "subscriptions": SUBSCRIPTIONS,
            "users": USERS,
            "events": EVENTS,
            "event_catalog": CATALOG,
            "outreach": OUTREACH,
        }
    )
    dataset = load_dataset(path)
    yield dataset
    dataset.close()


def pql_frame() -> pd.DataFrame:
    """Weekly PQL flags by hand: a1 (quota_85), a2 (breadth) and a6 (pricing_page) enter in
    the week of 2024-01-01; a2 leaves a week later."""
    rows = []
    flags = {
        "2024-01-01": {"a1": None, "a2": None, "a6": None},
        "2024-01-08": {"a1": "quota_85", "a2": "breadth", "a6": "pricing_page"},
        "2024-01-15": {"a1": "quota_85", "a2": None, "a6": "pricing_page"},
    }
    for as_of, accounts in flags.items():
        for account, fired in accounts.items():
            row = {"as_of": pd.Timestamp(as_of), "account_id": account}
            row.update({t: t == fired for t in an.trigger_names()[:-1]})
            row[an.ANY_TRIGGER] = fired is not None
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame["as_of"] = frame["as_of"].astype("datetime64[us]")
    return frame


def one(frame: pd.DataFrame, **where) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for col, value in where.items():
        mask &= frame[col] == value
    assert mask.sum() == 1, f"{where}: {mask.sum()} rows"
    return frame[mask].iloc[0]


# --- statistics ------------------------------------------------------------------------------


def test_wilson_interval_matches_the_published_example():
    # Newcombe (1998), table I: 81/263 -> 0.2553 to 0.3662.
    low, high = wilson_interval(81, 263)
    assert low == pytest.approx(0.2553, abs=1e-4)
    assert high == pytest.approx(0.3662, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), table II, example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339.
    diff, low, high = newcombe_interval(56, 70, 48, 80)
    assert diff == pytest.approx(0.2)
    assert low == pytest.approx(0.0524, abs=1e-4)
    assert high == pytest.approx(0.3339, abs=1e-4)


def test_duration_summary_quartiles():
    frame = pd.DataFrame({"days": [1.0, 2.0, 3.0, 4.0, None], "g": ["x", "x", "y", "y", "y"]})
    overall = duration_summary(frame, "days").iloc[0]
    assert (overall["count"], overall["median"], overall["mean"]) == (4, 2.5, 2.5)
    by = duration_summary(frame, "days", by="g").set_index("g")
    assert by.loc["y", "median"] == 3.5


# --- revenue ---------------------------------------------------------------------------------


def test_periods_cover_the_window_and_flag_incomplete_ones():
    weeks = an.periods("2024-01-03", "2024-01-20", "W")
    assert list(weeks["period"]) == ["2024-W01", "2024-W02", "2024-W03"]
    assert weeks["period_start"].iloc[0] == pd.Timestamp("2024-01-01")
    assert list(weeks["complete"]) == [False, True, False]
    quarters = an.periods("2024-01-01", "2025-01-01", "Q")
    assert list(quarters["period"]) == ["2024Q1", "2024Q2", "2024Q3", "2024Q4"]
    assert quarters["complete"].all()


def test_mrr_by_period(ds):
    months = an.mrr_by_period(ds, start="2024-01-01", end="2024-04-01").set_index("period")
    assert months.loc["2024-01", "mrr"] == 1200  # a6 left
    feb = months.loc["2024-02"]
    assert (feb["mrr"], feb["accounts"], feb["arpa"]) == (1250, 4, 312.5)
    assert months.loc["2024-03", "mrr"] == 1400  # a4 came back at 150


def test_mrr_bridge_by_hand(ds):
    feb = one(an.mrr_movements(ds, start="2024-02-01", end="2024-03-01"), period="2024-02")
    assert feb["start_mrr"] == 1200
    assert feb["new_mrr"] == 100  # a3 (a trial is live)
    assert feb["expansion_mrr"] == 250  # a1 upgrade 150 + a5 expansion 100
    assert feb["contraction_mrr"] == 100  # a2
    assert feb["churn_mrr"] == 200  # a4
    assert feb["reactivation_mrr"] == 0
    assert feb["end_mrr"] == 1250
    assert feb["expansion_mrr_rate"] == pytest.approx(250 / 1200)
    q1 = one(an.mrr_movements(ds, freq="Q", **YEAR), period="2024Q1")
    assert (q1["start_mrr"], q1["churn_mrr"], q1["reactivation_mrr"], q1["end_mrr"]) == (
        1300,
        300,
        150,
        1400,
    )


def test_mrr_bridge_adds_up_and_chains(ds):
    for freq in ("W", "M", "Q"):
        moves = an.mrr_movements(ds, freq=freq, **YEAR)
        rebuilt = (
            moves["start_mrr"]
            + moves["new_mrr"]
            + moves["expansion_mrr"]
            - moves["contraction_mrr"]
            - moves["churn_mrr"]
            + moves["reactivation_mrr"]
        )
        assert (rebuilt - moves["end_mrr"]).abs().max() < 1e-9
        assert (moves["end_mrr"].iloc[:-1].to_numpy() == moves["start_mrr"].iloc[1:]).all()


def test_nrr_and_grr_formula_by_hand(ds):
    ret = an.revenue_retention(ds, **YEAR).set_index("period")
    # February: cohort a1 100, a2 400, a4 200, a5 500 = 1200; +250 expansion, -100, -200.
    assert ret.loc["2024-02", "nrr"] == pytest.approx((1200 + 250 - 100 - 200) / 1200)
    # GRR: min(start, retained) per account: 100 + 300 + 0 + 500.
    assert ret.loc["2024-02", "grr"] == pytest.approx(900 / 1200)
    # March: a4 is not in the cohort (paid nothing on March 1), so its return does not count.
    assert ret.loc["2024-03", "nrr"] == pytest.approx(1.0)
    quarters = an.revenue_retention(ds, freq="Q", **YEAR).set_index("period")
    assert quarters.loc["2024Q1", "nrr"] == pytest.approx(1150 / 1300)
    assert quarters.loc["2024Q1", "grr"] == pytest.approx(900 / 1300)


def test_trailing_twelve_month_nrr(ds):
    ret = an.revenue_retention(ds, freq="Q", trailing_months=12, **YEAR).set_index("period")
    dec = ret.loc["2024Q4"]
    assert dec["window_start"] == pd.Timestamp("2024-01-01")
    # Cohort on 2024-01-01: a1 100, a2 400, a4 200, a5 500, a6 100 = 1300. Over 2024:
    # expansion 150 + 100, contraction 100 + 150, churn 200 + 100.
    assert dec["start_mrr"] == 1300
    assert dec["nrr"] == pytest.approx((1300 + 250 - 250 - 300) / 1300)


def test_nrr_by_signup_cohort(ds):
    cohorts = an.nrr_by_signup_cohort(ds, start="2024-02-01", end="2024-03-01").set_index("cohort")
    assert list(cohorts.index) == ["2023Q2", "2023Q3", "2023Q4"]  # a3 had no starting revenue
    assert cohorts.loc["2023Q2", "nrr"] == pytest.approx(550 / 500)  # a1 + a2
    assert cohorts.loc["2023Q2", "grr"] == pytest.approx(400 / 500)
    assert cohorts.loc["2023Q3", "nrr"] == pytest.approx(1.2)  # a5
    assert cohorts.loc["2023Q4", "nrr"] == 0.0  # a4 churned


def test_acv_uplift_by_path_and_segment(ds):
    path = one(an.acv_uplift_by_upgrade_path(ds, **YEAR), path="Starter → Pro")
    assert (path["upsells"], path["acv_before_mean"], path["acv_uplift_mean"]) == (1, 1200, 1800)
    assert path["acv_uplift_pct"] == pytest.approx(1.5)
    seg = an.acv_uplift_by_segment(ds, **YEAR)
    assert one(seg, segment="smb", change_kind="upgrade")["acv_uplift_total"] == 1800
    assert one(seg, segment="enterprise", change_kind="expansion")["acv_uplift_total"] == 1200


def test_ltv_is_arpa_times_lifetime(ds):
    ltv = an.ltv_estimate(ds, start="2024-01-01", end="2024-04-01").iloc[0]
    # Paying account-months: Jan 5 (1300), Feb 4 (1200), Mar 4 (1250); churned: a6, a4.
    assert (ltv["account_months"], ltv["churned_accounts"]) == (13, 2)
    assert ltv["arpa"] == pytest.approx(3750 / 13)
    assert ltv["lifetime_months"] == pytest.approx(6.5)
    assert ltv["ltv"] == pytest.approx(1875)


# --- pipeline --------------------------------------------------------------------------------


def test_pql_entries_skip_the_baseline_and_continuing_status():
    entries = an.pql_entries(pql_frame())
    assert len(entries) == 6  # three accounts x (their trigger + any_trigger), all on 01-08
    assert set(entries["as_of"]) == {pd.Timestamp("2024-01-08")}
    assert set(entries["fired_after"]) == {pd.Timestamp("2024-01-01")}


def test_pql_volume_and_per_100_active():
    volume = an.pql_volume(pql_frame(), "W").set_index("period")
    assert volume.loc[
        "2024-W01", ["quota_85", "breadth", "pricing_page", "any_trigger"]
    ].tolist() == [1, 1, 1, 3]
    assert volume.loc["2024-W02", "any_trigger"] == 0
    per100 = an.pqls_per_100_active(pql_frame(), "W").set_index("period")
    assert per100.loc["2024-W01", "pqls_per_100_active"] == pytest.approx(100.0)
    assert per100.loc["2024-W02", "pql_share"] == pytest.approx(2 / 3)
    monthly = an.pql_volume(pql_frame(), "M")
    assert monthly["any_trigger"].tolist() == [3]


def test_time_in_pql_status(ds):
    table = an.time_in_pql_status(ds, pql_frame()).set_index("trigger")
    assert table.loc["quota_85", "days_median"] == pytest.approx(19)  # 01-01 -> a1 on 01-20
    assert table.loc["breadth", "days_median"] == pytest.approx(24)  # a2 on 01-25
    assert table.loc["pricing_page", "contact_rate"] == 0.0  # a6 never contacted
    anyt = table.loc["any_trigger"]
    assert (anyt["entries"], anyt["contacted"], anyt["days_median"]) == (3, 2, 21.5)


def test_pql_status_uses_the_trigger_rules(ds):
    # a2 visits the pricing page on 2024-02-20: PQL from Monday 02-26 (as of = data before it).
    pql = an.pql_status(ds, start="2024-02-01", end="2024-03-10")
    entries = an.pql_entries(pql)
    pricing = entries[entries["trigger"] == "pricing_page"]
    assert pricing[["account_id", "as_of"]].values.tolist() == [["a2", pd.Timestamp("2024-02-26")]]
    assert not pql[pql["as_of"] < pd.Timestamp("2024-02-26")]["pricing_page"].any()


# --- conversion ------------------------------------------------------------------------------


def test_conversion_by_trigger_with_holdout(ds):
    table = an.conversion_by_trigger(ds, **YEAR)
    q = one(table, trigger="quota_85", group="contacted")
    assert (q["touches"], q["conversions"], q["conversion_rate"]) == (2, 1, 0.5)
    assert one(table, trigger="quota_85", group="holdout")["conversions"] == 0
    b = one(table, trigger="breadth", group="contacted")
    assert (b["touches"], b["conversions"]) == (1, 1)  # the censored November touch is out
    assert (b["ci_low"], b["ci_high"]) == pytest.approx(wilson_interval(1, 1))


def test_conversion_by_channel(ds):
    table = an.conversion_by_channel(ds, **YEAR)
    assert one(table, channel="email", group="contacted")["conversion_rate"] == 1.0
    assert one(table, channel="csm", group="contacted")["conversion_rate"] == 0.0
    assert one(table, channel="in_app", group="holdout")["touches"] == 1


def test_holdout_comparison_difference_and_interval(ds):
    table = an.holdout_comparison(ds, by="trigger", **YEAR)
    overall = one(table, trigger="all")
    assert (overall["contacted_touches"], overall["contacted_conversions"]) == (3, 2)
    assert (overall["holdout_touches"], overall["holdout_conversions"]) == (2, 0)
    _diff, low, high = newcombe_interval(2, 3, 0, 2)
    assert overall["difference"] == pytest.approx(2 / 3)
    assert (overall["ci_low"], overall["ci_high"]) == pytest.approx((low, high))
    assert low < overall["difference"] < high


def test_outreach_outcomes_censor_late_touches(ds):
    out = an.outreach_outcomes(ds, **YEAR)
    late = one(out, account_id="a2", channel="email")
    assert late["censored"] and not late["converted"]
    a1 = one(out, account_id="a1")
    assert a1["days_to_conversion"] == pytest.approx(26)


def test_time_to_upsell_from_signup(ds):
    table = an.time_to_upsell_from_signup(ds, **YEAR).set_index("account_id")
    assert table.loc["a1", "days_to_upsell"] == 259  # 2023-06-01 -> 2024-02-15
    assert table.loc["a5", "days_to_upsell"] == 239  # 2023-07-01 -> 2024-02-25
    assert set(table.index) == {"a1", "a5"}


def test_time_from_trigger_to_conversion(ds):
    table = an.time_from_trigger_to_conversion(ds, pql_frame()).set_index("trigger")
    assert table.loc["quota_85", "conversion_rate"] == 1.0  # a1 upgraded 45 days after 01-01
    assert table.loc["quota_85", "days_median"] == pytest.approx(45)
    assert table.loc["breadth", "conversion_rate"] == 0.0
    assert table.loc["any_trigger", "conversion_rate"] == pytest.approx(1 / 3)


# --- value -----------------------------------------------------------------------------------


def test_retention_by_group_and_differential(ds):
    ret = an.retention_by_group(ds, pql_frame(), horizons_days=(90, 365), **YEAR)
    upsold = one(ret, group="upsold", horizon_days=90)
    assert (upsold["accounts"], upsold["retained"]) == (2, 2)  # a1, a5
    pql = one(ret, group="pql_not_upsold", horizon_days=90)
    assert (pql["accounts"], pql["retained"]) == (2, 1)  # a2 stays, a6 left
    everyone = one(ret, group="all", horizon_days=90)
    assert (everyone["accounts"], everyone["retained"]) == (5, 4)  # a4 is back by 03-31
    assert one(ret, group="upsold", horizon_days=365)["accounts"] == 0  # censored
    assert one(ret, group="all", horizon_days=365)["retention_rate"] == pytest.approx(0.8)
    diff = an.retention_differential(ret).set_index("horizon_days")
    assert diff.loc[90, "difference"] == pytest.approx(0.5)
    _, low, high = newcombe_interval(2, 2, 1, 2)
    assert (diff.loc[90, "ci_low"], diff.loc[90, "ci_high"]) == pytest.approx((low, high))


def test_post_upsell_adoption_churn():
    expansions = pd.DataFrame(
        {
            "is_tier_upgrade": [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0],
            "new_tier_events_30d": [5.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0],
            "churned_after_upsell": [0, 0, 1, 1, 0, 1, 1],
            "censored": [False, False, False, False, False, False, True],
        }
    )
    table = an.post_upsell_adoption(expansions).set_index("group")
    # Kept: 5 uncensored tier upgrades; adopters 2 (none churned), non-adopters 3 (2 churned).
    assert table.loc["adopters", "upgrades"] == 2
    assert table.loc["adopters", "churn_rate"] == 0.0
    assert table.loc["non_adopters", "churn_rate"] == pytest.approx(2 / 3)
    assert table.loc["adopters", "share_of_upgrades"] == pytest.approx(0.4)
    assert table.loc["all_upgrades", "churned"] == 2


def test_nrr_upsold_vs_rest(ds):
    table = an.nrr_upsold_vs_rest(ds, **YEAR)
    upsold = one(table, period="2024Q1", group="upsold")
    # a1 (250) and a5 (600) from 2024-04-01; a5 shrinks by 150 in June.
    assert upsold["start_mrr"] == 850
    assert upsold["nrr"] == pytest.approx(700 / 850)
    assert upsold["window_end"] == pd.Timestamp("2025-01-01")
    rest = one(table, period="2024Q1", group="rest")
    assert (rest["start_mrr"], rest["nrr"]) == (550, 1.0)  # a2 300, a3 100, a4 150
    assert "2024Q4" not in set(table["period"])  # no follow-up after the data ends


def test_nrr_upsold_vs_rest_has_the_same_columns_with_no_periods(sim_data):
    from features.analytics.value import nrr_upsold_vs_rest
    from features.dataset import load_dataset

    ds = load_dataset(sim_data, write_quarantine=False)
    full = nrr_upsold_vs_rest(ds, cohort_freq="M")
    empty = nrr_upsold_vs_rest(ds, cohort_freq="M", start="2100-01-01", end="2100-02-01")
    assert len(full) > 0 and empty.empty
    assert list(empty.columns) == list(full.columns)
