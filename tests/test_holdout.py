"""Holdouts the batch assigns: reproducible, stratified by route, kept across runs, balanced,
never suppressed, written to the CRM tables and left out of the call list (/rank)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import numpy as np
import pandas as pd
from sqlalchemy import text

from serving.batch import score_snapshot
from serving.holdout import (
    Experiment,
    assign_holdout,
    assignment_history,
    assignments_table,
    holdout_hash,
    read_assignments_at,
)
from serving.scoring import rank_accounts
from serving.sinks import create_database_engine, history_table, open_target, scores_table
from tests.pg import read

EXPERIMENT = Experiment("exp-test", 0.10)


def accounts(n: int, seed: int = 7) -> pd.DataFrame:
    """Synthetic scored accounts: routes and scores depend on size, some suppressed."""
    rng = np.random.default_rng(seed)
    mrr = rng.lognormal(5, 1.2, n)
    p_expand = rng.beta(2, 8, n)
    return pd.DataFrame(
        {
            "account_id": [f"acct_{i:06d}" for i in range(n)],
            "mrr": mrr,
            "p_expand": p_expand,
            "expected_net_value": p_expand * mrr * 0.3,
            "seats": rng.poisson(np.sqrt(mrr)),
            "route": np.where(mrr >= 250, "csm", "automated"),  # a third of them
            "suppressed": rng.random(n) < 0.15,
        }
    )


def smd(x: pd.Series, held: pd.Series) -> float:
    """Standardized mean difference between the held-out and the treated accounts."""
    a, b = x[held].astype(float), x[~held].astype(float)
    return abs(a.mean() - b.mean()) / np.sqrt((a.var() + b.var()) / 2)


def test_share_per_route_and_suppressed_never_held_out():
    frame = accounts(5_000)
    held, drawn = assign_holdout(frame, EXPERIMENT)
    assert not held[frame["suppressed"]].any()
    eligible = ~frame["suppressed"]
    for route in ("csm", "automated"):
        stratum = eligible & (frame["route"] == route)
        assert stratum.sum() > 100
        assert held[stratum].sum() == round(0.10 * stratum.sum()), route
    # Every eligible account was drawn once (the rows the batch stores); suppressed ones not.
    assert set(drawn["account_id"]) == set(frame.loc[eligible, "account_id"])
    assert drawn.set_index("account_id")["holdout"].sum() == held.sum()


def test_stable_across_reruns_and_row_order():
    frame = accounts(3_000)
    first, _ = assign_holdout(frame, EXPERIMENT)
    again, _ = assign_holdout(frame, EXPERIMENT)
    shuffled = frame.sample(frac=1.0, random_state=1)
    third, _ = assign_holdout(shuffled, EXPERIMENT)
    assert first.equals(again)
    assert third.reindex(frame.index).equals(first)
    other, _ = assign_holdout(frame, Experiment("another-experiment", 0.10))
    assert not other.equals(first)  # a new experiment draws new arms


def test_hash_is_the_same_in_every_process():
    """BLAKE2b, not Python's salted hash(): two interpreters with other hash seeds agree."""
    code = "from serving.holdout import holdout_hash; print(list(holdout_hash(['a', 'b'], 'e')))"
    outs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        outs.add(run.stdout)
    assert len(outs) == 1
    values = holdout_hash(["a", "b"], "e")
    assert ((values >= 0) & (values < 1)).all()
    assert outs == {f"{list(values)}\n"}


def test_uniform_draws():
    draws = holdout_hash([f"acct_{i}" for i in range(20_000)], "exp")
    counts, _ = np.histogram(draws, bins=10, range=(0, 1))
    assert (abs(counts - 2_000) < 200).all()  # ~4.7 standard deviations


