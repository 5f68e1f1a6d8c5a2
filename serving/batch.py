"""The batch job: score every account at an as-of date and write the ranked list somewhere.

`run_batch(dataset, settings, "sqlite:///models/crm.db")` (the CLI's `expansion score`):

1. features of every account at `as_of` (`build_snapshot`, the builder training uses);
2. scores of every account, chunk by chunk (cheap: the same `score_frame` as the API), so the
   rank is global: 1 = highest expected net value among accounts that are not suppressed;
3. drift: PSI of each feature against the champion's training sample (warning above 0.2);
4. per chunk of accounts, the reasons (TreeSHAP, 100-200x a score: the expensive part) and the
   write; only one chunk of explanations is ever in memory;
5. commit: the run record (counts, score quantiles, drift) goes in with the rows, so a run is
   visible whole or not at all (see `serving.sinks` for the targets and their guarantees).

Rows are the scoring core's columns plus run id, scored_at, model versions, rank and reasons.
`scored_at` is the run's start time; apart from it (and the run's start and finish times)
every value follows from the dataset, `as_of` and the models, so a rerun with the same inputs
writes the same values, and the history key (account, as_of, model versions) replaces them.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from features.build import feature_spec
from features.dataset import Dataset
from features.triggers import TRIGGERS
from serving.coverage import resolve_as_of
from serving.drift import DriftReport, age_shifts, calendar_mismatches, drift_report
from serving.holdout import Experiment, hold_out
from serving.scoring import RESULT_COLUMNS, Models, attach_reasons, rank_accounts, score_frame
from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL, Settings
from serving.sinks import ROUTES, ROW_COLUMNS, RunInfo, Sink, open_target
from serving.snapshot import Snapshot, build_snapshot, write_snapshot

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""`progress(stage, done, total)`: stages `features` (0/1, 1/1), `scores` and `write` (accounts)."""

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
SCORE_COLUMNS = ("p_expand", "p_post_upsell_churn", "expected_net_value")


