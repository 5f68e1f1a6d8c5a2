"""Webhook: POST the scores as signed JSON batches (Slack workflows, Zapier, your own tool).

`--to https://hooks.example.com/expansion` (or `webhook+https://...`; `http://` only for a
loopback host, for tests). Each request:

    POST <url>
    Content-Type: application/json
    X-Expansion-Timestamp: 1767225600                  (Unix seconds when signed)
    X-Expansion-Signature: v1=<hex HMAC-SHA256>        (key: EXPANSION_WEBHOOK_SECRET)
    X-Expansion-Delivery: <run id>-<batch number>      (the same on every retry)

    {"run_id": "...", "delivery": "...", "records": [{account_id, p_expand, ..., reasons}]}

The signature is `HMAC-SHA256(secret, f"{timestamp}.{raw body}")` in hex. A receiver
recomputes it over the raw bytes it received, compares in constant time, and rejects a
timestamp more than 5 minutes away from its clock (replays); `X-Expansion-Delivery` lets it
ignore a batch it has already applied (a retry after a lost answer). Any 2xx counts as
delivered; 429 and 5xx are retried (honouring `Retry-After`); another 4xx fails the batch
with the receiver's answer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from datetime import date, datetime
from typing import Any

import httpx

from serving.crm.sync import (
    RateLimiter,
    Request,
    Retryable,
    SyncEngine,
    SyncError,
    message_of,
    retry_after,
    split_target,
)

SIGNATURE_HEADER = "X-Expansion-Signature"
TIMESTAMP_HEADER = "X-Expansion-Timestamp"
DELIVERY_HEADER = "X-Expansion-Delivery"
TOLERANCE_S = 300


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`v1=` + hex HMAC-SHA256 of `timestamp + "." + body`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, *, now: float | None = None
) -> bool:
    """What a receiver runs: right signature, and a timestamp within 5 minutes."""
    try:
        age = abs((now if now is not None else time.time()) - int(timestamp))
    except ValueError:
        return False
    return age <= TOLERANCE_S and hmac.compare_digest(sign(secret, timestamp, body), signature)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


class WebhookConnector:
    """Signed JSON batches to one URL (see the module docstring)."""

    system = "webhook"
    max_batch = 1000
    default_rate = None

    def __init__(self, url: str) -> None:
        self.url = url
        self.destination = f"webhook:{url.split('?')[0]}"

    @classmethod
    def from_target(cls, target: str) -> tuple[WebhookConnector, dict[str, str]]:
        plain = target.removeprefix("webhook+")
        url, options = split_target(plain, "", set())
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"{target!r}: a webhook is an https:// URL")
        return cls(url), {"batch_size": "100", **options}

    def check_credentials(self) -> None:
        if not os.environ.get("EXPANSION_WEBHOOK_SECRET"):
            raise ValueError(
                "webhook: set EXPANSION_WEBHOOK_SECRET (the receiver checks the signature)"
            )

    def client_headers(self) -> dict[str, str]:
        return {}

    def refresh_token(self, engine: SyncEngine) -> bool:
        return False

    def setup(self, engine: SyncEngine) -> None:
        pass

    def item(self, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return str(record["account_id"]), {k: _jsonable(v) for k, v in record.items()}

    def batch_request(self, items: list[dict[str, Any]], batch_id: str) -> Request:
        body = {"run_id": batch_id.rsplit("-", 1)[0], "delivery": batch_id, "records": items}
        return SignedRequest("POST", self.url, body, headers={DELIVERY_HEADER: batch_id})

    def check(self, response: httpx.Response, limiter: RateLimiter) -> None:
        status = response.status_code
        if status in (408, 429) or status >= 500:
            raise Retryable(message_of(response, 200), wait=retry_after(response))
        if status in (401, 403):
            raise SyncError(f"the webhook refused the request: {message_of(response, 200)}")

    def outcome(self, keys: list[str], response: httpx.Response) -> dict[str, str | None]:
        if 200 <= response.status_code < 300:
            return dict.fromkeys(keys)
        return dict.fromkeys(keys, message_of(response))


class SignedRequest(Request):
    """A request whose body is signed afresh (new timestamp) at every attempt."""

    def signed(self) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(self.json, separators=(",", ":"), allow_nan=False).encode()
        timestamp = str(int(time.time()))
        secret = os.environ.get("EXPANSION_WEBHOOK_SECRET", "")
        headers = {
            **self.headers,
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        }
        return body, headers
