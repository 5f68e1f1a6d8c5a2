"""Import machinery shared by every source: reading containers, times, writing and merging.

Also holds `make_world`, the seeded ground truth (accounts, users, events) that the vendor tests
render into each vendor's export shape and expect back after the import.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from features.ingest import ImportSummary, IngestError, run_import
from features.ingest.readers import iter_records, to_utc
from features.ingest.staging import Staged
from features.ingest.writer import write_import

FIXTURES = Path(__file__).parent / "fixtures" / "formats"


# ----------------------------------------------------------------------------- ground truth


@dataclass
class World:
    """What happened, in contract terms; vendor tests render it and expect it back."""

    accounts: pd.DataFrame  # account_id, created_at, name, industry, employees
    users: pd.DataFrame  # user_id, account_id, created_at
    events: pd.DataFrame  # event_id, account_id, user_id, timestamp, event


def make_world(seed: int = 7, n_accounts: int = 25, n_events: int = 3000) -> World:
    """A seeded world: every user belongs to one account and acts after both were created."""
    rng = np.random.default_rng(seed)
    start = datetime(2024, 1, 1)
    accounts = pd.DataFrame(
        {
            "account_id": [f"acct_{i:03d}" for i in range(n_accounts)],
            "created_at": [
                start + timedelta(days=int(d), microseconds=int(u))
                for d, u in zip(
                    rng.integers(0, 60, n_accounts), rng.integers(0, 10**6, n_accounts), strict=True
                )
            ],
            "name": [f"Company {i}" for i in range(n_accounts)],
            "industry": rng.choice(["Technology", "Retail", "Health"], n_accounts),
            "employees": rng.integers(5, 5000, n_accounts),
        }
    )
    user_rows = []
    for a in accounts.itertuples():
        for j in range(int(rng.integers(1, 6))):
            user_rows.append(
                {
                    "user_id": f"user_{a.account_id[5:]}_{j}",
                    "account_id": a.account_id,
                    "created_at": a.created_at + timedelta(hours=int(j * 5 + 1)),
                }
            )
    users = pd.DataFrame(user_rows)
    who = rng.integers(0, len(users), n_events)
    offsets = rng.integers(3600 * 24, 3600 * 24 * 200, n_events)
    micros = rng.integers(0, 10**6, n_events)
    events = pd.DataFrame(
        {
            "event_id": [f"evt-{seed}-{i:06d}" for i in range(n_events)],
            "account_id": users["account_id"].to_numpy()[who],
            "user_id": users["user_id"].to_numpy()[who],
            "timestamp": [
                users["created_at"].iloc[w] + timedelta(seconds=int(o), microseconds=int(m))
                for w, o, m in zip(who, offsets, micros, strict=True)
            ],
            "event": rng.choice(
                ["Report Viewed", "Dashboard Shared", "Export Run", "Login"], n_events
            ),
        }
    )
    return World(accounts, users, events)


def iso(moment: datetime) -> str:
    """ISO-8601 with a Z, as Segment and PostHog write times."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_jsonl(path: Path, records: list[dict | str]) -> Path:
    """JSON lines; a str record is written as is (to plant malformed lines)."""
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def events_frame(out_dir: Path) -> pd.DataFrame:
    """The imported events in a comparable shape."""
    events = pd.read_parquet(out_dir / "events.parquet")
    return events.sort_values("event_id").reset_index(drop=True)


def expected_events(world: World, *, keep_user: bool = True) -> pd.DataFrame:
    frame = world.events.sort_values("event_id").reset_index(drop=True)
    if not keep_user:
        frame = frame.assign(user_id=None)
    return frame


def non_null(record: dict) -> dict:
    """A row as a dict without its empty columns."""
    return {k: v for k, v in record.items() if not pd.isna(v)}


def assert_balanced(summary: ImportSummary) -> None:
    """Every candidate row is accounted for: written, deduplicated, filtered or quarantined."""
    for table, c in summary.tables.items():
        assert c.read == c.written + c.deduplicated + c.filtered + c.quarantined_total, table


# ----------------------------------------------------------------------------- readers


