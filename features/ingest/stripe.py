"""Stripe: Subscription, SubscriptionItem, Price, Invoice, Customer and Event objects -> plans,
subscription history and account stubs.

Input: JSON files holding one object, an array, or an API list page (``{"object": "list",
"data": [...]}``), or JSON lines; objects are told apart by their ``object`` field. Other
objects (charges, payment intents, ...) are counted as skipped. A SubscriptionItem whose
subscription is nowhere in the export is quarantined as ``unknown_subscription``.

**Plans** are recurring prices: ``plan_id`` = price id, ``name`` = nickname, else the product's
name, else lookup_key, else product id; ``seat_mrr`` = the monthly unit price in major units
(None for tiered prices and prices with ``transform_quantity``). ``tier`` comes from
`ImportOptions.tier_map` (by price id, lookup_key, nickname or product id; when a map is given,
an unmapped price is quarantined as ``missing_tier``), else it is the dense rank of the monthly
unit amount (1 = cheapest).

**Money**: amounts are in minor units (divided by 100; zero-decimal currencies such as JPY are
not); ``unit_amount_decimal`` is preferred over ``unit_amount``; graduated and volume tiers and
``transform_quantity`` are applied. Monthly = amount / interval_count for ``month``, / 12 for
``year``, x 52 / 12 for ``week``, x 365 / 12 for ``day``. Metered items add nothing (their
usage is billed in arrears, not known from the subscription).

**A subscription state** -> ``plan_id`` = the price of the item with the highest monthly amount
(ties: first item), ``seats`` = the largest quantity among licensed items, ``mrr`` = the sum of
all items' monthly amounts. Status mapping (`options.DEFAULT_STRIPE_STATUSES`): active and
past_due (still provisioned while Stripe retries) -> active; trialing -> trialing; canceled,
unpaid, incomplete_expired, paused -> canceled; incomplete (first payment not made) is
quarantined as ``stripe_status_incomplete``. A canceled state has seats 0 and mrr 0.

**History** of one subscription, from the evidence available:

- Event objects (``customer.subscription.created/updated/deleted``): the state after each event
  at ``event.created``; the earliest ``updated`` event's ``previous_attributes`` applied to its
  object give the state before it, placed at the subscription's ``start_date`` (Stripe sends
  the whole ``items`` array when any item changed, so a plan or seat change is recovered).
- Invoices with ``billing_reason`` subscription_create / subscription_cycle: their
  non-proration subscription lines give the items billed from each line's period start.
- Without events or invoices, the Subscription object itself is placed at ``start_date``.
- A trial (``trial_start`` < ``trial_end``) makes states inside it ``trialing`` and adds an
  ``active`` state at ``trial_end`` when the subscription is no longer trialing.
- ``ended_at`` (else ``canceled_at`` when the status is canceled) adds a canceled state. A
  pending ``cancel_at_period_end`` is not a cancellation yet.

**Accounts**: the customer's account comes from `ImportOptions.stripe_customer_map`, else the
customer's ``metadata[<stripe_account_metadata_key>]`` (Customer objects or an expanded
``customer``), else the subscription's metadata, else (if allowed) the customer id; otherwise
the subscription's rows are quarantined as ``missing_account_id``. When an account has several
subscriptions at once their states are combined at every change: mrr and seats add up, the plan
is the live subscription with the highest tier, the status is active if any is, else trialing,
else canceled. Consecutive identical states are collapsed (counted as deduplicated). Each
account gets a stub row: ``created_at`` = the customer's ``created`` or its first subscription
start, ``name`` = the customer's name.
"""

from __future__ import annotations

import copy
import csv
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from features.contract import Reason
from features.ingest.activity import text_id
from features.ingest.options import ImportOptions
from features.ingest.readers import Origin, TimeParseError, to_utc
from features.ingest.staging import Staged

