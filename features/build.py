"""Build the point-in-time account feature frame: `build_features(dataset, as_of)`.

Raw events are scanned once per roll-up (`features.rollup`: day rows, or 32-day blocks of day
masks); every feature then reads the roll-ups, for any number of as-of dates in one pass. The
SQL of each feature is generated from its declaration in `features.registry` (its kind, source
and window); the window rule is `features.registry.Window`: a row at day `d` counts for as-of
day `t` when `t - start <= d < t - end`, so nothing at or after the as-of date is ever read.
As-of values are dates (midnight UTC); a time of day is dropped, which only ever uses less data.

Two fast paths are picked from a feature's kind, never from its SQL text; each computes exactly
what the plain definition says (`features.reference` writes that plain SQL, and the tests
compare the two):

- *Day masks* (kind `active_days`, and the last event day): a 32-day block of an account's (or
  a user's) days is one BIGINT whose bit `i` says "active on day 32 * b + i". A window is then
  one mask per block (`window_mask`), and "days active in the window" reads as
  `BIT_COUNT(block_mask & window_mask)` summed over the blocks: the number of days in the set
  {active days} intersected with {window days}.
- *Value sets* (kind `distinct` over events): the features (or workflows) an account used in a
  window, as a set of value numbers held as the bits of a few 63-bit words (`_set_words`). Read
  `BIT_OR(1 << feature_no)` as "the set of features", `BIT_COUNT` of it as "its size", that is
  `COUNT(DISTINCT feature)`; it is made in the same pass as the sums, with no hash table.

One row per account that is `active` or `trialing` at the as-of date, columns `as_of`,
`account_id`, then the registry's features in model order.

The SQL is written once (DuckDB's dialect) and runs on the dataset's engine: DuckDB, or Spark
through sqlglot (`features.engine`); only the dtypes are fixed in pandas.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pandas as pd

from features.dataset import Dataset
from features.derived import EXPANSION_KINDS
from features.engine import Engine
from features.registry import (
    FEATURES,
    QUOTA_METRIC_COLUMNS,
    Feature,
    Window,
    check_registry,
    feature_list,
    metric_slug,
    windows,
)
from features.rollup import BLOCK_DAYS, BLOCK_TABLES, NUMBERED, ensure_rollups

EPOCH = date(1970, 1, 1)
KEYS = ["as_of", "account_id"]

# The registry's windows by name (`features.registry.Window` holds the rule).
WINDOWS: dict[str, Window] = {w.name: w for w in windows()}

# Windowed sources: roll-up table, grouping keys and the value counted. They are pre-aggregated
# per as-of date into `fs_win_<source>` with one `n_<window>` column per window its features
# use, so each roll-up row is read once per date it can reach and features are plain sums.
# A block table (`features.rollup.BLOCK_TABLES`) counts active days: the bits of its day mask
# within the window's mask for that block (value None).
WINDOWED = {
    "activity": ("activity_day", ("account_id", "event"), "a.n_events"),
    "users": ("user_block", ("account_id", "user_id"), None),
}
# Attributes joined onto a windowed source after its sums (they are functions of its keys,
# so grouping by them too would only make the hash keys wider).
WINDOWED_ATTRIBUTES = {
    "activity": (
        "event_meta",
        ("event",),
        ("feature", "workflow", "power", "min_tier", "signal", "feature_no", "workflow_no"),
    ),
}

# Other sources: the table their rows come from and which of them fall in an as-of date's
# reach: ("blocks", None) a block table's blocks that its features' windows reach; ("day",
# column) rows whose day column is within the longest of its features' windows; ("when",
# condition) rows meeting a condition on the as-of date row `dt`.
SOURCES = {
    "activity": None,
    "users": None,
    "days": ("account_block", ("blocks", None)),
    "team": ("users", ("when", "a.created_at < dt.as_of")),
    "first_use": ("first_use", ("day", "a.first_d")),
}
# The quota features' trailing window (util_30d, days_above_85; the projection before day 7).
QUOTA_WINDOW = Window(30)
# The quota windows reach back to the previous month's first day: at most 62 days.
QUOTA_REACH = 62


def reach(registry: tuple[Feature, ...] = FEATURES) -> int:
    """The longest reach back: `as_of_days` holds every day within it before each as-of date,
    and `as_of_blocks` every block that holds one."""
    return max([QUOTA_REACH, *(w.start for w in windows(registry))])


REACH = reach()
# The steps `build_feature_frame` reports to its `progress` callback, in order.
STEPS = ("roll-ups", "account state", *SOURCES, "recency", "quota")
Progress = Callable[[str], None]


def to_as_of(value: date | datetime | str | pd.Timestamp) -> date:
    """Normalize an as-of value to a date (midnight UTC)."""
    if isinstance(value, str):
        value = pd.Timestamp(value)
    if isinstance(value, pd.Timestamp):
        if value.tzinfo is not None:
            value = value.tz_convert("UTC").tz_localize(None)
        return value.date()
    if isinstance(value, datetime):
        return value.date()
    return value


def as_of_frame(dates: Iterable[date]) -> pd.DataFrame:
    """The as-of date table: its day number and the calendar facts the quota windows need."""
    rows = []
    for d in sorted(set(dates)):
        m0 = d.replace(day=1)
        pm0 = (m0 - timedelta(days=1)).replace(day=1)
        rows.append(
            {
                "as_of": pd.Timestamp(d),
                "t": (d - EPOCH).days,
                "m0": (m0 - EPOCH).days,
                "pm0": (pm0 - EPOCH).days,
                "dim": calendar.monthrange(d.year, d.month)[1],
                "elapsed": d.day - 1,
            }
        )
    frame = pd.DataFrame(rows)
    frame["as_of"] = frame["as_of"].astype("datetime64[us]")
    return frame


def as_of_days_frame(dates: pd.DataFrame, days: int = REACH) -> pd.DataFrame:
    """Every day in reach of each as-of date: (as_of, t, d) for t - days <= d < t."""
    back = list(range(1, days + 1))
    frame = dates[["as_of", "t"]].loc[dates.index.repeat(len(back))].reset_index(drop=True)
    frame["d"] = frame["t"] - back * len(dates)
    # INTEGER like the roll-ups' day numbers, so the join compares them without a cast.
    return frame.astype({"t": "int32", "d": "int32"})


def window_mask(t: int, block: int, window: Window) -> int:
    """The bits of `block` whose days fall in `window` of as-of day `t` (the window rule: bit
    `i` is day `BLOCK_DAYS * block + i`, set when `window.contains` that day)."""
    start = block * BLOCK_DAYS
    first = min(max(t - window.start - start, 0), BLOCK_DAYS)
    end = min(max(t - window.end - start, 0), BLOCK_DAYS)
    return (1 << end) - (1 << first) if end > first else 0


def as_of_blocks_frame(
    dates: pd.DataFrame, windows: dict[str, Window] = WINDOWS, days: int = REACH
) -> pd.DataFrame:
    """Every block in reach of each as-of date, with one day mask per window: (as_of, t, b,
    w_<window>...). A block row's active days in a window are `BIT_COUNT(a.m & dt.w_<window>)`."""
    rows = []
    for as_of, t in zip(dates["as_of"], dates["t"], strict=True):
        for b in range((t - days) // BLOCK_DAYS, (t - 1) // BLOCK_DAYS + 1):
            row = {"as_of": as_of, "t": t, "b": b}
            row.update({f"w_{name}": window_mask(t, b, w) for name, w in windows.items()})
            rows.append(row)
    columns = ["as_of", "t", "b", *(f"w_{w}" for w in windows)]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"t": "int32", "b": "int32"} | {f"w_{w}": "int64" for w in windows})


