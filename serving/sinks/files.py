"""Scores in one Parquet or CSV file, with the run record beside it.

`scores.parquet` / `scores.csv`: the columns of `account_expansion_scores`, one row per account
(`reasons` as JSON text; `triggers` a list in Parquet, JSON text in CSV), and the run record
beside it in `scores.parquet.run.json`. Written under a hidden `.partial` name and renamed into
place at the end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from serving.sinks.base import (
    ROW_COLUMNS,
    RunInfo,
    _partial,
    _remove_stale_partials,
    _write_json,
)

PARQUET_SCHEMA = pa.schema(
    [
        ("account_id", pa.string()),
        ("run_id", pa.string()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
        ("as_of", pa.date32()),
        ("propensity_model_version", pa.string()),
        ("post_upsell_model_version", pa.string()),
        ("p_expand", pa.float64()),
        ("p_post_upsell_churn", pa.float64()),
        ("expected_uplift_mrr", pa.float64()),
        ("expected_net_value", pa.float64()),
        ("rank", pa.int64()),
        ("next_step", pa.string()),
        ("triggers", pa.list_(pa.string())),
        ("route", pa.string()),
        ("suppressed", pa.bool_()),
        ("suppression_reason", pa.string()),
        ("holdout", pa.bool_()),
        ("reasons", pa.string()),  # JSON: a reason's value is a number or a category
        ("reasons_text", pa.string()),
        ("base_value", pa.float64()),
        ("mrr", pa.float64()),
        ("csm_owner", pa.string()),
        ("segment", pa.string()),
    ]
)


class FileSink:
    """One Parquet or CSV file with a row per account, swapped into place at the end."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.kind = self.path.suffix.lower().lstrip(".")
        self.description = str(self.path)
        self._partial: Path | None = None
        self._writer: pq.ParquetWriter | None = None
        self._header = True

    def prepare(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def run_file(self) -> Path:
        """The run record beside the scores (what `scoring_runs` holds in a database)."""
        return self.path.with_name(self.path.name + ".run.json")

    def open(self, run: RunInfo) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(self.path)
        self._partial = _partial(self.path, run.run_id)
        self._header = True
        if self.kind == "parquet":
            self._writer = pq.ParquetWriter(self._partial, PARQUET_SCHEMA)

    def write(self, rows: pd.DataFrame) -> None:
        frame = rows[ROW_COLUMNS].copy()
        frame["reasons"] = [json.dumps(r) for r in frame["reasons"]]
        frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True)
        frame["rank"] = frame["rank"].astype("Int64")
        if self.kind == "parquet":
            self._writer.write_table(
                pa.Table.from_pandas(frame, schema=PARQUET_SCHEMA, preserve_index=False)
            )
            return
        frame["triggers"] = [json.dumps(list(t)) for t in frame["triggers"]]
        frame.to_csv(
            self._partial, mode="w" if self._header else "a", header=self._header, index=False
        )
        self._header = False

    def commit(self, record: dict[str, Any]) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        elif self._header:  # no rows at all: still a valid file with its header
            pd.DataFrame(columns=ROW_COLUMNS).to_csv(self._partial, index=False)
        os.replace(self._partial, self.path)
        _write_json(self.run_file, record)

    def abort(self, record: dict[str, Any]) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._partial is not None:
            self._partial.unlink(missing_ok=True)