ZERO_DECIMAL_CURRENCIES = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
_MONTHS_PER_INTERVAL = {"month": 1.0, "year": 12.0, "week": 12.0 / 52.0, "day": 12.0 / 365.0}
_LIVE = ("active", "trialing")
_CYCLE_REASONS = ("subscription_create", "subscription_cycle", "subscription")
_SUBSCRIPTION_EVENTS = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)


class StripeInputError(ValueError):
    """A Stripe input that cannot be used at all (an unreadable customer map)."""


@dataclass
class _Event:
    created: datetime
    kind: str
    obj: dict[str, Any]
    previous: dict[str, Any] | None
    origin: Origin


@dataclass
class _Evidence:
    at: datetime
    obj: dict[str, Any]  # subscription-shaped: status, items
    origin: Origin


@dataclass
class _Objects:
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, tuple[dict[str, Any], Origin]] = field(default_factory=dict)
    items: dict[str, list[tuple[dict[str, Any], Origin]]] = field(default_factory=dict)
    events: dict[str, list[_Event]] = field(default_factory=dict)
    invoices: list[tuple[dict[str, Any], Origin]] = field(default_factory=list)
    price_origins: dict[str, Origin] = field(default_factory=dict)


@dataclass
class _Row:
    """One subscription's state from ``at`` on, as contract values."""

    at: datetime
    plan_id: str
    tier: int
    seats: int
    mrr: float
    status: str
    origin: Origin


def convert_stripe(paths: Iterable[Path], options: ImportOptions) -> Staged:
    """Stripe objects -> candidate plans, subscriptions and account stubs."""
    staged = Staged()
    objects = _collect(staged, paths)
    customer_map = load_customer_map(options.stripe_customer_map)
    tiers = _plans(staged, objects, options)

    per_account: dict[str, list[list[_Row]]] = {}
    first_seen: dict[str, tuple[datetime, Origin, str | None]] = {}
    subscription_ids = _subscription_ids(objects)
    for sub_id, items in objects.items.items():
        if sub_id not in subscription_ids:  # an item alone has no customer nor start date
            for _, origin in items:
                staged.quarantine("subscriptions", "unknown_subscription", origin)
    for sub_id in sorted(subscription_ids):
        evidence, latest, origin = _timeline(sub_id, objects)
        if latest is None or origin is None:
            continue
        if not evidence:
            staged.quarantine("subscriptions", Reason.missing("start_date"), origin)
            continue
        customer_id = _id_of(latest.get("customer"))
        account = _account_of(latest, customer_id, objects, customer_map, options)
        rows = _rows(evidence, latest, objects, tiers, options, staged)
        if account is None:
            for row in rows:
                staged.quarantine("subscriptions", Reason.missing("account_id"), row.origin)
            continue
        if not rows:
            continue
        per_account.setdefault(account, []).append(rows)
        customer = objects.customers.get(customer_id or "", {})
        created = _time(customer.get("created")) or rows[0].at
        known = first_seen.get(account)
        if known is None or created < known[0]:
            first_seen[account] = (created, origin, customer.get("name"))

    for account, subscriptions in per_account.items():
        combined = _combine(subscriptions)
        kept = _collapse(combined)
        staged.deduplicated["subscriptions"] += sum(map(len, subscriptions)) - len(kept)
        for row in kept:
            staged.add(
                "subscriptions",
                {
                    "account_id": account,
                    "effective_at": row.at,
                    "plan_id": row.plan_id,
                    "seats": row.seats,
                    "mrr": row.mrr,
                    "status": row.status,
                },
                row.origin,
            )
    for account, (created, origin, name) in first_seen.items():
        staged.add(
            "accounts",
            {"account_id": account, "created_at": created, "name": name},
            origin,
            stub=True,
        )
    return staged


# ----------------------------------------------------------------------------- reading


_OBJECT_TABLE = {
    "price": "plans",
    "plan": "plans",
    "product": "plans",
    "customer": "accounts",
    "subscription": "subscriptions",
    "subscription_item": "subscriptions",
    "invoice": "subscriptions",
}


