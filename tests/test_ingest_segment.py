"""Segment import: the spec's real example payloads, and a generated export in their shape."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

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

SEGMENT = FIXTURES / "segment"


def _fixture(name: str) -> dict:
    return json.loads((SEGMENT / name).read_text())


def _quarantine(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "_quarantine" / "import_segment.parquet")


# ----------------------------------------------------------------------------- real payloads


def test_group_and_identify_examples_give_the_account_and_its_user(tmp_path):
    out = tmp_path / "ds"
    summary = run_import(
        "segment", [SEGMENT / "group_example.json", SEGMENT / "identify_example.json"], out
    )
    accounts = pd.read_parquet(out / "accounts.parquet")
    assert non_null(accounts.to_dict("records")[0]) == {
        "account_id": "0e8c78ea9d97a7b8185e8632",
        "created_at": pd.Timestamp("2015-02-23 22:28:55.111"),
        "name": "Initech",
        "industry": "Technology",
        "employees": 329,
        "plan": "enterprise",
    }
    users = pd.read_parquet(out / "users.parquet")
    assert users[["user_id", "account_id", "created_at"]].to_dict("records") == [
        {
            "user_id": "97980cfea0067",
            "account_id": "0e8c78ea9d97a7b8185e8632",
            "created_at": pd.Timestamp("2015-02-23 22:28:55.111"),
        }
    ]
    assert summary.input.read == 2
    assert_balanced(summary)


def test_track_example_needs_a_group_call_before_it(tmp_path):
    track = _fixture("track_example.json")
    group = {**_fixture("group_example.json"), "userId": "AiUGstSDIg", "messageId": "g1"}

    alone = run_import("segment", [SEGMENT / "track_example.json"], tmp_path / "alone")
    assert alone.tables["events"].quarantined == {"missing_account_id": 1}
    assert _quarantine(tmp_path / "alone")["record"].map(json.loads).iloc[0] == track

    after = {**group, "timestamp": "2015-12-13T00:00:00Z"}  # joins the account too late
    late = write_jsonl(tmp_path / "late.jsonl", [track, after])
    summary = run_import("segment", [late], tmp_path / "late")
    assert summary.tables["events"].quarantined == {"missing_account_id": 1}

    before = write_jsonl(tmp_path / "before.jsonl", [track, group])  # group from Feb 2015
    run_import("segment", [before], tmp_path / "before")
    events = pd.read_parquet(tmp_path / "before" / "events.parquet")
    assert events.to_dict("records") == [
        {
            "account_id": "0e8c78ea9d97a7b8185e8632",
            "timestamp": pd.Timestamp("2015-12-12 19:11:01.249"),
            "event": "Course Clicked",
            "user_id": "AiUGstSDIg",
            "event_id": "ajs-f8ca1e4de5024d9430b3928bd8ac6b96",
            "quantity": 1.0,
        }
    ]


def test_b2b_saas_spec_examples_are_attributed_by_context_group_id(tmp_path):
    # The spec's examples omit every time field, so as shipped they cannot be placed in time.
    summary = run_import("segment", [SEGMENT / "b2b_saas_events.jsonl"], tmp_path / "raw")
    assert summary.tables["events"].quarantined == {"missing_timestamp": 5}
    assert _quarantine(tmp_path / "raw")["line"].tolist() == [1, 2, 3, 4, 5]

    lines = (SEGMENT / "b2b_saas_events.jsonl").read_text().splitlines()
    timed = [
        {**json.loads(line), "timestamp": f"2018-08-28T04:0{i}:00Z"} for i, line in enumerate(lines)
    ]
    run_import("segment", [write_jsonl(tmp_path / "timed.jsonl", timed)], tmp_path / "ds")
    events = pd.read_parquet(tmp_path / "ds" / "events.parquet")
    assert events["event"].tolist() == [
        "Account Created",
        "Account Added User",
        "Trial Started",
        "Trial Ended",
        "Account Deleted",
    ]
    assert set(events["account_id"]) == {"acct_123"}
    assert set(events["user_id"]) == {"019mr8mf4r"}
    assert events["event_id"].str.startswith("sha1:").all()  # no messageId: a content hash
    accounts = pd.read_parquet(tmp_path / "ds" / "accounts.parquet")
    assert accounts.to_dict("records")[0]["created_at"] == pd.Timestamp("2018-08-28 04:00")


# ----------------------------------------------------------------------------- generated export


def render_segment(world: World) -> list[dict | str]:
    """The world as Segment calls: group + identify per user, then tracks; seeded defects."""
    accounts = world.accounts.set_index("account_id")
    calls: list[dict | str] = []
    for u in world.users.itertuples():
        a = accounts.loc[u.account_id]
        calls.append(
            {
                "type": "group",
                "messageId": f"grp-{u.user_id}",
                "userId": u.user_id,
                "groupId": u.account_id,
                "timestamp": iso(u.created_at),
                "receivedAt": iso(u.created_at + timedelta(seconds=1)),
                "traits": {
                    "name": a["name"],
                    "industry": a["industry"],
                    "employees": int(a["employees"]),
                    "createdAt": iso(a["created_at"]),
                    "total billed": 830,
                },
            }
        )
        calls.append(
            {
                "type": "identify",
                "messageId": f"idn-{u.user_id}",
                "userId": u.user_id,
                "timestamp": iso(u.created_at + timedelta(minutes=1)),
                "traits": {
                    "email": f"{u.user_id}@example.com",
                    "createdAt": iso(u.created_at),
                    "role": "admin" if u.user_id.endswith("_0") else "member",
                },
            }
        )
    for i, e in enumerate(world.events.itertuples()):
        call = {
            "type": "track",
            "event": e.event,
            "messageId": e.event_id,
            "userId": e.user_id,
            "anonymousId": f"anon-{e.user_id}",
            "timestamp": iso(e.timestamp),
            "properties": {"n": i},
            "context": {"library": {"name": "analytics.js"}},
        }
        if i % 2:  # half carry the account (B2B SaaS spec), half rely on the group call
            call["context"]["groupId"] = e.account_id
        calls.append(call)
        if i % 37 == 0:  # a retried delivery: same messageId, received later
            calls.append({**call, "receivedAt": iso(e.timestamp + timedelta(minutes=5))})
    calls += [
        "{this is not json",
        {"type": "track", "event": "No Time", "userId": "user_000_0", "messageId": "m-nt"},
        {
            "type": "track",
            "event": "Bad Time",
            "userId": "user_000_0",
            "messageId": "m-bt",
            "timestamp": "yesterday-ish",
        },
        {
            "type": "track",
            "userId": "user_000_0",
            "messageId": "m-ne",
            "timestamp": "2024-05-01T00:00:00Z",
            "context": {"groupId": "acct_000"},
        },
        {
            "type": "track",
            "event": "Orphan",
            "userId": "stranger",
            "messageId": "m-or",
            "timestamp": "2024-05-01T00:00:00Z",
        },
        {
            "type": "page",
            "name": "Pricing",
            "userId": "user_000_0",
            "messageId": "m-pg",
            "timestamp": "2024-05-01T00:00:00Z",
        },
    ]
    return calls


def test_generated_export_round_trips_with_defects_quarantined(tmp_path):
    world = make_world(seed=11)
    calls = render_segment(world)
    path = write_jsonl(tmp_path / "segment.jsonl", calls)
    summary = run_import("segment", [path], tmp_path / "ds")
    out = tmp_path / "ds"

    got = events_frame(out)
    want = expected_events(world)
    pd.testing.assert_frame_equal(
        got[["event_id", "account_id", "user_id", "timestamp", "event"]],
        want[["event_id", "account_id", "user_id", "timestamp", "event"]],
        check_dtype=False,
    )
    retries = len(range(0, len(world.events), 37))
    events = summary.tables["events"]
    assert events.deduplicated == retries
    assert events.quarantined == {
        "missing_timestamp": 1,
        "unparseable_timestamp": 1,
        "missing_event": 1,
        "missing_account_id": 1,
    }
    assert summary.input.quarantined == {"invalid_json": 1}
    assert summary.skipped == {"segment_page": 1}
    assert summary.input.read == len(calls)

    accounts = pd.read_parquet(out / "accounts.parquet").sort_values("account_id")
    want_accounts = world.accounts.sort_values("account_id")
    assert accounts["account_id"].tolist() == want_accounts["account_id"].tolist()
    assert accounts["created_at"].tolist() == want_accounts["created_at"].tolist()
    assert accounts["name"].tolist() == want_accounts["name"].tolist()
    assert accounts["employees"].tolist() == want_accounts["employees"].tolist()
    assert "total billed" not in accounts.columns  # only mapped traits are imported

    users = pd.read_parquet(out / "users.parquet").sort_values("user_id")
    want_users = world.users.sort_values("user_id")
    assert users["user_id"].tolist() == want_users["user_id"].tolist()
    assert users["account_id"].tolist() == want_users["account_id"].tolist()
    assert users["created_at"].tolist() == want_users["created_at"].tolist()
    assert users["role"].isin(["admin", "member"]).all()
    assert_balanced(summary)


def test_reimporting_the_same_export_with_merge_changes_nothing(tmp_path):
    world = make_world(seed=3, n_accounts=5, n_events=300)
    path = write_jsonl(tmp_path / "segment.jsonl", render_segment(world))
    out = tmp_path / "ds"
    run_import("segment", [path], out)
    before = {t: pd.read_parquet(out / f"{t}.parquet") for t in ("events", "users", "accounts")}
    summary = run_import("segment", [path], out, merge=True)
    for table, frame in before.items():
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{table}.parquet"), frame)
    assert summary.tables["events"].replaced == summary.tables["events"].written == 300


def test_warehouse_tables_read_like_the_json_spec(tmp_path):
    world = make_world(seed=5, n_accounts=3, n_events=200)
    wh = tmp_path / "warehouse"
    wh.mkdir()
    accounts = world.accounts.set_index("account_id")
    pd.DataFrame(
        [
            {
                "id": f"grp-{u.user_id}",
                "user_id": u.user_id,
                "group_id": u.account_id,
                "timestamp": iso(u.created_at),
                "name": accounts.loc[u.account_id, "name"],
                "industry": accounts.loc[u.account_id, "industry"],
                "created_at": iso(accounts.loc[u.account_id, "created_at"]),
                "uuid_ts": "2024-09-01 00:00:00",
                "context_library_name": "analytics.js",
            }
            for u in world.users.itertuples()
        ]
    ).to_csv(wh / "groups.csv", index=False)
    pd.DataFrame(
        [
            {
                "id": e.event_id,
                "user_id": e.user_id,
                "event": e.event,
                "event_text": e.event,
                "timestamp": e.timestamp,
                "context_group_id": e.account_id,
            }
            for e in world.events.itertuples()
        ]
    ).to_parquet(wh / "tracks.parquet", index=False)

    summary = run_import("segment", [wh], tmp_path / "ds")
    got = events_frame(tmp_path / "ds")
    want = expected_events(world)
    assert got["event_id"].tolist() == want["event_id"].tolist()
    assert got["account_id"].tolist() == want["account_id"].tolist()
    assert got["timestamp"].tolist() == want["timestamp"].tolist()
    names = pd.read_parquet(tmp_path / "ds" / "accounts.parquet").set_index("account_id")["name"]
    assert names.to_dict() == accounts["name"].to_dict()
    assert summary.input.read == len(world.users) + len(world.events)


def test_fixture_folder_notes_are_not_read_as_records(tmp_path):
    shutil.copytree(SEGMENT, tmp_path / "segment")
    summary = run_import("segment", [tmp_path / "segment"], tmp_path / "ds")
    assert summary.input.read == 8  # 5 + 3 records; SOURCE.md is skipped
    assert summary.input.quarantined == {}
    assert (
        datetime(2015, 2, 23)
        < pd.read_parquet(tmp_path / "ds" / "accounts.parquet")["created_at"].iloc[0]
        < datetime(2015, 2, 24)
    )
