"""Stripe import: the OpenAPI fixtures, price arithmetic, and generated histories with events."""

from __future__ import annotations

import calendar
import copy
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.ingest import ImportOptions, run_import
from features.ingest.stripe import monthly_amount
from tests.test_ingest_common import FIXTURES, assert_balanced, non_null

STRIPE = FIXTURES / "stripe"
PRICE_ID = "price_1PgafmB7WZ01zgkW6dKueIc5"


def _subscriptions(path: Path) -> pd.DataFrame:
    """The written subscriptions; Stripe gives no price before discounts, so the optional
    `list_mrr` column is written empty (never invented) and left out of the comparisons."""
    frame = pd.read_parquet(path)
    assert frame["list_mrr"].isna().all()
    return frame.drop(columns=["list_mrr"])


def _fixture(name: str) -> dict:
    return json.loads((STRIPE / name).read_text())


def _customer_map(tmp_path: Path) -> Path:
    path = tmp_path / "customers.csv"
    path.write_text("customer_id,account_id\ncus_QXg1o8vcGmoR32,acct_initech\n")
    return path


# ----------------------------------------------------------------------------- fixtures


def test_openapi_fixtures_parse_into_a_plan_and_a_history(tmp_path):
    options = ImportOptions(stripe_customer_map=_customer_map(tmp_path))
    summary = run_import("stripe", [STRIPE], tmp_path / "ds", options=options)
    out = tmp_path / "ds"
    plans = pd.read_parquet(out / "plans.parquet")
    # The fixture price has transform_quantity (divide_by), so it is not a plain per-seat price.
    assert [non_null(r) for r in plans.to_dict("records")] == [
        {"plan_id": PRICE_ID, "tier": 1, "name": "prod_QXg1hqf4jFNsqG"}
    ]
    subscriptions = _subscriptions(out / "subscriptions.parquet")
    # Placeholder fixture: start_date == ended_at == 1234567890, so the one state that remains
    # at that instant is the cancellation.
    assert subscriptions.to_dict("records") == [
        {
            "account_id": "acct_initech",
            "effective_at": pd.Timestamp("2009-02-13 23:31:30"),
            "plan_id": PRICE_ID,
            "seats": 0,
            "mrr": 0.0,
            "status": "canceled",
        }
    ]
    accounts = pd.read_parquet(out / "accounts.parquet")
    assert accounts[["account_id", "created_at"]].to_dict("records") == [
        {"account_id": "acct_initech", "created_at": pd.Timestamp("2009-02-13 23:31:30")}
    ]
    assert summary.input.read == 4  # invoice (manual billing_reason: no history), price, sub, item
    # The item fixture belongs to sub_1Pgc6xB7WZ01zgkWJMvZp5ja, which is not in the export.
    assert summary.tables["subscriptions"].quarantined == {"unknown_subscription": 1}
    assert_balanced(summary)


def test_fixture_subscription_without_an_account_link_is_quarantined(tmp_path):
    summary = run_import("stripe", [STRIPE / "fixture_subscription.json"], tmp_path / "ds")
    assert summary.tables["subscriptions"].quarantined == {"missing_account_id": 1}
    allowed = run_import(
        "stripe",
        [STRIPE / "fixture_subscription.json"],
        tmp_path / "ds2",
        options=ImportOptions(stripe_customer_as_account=True),
    )
    assert allowed.tables["subscriptions"].written == 1
    assert allowed.tables["accounts"].written == 1


def test_a_live_annual_subscription_from_the_fixture_shape(tmp_path):
    sub = _fixture("fixture_subscription.json")
    sub.update(
        status="active",
        ended_at=None,
        canceled_at=None,
        cancel_at=None,
        cancel_at_period_end=False,
        trial_start=None,
        trial_end=None,
        metadata={"account_id": "acct_42"},
    )
    item = sub["items"]["data"][0]
    item["quantity"] = 5
    item["price"]["transform_quantity"] = None
    item["price"]["recurring"]["interval"] = "year"
    path = tmp_path / "sub.json"
    path.write_text(json.dumps(sub))
    run_import("stripe", [path], tmp_path / "ds")
    subscriptions = _subscriptions(tmp_path / "ds" / "subscriptions.parquet")
    assert subscriptions.to_dict("records") == [
        {
            "account_id": "acct_42",
            "effective_at": pd.Timestamp("2009-02-13 23:31:30"),
            "plan_id": PRICE_ID,
            "seats": 5,
            "mrr": pytest.approx(2000 * 5 / 100 / 12),
            "status": "active",
        }
    ]
    plans = pd.read_parquet(tmp_path / "ds" / "plans.parquet")
    assert plans["seat_mrr"].tolist() == [pytest.approx(20 / 12)]


