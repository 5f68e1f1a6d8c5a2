"""Small, dependency-free statistics for rates: Wilson intervals and Newcombe differences.

A conversion or retention rate from a few dozen accounts is noisy; these give it honest bounds.

- Wilson score interval for one proportion (Wilson 1927): good coverage even for small n and
  rates near 0 or 1, unlike the normal approximation.
- Newcombe's hybrid score interval for a difference of two independent proportions (Newcombe
  1998, method 10): combines the two Wilson intervals. Used for contacted vs holdout and for the
  retention differential. Newcombe's worked example 56/70 - 48/80 gives 0.2000 with 95% bounds
  (0.0524, 0.3339); the tests check exactly that.
"""

from __future__ import annotations

import math

import pandas as pd

Z_95 = 1.959963984540054  # two-sided 95%


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval (low, high) for successes / trials; NaNs when trials is 0."""
    if trials <= 0:
        return float("nan"), float("nan")
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    low = 0.0 if successes <= 0 else max(0.0, centre - half)  # exact at the bounds, no 1e-17
    high = 1.0 if successes >= trials else min(1.0, centre + half)
    return low, high


def newcombe_interval(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int, z: float = Z_95
) -> tuple[float, float, float]:
    """(difference, low, high) for rate_a - rate_b by Newcombe's hybrid score method."""
    if trials_a <= 0 or trials_b <= 0:
        return float("nan"), float("nan"), float("nan")
    pa, pb = successes_a / trials_a, successes_b / trials_b
    la, ua = wilson_interval(successes_a, trials_a, z)
    lb, ub = wilson_interval(successes_b, trials_b, z)
    diff = pa - pb
    low = diff - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
    high = diff + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
    return diff, low, high


def rate_table(frame: pd.DataFrame, by: list[str], flag: str, trials: str = "n") -> pd.DataFrame:
    """Per group: `trials` rows, `flag` successes, the rate and its Wilson interval."""
    grouped = (
        frame.groupby(by, dropna=False, observed=True)[flag]
        .agg(**{trials: "size", "successes": "sum"})
        .reset_index()
    )
    grouped["successes"] = grouped["successes"].astype("int64")
    grouped["rate"] = grouped["successes"] / grouped[trials]
    bounds = [
        wilson_interval(int(k), int(n))
        for k, n in zip(grouped["successes"], grouped[trials], strict=True)
    ]
    grouped["ci_low"] = [b[0] for b in bounds]
    grouped["ci_high"] = [b[1] for b in bounds]
    return grouped


def duration_summary(
    frame: pd.DataFrame, column: str, by: str | list[str] | None = None
) -> pd.DataFrame:
    """Count, mean, quartiles and 90th percentile of a duration column (rows with values only)."""
    values = frame.dropna(subset=[column])
    keys = [by] if isinstance(by, str) else list(by or [])
    if not keys:
        values = values.assign(_all="all")
        keys = ["_all"]
    summary = (
        values.groupby(keys, dropna=False, observed=True)[column]
        .agg(
            count="size",
            mean="mean",
            p25=lambda s: s.quantile(0.25),
            median="median",
            p75=lambda s: s.quantile(0.75),
            p90=lambda s: s.quantile(0.9),
        )
        .reset_index()
    )
    if keys == ["_all"]:
        summary = summary.drop(columns="_all")
    return summary