@dataclass
class BatchSummary:
    """What a run did: counts by route, trigger and suppression, score quantiles, drift."""

    run_id: str
    target: str
    as_of: date
    model_versions: dict[str, str]
    accounts: int
    written: int
    suppressed: int
    by_route: dict[str, int]
    by_trigger: dict[str, int]
    by_suppression_reason: dict[str, int]
    score_quantiles: dict[str, dict[str, float]]
    drift: DriftReport
    started_at: datetime
    finished_at: datetime | None = None
    timings: dict[str, float] = field(default_factory=dict)
    dataset: str = ""
    as_of_reason: str = ""
    # Accounts of `accounts` not scored, and why: [{"account_id", "reason"}].
    unscored: list[dict[str, str]] = field(default_factory=list)
    sync: dict[str, Any] | None = None  # a live CRM/webhook sync's report (serving.crm)
    # `model v3` or `baseline (rules; why)` per model: where no champion clears the quality
    # floor the rule baseline scores, and every run says so.
    model_source: str = ""
    # The holdout experiment of the run: id, share, active, held-out accounts by route.
    holdout: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(self.timings.values())

    @property
    def drift_warnings(self) -> list[str]:
        return self.drift.warnings

    @property
    def unscored_by_reason(self) -> dict[str, list[str]]:
        """Account ids not scored, grouped by reason (largest group first)."""
        groups: dict[str, list[str]] = {}
        for row in self.unscored:
            groups.setdefault(row["reason"], []).append(row["account_id"])
        return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))

    def cover(self, snapshot: Snapshot) -> None:
        """Take the snapshot's as-of reason and unscored accounts (what the run covers)."""
        self.as_of_reason = snapshot.as_of_reason
        if snapshot.unscored is not None:
            self.unscored = [
                {"account_id": str(row.account_id), "reason": str(row.reason)}
                for row in snapshot.unscored.itertuples(index=False)
            ]

    def record(self, status: str = "completed", error: str | None = None) -> dict[str, Any]:
        """The run as stored: a `scoring_runs` row, a `.run.json` file, a CRM manifest."""
        return {
            "run_id": self.run_id,
            "status": status,
            "as_of": self.as_of,
            "as_of_reason": self.as_of_reason,
            "propensity_model_version": self.model_versions.get(PROPENSITY_MODEL),
            "post_upsell_model_version": self.model_versions.get(POST_UPSELL_MODEL),
            "model_source": self.model_source,
            "dataset": self.dataset,
            "target": self.target,
            "accounts": self.accounts,
            "written": self.written,
            "suppressed": self.suppressed,
            "unscored": self.unscored,
            "counts": {
                "by_route": self.by_route,
                "by_trigger": self.by_trigger,
                "by_suppression_reason": self.by_suppression_reason,
                "holdout": self.holdout,
            },
            "score_quantiles": self.score_quantiles,
            "drift": self.drift.to_dict(),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "error": error,
            "started_at": self.started_at,
            "finished_at": self.finished_at or datetime.now(UTC),
        }

    def to_table(self) -> Table:
        """A Rich table for the command line."""
        table = Table(title=f"Scoring run {self.run_id} (as of {self.as_of})", show_header=False)
        table.add_column("what", style="bold")
        table.add_column("value")
        versions = ", ".join(
            f"{k} {v}" if v == "baseline" else f"{k} v{v}" for k, v in self.model_versions.items()
        )
        table.add_row("target", self.target)
        table.add_row("as of", f"{self.as_of} ({self.as_of_reason or 'given'})")
        table.add_row("models", versions)
        table.add_row("model source", self.model_source or "-")
        rate = self.written / self.seconds if self.seconds else 0.0
        table.add_row(
            "accounts", f"{self.written:,} written in {self.seconds:.1f} s ({rate:,.0f}/s)"
        )
        table.add_row("not scored", self._unscored_text())
        table.add_row("suppressed", f"{self.suppressed:,} " + _counts(self.by_suppression_reason))
        table.add_row("actionable by route", _counts(self.by_route))
        if self.holdout.get("active"):
            held = _counts(self.holdout["by_route"])
            table.add_row("held out (not ranked)", f"{held} ({self.holdout['experiment_id']})")
        table.add_row("triggers fired", _counts(self.by_trigger))
        for col in SCORE_COLUMNS:
            q = self.score_quantiles.get(col, {})
            table.add_row(col, "  ".join(f"{k} {v:.3g}" for k, v in q.items()))
        if self.drift.psi:
            warned = [f"{f} {self.drift.psi[f]:.2f}" for f in self.drift_warnings]
            drift = ", ".join(warned) or "none"
            if self.drift.not_compared:  # calendar-bound features on another day than training
                drift += f" ({len(self.drift.not_compared)} not compared: see the run record)"
        else:
            drift = self.drift.note
        table.add_row(f"drift (PSI > {self.drift.threshold:.1f})", drift)
        if self.sync:
            _sync_rows(table, self.sync)
        return table

    def _unscored_text(self, shown: int = 10) -> str:
        """Counts per reason with the first ids of each (all of them are in the run record)."""
        if not self.unscored:
            return "none: every account of `accounts` was scored"
        lines = [f"{len(self.unscored):,} of {self.accounts + len(self.unscored):,} accounts"]
        for reason, ids in self.unscored_by_reason.items():
            more = f" and {len(ids) - shown:,} more" if len(ids) > shown else ""
            lines.append(f"{len(ids):,} {reason}: {', '.join(ids[:shown])}{more}")
        if len(self.unscored) > shown:
            lines.append("(every one with its reason in the run record: scoring_runs.unscored)")
        return "\n".join(lines)


def _sync_rows(table: Table, sync: dict[str, Any]) -> None:
    """The live sync's outcome, with the first failed records and the CRM's messages."""
    table.add_row(
        "CRM sync",
        f"{sync['status']}: {sync['landed']:,} landed ({sync['already_landed']:,} earlier), "
        f"{sync['failed']:,} failed, {sync['requests']:,} requests, {sync['retries']:,} retries",
    )
    for failure in sync["failures"][:10]:
        table.add_row("  failed", f"{failure['account_id']}: {failure['message'][:160]}")
    if sync["failed"] > 10:
        table.add_row("  failed", f"... and {sync['failed'] - 10:,} more (scoring_runs.crm_sync)")
    for note in sync["notes"][:5]:
        table.add_row("  note", note)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items()) or "-"


