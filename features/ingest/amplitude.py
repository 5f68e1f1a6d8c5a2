"""Amplitude: the Export API's zip of gzipped JSON-lines files (or the files themselves).

- One event per line. Time: ``event_time`` (UTC; the raw export writes
  ``"2020-02-15 01:00:00.123456"``), else ``client_event_time``.
- Account: ``groups[<group_type>]`` (Accounts add-on; the type is `ImportOptions.group_type`);
  a list of group names takes the first. No group -> quarantined as ``missing_account_id``.
- Account traits: ``group_properties[<group_type>]``, either the properties themselves or
  keyed by group name; ``$groupidentify`` events describe an account without being usage.
- User: ``user_id`` (device-only events are account-level); ``user_creation_time`` and the
  role user property describe the user.
- Dedup key: ``$insert_id``, else ``uuid`` (a record hash when neither is present).
- ``$identify`` events carry no usage and are counted as skipped. Records wrapped by Airbyte
  (``{"stream": ..., "data": {...}}``) are unwrapped.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from features.contract import Reason
from features.ingest.activity import ActivityBuilder, first_group, record_hash, text_id
from features.ingest.options import ImportOptions
from features.ingest.staging import Staged


def convert_amplitude(paths: Iterable[Path], options: ImportOptions) -> Staged:
    """Amplitude export events -> candidate events, accounts and users."""
    staged = Staged()
    builder = ActivityBuilder(staged, options)
    for data, origin in staged.read(paths):
        record = data["data"] if "stream" in data and isinstance(data.get("data"), dict) else data
        event = text_id(record.get("event_type"))
        if event == "$identify":
            staged.skip("amplitude_$identify")
            continue
        at = staged.time(
            "events", record.get("event_time") or record.get("client_event_time"), origin
        )
        if at is None:
            continue
        groups = record.get("groups") if isinstance(record.get("groups"), dict) else {}
        account = first_group(groups.get(options.group_type))
        if account is None:
            table = "accounts" if event == "$groupidentify" else "events"
            staged.quarantine(table, Reason.missing("account_id"), origin)
            continue
        traits = _group_traits(record.get("group_properties"), options.group_type, account)
        if event == "$groupidentify":
            builder.account(account, traits, at, origin)
            continue
        if event is None:
            staged.quarantine("events", Reason.missing("event"), origin)
            continue
        builder.account_if_changed(account, traits, at, origin)
        user_id = text_id(record.get("user_id"))
        if user_id is not None:
            props = (
                record.get("user_properties")
                if isinstance(record.get("user_properties"), dict)
                else {}
            )
            builder.user_if_changed(
                user_id,
                {
                    "createdAt": record.get("user_creation_time"),
                    options.user_role_trait: props.get(options.user_role_trait),
                },
                at,
                origin,
            )
        builder.event(
            account_id=account,
            user_id=user_id,
            timestamp=at,
            event=event,
            event_id=text_id(record.get("$insert_id"))
            or text_id(record.get("uuid"))
            or record_hash(record),
            origin=origin,
        )
    builder.finish()
    return staged


def _group_traits(value: Any, group_type: str, account: str) -> dict[str, Any]:
    props = value.get(group_type) if isinstance(value, dict) else None
    if not isinstance(props, dict):
        return {}
    nested = props.get(account)
    return nested if isinstance(nested, dict) else props
