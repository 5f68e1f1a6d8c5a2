"""PostHog import: the docs' capture bodies, and generated batch exports (JSON lines, Parquet)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from features.ingest import run_import
from tests.test_ingest_common import (
    FIXTURES,
    World,
    assert_balanced,
    events_frame,
    expected_events,
    iso,
    make_world,
    non_null,
    write_jsonl,
)

POSTHOG = FIXTURES / "posthog"


def test_capture_bodies_without_a_timestamp_are_quarantined(tmp_path):
    summary = run_import("posthog", [POSTHOG], tmp_path / "ds")
    assert summary.tables["events"].quarantined == {"missing_timestamp": 1}
    assert summary.tables["accounts"].quarantined == {"missing_timestamp": 1}


def test_capture_bodies_give_the_event_and_the_group_traits(tmp_path):
    bodies = [
        json.loads((POSTHOG / name).read_text())
        for name in ("groupidentify_event.json", "capture_event_with_groups.json")
    ]
    for body, stamp in zip(
        bodies, ("2024-03-01T09:00:00Z", "2024-03-01T10:00:00+01:00"), strict=True
    ):
        body["timestamp"] = stamp
    run_import("posthog", [write_jsonl(tmp_path / "b.jsonl", bodies)], tmp_path / "ds")
    events = pd.read_parquet(tmp_path / "ds" / "events.parquet")
    record = non_null(events.to_dict("records")[0])
    assert record.pop("event_id").startswith("sha1:")  # capture bodies carry no uuid
    assert record == {
        "account_id": "id:5",
        "timestamp": pd.Timestamp("2024-03-01 09:00"),
        "event": "[event name]",
        "user_id": "[your users' distinct id]",
        "quantity": 1.0,
    }
    accounts = pd.read_parquet(tmp_path / "ds" / "accounts.parquet")
    assert non_null(accounts.to_dict("records")[0]) == {
        "account_id": "id:5",
        "created_at": pd.Timestamp("2024-03-01 09:00"),
        "name": "Awesome Inc",
        "employees": 11,
    }


def render_posthog(world: World) -> list[dict]:
    """The world as PostHog's batch-export events model (JSON-lines flavour)."""
    rows: list[dict] = []
    for a in world.accounts.itertuples():
        rows.append(
            {
                "uuid": f"gi-{a.account_id}",
                "event": "$groupidentify",
                "distinct_id": "server",
                "person_id": None,
                "timestamp": iso(a.created_at),
                "created_at": iso(a.created_at),
                "properties": {
                    "$group_type": "company",
                    "$group_key": a.account_id,
                    "$group_set": {"name": a.name, "industry": a.industry},
                },
            }
        )
    for i, e in enumerate(world.events.itertuples()):
        row = {
            "uuid": e.event_id,
            "event": e.event,
            "distinct_id": f"anon-{e.user_id}",
            "person_id": e.user_id,
            "timestamp": iso(e.timestamp),
            "created_at": iso(e.timestamp),
            "elements_chain": "",
            "properties": {"$groups": {"company": e.account_id, "project": "p1"}, "i": i},
            "person_properties": {"role": "member"},
        }
        rows.append(row)
        if i % 25 == 0:
            rows.append(dict(row))
    rows += [
        {
            "uuid": "x1",
            "event": "No Group",
            "distinct_id": "d",
            "timestamp": "2024-05-01T00:00Z",
            "properties": {"$groups": {"project": "p1"}},
        },
        {
            "uuid": "x2",
            "event": "$identify",
            "distinct_id": "d",
            "timestamp": "2024-05-01T00:00Z",
            "properties": {},
        },
    ]
    return rows


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_generated_batch_export_round_trips(tmp_path, fmt):
    world = make_world(seed=41)
    rows = render_posthog(world)
    if fmt == "jsonl":
        path = write_jsonl(tmp_path / "events.jsonl", rows)
    else:  # Parquet: JSON-encoded properties, real timestamps
        frame = pd.DataFrame(rows)
        for column in ("properties", "person_properties"):
            frame[column] = frame[column].map(lambda v: None if v is None else json.dumps(v))
        for column in ("timestamp", "created_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        path = tmp_path / "events.parquet"
        frame.to_parquet(path, index=False)
    summary = run_import("posthog", [path], tmp_path / "ds")

    got = events_frame(tmp_path / "ds")
    want = expected_events(world)
    for column in ("event_id", "account_id", "user_id", "timestamp", "event"):
        assert got[column].tolist() == want[column].tolist(), column
    events = summary.tables["events"]
    assert events.deduplicated == len(range(0, len(world.events), 25))
    assert events.quarantined == {"missing_account_id": 1}
    assert summary.skipped == {"posthog_$identify": 1}
    accounts = pd.read_parquet(tmp_path / "ds" / "accounts.parquet").sort_values("account_id")
    truth = world.accounts.sort_values("account_id")
    assert accounts["name"].tolist() == truth["name"].tolist()
    assert accounts["created_at"].tolist() == truth["created_at"].tolist()
    users = pd.read_parquet(tmp_path / "ds" / "users.parquet")
    assert set(users["role"]) == {"member"}
    assert sorted(users["user_id"]) == sorted(world.events["user_id"].unique())
    assert_balanced(summary)


def test_unparseable_properties_are_quarantined(tmp_path):
    frame = pd.DataFrame(
        [
            {
                "uuid": "u1",
                "event": "E",
                "distinct_id": "d",
                "timestamp": pd.Timestamp("2024-01-01", tz="UTC"),
                "properties": "{not json",
            }
        ]
    )
    frame.to_parquet(tmp_path / "bad.parquet", index=False)
    summary = run_import("posthog", [tmp_path / "bad.parquet"], tmp_path / "ds")
    assert summary.tables["events"].quarantined == {"unparseable_properties": 1}
