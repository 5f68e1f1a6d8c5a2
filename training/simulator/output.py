"""Writing simulated chunks as a dataset folder (DATA_CONTRACT.md), plus dirty-mode defects.

Tables that grow with the number of accounts are streamed chunk by chunk through one
`ParquetWriter` each, so memory is bounded by the chunk size. Writer options are fixed and no
wall-clock value is written, so a seed always produces byte-identical files.

Dirty mode puts defects in every table. Events get some in place (unknown accounts, bad
timestamps, negative quantities, duplicated ids, plus valid rows written with UTC offsets);
every table also gets defective copies of its own rows appended after each chunk (dated 100
years ahead, written with a zone abbreviation, NaN or infinite numbers, unknown accounts,
duplicate keys, ...), so that the clean rows of every table other than events are exactly
those of the clean twin. `_truth/dirty_manifest.parquet` lists every defective row (table,
1-based `source_row` as in the quarantine, key, defect, expected quarantine reason), and
`_truth/dirty_manifest.json` counts them per table and reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.contract import TABLES, Reason
from training.simulator import catalog as cat
from training.simulator.dynamics import DAY_US, SECOND_US, ChunkResult, list_price
from training.simulator.pricing import PricingShape, plans_table, price_subscriptions

TS = pa.timestamp("us")
WRITE_OPTIONS = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
}
ROW_GROUP_ROWS = 1 << 20
TRUTH_DIR = "_truth"

STATUS_NAMES = ("pending", "trialing", "active", "canceled")  # index = dynamics status code
DEFECT_RATES = {
    "duplicate_event_id": 0.002,
    "unknown_account": 0.001,
    "unparseable_timestamp": 0.001,
    "negative_quantity": 0.001,
}
MIXED_TIMEZONE_RATE = 0.004
TZ_OFFSETS_MINUTES = (120, -300, 330, -480, 60, 540)
BAD_TIMESTAMPS = ("not-a-date", "2024-13-45T99:00", "2024-02-30T10:00:00", "31/31/2024 25:61")
# Appended defective copies: this share of a chunk's rows per defect, at least one row each.
COPY_DEFECT_RATE = 0.001
ZONE_ABBREVIATIONS = ("PST", "EST", "CEST", "BST", "IST", "CET")
FUTURE_YEARS = 100  # future-dated copies: far past any moment a dataset is loaded at
# Tables whose time column is text in dirty mode (only text can carry a zone abbreviation).
TEXT_TIME_COLUMNS = {
    "accounts": "created_at",
    "subscriptions": "effective_at",
    "users": "created_at",
    "events": "timestamp",
    "outreach": "sent_at",
}
MANIFEST_SCHEMA = pa.schema(
    [
        ("table", pa.string()),
        ("source_row", pa.int64()),
        ("key", pa.string()),
        ("defect", pa.string()),
        ("reason", pa.string()),
    ]
)


@dataclass
class DirtyContext:
    """What defective copies are made of: a far-future date and made-up account ids."""

    future_text: str
    ghosts: int = 0

    def ghost(self) -> str:
        self.ghosts += 1
        return f"acct_ghost{self.ghosts:06d}"


Mutation = Callable[[dict[str, Any], DirtyContext, np.random.Generator], None]


def _set(column: str, value: Any) -> Mutation:
    def apply(row: dict[str, Any], ctx: DirtyContext, rng: np.random.Generator) -> None:
        row[column] = value

    return apply


def _future(column: str) -> Mutation:
    def apply(row: dict[str, Any], ctx: DirtyContext, rng: np.random.Generator) -> None:
        row[column] = ctx.future_text

    return apply


def _zone(column: str) -> Mutation:
    """The same wall-clock text with an abbreviation appended: what a careless export does."""

    def apply(row: dict[str, Any], ctx: DirtyContext, rng: np.random.Generator) -> None:
        abbreviation = ZONE_ABBREVIATIONS[int(rng.integers(len(ZONE_ABBREVIATIONS)))]
        row[column] = f"{str(row[column])[:19]} {abbreviation}"

    return apply


def _ghost_account(row: dict[str, Any], ctx: DirtyContext, rng: np.random.Generator) -> None:
    row["account_id"] = ctx.ghost()


def _negative(column: str) -> Mutation:
    def apply(row: dict[str, Any], ctx: DirtyContext, rng: np.random.Generator) -> None:
        row[column] = -abs(float(row[column])) - 1.0

    return apply


def _no_change(row: dict[str, Any], ctx: DirtyContext, rng: np.random.Generator) -> None:
    """An exact copy: a duplicate key, later in the file than its original."""


def _time_defects(column: str) -> list[tuple[str, str, Mutation]]:
    return [
        ("future_timestamp", Reason.FUTURE_TIMESTAMP, _future(column)),
        ("zone_abbreviation", Reason.AMBIGUOUS_TIMEZONE, _zone(column)),
        ("bad_timestamp_text", Reason.unparseable(column), _set(column, "not-a-date")),
    ]


# table -> (defect, expected quarantine reason, how a copy of a clean row is spoiled). Each
# copy breaks one row rule, which the loader checks before duplicate keys: the copy is
# quarantined for that reason and its original stays clean.
COPY_DEFECTS: dict[str, list[tuple[str, str, Mutation]]] = {
    "accounts": [
        *_time_defects("created_at"),
        ("nan_employees", Reason.non_finite("employees"), _set("employees", float("nan"))),
        ("duplicate_key", Reason.duplicate(TABLES["accounts"].key), _no_change),
    ],
    "subscriptions": [
        *_time_defects("effective_at"),
        ("nan_mrr", Reason.non_finite("mrr"), _set("mrr", float("nan"))),
        ("inf_seats", Reason.non_finite("seats"), _set("seats", float("inf"))),
        ("negative_mrr", Reason.NEGATIVE_MRR, _negative("mrr")),
        ("unknown_account", Reason.UNKNOWN_ACCOUNT, _ghost_account),
    ],
    "users": [
        *_time_defects("created_at"),
        ("duplicate_key", Reason.duplicate(TABLES["users"].key), _no_change),
        ("unknown_account", Reason.UNKNOWN_ACCOUNT, _ghost_account),
    ],
    "events": [
        ("future_timestamp", Reason.FUTURE_TIMESTAMP, _future("timestamp")),
        ("zone_abbreviation", Reason.AMBIGUOUS_TIMEZONE, _zone("timestamp")),
        ("nan_quantity", Reason.non_finite("quantity"), _set("quantity", float("nan"))),
        ("inf_quantity", Reason.non_finite("quantity"), _set("quantity", float("inf"))),
        ("minus_inf_quantity", Reason.non_finite("quantity"), _set("quantity", float("-inf"))),
    ],
    "outreach": [
        *_time_defects("sent_at"),
        ("invalid_channel", Reason.INVALID_CHANNEL, _set("channel", "carrier_pigeon")),
        ("unknown_account", Reason.UNKNOWN_ACCOUNT, _ghost_account),
    ],
    "plans": [
        ("nan_base_mrr", Reason.non_finite("base_mrr"), _set("base_mrr", float("nan"))),
        ("inf_seat_mrr", Reason.non_finite("seat_mrr"), _set("seat_mrr", float("inf"))),
    ],
    "plan_limits": [
        ("inf_monthly_limit", Reason.non_finite("monthly_limit"), _set("monthly_limit", np.inf)),
        ("negative_monthly_limit", Reason.NEGATIVE_LIMIT, _negative("monthly_limit")),
    ],
    "event_catalog": [
        ("invalid_signal", Reason.INVALID_SIGNAL, _set("signal", "telepathy")),
    ],
}


def _row_key(table: str, row: dict[str, Any]) -> str:
    """The row's contract key as text (keyless tables: account and time)."""
    key = TABLES[table].key or ("account_id", TABLES[table].time_column or "")
    return "|".join("" if row.get(k) is None else str(row[k]) for k in key)


