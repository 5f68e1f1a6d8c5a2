"""Conversion metrics: did outreach and PQL status turn into upsells, and how fast?

An upsell (conversion) is an `upgrade` or `expansion` change (`features.derived`). The window
is `[t, t + horizon_days)` after the touch or the trigger, 60 days by default, as for the
propensity label. Rows whose window runs past the end of the data are censored and left out of
every rate.

Outreach rows with `holdout = true` are eligible accounts deliberately not contacted: comparing
their conversion with the contacted rows' measures what outreach adds. The difference
(contacted - holdout) gets a 95% interval by Newcombe's hybrid score method (see
`features.analytics.stats`). Rates are per touch: an account touched twice counts twice.
"""

from __future__ import annotations

import pandas as pd

from features.analytics.common import TimeLike, ensure_changes, resolve_window, to_timestamp
from features.analytics.pipeline import pql_entries, trigger_names
from features.analytics.stats import newcombe_interval, rate_table
from features.dataset import Dataset
from features.derived import EXPANSION_KINDS

NO_TRIGGER = "(none)"


def upsell_changes(dataset: Dataset) -> pd.DataFrame:
    """Every upgrade and expansion: account_id, effective_at, change_kind, tier, prev_tier."""
    con = ensure_changes(dataset)
    kinds = ", ".join(f"'{k}'" for k in EXPANSION_KINDS)
    frame = con.execute(f"""
        SELECT account_id, effective_at, change_kind, tier, prev_tier
        FROM analytics_changes WHERE change_kind IN ({kinds})
        ORDER BY account_id, effective_at
    """).df()
    frame["account_id"] = frame["account_id"].astype(str)
    return frame


def _first_upsell_after(
    rows: pd.DataFrame, upsells: pd.DataFrame, at: str, horizon_days: int
) -> pd.Series:
    """For each row, the first upsell of its account in `[row[at], row[at] + horizon)`."""
    keyed = rows[["account_id", at]].assign(_row=range(len(rows)))
    pairs = keyed.merge(upsells[["account_id", "effective_at"]], on="account_id")
    limit = pairs[at] + pd.Timedelta(days=horizon_days)
    pairs = pairs[(pairs["effective_at"] >= pairs[at]) & (pairs["effective_at"] < limit)]
    first = pairs.groupby("_row")["effective_at"].min().reindex(range(len(rows)))
    return pd.Series(first.to_numpy(), index=rows.index, name="converted_at")


def outreach_outcomes(
    dataset: Dataset,
    *,
    horizon_days: int = 60,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
) -> pd.DataFrame:
    """Every outreach row sent in `[start, end)` with whether the account upsold within
    `horizon_days` (converted, converted_at, days_to_conversion, censored)."""
    lo, hi = resolve_window(dataset, start, end)
    _, data_end = resolve_window(dataset, None, None)
    rows = dataset.frame("outreach").copy()
    rows["account_id"] = rows["account_id"].astype(str)
    rows = rows[(rows["sent_at"] >= lo) & (rows["sent_at"] < hi)].reset_index(drop=True)
    rows["trigger"] = rows["trigger"].astype(object).where(rows["trigger"].notna(), NO_TRIGGER)
    rows["holdout"] = rows["holdout"].astype(bool)
    rows["group"] = rows["holdout"].map({True: "holdout", False: "contacted"})
    rows["converted_at"] = _first_upsell_after(
        rows, upsell_changes(dataset), "sent_at", horizon_days
    )
    rows["converted"] = rows["converted_at"].notna()
    rows["days_to_conversion"] = (rows["converted_at"] - rows["sent_at"]).dt.total_seconds() / 86400
    rows["censored"] = ~rows["converted"] & (
        rows["sent_at"] + pd.Timedelta(days=horizon_days) > data_end
    )
    return rows


def _conversion_by(outcomes: pd.DataFrame, by: str) -> pd.DataFrame:
    known = outcomes[~outcomes["censored"]]
    out = rate_table(known, [by, "group"], "converted", trials="touches")
    return out.rename(columns={"successes": "conversions", "rate": "conversion_rate"})


def conversion_by_trigger(
    dataset: Dataset,
    *,
    horizon_days: int = 60,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
) -> pd.DataFrame:
    """Upsell conversion within `horizon_days` of an outreach touch, by trigger and by group
    (contacted / holdout), with Wilson 95% intervals."""
    outcomes = outreach_outcomes(dataset, horizon_days=horizon_days, start=start, end=end)
    return _conversion_by(outcomes, "trigger")


def conversion_by_channel(
    dataset: Dataset,
    *,
    horizon_days: int = 60,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
) -> pd.DataFrame:
    """Upsell conversion within `horizon_days` of an outreach touch, by channel and group."""
    outcomes = outreach_outcomes(dataset, horizon_days=horizon_days, start=start, end=end)
    return _conversion_by(outcomes, "channel")