def test_containers_json_document_array_list_page_lines_gz_and_zip(tmp_path):
    (tmp_path / "one.json").write_text(json.dumps({"id": 1}, indent=2))
    (tmp_path / "many.json").write_text(json.dumps([{"id": 2}, {"id": 3}]))
    (tmp_path / "page.json").write_text(
        json.dumps({"object": "list", "data": [{"id": 4}], "has_more": False, "url": "/v1/x"})
    )
    write_jsonl(tmp_path / "lines.jsonl", [{"id": 5}, "{not json", "[1, 2]", {"id": 6}])
    (tmp_path / "z.json.gz").write_bytes(gzip.compress(b'{"id": 7}\n{"id": 8}\n'))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("123/123_2024-01-01_0#0.json.gz", gzip.compress(b'{"id": 9}\n'))
    (tmp_path / "export.zip").write_bytes(buffer.getvalue())
    (tmp_path / "SOURCE.md").write_text("notes are not records")

    records = list(iter_records([tmp_path]))
    ids = [r.data["id"] for r in records if r.data is not None]
    assert sorted(ids) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    errors = {(Path(r.origin.file).name, r.origin.line): r.error for r in records if r.error}
    assert errors == {("lines.jsonl", 2): "invalid_json", ("lines.jsonl", 3): "not_an_object"}
    zipped = next(r for r in records if r.data == {"id": 9})
    assert zipped.origin.file.endswith("export.zip!123/123_2024-01-01_0#0.json.gz")
    assert zipped.origin.raw == '{"id": 9}'


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        ("2015-02-23T22:28:55.111Z", None, datetime(2015, 2, 23, 22, 28, 55, 111000)),
        ("2023-08-24T07:00:00+02:00", None, datetime(2023, 8, 24, 5, 0)),
        ("2020-02-15 01:00:00.123456", None, datetime(2020, 2, 15, 1, 0, 0, 123456)),
        ("2024-03-01", None, datetime(2024, 3, 1)),
        (1602611311, "s", datetime(2020, 10, 13, 17, 48, 31)),
        (1602611311123, "auto", datetime(2020, 10, 13, 17, 48, 31, 123000)),
        (1602611311, "auto", datetime(2020, 10, 13, 17, 48, 31)),
        (None, None, None),
        ("", None, None),
    ],
)
def test_times_become_naive_utc(value, unit, expected):
    assert to_utc(value, epoch_unit=unit) == expected


@pytest.mark.parametrize("value", ["yesterday", "2024-13-45", True, 12.5])
def test_unreadable_times_raise(value):
    with pytest.raises(ValueError):
        to_utc(value)


# ----------------------------------------------------------------------------- writer


def _origin_row(i: int) -> dict:
    return {"_file": "x.jsonl", "_line": i, "_raw": f"raw {i}"}


def _staged_events(rows: list[dict], first_line: int = 1) -> Staged:
    staged = Staged()
    staged.add_frame(
        "events", pd.DataFrame([{**r, **_origin_row(i)} for i, r in enumerate(rows, first_line)])
    )
    return staged


def _event(
    event_id: str, account: str = "a1", when: str = "2024-01-02T03:04:05.123456Z", **extra
) -> dict:
    return {
        "event_id": event_id,
        "account_id": account,
        "timestamp": when,
        "event": "Login",
        "user_id": "u1",
        "quantity": 1.0,
        **extra,
    }


def test_written_types_follow_the_contract(tmp_path):
    staged = _staged_events([_event("e1"), _event("e2", when="2024-01-02T05:04:05+02:00")])
    write_import(staged, tmp_path, source="test", merge=False)
    table = pd.read_parquet(tmp_path / "events.parquet")
    assert str(table["timestamp"].dtype) == "datetime64[us]"
    assert table["timestamp"].tolist() == [
        pd.Timestamp("2024-01-02 03:04:05"),
        pd.Timestamp("2024-01-02 03:04:05.123456"),
    ]
    import pyarrow.parquet as pq

    schema = pq.read_schema(tmp_path / "events.parquet")
    assert str(schema.field("timestamp").type) == "timestamp[us]"
    assert str(schema.field("account_id").type) == "string"
    assert not list(tmp_path.glob(".*tmp*")), "temporary files are replaced, not left behind"


def test_required_value_missing_or_unparseable_is_quarantined_with_its_line(tmp_path):
    staged = _staged_events(
        [
            _event("e1"),
            _event("e2", when="not a time"),
            _event("e3", account=None),
            _event("e4", quantity="lots"),
        ]
    )
    summary = write_import(staged, tmp_path, source="test", merge=False)
    counts = summary.tables["events"]
    assert counts.quarantined == {"unparseable_timestamp": 1, "missing_account_id": 1}
    assert counts.nulled == {"unparseable_quantity": 1}
    assert counts.written == 2
    quarantine = pd.read_parquet(tmp_path / "_quarantine" / "import_test.parquet")
    assert quarantine[["reason", "action", "line", "record"]].values.tolist() == [
        ["unparseable_timestamp", "dropped", 2, "raw 2"],
        ["missing_account_id", "dropped", 3, "raw 3"],
        ["unparseable_quantity", "nulled", 4, "raw 4"],
    ]
    assert_balanced(summary)


