"""Batch scoring on Apache Spark: the embedded scoring core inside `mapInPandas`.

`score_on_spark(spark, snapshot_or_features, settings, out_path)` scores every account with the
same functions as the API and the embedded batch job (`serving.scoring`: `score_frame`, then
`attach_reasons`), one Arrow batch at a time on the executors, ranks globally with a Spark
window (1 = highest expected net value among accounts not suppressed, ties by account id, as
`rank_accounts` does) and writes Parquet to `out_path` (a folder; any URI Spark writes). The
rows have the columns every sink receives (`serving.sinks.ROW_COLUMNS`), `reasons` as JSON text.

The models are loaded (and their feature contract checked) once on the driver, pickled into a
Spark broadcast with the price list and unpickled once per executor Python worker (a
module-level cache keyed by the run and the model versions), so executors need the project and
its dependencies installed, but no access to the MLflow store. `bentoml.batch.run_in_spark` is
not used: it crashes on new-style services (STACK_NOTES).

`write_to_target(spark, result, target)` then streams the written rows from the driver, in
chunks, to any target of the embedded batch job (`serving.sinks.open_target`: SQLite or
PostgreSQL, a file, HubSpot or Salesforce payloads), with the same all-or-nothing commit and
run record.
"""

from __future__ import annotations

import json
import pickle
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.engine import to_pandas
from serving.batch import BatchSummary, _summarize
from serving.drift import DriftReport, age_shifts, calendar_mismatches, drift_report
from serving.scoring import Models, attach_reasons, score_frame
from serving.settings import Settings
from serving.sinks import ROW_COLUMNS, RunInfo, open_target
from serving.snapshot import CONTEXT, Snapshot

if TYPE_CHECKING:
    from pyspark.broadcast import Broadcast
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession

# The Parquet rows: ROW_COLUMNS, with `reasons` as JSON text.
ROW_SCHEMA = (
    "account_id string, run_id string, scored_at timestamp_ltz, as_of date, "
    "propensity_model_version string, post_upsell_model_version string, "
    "p_expand double, p_post_upsell_churn double, expected_uplift_mrr double, "
    "expected_net_value double, rank int, next_step string, triggers array<string>, "
    "route string, suppressed boolean, suppression_reason string, holdout boolean, "
    "reasons string, "
    "reasons_text string, base_value double, mrr double, csm_owner string, segment string"
)
# What mapInPandas returns per account (the rank is added after, over all accounts).
_SCORED_SCHEMA = ROW_SCHEMA.replace("rank int, ", "")

# Executor side: models unpickled once per Python worker, keyed by their versions.
_EXECUTOR_MODELS: dict[tuple, tuple[Models, pd.DataFrame]] = {}


@dataclass
class SparkBatchResult:
    """A scored run on Spark: where the rows are, the run identity and its summary."""

    path: str
    run: RunInfo
    summary: BatchSummary


def _executor_state(key: tuple, payload: Broadcast) -> tuple[Models, pd.DataFrame]:
    if key not in _EXECUTOR_MODELS:
        _EXECUTOR_MODELS.clear()  # one run's models at a time per worker
        _EXECUTOR_MODELS[key] = pickle.loads(payload.value)
    return _EXECUTOR_MODELS[key]


def score_partition(
    batches: Iterator[pd.DataFrame],
    *,
    key: tuple,
    payload: Broadcast,
    settings: Settings,
    run: RunInfo,
) -> Iterator[pd.DataFrame]:
    """Score, explain and shape one partition's Arrow batches (runs on the executors)."""
    models, plans = _executor_state(key, payload)
    for batch in batches:
        if batch.empty:
            continue
        frame = batch.assign(account_id=batch["account_id"].astype(str)).set_index(
            "account_id", drop=False
        )
        frame.index.name = None
        frame = frame.drop(columns="account_id")
        scored = score_frame(models, frame, plans, settings)
        scored = attach_reasons(models, frame, scored, settings.reasons)
        yield _rows(scored, run)


