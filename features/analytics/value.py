"""Value metrics: do upsells last, and are upsold accounts worth more afterwards?

- Logo retention at a horizon: the account is live (`active` or `trialing`) at anchor + horizon.
  Groups and anchors: `upsold` (first upsell in the window, anchored at it), `pql_not_upsold`
  (in PQL status at some Monday of the window but never upsold in it, anchored at its first PQL
  Monday) and `all` (accounts live at the window start, anchored there). Accounts whose horizon
  runs past the end of the data are censored and left out.
- Post-upsell adoption: of tier upgrades, those that used a feature of the new tier within 30
  days (adopters) against those that did not, and their post-upsell churn (the contract's
  definition, from `training.labels.expansion_events`, passed in as a frame because `features/`
  does not import `training/`).
- NRR of upsold cohorts: accounts upsold in a period against the other paying accounts, from the
  end of that period over the following `horizon_days`.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from features.analytics.common import (
    Freq,
    TimeLike,
    periods,
    resolve_window,
    window_detail,
)
from features.analytics.conversion import upsell_changes
from features.analytics.pipeline import ANY_TRIGGER
from features.analytics.revenue import _cohort_retention
from features.analytics.stats import newcombe_interval, rate_table
from features.dataset import Dataset

GROUPS = ("upsold", "pql_not_upsold", "all")


def retention_anchors(
    dataset: Dataset,
    pql: pd.DataFrame | None = None,
    *,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
) -> pd.DataFrame:
    """The accounts of each retention group and their anchor time (group, account_id, anchor)."""
    lo, hi = resolve_window(dataset, start, end)
    ups = upsell_changes(dataset)
    ups = ups[(ups["effective_at"] >= lo) & (ups["effective_at"] < hi)]
    upsold = ups.groupby("account_id", as_index=False)["effective_at"].min()
    parts = [upsold.rename(columns={"effective_at": "anchor"}).assign(group="upsold")]
    if pql is not None:
        on = pql[pql[ANY_TRIGGER] & (pql["as_of"] >= lo) & (pql["as_of"] < hi)]
        first = on.groupby("account_id", as_index=False)["as_of"].min()
        first = first[~first["account_id"].astype(str).isin(set(upsold["account_id"]))]
        parts.append(first.rename(columns={"as_of": "anchor"}).assign(group="pql_not_upsold"))
    subs = dataset.frame("subscriptions")["account_id"].astype(str).unique()
    obs = pd.DataFrame({"account_id": subs})
    obs["obs_id"] = range(len(obs))
    obs["window_id"], obs["ws"], obs["we"] = 0, lo, lo
    live = window_detail(dataset, obs)
    live_at_start = live.loc[live["start_live"], ["account_id"]]
    parts.append(live_at_start.assign(anchor=lo, group="all"))
    out = pd.concat(parts, ignore_index=True)[["group", "account_id", "anchor"]]
    out["account_id"] = out["account_id"].astype(str)
    out["anchor"] = out["anchor"].astype("datetime64[us]")
    return out


def retention_by_group(
    dataset: Dataset,
    pql: pd.DataFrame | None = None,
    *,
    horizons_days: Iterable[int] = (90, 365),
    start: TimeLike | None = None,
    end: TimeLike | None = None,
) -> pd.DataFrame:
    """Logo retention at each horizon for upsold, PQL-not-upsold and all accounts.

    Columns: group, horizon_days, accounts (uncensored), retained, retention_rate, ci_low,
    ci_high (Wilson 95%). Without `pql` the `pql_not_upsold` group is absent.
    """
    _, data_end = resolve_window(dataset, None, None)
    anchors = retention_anchors(dataset, pql, start=start, end=end)
    obs = pd.concat([anchors.assign(horizon_days=h) for h in horizons_days], ignore_index=True)
    obs["ws"] = obs["anchor"]
    obs["we"] = (obs["anchor"] + pd.to_timedelta(obs["horizon_days"], unit="D")).astype(
        "datetime64[us]"
    )
    obs = obs[obs["we"] <= data_end].reset_index(drop=True)
    obs["obs_id"] = range(len(obs))
    obs["window_id"] = 0
    detail = window_detail(dataset, obs) if len(obs) else obs.assign(end_live=False)
    obs["retained"] = detail["end_live"].to_numpy(dtype=bool) if len(obs) else []
    table = rate_table(obs, ["group", "horizon_days"], "retained", trials="accounts").rename(
        columns={"successes": "retained", "rate": "retention_rate"}
    )
    present = [g for g in GROUPS if g in set(anchors["group"])]
    grid = pd.MultiIndex.from_product(
        [present, list(horizons_days)], names=["group", "horizon_days"]
    )
    table = table.set_index(["group", "horizon_days"]).reindex(grid).reset_index()
    table["accounts"] = table["accounts"].fillna(0).astype("int64")
    table["retained"] = table["retained"].fillna(0).astype("int64")
    return table


def retention_differential(
    retention: pd.DataFrame, group_a: str = "upsold", group_b: str = "pql_not_upsold"
) -> pd.DataFrame:
    """Per horizon: retention of `group_a` minus `group_b` with a 95% Newcombe interval."""
    rows = []
    for horizon, frame in retention.groupby("horizon_days", sort=True):
        a = frame[frame["group"] == group_a]
        b = frame[frame["group"] == group_b]
        if a.empty or b.empty:
            continue
        ka, na = int(a["retained"].iloc[0]), int(a["accounts"].iloc[0])
        kb, nb = int(b["retained"].iloc[0]), int(b["accounts"].iloc[0])
        diff, low, high = newcombe_interval(ka, na, kb, nb)
        rows.append(
            {
                "horizon_days": horizon,
                f"{group_a}_rate": ka / na if na else float("nan"),
                f"{group_b}_rate": kb / nb if nb else float("nan"),
                "difference": diff,
                "ci_low": low,
                "ci_high": high,
            }
        )
    columns = [
        "horizon_days",
        f"{group_a}_rate",
        f"{group_b}_rate",
        "difference",
        "ci_low",
        "ci_high",
    ]
    return pd.DataFrame(rows, columns=columns)


def post_upsell_adoption(
    expansions: pd.DataFrame,
    *,
    adoption_column: str = "new_tier_events_30d",
    label_column: str = "churned_after_upsell",
) -> pd.DataFrame:
    """Day-30 adoption of the new tier's features after tier upgrades, and the post-upsell
    churn (90 days) of adopters vs non-adopters (Wilson 95%).

    `expansions` is `training.labels.expansion_events(dataset)`; seat expansions (no new tier)
    and censored rows are left out. Rows: adopters, non_adopters, all_upgrades.
    """
    frame = expansions[(expansions["is_tier_upgrade"] > 0) & ~expansions["censored"]].copy()
    frame["adopter"] = frame[adoption_column] > 0
    frame["churned"] = frame[label_column].astype(bool)
    frame["group"] = frame["adopter"].map({True: "adopters", False: "non_adopters"})
    by_group = rate_table(frame, ["group"], "churned", trials="upgrades")
    total = rate_table(frame.assign(group="all_upgrades"), ["group"], "churned", trials="upgrades")
    out = pd.concat([by_group, total], ignore_index=True).rename(
        columns={"successes": "churned", "rate": "churn_rate"}
    )
    out = out.set_index("group").reindex(["adopters", "non_adopters", "all_upgrades"])
    out["upgrades"] = out["upgrades"].fillna(0).astype("int64")
    out["churned"] = out["churned"].fillna(0).astype("int64")
    out.insert(1, "share_of_upgrades", out["upgrades"] / max(len(frame), 1))
    return out.reset_index()


# Columns of `nrr_upsold_vs_rest`, with or without rows.
_NRR_UPSOLD_COLUMNS = [
    "period",
    "group",
    "window_start",
    "window_end",
    "days_observed",
    "accounts",
    "start_mrr",
    "expansion_mrr",
    "contraction_mrr",
    "churn_mrr",
    "nrr",
    "grr",
]


def nrr_upsold_vs_rest(
    dataset: Dataset,
    *,
    cohort_freq: Freq = "Q",
    horizon_days: int = 365,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
) -> pd.DataFrame:
    """NRR and GRR of the accounts upsold in each period vs the other paying accounts, from the
    period's end over the next `horizon_days` (cut at the end of the data: `days_observed`)."""
    lo, hi = resolve_window(dataset, start, end)
    _, data_end = resolve_window(dataset, None, None)
    ups = upsell_changes(dataset)
    accounts = pd.Series(dataset.frame("subscriptions")["account_id"].astype(str).unique())
    parts = []
    for window_id, row in periods(lo, hi, cohort_freq).iterrows():
        ws = row["period_end"]
        if ws >= data_end:
            continue
        we = min(ws + pd.Timedelta(days=horizon_days), data_end)
        in_period = ups[
            (ups["effective_at"] >= row["period_start"]) & (ups["effective_at"] < row["period_end"])
        ]
        upsold = set(in_period["account_id"])
        parts.append(
            pd.DataFrame(
                {
                    "account_id": accounts,
                    "group": ["upsold" if a in upsold else "rest" for a in accounts],
                    "period": row["period"],
                    "window_id": window_id,
                    "ws": ws,
                    "we": we,
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=_NRR_UPSOLD_COLUMNS)
    obs = pd.concat(parts, ignore_index=True)
    obs["obs_id"] = range(len(obs))
    detail = window_detail(dataset, obs).merge(obs[["obs_id", "group", "period"]], on="obs_id")
    out = _cohort_retention(detail, ["period", "group"])
    spans = obs.groupby("period").agg(window_start=("ws", "first"), window_end=("we", "first"))
    out = out.merge(spans.reset_index(), on="period")
    out["days_observed"] = (out["window_end"] - out["window_start"]).dt.days
    return out[_NRR_UPSOLD_COLUMNS]
