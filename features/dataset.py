"""Read a dataset folder as the contract defines it, check every rule, quarantine bad rows.

`load_dataset(path)` returns a `Dataset`: an engine (DuckDB by default, see `features.engine`)
holding one clean table (or view, for the large `events` table) per contract table, plus a
`ValidationReport`. Rows that break a rule are written to `<dataset>/_quarantine/<table>.parquet`
with a `reason` column and their source row; fatal problems (missing table or column, unreadable
file) raise `ContractError`. A DuckDB database file (`.duckdb`, `.ddb`, `.db`) holding the same
tables (or views) is read the same way, attached read-only; its quarantine goes to
`<file stem>_quarantine/` beside it.

`load_dataset(uri, engine="spark", spark=...)` applies the same rules, as the same SQL, on Apache
Spark: tables are `<uri>/<table>.parquet` (a file or a folder of Parquet parts) under any URI
Spark reads (local, `hdfs://`, `s3a://`, ...); CSV tables are refused there (convert them, or
load them with DuckDB). Quarantined rows are written by Spark's Parquet writer to the folder
`<uri>/_quarantine/<table>/`, and the `source_row` of a row in a folder of parts counts from
`file number x 10^12` (parts in name order) so that it still orders rows in file order.

Inside the project every timestamp is a naive UTC `TIMESTAMP` (microseconds) and every
identifier a string: the conversion happens here, once. Text times with a numeric offset or an
IANA zone name are converted exactly; a zone abbreviation (PST, CEST, ...) names no single zone
and is quarantined (`ambiguous_timezone`), never guessed. NaN and infinities in numeric columns
are quarantined (`non_finite_<column>`), and so are rows whose time column lies after the moment
of the run plus a tolerance (`future_timestamp`), so that the report's clean time range (and the
default as-of taken from it) only ever reflects clean rows. All these checks ride on the one
rule scan per table: they add no pass over the data.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import duckdb
import pandas as pd

from features.contract import (
    EVENT_SIGNALS,
    LOAD_ORDER,
    NUMERIC_KINDS,
    OUTREACH_CHANNELS,
    SUBSCRIPTION_STATUSES,
    TABLES,
    Column,
    Reason,
    TableSpec,
)

# `connect` lives with the engines (it made engine.py and this module import each other); the
# name stays importable from here for existing callers.
from features.engine import DuckDBEngine, Engine, SparkEngine, connect, make_engine  # noqa: F401
from features.settings import get_feature_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

QUARANTINE_DIR = "_quarantine"


class ContractError(Exception):
    """A fatal contract violation: names the file, and where known the column and row."""

    def __init__(
        self, message: str, *, file: Path | str, column: str | None = None, row: int | None = None
    ) -> None:
        self.file = str(file)
        self.column = column
        self.row = row
        where = f"file {self.file}"
        if column is not None:
            where += f", column {column!r}"
        if row is not None:
            where += f", row {row}"
        super().__init__(f"{where}: {message}")


@dataclass
class TableReport:
    """What validation found in one table."""

    table: str
    file: str | None
    rows_read: int = 0
    rows_clean: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    time_min: datetime | None = None
    time_max: datetime | None = None

    @property
    def present(self) -> bool:
        return self.file is not None

    @property
    def rows_quarantined(self) -> int:
        return sum(self.quarantined.values())


@dataclass
class ValidationReport:
    """Validation results for a whole dataset, one `TableReport` per contract table.

    `future_cutoff` is the latest time a row may carry (the moment of the run plus the
    tolerance); rows dated after it are quarantined as `future_timestamp`.
    """

    path: str
    tables: dict[str, TableReport] = field(default_factory=dict)
    future_cutoff: datetime | None = None

    def clean_time_range(
        self, tables: tuple[str, ...] = ("events",)
    ) -> tuple[datetime, datetime] | None:
        """First and last time of the clean rows of `tables` (their contract time column);
        None when they hold no clean dated row. Quarantined rows never stretch it."""
        spans = [
            (t.time_min, t.time_max)
            for name in tables
            if (t := self.tables.get(name)) is not None and t.time_max is not None
        ]
        if not spans:
            return None
        return min(lo for lo, _ in spans if lo is not None), max(hi for _, hi in spans)

    def default_as_of(self) -> date | None:
        """The as-of date a job uses when none is given: the day after the last clean event
        ('now' for a dataset exported today), or None when no clean event exists."""
        span = self.clean_time_range(("events",))
        return None if span is None else (span[1] + timedelta(days=1)).date()

    def quarantine_counts(self) -> dict[tuple[str, str], int]:
        """Quarantined rows keyed by (table, reason)."""
        return {
            (t.table, reason): n
            for t in self.tables.values()
            for reason, n in sorted(t.quarantined.items())
        }

    @property
    def total_quarantined(self) -> int:
        return sum(t.rows_quarantined for t in self.tables.values())


@dataclass
class Dataset:
    """A validated dataset: clean contract tables on an engine, plus the validation report."""

    path: Path
    engine: Engine
    report: ValidationReport
    uri: str = ""  # where the tables were read from, as given (a folder or any Spark URI)
    _frames: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection (DuckDB datasets only; Spark ones have `engine.spark`)."""
        if isinstance(self.engine, DuckDBEngine):
            return self.engine.con
        raise TypeError(
            f"dataset {self.uri or self.path} runs on {self.engine.name}, not DuckDB: "
            "use dataset.engine (or load it with engine='duckdb')"
        )

    def has(self, table: str) -> bool:
        """Whether the dataset provides this (possibly optional) table."""
        return self.report.tables[table].present

    def relation(self, table: str) -> duckdb.DuckDBPyRelation:
        return self.con.table(table)

    def frame(self, table: str) -> pd.DataFrame:
        """The clean table as a pandas frame (cached; avoid for `events` on large data)."""
        if table not in self._frames:
            if isinstance(self.engine, DuckDBEngine):
                self._frames[table] = self.con.table(table).df()
            else:
                self._frames[table] = self.engine.df(f"SELECT * FROM {table}")
        return self._frames[table]

    def close(self) -> None:
        self.engine.close()


