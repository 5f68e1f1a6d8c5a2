"""Writing simulated chunks as a dataset folder (DATA_CONTRACT.md), plus dirty-mode defects.

Tables that grow with the number of accounts are streamed chunk by chunk through one
`ParquetWriter` each, so memory is bounded by the chunk size. Writer options are fixed and no
wall-clock value is written, so a seed always produces byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from training.simulator import catalog as cat
from training.simulator.dynamics import DAY_US, SECOND_US, ChunkResult, list_price

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


def _schemas(dirty: bool) -> dict[str, pa.Schema]:
    s = pa.string()
    return {
        "accounts": pa.schema(
            [
                ("account_id", s),
                ("created_at", TS),
                ("name", s),
                ("segment", s),
                ("industry", s),
                ("region", s),
                ("csm_owner", s),
                ("employees", pa.int64()),
            ]
        ),
        "subscriptions": pa.schema(
            [
                ("account_id", s),
                ("effective_at", TS),
                ("plan_id", s),
                ("seats", pa.int64()),
                ("mrr", pa.float64()),
                ("status", s),
            ]
        ),
        "users": pa.schema(
            [
                ("user_id", s),
                ("account_id", s),
                ("created_at", TS),
                ("deactivated_at", TS),
                ("role", s),
            ]
        ),
        # Dirty data carries unparseable values and UTC offsets: only a string column can.
        "events": pa.schema(
            [
                ("account_id", s),
                ("timestamp", s if dirty else TS),
                ("event", s),
                ("user_id", s),
                ("event_id", s),
                ("quantity", pa.float64()),
            ]
        ),
        "outreach": pa.schema(
            [
                ("account_id", s),
                ("sent_at", TS),
                ("channel", s),
                ("trigger", s),
                ("holdout", pa.bool_()),
            ]
        ),
        f"{TRUTH_DIR}/expansion_probability": pa.schema(
            [("account_id", s), ("as_of", TS), ("p_expand_60d", pa.float64())]
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


def _iso(us: np.ndarray) -> pa.Array:
    """Naive ISO-8601 strings (UTC) at whole seconds."""
    secs = pa.array(np.asarray(us, dtype=np.int64) // SECOND_US, pa.timestamp("s"))
    return pc.strftime(secs, format="%Y-%m-%dT%H:%M:%S")


def write_static_tables(out_dir: Path) -> dict[str, int]:
    """The price list, quotas and event catalog: the same for every simulated dataset."""
    plans = pa.table(
        {
            "plan_id": [p.plan_id for p in cat.PLANS],
            "tier": pa.array([p.tier for p in cat.PLANS], pa.int64()),
            "name": [p.name for p in cat.PLANS],
            "base_mrr": [p.base_mrr for p in cat.PLANS],
            "seat_mrr": [p.seat_mrr for p in cat.PLANS],
        }
    )
    limits = pa.table(
        {
            "plan_id": [p.plan_id for m in cat.QUOTA_METRICS for p in cat.PLANS],
            "metric": [m for m in cat.QUOTA_METRICS for _ in cat.PLANS],
            "monthly_limit": [
                cat.QUOTA_LIMITS[m][p.tier - 1] for m in cat.QUOTA_METRICS for p in cat.PLANS
            ],
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
    for name, table in tables.items():
        pq.write_table(table, out_dir / f"{name}.parquet", **WRITE_OPTIONS)
    return {name: t.num_rows for name, t in tables.items()}


@dataclass
class WriteTotals:
    """Running counts over all chunks written so far."""

    rows: dict[str, int] = field(default_factory=dict)
    defects: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DEFECT_RATES, 0))
    mixed_timezone_rows: int = 0
    upgrades: int = 0
    seat_expansions: int = 0
    accounts: int = 0
    users: int = 0
    events: int = 0  # event ids issued (duplicates reuse ids)


class DatasetWriter:
    """Streams simulated chunks into the dataset folder; use as a context manager."""

    def __init__(self, out_dir: Path, total_accounts: int, start_us: int, dirty: bool) -> None:
        self.out_dir, self.dirty, self.start_us = out_dir, dirty, start_us
        self.account_width = max(6, len(str(total_accounts)))
        self.schemas = _schemas(dirty)
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.totals = WriteTotals()

    def __enter__(self) -> DatasetWriter:
        (self.out_dir / TRUTH_DIR).mkdir(parents=True, exist_ok=True)
        for name, schema in self.schemas.items():
            path = self.out_dir / f"{name}.parquet"
            self.writers[name] = pq.ParquetWriter(path, schema, **WRITE_OPTIONS)
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self.writers.values():
            w.close()

    def _write(self, name: str, columns: dict[str, pa.Array]) -> None:
        table = pa.table(columns, schema=self.schemas[name])
        self.writers[name].write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.totals.rows[name] = self.totals.rows.get(name, 0) + table.num_rows

    def write_chunk(self, res: ChunkResult, dirty_rng: np.random.Generator) -> None:
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
                "created_at": _ts(a["created_us"]),
                "name": pa.array(names, pa.string()),
                "segment": _take(cat.SEGMENTS, a["segment"]),
                "industry": _take(cat.INDUSTRIES, a["industry"]),
                "region": _take(cat.REGIONS, a["region"]),
                "csm_owner": _take(cat.CSM_OWNERS, a["csm"]),
                "employees": pa.array(a["employees"], pa.int64()),
            },
        )

        s = res.subscriptions
        canceled = s["status"] == STATUS_NAMES.index("canceled")
        mrr = np.where(canceled, 0.0, list_price(s["tier"], s["seats"]))
        self._write(
            "subscriptions",
            {
                "account_id": pc.take(acct_ids, pa.array(s["acct"])),
                "effective_at": _ts(s["time_us"]),
                "plan_id": _take(tuple(p.plan_id for p in cat.PLANS), s["tier"] - 1),
                "seats": pa.array(s["seats"], pa.int64()),
                "mrr": pa.array(np.round(mrr, 2), pa.float64()),
                "status": _take(STATUS_NAMES, s["status"]),
            },
        )

        u = res.users
        self._write(
            "users",
            {
                "user_id": user_ids,
                "account_id": pc.take(acct_ids, pa.array(u["acct"])),
                "created_at": _ts(u["created_us"]),
                "deactivated_at": _ts(u["deact_us"], null=u["deact_us"] == 0),
                "role": _take(cat.ROLES, u["role"]),
            },
        )

        o = res.outreach
        self._write(
            "outreach",
            {
                "account_id": pc.take(acct_ids, pa.array(o["acct"], pa.int64())),
                "sent_at": _ts(o["time_us"]),
                "channel": _take(cat.OUTREACH_CHANNELS, o["channel"]),
                "trigger": _take(cat.OUTREACH_TRIGGERS, o["trigger"]),
                "holdout": pa.array(o["holdout"].astype(bool), pa.bool_()),
            },
        )

        tr = res.expansion_truth
        self._write(
            f"{TRUTH_DIR}/expansion_probability",
            {
                "account_id": pc.take(acct_ids, pa.array(tr["acct"], pa.int64())),
                "as_of": _ts(self._day_us(tr["day"])),
                "p_expand_60d": pa.array(tr["p"], pa.float64()),
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
        self.writers["events"].write_table(table, row_group_size=ROW_GROUP_ROWS)
        t.rows["events"] = t.rows.get("events", 0) + table.num_rows
        for k, c in counts.items():
            t.defects[k] += c
        t.mixed_timezone_rows += n_mixed

    def write_manifest(self) -> None:
        manifest = {
            "events": dict(sorted(self.totals.defects.items())),
            "mixed_timezone_rows": self.totals.mixed_timezone_rows,
        }
        path = self.out_dir / TRUTH_DIR / "dirty_manifest.json"
        path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
