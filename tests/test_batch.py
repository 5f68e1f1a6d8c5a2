"""The batch job against real databases: SQLite and PostgreSQL (a server the tests start).

Upserts, history, idempotent reruns, backfills, a run killed half-way (SIGKILL) and a run that
fails half-way, parity with the API's scoring, the global rank and the stored drift.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from serving.batch import run_batch, score_snapshot
from serving.scoring import rank_accounts, score_accounts
from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL
from serving.sinks import (
    create_database_engine,
    history_table,
    open_target,
    runs_table,
    scores_table,
)
from serving.snapshot import build_snapshot, read_snapshot
from tests.pg import read

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def earlier(trained, snapshot):
    """The same accounts 28 days earlier."""
    return build_snapshot(trained.dataset, snapshot.as_of - timedelta(days=28))


def score(snap, models, trained, url, chunk_size=250, progress=None):
    return score_snapshot(
        snap, models, trained.settings, open_target(url), chunk_size=chunk_size, progress=progress
    )


def test_run_writes_current_history_and_run_record(trained, snapshot, models, db_url):
    seen = []
    summary = run_batch(
        trained.dataset,
        trained.settings,
        db_url,
        chunk_size=200,
        progress=lambda stage, done, total: seen.append((stage, done, total)),
    )
    n = len(snapshot)
    assert summary.accounts == summary.written == n
    assert ("write", n, n) in seen and ("write", 200, n) in seen and ("scores", n, n) in seen
    current = read(db_url, scores_table)
    history = read(db_url, history_table)
    runs = read(db_url, runs_table)
    assert len(current) == len(history) == n
    assert current["account_id"].is_unique
    assert set(current["run_id"]) == {summary.run_id}
    assert (current["as_of"] == snapshot.as_of).all()
    assert (current["propensity_model_version"] == models.versions[PROPENSITY_MODEL]).all()
    assert (current["post_upsell_model_version"] == models.versions[POST_UPSELL_MODEL]).all()

    (run,) = runs.to_dict("records")
    assert run["status"] == "completed" and run["run_id"] == summary.run_id
    assert run["accounts"] == run["written"] == n
    assert run["suppressed"] == int(current["suppressed"].sum()) == summary.suppressed
    assert run["counts"]["by_route"] == summary.by_route
    assert sum(summary.by_route.values()) == n - summary.suppressed
    assert run["counts"]["by_trigger"] == summary.by_trigger
    fired = pd.Series([t for ts in current["triggers"] for t in ts])
    assert summary.by_trigger == {k: int((fired == k).sum()) for k in summary.by_trigger}
    assert run["finished_at"] >= run["started_at"]
    q = run["score_quantiles"]["p_expand"]
    assert q["p10"] <= q["p50"] <= q["p90"] <= q["p99"]

    # Drift: one PSI per propensity feature, stored with the run and in the summary.
    # Every feature is compared, or listed as not comparable on this day (see serving.drift).
    compared, skipped = set(run["drift"]["psi"]), set(run["drift"]["not_compared"])
    assert compared | skipped == set(models.propensity.contract.features)
    assert not compared & skipped
    assert run["drift"]["warnings"] == summary.drift_warnings
    assert all(run["drift"]["psi"][f] > 0.2 for f in summary.drift_warnings)


def test_rank_and_reasons_on_every_row(trained, snapshot, models, db_url):
    score(snapshot, models, trained, db_url, chunk_size=97)  # chunks must not change the rank
    current = read(db_url, scores_table).set_index("account_id")
    held = current["holdout"].astype(bool)  # the holdout experiment: not on the call list
    live = current[~current["suppressed"] & ~held]
    assert current.loc[current["suppressed"] | held, "rank"].isna().all()
    assert sorted(live["rank"].astype(int)) == list(range(1, len(live) + 1))
    by_rank = live.sort_values("rank")
    assert by_rank["expected_net_value"].is_monotonic_decreasing
    assert current["reasons"].map(lambda r: isinstance(r, list)).all()
    assert (current["reasons_text"].notna()).all()
    explained = live[live["reasons"].map(len) > 0]
    assert len(explained) >= 0.9 * len(live)
    for reasons, line in zip(explained["reasons"], explained["reasons_text"], strict=True):
        assert 1 <= len(reasons) <= trained.settings.reasons
        assert line == "; ".join(r["text"] for r in reasons)
        assert {"feature", "value", "contribution", "text"} <= set(reasons[0])


def test_run_publishes_the_snapshot_it_scored(trained, snapshot, models, tmp_path):
    """`expansion score --snapshot`: the API's snapshot comes from the same features, after the
    scores are written; a failed run publishes nothing."""
    folder = tmp_path / "snapshot"
    earlier = (snapshot.as_of - timedelta(days=28)).isoformat()
    (tmp_path / "a_folder.db").mkdir()  # not a database file: the run fails
    bad_target = f"sqlite:///{tmp_path / 'a_folder.db'}"
    with pytest.raises(Exception):  # noqa: B017 - the driver's own error
        run_batch(trained.dataset, trained.settings, bad_target, as_of=earlier, snapshot_to=folder)
    assert not folder.exists()
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    summary = run_batch(
        trained.dataset, trained.settings, url, as_of=earlier, models=models, snapshot_to=folder
    )
    published = read_snapshot(folder)
    assert published.as_of == summary.as_of == snapshot.as_of - timedelta(days=28)
    want = build_snapshot(trained.dataset, earlier)
    pd.testing.assert_frame_equal(published.features, want.features, check_dtype=False)
    assert len(read(url, scores_table)) == len(published.features)


def test_batch_scores_equal_in_process_scoring(trained, snapshot, models, db_url):
    """Parity: a row in the database equals `score_accounts` (the API's core) for that account."""
    score(snapshot, models, trained, db_url)
    current = read(db_url, scores_table).set_index("account_id")
    suppressed = current.index[current["suppressed"]][:3].tolist()
    ids = [*current.index[~current["suppressed"]][:5].tolist(), *suppressed]
    api = score_accounts(models, snapshot, ids, trained.settings).set_index("account_id")
    for col in ("p_expand", "p_post_upsell_churn", "expected_net_value", "expected_uplift_mrr"):
        np.testing.assert_allclose(
            current.loc[ids, col].astype(float), api.loc[ids, col].astype(float), rtol=1e-12
        )

    def cells(frame, col):  # a missing value reads back as NaN or None depending on the driver
        return [None if pd.isna(v) else v for v in frame.loc[ids, col]]

    for col in ("next_step", "route", "suppressed", "reasons_text", "csm_owner", "segment"):
        assert cells(current, col) == cells(api, col), col
    assert current.loc[ids, "triggers"].tolist() == api.loc[ids, "triggers"].tolist()
    # The API ranks the same way: its rank over the full snapshot equals the stored rank.
    everything = score_accounts(models, snapshot, None, trained.settings, explain_rows=False)
    held = current.loc[everything["account_id"], "holdout"].astype(bool).to_numpy()
    ranked = rank_accounts(everything.assign(holdout=held)).set_index("account_id")["rank"]
    live = current.index[~current["suppressed"] & ~current["holdout"].astype(bool)]
    assert (current.loc[live, "rank"].astype(int) == ranked.loc[live]).all()


def test_rerun_is_idempotent_and_newer_runs_upsert(trained, snapshot, earlier, models, db_url):
    first = score(snapshot, models, trained, db_url)
    history_1 = read(db_url, history_table)
    second = score(snapshot, models, trained, db_url)  # same as_of, same model versions
    history_2 = read(db_url, history_table)
    assert len(history_2) == len(history_1) == len(snapshot)  # replaced, not duplicated
    volatile = ["run_id", "scored_at"]
    pd.testing.assert_frame_equal(
        history_1.drop(columns=volatile).sort_values("account_id").reset_index(drop=True),
        history_2.drop(columns=volatile).sort_values("account_id").reset_index(drop=True),
    )
    assert set(history_2["run_id"]) == {second.run_id}
    runs = read(db_url, runs_table)
    assert set(runs["run_id"]) == {first.run_id, second.run_id}

    # A backfill of an earlier date adds history but never turns current scores back in time.
    backfill = score(earlier, models, trained, db_url)
    current = read(db_url, scores_table)
    history = read(db_url, history_table)
    assert len(current) == len(snapshot) and current["account_id"].is_unique
    both = set(snapshot.features.index) & set(earlier.features.index)
    now = current.set_index("account_id").loc[sorted(both)]
    assert (now["as_of"] == snapshot.as_of).all() and (now["run_id"] == second.run_id).all()
    assert len(history) == len(snapshot) + len(earlier)
    assert set(history.loc[history["as_of"] == earlier.as_of, "run_id"]) == {backfill.run_id}

    # A later date replaces current rows (one per account) and adds its own history.
    score(earlier, models, trained, db_url)  # idempotent again: no new history rows
    assert len(read(db_url, history_table)) == len(snapshot) + len(earlier)


def test_failed_run_leaves_previous_scores_and_records_the_failure(
    trained, snapshot, earlier, models, db_url
):
    previous = score(earlier, models, trained, db_url)
    before = read(db_url, scores_table)

    def explode(stage, done, total):
        if stage == "write" and done >= 300:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        score(snapshot, models, trained, db_url, chunk_size=100, progress=explode)
    after = read(db_url, scores_table)
    pd.testing.assert_frame_equal(before, after)
    history = read(db_url, history_table)
    assert set(history["run_id"]) == {previous.run_id}
    runs = read(db_url, runs_table).set_index("run_id")
    assert runs.loc[previous.run_id, "status"] == "completed"
    failed = runs[runs["status"] == "failed"]
    assert len(failed) == 1 and "disk full" in failed["error"].iloc[0]
    assert failed["written"].iloc[0] == 300  # how far it got before the rollback


KILLED_JOB = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from features.dataset import load_dataset
    from serving.settings import Settings
    from serving.batch import run_batch

    data, models_dir, url, marker = sys.argv[1:5]
    settings = Settings(models_dir=Path(models_dir), tracking_uri=None, auth_enabled=False)

    def stall(stage, done, total):
        if stage == "write" and done == 150:  # three chunks are in the open transaction
            # atomically: the test must never read the marker half-written (empty)
            Path(marker + ".tmp").write_text(str(done))
            os.replace(marker + ".tmp", marker)
            time.sleep(120)  # the test kills us here

    run_batch(load_dataset(Path(data)), settings, url, chunk_size=50, progress=stall)
    print("finished: the kill came too late")
    """
)


def open_transactions(url: str) -> int:
    """Sessions of other clients on this database that sit inside a transaction."""
    engine = create_database_engine(url)
    try:
        with engine.connect() as conn:
            query = text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'idle in transaction' AND pid <> pg_backend_pid()"
            )
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


def test_killed_run_leaves_previous_scores_intact(trained, snapshot, earlier, models, db_url):
    """SIGKILL in the middle of the write: the previous run is all anyone sees afterwards."""
    previous = score(earlier, models, trained, db_url)
    before = {t.name: read(db_url, t) for t in (scores_table, history_table, runs_table)}
    marker = Path(trained.settings.models_dir).parent / f"marker-{os.getpid()}-{time.time_ns()}"
    job = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLED_JOB,
            str(trained.data_dir),
            str(trained.settings.models_dir),
            db_url,
            str(marker),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if job.poll() is not None:
                pytest.fail(f"job ended before the kill: {job.communicate()}")
            if time.monotonic() > deadline:
                pytest.fail("the job never reached the write stage")
            time.sleep(0.05)
        written = int(marker.read_text() or 0)
        if db_url.startswith("postgresql"):  # the server holds the job's open transaction
            assert open_transactions(db_url) == 1
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=30)
    finally:
        if job.poll() is None:
            job.kill()
        marker.unlink(missing_ok=True)
    assert job.returncode == -signal.SIGKILL
    assert written == 150  # rows were in flight when it died
    for table in (scores_table, history_table, runs_table):
        after = read(db_url, table)
        pd.testing.assert_frame_equal(before[table.name], after, obj=table.name)
    assert set(read(db_url, scores_table)["run_id"]) == {previous.run_id}
    # The database is usable afterwards: the next run goes through.
    fresh = score(snapshot, models, trained, db_url)
    assert set(read(db_url, scores_table)["run_id"]) == {fresh.run_id}


def test_summary_table_renders(trained, snapshot, models, tmp_path):
    from rich.console import Console

    summary = score(snapshot, models, trained, f"sqlite:///{tmp_path / 'x.db'}")
    console = Console(record=True, width=160)
    console.print(summary.to_table())
    text = console.export_text()
    assert summary.run_id in text and "actionable by route" in text and "drift" in text
    record = summary.record()
    assert json.loads(json.dumps(record, default=str))["written"] == len(snapshot)