def find_table_file(path: Path, table: str) -> Path | None:
    """The file holding `table` in a dataset folder (`<table>.parquet` or `<table>.csv`)."""
    candidates = [p for p in (path / f"{table}.parquet", path / f"{table}.csv") if p.exists()]
    if len(candidates) > 1:
        raise ContractError(
            f"both {candidates[0].name} and {candidates[1].name} exist; keep one",
            file=candidates[0],
        )
    return candidates[0] if candidates else None


def load_dataset(
    path: str | Path,
    *,
    quarantine_dir: Path | str | None = None,
    write_quarantine: bool = True,
    con: duckdb.DuckDBPyConnection | None = None,
    engine: str | Engine = "duckdb",
    spark: SparkSession | None = None,
    spark_master: str | None = None,
    now: datetime | None = None,
    future_tolerance: timedelta | None = None,
) -> Dataset:
    """Validate the dataset folder at `path` and return its clean tables.

    Bad rows go to `quarantine_dir` (default `<path>/_quarantine`) as `<table>.parquet`;
    a missing required table or column, or an unreadable file, raises `ContractError`.
    Rows dated after `now` (the moment of the run, default: the current UTC time; naive means
    UTC) plus `future_tolerance` (default: setting `EXPANSION_FUTURE_TOLERANCE_DAYS`) are
    quarantined as `future_timestamp`.
    `engine="spark"` runs the same validation on Spark (`spark`, or a session started on
    `spark_master`, default `local[*]`): `path` may then be any URI Spark reads.
    """
    eng = make_engine(engine, con=con, spark=spark, spark_master=spark_master)
    if isinstance(eng, DuckDBEngine):
        path = Path(path)
        uri = str(path)
        source: _Source
        if path.is_file() and path.suffix.lower() in DUCKDB_FILE_SUFFIXES:
            source = _DuckDBFileSource(eng, path)
            qdir: str = str(quarantine_dir or path.with_name(f"{path.stem}{QUARANTINE_DIR}"))
        elif path.is_dir():
            source = _DuckDBSource(eng)
            qdir = str(quarantine_dir or path / QUARANTINE_DIR)
        else:
            raise ContractError(
                "dataset folder (or DuckDB database file: "
                f"{', '.join(DUCKDB_FILE_SUFFIXES)}) does not exist",
                file=path,
            )
    else:
        source = _SparkSource(eng)  # type: ignore[arg-type]
        uri = str(path).rstrip("/")
        if not source.is_dir(uri):
            raise ContractError("dataset folder does not exist", file=uri)
        path = Path(uri) if "://" not in uri else Path(uri.split("://", 1)[1])
        qdir = str(quarantine_dir or f"{uri}/{QUARANTINE_DIR}")
    report = ValidationReport(path=uri, future_cutoff=future_cutoff(now, future_tolerance))
    for name in LOAD_ORDER:
        spec = TABLES[name]
        file = source.find(uri, name)
        if file is None:
            if spec.required:
                if isinstance(source, _DuckDBFileSource):
                    expected, where = f"a table or view named {name}", uri
                else:
                    expected, where = f"{name}.parquet or {name}.csv", f"{uri}/{name}.parquet"
                raise ContractError(
                    f"required table {name!r} is missing (expected {expected})", file=where
                )
            _create_empty(eng, spec)
            report.tables[name] = TableReport(table=name, file=None)
            continue
        report.tables[name] = _load_table(
            source, spec, file, qdir, write_quarantine, report.future_cutoff
        )
    return Dataset(path=path, engine=eng, report=report, uri=uri)