def _collect(staged: Staged, paths: Iterable[Path]) -> _Objects:
    objects = _Objects()
    for record, origin in staged.read(paths):
        kind = record.get("object")
        if kind == "event":
            _collect_event(staged, objects, record, origin)
        elif kind in _OBJECT_TABLE:
            _collect_object(staged, objects, record, origin)
        else:
            staged.skip(f"stripe_{kind or 'untyped'}")
    return objects


def _collect_object(staged: Staged, objects: _Objects, obj: dict[str, Any], origin: Origin) -> None:
    kind = str(obj.get("object"))
    if kind == "invoice":
        objects.invoices.append((obj, origin))
        return
    obj_id = text_id(obj.get("id"))
    if obj_id is None:
        staged.quarantine(_OBJECT_TABLE[kind], Reason.missing("id"), origin)
    elif kind in ("price", "plan"):
        objects.prices[obj_id] = obj  # a later version (file order) replaces an earlier one
        objects.price_origins.setdefault(obj_id, origin)
    elif kind == "product":
        objects.products[obj_id] = obj
    elif kind == "customer":
        objects.customers[obj_id] = obj
    elif kind == "subscription":
        objects.subscriptions[obj_id] = (obj, origin)
        _collect_embedded(objects, obj, origin)
    else:  # subscription_item
        sub_id = text_id(obj.get("subscription"))
        if sub_id is None:
            staged.quarantine("subscriptions", Reason.missing("subscription"), origin)
            return
        objects.items.setdefault(sub_id, []).append((obj, origin))
        _collect_price(objects, obj, origin)


def _collect_embedded(objects: _Objects, sub: dict[str, Any], origin: Origin) -> None:
    for item in _items(sub):
        _collect_price(objects, item, origin)
    customer = sub.get("customer")
    if isinstance(customer, dict) and text_id(customer.get("id")):
        objects.customers.setdefault(customer["id"], customer)


def _collect_price(objects: _Objects, item: dict[str, Any], origin: Origin) -> None:
    price = item.get("price") if isinstance(item.get("price"), dict) else item.get("plan")
    if isinstance(price, dict) and text_id(price.get("id")):
        objects.prices.setdefault(price["id"], price)
        objects.price_origins.setdefault(price["id"], origin)
        product = price.get("product")
        if isinstance(product, dict) and text_id(product.get("id")):
            objects.products.setdefault(product["id"], product)


def _collect_event(
    staged: Staged, objects: _Objects, event: dict[str, Any], origin: Origin
) -> None:
    kind = str(event.get("type") or "")
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    obj = data.get("object")
    if kind not in _SUBSCRIPTION_EVENTS:
        if isinstance(obj, dict) and obj.get("object") in ("price", "plan", "product", "customer"):
            _collect_object(staged, objects, obj, origin)
        else:
            staged.skip(f"stripe_event_{kind or 'untyped'}")
        return
    created = staged.time("subscriptions", event.get("created"), origin, epoch_unit="s")
    if created is None:
        return
    if not isinstance(obj, dict) or text_id(obj.get("id")) is None:
        staged.quarantine("subscriptions", Reason.missing("data_object"), origin)
        return
    previous = data.get("previous_attributes")
    previous = previous if isinstance(previous, dict) else None
    objects.events.setdefault(str(text_id(obj["id"])), []).append(
        _Event(created, kind, obj, previous, origin)
    )
    _collect_embedded(objects, obj, origin)
    if previous:
        _collect_embedded(objects, previous, origin)  # the prices of the items before


def load_customer_map(path: Path | None) -> dict[str, str]:
    """customer_id -> account_id from a CSV (with those two columns) or a JSON object."""
    if path is None:
        return {}
    path = Path(path)
    try:
        if path.suffix.lower() == ".json":
            loaded = json.loads(path.read_text())
            if not isinstance(loaded, dict):
                raise StripeInputError(f"{path}: expected a JSON object customer_id -> account")
            return {str(k): str(v) for k, v in loaded.items()}
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if not {"customer_id", "account_id"} <= set(reader.fieldnames or ()):
                raise StripeInputError(f"{path}: needs columns customer_id and account_id")
            return {
                r["customer_id"].strip(): r["account_id"].strip()
                for r in reader
                if r["customer_id"] and r["account_id"]
            }
    except (OSError, json.JSONDecodeError) as exc:
        raise StripeInputError(f"cannot read customer map {path}: {exc}") from exc


