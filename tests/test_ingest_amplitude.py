"""Amplitude import: a real exported event, and a generated Export API zip in its shape."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import pandas as pd

from features.ingest import ImportOptions, run_import
from tests.test_ingest_common import (
    FIXTURES,
    World,
    assert_balanced,
    events_frame,
    expected_events,
    make_world,
    non_null,
    write_jsonl,
)

AIRBYTE_RECORD = FIXTURES / "amplitude" / "airbyte_expected_event_record.json"


def test_real_event_without_a_group_is_quarantined(tmp_path):
    summary = run_import("amplitude", [AIRBYTE_RECORD], tmp_path / "ds")
    assert summary.tables["events"].quarantined == {"missing_account_id": 1}
    assert summary.tables["events"].written == 0


def test_real_event_with_a_group_becomes_an_account_level_event(tmp_path):
    record = json.loads(AIRBYTE_RECORD.read_text())
    record["data"]["groups"] = {"company": ["acme-42"]}
    record["data"]["group_properties"] = {
        "company": {"acme-42": {"name": "Acme", "industry": "Ads"}}
    }
    path = write_jsonl(tmp_path / "events.jsonl", [record])
    run_import("amplitude", [path], tmp_path / "ds")
    events = pd.read_parquet(tmp_path / "ds" / "events.parquet")
    # user_id is null in the record: an account-level event
    assert events["user_id"].isna().all()
    assert [non_null(r) for r in events.to_dict("records")] == [
        {
            "account_id": "acme-42",
            "timestamp": pd.Timestamp("2023-08-24 07:00:00"),
            "event": "Daily Ad Metrics",
            "event_id": "google-ad-4651612872-643022056303-DESKTOP-2023-08-24",
            "quantity": 1.0,
        }
    ]
    accounts = pd.read_parquet(tmp_path / "ds" / "accounts.parquet")
    assert non_null(accounts.to_dict("records")[0]) == {
        "account_id": "acme-42",
        "created_at": pd.Timestamp("2023-08-24 07:00:00"),
        "name": "Acme",
        "industry": "Ads",
    }


def render_amplitude(world: World, group_type: str = "org id") -> list[dict | str]:
    """The world as Amplitude export events (raw export time format, groups as lists)."""
    users = world.users.set_index("user_id")
    accounts = world.accounts.set_index("account_id")
    lines: list[dict | str] = []
    for i, e in enumerate(world.events.itertuples()):
        a = accounts.loc[e.account_id]
        event = {
            "$insert_id": e.event_id if i % 3 else None,
            "uuid": e.event_id,
            "event_type": e.event,
            "event_time": e.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "client_event_time": "2000-01-01 00:00:00.000000",
            "user_id": e.user_id,
            "device_id": f"dev-{e.user_id}",
            "user_creation_time": users.loc[e.user_id, "created_at"].strftime(
                "%Y-%m-%d %H:%M:%S.%f"
            ),
            "groups": {group_type: [e.account_id]},
            "group_properties": {group_type: {"name": a["name"], "employees": int(a["employees"])}},
            "user_properties": {"role": "member"},
            "event_properties": {"i": i},
        }
        lines.append(event)
        if i % 50 == 0:  # overlapping export windows deliver the same event twice
            lines.append(dict(event))
    lines += [
        "{broken",
        {"uuid": "x1", "event_type": "No Time", "groups": {group_type: "acct_000"}},
        {
            "uuid": "x2",
            "event_type": "Ungrouped",
            "event_time": "2024-05-01 00:00:00.000000",
            "groups": {},
        },
        {"uuid": "x3", "event_type": "$identify", "event_time": "2024-05-01 00:00:00.000000"},
    ]
    return lines


def write_export_zip(path: Path, lines: list[dict | str], parts: int = 4) -> Path:
    """Amplitude's Export API response: a zip of gzipped JSON-lines files, one per hour."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for part in range(parts):
            chunk = lines[part::parts]
            text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in chunk)
            archive.writestr(
                f"187520/187520_2024-01-01_{part}#0.json.gz", gzip.compress(text.encode())
            )
    path.write_bytes(buffer.getvalue())
    return path


def test_generated_export_zip_round_trips(tmp_path):
    world = make_world(seed=21)
    lines = render_amplitude(world)
    path = write_export_zip(tmp_path / "export.zip", lines)
    summary = run_import(
        "amplitude", [path], tmp_path / "ds", options=ImportOptions(group_type="org id")
    )

    got = events_frame(tmp_path / "ds")
    want = expected_events(world)
    assert got["event_id"].tolist() == want["event_id"].tolist()
    for column in ("account_id", "user_id", "timestamp", "event"):
        assert got[column].tolist() == want[column].tolist(), column
    events = summary.tables["events"]
    assert events.deduplicated == len(range(0, len(world.events), 50))
    assert events.quarantined == {"missing_timestamp": 1, "missing_account_id": 1}
    assert summary.input.quarantined == {"invalid_json": 1}
    assert summary.skipped == {"amplitude_$identify": 1}
    assert summary.input.read == len(lines)

    users = pd.read_parquet(tmp_path / "ds" / "users.parquet").sort_values("user_id")
    want_users = world.users.sort_values("user_id")
    assert users["created_at"].tolist() == want_users["created_at"].tolist()
    assert users["account_id"].tolist() == want_users["account_id"].tolist()
    assert set(users["role"]) == {"member"}
    accounts = pd.read_parquet(tmp_path / "ds" / "accounts.parquet").sort_values("account_id")
    assert accounts["name"].tolist() == world.accounts.sort_values("account_id")["name"].tolist()
    assert_balanced(summary)


def test_the_group_type_is_a_setting(tmp_path):
    world = make_world(seed=2, n_accounts=2, n_events=50)
    path = write_export_zip(tmp_path / "export.zip", render_amplitude(world, "company"), parts=1)
    wrong = run_import(
        "amplitude", [path], tmp_path / "wrong", options=ImportOptions(group_type="org id")
    )
    # 50 events, 1 redelivery and the planted ungrouped line
    assert wrong.tables["events"].quarantined["missing_account_id"] == 52
    right = run_import("amplitude", [path], tmp_path / "right")  # default: "company"
    assert right.tables["events"].written == 50
