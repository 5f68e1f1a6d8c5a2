"""Population stability index on distributions whose PSI is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from serving.drift import (
    PSI_WARNING,
    categorical_psi,
    drift_report,
    numeric_psi,
    psi_from_shares,
)


def test_psi_of_shares_by_hand():
    # (0.9 - 0.5) ln(0.9 / 0.5) + (0.1 - 0.5) ln(0.1 / 0.5)
    expected = 0.4 * math.log(1.8) + 0.4 * math.log(5)
    assert psi_from_shares([0.5, 0.5], [0.9, 0.1]) == pytest.approx(expected)
    assert psi_from_shares([50, 50], [90, 10]) == pytest.approx(expected)  # counts work too
    assert psi_from_shares([0.5, 0.5], [0.1, 0.9]) == pytest.approx(expected)  # symmetric


def test_psi_of_identical_distributions_is_zero():
    rng = np.random.default_rng(1)
    x = rng.normal(size=20_000)
    assert numeric_psi(x, x) == 0.0
    assert numeric_psi(x, rng.normal(size=20_000)) < 0.005  # same law, another sample
    assert categorical_psi(["a", "b", "b"] * 10, ["b", "a", "b"] * 10) == 0.0


def test_psi_of_a_shifted_normal_matches_the_binned_closed_form():
    """N(0,1) vs N(0.5,1) in reference deciles: sum (a - 0.1) ln(a / 0.1), a from the CDF.

    In the limit of fine bins PSI of two unit normals is their symmetric KL divergence, mu^2
    (0.25 here); ten bins lose a little of it: 0.2377.
    """
    mu = 0.5
    inner = norm.ppf(np.linspace(0, 1, 11)[1:-1])
    actual = np.diff(np.concatenate([[0.0], norm.cdf(inner - mu), [1.0]]))
    closed_form = float(np.sum((actual - 0.1) * np.log(actual / 0.1)))
    assert closed_form == pytest.approx(0.2377, abs=1e-4)
    rng = np.random.default_rng(7)
    sample = numeric_psi(rng.normal(size=200_000), rng.normal(mu, size=200_000))
    assert sample == pytest.approx(closed_form, abs=0.01)
    assert sample < mu**2
    assert sample > PSI_WARNING  # a half-sigma shift is worth a warning


def test_missing_values_and_new_levels_have_their_own_bins():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=5000)
    half_missing = np.where(rng.random(5000) < 0.5, np.nan, rng.normal(size=5000))
    assert numeric_psi(ref, half_missing) > 1.0
    # A level never seen in training is floored, not infinite.
    psi = categorical_psi(["smb"] * 90 + ["enterprise"] * 10, ["smb"] * 80 + ["new"] * 20)
    assert math.isfinite(psi) and psi > PSI_WARNING


def test_ties_collapse_into_one_bin():
    """A feature that is mostly zero has duplicate deciles: no empty bins, no spurious PSI."""
    rng = np.random.default_rng(5)
    ref = np.where(rng.random(10_000) < 0.8, 0.0, rng.exponential(size=10_000))
    cur = np.where(rng.random(10_000) < 0.8, 0.0, rng.exponential(size=10_000))
    assert numeric_psi(ref, cur) < 0.01


def test_drift_report_flags_features_above_the_threshold():
    rng = np.random.default_rng(11)
    reference = {
        "stable": rng.normal(size=4000).tolist(),
        "shifted": rng.normal(size=4000).tolist(),
        "segment": (["smb"] * 3000 + ["enterprise"] * 1000),
        "not_in_batch": [1.0, 2.0],
    }
    batch = pd.DataFrame(
        {
            "stable": rng.normal(size=3000),
            "shifted": rng.normal(1.0, size=3000),
            "segment": ["smb"] * 1500 + ["enterprise"] * 1500,
        }
    )
    report = drift_report(reference, batch, categorical=["segment"])
    assert set(report.psi) == {"stable", "shifted", "segment"}
    assert report.psi["stable"] < 0.02
    assert report.warnings == ["shifted", "segment"]  # largest first
    stored = report.to_dict()
    assert stored["warnings"] == report.warnings and stored["threshold"] == PSI_WARNING
    empty = drift_report(None, batch)
    assert empty.psi == {} and empty.warnings == [] and "no training feature sample" in empty.note


def test_ages_are_compared_shifted_back_to_the_training_sample():
    """Tenure grows a day a day: a batch 90 days after the training sample is not drift."""
    from datetime import date

    from serving.drift import age_shifts

    rng = np.random.default_rng(3)
    tenure = rng.uniform(30, 900, size=4000)
    reference = {"tenure_days": tenure.tolist(), "events_30d": rng.poisson(20, 4000).tolist()}
    batch = pd.DataFrame({"tenure_days": tenure[:3000] + 90, "events_30d": rng.poisson(20, 3000)})
    metadata = {"training_feature_sample_as_of": "2025-01-01"}
    shifts = age_shifts(metadata, date(2025, 4, 1))
    assert shifts["tenure_days"] == 90
    assert "events_30d" not in shifts  # not an age
    # Reset by the next expansion: not an age (see the look-back test below).
    assert "days_since_last_expansion" not in shifts
    assert drift_report(reference, batch).warnings == ["tenure_days"]  # unshifted: a false alarm
    shifted = drift_report(reference, batch, shifts=shifts)
    assert shifted.psi["tenure_days"] < 0.02 and shifted.warnings == []
    assert age_shifts({}, date(2025, 4, 1)) == {}  # older models: no date, no shift


def _days_since_last(rng, n: int, look_back: float, rate: float) -> np.ndarray:
    """Days since the latest event of a steady process (events at `rate` a day), as seen with
    `look_back` days of history: empty when the latest one is older than the history."""
    gap = rng.exponential(1 / rate, size=n)  # memoryless: the same law at every date
    return np.where(gap > look_back, np.nan, np.floor(gap))


def test_days_since_the_last_event_are_compared_within_the_look_back_both_sides_have():
    """A steady business seen at the training sample's date (300 days of history) and at the
    batch's (570 days): the same law, but only the batch can see gaps over 300 days, and it
    sees fewer accounts with none. Compared as they are that is drift; within the shared
    look-back it is not, and a real change (expansions twice as frequent) still is."""
    rng = np.random.default_rng(9)
    name = "days_since_last_expansion"
    reference = {name: _days_since_last(rng, 5000, 300, 1 / 400).tolist()}
    healthy = pd.DataFrame({name: _days_since_last(rng, 4000, 570, 1 / 400)})
    assert numeric_psi(np.array(reference[name], dtype=float), healthy[name].to_numpy()) > 0.2
    assert drift_report(reference, healthy).warnings == []
    assert drift_report(reference, healthy).psi[name] < 0.05
    changed = pd.DataFrame({name: _days_since_last(rng, 4000, 570, 2 / 400)})
    assert drift_report(reference, changed).warnings == [name]
    # The other way round (a backfill before the sample's date) is symmetric.
    earlier = pd.DataFrame({name: _days_since_last(rng, 4000, 150, 1 / 400)})
    assert drift_report(reference, earlier).warnings == []


def test_calendar_bound_features_are_compared_only_on_the_same_day():
    """Month-to-date use is empty on the 1st (when monthly training samples are taken) and
    daily recency dips after weekends: a nightly run on another day is not drift."""
    from datetime import date

    from serving.drift import calendar_mismatches

    metadata = {"training_feature_sample_as_of": "2024-07-01"}  # the 1st, a Monday
    mtd = ["quota_util_mtd__api_calls", "quota_projected_util_max", "quota_days_above_85"]
    daily = ["days_since_last_event", "rfm_recency_score"]
    steady = ["quota_util_30d__api_calls", "events_30d", "tenure_days"]
    names = mtd + daily + steady
    assert calendar_mismatches(metadata, date(2025, 9, 1), names) == {}  # the 1st, a Monday
    on_tuesday = calendar_mismatches(metadata, date(2025, 4, 1), names)
    assert set(on_tuesday) == set(daily)
    assert "as-of on a Tuesday, training sample on a Monday" in on_tuesday["rfm_recency_score"]
    mid_month = calendar_mismatches(metadata, date(2025, 3, 17), names)  # a Monday
    assert set(mid_month) == set(mtd)
    assert "as-of on day 17, training sample on day 1" in mid_month["quota_util_mtd__api_calls"]
    assert calendar_mismatches({}, date(2025, 3, 17), names) == {}  # older models: no date

    # Left out of the PSI, and said so in the stored report.
    rng = np.random.default_rng(2)
    reference = {"quota_util_mtd__api_calls": [None] * 500, "events_30d": rng.poisson(9, 500)}
    batch = pd.DataFrame(
        {"quota_util_mtd__api_calls": rng.random(400), "events_30d": rng.poisson(9, 400)}
    )
    assert drift_report(reference, batch).warnings == ["quota_util_mtd__api_calls"]
    report = drift_report(reference, batch, not_compared=mid_month)
    assert report.warnings == [] and set(report.psi) == {"events_30d"}
    assert report.to_dict()["not_compared"] == {
        "quota_util_mtd__api_calls": mid_month["quota_util_mtd__api_calls"]
    }


# --- on the real code path: the batch job against the champion trained on the same data ---


@pytest.fixture(scope="module")
def champion(trained):
    from serving.scoring import Models
    from serving.snapshot import read_snapshot

    snapshot = read_snapshot(trained.settings.models_dir / "snapshot")
    return Models.load(trained.settings, snapshot.feature_names)


def test_scoring_the_training_data_warns_of_nothing_and_a_shifted_dataset_warns(
    trained, champion, tmp_path
):
    """`make demo`'s first scoring: the data the model was trained on, at the default as-of
    (the day after the last event, months after the training sample's date and on another
    weekday), at the sample's own date, and mid-month as a nightly run would. A warning here
    would teach users to ignore the warning. The same accounts after a tracking change that
    loses three events in four must still warn."""
    import duckdb

    from features.dataset import load_dataset
    from serving.batch import run_batch

    metadata = champion.propensity.contract.metadata
    last = pd.Timestamp(trained.dataset.report.tables["events"].time_max)
    mid_month = (last - pd.Timedelta(days=40)).replace(day=15).date()  # a nightly run
    for as_of in (None, metadata["training_feature_sample_as_of"], mid_month):
        summary = run_batch(
            trained.dataset,
            trained.settings,
            str(tmp_path / "scores.parquet"),
            models=champion,
            as_of=as_of,
        )
        assert summary.drift_warnings == [], (as_of, summary.drift.psi)
        compared = set(summary.drift.psi) | set(summary.drift.not_compared)
        assert compared == set(metadata["training_feature_sample"])

    folder = tmp_path / "data"
    folder.mkdir()
    for file in trained.data_dir.glob("*.parquet"):
        if file.stem != "events":
            (folder / file.name).symlink_to(file)
    duckdb.sql(
        f"COPY (SELECT * FROM read_parquet('{trained.data_dir / 'events.parquet'}') "
        "WHERE hash(event_id) % 4 = 0) "
        f"TO '{folder / 'events.parquet'}' (FORMAT parquet)"
    )
    shifted = run_batch(
        load_dataset(folder),
        trained.settings,
        str(tmp_path / "shifted.parquet"),
        models=champion,
    )
    assert {"events_30d", "events_90d"} <= set(shifted.drift_warnings), shifted.drift.psi
