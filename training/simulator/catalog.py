"""The simulated product: price list, quotas, event catalog and customer segments.

Everything here is static and is written verbatim to `plans`, `plan_limits` and `event_catalog`.
The dynamics (`dynamics.py`) read the same declarations as numpy lookup arrays, so the tables a
user sees and the behaviour that generated the events can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Plan:
    plan_id: str
    tier: int
    name: str
    base_mrr: float
    seat_mrr: float


# Base and seat prices both rise with the tier, so a lower tier with the same seats always
# costs strictly less: the simulator relies on that to make post-upsell reversals fall below
# the pre-expansion mrr.
PLANS: tuple[Plan, ...] = (
    Plan("plan_starter", 1, "Starter", 49.0, 15.0),
    Plan("plan_team", 2, "Team", 149.0, 29.0),
    Plan("plan_business", 3, "Business", 499.0, 49.0),
    Plan("plan_enterprise", 4, "Enterprise", 1999.0, 79.0),
)
N_TIERS = len(PLANS)

# Monthly quotas per tier (index = tier - 1). The top tier's limits are effectively unbounded.
QUOTA_METRICS: tuple[str, ...] = ("api_calls", "reports")
QUOTA_LIMITS: dict[str, tuple[float, ...]] = {
    "api_calls": (20_000.0, 200_000.0, 2_000_000.0, 50_000_000.0),
    "reports": (15.0, 60.0, 300.0, 10_000.0),
}

# Product features (counted for breadth) first, then the account/billing pseudo-features that
# only carry signals. Popularity = share of accounts with an average breadth that use it.
PRODUCT_FEATURES: tuple[str, ...] = (
    "projects",
    "dashboards",
    "collaboration",
    "reports",
    "integrations",
    "api",
    "automations",
    "advanced_analytics",
    "admin_security",
)
FEATURE_POPULARITY = np.array([0.95, 0.85, 0.6, 0.5, 0.4, 0.3, 0.35, 0.2, 0.2])
SIGNAL_FEATURES: tuple[str, ...] = ("billing", "support", "data_export")
FEATURES: tuple[str, ...] = PRODUCT_FEATURES + SIGNAL_FEATURES


@dataclass(frozen=True)
class EventType:
    event: str
    feature: str
    workflow: str
    weight: float  # relative daily rate per unit of user activity (user-level events)
    power: bool = False
    min_tier: int = 1
    quota_metric: str | None = None
    signal: str | None = None
    account_level: bool = False  # emitted by the system or an API key: no user_id


# Rates of the events with weight 0 are set by a dedicated driver in the dynamics (quota usage,
# intent, invites, paywall hits, support risk) instead of by plain user activity.
EVENTS: tuple[EventType, ...] = (
    EventType("project_created", "projects", "plan_and_track", 0.03),
    EventType("task_created", "projects", "plan_and_track", 0.5),
    EventType("task_updated", "projects", "plan_and_track", 1.0),
    EventType("task_completed", "projects", "plan_and_track", 0.6),
    EventType("dashboard_viewed", "dashboards", "analyze", 1.0),
    EventType("dashboard_created", "dashboards", "analyze", 0.05),
    EventType("dashboard_shared", "dashboards", "analyze", 0.05),
    EventType("comment_added", "collaboration", "collaborate", 0.4),
    EventType("file_uploaded", "collaboration", "collaborate", 0.15),
    EventType("user_invited", "collaboration", "collaborate", 0.0, signal="invite"),
    EventType("report_generated", "reports", "analyze", 0.0, quota_metric="reports"),
    EventType("report_scheduled", "reports", "analyze", 0.06, power=True, min_tier=2),
    EventType("integration_connected", "integrations", "integrate", 0.01),
    EventType("integration_synced", "integrations", "integrate", 0.0, account_level=True),
    EventType("api_key_created", "api", "integrate", 0.01),
    EventType(
        "api_request_batch",
        "api",
        "integrate",
        0.0,
        quota_metric="api_calls",
        account_level=True,
    ),
    EventType("automation_created", "automations", "automate", 0.05, power=True, min_tier=2),
    EventType("automation_run", "automations", "automate", 0.0, min_tier=2, account_level=True),
    EventType("cohort_analysis_run", "advanced_analytics", "analyze", 0.06, True, 3),
    EventType("forecast_created", "advanced_analytics", "analyze", 0.04, True, 3),
    EventType("role_permissions_changed", "admin_security", "administer", 0.02, min_tier=3),
    EventType("sso_configured", "admin_security", "administer", 0.003, min_tier=4),
    EventType("audit_log_exported", "admin_security", "administer", 0.03, True, 4),
    EventType("pricing_page_viewed", "billing", "account", 0.0, signal="pricing_page"),
    EventType("paywall_viewed", "billing", "account", 0.0, signal="paywall"),
    EventType("plan_usage_viewed", "billing", "account", 0.02),
    EventType("support_ticket_opened", "support", "account", 0.0, signal="support"),
    EventType("help_article_viewed", "support", "account", 0.05),
    EventType("data_exported", "data_export", "account", 0.0, signal="export"),
)
EVENT_INDEX: dict[str, int] = {e.event: i for i, e in enumerate(EVENTS)}
# Events whose count the "volume" driver inflates: one per account, chosen at random. They are
# plain tier-1 events, so heavy use of them says nothing about the need for a bigger plan.
VOLUME_EVENTS: tuple[str, ...] = ("task_updated", "dashboard_viewed", "comment_added")

SEGMENTS: tuple[str, ...] = ("smb", "mid_market", "enterprise")
SEGMENT_SHARE = np.array([0.6, 0.3, 0.1])
# Initial tier mix per segment (rows: segment, columns: tier 1..4).
SEGMENT_TIER_MIX = np.array(
    [[0.55, 0.35, 0.08, 0.02], [0.15, 0.45, 0.3, 0.1], [0.02, 0.18, 0.4, 0.4]]
)
SEGMENT_SEATS = ((2, 15), (10, 60), (40, 250))  # initial seats bought, uniform in log space
SEGMENT_EMPLOYEES = ((5, 200), (200, 2_000), (2_000, 60_000))
SEGMENT_CHURN_MONTHLY = np.array([0.02, 0.01, 0.005])
SEGMENT_TEAM_GROWTH = np.array([0.3, 1.0, 3.0])  # new users per month for an average account
INDUSTRIES: tuple[str, ...] = (
    "software",
    "fintech",
    "healthcare",
    "retail",
    "manufacturing",
    "education",
    "media",
    "logistics",
)
REGIONS: tuple[str, ...] = ("na", "emea", "apac", "latam")
REGION_SHARE = np.array([0.45, 0.3, 0.15, 0.1])
REGION_UTC_OFFSET_HOURS = np.array([-6, 1, 8, -3])
CSM_OWNERS: tuple[str, ...] = tuple(f"csm_{i:02d}" for i in range(1, 13))
ROLES: tuple[str, ...] = ("admin", "member", "viewer")

OUTREACH_CHANNELS: tuple[str, ...] = ("in_app", "email", "csm")
OUTREACH_TRIGGERS: tuple[str, ...] = (
    "quota_85",
    "power_user",
    "seat_growth",
    "breadth",
    "pricing_page",
    "manual",
)

NAME_LEFT: tuple[str, ...] = (
    "Acme", "Blue", "Cedar", "Delta", "Ember", "Falcon", "Granite", "Harbor", "Iris", "Juniper",
    "Keystone", "Lumen", "Maple", "Nova", "Orbit", "Pioneer", "Quartz", "River", "Summit", "Tidal",
)  # fmt: skip
NAME_RIGHT: tuple[str, ...] = (
    "Analytics", "Labs", "Systems", "Logistics", "Health", "Partners", "Retail", "Works",
    "Dynamics", "Foods", "Media", "Capital", "Robotics", "Studios", "Networks", "Energy",
)  # fmt: skip
NAME_SUFFIX: tuple[str, ...] = ("Inc", "LLC", "Ltd", "GmbH", "SA", "Group", "Co")