def _rows(scored: pd.DataFrame, run: RunInfo) -> pd.DataFrame:
    """The written columns (rank excluded), JSON for the reasons."""
    out = scored.assign(
        run_id=run.run_id,
        scored_at=pd.Timestamp(run.scored_at),
        as_of=pd.Timestamp(run.as_of),
        propensity_model_version=run.propensity_version,
        post_upsell_model_version=run.post_upsell_version,
        reasons=[json.dumps(r) for r in scored["reasons"]],
        triggers=[list(t) for t in scored["triggers"]],
        suppression_reason=scored["suppression_reason"].astype(object),
        csm_owner=scored["csm_owner"].astype(object),
        segment=scored["segment"].astype(object),
        # The Spark path draws no holdout yet (its stratified draw and stored arms are the
        # embedded batch's, `serving.holdout`): every account stays on the call list.
        holdout=False,
    )
    out["as_of"] = out["as_of"].dt.date
    return out[[c for c in ROW_COLUMNS if c != "rank"]]


def _features_frame(
    spark: SparkSession, source: Snapshot | SparkDataFrame
) -> tuple[SparkDataFrame, list[str] | None]:
    """The feature rows as a Spark DataFrame with an `account_id` column."""
    if isinstance(source, Snapshot):
        pdf = source.features.reset_index()
        for name in pdf.columns:  # all-empty text columns have no Arrow type to infer
            if pdf[name].dtype == object and pdf[name].isna().all():
                pdf[name] = pdf[name].astype("string")
        return spark.createDataFrame(pdf), source.feature_names
    return source, None


def score_on_spark(
    spark: SparkSession,
    snapshot_or_features: Snapshot | SparkDataFrame,
    settings: Settings,
    out_path: str,
    *,
    plans: pd.DataFrame | None = None,
    feature_names: list[str] | None = None,
    models: Models | None = None,
    partitions: int | None = None,
) -> SparkBatchResult:
    """Score every account on Spark and write the rows as Parquet to `out_path` (overwritten).

    `snapshot_or_features` is a `Snapshot` (built by either engine) or a Spark DataFrame of the
    same rows (`account_id`, `as_of`, the `ctx_` columns and the features, e.g.
    `spark.read.parquet("models/snapshot/features.parquet")`); a DataFrame needs `plans` (the
    price list) and takes its feature list from `feature_names` or its columns.
    """
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")  # pandas <-> Spark
    features, names = _features_frame(spark, snapshot_or_features)
    if isinstance(snapshot_or_features, Snapshot):
        plans = snapshot_or_features.plans if plans is None else plans
        as_of = snapshot_or_features.as_of
        source = snapshot_or_features.source
    else:
        if plans is None:
            raise ValueError("scoring a Spark DataFrame needs plans= (the price list)")
        as_of = pd.Timestamp(features.select("as_of").first()[0]).date()
        source = ""
    names = feature_names or names or _feature_columns(features.columns)
    if models is None:
        models = Models.load(settings, names)
    versions = dict(models.versions)
    run = RunInfo(str(uuid.uuid4()), as_of, datetime.now(UTC), versions)
    key = (run.run_id, *sorted(versions.items()))
    payload = spark.sparkContext.broadcast(pickle.dumps((models, plans)))

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return score_partition(batches, key=key, payload=payload, settings=settings, run=run)

    n_parts = partitions or max(2, spark.sparkContext.defaultParallelism)
    scored = features.repartition(n_parts).mapInPandas(score, _SCORED_SCHEMA)
    scored.createOrReplaceTempView("_spark_scored")
    # The rank of `rank_accounts`: not suppressed, net value high to low (missing last), id.
    ranked = scored.sparkSession.sql(
        """
        SELECT *, CASE WHEN NOT suppressed THEN CAST(ROW_NUMBER() OVER (
            PARTITION BY suppressed
            ORDER BY nanvl(expected_net_value, NULL) DESC NULLS LAST, account_id) AS INT)
            END AS rank
        FROM _spark_scored
        """
    ).select(*ROW_COLUMNS)
    ranked.write.mode("overwrite").parquet(out_path)
    payload.unpersist()

    written = spark.read.parquet(out_path)
    summary = _summary(written, run, source, models, features, settings)
    return SparkBatchResult(out_path, run, summary)


