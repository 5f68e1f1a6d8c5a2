"""The scoring API: a thin BentoML service over the scoring core (`serving.scoring`).

Endpoints (request and response bodies in `serving.api_models`; OpenAPI at `/docs.json`,
Swagger UI at `/`):

- `POST /score`: accounts by id (from the served snapshot) or feature rows computed elsewhere;
  one result per account, in request order, with its top reasons.
- `POST /rank`: the call list: filters (`csm_owner`, `segment`, `min_mrr`,
  `include_suppressed`, `include_holdout`), `sort` (`net_value` or `propensity`) and `limit`;
  only the returned accounts are explained. Accounts in the holdout experiment
  (`serving.holdout`) are left out unless `include_holdout`, and then marked `holdout: true`.
- `POST /explain`: one account, every contribution of both models with their base values
  (base + contributions = the raw score).
- `GET /model_info`: served model versions, aliases, training and test windows, test metrics,
  and the snapshot's as-of date.
- `GET /livez`, `/readyz`: health; ready once the models and the snapshot are loaded.

Start it with `expansion serve [--host H] [--port N]`, i.e. `serve()` below, which runs
`bentoml serve serving.service:ExpansionService` with the settings passed as `EXPANSION_*`
environment variables. Authentication (`serving.auth`): `Authorization: Bearer <key>` with a
key from `EXPANSION_API_KEYS`, on every endpoint but the health probes and the documentation;
`EXPANSION_AUTH_ENABLED=false` turns it off for local use; with it on and no key (or a key
under 16 characters) the service refuses to start.

Hygiene against careless or hostile clients: a body over `EXPANSION_MAX_REQUEST_BYTES`
(default 4 MiB) is answered 413 before it is parsed (`BodyLimit`); error bodies name at most
20 errors and cut echoed input (`error_body`); a 4xx is one log line, a 5xx keeps its traceback
(`OneLineClientErrors`).

Hot reload, without a restart: a background thread checks every `EXPANSION_RELOAD_SECONDS`
(default 30) whether `models/snapshot/features.parquet` was replaced (`expansion snapshot`
writes it atomically) or the `champion` alias of either model points at another version
(`expansion promote`). It then loads the new snapshot and/or models, checks the feature
contract, scores every account, and swaps the new state in whole: a request sees the old state
or the new one, never a mix. If loading fails (say, a champion whose features differ) the
service keeps serving what it had and logs why. Before the first successful load `/readyz`
answers 503 and the thread retries (so the service may start before the first training).

Speed: the snapshot is scored once per load (no explanations), and everything a request would
otherwise rebuild is prepared then too: both models' input matrices (the churn model's for each
account's likely next step; `prepare_explainer`, `prepare_churn_explainer`), the reason values
as arrays, the result cells as JSON-ready Python, and both sort orders of the call list
(`RankIndex`). A request looks its accounts up, explains only the rows it returns (TreeSHAP on
a numpy slice; /explain's raw score is the base value plus the contributions) and runs on one
thread (`OMP_NUM_THREADS=1`, set by `serve`): OpenMP costs more than one row takes, and 100x
more on a busy machine.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

import anyio.to_thread
import bentoml
import numpy as np
import pandas as pd
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound, ServiceUnavailable
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import SecretStr, ValidationError

from serving.api_models import (
    ErrorBody,
    ExplainRequest,
    ExplainResponse,
    FeatureRow,
    ModelDescription,
    ModelExplanation,
    RankRequest,
    RankResponse,
    ScoreRequest,
    ScoreResponse,
    ServiceInfo,
    SnapshotDescription,
    feature_row_example,
)
from serving.auth import (
    ApiKeyMiddleware,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    check_auth_config,
    document_auth,
)
from serving.holdout import Experiment, assign_holdout, read_assignments_at
from serving.registry import check_feature_contract, model_source
from serving.scoring import (
    RESULT_COLUMNS,
    ExplainerInputs,
    Models,
    RankIndex,
    attach_reasons,
    explain_at,
    explain_one,
    prepare_churn_explainer,
    prepare_explainer,
    reasons_line,
    score_frame,
)
from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL, Settings, get_settings
from serving.snapshot import Snapshot, read_snapshot

# BentoML's server logging shows the `bentoml` logger tree at INFO (the root only at WARNING).
log = logging.getLogger("bentoml.expansion")

SERVICE_TARGET = "serving.service:ExpansionService"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
CHAMPION = "champion"
MAX_EXPLAINED = 20_000  # accounts whose reasons a state keeps (about 1 kB each)
API_DESCRIPTION = (
    "Ranks B2B SaaS accounts for upsell: which to pitch now, why, and whether the upsell will "
    "stick. Probabilities are calibrated; reasons are TreeSHAP contributions to the raw score "
    "(log-odds). Send `Authorization: Bearer <API key>` (button *Authorize*) unless the "
    "server runs with EXPANSION_AUTH_ENABLED=false."
)


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


# --- the work behind each endpoint (pure functions of a state) -------------------------------


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


def _positions(state: ServingState, account_ids: Iterable[str]) -> list[int]:
    ids = list(account_ids)
    missing = [a for a in dict.fromkeys(ids) if a not in state.positions]
    if missing:
        shown = missing[:20]
        more = f" and {len(missing) - len(shown)} more" if len(missing) > len(shown) else ""
        raise NotFound(
            f"unknown account_id(s) in the snapshot as of {state.snapshot.as_of}: {shown}{more}"
        )
    return [state.positions[a] for a in ids]


def account_records(state: ServingState, positions: list[int], top: int) -> list[dict]:
    """Scored accounts at `positions` with their top reasons (explained here, only these)."""
    todo = [p for p in dict.fromkeys(positions) if (p, top) not in state.explained]
    fresh = {}
    if todo:
        reasons, base = explain_at(state.explainer, todo, top=top)
        for k, pos in enumerate(todo):
            record = {c: state.columns[c][pos] for c in RESULT_COLUMNS}
            why = reasons[k] if record["p_expand"] is not None else []  # canceled: no score
            record.update(reasons=why, reasons_text=reasons_line(why), base_value=float(base[k]))
            fresh[pos] = record
        if len(state.explained) < MAX_EXPLAINED:
            state.explained.update(((pos, top), r) for pos, r in fresh.items())
    # copies: callers add fields (rank) to what they get
    return [dict(fresh[p] if p in fresh else state.explained[(p, top)]) for p in positions]


def score_ids(state: ServingState, account_ids: list[str], top: int) -> list[dict]:
    """/score by account id; unknown ids raise NotFound naming them."""
    return account_records(state, _positions(state, account_ids), top)


def feature_frame(state: ServingState, rows: list[FeatureRow]) -> pd.DataFrame:
    """Caller-computed rows as a feature frame; every problem is named by its field."""
    names = state.snapshot.feature_names
    known = set(names)
    categorical = {
        **state.models.propensity.contract.categorical,
        **state.models.post_upsell.contract.categorical,
    }
    seen: set[str] = set()
    records = []
    for i, row in enumerate(rows):
        where = f"rows[{i}]"
        if row.account_id in seen:
            raise InvalidArgument(f"{where}.account_id: {row.account_id!r} appears twice")
        seen.add(row.account_id)
        unknown = sorted(set(row.features) - known)
        if unknown:
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            shown = [_clip(name, 60) for name in unknown[:10]]
            raise InvalidArgument(f"{where}.features: unknown feature(s) {shown}{more}")
        missing = [n for n in names if n not in row.features]
        if missing:
            raise InvalidArgument(
                f"{where}.features: missing feature(s) {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''} (send null for an unknown value)"
            )
        for name, value in row.features.items():
            if value is None:
                continue
            if name in categorical and not isinstance(value, str):
                raise InvalidArgument(f"{where}.features.{name}: expected a string")
            if name not in categorical and isinstance(value, str):
                raise InvalidArgument(f"{where}.features.{name}: expected a number")
        touched = row.last_outreach_at
        if touched is not None and touched.tzinfo is not None:
            touched = touched.astimezone(UTC).replace(tzinfo=None)
        records.append(
            {
                "account_id": row.account_id,
                "ctx_plan_id": row.plan_id,
                "ctx_status": row.status,
                "ctx_csm_owner": row.csm_owner,
                "ctx_name": None,
                "ctx_last_outreach_at": touched,
                "as_of": pd.Timestamp(row.as_of or state.snapshot.as_of),
                **row.features,
            }
        )
    frame = pd.DataFrame.from_records(records).set_index("account_id")
    frame["ctx_last_outreach_at"] = pd.to_datetime(frame["ctx_last_outreach_at"])
    for name in names:
        if name not in categorical:
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
        else:
            frame[name] = frame[name].astype(object)
    return frame


def score_rows(state: ServingState, rows: list[FeatureRow], settings: Settings) -> list[dict]:
    """/score on caller-computed feature rows: the batch job's code path, row for row."""
    frame = feature_frame(state, rows)
    scored = score_frame(state.models, frame, state.snapshot.plans, settings)
    scored = attach_reasons(state.models, frame, scored, settings.reasons)
    return [
        {k: v if k == "reasons" else _plain(v) for k, v in r.items()}
        for r in scored.to_dict("records")
    ]


