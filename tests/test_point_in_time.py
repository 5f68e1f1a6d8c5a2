"""Point in time: no row at or after the as-of date can change the features (property test)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.build import build_features
from features.dataset import load_dataset
from tests.conftest import BASE_TABLES, write_tables

AS_OF = datetime(2024, 2, 15)
CATALOG = [
    {"event": "login", "workflow": "core"},
    {
        "event": "report",
        "feature": "reports",
        "power": True,
        "min_tier": 2,
        "quota_metric": "reports",
    },
    {"event": "pricing", "signal": "pricing_page"},
    {"event": "invite", "signal": "invite"},
]
LIMITS = [
    {"plan_id": "starter", "metric": "reports", "monthly_limit": 10},
    {"plan_id": "pro", "metric": "reports", "monthly_limit": 100},
]
EVENT_NAMES = ["login", "report", "pricing", "invite", "other"]


def history() -> dict[str, list[dict]]:
    """Base tables plus events before and after the as-of date."""
    tables = {k: list(v) for k, v in BASE_TABLES.items()}
    tables["events"] = [
        {
            "account_id": acc,
            "timestamp": (datetime(2024, 1, 3) + timedelta(days=d, hours=h)).isoformat(),
            "event": EVENT_NAMES[(d + h) % 5],
            "user_id": user,
            "event_id": f"h{acc}{d}{h}",
            "quantity": float(h),
        }
        for acc, user in (("a1", "u1"), ("a2", "u2"))
        for d in range(0, 70, 3)
        for h in (1, 7)
    ]
    tables["event_catalog"] = CATALOG
    tables["plan_limits"] = LIMITS
    return tables


offsets = st.floats(min_value=0, max_value=80 * 24 * 3600).map(
    lambda s: (AS_OF + timedelta(seconds=s)).isoformat()
)
late_events = st.lists(
    st.fixed_dictionaries(
        {
            "account_id": st.sampled_from(["a1", "a2"]),
            "timestamp": offsets,
            "event": st.sampled_from(EVENT_NAMES),
            "user_id": st.sampled_from(["u1", "u2", "u_new", None]),
            "quantity": st.floats(min_value=0, max_value=50),
        }
    ),
    max_size=12,
)
late_subscriptions = st.lists(
    st.fixed_dictionaries(
        {
            "account_id": st.sampled_from(["a1", "a2"]),
            "effective_at": offsets,
            "plan_id": st.sampled_from(["starter", "pro"]),
            "seats": st.integers(0, 20),
            "mrr": st.floats(0, 1000),
            "status": st.sampled_from(["active", "trialing", "canceled"]),
        }
    ),
    max_size=3,
)
late_users = st.lists(
    st.fixed_dictionaries(
        {
            "account_id": st.sampled_from(["a1", "a2"]),
            "created_at": offsets,
        }
    ),
    max_size=3,
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    events=late_events,
    subs=late_subscriptions,
    users=late_users,
    drop_late=st.booleans(),
    deactivate=st.booleans(),
)
def test_rows_at_or_after_as_of_never_change_features(
    tmp_path_factory, events, subs, users, drop_late, deactivate
):
    base = history()
    before = build_features(
        load_dataset(write_tables(tmp_path_factory.mktemp("base"), base)), AS_OF
    )

    changed = {k: list(v) for k, v in base.items()}
    if drop_late:  # remove every late row that exists
        changed["events"] = [e for e in changed["events"] if e["timestamp"] < AS_OF.isoformat()]
    changed["events"] += [dict(e, event_id=f"late{i}") for i, e in enumerate(events)]
    changed["subscriptions"] += subs
    changed["users"] += [dict(u, user_id=f"late_u{i}") for i, u in enumerate(users)]
    if deactivate:  # deactivation at or after the as-of date: still a seat in use before it
        changed["users"] = [dict(u, deactivated_at=AS_OF.isoformat()) for u in changed["users"]]
    after = build_features(
        load_dataset(write_tables(tmp_path_factory.mktemp("changed"), changed)), AS_OF
    )
    pd.testing.assert_frame_equal(before, after)
