"""The decision metric: share of realized *retained* expansion MRR the top decile captures.

A CS team works the top of a list. What it wants from that list is expansion MRR that sticks,
so every ranking is judged the same way on the propensity model's test period: per observation
date, take the top 10% of accounts by the ranking, and divide the retained expansion MRR they
realized by the retained expansion MRR of all accounts that date (then pooled over dates).

Retained expansion MRR of (as_of, account): the MRR gained by `upgrade`/`expansion` changes in
[as_of, as_of + horizon), capped at what the account still pays (live MRR) 90 days after its
last expansion in the window, minus what it paid at as_of, floored at 0. A follow-up that runs
past the end of the data is read at the end of the data (`decision_hold_censored_share` says
how much of the gain that concerns).

Rankings: expected net value (p_expand x price-list uplift x (1 - p_post_upsell_churn), as the
service computes it), propensity alone, current MRR (largest first), the PQL rules score, and
random (the mean over seeded permutations, about 0.10).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.dataset import Dataset
from features.derived import EXPANSION_KINDS
from features.rollup import ensure_rollups
from features.triggers import pql_score
from training.labels import data_end

TOP_SHARE = 0.10
RANDOM_DRAWS = 50


def retained_expansion_mrr(
    dataset: Dataset, pairs: pd.DataFrame, horizon_days: int, hold_days: int = 90
) -> pd.DataFrame:
    """(as_of, account_id, gained_mrr, retained_mrr, censored) for each pair with an expansion."""
    ensure_rollups(dataset)
    end = data_end(dataset).to_pydatetime()
    keys = pairs[["as_of", "account_id"]].drop_duplicates().copy()
    keys["as_of"] = pd.to_datetime(keys["as_of"]).astype("datetime64[us]")
    keys["account_id"] = keys["account_id"].astype(str)
    kinds = ", ".join(f"'{k}'" for k in EXPANSION_KINDS)
    live = "CASE WHEN c.status IN ('active', 'trialing') THEN c.mrr ELSE 0 END"
    engine = dataset.engine
    engine.register("decision_pairs", keys)
    try:
        return engine.df(
            f"""
            WITH g AS (
                SELECT p.as_of, p.account_id, SUM(c.mrr - c.prev_mrr) AS gained_mrr,
                    MAX(c.effective_at) AS last_expansion
                FROM decision_pairs p
                JOIN subscription_changes c ON c.account_id = p.account_id
                    AND c.effective_at >= p.as_of
                    AND c.effective_at < p.as_of + INTERVAL {horizon_days:d} DAY
                WHERE c.change_kind IN ({kinds})
                GROUP BY p.as_of, p.account_id
            ),
            pre AS (
                SELECT g.as_of, g.account_id, arg_max({live}, c.effective_at) AS pre_mrr
                FROM g JOIN subscription_changes c ON c.account_id = g.account_id
                    AND c.effective_at < g.as_of
                GROUP BY g.as_of, g.account_id
            ),
            held AS (
                SELECT g.as_of, g.account_id, arg_max({live}, c.effective_at) AS held_mrr
                FROM g JOIN subscription_changes c ON c.account_id = g.account_id
                    AND c.effective_at <= LEAST(g.last_expansion + INTERVAL {hold_days:d} DAY, ?)
                GROUP BY g.as_of, g.account_id
            )
            SELECT g.as_of, g.account_id, g.gained_mrr,
                GREATEST(0, LEAST(g.gained_mrr, h.held_mrr - COALESCE(pre.pre_mrr, 0)))
                    AS retained_mrr,
                g.last_expansion + INTERVAL {hold_days:d} DAY > ? AS censored
            FROM g
            JOIN held h ON h.as_of = g.as_of AND h.account_id = g.account_id
            LEFT JOIN pre ON pre.as_of = g.as_of AND pre.account_id = g.account_id
            """,
            [end, end],
        )
    finally:
        engine.unregister("decision_pairs")


def top_share_capture(
    scores: np.ndarray, value: np.ndarray, groups: np.ndarray, share: float = TOP_SHARE
) -> float:
    """Share of `value` held by the top `share` of rows by `scores`, within each group."""
    frame = pd.DataFrame({"s": scores, "v": value, "g": groups})
    total = frame["v"].sum()
    if total <= 0:
        return float("nan")
    captured = 0.0
    for _, part in frame.groupby("g", sort=False):
        k = int(np.ceil(share * len(part)))
        # ties broken by position after a stable sort: no ranking gets credit for ties
        order = np.argsort(-part["s"].to_numpy(dtype="float64"), kind="stable")
        captured += part["v"].to_numpy()[order[:k]].sum()
    return float(captured / total)


def decision_metrics(
    dataset: Dataset,
    test: pd.DataFrame,
    rankings: dict[str, np.ndarray],
    horizon_days: int,
    seed: int,
) -> dict[str, float]:
    """`decision_capture_<ranking>` for each ranking plus current MRR, rules and random."""
    realized = retained_expansion_mrr(dataset, test, horizon_days)
    frame = test[["as_of", "account_id"]].copy()
    frame["as_of"] = pd.to_datetime(frame["as_of"]).astype("datetime64[us]")
    frame["account_id"] = frame["account_id"].astype(str)
    frame = frame.merge(realized, on=["as_of", "account_id"], how="left")
    value = frame["retained_mrr"].fillna(0.0).to_numpy(dtype="float64")
    groups = frame["as_of"].to_numpy()
    all_rankings = {
        **rankings,
        "current_mrr": test["mrr"].fillna(0).to_numpy(dtype="float64"),
        "rules": pql_score(test).to_numpy(dtype="float64"),
    }
    out = {
        f"decision_capture_{name}": top_share_capture(np.asarray(s), value, groups)
        for name, s in all_rankings.items()
    }
    rng = np.random.default_rng(seed)
    out["decision_capture_random"] = float(
        np.mean(
            [top_share_capture(rng.random(len(value)), value, groups) for _ in range(RANDOM_DRAWS)]
        )
    )
    gained = frame["gained_mrr"].fillna(0.0).clip(lower=0)
    out["decision_retained_mrr_total"] = float(value.sum())
    out["decision_retained_share_of_gained"] = (
        float(value.sum() / gained.sum()) if gained.sum() > 0 else float("nan")
    )
    censored = frame["censored"].fillna(False).astype(bool).to_numpy()
    out["decision_hold_censored_share"] = (
        float(gained[censored].sum() / gained.sum()) if gained.sum() > 0 else float("nan")
    )
    if "net_value" in rankings:
        best = max(
            out.get("decision_capture_propensity", float("nan")),
            out["decision_capture_current_mrr"],
        )
        out["decision_net_value_vs_best_baseline"] = (
            out["decision_capture_net_value"] / best if best > 0 else float("nan")
        )
    return out