def rank_snapshot(state: ServingState, request: RankRequest, top: int) -> tuple[int, list[dict]]:
    """/rank: how many accounts match, and the first `limit` of them with their reasons."""
    ranked = state.ranking.positions(
        sort=request.sort,
        include_suppressed=request.include_suppressed,
        include_holdout=request.include_holdout,
        csm_owner=request.csm_owner,
        segment=request.segment,
        min_mrr=request.min_mrr,
    )
    head = ranked[: request.limit].tolist()
    records = account_records(state, head, top)
    for rank, (record, pos) in enumerate(zip(records, head, strict=True), start=1):
        record["rank"] = rank
        record["holdout"] = bool(state.columns["holdout"][pos])
    return len(ranked), records


def explain_account(state: ServingState, account_id: str, top: int) -> ExplainResponse:
    """/explain: every contribution of both models for one account of the snapshot."""
    pos = _positions(state, [account_id])[0]
    account = account_records(state, [pos], top)[0]
    inputs = {
        PROPENSITY_MODEL: (state.explainer, account["p_expand"]),
        POST_UPSELL_MODEL: (state.churn_explainer, account["p_post_upsell_churn"]),
    }
    parts = {}
    for name, (prepared, probability) in inputs.items():
        # Prepared once per snapshot; the margin is base + contributions (TreeSHAP is exact).
        records, base, margin = explain_one(prepared, pos)
        parts[name] = ModelExplanation(
            model=name,
            version=state.models.versions[name],
            margin=margin,
            base_value=base,
            probability=probability,
            contributions=records,
        )
    return ExplainResponse(
        account=account, propensity=parts[PROPENSITY_MODEL], post_upsell=parts[POST_UPSELL_MODEL]
    )


