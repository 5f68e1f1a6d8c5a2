"""Daily roll-ups: the one scan of the raw events.

`ensure_rollups(dataset)` reads the clean events once (a GROUPING SETS query, so one scan
yields both grains) and materializes compact tables that every feature reads instead:

- `activity_day`: account x day x event, with the catalog's meaning of the event joined on
  (feature, workflow, power, min_tier, signal, quota_metric), event count and quantity;
- `user_day`: account x day x user (distinct active users over any window);
- `account_day`: account x day with any event (recency);
- `quota_day`: account x day x quota metric, quantity toward the quota, with month bounds;
- `event_meta`: each event seen, with its catalog meaning;
- `first_use`: account x feature, the day of first use;
- `subscription_changes` (see `features.derived`) and `plan_feature_counts`.

Day numbers `d` are days since 1970-01-01, so windows are integer arithmetic on any engine.
The statements are SELECTs that `features.engine` materializes on DuckDB or Spark.
"""

from __future__ import annotations

from features.dataset import Dataset
from features.derived import create_subscription_changes
from features.engine import Engine

_DAY = "CAST(DATE_DIFF('day', DATE '1970-01-01', {col}) AS INTEGER)"

ROLLUP_SQL = """
SELECT account_id, day, event, user_id, GROUPING(user_id) AS grain,
    COUNT(*) AS n_events, SUM(quantity) AS quantity
FROM (SELECT account_id, CAST("timestamp" AS DATE) AS day, event, user_id, quantity FROM events)
GROUP BY GROUPING SETS ((account_id, day, event), (account_id, day, user_id))
"""

ACTIVITY_DAY_SQL = f"""
SELECT r.account_id, {_DAY.format(col="r.day")} AS d, r.day, r.event,
    COALESCE(c.feature, r.event) AS feature, c.workflow, COALESCE(c.power, false) AS power,
    c.min_tier, c.signal, c.quota_metric, r.n_events, r.quantity
FROM _rollup r
LEFT JOIN event_catalog c ON c.event = r.event
WHERE r.grain = 1
"""

USER_DAY_SQL = f"""
SELECT account_id, {_DAY.format(col="day")} AS d, user_id
FROM _rollup
WHERE grain = 0 AND user_id IS NOT NULL
"""

ACCOUNT_DAY_SQL = """
SELECT DISTINCT account_id, d FROM activity_day
"""

QUOTA_DAY_SQL = f"""
SELECT account_id, d, quota_metric AS metric,
    {_DAY.format(col="DATE_TRUNC('month', day)")} AS m,
    {_DAY.format(col="DATE_TRUNC('month', day) + INTERVAL 1 MONTH")} AS m_next,
    SUM(quantity) AS quantity
FROM activity_day
WHERE quota_metric IS NOT NULL
GROUP BY account_id, d, quota_metric, day
"""

EVENT_META_SQL = """
SELECT DISTINCT event, feature, workflow, power, min_tier, signal FROM activity_day
"""

FIRST_USE_SQL = """
SELECT account_id, feature, MIN(d) AS first_d FROM activity_day GROUP BY account_id, feature
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
    "account_day": ACCOUNT_DAY_SQL,
    "quota_day": QUOTA_DAY_SQL,
    "event_meta": EVENT_META_SQL,
    "first_use": FIRST_USE_SQL,
    "plan_feature_counts": PLAN_FEATURE_COUNTS_SQL,
}


def ensure_rollups(dataset: Dataset) -> None:
    """Build the roll-up tables once per loaded dataset (later calls are free)."""
    build_rollups(dataset.engine)


def build_rollups(engine: Engine) -> None:
    """The roll-up tables on any engine (a no-op when they exist)."""
    if engine.table_exists("activity_day"):
        return
    create_subscription_changes(engine)
    # `grain` is GROUPING(user_id): 1 on the (account, day, event) rows, 0 on the user rows.
    engine.create_table("_rollup", ROLLUP_SQL)
    for name, sql in ROLLUPS.items():
        engine.create_table(name, sql)
        if name == "user_day":
            engine.drop("_rollup")