def quota_metrics(dataset: Dataset) -> list[str]:
    """The dataset's quota metrics (from `plan_limits`), sorted."""
    rows = dataset.engine.df("SELECT DISTINCT metric FROM plan_limits ORDER BY 1")
    return [str(m) for m in rows["metric"]]


@dataclass(frozen=True)
class FeatureSpec:
    """The feature list of one dataset: the registry plus its quota metrics."""

    metrics: tuple[str, ...]
    registry: tuple[Feature, ...] = FEATURES

    @property
    def features(self) -> tuple[Feature, ...]:
        return feature_list(list(self.metrics), self.registry)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.dtype == "category"]


def feature_spec(dataset: Dataset, registry: tuple[Feature, ...] = FEATURES) -> FeatureSpec:
    return FeatureSpec(tuple(quota_metrics(dataset)), registry)


def build_features(dataset: Dataset, as_of: date | datetime | str) -> pd.DataFrame:
    """Features of every active or trialing account as of one date."""
    return build_feature_frame(dataset, [as_of])


def build_feature_frame(
    dataset: Dataset,
    as_of_dates: Iterable[date | datetime | str],
    *,
    accounts: list[str] | None = None,
    pairs: pd.DataFrame | None = None,
    progress: Progress | None = None,
    registry: tuple[Feature, ...] = FEATURES,
) -> pd.DataFrame:
    """Features for many as-of dates in one pass over the roll-ups.

    `accounts` restricts the output to these account ids; `pairs` (columns `as_of`,
    `account_id`) to exactly these account and date pairs, for event-time rows such as the
    moment before each expansion. The roll-ups are shared either way. `registry` is the
    feature declarations to build (`features.registry.FEATURES`; tests pass their own).
    """
    if registry is not FEATURES:
        check_registry(registry)
    if pairs is not None:
        pairs = pairs[KEYS].drop_duplicates().copy()
        pairs["as_of"] = pd.to_datetime(pairs["as_of"].map(to_as_of)).astype("datetime64[us]")
        pairs["account_id"] = pairs["account_id"].astype(str)
        as_of_dates = pairs["as_of"].dt.date.unique().tolist()
    engine = dataset.engine
    note = progress or (lambda _step: None)
    dates = as_of_frame(to_as_of(v) for v in as_of_dates)
    spec = feature_spec(dataset, registry)
    days = reach(registry)
    by_name = {w.name: w for w in windows(registry)}
    note("roll-ups")
    ensure_rollups(dataset)
    _put(engine, "as_of_dates", dates)
    wanted = ""
    if pairs is not None:
        engine.register("wanted_df", pairs)
        wanted = "JOIN wanted_df w ON w.account_id = c.account_id AND w.as_of = dt.as_of"
    elif accounts is not None:
        engine.register("wanted_df", pd.DataFrame({"account_id": accounts}, dtype=str))
        wanted = "JOIN wanted_df w ON w.account_id = c.account_id"

    note("account state")
    engine.create_table("fs_state", _state_sql(wanted))
    _put(engine, "as_of_blocks", as_of_blocks_frame(dates, by_name, days))
    if not wanted:  # every account: roll-up rows meet their dates through the day alone
        _put(engine, "as_of_days", as_of_days_frame(dates, days))
    words = _set_words(engine)
    parts = []
    for source in SOURCES:
        note(source)
        feats = [f for f in registry if f.stage == "aggregate" and f.rollup == source]
        if not feats:
            continue
        if source in WINDOWED:
            engine.create_table(f"fs_win_{source}", _windowed_sql(source, feats, not wanted))
        engine.create_table(
            f"fs_{source}", _aggregate_sql(source, feats, every=not wanted, words=words)
        )
        parts.append((source, feats))
    note("recency")
    engine.create_table("fs_recency", _RECENCY_SQL)
    note("quota")
    engine.create_table("fs_quota_long", _quota_long_sql(every=not wanted))
    # Features whose optional table is absent are left empty (NaN), not zero.
    blank = {f.name for f in spec.features if f.requires and not dataset.has(f.requires)}
    frame = engine.df(_final_sql(parts, spec, blank))
    if wanted:
        engine.unregister("wanted_df")
    return _finish(frame, spec)