def _finite_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out


def describe(state: ServingState, interval: float) -> ServiceInfo:
    """/model_info: what is served, from the models' recorded contract and metadata."""
    models = []
    for name, model in (
        (PROPENSITY_MODEL, state.models.propensity),
        (POST_UPSELL_MODEL, state.models.post_upsell),
    ):
        info, meta = state.models.infos[name], model.contract.metadata
        models.append(
            ModelDescription(
                name=name,
                version=info.version,
                aliases=info.aliases,
                run_id=info.run_id,
                kind=model.contract.kind,
                calibration=model.contract.calibration,
                feature_set_version=model.contract.feature_set_version,
                features=model.contract.features,
                training_window=_window(meta.get("training_window")),
                validation_window=_window(meta.get("validation_window")),
                test_window=_window(meta.get("test_window")),
                data_fingerprint=meta.get("data_fingerprint"),
                git_commit=meta.get("git_commit"),
                notes=[str(n) for n in meta.get("notes", [])],
                metrics=_finite_metrics(meta.get("metrics", {})),
                model_source=state.models.model_source(name),
            )
        )
    snapshot = SnapshotDescription(
        as_of=state.snapshot.as_of, accounts=len(state.snapshot), loaded_at=state.loaded_at
    )
    return ServiceInfo(models=models, snapshot=snapshot, reload_seconds=interval)


