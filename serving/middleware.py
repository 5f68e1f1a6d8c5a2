"""HTTP plumbing around the API: ASGI middleware and the OpenAPI document.

Hygiene against careless or hostile clients: a body over `EXPANSION_MAX_REQUEST_BYTES`
(default 4 MiB) is answered 413 before it is parsed (`BodyLimit`); a POST whose body is not
JSON 415 (`RequireJson`); every JSON error becomes `{"error", "detail"}` naming at most 20
errors, with echoed input cut (`error_body`); a 4xx is one log line, a 5xx keeps its traceback
(`OneLineClientErrors`, installed on BentoML's logger when this module is imported).

The OpenAPI document at `/docs.json` is rewritten (`openapi_body`) to say exactly what the API
accepts and answers, with a feature-row example from the served models and, when
authentication is on, the API-key scheme (`serving.auth`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError

from serving.api_models import ErrorBody, feature_row_example
from serving.auth import ASGIApp, Message, Receive, Scope, Send, document_auth
from serving.settings import Settings, get_settings
from serving.state import ServingState, StateKeeper

API_DESCRIPTION = (
    "Ranks B2B SaaS accounts for upsell: which to pitch now, why, and whether the upsell will "
    "stick. Probabilities are calibrated; reasons are TreeSHAP contributions to the raw score "
    "(log-odds). Send `Authorization: Bearer <API key>` (button *Authorize*) unless the "
    "server runs with EXPANSION_AUTH_ENABLED=false."
)


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
        error = f"request body too large: the limit is {self.limit} bytes"
        # The unread rest of the body would be taken for the next request: close.
        await send_error(send, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, error, detail, close=True)


async def send_error(
    send: Send, status: HTTPStatus, error: str, detail: str, *, close: bool = False
) -> None:
    """Answer with an `ErrorBody` as JSON (`close`: and close the connection)."""
    body = ErrorBody(error=error, detail=detail).model_dump_json().encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
                error = "unsupported Content-Type: send application/json"
                detail = kind.decode("latin-1")[:100]
                await send_error(send, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, error, detail)
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
