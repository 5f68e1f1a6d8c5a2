"""A real PostgreSQL server for the tests, started once per session.

`pg_server` yields the URL of a server: `EXPANSION_TEST_PG_URL` when set (a server you run),
otherwise one that `scripts/start_postgres.sh` installs if missing (as root, from Debian's
packages), initdb's in a temporary folder, starts on a free loopback port and stops at the end.
`pg_url` gives each test a database of its own on that server, dropped afterwards.

`db_url` runs a test on both embedded SQLite and that server (`BACKENDS`); `read` returns a
table of either as a frame.

`tests/conftest.py` makes the fixtures available to every test module.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Table, create_engine, select, text
from sqlalchemy.engine import make_url

from serving.sinks import create_database_engine

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "start_postgres.sh"
ENV_URL = "EXPANSION_TEST_PG_URL"


def postgres_installed() -> bool:
    return bool(shutil.which("pg_ctl") or glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of a running PostgreSQL server (database `expansion_test`)."""
    if os.environ.get(ENV_URL):
        yield os.environ[ENV_URL]
        return
    if not postgres_installed() and os.geteuid() != 0:
        if os.environ.get("CI"):  # a skipped database test in CI would hide a missing install
            pytest.fail(f"PostgreSQL is not installed in CI: run `{SCRIPT} install` as root")
        pytest.skip(
            "PostgreSQL is not installed and installing it needs root: run "
            f"`{SCRIPT} install` as root, or set {ENV_URL}"
        )
    # Not under pytest's tmp dir: that one is private to root and the server runs as postgres.
    folder = Path(tempfile.mkdtemp(prefix="expansion-pg-"))
    try:
        started = subprocess.run(
            [str(SCRIPT), "start", str(folder)],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,  # includes an apt-get install on a fresh machine
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL:\n{exc.stderr}") from exc
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(SCRIPT), "stop", str(folder)], check=False, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's server; dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A CRM database URL: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crm.db'}"
    return request.getfixturevalue("pg_url")


def read(url: str, table: Table) -> pd.DataFrame:
    """Every row of `table` in the database at `url`, with its columns in table order."""
    engine = create_database_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(table)).mappings().all()
    finally:
        engine.dispose()
    return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in table.columns])