def _window(value: Any) -> list[str] | None:
    return [str(v) for v in value] if isinstance(value, list | tuple) else None


# --- HTTP plumbing: consistent JSON errors and a documented API key -------------------------


class JsonRewrite:
    """ASGI middleware: rewrite the JSON body of the responses `select` picks."""

    def __init__(
        self,
        app: ASGIApp,
        select: Callable[[Scope, Message], bool],
        transform: Callable[[Scope, int, bytes], bytes],
    ) -> None:
        self.app, self.select, self.transform = app, select, transform

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and self.select(scope, message):
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = self.transform(scope, start["status"], b"".join(chunks))
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
            ]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)


def _is_json_error(scope: Scope, start: Message) -> bool:
    headers = dict(start.get("headers", []))
    return start["status"] >= 400 and headers.get(b"content-type", b"").startswith(
        b"application/json"
    )


# An error names at most this many fields, each part cut to a few words: a body with a million
# unknown keys (or one 3 MB key) must not come back as an 82 MB error, nor go to the log whole.
MAX_ERRORS = 20
MAX_PART_CHARS = 120  # a field's path, which may hold a key the client made up
MAX_MESSAGE_CHARS = 1200  # a message: ours name up to 20 fields
MAX_ERROR_CHARS = 4000


def _clip(text: str, limit: int = MAX_PART_CHARS) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more chars)"


def _field_errors(errors: list) -> str:
    """Pydantic errors as `loc: msg; ...`: the first MAX_ERRORS, then how many more."""
    shown = [
        _clip(".".join(str(p) for p in e.get("loc", ())) or "body")
        + ": "
        + _clip(str(e.get("msg", "")), MAX_MESSAGE_CHARS)
        for e in errors[:MAX_ERRORS]
        if isinstance(e, dict)
    ]
    more = len(errors) - MAX_ERRORS
    return "; ".join(shown) + (f"; and {more} more errors" if more > 0 else "")


def error_body(scope: Scope, status: int, body: bytes) -> bytes:
    """Every JSON error as `{"error": ..., "detail": ...}`, naming the fields at fault.

    BentoML answers its own 4xx errors as a one-element list and validation errors with a list
    of pydantic errors; the OpenAPI document promises an object with string fields. Long lists
    and long echoed input are cut (MAX_ERRORS, MAX_ERROR_CHARS).
    """
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]
    if not isinstance(data, dict):
        data = {"error": str(data)}
    detail = data.get("detail")
    if isinstance(detail, list):  # pydantic errors: name each field
        fields = _field_errors(detail)
        data = {"error": f"invalid request: {fields}", "detail": fields}
    elif detail is not None and not isinstance(detail, str):
        data["detail"] = json.dumps(detail)
    if status == HTTPStatus.SERVICE_UNAVAILABLE:
        data["error"] = "not ready: models or snapshot not loaded yet (see /readyz, server log)"
    data.setdefault("error", HTTPStatus(status).phrase)
    clipped = {
        k: None if data.get(k) is None else _clip(str(data[k]), MAX_ERROR_CHARS)
        for k in ("error", "detail")
    }
    error = ErrorBody.model_validate(clipped)
    return error.model_dump_json(exclude_none=True).encode()


