"""Scores in a database: SQLite (embedded default) or PostgreSQL, in one transaction per run.

`sqlite:///models/crm.db` or `postgresql://user@host/db` (SQLAlchemy + psycopg 3,
`postgresql+psycopg://`): tables `account_expansion_scores` (current: one row per account,
upserted; a backfill of an older as_of never overwrites a newer row),
`account_expansion_score_history` (upserted on account, as_of and both model versions: a rerun
replaces its rows, never duplicates them) and `scoring_runs` (one row per run: counts, score
quantiles, drift JSON, start and finish, why this as-of date, and the accounts not scored with
the reason of each).

A crash half-way (even SIGKILL) leaves the previous scores and no trace of the run, and readers
see the old scores until the commit (SQLite runs in WAL mode).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url

from serving.sinks.base import RunInfo, to_records

log = logging.getLogger(__name__)

HISTORY_KEY = ["account_id", "as_of", "propensity_model_version", "post_upsell_model_version"]

metadata = MetaData()
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = 255


def _score_columns() -> list[Column]:
    """The columns both score tables share (not the keys)."""
    return [
        Column("run_id", String(36), nullable=False),
        Column("scored_at", DateTime(timezone=True), nullable=False),
        Column("p_expand", Float),
        Column("p_post_upsell_churn", Float),
        Column("expected_uplift_mrr", Float),
        Column("expected_net_value", Float),
        Column("rank", Integer, comment="1 = call first; NULL when suppressed or held out"),
        Column("next_step", String(255)),
        Column("triggers", JSONType, comment="names of the PQL triggers that fired"),
        Column("route", String(16), nullable=False),
        Column("suppressed", Boolean, nullable=False),
        Column("suppression_reason", String(255)),
        Column("reasons", JSONType, comment="[{feature, value, contribution, text}] log-odds"),
        Column("reasons_text", Text),
        Column("base_value", Float, comment="log-odds the contributions start from"),
        Column("mrr", Float),
        Column("csm_owner", String(ID)),
        Column("segment", String(ID)),
        # Added after the first release (`create_tables` adds it): NULL in older rows.
        Column("holdout", Boolean, comment="true: in the holdout, do not contact"),
    ]


scores_table = Table(
    "account_expansion_scores",
    metadata,
    Column("account_id", String(ID), primary_key=True),
    Column("as_of", Date, nullable=False),
    Column("propensity_model_version", String(64), nullable=False),
    Column("post_upsell_model_version", String(64), nullable=False),
    *_score_columns(),
    comment="Current expansion scores: one row per account, from its latest as_of.",
)
history_table = Table(
    "account_expansion_score_history",
    metadata,
    Column("account_id", String(ID), primary_key=True),
    Column("as_of", Date, primary_key=True),
    Column("propensity_model_version", String(64), primary_key=True),
    Column("post_upsell_model_version", String(64), primary_key=True),
    *_score_columns(),
    comment="Every score ever written; a rerun of the same as_of and models replaces its rows.",
)
Index("ix_score_history_run", history_table.c.run_id)
Index("ix_score_history_as_of", history_table.c.as_of)
runs_table = Table(
    "scoring_runs",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("status", String(16), nullable=False, comment="completed | partial | failed"),
    Column("as_of", Date, nullable=False),
    Column("propensity_model_version", String(64)),
    Column("post_upsell_model_version", String(64)),
    Column("dataset", Text),
    Column("accounts", Integer, comment="accounts scored"),
    Column("written", Integer, comment="rows written"),
    Column("suppressed", Integer),
    Column("counts", JSONType, comment="by_route, by_trigger, by_suppression_reason"),
    Column("score_quantiles", JSONType),
    Column("drift", JSONType, comment="PSI per feature vs the champion's training sample"),
    Column("timings", JSONType),
    Column("error", Text),
    Column("crm_sync", JSONType, comment="live CRM/webhook sync: counts and failed records"),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    # Added after the first release: `create_tables` adds them to older databases.
    Column("as_of_reason", Text, comment="why this as_of: --as-of given, latest clean event..."),
    Column("unscored", JSONType, comment="accounts not scored: [{account_id, reason}]"),
)


def database_url(url: str) -> str:
    """psycopg 3 for PostgreSQL whatever the spelling (`postgres://`, `postgresql://`)."""
    for plain in ("postgres://", "postgresql://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url.removeprefix(plain)
    return url


def create_database_engine(url: str) -> Engine:
    """An engine; SQLite files get their folder, WAL (readers never block) and a busy wait."""
    url = database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"unsupported database {parsed.get_backend_name()!r}: sqlite, postgresql")
    return create_engine(url, pool_pre_ping=True)


def create_tables(engine: Engine) -> None:
    """Create the three tables if missing (same DDL on SQLite and PostgreSQL), and add the
    columns a database created by an older version lacks (run record, score tables)."""
    metadata.create_all(engine, checkfirst=True)
    for table in (runs_table, scores_table, history_table):
        have = {c["name"] for c in inspect(engine).get_columns(table.name)}
        missing = [c for c in table.columns if c.name not in have]
        if not missing:
            continue
        with engine.begin() as conn:
            # IF NOT EXISTS (PostgreSQL): two runs starting at once may both add the column.
            guard = "IF NOT EXISTS " if conn.dialect.name == "postgresql" else ""
            for column in missing:
                kind = column.type.compile(dialect=conn.dialect)
                name = conn.dialect.identifier_preparer.quote(column.name)
                conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {guard}{name} {kind}"))


def _dialect_insert(conn: Connection, table: Table):
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"no upsert for dialect {dialect!r}")


def _on_conflict_update(stmt, table: Table, key: list[str], newer_only: bool):
    """ON CONFLICT (key) DO UPDATE every other column.

    `newer_only` keeps a row whose `as_of` is later than the incoming one: a backfill of an
    old date updates the history but never turns current scores back in time.
    """
    update = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in key}
    where = table.c.as_of <= stmt.excluded.as_of if newer_only else None
    return stmt.on_conflict_do_update(index_elements=key, set_=update, where=where)


def upsert(
    conn: Connection, table: Table, rows: list[dict], key: list[str], *, newer_only: bool = False
) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE of `rows`, in the dialect of the connection."""
    if rows:
        stmt = _on_conflict_update(_dialect_insert(conn, table), table, key, newer_only)
        conn.execute(stmt, rows)


