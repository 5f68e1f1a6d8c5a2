"""The plain reference: the analyst's SQL for the registry's features, generated from the same
declarations as the fast builder (`features.build`), for one as-of date `$t`.

It is written the way the features read: straight over the contract tables (events with
their catalog meaning, users, the current plan's tier), one `COUNT(*) FILTER (...)` or
`COUNT(DISTINCT ...)` per feature, the window rule from `Window.sql`, no roll-ups, no bit
sets, no blocks. Slow, and obviously what the declaration says: the reference test and the
features benchmark check that the builder returns the same values.

It covers the features over events and users and the ratios and formulas computed from them
(`covers`); account state and quota features are not in it (their tests check them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from features.registry import FEATURES, Feature, Window, windows
from features.rollup import DAY_NUMBER

# Contract tables the reference reads; pass other SQL (e.g. `read_parquet($events)`) to read
# files instead of a loaded dataset's tables.
TABLES = {
    "events": "events",
    "event_catalog": "event_catalog",
    "subscriptions": "subscriptions",
    "plans": "plans",
    "users": "users",
}
# Columns the formulas of the reference can read besides the features it covers.
_COLUMNS = {"t"}
_NAME = re.compile(r"\b[a-z_][a-z0-9_]*\b")


def covers(f: Feature, registry: tuple[Feature, ...] = FEATURES) -> bool:
    """Whether the reference computes `f`: a feature over events or users, or a ratio or
    formula over columns it covers."""
    if f.source in ("events", "users"):
        return True
    if f.kind == "ratio":
        inputs = {f.numerator, f.denominator}
    elif f.kind == "formula":
        inputs = set(_NAME.findall(f.value or ""))  # lower-case names: columns, not keywords
    else:
        return False
    known = {g.name: g for g in registry}
    return all(
        n in _COLUMNS or (n in known and known[n].source in ("events", "users")) for n in inputs
    )


def reference_features(
    registry: tuple[Feature, ...] = FEATURES, families: Iterable[str] | None = None
) -> list[Feature]:
    """The model features of `registry` (in `families`, if given) the reference covers."""
    wanted = None if families is None else set(families)
    return [
        f
        for f in registry
        if f.model and covers(f, registry) and (wanted is None or f.family in wanted)
    ]


def reference_sql(
    features: Iterable[Feature],
    tables: Mapping[str, str] | None = None,
    registry: tuple[Feature, ...] = FEATURES,
) -> str:
    """One query returning `account_id` and each of `features` (declared in `registry`) for
    the as-of date `$t` (a timestamp, midnight UTC): one row per account with a subscription,
    events or users before it. `tables` replaces contract table names by other SQL."""
    feats = list(features)
    if not feats:
        raise ValueError("no features to compute")
    uncovered = [f.name for f in feats if not covers(f, registry)]
    if uncovered:
        raise ValueError(f"the reference does not compute {uncovered}")
    tab = {**TABLES, **(tables or {})}
    helpers = {  # columns the wanted ratios and formulas read
        f.name: f
        for f in registry
        if f.source in ("events", "users")
        and any(f.name in _inputs(g) for g in feats)
        and f not in feats
    }
    direct = [f for f in [*feats, *helpers.values()] if f.source in ("events", "users")]
    derived = [f for f in feats if f.source == "features"]
    recent = [f for f in direct if f.source == "events" and f.kind not in ("new", "last_day")]
    history = [f for f in direct if f.kind in ("new", "last_day")]
    team = [f for f in direct if f.source == "users"]
    reach = max(w.start for w in windows(tuple(recent))) if recent else 0

    ctes = [
        f"""dt AS (  -- the as-of date and its day number
    SELECT CAST($t AS TIMESTAMP) AS as_of, {DAY_NUMBER.format(col="CAST($t AS DATE)")} AS t
)""",
        f"""s AS (  -- each account's plan tier at the as-of date: its latest subscription row
    SELECT sub.account_id, arg_max(p.tier, sub.effective_at) AS tier
    FROM {tab["subscriptions"]} sub
    JOIN {tab["plans"]} p ON p.plan_id = sub.plan_id
    CROSS JOIN dt
    WHERE sub.effective_at < dt.as_of
    GROUP BY sub.account_id
)""",
    ]
    parts = ["s"]
    if recent or history:
        ctes.append(
            f"""e AS (  -- every event before the as-of date: its day and catalog meaning
    SELECT ev.account_id, ev.user_id,
        {DAY_NUMBER.format(col="CAST(ev.timestamp AS DATE)")} AS d,
        COALESCE(c.feature, ev.event) AS feature, c.workflow,
        COALESCE(c.power, false) AS power, c.min_tier, c.signal
    FROM {tab["events"]} ev
    LEFT JOIN {tab["event_catalog"]} c ON c.event = ev.event
    CROSS JOIN dt
    WHERE ev.timestamp < dt.as_of
)"""
        )
    if recent:
        cols = ",\n        ".join(f"{_aggregate(f)} AS {f.name}" for f in recent)
        ctes.append(
            f"""recent AS (  -- per account, over the events of the longest window
    SELECT a.account_id,
        {cols}
    FROM e a
    CROSS JOIN dt
    LEFT JOIN s ON s.account_id = a.account_id
    WHERE a.d >= dt.t - {reach}
    GROUP BY a.account_id
)"""
        )
        parts.append("recent")
    if history:
        cols = ",\n        ".join(f"{_aggregate(f)} AS {f.name}" for f in history)
        ctes.append(
            f"""history AS (  -- per account, from each feature's first and last day of use
    SELECT a.account_id,
        {cols}
    FROM (
        SELECT account_id, feature, MIN(d) AS first_d, MAX(d) AS last_d
        FROM e
        GROUP BY account_id, feature
    ) a
    CROSS JOIN dt
    GROUP BY a.account_id
)"""
        )
        parts.append("history")
    if team:
        cols = ",\n        ".join(f"{_aggregate(f)} AS {f.name}" for f in team)
        ctes.append(
            f"""team AS (  -- per account, over its users created before the as-of date
    SELECT a.account_id,
        {cols}
    FROM {tab["users"]} a
    CROSS JOIN dt
    WHERE a.created_at < dt.as_of
    GROUP BY a.account_id
)"""
        )
        parts.append("team")
    accounts = " UNION ".join(f"SELECT account_id FROM {p}" for p in parts)
    joins = "\n    ".join(f"LEFT JOIN {p} USING (account_id)" for p in parts)
    # An account without rows has counted nothing: 0; its last event day stays empty.
    # DOUBLE like the builder's columns, so ratios and formulas compute the same numbers.
    base = ",\n        ".join(
        f"CAST({f.name} AS DOUBLE) AS {f.name}"
        if f.kind == "last_day"
        else f"CAST(COALESCE({f.name}, 0) AS DOUBLE) AS {f.name}"
        for f in direct
    )
    out = ",\n    ".join(f"{_formula(f)} AS {f.name}" for f in [*direct, *derived] if f in feats)
    with_ = ",\n".join(ctes)
    return f"""