def future_cutoff(now: datetime | None = None, tolerance: timedelta | None = None) -> datetime:
    """The latest naive-UTC time a row may carry: `now` (default: the current time) plus
    `tolerance` (default: setting `future_tolerance_days`), to the second."""
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    if tolerance is None:
        tolerance = timedelta(days=get_feature_settings().future_tolerance_days)
    return (moment + tolerance).replace(microsecond=0)


# --- one table ------------------------------------------------------------------------------

_SQL_TYPE = {
    "id": "VARCHAR",
    "str": "VARCHAR",
    "timestamp": "TIMESTAMP",
    "int": "BIGINT",
    "float": "DOUBLE",
    "bool": "BOOLEAN",
}


def _q(name: str) -> str:
    """Quote an identifier for SQL."""
    return '"' + name.replace('"', '""') + '"'


def _read_raw(con: duckdb.DuckDBPyConnection, file: Path) -> duckdb.DuckDBPyRelation:
    """The file as read, plus `_row`, its 1-based data row number (header excluded)."""
    try:
        if file.suffix == ".parquet":
            rel = con.read_parquet(str(file), file_row_number=True)
            return rel.project("* EXCLUDE (file_row_number), file_row_number + 1 AS _row")
        # The header is read here and the dialect fixed, so a ragged line is an error with
        # its line number instead of a silently different guess by the sniffer.
        with file.open(newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), None)
        if not header:
            raise ContractError("the CSV file is empty (no header line)", file=file)
        rel = con.read_csv(
            str(file),
            header=True,
            columns={name: "VARCHAR" for name in header},
            auto_detect=False,
            sep=",",
            quotechar='"',
            escapechar='"',
            strict_mode=True,
        )
        return rel.project("*, row_number() OVER () AS _row")
    except (duckdb.Error, UnicodeDecodeError) as exc:  # corrupt or unreadable file: fatal
        raise _read_error(file, exc) from exc


def _read_error(file: Path, exc: Exception) -> ContractError:
    """A fatal read error naming the data row where DuckDB reports a CSV line."""
    text = str(exc)
    line = re.search(r"CSV Error on Line: (\d+)", text)
    row = int(line.group(1)) - 1 if line else None  # line 1 is the header
    first = text.strip().splitlines()
    detail = " ".join(first[:3]) if first else type(exc).__name__
    return ContractError(f"cannot read the file: {detail}", file=file, row=row)


class _Source(Protocol):
    """How one engine finds, reads and quarantines the files; the rules are shared SQL."""

    engine: Engine

    def find(self, uri: str, table: str) -> str | None: ...

    def read_raw(self, file: str, view: str) -> tuple[list[str], dict[str, str]]:
        """Expose the file as `view` plus `_row`; its columns and DuckDB type names."""
        ...

    def rows(self, sql: str, file: str) -> list[tuple]: ...

    def materialize(self, name: str, sql: str, file: str) -> None:
        """A table from a query that reads `file` (read errors name the file)."""
        ...

    def write_quarantine(self, bad_sql: str | None, qdir: str, table: str) -> None: ...

    def find_duplicates(self, table: str, keys: list[str], rows_sql: str, file: str) -> bool:
        """Materialize `dups_<table>` (each key held by more than one row of `rows_sql`, with
        the first such `_row`) and say whether there is any."""
        ...


def _not_null(keys: list[str]) -> str:
    return " AND ".join(f"{k} IS NOT NULL" for k in keys)


def _duplicates_sql(keys: list[str], rows_sql: str, where: str = "TRUE") -> str:
    """Keys held by more than one row (none of them empty), with the first row of each."""
    cols = ", ".join(keys)
    return (
        f"SELECT {cols}, MIN(_row) AS _first_row FROM {rows_sql} p "
        f"WHERE {_not_null(keys)} AND {where} GROUP BY {cols} HAVING COUNT(*) > 1"
    )


def _group_duplicates(source: _Source, table: str, keys: list[str], rows_sql: str, file: str):
    """Duplicate keys by one grouped scan over the key alone, then the first row of each among
    the few rows that hold one (any engine)."""
    cols = ", ".join(keys)
    source.materialize(
        f"dupkeys_{table}",
        f"SELECT {cols} FROM {rows_sql} p WHERE {_not_null(keys)} "
        f"GROUP BY {cols} HAVING COUNT(*) > 1",
        file,
    )
    if not source.rows(f"SELECT 1 FROM dupkeys_{table} LIMIT 1", file):
        return False
    on = " AND ".join(f"d.{k} = p.{k}" for k in keys)
    source.materialize(
        f"dups_{table}",
        f"SELECT {', '.join(f'p.{k}' for k in keys)}, MIN(p._row) AS _first_row "
        f"FROM {rows_sql} p JOIN dupkeys_{table} d ON {on} "
        f"GROUP BY {', '.join(f'p.{k}' for k in keys)}",
        file,
    )
    return True


