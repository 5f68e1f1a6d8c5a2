"""Incremental outcomes: what outreach adds over a randomized holdout, and how many accounts
an experiment needs to show it.

An *experiment unit* is an account entering an experiment at a time `at` in one arm:

- every `outreach` row (`holdout = true`: eligible and deliberately not contacted), at
  `sent_at`, with its trigger; its route is `csm` for the `csm` channel, else `automated`;
- every arm the batch drew (`serving.holdout`, table `holdout_assignments`, joined by the caller
  with the score row of that run: `features/` does not read the CRM database), at the as-of of
  the run that drew it: `holdout` or `treated` (intent to treat: the treated arm counts whether
  or not a CSM then called), with its route, segment, first trigger and expected net value.

Outcomes, from the subscription changes (`features.derived`), after `at`:

- `converted`: an upgrade or expansion in `[at, at + horizon_days)` (60 by default);
- `expansion_mrr`: the MRR those changes added in that window;
- `retained_expansion_mrr_90d`: of a converted unit, the MRR above its pre-upsell MRR that is
  still there 90 days after the first upsell (0 when reversed, or not converted).

A unit whose window (plus the 90 days, for the retained MRR) runs past the end of the data is
censored and left out of that metric. Treated minus holdout is the lift; conversion gets
Newcombe's 95% interval, the MRR metrics a percentile bootstrap (fixed seed: reproducible).
`sample_size_for_lift` gives the units an experiment needs to detect a given conversion lift.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd

from features.analytics.common import TimeLike, ensure_changes, resolve_window
from features.analytics.conversion import NO_TRIGGER
from features.analytics.stats import newcombe_interval
from features.dataset import Dataset
from features.derived import EXPANSION_KINDS

RETENTION_DAYS = 90
METRICS = ("converted", "expansion_mrr", "retained_expansion_mrr_90d")
UNIT_COLUMNS = ["source", "account_id", "at", "holdout", "trigger", "route", "segment", "score"]
BREAKDOWNS = ("trigger", "route", "segment", "score_decile")


def outreach_units(dataset: Dataset) -> pd.DataFrame:
    """Experiment units from the `outreach` table (empty without one)."""
    if not dataset.has("outreach"):
        return pd.DataFrame(columns=UNIT_COLUMNS)
    rows = dataset.frame("outreach")
    trigger = rows["trigger"].astype(object).where(rows["trigger"].notna(), NO_TRIGGER)
    return pd.DataFrame(
        {
            "source": "outreach",
            "account_id": rows["account_id"].astype(str),
            "at": pd.to_datetime(rows["sent_at"]).astype("datetime64[us]"),
            "holdout": rows["holdout"].fillna(False).astype(bool),
            "trigger": trigger.astype(str),
            "route": np.where(rows["channel"].astype(str) == "csm", "csm", "automated"),
            "segment": None,
            "score": np.nan,
        }
    )


def assignment_units(assignments: pd.DataFrame) -> pd.DataFrame:
    """Experiment units from the batch's holdout arms.

    `assignments`: one row per drawn arm with `account_id`, `as_of`, `holdout`, `route` and,
    from the run's score row where known, `segment`, `triggers` (list) and
    `expected_net_value`."""
    missing = {"account_id", "as_of", "holdout", "route"} - set(assignments.columns)
    if missing:
        raise ValueError(f"holdout assignments: missing column(s) {sorted(missing)}")
    triggers = assignments.get("triggers", pd.Series([None] * len(assignments)))
    first = [t[0] if isinstance(t, list | tuple | np.ndarray) and len(t) else NO_TRIGGER
             for t in triggers]  # fmt: skip
    return pd.DataFrame(
        {
            "source": "assignment",
            "account_id": assignments["account_id"].astype(str).to_numpy(),
            "at": pd.to_datetime(assignments["as_of"]).astype("datetime64[us]").to_numpy(),
            "holdout": assignments["holdout"].astype(bool).to_numpy(),
            "trigger": first,
            "route": assignments["route"].astype(str).to_numpy(),
            "segment": assignments.get("segment", pd.Series([None] * len(assignments))).to_numpy(),
            "score": pd.to_numeric(
                assignments.get("expected_net_value", pd.Series([np.nan] * len(assignments))),
                errors="coerce",
            ).to_numpy(),
        }
    )


def unit_outcomes(
    dataset: Dataset,
    units: pd.DataFrame,
    *,
    horizon_days: int = 60,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
) -> pd.DataFrame:
    """`units` entering in `[start, end)` with their outcomes (see the module docstring),
    censoring flags, the accounts' segment where missing and the score decile (1 = top)."""
    lo, hi = resolve_window(dataset, start, end)
    _, data_end = resolve_window(dataset, None, None)
    units = units.assign(at=pd.to_datetime(units["at"]).astype("datetime64[us]"))
    out = units[(units["at"] >= lo) & (units["at"] < hi)].reset_index(drop=True).copy()
    accounts = dataset.frame("accounts")
    if "segment" in accounts.columns:
        segment = accounts.set_index(accounts["account_id"].astype(str))["segment"]
        known = out["segment"].notna()
        out["segment"] = out["segment"].where(known, out["account_id"].map(segment))
    out["segment"] = out["segment"].astype(object).where(out["segment"].notna(), "(unknown)")
    con = ensure_changes(dataset)
    changes = con.execute(
        "SELECT account_id, effective_at, change_kind, live_mrr, prev_live_mrr "
        "FROM analytics_changes ORDER BY effective_at"
    ).df()
    changes["account_id"] = changes["account_id"].astype(str)
    changes["effective_at"] = changes["effective_at"].astype("datetime64[us]")
    upsells = changes[changes["change_kind"].isin(EXPANSION_KINDS)]
    horizon = pd.Timedelta(days=horizon_days)
    retention = pd.Timedelta(days=RETENTION_DAYS)

    keyed = out[["account_id", "at"]].assign(_unit=np.arange(len(out)))
    pairs = keyed.merge(upsells, on="account_id")
    pairs = pairs[
        (pairs["effective_at"] >= pairs["at"]) & (pairs["effective_at"] < pairs["at"] + horizon)
    ]
    gained = (pairs["live_mrr"] - pairs["prev_live_mrr"]).clip(lower=0)
    out["expansion_mrr"] = (
        gained.groupby(pairs["_unit"]).sum().reindex(range(len(out)), fill_value=0.0).to_numpy()
    )
    first = pairs.sort_values("effective_at").groupby("_unit").first()
    converted_at = first["effective_at"].reindex(range(len(out)))
    out["converted_at"] = converted_at.to_numpy()
    out["converted"] = out["converted_at"].notna()
    before = first["prev_live_mrr"].reindex(range(len(out))).to_numpy()
    # MRR 90 days after the first upsell: the latest change strictly before that moment.
    probe = pd.DataFrame(
        {
            "_unit": np.arange(len(out)),
            "account_id": out["account_id"],
            "t": converted_at + retention,
        }
    ).dropna(subset=["t"])
    probe["t"] = probe["t"].astype("datetime64[us]")
    probe["account_id"] = probe["account_id"].astype(changes["account_id"].dtype)
    later = pd.Series(dtype="float64")
    if len(probe):
        later = pd.merge_asof(
            probe.sort_values("t"),
            changes[["account_id", "effective_at", "live_mrr"]].rename(
                columns={"effective_at": "t"}
            ),
            on="t",
            by="account_id",
            allow_exact_matches=False,
        ).set_index("_unit")["live_mrr"]
    after = later.reindex(range(len(out))).to_numpy()
    retained = np.where(out["converted"], np.clip(after - before, 0, None), 0.0)
    out["retained_expansion_mrr_90d"] = np.nan_to_num(retained, nan=0.0)
    out["censored"] = out["at"] + horizon > data_end
    out["censored_90d"] = out["at"] + horizon + retention > data_end
    out["arm"] = np.where(out["holdout"], "holdout", "treated")
    out["score_decile"] = _deciles(out["score"])
    return out