def _put(engine: Engine, name: str, frame: pd.DataFrame) -> None:
    """Materialize a small pandas frame as table `name` on the engine."""
    engine.register(f"{name}_df", frame)
    engine.create_table(name, f"SELECT * FROM {name}_df")
    engine.unregister(f"{name}_df")


# --- SQL ------------------------------------------------------------------------------------


def _state_sql(wanted_join: str) -> str:
    """`fs_state`: per as-of date and account, the latest subscription row before it."""
    expansion = ", ".join(f"'{k}'" for k in EXPANSION_KINDS)
    return f"""
    WITH hist AS (
        SELECT dt.as_of, dt.t, c.account_id, c.plan_id, c.tier, c.seats, c.mrr, c.status,
            c.effective_at,
            ROW_NUMBER() OVER acc_w AS rn,
            SUM(CASE WHEN c.change_kind IN ({expansion}) THEN 1 ELSE 0 END)
                OVER acc_all AS past_expansions,
            SUM(CASE WHEN c.change_kind IN ('downgrade', 'contraction') THEN 1 ELSE 0 END)
                OVER acc_all AS past_contractions,
            MAX(CASE WHEN c.change_kind IN ({expansion}) THEN c.effective_at END)
                OVER acc_all AS last_expansion_at
        FROM as_of_dates dt
        JOIN subscription_changes c ON c.effective_at < dt.as_of
        {wanted_join}
        WINDOW acc_w AS (PARTITION BY dt.as_of, c.account_id ORDER BY c.effective_at DESC),
               acc_all AS (PARTITION BY dt.as_of, c.account_id)
    )
    SELECT h.as_of, h.t, h.account_id, h.plan_id, CAST(h.tier AS DOUBLE) AS tier,
        CAST(h.seats AS DOUBLE) AS seats, h.mrr, h.status,
        CAST(h.past_expansions AS DOUBLE) AS past_expansions,
        CAST(h.past_contractions AS DOUBLE) AS past_contractions,
        CAST(h.t - DATE_DIFF('day', DATE '1970-01-01', CAST(h.last_expansion_at AS DATE))
             AS DOUBLE) AS days_since_last_expansion,
        CAST(h.t - DATE_DIFF('day', DATE '1970-01-01', CAST(acc.created_at AS DATE))
             AS DOUBLE) AS tenure_days,
        CAST(acc.segment AS VARCHAR) AS segment,
        CAST(acc.employees AS DOUBLE) AS employees,
        CAST(pf.plan_feature_count AS DOUBLE) AS plan_feature_count
    FROM hist h
    JOIN accounts acc ON acc.account_id = h.account_id
    LEFT JOIN plan_feature_counts pf ON pf.tier = h.tier
    WHERE h.rn = 1 AND h.status IN ('active', 'trialing')
    """