class _DuckDBSource:
    """Local files read by DuckDB (Parquet or CSV)."""

    def __init__(self, engine: DuckDBEngine) -> None:
        self.engine = engine
        self.con = engine.con

    def find(self, uri: str, table: str) -> str | None:
        file = find_table_file(Path(uri), table)
        return str(file) if file is not None else None

    def read_raw(self, file: str, view: str) -> tuple[list[str], dict[str, str]]:
        raw = _read_raw(self.con, Path(file))
        raw.create_view(view, replace=True)
        return list(raw.columns), dict(zip(raw.columns, [str(t) for t in raw.types], strict=True))

    def rows(self, sql: str, file: str) -> list[tuple]:
        try:
            return self.con.execute(sql).fetchall()
        except duckdb.Error as exc:
            raise _read_error(Path(file), exc) from exc

    def materialize(self, name: str, sql: str, file: str) -> None:
        try:
            self.engine.create_table(name, sql)
        except duckdb.Error as exc:
            raise _read_error(Path(file), exc) from exc

    def write_quarantine(self, bad_sql: str | None, qdir: str, table: str) -> None:
        qfile = Path(qdir) / f"{table}.parquet"
        if bad_sql is not None:
            qfile.parent.mkdir(parents=True, exist_ok=True)
            tmp = qfile.with_suffix(".parquet.tmp")
            self.con.sql(bad_sql).write_parquet(str(tmp))
            tmp.replace(qfile)
        elif qfile.exists():  # a stale file from an earlier run would mislead
            qfile.unlink()

    def find_duplicates(self, table: str, keys: list[str], rows_sql: str, file: str) -> bool:
        """Sort the keys' 64-bit hashes and look at neighbours: on DuckDB, sorting 100M hashes
        takes about half the time and memory of a hash aggregate over as many distinct keys.
        Equal neighbours are candidates only (two keys may share a hash); the exact search
        then reads just the rows whose hash is a candidate, and runs only if there is one."""
        h = f"hash({', '.join(keys)})"
        self.materialize(
            f"duphash_{table}",
            f"""SELECT h FROM (
                SELECT h, lag(h) OVER (ORDER BY h) AS prev
                FROM (SELECT {h} AS h FROM {rows_sql} p WHERE {_not_null(keys)})
            ) WHERE h = prev""",
            file,
        )
        if not self.rows(f"SELECT 1 FROM duphash_{table} LIMIT 1", file):
            return False
        where = f"{h} IN (SELECT h FROM duphash_{table})"
        self.materialize(f"dups_{table}", _duplicates_sql(keys, rows_sql, where), file)
        return bool(self.rows(f"SELECT 1 FROM dups_{table} LIMIT 1", file))


DUCKDB_FILE_SUFFIXES = (".duckdb", ".ddb", ".db")


class _DuckDBFileSource(_DuckDBSource):
    """Tables (or views) of a DuckDB database file, attached read-only."""

    ALIAS = "_dataset_file"

    def __init__(self, engine: DuckDBEngine, path: Path) -> None:
        super().__init__(engine)
        literal = str(path).replace("'", "''")
        try:
            self.con.execute(f"ATTACH '{literal}' AS {self.ALIAS} (READ_ONLY)")
            rows = self.con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = ? "
                "UNION SELECT view_name FROM duckdb_views() WHERE database_name = ?",
                [self.ALIAS, self.ALIAS],
            ).fetchall()
        except duckdb.Error as exc:
            raise _read_error(path, exc) from exc
        self.tables = {name for (name,) in rows}

    def find(self, uri: str, table: str) -> str | None:
        return f"{uri}:{table}" if table in self.tables else None

    def read_raw(self, file: str, view: str) -> tuple[list[str], dict[str, str]]:
        table = file.rsplit(":", 1)[1]
        try:
            raw = self.con.sql(
                f"SELECT *, row_number() OVER () AS _row FROM {self.ALIAS}.{_q(table)}"
            )
            raw.create_view(view, replace=True)
        except duckdb.Error as exc:
            raise _read_error(Path(file), exc) from exc
        return list(raw.columns), dict(zip(raw.columns, [str(t) for t in raw.types], strict=True))


_SPARK_TO_DUCKDB = {
    "string": "VARCHAR",
    "bigint": "BIGINT",
    "int": "INTEGER",
    "smallint": "SMALLINT",
    "tinyint": "TINYINT",
    "double": "DOUBLE",
    "float": "FLOAT",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp_ntz": "TIMESTAMP",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
}
ROW_FILE_STRIDE = 10**12  # `_row` of a row in the n-th part file: n x stride + row in file


