"""Shared pieces of the upsell analytics: the observation window, calendar periods, MRR windows.

Every metric is computed over an explicit window `[start, end)`; by default the window the
dataset observes product usage (first event day to the day after the last event or subscription
change). Periods are calendar weeks (Monday to Sunday), months or quarters.

Revenue is "live MRR": the `mrr` of an account's latest subscription row before time t when its
status is `active` or `trialing` (the same accounts the feature frame scores), else 0. Every
subscription row moves live MRR by `live_mrr - prev_live_mrr`, and its change kind (from
`features.derived`, the one definition) says which bucket of the MRR bridge the move belongs to,
so `end = start + new + expansion - contraction - churn + reactivation` holds exactly.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

import duckdb
import pandas as pd

from features.dataset import Dataset
from features.derived import create_subscription_changes

Freq = Literal["W", "M", "Q"]
TimeLike = date | datetime | str | pd.Timestamp

LIVE_STATUSES = ("active", "trialing")
_PANDAS_FREQ = {"W": "W-SUN", "M": "M", "Q": "Q"}

# Live MRR before and after each subscription row, plus the previous plan (for upgrade paths).
_CHANGES_VIEW_SQL = """
CREATE OR REPLACE TEMP VIEW analytics_changes AS
SELECT c.account_id, c.effective_at, c.change_kind, c.plan_id, c.tier, c.prev_tier,
    LAG(c.plan_id) OVER (PARTITION BY c.account_id ORDER BY c.effective_at) AS prev_plan_id,
    c.seats, c.prev_seats, c.status,
    c.status IN ('active', 'trialing') AS is_live,
    CASE WHEN c.status IN ('active', 'trialing') THEN c.mrr ELSE 0 END AS live_mrr,
    CASE WHEN c.prev_status IN ('active', 'trialing') THEN c.prev_mrr ELSE 0 END
        AS prev_live_mrr
FROM subscription_changes c
"""


def to_timestamp(value: TimeLike) -> pd.Timestamp:
    """A naive UTC timestamp (aware values are converted to UTC)."""
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.as_unit("us")


def observation_window(dataset: Dataset) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The observed window `[start, end)`: first event day to the day after the last record."""
    tables = dataset.report.tables
    starts = [tables["events"].time_min] if tables["events"].time_min else []
    starts = starts or [tables["subscriptions"].time_min]
    ends = [tables[t].time_max for t in ("events", "subscriptions") if tables[t].time_max]
    if not starts or starts[0] is None or not ends:
        raise ValueError("the dataset has no events or subscriptions to measure over")
    start = to_timestamp(min(starts)).normalize()
    end = to_timestamp(max(ends)).normalize() + pd.Timedelta(days=1)
    return start, end


def resolve_window(
    dataset: Dataset, start: TimeLike | None, end: TimeLike | None
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """`[start, end)` with the observation window filling in what is not given."""
    default_start, default_end = observation_window(dataset)
    lo = to_timestamp(start) if start is not None else default_start
    hi = to_timestamp(end) if end is not None else default_end
    if hi <= lo:
        raise ValueError(f"end ({hi.date()}) must be after start ({lo.date()})")
    return lo, hi


def periods(start: TimeLike, end: TimeLike, freq: Freq = "M") -> pd.DataFrame:
    """Calendar periods overlapping `[start, end)`: label, period_start, period_end (exclusive).

    `complete` says the whole period lies inside the window, so its figures are final.
    """
    if freq not in _PANDAS_FREQ:
        raise ValueError(f"freq must be one of W, M, Q, not {freq!r}")
    lo, hi = to_timestamp(start), to_timestamp(end)
    rng = pd.period_range(lo, hi - pd.Timedelta(microseconds=1), freq=_PANDAS_FREQ[freq])
    frame = pd.DataFrame(
        {
            "period": [period_label(p, freq) for p in rng],
            "period_start": [p.start_time for p in rng],
            "period_end": [(p + 1).start_time for p in rng],
        }
    )
    for col in ("period_start", "period_end"):
        frame[col] = frame[col].astype("datetime64[us]")
    frame["complete"] = (frame["period_start"] >= lo) & (frame["period_end"] <= hi)
    return frame


def period_label(period: pd.Period, freq: Freq) -> str:
    """A short readable label: `2024-W05` (ISO week), `2024-01`, `2024Q1`."""
    if freq == "W":
        iso = period.start_time.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    if freq == "M":
        return period.strftime("%Y-%m")
    return f"{period.year}Q{period.quarter}"


def assign_period(times: pd.Series, freq: Freq) -> pd.Series:
    """The period label of each timestamp."""
    pf = _PANDAS_FREQ[freq]
    return pd.Series(
        [period_label(pd.Period(t, freq=pf), freq) for t in times], index=times.index, dtype=object
    )


def assign_period_start(times: pd.Series, freq: Freq) -> pd.Series:
    """The start of the period holding each timestamp."""
    pf = _PANDAS_FREQ[freq]
    starts = [pd.Period(t, freq=pf).start_time for t in times]
    return pd.Series(starts, index=times.index, dtype="datetime64[us]")


def ensure_changes(dataset: Dataset) -> duckdb.DuckDBPyConnection:
    """The connection with `subscription_changes` and the `analytics_changes` view in place."""
    con = dataset.con
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'subscription_changes'"
    ).fetchall()[0][0]
    if not exists:
        create_subscription_changes(con)
    con.execute(_CHANGES_VIEW_SQL)
    return con