def append_defects(
    name: str,
    table: pa.Table,
    rng: np.random.Generator,
    ctx: DirtyContext,
    rows_before: int,
    eligible: np.ndarray | None = None,
) -> tuple[pa.Table, list[dict[str, Any]]]:
    """`table` plus one defective copy of a random clean row per defect (more for large
    chunks), and the manifest rows naming each copy by its 1-based row in the file."""
    pool = np.arange(table.num_rows) if eligible is None else np.asarray(eligible)
    if not len(pool):
        return table, []
    copies: list[dict[str, Any]] = []
    manifest: list[dict[str, Any]] = []
    for defect, reason, spoil in COPY_DEFECTS[name]:
        n = max(1, round(table.num_rows * COPY_DEFECT_RATE))
        originals = np.sort(rng.choice(pool, n, replace=len(pool) < n))
        for row in table.take(pa.array(originals)).to_pylist():
            spoil(row, ctx, rng)
            copies.append(row)
            manifest.append(
                {
                    "table": name,
                    "source_row": rows_before + table.num_rows + len(copies),
                    "key": _row_key(name, row),
                    "defect": defect,
                    "reason": reason,
                }
            )
    return pa.concat_tables([table, pa.Table.from_pylist(copies, schema=table.schema)]), manifest


def _schemas(dirty: bool) -> dict[str, pa.Schema]:
    s = pa.string()
    # Dirty data carries text times (bad values, offsets, zone abbreviations) and non-finite
    # counts: only strings and floats can. Truth tables and deactivated_at stay typed.
    when = s if dirty else TS
    count = pa.float64() if dirty else pa.int64()
    return {
        "accounts": pa.schema(
            [
                ("account_id", s),
                ("created_at", when),
                ("name", s),
                ("segment", s),
                ("industry", s),
                ("region", s),
                ("csm_owner", s),
                ("employees", count),
            ]
        ),
        "subscriptions": pa.schema(
            [
                ("account_id", s),
                ("effective_at", when),
                ("plan_id", s),
                ("seats", count),
                ("mrr", pa.float64()),
                ("status", s),
            ]
        ),
        "users": pa.schema(
            [
                ("user_id", s),
                ("account_id", s),
                ("created_at", when),
                ("deactivated_at", TS),
                ("role", s),
            ]
        ),
        "events": pa.schema(
            [
                ("account_id", s),
                ("timestamp", when),
                ("event", s),
                ("user_id", s),
                ("event_id", s),
                ("quantity", pa.float64()),
            ]
        ),
        "outreach": pa.schema(
            [
                ("account_id", s),
                ("sent_at", when),
                ("channel", s),
                ("trigger", s),
                ("holdout", pa.bool_()),
            ]
        ),
        f"{TRUTH_DIR}/expansion_probability": pa.schema(
            [
                ("account_id", s),
                ("as_of", TS),
                ("p_expand_60d", pa.float64()),
                # Had the account been touched at as_of (training.simulator.treatment): the
                # true individual effect is p_expand_60d_touched - p_expand_60d.
                ("p_expand_60d_touched", pa.float64()),
                ("touch_effect", pa.float64()),
            ]
        ),
        f"{TRUTH_DIR}/outreach_effect": pa.schema(
            [
                ("account_id", s),
                ("sent_at", TS),
                ("holdout", pa.bool_()),
                ("touch_effect", pa.float64()),  # hazard factor it gave (or would have)
            ]
        ),
        f"{TRUTH_DIR}/post_upsell_probability": pa.schema(
            [
                ("account_id", s),
                ("expanded_at", TS),
                ("p_churn_90d", pa.float64()),
                ("kind", s),
                ("adopted", pa.bool_()),
                ("quota_forced", pa.bool_()),
            ]
        ),
    }


