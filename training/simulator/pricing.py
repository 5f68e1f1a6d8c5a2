"""Pricing shapes: how the simulated contracts are priced and billed, apart from the dynamics.

The dynamics decide tiers, seats and status; this module turns them into the `plans` table and
each subscription row's `plan_id` and `mrr`, so one behaviour can be written under several
price lists that real datasets have:

- `flat`: one price per tier, no seat price (`seat_mrr` null): added seats add no mrr, so
  they are not expansions in the data (the `_truth/` files still count them; see the README of
  `_truth/` in `SimulationSummary`).
- `annual_share`: every tier is sold monthly and annually (`<plan>_annual`, 15% cheaper per
  month); that share of accounts is billed annually and stays in that billing period.
- `discount_share`: that share of accounts starts with a 25% discount that ends 90 or 180 days
  after sign-up: a new subscription row on the same plan and seats with a higher mrr; the
  `list_mrr` column (price before discounts) lets `features.derived` classify it as
  `repricing`, not as an expansion.

Draws come from their own random stream, so the default shape writes the same bytes as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from training.simulator import catalog as cat

FLAT_MRR = (99.0, 399.0, 1299.0, 4999.0)  # per tier, for `flat` pricing
ANNUAL_FACTOR = 0.85  # monthly equivalent of an annual contract
DISCOUNT = 0.25
DISCOUNT_DAYS = (90, 180)
DAY_US = 86_400_000_000


@dataclass(frozen=True)
class PricingShape:
    """Which price list the simulated contracts follow (the default is the catalog's)."""

    flat: bool = False
    annual_share: float = 0.0
    discount_share: float = 0.0

    def __post_init__(self) -> None:
        for name in ("annual_share", "discount_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")

    @property
    def periods(self) -> tuple[str, ...]:
        return ("monthly", "annual") if self.annual_share > 0 else ("monthly",)


def _plan_id(plan: cat.Plan, period: str) -> str:
    return plan.plan_id if period == "monthly" else f"{plan.plan_id}_annual"


def plans_table(shape: PricingShape) -> pa.Table:
    """The `plans` price list of a shape."""
    rows = []
    for period in shape.periods:
        factor = ANNUAL_FACTOR if period == "annual" else 1.0
        for p in cat.PLANS:
            base = FLAT_MRR[p.tier - 1] if shape.flat else p.base_mrr
            rows.append(
                {
                    "plan_id": _plan_id(p, period),
                    "tier": p.tier,
                    "name": p.name if period == "monthly" else f"{p.name} (annual)",
                    "base_mrr": round(base * factor, 2),
                    "seat_mrr": None if shape.flat else round(p.seat_mrr * factor, 2),
                }
            )
    return pa.Table.from_pylist(
        rows,
        pa.schema(
            [
                ("plan_id", pa.string()),
                ("tier", pa.int64()),
                ("name", pa.string()),
                ("base_mrr", pa.float64()),
                ("seat_mrr", pa.float64()),
            ]
        ),
    )


def plan_ids(shape: PricingShape) -> list[str]:
    """Every plan id of the shape (quota rows are written for each)."""
    return [_plan_id(p, period) for period in shape.periods for p in cat.PLANS]


def price_subscriptions(
    shape: PricingShape,
    subs: dict[str, np.ndarray],
    created_us: np.ndarray,
    canceled_status: int,
    active_status: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Subscription rows with `plan_id` and `mrr`, plus the rows of discounts that end.

    `subs` holds the dynamics' rows (acct, time_us, tier, seats, status); the accounts' draws
    (billing period, discount) come from `rng` in account order.
    """
    n = len(created_us)
    annual = rng.random(n) < shape.annual_share
    discounted = rng.random(n) < shape.discount_share
    ends_us = created_us + rng.choice(DISCOUNT_DAYS, n) * DAY_US
    acct, time_us = subs["acct"].astype(np.int64), subs["time_us"].astype(np.int64)
    tier, seats, status = subs["tier"], subs["seats"], subs["status"]
    if discounted.any():
        # At each discount's end, the account's state then (its latest row before) is repeated
        # at full price, if it is active: same plan and seats, higher mrr.
        order = np.lexsort((time_us, acct))
        acct, time_us = acct[order], time_us[order]
        tier, seats, status = tier[order], seats[order], status[order]
        who = np.flatnonzero(discounted)
        when = ends_us[who]
        # the last row of each account strictly before its discount end (rows are sorted)
        pos = np.searchsorted(acct, who, side="left")
        stop = np.searchsorted(acct, who, side="right")
        last = np.array(
            [
                p + np.searchsorted(time_us[p:s], w, side="left") - 1
                for p, s, w in zip(pos, stop, when, strict=True)
            ],
            dtype=np.int64,
        )
        ok = (last >= pos) & (last < stop)
        ok[ok] &= status[last[ok]] == active_status
        src = last[ok]
        acct = np.concatenate([acct, who[ok]])
        time_us = np.concatenate([time_us, when[ok]])
        tier = np.concatenate([tier, tier[src]])
        seats = np.concatenate([seats, seats[src]])
        status = np.concatenate([status, status[src]])
    base = np.array(FLAT_MRR if shape.flat else [p.base_mrr for p in cat.PLANS])
    per_seat = np.zeros(len(cat.PLANS)) if shape.flat else np.array([p.seat_mrr for p in cat.PLANS])
    price = base[tier - 1] + per_seat[tier - 1] * seats
    price = price * np.where(annual[acct], ANNUAL_FACTOR, 1.0)
    list_mrr = np.where(status == canceled_status, 0.0, np.round(price, 2))
    price = price * np.where(discounted[acct] & (time_us < ends_us[acct]), 1 - DISCOUNT, 1.0)
    mrr = np.where(status == canceled_status, 0.0, np.round(price, 2))
    monthly_ids = np.array([p.plan_id for p in cat.PLANS], dtype=object)
    ids = monthly_ids[tier - 1]
    ids = np.where(annual[acct], ids + "_annual", ids)
    return {
        "acct": acct,
        "time_us": time_us,
        "tier": tier,
        "seats": seats,
        "status": status,
        "plan_id": ids,
        "mrr": mrr,
        "list_mrr": list_mrr,
    }
