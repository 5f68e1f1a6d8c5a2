"""PostHog: batch exports (JSON lines, or Parquet whose properties are JSON strings).

- Columns: ``uuid``, ``event``, ``distinct_id``, ``person_id``, ``properties``,
  ``person_properties``, ``timestamp`` (UTC). Capture-API bodies (``distinct_id`` inside
  ``properties``) are read too.
- Account: ``properties.$groups[<group_type>]`` (`ImportOptions.group_type`, e.g. ``company``).
- Account traits: ``$groupidentify`` events of that group type (``$group_key`` with the traits in
  ``$group_set``); they describe the account and are not usage events.
- User: ``person_id`` (stable across a person's distinct ids) when present, else
  ``distinct_id``; the role and created-at person properties describe the user.
- Dedup key: ``uuid`` (a record hash when absent).
- Identity-management events (``$identify``, ``$set``, ``$create_alias``,
  ``$merge_dangerously``) and ``$groupidentify`` of other group types are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from features.contract import Reason
from features.ingest.activity import ActivityBuilder, record_hash, text_id
from features.ingest.options import ImportOptions
from features.ingest.staging import Staged

_IDENTITY_EVENTS = ("$identify", "$set", "$create_alias", "$merge_dangerously")


def convert_posthog(paths: Iterable[Path], options: ImportOptions) -> Staged:
    """PostHog export -> candidate events, accounts and users."""
    staged = Staged()
    builder = ActivityBuilder(staged, options)
    for record, origin in staged.read(paths):
        event = text_id(record.get("event"))
        if event in _IDENTITY_EVENTS:
            staged.skip(f"posthog_{event}")
            continue
        table = "accounts" if event == "$groupidentify" else "events"
        props = _json_object(record.get("properties"))
        if props is None:
            staged.quarantine(table, Reason.unparseable("properties"), origin)
            continue
        at = staged.time(table, record.get("timestamp") or props.get("$time"), origin)
        if at is None:
            continue
        if event == "$groupidentify":
            if props.get("$group_type") != options.group_type:
                staged.skip(f"posthog_$groupidentify_{props.get('$group_type')}")
                continue
            account = text_id(props.get("$group_key"))
            if account is None:
                staged.quarantine("accounts", Reason.missing("account_id"), origin)
                continue
            traits = props.get("$group_set") if isinstance(props.get("$group_set"), dict) else {}
            builder.account(account, traits, at, origin)
            continue
        if event is None:
            staged.quarantine("events", Reason.missing("event"), origin)
            continue
        groups = props.get("$groups") if isinstance(props.get("$groups"), dict) else {}
        account = text_id(groups.get(options.group_type))
        if account is None:
            staged.quarantine("events", Reason.missing("account_id"), origin)
            continue
        user_id = text_id(record.get("person_id")) or text_id(
            record.get("distinct_id") or props.get("distinct_id")
        )
        person = _json_object(record.get("person_properties")) or {}
        if user_id is not None:
            builder.user_if_changed(user_id, person, at, origin)
        builder.event(
            account_id=account,
            user_id=user_id,
            timestamp=at,
            event=event,
            event_id=text_id(record.get("uuid")) or record_hash(record),
            origin=origin,
        )
    builder.finish()
    return staged


def _json_object(value: Any) -> dict[str, Any] | None:
    """A properties value: a dict (JSON lines), a JSON string (Parquet), or absent ({})."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None