class _SparkSource:
    """Parquet tables under any URI Spark reads (a file or a folder of part files)."""

    def __init__(self, engine: SparkEngine) -> None:
        self.engine = engine
        self.spark = engine.spark

    def _fs(self, uri: str):
        sc = self.spark.sparkContext
        jpath = sc._jvm.org.apache.hadoop.fs.Path(uri)  # type: ignore[union-attr]
        return jpath.getFileSystem(sc._jsc.hadoopConfiguration()), jpath  # type: ignore[union-attr]

    def exists(self, uri: str) -> bool:
        fs, jpath = self._fs(uri)
        return bool(fs.exists(jpath))

    def is_dir(self, uri: str) -> bool:
        fs, jpath = self._fs(uri)
        return bool(fs.exists(jpath) and fs.getFileStatus(jpath).isDirectory())

    def find(self, uri: str, table: str) -> str | None:
        parquet, csv_file = f"{uri}/{table}.parquet", f"{uri}/{table}.csv"
        if self.exists(csv_file):
            if self.exists(parquet):
                raise ContractError(
                    f"both {table}.parquet and {table}.csv exist; keep one", file=parquet
                )
            raise ContractError(
                "the Spark engine reads Parquet tables only: convert this CSV file to "
                f"{table}.parquet, or load the dataset with the DuckDB engine",
                file=csv_file,
            )
        return parquet if self.exists(parquet) else None

    def read_raw(self, file: str, view: str) -> tuple[list[str], dict[str, str]]:
        from pyspark.sql import functions as F

        try:
            frame = self.spark.read.parquet(file)
            files = frame.inputFiles()
        except Exception as exc:  # corrupt or unreadable file: fatal
            raise _spark_read_error(file, exc) from exc
        row_index = F.col("_metadata.row_index")
        if len(files) <= 1:
            raw = frame.select("*", (row_index + 1).alias("_row"))
        else:  # part files in name order, rows in file order within each
            paths = frame.select(F.col("_metadata.file_path").alias("_file")).distinct()
            order = sorted(r[0] for r in paths.collect())
            numbers = self.spark.createDataFrame(
                list(enumerate(order)), "_file_no bigint, _file string"
            )
            raw = (
                frame.select(
                    "*", F.col("_metadata.file_path").alias("_file"), row_index.alias("_i")
                )
                .join(F.broadcast(numbers), "_file")
                .select(
                    *[F.col(f"`{c}`") for c in frame.columns],
                    (F.col("_file_no") * ROW_FILE_STRIDE + F.col("_i") + 1).alias("_row"),
                )
            )
        self.engine.put(view, raw)
        types = {
            f.name: _SPARK_TO_DUCKDB.get(f.dataType.simpleString(), f.dataType.simpleString())
            for f in raw.schema.fields
        }
        types = {k: ("DECIMAL" if v.startswith("decimal") else v) for k, v in types.items()}
        return list(raw.columns), types

    def rows(self, sql: str, file: str) -> list[tuple]:
        try:
            return [tuple(r) for r in self.engine.sql(sql).collect()]
        except Exception as exc:
            raise _spark_read_error(file, exc) from exc

    def materialize(self, name: str, sql: str, file: str) -> None:
        try:
            self.engine.create_table(name, sql)
        except Exception as exc:
            raise _spark_read_error(file, exc) from exc

    def write_quarantine(self, bad_sql: str | None, qdir: str, table: str) -> None:
        target = f"{qdir}/{table}"
        if bad_sql is not None:
            self.engine.sql(bad_sql).write.mode("overwrite").parquet(target)
        elif self.exists(target):  # a stale folder from an earlier run would mislead
            fs, jpath = self._fs(target)
            fs.delete(jpath, True)

    def find_duplicates(self, table: str, keys: list[str], rows_sql: str, file: str) -> bool:
        """A grouped scan (Spark spreads it over the cluster; a global sort would not)."""
        return _group_duplicates(self, table, keys, rows_sql, file)


def _spark_read_error(file: str, exc: Exception) -> ContractError:
    first = str(exc).strip().splitlines()
    detail = " ".join(first[:2]) if first else type(exc).__name__
    return ContractError(f"cannot read the file: {detail}", file=file)


def _typed(column: Column, source_type: str, trim: bool = True) -> str:
    """SQL that converts the raw column to the contract kind, NULL where it cannot."""
    col = _q(column.name)
    if column.kind in ("id", "str"):
        text = col if source_type == "VARCHAR" else f"CAST({col} AS VARCHAR)"
        return f"NULLIF(TRIM({text}), '')" if trim else f"NULLIF({text}, '')"
    if column.kind == "timestamp":
        if source_type.startswith("TIMESTAMP WITH TIME ZONE"):
            return f"CAST({col} AS TIMESTAMP)"  # session time zone is UTC
        if source_type.startswith("TIMESTAMP") or source_type == "DATE":
            return f"CAST({col} AS TIMESTAMP)"
        # Strings: naive values mean UTC, offsets are converted (session time zone is UTC).
        text = f"NULLIF(TRIM(CAST({col} AS VARCHAR)), '')"
        return f"CAST(TRY_CAST({text} AS TIMESTAMPTZ) AS TIMESTAMP)"
    if column.kind == "int":
        if source_type in _INTEGER_TYPES:
            return f"CAST({col} AS BIGINT)"
        as_double = f"TRY_CAST(NULLIF(TRIM(CAST({col} AS VARCHAR)), '') AS DOUBLE)"
        # NaN and infinities fail the range test (NaN compares above every number on both
        # engines), so they become NULL here instead of a cast error; a rule names them.
        return (
            f"CASE WHEN abs({as_double}) < 9.2e18 AND {as_double} = floor({as_double}) "
            f"THEN CAST({as_double} AS BIGINT) END"
        )
    if column.kind == "float":
        if source_type in ("DOUBLE", "FLOAT", "BIGINT", "INTEGER") or source_type.startswith(
            "DECIMAL"
        ):
            return f"CAST({col} AS DOUBLE)"
        return f"TRY_CAST(NULLIF(TRIM(CAST({col} AS VARCHAR)), '') AS DOUBLE)"
    if column.kind == "bool":
        if source_type == "BOOLEAN":
            return col
        return f"TRY_CAST(NULLIF(TRIM(CAST({col} AS VARCHAR)), '') AS BOOLEAN)"
    raise ValueError(column.kind)


