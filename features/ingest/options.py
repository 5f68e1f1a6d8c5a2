"""Settings of an import that depend on how the customer instrumented their tools.

One frozen object, every field with a default that matches the vendors' documented examples;
the CLI fills it from flags, tests construct it directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Vendor trait / group property -> accounts column. Names follow Segment's reserved group traits
# (name, industry, employees, plan, createdAt) plus common spellings from PostHog and Amplitude.
DEFAULT_ACCOUNT_TRAITS: dict[str, str] = {
    "name": "name",
    "company_name": "name",
    "industry": "industry",
    "employees": "employees",
    "employee_count": "employees",
    "plan": "plan",
    "createdAt": "created_at",
    "created_at": "created_at",
    "segment": "segment",
    "region": "region",
    "csm_owner": "csm_owner",
}

# Stripe subscription status -> contract status. None = the state is not a subscription yet
# (``incomplete``: the first payment has not succeeded) and is quarantined, not guessed.
DEFAULT_STRIPE_STATUSES: dict[str, str | None] = {
    "active": "active",
    "past_due": "active",  # still provisioned while Stripe retries the payment
    "trialing": "trialing",
    "canceled": "canceled",
    "unpaid": "canceled",  # retries exhausted, invoices left open: no longer paying
    "incomplete_expired": "canceled",
    "paused": "canceled",  # trial ended without a payment method: no revenue until resumed
    "incomplete": None,
}


class ImportOptions(BaseModel):
    """How to find accounts, users and prices in a vendor's export."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    group_type: str = Field(
        "company",
        description="Amplitude/PostHog group type whose key is the account id "
        "(Amplitude `groups[<type>]`, PostHog `$groups[<type>]`).",
    )
    account_property: str = Field(
        "company_id", description="Mixpanel event property holding the account (group key)."
    )
    account_traits: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_ACCOUNT_TRAITS),
        description="group trait / group property name -> accounts column; other traits are "
        "not imported.",
    )
    user_role_trait: str = Field("role", description="user trait / property holding the role.")
    time_unit: Literal["auto", "s", "ms"] = Field(
        "auto",
        description="Mixpanel `properties.time` unit; auto = seconds unless the value is too "
        "large to be seconds.",
    )
    stripe_customer_map: Path | None = Field(
        None,
        description="CSV (customer_id,account_id) or JSON object mapping Stripe customers to "
        "accounts; wins over metadata.",
    )
    stripe_account_metadata_key: str = Field(
        "account_id",
        description="customer (or subscription) metadata key holding the account id.",
    )
    stripe_customer_as_account: bool = Field(
        False,
        description="use the Stripe customer id as the account id when no link is found "
        "(otherwise such subscriptions are quarantined as missing_account_id).",
    )
    tier_map: dict[str, int] = Field(
        default_factory=dict,
        description="plan tier by Stripe price id, lookup_key, nickname or product id; "
        "unmapped prices are ranked by monthly unit amount (1 = cheapest).",
    )
    stripe_statuses: dict[str, str | None] = Field(
        default_factory=lambda: dict(DEFAULT_STRIPE_STATUSES),
        description="Stripe subscription status -> contract status (None = quarantine).",
    )
