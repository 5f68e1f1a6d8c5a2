"""Feature snapshots: what the service and the batch job score accounts from.

A snapshot is a folder holding `features.parquet` (the feature frame of every account at one
as-of date, plus context columns prefixed `ctx_`: plan, status, CSM owner, name, last outreach)
and `plans.parquet` (the price list, for the likely next step's mrr). `build_snapshot` makes it
from a dataset with the same `build_feature_frame` that training uses.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from features.build import build_feature_frame, feature_spec, to_as_of
from features.dataset import Dataset

CONTEXT = ("ctx_plan_id", "ctx_status", "ctx_csm_owner", "ctx_name", "ctx_last_outreach_at")
FEATURES_FILE = "features.parquet"
PLANS_FILE = "plans.parquet"
META_FILE = "meta.json"


@dataclass
class Snapshot:
    """Features plus context of every account at one as-of date, and the price list."""

    as_of: date
    features: pd.DataFrame  # indexed by account_id
    plans: pd.DataFrame
    feature_names: list[str]
    source: str = ""

    def __len__(self) -> int:
        return len(self.features)


def default_as_of(dataset: Dataset) -> date:
    """The day after the last event: 'now' for a dataset exported today.

    Raises ValueError when there is no (clean) event to date it from, e.g. a header-only table.
    """
    last = dataset.report.tables["events"].time_max
    if last is None or pd.isna(last):
        raise ValueError(
            f"no events in {dataset.path}: there is no last event to take the as-of date "
            "from; give an as-of date (--as-of YYYY-MM-DD)"
        )
    return (pd.Timestamp(last) + pd.Timedelta(days=1)).date()


def context_frame(dataset: Dataset, as_of: date) -> pd.DataFrame:
    """Plan, status, owner, name and last (non-holdout) outreach of every account at as_of."""
    return dataset.engine.df(
        """
        WITH latest AS (
            SELECT account_id, plan_id, status,
                ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY effective_at DESC) AS rn
            FROM subscriptions WHERE effective_at < ?
        ),
        touched AS (
            SELECT account_id, MAX(sent_at) AS last_outreach_at
            FROM outreach WHERE sent_at < ? AND NOT holdout GROUP BY account_id
        )
        SELECT a.account_id, l.plan_id AS ctx_plan_id, l.status AS ctx_status,
            CAST(a.csm_owner AS VARCHAR) AS ctx_csm_owner, CAST(a.name AS VARCHAR) AS ctx_name,
            t.last_outreach_at AS ctx_last_outreach_at
        FROM accounts a
        JOIN latest l ON l.account_id = a.account_id AND l.rn = 1
        LEFT JOIN touched t ON t.account_id = a.account_id
        """,
        [pd.Timestamp(as_of).to_pydatetime(), pd.Timestamp(as_of).to_pydatetime()],
    )


def build_snapshot(dataset: Dataset, as_of: date | str | None = None, progress=None) -> Snapshot:
    """Features of every active or trialing account at `as_of`, canceled ones as context only."""
    as_of = to_as_of(as_of) if as_of is not None else default_as_of(dataset)
    features = build_feature_frame(dataset, [as_of], progress=progress)
    context = context_frame(dataset, as_of)
    # Canceled accounts have no features but must be answerable (suppressed as canceled).
    frame = context.merge(features, on="account_id", how="left")
    frame["as_of"] = pd.Timestamp(as_of)
    frame["as_of"] = frame["as_of"].astype("datetime64[us]")
    frame = frame[frame["ctx_status"].isin(["active", "trialing", "canceled"])]
    frame = frame.sort_values("account_id").set_index("account_id")
    plans = dataset.frame("plans")
    return Snapshot(as_of, frame, plans, feature_spec(dataset).names, str(dataset.path))


def write_snapshot(snapshot: Snapshot, folder: Path) -> Path:
    """Write atomically: a reader sees the old snapshot or the new one, never half of one."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    snapshot.features.reset_index().to_parquet(tmp / FEATURES_FILE, index=False)
    snapshot.plans.to_parquet(tmp / PLANS_FILE, index=False)
    meta = {
        "as_of": str(snapshot.as_of),
        "feature_names": snapshot.feature_names,
        "source": snapshot.source,
        "accounts": len(snapshot),
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
    for name in (PLANS_FILE, META_FILE, FEATURES_FILE):  # features last: it marks the change
        os.replace(tmp / name, folder / name)
    tmp.rmdir()
    return folder


def read_snapshot(folder: Path) -> Snapshot:
    meta = json.loads((folder / META_FILE).read_text())
    features = pd.read_parquet(folder / FEATURES_FILE).set_index("account_id")
    plans = pd.read_parquet(folder / PLANS_FILE)
    return Snapshot(
        date.fromisoformat(meta["as_of"]), features, plans, meta["feature_names"], meta["source"]
    )
