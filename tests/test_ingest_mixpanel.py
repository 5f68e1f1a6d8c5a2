"""Mixpanel import: the raw export API's example lines, and a generated export in their shape."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta

import pandas as pd

from features.ingest import ImportOptions, run_import
from tests.test_ingest_common import (
    FIXTURES,
    World,
    assert_balanced,
    events_frame,
    make_world,
    write_jsonl,
)

RAW_EXPORT = FIXTURES / "mixpanel" / "raw_export_example.jsonl"


def test_example_lines_have_no_account_property_so_they_are_quarantined(tmp_path):
    summary = run_import("mixpanel", [RAW_EXPORT], tmp_path / "ds")
    assert summary.tables["events"].quarantined == {"missing_account_id": 2}


def test_example_lines_with_the_group_key_give_their_events(tmp_path):
    lines = [json.loads(x) for x in RAW_EXPORT.read_text().splitlines()]
    for i, line in enumerate(lines):
        line["properties"]["company_id"] = f"co-{i}"
    run_import("mixpanel", [write_jsonl(tmp_path / "raw.jsonl", lines)], tmp_path / "ds")
    events = pd.read_parquet(tmp_path / "ds" / "events.parquet")
    assert events[["account_id", "timestamp", "event", "event_id"]].to_dict("records") == [
        {
            "account_id": "co-0",
            "timestamp": pd.Timestamp("2020-10-13 17:48:31"),
            "event": "Signed up",
            "event_id": "hpuDqcvpltpCjBsebtxwadtEBDnFAdycabFb",
        },
        {
            "account_id": "co-1",
            "timestamp": pd.Timestamp("2020-10-15 18:38:41"),
            "event": "Signed up",
            "event_id": "jajcebutltmvhbbholfhxtCcycwnBjDtndha",
        },
    ]
    assert events["user_id"].isna().all()  # no distinct_id in the example


def render_mixpanel(world: World, account_property: str = "account") -> list[dict | str]:
    lines: list[dict | str] = []
    for i, e in enumerate(world.events.itertuples()):
        props = {
            "time": int((e.timestamp - pd.Timestamp("1970-01-01")).total_seconds()),
            "distinct_id": e.user_id,
            "$insert_id": e.event_id,
            account_property: [e.account_id] if i % 2 else e.account_id,
            "mp_processing_time_ms": 1602625711874,
        }
        line = {"event": e.event, "properties": props}
        lines.append(line)
        if i % 40 == 0:
            lines.append(json.loads(json.dumps(line)))
    lines += [
        '{"event": "cut off", "properties": {"time": 16026',
        {"event": "No Time", "properties": {"distinct_id": "u", account_property: "acct_000"}},
        {"event": "Bad Time", "properties": {"time": "soon", account_property: "acct_000"}},
        {"event": "$identify", "properties": {"time": 1602611311}},
        {
            "event": "Anonymous",
            "properties": {
                "time": 1602611311,
                "$insert_id": "anon-1",
                "distinct_id": "$device:abc",
                account_property: "acct_000",
            },
        },
    ]
    return lines


def test_generated_export_round_trips_at_second_precision(tmp_path):
    world = make_world(seed=31)
    lines = render_mixpanel(world)
    path = tmp_path / "export.jsonl.gz"
    path.write_bytes(
        gzip.compress("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines).encode())
    )
    summary = run_import(
        "mixpanel", [path], tmp_path / "ds", options=ImportOptions(account_property="account")
    )

    got = events_frame(tmp_path / "ds").set_index("event_id")
    want = world.events.set_index("event_id")
    assert set(got.index) == set(want.index) | {"anon-1"}
    got = got.loc[want.index]
    assert got["account_id"].tolist() == want["account_id"].tolist()
    assert got["user_id"].tolist() == want["user_id"].tolist()
    # Mixpanel keeps whole seconds.
    assert got["timestamp"].tolist() == want["timestamp"].dt.floor("s").tolist()
    events = summary.tables["events"]
    assert events.deduplicated == len(range(0, len(world.events), 40))
    assert events.quarantined == {"missing_timestamp": 1, "unparseable_timestamp": 1}
    assert summary.input.quarantined == {"invalid_json": 1}
    assert summary.skipped == {"mixpanel_$identify": 1}
    anonymous = events_frame(tmp_path / "ds").set_index("event_id").loc["anon-1"]
    assert pd.isna(anonymous["user_id"])  # a $device: id is not a user yet
    users = pd.read_parquet(tmp_path / "ds" / "users.parquet")
    first_seen = world.events.groupby("user_id")["timestamp"].min().dt.floor("s")
    assert users.set_index("user_id")["created_at"].to_dict() == first_seen.to_dict()
    assert_balanced(summary)


def test_millisecond_times(tmp_path):
    line = {
        "event": "Login",
        "properties": {"time": 1602611311123, "company_id": "c1", "$insert_id": "i1"},
    }
    for unit in ("auto", "ms"):
        out = tmp_path / unit
        run_import(
            "mixpanel",
            [write_jsonl(tmp_path / "ms.jsonl", [line])],
            out,
            options=ImportOptions(time_unit=unit),
        )
        assert pd.read_parquet(out / "events.parquet")["timestamp"].iloc[0] == pd.Timestamp(
            "2020-10-13 17:48:31.123"
        ) + timedelta(0)