def _windowed_sql(source: str, feats: list[Feature], every: bool = False) -> str:
    """Per as-of date and group, the value summed over each window `feats` use (the window
    rule, `Window.sql`).

    With `every` account wanted, rows meet their as-of dates by an equi-join on the day with
    the small `as_of_days` table; the family's aggregate keeps the accounts in `fs_state`.
    Otherwise each row is matched to its own account's wanted dates first."""
    table, keys, value = WINDOWED[source]
    used = windows(tuple(feats))
    group = ", ".join(f"a.{k}" for k in keys)
    if table in BLOCK_TABLES:
        sums = ",\n        ".join(
            f"SUM(CAST(BIT_COUNT(a.m & dt.w_{w.name}) AS INTEGER)) AS n_{w.name}" for w in used
        )
        meet = _meet_blocks(used, every)
    else:
        days = max(w.start for w in used)
        sums = ",\n        ".join(
            f"SUM(CASE WHEN {w.sql('a.d')} THEN {value} ELSE 0 END) AS n_{w.name}" for w in used
        )
        meet = (
            f"JOIN as_of_days dt ON dt.d = a.d AND dt.d >= dt.t - {days}"
            if every
            else f"""JOIN fs_state s ON s.account_id = a.account_id
    JOIN as_of_dates dt ON dt.as_of = s.as_of AND a.d >= dt.t - {days} AND a.d < dt.t"""
        )
    sql = f"""
    SELECT dt.as_of, {group},
        {sums}
    FROM {table} a
    {meet}
    GROUP BY dt.as_of, {group}
    """
    if source not in WINDOWED_ATTRIBUTES:
        return sql
    attr_table, on, attrs = WINDOWED_ATTRIBUTES[source]
    join = " AND ".join(f"m.{k} = w.{k}" for k in on)
    return f"""
    SELECT w.*, {", ".join(f"m.{c}" for c in attrs)}
    FROM ({sql}) w
    JOIN {attr_table} m ON {join}
    """