def register_temp(con: duckdb.DuckDBPyConnection, name: str, frame: pd.DataFrame) -> None:
    """Copy a pandas frame into a temp table (timestamps as microsecond naive UTC)."""
    frame = frame.copy()
    for col in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[col]):
            frame[col] = frame[col].astype("datetime64[us]")
    view = f"{name}_df"
    con.register(view, frame)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {view}")
    finally:
        con.unregister(view)


# Per observation (an account over a window [ws, we)): live MRR and liveness at both ends, and
# the MRR moves inside the window by bucket. Reads temp table `analytics_obs`
# (obs_id, window_id, account_id, ws, we).
WINDOW_DETAIL_SQL = """
WITH s AS (
    SELECT o.obs_id, arg_max(c.live_mrr, c.effective_at) AS start_mrr,
        arg_max(c.is_live, c.effective_at) AS start_live
    FROM analytics_obs o
    JOIN analytics_changes c ON c.account_id = o.account_id AND c.effective_at < o.ws
    GROUP BY o.obs_id
), e AS (
    SELECT o.obs_id, arg_max(c.live_mrr, c.effective_at) AS end_mrr,
        arg_max(c.is_live, c.effective_at) AS end_live
    FROM analytics_obs o
    JOIN analytics_changes c ON c.account_id = o.account_id AND c.effective_at < o.we
    GROUP BY o.obs_id
), m AS (
    SELECT o.obs_id,
        SUM(c.live_mrr - c.prev_live_mrr) FILTER (WHERE c.change_kind = 'new') AS new_mrr,
        -- repricing (a discount ending, a billing-period switch) is booked by its sign so
        -- the bridge adds up; it is not an expansion for the models (features.derived)
        SUM(c.live_mrr - c.prev_live_mrr)
            FILTER (WHERE c.change_kind IN ('upgrade', 'expansion')
                OR (c.change_kind = 'repricing' AND c.live_mrr > c.prev_live_mrr))
            AS expansion_mrr,
        -SUM(c.live_mrr - c.prev_live_mrr)
            FILTER (WHERE c.change_kind IN ('downgrade', 'contraction')
                OR (c.change_kind = 'repricing' AND c.live_mrr < c.prev_live_mrr))
            AS contraction_mrr,
        -SUM(c.live_mrr - c.prev_live_mrr) FILTER (WHERE c.change_kind = 'churn') AS churn_mrr,
        SUM(c.live_mrr - c.prev_live_mrr)
            FILTER (WHERE c.change_kind = 'reactivation') AS reactivation_mrr,
        COUNT(*) FILTER (WHERE c.change_kind = 'churn') AS churns
    FROM analytics_obs o
    JOIN analytics_changes c ON c.account_id = o.account_id
        AND c.effective_at >= o.ws AND c.effective_at < o.we
    GROUP BY o.obs_id
)
SELECT o.obs_id, o.window_id, o.account_id, o.ws, o.we,
    COALESCE(s.start_mrr, 0) AS start_mrr, COALESCE(s.start_live, false) AS start_live,
    COALESCE(e.end_mrr, 0) AS end_mrr, COALESCE(e.end_live, false) AS end_live,
    COALESCE(m.new_mrr, 0) AS new_mrr, COALESCE(m.expansion_mrr, 0) AS expansion_mrr,
    COALESCE(m.contraction_mrr, 0) AS contraction_mrr, COALESCE(m.churn_mrr, 0) AS churn_mrr,
    COALESCE(m.reactivation_mrr, 0) AS reactivation_mrr, COALESCE(m.churns, 0) AS churns
FROM analytics_obs o
LEFT JOIN s ON s.obs_id = o.obs_id
LEFT JOIN e ON e.obs_id = o.obs_id
LEFT JOIN m ON m.obs_id = o.obs_id
"""

