"""Where the batch job writes scores: a database, a file, or CRM update payloads.

A target is one string (`expansion score --to TARGET`):

- `sqlite:///models/crm.db` (embedded default) or `postgresql://user@host/db` (SQLAlchemy +
  psycopg 3, `postgresql+psycopg://`): tables `account_expansion_scores` (current: one row per
  account, upserted; a backfill of an older as_of never overwrites a newer row),
  `account_expansion_score_history` (upserted on account, as_of and both model versions: a
  rerun replaces its rows, never duplicates them) and `scoring_runs` (one row per run: counts,
  score quantiles, drift JSON, start and finish, why this as-of date, and the accounts not
  scored with the reason of each).
- `scores.parquet` / `scores.csv`: the columns of `account_expansion_scores`, one row per
  account (`reasons` as JSON text; `triggers` a list in Parquet, JSON text in CSV), and the run
  record beside it in `scores.parquet.run.json`.
- `hubspot:DIR[?id_property=NAME]`: bodies for `POST /crm/v3/objects/companies/batch/update`
  (`{"inputs": [{"id", "properties", "idProperty"?}]}`, at most 100 inputs per file) in
  `DIR/requests/`, `DIR/properties.json` (the PropertyCreate bodies to create our properties
  once) and `DIR/manifest.json` (endpoint, files, run record).
- `salesforce:DIR[?external_id=FIELD__c]`: sObject Collections bodies
  (`PATCH /services/data/vXX.X/composite/sobjects`, `{"allOrNone": false, "records": [...]}`,
  at most 200 records per file, each with `attributes.type = Account` and its `id`; with
  `external_id`, an upsert on that field instead), `DIR/fields.json` and `DIR/manifest.json`.
- `hubspot://`, `salesforce://`, `https://...` (webhook): a live sync, see `serving.crm` and
  docs/crm-sync.md (not all-or-nothing: what landed stays, the run record lists what did not).

Every sink is all-or-nothing. A database run is one transaction: a crash half-way (even
SIGKILL) leaves the previous scores and no trace of the run, and readers see the old scores
until the commit (SQLite runs in WAL mode). Files and CRM folders are written under a hidden
`.partial` name beside the target and renamed into place at the end.

CRM properties (`CRM_FIELDS`): each output column maps to a custom company property named
`expansion_<column>` in HubSpot (`expansion_p_expand`, `expansion_p_post_upsell_churn`,
`expansion_expected_net_value`, `expansion_expected_uplift_mrr`, `expansion_rank`,
`expansion_next_step`, `expansion_triggers`, `expansion_route`, `expansion_suppressed`,
`expansion_suppression_reason`, `expansion_reasons` (the plain-text line), `expansion_as_of`,
`expansion_scored_at`, `expansion_model_versions`) and to an Account custom field
`Expansion_<Column>__c` in Salesforce. We write only our outputs, never the CRM's own owner,
segment or MRR. HubSpot takes every value as a string (numbers as decimals, booleans
`true`/`false`, dates as epoch milliseconds at midnight UTC, multiple checkboxes as `a;b`,
`""` clears a value); Salesforce takes JSON numbers, booleans, ISO dates, `a;b` for a
multi-select picklist and `null` (which clears a field). The record id is our `account_id`:
use account ids that are the CRM's ids, or name a unique property that holds ours.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
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

from features.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL
from features.triggers import TRIGGERS

log = logging.getLogger(__name__)

# --- the rows every sink receives ------------------------------------------------------------

# One row per account, in this order; `triggers` is a list of names, `reasons` a list of
# `{feature, value, contribution, text}` records, `base_value` the log-odds they start from.
ROW_COLUMNS = [
    "account_id",
    "run_id",
    "scored_at",
    "as_of",
    "propensity_model_version",
    "post_upsell_model_version",
    "p_expand",
    "p_post_upsell_churn",
    "expected_uplift_mrr",
    "expected_net_value",
    "rank",
    "next_step",
    "triggers",
    "route",
    "suppressed",
    "suppression_reason",
    "reasons",
    "reasons_text",
    "base_value",
    "mrr",
    "csm_owner",
    "segment",
]
FLOAT_COLUMNS = (
    "p_expand",
    "p_post_upsell_churn",
    "expected_uplift_mrr",
    "expected_net_value",
    "base_value",
    "mrr",
)
HISTORY_KEY = ["account_id", "as_of", "propensity_model_version", "post_upsell_model_version"]


@dataclass(frozen=True)
class RunInfo:
    """What identifies a run in every row it writes."""

    run_id: str
    as_of: date
    scored_at: datetime
    versions: dict[str, str]

    @property
    def propensity_version(self) -> str:
        return self.versions[PROPENSITY_MODEL]

    @property
    def post_upsell_version(self) -> str:
        return self.versions[POST_UPSELL_MODEL]


def to_records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Plain Python values (None for missing) that any driver or JSON encoder accepts."""
    columns: dict[str, list] = {}
    for name in ROW_COLUMNS:
        values = rows[name]
        if name in FLOAT_COLUMNS:
            x = values.to_numpy(dtype="float64", na_value=np.nan)
            columns[name] = [None if math.isnan(v) else v for v in x.tolist()]
        elif name == "rank":
            columns[name] = [None if pd.isna(v) else int(v) for v in values.tolist()]
        elif name == "suppressed":
            columns[name] = [bool(v) for v in values.tolist()]
        elif name in ("triggers", "reasons"):
            columns[name] = list(values)
        elif name == "scored_at":
            columns[name] = [pd.Timestamp(v).to_pydatetime() for v in values.tolist()]
        elif name == "as_of":
            columns[name] = [pd.Timestamp(v).date() for v in values.tolist()]
        else:
            columns[name] = [
                None if (v is None or (isinstance(v, float) and math.isnan(v))) else v
                for v in values.tolist()
            ]
    return [dict(zip(ROW_COLUMNS, row, strict=True)) for row in zip(*columns.values(), strict=True)]