# ----------------------------------------------------------------------------- price arithmetic


def _price(amount: int | None, interval: str = "month", count: int = 1, **extra) -> dict:
    return {
        "object": "price",
        "id": "p",
        "currency": "usd",
        "unit_amount": amount,
        "billing_scheme": "per_unit",
        "recurring": {"interval": interval, "interval_count": count, "usage_type": "licensed"},
        **extra,
    }


@pytest.mark.parametrize(
    ("price", "quantity", "expected"),
    [
        (_price(2000), 3, 60.0),
        (_price(120000, "year"), 1, 100.0),
        (_price(1200, "week"), 1, 12 * 52 / 12),
        (_price(9000, "month", 3), 2, 60.0),
        (_price(6000, "year", 2), 1, 2.5),
        (_price(1000, currency="jpy"), 1, 1000.0),
        (_price(None, unit_amount_decimal="1999.5"), 2, 39.99),
        (_price(1000, transform_quantity={"divide_by": 10, "round": "up"}), 11, 20.0),
        (
            _price(
                None,
                billing_scheme="tiered",
                tiers_mode="graduated",
                tiers=[
                    {"up_to": 5, "unit_amount": 1000, "flat_amount": 0},
                    {"up_to": None, "unit_amount": 500, "flat_amount": 0},
                ],
            ),
            8,
            65.0,
        ),
        (
            _price(
                None,
                billing_scheme="tiered",
                tiers_mode="volume",
                tiers=[{"up_to": 5, "unit_amount": 1000}, {"up_to": None, "unit_amount": 500}],
            ),
            8,
            40.0,
        ),
        (_price(1000, recurring={"interval": "month", "usage_type": "metered"}), 5, None),
        ({**_price(1000), "recurring": None}, 1, None),  # one-time price
    ],
)
def test_monthly_amount(price, quantity, expected):
    got = monthly_amount(price, quantity)
    assert got == (pytest.approx(expected) if expected is not None else None)


# ----------------------------------------------------------------------------- generated history

PRICES = {
    "price_basic": ("prod_basic", 1900, "month"),
    "price_pro": ("prod_pro", 4900, "month"),
    "price_pro_annual": ("prod_pro", 49000, "year"),
    "price_ent": ("prod_ent", 19900, "month"),
    "price_addon": ("prod_addon", 500, "month"),
}
TIERS = {"prod_basic": 1, "prod_pro": 2, "prod_ent": 3, "prod_addon": 1}


def _epoch(moment: datetime) -> int:
    return calendar.timegm(moment.timetuple())


def _price_object(price_id: str) -> dict:
    product, amount, interval = PRICES[price_id]
    return {
        "object": "price",
        "id": price_id,
        "product": product,
        "currency": "usd",
        "unit_amount": amount,
        "billing_scheme": "per_unit",
        "type": "recurring",
        "nickname": price_id.removeprefix("price_"),
        "recurring": {"interval": interval, "interval_count": 1, "usage_type": "licensed"},
    }


def _monthly(price_id: str, quantity: int) -> float:
    _, amount, interval = PRICES[price_id]
    return amount * quantity / 100 / (12 if interval == "year" else 1)


@dataclass
class Change:
    at: datetime
    price: str
    quantity: int
    status: str  # Stripe status


def _sub_object(
    sub_id: str,
    customer: str,
    start: datetime,
    change: Change,
    trial: tuple[datetime, datetime] | None,
    ended: datetime | None,
) -> dict:
    return {
        "object": "subscription",
        "id": sub_id,
        "customer": customer,
        "currency": "usd",
        "status": change.status,
        "start_date": _epoch(start),
        "created": _epoch(start),
        "trial_start": _epoch(trial[0]) if trial else None,
        "trial_end": _epoch(trial[1]) if trial else None,
        "canceled_at": _epoch(ended) if ended else None,
        "ended_at": _epoch(ended) if ended else None,
        "cancel_at_period_end": False,
        "metadata": {},
        "items": {
            "object": "list",
            "data": [
                {
                    "object": "subscription_item",
                    "id": f"si_{sub_id}",
                    "subscription": sub_id,
                    "quantity": change.quantity,
                    "price": _price_object(change.price),
                }
            ],
        },
    }


