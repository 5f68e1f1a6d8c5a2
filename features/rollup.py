"""Daily roll-ups: the one scan of the raw events per grain.

`ensure_rollups(dataset)` reads the clean events into compact tables that every feature reads
instead of the raw events:

- `activity_day`: account x day x event, with event count and quantity (lean: string keys are
  what make a hash aggregate slow, so the catalog's meaning is not copied onto every row);
- `user_block`: account x user x 32-day block, the user's active days as the bits of a mask
  (distinct active users and user-days over any window; a fifth of the rows of a
  user x day table, and as exact);
- `event_meta`: each event seen, with its catalog meaning (feature, workflow, power, min_tier,
  signal, quota_metric) and a number for each feature and workflow; a few rows, joined where
  a feature needs the meaning;
- `account_block`: account x 32-day block, days with any event as a mask, and the last one
  (active days, recency);
- `quota_day`: account x day x quota metric, quantity toward the quota, with month bounds;
- `first_use`: account x feature, the day of first use;
- `subscription_changes` (see `features.derived`) and `plan_feature_counts`.

Day numbers `d` are days since 1970-01-01, so windows are integer arithmetic on any engine.
Day `d` is bit `d - 32 * b` of block `b = FLOOR(d / 32)`; a window is then a mask per block
(`features.build.as_of_blocks_frame`) and its active days a bit count.
The statements are SELECTs that `features.engine` materializes on DuckDB or Spark.
"""

from __future__ import annotations

from features.dataset import Dataset
from features.derived import create_subscription_changes
from features.engine import Engine

# The day number of a DATE expression `{col}`: days since 1970-01-01, an INTEGER.
DAY_NUMBER = "CAST(DATE_DIFF('day', DATE '1970-01-01', {col}) AS INTEGER)"

ACTIVITY_DAY_SQL = f"""
SELECT account_id, {DAY_NUMBER.format(col='CAST("timestamp" AS DATE)')} AS d, event,
    COUNT(*) AS n_events, SUM(quantity) AS quantity
FROM events
GROUP BY account_id, d, event
"""

# Days per block; masks are BIGINT, so a block's bits (0-31) never reach the sign bit.
BLOCK_DAYS = 32
BLOCK_TABLES = ("user_block", "account_block")
_BLOCK = f"CAST(FLOOR(d / {BLOCK_DAYS}) AS INTEGER)"
_BIT = f"CAST(1 AS BIGINT) << CAST(d - {BLOCK_DAYS} * b AS INTEGER)"

USER_BLOCK_SQL = f"""
SELECT account_id, user_id, b, BIT_OR({_BIT}) AS m
FROM (
    SELECT account_id, user_id, d, {_BLOCK} AS b
    FROM (
        SELECT account_id, user_id,
            {DAY_NUMBER.format(col='CAST("timestamp" AS DATE)')} AS d
        FROM events
        WHERE user_id IS NOT NULL
    ) e
) e
GROUP BY account_id, user_id, b
"""

# Values that distinct counts count, numbered 0.. in `event_meta` as `<value>_no` so a set of
# them is the bits of a few BIGINT words (`features.build`).
NUMBERED = ("feature", "workflow")
EVENT_META_SQL = f"""
SELECT *, {
    ", ".join(
        f"CASE WHEN {v} IS NOT NULL THEN CAST(DENSE_RANK() OVER (ORDER BY {v}) - 1 AS INTEGER) END"
        f" AS {v}_no"
        for v in NUMBERED
    )
}
FROM (
    SELECT r.event, COALESCE(c.feature, r.event) AS feature, c.workflow,
        COALESCE(c.power, false) AS power, c.min_tier, c.signal, c.quota_metric
    FROM (SELECT DISTINCT event FROM activity_day) r
    LEFT JOIN event_catalog c ON c.event = r.event
) m
"""

ACCOUNT_BLOCK_SQL = f"""
SELECT account_id, b, BIT_OR({_BIT}) AS m, MAX(d) AS last_d
FROM (SELECT account_id, d, {_BLOCK} AS b FROM activity_day) a
GROUP BY account_id, b
"""

QUOTA_DAY_SQL = f"""
SELECT account_id, d, metric,
    {DAY_NUMBER.format(col="DATE_TRUNC('month', day)")} AS m,
    {DAY_NUMBER.format(col="DATE_TRUNC('month', day) + INTERVAL 1 MONTH")} AS m_next,
    quantity
FROM (
    SELECT a.account_id, a.d, m.quota_metric AS metric, SUM(a.quantity) AS quantity,
        DATE '1970-01-01' + a.d AS day
    FROM activity_day a
    JOIN event_meta m ON m.event = a.event
    WHERE m.quota_metric IS NOT NULL
    GROUP BY a.account_id, a.d, m.quota_metric
)
"""

FIRST_USE_SQL = """
SELECT a.account_id, m.feature, MIN(a.d) AS first_d
FROM activity_day a
JOIN event_meta m ON m.event = a.event
GROUP BY a.account_id, m.feature
"""

PLAN_FEATURE_COUNTS_SQL = """
SELECT p.tier, COUNT(DISTINCT c.feature) AS plan_feature_count
FROM (SELECT DISTINCT tier FROM plans) p
JOIN event_catalog c ON c.min_tier IS NULL OR c.min_tier <= p.tier
GROUP BY p.tier
"""


# Name -> SELECT, in build order (each may read the ones before it).
ROLLUPS = {
    "activity_day": ACTIVITY_DAY_SQL,
    "user_block": USER_BLOCK_SQL,
    "event_meta": EVENT_META_SQL,
    "account_block": ACCOUNT_BLOCK_SQL,
    "quota_day": QUOTA_DAY_SQL,
    "first_use": FIRST_USE_SQL,
    "plan_feature_counts": PLAN_FEATURE_COUNTS_SQL,
}


def ensure_rollups(dataset: Dataset) -> None:
    """Build the roll-up tables once per loaded dataset (later calls are free)."""
    build_rollups(dataset.engine)


def build_rollups(engine: Engine) -> None:
    """The roll-up tables on any engine (a no-op when they exist)."""
    if engine.table_exists(list(ROLLUPS)[-1]):  # the last one built: all are there
        return
    create_subscription_changes(engine)
    for name, sql in ROLLUPS.items():
        engine.create_table(name, sql)
