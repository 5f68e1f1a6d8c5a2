"""The feature registry: every model feature, declared once, in model order.

A feature is one `Feature(...)` declaration with keyword arguments that say what it means:
its business `family`, a `description`, the `label` people read in explanations and the text
shown when its value is `missing`, the `source` it is computed from, the aggregation `kind`,
the `window` of days it looks back over (a `Window`; the window rule lives in `Window.sql`),
and, for some kinds, what is counted (`of`) and which rows count (`where`).

Kinds, by source:

- `source="account"`, `kind="state"`: a column of the account's state at the as-of date
  (`value`, SQL over `s`, the latest subscription row and the account).
- `source="events"`: `count` (events), `distinct` (distinct `of` values: feature, workflow or
  user), `active_days` (days with an event; `of="user"`: user-days), `new` (`of` values used
  for the first time in the window) and `last_day` (day number of the last event).
- `source="users"`: `count` of the account's users created before the as-of date.
- `source="quotas"`: `max` of a `value` or `count` of the quota metrics where `where` holds,
  over the quota metrics of the current plan; `per_quota`: one column per metric.
- `source="features"`: `ratio` (`numerator / denominator`, or both +1 with `smoothed`) and
  `formula` (`value`, SQL over other features' columns), computed after everything else.

`where` and `value` are small SQL conditions in DuckDB's dialect over `a` (an event, with its
catalog meaning `feature`, `workflow`, `power`, `min_tier`, `signal`; or a user row), `s` (the
account's state: `tier`, `seats`, ...) and `dt` (the as-of date: `as_of`, day number `t`).
Nothing else is written by hand: `features.build` generates the fast SQL from the kind (and
picks its fast paths from it), `features.reference` the plain analyst's SQL that tests and the
benchmark compare it with. Per-quota features are generated from the dataset's `plan_limits`.
Direction: +1 when a higher value should mean a likelier expansion, -1 the opposite, 0 unknown.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Literal

from features.rollup import DAY_NUMBER

Kind = Literal[
    "state",
    "count",
    "distinct",
    "active_days",
    "new",
    "last_day",
    "max",
    "per_quota",
    "ratio",
    "formula",
]
Source = Literal["account", "events", "users", "quotas", "features"]
Dtype = Literal["float", "category"]
Stage = Literal["state", "aggregate", "derived", "quota"]

# Bump by hand when a feature's definition changes (a model trained on the old definitions is
# then refused by `serving.registry.check_feature_contract`, not scored with wrong inputs).
# `tests/test_registry.py` compares `definitions_fingerprint()` with DEFINITIONS_FINGERPRINT,
# so a changed definition fails the tests until both are updated: the bump cannot be forgotten.
# It is not derived from the hash itself, so that models trained before it was recorded
# (version "1") stay valid while the definitions are the same.
FEATURE_SET_VERSION = "1"
DEFINITIONS_FINGERPRINT = "738a3431db2ddd28"


@dataclass(frozen=True, order=True)
class Window:
    """The days a feature looks back over: `as_of - (offset + days) <= day < as_of - offset`.

    `Window(30)` is the 30 days before the as-of date (never the as-of day itself, so nothing
    at or after the as-of instant is read); `Window(30, offset=30)` the 30 days before those.
    Days are day numbers (days since 1970-01-01, `features.rollup.DAY_NUMBER`); an event counts
    on the UTC day of its timestamp, and as-of dates are midnights, so this is the same as
    comparing timestamps: `as_of - 30 days <= timestamp < as_of`.
    """

    days: int
    offset: int = 0

    def __post_init__(self) -> None:
        if self.days < 1 or self.offset < 0:
            raise ValueError(f"a window needs days >= 1 and offset >= 0, not {self}")

    @property
    def start(self) -> int:
        """Days before the as-of date of the first day in the window."""
        return self.offset + self.days

    @property
    def end(self) -> int:
        """Days before the as-of date of the first day after the window."""
        return self.offset

    @property
    def name(self) -> str:
        """`30d`, `prev30d` (the 30 days before the last 30), `30d_ending_7d_ago`."""
        if not self.offset:
            return f"{self.days}d"
        if self.offset == self.days:
            return f"prev{self.days}d"
        return f"{self.days}d_ending_{self.offset}d_ago"

    def sql(self, day: str, t: str = "dt.t") -> str:
        """The window rule in SQL: day number `day` is inside the window of as-of day `t`."""
        return f"{day} >= {t} - {self.start} AND {day} < {t} - {self.end}"

    def contains(self, day: int, t: int) -> bool:
        """The window rule in Python (the same as `sql`)."""
        return t - self.start <= day < t - self.end


@dataclass(frozen=True, kw_only=True)
class Feature:
    """One feature: what it means, in keyword arguments (see the module docstring)."""

    name: str
    family: str
    description: str
    label: str
    kind: Kind
    source: Source
    window: Window | None = None
    of: str | None = None  # what `distinct`, `active_days` and `new` count: feature, user, ...
    where: str | None = None  # which rows count (SQL condition); None: all of them
    value: str | None = None  # SQL of `state`, `max`, `per_quota` and `formula`
    numerator: str | None = None  # `ratio`: feature names
    denominator: str | None = None
    smoothed: bool = False  # `ratio`: (numerator + 1) / (denominator + 1)
    missing: str | None = None  # what an empty value means, as people read it
    dtype: Dtype = "float"
    direction: int = 0
    requires: str | None = None  # optional table without which the feature is left empty
    model: bool = True  # False for helper columns that other features read
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

    def __post_init__(self) -> None:
        problem = _declaration_problem(self)
        if problem:
            raise ValueError(f"feature {self.name!r}: {problem}")

    # --- what the builder makes of the declaration (features.build) -------------------------

    @property
    def stage(self) -> Stage:
        """When the builder computes it: from the state row, an aggregate over a roll-up, the
        quota table, or from other features at the end."""
        if self.source == "features":
            return "derived"
        if self.source == "quotas":
            return "quota"
        if self.kind in ("state", "last_day"):
            return "state"
        return "aggregate"

    @property
    def rollup(self) -> str | None:
        """The pre-aggregated table an aggregate reads (`features.build.SOURCES`)."""
        if self.stage != "aggregate":
            return None
        if self.source == "users":
            return "team"
        if self.kind == "new":
            return "first_use"
        if self.kind == "active_days" and self.of == "account":
            return "days"
        if self.of == "user":
            return "users"
        return "activity"

    @property
    def condition(self) -> str:
        """`where` as a parenthesized SQL condition (TRUE when every row counts)."""
        return f"({self.where})" if self.where else "TRUE"

    @property
    def sql(self) -> str:
        """The builder's SQL expression (DuckDB dialect; `features.engine` writes it for Spark).

        Distinct counts over the activity roll-up are not this expression but bit sets
        (`features.build._windowed_aggregate_sql`); this is their plain form."""
        return _builder_sql(self)


# What each source allows: its kinds; per kind, what `of` may name.
KINDS: dict[str, tuple[str, ...]] = {
    "account": ("state",),
    "events": ("count", "distinct", "active_days", "new", "last_day"),
    "users": ("count",),
    "quotas": ("max", "count", "per_quota"),
    "features": ("ratio", "formula"),
}
OF: dict[str, tuple[str, ...]] = {
    "distinct": ("feature", "workflow", "user"),
    "active_days": ("account", "user"),
    "new": ("feature",),
    "last_day": ("account",),
}
# The day a users row counts on for a window: the day the user was created.
USER_CREATED_DAY = DAY_NUMBER.format(col="CAST(a.created_at AS DATE)")


def _declaration_problem(f: Feature) -> str | None:
    """Why a declaration cannot be built, or None."""
    if f.kind not in KINDS.get(f.source, ()):
        return f"kind {f.kind!r} is not one of {KINDS.get(f.source)} (source {f.source!r})"
    if f.kind in OF and f.of not in OF[f.kind]:
        return f"kind {f.kind!r} counts one of {OF[f.kind]} (of=), not {f.of!r}"
    if f.kind not in OF and f.of is not None:
        return f"of= is for kinds {tuple(OF)}"
    windowed = f.source == "events" and f.kind != "last_day"
    if windowed and f.window is None:
        return f"kind {f.kind!r} over events needs a window"
    if f.window is not None and not (windowed or f.source == "users"):
        return "only event and user features have a window"
    if f.kind in ("state", "max", "per_quota", "formula") and not f.value:
        return f"kind {f.kind!r} needs value="
    if f.kind == "ratio" and not (f.numerator and f.denominator):
        return "kind 'ratio' needs numerator= and denominator="
    if f.where and (f.kind in ("active_days", "new", "last_day") or f.of == "user"):
        # Those roll-ups keep no event meaning to test a condition on.
        return f"where= is not supported for kind {f.kind!r} of {f.of!r}"
    if f.source == "quotas" and f.kind == "count" and not f.where:
        return "a count over quotas needs where="
    return None


def _builder_sql(f: Feature) -> str:
    """The builder's expression for one declaration (see `Feature.sql`)."""
    cond = f.condition
    if f.kind in ("state", "per_quota", "formula"):
        return f.value or ""
    if f.kind == "last_day":
        return "last_event_day"  # features.build._RECENCY_SQL
    if f.kind == "max":
        return f"MAX({f.value})"
    if f.kind == "ratio":
        if f.smoothed:
            return f"({f.numerator} + 1.0) / ({f.denominator} + 1.0)"
        return f"{f.numerator} / NULLIF({f.denominator}, 0)"
    if f.source == "quotas":  # count
        return f"SUM(CASE WHEN {cond} THEN 1 ELSE 0 END)"
    if f.source == "users":  # count
        conds = [c for c in (f.where, f.window and f.window.sql(USER_CREATED_DAY)) if c]
        test = " AND ".join(f"({c})" for c in conds) if len(conds) > 1 else (conds or ["TRUE"])[0]
        return f"SUM(CASE WHEN {test} THEN 1 ELSE 0 END)"
    assert f.window is not None
    # Event sources arrive with one count column per window, `a.n_<window>` (events, or a
    # user's active days), see features.build.WINDOWED; block rows carry day masks instead.
    n = f"a.n_{f.window.name}"
    if f.rollup == "days":
        return f"SUM(CAST(BIT_COUNT(a.m & dt.w_{f.window.name}) AS INTEGER))"
    if f.rollup == "first_use":
        return f"COUNT(DISTINCT CASE WHEN {f.window.sql('a.first_d')} THEN a.{f.of} END)"
    if f.rollup == "users":
        if f.kind == "distinct":  # one row per user: users with any active day
            return f"SUM(CASE WHEN {n} > 0 THEN 1 ELSE 0 END)"
        return f"SUM({n})"  # user-days
    if f.kind == "distinct":
        return f"COUNT(DISTINCT CASE WHEN {n} > 0 AND {cond} THEN a.{f.of} END)"
    return f"SUM(CASE WHEN {cond} THEN {n} ELSE 0 END)"  # count of events


