"""Revenue metrics: MRR, the MRR bridge, revenue retention, ACV uplift and a simple LTV.

All money is live MRR (see `features.analytics.common`): the mrr of accounts whose latest
subscription row before the time is `active` or `trialing`. Windows are `[start, end)`; the
default is the dataset's observation window. Retention is measured on the accounts paying at the
start of a window (its cohort):

- NRR = (start + expansion - contraction - churn) / start, moves of the cohort only. New
  accounts do not count, and neither does a reactivation (reported separately in the bridge).
- GRR = sum over cohort accounts of min(start, retained) / start: what was kept of the starting
  revenue, so expansion can neither offset another account's loss nor its own later contraction.
"""

from __future__ import annotations

import pandas as pd

from features.analytics.common import (
    Freq,
    TimeLike,
    assign_period,
    ensure_changes,
    periods,
    ratio,
    resolve_window,
    window_detail,
    window_totals,
)
from features.dataset import Dataset

_PERIOD_COLS = ["period", "period_start", "period_end", "complete"]


def _period_windows(
    dataset: Dataset, start: TimeLike | None, end: TimeLike | None, freq: Freq
) -> pd.DataFrame:
    lo, hi = resolve_window(dataset, start, end)
    frame = periods(lo, hi, freq)
    frame["window_id"] = range(len(frame))
    frame["ws"], frame["we"] = frame["period_start"], frame["period_end"]
    return frame


def mrr_by_period(
    dataset: Dataset,
    *,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    freq: Freq = "M",
) -> pd.DataFrame:
    """MRR and paying accounts at the end of each period, and the average MRR per account."""
    totals = window_totals(dataset, _period_windows(dataset, start, end, freq))
    out = totals[_PERIOD_COLS].copy()
    out["mrr"] = totals["end_mrr"]
    out["accounts"] = totals["end_accounts"]
    out["arpa"] = [ratio(m, n) for m, n in zip(out["mrr"], out["accounts"], strict=True)]
    return out


def mrr_movements(
    dataset: Dataset,
    *,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    freq: Freq = "M",
) -> pd.DataFrame:
    """The MRR bridge per period: start, new, expansion, contraction, churn, reactivation, end.

    `end_mrr = start_mrr + new + expansion - contraction - churn + reactivation` exactly;
    `expansion_mrr_rate` = expansion MRR (all accounts) / start MRR of the period.
    """
    totals = window_totals(dataset, _period_windows(dataset, start, end, freq))
    cols = [
        "start_mrr",
        "new_mrr",
        "expansion_mrr",
        "contraction_mrr",
        "churn_mrr",
        "reactivation_mrr",
        "end_mrr",
    ]
    out = totals[_PERIOD_COLS + cols].copy()
    out["net_new_mrr"] = out["end_mrr"] - out["start_mrr"]
    out["expansion_mrr_rate"] = [
        ratio(x, s) for x, s in zip(out["expansion_mrr"], out["start_mrr"], strict=True)
    ]
    return out


def _retention_columns(totals: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "window_start": totals["ws"],
            "window_end": totals["we"],
            "cohort_accounts": totals["cohort_accounts"],
            "start_mrr": totals["start_mrr"],
            "expansion_mrr": totals["cohort_expansion_mrr"],
            "contraction_mrr": totals["cohort_contraction_mrr"],
            "churn_mrr": totals["cohort_churn_mrr"],
        }
    )
    out["nrr"] = [
        ratio(r, s) for r, s in zip(totals["cohort_retained_mrr"], out["start_mrr"], strict=True)
    ]
    out["grr"] = [
        ratio(r, s)
        for r, s in zip(totals["cohort_gross_retained_mrr"], out["start_mrr"], strict=True)
    ]
    return out


def revenue_retention(
    dataset: Dataset,
    *,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    freq: Freq = "M",
    trailing_months: int | None = None,
) -> pd.DataFrame:
    """Net and gross revenue retention per period.

    Without `trailing_months` the window is the period itself (monthly NRR for freq "M");
    with `trailing_months=12` it is the 12 months ending at each period's end (trailing NRR).
    Expansion, contraction and churn columns are the cohort's moves in that window.
    """
    windows = _period_windows(dataset, start, end, freq)
    if trailing_months is not None:
        windows["ws"] = windows["we"] - pd.DateOffset(months=trailing_months)
        windows["ws"] = windows["ws"].astype("datetime64[us]")
    totals = window_totals(dataset, windows)
    return pd.concat([totals[_PERIOD_COLS], _retention_columns(totals)], axis=1)


def nrr_by_signup_cohort(
    dataset: Dataset,
    *,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    cohort_freq: Freq = "Q",
) -> pd.DataFrame:
    """NRR and GRR over `[start, end)` of the accounts paying at `start`, by signup period.

    Accounts that signed up inside the window have no starting revenue and are not listed.
    """
    lo, hi = resolve_window(dataset, start, end)
    accounts = dataset.frame("accounts")[["account_id", "created_at"]].copy()
    accounts["cohort"] = assign_period(accounts["created_at"], cohort_freq)
    obs = pd.DataFrame({"account_id": accounts["account_id"].astype(str)})
    obs["obs_id"] = range(len(obs))
    obs["window_id"] = 0
    obs["ws"], obs["we"] = lo, hi
    detail = window_detail(dataset, obs).merge(
        accounts[["account_id", "cohort", "created_at"]], on="account_id"
    )
    return _cohort_retention(detail, ["cohort"]).sort_values("cohort").reset_index(drop=True)