# ----------------------------------------------------------------------------- prices and plans


def monthly_amount(
    price: dict[str, Any], quantity: float, *, metered: bool = False
) -> float | None:
    """What ``quantity`` units of a recurring price cost per month, in major units.

    None when the price cannot be valued: not recurring, no amount nor tiers, or metered
    (unless ``metered``: then the unit price of a metered price is valued too, for ranking).
    """
    recurring = price.get("recurring") if isinstance(price.get("recurring"), dict) else None
    interval = (recurring or {}).get("interval") or price.get("interval")  # legacy Plan
    count = (recurring or {}).get("interval_count") or price.get("interval_count") or 1
    usage = (recurring or {}).get("usage_type") or price.get("usage_type") or "licensed"
    if interval not in _MONTHS_PER_INTERVAL or (usage != "licensed" and not metered):
        return None
    transform = price.get("transform_quantity") or price.get("transform_usage")
    if isinstance(transform, dict) and transform.get("divide_by"):
        ratio = quantity / float(transform["divide_by"])
        quantity = math.ceil(ratio) if transform.get("round") == "up" else math.floor(ratio)
    if price.get("billing_scheme") == "tiered":
        if not price.get("tiers"):
            return None
        minor = _tiered(price["tiers"], price.get("tiers_mode"), quantity)
    else:
        unit = _unit_amount(price)
        if unit is None:
            return None
        minor = unit * quantity
    currency = str(price.get("currency") or "").lower()
    major = minor if currency in ZERO_DECIMAL_CURRENCIES else minor / 100.0
    return major / (_MONTHS_PER_INTERVAL[interval] * float(count))


def _is_recurring(price: dict[str, Any]) -> bool:
    recurring = price.get("recurring")
    return isinstance(recurring, dict) or price.get("object") == "plan"


def _unit_amount(price: dict[str, Any]) -> float | None:
    for key in ("unit_amount_decimal", "unit_amount", "amount_decimal", "amount"):
        value = price.get(key)
        if value is not None:
            try:
                return float(value)
            except (TypeError, ValueError):
                continue
    return None


def _tiered(tiers: list[dict[str, Any]], mode: str | None, quantity: float) -> float:
    def unit(t: dict[str, Any]) -> float:
        return float(t.get("unit_amount_decimal") or t.get("unit_amount") or 0)

    def flat(t: dict[str, Any]) -> float:
        return float(t.get("flat_amount_decimal") or t.get("flat_amount") or 0)

    if mode == "graduated":
        total, lower = 0.0, 0.0
        for t in tiers:
            upper = math.inf if t.get("up_to") in (None, "inf") else float(t["up_to"])
            if quantity > lower:
                total += unit(t) * (min(quantity, upper) - lower) + flat(t)
            lower = upper
        return total
    for t in tiers:  # volume: the whole quantity at the tier it falls in
        upper = math.inf if t.get("up_to") in (None, "inf") else float(t["up_to"])
        if quantity <= upper:
            return unit(t) * quantity + flat(t)
    return 0.0