def promote_run_to_current(conn: Connection, run_id: str) -> None:
    """Upsert the run's history rows into the current table, inside the database.

    One INSERT ... SELECT ... ON CONFLICT on the server instead of sending every row twice.
    """
    columns = [c.name for c in scores_table.columns]
    rows = select(*[history_table.c[name] for name in columns]).where(
        history_table.c.run_id == run_id
    )
    stmt = _dialect_insert(conn, scores_table).from_select(columns, rows)
    conn.execute(_on_conflict_update(stmt, scores_table, ["account_id"], newer_only=True))


class DatabaseSink:
    """Both score tables and the run record, written in one transaction."""

    def __init__(self, url: str) -> None:
        self.url = database_url(url)
        self.description = make_url(self.url).render_as_string(hide_password=True)
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        self._tx = None
        self._run: RunInfo | None = None
        # More writes for the run's transaction (e.g. `serving.holdout`'s new arms).
        self.pending_writes: list[Callable[[Connection], None]] = []

    def prepare(self) -> None:
        engine = create_database_engine(self.url)
        try:
            create_tables(engine)
        finally:
            engine.dispose()

    def open(self, run: RunInfo) -> None:
        self._run = run
        self._engine = create_database_engine(self.url)
        create_tables(self._engine)
        self._conn = self._engine.connect()
        self._tx = self._conn.begin()

    def write(self, rows: pd.DataFrame) -> None:
        upsert(self._conn, history_table, to_records(rows), HISTORY_KEY)

    def commit(self, record: dict[str, Any]) -> None:
        for write in self.pending_writes:
            write(self._conn)
        promote_run_to_current(self._conn, self._run.run_id)
        self._conn.execute(insert(runs_table), [_run_row(record)])
        self._tx.commit()
        self._close()

    def abort(self, record: dict[str, Any]) -> None:
        """Roll the run back, then record that it failed (in a transaction of its own)."""
        try:
            if self._tx is not None and self._tx.is_active:
                self._tx.rollback()
            if self._engine is not None:
                with self._engine.begin() as conn:
                    conn.execute(insert(runs_table), [_run_row(record)])
        except Exception as exc:  # the database itself may be what failed: keep the cause
            log.warning("could not record the failed run %s: %s", record.get("run_id"), exc)
        finally:
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._engine is not None:
            self._engine.dispose()
        self._conn, self._tx, self._engine = None, None, None


def _run_row(record: dict[str, Any]) -> dict[str, Any]:
    names = {c.name for c in runs_table.columns}
    return {k: v for k, v in record.items() if k in names}
