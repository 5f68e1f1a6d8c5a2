"""The scoring API: a thin BentoML service over the scoring core (`serving.scoring`).

Endpoints (request and response bodies in `serving.api_models`; OpenAPI at `/docs.json`,
Swagger UI at `/`):

- `POST /score`: accounts by id (from the served snapshot) or feature rows computed elsewhere;
  one result per account, in request order, with its top reasons.
- `POST /rank`: the call list: filters (`csm_owner`, `segment`, `min_mrr`,
  `include_suppressed`), `sort` (`net_value` or `propensity`) and `limit`; only the returned
  accounts are explained.
- `POST /explain`: one account, every contribution of both models with their base values
  (base + contributions = the raw score).
- `GET /model_info`: served model versions, aliases, training and test windows, test metrics,
  and the snapshot's as-of date.
- `GET /livez`, `/readyz`: health; ready once the models and the snapshot are loaded.

Start it with `expansion serve [--host H] [--port N]`, i.e. `serve()` below, which runs
`bentoml serve serving.service:ExpansionService` with the settings passed as `EXPANSION_*`
environment variables. Authentication (`serving.auth`): `Authorization: Bearer <key>` with a
key from `EXPANSION_API_KEYS`, on every endpoint but the health probes and the documentation;
`EXPANSION_AUTH_ENABLED=false` turns it off for local use; with it on and no key the service
refuses to start.

Hot reload, without a restart: a background thread checks every `EXPANSION_RELOAD_SECONDS`
(default 30) whether `models/snapshot/features.parquet` was replaced (`expansion snapshot`
writes it atomically) or the `champion` alias of either model points at another version
(`expansion promote`). It then loads the new snapshot and/or models, checks the feature
contract, scores every account, and swaps the new state in whole: a request sees the old state
or the new one, never a mix. If loading fails (say, a champion whose features differ) the
service keeps serving what it had and logs why. Before the first successful load `/readyz`
answers 503 and the thread retries (so the service may start before the first training).

Speed: the snapshot is scored once per load (no explanations); a request looks its accounts
up, explains only the rows it returns (TreeSHAP on a numpy slice prepared at load, see
`prepare_explainer`) and runs LightGBM on one thread (`OMP_NUM_THREADS=1`, set by `serve`):
OpenMP costs more than one row takes, and 100x more on a busy machine.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

import anyio.to_thread
import bentoml
import numpy as np
import pandas as pd
from bentoml.exceptions import InvalidArgument, NotFound, ServiceUnavailable
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import SecretStr

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
from serving.registry import check_feature_contract, model_source
from serving.scoring import (
    RESULT_COLUMNS,
    ExplainerInputs,
    Models,
    attach_reasons,
    explain,
    explain_at,
    next_steps,
    prepare_explainer,
    prospective_inputs,
    rank_accounts,
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
# What rank_accounts reads: ranking a slim frame copies and sorts far less than the full one.
RANKING_COLUMNS = [
    "account_id",
    "suppressed",
    "csm_owner",
    "segment",
    "mrr",
    "expected_net_value",
    "p_expand",
]
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
    ranking: pd.DataFrame  # the columns rank_accounts reads, plus `position`
    explainer: ExplainerInputs  # propensity inputs, converted once

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
        ids = scored["account_id"].to_numpy(dtype=object)
        ranking = scored[RANKING_COLUMNS].assign(
            # The same order, 3-4x faster on 50k rows: ids as their rank in id order (numbers
            # sort faster than strings) and the filtered text columns as categories.
            account_id=np.argsort(np.argsort(ids)),
            csm_owner=scored["csm_owner"].astype("category"),
            segment=scored["segment"].astype("category"),
            position=np.arange(len(scored)),
        )
        return cls(
            models=models,
            snapshot=snapshot,
            stamp=stamp,
            loaded_at=datetime.now(UTC),
            columns={c: scored[c].to_numpy() for c in RESULT_COLUMNS},
            positions={a: i for i, a in enumerate(scored["account_id"])},
            ranking=ranking,
            explainer=prepare_explainer(models.propensity, snapshot.features),
        )


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
    reasons, base = explain_at(state.explainer, positions, top=top)
    out = []
    for k, pos in enumerate(positions):
        record = {c: _plain(state.columns[c][pos]) for c in RESULT_COLUMNS}
        why = reasons[k] if record["p_expand"] is not None else []  # canceled: no score
        record.update(reasons=why, reasons_text=reasons_line(why), base_value=float(base[k]))
        out.append(record)
    return out


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
            raise InvalidArgument(f"{where}.features: unknown feature(s) {unknown}")
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
    ranked = rank_accounts(
        state.ranking,
        sort=request.sort,
        include_suppressed=request.include_suppressed,
        csm_owner=request.csm_owner,
        segment=request.segment,
        min_mrr=request.min_mrr,
    )
    head = ranked.head(request.limit)
    records = account_records(state, head["position"].tolist(), top)
    for record, rank in zip(records, head["rank"].tolist(), strict=True):
        record["rank"] = int(rank)
    return len(ranked), records


def explain_account(state: ServingState, account_id: str, top: int) -> ExplainResponse:
    """/explain: every contribution of both models for one account of the snapshot."""
    pos = _positions(state, [account_id])[0]
    account = account_records(state, [pos], top)[0]
    row = state.snapshot.features.iloc[[pos]]
    inputs = {
        PROPENSITY_MODEL: (state.models.propensity, row, account["p_expand"]),
        POST_UPSELL_MODEL: (
            state.models.post_upsell,
            prospective_inputs(
                row,
                next_steps(row, state.snapshot.plans),
                state.models.post_upsell.contract.metadata,
            ),
            account["p_post_upsell_churn"],
        ),
    }
    parts = {}
    for name, (model, frame, probability) in inputs.items():
        records, base = explain(model, frame, top=None)
        parts[name] = ModelExplanation(
            model=name,
            version=state.models.versions[name],
            margin=float(model.margin(frame)[0]),
            base_value=float(base[0]),
            probability=probability,
            contributions=records[0],
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


def error_body(scope: Scope, status: int, body: bytes) -> bytes:
    """Every JSON error as `{"error": ..., "detail": ...}`, naming the fields at fault.

    BentoML answers its own 4xx errors as a one-element list and validation errors with a list
    of pydantic errors; the OpenAPI document promises an object with string fields.
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
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: {e.get('msg', '')}"
            for e in detail
            if isinstance(e, dict)
        )
        data = {"error": f"invalid request: {fields}", "detail": fields}
    elif detail is not None and not isinstance(detail, str):
        data["detail"] = json.dumps(detail)
    if status == HTTPStatus.SERVICE_UNAVAILABLE:
        data["error"] = "not ready: models or snapshot not loaded yet (see /readyz, server log)"
    data.setdefault("error", HTTPStatus(status).phrase)
    error = ErrorBody.model_validate({k: data.get(k) for k in ("error", "detail")})
    return error.model_dump_json(exclude_none=True).encode()


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
    when its model has required fields, and a non-JSON body is answered 415 (`RequireJson`).
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
    return spec