class Sink(Protocol):
    """A destination: opened once per run, written chunk by chunk, then committed or aborted."""

    description: str

    def prepare(self) -> None:
        """Check the target early (connect, create tables or folders); no run yet."""

    def open(self, run: RunInfo) -> None: ...

    def write(self, rows: pd.DataFrame) -> None: ...

    def commit(self, record: dict[str, Any]) -> None: ...

    def abort(self, record: dict[str, Any]) -> None: ...


def open_target(target: str) -> Sink:
    """The sink for a target string (see the module docstring for the forms)."""
    if target.startswith(("sqlite:", "postgresql:", "postgresql+", "postgres:")):
        return DatabaseSink(target)
    from serving.crm import is_live_target, open_live_target  # live sync: serving/crm/

    if is_live_target(target):
        return open_live_target(target)
    if target.startswith("hubspot:"):
        folder, options = _crm_target(target, "hubspot:", {"id_property"})
        return HubSpotSink(folder, id_property=options.get("id_property"))
    if target.startswith("salesforce:"):
        folder, options = _crm_target(target, "salesforce:", {"external_id"})
        return SalesforceSink(folder, external_id=options.get("external_id"))
    suffix = Path(target).suffix.lower()
    if suffix in (".parquet", ".csv"):
        return FileSink(Path(target))
    raise ValueError(
        f"unknown target {target!r}: use sqlite:///FILE, postgresql://..., FILE.parquet, "
        "FILE.csv, hubspot:DIR, salesforce:DIR, hubspot://, salesforce:// or https://..."
    )


def _crm_target(target: str, prefix: str, allowed: set[str]) -> tuple[Path, dict[str, str]]:
    rest = target.removeprefix(prefix)
    path, _, query = rest.partition("?")
    if not path:
        raise ValueError(f"{target!r}: name a folder, e.g. {prefix}out/{prefix[:-1]}")
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"{target!r}: unknown option(s) {sorted(unknown)}; allowed {allowed}")
    return Path(path), options