def holdout_comparison(
    dataset: Dataset,
    *,
    horizon_days: int = 60,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    by: str | None = None,
) -> pd.DataFrame:
    """Contacted vs holdout conversion within `horizon_days`, the difference (contacted -
    holdout, the lift outreach causes) and its 95% Newcombe interval.

    One row for all touches, then one per value of `by` ("trigger" or "channel") if given.
    """
    outcomes = outreach_outcomes(dataset, horizon_days=horizon_days, start=start, end=end)
    known = outcomes[~outcomes["censored"]]
    groups: list[tuple[str, pd.DataFrame]] = [("all", known)]
    if by is not None:
        groups += [(str(k), g) for k, g in known.groupby(by, sort=True)]
    rows = []
    for name, frame in groups:
        contacted = frame[~frame["holdout"]]
        held = frame[frame["holdout"]]
        kc, nc = int(contacted["converted"].sum()), len(contacted)
        kh, nh = int(held["converted"].sum()), len(held)
        diff, low, high = newcombe_interval(kc, nc, kh, nh)
        rows.append(
            {
                by or "scope": name,
                "contacted_touches": nc,
                "contacted_conversions": kc,
                "contacted_rate": kc / nc if nc else float("nan"),
                "holdout_touches": nh,
                "holdout_conversions": kh,
                "holdout_rate": kh / nh if nh else float("nan"),
                "difference": diff,
                "ci_low": low,
                "ci_high": high,
                "method": "Newcombe hybrid score (Wilson), 95%",
            }
        )
    return pd.DataFrame(rows)


def time_to_upsell_from_signup(
    dataset: Dataset, *, start: TimeLike | None = None, end: TimeLike | None = None
) -> pd.DataFrame:
    """Per account whose first-ever upsell falls in `[start, end)`: days from signup to it."""
    lo, hi = resolve_window(dataset, start, end)
    first = (
        upsell_changes(dataset)
        .groupby("account_id", as_index=False)
        .agg(first_upsell_at=("effective_at", "min"), change_kind=("change_kind", "first"))
    )
    first = first[(first["first_upsell_at"] >= lo) & (first["first_upsell_at"] < hi)]
    accounts = dataset.frame("accounts")[["account_id", "created_at", "segment"]].copy()
    accounts["account_id"] = accounts["account_id"].astype(str)
    out = first.merge(accounts, on="account_id", how="left")
    out["segment"] = out["segment"].astype(object).where(out["segment"].notna(), "(none)")
    out["days_to_upsell"] = (out["first_upsell_at"] - out["created_at"]).dt.total_seconds() / 86400
    return out[
        ["account_id", "segment", "created_at", "first_upsell_at", "change_kind", "days_to_upsell"]
    ].reset_index(drop=True)


def pql_outcomes(
    dataset: Dataset, pql: pd.DataFrame, *, horizon_days: int = 60, end: TimeLike | None = None
) -> pd.DataFrame:
    """Per PQL entry: whether the account upsold within `horizon_days` of the week the trigger
    fired (from `fired_after`), when, and whether the entry is censored."""
    _, hi = resolve_window(dataset, None, end)
    entries = pql_entries(pql)
    entries["converted_at"] = _first_upsell_after(
        entries, upsell_changes(dataset), "fired_after", horizon_days
    )
    entries["converted"] = entries["converted_at"].notna()
    entries["days_to_conversion"] = (
        entries["converted_at"] - entries["fired_after"]
    ).dt.total_seconds() / 86400
    window_end = entries["fired_after"] + pd.Timedelta(days=horizon_days)
    entries["censored"] = ~entries["converted"] & (window_end > to_timestamp(hi))
    return entries


def time_from_trigger_to_conversion(
    dataset: Dataset, pql: pd.DataFrame, *, horizon_days: int = 60, end: TimeLike | None = None
) -> pd.DataFrame:
    """Per trigger: PQL entries, the share that upsold within `horizon_days` (Wilson 95%), and
    days from the trigger firing to the upsell (quartiles) among those that did."""
    outcomes = pql_outcomes(dataset, pql, horizon_days=horizon_days, end=end)
    known = outcomes[~outcomes["censored"]]
    rates = (
        rate_table(known, ["trigger"], "converted", trials="entries")
        .rename(columns={"successes": "conversions", "rate": "conversion_rate"})
        .set_index("trigger")
    )
    days = known.groupby("trigger")["days_to_conversion"]
    rates["days_p25"] = days.quantile(0.25)
    rates["days_median"] = days.median()
    rates["days_p75"] = days.quantile(0.75)
    order = [t for t in trigger_names() if t in rates.index]
    return rates.reindex(order).reset_index()
