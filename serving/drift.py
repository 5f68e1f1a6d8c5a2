"""Feature drift: population stability index (PSI) between training data and a scoring batch.

The champion propensity model records a sample of its training features in its contract
(`metadata["training_feature_sample"]`: feature -> list of values). The batch job compares every
feature of the accounts it scores with that sample and stores the result with the run.

PSI = sum over bins of (actual - expected) * ln(actual / expected), with bins cut at the
reference (training) deciles for numbers, one bin per level for categories, and one bin for
missing values. Rules of thumb: below 0.1 stable, 0.1-0.2 moderate, above 0.2 a shift worth a
look (the default warning threshold). Empty bins are floored at a small share so the logarithm
stays finite.

Like is compared with like. The sample is the training rows of one as-of date (the latest); a
batch is scored at another date, usually months later, on a longer history. Two kinds of
"days since" features would differ for that reason alone, on a perfectly healthy run:

- ages (`Feature.ages`, e.g. tenure) grow by one a day: the batch's values are shifted back by
  the days between the two dates (`age_shifts`);
- days since the latest recurring event (`Feature.since_last`, e.g. the last expansion) cannot
  exceed the history before the as-of date: at the sample's date the data reached back, say,
  300 days, at the batch's 570, so the batch alone has accounts whose last expansion was 400
  days ago, and fewer that "never" expanded. Both sides are compared within the look-back they
  share (the smaller of their longest gaps); longer gaps count as "none in that time", like the
  accounts with none at all. Shifting these would be wrong: the next event resets them.

And some features depend on where the as-of date falls in the calendar (`Feature.calendar`):
daily recency on the weekday (few accounts were active "yesterday" on a Monday), month-to-date
quota use on the day of the month (empty on the 1st, when monthly training samples are
taken). They are compared only when the batch's as-of date falls on the same weekday / day of
the month as the sample's, and otherwise listed as not compared, with why
(`calendar_mismatches`): a nightly run on the 15th is not drift.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from features.registry import FEATURES, quota_metric_features

PSI_WARNING = 0.2
FLOOR = 1e-4  # share given to an empty bin: keeps ln() finite, caps one bin's PSI near 0.9


def psi_from_shares(expected: Sequence[float], actual: Sequence[float]) -> float:
    """PSI of two distributions over the same bins, each given as shares (or counts)."""
    e = np.asarray(expected, dtype="float64")
    a = np.asarray(actual, dtype="float64")
    if e.shape != a.shape or e.size == 0:
        raise ValueError("expected and actual need the same, non-empty bins")
    e = np.maximum(e / e.sum(), FLOOR) if e.sum() > 0 else np.full_like(e, 1 / e.size)
    a = np.maximum(a / a.sum(), FLOOR) if a.sum() > 0 else np.full_like(a, 1 / a.size)
    return float(np.sum((a - e) * np.log(a / e)))


def decile_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference quantiles (ties collapse: a spike is one bin)."""
    finite = reference[np.isfinite(reference)]
    if finite.size == 0:
        return np.array([])
    inner = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(inner)


def numeric_psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """PSI of a number: bins at the expected deciles, plus one bin for missing values."""
    expected = np.asarray(expected, dtype="float64")
    actual = np.asarray(actual, dtype="float64")
    edges = decile_edges(expected, bins)

    def shares(x: np.ndarray) -> np.ndarray:
        finite = np.isfinite(x)
        # side="left": a value equal to an edge falls in the lower bin, as quantiles intend.
        counts = np.bincount(
            np.searchsorted(edges, x[finite], side="left"), minlength=edges.size + 1
        )
        return np.append(counts, (~finite).sum()).astype("float64")

    return psi_from_shares(shares(expected), shares(actual))


def categorical_psi(expected: Sequence, actual: Sequence) -> float:
    """PSI of a category: one bin per level seen in either sample, plus one for missing."""
    e = pd.Series(expected, dtype=object).fillna("<missing>").astype(str)
    a = pd.Series(actual, dtype=object).fillna("<missing>").astype(str)
    levels = sorted(set(e.unique()) | set(a.unique()))
    e_counts = e.value_counts().reindex(levels, fill_value=0).to_numpy()
    a_counts = a.value_counts().reindex(levels, fill_value=0).to_numpy()
    return psi_from_shares(e_counts, a_counts)