# --- databases ----------------------------------------------------------------------------

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
        Column("rank", Integer, comment="1 = call first; NULL when suppressed"),
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
    run-record columns a database created by an older version lacks."""
    metadata.create_all(engine, checkfirst=True)
    have = {c["name"] for c in inspect(engine).get_columns(runs_table.name)}
    missing = [c for c in runs_table.columns if c.name not in have]
    if missing:
        with engine.begin() as conn:
            # IF NOT EXISTS (PostgreSQL): two runs starting at once may both add the column.
            guard = "IF NOT EXISTS " if conn.dialect.name == "postgresql" else ""
            for column in missing:
                kind = column.type.compile(dialect=conn.dialect)
                name = conn.dialect.identifier_preparer.quote(column.name)
                conn.execute(text(f"ALTER TABLE {runs_table.name} ADD COLUMN {guard}{name} {kind}"))


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


# --- files ----------------------------------------------------------------------------------

PARQUET_SCHEMA = pa.schema(
    [
        ("account_id", pa.string()),
        ("run_id", pa.string()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
        ("as_of", pa.date32()),
        ("propensity_model_version", pa.string()),
        ("post_upsell_model_version", pa.string()),
        ("p_expand", pa.float64()),
        ("p_post_upsell_churn", pa.float64()),
        ("expected_uplift_mrr", pa.float64()),
        ("expected_net_value", pa.float64()),
        ("rank", pa.int64()),
        ("next_step", pa.string()),
        ("triggers", pa.list_(pa.string())),
        ("route", pa.string()),
        ("suppressed", pa.bool_()),
        ("suppression_reason", pa.string()),
        ("reasons", pa.string()),  # JSON: a reason's value is a number or a category
        ("reasons_text", pa.string()),
        ("base_value", pa.float64()),
        ("mrr", pa.float64()),
        ("csm_owner", pa.string()),
        ("segment", pa.string()),
    ]
)


def _partial(path: Path, run_id: str) -> Path:
    return path.with_name(f".{path.name}.{run_id}.partial")


def _remove_stale_partials(path: Path) -> None:
    """Leftovers of runs that were killed: never visible under the target's own name."""
    for stale in path.parent.glob(f".{path.name}.*.partial"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=_json_default))
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value)}")


