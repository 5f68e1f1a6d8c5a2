"""Turn staged candidate rows into contract tables on disk: check, deduplicate, merge, write.

Rules, in order, for each table an import produced:

1. **Conform** every candidate row to the contract's column kinds (`features.contract.TABLES`):
   ids and strings as text, timestamps as naive UTC with microsecond precision, ints, floats,
   booleans. A row whose *required* column is missing or unparseable is quarantined with
   ``missing_<column>`` / ``unparseable_<column>``; an unparseable *optional* value is removed
   from a row that is still written (counted as ``nulled`` and recorded in the quarantine file).
2. **Deduplicate within the import** on the table's key. ``accounts`` and ``users`` are
   *folded*: all rows with one key become one row whose ``created_at`` is the earliest seen and
   whose other columns take the latest non-empty value, where described rows outrank stubs
   (rows inferred from activity). Other tables keep the first row per key, as the loader does.
   Tables without a key (``outreach``) deduplicate identical rows.
3. **Merge** (``merge=True``) with the table already in the folder: the import's row replaces
   the existing row with the same key (accounts and users are folded, existing rows ranking
   between stubs and described rows, so a stub never overwrites a known name).
4. **Write** ``<table>.parquet`` through a temporary file and `os.replace`, after every table
   of the import has been prepared, so a failure leaves the folder as it was. A table that was
   a CSV is rewritten as Parquet and the CSV moved to ``_replaced/``.

Quarantined records go to ``_quarantine/import_<source>.parquet`` (appended to on merge).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.contract import TABLES, Reason, TableSpec
from features.ingest.readers import Origin, TimeParseError, is_missing, to_utc
from features.ingest.staging import (
    INPUT,
    ORIGIN_COLUMNS,
    STUB_COLUMN,
    QuarantinedRecord,
    Staged,
)
from features.ingest.summary import ImportSummary, TableCounts

FOLDED_TABLES = ("accounts", "users")
QUARANTINE_DIR = "_quarantine"
REPLACED_DIR = "_replaced"
_INTERNAL = (*ORIGIN_COLUMNS, STUB_COLUMN, "_rank")
_ARROW_TYPES = {
    "id": pa.string(),
    "str": pa.string(),
    "timestamp": pa.timestamp("us"),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
}
# Fold precedence: a stub never overwrites the dataset; the import's described rows do.
_RANK_STUB, _RANK_EXISTING, _RANK_NEW = 0, 1, 2


class IngestError(Exception):
    """A problem that stops an import before anything is written (named file, column, row)."""


@dataclass
class _Prepared:
    table: str
    frame: pd.DataFrame
    counts: TableCounts
    replaced_csv: Path | None


def existing_table_file(out_dir: Path, table: str) -> Path | None:
    """The file holding ``table`` in a dataset folder, if any (Parquet preferred)."""
    for suffix in (".parquet", ".csv"):
        path = out_dir / f"{table}{suffix}"
        if path.exists():
            return path
    return None


def write_import(staged: Staged, out_dir: Path, *, source: str, merge: bool) -> ImportSummary:
    """Write what an adapter staged into ``out_dir`` and say what happened."""
    out_dir = Path(out_dir)
    candidates = staged.tables()
    if not merge:
        present = [t for t in TABLES if existing_table_file(out_dir, t) is not None]
        if present:
            raise IngestError(
                f"{out_dir} already holds contract tables ({', '.join(present)}); "
                "pass merge=True (--merge) to merge into it, or choose an empty folder"
            )

    summary = ImportSummary(source=source, out_dir=out_dir, merged=merge)
    summary.records_read = dict(staged.records_read)
    summary.skipped = dict(staged.skipped)
    summary.input.read = sum(staged.records_read.values())
    quarantined: list[QuarantinedRecord] = list(staged.quarantined)
    by_table: dict[str, Counter[str]] = {}
    nulled_by_table: dict[str, Counter[str]] = {}
    for q in staged.quarantined:
        target = by_table if q.action == "dropped" else nulled_by_table
        target.setdefault(q.table, Counter())[q.reason] += 1
    summary.input.quarantined = dict(by_table.pop(INPUT, Counter()))

    prepared: list[_Prepared] = []
    for table in sorted(
        set(candidates) | set(by_table) | set(staged.filtered) | set(staged.deduplicated)
    ):
        if table not in TABLES:
            raise IngestError(f"adapter produced rows for unknown table {table!r}")
        counts = TableCounts(
            filtered=staged.filtered.get(table, 0),
            quarantined=dict(by_table.get(table, Counter())),
            nulled=dict(nulled_by_table.get(table, Counter())),
        )
        summary.tables[table] = counts
        frame = candidates.get(table)
        if frame is not None:
            clean, dropped, nulled = conform(table, frame)
            quarantined += dropped + nulled
            for q in dropped:
                counts.quarantined[q.reason] = counts.quarantined.get(q.reason, 0) + 1
            for q in nulled:
                counts.nulled[q.reason] = counts.nulled.get(q.reason, 0) + 1
            prepared.append(_merge_table(table, clean, out_dir, merge, counts))
        elif merge and (existing := existing_table_file(out_dir, table)) is not None:
            counts.total = len(_read_existing(existing, table))
        # Rows the adapter folded (identical Stripe states, `distinct` mappings) count too.
        counts.deduplicated += staged.deduplicated.get(table, 0)
        counts.read = (
            (len(frame) if frame is not None else 0)
            + counts.filtered
            + sum(by_table.get(table, Counter()).values())
            + staged.deduplicated.get(table, 0)
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    temps: list[tuple[Path, Path]] = []
    try:
        for p in prepared:
            final = out_dir / f"{p.table}.parquet"
            temps.append((_write_temp(p.frame, TABLES[p.table], final), final))
        quarantine_path = out_dir / QUARANTINE_DIR / f"import_{source}.parquet"
        quarantine_path.parent.mkdir(exist_ok=True)
        temps.append((_write_quarantine_temp(quarantined, quarantine_path, merge), quarantine_path))
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in temps:
        os.replace(tmp, final)
    for p in prepared:
        if p.replaced_csv is not None:
            (out_dir / REPLACED_DIR).mkdir(exist_ok=True)
            shutil.move(p.replaced_csv, out_dir / REPLACED_DIR / p.replaced_csv.name)
    summary.files_written = [final for _, final in temps[:-1]]
    summary.quarantine_file = quarantine_path
    return summary


# ----------------------------------------------------------------------------- conform


def conform(
    table: str, frame: pd.DataFrame
) -> tuple[pd.DataFrame, list[QuarantinedRecord], list[QuarantinedRecord]]:
    """Rows typed as the contract says, plus the rows dropped and the values nulled."""
    spec = TABLES[table]
    frame = frame.reset_index(drop=True).copy()
    for col in (*ORIGIN_COLUMNS, STUB_COLUMN):
        if col not in frame.columns:
            frame[col] = None if col != STUB_COLUMN else False
    drop_reason: list[str | None] = [None] * len(frame)
    nulled_at: list[tuple[int, str]] = []
    for column in spec.columns:
        values = (
            frame[column.name].tolist() if column.name in frame.columns else [None] * len(frame)
        )
        parsed: list[Any] = []
        for i, value in enumerate(values):
            try:
                out = parse_value(value, column.kind)
            except ValueError:
                out = None
                reason = Reason.unparseable(column.name)
                if column.required:
                    drop_reason[i] = drop_reason[i] or reason
                else:
                    nulled_at.append((i, reason))
            else:
                if out is None and column.required:
                    drop_reason[i] = drop_reason[i] or Reason.missing(column.name)
            parsed.append(out)
        frame[column.name] = _typed_series(parsed, column.kind)
    dropped = [_record(table, r, frame, i, "dropped") for i, r in enumerate(drop_reason) if r]
    nulled = [_record(table, r, frame, i, "nulled") for i, r in nulled_at if not drop_reason[i]]
    keep = [r is None for r in drop_reason]
    clean = frame.loc[keep].reset_index(drop=True)
    for col in clean.columns:
        if col not in _INTERNAL and col not in {c.name for c in spec.columns}:
            clean[col] = _extra_column(clean[col])
    return clean, dropped, nulled


def parse_value(value: Any, kind: str) -> Any:
    """One value as the contract kind; None when missing; ValueError when unreadable."""
    if is_missing(value):
        return None
    if kind in ("id", "str"):
        if isinstance(value, bool):
            return str(value).lower() if kind == "str" else str(value)
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if isinstance(value, (dict, list)):
            return json.dumps(value, sort_keys=True)
        text = str(value).strip()
        return text or None
    if kind == "timestamp":
        try:
            return to_utc(value)
        except TimeParseError as exc:
            raise ValueError(str(exc)) from exc
    if kind == "int":
        number = _number(value)
        if not number.is_integer():
            raise ValueError(repr(value))
        return int(number)
    if kind == "float":
        return _number(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "t", "1", "yes", "y"):
            return True
        if text in ("false", "f", "0", "no", "n"):
            return False
        raise ValueError(repr(value))
    raise ValueError(f"unknown kind {kind}")


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(repr(value))
    number = float(str(value).strip()) if isinstance(value, str) else float(value)
    if not math.isfinite(number):
        raise ValueError(repr(value))
    return number


def _typed_series(values: list[Any], kind: str) -> pd.Series:
    if kind == "timestamp":
        return pd.Series(
            [pd.Timestamp(v) if isinstance(v, datetime) else pd.NaT for v in values],
            dtype="datetime64[us]",
        )
    dtype = {
        "id": "string",
        "str": "string",
        "int": "Int64",
        "float": "Float64",
        "bool": "boolean",
    }[kind]
    return pd.Series(values, dtype=dtype)


def _extra_column(series: pd.Series) -> pd.Series:
    """An extra (non-contract) column with one type: mixed or nested values become text."""
    if series.dtype != object:
        return series
    kinds = {type(v) for v in series if not is_missing(v)}
    if kinds <= {str}:
        return series.astype("string")
    if kinds <= {int} or kinds <= {int, float}:
        return pd.to_numeric(series)
    if kinds <= {bool}:
        return series.astype("boolean")
    return pd.Series(
        [
            None if is_missing(v) else (json.dumps(v) if isinstance(v, (dict, list)) else str(v))
            for v in series
        ],
        dtype="string",
        index=series.index,
    )


def _record(table: str, reason: str, frame: pd.DataFrame, i: int, action: str) -> QuarantinedRecord:
    line = frame.at[i, "_line"]
    origin = Origin(
        str(frame.at[i, "_file"]),
        None if is_missing(line) else int(line),
        str(frame.at[i, "_raw"]),
    )
    return QuarantinedRecord(table, reason, origin, action)


# ----------------------------------------------------------------------------- dedup and merge


def _merge_table(
    table: str, new: pd.DataFrame, out_dir: Path, merge: bool, counts: TableCounts
) -> _Prepared:
    spec = TABLES[table]
    key = list(spec.key) or [c.name for c in spec.columns]
    existing_path = existing_table_file(out_dir, table) if merge else None
    existing = _read_existing(existing_path, table) if existing_path is not None else None

    if table in FOLDED_TABLES:
        new = new.assign(_rank=[_RANK_STUB if s else _RANK_NEW for s in new[STUB_COLUMN]])
        before = len(new)
        folded_new = fold(new, spec)
        counts.deduplicated = before - len(folded_new)
        counts.written = len(folded_new)
        if existing is not None:
            counts.replaced = int(existing[key[0]].isin(folded_new[key[0]]).sum())
            both = pd.concat([existing.assign(_rank=_RANK_EXISTING), new], ignore_index=True)
            result = fold(both, spec)
        else:
            result = folded_new
    else:
        has_key = new[key].notna().all(axis=1)
        dup = new.duplicated(subset=key, keep="first") & has_key
        counts.deduplicated = int(dup.sum())
        new = new.loc[~dup]
        counts.written = len(new)
        result = new
        if existing is not None:
            replaced = _key_index(existing, key).isin(_key_index(new[has_key[~dup]], key))
            counts.replaced = int(replaced.sum())
            result = pd.concat([existing.loc[~replaced], new], ignore_index=True)
    result = result.drop(columns=[c for c in _INTERNAL if c in result.columns])
    order = [c for c in ((spec.time_column,) if spec.time_column else ()) if c in result.columns]
    order += [c for c in key if c not in order]
    result = result.sort_values(order, kind="stable", na_position="last").reset_index(drop=True)
    counts.total = len(result)
    replaced_csv = (
        existing_path if existing_path is not None and existing_path.suffix == ".csv" else None
    )
    return _Prepared(table, result, counts, replaced_csv)


def _key_index(frame: pd.DataFrame, key: list[str]) -> pd.Index:
    return (
        pd.MultiIndex.from_frame(frame[key].astype("string"))
        if len(key) > 1
        else pd.Index(frame[key[0]].astype("string"))
    )


def fold(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """One row per key: earliest time column, latest non-empty value of the rest by rank."""
    key = list(spec.key)
    frame = frame.sort_values("_rank", kind="stable")
    grouped = frame.groupby(key, sort=False, dropna=False)
    others = [c for c in frame.columns if c not in key and c != spec.time_column]
    result = grouped[others].last()
    if spec.time_column is not None:
        result[spec.time_column] = grouped[spec.time_column].min()
    return result.reset_index()[list(frame.columns)]


def _read_existing(path: Path, table: str) -> pd.DataFrame:
    """The table already in the folder, typed like new rows; bad rows stop the import."""
    try:
        raw = (
            pd.read_parquet(path)
            if path.suffix == ".parquet"
            else pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        )
    except Exception as exc:  # any reader failure: the file is unreadable as a table
        raise IngestError(f"cannot read existing {path}: {exc}") from exc
    spec = TABLES[table]
    missing = [c for c in spec.required_columns if c not in raw.columns]
    if missing:
        raise IngestError(f"existing {path} lacks required column(s) {', '.join(missing)}")
    frame = raw.assign(_file=str(path), _line=range(1, len(raw) + 1), _raw="", _stub=False)
    clean, dropped, _ = conform(table, frame)
    if dropped:
        first = dropped[0]
        raise IngestError(
            f"existing {path} row {first.origin.line} breaks the contract ({first.reason}); "
            "fix it (see `expansion validate`) before merging into this folder"
        )
    return clean


# ----------------------------------------------------------------------------- files


def _write_temp(frame: pd.DataFrame, spec: TableSpec, final: Path) -> Path:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    fields = []
    for f in table.schema:
        kind = next((c.kind for c in spec.columns if c.name == f.name), None)
        fields.append(pa.field(f.name, _ARROW_TYPES[kind] if kind else _plain(f.type)))
    table = table.cast(pa.schema(fields))
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    return tmp


def _plain(t: pa.DataType) -> pa.DataType:
    return pa.string() if pa.types.is_large_string(t) or pa.types.is_string_view(t) else t


QUARANTINE_COLUMNS = ("table", "reason", "action", "file", "line", "record")


def quarantine_frame(records: list[QuarantinedRecord]) -> pd.DataFrame:
    """Quarantined records as the rows of the quarantine file."""
    return pd.DataFrame(
        {
            "table": pd.Series([q.table for q in records], dtype="string"),
            "reason": pd.Series([q.reason for q in records], dtype="string"),
            "action": pd.Series([q.action for q in records], dtype="string"),
            "file": pd.Series([q.origin.file for q in records], dtype="string"),
            "line": pd.Series([q.origin.line for q in records], dtype="Int64"),
            "record": pd.Series([q.origin.raw for q in records], dtype="string"),
        }
    )


def _write_quarantine_temp(records: list[QuarantinedRecord], final: Path, merge: bool) -> Path:
    frame = quarantine_frame(records)
    if merge and final.exists():
        frame = pd.concat([pd.read_parquet(final), frame], ignore_index=True).drop_duplicates()
    schema = pa.schema(
        [pa.field(c, pa.int64() if c == "line" else pa.string()) for c in QUARANTINE_COLUMNS]
    )
    table = pa.Table.from_pandas(frame[list(QUARANTINE_COLUMNS)], preserve_index=False)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    pq.write_table(table.cast(schema), tmp)
    return tmp
