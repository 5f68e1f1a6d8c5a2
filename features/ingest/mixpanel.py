"""Mixpanel: the Raw Event Export API's JSON lines (``{"event": ..., "properties": {...}}``).

- Time: ``properties.time`` in Unix seconds (milliseconds when exported with ``time_in_ms``;
  `ImportOptions.time_unit`, ``auto`` by default).
- Account: the group key is an ordinary event property, named by
  `ImportOptions.account_property` (e.g. ``company_id``); a list of keys takes the first.
- User: ``properties.distinct_id``; ``$device:`` ids (not yet identified) are account-level.
- Dedup key: ``properties.$insert_id`` (a record hash when absent). Mixpanel itself dedups on
  event name, distinct_id, time and $insert_id together; an export holds one of each.
- Identity-management events (``$identify``, ``$create_alias``, ``$merge``) are skipped.
  Group profiles are not part of the event export, so accounts are inferred from activity.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from features.contract import Reason
from features.ingest.activity import ActivityBuilder, first_group, record_hash, text_id
from features.ingest.options import ImportOptions
from features.ingest.staging import Staged

_IDENTITY_EVENTS = ("$identify", "$create_alias", "$merge")


def convert_mixpanel(paths: Iterable[Path], options: ImportOptions) -> Staged:
    """Mixpanel raw export -> candidate events, accounts and users."""
    staged = Staged()
    builder = ActivityBuilder(staged, options)
    for record, origin in staged.read(paths):
        event = text_id(record.get("event"))
        if event in _IDENTITY_EVENTS:
            staged.skip(f"mixpanel_{event}")
            continue
        props = record.get("properties")
        if not isinstance(props, dict):
            staged.quarantine("events", Reason.missing("properties"), origin)
            continue
        at = staged.time("events", props.get("time"), origin, epoch_unit=options.time_unit)
        if at is None:
            continue
        if event is None:
            staged.quarantine("events", Reason.missing("event"), origin)
            continue
        account = first_group(props.get(options.account_property))
        if account is None:
            staged.quarantine("events", Reason.missing("account_id"), origin)
            continue
        user_id = text_id(props.get("distinct_id"))
        if user_id is not None and user_id.startswith("$device:"):
            user_id = None
        builder.event(
            account_id=account,
            user_id=user_id,
            timestamp=at,
            event=event,
            event_id=text_id(props.get("$insert_id")) or record_hash(record),
            origin=origin,
        )
    builder.finish()
    return staged