def render_stripe_history(
    seed: int,
    n_accounts: int = 30,
    start: datetime | None = None,
) -> tuple[list[dict], pd.DataFrame]:
    """Stripe objects for a seeded set of subscription histories, and the contract rows
    they must give back (one subscription per account)."""
    rng = np.random.default_rng(seed)
    start = start or datetime(2024, 1, 1)
    objects: list[dict] = [_price_object(p) for p in PRICES]
    expected: list[dict] = []
    for i in range(n_accounts):
        account, customer, sub_id = f"acct_{i:03d}", f"cus_{i:03d}", f"sub_{i:03d}"
        begin = start + timedelta(days=int(i), hours=int(rng.integers(0, 24)))
        objects.append(
            {
                "object": "customer",
                "id": customer,
                "created": _epoch(begin),
                "name": f"Company {i}",
                "metadata": {"account_id": account},
            }
        )
        quantity = int(rng.integers(1, 10))
        trial = (begin, begin + timedelta(days=14)) if i % 4 == 0 else None
        changes = [
            Change(
                begin,
                "price_pro" if i % 2 else "price_basic",
                quantity,
                "trialing" if trial else "active",
            )
        ]
        if trial and i % 8 == 0:  # Stripe's update at the end of the trial
            changes.append(Change(trial[1], changes[0].price, quantity, "active"))
        changes.append(Change(begin + timedelta(days=30), changes[0].price, quantity + 2, "active"))
        if i % 3 != 2:
            changes.append(
                Change(begin + timedelta(days=61, minutes=5), "price_ent", quantity + 2, "active")
            )
        ended = begin + timedelta(days=95) if i % 5 == 1 else None

        final = changes[-1]
        objects.append(_sub_object(sub_id, customer, begin, final, trial, ended))
        states = [_sub_object(sub_id, customer, begin, c, trial, None) for c in changes]
        events: list[dict] = []
        if i % 5 != 3:  # otherwise the first state must come from previous_attributes
            events.append(
                {
                    "type": "customer.subscription.created",
                    "created": _epoch(begin),
                    "data": {"object": states[0]},
                }
            )
        for before, after, change in zip(states, states[1:], changes[1:], strict=False):
            previous = {"items": before["items"]} if before["items"] != after["items"] else {}
            if before["status"] != after["status"]:
                previous["status"] = before["status"]
            events.append(
                {
                    "type": "customer.subscription.updated",
                    "created": _epoch(change.at),
                    "data": {"object": after, "previous_attributes": previous},
                }
            )
        if ended:
            gone = _sub_object(
                sub_id,
                customer,
                begin,
                Change(ended, final.price, final.quantity, "canceled"),
                trial,
                ended,
            )
            events.append(
                {
                    "type": "customer.subscription.deleted",
                    "created": _epoch(ended),
                    "data": {"object": gone},
                }
            )
        for n, event in enumerate(events):
            objects.append({"object": "event", "id": f"evt_{i}_{n}", **event})
        if events and i % 7 == 0:  # a webhook delivered twice
            objects.append({"object": "event", "id": f"evt_{i}_0", **events[-1]})

        for c in changes:
            status = "trialing" if c.status == "trialing" else "active"
            expected.append(
                {
                    "account_id": account,
                    "effective_at": c.at,
                    "plan_id": c.price,
                    "seats": c.quantity,
                    "mrr": _monthly(c.price, c.quantity),
                    "status": status,
                }
            )
        if trial and i % 8 != 0:  # no event at trial end: inferred from trial_end
            expected.append(
                {**expected[-len(changes)], "effective_at": trial[1], "status": "active"}
            )
        if ended:
            expected.append(
                {
                    "account_id": account,
                    "effective_at": ended,
                    "plan_id": final.price,
                    "seats": 0,
                    "mrr": 0.0,
                    "status": "canceled",
                }
            )
    frame = pd.DataFrame(expected)
    frame["effective_at"] = frame["effective_at"].astype("datetime64[us]")
    return objects, frame.sort_values(["account_id", "effective_at"]).reset_index(drop=True)


