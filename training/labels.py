"""Labels and training sets for the two models.

- Upgrade propensity: for each observation date t (monthly by default) and each account active
  or trialing at t, the features as of t and the label "an upgrade or expansion in
  [t, t + horizon)". Dates whose label window runs past the end of the data are censored.
- Post-upsell churn: one row per expansion at time e, with the features just before it (as of
  the day of e), the early adoption in [e, e + 30 days) (the new tier's features for an upgrade,
  new users for added seats), and the
  label "churn, or a downgrade or contraction below the pre-expansion mrr, in (e, e + 90 days]".
  Expansions with less than 90 days of follow-up are censored and left out.

The SQL runs on the dataset's engine (DuckDB, or Spark: see `features.engine`);
`training_sets(path, engine="spark", spark_master=...)` builds both sets on either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from features.build import Progress, build_feature_frame, to_as_of
from features.dataset import Dataset, load_dataset
from features.derived import EXPANSION_KINDS
from features.rollup import DAY_NUMBER, ensure_rollups

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

PROPENSITY_LABEL = "expanded"
POST_UPSELL_LABEL = "churned_after_upsell"
ADOPTION_FEATURES = (
    "is_tier_upgrade",
    "expansion_mrr_delta",
    "expansion_seats_delta",
    "new_tier_events_30d",
    "new_tier_features_30d",
    "new_users_30d",
    "adopted_30d",
)
# Adoption is observed only after an expansion; a prospective score leaves it unknown. For an
# upgrade it is use of the features the new tier unlocked, for added seats the users that fill
# them, both in the first 30 days.
ADOPTION_AFTER_EXPANSION = (
    "new_tier_events_30d",
    "new_tier_features_30d",
    "new_users_30d",
    "adopted_30d",
)


@dataclass(frozen=True)
class LabelWindows:
    horizon_days: int = 60
    post_upsell_days: int = 90
    adoption_days: int = 30


class NotEnoughData(ValueError):
    """The dataset is too short or has too few outcomes to train on (a user error, not a bug)."""


def data_end(dataset: Dataset) -> pd.Timestamp:
    """The end of observed time: the latest event or subscription change."""
    ends = [
        dataset.report.tables[t].time_max
        for t in ("events", "subscriptions")
        if dataset.report.tables[t].time_max is not None
    ]
    return pd.Timestamp(max(ends))


def data_start(dataset: Dataset) -> pd.Timestamp:
    """The start of observed usage: the first event (subscriptions may reach further back)."""
    start = dataset.report.tables["events"].time_min
    if start is None:
        raise NotEnoughData(f"{dataset.path}: the events table has no clean rows")
    return pd.Timestamp(start)


def observation_dates(
    dataset: Dataset,
    cadence: str = "monthly",
    *,
    start: date | None = None,
    end: date | None = None,
    warmup_days: int = 90,
    horizon_days: int = 60,
) -> list[date]:
    """Observation dates with enough history before them and a full label window after."""
    first = start or (data_start(dataset) + pd.Timedelta(days=warmup_days)).date()
    last = end or (data_end(dataset) - pd.Timedelta(days=horizon_days)).date()
    if cadence == "monthly":
        cursor = (
            first if first.day == 1 else (first.replace(day=1) + timedelta(days=32)).replace(day=1)
        )
        step = "MS"
    elif cadence == "weekly":  # Mondays
        cursor = first + timedelta(days=(7 - first.weekday()) % 7)
        step = "W-MON"
    else:
        raise ValueError(f"cadence must be 'monthly' or 'weekly', not {cadence!r}")
    return [d.date() for d in pd.date_range(cursor, last, freq=step)]


def expansion_labels(
    dataset: Dataset, as_of_dates: list[date], horizon_days: int = 60
) -> pd.DataFrame:
    """(as_of, account_id, expanded): an upgrade or expansion in [as_of, as_of + horizon)."""
    ensure_rollups(dataset)
    dates = pd.DataFrame({"as_of": pd.to_datetime([to_as_of(d) for d in as_of_dates])})
    dates["as_of"] = dates["as_of"].astype("datetime64[us]")
    dates["until"] = dates["as_of"] + pd.Timedelta(days=horizon_days)
    engine = dataset.engine
    engine.register("label_dates", dates)
    kinds = ", ".join(f"'{k}'" for k in EXPANSION_KINDS)
    labels = engine.df(f"""
        SELECT d.as_of, c.account_id, 1 AS expanded
        FROM label_dates d
        JOIN subscription_changes c
            ON c.effective_at >= d.as_of AND c.effective_at < d.until
        WHERE c.change_kind IN ({kinds})
        GROUP BY d.as_of, c.account_id
    """)
    engine.unregister("label_dates")
    return labels


def propensity_training_set(
    dataset: Dataset,
    as_of_dates: list[date],
    windows: LabelWindows = LabelWindows(),
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Features as of each date plus the `expanded` label; censored dates are dropped."""
    end = data_end(dataset)
    kept = [
        d for d in as_of_dates if pd.Timestamp(d) + pd.Timedelta(days=windows.horizon_days) <= end
    ]
    frame = build_feature_frame(dataset, kept, progress=progress)
    labels = expansion_labels(dataset, kept, windows.horizon_days)
    frame = frame.merge(labels, on=["as_of", "account_id"], how="left")
    frame[PROPENSITY_LABEL] = frame[PROPENSITY_LABEL].fillna(0).astype("int64")
    return frame