_INTEGER_TYPES = ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT")
_NEVER_NON_FINITE = (*_INTEGER_TYPES, "BOOLEAN")  # DECIMAL too: see `_non_finite`

# A time written with a trailing zone abbreviation ("... 10:00:00 PST", "...T10:00CEST"): letters
# (digits allowed after the first, as in EST5EDT) right after the time, with no "/" as IANA
# names have. UTC, GMT, UT and Z name one offset and stay valid, as do AM and PM (not zones:
# the parse decides about those). Written for both engines' regex syntax (RE2 and Java).
_ZONE_ABBREVIATION = "[0-9] *[A-Za-z][A-Za-z0-9]*$"
_UNAMBIGUOUS_SUFFIX = "[0-9] *([Uu][Tt][Cc]?|[Gg][Mm][Tt]|[Zz]|[AaPp][Mm])$"


def _non_finite(column: Column, source_type: str) -> str | None:
    """SQL true when a numeric column holds NaN, infinity or minus infinity; None when its
    source type cannot hold one (integers, decimals). On Spark, `isfinite` is spelled out by
    the engine's dialect (`features.engine.SparkSQL`)."""
    if source_type in _NEVER_NON_FINITE or source_type.startswith("DECIMAL"):
        return None
    if column.kind == "float":  # the typed column keeps the value as it came
        value = _q("t_" + column.name)
    elif source_type in ("DOUBLE", "FLOAT"):
        value = _q(column.name)
    else:  # the typed int is NULL for these: look at the text read as a number
        value = f"TRY_CAST(NULLIF(TRIM(CAST({_q(column.name)} AS VARCHAR)), '') AS DOUBLE)"
    # isfinite, not isnan: DuckDB folds isnan(x) to false when the Parquet statistics say
    # the column holds no NaN, and writers (pyarrow) leave NaN out of those statistics.
    return f"COALESCE(NOT isfinite({value}), false)"


def _zone_abbreviation(column: Column, source_type: str) -> str | None:
    """SQL true when a timestamp written as text ends in a zone abbreviation; None when the
    source column is a typed timestamp or date (no text to guess from)."""
    if source_type.startswith("TIMESTAMP") or source_type == "DATE":
        return None
    text = f"TRIM(CAST({_q(column.name)} AS VARCHAR))"
    return (
        f"COALESCE(regexp_matches({text}, '{_ZONE_ABBREVIATION}') "
        f"AND NOT regexp_matches({text}, '{_UNAMBIGUOUS_SUFFIX}'), false)"
    )