def _write_objects(path: Path, objects: list[dict]) -> Path:
    """As an API list page for prices/customers, JSON lines for the rest (both are accepted)."""
    path.mkdir(parents=True, exist_ok=True)
    listed = [o for o in objects if o["object"] in ("price", "customer")]
    (path / "lists.json").write_text(
        json.dumps({"object": "list", "data": listed, "has_more": False, "url": "/v1/prices"})
    )
    (path / "objects.jsonl").write_text(
        "\n".join(json.dumps(o) for o in objects if o["object"] not in ("price", "customer"))
    )
    return path


def test_generated_histories_round_trip_from_events_and_previous_attributes(tmp_path):
    objects, expected = render_stripe_history(seed=5)
    folder = _write_objects(tmp_path / "export", objects)
    summary = run_import("stripe", [folder], tmp_path / "ds", options=ImportOptions(tier_map=TIERS))
    got = _subscriptions(tmp_path / "ds" / "subscriptions.parquet")
    got = got.sort_values(["account_id", "effective_at"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_exact=False)

    plans = pd.read_parquet(tmp_path / "ds" / "plans.parquet").set_index("plan_id")
    assert plans["tier"].to_dict() == {p: TIERS[PRICES[p][0]] for p in PRICES}
    assert plans.loc["price_pro_annual", "seat_mrr"] == pytest.approx(490 / 12)
    assert plans.loc["price_basic", "name"] == "basic"
    accounts = pd.read_parquet(tmp_path / "ds" / "accounts.parquet")
    assert len(accounts) == 30
    assert accounts.set_index("account_id").loc["acct_003", "name"] == "Company 3"
    assert_balanced(summary)


def test_tiers_rank_by_monthly_amount_without_a_map(tmp_path):
    objects, _ = render_stripe_history(seed=1, n_accounts=2)
    run_import("stripe", [_write_objects(tmp_path / "x", objects)], tmp_path / "ds")
    tiers = pd.read_parquet(tmp_path / "ds" / "plans.parquet").set_index("plan_id")["tier"]
    # addon 5 < basic 19 < pro annual 40.83 < pro 49 < enterprise 199 per month
    assert tiers.to_dict() == {
        "price_addon": 1,
        "price_basic": 2,
        "price_pro_annual": 3,
        "price_pro": 4,
        "price_ent": 5,
    }


def test_an_incomplete_tier_map_quarantines_the_unmapped_price(tmp_path):
    objects, _ = render_stripe_history(seed=1, n_accounts=2)
    summary = run_import(
        "stripe",
        [_write_objects(tmp_path / "x", objects)],
        tmp_path / "ds",
        options=ImportOptions(tier_map={"prod_basic": 1, "prod_pro": 2, "price_ent": 3}),
    )
    assert summary.tables["plans"].quarantined == {"missing_tier": 1}  # price_addon


def _snapshot(
    sub_id: str,
    status: str,
    account: str | None,
    price: str = "price_pro",
    quantity: int = 2,
    **extra,
) -> dict:
    sub = _sub_object(
        sub_id,
        f"cus_{sub_id}",
        datetime(2024, 6, 1),
        Change(datetime(2024, 6, 1), price, quantity, status),
        None,
        None,
    )
    sub["metadata"] = {"account_id": account} if account else {}
    return {**sub, **extra}


def test_statuses_map_to_the_contract_and_incomplete_is_quarantined(tmp_path):
    objects = [
        _snapshot("sub_pd", "past_due", "acct_pd"),
        _snapshot("sub_un", "unpaid", "acct_un"),
        _snapshot("sub_in", "incomplete", "acct_in"),
        _snapshot("sub_wat", "exotic", "acct_wat"),
        _snapshot("sub_orphan", "active", None),
        {"object": "charge", "id": "ch_1"},
    ]
    path = tmp_path / "subs.json"
    path.write_text(json.dumps(objects))
    summary = run_import("stripe", [path], tmp_path / "ds")
    got = _subscriptions(tmp_path / "ds" / "subscriptions.parquet").set_index("account_id")
    assert got["status"].to_dict() == {"acct_pd": "active", "acct_un": "canceled"}
    assert got.loc["acct_pd", "mrr"] == 98.0
    assert got.loc["acct_un", "mrr"] == 0.0
    assert summary.tables["subscriptions"].quarantined == {
        "stripe_status_incomplete": 1,
        "invalid_status": 1,
        "missing_account_id": 1,
    }
    assert summary.skipped == {"stripe_charge": 1}


def test_an_account_with_two_subscriptions_adds_them_up(tmp_path):
    main = _snapshot("sub_main", "active", "acct_1", "price_pro", 3)
    addon = _snapshot(
        "sub_addon",
        "canceled",
        "acct_1",
        "price_addon",
        1,
        start_date=_epoch(datetime(2024, 6, 11)),
        ended_at=_epoch(datetime(2024, 7, 1)),
    )
    path = tmp_path / "subs.json"
    path.write_text(json.dumps([main, addon]))
    run_import("stripe", [path], tmp_path / "ds", options=ImportOptions(tier_map=TIERS))
    got = _subscriptions(tmp_path / "ds" / "subscriptions.parquet")
    assert got[["effective_at", "plan_id", "seats", "mrr", "status"]].values.tolist() == [
        [pd.Timestamp("2024-06-01"), "price_pro", 3, 147.0, "active"],
        [pd.Timestamp("2024-06-11"), "price_pro", 4, 152.0, "active"],
        [pd.Timestamp("2024-07-01"), "price_pro", 3, 147.0, "active"],
    ]


def test_cycle_invoices_give_history_without_events(tmp_path):
    sub = _snapshot("sub_inv", "active", "acct_inv", "price_ent", 4)
    invoices = []
    for month, quantity in ((6, 2), (7, 2), (8, 4)):
        period = _epoch(datetime(2024, month, 1))
        invoices.append(
            {
                "object": "invoice",
                "id": f"in_{month}",
                "customer": "cus_sub_inv",
                "status": "paid",
                "billing_reason": "subscription_create" if month == 6 else "subscription_cycle",
                "parent": {
                    "type": "subscription_details",
                    "subscription_details": {"subscription": "sub_inv"},
                },
                "lines": {
                    "object": "list",
                    "data": [
                        {
                            "object": "line_item",
                            "amount": 19900 * quantity,
                            "quantity": quantity,
                            "period": {"start": period, "end": period + 86400 * 30},
                            "pricing": {
                                "type": "price_details",
                                "price_details": {"price": "price_ent", "product": "prod_ent"},
                            },
                            "parent": {
                                "type": "subscription_item_details",
                                "subscription_item_details": {
                                    "proration": False,
                                    "subscription": "sub_inv",
                                },
                            },
                        },
                        {
                            "object": "line_item",
                            "amount": -500,
                            "quantity": 1,
                            "period": {"start": period, "end": period},
                            "pricing": {
                                "type": "price_details",
                                "price_details": {"price": "price_ent", "product": "prod_ent"},
                            },
                            "parent": {
                                "type": "subscription_item_details",
                                "subscription_item_details": {
                                    "proration": True,
                                    "subscription": "sub_inv",
                                },
                            },
                        },
                    ],
                },
            }
        )
    path = tmp_path / "objects.json"
    path.write_text(json.dumps([sub, *invoices]))
    summary = run_import("stripe", [path], tmp_path / "ds", options=ImportOptions(tier_map=TIERS))
    got = _subscriptions(tmp_path / "ds" / "subscriptions.parquet")
    assert got[["effective_at", "seats", "mrr"]].values.tolist() == [
        [pd.Timestamp("2024-06-01"), 2, 398.0],
        [pd.Timestamp("2024-08-01"), 4, 796.0],
    ]
    assert summary.tables["subscriptions"].deduplicated == 1  # July repeats June


def test_reconstruction_from_previous_attributes_alone(tmp_path):
    """Only an update event: the state before it is rebuilt and dated at start_date."""
    before = _snapshot("sub_x", "active", "acct_x", "price_basic", 5)
    after = copy.deepcopy(before)
    after["items"]["data"][0]["price"] = _price_object("price_pro")
    event = {
        "object": "event",
        "id": "evt_1",
        "type": "customer.subscription.updated",
        "created": _epoch(datetime(2024, 7, 15, 12)),
        "data": {"object": after, "previous_attributes": {"items": before["items"]}},
    }
    path = tmp_path / "events.json"
    path.write_text(json.dumps([event]))
    run_import("stripe", [path], tmp_path / "ds", options=ImportOptions(tier_map=TIERS))
    got = _subscriptions(tmp_path / "ds" / "subscriptions.parquet")
    assert got[["effective_at", "plan_id", "seats", "mrr"]].values.tolist() == [
        [pd.Timestamp("2024-06-01"), "price_basic", 5, 95.0],
        [pd.Timestamp("2024-07-15 12:00"), "price_pro", 5, 245.0],
    ]
