"""Incremental outcomes of treated vs holdout units, by breakdown, with intervals, and the
sample size an experiment needs: hand-written accounts with known answers."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from features.analytics.incrementality import (
    _bootstrap_difference,
    assignment_units,
    incremental_outcomes,
    minimum_detectable_lift,
    outreach_units,
    qini_coefficient,
    qini_curve,
    sample_size_for_lift,
    unit_outcomes,
)
from features.dataset import load_dataset


def sub(account, at, plan, seats, mrr, status="active"):
    return {
        "account_id": account,
        "effective_at": at,
        "plan_id": plan,
        "seats": seats,
        "mrr": mrr,
        "status": status,
    }


@pytest.fixture
def ds(make_dataset):
    """a1 and a2 treated (a1 upgrades and keeps it, a2 expands then cancels), a3 and a4 held
    out (a4 upgrades and keeps it), a5 treated too late to know (censored)."""
    accounts = [
        {"account_id": a, "created_at": "2024-01-01T00:00:00", "segment": s}
        for a, s in [("a1", "smb"), ("a2", "enterprise"), ("a3", "smb"), ("a4", "smb"),
                     ("a5", "smb")]
    ]  # fmt: skip
    subs = [
        sub("a1", "2024-01-01", "starter", 3, 80.0),
        sub("a1", "2024-02-20", "pro", 4, 180.0),
        sub("a2", "2024-01-02", "pro", 5, 200.0),
        sub("a2", "2024-02-10", "pro", 8, 260.0),
        sub("a2", "2024-03-15", "pro", 8, 260.0, "canceled"),
        sub("a3", "2024-01-01", "starter", 3, 80.0),
        sub("a4", "2024-01-01", "starter", 3, 80.0),
        sub("a4", "2024-02-15", "starter", 8, 130.0),
        sub("a5", "2024-01-01", "starter", 3, 80.0),
    ]
    events = [
        {"account_id": "a1", "timestamp": t, "event": "login", "user_id": "u1", "event_id": e}
        for t, e in [("2024-01-03T10:00:00", "e1"), ("2024-08-31T10:00:00", "e9")]
    ]
    outreach = [
        {"account_id": "a1", "sent_at": "2024-02-01", "channel": "csm", "trigger": "quota",
         "holdout": False},
        {"account_id": "a2", "sent_at": "2024-02-01", "channel": "email", "trigger": "quota",
         "holdout": False},
        {"account_id": "a3", "sent_at": "2024-02-01", "channel": "csm", "trigger": "quota",
         "holdout": True},
        {"account_id": "a4", "sent_at": "2024-02-01", "channel": "email", "trigger": "",
         "holdout": True},
        {"account_id": "a5", "sent_at": "2024-08-01", "channel": "email", "trigger": "",
         "holdout": False},
    ]  # fmt: skip
    path = make_dataset(
        replace={
            "accounts": accounts,
            "subscriptions": subs,
            "events": events,
            "users": [{"user_id": "u1", "account_id": "a1", "created_at": "2024-01-01"}],
            "outreach": outreach,
        }
    )
    return load_dataset(path)


def test_unit_outcomes_known_answers(ds):
    out = unit_outcomes(ds, outreach_units(ds)).set_index("account_id")
    assert out.loc[["a1", "a2", "a4"], "converted"].all() and not out.loc["a3", "converted"]
    assert out.loc["a1", "expansion_mrr"] == 100 and out.loc["a2", "expansion_mrr"] == 60
    assert out.loc["a4", "expansion_mrr"] == 50 and out.loc["a3", "expansion_mrr"] == 0
    # a2's expansion was canceled within 90 days: nothing retained.
    assert list(out.loc[["a1", "a2", "a3", "a4"], "retained_expansion_mrr_90d"]) == [100, 0, 0, 50]
    assert out.loc["a5", "censored"] and not out.loc["a1", "censored"]
    assert list(out.loc[["a1", "a2"], "route"]) == ["csm", "automated"]
    assert out.loc["a2", "segment"] == "enterprise"


def test_lift_by_metric_and_breakdown(ds):
    out = unit_outcomes(ds, outreach_units(ds))
    lift = incremental_outcomes(out).set_index("metric")
    assert lift.loc["converted", "treated_n"] == 2  # a5 censored
    assert lift.loc["converted", "lift"] == pytest.approx(1.0 - 0.5)
    assert lift.loc["converted", "ci_low"] < 0.5 < lift.loc["converted", "ci_high"]
    assert lift.loc["expansion_mrr", "lift"] == pytest.approx(80 - 25)
    assert lift.loc["retained_expansion_mrr_90d", "lift"] == pytest.approx(50 - 25)
    mrr = lift.loc["expansion_mrr"]
    assert mrr["ci_low"] <= mrr["lift"] <= mrr["ci_high"]
    by_route = incremental_outcomes(out, "route")
    assert set(by_route["route"]) == {"all", "csm", "automated"}
    csm = by_route[(by_route["route"] == "csm") & (by_route["metric"] == "converted")].iloc[0]
    assert (csm["treated_mean"], csm["holdout_mean"]) == (1.0, 0.0)
    assert set(incremental_outcomes(out, "segment")["segment"]) == {"all", "smb", "enterprise"}
    with pytest.raises(ValueError, match="cannot break down by 'color'"):
        incremental_outcomes(out, "color")


def test_assignment_units_carry_route_score_and_first_trigger(ds):
    assignments = pd.DataFrame(
        {
            "account_id": [f"a{i}" for i in range(1, 5)] * 5,
            "as_of": ["2024-02-01"] * 20,
            "holdout": [False, False, True, True] * 5,
            "route": ["csm", "automated", "csm", "automated"] * 5,
            "triggers": [["seat_pressure", "breadth"], [], None, ["breadth"]] * 5,
            "expected_net_value": np.arange(20, dtype=float),
        }
    )
    units = assignment_units(assignments)
    assert list(units["trigger"][:4]) == ["seat_pressure", "(none)", "(none)", "breadth"]
    out = unit_outcomes(ds, units)
    assert sorted(out["score_decile"].unique()) == [f"{d:02d}" for d in range(1, 11)]
    top = out[out["score_decile"] == "01"]
    assert set(top["score"]) == {19.0, 18.0}
    by_decile = incremental_outcomes(out, "score_decile")
    assert len(by_decile) == 11 * 3
    with pytest.raises(ValueError, match="missing column"):
        assignment_units(assignments.drop(columns="route"))


def test_bootstrap_interval_covers_a_known_difference():
    rng = np.random.default_rng(1)
    treated = rng.exponential(30, 4000)
    holdout = rng.exponential(20, 800)
    low, high = _bootstrap_difference(treated, holdout, np.random.default_rng(0))
    diff = treated.mean() - holdout.mean()
    se = math.sqrt(treated.var() / 4000 + holdout.var() / 800)
    assert low < diff < high
    assert (high - low) == pytest.approx(2 * 1.96 * se, rel=0.15)  # the normal width, roughly


def test_sample_size_matches_the_textbook_formula():
    # 10% vs 15%, equal arms, 5% two-sided, 80% power: 683 per arm (unpooled variance).
    equal = sample_size_for_lift(0.10, 0.05, holdout_share=0.5)
    assert equal == {"holdout": 683, "treated": 683, "total": 1366}
    tenth = sample_size_for_lift(0.10, 0.05, holdout_share=0.1)
    assert tenth["total"] > equal["total"]  # a small holdout needs more units in all
    assert tenth["treated"] == pytest.approx(9 * tenth["holdout"], abs=1)
    mdl = minimum_detectable_lift(0.10, tenth["holdout"], tenth["treated"])
    assert 0.04 < mdl < 0.06
    with pytest.raises(ValueError):
        sample_size_for_lift(0.95, 0.1)


def test_report_section_shows_lifts_breakdowns_and_sample_size(ds, tmp_path):
    from training.report import render_report

    assignments = pd.DataFrame(
        {
            "account_id": ["a1", "a2", "a3", "a4"],
            "as_of": ["2024-02-01"] * 4,
            "holdout": [False, False, True, True],
            "route": ["csm", "automated", "csm", "automated"],
            "expected_net_value": [4.0, 3.0, 2.0, 1.0],
        }
    )
    page = render_report(ds, tmp_path / "r.html", assignments=assignments).read_text()
    section = page[page.index('<section id="incrementality">') :]
    section = section[: section.index("</section>")]
    assert "9 units (outreach 5, assignment 4)" in section and "4 of them held out" in section
    for caption in ("By trigger", "By route", "By segment", "By score decile", "By source"):
        assert caption in section
    cells = " ".join(re.sub(r"<[^>]+>", " ", section).split())
    # Conversion: 4/4 treated (a5 censored) vs 2/4 held out; expansion MRR 80 vs 25.
    assert "all conversion within 60 days 4 4 100.0% 50.0% 50.0%" in cells
    assert "all expansion MRR within 60 days 4 4 80 25 55" in cells
    assert "Units needed" in section and "detect a conversion lift of" in section


def test_no_units_gives_empty_rows_and_a_note(make_dataset, tmp_path):
    from serving.web.render import render
    from training.incrementality_report import collect_incrementality, incrementality_section

    ds = load_dataset(make_dataset())  # no outreach table, no assignments
    out = unit_outcomes(ds, outreach_units(ds))
    assert out.empty
    lift = incremental_outcomes(out)
    assert (lift["treated_n"] == 0).all() and lift["lift"].isna().all()
    (section,) = incrementality_section(collect_incrementality(ds))
    html = render("report/section.html", section=section)
    assert '<section id="incrementality">' in html and "No holdout units yet" in html


def test_qini_curve_by_hand():
    # Best first: a treated converter, a control non-converter, a treated non-converter, a
    # control converter.
    curve = qini_curve([4, 3, 2, 1], [True, False, True, False], [1, 0, 0, 1])
    assert list(curve["qini"]) == [0, 1, 1, 1, 0]  # the last: 1 - 1 * 2 / 2


def test_qini_ranks_the_true_uplift_above_random_and_its_inverse():
    rng = np.random.default_rng(5)
    n = 20_000
    uplift = rng.uniform(0, 0.3, n)
    base = rng.uniform(0.05, 0.2, n)
    treated = rng.random(n) < 0.5
    outcome = rng.random(n) < base + treated * uplift
    oracle = qini_coefficient(uplift, treated, outcome)
    random = qini_coefficient(rng.random(n), treated, outcome)
    worst = qini_coefficient(-uplift, treated, outcome)
    # Base rates alone carry no uplift: ranking by them is no better than random.
    by_base = qini_coefficient(base, treated, outcome)
    # Theory: half the units treated, uplift uniform on [0, 0.3]: the oracle's area per unit
    # is 0.5 * (0.3 * (1/2 - 1/6) - 0.15 / 2) = 0.0125.
    assert oracle == pytest.approx(0.0125, abs=0.002)
    assert worst == pytest.approx(-0.0125, abs=0.002)
    assert abs(random) < 0.003 and abs(by_base) < 0.003
