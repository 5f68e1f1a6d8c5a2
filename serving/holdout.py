"""Holdouts the batch assigns: a reproducible random control group among actionable accounts.

Triggered outreach can only be shown to work against accounts that were eligible and were
deliberately not contacted. Each scoring run assigns such a holdout:

- **who**: actionable accounts only (a suppressed account is never pitched, so it is never in
  either arm of this run);
- **how much**: `holdout_share` of the actionable accounts (default 10%), *in each route*
  (CSM and automated), so that both the expensive and the cheap channel get a control group
  of the intended size;
- **which**: the accounts of a route with the smallest `holdout_hash(account, experiment)`:
  BLAKE2b of the two ids, never Python's `hash()` (salted per process), so the draw is the same
  on every machine and every rerun, and independent of everything the models see;
- **how long**: an account keeps its arm for the experiment's duration. The arms already drawn
  live in the `holdout_assignments` table of the CRM database; a later run only draws the
  accounts it has not seen (new, or newly actionable), topping each route up to its share.
  An account whose route changes keeps its arm. Outside `[holdout_start, holdout_end)` no
  account is held out.

Without a database target (files, CRM payloads) there is no stored history: the draw is then
the same function of the accounts and routes of this run alone (reproducible, but an account
can change arm when the actionable set changes).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Engine,
    Float,
    MetaData,
    String,
    Table,
    inspect,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url

from serving.settings import Settings
from serving.sinks import (
    DatabaseSink,
    Sink,
    create_database_engine,
    database_url,
    history_table,
)

log = logging.getLogger(__name__)

metadata = MetaData()
assignments_table = Table(
    "holdout_assignments",
    metadata,
    Column("experiment_id", String(255), primary_key=True),
    Column("account_id", String(255), primary_key=True),
    Column("holdout", Boolean, nullable=False, comment="true: deliberately not contacted"),
    Column("route", String(16), nullable=False, comment="route when the arm was drawn"),
    Column("draw", Float, nullable=False, comment="holdout_hash in [0, 1): smaller = held out"),
    Column("share", Float, nullable=False, comment="the holdout share at assignment"),
    Column("as_of", Date, nullable=False, comment="as_of of the run that drew the arm"),
    Column("run_id", String(36), nullable=False),
    Column("assigned_at", DateTime(timezone=True), nullable=False),
    comment="Arm of each account in each holdout experiment, drawn once and then kept.",
)
ASSIGNMENT_COLUMNS = [c.name for c in assignments_table.columns]


@dataclass(frozen=True)
class Experiment:
    """A holdout experiment: its id, the share held out per route and when it runs."""

    experiment_id: str
    share: float
    start: date | None = None
    end: date | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Experiment:
        return cls(
            settings.holdout_experiment,
            settings.holdout_share,
            settings.holdout_start,
            settings.holdout_end,
        )

    def active(self, as_of: date) -> bool:
        """True when `as_of` is in `[start, end)` and something is held out."""
        if self.share <= 0:
            return False
        if self.start is not None and as_of < self.start:
            return False
        return self.end is None or as_of < self.end


def holdout_hash(account_ids: pd.Series | list[str], experiment_id: str) -> np.ndarray:
    """A uniform number in [0, 1) per account: BLAKE2b of (experiment id, account id).

    The experiment id is the key, so a new experiment reshuffles everyone and no account is
    in the holdout of every experiment."""
    key = experiment_id.encode()[:64]  # BLAKE2b keys are at most 64 bytes
    out = np.empty(len(account_ids), dtype="float64")
    for i, account in enumerate(account_ids):
        digest = hashlib.blake2b(str(account).encode(), digest_size=8, key=key).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def assign_holdout(
    scored: pd.DataFrame,
    experiment: Experiment,
    prior: Mapping[str, bool] | None = None,
) -> tuple[pd.Series, pd.DataFrame]:
    """The arm of each scored account, and the assignments drawn by this call.

    `scored` needs `account_id`, `route` and `suppressed`. `prior` maps account ids to the
    arm already drawn in this experiment (kept whatever the account's route is now). Returns
    a boolean Series aligned on `scored` (True = held out; suppressed accounts are False) and
    a frame of the newly drawn accounts (`account_id`, `holdout`, `route`, `draw`).
    """
    holdout = pd.Series(False, index=scored.index, dtype=bool)
    empty = pd.DataFrame({"account_id": [], "holdout": [], "route": [], "draw": []})
    if scored.empty:
        return holdout, empty
    prior = prior or {}
    ids = scored["account_id"].astype(str)
    eligible = ~scored["suppressed"].astype(bool)
    known = ids.map(lambda a: prior.get(a))
    holdout[eligible & (known == True)] = True  # noqa: E712 (object column: None, True, False)
    new = eligible & known.isna()
    draw = pd.Series(holdout_hash(ids, experiment.experiment_id), index=scored.index)
    for route in sorted(scored.loc[eligible, "route"].astype(str).unique()):
        stratum = eligible & (scored["route"].astype(str) == route)
        # Top the route up to its share; arms already drawn count, whatever their route was.
        need = round(experiment.share * int(stratum.sum())) - int((holdout & stratum).sum())
        if need <= 0:
            continue
        candidates = pd.DataFrame({"draw": draw[stratum & new], "account_id": ids[stratum & new]})
        chosen = candidates.sort_values(["draw", "account_id"]).index[:need]
        holdout[chosen] = True
    drawn = pd.DataFrame(
        {
            "account_id": ids[new].to_numpy(),
            "holdout": holdout[new].to_numpy(),
            "route": scored.loc[new, "route"].astype(str).to_numpy(),
            "draw": draw[new].to_numpy(),
        }
    )
    return holdout, drawn


def hold_out(
    scored: pd.DataFrame, experiment: Experiment, sink: Sink, as_of: date, run_id: str
) -> pd.Series:
    """The batch's step: arms of the scored accounts, kept from and added to the sink's
    database (the new arms commit with the run's scores, or not at all)."""
    if not experiment.active(as_of):
        return pd.Series(False, index=scored.index, dtype=bool)
    database = isinstance(sink, DatabaseSink)
    prior = read_assignments_at(sink.url, experiment.experiment_id) if database else {}
    holdout, drawn = assign_holdout(scored, experiment, prior)
    if database and len(drawn):
        rows = assignment_rows(drawn, experiment, as_of, run_id)
        sink.pending_writes.append(partial(write_assignments, rows=rows))
    return holdout


def assignment_rows(
    drawn: pd.DataFrame, experiment: Experiment, as_of: date, run_id: str
) -> list[dict]:
    """Rows of `holdout_assignments` for the accounts a run drew."""
    now = datetime.now(UTC)
    return [
        {
            "experiment_id": experiment.experiment_id,
            "account_id": str(a),
            "holdout": bool(h),
            "route": str(r),
            "draw": float(d),
            "share": float(experiment.share),
            "as_of": as_of,
            "run_id": run_id,
            "assigned_at": now,
        }
        for a, h, r, d in drawn[["account_id", "holdout", "route", "draw"]].itertuples(index=False)
    ]


# --- the stored assignments -------------------------------------------------------------------


def create_assignment_table(bind: Engine | Connection) -> None:
    metadata.create_all(bind, checkfirst=True)


def read_assignments(bind: Engine | Connection, experiment_id: str) -> dict[str, bool]:
    """The arms already drawn in `experiment_id` ({} when the table does not exist yet)."""
    if not inspect(bind).has_table(assignments_table.name):
        return {}
    query = select(assignments_table.c.account_id, assignments_table.c.holdout).where(
        assignments_table.c.experiment_id == experiment_id
    )
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            rows = conn.execute(query).all()
    else:
        rows = bind.execute(query).all()
    return {str(a): bool(h) for a, h in rows}


def read_assignments_at(url: str, experiment_id: str) -> dict[str, bool]:
    """`read_assignments` from a database URL; {} when a SQLite file does not exist (the
    service reads the batch's default database and must not create it)."""
    parsed = make_url(database_url(url))
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            return {}
        if not Path(parsed.database).exists():
            return {}
    engine = create_database_engine(url)
    try:
        return read_assignments(engine, experiment_id)
    finally:
        engine.dispose()


def write_assignments(conn: Connection, rows: list[dict]) -> None:
    """Insert new arms; an arm already stored is kept (ON CONFLICT DO NOTHING): two runs
    racing on the same account cannot move it to the other arm."""
    create_assignment_table(conn)
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(assignments_table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(assignments_table)
    else:
        raise ValueError(f"no holdout store for dialect {dialect!r}")
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["experiment_id", "account_id"]), rows)


def assignment_history(url: str, experiment_id: str | None = None) -> pd.DataFrame:
    """Every arm drawn (in `experiment_id`, or in all experiments) with the score row of the
    run that drew it: account_id, experiment_id, as_of, holdout, route, segment, triggers,
    expected_net_value (the input of `features.analytics.incrementality.assignment_units`).

    Empty when the database has no `holdout_assignments` table yet."""
    columns = [
        "account_id",
        "experiment_id",
        "as_of",
        "holdout",
        "route",
        "segment",
        "triggers",
        "expected_net_value",
    ]
    engine = create_database_engine(url)
    try:
        if not inspect(engine).has_table(assignments_table.name):
            return pd.DataFrame(columns=columns)
        a, h = assignments_table, history_table
        query = select(
            a.c.account_id,
            a.c.experiment_id,
            a.c.as_of,
            a.c.holdout,
            a.c.route,
            h.c.segment,
            h.c.triggers,
            h.c.expected_net_value,
            h.c.scored_at,
        ).select_from(a.outerjoin(h, (h.c.account_id == a.c.account_id) & (h.c.as_of == a.c.as_of)))
        if experiment_id is not None:
            query = query.where(a.c.experiment_id == experiment_id)
        with engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
    finally:
        engine.dispose()
    frame = pd.DataFrame([dict(r) for r in rows], columns=[*columns, "scored_at"])
    # Several model versions may have scored that as_of: the latest score row speaks for it.
    frame = frame.sort_values("scored_at", na_position="first").drop_duplicates(
        ["experiment_id", "account_id"], keep="last"
    )
    return frame[columns].sort_values(["experiment_id", "account_id"], ignore_index=True)
