"""What a scoring run covers: which as-of date and why, dates the data does not reach, and
every account of `accounts` either scored or listed with why not (run summary and
`scoring_runs`, on SQLite and PostgreSQL, including a database created before those columns).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from sqlalchemy import Column, MetaData, Table, select
from typer.testing import CliRunner

from features.dataset import load_dataset
from serving.batch import run_batch, score_snapshot
from serving.coverage import AsOfOutOfRange, data_range, resolve_as_of
from serving.scoring import Models
from serving.settings import get_settings
from serving.sinks import create_database_engine, open_target, runs_table
from serving.snapshot import read_snapshot
from training.cli import app


@pytest.fixture(scope="module")
def models(trained) -> Models:
    snapshot = read_snapshot(trained.settings.models_dir / "snapshot")
    return Models.load(trained.settings, snapshot.feature_names)


def copy_with(source: Path, folder: Path, tables: dict[str, pd.DataFrame]) -> Path:
    """A dataset folder holding `tables` and links to the other tables of `source`."""
    folder.mkdir(parents=True)
    for file in source.glob("*.parquet"):
        if file.stem not in tables:
            (folder / file.name).symlink_to(file)
    for name, frame in tables.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    return folder


def read_runs(url: str) -> list[dict]:
    engine = create_database_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(runs_table)).mappings()]
    finally:
        engine.dispose()


def as_list(value):  # SQLite hands JSON back as text, PostgreSQL as values
    return json.loads(value) if isinstance(value, str) else value


# --- the as-of date: which one, and why ---------------------------------------------------


def test_default_as_of_comes_from_clean_events_and_the_run_says_why(trained, models, tmp_path):
    span = data_range(trained.dataset)
    assert span.default_as_of == pd.Timestamp(span.last_event).date() + timedelta(days=1)
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    summary = run_batch(trained.dataset, trained.settings, url, models=models)
    assert summary.as_of == span.default_as_of
    why = f"day after the latest clean event {span.last_event}"
    assert summary.as_of_reason == why
    given = run_batch(
        trained.dataset, trained.settings, url, models=models, as_of=span.default_as_of
    )
    assert given.as_of_reason == "--as-of given"
    runs = {r["run_id"]: r for r in read_runs(url)}
    assert runs[summary.run_id]["as_of_reason"] == why
    assert runs[given.run_id]["as_of_reason"] == "--as-of given"
    console = Console(record=True, width=200)
    console.print(summary.to_table())
    assert f"{summary.as_of} ({why})" in console.export_text()


def test_a_quarantined_event_does_not_move_the_default_as_of(make_dataset):
    """A far-future event that breaks a rule is quarantined: the default stays put."""
    bad = {
        "account_id": "a1",
        "timestamp": "2031-03-01T00:00:00",
        "event": "login",
        "user_id": "u1",
        "event_id": "e9",
        "quantity": -1.0,
    }
    ds = load_dataset(make_dataset(extra={"events": [bad]}))
    chosen = resolve_as_of(ds)
    assert chosen.date == date(2024, 1, 4)
    assert chosen.reason == "day after the latest clean event 2024-01-03 11:00:00"


# --- dates the data does not cover --------------------------------------------------------


def test_as_of_outside_the_data_is_refused_unless_allowed(make_dataset):
    ds = load_dataset(make_dataset())  # events on 2024-01-03 only
    assert resolve_as_of(ds, "2024-01-04").date == date(2024, 1, 4)
    assert resolve_as_of(ds, "2024-01-11").date == date(2024, 1, 11)  # within a week
    for day in ("2010-01-01", "2024-01-03", "2024-01-12", "2030-01-01"):
        with pytest.raises(AsOfOutOfRange) as err:
            resolve_as_of(ds, day)
        message = str(err.value)
        assert "\n" not in message
        assert f"as-of {day} is outside the data" in message
        assert "2024-01-03 10:00:00 to 2024-01-03 11:00:00" in message
        assert "--allow-out-of-range-as-of" in message
        allowed = resolve_as_of(ds, day, allow_out_of_range=True)
        assert allowed.date == date.fromisoformat(day) and "outside the data" in allowed.reason
    with pytest.raises(AsOfOutOfRange, match="not a date"):
        resolve_as_of(ds, "notadate")


def test_a_dataset_without_clean_events_has_no_default_as_of(make_dataset):
    ds = load_dataset(
        make_dataset(replace={"events": pd.DataFrame(columns=["account_id", "timestamp", "event"])})
    )
    with pytest.raises(AsOfOutOfRange, match="no clean rows"):
        resolve_as_of(ds)


@pytest.fixture
def cli(trained, monkeypatch) -> Callable[..., object]:
    monkeypatch.setenv("EXPANSION_MODELS_DIR", str(trained.settings.models_dir))
    get_settings.cache_clear()

    def invoke(*args: str):
        return CliRunner().invoke(app, list(args))

    yield invoke
    get_settings.cache_clear()


@pytest.mark.parametrize("day", ["2010-01-01", "2030-01-01"])
def test_cli_refuses_an_as_of_outside_the_data_in_one_line(trained, cli, tmp_path, day):
    span = data_range(trained.dataset)
    data = str(trained.data_dir)
    out = tmp_path / "scores.csv"
    commands = [
        ["score", "--data", data, "--to", str(out), "--as-of", day],
        ["features", "--data", data, "--out", str(tmp_path / "f.csv"), "--as-of", day],
        ["snapshot", "--data", data, "--as-of", day],
    ]
    for args in commands:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, (args, result.stderr)
        assert f"as-of {day} is outside the data" in lines[0]
        assert f"{span.first_event} to {span.last_event}" in lines[0]
        assert "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "f.csv").exists()


def test_cli_scores_an_out_of_range_as_of_when_told_to(trained, cli, tmp_path):
    out = tmp_path / "f.csv"
    result = cli(
        "features",
        "--data",
        str(trained.data_dir),
        "--out",
        str(out),
        "--as-of",
        "2010-01-01",
        "--allow-out-of-range-as-of",
    )
    assert result.exit_code == 0, result.output
    assert out.exists()
    assert "as of 2010-01-01: --as-of given, outside the data" in " ".join(result.stdout.split())


# --- every account scored, or listed with why not -----------------------------------------


@pytest.fixture(scope="module")
def gappy(trained, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The simulated data with accounts that cannot be scored, and why each cannot."""
    source = trained.data_dir
    accounts = pd.read_parquet(source / "accounts.parquet")
    subs = pd.read_parquet(source / "subscriptions.parquet")
    as_of = data_range(trained.dataset).default_as_of
    quarantined = accounts["account_id"].iloc[0]
    n_rows = int((subs["account_id"] == quarantined).sum())
    row = subs[subs["account_id"] != quarantined].iloc[[0]]  # a clean row to copy
    subs.loc[subs["account_id"] == quarantined, "mrr"] = -1.0  # every row: negative_mrr
    template = accounts.iloc[[1]]
    late = pd.Timestamp(as_of) + pd.Timedelta(days=3)
    new = pd.concat(
        [
            template.assign(account_id="zz_created_late", created_at=late),
            template.assign(account_id="zz_no_subscription"),
            template.assign(account_id="zz_starts_late"),
            template.assign(account_id="zz_bad_row", created_at=pd.NaT),
        ]
    )
    subs = pd.concat(
        [
            subs,
            row.assign(account_id="zz_created_late", effective_at=late),
            row.assign(account_id="zz_starts_late", effective_at=late),
            row.assign(account_id="zz_bad_row"),
        ]
    )
    folder = copy_with(
        source,
        tmp_path_factory.mktemp("gappy") / "data",
        {"accounts": pd.concat([accounts, new]), "subscriptions": subs},
    )
    why = {
        quarantined: f"no clean subscription rows: all {n_rows} quarantined (negative_mrr "
        f"{n_rows})",
        "zz_created_late": f"created after as-of ({late})",
        "zz_no_subscription": "no subscription rows",
        "zz_starts_late": f"first subscription row after as-of ({late})",
        "zz_bad_row": "account row quarantined (missing_created_at 1)",
    }
    return folder, why


