"""Local HubSpot, Salesforce and webhook servers that speak the documented protocols.

Each is a threaded `http.server` on 127.0.0.1 (port 0), started and stopped by the test (or
the benchmark) that uses it. Every request body is checked against the shapes documented in
tests/fixtures/crm/ (see SOURCE.md there); a violation is recorded in `server.violations`
and answered 400, so a test fails on it. Faults are injected by a script keyed on the
number of the batch request (1-based) or at random with a seeded rate:

    "429"      HubSpot: 429 with the X-HubSpot-RateLimit-* headers, no Retry-After
    "500"      a 500 (not applied)
    "timeout"  the answer comes after `hang_s` seconds (not applied)
    "expire"   Salesforce: every token issued so far becomes invalid (401 INVALID_SESSION_ID)
    "limit"    Salesforce: 403 REQUEST_LIMIT_EXCEEDED

`reject` maps account ids to a message: those records fail (HubSpot 207 multi-status,
Salesforce per-record errors) every time, the rest of the batch is applied.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import random
import re
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).parent / "fixtures" / "crm"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


# The documented shapes (SOURCE.md): keys an input may carry, PropertyCreate values.
UPSERT_INPUT_KEYS = set(
    fixture("hubspot_batch_upsert_companies_request.json")["body"]["inputs"][0]
)  # idProperty, id, objectWriteTraceId, properties
PROPERTY_CREATE_KEYS = {
    "name",
    "label",
    "type",
    "fieldType",
    "groupName",
    "description",
    "options",
    "displayOrder",
    "hasUniqueValue",
    "hidden",
    "formField",
    "calculationFormula",
    "externalOptions",
    "referencedObjectType",
}
PROPERTY_TYPES = {"string", "number", "date", "datetime", "enumeration", "bool"}
FIELD_TYPES = {
    "textarea",
    "text",
    "date",
    "file",
    "number",
    "select",
    "radio",
    "checkbox",
    "booleancheckbox",
    "calculation_equation",
}
GROUP_KEYS = set(fixture("hubspot_create_property_group_request.json")["body"])
SF_UPSERT_KEYS = set(fixture("salesforce_collections_upsert_request.json")["body"])
SF_TOKEN_FORM = set(
    parse_qs(fixture("salesforce_oauth_client_credentials_token_request.json")["body"])
)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as the real APIs

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        data = b"" if body is None else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass

    def _handle(self) -> None:
        arrived = time.monotonic()  # a gateway counts a request when it arrives
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {**dict(self.headers.items()), "X-Arrived": str(arrived)}
        status, body, headers = self.server.app.handle(self.command, self.path, headers, raw)
        self._reply(status, body, headers)

    do_GET = do_POST = do_PATCH = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: FakeApi


class FakeApi:
    """Shared machinery: lifecycle, fault script, rate window, counters."""

    def __init__(
        self,
        *,
        script: dict[int, str] | None = None,
        reject: dict[str, str] | None = None,
        fault_rate: float = 0.0,
        fault_kinds: tuple[str, ...] = ("429", "500"),
        rate: tuple[int, float] | None = None,
        hang_s: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.script = dict(script or {})
        self.reject = dict(reject or {})
        self.fault_rate, self.fault_kinds = fault_rate, fault_kinds
        self.rate, self.hang_s = rate, hang_s
        self._random = random.Random(seed)
        self.lock = threading.Lock()
        self.records: dict[str, dict[str, Any]] = {}  # what the CRM holds, by our id
        self.applied: Counter[str] = Counter()  # times a record was written
        self.received: Counter[str] = Counter()  # times a record arrived (also if refused)
        self.batches = 0
        self.faults: Counter[str] = Counter()
        self.rate_limited = 0  # 429s for going over `rate` (not injected ones)
        self.violations: list[str] = []
        self.log: list[tuple[str, str]] = []
        self._window: deque[float] = deque()
        self._httpd: _Server | None = None

    # lifecycle
    def __enter__(self) -> FakeApi:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.app = self
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def violation(self, message: str) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            self.violations.append(message)
        return 400, {"status": "error", "message": f"test server: {message}"}, {}

    def over_rate(self, arrived: float) -> bool:
        """Sliding window on arrivals, as the CRM counts them."""
        if self.rate is None:
            return False
        most, seconds = self.rate
        now = arrived
        with self.lock:
            while self._window and self._window[0] <= now - seconds:
                self._window.popleft()
            if len(self._window) >= most:
                self.rate_limited += 1
                return True
            self._window.append(now)
            return False

    def next_fault(self) -> str | None:
        """The fault for this batch request, if any (the script, then the random rate)."""
        with self.lock:
            self.batches += 1
            fault = self.script.pop(self.batches, None)
            if fault is None and self.fault_rate and self._random.random() < self.fault_rate:
                fault = self._random.choice(self.fault_kinds)
            if fault:
                self.faults[fault] += 1
            return fault

    def handle(self, method, path, headers, raw) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError


# --- HubSpot --------------------------------------------------------------------------------


class HubSpotApi(FakeApi):
    """CRM v3 properties, property groups and companies batch upsert."""

    def __init__(self, token: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.token = token
        self.groups = {"companyinformation": {"name": "companyinformation", "label": "Company"}}
        self.properties: dict[str, dict[str, Any]] = {
            "name": {"name": "name", "type": "string", "hasUniqueValue": False},
            "domain": {"name": "domain", "type": "string", "hasUniqueValue": False},
        }
        self.created: list[str] = []

    def limit_headers(self, remaining: int | None = None) -> dict[str, str]:
        most, seconds = self.rate or (150, 10.0)
        left = remaining if remaining is not None else max(0, most - len(self._window))
        return {
            "X-HubSpot-RateLimit-Max": str(most),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(seconds * 1000)),
            "X-HubSpot-RateLimit-Remaining": str(left),
        }

    def handle(self, method, path, headers, raw):
        self.log.append((method, path))
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, fixture("hubspot_401_invalid_authentication_response.json")["body"], {}
        if self.over_rate(float(headers["X-Arrived"])):
            body = fixture("hubspot_429_ten_secondly_response.json")["body"]
            return 429, body, self.limit_headers(remaining=0)
        body = json.loads(raw) if raw else None
        route = urlsplit(path).path
        if route == "/crm/v3/properties/companies/groups":
            if method == "GET":
                return 200, {"results": list(self.groups.values())}, self.limit_headers()
            extra = set(body) - GROUP_KEYS
            if extra or not {"name", "label"} <= set(body):
                return self.violation(f"property group body keys {sorted(body)}")
            self.groups[body["name"]] = {**body, "archived": False}
            return 201, self.groups[body["name"]], self.limit_headers()
        if route == "/crm/v3/properties/companies":
            if method == "GET":
                return 200, {"results": list(self.properties.values())}, self.limit_headers()
            return self.create_property(body)
        if route == "/crm/v3/objects/companies/batch/upsert" and method == "POST":
            return self.upsert(body)
        return 404, {"status": "error", "message": f"no route {method} {route}"}, {}

    def create_property(self, body: dict[str, Any]):
        extra = set(body) - PROPERTY_CREATE_KEYS
        if extra or not {"name", "label", "type", "fieldType", "groupName"} <= set(body):
            return self.violation(f"PropertyCreate keys {sorted(body)}")
        if body["type"] not in PROPERTY_TYPES or body["fieldType"] not in FIELD_TYPES:
            return self.violation(f"type {body['type']}/{body['fieldType']}")
        if body["groupName"] not in self.groups:
            return self.violation(f"group {body['groupName']!r} does not exist")
        if body["name"] in self.properties:
            return 409, {"status": "error", "message": "Property already exists"}, {}
        self.properties[body["name"]] = dict(body)
        self.created.append(body["name"])
        response = dict(fixture("hubspot_create_company_property_201_response.json")["body"])
        return 201, {**response, **body}, self.limit_headers()

    def upsert(self, body: dict[str, Any]):
        if set(body) != {"inputs"} or not 1 <= len(body["inputs"]) <= 100:
            return self.violation("upsert body must be {inputs: 1..100}")
        inputs = body["inputs"]
        for item in inputs:
            if set(item) - UPSERT_INPUT_KEYS or not {"id", "idProperty", "properties"} <= set(item):
                return self.violation(f"upsert input keys {sorted(item)}")
            if not all(isinstance(v, str) for v in item["properties"].values()):
                return self.violation("HubSpot property values must be strings")
            prop = self.properties.get(item["idProperty"])
            if prop is None or not prop.get("hasUniqueValue"):
                return self.violation(f"idProperty {item['idProperty']!r} missing or not unique")
            unknown = set(item["properties"]) - set(self.properties)
            if unknown:
                return self.violation(f"properties do not exist: {sorted(unknown)}")
        ids = [i["id"] for i in inputs]
        with self.lock:
            self.received.update(ids)
        duplicates = [i for i, n in Counter(ids).items() if n > 1]
        if duplicates:  # HubSpot refuses the whole batch (verbatim body in the fixtures)
            response = fixture("hubspot_batch_update_400_duplicate_ids_response.json")["body"]
            message = f"Duplicate IDs found in batch input: {duplicates}. IDs must be unique"
            return 400, {**response, "message": message, "context": {"ids": duplicates}}, {}
        fault = self.next_fault()
        if fault == "429":
            body = fixture("hubspot_429_ten_secondly_response.json")["body"]
            return 429, body, self.limit_headers(remaining=0)
        if fault == "500":
            return 500, {"status": "error", "message": "internal error"}, {}
        if fault == "timeout":
            time.sleep(self.hang_s)
            return 504, {"status": "error", "message": "gateway timeout"}, {}
        results, errors = [], []
        for item in inputs:
            key = item["id"]
            if key in self.reject:
                errors.append(
                    {
                        "status": "error",
                        "category": "VALIDATION_ERROR",
                        "message": self.reject[key],
                        "context": {"objectWriteTraceId": [item.get("objectWriteTraceId", key)]},
                    }
                )
                continue
            with self.lock:
                is_new = key not in self.records
                self.records[key] = dict(item["properties"])
                self.applied[key] += 1
            results.append({"id": str(abs(hash(key)) % 10**9), "new": is_new, "properties": {}})
        out = {"status": "COMPLETE", "results": results}
        if errors:
            return 207, {**out, "numErrors": len(errors), "errors": errors}, self.limit_headers()
        return 200, out, self.limit_headers()


# --- Salesforce -----------------------------------------------------------------------------


class SalesforceApi(FakeApi):
    """OAuth client credentials + sObject Collections upsert on Account."""

    def __init__(self, fields: set[str], client_id: str, client_secret: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fields = fields  # Account fields that exist (ours + the external id)
        self.client_id, self.client_secret = client_id, client_secret
        self.valid_tokens: set[str] = set()
        self.tokens_issued = 0
        self.usage, self.usage_max = 0, 100_000
        self._counter = itertools.count(1)

    def issue_token(self) -> str:
        with self.lock:
            self.tokens_issued += 1
            token = f"00Dsf!tok{self.tokens_issued}-{random.random():.12f}"
            self.valid_tokens.add(token)
            return token

    def handle(self, method, path, headers, raw):
        self.log.append((method, path))
        route = urlsplit(path).path
        if route == "/services/oauth2/token" and method == "POST":
            form = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
            if set(form) != SF_TOKEN_FORM or form["grant_type"] != "client_credentials":
                return self.violation(f"token form fields {sorted(form)}")
            if (form["client_id"], form["client_secret"]) != (self.client_id, self.client_secret):
                return 400, {"error": "invalid_client", "error_description": "invalid client"}, {}
            response = dict(
                fixture("salesforce_oauth_client_credentials_token_response.json")["body"]
            )
            return (
                200,
                {**response, "access_token": self.issue_token(), "instance_url": self.url},
                {},
            )
        auth = headers.get("Authorization", "").removeprefix("Bearer ")
        if auth not in self.valid_tokens:
            body = fixture("salesforce_invalid_session_401_response.json")["body"]
            return 401, body, {}
        with self.lock:
            self.usage += 1
        limit = {"Sforce-Limit-Info": f"api-usage={self.usage}/{self.usage_max}"}
        m = re.fullmatch(r"/services/data/v\d+\.\d/composite/sobjects/Account/(\w+)", route)
        if not (m and method == "PATCH"):
            return 404, [{"errorCode": "NOT_FOUND", "message": "no such resource"}], {}
        ext = m[1]
        body = json.loads(raw)
        if set(body) != SF_UPSERT_KEYS or body["allOrNone"] is not False:
            return self.violation(f"collections body keys {sorted(body)} / allOrNone")
        records = body["records"]
        if not 1 <= len(records) <= 200:
            return self.violation("1..200 records per call")
        for r in records:
            if r.get("attributes") != {"type": "Account"} or not isinstance(r.get(ext), str):
                return self.violation("each record needs attributes.type Account and its ext id")
        keys = [r[ext] for r in records]
        with self.lock:
            self.received.update(keys)
        fault = self.next_fault()
        if fault == "expire":
            with self.lock:
                self.valid_tokens.clear()
            return 401, fixture("salesforce_invalid_session_401_response.json")["body"], {}
        if fault == "limit":
            body = fixture("salesforce_request_limit_exceeded_403_response.json")["body"]
            return 403, body, limit
        if fault in ("500", "429"):
            return 503, [{"errorCode": "SERVER_UNAVAILABLE", "message": "try later"}], limit
        if fault == "timeout":
            time.sleep(self.hang_s)
            return 504, None, {}
        counts = Counter(keys)
        out = []
        for r, key in zip(records, keys, strict=True):
            unknown = set(r) - self.fields - {"attributes"}
            if unknown:
                err = {
                    "statusCode": "INVALID_FIELD",
                    "message": f"No such column {sorted(unknown)[0]}",
                }
                out.append({"success": False, "errors": [{**err, "fields": []}]})
            elif counts[key] > 1:
                err = {
                    "statusCode": "DUPLICATE_EXTERNAL_ID",
                    "message": f"Duplicate external id specified: {key}",
                    "fields": [ext],
                }
                out.append({"success": False, "errors": [err]})
            elif key in self.reject:
                err = {"statusCode": "ENTITY_IS_DELETED", "message": self.reject[key], "fields": []}
                out.append({"success": False, "errors": [err]})
            else:
                with self.lock:
                    created = key not in self.records
                    self.records[key] = {k: v for k, v in r.items() if k != "attributes"}
                    self.applied[key] += 1
                    sf_id = f"001xx{next(self._counter):013d}"
                out.append({"id": sf_id, "success": True, "errors": [], "created": created})
        return 200, out, limit


# --- webhook --------------------------------------------------------------------------------


class WebhookReceiver(FakeApi):
    """Checks the HMAC signature and the timestamp, then applies the batch."""

    def __init__(self, secret: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.secret = secret
        self.deliveries: Counter[str] = Counter()

    def handle(self, method, path, headers, raw):
        self.log.append((method, path))
        timestamp = headers.get("X-Expansion-Timestamp", "")
        signature = headers.get("X-Expansion-Signature", "")
        expected = (
            "v1="
            + hmac.new(
                self.secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256
            ).hexdigest()
        )
        if not hmac.compare_digest(expected, signature):
            return self.violation("bad signature")
        if abs(time.time() - int(timestamp)) > 300:
            return self.violation("stale timestamp")
        body = json.loads(raw)
        if set(body) != {"run_id", "delivery", "records"}:
            return self.violation(f"webhook body keys {sorted(body)}")
        if headers.get("X-Expansion-Delivery") != body["delivery"]:
            return self.violation("delivery header differs from the body")
        keys = [r["account_id"] for r in body["records"]]
        with self.lock:
            self.received.update(keys)
        fault = self.next_fault()
        if fault == "429":
            return 429, {"error": "slow down"}, {"Retry-After": "0.05"}
        if fault == "500":
            return 500, {"error": "oops"}, {}
        if fault == "timeout":
            time.sleep(self.hang_s)
            return 504, None, {}
        with self.lock:
            self.deliveries[body["delivery"]] += 1
            for r in body["records"]:
                if r["account_id"] in self.reject:
                    continue
                self.records[r["account_id"]] = r
                self.applied[r["account_id"]] += 1
        return 202, {"accepted": len(keys)}, {}
