"""Pipeline metrics: product-qualified leads (PQLs) per week, per trigger, and how fast they are
worked.

A PQL is an account for which a trigger of `features.triggers` fires (never redefined here),
evaluated on weekly as-of dates (Mondays) with the point-in-time feature frame, so a PQL is what
the team could have seen that Monday. An account *enters* PQL status for a trigger at the first
Monday the trigger fires after a Monday it did not (or the account was not active). The first
Monday evaluated is the baseline: nothing enters there. An entry detected on Monday `as_of`
fired during the week before it, `[fired_after, as_of)`; that week is the entry's period, and
times are measured from `fired_after` (resolution: one week).
"""

from __future__ import annotations

import pandas as pd

from features.analytics.common import (
    Freq,
    TimeLike,
    assign_period,
    assign_period_start,
    observation_window,
    resolve_window,
    to_timestamp,
)
from features.build import build_feature_frame
from features.dataset import Dataset
from features.triggers import TRIGGERS, TriggerThresholds, trigger_flags

ANY_TRIGGER = "any_trigger"
WARMUP_DAYS = 30  # the longest trigger look-back window


def trigger_names() -> list[str]:
    """The triggers in registry order, then the union `any_trigger`."""
    return [*TRIGGERS, ANY_TRIGGER]


def weekly_as_of_dates(
    start: TimeLike, end: TimeLike, not_before: TimeLike | None = None
) -> list[pd.Timestamp]:
    """Mondays from the one on or before `start` (the baseline) to the last one on or before
    `end`; with `not_before`, the baseline is moved forward to the first Monday on or after it.
    """
    lo, hi = to_timestamp(start).normalize(), to_timestamp(end).normalize()
    first = lo - pd.Timedelta(days=lo.weekday())
    if not_before is not None:
        floor = to_timestamp(not_before).normalize()
        floor = floor + pd.Timedelta(days=(7 - floor.weekday()) % 7)
        first = max(first, floor)
    return list(pd.date_range(first, hi, freq="7D"))


def pql_status(
    dataset: Dataset,
    *,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    thresholds: TriggerThresholds | None = None,
    features: pd.DataFrame | None = None,
    warmup_days: int = WARMUP_DAYS,
) -> pd.DataFrame:
    """Weekly PQL flags: one row per Monday and active account, one bool column per trigger.

    The baseline Monday is at least `warmup_days` after the first event, so that the triggers'
    look-back windows (up to 30 days) are full and the first weeks do not show every account
    entering at once. Pass `features` (a `build_feature_frame` result on weekly dates) to reuse
    a feature frame, e.g. to try other `thresholds` without rebuilding it.
    """
    if features is None:
        lo, hi = resolve_window(dataset, start, end)
        data_start, _ = observation_window(dataset)
        dates = weekly_as_of_dates(lo, hi, data_start + pd.Timedelta(days=warmup_days))
        if len(dates) < 2:
            raise ValueError(
                f"need two Mondays between {lo.date()} and {hi.date()} "
                f"(after a {warmup_days}-day warm-up) to find PQL entries"
            )
        features = build_feature_frame(dataset, [d.date() for d in dates])
    flags = trigger_flags(features, thresholds)
    out = pd.concat([features[["as_of", "account_id"]], flags], axis=1)
    out[ANY_TRIGGER] = flags.any(axis=1)
    return out.reset_index(drop=True)


def pql_entries(pql: pd.DataFrame) -> pd.DataFrame:
    """Entries into PQL status: account_id, trigger, as_of (detected), fired_after (week start).

    One row per account and trigger (including `any_trigger`) per Monday it starts firing.
    """
    dates = sorted(pql["as_of"].unique())
    prev_of = dict(zip(dates[1:], dates[:-1], strict=True))
    names = [c for c in trigger_names() if c in pql.columns]
    long = pql.melt(
        id_vars=["as_of", "account_id"], value_vars=names, var_name="trigger", value_name="on"
    )
    on = long[long["on"]].drop(columns="on")
    on = on[on["as_of"].isin(prev_of)].copy()
    on["fired_after"] = on["as_of"].map(prev_of).astype("datetime64[us]")
    was_on = long[long["on"]][["as_of", "account_id", "trigger"]].rename(
        columns={"as_of": "fired_after"}
    )
    was_on["fired_after"] = was_on["fired_after"].astype("datetime64[us]")
    merged = on.merge(
        was_on.assign(_was=True), on=["fired_after", "account_id", "trigger"], how="left"
    )
    entries = merged[merged["_was"].isna()].drop(columns="_was")
    entries["as_of"] = entries["as_of"].astype("datetime64[us]")
    return (
        entries[["account_id", "trigger", "as_of", "fired_after"]]
        .sort_values(["as_of", "account_id", "trigger"])
        .reset_index(drop=True)
    )


def _evaluated(pql: pd.DataFrame) -> pd.DataFrame:
    """Per Monday after the baseline: active accounts, accounts in PQL status, the week start."""
    dates = sorted(pql["as_of"].unique())
    per = (
        pql.groupby("as_of")
        .agg(active_accounts=("account_id", "size"), pql_accounts=(ANY_TRIGGER, "sum"))
        .reindex(dates, fill_value=0)
    )
    per = per.iloc[1:].reset_index()
    per["fired_after"] = pd.to_datetime(dates[:-1]).astype("datetime64[us]")
    return per