def _rules(
    spec: TableSpec,
    present: set[str],
    source_types: dict[str, str],
    cutoff: datetime | None = None,
) -> list[tuple[str, str]]:
    """(condition, reason) pairs over the typed columns `t_<name>` and raw columns, in order.

    `cutoff`: rows whose contract time column is later are `future_timestamp`. Only that
    column is checked: other time columns (a planned `deactivated_at`, or a far-future
    sentinel meaning "never") may legitimately lie ahead.
    """
    rules: list[tuple[str, str]] = []
    for c in spec.columns:
        if c.name not in present:
            continue
        raw, typed = _q(c.name), _q("t_" + c.name)
        source_type = source_types[c.name]
        # A raw value that is only blanks counts as missing, not as unparseable.
        blank = (
            f"{raw} IS NULL OR TRIM({raw}) = ''" if source_type == "VARCHAR" else f"{raw} IS NULL"
        )
        if c.required:
            missing = f"{typed} IS NULL" if c.kind in ("id", "str") else blank
            rules.append((missing, Reason.missing(c.name)))
        # Before "unparseable": the zone database may read PST (as Los Angeles time, one hour
        # off in summer) or may not read CEST at all; either way the reason is the zone.
        if c.kind == "timestamp" and (zone := _zone_abbreviation(c, source_type)):
            rules.append((zone, Reason.AMBIGUOUS_TIMEZONE))
        # Before the sign checks too, so that minus infinity is named for what it is.
        if c.kind in NUMERIC_KINDS and (non_finite := _non_finite(c, source_type)):
            rules.append((non_finite, Reason.non_finite(c.name)))
        if c.kind not in ("id", "str"):
            rules.append((f"NOT ({blank}) AND {typed} IS NULL", Reason.unparseable(c.name)))
        if c.name == spec.time_column and cutoff is not None:
            later = f"TIMESTAMP '{cutoff.isoformat(sep=' ')}'"
            rules.append((f"COALESCE({typed} > {later}, false)", Reason.FUTURE_TIMESTAMP))
    if "account_id" in present and spec.name != "accounts":
        rules.append(("NOT _account_known", Reason.UNKNOWN_ACCOUNT))
    if "plan_id" in present and spec.name != "plans":
        rules.append(("NOT _plan_known", Reason.UNKNOWN_PLAN))
    checks = {
        "subscriptions": [
            ("t_mrr < 0", Reason.NEGATIVE_MRR),
            ("t_seats < 0", Reason.NEGATIVE_SEATS),
            (f"lower(t_status) NOT IN {SUBSCRIPTION_STATUSES}", Reason.INVALID_STATUS),
        ],
        "events": [("t_quantity < 0", Reason.NEGATIVE_QUANTITY)],
        "plans": [("t_base_mrr < 0 OR t_seat_mrr < 0", Reason.NEGATIVE_MRR)],
        "plan_limits": [("t_monthly_limit < 0", Reason.NEGATIVE_LIMIT)],
        "outreach": [(f"lower(t_channel) NOT IN {OUTREACH_CHANNELS}", Reason.INVALID_CHANNEL)],
        "event_catalog": [(f"lower(t_signal) NOT IN {EVENT_SIGNALS}", Reason.INVALID_SIGNAL)],
        "users": [("t_deactivated_at < t_created_at", Reason.DEACTIVATED_BEFORE_CREATED)],
    }
    for cond, reason in checks.get(spec.name, []):
        needed = [c.name for c in spec.columns if f"t_{c.name}" in cond]
        if all(n in present for n in needed):
            rules.append((f"COALESCE({cond}, false)", reason))
    return rules


def _clean_defaults(spec: TableSpec, present: set[str]) -> dict[str, str]:
    """Contract defaults for optional columns, as SQL over the typed columns."""
    d: dict[str, str] = {c.name: f"t_{c.name}" for c in spec.columns if c.name in present}
    for c in spec.columns:
        d.setdefault(c.name, f"CAST(NULL AS {_SQL_TYPE[c.kind]})")
    if spec.name == "events":
        d["quantity"] = "COALESCE(t_quantity, 1.0)" if "quantity" in present else "1.0"
    if spec.name == "event_catalog":
        d["feature"] = "COALESCE(t_feature, t_event)" if "feature" in present else "t_event"
        d["power"] = "COALESCE(t_power, false)" if "power" in present else "false"
        if "signal" in present:
            d["signal"] = "lower(t_signal)"
    if spec.name == "subscriptions":
        d["status"] = "lower(t_status)"
    if spec.name == "outreach":
        d["channel"] = "lower(t_channel)"
        d["holdout"] = "COALESCE(t_holdout, false)" if "holdout" in present else "false"
    return d