class FileSink:
    """One Parquet or CSV file with a row per account, swapped into place at the end."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.kind = self.path.suffix.lower().lstrip(".")
        self.description = str(self.path)
        self._partial: Path | None = None
        self._writer: pq.ParquetWriter | None = None
        self._header = True

    def prepare(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def run_file(self) -> Path:
        """The run record beside the scores (what `scoring_runs` holds in a database)."""
        return self.path.with_name(self.path.name + ".run.json")

    def open(self, run: RunInfo) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(self.path)
        self._partial = _partial(self.path, run.run_id)
        self._header = True
        if self.kind == "parquet":
            self._writer = pq.ParquetWriter(self._partial, PARQUET_SCHEMA)

    def write(self, rows: pd.DataFrame) -> None:
        frame = rows[ROW_COLUMNS].copy()
        frame["reasons"] = [json.dumps(r) for r in frame["reasons"]]
        frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True)
        frame["rank"] = frame["rank"].astype("Int64")
        if self.kind == "parquet":
            self._writer.write_table(
                pa.Table.from_pandas(frame, schema=PARQUET_SCHEMA, preserve_index=False)
            )
            return
        frame["triggers"] = [json.dumps(list(t)) for t in frame["triggers"]]
        frame.to_csv(
            self._partial, mode="w" if self._header else "a", header=self._header, index=False
        )
        self._header = False

    def commit(self, record: dict[str, Any]) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        elif self._header:  # no rows at all: still a valid file with its header
            pd.DataFrame(columns=ROW_COLUMNS).to_csv(self._partial, index=False)
        os.replace(self._partial, self.path)
        _write_json(self.run_file, record)

    def abort(self, record: dict[str, Any]) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._partial is not None:
            self._partial.unlink(missing_ok=True)


# --- CRM payloads ---------------------------------------------------------------------------

HUBSPOT_BATCH_LIMIT = 100  # inputs per companies batch/update request
HUBSPOT_ENDPOINT = "https://api.hubapi.com/crm/v3/objects/companies/batch/update"
HUBSPOT_PROPERTIES_ENDPOINT = "https://api.hubapi.com/crm/v3/properties/companies"
SALESFORCE_BATCH_LIMIT = 200  # records per sObject Collections request
SALESFORCE_API = "v68.0"

ROUTES = ["csm", "automated"]


@dataclass(frozen=True)
class CrmField:
    """One of our columns as a CRM property/field."""

    column: str
    hubspot: str
    salesforce: str
    kind: str  # number | text | textarea | enumeration | multi | bool | date | datetime
    label: str
    description: str
    options: tuple[str, ...] = ()


CRM_FIELDS: tuple[CrmField, ...] = (
    CrmField(
        "p_expand",
        "expansion_p_expand",
        "Expansion_P_Expand__c",
        "number",
        "Expansion: probability",
        "Calibrated probability that the account expands (upgrade or seats) in the horizon.",
    ),
    CrmField(
        "p_post_upsell_churn",
        "expansion_p_post_upsell_churn",
        "Expansion_P_Post_Upsell_Churn__c",
        "number",
        "Expansion: post-upsell churn risk",
        "Probability that the likely next step is reversed (downgrade or cancel) afterwards.",
    ),
    CrmField(
        "expected_net_value",
        "expansion_expected_net_value",
        "Expansion_Expected_Net_Value__c",
        "number",
        "Expansion: expected net value (MRR)",
        "p_expand x uplift MRR x (1 - post-upsell churn risk); the ranking key.",
    ),
    CrmField(
        "expected_uplift_mrr",
        "expansion_expected_uplift_mrr",
        "Expansion_Expected_Uplift_MRR__c",
        "number",
        "Expansion: uplift MRR of the next step",
        "MRR gained by the likely next step, from the price list.",
    ),
    CrmField(
        "rank",
        "expansion_rank",
        "Expansion_Rank__c",
        "number",
        "Expansion: rank",
        "1 = call first, by expected net value; empty when suppressed.",
    ),
    CrmField(
        "next_step",
        "expansion_next_step",
        "Expansion_Next_Step__c",
        "text",
        "Expansion: next step",
        "The likely next step, e.g. 'upgrade to pro' or 'add 3 seats'.",
    ),
    CrmField(
        "triggers",
        "expansion_triggers",
        "Expansion_Triggers__c",
        "multi",
        "Expansion: PQL triggers",
        "Product-qualified-lead rules that fired.",
        tuple(TRIGGERS),
    ),
    CrmField(
        "route",
        "expansion_route",
        "Expansion_Route__c",
        "enumeration",
        "Expansion: route",
        "csm (large account or value) or automated.",
        tuple(ROUTES),
    ),
    CrmField(
        "suppressed",
        "expansion_suppressed",
        "Expansion_Suppressed__c",
        "bool",
        "Expansion: suppressed",
        "Do not pitch now (see the suppression reason).",
    ),
    CrmField(
        "suppression_reason",
        "expansion_suppression_reason",
        "Expansion_Suppression_Reason__c",
        "text",
        "Expansion: suppression reason",
        "Why the account must not be pitched now.",
    ),
    CrmField(
        "reasons_text",
        "expansion_reasons",
        "Expansion_Reasons__c",
        "textarea",
        "Expansion: top reasons",
        "Strongest reasons for the score (contributions on the log-odds scale).",
    ),
    CrmField(
        "as_of",
        "expansion_as_of",
        "Expansion_As_Of__c",
        "date",
        "Expansion: data as of",
        "The date the features were computed at.",
    ),
    CrmField(
        "scored_at",
        "expansion_scored_at",
        "Expansion_Scored_At__c",
        "datetime",
        "Expansion: scored at",
        "When the batch run scored the account.",
    ),
    CrmField(
        "model_versions",
        "expansion_model_versions",
        "Expansion_Model_Versions__c",
        "text",
        "Expansion: model versions",
        "Registered model versions that produced the scores.",
    ),
)
NUMBER_DIGITS = {"p_expand": 6, "p_post_upsell_churn": 6, "rank": 0}


def _model_versions(record: dict[str, Any]) -> str:
    return (
        f"{PROPENSITY_MODEL}:{record['propensity_model_version']},"
        f"{POST_UPSELL_MODEL}:{record['post_upsell_model_version']}"
    )


def _value(record: dict[str, Any], column: str) -> Any:
    return _model_versions(record) if column == "model_versions" else record[column]


def _epoch_ms(value: date | datetime) -> int:
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    return int(value.astimezone(UTC).timestamp() * 1000)


def hubspot_value(field: CrmField, value: Any) -> str:
    """A value as HubSpot takes it: always a string, `""` to clear."""
    if value is None:
        return ""
    if field.kind == "number":  # fixed point: never `1e-06`
        return f"{float(value):.{NUMBER_DIGITS.get(field.column, 2)}f}"
    if field.kind == "bool":
        return "true" if value else "false"
    if field.kind == "multi":
        return ";".join(value)
    if field.kind in ("date", "datetime"):
        return str(_epoch_ms(value))
    return str(value)


def salesforce_value(field: CrmField, value: Any) -> Any:
    """A value as Salesforce takes it in JSON: null clears a field."""
    if value is None:
        return None
    if field.kind == "number":
        digits = NUMBER_DIGITS.get(field.column, 2)
        return int(value) if digits == 0 else round(float(value), digits)
    if field.kind == "bool":
        return bool(value)
    if field.kind == "multi":
        return ";".join(value) or None
    if field.kind == "date":
        return value.isoformat()
    if field.kind == "datetime":
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return str(value)


def hubspot_property_definitions() -> list[dict[str, Any]]:
    """`POST /crm/v3/properties/companies` bodies (PropertyCreate) for our properties."""
    types = {
        "number": ("number", "number"),
        "text": ("string", "text"),
        "textarea": ("string", "textarea"),
        "enumeration": ("enumeration", "select"),
        "multi": ("enumeration", "checkbox"),
        "bool": ("bool", "booleancheckbox"),
        "date": ("date", "date"),
        "datetime": ("datetime", "date"),
    }
    out = []
    for f in CRM_FIELDS:
        kind, field_type = types[f.kind]
        body: dict[str, Any] = {
            "name": f.hubspot,
            "label": f.label,
            "type": kind,
            "fieldType": field_type,
            "groupName": "companyinformation",
            "description": f.description,
        }
        if f.kind == "bool":
            body["options"] = [
                {"label": "Yes", "value": "true", "displayOrder": 0, "hidden": False},
                {"label": "No", "value": "false", "displayOrder": 1, "hidden": False},
            ]
        elif f.options:
            body["options"] = [
                {"label": o, "value": o, "displayOrder": i, "hidden": False}
                for i, o in enumerate(f.options)
            ]
        out.append(body)
    return out


def salesforce_field_definitions() -> list[dict[str, Any]]:
    """What an admin creates on Account in Setup (documentation, not an API body)."""
    types = {
        "number": "Number(12, 6)",
        "text": "Text(255)",
        "textarea": "Long Text Area(32768)",
        "enumeration": "Picklist",
        "multi": "Picklist (Multi-Select)",
        "bool": "Checkbox",
        "date": "Date",
        "datetime": "Date/Time",
    }
    return [
        {
            "fullName": f"Account.{f.salesforce}",
            "label": f.label,
            "type": types[f.kind],
            "description": f.description,
            **({"values": list(f.options)} if f.options else {}),
        }
        for f in CRM_FIELDS
    ]


class _CrmSink:
    """Request bodies of at most `limit` records per file, in a folder swapped in at the end."""

    system = ""
    limit = 100

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.description = f"{self.system}:{self.folder}"
        self._staged: Path | None = None
        self._run_id = ""
        self._pending: list[dict[str, Any]] = []
        self._files: list[str] = []
        self._records = 0

    def prepare(self) -> None:
        self.folder.parent.mkdir(parents=True, exist_ok=True)

    def open(self, run: RunInfo) -> None:
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(self.folder)
        self._run_id = run.run_id
        self._staged = _partial(self.folder, run.run_id)
        (self._staged / "requests").mkdir(parents=True)
        self._pending, self._files, self._records = [], [], 0

    def write(self, rows: pd.DataFrame) -> None:
        for record in to_records(rows):
            self._pending.append(self.item(record))
            if len(self._pending) == self.limit:
                self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        name = f"requests/{len(self._files) + 1:06d}.json"
        (self._staged / name).write_text(json.dumps(self.body(self._pending), indent=1))
        self._files.append(name)
        self._records += len(self._pending)
        self._pending = []

    def commit(self, record: dict[str, Any]) -> None:
        self._flush()
        for name, payload in self.extras().items():
            _write_json(self._staged / name, payload)
        manifest = {
            "system": self.system,
            **self.request(),
            "requests": self._files,
            "records": self._records,
            "max_records_per_request": self.limit,
            "run": record,
        }
        _write_json(self._staged / "manifest.json", manifest)
        _swap_folder(self._staged, self.folder, self._run_id)

    def abort(self, record: dict[str, Any]) -> None:
        if self._staged is not None:
            shutil.rmtree(self._staged, ignore_errors=True)

    # subclasses
    def item(self, record: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def body(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError

    def request(self) -> dict[str, Any]:
        raise NotImplementedError

    def extras(self) -> dict[str, Any]:
        return {}


def _swap_folder(staged: Path, final: Path, run_id: str) -> None:
    """Put the staged folder at `final`; the old one is moved aside first, then removed.

    Two renames, not one: a crash between them leaves the old folder under a hidden
    `.partial` name (removed by the next run) and no folder at `final`, never a mixed one.
    """
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.{run_id}-old.partial")
        os.replace(final, old)
    os.replace(staged, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class HubSpotSink(_CrmSink):
    """`POST /crm/v3/objects/companies/batch/update` bodies: `{"inputs": [...]}`, 100 each."""

    system = "hubspot"
    limit = HUBSPOT_BATCH_LIMIT

    def __init__(self, folder: Path, id_property: str | None = None) -> None:
        super().__init__(folder)
        self.id_property = id_property

    def item(self, record: dict[str, Any]) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": str(record["account_id"]),
            "properties": {
                f.hubspot: hubspot_value(f, _value(record, f.column)) for f in CRM_FIELDS
            },
        }
        if self.id_property:
            item["idProperty"] = self.id_property
        return item

    def body(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"inputs": items}

    def request(self) -> dict[str, Any]:
        return {"method": "POST", "endpoint": HUBSPOT_ENDPOINT}

    def extras(self) -> dict[str, Any]:
        return {
            "properties.json": {
                "method": "POST",
                "endpoint": HUBSPOT_PROPERTIES_ENDPOINT,
                "bodies": hubspot_property_definitions(),
            }
        }


class SalesforceSink(_CrmSink):
    """sObject Collections bodies: `{"allOrNone": false, "records": [...]}`, 200 each.

    By default an update (`PATCH /composite/sobjects`, each record with its Account `id`);
    with `external_id` an upsert keyed on that external-id field
    (`PATCH /composite/sobjects/Account/<field>`), for orgs that store our account id.
    """

    system = "salesforce"
    limit = SALESFORCE_BATCH_LIMIT

    def __init__(self, folder: Path, external_id: str | None = None) -> None:
        super().__init__(folder)
        self.external_id = external_id

    def item(self, record: dict[str, Any]) -> dict[str, Any]:
        item: dict[str, Any] = {"attributes": {"type": "Account"}}
        if self.external_id:
            item[self.external_id] = str(record["account_id"])
        else:
            item["id"] = str(record["account_id"])
        for f in CRM_FIELDS:
            item[f.salesforce] = salesforce_value(f, _value(record, f.column))
        return item

    def body(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"allOrNone": False, "records": items}

    def request(self) -> dict[str, Any]:
        path = f"/services/data/{SALESFORCE_API}/composite/sobjects"
        if self.external_id:
            path += f"/Account/{self.external_id}"
        return {"method": "PATCH", "endpoint": path}

    def extras(self) -> dict[str, Any]:
        return {"fields.json": salesforce_field_definitions()}


def iter_request_bodies(folder: Path) -> Iterable[dict[str, Any]]:
    """The request bodies a CRM sink wrote, in order (for a sender, and for tests)."""
    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    for name in manifest["requests"]:
        yield json.loads((Path(folder) / name).read_text())