def test_every_account_is_scored_or_listed_with_why_not(trained, models, gappy, db_url):
    folder, why = gappy
    ds = load_dataset(folder)
    summary = run_batch(ds, trained.settings, db_url, models=models)
    listed = {u["account_id"]: u["reason"] for u in summary.unscored}
    assert listed == why
    every = set(pd.read_parquet(folder / "accounts.parquet")["account_id"])
    assert summary.accounts + len(listed) == len(every)
    (run,) = read_runs(db_url)
    assert as_list(run["unscored"]) == summary.unscored
    assert run["accounts"] == summary.accounts
    console = Console(record=True, width=250)
    console.print(summary.to_table())
    text = console.export_text()
    assert f"{len(why)} of {len(every):,} accounts" in text
    for account_id, reason in why.items():
        assert f"1 {reason}: {account_id}" in text


def test_a_clean_run_says_every_account_was_scored(trained, models, tmp_path):
    summary = run_batch(
        trained.dataset, trained.settings, str(tmp_path / "scores.parquet"), models=models
    )
    assert summary.unscored == []
    n = len(pd.read_parquet(trained.data_dir / "accounts.parquet"))
    assert summary.accounts == n
    record = json.loads((tmp_path / "scores.parquet.run.json").read_text())
    assert record["unscored"] == [] and record["as_of_reason"] == summary.as_of_reason


def test_a_database_from_before_the_new_columns_gets_them(trained, models, db_url):
    """`scoring_runs` created by an older version (no as_of_reason, no unscored) is extended
    in place, and its earlier rows are kept."""
    old = MetaData()
    kept = [
        Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
        for c in runs_table.columns
        if c.name not in ("as_of_reason", "unscored")
    ]
    old_runs = Table(runs_table.name, old, *kept)
    engine = create_database_engine(db_url)
    try:
        old.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                old_runs.insert(),
                [
                    {
                        "run_id": "old-run",
                        "status": "completed",
                        "as_of": date(2024, 1, 1),
                        "started_at": pd.Timestamp("2024-01-01", tz="UTC").to_pydatetime(),
                    }
                ],
            )
    finally:
        engine.dispose()
    snapshot = read_snapshot(trained.settings.models_dir / "snapshot")
    snapshot.as_of_reason = "read from models/snapshot"
    summary = score_snapshot(snapshot, models, trained.settings, open_target(db_url))
    runs = {r["run_id"]: r for r in read_runs(db_url)}
    assert set(runs) == {"old-run", summary.run_id}
    assert runs["old-run"]["as_of_reason"] is None
    assert runs[summary.run_id]["as_of_reason"] == "read from models/snapshot"
    assert as_list(runs[summary.run_id]["unscored"]) == []


def test_refused_as_of_touches_no_target(trained, models, tmp_path):
    out = tmp_path / "scores.csv"
    with pytest.raises(AsOfOutOfRange):
        run_batch(trained.dataset, trained.settings, str(out), models=models, as_of="2010-01-01")
    assert not out.exists() and not list(tmp_path.iterdir())