def test_balanced_on_the_main_features():
    """SMD < 0.1 at ~1,000 held-out accounts per route (SMD's standard error is then ~0.03)."""
    frame = accounts(40_000)
    held, _ = assign_holdout(frame, EXPERIMENT)
    eligible = ~frame["suppressed"]
    for route in ("csm", "automated"):
        stratum = eligible & (frame["route"] == route)
        for col in ("mrr", "p_expand", "expected_net_value", "seats"):
            assert smd(frame.loc[stratum, col], held[stratum]) < 0.1, (route, col)
    for col in ("mrr", "p_expand", "expected_net_value", "seats"):
        assert smd(frame.loc[eligible, col], held[eligible]) < 0.1, col


def test_stored_arms_are_kept_when_routes_and_accounts_change():
    frame = accounts(4_000)
    _, drawn = assign_holdout(frame, EXPERIMENT)
    prior = dict(zip(drawn["account_id"], drawn["holdout"], strict=True))
    # Next run: every route flips, 500 new accounts, 100 earlier ones are now suppressed.
    later = pd.concat([frame, accounts(4_500, seed=8).iloc[4_000:]], ignore_index=True)
    later["route"] = np.where(later["route"] == "csm", "automated", "csm")
    later.loc[:99, "suppressed"] = True
    held_later, drawn_later = assign_holdout(later, EXPERIMENT, prior)
    kept = later["account_id"].isin(prior.keys()) & ~later["suppressed"]
    was = later.loc[kept, "account_id"].map(prior).astype(bool)
    assert held_later[kept].equals(was)
    assert set(drawn_later["account_id"]) == set(later.loc[4_000:, "account_id"]) - set(
        later.loc[later["suppressed"], "account_id"]
    )
    assert not held_later[later["suppressed"]].any()
    # The new accounts top each route up to its share, within the rounding of the old arms.
    eligible = ~later["suppressed"]
    for route in ("csm", "automated"):
        stratum = eligible & (later["route"] == route)
        share = held_later[stratum].mean()
        assert abs(share - 0.10) < 0.03, (route, share)


def test_inactive_outside_the_experiment_window():
    frame = accounts(500)
    day = pd.Timestamp("2026-03-01").date()
    assert not Experiment("e", 0.1, start=day).active(day - timedelta(days=1))
    assert Experiment("e", 0.1, start=day, end=day + timedelta(days=1)).active(day)
    assert not Experiment("e", 0.1, end=day).active(day)
    assert not Experiment("e", 0.0).active(day)
    held, _ = assign_holdout(frame, Experiment("e", 0.0))
    assert not held.any()


def test_rank_leaves_holdouts_out_unless_asked():
    frame = accounts(1_000)
    frame["holdout"], _ = assign_holdout(frame, EXPERIMENT)
    default = rank_accounts(frame)
    assert not default["holdout"].any()
    assert len(default) == (~frame["suppressed"] & ~frame["holdout"]).sum()
    everyone = rank_accounts(frame, include_holdout=True)
    assert everyone["holdout"].sum() == frame["holdout"].sum()


# --- through the batch and the service (trained models) ------------------------------------


