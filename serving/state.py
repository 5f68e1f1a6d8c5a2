"""What the API serves: one immutable state (models, snapshot, scores), swapped whole.

`StateKeeper` loads it in a background thread and reloads it without a restart: every
`EXPANSION_RELOAD_SECONDS` (default 30) it checks whether `models/snapshot/features.parquet` was
replaced (`expansion snapshot` writes it atomically) or the `champion` alias of either model
points at another version (`expansion promote`). It then loads the new snapshot and/or models,
checks the feature contract, scores every account, and swaps the new state in whole: a request
sees the old state or the new one, never a mix. If loading fails (say, a champion whose features
differ) the service keeps serving what it had and logs why. Before the first successful load
`/readyz` answers 503 and the thread retries (so the service may start before the first
training).

Speed: the snapshot is scored once per load (no explanations), and everything a request would
otherwise rebuild is prepared then too: both models' input matrices (the churn model's for each
account's likely next step; `prepare_explainer`, `prepare_churn_explainer`), the reason values
as arrays, the result cells as JSON-ready Python, and both sort orders of the call list
(`RankIndex`). The endpoints (`serving.endpoints`) only look accounts up and explain the rows
they return.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serving.holdout import Experiment, assign_holdout, read_assignments_at
from serving.registry import check_feature_contract, model_source
from serving.scoring import (
    RESULT_COLUMNS,
    ExplainerInputs,
    Models,
    RankIndex,
    prepare_churn_explainer,
    prepare_explainer,
    score_frame,
)
from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL, Settings
from serving.snapshot import Snapshot, read_snapshot

# BentoML's server logging shows the `bentoml` logger tree at INFO (the root only at WARNING).
log = logging.getLogger("bentoml.expansion")

CHAMPION = "champion"
MAX_EXPLAINED = 20_000  # accounts whose reasons a state keeps (about 1 kB each)


# --- what the service serves: one immutable state, swapped whole ---------------------------


def snapshot_stamp(path: Path) -> tuple[int, int, int] | None:
    """Identity of the snapshot file (a rewrite replaces the inode), None when there is none."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def champion_versions(settings: Settings) -> dict[str, str]:
    """Per model, what is to be served now: its champion alias and quality-floor verdict."""
    return {
        name: model_source(settings, name).key for name in (PROPENSITY_MODEL, POST_UPSELL_MODEL)
    }


@dataclass(frozen=True)
class ServingState:
    """Models, snapshot, and every account scored once; requests only read it."""

    models: Models
    snapshot: Snapshot
    stamp: tuple[int, int, int] | None
    loaded_at: datetime
    columns: dict[str, np.ndarray]  # scored columns (RESULT_COLUMNS), one row per account
    positions: dict[str, int]  # account_id -> row in `columns` and in the snapshot
    ranking: RankIndex  # both sort orders, computed once
    explainer: ExplainerInputs  # propensity inputs, converted once
    churn_explainer: ExplainerInputs  # post-upsell inputs for each account's next step
    # Accounts explained so far, by (position, reasons): a snapshot's reasons never change, so
    # the call list's accounts (the same ones request after request) are explained once.
    explained: dict[tuple[int, int], dict] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        models: Models,
        snapshot: Snapshot,
        settings: Settings,
        stamp: tuple[int, int, int] | None = None,
    ) -> ServingState:
        for model in (models.propensity, models.post_upsell):
            check_feature_contract(model, snapshot.feature_names)
        scored = score_frame(models, snapshot.features, snapshot.plans, settings)
        scored["holdout"] = served_holdout(scored, snapshot.as_of, settings)
        return cls(
            models=models,
            snapshot=snapshot,
            stamp=stamp,
            loaded_at=datetime.now(UTC),
            # Cells as JSON-ready Python once per load, not per request.
            columns={c: _plain_column(scored[c]) for c in [*RESULT_COLUMNS, "holdout"]},
            positions={a: i for i, a in enumerate(scored["account_id"])},
            ranking=RankIndex(scored),
            explainer=prepare_explainer(models.propensity, snapshot.features),
            churn_explainer=prepare_churn_explainer(models, snapshot),
        )


def served_holdout(scored: pd.DataFrame, as_of: date, settings: Settings) -> pd.Series:
    """The holdout arms /rank leaves out: the arms the batch stored (`holdout_store`, default
    the batch's default database), new accounts drawn the same way (not stored here)."""
    experiment = Experiment.from_settings(settings)
    if not experiment.active(as_of):
        return pd.Series(False, index=scored.index, dtype=bool)
    store = settings.holdout_store or f"sqlite:///{settings.models_dir / 'crm.db'}"
    prior = read_assignments_at(store, experiment.experiment_id)
    return assign_holdout(scored, experiment, prior)[0]


class StateKeeper:
    """Loads the snapshot and the champions in a thread, then reloads them when they change."""

    def __init__(self, settings: Settings, interval: float) -> None:
        self.settings = settings
        self.interval = interval
        self.state: ServingState | None = None
        self.error: str | None = "loading"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="expansion-reload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            self.refresh()
            # Until the first load succeeds, retry sooner: the models may be on their way.
            wait = self.interval if self.state is not None else min(self.interval, 5.0)
            if self._stop.wait(wait):
                return

    def refresh(self) -> bool:
        """Load what changed since the last look; True when a new state was swapped in."""
        current = self.state
        try:
            folder = self.settings.snapshot_path.parent
            stamp = snapshot_stamp(self.settings.snapshot_path)
            if stamp is None:
                raise FileNotFoundError(
                    f"no feature snapshot at {self.settings.snapshot_path}: write one with "
                    "`expansion snapshot`"
                )
            versions = champion_versions(self.settings)
            same_models = current is not None and current.models.source_keys == versions
            if same_models and current is not None and current.stamp == stamp:
                return False
            snapshot = read_snapshot(folder)
            models = (
                current.models
                if same_models and current is not None
                else Models.load(self.settings, snapshot.feature_names, alias=CHAMPION)
            )
            state = ServingState.build(models, snapshot, self.settings, stamp)
        except Exception as exc:  # keep serving what we have; say why, once per new reason
            message = f"{type(exc).__name__}: {exc}"
            if message != self.error:
                keeping = "keeping the previous state" if current is not None else "not ready"
                log.error("could not load models or snapshot (%s): %s", keeping, message)
            self.error = message
            return False
        self.state, self.error = state, None
        log.info(
            "serving snapshot as of %s (%d accounts) with %s",
            state.snapshot.as_of,
            len(state.snapshot),
            ", ".join(f"{n} v{v}" for n, v in state.models.versions.items()),
        )
        return True


# --- cells as JSON-ready Python, once per load ----------------------------------------------


def _plain(value: Any) -> Any:
    """A scored cell as JSON-ready Python (NaN and NA become None)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.datetime64 | pd.Timestamp):
        return pd.Timestamp(value).date()
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, list | tuple | np.ndarray):
        return [str(v) for v in value]
    return value


def _plain_column(column: pd.Series) -> np.ndarray:
    out = np.empty(len(column), dtype=object)
    out[:] = [_plain(v) for v in column.to_numpy()]
    return out