def _meet_blocks(used: Iterable[Window], every: bool) -> str:
    """Join block rows `a` to the as-of block rows `dt` whose masks for windows `used` reach
    them: by the block alone when every account is wanted, else through the account's dates."""
    reach = " OR ".join(f"dt.w_{w.name} <> 0" for w in used)
    if every:
        return f"JOIN as_of_blocks dt ON dt.b = a.b AND ({reach})"
    return f"""JOIN fs_state s ON s.account_id = a.account_id
    JOIN as_of_blocks dt ON dt.as_of = s.as_of AND dt.b = a.b AND ({reach})"""


def _aggregate_sql(
    source: str, feats: list[Feature], every: bool = False, words: dict[str, int] | None = None
) -> str:
    """`fs_<source>`: the features of one source, one row per as-of date and account."""
    if source in WINDOWED:
        return _windowed_aggregate_sql(source, feats, words or {})
    table, (meet, detail) = SOURCES[source]
    exprs = ",\n        ".join(f"CAST({f.sql} AS DOUBLE) AS {f.name}" for f in feats)
    # With every account wanted and no feature with a condition (the only part that may read
    # the state row `s`), rows meet their dates without the state join; the final join keeps
    # fs_state's accounts.
    by_date = every and not any(f.where for f in feats)
    if meet == "blocks":
        key = "dt.as_of" if by_date else "s.as_of"
        return f"""
    SELECT {key} AS as_of, a.account_id,
        {exprs}
    FROM {table} a
    {_meet_blocks(windows(tuple(feats)), by_date)}
    GROUP BY {key}, a.account_id
    """
    reach = detail
    if meet == "day":  # rows within the longest window of the source's features
        column, days = detail, max(w.start for w in windows(tuple(feats)))
        if by_date:  # by the day alone (see `_windowed_sql`)
            return f"""
    SELECT dt.as_of, a.account_id,
        {exprs}
    FROM {table} a
    JOIN as_of_days dt ON dt.d = {column} AND dt.d >= dt.t - {days}
    GROUP BY dt.as_of, a.account_id
    """
        reach = f"{column} >= dt.t - {days} AND {column} < dt.t"
    return f"""
    SELECT s.as_of, s.account_id,
        {exprs}
    FROM {table} a
    JOIN as_of_dates dt ON {reach}
    JOIN fs_state s ON s.as_of = dt.as_of AND s.account_id = a.account_id
    GROUP BY s.as_of, s.account_id
    """


# Bits per word of a value set: 63, so a word's bits never reach the sign bit of a BIGINT.
WORD_BITS = 63