def test_batch_writes_and_keeps_the_holdout(trained, snapshot, models, db_url):
    url = db_url
    settings = trained.settings.model_copy(update={"holdout_share": 0.2})
    summary = score_snapshot(snapshot, models, settings, open_target(url), chunk_size=300)
    current = read(url, scores_table).set_index("account_id")
    held = current["holdout"].astype(bool)
    assert held.sum() > 0
    assert not held[current["suppressed"]].any()
    assert current.loc[held, "rank"].isna().all()  # no rank: not on the call list
    live = current[~current["suppressed"] & ~held]
    assert sorted(live["rank"].astype(int)) == list(range(1, len(live) + 1))
    for route, n in summary.holdout["by_route"].items():
        stratum = ~current["suppressed"] & (current["route"] == route)
        assert n == held[stratum].sum() == round(0.2 * stratum.sum())
    stored = read(url, assignments_table)
    assert set(stored["account_id"]) == set(current.index[~current["suppressed"]])
    assert stored.set_index("account_id")["holdout"].sum() == held.sum()
    # A rerun keeps the arms (stored) and the history rows carry them too.
    score_snapshot(snapshot, models, settings, open_target(url), chunk_size=300)
    again = read(url, scores_table).set_index("account_id")["holdout"].astype(bool)
    assert again.equals(held.loc[again.index])
    history = read(url, history_table)
    assert history["holdout"].notna().all()
    assert read_assignments_at(url, settings.holdout_experiment) == dict(
        zip(stored["account_id"], stored["holdout"], strict=True)
    )
    # The history the report's incrementality section reads: each arm with its score row.
    arms = assignment_history(url, settings.holdout_experiment).set_index("account_id")
    assert len(arms) == len(stored)
    assert arms["holdout"].astype(bool).equals(held.loc[arms.index])
    np.testing.assert_allclose(
        arms["expected_net_value"].astype(float),
        current.loc[arms.index, "expected_net_value"].astype(float),
    )
    assert (arms["route"] == current.loc[arms.index, "route"]).all()
    assert arms["triggers"].map(lambda t: isinstance(t, list)).all()
    # An arm stored by an earlier run wins over the draw: flip one account's arm in the store.
    flip = held[held].index[0]
    engine = create_database_engine(url)
    with engine.begin() as conn:
        conn.execute(
            assignments_table.update()
            .where(assignments_table.c.account_id == flip)
            .values(holdout=False)
        )
    engine.dispose()
    score_snapshot(snapshot, models, settings, open_target(url), chunk_size=300)
    third = read(url, scores_table).set_index("account_id")
    assert not bool(third.loc[flip, "holdout"])
    assert pd.notna(third.loc[flip, "rank"])


def test_older_database_gets_the_holdout_column(trained, snapshot, models, db_url):
    """A database written before holdouts existed is migrated in place, rows kept."""
    url = db_url
    score_snapshot(snapshot, models, trained.settings, open_target(url), chunk_size=500)
    engine = create_database_engine(url)
    with engine.begin() as conn:
        for table in ("account_expansion_scores", "account_expansion_score_history"):
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN holdout"))
        conn.execute(text("DROP TABLE holdout_assignments"))
    engine.dispose()
    score_snapshot(snapshot, models, trained.settings, open_target(url), chunk_size=500)
    current = read(url, scores_table)
    assert current["holdout"].notna().all() and current["holdout"].astype(bool).any()


def test_file_target_carries_the_holdout(trained, snapshot, models, tmp_path):
    path = tmp_path / "scores.parquet"
    score_snapshot(snapshot, models, trained.settings, open_target(str(path)), chunk_size=500)
    rows = pd.read_parquet(path)
    assert rows["holdout"].dtype == bool and rows["holdout"].any()
    assert rows.loc[rows["holdout"], "rank"].isna().all()


def test_service_rank_leaves_holdouts_out_unless_asked(trained, snapshot, models, tmp_path):
    """/rank's core on the served state reads the arms the batch stored."""
    from serving.api_models import RankRequest
    from serving.endpoints import rank_snapshot
    from serving.state import ServingState

    url = f"sqlite:///{tmp_path / 'crm.db'}"
    settings = trained.settings.model_copy(update={"holdout_store": url})
    score_snapshot(snapshot, models, settings, open_target(url), chunk_size=500)
    stored = read(url, scores_table).set_index("account_id")
    state = ServingState.build(models, snapshot, settings)
    treated = set(stored.index[~stored["suppressed"] & ~stored["holdout"].astype(bool)])
    held = set(stored.index[stored["holdout"].astype(bool)])
    assert held
    total, records = rank_snapshot(state, RankRequest(limit=1000), 0)
    assert total == len(treated)
    assert records and not any(r["holdout"] for r in records)
    assert {r["account_id"] for r in records} <= treated
    total_all, everyone = rank_snapshot(state, RankRequest(limit=1000, include_holdout=True), 0)
    assert total_all == total + len(held)
    listed = {r["account_id"] for r in everyone if r["holdout"]}
    assert listed and listed <= held
