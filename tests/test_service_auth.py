"""The service's HTTP plumbing without a server: API keys, error bodies, the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving.auth import (
    MIN_KEY_LENGTH,
    ApiKeyMiddleware,
    AuthConfigError,
    check_auth_config,
    document_auth,
)
from serving.middleware import error_body
from serving.process import PROJECT_ROOT, start_server
from serving.settings import Settings

# Keys as long as the service requires (MIN_KEY_LENGTH); the middleware itself takes any.
KEY_ONE, KEY_TWO = "key-one-0123456789", "key-two-0123456789"


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


def test_short_api_keys_are_refused_at_start(tmp_path):
    short, enough = "s" * (MIN_KEY_LENGTH - 1), "e" * MIN_KEY_LENGTH
    settings = Settings(models_dir=tmp_path, api_keys=f"{enough},{short}")
    with pytest.raises(AuthConfigError, match=r"key #2 of 2 is under 16 characters") as refused:
        check_auth_config(settings)
    assert short not in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(AuthConfigError):  # before any process is started
        start_server(settings, port=1)
    check_auth_config(Settings(models_dir=tmp_path, api_keys=enough))
    check_auth_config(Settings(models_dir=tmp_path, api_keys=short, auth_enabled=False))


def test_expansion_serve_with_a_short_key_says_so_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPANSION_")}
    env.update(EXPANSION_API_KEYS="too-short", PYTHONPATH=str(PROJECT_ROOT))
    result = subprocess.run(
        # An address no server can bind: should the check let it through, nothing keeps running.
        [str(Path(sys.executable).parent / "expansion"), "serve", "--host", "256.0.0.1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "EXPANSION_API_KEYS: key #1 of 1 is under 16 characters" in lines[0]
    assert "too-short" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("Bearer wrong", 401),
        (f"Bearer {KEY_ONE}-extra", 401),
        (f"Basic {KEY_ONE}", 401),
        ("Bearer", 401),
        (f"Bearer {KEY_ONE}", 200),
        (f"bearer  {KEY_TWO} ", 200),
    ],
)
def test_api_key_is_required(tmp_path, header, status):
    settings = Settings(models_dir=tmp_path, api_keys=f"{KEY_ONE}, {KEY_TWO}")
    code, headers, body = _call(settings, "POST", "/score", header)
    assert code == status
    if status == 401:
        assert json.loads(body)["error"] == "missing or invalid API key"
        assert headers[b"www-authenticate"].startswith(b"Bearer")
        assert KEY_ONE.encode() not in body


def test_health_is_public_and_auth_can_be_switched_off(tmp_path):
    settings = Settings(models_dir=tmp_path, api_keys=KEY_ONE)
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
    settings = Settings(api_keys="very-secret-key-0123")
    assert "very-secret-key" not in repr(settings) and "very-secret-key" not in str(settings)
    assert settings.api_key_list == ["very-secret-key-0123"]
