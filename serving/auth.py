"""API-key authentication for the scoring service: an ASGI middleware BentoML mounts.

Keys come only from the environment: `EXPANSION_API_KEYS` (comma-separated; several keys let
you rotate one without downtime). Clients send `Authorization: Bearer <key>` (BentoML's
clients do so when given `token=`). Every endpoint needs a key except the health probes
(`/livez`, `/healthz`, `/readyz`) and the API description (`/`, `/docs.json` and its static
assets, and `/schema.json`, which BentoML's clients read first), which carry no data. A
missing or wrong key is answered 401.

Keys are compared in constant time (`hmac.compare_digest` on SHA-256 digests, so neither the
content nor the length of a key leaks through timing), every key is tried, and neither keys nor
the header are ever logged. `EXPANSION_AUTH_ENABLED=false` turns authentication off for local
use. With authentication on and no key configured the service refuses to start
(`AuthConfigError`) rather than answer 401 to everyone or, worse, to no one; so it does when a
key is shorter than `MIN_KEY_LENGTH` (16) characters, which could be guessed.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from serving.settings import Settings, get_settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = frozenset({"/", "/livez", "/healthz", "/readyz", "/docs.json", "/schema.json"})
PUBLIC_PREFIXES = ("/static_content/",)
SCHEME = "apiKey"  # name of the security scheme in the OpenAPI document
MIN_KEY_LENGTH = 16  # characters: a short key is a password someone can guess


class AuthConfigError(RuntimeError):
    """Authentication is required but no usable API key is configured."""


def check_auth_config(settings: Settings) -> None:
    """Refuse a configuration that would lock everyone out (auth on, no keys) or let anyone
    in (a key short enough to guess). The message names a short key by its position only."""
    if not settings.auth_enabled:
        return
    keys = settings.api_key_list
    if not keys:
        raise AuthConfigError(
            "authentication is on (EXPANSION_AUTH_ENABLED, default true) but EXPANSION_API_KEYS "
            "is empty: set one or more comma-separated API keys, or set "
            "EXPANSION_AUTH_ENABLED=false for local use only"
        )
    short = [i for i, key in enumerate(keys, start=1) if len(key) < MIN_KEY_LENGTH]
    if short:
        which = ", ".join(f"#{i}" for i in short)
        verb = "key {} of {} is" if len(short) == 1 else "keys {} of {} are"
        # Short enough for one line of a piped terminal; the key itself is never shown.
        raise AuthConfigError(
            f"EXPANSION_API_KEYS: {verb.format(which, len(keys))} under {MIN_KEY_LENGTH} characters"
        )


def is_public(path: str) -> bool:
    """Health probes and the API documentation need no key."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class ApiKeyMiddleware:
    """Answer 401 unless a request to a protected path carries a configured API key."""

    def __init__(self, app: ASGIApp, settings: Settings | None = None) -> None:
        # No check_auth_config here: Starlette builds middleware inside the ASGI lifespan
        # call, and uvicorn takes an error there for "lifespan unsupported" and serves on.
        # The service refuses to start instead; with no key this answers 401 to everything.
        settings = settings or get_settings()
        self.app = app
        self.enabled = settings.auth_enabled
        self._digests = [_digest(k.encode()) for k in settings.api_key_list]

    def authorized(self, header: bytes | None) -> bool:
        """True when the Authorization header is `Bearer <one of the keys>`."""
        if not header:
            return False
        scheme, _, token = header.strip().partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return False
        digest = _digest(token)
        found = False
        for known in self._digests:  # no early exit: the time does not say which key matched
            found |= hmac.compare_digest(digest, known)
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.enabled
            or scope.get("method") == "OPTIONS"  # CORS preflights carry no credentials
            or is_public(scope.get("path", ""))
        ):
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization")
        if self.authorized(header):
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {
                "error": "missing or invalid API key",
                "detail": "send the header `Authorization: Bearer <key>`",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="expansion-scoring"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def document_auth(spec: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with the bearer scheme and a 401 answer on protected operations.

    Swagger UI then shows an "Authorize" button, and API clients (and schemathesis) know which
    operations need a key.
    """
    spec = copy.deepcopy(spec)
    components = spec.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from EXPANSION_API_KEYS.",
    }
    components.setdefault("schemas", {})["Unauthorized"] = {
        "type": "object",
        "title": "Unauthorized",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
    }
    unauthorized = {
        "description": "Missing or invalid API key",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Unauthorized"}}},
    }
    for path, item in spec.get("paths", {}).items():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            if is_public(path):
                operation["security"] = []
            else:
                operation["security"] = [{SCHEME: []}]
                operation["responses"].setdefault("401", unauthorized)
    return spec