def _deciles(score: pd.Series) -> pd.Series:
    """1 = the top tenth of scores; '(no score)' for units without one (outreach rows)."""
    known = score.notna()
    out = pd.Series("(no score)", index=score.index, dtype=object)
    if known.sum() >= 10:
        ranks = score[known].rank(method="first", ascending=False)
        out[known] = (np.ceil(ranks / known.sum() * 10)).astype(int).astype(str).str.zfill(2)
    return out


def _bootstrap_difference(
    treated: np.ndarray, holdout: np.ndarray, rng: np.random.Generator, draws: int = 1000
) -> tuple[float, float]:
    """Percentile 95% interval of mean(treated) - mean(holdout), resampling each arm."""
    diffs = np.empty(draws)
    step = 100  # resamples per batch: bounded memory whatever the arm sizes
    for lo in range(0, draws, step):
        k = min(step, draws - lo)
        t = treated[rng.integers(0, len(treated), (k, len(treated)))].mean(axis=1)
        h = holdout[rng.integers(0, len(holdout), (k, len(holdout)))].mean(axis=1)
        diffs[lo : lo + k] = t - h
    return float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


def incremental_outcomes(
    outcomes: pd.DataFrame, by: str | None = None, *, seed: int = 0, draws: int = 1000
) -> pd.DataFrame:
    """Treated vs holdout per metric: rates or means, the lift and its 95% interval.

    One row per (scope, metric): scope `all`, then each value of `by` (`trigger`, `route`,
    `segment`, `score_decile` or `source`)."""
    if by is not None and by not in outcomes.columns:
        raise ValueError(f"cannot break down by {by!r}: use one of {list(BREAKDOWNS)}")
    rng = np.random.default_rng(seed)
    groups: list[tuple[str, pd.DataFrame]] = [("all", outcomes)]
    if by is not None:
        groups += [(str(k), g) for k, g in outcomes.groupby(by, sort=True, dropna=False)]
    rows = []
    for name, frame in groups:
        for metric in METRICS:
            censor = "censored_90d" if metric == "retained_expansion_mrr_90d" else "censored"
            known = frame[~frame[censor]]
            t = known.loc[~known["holdout"], metric].to_numpy(dtype="float64")
            h = known.loc[known["holdout"], metric].to_numpy(dtype="float64")
            row = {
                by or "scope": name,
                "metric": metric,
                "treated_n": len(t),
                "holdout_n": len(h),
                "treated_mean": t.mean() if len(t) else float("nan"),
                "holdout_mean": h.mean() if len(h) else float("nan"),
            }
            if metric == "converted":
                lift, low, high = newcombe_interval(int(t.sum()), len(t), int(h.sum()), len(h))
                method = "Newcombe hybrid score (Wilson), 95%"
            elif len(t) >= 2 and len(h) >= 2:
                lift = row["treated_mean"] - row["holdout_mean"]
                low, high = _bootstrap_difference(t, h, rng, draws)
                method = f"percentile bootstrap ({draws} draws), 95%"
            else:
                lift, low, high, method = float("nan"), float("nan"), float("nan"), "too few"
            rows.append({**row, "lift": lift, "ci_low": low, "ci_high": high, "method": method})
    return pd.DataFrame(rows)


