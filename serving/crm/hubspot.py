"""HubSpot: custom company properties, then batch upserts of the scores.

`hubspot://[?id_property=expansion_account_id]`, token from `HUBSPOT_ACCESS_TOKEN` (a private
app with the `crm.objects.companies.write` and `crm.schemas.companies.write` scopes), base URL
`https://api.hubapi.com` unless `EXPANSION_HUBSPOT_API_URL` says otherwise.

1. Setup: `GET /crm/v3/properties/companies/groups` and `GET /crm/v3/properties/companies`;
   the group "Expansion scoring" and our properties (`serving.sinks.CRM_FIELDS`) are created
   when missing (`POST .../groups`, `POST /crm/v3/properties/companies`). The id property
   (default `expansion_account_id`, a unique-value text property holding our account id) is
   created too when it is ours; a property you name must exist and be unique.
2. `POST /crm/v3/objects/companies/batch/upsert` with at most 100 inputs
   (`{"idProperty", "id", "objectWriteTraceId", "properties"}`): companies matched on the id
   property are updated, missing ones created. `objectWriteTraceId` is our account id, which
   is how a 207 multi-status answer names the inputs that failed.

Rate limits: HubSpot answers 429 with `X-HubSpot-RateLimit-Max` and
`-Interval-Milliseconds` (no `Retry-After`): the limiter adopts that limit and the retry waits
for one slot of it; a `DAILY` policy stops the sync (nothing will land before midnight).
423 Locked waits 2 s, as HubSpot documents.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from serving.crm.sync import (
    Rate,
    RateLimiter,
    Request,
    Retryable,
    SyncEngine,
    SyncError,
    message_of,
    retry_after,
    split_target,
)
from serving.sinks import (
    CRM_FIELDS,
    HUBSPOT_BATCH_LIMIT,
    _value,
    hubspot_property_definitions,
    hubspot_value,
)

API_URL = "https://api.hubapi.com"
GROUP = {"name": "expansion_scoring", "label": "Expansion scoring", "displayOrder": -1}
DEFAULT_ID_PROPERTY = "expansion_account_id"
# Free/Starter private apps: 100 requests per 10 s (the lowest documented tier); the
# response headers then tell the real limit of the account.
DEFAULT_RATE = Rate(100, 10.0)


def id_property_definition(name: str) -> dict[str, Any]:
    """The unique text property that holds our account id (what upserts match on)."""
    return {
        "name": name,
        "label": "Expansion: account id",
        "type": "string",
        "fieldType": "text",
        "groupName": GROUP["name"],
        "hasUniqueValue": True,
        "description": "The account id the expansion scores are keyed on (unique).",
    }


def property_definitions(id_property: str) -> list[dict[str, Any]]:
    """PropertyCreate bodies of our properties, in the "Expansion scoring" group."""
    bodies = [{**b, "groupName": GROUP["name"]} for b in hubspot_property_definitions()]
    if id_property == DEFAULT_ID_PROPERTY:
        bodies.insert(0, id_property_definition(id_property))
    return bodies


class HubSpotConnector:
    """Bodies and responses of HubSpot's CRM v3 API (see the module docstring)."""

    system = "hubspot"
    max_batch = HUBSPOT_BATCH_LIMIT
    default_rate = DEFAULT_RATE

    def __init__(self, id_property: str = DEFAULT_ID_PROPERTY, base_url: str = API_URL) -> None:
        self.id_property = id_property
        self.base_url = base_url.rstrip("/")
        self.destination = f"hubspot:{self.base_url}?id_property={id_property}"

    @classmethod
    def from_target(cls, target: str) -> tuple[HubSpotConnector, dict[str, str]]:
        rest, options = split_target(target, "hubspot://", {"id_property"})
        if rest.strip("/"):
            raise ValueError(
                f"{target!r}: write hubspot:// (set EXPANSION_HUBSPOT_API_URL for another host)"
            )
        base = os.environ.get("EXPANSION_HUBSPOT_API_URL") or API_URL
        return cls(options.pop("id_property", DEFAULT_ID_PROPERTY), base), options

    # -- credentials --
    def check_credentials(self) -> None:
        if not os.environ.get("HUBSPOT_ACCESS_TOKEN"):
            raise ValueError(
                "hubspot://: set HUBSPOT_ACCESS_TOKEN to a private app token with the "
                "crm.objects.companies.write and crm.schemas.companies.write scopes"
            )

    def client_headers(self) -> dict[str, str]:
        self.check_credentials()
        return {"Authorization": f"Bearer {os.environ['HUBSPOT_ACCESS_TOKEN']}"}

    def refresh_token(self, engine: SyncEngine) -> bool:
        return False  # private app tokens do not expire

    # -- setup --
    def setup(self, engine: SyncEngine) -> None:
        groups_url = f"{self.base_url}/crm/v3/properties/companies/groups"
        props_url = f"{self.base_url}/crm/v3/properties/companies"
        wanted = property_definitions(self.id_property)
        if engine.options.dry_run is not None:  # nothing to ask: write what would be created
            engine.write_dry(Request("POST", groups_url, GROUP), "setup/group.json")
            for body in wanted:
                engine.write_dry(Request("POST", props_url, body), f"setup/{body['name']}.json")
            return
        groups = self._results(engine, Request("GET", groups_url))
        if GROUP["name"] not in {g.get("name") for g in groups}:
            self._create(engine, Request("POST", groups_url, GROUP))
        existing = {p.get("name"): p for p in self._results(engine, Request("GET", props_url))}
        if self.id_property != DEFAULT_ID_PROPERTY:
            found = existing.get(self.id_property)
            if found is None:
                raise SyncError(f"HubSpot has no company property {self.id_property!r}")
            if not found.get("hasUniqueValue"):
                raise SyncError(
                    f"HubSpot company property {self.id_property!r} is not unique: "
                    "upserts match only on a property with unique values"
                )
        for body in wanted:
            if body["name"] not in existing:
                self._create(engine, Request("POST", props_url, body))

    def _results(self, engine: SyncEngine, request: Request) -> list[dict[str, Any]]:
        response = engine.call(request)
        if response.status_code != 200:
            raise SyncError(f"HubSpot {request.method} {request.url}: {message_of(response)}")
        return response.json().get("results", [])

    def _create(self, engine: SyncEngine, request: Request) -> None:
        response = engine.call(request)
        # 409: created meanwhile (another run, or a HubSpot cache behind the GET) - fine
        if response.status_code not in (200, 201, 409):
            raise SyncError(
                f"HubSpot could not create {request.json['name']!r}: {message_of(response)}"
            )

    # -- records --
    def item(self, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        key = str(record["account_id"])
        properties = {f.hubspot: hubspot_value(f, _value(record, f.column)) for f in CRM_FIELDS}
        return key, {
            "idProperty": self.id_property,
            "id": key,
            "objectWriteTraceId": key,
            "properties": properties,
        }

    def batch_request(self, items: list[dict[str, Any]], batch_id: str) -> Request:
        url = f"{self.base_url}/crm/v3/objects/companies/batch/upsert"
        return Request("POST", url, {"inputs": items})

    # -- responses --
    def check(self, response: httpx.Response, limiter: RateLimiter) -> None:
        advertised = _advertised_rate(response)
        if advertised is not None:
            limiter.advertise(advertised)
        status = response.status_code
        if status == 429:
            body = _json(response)
            if body.get("policyName") == "DAILY":
                raise SyncError(f"HubSpot daily API limit reached: {body.get('message', '')}")
            # no Retry-After: the limiter, now on the advertised window, spaces the retry by a
            # slot; while 429s persist the wait grows by slots of that window (1, 3, 7...)
            if response.headers.get("X-HubSpot-RateLimit-Remaining") == "0":
                limiter.overshot()
            rate = advertised or limiter.rate or DEFAULT_RATE
            raise Retryable(message_of(response, 200), wait=rate.seconds / rate.requests, grow=True)
        if status == 423:
            raise Retryable(message_of(response, 200), wait=2.0)
        if status == 477 or status >= 500:
            raise Retryable(message_of(response, 200), wait=retry_after(response))
        if status == 401:
            raise SyncError(
                "HubSpot rejected the token (401): check HUBSPOT_ACCESS_TOKEN and its scopes"
            )
        if status == 403:
            raise SyncError(f"HubSpot refused the request (403): {message_of(response, 300)}")

    def outcome(self, keys: list[str], response: httpx.Response) -> dict[str, str | None]:
        status = response.status_code
        if status in (200, 201):
            return dict.fromkeys(keys)
        body = _json(response)
        if status == 207:
            result: dict[str, str | None] = dict.fromkeys(keys)
            unnamed = []
            for error in body.get("errors", []):
                context = error.get("context") or {}
                named = context.get("objectWriteTraceId") or context.get("ids") or []
                message = f"{error.get('category', 'error')}: {error.get('message', '')}"
                hits = [k for k in named if k in result]
                for key in hits:
                    result[key] = message
                if not hits:
                    unnamed.append(message)
            if unnamed:  # an error we cannot tie to a record: flag the batch, lose nothing
                for key in keys:
                    if result[key] is None and not _confirmed(body, key, self.id_property):
                        result[key] = "; ".join(unnamed)
            return result
        # any other answer rejects the whole batch (e.g. 400 duplicate ids or bad values)
        message = body.get("message") if body else None
        text = f"HTTP {status}: {message}" if message else message_of(response)
        return dict.fromkeys(keys, text)


def _confirmed(body: dict[str, Any], key: str, id_property: str) -> bool:
    return any((r.get("properties") or {}).get(id_property) == key for r in body.get("results", []))


def _advertised_rate(response: httpx.Response) -> Rate | None:
    try:
        most = int(response.headers["X-HubSpot-RateLimit-Max"])
        window = int(response.headers["X-HubSpot-RateLimit-Interval-Milliseconds"]) / 1000
    except (KeyError, ValueError):
        return None
    return Rate(most, window) if most > 0 and window > 0 else None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
