"""Shared test helpers: hand-written tiny datasets (a few rows per table)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

# A minimal valid dataset: two accounts, two plans, their subscriptions, users and events.
BASE_TABLES: dict[str, list[dict]] = {
    "accounts": [
        {"account_id": "a1", "created_at": "2024-01-01T00:00:00", "segment": "smb"},
        {"account_id": "a2", "created_at": "2024-01-02T00:00:00", "segment": "enterprise"},
    ],
    "plans": [
        {"plan_id": "starter", "tier": 1, "base_mrr": 50.0, "seat_mrr": 10.0},
        {"plan_id": "pro", "tier": 2, "base_mrr": 100.0, "seat_mrr": 20.0},
    ],
    "subscriptions": [
        {
            "account_id": "a1",
            "effective_at": "2024-01-01",
            "plan_id": "starter",
            "seats": 3,
            "mrr": 80.0,
            "status": "active",
        },
        {
            "account_id": "a2",
            "effective_at": "2024-01-02",
            "plan_id": "pro",
            "seats": 5,
            "mrr": 200.0,
            "status": "active",
        },
    ],
    "users": [
        {"user_id": "u1", "account_id": "a1", "created_at": "2024-01-01"},
        {"user_id": "u2", "account_id": "a2", "created_at": "2024-01-02"},
    ],
    "events": [
        {
            "account_id": "a1",
            "timestamp": "2024-01-03T10:00:00",
            "event": "login",
            "user_id": "u1",
            "event_id": "e1",
            "quantity": 1.0,
        },
        {
            "account_id": "a2",
            "timestamp": "2024-01-03T11:00:00",
            "event": "login",
            "user_id": "u2",
            "event_id": "e2",
            "quantity": 1.0,
        },
    ],
}


def write_tables(
    path: Path, tables: dict[str, list[dict] | pd.DataFrame], fmt: str = "csv"
) -> Path:
    """Write each table as `<name>.<fmt>` into `path` and return it."""
    path.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        if fmt == "csv":
            frame.to_csv(path / f"{name}.csv", index=False)
        else:
            frame.to_parquet(path / f"{name}.parquet", index=False)
    return path


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Build a tiny dataset: the base tables with some rows added or tables replaced."""

    def _make(
        extra: dict[str, list[dict]] | None = None,
        replace: dict[str, list[dict] | pd.DataFrame | None] | None = None,
        fmt: str = "csv",
        name: str = "ds",
    ) -> Path:
        tables: dict[str, list[dict] | pd.DataFrame] = {k: list(v) for k, v in BASE_TABLES.items()}
        for table, rows in (extra or {}).items():
            tables.setdefault(table, [])
            tables[table] = list(tables[table]) + rows
        for table, rows in (replace or {}).items():
            if rows is None:
                tables.pop(table, None)
            else:
                tables[table] = rows
        return write_tables(tmp_path / name, tables, fmt)

    return _make


from tests.fixtures_models import (  # noqa: E402, F401  (shared fixtures)
    models,
    sim_data,
    snapshot,
    trained,
)
from tests.pg import db_url, pg_server, pg_url  # noqa: E402, F401  (CRM database fixtures)
