"""The scoring API: the BentoML service class and its thin API methods.

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

Authentication (`serving.auth`): `Authorization: Bearer <key>` with a key from
`EXPANSION_API_KEYS`, on every endpoint but the health probes and the documentation;
`EXPANSION_AUTH_ENABLED=false` turns it off for local use.

The rooms around it: `serving.state` (what is served, loaded and hot-reloaded by
`StateKeeper`), `serving.endpoints` (the work behind each endpoint, pure functions of a
state), `serving.middleware` (request hygiene, error bodies, the OpenAPI document) and
`serving.process` (`expansion serve`: starting and stopping the server). BentoML imports this
module in the server process by `serving.process.SERVICE_TARGET`.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import bentoml
from bentoml.exceptions import ServiceUnavailable
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from serving.api_models import (
    ErrorBody,
    ExplainRequest,
    ExplainResponse,
    RankRequest,
    RankResponse,
    ScoreRequest,
    ScoreResponse,
    ServiceInfo,
)
from serving.auth import ApiKeyMiddleware, check_auth_config
from serving.endpoints import describe, explain_account, rank_snapshot, score_ids, score_rows
from serving.middleware import (
    BodyLimit,
    JsonRewrite,
    RequireJson,
    _is_json_error,
    _is_openapi,
    _served,
    error_body,
    openapi_body,
)
from serving.settings import get_settings
from serving.state import ServingState, StateKeeper

__all__ = ["ExpansionService", "info_app"]


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
