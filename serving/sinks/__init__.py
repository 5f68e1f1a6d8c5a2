"""Where the batch job writes scores: a database, a file, or CRM update payloads.

One module per kind of target, all behind one protocol (`base.Sink`); `open_target` picks the
sink for a target string (`expansion score --to TARGET`):

- `sqlite:///models/crm.db` (embedded default) or `postgresql://user@host/db`: `sql.py`, the
  tables `account_expansion_scores`, `account_expansion_score_history` and `scoring_runs`;
  the holdout arms go to `holdout_assignments` (`serving.holdout`), in the same transaction.
- `scores.parquet` / `scores.csv`: `files.py`, one row per account and the run record beside it.
- `hubspot:DIR[?id_property=NAME]`: `hubspot_files.py`, companies batch/update request bodies.
- `salesforce:DIR[?external_id=FIELD__c]`: `salesforce_files.py`, sObject Collections bodies.
- `hubspot://`, `salesforce://`, `https://...` (webhook): a live sync, see `serving.crm` and
  docs/crm-sync.md (not all-or-nothing: what landed stays, the run record lists what did not).

`fields.py` lists our columns as CRM properties and fields (`CRM_FIELDS`) and how each value
is written to HubSpot and Salesforce; the file writers and the live sync share it.

Every sink but the live sync is all-or-nothing. A database run is one transaction: a crash
half-way (even SIGKILL) leaves the previous scores and no trace of the run, and readers see the
old scores until the commit (SQLite runs in WAL mode). Files and CRM folders are written under
a hidden `.partial` name beside the target and renamed into place at the end.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

from serving.sinks.base import (
    FLOAT_COLUMNS,
    ROW_COLUMNS,
    RunInfo,
    Sink,
    iter_request_bodies,
    to_records,
)
from serving.sinks.fields import (
    CRM_FIELDS,
    NUMBER_DIGITS,
    ROUTES,
    CrmField,
    _value,
    hubspot_property_definitions,
    hubspot_value,
    salesforce_field_definitions,
    salesforce_value,
)
from serving.sinks.files import PARQUET_SCHEMA, FileSink
from serving.sinks.hubspot_files import (
    HUBSPOT_BATCH_LIMIT,
    HUBSPOT_ENDPOINT,
    HUBSPOT_PROPERTIES_ENDPOINT,
    HubSpotSink,
)
from serving.sinks.salesforce_files import SALESFORCE_API, SALESFORCE_BATCH_LIMIT, SalesforceSink
from serving.sinks.sql import (
    HISTORY_KEY,
    DatabaseSink,
    create_database_engine,
    create_tables,
    database_url,
    history_table,
    metadata,
    promote_run_to_current,
    runs_table,
    scores_table,
    upsert,
)

__all__ = [
    "CRM_FIELDS",
    "FLOAT_COLUMNS",
    "HISTORY_KEY",
    "HUBSPOT_BATCH_LIMIT",
    "HUBSPOT_ENDPOINT",
    "HUBSPOT_PROPERTIES_ENDPOINT",
    "NUMBER_DIGITS",
    "PARQUET_SCHEMA",
    "ROUTES",
    "ROW_COLUMNS",
    "SALESFORCE_API",
    "SALESFORCE_BATCH_LIMIT",
    "CrmField",
    "DatabaseSink",
    "FileSink",
    "HubSpotSink",
    "RunInfo",
    "SalesforceSink",
    "Sink",
    "_value",
    "create_database_engine",
    "create_tables",
    "database_url",
    "history_table",
    "hubspot_property_definitions",
    "hubspot_value",
    "iter_request_bodies",
    "metadata",
    "open_target",
    "promote_run_to_current",
    "runs_table",
    "salesforce_field_definitions",
    "salesforce_value",
    "scores_table",
    "to_records",
    "upsert",
]


def open_target(target: str) -> Sink:
    """The sink for a target string (see the module docstring for the forms)."""
    if target.startswith(("sqlite:", "postgresql:", "postgresql+", "postgres:")):
        return DatabaseSink(target)
    from serving.crm import is_live_target, open_live_target  # live sync: serving/crm/

    if is_live_target(target):
        return open_live_target(target)
    if target.startswith("hubspot:"):
        folder, options = _crm_target(target, "hubspot:", {"id_property"})
        return HubSpotSink(folder, id_property=options.get("id_property"))
    if target.startswith("salesforce:"):
        folder, options = _crm_target(target, "salesforce:", {"external_id"})
        return SalesforceSink(folder, external_id=options.get("external_id"))
    suffix = Path(target).suffix.lower()
    if suffix in (".parquet", ".csv"):
        return FileSink(Path(target))
    raise ValueError(
        f"unknown target {target!r}: use sqlite:///FILE, postgresql://..., FILE.parquet, "
        "FILE.csv, hubspot:DIR, salesforce:DIR, hubspot://, salesforce:// or https://..."
    )


def _crm_target(target: str, prefix: str, allowed: set[str]) -> tuple[Path, dict[str, str]]:
    rest = target.removeprefix(prefix)
    path, _, query = rest.partition("?")
    if not path:
        raise ValueError(f"{target!r}: name a folder, e.g. {prefix}out/{prefix[:-1]}")
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"{target!r}: unknown option(s) {sorted(unknown)}; allowed {allowed}")
    return Path(path), options