def _feature_columns(columns: list[str]) -> list[str]:
    skip = {"account_id", "as_of", *CONTEXT}
    return [c for c in columns if c not in skip and not c.startswith("ctx_")]


def _summary(
    written: SparkDataFrame,
    run: RunInfo,
    source: str,
    models: Models,
    features: SparkDataFrame,
    settings: Settings,
    drift_rows: int = 200_000,
) -> BatchSummary:
    """Counts, score quantiles and drift, as the embedded job reports them."""
    small = to_pandas(
        written.select(
            "account_id",
            "suppressed",
            "suppression_reason",
            "route",
            "triggers",
            "p_expand",
            "p_post_upsell_churn",
            "expected_net_value",
        )
    )
    sample = models.propensity.contract.metadata.get("training_feature_sample")
    drift = DriftReport({}, note="no training feature sample")
    if sample:
        n = features.count()
        rows = features if n <= drift_rows else features.sample(fraction=drift_rows / n, seed=0)
        frame = to_pandas(
            rows.select(*[c for c in features.columns if c in sample or c == "ctx_status"])
        )
        live = (frame["ctx_status"] != "canceled").to_numpy() if "ctx_status" in frame else None
        drift = drift_report(
            sample,
            frame,
            categorical=list(models.propensity.contract.categorical),
            rows=live,
            shifts=age_shifts(models.propensity.contract.metadata, run.as_of),
            not_compared=calendar_mismatches(
                models.propensity.contract.metadata, run.as_of, frame.columns
            ),
        )
    summary = _summarize(
        run, SimpleNamespace(description=""), SimpleNamespace(source=source), small, drift
    )
    summary.written = len(small)
    summary.finished_at = datetime.now(UTC)
    return summary


def iter_chunks(
    rows: SparkDataFrame, run: RunInfo, chunk_size: int = 50_000
) -> Iterator[pd.DataFrame]:
    """The written rows, `chunk_size` at a time on the driver, as sinks take them."""
    buffer: list[dict[str, Any]] = []
    for row in rows.toLocalIterator(prefetchPartitions=True):
        buffer.append(row.asDict(recursive=True))
        if len(buffer) >= chunk_size:
            yield _sink_frame(buffer, run)
            buffer = []
    if buffer:
        yield _sink_frame(buffer, run)


def _sink_frame(records: list[dict[str, Any]], run: RunInfo) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=ROW_COLUMNS)
    # Python rows carry timestamps in the driver's local zone: use the run's own (UTC) value.
    frame["scored_at"] = run.scored_at
    frame["reasons"] = [json.loads(r) if r else [] for r in frame["reasons"]]
    frame["triggers"] = [list(t or []) for t in frame["triggers"]]
    frame["rank"] = frame["rank"].astype("Int64")
    for name in ("p_expand", "p_post_upsell_churn", "expected_uplift_mrr", "expected_net_value"):
        frame[name] = frame[name].astype("float64")
    return frame


def write_to_target(
    spark: SparkSession,
    result: SparkBatchResult,
    target: str,
    *,
    chunk_size: int = 50_000,
) -> BatchSummary:
    """Stream a Spark run's rows from the driver to a sink target, all or nothing."""
    sink = open_target(target)
    summary = result.summary
    summary.target = sink.description
    rows = spark.read.parquet(result.path).orderBy("account_id")
    sink.open(result.run)
    written = 0
    try:
        for chunk in iter_chunks(rows, result.run, chunk_size):
            sink.write(chunk)
            written += len(chunk)
        summary.written = written
        summary.finished_at = datetime.now(UTC)
        sink.commit(summary.record())
    except BaseException as exc:  # the run must not be half-visible
        summary.finished_at = datetime.now(UTC)
        sink.abort(summary.record("failed", f"{type(exc).__name__}: {exc}"))
        raise
    return summary


def read_scores(spark: SparkSession, path: str) -> pd.DataFrame:
    """The written rows as pandas (for tests and small runs), reasons parsed, by account id."""
    frame = to_pandas(spark.read.parquet(path).orderBy("account_id"))
    frame["reasons"] = [json.loads(r) for r in frame["reasons"]]
    return frame.reset_index(drop=True)