WITH {with_},
base AS (
    SELECT account_id, dt.t,
        {base}
    FROM ({accounts}) x
    CROSS JOIN dt
    {joins}
)
SELECT account_id,
    {out}
FROM base
ORDER BY account_id
"""


def _inputs(f: Feature) -> set[str]:
    if f.kind == "ratio":
        return {f.numerator or "", f.denominator or ""}
    if f.kind == "formula":
        return set(_NAME.findall(f.value or ""))
    return set()


def _filter(window: Window | None, day: str, *conds: str | None) -> str:
    """`FILTER (WHERE ...)`: the window rule on `day` and the conditions."""
    parts = ([window.sql(day)] if window else []) + [f"({c})" for c in conds if c]
    return f"FILTER (WHERE {' AND '.join(parts)})" if parts else ""


def _aggregate(f: Feature) -> str:
    """The plain aggregate of one declaration over the rows `a` of its part."""
    if f.source == "users":  # count of users
        created = DAY_NUMBER.format(col="CAST(a.created_at AS DATE)")
        return f"COUNT(*) {_filter(f.window, created, f.where)}"
    if f.kind == "last_day":
        return "MAX(a.last_d)"
    if f.kind == "new":
        return f"COUNT(DISTINCT a.{f.of}) {_filter(f.window, 'a.first_d')}"
    if f.kind == "count":
        return f"COUNT(*) {_filter(f.window, 'a.d', f.where)}"
    if f.kind == "distinct":
        value = "a.user_id" if f.of == "user" else f"a.{f.of}"
        return f"COUNT(DISTINCT {value}) {_filter(f.window, 'a.d', f.where)}"
    if f.kind == "active_days":
        if f.of == "user":  # user-days: distinct (user, day) pairs
            known = _filter(f.window, "a.d", "a.user_id IS NOT NULL")
            return f"COUNT(DISTINCT (a.user_id, a.d)) {known}"
        return f"COUNT(DISTINCT a.d) {_filter(f.window, 'a.d', f.where)}"
    raise ValueError(f"{f.name}: the reference has no plain SQL for kind {f.kind!r}")


def _formula(f: Feature) -> str:
    """A ratio or formula over the base columns (the builder's expression), else the column."""
    return f"CAST({f.sql} AS DOUBLE)" if f.source == "features" else f.name