def _cohort_retention(detail: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of the accounts paying at window start: start MRR, moves, NRR and GRR."""
    paying = detail[detail["start_mrr"] > 0].copy()
    paying["retained"] = (
        paying["start_mrr"]
        + paying["expansion_mrr"]
        - paying["contraction_mrr"]
        - paying["churn_mrr"]
    )
    paying["gross_retained"] = paying[["start_mrr", "retained"]].min(axis=1).clip(lower=0)
    grouped = (
        paying.groupby(by, observed=True)
        .agg(
            accounts=("account_id", "size"),
            start_mrr=("start_mrr", "sum"),
            expansion_mrr=("expansion_mrr", "sum"),
            contraction_mrr=("contraction_mrr", "sum"),
            churn_mrr=("churn_mrr", "sum"),
            retained_mrr=("retained", "sum"),
            gross_retained_mrr=("gross_retained", "sum"),
        )
        .reset_index()
    )
    grouped["nrr"] = grouped["retained_mrr"] / grouped["start_mrr"]
    grouped["grr"] = grouped["gross_retained_mrr"] / grouped["start_mrr"]
    return grouped.drop(columns=["gross_retained_mrr"])


def upgrades(
    dataset: Dataset, *, start: TimeLike | None = None, end: TimeLike | None = None
) -> pd.DataFrame:
    """Every upgrade and expansion in `[start, end)` with ACV before and after (ACV = 12 x MRR)."""
    lo, hi = resolve_window(dataset, start, end)
    con = ensure_changes(dataset)
    return con.execute(
        """
        SELECT c.account_id, c.effective_at, c.change_kind, c.prev_tier AS from_tier,
            c.tier AS to_tier, c.prev_plan_id AS from_plan, c.plan_id AS to_plan,
            COALESCE(pf.name, c.prev_plan_id) AS from_plan_name,
            COALESCE(pt.name, c.plan_id) AS to_plan_name,
            CAST(a.segment AS VARCHAR) AS segment,
            12 * c.prev_live_mrr AS acv_before, 12 * c.live_mrr AS acv_after,
            12 * (c.live_mrr - c.prev_live_mrr) AS acv_uplift
        FROM analytics_changes c
        JOIN accounts a ON a.account_id = c.account_id
        LEFT JOIN plans pf ON pf.plan_id = c.prev_plan_id
        LEFT JOIN plans pt ON pt.plan_id = c.plan_id
        WHERE c.change_kind IN ('upgrade', 'expansion')
            AND c.effective_at >= ? AND c.effective_at < ?
        ORDER BY c.effective_at, c.account_id
        """,
        [lo.to_pydatetime(), hi.to_pydatetime()],
    ).df()


def _uplift_summary(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    out = (
        frame.groupby(by, dropna=False, observed=True)
        .agg(
            upsells=("account_id", "size"),
            accounts=("account_id", "nunique"),
            acv_before_mean=("acv_before", "mean"),
            acv_uplift_mean=("acv_uplift", "mean"),
            acv_uplift_median=("acv_uplift", "median"),
            acv_uplift_total=("acv_uplift", "sum"),
        )
        .reset_index()
    )
    out["acv_uplift_pct"] = out["acv_uplift_mean"] / out["acv_before_mean"]
    return out


def acv_uplift_by_upgrade_path(
    dataset: Dataset, *, start: TimeLike | None = None, end: TimeLike | None = None
) -> pd.DataFrame:
    """ACV gained per tier upgrade in `[start, end)`, by path (from plan to plan)."""
    frame = upgrades(dataset, start=start, end=end)
    frame = frame[frame["change_kind"] == "upgrade"]
    keys = ["from_tier", "to_tier", "from_plan_name", "to_plan_name"]
    out = _uplift_summary(frame, keys)
    out.insert(0, "path", out["from_plan_name"] + " → " + out["to_plan_name"])
    return out.sort_values(["from_tier", "to_tier"]).reset_index(drop=True)


def acv_uplift_by_segment(
    dataset: Dataset, *, start: TimeLike | None = None, end: TimeLike | None = None
) -> pd.DataFrame:
    """ACV gained per upsell (upgrade or seat/price expansion) in `[start, end)`, by segment."""
    frame = upgrades(dataset, start=start, end=end)
    frame["segment"] = frame["segment"].fillna("(none)")
    out = _uplift_summary(frame, ["segment", "change_kind"])
    both = _uplift_summary(frame, ["segment"]).assign(change_kind="all")
    return (
        pd.concat([out, both], ignore_index=True)
        .sort_values(["segment", "change_kind"])
        .reset_index(drop=True)
    )


def ltv_estimate(
    dataset: Dataset, *, start: TimeLike | None = None, end: TimeLike | None = None
) -> pd.DataFrame:
    """A simple LTV over `[start, end)`: average MRR per paying account x average lifetime.

    Measured on calendar months: ARPA = paying MRR / paying accounts at month starts (pooled);
    monthly logo churn = cohort accounts that churned in the month / cohort accounts; expected
    lifetime = 1 / monthly logo churn (months); LTV = ARPA x lifetime (NaN with no churn).
    """
    totals = window_totals(dataset, _period_windows(dataset, start, end, "M"))
    totals = totals[totals["complete"]] if totals["complete"].any() else totals
    account_months = int(totals["cohort_accounts"].sum())
    churned = int(totals["cohort_churned_accounts"].sum())
    arpa = ratio(totals["start_mrr"].sum(), account_months)
    churn_rate = ratio(churned, account_months)
    lifetime = ratio(1.0, churn_rate)
    return pd.DataFrame(
        [
            {
                "months": len(totals),
                "account_months": account_months,
                "churned_accounts": churned,
                "arpa": arpa,
                "monthly_logo_churn": churn_rate,
                "lifetime_months": lifetime,
                "ltv": arpa * lifetime,
            }
        ]
    )