def default_target(settings: Settings) -> str:
    """The embedded default: a SQLite file beside the models (`models/crm.db`)."""
    return f"sqlite:///{settings.models_dir / 'crm.db'}"


def run_batch(
    dataset: Dataset,
    settings: Settings,
    target: str,
    *,
    as_of: date | str | None = None,
    chunk_size: int = 50_000,
    progress: Progress | None = None,
    models: Models | None = None,
    snapshot_to: Path | None = None,
    allow_out_of_range_as_of: bool = False,
    run_id: str | None = None,
) -> BatchSummary:
    """Score every account of `dataset` at `as_of` (default: the day after the last clean
    event; a date the data does not cover is refused unless `allow_out_of_range_as_of`, see
    `serving.coverage`).

    `models` defaults to both champions, checked against the features this code builds.
    A target that is not understood or not reachable, or a missing model, fails before the
    features are built. `snapshot_to` (e.g. `models/snapshot`) also publishes the same
    features as the service's snapshot once the scores are written: the nightly job and the
    API's refresh in one load of the data. `run_id` reuses a run's id: a live CRM sync then
    resumes, sending only what has not landed (default: a new id).
    """
    # A date the data does not cover fails first, before the target or the models are touched.
    resolve_as_of(dataset, as_of, allow_out_of_range=allow_out_of_range_as_of)
    sink = open_target(target)
    sink.prepare()  # an unreachable database fails now, not after the features
    if models is None:
        models = Models.load(settings, feature_spec(dataset).names)
    note = progress or (lambda _stage, _done, _total: None)
    started = time.perf_counter()
    note("features", 0, 1)
    snapshot = build_snapshot(dataset, as_of, allow_out_of_range_as_of=allow_out_of_range_as_of)
    note("features", 1, 1)
    features_s = time.perf_counter() - started
    summary = score_snapshot(
        snapshot,
        models,
        settings,
        sink,
        chunk_size=chunk_size,
        progress=progress,
        timings={"features": features_s},
        run_id=run_id,
    )
    if snapshot_to is not None:
        write_snapshot(snapshot, snapshot_to)
    return summary


