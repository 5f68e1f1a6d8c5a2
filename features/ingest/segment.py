"""Segment: ``track``, ``identify`` and ``group`` calls from JSON-lines exports or a warehouse.

- ``track`` -> an event. Its account is ``context.groupId`` (Segment's B2B SaaS spec), else the
  latest ``group`` call of the same user (``userId``, else ``anonymousId``) at or before the
  event; none -> quarantined as ``missing_account_id``. ``user_id`` is ``userId`` (anonymous
  visitors are not seats, so their events are account-level).
- ``group`` -> a described account: ``groupId`` with its traits (name, industry, employees,
  plan, createdAt, per `ImportOptions.account_traits`); ``created_at`` is the ``createdAt``
  trait, else the call's time.
- ``identify`` -> a described user: ``userId``, ``createdAt`` and role traits; the account is
  ``context.groupId``, else the user's latest ``group`` call, else the account of their latest
  event.
- Time: ``timestamp`` (Segment's skew-corrected time), else ``originalTimestamp``, else
  ``receivedAt``. Dedup key: ``messageId`` (a hash of the record when absent).
- ``page``, ``screen``, ``alias`` calls are counted as skipped.

Warehouse tables (CSV/Parquet named ``tracks``, ``identifies``, ``groups``, ...) use snake_case
columns (``id``, ``user_id``, ``group_id``, ``context_group_id``, ``received_at``) with traits
flattened into columns; they are read into the same shape first.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from features.contract import Reason
from features.ingest.activity import ActivityBuilder, record_hash, text_id
from features.ingest.options import ImportOptions
from features.ingest.readers import TABLE_SUFFIXES, Origin
from features.ingest.staging import Staged

_TABLE_FOR_TYPE = {"track": "events", "identify": "users", "group": "accounts"}
_WAREHOUSE_TYPES = {
    "tracks": "track",
    "identifies": "identify",
    "groups": "group",
    "pages": "page",
    "screens": "screen",
    "aliases": "alias",
}
_WAREHOUSE_FIELDS = {
    "id": "messageId",
    "message_id": "messageId",
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "group_id": "groupId",
    "timestamp": "timestamp",
    "original_timestamp": "originalTimestamp",
    "received_at": "receivedAt",
    "sent_at": "sentAt",
    "event": "event",
    "type": "type",
}
_WAREHOUSE_META = {"event_text", "uuid_ts", "loaded_at", "uuid", "channel", "version"}


@dataclass
class _Track:
    record: dict[str, Any]
    at: datetime
    origin: Origin


def convert_segment(paths: Iterable[Path], options: ImportOptions) -> Staged:
    """Segment calls -> candidate events, accounts and users."""
    staged = Staged()
    builder = ActivityBuilder(staged, options)
    memberships: dict[str, list[tuple[datetime, str]]] = {}
    tracks: list[_Track] = []
    identifies: list[_Track] = []

    for data, origin in staged.read(paths):
        record = (
            _from_warehouse(data, origin) if origin.file.lower().endswith(TABLE_SUFFIXES) else data
        )
        kind = str(record.get("type") or record.get("action") or "").lower()
        table = _TABLE_FOR_TYPE.get(kind)
        if table is None:
            staged.skip(f"segment_{kind or 'untyped'}")
            continue
        at = staged.time(
            table,
            record.get("timestamp") or record.get("originalTimestamp") or record.get("receivedAt"),
            origin,
        )
        if at is None:
            continue
        if kind == "track":
            tracks.append(_Track(record, at, origin))
        elif kind == "identify":
            identifies.append(_Track(record, at, origin))
        else:
            group_id = text_id(record.get("groupId"))
            if group_id is None:
                staged.quarantine("accounts", Reason.missing("account_id"), origin)
                continue
            builder.account(group_id, _dict(record.get("traits")), at, origin)
            for who in _user_keys(record):
                memberships.setdefault(who, []).append((at, group_id))

    for calls in memberships.values():
        calls.sort()
    for t in tracks:
        _track(t, builder, staged, memberships)
    for t in identifies:
        _identify(t, builder, staged, memberships)
    builder.finish()
    return staged


def _track(
    t: _Track,
    builder: ActivityBuilder,
    staged: Staged,
    memberships: dict[str, list[tuple[datetime, str]]],
) -> None:
    record = t.record
    event = text_id(record.get("event"))
    if event is None:
        staged.quarantine("events", Reason.missing("event"), t.origin)
        return
    account = text_id(_dict(record.get("context")).get("groupId"))
    if account is None:
        account = _member_of(record, memberships, t.at)
    if account is None:
        staged.quarantine("events", Reason.missing("account_id"), t.origin)
        return
    builder.event(
        account_id=account,
        user_id=text_id(record.get("userId")),
        timestamp=t.at,
        event=event,
        event_id=text_id(record.get("messageId")) or record_hash(record),
        origin=t.origin,
    )


def _identify(
    t: _Track,
    builder: ActivityBuilder,
    staged: Staged,
    memberships: dict[str, list[tuple[datetime, str]]],
) -> None:
    record = t.record
    user_id = text_id(record.get("userId"))
    if user_id is None:
        staged.quarantine("users", Reason.missing("user_id"), t.origin)
        return
    account = text_id(_dict(record.get("context")).get("groupId")) or _member_of(
        record, memberships, None
    )
    builder.user(
        user_id,
        traits=_dict(record.get("traits")),
        timestamp=t.at,
        origin=t.origin,
        account_id=account,
    )


def _member_of(
    record: dict[str, Any], memberships: dict[str, list[tuple[datetime, str]]], at: datetime | None
) -> str | None:
    """The group of the user's latest ``group`` call at or before ``at`` (any time if None)."""
    for who in _user_keys(record):
        calls = memberships.get(who)
        if not calls:
            continue
        if at is None:
            return calls[-1][1]
        i = bisect.bisect_right(calls, (at, "\U0010ffff"))
        if i:
            return calls[i - 1][1]
    return None


def _user_keys(record: dict[str, Any]) -> list[str]:
    keys = [text_id(record.get("userId")), text_id(record.get("anonymousId"))]
    return [k for k in keys if k is not None]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _from_warehouse(data: dict[str, Any], origin: Origin) -> dict[str, Any]:
    """A Segment warehouse row (flat snake_case columns) in the JSON spec's shape."""
    stem = Path(origin.file).stem.lower()
    record: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for column, value in data.items():
        if column in _WAREHOUSE_FIELDS:
            record[_WAREHOUSE_FIELDS[column]] = value
        elif column == "context_group_id":
            record.setdefault("context", {})["groupId"] = value
        elif not column.startswith("context_") and column not in _WAREHOUSE_META:
            extra[column] = value
    kind = (
        record.get("type") or _WAREHOUSE_TYPES.get(stem) or ("track" if "event" in record else None)
    )
    record["type"] = kind
    record["traits" if kind in ("identify", "group") else "properties"] = extra
    return record
