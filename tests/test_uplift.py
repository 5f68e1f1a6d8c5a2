"""The T-learner recovers where a touch helps, on data with a known individual effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.analytics.incrementality import qini_coefficient
from training.uplift import TLearner


def experiment(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Accounts under quota pressure gain 15 points from a touch unless they are already
    shopping (those upgrade anyway, touched or not); a third of the units are held out."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(
        {
            "quota_utilization": rng.uniform(0, 1.2, n),
            "pricing_views_30d": rng.poisson(1.2, n),
            "mrr": rng.lognormal(5, 1, n),
            "seats": rng.poisson(8, n),
        }
    )
    shopping = x["pricing_views_30d"] >= 3
    base = np.where(shopping, 0.45, 0.05)
    effect = np.where((x["quota_utilization"] >= 0.85) & ~shopping, 0.15, 0.0)
    treated = rng.random(n) >= 1 / 3
    outcome = rng.random(n) < base + treated * effect
    return x, treated, outcome, effect


def test_t_learner_ranks_by_the_effect_not_by_the_propensity():
    x, treated, outcome, _ = experiment(20_000, seed=1)
    model = TLearner().fit(x, treated, outcome)
    x_test, t_test, y_test, effect = experiment(20_000, seed=2)
    uplift = model.uplift(x_test)
    p_touched, _ = model.predict_arms(x_test)
    oracle = qini_coefficient(effect, t_test, y_test)  # ties: in row order, i.e. at random
    learned = qini_coefficient(uplift, t_test, y_test)
    by_propensity = qini_coefficient(p_touched, t_test, y_test)
    assert learned >= 0.8 * oracle
    assert learned > 1.3 * by_propensity  # propensity puts the would-buy-anyway first
    # The top tenth by learned uplift holds far more true effect than the top tenth by
    # propensity (which is full of accounts that would upgrade anyway).
    top = len(effect) // 10
    by_uplift = effect[np.argsort(-uplift)[:top]].sum()
    by_p = effect[np.argsort(-p_touched)[:top]].sum()
    assert by_uplift >= 1.5 * by_p


def test_an_arm_without_both_outcomes_is_refused():
    x, treated, outcome, _ = experiment(500, seed=3)
    with pytest.raises(ValueError, match="holdout arm needs both outcomes"):
        TLearner().fit(x, treated, np.where(treated, outcome, False))
    with pytest.raises(RuntimeError, match="fit the T-learner first"):
        TLearner().uplift(x)
