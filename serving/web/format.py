"""How numbers read on a page: money, percentages, counts, intervals and model metrics.

A missing value (None or NaN) reads as an en dash everywhere. The functions are plain Python
(the report also uses them for chart annotations) and are the environment's filters too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MISSING = "–"


def is_missing(value: Any) -> bool:
    """True for None and float NaN (what pandas hands over for an empty cell)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_money(value: Any) -> str:
    """Whole currency units with thousands separators: 12,345."""
    return MISSING if is_missing(value) else f"{value:,.0f}"


def fmt_pct(value: Any, digits: int = 1) -> str:
    """A ratio as a percentage: 0.1234 -> 12.3%."""
    return MISSING if is_missing(value) else f"{100 * value:.{digits}f}%"


def fmt_num(value: Any, digits: int = 1) -> str:
    """Integers with separators, other numbers with `digits` decimals."""
    if is_missing(value):
        return MISSING
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def fmt_interval(diff: float, low: float, high: float) -> str:
    """A difference of rates with its interval, in percentage points: +3.0 pts [-1.0, +7.0]."""
    if is_missing(diff):
        return MISSING
    return f"{100 * diff:+.1f} pts [{100 * low:+.1f}, {100 * high:+.1f}]"


def fmt_metric(value: Any) -> str:
    """A model metric: four significant digits for floats, anything else as its text."""
    if isinstance(value, (float, np.floating)):
        return MISSING if math.isnan(value) else f"{value:.4g}"
    return str(value)