def openapi_body(scope: Scope, status: int, body: bytes) -> bytes:
    """The OpenAPI document: exact schemas, this API's description and its API-key scheme."""
    spec = document_api(json.loads(body))
    if get_settings().auth_enabled:
        spec = document_auth(spec)
    return json.dumps(spec).encode()


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
    def explain(self, request: ExplainRequest, /) -> ExplainResponse:
        """Every feature's contribution to both models' raw scores for one account."""
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


# Outermost first: the OpenAPI rewrite, error bodies, the key check, then JSON only.
ExpansionService.add_asgi_middleware(JsonRewrite, select=_is_openapi, transform=openapi_body)
ExpansionService.add_asgi_middleware(JsonRewrite, select=_is_json_error, transform=error_body)
ExpansionService.add_asgi_middleware(ApiKeyMiddleware)
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
    """Stop a server started by `start_server`: SIGTERM to its group, SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


def serve(host: str = "127.0.0.1", port: int = 3000, settings: Settings | None = None) -> int:
    """Run the API in the foreground until interrupted; returns the server's exit code.

    Raises `AuthConfigError` before starting when authentication is on and no key is set.
    Bind `host="0.0.0.0"` to accept connections from other machines (e.g. in a container).
    """
    settings = settings or get_settings()
    process = start_server(settings, host=host, port=port)
    try:
        return process.wait()
    except KeyboardInterrupt:
        stop_server(process)
        return 0
