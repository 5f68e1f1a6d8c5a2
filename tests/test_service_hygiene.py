"""Service hygiene on a real BentoML server: what a hostile or careless client cannot do to it.

A body over the size limit is refused 413 before it is parsed; error bodies stay small whatever
the request; a 4xx is one log line, not a traceback; the documented examples are valid and
accepted; and `expansion serve` stopped by SIGTERM or SIGINT takes its BentoML server with it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pandas as pd
import psutil
import pytest
from referencing import Registry, Resource

from serving.process import PROJECT_ROOT, start_server, stop_server, wait_until_ready
from serving.settings import Settings
from serving.snapshot import Snapshot, read_snapshot

pytestmark = pytest.mark.integration

KEY = "hygiene-key-0123456789"
SMALL = 2_000  # bytes: an error body is a few lines, whatever the request


@dataclass
class Server:
    url: str
    settings: Settings
    log: Path
    snapshot: Snapshot

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {KEY}", **kwargs.pop("headers", {})}
        return httpx.post(f"{self.url}{path}", headers=headers, timeout=60, **kwargs)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _models_copy(trained, root: Path) -> Path:
    models_dir = root / "models"
    shutil.copytree(trained.settings.models_dir, models_dir)
    return models_dir


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hygiene")
    models_dir = _models_copy(trained, root)
    settings = Settings(models_dir=models_dir, tracking_uri=None, api_keys=KEY)
    port = _free_port()
    log = root / "server.log"
    with log.open("w") as out:
        process = start_server(settings, port=port, output=out)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, timeout=240)
        yield Server(url, settings, log, read_snapshot(models_dir / "snapshot"))
    except Exception:
        print(log.read_text()[-5000:])
        raise
    finally:
        stop_server(process)


def _rows(snapshot: Snapshot, n: int) -> list[dict]:
    """`n` accounts of the snapshot as /score feature rows."""
    frame = snapshot.features.iloc[:n]
    return [
        {
            "account_id": account_id,
            "features": {
                name: None if pd.isna(row[name]) else row[name] for name in snapshot.feature_names
            },
        }
        for account_id, row in frame.iterrows()
    ]


# --- the body limit ---------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_before_it_is_parsed(server):
    limit = server.settings.max_request_bytes
    assert limit == 4 * 1024 * 1024  # the documented default
    over = b" " * (limit + 1)  # whitespace: parsed, it would be a 400 for invalid JSON
    response = server.post("/score", content=over, headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    assert f"the limit is {limit} bytes" in response.json()["error"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(5):
            yield b" " * (1024 * 1024)

    response = server.post("/score", content=chunked())
    assert response.status_code == 413, response.text
    # Under the limit, a chunked body is handed on whole.
    ids = list(server.snapshot.features.index[:2])
    response = server.post(
        "/score", content=iter([b'{"account_ids": ', json.dumps(ids).encode(), b"}"])
    )
    assert response.status_code == 200, response.text
    assert [a["account_id"] for a in response.json()["accounts"]] == ids


def test_the_largest_request_fits_under_the_default_limit(server):
    from serving.api_models import MAX_ACCOUNTS

    rows = _rows(server.snapshot, min(MAX_ACCOUNTS, len(server.snapshot)))
    body = json.dumps({"rows": rows}, default=float).encode()
    # As many rows as a request may hold, with long ids: still well under the limit.
    assert len(body) * MAX_ACCOUNTS / len(rows) * 1.5 < server.settings.max_request_bytes
    response = server.post("/score", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["accounts"]) == len(rows)


# --- error bodies -----------------------------------------------------------------------------


def test_error_bodies_stay_small(server):
    flood = {"account_ids": ["a"], **{f"k{i}": 0 for i in range(100_000)}}
    response = server.post("/score", json=flood)
    assert response.status_code == 400
    assert len(response.content) < SMALL, len(response.content)
    assert "100000 unknown field(s)" in response.json()["error"]  # one error, not 100,000
    assert "and 99980 more" in response.json()["error"]

    response = server.post("/score", json={"account_ids": ["a"], "x" * 3_000_000: 1})
    assert response.status_code == 400
    assert len(response.content) < SMALL, len(response.content)
    assert "1 unknown field(s) ['xxxx" in response.json()["error"]

    rows = [{"account_id": 7, "features": {}} for _ in range(30)]  # 30 errors
    response = server.post("/score", json={"rows": rows})
    assert response.status_code == 400
    assert len(response.content) < SMALL * 2, len(response.content)
    assert "and 10 more errors" in response.json()["error"]

    features = {f"made_up_{i}": 1.0 for i in range(50)}
    response = server.post("/score", json={"rows": [{"account_id": "a", "features": features}]})
    assert response.status_code == 400
    assert "and 40 more" in response.json()["error"]
    assert len(response.content) < SMALL, len(response.content)


# --- logging ----------------------------------------------------------------------------------


def _wait_for(check, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"not seen within {timeout:.0f} s")


def test_client_errors_are_one_log_line_each(server):
    cases = [
        ("/rank", {"limit": "ten"}, 400, "limit"),  # pydantic
        ("/score", {"rows": [{"account_id": "a", "features": {"nope": 1}}]}, 400, "nope"),
        ("/score", {"account_ids": ["acct_missing_for_log"]}, 404, "acct_missing_for_log"),
        ("/explain", {"account_id": "acct_gone_for_log"}, 404, "acct_gone_for_log"),
    ]
    for path, body, status, _ in cases:
        assert server.post(path, json=body).status_code == status
    server.post("/score", json={"account_ids": ["a"], **{f"k{i}": 0 for i in range(50_000)}})

    def logged() -> list[str] | None:
        lines = server.log_text().splitlines()
        found = [
            next((ln for ln in lines if f"POST {path} {status}: " in ln and word in ln), None)
            for path, _, status, word in cases
        ]
        return found if all(found) else None

    for line in _wait_for(logged):
        assert len(line) < 1000, line
    text = server.log_text()
    assert "Traceback" not in text
    assert "Exception on" not in text
    assert len(text) < 200_000, len(text)  # no error list of 50,000 entries in the log


# --- the documented examples ------------------------------------------------------------------


def _examples(node: Any, where: str = "") -> Iterator[tuple[str, dict, Any]]:
    """Every (place, schema, example) of an OpenAPI document's schemas, at any depth."""
    if isinstance(node, dict):
        if "type" in node or "properties" in node or "anyOf" in node or "$ref" in node:
            if "example" in node:
                yield where, node, node["example"]
            for example in (
                node.get("examples", []) if isinstance(node.get("examples"), list) else []
            ):
                yield where, node, example
        for key, value in node.items():
            if key not in ("example", "examples"):
                yield from _examples(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _examples(value, f"{where}/{i}")


def test_every_documented_example_is_valid_and_accepted(server, tmp_path):
    spec = httpx.get(f"{server.url}/docs.json", timeout=30).json()
    registry = Registry().with_resource("", Resource.opaque(spec))
    found = list(_examples(spec.get("components", {}), "#/components"))
    assert len(found) > 10
    for where, schema, example in found:
        subschema = {k: v for k, v in schema.items() if k not in ("example", "examples")}
        validator = jsonschema.Draft202012Validator(subschema, registry=registry)
        errors = [e.message for e in validator.iter_errors(example)]
        assert not errors, (where, example, errors)

    # The request examples are accepted, not only well formed: a feature row names every
    # feature the served models need (the old example named four of them and got a 400).
    schemas = spec["components"]["schemas"]
    features = schemas["FeatureRow"]["properties"]["features"]["examples"][0]
    assert sorted(features) == sorted(server.snapshot.feature_names)
    row = {"account_id": "acct_example", "features": features}
    response = server.post("/score", json={"rows": [row]})
    assert response.status_code == 200, response.text
    for path in ("/score", "/rank", "/explain"):
        ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        example = schemas[ref["$ref"].rsplit("/", 1)[1]]["example"]
        status = server.post(path, json=example).status_code
        assert status in (200, 404), (path, example, status)  # 404: an id not in this dataset

    # What schemathesis flagged: its examples phase, every check on.
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/docs.json"]
    command += ["--header", f"Authorization: Bearer {KEY}", "--phases", "examples"]
    command += ["--checks", "all", "--generation-database", "none", "--workers", "1"]
    command += ["--no-color", "--request-timeout", "30"]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


# --- `expansion serve` and signals ------------------------------------------------------------


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_expansion_serve_stops_its_server_on_a_signal(trained, tmp_path, stop_with):
    models_dir = _models_copy(trained, tmp_path)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPANSION_", "MLFLOW_"))}
    env.update(
        EXPANSION_MODELS_DIR=str(models_dir),
        EXPANSION_API_KEYS=KEY,
        PYTHONPATH=str(PROJECT_ROOT),  # this checkout's code, in every process below
        BENTOML_DO_NOT_TRACK="true",
    )
    expansion = Path(sys.executable).parent / "expansion"
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(expansion), "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            # As a shell starts `expansion serve &` from a script: SIGINT ignored on arrival.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    family: list[psutil.Process] = []
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", process, timeout=240)
        family = psutil.Process(process.pid).children(recursive=True)
        assert family, "the BentoML server runs in child processes"
        process.send_signal(stop_with)
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
        _, alive = psutil.wait_procs(family, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
        assert _port_is_free(port)
    finally:  # whatever happened, leave nothing running
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        for child in family:
            if child.is_running():
                child.kill()
        psutil.wait_procs(family, timeout=30)


# --- the same rules without a server ----------------------------------------------------------


def test_every_model_example_is_valid_against_its_schema():
    """Examples written in serving/api_models.py, checked where they are written."""
    import pydantic

    from serving import api_models

    models = [
        m
        for m in vars(api_models).values()
        if isinstance(m, type)
        and issubclass(m, pydantic.BaseModel)
        and m.__module__ == api_models.__name__
    ]
    checked = 0
    for model in models:
        schema = model.model_json_schema()
        registry = Registry().with_resource("", Resource.opaque(schema))
        for where, subschema, example in _examples(schema, model.__name__):
            bare = {k: v for k, v in subschema.items() if k not in ("example", "examples")}
            validator = jsonschema.Draft202012Validator(bare, registry=registry)
            assert not list(validator.iter_errors(example)), (where, example)
            checked += 1
        if "example" in schema:  # a model-level example is also a valid instance of the model
            model.model_validate(schema["example"])
    assert checked > 10


def test_a_feature_row_example_names_every_feature_with_its_type():
    from serving.api_models import FeatureRow, feature_row_example

    example = feature_row_example(
        ["mrr", "segment", "plan"], {"segment": ["smb", "ent"], "plan": []}
    )
    assert example == {"mrr": 0, "segment": "smb", "plan": None}
    FeatureRow.model_validate({"account_id": "a", "features": example})


def _record(exc: BaseException) -> Any:
    import logging

    try:
        raise exc
    except BaseException:
        return logging.LogRecord(
            "bentoml._internal.server.http_app",
            logging.ERROR,
            __file__,
            1,
            "Exception on %s [%s]",
            ("/score", "POST"),
            sys.exc_info(),
        )


def test_the_log_filter_keeps_tracebacks_for_server_errors():
    import logging

    import pydantic
    from bentoml.exceptions import InternalServerError, NotFound

    from serving.api_models import ScoreRequest
    from serving.middleware import OneLineClientErrors

    class ScoreRequestIODescriptor(ScoreRequest):  # what BentoML validates a body with
        pass

    with pytest.raises(pydantic.ValidationError) as bad_body:
        ScoreRequestIODescriptor.model_validate({"account_ids": 3})
    keep = OneLineClientErrors()
    for exc, line in (
        (bad_body.value, "POST /score 400: 1 validation error(s): account_ids: "),
        (NotFound("unknown account_id(s): ['x']"), "POST /score 404: unknown account_id(s)"),
    ):
        record = _record(exc)
        assert keep.filter(record)
        assert record.exc_info is None and record.levelno == logging.WARNING
        assert record.getMessage().startswith(line), record.getMessage()
    for exc in (RuntimeError("boom"), InternalServerError("boom")):
        record = _record(exc)
        assert keep.filter(record)
        assert record.exc_info is not None and record.levelno == logging.ERROR
    with pytest.raises(pydantic.ValidationError) as our_bug:  # a response we failed to build
        pydantic.TypeAdapter(int).validate_python("x")
    record = _record(our_bug.value)
    keep.filter(record)
    assert record.exc_info is not None


def test_error_bodies_are_capped_without_a_server():
    from serving.middleware import MAX_ERRORS, error_body

    errors = [
        {"loc": ["k" * 10_000, i], "msg": "Extra inputs are not permitted"} for i in range(10**5)
    ]
    body = json.dumps({"error": "x", "detail": errors}).encode()
    out = error_body({}, 400, body)
    assert len(out) < SMALL * 4
    assert f"and {10**5 - MAX_ERRORS} more errors" in json.loads(out)["error"]
    long = json.dumps([{"error": "unknown: " + "y" * 10**6}]).encode()
    assert len(error_body({}, 404, long)) < SMALL * 4
