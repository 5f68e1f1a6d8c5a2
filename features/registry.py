"""The feature registry: every model feature, in model order, with its SQL definition.

A feature is one small SQL expression named after the column it returns, grouped by business
family. `aggregate` expressions run over a family's source rows (one roll-up row joined to the
account's state at an as-of date; see `features.build`), `derived` ones over the columns of
earlier families. Per-quota features are generated from the dataset's own `plan_limits` metrics.

Column prefixes in aggregate SQL: `a` is a source row, `s` the account's state at the as-of
date, `dt` the as-of date row (`t` = its day number, `m0`/`pm0` this/previous month start;
for a block source, the as-of block row with a day mask `w_<window>` per window).
The windowed sources (activity, users) are pre-aggregated per as-of date with a count column
per window (`a.n_7d`, `a.n_30d`, `a.n_prev30d`, ...), so no feature repeats the window rule.
Direction: +1 when a higher value should mean a likelier expansion, -1 the opposite, 0 unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Stage = Literal["state", "aggregate", "derived", "quota"]
Dtype = Literal["float", "category"]

FEATURE_SET_VERSION = "1"


@dataclass(frozen=True)
class Feature:
    name: str
    family: str
    description: str
    sql: str
    stage: Stage = "aggregate"
    dtype: Dtype = "float"
    direction: int = 0
    source: str | None = None  # which roll-up an aggregate reads: activity, users, team, ...
    requires: str | None = None  # optional table without which the feature is left empty
    model: bool = True  # False for helper columns that derived features read
    # An age: grows by one a day on its own. Drift checks compare it shifted back by the days
    # between the training sample and the batch, or every later batch would look drifted.
    ages: bool = False
    # Days since the latest of a recurring event: reset by the next one, and never longer than
    # the history before the as-of date. Drift checks compare it within the look-back both the
    # training sample and the batch have (longer gaps count as "none in that time").
    since_last: bool = False
    # Where the as-of date falls in the calendar changes it on its own: "weekday" (daily
    # recency: weekends) or "month_day" (month-to-date windows). Drift checks compare it only
    # with a training sample taken on the same weekday / day of the month.
    calendar: str | None = None


# Windowed sources (activity, users) arrive pre-aggregated per as-of date with one count column
# per window, `a.n_<window>` (see features.build.WINDOWS), so features are plain sums.
def _window_sum(window: str, cond: str = "TRUE") -> str:
    return f"SUM(CASE WHEN {cond} THEN a.n_{window} ELSE 0 END)"


def _window_distinct(window: str, value: str, cond: str = "TRUE") -> str:
    return f"COUNT(DISTINCT CASE WHEN a.n_{window} > 0 AND {cond} THEN {value} END)"


_DISTINCT = re.compile(r"COUNT\(DISTINCT CASE WHEN (?P<cond>.+) THEN (?P<value>a\.\w+) END\)")


def distinct_parts(sql: str) -> tuple[str, str] | None:
    """(value, condition) of a distinct count written by `_window_distinct`, else None.

    The builder evaluates these counts as sets of value numbers held as bits (see
    `features.build._windowed_aggregate_sql`): the same number without a distinct hash table."""
    match = _DISTINCT.fullmatch(sql)
    return (match["value"], match["cond"]) if match else None


def _window_count(window: str) -> str:
    """Rows (users) with any activity in the window."""
    return f"SUM(CASE WHEN a.n_{window} > 0 THEN 1 ELSE 0 END)"


def _days_in(days: int) -> str:
    """Active days of the account within the last `days` (source `days`: day-mask blocks `a.m`,
    window masks `dt.w_<window>`)."""
    return f"SUM(CAST(BIT_COUNT(a.m & dt.w_{days}d) AS INTEGER))"


_IN_PLAN = "(a.min_tier IS NULL OR a.min_tier <= s.tier)"
_PREMIUM = "a.min_tier > s.tier"


def _act(name, description, sql, direction=0, source="activity"):
    return Feature(name, "activity", description, sql, direction=direction, source=source)


def _breadth(name, description, sql, direction=1, requires="event_catalog"):
    return Feature(
        name, "breadth", description, sql, direction=direction, source="activity", requires=requires
    )


def _intent(name, description, sql, direction=1):
    return Feature(
        name,
        "intent",
        description,
        sql,
        direction=direction,
        source="activity",
        requires="event_catalog",
    )


FEATURES: tuple[Feature, ...] = (
    # --- commercial: the account's contract at the as-of date -------------------------------
    Feature(
        "plan_tier",
        "commercial",
        "Tier of the current plan (higher costs more).",
        "s.tier",
        "state",
        direction=-1,
    ),
    Feature("mrr", "commercial", "Current monthly recurring revenue.", "s.mrr", "state"),
    Feature(
        "is_trialing",
        "commercial",
        "1 if the subscription is in trial.",
        "CASE WHEN s.status = 'trialing' THEN 1.0 ELSE 0.0 END",
        "state",
    ),
    Feature(
        "tenure_days",
        "commercial",
        "Days since the account was created.",
        "s.tenure_days",
        "state",
        ages=True,
    ),
    Feature(
        "days_since_last_expansion",
        "commercial",
        "Days since the last upgrade or expansion (empty if none).",
        "s.days_since_last_expansion",
        "state",
        since_last=True,
    ),
    Feature(
        "past_expansions",
        "commercial",
        "Upgrades and expansions before the as-of date.",
        "s.past_expansions",
        "state",
        direction=1,
    ),
    Feature(
        "past_contractions",
        "commercial",
        "Downgrades and contractions before the as-of date.",
        "s.past_contractions",
        "state",
        direction=-1,
    ),
    Feature(
        "segment",
        "commercial",
        "Account segment from the accounts table.",
        "s.segment",
        "state",
        dtype="category",
    ),
    Feature("employees", "commercial", "Company head count.", "s.employees", "state"),
    # --- team growth -------------------------------------------------------------------------
    Feature("seats", "team", "Seats bought on the current subscription.", "s.seats", "state"),
    Feature(
        "seats_in_use",
        "team",
        "Users created and not deactivated at the as-of date.",
        "SUM(CASE WHEN a.deactivated_at IS NULL OR a.deactivated_at >= dt.as_of THEN 1 ELSE 0 END)",
        source="team",
        direction=1,
    ),
    Feature(
        "users_added_30d",
        "team",
        "Users created in the last 30 days.",
        "SUM(CASE WHEN a.created_at >= dt.as_of_m30 THEN 1 ELSE 0 END)",
        source="team",
        direction=1,
    ),
    Feature(
        "users_added_90d",
        "team",
        "Users created in the last 90 days.",
        "SUM(CASE WHEN a.created_at >= dt.as_of_m90 THEN 1 ELSE 0 END)",
        source="team",
        direction=1,
    ),
    # --- activity ----------------------------------------------------------------------------
    _act("events_7d", "Events in the last 7 days.", _window_sum("7d")),
    _act("events_30d", "Events in the last 30 days.", _window_sum("30d")),
    _act("events_90d", "Events in the last 90 days.", _window_sum("90d")),
    _act("events_prev_30d", "Events 30 to 60 days ago.", _window_sum("prev30d")),
    _act("active_days_7d", "Days with any event in the last 7 days.", _days_in(7), source="days"),
    _act(
        "active_days_30d",
        "Days with any event in the last 30 days.",
        _days_in(30),
        direction=1,
        source="days",
    ),
    _act(
        "active_days_90d",
        "Days with any event in the last 90 days.",
        _days_in(90),
        direction=1,
        source="days",
    ),
    Feature(
        "active_users_7d",
        "activity",
        "Distinct users with events in the last 7 days.",
        _window_count("7d"),
        source="users",
        direction=1,
    ),
    Feature(
        "active_users_30d",
        "activity",
        "Distinct users with events in the last 30 days.",
        _window_count("30d"),
        source="users",
        direction=1,
    ),
    Feature(
        "active_users_prev_30d",
        "activity",
        "Distinct users active 30 to 60 days ago.",
        _window_count("prev30d"),
        source="users",
    ),
    Feature(
        "user_days_30d",
        "activity",
        "Sum over the last 30 days of daily active users.",
        _window_sum("30d"),
        source="users",
    ),
    Feature(
        "last_event_day",
        "activity",
        "Day number of the last event before the as-of date.",
        "last_event_day",
        "state",
        model=False,
    ),
    # --- breadth and depth -------------------------------------------------------------------
    _breadth(
        "distinct_features_30d",
        "Product features used in the last 30 days.",
        _window_distinct("30d", "a.feature"),
        requires=None,
    ),
    _breadth(
        "distinct_features_90d",
        "Product features used in the last 90 days.",
        _window_distinct("90d", "a.feature"),
        requires=None,
    ),
    _breadth(
        "distinct_features_prev_30d",
        "Product features used 30 to 60 days ago.",
        _window_distinct("prev30d", "a.feature"),
        direction=0,
        requires=None,
    ),
    _breadth(
        "distinct_workflows_30d",
        "Workflows touched in the last 30 days.",
        _window_distinct("30d", "a.workflow"),
    ),
    _breadth(
        "distinct_workflows_90d",
        "Workflows touched in the last 90 days.",
        _window_distinct("90d", "a.workflow"),
    ),
    _breadth(
        "plan_features_used_30d",
        "Features of the current plan used in the last 30 days.",
        _window_distinct("30d", "a.feature", _IN_PLAN),
    ),
    _breadth(
        "power_events_14d",
        "Power-feature activations in the last 14 days.",
        _window_sum("14d", cond="a.power"),
    ),
    _breadth(
        "power_events_30d",
        "Power-feature activations in the last 30 days.",
        _window_sum("30d", cond="a.power"),
    ),
    _breadth(
        "distinct_power_features_14d",
        "Distinct power features used in the last 14 days.",
        _window_distinct("14d", "a.feature", "a.power"),
    ),
    _breadth(
        "distinct_power_features_30d",
        "Distinct power features used in the last 30 days.",
        _window_distinct("30d", "a.feature", "a.power"),
    ),
    _breadth(
        "premium_trial_events_30d",
        "Events of features above the current tier (trials) in the last 30 days.",
        _window_sum("30d", cond=_PREMIUM),
    ),
    _breadth(
        "premium_trial_features_30d",
        "Distinct features above the current tier used in the last 30 days.",
        _window_distinct("30d", "a.feature", _PREMIUM),
    ),
    _breadth(
        "paywall_hits_30d",
        "Paywall signals in the last 30 days.",
        _window_sum("30d", cond="a.signal = 'paywall'"),
    ),
    Feature(
        "new_features_30d",
        "breadth",
        "Features used for the first time in the last 30 days.",
        "COUNT(DISTINCT a.feature)",
        source="first_use",
        direction=1,
    ),
    # --- intent ------------------------------------------------------------------------------
    _intent(
        "pricing_page_visits_7d",
        "Pricing-page visits in the last 7 days.",
        _window_sum("7d", cond="a.signal = 'pricing_page'"),
    ),
    _intent(
        "pricing_page_visits_30d",
        "Pricing-page visits in the last 30 days.",
        _window_sum("30d", cond="a.signal = 'pricing_page'"),
    ),
    _intent(
        "invites_30d",
        "Invitation signals in the last 30 days.",
        _window_sum("30d", cond="a.signal = 'invite'"),
    ),
    _intent(
        "support_signals_30d",
        "Support signals in the last 30 days.",
        _window_sum("30d", cond="a.signal = 'support'"),
        direction=0,
    ),
    _intent(
        "exports_30d",
        "Export signals in the last 30 days.",
        _window_sum("30d", cond="a.signal = 'export'"),
        direction=0,
    ),
    # --- quota pressure (across the dataset's quota metrics) ---------------------------------
    Feature(
        "quota_util_max",
        "quota",
        "Highest utilization of any quota, trailing 30 days or last full month.",
        "MAX(GREATEST(COALESCE(q.util_30d, 0), COALESCE(q.util_last_month, 0)))",
        "quota",
        direction=1,
    ),
    Feature(
        "quota_util_last_month_max",
        "quota",
        "Highest utilization of any quota in the last full calendar month.",
        "MAX(q.util_last_month)",
        "quota",
        direction=1,
    ),
    Feature(
        "quota_projected_util_max",
        "quota",
        "Highest projected month-end utilization of any quota.",
        "MAX(q.projected_util)",
        "quota",
        direction=1,
        calendar="month_day",
    ),
    Feature(
        "quota_days_above_85",
        "quota",
        "Days in the last 30 with month-to-date use at or above 85% of a quota.",
        "MAX(q.days_above_85)",
        "quota",
        direction=1,
        calendar="month_day",
    ),
    Feature(
        "quotas_above_85",
        "quota",
        "Quotas at or above 85% (trailing 30 days or last full month).",
        "SUM(CASE WHEN GREATEST(COALESCE(q.util_30d, 0), COALESCE(q.util_last_month, 0))"
        " >= 0.85 THEN 1 ELSE 0 END)",
        "quota",
        direction=1,
    ),
    # --- derived: ratios, trends, recency, RFM ----------------------------------------------
    Feature(
        "seat_utilization",
        "team",
        "Seats in use divided by seats bought.",
        "seats_in_use / NULLIF(seats, 0)",
        "derived",
        direction=1,
    ),
    Feature(
        "stickiness_30d",
        "activity",
        "Average daily active users over monthly active users (DAU/MAU), 30 days.",
        "user_days_30d / 30.0 / NULLIF(active_users_30d, 0)",
        "derived",
        direction=1,
    ),
    Feature(
        "days_since_last_event",
        "activity",
        "Days since the last event (empty if none).",
        "t - last_event_day",
        "derived",
        direction=-1,
        since_last=True,
        calendar="weekday",
    ),
    Feature(
        "plan_feature_share_30d",
        "breadth",
        "Share of the current plan's features used in the last 30 days.",
        "plan_features_used_30d / NULLIF(plan_feature_count, 0)",
        "derived",
        direction=1,
    ),
    Feature(
        "events_trend_30d",
        "trend",
        "Events, last 30 days over the 30 before (+1 smoothed).",
        "(events_30d + 1.0) / (events_prev_30d + 1.0)",
        "derived",
    ),
    Feature(
        "active_users_trend_30d",
        "trend",
        "Active users, last 30 days over the 30 before (+1 smoothed).",
        "(active_users_30d + 1.0) / (active_users_prev_30d + 1.0)",
        "derived",
        direction=1,
    ),
    Feature(
        "breadth_trend_30d",
        "trend",
        "Features used, last 30 days over the 30 before (+1 smoothed).",
        "(distinct_features_30d + 1.0) / (distinct_features_prev_30d + 1.0)",
        "derived",
        direction=1,
    ),
    # RFM uses fixed bins, not ranks among accounts, so one account's score never depends on
    # which other accounts are scored with it (API, batch and training agree).
    Feature(
        "rfm_recency_score",
        "rfm",
        "Recency score 1-5: last event within 1 / 7 / 30 / 90 days, or older.",
        "CASE WHEN t - last_event_day <= 1 THEN 5 WHEN t - last_event_day <= 7 THEN 4 "
        "WHEN t - last_event_day <= 30 THEN 3 WHEN t - last_event_day <= 90 THEN 2 ELSE 1 END",
        "derived",
        direction=1,
        calendar="weekday",
    ),
    Feature(
        "rfm_frequency_score",
        "rfm",
        "Frequency score 1-5: active days in 90 of at least 45 / 20 / 8 / 1, or none.",
        "CASE WHEN active_days_90d >= 45 THEN 5 WHEN active_days_90d >= 20 THEN 4 "
        "WHEN active_days_90d >= 8 THEN 3 WHEN active_days_90d >= 1 THEN 2 ELSE 1 END",
        "derived",
        direction=1,
    ),
    Feature(
        "rfm_monetary_score",
        "rfm",
        "Monetary score 1-5: mrr at 1x / 2x / 4x / 8x / 16x the cheapest paid plan.",
        "LEAST(5, GREATEST(1, 1 + FLOOR(LOG2(GREATEST(mrr, 1e-9) / price_floor))))",
        "derived",
    ),
)

# Columns a per-metric quota feature is made from (the long-form quota table of features.build).
QUOTA_METRIC_COLUMNS = {
    "util_30d": "Utilization of the {metric} quota over the trailing 30 days.",
    "util_last_month": "Utilization of the {metric} quota in the last full calendar month.",
    "util_mtd": "Month-to-date utilization of the {metric} quota, pro-rated (empty on day 1).",
    "projected_util": "Projected month-end utilization of the {metric} quota.",
    "days_above_85": "Days in the last 30 at or above 85% of the {metric} quota.",
}
# Those that read the month so far (its usage restarts on the 1st): see `Feature.calendar`.
MONTH_DAY_COLUMNS = ("util_mtd", "projected_util", "days_above_85")


def metric_slug(metric: str) -> str:
    """A column-safe name for a quota metric from the dataset."""
    return re.sub(r"[^a-z0-9]+", "_", metric.lower()).strip("_") or "metric"


def quota_metric_features(metrics: list[str]) -> tuple[Feature, ...]:
    """Per-metric quota features for the dataset's metrics (sorted, so order is stable)."""
    out = []
    for metric in sorted(set(metrics)):
        for column, text in QUOTA_METRIC_COLUMNS.items():
            out.append(
                Feature(
                    f"quota_{column}__{metric_slug(metric)}",
                    "quota",
                    text.format(metric=metric),
                    column,
                    "quota",
                    direction=1,
                    source="quota_metric",
                    requires="plan_limits",
                    calendar="month_day" if column in MONTH_DAY_COLUMNS else None,
                )
            )
    return tuple(out)


def feature_list(metrics: list[str]) -> tuple[Feature, ...]:
    """All model features for a dataset with these quota metrics, in model order."""
    return tuple(f for f in FEATURES + quota_metric_features(metrics) if f.model)


def feature_names(metrics: list[str]) -> list[str]:
    return [f.name for f in feature_list(metrics)]


CATEGORICAL = tuple(f.name for f in FEATURES if f.dtype == "category")