# Per window: the MRR bridge over all accounts, and the retention of the accounts paying at
# its start (the cohort): retained = start + expansion - contraction - churn, per account.
WINDOW_TOTALS_SQL = f"""
WITH d AS ({WINDOW_DETAIL_SQL}),
r AS (SELECT *, start_mrr + expansion_mrr - contraction_mrr - churn_mrr AS retained FROM d)
SELECT window_id,
    SUM(start_mrr) AS start_mrr, SUM(new_mrr) AS new_mrr, SUM(expansion_mrr) AS expansion_mrr,
    SUM(contraction_mrr) AS contraction_mrr, SUM(churn_mrr) AS churn_mrr,
    SUM(reactivation_mrr) AS reactivation_mrr, SUM(end_mrr) AS end_mrr,
    COUNT(*) FILTER (WHERE start_live) AS start_accounts,
    COUNT(*) FILTER (WHERE end_live) AS end_accounts,
    COUNT(*) FILTER (WHERE start_mrr > 0) AS cohort_accounts,
    COUNT(*) FILTER (WHERE start_mrr > 0 AND churns > 0) AS cohort_churned_accounts,
    COALESCE(SUM(expansion_mrr) FILTER (WHERE start_mrr > 0), 0) AS cohort_expansion_mrr,
    COALESCE(SUM(contraction_mrr) FILTER (WHERE start_mrr > 0), 0) AS cohort_contraction_mrr,
    COALESCE(SUM(churn_mrr) FILTER (WHERE start_mrr > 0), 0) AS cohort_churn_mrr,
    COALESCE(SUM(retained) FILTER (WHERE start_mrr > 0), 0) AS cohort_retained_mrr,
    COALESCE(SUM(LEAST(start_mrr, GREATEST(retained, 0))) FILTER (WHERE start_mrr > 0), 0)
        AS cohort_gross_retained_mrr
FROM r
GROUP BY window_id
ORDER BY window_id
"""


def _grid_obs(con: duckdb.DuckDBPyConnection, windows: pd.DataFrame) -> None:
    """`analytics_obs` = every account with subscriptions x every window (window_id, ws, we)."""
    register_temp(con, "analytics_windows", windows[["window_id", "ws", "we"]])
    con.execute("""
        CREATE OR REPLACE TEMP TABLE analytics_obs AS
        SELECT row_number() OVER () AS obs_id, w.window_id, a.account_id, w.ws, w.we
        FROM analytics_windows w
        CROSS JOIN (SELECT DISTINCT account_id FROM subscriptions) a
    """)


def window_totals(dataset: Dataset, windows: pd.DataFrame) -> pd.DataFrame:
    """MRR bridge and cohort retention per window (columns window_id, ws, we in `windows`)."""
    con = ensure_changes(dataset)
    _grid_obs(con, windows)
    totals = con.execute(WINDOW_TOTALS_SQL).df()
    out = windows.merge(totals, on="window_id", how="left")
    count_cols = [c for c in totals.columns if c.endswith("accounts")]
    money_cols = [c for c in totals.columns if c != "window_id" and c not in count_cols]
    out[money_cols] = out[money_cols].astype("float64").fillna(0.0)
    out[count_cols] = out[count_cols].fillna(0).astype("int64")
    return out


def window_detail(dataset: Dataset, obs: pd.DataFrame) -> pd.DataFrame:
    """Per observation (obs_id, window_id, account_id, ws, we): MRR and liveness at both ends."""
    con = ensure_changes(dataset)
    register_temp(con, "analytics_obs", obs[["obs_id", "window_id", "account_id", "ws", "we"]])
    detail = con.execute(WINDOW_DETAIL_SQL + " ORDER BY o.obs_id").df()
    return detail


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when the denominator is zero."""
    return float(numerator) / float(denominator) if denominator else float("nan")