def _load_table(
    source: _Source,
    spec: TableSpec,
    file: str,
    qdir: str,
    write_quarantine: bool,
    cutoff: datetime | None = None,
) -> TableReport:
    engine = source.engine
    raw_view = f"raw_{spec.name}"
    columns, source_types = source.read_raw(file, raw_view)
    for col in spec.required_columns:
        if col not in source_types:
            raise ContractError(
                f"required column {col!r} of table {spec.name!r} is missing "
                f"(columns found: {', '.join(c for c in columns if c != '_row')})",
                file=file,
                column=col,
            )
    present = {c.name for c in spec.columns if c.name in source_types}

    trim = file.endswith(".csv")  # text cells may carry stray spaces; typed Parquet may not
    typed = ", ".join(
        f"{_typed(c, source_types[c.name], trim)} AS {_q('t_' + c.name)}"
        for c in spec.columns
        if c.name in present
    )
    joins = ""
    if "account_id" in present and spec.name != "accounts":
        joins += (
            " LEFT JOIN (SELECT account_id AS _acc, true AS _account_known FROM accounts) a"
            " ON a._acc = r.t_account_id"
        )
    if "plan_id" in present and spec.name != "plans":
        joins += (
            " LEFT JOIN (SELECT plan_id AS _pl, true AS _plan_known FROM plans) p"
            " ON p._pl = r.t_plan_id"
        )
    rules = [
        (
            cond.replace("_account_known", "COALESCE(_account_known, false)").replace(
                "_plan_known", "COALESCE(_plan_known, false)"
            ),
            reason,
        )
        for cond, reason in _rules(spec, present, source_types, cutoff)
    ]
    case = " ".join(f"WHEN {cond} THEN '{reason}'" for cond, reason in rules)
    row_reason = f"CASE {case} END" if case else "CAST(NULL AS VARCHAR)"
    # The typed rows with no rule applied: what the clean rows are when no row broke a rule.
    engine.create_view(f"typed_{spec.name}", f"SELECT *, {typed} FROM {raw_view}")
    ruled_sql = f"""
        SELECT r.*, {row_reason} AS _reason0
        FROM typed_{spec.name} r {joins}
    """
    engine.create_view(f"ruled_{spec.name}", ruled_sql)
    time_col = spec.time_column
    span = f"min(t_{time_col}), max(t_{time_col})" if time_col else "NULL, NULL"

    def count_by(column: str, view: str) -> list[tuple]:
        """Rows, first and last time per value of a reason column (a full scan, few groups)."""
        sql = f"SELECT {column}, count(*), {span} FROM {view} GROUP BY {column}"
        return source.rows(sql, file)

    # One scan counts the rows per row-rule reason (the report's figures, unless duplicates
    # turn up below); a keyless table's malformed CSV line surfaces here.
    stats = count_by("_reason0", f"ruled_{spec.name}")
    rules_broken = any(reason is not None for reason, *_ in stats)
    # Rows that passed the rules: without a broken rule, the typed rows as they are, so the
    # large scans below (and the roll-ups, for events) skip the rules and their joins.
    passed = (
        f"(SELECT * FROM ruled_{spec.name} WHERE _reason0 IS NULL)"
        if rules_broken
        else f"typed_{spec.name}"
    )
    key_cols = [k for k in spec.key if k in present]
    duplicates = False
    if key_cols and len(key_cols) == len(spec.key):
        # Duplicate keys among rows that passed the rules: the first in file order is kept.
        tk = [_q("t_" + k) for k in key_cols]
        duplicates = source.find_duplicates(spec.name, tk, passed, file)
    if duplicates:
        on = " AND ".join(f"d.{k} = r.{k}" for k in tk)
        annotated_sql = f"""
        SELECT r.*, COALESCE(r._reason0, CASE WHEN r._row > d._first_row
            THEN '{Reason.duplicate(spec.key)}' END) AS reason
        FROM ruled_{spec.name} r LEFT JOIN dups_{spec.name} d ON {on}
        """
    else:
        annotated_sql = f"SELECT *, _reason0 AS reason FROM ruled_{spec.name}"
    engine.create_view(f"annotated_{spec.name}", annotated_sql)

    defaults = _clean_defaults(spec, present)
    contract_cols = [c.name for c in spec.columns]
    extra_cols = [c for c in columns if c not in contract_cols and c != "_row"]
    select_clean = ", ".join(f"{expr} AS {_q(name)}" for name, expr in defaults.items())
    if extra_cols and spec.name == "accounts":  # static attributes are kept as they came
        select_clean += ", " + ", ".join(_q(c) for c in extra_cols)
    clean_sql = (
        f"SELECT {select_clean} FROM annotated_{spec.name} WHERE reason IS NULL"
        if rules_broken or duplicates
        else f"SELECT {select_clean} FROM typed_{spec.name}"  # every row is clean
    )
    # Small tables are materialized (they are joined against); events stay a view so the
    # raw scan happens inside the roll-up query, not once more here.
    if spec.name == "events":
        engine.create_view("events", clean_sql)
    else:  # kept in file order, so frames read like the file
        engine.create_table(spec.name, f"{clean_sql} ORDER BY _row", temp=False)

    if duplicates:  # the report counts the duplicates too: one more scan, only then
        stats = count_by("reason", f"annotated_{spec.name}")
    tr = TableReport(table=spec.name, file=file)
    times_min, times_max = [], []
    for reason, n, tmin, tmax in stats:
        tr.rows_read += n
        if reason is None:
            tr.rows_clean += n
            times_min.append(tmin)
            times_max.append(tmax)
        else:
            tr.quarantined[reason] = n
    tr.time_min = min((t for t in times_min if t is not None), default=None)
    tr.time_max = max((t for t in times_max if t is not None), default=None)

    if write_quarantine:
        raw_cols = ", ".join(_q(c) for c in columns if c != "_row")
        bad_sql = (
            f"SELECT {raw_cols}, _row AS source_row, reason "
            f"FROM annotated_{spec.name} WHERE reason IS NOT NULL ORDER BY _row"
        )
        source.write_quarantine(bad_sql if tr.rows_quarantined else None, qdir, spec.name)
    return tr


def _create_empty(engine: Engine, spec: TableSpec) -> None:
    """An absent optional table is an empty table with the contract's columns."""
    cols = ", ".join(f"CAST(NULL AS {_SQL_TYPE[c.kind]}) AS {_q(c.name)}" for c in spec.columns)
    engine.create_table(spec.name, f"SELECT {cols} WHERE false", temp=False)