def format_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """String identifiers like `acct_000042`; negative numbers become nulls."""
    numbers = np.asarray(numbers, dtype=np.int64)
    arr = pa.array(numbers, pa.int64(), mask=numbers < 0)
    digits = pc.utf8_lpad(pc.cast(arr, pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _take(names: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    return pc.take(pa.array(names, pa.string()), pa.array(np.asarray(codes, dtype=np.int64)))


def _ts(us: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64), TS, mask=null)


def _iso_us(us: np.ndarray) -> pa.Array:
    """Naive ISO-8601 strings (UTC) to the microsecond: the exact instant, as text."""
    return pc.strftime(_ts(us), format="%Y-%m-%dT%H:%M:%S")


def _iso(us: np.ndarray) -> pa.Array:
    """Naive ISO-8601 strings (UTC) at whole seconds."""
    secs = pa.array(np.asarray(us, dtype=np.int64) // SECOND_US, pa.timestamp("s"))
    return pc.strftime(secs, format="%Y-%m-%dT%H:%M:%S")


def write_static_tables(
    out_dir: Path,
    dirty_rng: np.random.Generator | None = None,
    pricing: PricingShape = PricingShape(),
    *,
    plan_limits: bool = True,
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """The price list, quotas and event catalog: the same for every simulated dataset.

    With `dirty_rng`, defective copies are appended; returns the row counts and the manifest
    rows of those copies."""
    plans = plans_table(pricing)
    ids, tiers = plans["plan_id"].to_pylist(), plans["tier"].to_pylist()
    limits = pa.table(
        {
            "plan_id": [p for m in cat.QUOTA_METRICS for p in ids],
            "metric": [m for m in cat.QUOTA_METRICS for _ in ids],
            "monthly_limit": [cat.QUOTA_LIMITS[m][t - 1] for m in cat.QUOTA_METRICS for t in tiers],
        }
    )
    catalog = pa.table(
        {
            "event": [e.event for e in cat.EVENTS],
            "feature": [e.feature for e in cat.EVENTS],
            "workflow": [e.workflow for e in cat.EVENTS],
            "power": [e.power for e in cat.EVENTS],
            "min_tier": pa.array([e.min_tier for e in cat.EVENTS], pa.int64()),
            "quota_metric": pa.array([e.quota_metric for e in cat.EVENTS], pa.string()),
            "signal": pa.array([e.signal for e in cat.EVENTS], pa.string()),
        }
    )
    tables = {"plans": plans, "plan_limits": limits, "event_catalog": catalog}
    if not plan_limits:
        del tables["plan_limits"]
        (out_dir / "plan_limits.parquet").unlink(missing_ok=True)
    manifest: list[dict[str, Any]] = []
    for name, table in tables.items():
        if dirty_rng is not None:
            table, injected = append_defects(name, table, dirty_rng, DirtyContext(""), 0)
            tables[name] = table
            manifest += injected
        pq.write_table(table, out_dir / f"{name}.parquet", **WRITE_OPTIONS)
    return {name: t.num_rows for name, t in tables.items()}, manifest


@dataclass
class WriteTotals:
    """Running counts over all chunks written so far."""

    rows: dict[str, int] = field(default_factory=dict)
    defects: list[dict[str, Any]] = field(default_factory=list)  # manifest rows, dirty mode
    mixed_timezone_rows: int = 0
    upgrades: int = 0
    seat_expansions: int = 0
    accounts: int = 0
    users: int = 0
    events: int = 0  # event ids issued (duplicates reuse ids)


class DatasetWriter:
    """Streams simulated chunks into the dataset folder; use as a context manager."""

    def __init__(
        self,
        out_dir: Path,
        total_accounts: int,
        start_us: int,
        dirty: bool,
        *,
        pricing: PricingShape = PricingShape(),
        outreach: bool = True,
    ) -> None:
        self.out_dir, self.dirty, self.start_us = out_dir, dirty, start_us
        self.pricing = pricing
        self.account_width = max(6, len(str(total_accounts)))
        self.schemas = _schemas(dirty)
        if pricing.discount_share > 0:  # the price before discounts tells repricing apart
            self.schemas["subscriptions"] = self.schemas["subscriptions"].append(
                pa.field("list_mrr", pa.float64())
            )
        if not outreach:  # the optional table is left out, not written empty
            del self.schemas["outreach"]
            del self.schemas[f"{TRUTH_DIR}/outreach_effect"]  # no touches, no effects
            (out_dir / "outreach.parquet").unlink(missing_ok=True)
            (out_dir / TRUTH_DIR / "outreach_effect.parquet").unlink(missing_ok=True)
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.totals = WriteTotals()
        future_us = np.array([start_us + FUTURE_YEARS * 365 * DAY_US])
        self.dirty_context = DirtyContext(future_text=_iso(future_us).to_pylist()[0])

    def __enter__(self) -> DatasetWriter:
        (self.out_dir / TRUTH_DIR).mkdir(parents=True, exist_ok=True)
        for name, schema in self.schemas.items():
            path = self.out_dir / f"{name}.parquet"
            self.writers[name] = pq.ParquetWriter(path, schema, **WRITE_OPTIONS)
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self.writers.values():
            w.close()

    def _write(
        self, name: str, columns: dict[str, pa.Array], rng: np.random.Generator | None = None
    ) -> None:
        schema = self.schemas[name]
        table = pa.table({k: v.cast(schema.field(k).type) for k, v in columns.items()})
        if rng is not None and self.dirty:
            table, injected = append_defects(
                name, table, rng, self.dirty_context, self.totals.rows.get(name, 0)
            )
            self.totals.defects += injected
        self.writers[name].write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.totals.rows[name] = self.totals.rows.get(name, 0) + table.num_rows

    def _when(self, us: np.ndarray) -> pa.Array:
        """A time column: typed, or exact ISO text in dirty mode (see `_schemas`)."""
        return _iso_us(us) if self.dirty else _ts(us)

    def write_chunk(
        self,
        res: ChunkResult,
        dirty_rng: np.random.Generator,
        pricing_rng: np.random.Generator | None = None,
    ) -> None:
        t = self.totals
        n = len(res.accounts["created_us"])
        acct_ids = format_ids("acct_", np.arange(t.accounts, t.accounts + n), self.account_width)
        n_users = len(res.users["acct"])
        user_ids = format_ids("user_", np.arange(t.users, t.users + n_users), 9)

        a = res.accounts
        parts = a["name_parts"]
        names = [
            f"{cat.NAME_LEFT[p0 % len(cat.NAME_LEFT)]} {cat.NAME_RIGHT[p1 % len(cat.NAME_RIGHT)]}"
            f" {cat.NAME_SUFFIX[p2 % len(cat.NAME_SUFFIX)]}"
            for p0, p1, p2 in parts.tolist()
        ]
        self._write(
            "accounts",
            {
                "account_id": acct_ids,
                "created_at": self._when(a["created_us"]),
                "name": pa.array(names, pa.string()),
                "segment": _take(cat.SEGMENTS, a["segment"]),
                "industry": _take(cat.INDUSTRIES, a["industry"]),
                "region": _take(cat.REGIONS, a["region"]),
                "csm_owner": _take(cat.CSM_OWNERS, a["csm"]),
                "employees": pa.array(a["employees"], pa.int64()),
            },
            dirty_rng,
        )

        s = res.subscriptions
        if self.pricing == PricingShape():
            canceled = s["status"] == STATUS_NAMES.index("canceled")
            mrr = np.where(canceled, 0.0, list_price(s["tier"], s["seats"]))
            plan_id = _take(tuple(p.plan_id for p in cat.PLANS), s["tier"] - 1)
        else:
            s = price_subscriptions(
                self.pricing,
                s,
                a["created_us"],
                STATUS_NAMES.index("canceled"),
                STATUS_NAMES.index("active"),
                pricing_rng or np.random.default_rng(0),
            )
            mrr, plan_id = s["mrr"], pa.array(s["plan_id"].tolist(), pa.string())
        extra = {"list_mrr": pa.array(s["list_mrr"])} if self.pricing.discount_share > 0 else {}
        self._write(
            "subscriptions",
            {
                "account_id": pc.take(acct_ids, pa.array(s["acct"])),
                "effective_at": self._when(s["time_us"]),
                "plan_id": plan_id,
                "seats": pa.array(s["seats"], pa.int64()),
                "mrr": pa.array(np.round(mrr, 2), pa.float64()),
                "status": _take(STATUS_NAMES, s["status"]),
                **extra,
            },
            dirty_rng,
        )

        u = res.users
        self._write(
            "users",
            {
                "user_id": user_ids,
                "account_id": pc.take(acct_ids, pa.array(u["acct"])),
                "created_at": self._when(u["created_us"]),
                "deactivated_at": _ts(u["deact_us"], null=u["deact_us"] == 0),
                "role": _take(cat.ROLES, u["role"]),
            },
            dirty_rng,
        )

        if "outreach" in self.schemas:  # left out for a dataset without upsell touches
            o = res.outreach
            self._write(
                "outreach",
                {
                    "account_id": pc.take(acct_ids, pa.array(o["acct"], pa.int64())),
                    "sent_at": self._when(o["time_us"]),
                    "channel": _take(cat.OUTREACH_CHANNELS, o["channel"]),
                    "trigger": _take(cat.OUTREACH_TRIGGERS, o["trigger"]),
                    "holdout": pa.array(o["holdout"].astype(bool), pa.bool_()),
                },
                dirty_rng,
            )

        tr = res.expansion_truth
        self._write(
            f"{TRUTH_DIR}/expansion_probability",
            {
                "account_id": pc.take(acct_ids, pa.array(tr["acct"], pa.int64())),
                "as_of": _ts(self._day_us(tr["day"])),
                "p_expand_60d": pa.array(tr["p"], pa.float64()),
                "p_expand_60d_touched": pa.array(tr["p_touched"], pa.float64()),
                "touch_effect": pa.array(tr["effect"], pa.float64()),
            },
        )
        if "outreach" in self.schemas:
            self._write(
                f"{TRUTH_DIR}/outreach_effect",
                {
                    "account_id": pc.take(acct_ids, pa.array(o["acct"], pa.int64())),
                    "sent_at": _ts(o["time_us"]),
                    "holdout": pa.array(o["holdout"].astype(bool), pa.bool_()),
                    "touch_effect": pa.array(o["effect"], pa.float64()),
                },
            )
        pt = res.post_upsell_truth
        kinds = pt["kind"].astype(np.int64)
        self._write(
            f"{TRUTH_DIR}/post_upsell_probability",
            {
                "account_id": pc.take(acct_ids, pa.array(pt["acct"], pa.int64())),
                "expanded_at": _ts(pt["time_us"]),
                "p_churn_90d": pa.array(pt["p"], pa.float64()),
                "kind": _take(("", "upgrade", "expansion"), kinds),
                "adopted": pa.array(pt["adopted"].astype(bool), pa.bool_()),
                "quota_forced": pa.array(pt["forced"].astype(bool), pa.bool_()),
            },
        )
        t.upgrades += int((kinds == 1).sum())
        t.seat_expansions += int((kinds == 2).sum())

        self._write_events(res.events, acct_ids, user_ids, dirty_rng)
        t.accounts += n
        t.users += n_users

    def _day_us(self, day: np.ndarray) -> np.ndarray:
        return self.start_us + np.asarray(day, dtype=np.int64) * DAY_US

    def _write_events(
        self,
        ev: dict[str, np.ndarray],
        acct_ids: pa.Array,
        user_ids: pa.Array,
        rng: np.random.Generator,
    ) -> None:
        m = len(ev["acct"])
        t = self.totals
        event_no = np.arange(t.events, t.events + m)
        t.events += m
        acct = ev["acct"].astype(np.int64)
        user = ev["user"].astype(np.int64)
        qty = ev["quantity"].astype(np.float64).copy()
        if not self.dirty:
            self._write(
                "events",
                {
                    "account_id": pc.take(acct_ids, pa.array(acct)),
                    "timestamp": _ts(ev["time_us"]),
                    "event": _take(tuple(e.event for e in cat.EVENTS), ev["event"]),
                    "user_id": pc.take(user_ids, pa.array(user, mask=user < 0)),
                    "event_id": format_ids("evt_", event_no, 11),
                    "quantity": pa.array(qty, pa.float64()),
                },
            )
            return

        # Dirty mode: each defect on its own row, chosen without replacement; duplicates are
        # exact copies of clean rows appended after the chunk (later in file order).
        counts = {k: round(m * r) if m >= 1000 else 0 for k, r in DEFECT_RATES.items()}
        n_mixed = round(m * MIXED_TIMEZONE_RATE) if m >= 1000 else 0
        picked = rng.choice(m, sum(counts.values()) + n_mixed, replace=False)
        groups: dict[str, np.ndarray] = {}
        pos = 0
        for k, c in [*counts.items(), ("mixed_timezone", n_mixed)]:
            groups[k] = np.sort(picked[pos : pos + c])
            pos += c

        # Unknown accounts point past the chunk's account ids, into made-up ones.
        unknown = groups["unknown_account"]
        ghost_ids = format_ids("acct_x", np.arange(t.accounts, t.accounts + len(unknown)), 7)
        acct_dict = pa.concat_arrays([acct_ids, ghost_ids])
        acct[unknown] = len(acct_ids) + np.arange(len(unknown))
        user[unknown] = -1  # their users would belong to another account
        qty[groups["negative_quantity"]] *= -1.0

        stamps = _iso(ev["time_us"])
        bad = groups["unparseable_timestamp"]
        mixed = groups["mixed_timezone"]
        replace_rows = np.concatenate([bad, mixed])
        order = np.argsort(replace_rows)
        offsets = np.array(TZ_OFFSETS_MINUTES)[rng.integers(0, len(TZ_OFFSETS_MINUTES), len(mixed))]
        local = _iso(ev["time_us"][mixed] + offsets * 60 * SECOND_US).to_pylist()
        # The same instant written in local time with its offset: valid, converted to UTC.
        mixed_text = [
            f"{s}{'+' if o >= 0 else '-'}{abs(o) // 60:02d}:{abs(o) % 60:02d}"
            for s, o in zip(local, offsets.tolist(), strict=True)
        ]
        bad_text = [BAD_TIMESTAMPS[i] for i in rng.integers(0, len(BAD_TIMESTAMPS), len(bad))]
        values = np.array(bad_text + mixed_text, dtype=object)[order]
        mask = np.zeros(m, dtype=bool)
        mask[replace_rows] = True
        if len(replace_rows):
            stamps = pc.replace_with_mask(stamps, pa.array(mask), pa.array(values, pa.string()))

        table = pa.table(
            {
                "account_id": pc.take(acct_dict, pa.array(acct)),
                "timestamp": stamps,
                "event": _take(tuple(e.event for e in cat.EVENTS), ev["event"]),
                "user_id": pc.take(user_ids, pa.array(user, mask=user < 0)),
                "event_id": format_ids("evt_", event_no, 11),
                "quantity": pa.array(qty, pa.float64()),
            },
            schema=self.schemas["events"],
        )
        dup = groups["duplicate_event_id"]
        table = pa.concat_tables([table, table.take(pa.array(dup))])
        before = t.rows.get("events", 0)
        # Rows spoiled in place, by their 1-based row in the file; duplicates follow the chunk.
        spoiled = [(k, groups[k]) for k in DEFECT_RATES if k != "duplicate_event_id"]
        spoiled.append(("duplicate_event_id", m + np.arange(len(dup))))
        event_ids = table.column("event_id")
        for defect, rows in spoiled:
            for i in rows.tolist():
                t.defects.append(
                    {
                        "table": "events",
                        "source_row": before + i + 1,
                        "key": event_ids[i].as_py(),
                        "defect": defect,
                        "reason": defect,
                    }
                )
        # Defective copies of rows left as they were (so each offset row stays one of a kind).
        intact = np.setdiff1d(np.arange(m), np.concatenate([picked, dup]))
        table, injected = append_defects(
            "events", table, rng, self.dirty_context, before, eligible=intact
        )
        t.defects += injected
        self.writers["events"].write_table(table, row_group_size=ROW_GROUP_ROWS)
        t.rows["events"] = before + table.num_rows
        t.mixed_timezone_rows += n_mixed

    def write_manifest(self, static_defects: list[dict[str, Any]]) -> None:
        """`_truth/dirty_manifest.parquet`: every defective row; `.json`: counts per table and
        reason, plus the valid rows written with UTC offsets."""
        rows = sorted(
            static_defects + self.totals.defects, key=lambda r: (r["table"], r["source_row"])
        )
        pq.write_table(
            pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA),
            self.out_dir / TRUTH_DIR / "dirty_manifest.parquet",
            **WRITE_OPTIONS,
        )
        manifest: dict[str, Any] = defect_counts(rows)
        manifest["mixed_timezone_rows"] = self.totals.mixed_timezone_rows
        path = self.out_dir / TRUTH_DIR / "dirty_manifest.json"
        path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def defect_counts(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Manifest rows counted per table and expected reason."""
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        per_table = counts.setdefault(r["table"], {})
        per_table[r["reason"]] = per_table.get(r["reason"], 0) + 1
    return {t: dict(sorted(c.items())) for t, c in sorted(counts.items())}