def _plans(staged: Staged, objects: _Objects, options: ImportOptions) -> dict[str, int]:
    """Stage a plan row per recurring price; return price id -> tier."""
    recurring = {pid: p for pid, p in objects.prices.items() if _is_recurring(p)}
    unit_prices = {pid: monthly_amount(p, 1, metered=True) for pid, p in recurring.items()}
    ranked = sorted({round(v, 2) for v in unit_prices.values() if v is not None})
    tiers: dict[str, int] = {}
    for pid, price in sorted(recurring.items()):
        origin = objects.price_origins[pid]
        product_id = _id_of(price.get("product"))
        unit = unit_prices[pid]
        if options.tier_map:
            names = (pid, price.get("lookup_key"), price.get("nickname"), product_id)
            tier = next((options.tier_map[n] for n in names if n in options.tier_map), None)
        else:
            tier = None if unit is None else ranked.index(round(unit, 2)) + 1
        if tier is None:
            staged.quarantine("plans", Reason.missing("tier"), origin)
            continue
        tiers[pid] = tier
        product = objects.products.get(product_id or "", {})
        per_seat = price.get("billing_scheme") != "tiered" and not price.get("transform_quantity")
        staged.add(
            "plans",
            {
                "plan_id": pid,
                "tier": tier,
                "name": price.get("nickname")
                or product.get("name")
                or price.get("lookup_key")
                or product_id,
                "seat_mrr": unit if per_seat else None,
            },
            origin,
        )
    return tiers


# ----------------------------------------------------------------------------- history


def _subscription_ids(objects: _Objects) -> set[str]:
    ids = set(objects.subscriptions) | set(objects.events)
    for invoice, _ in objects.invoices:
        ids.update(s for s, _ in _invoice_lines(invoice))
    return ids


def _timeline(
    sub_id: str, objects: _Objects
) -> tuple[list[_Evidence], dict[str, Any] | None, Origin | None]:
    """Dated subscription states, the latest known object, and where it came from."""
    snapshot = objects.subscriptions.get(sub_id)
    events = sorted(objects.events.get(sub_id, []), key=lambda e: e.created)
    invoice_states = _invoice_states(sub_id, objects)
    if snapshot is not None:
        latest, origin = snapshot
        latest = _with_items(latest, [item for item, _ in objects.items.get(sub_id, [])])
    elif events:
        latest, origin = events[-1].obj, events[-1].origin
    elif invoice_states:
        latest, origin = invoice_states[-1].obj, invoice_states[-1].origin
    else:
        return [], None, None
    start = _time(latest.get("start_date")) or _time(latest.get("created"))
    evidence: list[_Evidence] = []
    if events:
        first = events[0]
        if first.kind.endswith(".created"):
            before = first.obj
        elif first.previous:
            before = {**copy.deepcopy(first.obj), **first.previous}
        else:  # only a deletion is known: the subscription ran until it
            before = {**first.obj, "status": "active"}
        evidence.append(_Evidence(start or first.created, before, first.origin))
        evidence += [_Evidence(e.created, e.obj, e.origin) for e in events]
    evidence += invoice_states
    if not evidence and start is not None:
        # A canceled snapshot ran until it ended; the cancellation row comes from ended_at.
        ended = latest.get("status") == "canceled" and (
            latest.get("ended_at") or latest.get("canceled_at")
        )
        running = {**latest, "status": "active"} if ended else latest
        evidence.append(_Evidence(start, running, origin))
    evidence.sort(key=lambda e: e.at)
    return evidence, latest, origin