class BodyLimit:
    """ASGI middleware: answer 413 to a request body over `max_request_bytes`, unparsed.

    A declared Content-Length over the limit is refused without reading a byte; any other body
    (chunked, or a Content-Length a client lied about) is read here, counted as it streams, and
    refused as soon as it passes the limit, then handed on whole. BentoML reads every body whole
    before parsing it, so buffering it here costs nothing more and bounds that read.
    """

    def __init__(self, app: ASGIApp, settings: Settings | None = None) -> None:
        self.app = app
        self.limit = (settings or get_settings()).max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send, f"Content-Length is {int(declared)} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: nothing to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send, f"more than {self.limit} bytes were sent")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the client to disconnect
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, detail: str) -> None:
        body = ErrorBody(
            error=f"request body too large: the limit is {self.limit} bytes", detail=detail
        ).model_dump_json()
        await send(
            {
                "type": "http.response.start",
                "status": HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The unread rest of the body would be taken for the next request.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


class RequireJson:
    """ASGI middleware: answer 415 to a POST whose body is not JSON.

    BentoML would try multipart or other decoders and fail with a 500 on a malformed one
    (schemathesis found it); this API only speaks JSON. No Content-Type means JSON.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            kind = dict(scope.get("headers") or []).get(b"content-type", b"application/json")
            if kind.split(b";")[0].strip().lower() != b"application/json":
                body = ErrorBody(
                    error="unsupported Content-Type: send application/json",
                    detail=kind.decode("latin-1")[:100],
                ).model_dump_json()
                await send(
                    {
                        "type": "http.response.start",
                        "status": HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)


def _is_openapi(scope: Scope, start: Message) -> bool:
    return scope.get("path") == "/docs.json" and start["status"] == 200


def document_api(spec: dict[str, Any]) -> dict[str, Any]:
    """BentoML's OpenAPI document, made to say exactly what the API accepts and answers.

    BentoML inlines each request and response schema and, doing so, keeps only the first
    member of every top-level union (`str | None` becomes `string`); the same schemas sit
    intact under components, so operations refer to those instead. A request body is required
    when its model has required fields, a non-JSON body is answered 415 (`RequireJson`) and
    one over the size limit 413 (`BodyLimit`).
    """
    schemas = spec.get("components", {}).get("schemas", {})
    info = spec.setdefault("info", {})
    info.update(title="expansion-scoring", description=API_DESCRIPTION)
    info.pop("contact", None)
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for item in spec.get("paths", {}).values():
        operation = item.get("post")
        if not isinstance(operation, dict) or "requestBody" not in operation:
            continue
        needs_body = False
        for body in (operation["requestBody"], operation["responses"].get("200", {})):
            for media in body.get("content", {}).values():
                title = media.get("schema", {}).get("title")
                if title in schemas:
                    media["schema"] = {"$ref": f"#/components/schemas/{title}"}
                    needs_body |= body is operation["requestBody"] and bool(
                        schemas[title].get("required") or schemas[title].get("oneOf")
                    )
        # No body is an empty object to BentoML: fine when every field has a default.
        operation["requestBody"]["required"] = needs_body
        operation["responses"].setdefault(
            "415", {"description": "Unsupported Media Type", "content": error}
        )
        operation["responses"].setdefault(
            "413", {"description": "Request body too large", "content": error}
        )
    return spec


def document_examples(spec: dict[str, Any], state: ServingState) -> dict[str, Any]:
    """The document's feature-row example: every feature of the served models.

    A row naming only some features is refused, and which features exist depends on the
    dataset, so the example is made here from the models the server serves.
    """
    row = spec.get("components", {}).get("schemas", {}).get("FeatureRow", {})
    features = row.get("properties", {}).get("features")
    if features is not None:
        categorical = {
            **state.models.propensity.contract.categorical,
            **state.models.post_upsell.contract.categorical,
        }
        features["examples"] = [feature_row_example(state.snapshot.feature_names, categorical)]
    return spec


# The OpenAPI rewrite runs in a middleware, outside the service instance; the instance of this
# worker process registers its state keeper here so that the document can describe its models.
_served: dict[str, StateKeeper] = {}


def openapi_body(scope: Scope, status: int, body: bytes) -> bytes:
    """The OpenAPI document: exact schemas, this API's description and its API-key scheme."""
    spec = document_api(json.loads(body))
    keeper = _served.get("keeper")
    if keeper is not None and keeper.state is not None:
        spec = document_examples(spec, keeper.state)
    if get_settings().auth_enabled:
        spec = document_auth(spec)
    return json.dumps(spec).encode()


class OneLineClientErrors(logging.Filter):
    """Log a request the client got wrong (4xx) as one line, not as a traceback.

    BentoML's API wrapper logs every exception it answers with `log_exception` ("Exception on
    <path> [<method>]", with the traceback) on the `bentoml._internal.server.http_app` logger:
    fuzzing wrote 551 MB of log in 11 minutes, and one pydantic error with a million entries
    is a 171 MB record. This turns each 4xx into `<method> <path> <status>: <reason>` at WARNING;
    server errors (5xx, anything unexpected) keep their traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = _client_error_status(exc)
        if status is None:
            return True
        args = record.args if isinstance(record.args, tuple) and len(record.args) == 2 else None
        path, method = args or ("?", "?")  # log_exception's ("Exception on %s [%s]", path, method)
        record.msg, record.args = "%s %s %d: %s", (method, _clip(str(path)), status, _reason(exc))
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _client_error_status(exc: BaseException | None) -> int | None:
    """The 4xx BentoML answers `exc` with, None for a server error (or no exception)."""
    if isinstance(exc, ValidationError):
        # The request body's model (BentoML wraps it as `<Model>IODescriptor`); a response
        # model failing to build is our bug, though BentoML answers it 400 too.
        return 400 if exc.title.endswith("IODescriptor") else None
    if isinstance(exc, BentoMLException) and 400 <= exc.error_code.value < 500:
        return int(exc.error_code.value)
    return None


def _reason(exc: BaseException | None) -> str:
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        return f"{len(errors)} validation error(s): {_field_errors(errors[:3])}"
    text = str(exc).strip().splitlines()
    return _clip(text[0] if text else type(exc).__name__, 300)


logging.getLogger("bentoml._internal.server.http_app").addFilter(OneLineClientErrors())


# --- the service -----------------------------------------------------------------------------

info_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@bentoml.service(traffic={"timeout": 60})
@bentoml.asgi_app(info_app, path="/")
class ExpansionService:
    """Upsell scores, call lists and explanations for B2B SaaS accounts."""

    def __init__(self) -> None:
        self.settings = get_settings()
        check_auth_config(self.settings)  # refuse to start: auth on and no key
        self.interval = self.settings.reload_seconds
        self.keeper = StateKeeper(self.settings, self.interval)
        _served["keeper"] = self.keeper
        self.keeper.start()

    def __is_ready__(self) -> bool:
        return self.keeper.state is not None

    @bentoml.on_shutdown
    def stop_reloading(self) -> None:
        self.keeper.stop()

    def _state(self) -> ServingState:
        state = self.keeper.state
        if state is None:
            raise ServiceUnavailable(f"not ready: {self.keeper.error}")
        return state

    @bentoml.api(route="/score")
    async def score(self, request: ScoreRequest, /) -> ScoreResponse:
        """Score accounts, by id from the served snapshot or from feature rows you send.

        One result per account, in request order, with the strongest reasons. An unknown id
        is answered 404 naming it; a malformed row 400 naming the field.
        """
        state = self._state()
        if request.account_ids is not None:
            accounts = score_ids(state, request.account_ids, self.settings.reasons)
        else:
            assert request.rows is not None
            accounts = await anyio.to_thread.run_sync(
                score_rows, state, request.rows, self.settings
            )
        return ScoreResponse(
            as_of=state.snapshot.as_of, model_versions=state.models.versions, accounts=accounts
        )

    @bentoml.api(route="/rank")
    async def rank(self, request: RankRequest, /) -> RankResponse:
        """The call list: accounts to pitch first, filtered, with reasons for those returned."""
        state = self._state()
        total, accounts = rank_snapshot(state, request, self.settings.reasons)
        return RankResponse(
            as_of=state.snapshot.as_of,
            model_versions=state.models.versions,
            total=total,
            accounts=accounts,
        )

    @bentoml.api(route="/explain")
    async def explain(self, request: ExplainRequest, /) -> ExplainResponse:
        """Every feature's contribution to both models' raw scores for one account."""
        # Async: a prepared row takes well under a millisecond, less than a thread hand-off.
        return explain_account(self._state(), request.account_id, self.settings.reasons)

    @info_app.get(
        "/model_info",
        response_model=ServiceInfo,
        responses={503: {"model": ErrorBody, "description": "Not loaded yet"}},
        tags=["Service APIs"],
        summary="Served models and snapshot",
        description="Versions, aliases, training and test windows and test metrics of the "
        "served models, and the as-of date of the served snapshot.",
    )
    def model_info(self) -> Any:
        state = self.keeper.state
        if state is None:
            return JSONResponse(
                ErrorBody(error="not ready", detail=self.keeper.error).model_dump(), 503
            )
        return describe(state, self.interval)


# Outermost first: the OpenAPI rewrite, error bodies, the key check, the body limit, then JSON
# only.
ExpansionService.add_asgi_middleware(JsonRewrite, select=_is_openapi, transform=openapi_body)
ExpansionService.add_asgi_middleware(JsonRewrite, select=_is_json_error, transform=error_body)
ExpansionService.add_asgi_middleware(ApiKeyMiddleware)
ExpansionService.add_asgi_middleware(BodyLimit)
ExpansionService.add_asgi_middleware(RequireJson)


# --- starting it ---------------------------------------------------------------------------


def server_env(settings: Settings, reload: float | None = None) -> dict[str, str]:
    """The environment for `bentoml serve`: these settings as EXPANSION_* variables."""
    env = dict(os.environ)
    for name in Settings.model_fields:
        value = getattr(settings, name)
        key = f"EXPANSION_{name.upper()}"
        if value is None:
            env.pop(key, None)
            if name == "tracking_uri":
                env.pop("MLFLOW_TRACKING_URI", None)
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[key] = str(value.resolve() if isinstance(value, Path) else value)
    if settings.tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    if reload is not None:
        env["EXPANSION_RELOAD_SECONDS"] = str(reload)
    env.setdefault("OMP_NUM_THREADS", "1")  # see the module docstring: one row, one thread
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    return env


def start_server(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 3000,
    reload: float | None = None,
    output: Any = None,
) -> subprocess.Popen:
    """Start `bentoml serve` for this service in a child process (its own process group)."""
    check_auth_config(settings)
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        SERVICE_TARGET,
        "--host",
        host,
        "--port",
        str(port),
        "--working-dir",
        str(PROJECT_ROOT),
    ]
    return subprocess.Popen(
        command,
        env=server_env(settings, reload),
        cwd=PROJECT_ROOT,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        start_new_session=True,
    )


def wait_until_ready(
    url: str, process: subprocess.Popen | None = None, timeout: float = 90.0
) -> None:
    """Poll `<url>/readyz` until it answers 200; fail early if the server process exits."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} was not ready after {timeout:.0f} s")


def stop_server(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop a server started by `start_server` and every process under it.

    SIGTERM to its group, SIGKILL if it lingers. BentoML's workers run in sessions of their
    own, out of reach of the group's signals, and the arbiter stops them on SIGTERM; a worker
    that outlives it (the arbiter killed) would keep the port, so whatever remains of the
    processes found under it is killed too.
    """
    import psutil

    if process.poll() is not None:
        return
    try:
        family = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for child in alive:
        child.kill()
    psutil.wait_procs(alive, timeout=timeout)


class _Stopped(Exception):
    """SIGTERM, SIGINT or SIGHUP arrived while serving in the foreground."""


def serve(host: str = "127.0.0.1", port: int = 3000, settings: Settings | None = None) -> int:
    """Run the API in the foreground until interrupted; returns the server's exit code.

    SIGINT (Ctrl-C), SIGTERM (`kill`, a service manager) and SIGHUP (the terminal closed) stop
    the server and its workers before returning 0: the server runs in its own session, so
    without this it would outlive us and keep the port.
    Raises `AuthConfigError` before starting when authentication is on and no key is set.
    Bind `host="0.0.0.0"` to accept connections from other machines (e.g. in a container).
    """
    settings = settings or get_settings()

    def stopped(signum: int, frame: Any) -> None:
        raise _Stopped(signal.Signals(signum).name)

    # Installed before the child starts: a signal in between must not orphan it. SIGINT too,
    # though Python raises KeyboardInterrupt for it: a shell starting `expansion serve &` from a
    # script ignores SIGINT for it, and `kill -INT` should stop it all the same.
    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, stopped) for sig in stops}
    process: subprocess.Popen | None = None
    try:
        process = start_server(settings, host=host, port=port)
        return process.wait()
    except (KeyboardInterrupt, _Stopped):
        return 0
    finally:
        # No second signal may cut the stop short (it ends with SIGKILL within 2 x 15 s).
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        try:
            if process is not None:
                stop_server(process)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