def _set_words(engine: Engine) -> dict[str, int]:
    """How many BIGINT words hold a set of each numbered value (`features.rollup.NUMBERED`)."""
    top = engine.df(f"SELECT {', '.join(f'MAX({v}_no) AS {v}' for v in NUMBERED)} FROM event_meta")
    return {v: 0 if pd.isna(top.at[0, v]) else int(top.at[0, v]) // WORD_BITS + 1 for v in NUMBERED}


def _windowed_aggregate_sql(source: str, feats: list[Feature], words: dict[str, int]) -> str:
    """Features over a pre-aggregated windowed source, one row per as-of date and account.

    A distinct count over events (kind `distinct`: `COUNT(DISTINCT CASE WHEN cond THEN
    a.<value> END)`) is the size of the set of values whose rows meet the condition. Read the
    SQL below as: each row adds its value to the set (`BIT_OR` of the bit `1 << <value>_no`,
    the value's number in `event_meta`), spread over `words[value]` BIGINT words of 63 values
    each; the count is the number of bits set (`BIT_COUNT`), summed over the words. The same
    number as the distinct count, in the one pass over the rows that the sums make."""
    inner, outer = [], []
    for f in feats:
        if not (f.kind == "distinct" and f.of in NUMBERED):
            inner.append(f"CAST({f.sql} AS DOUBLE) AS {f.name}")
            outer.append(f.name)
            continue
        assert f.window is not None  # a declaration of kind distinct has one
        name, cond = f.of, f"a.n_{f.window.name} > 0 AND {f.condition}"
        number = f"a.{name}_no"
        bits = []
        for k in range(words[name]):
            lo = k * WORD_BITS
            inner.append(
                f"BIT_OR(CASE WHEN {cond} AND {number} >= {lo} AND {number} < {lo + WORD_BITS} "
                f"THEN CAST(1 AS BIGINT) << ({number} - {lo}) ELSE 0 END) AS {f.name}__{k}"
            )
            bits.append(f"CAST(BIT_COUNT({f.name}__{k}) AS INTEGER)")
        outer.append(f"CAST({' + '.join(bits) or '0'} AS DOUBLE) AS {f.name}")
    return f"""
    SELECT as_of, account_id, {", ".join(outer)}
    FROM (
        SELECT s.as_of, s.account_id, {", ".join(inner)}
        FROM fs_win_{source} a
        JOIN fs_state s ON s.as_of = a.as_of AND s.account_id = a.account_id
        GROUP BY s.as_of, s.account_id
    ) sets
    """


def _highest_bit(x: str) -> str:
    """SQL for the highest set bit of a positive BIGINT `x`. LOG2 is a float (Spark divides two
    logarithms), so its floor is corrected by one either way against exact shifts."""
    h, one = f"CAST(FLOOR(LOG2({x})) AS INTEGER)", "CAST(1 AS BIGINT)"
    return (
        f"({h} + CASE WHEN {x} >= {one} << ({h} + 1) THEN 1 ELSE 0 END"
        f" - CASE WHEN {x} < {one} << {h} THEN 1 ELSE 0 END)"
    )


# Last active day before each as-of date, from the account's day masks. A block wholly before
# an as-of date falls in the bucket of the first such date, and its last day is carried forward
# over the (few) buckets; the block a date cuts adds its days before the date, which are later
# than any whole block's.
_CUT = f"(a.m & ((CAST(1 AS BIGINT) << CAST(m.t - {BLOCK_DAYS} * a.b AS INTEGER)) - 1))"
_RECENCY_SQL = f"""
WITH marks AS (
    SELECT as_of, t, ROW_NUMBER() OVER (ORDER BY t) AS i, LAG(t) OVER (ORDER BY t) AS t_prev
    FROM as_of_dates
),
whole AS (
    SELECT a.account_id, m.i, MAX(a.last_d) AS last_d
    FROM account_block a
    JOIN marks m ON {BLOCK_DAYS} * a.b + {BLOCK_DAYS} <= m.t
        AND (m.t_prev IS NULL OR {BLOCK_DAYS} * a.b + {BLOCK_DAYS} > m.t_prev)
    GROUP BY a.account_id, m.i
),
cut AS (
    SELECT m.as_of, a.account_id,
        {BLOCK_DAYS} * a.b + {_highest_bit(_CUT)} AS last_d
    FROM account_block a
    JOIN marks m ON a.b = CAST(FLOOR(m.t / {BLOCK_DAYS}) AS INTEGER)
    WHERE {_CUT} <> 0
),
carried AS (
    SELECT s.as_of, s.account_id, MAX(w.last_d) AS last_d
    FROM fs_state s
    JOIN marks m ON m.as_of = s.as_of
    LEFT JOIN whole w ON w.account_id = s.account_id AND w.i <= m.i
    GROUP BY s.as_of, s.account_id
)
SELECT c.as_of, c.account_id, COALESCE(x.last_d, c.last_d) AS last_event_day
FROM carried c
LEFT JOIN cut x ON x.as_of = c.as_of AND x.account_id = c.account_id
"""

# One row per as-of date, account and quota metric of its current plan. The current plan's
# limit is used for every window: pressure against today's limit is what an upsell relieves.
# `near` holds the quota rows within 90 days before each date (the windows below reach back to
# the start of the previous month, at most 62 days).
_QUOTA_NEAR_EVERY = """
    SELECT b.*, q.d, q.m, q.m_next, q.quantity
    FROM quota_day q
    JOIN as_of_days dt ON dt.d = q.d
    JOIN base b ON b.as_of = dt.as_of AND b.account_id = q.account_id AND b.metric = q.metric
"""
_QUOTA_NEAR_PAIRS = f"""
    SELECT b.*, q.d, q.m, q.m_next, q.quantity
    FROM base b
    JOIN quota_day q ON q.account_id = b.account_id AND q.metric = b.metric
        AND q.d >= b.t - {REACH} AND q.d < b.t
"""


def _quota_long_sql(every: bool) -> str:
    """`fs_quota_long`; with `every` account wanted, quota rows meet their dates by the day."""
    near = _QUOTA_NEAR_EVERY if every else _QUOTA_NEAR_PAIRS
    return f"""
WITH base AS (
    SELECT s.as_of, s.account_id, l.metric, l.monthly_limit AS lim,
        dt.t, dt.m0, dt.pm0, dt.dim, dt.elapsed
    FROM fs_state s
    JOIN as_of_dates dt ON dt.as_of = s.as_of
    JOIN plan_limits l ON l.plan_id = s.plan_id
),
near AS ({near}),
usage AS (
    SELECT as_of, account_id, metric,
        SUM(CASE WHEN {QUOTA_WINDOW.sql("d", "t")} THEN quantity ELSE 0 END) AS usage_30d,
        SUM(CASE WHEN d >= pm0 AND d < m0 THEN quantity ELSE 0 END) AS usage_last_month,
        SUM(CASE WHEN d >= m0 THEN quantity ELSE 0 END) AS usage_mtd
    FROM near
    WHERE d >= LEAST(t - {QUOTA_WINDOW.start}, pm0)
    GROUP BY as_of, account_id, metric
),
cum AS (
    SELECT q.as_of, q.account_id, q.metric, q.t, q.lim, q.m, q.m_next, q.d,
        SUM(q.quantity) OVER (
            PARTITION BY q.as_of, q.account_id, q.metric, q.m ORDER BY q.d
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cum
    FROM near q
    WHERE q.m_next > q.t - {QUOTA_WINDOW.start}
),
crossing AS (
    SELECT as_of, account_id, metric, m, MIN(m_next) AS m_next, MIN(t) AS t, MIN(d) AS cross_d
    FROM cum
    WHERE lim > 0 AND cum >= 0.85 * lim
    GROUP BY as_of, account_id, metric, m
),
above AS (
    SELECT as_of, account_id, metric,
        SUM(GREATEST(0, LEAST(m_next, t) - GREATEST(cross_d, t - {QUOTA_WINDOW.start})))
            AS days_above_85
    FROM crossing
    GROUP BY as_of, account_id, metric
)
SELECT b.as_of, b.account_id, b.metric,
    COALESCE(u.usage_30d, 0) / NULLIF(b.lim, 0) AS util_30d,
    COALESCE(u.usage_last_month, 0) / NULLIF(b.lim, 0) AS util_last_month,
    CASE WHEN b.elapsed > 0
        THEN COALESCE(u.usage_mtd, 0) / NULLIF(b.lim * b.elapsed / b.dim, 0) END AS util_mtd,
    CASE WHEN b.elapsed >= 7 THEN COALESCE(u.usage_mtd, 0) * b.dim / b.elapsed
        ELSE COALESCE(u.usage_30d, 0) * b.dim / {QUOTA_WINDOW.days}.0 END / NULLIF(b.lim, 0)
        AS projected_util,
    CAST(COALESCE(ab.days_above_85, 0) AS DOUBLE) AS days_above_85
FROM base b
LEFT JOIN usage u ON u.as_of = b.as_of AND u.account_id = b.account_id AND u.metric = b.metric
LEFT JOIN above ab
    ON ab.as_of = b.as_of AND ab.account_id = b.account_id AND ab.metric = b.metric
"""


# The cheapest paid plan's price (base + one seat); empty without prices in the price list.
_PRICE_FLOOR_SQL = """
SELECT MIN(COALESCE(base_mrr, 0) + COALESCE(seat_mrr, 0)) FROM plans
WHERE COALESCE(base_mrr, 0) + COALESCE(seat_mrr, 0) > 0
"""


def _quota_metric_columns(metrics: Iterable[str]) -> list[tuple[str, str]]:
    """(column, SQL over `fs_quota_long q`) of each per-metric quota feature: the long table
    pivoted by conditional aggregation, one column per metric slug and measure."""
    by_slug: dict[str, list[str]] = {}
    for metric in sorted(set(metrics)):
        by_slug.setdefault(metric_slug(metric), []).append(metric)
    out = []
    for slug, names in by_slug.items():
        values = ", ".join("'" + m.replace("'", "''") + "'" for m in names)
        out += [
            (f"quota_{c}__{slug}", f"MAX(CASE WHEN q.metric IN ({values}) THEN q.{c} END)")
            for c in QUOTA_METRIC_COLUMNS
        ]
    return out


def _final_sql(
    parts: list[tuple[str, list[Feature]]], spec: FeatureSpec, blank: set[str] = frozenset()
) -> str:
    """Join every family onto the state rows, compute the derived features, and return the
    keys and `spec`'s features in model order (those in `blank` empty)."""
    cols = [
        "s.as_of",
        "s.account_id",
        "s.t",
        "s.plan_feature_count",
        "r.last_event_day",
        f"({_PRICE_FLOOR_SQL}) AS price_floor",
    ]
    registry = spec.registry
    cols += [f"{f.sql} AS {f.name}" for f in registry if f.stage == "state" and f.model]
    joins = []
    for source, feats in parts:
        cols += [f"COALESCE(fs_{source}.{f.name}, 0) AS {f.name}" for f in feats]
        joins.append(
            f"LEFT JOIN fs_{source} ON fs_{source}.as_of = s.as_of "
            f"AND fs_{source}.account_id = s.account_id"
        )
    quota = [f for f in registry if f.stage == "quota"]
    per_metric = _quota_metric_columns(spec.metrics)
    quota_exprs = ", ".join(
        [f"CAST({f.sql} AS DOUBLE) AS {f.name}" for f in quota]
        + [f"CAST({sql} AS DOUBLE) AS {name}" for name, sql in per_metric]
    )
    cols += [f"qa.{f.name}" for f in quota] + [f"qa.{name}" for name, _ in per_metric]
    derived = ",\n    ".join(
        f"CAST({f.sql} AS DOUBLE) AS {f.name}" for f in registry if f.stage == "derived"
    )
    out = ", ".join(
        f"CAST(NULL AS DOUBLE) AS {name}" if name in blank else name for name in spec.names
    )
    return f"""
    WITH joined AS (
        SELECT {", ".join(cols)}
        FROM fs_state s
        LEFT JOIN fs_recency r ON r.as_of = s.as_of AND r.account_id = s.account_id
        {" ".join(joins)}
        LEFT JOIN (
            SELECT q.as_of, q.account_id, {quota_exprs}
            FROM fs_quota_long q GROUP BY q.as_of, q.account_id
        ) qa ON qa.as_of = s.as_of AND qa.account_id = s.account_id
    ),
    derived AS (
        SELECT *,
        {derived}
        FROM joined
    )
    SELECT as_of, account_id, {out}
    FROM derived
    ORDER BY as_of, account_id
    """


# --- pandas finishing -----------------------------------------------------------------------


def _finish(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Fix the dtypes in place: the query returned the columns in model order."""
    frame["as_of"] = frame["as_of"].astype("datetime64[us]")
    frame["account_id"] = frame["account_id"].astype(str)
    for f in spec.features:
        if f.dtype == "category":
            frame[f.name] = (
                frame[f.name].astype("string").astype(object).where(frame[f.name].notna(), None)
            )
        elif frame[f.name].dtype != "float64":  # most columns are already: no copy for them
            frame[f.name] = frame[f.name].astype("float64")
    return frame
