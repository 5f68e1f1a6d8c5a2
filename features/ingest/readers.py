"""Reading vendor export files into raw records, and the time parsing every adapter shares.

An export arrives as JSON lines (optionally gzipped), a JSON document (one object, an array, or
a Stripe-style ``{"object": "list", "data": [...]}`` page), a zip archive of those (Amplitude's
Export API), or a table (CSV or Parquet: warehouse extracts, PostHog batch exports). Whatever
the container, each record comes out as a `RawRecord` that remembers where it came from, so a
record that cannot be used can be quarantined with its file, line and original text.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

TABLE_SUFFIXES = (".csv", ".parquet")
DATA_SUFFIXES = (".json", ".jsonl", ".ndjson", ".gz", ".zip", *TABLE_SUFFIXES)


@dataclass(frozen=True)
class Origin:
    """Where one input record came from: file (``archive!member`` inside a zip), line, text.

    ``line`` is the 1-based line of a JSON-lines file, the 1-based item number inside a JSON
    array, or the 1-based data row of a table (CSV data rows start at file line 2).
    """

    file: str
    line: int | None
    raw: str


@dataclass(frozen=True)
class RawRecord:
    """One input record: the decoded JSON object, or ``error`` when it could not be decoded."""

    origin: Origin
    data: dict[str, Any] | None
    error: str | None = None


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files named on the command line; a folder stands for the data files inside it (sorted,
    recursively; names ending in .json, .jsonl, .ndjson, .gz, .zip, .csv or .parquet, not
    starting with ``.`` or ``_``, so notes such as SOURCE.md are not read as records)."""
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and not _hidden(p) and p.name.lower().endswith(DATA_SUFFIXES)
            )
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"input not found: {path}")
    return files


def _hidden(path: Path) -> bool:
    return path.name.startswith((".", "_"))


def iter_records(paths: Iterable[Path]) -> Iterator[RawRecord]:
    """Every record of every input file, in file order then line order."""
    for path in expand_paths(paths):
        name = path.name.lower()
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                for member in sorted(archive.namelist()):
                    if member.endswith("/"):
                        continue
                    data = archive.read(member)
                    yield from _records_from_bytes(f"{path}!{member}", member, data)
        elif name.endswith(TABLE_SUFFIXES):
            yield from _records_from_table(path)
        else:
            yield from _records_from_bytes(str(path), name, path.read_bytes())


def _records_from_bytes(label: str, name: str, data: bytes) -> Iterator[RawRecord]:
    if name.lower().endswith(".gz"):
        data = gzip.decompress(data)
        name = name[:-3]
    text = data.decode("utf-8-sig")
    if name.lower().endswith(".json"):
        document = _whole_document(text)
        if document is not None:
            yield from _records_from_document(label, document)
            return
    yield from _records_from_lines(label, text)


def _whole_document(text: str) -> Any | None:
    """The file parsed as one JSON document, or None when it is JSON lines instead."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return None
    # A one-line JSON-lines file also parses as one document: same records either way.
    return document


def _records_from_document(label: str, document: Any) -> Iterator[RawRecord]:
    if (
        isinstance(document, dict)
        and isinstance(document.get("data"), list)
        and (
            document.get("object") == "list"
            or set(document) <= {"data", "has_more", "url", "object"}
        )
    ):
        items: list[Any] = document["data"]
    elif isinstance(document, list):
        items = document
    else:
        items = [document]
    for number, item in enumerate(items, start=1):
        origin = Origin(label, number, json.dumps(item, default=str))
        if isinstance(item, dict):
            yield RawRecord(origin, item)
        else:
            yield RawRecord(origin, None, "not_an_object")


def _records_from_lines(label: str, text: str) -> Iterator[RawRecord]:
    for number, line in enumerate(io.StringIO(text), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        origin = Origin(label, number, stripped)
        try:
            item = json.loads(stripped)
        except json.JSONDecodeError:
            yield RawRecord(origin, None, "invalid_json")
            continue
        if isinstance(item, dict):
            yield RawRecord(origin, item)
        else:
            yield RawRecord(origin, None, "not_an_object")


def read_table(path: Path) -> pd.DataFrame:
    """A CSV (all columns as text, empty cells as missing) or Parquet file as a DataFrame."""
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    return pd.read_parquet(path)


def _records_from_table(path: Path) -> Iterator[RawRecord]:
    frame = read_table(path)
    first_line = 2 if path.suffix.lower() == ".csv" else 1
    for number, row in enumerate(frame.to_dict(orient="records"), start=first_line):
        record = {k: (None if is_missing(v) else v) for k, v in row.items()}
        yield RawRecord(Origin(str(path), number, json.dumps(record, default=str)), record)


def is_missing(value: Any) -> bool:
    """None, a pandas/NumPy missing marker, NaN, or a blank string."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return not value.strip()
    return False


class TimeParseError(ValueError):
    """A value that is present but cannot be read as a point in time."""


def to_utc(value: Any, *, epoch_unit: str | None = None) -> datetime | None:
    """A naive-UTC datetime (microsecond precision) from a vendor time value.

    Strings are ISO-8601 (``Z``, offsets, a space instead of ``T`` as in Amplitude's raw export);
    naive ones are taken as UTC. Numbers are Unix epochs in ``epoch_unit`` (``"s"``, ``"ms"`` or
    ``"auto"``: milliseconds when the value is too large to be seconds, i.e. past the year 5000).
    None and empty strings give None; anything else raises `TimeParseError`.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise TimeParseError(repr(value))
    if isinstance(value, (int, float)):
        if epoch_unit is None or (isinstance(value, float) and not math.isfinite(value)):
            raise TimeParseError(repr(value))
        seconds = float(value)
        if epoch_unit == "ms" or (epoch_unit == "auto" and abs(seconds) > 1e11):
            seconds /= 1000.0
        try:
            moment = datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise TimeParseError(repr(value)) from exc
        return moment.replace(tzinfo=None)
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        moment = _parse_iso(value.strip())
    else:
        raise TimeParseError(repr(value))
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _parse_iso(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError) as exc:
        raise TimeParseError(text) from exc
    if stamp is pd.NaT:
        raise TimeParseError(text)
    return stamp.to_pydatetime()