@dataclass(frozen=True)
class DriftReport:
    """PSI per feature, and the features above the warning threshold (largest first)."""

    psi: dict[str, float] = field(default_factory=dict)
    threshold: float = PSI_WARNING
    note: str = ""
    not_compared: dict[str, str] = field(default_factory=dict)  # feature -> why not

    @property
    def warnings(self) -> list[str]:
        above = [(v, k) for k, v in self.psi.items() if v > self.threshold]
        return [k for _, k in sorted(above, reverse=True)]

    def to_dict(self) -> dict:
        return {
            "psi": {k: round(v, 6) for k, v in self.psi.items()},
            "threshold": self.threshold,
            "warnings": self.warnings,
            "note": self.note,
            "not_compared": self.not_compared,
        }


def age_shifts(metadata: Mapping[str, Any], as_of: date) -> dict[str, float]:
    """Days to take off each age feature of a batch at `as_of` so that it compares with the
    model's training sample (empty for models that did not record the sample's date).
    Only ages (`Feature.ages`): a days-since-the-last-event feature is reset by the next
    event, so it is compared within a shared look-back instead (see the module docstring)."""
    sampled = metadata.get("training_feature_sample_as_of")
    if not sampled:
        return {}
    days = float((pd.Timestamp(as_of) - pd.Timestamp(sampled)).days)
    return {f.name: days for f in FEATURES if f.ages}


def _feature(name: str):
    """The registry's declaration of a feature (per-metric quota features included)."""
    for f in FEATURES:
        if f.name == name:
            return f
    if name.startswith("quota_") and "__" in name:
        for f in quota_metric_features([name.split("__", 1)[1]]):
            if f.name == name:
                return f
    return None


def calendar_mismatches(
    metadata: Mapping[str, Any], as_of: date, names: Iterable[str]
) -> dict[str, str]:
    """Features of `names` whose value depends on a calendar position (`Feature.calendar`)
    that differs between the batch's as-of date and the training sample's, and why."""
    sampled = metadata.get("training_feature_sample_as_of")
    if not sampled:
        return {}
    then, now = pd.Timestamp(sampled), pd.Timestamp(as_of)
    why = {}
    if then.weekday() != now.weekday():
        why["weekday"] = (
            f"depends on the weekday: as-of on a {now:%A}, training sample on a {then:%A}"
        )
    if then.day != now.day:
        why["month_day"] = (
            f"depends on the day of the month: as-of on day {now.day}, training sample on "
            f"day {then.day}"
        )
    out = {}
    for name in names:
        f = _feature(name)
        if f is not None and f.calendar in why:
            out[name] = why[f.calendar]
    return out


def drift_report(
    reference: Mapping[str, Sequence] | None,
    batch: pd.DataFrame,
    categorical: Sequence[str] = (),
    threshold: float = PSI_WARNING,
    rows: np.ndarray | None = None,
    shifts: Mapping[str, float] | None = None,
    not_compared: Mapping[str, str] | None = None,
) -> DriftReport:
    """PSI of every feature in `reference` (training sample) against the batch's column.

    `rows` (a boolean mask) limits the batch to some accounts, one column at a time: the
    feature frame of a large batch is never copied whole. `shifts` (see `age_shifts`) is
    subtracted from those columns first. Features marked `since_last` in the registry are
    compared within the look-back both sides have (see the module docstring). Features in
    `not_compared` (see `calendar_mismatches`) are left out and listed with why.
    """
    if not reference:
        return DriftReport({}, threshold, "the model records no training feature sample")
    cats = set(categorical)
    out = {}
    skipped = dict(not_compared or {})
    for name, values in reference.items():
        if name not in batch.columns or name in skipped:
            continue
        column = batch[name] if rows is None else batch[name][rows]
        if name in cats or column.dtype == object:
            out[name] = categorical_psi(values, column.to_numpy(dtype=object))
        else:
            ref = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
            cur = pd.to_numeric(column, errors="coerce") - (shifts or {}).get(name, 0.0)
            ref = ref.to_numpy("float64", na_value=np.nan)
            cur = cur.to_numpy("float64", na_value=np.nan)
            if name in SINCE_LAST:
                ref, cur = shared_look_back(ref, cur)
            out[name] = numeric_psi(ref, cur)
    skipped = {k: v for k, v in skipped.items() if k in reference and k in batch.columns}
    return DriftReport(out, threshold, not_compared=skipped)


SINCE_LAST = frozenset(f.name for f in FEATURES if f.since_last)


def shared_look_back(reference: np.ndarray, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Days-since values of both sides with gaps longer than the shorter side's longest gap
    set to missing ("none within the look-back both sides have")."""
    longest = [np.nanmax(x) for x in (reference, batch) if np.isfinite(x).any()]
    if len(longest) < 2:
        return reference, batch
    cap = min(longest)
    return np.where(reference > cap, np.nan, reference), np.where(batch > cap, np.nan, batch)