# --- the declarations -------------------------------------------------------------------------

W7, W14, W30, W90 = Window(7), Window(14), Window(30), Window(90)
PREV30 = Window(30, offset=30)  # 30 to 60 days ago

IN_PLAN = "a.min_tier IS NULL OR a.min_tier <= s.tier"  # a feature the current plan includes
PREMIUM = "a.min_tier > s.tier"  # a feature of a higher tier than the current plan's
QUOTA_PRESSURE = "GREATEST(COALESCE(q.util_30d, 0), COALESCE(q.util_last_month, 0))"

FEATURES: tuple[Feature, ...] = (
    # --- commercial: the account's contract at the as-of date -------------------------------
    Feature(
        name="plan_tier",
        family="commercial",
        description="Tier of the current plan (higher costs more).",
        label="Plan tier",
        kind="state",
        source="account",
        value="s.tier",
        direction=-1,
    ),
    Feature(
        name="mrr",
        family="commercial",
        description="Current monthly recurring revenue.",
        label="MRR",
        kind="state",
        source="account",
        value="s.mrr",
    ),
    Feature(
        name="is_trialing",
        family="commercial",
        description="1 if the subscription is in trial.",
        label="Is trialing",
        kind="state",
        source="account",
        value="CASE WHEN s.status = 'trialing' THEN 1.0 ELSE 0.0 END",
    ),
    Feature(
        name="tenure_days",
        family="commercial",
        description="Days since the account was created.",
        label="Tenure days",
        kind="state",
        source="account",
        value="s.tenure_days",
        ages=True,
    ),
    Feature(
        name="days_since_last_expansion",
        family="commercial",
        description="Days since the last upgrade or expansion (empty if none).",
        label="Days since last expansion",
        missing="Never expanded",
        kind="state",
        source="account",
        value="s.days_since_last_expansion",
        since_last=True,
    ),
    Feature(
        name="past_expansions",
        family="commercial",
        description="Upgrades and expansions before the as-of date.",
        label="Past expansions",
        kind="state",
        source="account",
        value="s.past_expansions",
        direction=1,
    ),
    Feature(
        name="past_contractions",
        family="commercial",
        description="Downgrades and contractions before the as-of date.",
        label="Past contractions",
        kind="state",
        source="account",
        value="s.past_contractions",
        direction=-1,
    ),
    Feature(
        name="segment",
        family="commercial",
        description="Account segment from the accounts table.",
        label="Segment",
        kind="state",
        source="account",
        value="s.segment",
        dtype="category",
    ),
    Feature(
        name="employees",
        family="commercial",
        description="Company head count.",
        label="Employees",
        kind="state",
        source="account",
        value="s.employees",
    ),
    # --- team growth -------------------------------------------------------------------------
    Feature(
        name="seats",
        family="team",
        description="Seats bought on the current subscription.",
        label="Seats",
        kind="state",
        source="account",
        value="s.seats",
    ),
    Feature(
        name="seats_in_use",
        family="team",
        description="Users created and not deactivated at the as-of date.",
        label="Seats in use",
        kind="count",
        source="users",
        where="a.deactivated_at IS NULL OR a.deactivated_at >= dt.as_of",
        direction=1,
    ),
    Feature(
        name="users_added_30d",
        family="team",
        description="Users created in the last 30 days.",
        label="Users added in 30 days",
        kind="count",
        source="users",
        window=W30,
        direction=1,
    ),
    Feature(
        name="users_added_90d",
        family="team",
        description="Users created in the last 90 days.",
        label="Users added (90 days)",
        kind="count",
        source="users",
        window=W90,
        direction=1,
    ),
    # --- activity ----------------------------------------------------------------------------
    Feature(
        name="events_7d",
        family="activity",
        description="Events in the last 7 days.",
        label="Events (7 days)",
        kind="count",
        source="events",
        window=W7,
    ),
    Feature(
        name="events_30d",
        family="activity",
        description="Events in the last 30 days.",
        label="Events (30 days)",
        kind="count",
        source="events",
        window=W30,
    ),
    Feature(
        name="events_90d",
        family="activity",
        description="Events in the last 90 days.",
        label="Events (90 days)",
        kind="count",
        source="events",
        window=W90,
    ),
    Feature(
        name="events_prev_30d",
        family="activity",
        description="Events 30 to 60 days ago.",
        label="Events prev (30 days)",
        kind="count",
        source="events",
        window=PREV30,
    ),
    Feature(
        name="active_days_7d",
        family="activity",
        description="Days with any event in the last 7 days.",
        label="Active days (7 days)",
        kind="active_days",
        source="events",
        of="account",
        window=W7,
    ),
    Feature(
        name="active_days_30d",
        family="activity",
        description="Days with any event in the last 30 days.",
        label="Active days (30 days)",
        kind="active_days",
        source="events",
        of="account",
        window=W30,
        direction=1,
    ),
    Feature(
        name="active_days_90d",
        family="activity",
        description="Days with any event in the last 90 days.",
        label="Active days (90 days)",
        kind="active_days",
        source="events",
        of="account",
        window=W90,
        direction=1,
    ),
    Feature(
        name="active_users_7d",
        family="activity",
        description="Distinct users with events in the last 7 days.",
        label="Active users (7 days)",
        kind="distinct",
        source="events",
        of="user",
        window=W7,
        direction=1,
    ),
    Feature(
        name="active_users_30d",
        family="activity",
        description="Distinct users with events in the last 30 days.",
        label="Active users (30 days)",
        kind="distinct",
        source="events",
        of="user",
        window=W30,
        direction=1,
    ),
    Feature(
        name="active_users_prev_30d",
        family="activity",
        description="Distinct users active 30 to 60 days ago.",
        label="Active users prev (30 days)",
        kind="distinct",
        source="events",
        of="user",
        window=PREV30,
    ),
    Feature(
        name="user_days_30d",
        family="activity",
        description="Sum over the last 30 days of daily active users.",
        label="User days (30 days)",
        kind="active_days",
        source="events",
        of="user",
        window=W30,
    ),
    Feature(
        name="last_event_day",
        family="activity",
        description="Day number of the last event before the as-of date.",
        label="Last event day",
        kind="last_day",
        source="events",
        of="account",
        model=False,
    ),
    # --- breadth and depth -------------------------------------------------------------------
    Feature(
        name="distinct_features_30d",
        family="breadth",
        description="Product features used in the last 30 days.",
        label="Features used in 30 days",
        kind="distinct",
        source="events",
        of="feature",
        window=W30,
        direction=1,
    ),
    Feature(
        name="distinct_features_90d",
        family="breadth",
        description="Product features used in the last 90 days.",
        label="Features used in 90 days",
        kind="distinct",
        source="events",
        of="feature",
        window=W90,
        direction=1,
    ),
    Feature(
        name="distinct_features_prev_30d",
        family="breadth",
        description="Product features used 30 to 60 days ago.",
        label="Distinct features prev (30 days)",
        kind="distinct",
        source="events",
        of="feature",
        window=PREV30,
    ),
    Feature(
        name="distinct_workflows_30d",
        family="breadth",
        description="Workflows touched in the last 30 days.",
        label="Distinct workflows (30 days)",
        kind="distinct",
        source="events",
        of="workflow",
        window=W30,
        direction=1,
        requires="event_catalog",
    ),
    Feature(
        name="distinct_workflows_90d",
        family="breadth",
        description="Workflows touched in the last 90 days.",
        label="Distinct workflows (90 days)",
        kind="distinct",
        source="events",
        of="workflow",
        window=W90,
        direction=1,
        requires="event_catalog",
    ),
    Feature(
        name="plan_features_used_30d",
        family="breadth",
        description="Features of the current plan used in the last 30 days.",
        label="Plan features used (30 days)",
        kind="distinct",
        source="events",
        of="feature",
        window=W30,
        where=IN_PLAN,
        direction=1,
        requires="event_catalog",
    ),
    Feature(
        name="power_events_14d",
        family="breadth",
        description="Power-feature activations in the last 14 days.",
        label="Power-feature uses in 14 days",
        kind="count",
        source="events",
        window=W14,
        where="a.power",
        direction=1,
        requires="event_catalog",
    ),
    Feature(
        name="power_events_30d",
        family="breadth",
        description="Power-feature activations in the last 30 days.",
        label="Power-feature uses in 30 days",
        kind="count",
        source="events",
        window=W30,
        where="a.power",
        direction=1,
        requires="event_catalog",
    ),
    Feature(
        name="distinct_power_features_14d",
        family="breadth",
        description="Distinct power features used in the last 14 days.",
        label="Distinct power features (14 days)",
        kind="distinct",
        source="events",
        of="feature",
        window=W14,
        where="a.power",
        direction=1,
        requires="event_catalog",
    ),
    Feature(
        name="distinct_power_features_30d",
        family="breadth",
        description="Distinct power features used in the last 30 days.",
        label="Distinct power features (30 days)",
        kind="distinct",
        source="events",
        of="feature",
        window=W30,
        where="a.power",
        direction=1,
        requires="event_catalog",
    ),
    Feature(
        name="premium_trial_events_30d",
        family="breadth",
        description="Events of features above the current tier (trials) in the last 30 days.",
        label="Premium trial events (30 days)",
        kind="count",
        source="events",
        window=W30,
        where=PREMIUM,
        direction=1,
        requires="event_catalog",
    ),
    Feature(
        name="premium_trial_features_30d",
        family="breadth",
        description="Distinct features above the current tier used in the last 30 days.",
        label="Premium features tried in 30 days",
        kind="distinct",
        source="events",
        of="feature",
        window=W30,
        where=PREMIUM,
        direction=1,
        requires="event_catalog",
    ),
    Feature(
        name="paywall_hits_30d",
        family="breadth",
        description="Paywall signals in the last 30 days.",
        label="Paywall hits in 30 days",
        kind="count",
        source="events",
        window=W30,
        where="a.signal = 'paywall'",
        direction=1,
        requires="event_catalog",
    ),
    Feature(
        name="new_features_30d",
        family="breadth",
        description="Features used for the first time in the last 30 days.",
        label="New features (30 days)",
        kind="new",
        source="events",
        of="feature",
        window=W30,
        direction=1,
    ),
    # --- intent ------------------------------------------------------------------------------
    Feature(
        name="pricing_page_visits_7d",
        family="intent",
        description="Pricing-page visits in the last 7 days.",
        label="Pricing-page visits in 7 days",
        kind="count",
        source="events",
        window=W7,
        where="a.signal = 'pricing_page'",
        direction=1,
        requires="event_catalog",
    ),
    Feature(
        name="pricing_page_visits_30d",
        family="intent",
        description="Pricing-page visits in the last 30 days.",
        label="Pricing-page visits in 30 days",
        kind="count",
        source="events",
        window=W30,
        where="a.signal = 'pricing_page'",
        direction=1,
        requires="event_catalog",
    ),
    Feature(
        name="invites_30d",
        family="intent",
        description="Invitation signals in the last 30 days.",
        label="Invites in 30 days",
        kind="count",
        source="events",
        window=W30,
        where="a.signal = 'invite'",
        direction=1,
        requires="event_catalog",
    ),
    Feature(
        name="support_signals_30d",
        family="intent",
        description="Support signals in the last 30 days.",
        label="Support signals (30 days)",
        kind="count",
        source="events",
        window=W30,
        where="a.signal = 'support'",
        requires="event_catalog",
    ),
    Feature(
        name="exports_30d",
        family="intent",
        description="Export signals in the last 30 days.",
        label="Exports (30 days)",
        kind="count",
        source="events",
        window=W30,
        where="a.signal = 'export'",
        requires="event_catalog",
    ),
    # --- quota pressure (across the quota metrics of the current plan) -----------------------
    Feature(
        name="quota_util_max",
        family="quota",
        description="Highest utilization of any quota, trailing 30 days or last full month.",
        label="Highest quota use",
        kind="max",
        source="quotas",
        value=QUOTA_PRESSURE,
        direction=1,
    ),
    Feature(
        name="quota_util_last_month_max",
        family="quota",
        description="Highest utilization of any quota in the last full calendar month.",
        label="Highest quota use last month",
        kind="max",
        source="quotas",
        value="q.util_last_month",
        direction=1,
    ),
    Feature(
        name="quota_projected_util_max",
        family="quota",
        description="Highest projected month-end utilization of any quota.",
        label="Projected quota use at month end",
        kind="max",
        source="quotas",
        value="q.projected_util",
        direction=1,
        calendar="month_day",
    ),
    Feature(
        name="quota_days_above_85",
        family="quota",
        description="Days in the last 30 with month-to-date use at or above 85% of a quota.",
        label="Days at 85%+ of a quota (30 days)",
        kind="max",
        source="quotas",
        value="q.days_above_85",
        direction=1,
        calendar="month_day",
    ),
    Feature(
        name="quotas_above_85",
        family="quota",
        description="Quotas at or above 85% (trailing 30 days or last full month).",
        label="Quotas at 85%+",
        kind="count",
        source="quotas",
        where=f"{QUOTA_PRESSURE} >= 0.85",
        direction=1,
    ),
    # --- derived: ratios, trends, recency, RFM ----------------------------------------------
    Feature(
        name="seat_utilization",
        family="team",
        description="Seats in use divided by seats bought.",
        label="Seat utilization",
        missing="No seats bought",
        kind="ratio",
        source="features",
        numerator="seats_in_use",
        denominator="seats",
        direction=1,
    ),
    Feature(
        name="stickiness_30d",
        family="activity",
        description="Average daily active users over monthly active users (DAU/MAU), 30 days.",
        label="Stickiness (30 days)",
        missing="No active users in 30 days",
        kind="formula",
        source="features",
        value="user_days_30d / 30.0 / NULLIF(active_users_30d, 0)",
        direction=1,
    ),
    Feature(
        name="days_since_last_event",
        family="activity",
        description="Days since the last event (empty if none).",
        label="Days since last event",
        missing="No events yet",
        kind="formula",
        source="features",
        value="t - last_event_day",
        direction=-1,
        since_last=True,
        calendar="weekday",
    ),
    Feature(
        name="plan_feature_share_30d",
        family="breadth",
        description="Share of the current plan's features used in the last 30 days.",
        label="Share of the plan's features used (30 days)",
        kind="ratio",
        source="features",
        numerator="plan_features_used_30d",
        denominator="plan_feature_count",
        direction=1,
    ),
    Feature(
        name="events_trend_30d",
        family="trend",
        description="Events, last 30 days over the 30 before (+1 smoothed).",
        label="Events trend (30 days)",
        kind="ratio",
        source="features",
        numerator="events_30d",
        denominator="events_prev_30d",
        smoothed=True,
    ),
    Feature(
        name="active_users_trend_30d",
        family="trend",
        description="Active users, last 30 days over the 30 before (+1 smoothed).",
        label="Active users trend (30 days)",
        kind="ratio",
        source="features",
        numerator="active_users_30d",
        denominator="active_users_prev_30d",
        smoothed=True,
        direction=1,
    ),
    Feature(
        name="breadth_trend_30d",
        family="trend",
        description="Features used, last 30 days over the 30 before (+1 smoothed).",
        label="Breadth trend (30 days)",
        kind="ratio",
        source="features",
        numerator="distinct_features_30d",
        denominator="distinct_features_prev_30d",
        smoothed=True,
        direction=1,
    ),
    # RFM uses fixed bins, not ranks among accounts, so one account's score never depends on
    # which other accounts are scored with it (API, batch and training agree).
    Feature(
        name="rfm_recency_score",
        family="rfm",
        description="Recency score 1-5: last event within 1 / 7 / 30 / 90 days, or older.",
        label="Rfm recency score",
        kind="formula",
        source="features",
        value="CASE WHEN t - last_event_day <= 1 THEN 5 WHEN t - last_event_day <= 7 THEN 4 "
        "WHEN t - last_event_day <= 30 THEN 3 WHEN t - last_event_day <= 90 THEN 2 ELSE 1 END",
        direction=1,
        calendar="weekday",
    ),
    Feature(
        name="rfm_frequency_score",
        family="rfm",
        description="Frequency score 1-5: active days in 90 of at least 45 / 20 / 8 / 1, or none.",
        label="Rfm frequency score",
        kind="formula",
        source="features",
        value="CASE WHEN active_days_90d >= 45 THEN 5 WHEN active_days_90d >= 20 THEN 4 "
        "WHEN active_days_90d >= 8 THEN 3 WHEN active_days_90d >= 1 THEN 2 ELSE 1 END",
        direction=1,
    ),
    Feature(
        name="rfm_monetary_score",
        family="rfm",
        description="Monetary score 1-5: mrr at 1x / 2x / 4x / 8x / 16x the cheapest paid plan.",
        label="Rfm monetary score",
        kind="formula",
        source="features",
        value="LEAST(5, GREATEST(1, 1 + FLOOR(LOG2(GREATEST(mrr, 1e-9) / price_floor))))",
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


def default_label(name: str) -> str:
    """A label made from a column name ("quota_util_30d__api" -> "Quota use (30 days) [api]"),
    for generated columns and names the registry does not declare."""
    base, _, metric = name.partition("__")
    label = re.sub(r"\butil\b", "use", base.replace("_", " "))
    label = re.sub(r" (\d+)d\b", r" (\1 days)", label)
    label = label[0].upper() + label[1:] if label else name
    return f"{label} [{metric}]" if metric else label


def quota_metric_features(metrics: list[str]) -> tuple[Feature, ...]:
    """Per-metric quota features for the dataset's metrics (sorted, so order is stable)."""
    out = []
    for metric in sorted(set(metrics)):
        for column, text in QUOTA_METRIC_COLUMNS.items():
            name = f"quota_{column}__{metric_slug(metric)}"
            out.append(
                Feature(
                    name=name,
                    family="quota",
                    description=text.format(metric=metric),
                    label=default_label(name),
                    kind="per_quota",
                    source="quotas",
                    value=column,
                    direction=1,
                    requires="plan_limits",
                    calendar="month_day" if column in MONTH_DAY_COLUMNS else None,
                )
            )
    return tuple(out)


def feature_list(
    metrics: list[str], registry: tuple[Feature, ...] = FEATURES
) -> tuple[Feature, ...]:
    """All model features for a dataset with these quota metrics, in model order."""
    return tuple(f for f in registry + quota_metric_features(metrics) if f.model)


def feature_names(metrics: list[str], registry: tuple[Feature, ...] = FEATURES) -> list[str]:
    return [f.name for f in feature_list(metrics, registry)]


def windows(registry: tuple[Feature, ...] = FEATURES) -> tuple[Window, ...]:
    """Every window the registry's features use, shortest reach first."""
    return tuple(
        sorted({f.window for f in registry if f.window is not None}, key=lambda w: (w.start, w.end))
    )


def check_registry(registry: tuple[Feature, ...]) -> None:
    """Fail on a name declared twice (the builder and the model need one column per name)."""
    seen: set[str] = set()
    for f in registry:
        if f.name in seen:
            raise ValueError(f"feature {f.name!r} is declared twice")
        seen.add(f.name)


def definitions_fingerprint(registry: tuple[Feature, ...] = FEATURES) -> str:
    """A short hash of what the features compute (not their labels and descriptions): it
    changes exactly when a model trained on the old definitions would get different inputs."""
    keep = (
        "name",
        "kind",
        "source",
        "window",
        "of",
        "where",
        "value",
        "numerator",
        "denominator",
        "smoothed",
        "dtype",
        "requires",
        "model",
    )
    rows = [{k: v for k, v in asdict(f).items() if k in keep} for f in registry]
    rows.append({"quota_metric_columns": list(QUOTA_METRIC_COLUMNS)})
    text = json.dumps(rows, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


CATEGORICAL = tuple(f.name for f in FEATURES if f.dtype == "category")
check_registry(FEATURES)
