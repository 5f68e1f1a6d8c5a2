"""The input data contract (v1), declared once.

Every table a dataset folder may hold, its columns, their kinds and which are required, plus the
reason codes the loader writes to quarantine. The loader (`features.dataset`), the simulator and
the import adapters all read these declarations instead of restating them.
See DATA_CONTRACT.md in the shared folder for the prose version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CONTRACT_VERSION = "1"

ColumnKind = Literal["id", "str", "timestamp", "int", "float", "bool"]
NUMERIC_KINDS = ("int", "float")

SUBSCRIPTION_STATUSES = ("active", "trialing", "canceled")
OUTREACH_CHANNELS = ("in_app", "email", "csm")
EVENT_SIGNALS = ("pricing_page", "invite", "paywall", "support", "export")


@dataclass(frozen=True)
class Column:
    """One column of a contract table."""

    name: str
    kind: ColumnKind
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class TableSpec:
    """One table of the contract: its columns, key and the column that carries its time."""

    name: str
    columns: tuple[Column, ...]
    required: bool
    key: tuple[str, ...] = ()
    time_column: str | None = None
    description: str = ""

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def numeric_columns(self) -> tuple[str, ...]:
        """Columns read as numbers (`int` or `float`): the ones that could be NaN or infinite."""
        return tuple(c.name for c in self.columns if c.kind in NUMERIC_KINDS)

    @property
    def timestamp_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.kind == "timestamp")

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (
        TableSpec(
            "accounts",
            (
                Column("account_id", "id", True, "customer account identifier"),
                Column("created_at", "timestamp", True, "when the account signed up"),
                Column("name", "str"),
                Column("segment", "str", description="e.g. smb, mid_market, enterprise"),
                Column("industry", "str"),
                Column("region", "str"),
                Column("csm_owner", "str", description="customer-success manager who owns it"),
                Column("employees", "int", description="company head count"),
            ),
            required=True,
            key=("account_id",),
            time_column="created_at",
            description="one row per customer account; extra columns are static attributes",
        ),
        TableSpec(
            "plans",
            (
                Column("plan_id", "id", True),
                Column("tier", "int", True, "higher tier costs more"),
                Column("name", "str"),
                Column("base_mrr", "float", description="monthly base price"),
                Column("seat_mrr", "float", description="monthly price per seat"),
            ),
            required=True,
            key=("plan_id",),
            description="the price list",
        ),
        TableSpec(
            "subscriptions",
            (
                Column("account_id", "id", True),
                Column("effective_at", "timestamp", True),
                Column("plan_id", "id", True),
                Column("seats", "int", True, "seats bought (>= 0)"),
                Column("mrr", "float", True, "monthly recurring revenue (>= 0)"),
                Column("status", "str", True, "active, trialing or canceled"),
                Column(
                    "list_mrr",
                    "float",
                    description="mrr before discounts; an mrr change at the same list_mrr "
                    "(a discount starting or ending) is repricing, not an expansion",
                ),
            ),
            required=True,
            key=("account_id", "effective_at"),
            time_column="effective_at",
            description="contract history, one row per change",
        ),
        TableSpec(
            "users",
            (
                Column("user_id", "id", True),
                Column("account_id", "id", True),
                Column("created_at", "timestamp", True),
                Column("deactivated_at", "timestamp"),
                Column("role", "str"),
            ),
            required=True,
            key=("user_id",),
            time_column="created_at",
            description="seats in use = users created and not deactivated",
        ),
        TableSpec(
            "events",
            (
                Column("account_id", "id", True),
                Column("timestamp", "timestamp", True),
                Column("event", "str", True),
                Column("user_id", "id", description="null for account-level events"),
                Column("event_id", "id", description="deduplication key"),
                Column("quantity", "float", description="default 1"),
            ),
            required=True,
            key=("event_id",),
            time_column="timestamp",
            description="product usage",
        ),
        TableSpec(
            "event_catalog",
            (
                Column("event", "str", True),
                Column("feature", "str", description="product feature; default: the event"),
                Column("workflow", "str"),
                Column("power", "bool", description="advanced feature"),
                Column("min_tier", "int", description="lowest plan tier that includes it"),
                Column("quota_metric", "str", description="quantity counts toward this quota"),
                Column("signal", "str", description="; ".join(EVENT_SIGNALS)),
            ),
            required=False,
            key=("event",),
            description="what an event means",
        ),
        TableSpec(
            "plan_limits",
            (
                Column("plan_id", "id", True),
                Column("metric", "str", True),
                Column("monthly_limit", "float", True),
            ),
            required=False,
            key=("plan_id", "metric"),
            description="quotas per calendar month",
        ),
        TableSpec(
            "outreach",
            (
                Column("account_id", "id", True),
                Column("sent_at", "timestamp", True),
                Column("channel", "str", True, "in_app, email or csm"),
                Column("trigger", "str"),
                Column("holdout", "bool", description="eligible but deliberately not contacted"),
            ),
            required=False,
            time_column="sent_at",
            description="upsell touches",
        ),
    )
}

# Tables are validated in this order so that references point at already-clean tables.
LOAD_ORDER = (
    "accounts",
    "plans",
    "subscriptions",
    "users",
    "event_catalog",
    "plan_limits",
    "events",
    "outreach",
)


class Reason:
    """Quarantine reason codes. Column-specific ones are built with the helpers below."""

    UNKNOWN_ACCOUNT = "unknown_account"
    UNKNOWN_PLAN = "unknown_plan"
    NEGATIVE_QUANTITY = "negative_quantity"
    NEGATIVE_MRR = "negative_mrr"
    NEGATIVE_SEATS = "negative_seats"
    NEGATIVE_LIMIT = "negative_monthly_limit"
    INVALID_STATUS = "invalid_status"
    INVALID_CHANNEL = "invalid_channel"
    INVALID_SIGNAL = "invalid_signal"
    DEACTIVATED_BEFORE_CREATED = "deactivated_before_created"
    DUPLICATE_EVENT_ID = "duplicate_event_id"
    # Dated after the moment of the run (plus a tolerance): a clock or export bug, and a row
    # that would otherwise move every "latest date" the jobs derive from the data.
    FUTURE_TIMESTAMP = "future_timestamp"
    # A zone abbreviation such as PST or CEST: several zones share each one, and the zone
    # database maps it to a region whose daylight saving differs from what the letters say.
    AMBIGUOUS_TIMEZONE = "ambiguous_timezone"

    @staticmethod
    def missing(column: str) -> str:
        return f"missing_{column}"

    @staticmethod
    def unparseable(column: str) -> str:
        """A value that cannot be read as the column's kind (timestamp, number, boolean)."""
        return "unparseable_timestamp" if column == "timestamp" else f"unparseable_{column}"

    @staticmethod
    def non_finite(column: str) -> str:
        """NaN, infinity or minus infinity in a numeric column."""
        return f"non_finite_{column}"

    @staticmethod
    def duplicate(key: tuple[str, ...]) -> str:
        return "duplicate_" + "_".join(key)