def expansion_events(dataset: Dataset, windows: LabelWindows = LabelWindows()) -> pd.DataFrame:
    """Every expansion with its post-upsell outcome, adoption, and whether it is censored."""
    ensure_rollups(dataset)
    end = data_end(dataset)
    kinds = ", ".join(f"'{k}'" for k in EXPANSION_KINDS)
    return dataset.engine.df(
        f"""
        WITH exp AS (
            SELECT account_id, effective_at AS expanded_at, change_kind, tier, prev_tier,
                mrr, prev_mrr, seats, prev_seats,
                {DAY_NUMBER.format(col="CAST(effective_at AS DATE)")} AS expanded_d
            FROM subscription_changes WHERE change_kind IN ({kinds})
        ),
        outcome AS (
            SELECT e.account_id, e.expanded_at,
                MAX(CASE WHEN c.change_kind = 'churn'
                          OR (c.change_kind IN ('downgrade', 'contraction')
                              AND c.mrr < e.prev_mrr)
                    THEN 1 ELSE 0 END) AS churned
            FROM exp e
            JOIN subscription_changes c ON c.account_id = e.account_id
                AND c.effective_at > e.expanded_at
                AND c.effective_at <= e.expanded_at + INTERVAL {windows.post_upsell_days:d} DAY
            GROUP BY e.account_id, e.expanded_at
        ),
        adoption AS (
            SELECT e.account_id, e.expanded_at,
                SUM(a.n_events) AS new_tier_events_30d,
                COUNT(DISTINCT m.feature) AS new_tier_features_30d
            FROM exp e
            JOIN activity_day a ON a.account_id = e.account_id
                AND a.d >= e.expanded_d AND a.d < e.expanded_d + {windows.adoption_days:d}
            JOIN event_meta m ON m.event = a.event
                AND m.min_tier > e.prev_tier AND m.min_tier <= e.tier
            GROUP BY e.account_id, e.expanded_at
        ),
        new_users AS (
            SELECT e.account_id, e.expanded_at, COUNT(*) AS new_users_30d
            FROM exp e
            JOIN users u ON u.account_id = e.account_id
                AND u.created_at >= e.expanded_at
                AND u.created_at < e.expanded_at + INTERVAL {windows.adoption_days:d} DAY
            GROUP BY e.account_id, e.expanded_at
        )
        SELECT e.account_id, e.expanded_at, e.change_kind,
            CASE WHEN e.change_kind = 'upgrade' THEN 1.0 ELSE 0.0 END AS is_tier_upgrade,
            e.mrr - e.prev_mrr AS expansion_mrr_delta,
            CAST(e.seats - e.prev_seats AS DOUBLE) AS expansion_seats_delta,
            CAST(COALESCE(ad.new_tier_events_30d, 0) AS DOUBLE) AS new_tier_events_30d,
            CAST(COALESCE(ad.new_tier_features_30d, 0) AS DOUBLE) AS new_tier_features_30d,
            CAST(COALESCE(nu.new_users_30d, 0) AS DOUBLE) AS new_users_30d,
            CASE WHEN e.change_kind = 'upgrade'
                THEN CAST(COALESCE(ad.new_tier_features_30d, 0) > 0 AS DOUBLE)
                ELSE CAST(COALESCE(nu.new_users_30d, 0) > 0 AS DOUBLE) END AS adopted_30d,
            COALESCE(o.churned, 0) AS {POST_UPSELL_LABEL},
            e.expanded_at + INTERVAL {windows.post_upsell_days:d} DAY > ? AS censored
        FROM exp e
        LEFT JOIN outcome o ON o.account_id = e.account_id AND o.expanded_at = e.expanded_at
        LEFT JOIN adoption ad ON ad.account_id = e.account_id AND ad.expanded_at = e.expanded_at
        LEFT JOIN new_users nu
            ON nu.account_id = e.account_id AND nu.expanded_at = e.expanded_at
        ORDER BY e.expanded_at, e.account_id
        """,
        [end.to_pydatetime()],
    )


def post_upsell_training_set(
    dataset: Dataset, windows: LabelWindows = LabelWindows(), progress: Progress | None = None
) -> pd.DataFrame:
    """One row per uncensored expansion: features just before it, adoption after, label."""
    events = expansion_events(dataset, windows)
    events = events[~events["censored"]].copy()
    events["as_of"] = events["expanded_at"].dt.normalize().astype("datetime64[us]")
    if events.empty:
        return events
    feats = build_feature_frame(
        dataset, [], pairs=events[["as_of", "account_id"]], progress=progress
    )
    out = events.merge(feats, on=["as_of", "account_id"], how="inner")
    out[POST_UPSELL_LABEL] = out[POST_UPSELL_LABEL].astype("int64")
    return out.drop(columns=["censored"]).reset_index(drop=True)


def training_sets(
    data: str | Path | Dataset,
    *,
    engine: str = "duckdb",
    spark_master: str | None = None,
    spark: SparkSession | None = None,
    cadence: str = "monthly",
    windows: LabelWindows = LabelWindows(),
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both training sets (propensity, post-upsell) of a dataset, on DuckDB or Spark.

    `data` is a loaded dataset (its engine is used) or a dataset location, loaded here with
    `engine` (`duckdb`, or `spark` on `spark` / a session started on `spark_master`).
    """
    if isinstance(data, Dataset):
        dataset = data
    else:
        dataset = load_dataset(
            data, engine=engine, spark=spark, spark_master=spark_master, write_quarantine=False
        )
    dates = observation_dates(dataset, cadence, horizon_days=windows.horizon_days)
    propensity = propensity_training_set(dataset, dates, windows, progress=progress)
    post_upsell = post_upsell_training_set(dataset, windows, progress=progress)
    return propensity, post_upsell
