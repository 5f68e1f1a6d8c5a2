"""What every sink shares: the protocol, the rows it receives, and all-or-nothing staging.

- `Sink`: opened once per run, written chunk by chunk, then committed or aborted.
- `ROW_COLUMNS` / `to_records`: the row every sink receives, and the same row as plain Python
  values; `RunInfo`: what identifies the run in every row.
- `.partial` staging: files and folders are written under a hidden name beside the target and
  renamed into place at the end (`_partial`, `_swap_folder`); leftovers of killed runs are
  removed by the next run (`_remove_stale_partials`).
- `_CrmSink`: a folder of request bodies for a CRM API, at most `limit` records per file,
  with a manifest; `hubspot_files` and `salesforce_files` say what goes in each body.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL

# One row per account, in this order; `triggers` is a list of names, `reasons` a list of
# `{feature, value, contribution, text}` records, `base_value` the log-odds they start from.
ROW_COLUMNS = [
    "account_id",
    "run_id",
    "scored_at",
    "as_of",
    "propensity_model_version",
    "post_upsell_model_version",
    "p_expand",
    "p_post_upsell_churn",
    "expected_uplift_mrr",
    "expected_net_value",
    "rank",
    "next_step",
    "triggers",
    "route",
    "suppressed",
    "suppression_reason",
    "holdout",
    "reasons",
    "reasons_text",
    "base_value",
    "mrr",
    "csm_owner",
    "segment",
]
FLOAT_COLUMNS = (
    "p_expand",
    "p_post_upsell_churn",
    "expected_uplift_mrr",
    "expected_net_value",
    "base_value",
    "mrr",
)


@dataclass(frozen=True)
class RunInfo:
    """What identifies a run in every row it writes."""

    run_id: str
    as_of: date
    scored_at: datetime
    versions: dict[str, str]

    @property
    def propensity_version(self) -> str:
        return self.versions[PROPENSITY_MODEL]

    @property
    def post_upsell_version(self) -> str:
        return self.versions[POST_UPSELL_MODEL]


def to_records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Plain Python values (None for missing) that any driver or JSON encoder accepts."""
    columns: dict[str, list] = {}
    for name in ROW_COLUMNS:
        values = rows[name]
        if name in FLOAT_COLUMNS:
            x = values.to_numpy(dtype="float64", na_value=np.nan)
            columns[name] = [None if math.isnan(v) else v for v in x.tolist()]
        elif name == "rank":
            columns[name] = [None if pd.isna(v) else int(v) for v in values.tolist()]
        elif name in ("suppressed", "holdout"):
            columns[name] = [bool(v) for v in values.tolist()]
        elif name in ("triggers", "reasons"):
            columns[name] = list(values)
        elif name == "scored_at":
            columns[name] = [pd.Timestamp(v).to_pydatetime() for v in values.tolist()]
        elif name == "as_of":
            columns[name] = [pd.Timestamp(v).date() for v in values.tolist()]
        else:
            columns[name] = [
                None if (v is None or (isinstance(v, float) and math.isnan(v))) else v
                for v in values.tolist()
            ]
    return [dict(zip(ROW_COLUMNS, row, strict=True)) for row in zip(*columns.values(), strict=True)]


class Sink(Protocol):
    """A destination: opened once per run, written chunk by chunk, then committed or aborted."""

    description: str

    def prepare(self) -> None:
        """Check the target early (connect, create tables or folders); no run yet."""

    def open(self, run: RunInfo) -> None: ...

    def write(self, rows: pd.DataFrame) -> None: ...

    def commit(self, record: dict[str, Any]) -> None: ...

    def abort(self, record: dict[str, Any]) -> None: ...


# --- all-or-nothing staging ----------------------------------------------------------------


def _partial(path: Path, run_id: str) -> Path:
    return path.with_name(f".{path.name}.{run_id}.partial")


def _remove_stale_partials(path: Path) -> None:
    """Leftovers of runs that were killed: never visible under the target's own name."""
    for stale in path.parent.glob(f".{path.name}.*.partial"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=_json_default))
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value)}")


def _swap_folder(staged: Path, final: Path, run_id: str) -> None:
    """Put the staged folder at `final`; the old one is moved aside first, then removed.

    Two renames, not one: a crash between them leaves the old folder under a hidden
    `.partial` name (removed by the next run) and no folder at `final`, never a mixed one.
    """
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.{run_id}-old.partial")
        os.replace(final, old)
    os.replace(staged, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- folders of CRM request bodies ---------------------------------------------------------


class _CrmSink:
    """Request bodies of at most `limit` records per file, in a folder swapped in at the end."""

    system = ""
    limit = 100

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.description = f"{self.system}:{self.folder}"
        self._staged: Path | None = None
        self._run_id = ""
        self._pending: list[dict[str, Any]] = []
        self._files: list[str] = []
        self._records = 0

    def prepare(self) -> None:
        self.folder.parent.mkdir(parents=True, exist_ok=True)

    def open(self, run: RunInfo) -> None:
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(self.folder)
        self._run_id = run.run_id
        self._staged = _partial(self.folder, run.run_id)
        (self._staged / "requests").mkdir(parents=True)
        self._pending, self._files, self._records = [], [], 0

    def write(self, rows: pd.DataFrame) -> None:
        for record in to_records(rows):
            self._pending.append(self.item(record))
            if len(self._pending) == self.limit:
                self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        name = f"requests/{len(self._files) + 1:06d}.json"
        (self._staged / name).write_text(json.dumps(self.body(self._pending), indent=1))
        self._files.append(name)
        self._records += len(self._pending)
        self._pending = []

    def commit(self, record: dict[str, Any]) -> None:
        self._flush()
        for name, payload in self.extras().items():
            _write_json(self._staged / name, payload)
        manifest = {
            "system": self.system,
            **self.request(),
            "requests": self._files,
            "records": self._records,
            "max_records_per_request": self.limit,
            "run": record,
        }
        _write_json(self._staged / "manifest.json", manifest)
        _swap_folder(self._staged, self.folder, self._run_id)

    def abort(self, record: dict[str, Any]) -> None:
        if self._staged is not None:
            shutil.rmtree(self._staged, ignore_errors=True)

    # subclasses
    def item(self, record: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def body(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError

    def request(self) -> dict[str, Any]:
        raise NotImplementedError

    def extras(self) -> dict[str, Any]:
        return {}


def iter_request_bodies(folder: Path) -> Iterable[dict[str, Any]]:
    """The request bodies a CRM sink wrote, in order (for a sender, and for tests)."""
    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    for name in manifest["requests"]:
        yield json.loads((Path(folder) / name).read_text())
