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
    assert shifts["tenure_days"] == 90 and shifts["days_since_last_expansion"] == 90
    assert "events_30d" not in shifts  # not an age
    assert drift_report(reference, batch).warnings == ["tenure_days"]  # unshifted: a false alarm
    shifted = drift_report(reference, batch, shifts=shifts)
    assert shifted.psi["tenure_days"] < 0.02 and shifted.warnings == []
    assert age_shifts({}, date(2025, 4, 1)) == {}  # older models: no date, no shift