def score_snapshot(
    snapshot: Snapshot,
    models: Models,
    settings: Settings,
    sink: Sink,
    *,
    chunk_size: int = 50_000,
    progress: Progress | None = None,
    timings: dict[str, float] | None = None,
    run_id: str | None = None,
) -> BatchSummary:
    """Score, rank, explain and write the accounts of a snapshot through `sink`.

    `timings` holds the seconds of earlier stages (the features) for the run record.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    note = progress or (lambda _stage, _done, _total: None)
    features = snapshot.features
    n = len(features)
    bounds = [(lo, min(lo + chunk_size, n)) for lo in range(0, n, chunk_size)]
    started_at = datetime.now(UTC)
    clock = time.perf_counter()

    # Scores of everything first (cheap): the rank is over all accounts, not per chunk.
    parts = []
    for lo, hi in bounds:
        parts.append(score_frame(models, features.iloc[lo:hi], snapshot.plans, settings))
        note("scores", hi, n)
    scored = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RESULT_COLUMNS)
    del parts
    run_id = run_id or str(uuid.uuid4())  # a given id resumes a live CRM sync
    experiment = Experiment.from_settings(settings)
    # Held-out accounts get no rank: the call list (rank order) must not reach them.
    scored["holdout"] = hold_out(scored, experiment, sink, snapshot.as_of, run_id)
    ranked = rank_accounts(scored)
    rank = pd.Series(pd.NA, index=scored.index, dtype="Int64")
    rank.loc[ranked.index] = ranked["rank"].to_numpy()
    scored["rank"] = rank
    scores_s = time.perf_counter() - clock

    clock = time.perf_counter()
    # Canceled accounts have no features: they would only inflate the missing-value bins.
    live = (features["ctx_status"] != "canceled").to_numpy() if "ctx_status" in features else None
    metadata = models.propensity.contract.metadata
    drift = drift_report(
        metadata.get("training_feature_sample"),
        features,
        categorical=list(models.propensity.contract.categorical),
        rows=live,
        shifts=age_shifts(metadata, snapshot.as_of),
        not_compared=calendar_mismatches(metadata, snapshot.as_of, features.columns),
    )
    if drift.warnings:
        log.warning(
            "feature drift: PSI above %.1f for %s",
            drift.threshold,
            ", ".join(f"{f} ({drift.psi[f]:.2f})" for f in drift.warnings),
        )
    drift_s = time.perf_counter() - clock

    run = RunInfo(run_id, snapshot.as_of, started_at, dict(models.versions))
    summary = _summarize(run, sink, snapshot, scored, drift)
    summary.holdout = {
        "experiment_id": experiment.experiment_id,
        "share": experiment.share,
        "active": experiment.active(snapshot.as_of),
        "by_route": {r: int((scored["holdout"] & (scored["route"] == r)).sum()) for r in ROUTES},
    }
    summary.cover(snapshot)
    summary.model_source = models.model_source_line
    if any(not source.use_model for source in models.sources.values()):
        log.warning("model source: %s", summary.model_source)
    summary.timings = {**(timings or {}), "scores": scores_s, "drift": drift_s}

    clock = time.perf_counter()
    sink.open(run)
    try:
        for lo, hi in bounds:
            rows = attach_reasons(
                models, features.iloc[lo:hi], scored.iloc[lo:hi], settings.reasons
            )
            sink.write(_rows(rows, run))
            summary.written = hi
            note("write", hi, n)
        summary.timings["explain_write"] = time.perf_counter() - clock
        summary.finished_at = datetime.now(UTC)
        sink.commit(summary.record())
    except BaseException as exc:  # KeyboardInterrupt too: the run must not be half-visible
        summary.finished_at = datetime.now(UTC)
        sink.abort(summary.record("failed", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        report = getattr(sink, "report", None)  # live syncs: what landed and what did not
        summary.sync = report.to_dict() if report is not None else None
    return summary


def _rows(scored: pd.DataFrame, run: RunInfo) -> pd.DataFrame:
    """The written rows of one chunk, in `ROW_COLUMNS` order."""
    out = scored.assign(
        run_id=run.run_id,
        scored_at=run.scored_at,
        as_of=run.as_of,
        propensity_model_version=run.propensity_version,
        post_upsell_model_version=run.post_upsell_version,
    )
    return out[ROW_COLUMNS]


def _summarize(
    run: RunInfo, sink: Sink, snapshot: Snapshot, scored: pd.DataFrame, drift: DriftReport
) -> BatchSummary:
    suppressed = scored["suppressed"].astype(bool)
    actionable = scored[~suppressed]
    by_route = {r: int((actionable["route"] == r).sum()) for r in ROUTES}
    fired = pd.Series([t for row in scored["triggers"] for t in row], dtype=object)
    by_trigger = {name: int((fired == name).sum()) for name in TRIGGERS}
    reasons = scored.loc[suppressed, "suppression_reason"].value_counts()
    quantiles = {}
    for col in SCORE_COLUMNS:
        values = pd.to_numeric(scored[col], errors="coerce").dropna()
        if len(values):
            q = np.quantile(values, QUANTILES)
            quantiles[col] = {
                "mean": float(values.mean()),
                **{f"p{round(p * 100)}": float(v) for p, v in zip(QUANTILES, q, strict=True)},
            }
    return BatchSummary(
        run_id=run.run_id,
        target=sink.description,
        as_of=run.as_of,
        model_versions=dict(run.versions),
        accounts=len(scored),
        written=0,
        suppressed=int(suppressed.sum()),
        by_route=by_route,
        by_trigger=by_trigger,
        by_suppression_reason={str(k): int(v) for k, v in reasons.items()},
        score_quantiles=quantiles,
        drift=drift,
        started_at=run.scored_at,
        dataset=snapshot.source,
    )
