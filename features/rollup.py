"""Daily roll-ups: the one scan of the raw events per grain.

`ensure_rollups(dataset)` reads the clean events into compact tables that every feature reads
instead of the raw events:

- `activity_day`: account x day x event, with event count and quantity (lean: string keys are
  what make a hash aggregate slow, so the catalog's meaning is not copied onto every row);
- `user_day`: account x day x user (distinct active users over any window);
- `event_meta`: each event seen, with its catalog meaning (feature, workflow, power, min_tier,
  signal, quota_metric); a few rows, joined where a feature needs the meaning;
- `account_day`: account x day with any event (active days, recency);
- `quota_day`: account x day x quota metric, quantity toward the quota, with month bounds;
- `first_use`: account x feature, the day of first use;
- `subscription_changes` (see `features.derived`) and `plan_feature_counts`.

Day numbers `d` are days since 1970-01-01, so windows are integer arithmetic on any engine.
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

USER_DAY_SQL = f"""
SELECT account_id, {DAY_NUMBER.format(col='CAST("timestamp" AS DATE)')} AS d, user_id
FROM events
WHERE user_id IS NOT NULL
GROUP BY account_id, d, user_id
"""

EVENT_META_SQL = """
SELECT r.event, COALESCE(c.feature, r.event) AS feature, c.workflow,
    COALESCE(c.power, false) AS power, c.min_tier, c.signal, c.quota_metric
FROM (SELECT DISTINCT event FROM activity_day) r
LEFT JOIN event_catalog c ON c.event = r.event
"""

ACCOUNT_DAY_SQL = """
SELECT DISTINCT account_id, d FROM activity_day
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
    "user_day": USER_DAY_SQL,
    "event_meta": EVENT_META_SQL,
    "account_day": ACCOUNT_DAY_SQL,
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
