"""The service's HTTP plumbing without a server: API keys, error bodies, the OpenAPI document."""

from __future__ import annotations

import asyncio
import json

import pytest

from serving.auth import ApiKeyMiddleware, AuthConfigError, check_auth_config, document_auth
from serving.service import error_body, start_server
from serving.settings import Settings


async def _ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _call(settings: Settings, method: str, path: str, header: str | None = None):
    """One request through the middleware: (status, headers, body)."""
    app = ApiKeyMiddleware(_ok, settings=settings)
    headers = [(b"authorization", header.encode())] if header is not None else []
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def test_auth_on_without_keys_refuses_to_start(tmp_path):
    settings = Settings(models_dir=tmp_path, api_keys=" , ", auth_enabled=True)
    with pytest.raises(AuthConfigError, match="EXPANSION_API_KEYS"):
        check_auth_config(settings)
    assert _call(settings, "POST", "/score", "Bearer ")[0] == 401  # and no key opens it
    with pytest.raises(AuthConfigError):  # before any process is started
        start_server(settings, port=1)
    check_auth_config(Settings(models_dir=tmp_path, auth_enabled=False))


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("Bearer wrong", 401),
        ("Bearer key-one-extra", 401),
        ("Basic key-one", 401),
        ("Bearer", 401),
        ("Bearer key-one", 200),
        ("bearer  key-two ", 200),
    ],
)
def test_api_key_is_required(tmp_path, header, status):
    settings = Settings(models_dir=tmp_path, api_keys="key-one, key-two")
    code, headers, body = _call(settings, "POST", "/score", header)
    assert code == status
    if status == 401:
        assert json.loads(body)["error"] == "missing or invalid API key"
        assert headers[b"www-authenticate"].startswith(b"Bearer")
        assert b"key-one" not in body


def test_health_is_public_and_auth_can_be_switched_off(tmp_path):
    settings = Settings(models_dir=tmp_path, api_keys="key-one")
    public = ("/livez", "/readyz", "/docs.json", "/schema.json", "/", "/static_content/a.css")
    for path in public:
        assert _call(settings, "GET", path)[0] == 200
    for path in ("/score", "/model_info", "/metrics", "/livez/", "/docs.json/x"):
        assert _call(settings, "GET", path)[0] == 401
    assert _call(settings, "OPTIONS", "/score")[0] == 200  # CORS preflight
    assert _call(Settings(models_dir=tmp_path, auth_enabled=False), "POST", "/score")[0] == 200


def test_error_bodies_are_objects_naming_the_field():
    bentoml_4xx = json.dumps([{"error": "unknown account_id(s): ['x']"}]).encode()
    assert json.loads(error_body({}, 404, bentoml_4xx)) == {"error": "unknown account_id(s): ['x']"}
    pydantic = json.dumps(
        {
            "error": "1 validation error for RankRequestIODescriptor",
            "detail": [{"loc": ["limit"], "msg": "Input should be a valid integer"}],
        }
    ).encode()
    out = json.loads(error_body({}, 400, pydantic))
    assert out["error"] == "invalid request: limit: Input should be a valid integer"
    assert isinstance(out["detail"], str)
    assert json.loads(error_body({}, 503, b'{"error": "unexpected"}'))["error"].startswith(
        "not ready"
    )
    assert error_body({}, 400, b"not json") == b"not json"


def test_openapi_document_declares_the_key():
    spec = {
        "paths": {
            "/score": {"post": {"responses": {"200": {}}}},
            "/livez": {"get": {"responses": {"200": {}}}},
        }
    }
    out = document_auth(spec)
    assert out["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert out["paths"]["/score"]["post"]["security"] == [{"apiKey": []}]
    assert "401" in out["paths"]["/score"]["post"]["responses"]
    assert out["paths"]["/livez"]["get"]["security"] == []
    assert "security" not in spec["paths"]["/score"]["post"]  # the input is left alone


def test_reload_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv("EXPANSION_RELOAD_SECONDS", raising=False)
    assert Settings().reload_seconds == 30.0
    monkeypatch.setenv("EXPANSION_RELOAD_SECONDS", "2.5")
    assert Settings().reload_seconds == 2.5
    monkeypatch.setenv("EXPANSION_RELOAD_SECONDS", "soon")
    with pytest.raises(ValueError, match="reload_seconds"):
        Settings()


def test_api_keys_never_print(monkeypatch):
    settings = Settings(api_keys="very-secret-key")
    assert "very-secret-key" not in repr(settings) and "very-secret-key" not in str(settings)
    assert settings.api_key_list == ["very-secret-key"]