def pql_volume(pql: pd.DataFrame, freq: Freq = "W") -> pd.DataFrame:
    """New PQL entries per period (by the week they fired), one column per trigger and
    `any_trigger` (an account counted once however many triggers fire)."""
    evaluated = _evaluated(pql)
    evaluated["period"] = assign_period(evaluated["fired_after"], freq)
    evaluated["period_start"] = assign_period_start(evaluated["fired_after"], freq)
    base = evaluated[["period", "period_start"]].drop_duplicates().reset_index(drop=True)
    entries = pql_entries(pql)
    entries["period"] = assign_period(entries["fired_after"], freq)
    wide = entries.pivot_table(
        index="period", columns="trigger", values="account_id", aggfunc="size", fill_value=0
    )
    wide = wide.reindex(columns=[c for c in trigger_names() if c in pql.columns], fill_value=0)
    out = base.merge(wide.reset_index(), on="period", how="left").fillna(0)
    for col in wide.columns:
        out[col] = out[col].astype("int64")
    out.columns.name = None
    return out


def pqls_per_100_active(pql: pd.DataFrame, freq: Freq = "W") -> pd.DataFrame:
    """New PQLs (any trigger) per 100 active accounts per period, and the share of active
    accounts in PQL status (mean over the period's Mondays)."""
    evaluated = _evaluated(pql)
    evaluated["period"] = assign_period(evaluated["fired_after"], freq)
    evaluated["period_start"] = assign_period_start(evaluated["fired_after"], freq)
    evaluated["pql_share"] = evaluated["pql_accounts"] / evaluated["active_accounts"].where(
        evaluated["active_accounts"] > 0
    )
    out = (
        evaluated.groupby("period", sort=False)
        .agg(
            period_start=("period_start", "first"),
            active_accounts=("active_accounts", "mean"),
            pql_share=("pql_share", "mean"),
        )
        .reset_index()
    )
    volume = pql_volume(pql, freq)[["period", ANY_TRIGGER]].rename(
        columns={ANY_TRIGGER: "new_pqls"}
    )
    out = out.merge(volume, on="period", how="left")
    out["pqls_per_100_active"] = (
        100 * out["new_pqls"] / out["active_accounts"].where(out["active_accounts"] > 0)
    )
    return out[
        [
            "period",
            "period_start",
            "active_accounts",
            "new_pqls",
            "pqls_per_100_active",
            "pql_share",
        ]
    ]


def pql_first_contacts(
    dataset: Dataset, pql: pd.DataFrame, *, max_days: int = 90, end: TimeLike | None = None
) -> pd.DataFrame:
    """Per PQL entry: the first outreach contact (holdout rows excluded) within `max_days`.

    `days_to_contact` is measured from `fired_after`; `censored` marks entries without a
    contact whose `max_days` window runs past the end of the data.
    """
    _, hi = resolve_window(dataset, None, end)
    entries = pql_entries(pql)
    outreach = dataset.frame("outreach")
    contacts = outreach.loc[~outreach["holdout"].astype(bool), ["account_id", "sent_at", "channel"]]
    contacts = contacts.assign(account_id=contacts["account_id"].astype(str))
    keyed = entries.assign(_row=range(len(entries)))
    pairs = keyed.merge(contacts, on="account_id", how="inner")
    limit = pairs["fired_after"] + pd.Timedelta(days=max_days)
    pairs = pairs[(pairs["sent_at"] >= pairs["fired_after"]) & (pairs["sent_at"] < limit)]
    first = pairs.sort_values("sent_at").groupby("_row").first()[["sent_at", "channel"]]
    first = first.rename(columns={"sent_at": "contacted_at"})
    out = keyed.merge(first, left_on="_row", right_index=True, how="left").drop(columns="_row")
    out["days_to_contact"] = (out["contacted_at"] - out["fired_after"]).dt.total_seconds() / 86400
    window_end = out["fired_after"] + pd.Timedelta(days=max_days)
    out["censored"] = out["contacted_at"].isna() & (window_end > hi)
    return out


def time_in_pql_status(
    dataset: Dataset, pql: pd.DataFrame, *, max_days: int = 90, end: TimeLike | None = None
) -> pd.DataFrame:
    """Per trigger: PQL entries, the share contacted within `max_days`, and days from the
    trigger firing to the first contact (median, quartiles) among those contacted."""
    contacts = pql_first_contacts(dataset, pql, max_days=max_days, end=end)
    known = contacts[~contacts["censored"]]
    out = known.groupby("trigger").agg(
        entries=("account_id", "size"),
        contacted=("contacted_at", "count"),
    )
    days = contacts.groupby("trigger")["days_to_contact"]
    out["contact_rate"] = out["contacted"] / out["entries"]
    out["days_p25"] = days.quantile(0.25)
    out["days_median"] = days.median()
    out["days_p75"] = days.quantile(0.75)
    order = [t for t in trigger_names() if t in out.index]
    return out.reindex(order).reset_index()