def sample_size_for_lift(
    base_rate: float,
    lift: float,
    *,
    holdout_share: float = 0.1,
    alpha: float = 0.05,
    power: float = 0.8,
) -> dict[str, int]:
    """Units needed to detect a conversion lift (absolute, treated - holdout) with a
    two-sided test at `alpha` and the given power, when `holdout_share` of them are held out.

    The standard normal-approximation formula for two independent proportions with unequal
    arms: n_holdout = (z_(1-alpha/2) + z_power)^2 (p1 q1 / k + p0 q0) / lift^2, k = treated per
    holdout unit."""
    if not 0 < base_rate < 1 or not 0 < base_rate + lift < 1 or lift == 0:
        raise ValueError("base_rate and base_rate + lift must be in (0, 1), lift non-zero")
    if not 0 < holdout_share < 1:
        raise ValueError("holdout_share must be in (0, 1)")
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    p0, p1 = base_rate, base_rate + lift
    k = (1 - holdout_share) / holdout_share
    n_holdout = math.ceil(z * z * (p1 * (1 - p1) / k + p0 * (1 - p0)) / (lift * lift))
    n_treated = math.ceil(n_holdout * k)
    return {"holdout": n_holdout, "treated": n_treated, "total": n_holdout + n_treated}


def minimum_detectable_lift(
    base_rate: float, holdout_n: int, treated_n: int, *, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest absolute conversion lift these arm sizes detect (same approximation,
    variance at the base rate)."""
    if holdout_n <= 0 or treated_n <= 0:
        return float("nan")
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return z * math.sqrt(base_rate * (1 - base_rate) * (1 / holdout_n + 1 / treated_n))


# --- ranking by uplift: Qini curves (for an uplift model's evaluation) -----------------------


def qini_curve(score: np.ndarray, treated: np.ndarray, outcome: np.ndarray) -> pd.DataFrame:
    """The Qini curve of a ranking (Radcliffe 2007): targeting the top k units by `score`,
    the incremental outcome `Y_t(k) - Y_c(k) * N_t(k) / N_c(k)` (the treated outcome minus
    the control outcome scaled to the treated count), for k = 0..N. Columns `fraction`
    (k / N) and `qini`. Ties in `score` are broken by position, so shuffle tied data first."""
    score = np.asarray(score, dtype="float64")
    treated = np.asarray(treated, dtype=bool)
    outcome = np.asarray(outcome, dtype="float64")
    order = np.argsort(-score, kind="stable")
    t, y = treated[order], outcome[order]
    n_t = np.concatenate([[0], np.cumsum(t)])
    n_c = np.concatenate([[0], np.cumsum(~t)])
    y_t = np.concatenate([[0.0], np.cumsum(np.where(t, y, 0.0))])
    y_c = np.concatenate([[0.0], np.cumsum(np.where(t, 0.0, y))])
    scaled = np.divide(y_c * n_t, n_c, out=np.zeros_like(y_c), where=n_c > 0)
    n = len(score)
    return pd.DataFrame({"fraction": np.arange(n + 1) / max(n, 1), "qini": y_t - scaled})


def qini_coefficient(score: np.ndarray, treated: np.ndarray, outcome: np.ndarray) -> float:
    """Area between the Qini curve and the random-targeting diagonal, divided by the number
    of units (so comparable across sizes): 0 = no better than random; the oracle's (ranking by
    the true uplift) is the ceiling to compare a model with."""
    curve = qini_curve(score, treated, outcome)
    if len(curve) < 2:
        return float("nan")
    q = curve["qini"].to_numpy()
    diagonal = curve["fraction"].to_numpy() * q[-1]
    return float(np.trapezoid(q - diagonal, curve["fraction"].to_numpy())) / (len(curve) - 1)
