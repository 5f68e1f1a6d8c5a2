"""Shared by the product-analytics sources (Segment, Amplitude, Mixpanel, PostHog).

Each adapter decodes its vendor's records and reports three kinds of facts here: a usage event
attributed to an account, an account described by traits (a ``group`` call, a
``$groupidentify``), and a user described by traits (an ``identify``). `ActivityBuilder` turns
them into candidate rows of ``events``, ``accounts`` and ``users``, and fills the gaps the
vendors leave:

- every account an event names gets an account row; one inferred only from activity is a *stub*
  whose ``created_at`` is the first time it was seen (described rows win on merge);
- every identified user that appears in events gets a user row (a stub when no ``identify``
  described them): ``account_id`` is the account of the user's latest event, unless the
  vendor tied the user to an account directly; ``created_at`` is the user's ``createdAt`` trait,
  else the first time the user was seen. A described user with no account anywhere is
  quarantined as ``missing_account_id``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from features.contract import Reason
from features.ingest.options import ImportOptions
from features.ingest.readers import Origin, TimeParseError, to_utc
from features.ingest.staging import Staged


@dataclass
class _Seen:
    first: datetime
    first_origin: Origin
    last: datetime
    last_account: str | None


@dataclass
class _DescribedUser:
    user_id: str
    account_id: str | None
    created_at: datetime | None
    role: Any
    seen_at: datetime
    origin: Origin


class ActivityBuilder:
    """Collects events, described accounts and described users; `finish` adds the rest."""

    def __init__(self, staged: Staged, options: ImportOptions) -> None:
        self.staged = staged
        self.options = options
        self._accounts: dict[str, tuple[datetime, Origin]] = {}
        self._users: dict[str, _Seen] = {}
        self._described_users: dict[str, list[_DescribedUser]] = {}
        self._last_account_traits: dict[str, dict[str, Any]] = {}
        self._last_user_traits: dict[str, dict[str, Any]] = {}

    def event(
        self,
        *,
        account_id: str,
        user_id: str | None,
        timestamp: datetime,
        event: str,
        event_id: str,
        origin: Origin,
        quantity: float = 1.0,
    ) -> None:
        """A usage event of ``account_id`` (``user_id`` None for account-level events)."""
        self.staged.add(
            "events",
            {
                "account_id": account_id,
                "timestamp": timestamp,
                "event": event,
                "user_id": user_id,
                "event_id": event_id,
                "quantity": quantity,
            },
            origin,
        )
        self._seen_account(account_id, timestamp, origin)
        if user_id is not None:
            self._seen_user(user_id, timestamp, origin, account_id)

    def account(
        self, account_id: str, traits: dict[str, Any], timestamp: datetime, origin: Origin
    ) -> None:
        """An account described by group traits, mapped through ``options.account_traits``."""
        row: dict[str, Any] = {"account_id": account_id}
        for trait, value in traits.items():
            column = self.options.account_traits.get(trait)
            if column is not None and column not in row and value is not None:
                row[column] = value
        created = row.pop("created_at", None)
        try:
            created_at = to_utc(created, epoch_unit="auto")
        except TimeParseError:
            self.staged.nulled("accounts", Reason.unparseable("created_at"), origin)
            created_at = None
        row["created_at"] = created_at or timestamp
        self.staged.add("accounts", row, origin)
        self._seen_account(account_id, timestamp, origin)

    def user(
        self,
        user_id: str,
        *,
        traits: dict[str, Any],
        timestamp: datetime,
        origin: Origin,
        account_id: str | None = None,
    ) -> None:
        """A user described by an identify call (``account_id`` when the vendor says it)."""
        try:
            created_at = to_utc(
                traits.get("createdAt", traits.get("created_at")), epoch_unit="auto"
            )
        except TimeParseError:
            self.staged.nulled("users", Reason.unparseable("created_at"), origin)
            created_at = None
        self._described_users.setdefault(user_id, []).append(
            _DescribedUser(
                user_id,
                account_id,
                created_at,
                traits.get(self.options.user_role_trait),
                timestamp,
                origin,
            )
        )
        if account_id is not None:
            self._seen_account(account_id, timestamp, origin)

    def account_if_changed(
        self, account_id: str, traits: dict[str, Any], timestamp: datetime, origin: Origin
    ) -> None:
        """`account` for traits carried on every event: only when they differ from the last."""
        if traits and self._last_account_traits.get(account_id) != traits:
            self._last_account_traits[account_id] = traits
            self.account(account_id, traits, timestamp, origin)

    def user_if_changed(
        self, user_id: str, traits: dict[str, Any], timestamp: datetime, origin: Origin
    ) -> None:
        """`user` for user properties carried on every event: only when they change."""
        wanted = {
            k: traits.get(k) for k in ("createdAt", "created_at", self.options.user_role_trait)
        }
        if any(v is not None for v in wanted.values()) and (
            self._last_user_traits.get(user_id) != wanted
        ):
            self._last_user_traits[user_id] = wanted
            self.user(user_id, traits=wanted, timestamp=timestamp, origin=origin)

    def finish(self) -> None:
        """Add account stubs and user rows (described and inferred)."""
        for user_id, described in self._described_users.items():
            seen = self._users.get(user_id)
            for d in described:
                account = d.account_id or (seen.last_account if seen else None)
                if account is None:
                    self.staged.quarantine("users", Reason.missing("account_id"), d.origin)
                    continue
                first = min(d.seen_at, seen.first) if seen else d.seen_at
                self.staged.add(
                    "users",
                    {
                        "user_id": user_id,
                        "account_id": account,
                        "created_at": d.created_at or first,
                        "role": d.role,
                    },
                    d.origin,
                )
        for user_id, seen in self._users.items():
            if user_id not in self._described_users and seen.last_account is not None:
                self.staged.add(
                    "users",
                    {"user_id": user_id, "account_id": seen.last_account, "created_at": seen.first},
                    seen.first_origin,
                    stub=True,
                )
        for account_id, (first, origin) in self._accounts.items():
            self.staged.add(
                "accounts", {"account_id": account_id, "created_at": first}, origin, stub=True
            )

    def _seen_account(self, account_id: str, when: datetime, origin: Origin) -> None:
        known = self._accounts.get(account_id)
        if known is None or when < known[0]:
            self._accounts[account_id] = (when, origin)

    def _seen_user(self, user_id: str, when: datetime, origin: Origin, account: str) -> None:
        seen = self._users.get(user_id)
        if seen is None:
            self._users[user_id] = _Seen(when, origin, when, account)
            return
        if when < seen.first:
            seen.first, seen.first_origin = when, origin
        if when >= seen.last:
            seen.last, seen.last_account = when, account


def text_id(value: Any) -> str | None:
    """A vendor id as text (numbers become their decimal form); None when absent or empty."""
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    text = str(value).strip()
    return text or None


def first_group(value: Any) -> str | None:
    """A group key that may be given as a list of keys (Amplitude, Mixpanel): the first one."""
    if isinstance(value, list):
        return text_id(value[0]) if value else None
    return text_id(value)


def record_hash(record: dict[str, Any]) -> str:
    """A stable event id for a record that has no vendor id: the hash of its canonical JSON."""
    canonical = json.dumps(record, sort_keys=True, default=str, separators=(",", ":"))
    return "sha1:" + hashlib.sha1(canonical.encode()).hexdigest()
