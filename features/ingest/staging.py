"""What an adapter hands to the writer: candidate contract rows, quarantined records, counts.

Adapters never write files. They turn records into candidate rows of contract tables (each row
remembering its `Origin`), set aside records they cannot use with a reason, and count records
they deliberately skip (a Segment ``page`` call, a Stripe ``charge``). The writer then checks
the candidate rows against the contract, deduplicates, merges and writes.

A row may be marked as a *stub*: an account or user inferred from activity (an event's account,
a Stripe customer) rather than described by a record of its own. Stubs only fill gaps when
they meet a described row with the same key; see `features.ingest.writer.fold`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from features.contract import Reason
from features.ingest.readers import Origin, TimeParseError, iter_records, to_utc

INPUT = "input"
"""Pseudo-table for records that fail before they can be attributed to a contract table."""

ORIGIN_COLUMNS = ("_file", "_line", "_raw")
STUB_COLUMN = "_stub"


@dataclass(frozen=True)
class QuarantinedRecord:
    """One record or row set aside: which table it was for, why, and where it came from."""

    table: str
    reason: str
    origin: Origin
    action: str = "dropped"  # "dropped": not written; "nulled": written with the value removed


@dataclass
class Staged:
    """Everything one import produced before it reaches the dataset folder."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    frames: dict[str, list[pd.DataFrame]] = field(default_factory=dict)
    quarantined: list[QuarantinedRecord] = field(default_factory=list)
    records_read: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    filtered: Counter[str] = field(default_factory=Counter)
    deduplicated: Counter[str] = field(default_factory=Counter)

    def add(self, table: str, row: dict[str, Any], origin: Origin, *, stub: bool = False) -> None:
        """A candidate row for ``table``."""
        self.rows.setdefault(table, []).append(
            {
                **row,
                "_file": origin.file,
                "_line": origin.line,
                "_raw": origin.raw,
                STUB_COLUMN: stub,
            }
        )

    def add_frame(self, table: str, frame: pd.DataFrame) -> None:
        """Candidate rows as a frame that already carries the origin columns."""
        missing = [c for c in ORIGIN_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"staged frame for {table} lacks {missing}")
        if STUB_COLUMN not in frame.columns:
            frame = frame.assign(**{STUB_COLUMN: False})
        self.frames.setdefault(table, []).append(frame)

    def quarantine(self, table: str, reason: str, origin: Origin) -> None:
        """Set a record aside: it produces no row of ``table``."""
        self.quarantined.append(QuarantinedRecord(table, reason, origin))

    def nulled(self, table: str, reason: str, origin: Origin) -> None:
        """Record a value left out of a row that is still produced (an unreadable trait)."""
        self.quarantined.append(QuarantinedRecord(table, reason, origin, "nulled"))

    def skip(self, kind: str) -> None:
        """Count a record that this source deliberately does not use (not an error)."""
        self.skipped[kind] += 1

    def read(self, paths: Iterable[Path]) -> Iterator[tuple[dict[str, Any], Origin]]:
        """The decoded records of ``paths``; undecodable ones are quarantined as input."""
        for raw in iter_records(paths):
            self.records_read[raw.origin.file] += 1
            if raw.data is None:
                self.quarantine(INPUT, raw.error or "invalid_record", raw.origin)
            else:
                yield raw.data, raw.origin

    def time(
        self, table: str, value: Any, origin: Origin, *, epoch_unit: str | None = None
    ) -> datetime | None:
        """A record's required time, or None after quarantining it as missing/unparseable."""
        try:
            moment = to_utc(value, epoch_unit=epoch_unit)
        except TimeParseError:
            self.quarantine(table, Reason.unparseable("timestamp"), origin)
            return None
        if moment is None:
            self.quarantine(table, Reason.missing("timestamp"), origin)
        return moment

    def tables(self) -> dict[str, pd.DataFrame]:
        """The candidate rows of each table as one frame (input order kept)."""
        out: dict[str, pd.DataFrame] = {}
        for table in sorted(set(self.rows) | set(self.frames)):
            parts = list(self.frames.get(table, []))
            if self.rows.get(table):
                parts.append(pd.DataFrame(self.rows[table]))
            parts = [p for p in parts if len(p)]
            if parts:
                out[table] = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        return out