def _invoice_lines(invoice: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(subscription id, line) for each non-proration subscription line of a cycle invoice."""
    if invoice.get("billing_reason") not in _CYCLE_REASONS or invoice.get("status") in (
        "draft",
        "void",
    ):
        return []
    parent = invoice.get("parent") if isinstance(invoice.get("parent"), dict) else {}
    details = (
        parent.get("subscription_details")
        if isinstance(parent.get("subscription_details"), dict)
        else {}
    )
    invoice_sub = _id_of(invoice.get("subscription")) or _id_of(details.get("subscription"))
    lines = (invoice.get("lines") or {}).get("data") or []
    out = []
    for line in lines:
        line_parent = line.get("parent") if isinstance(line.get("parent"), dict) else {}
        item_details = line_parent.get("subscription_item_details")
        item_details = item_details if isinstance(item_details, dict) else {}
        is_sub_line = (
            line.get("type") == "subscription"
            or line_parent.get("type") == "subscription_item_details"
        )
        proration = bool(line.get("proration") or item_details.get("proration"))
        sub = (
            _id_of(line.get("subscription"))
            or _id_of(item_details.get("subscription"))
            or invoice_sub
        )
        if is_sub_line and not proration and sub is not None:
            out.append((sub, line))
    return out


def _invoice_states(sub_id: str, objects: _Objects) -> list[_Evidence]:
    """The items each cycle invoice billed for ``sub_id``, dated at the line period start."""
    by_start: dict[datetime, tuple[dict[str, Any], Origin]] = {}
    for invoice, origin in objects.invoices:
        for sub, line in _invoice_lines(invoice):
            if sub != sub_id:
                continue
            start = _time((line.get("period") or {}).get("start"))
            price = (
                line.get("price")
                or line.get("plan")
                or ((line.get("pricing") or {}).get("price_details") or {}).get("price")
            )
            if start is None or price is None:
                continue
            state, _ = by_start.setdefault(
                start,
                (
                    {
                        "status": "active",
                        "customer": invoice.get("customer"),
                        "items": {"data": []},
                    },
                    origin,
                ),
            )
            state["items"]["data"].append({"price": price, "quantity": line.get("quantity")})
    return [_Evidence(at, state, origin) for at, (state, origin) in sorted(by_start.items())]


def _rows(
    evidence: list[_Evidence],
    latest: dict[str, Any],
    objects: _Objects,
    tiers: dict[str, int],
    options: ImportOptions,
    staged: Staged,
) -> list[_Row]:
    """Contract rows of one subscription: states, trial end and cancellation."""
    trial_start, trial_end = _time(latest.get("trial_start")), _time(latest.get("trial_end"))
    trial = (
        (trial_start, trial_end) if trial_start and trial_end and trial_start < trial_end else None
    )
    ended = _time(latest.get("ended_at"))
    if ended is None and latest.get("status") == "canceled":
        ended = _time(latest.get("canceled_at"))
    rows: list[_Row] = []
    after_end = 0  # states seen after the end (the deletion event itself): the end covers them
    for ev in evidence:
        if ended is not None and ev.at > ended:
            after_end += 1
            continue
        row = _state_row(ev, objects, tiers, options, staged)
        if row is None:
            continue
        if trial and row.status == "active" and trial[0] <= row.at < trial[1]:
            row.status = "trialing"
        rows.append(row)
    if trial and latest.get("status") != "trialing" and (ended is None or ended > trial[1]):
        before = [r for r in rows if r.at < trial[1]]
        if before and before[-1].status == "trialing" and all(r.at != trial[1] for r in rows):
            last = before[-1]
            rows.append(
                _Row(trial[1], last.plan_id, last.tier, last.seats, last.mrr, "active", last.origin)
            )
    if ended is not None and rows:
        last = max(rows, key=lambda r: r.at)
        rows.append(_Row(ended, last.plan_id, last.tier, 0, 0.0, "canceled", last.origin))
    rows.sort(key=lambda r: r.at)
    # Several states at one instant: the last one known holds.
    kept = [r for i, r in enumerate(rows) if i + 1 == len(rows) or rows[i + 1].at != r.at]
    staged.deduplicated["subscriptions"] += after_end + len(rows) - len(kept)
    return kept


def _state_row(
    ev: _Evidence, objects: _Objects, tiers: dict[str, int], options: ImportOptions, staged: Staged
) -> _Row | None:
    raw_status = str(ev.obj.get("status") or "active")
    if raw_status not in options.stripe_statuses:
        staged.quarantine("subscriptions", Reason.INVALID_STATUS, ev.origin)
        return None
    status = options.stripe_statuses[raw_status]
    if status is None:
        staged.quarantine("subscriptions", f"stripe_status_{raw_status}", ev.origin)
        return None
    priced: list[tuple[str, float, float, bool]] = []  # price id, quantity, monthly, licensed
    for item in _items(ev.obj):
        price_id = _id_of(item.get("price")) or _id_of(item.get("plan"))
        price = objects.prices.get(price_id or "")
        if price_id is None or price is None:
            staged.quarantine("subscriptions", Reason.missing("price"), ev.origin)
            return None
        quantity = float(item.get("quantity") or 0)
        monthly = monthly_amount(price, quantity)
        priced.append((price_id, quantity, monthly or 0.0, monthly is not None))
    if not priced:
        staged.quarantine("subscriptions", Reason.missing("items"), ev.origin)
        return None
    primary = max(priced, key=lambda p: p[2])  # max keeps the first of equal amounts
    if primary[0] not in tiers:
        staged.quarantine("subscriptions", Reason.UNKNOWN_PLAN, ev.origin)
        return None
    seats = int(max((q for _, q, _, licensed in priced if licensed), default=0))
    mrr = round(sum(m for _, _, m, _ in priced), 6)
    if status == "canceled":
        seats, mrr = 0, 0.0
    return _Row(ev.at, primary[0], tiers[primary[0]], seats, mrr, status, ev.origin)


def _combine(subscriptions: list[list[_Row]]) -> list[_Row]:
    """One account's state at every change of any of its subscriptions."""
    if len(subscriptions) == 1:
        return subscriptions[0]
    times = sorted({r.at for rows in subscriptions for r in rows})
    combined: list[_Row] = []
    for t in times:
        current = [[r for r in rows if r.at <= t][-1] for rows in subscriptions if rows[0].at <= t]
        changed = max((r for r in current if r.at == t), key=lambda r: r.tier)
        live = [r for r in current if r.status in _LIVE]
        if not live:
            combined.append(
                _Row(t, changed.plan_id, changed.tier, 0, 0.0, "canceled", changed.origin)
            )
            continue
        top = max(live, key=lambda r: (r.tier, r.mrr))
        status = "active" if any(r.status == "active" for r in live) else "trialing"
        combined.append(
            _Row(
                t,
                top.plan_id,
                top.tier,
                sum(r.seats for r in live),
                round(sum(r.mrr for r in live), 6),
                status,
                changed.origin,
            )
        )
    return combined


def _collapse(rows: list[_Row]) -> list[_Row]:
    """Drop rows that repeat the previous state (the contract has one row per change)."""
    kept: list[_Row] = []
    for r in rows:
        if kept and (kept[-1].plan_id, kept[-1].seats, kept[-1].mrr, kept[-1].status) == (
            r.plan_id,
            r.seats,
            r.mrr,
            r.status,
        ):
            continue
        kept.append(r)
    return kept


# ----------------------------------------------------------------------------- small helpers


def _items(sub: dict[str, Any]) -> list[dict[str, Any]]:
    items = sub.get("items")
    data = items.get("data") if isinstance(items, dict) else items
    if isinstance(data, list) and data:
        return [i for i in data if isinstance(i, dict)]
    if sub.get("plan"):  # subscriptions from before multi-item support
        return [{"plan": sub["plan"], "quantity": sub.get("quantity", 1)}]
    return []


def _with_items(sub: dict[str, Any], extra: list[dict[str, Any]]) -> dict[str, Any]:
    """A subscription whose item list also holds separately exported SubscriptionItems."""
    if not extra:
        return sub
    by_id = {i.get("id"): i for i in _items(sub)}
    by_id.update({i.get("id"): i for i in extra})
    return {**sub, "items": {"object": "list", "data": list(by_id.values())}}


def _account_of(
    sub: dict[str, Any],
    customer_id: str | None,
    objects: _Objects,
    customer_map: dict[str, str],
    options: ImportOptions,
) -> str | None:
    key = options.stripe_account_metadata_key
    if customer_id is not None and customer_id in customer_map:
        return customer_map[customer_id]
    customer = objects.customers.get(customer_id or "", {})
    for metadata in (customer.get("metadata"), sub.get("metadata")):
        if isinstance(metadata, dict) and text_id(metadata.get(key)):
            return text_id(metadata[key])
    return customer_id if options.stripe_customer_as_account else None


def _id_of(value: Any) -> str | None:
    return text_id(value.get("id")) if isinstance(value, dict) else text_id(value)


def _time(value: Any) -> datetime | None:
    try:
        return to_utc(value, epoch_unit="s")
    except TimeParseError:
        return None