def test_existing_folder_needs_merge(tmp_path):
    write_import(_staged_events([_event("e1")]), tmp_path, source="test", merge=False)
    with pytest.raises(IngestError, match="merge"):
        write_import(_staged_events([_event("e2")]), tmp_path, source="test", merge=False)


def test_merge_unions_and_the_import_replaces_rows_with_the_same_key(tmp_path):
    write_import(_staged_events([_event("e1"), _event("e2")]), tmp_path, source="t", merge=False)
    newer = _event("e2", when="2024-02-01T00:00:00Z")
    summary = write_import(
        _staged_events([newer, _event("e3"), _event("e3")]), tmp_path, source="t", merge=True
    )
    counts = summary.tables["events"]
    assert (counts.read, counts.written, counts.deduplicated, counts.replaced, counts.total) == (
        3,
        2,
        1,
        1,
        3,
    )
    table = pd.read_parquet(tmp_path / "events.parquet").set_index("event_id")
    assert table.loc["e2", "timestamp"] == pd.Timestamp("2024-02-01")


def test_merge_folds_accounts_and_a_stub_never_overwrites_a_known_name(tmp_path):
    staged = Staged()
    origin = _origin_row(1)
    staged.add_frame(
        "accounts",
        pd.DataFrame(
            [{"account_id": "a1", "created_at": "2024-03-01", "name": "Initech", **origin}]
        ),
    )
    write_import(staged, tmp_path, source="t", merge=False)

    later = Staged()
    later.add_frame(
        "accounts",
        pd.DataFrame(
            [
                {
                    "account_id": "a1",
                    "created_at": "2024-01-15",
                    "name": "cus_123",
                    "_stub": True,
                    **origin,
                },
                {
                    "account_id": "a2",
                    "created_at": "2024-02-01",
                    "name": None,
                    "_stub": True,
                    **origin,
                },
            ]
        ),
    )
    summary = write_import(later, tmp_path, source="t2", merge=True)
    table = pd.read_parquet(tmp_path / "accounts.parquet").set_index("account_id")
    assert table.loc["a1", "name"] == "Initech"
    assert table.loc["a1", "created_at"] == pd.Timestamp("2024-01-15"), "earliest evidence wins"
    assert summary.tables["accounts"].total == 2
    assert summary.tables["accounts"].replaced == 1


def test_merge_into_a_csv_table_rewrites_it_as_parquet_and_keeps_the_csv_aside(tmp_path):
    pd.DataFrame([_event("e1")]).to_csv(tmp_path / "events.csv", index=False)
    write_import(_staged_events([_event("e2")]), tmp_path, source="t", merge=True)
    assert not (tmp_path / "events.csv").exists()
    assert (tmp_path / "_replaced" / "events.csv").exists()
    assert sorted(pd.read_parquet(tmp_path / "events.parquet")["event_id"]) == ["e1", "e2"]


def test_merge_refuses_an_existing_table_that_breaks_the_contract(tmp_path):
    pd.DataFrame([_event("e1", when="garbage")]).to_csv(tmp_path / "events.csv", index=False)
    with pytest.raises(IngestError, match=r"events\.csv row 1 .*unparseable_timestamp"):
        write_import(_staged_events([_event("e2")]), tmp_path, source="t", merge=True)
    assert not (tmp_path / "events.parquet").exists()


def test_quarantine_file_is_appended_on_merge(tmp_path):
    write_import(_staged_events([_event("e1", account=None)]), tmp_path, source="t", merge=False)
    write_import(
        _staged_events([_event("e2", account=None)], first_line=2), tmp_path, source="t", merge=True
    )
    quarantine = pd.read_parquet(tmp_path / "_quarantine" / "import_t.parquet")
    assert quarantine["line"].tolist() == [1, 2]


def test_run_import_rejects_bad_calls(tmp_path):
    with pytest.raises(IngestError, match="unknown source"):
        run_import("hubspot", [tmp_path], tmp_path / "out")
    with pytest.raises(IngestError, match="mapping"):
        run_import("mapped", [tmp_path], tmp_path / "out")
    with pytest.raises(IngestError, match="not found"):
        run_import("segment", [tmp_path / "nope.jsonl"], tmp_path / "out")


def test_summary_renders_as_a_rich_table(tmp_path):
    staged = _staged_events([_event("e1"), _event("e2", account=None)])
    staged.skip("segment_page")
    summary = write_import(staged, tmp_path, source="test", merge=False)
    console = Console(record=True, width=160)
    console.print(summary.to_table())
    text = console.export_text()
    assert "events" in text and "missing_account_id: 1" in text and "segment_page: 1" in text
    assert summary.quarantine_counts() == {("events", "missing_account_id"): 1}
