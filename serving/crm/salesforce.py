"""Salesforce: sObject Collections upserts of the scores onto Account.

`salesforce://[?external_id=Expansion_Account_Id__c]`. Credentials, from the environment:

- `SALESFORCE_INSTANCE_URL` + `SALESFORCE_ACCESS_TOKEN`, or
- `SALESFORCE_CLIENT_ID` + `SALESFORCE_CLIENT_SECRET` (OAuth 2.0 client credentials flow of a
  connected/external client app), token URL `SALESFORCE_TOKEN_URL` (default
  `$SALESFORCE_INSTANCE_URL/services/oauth2/token`; it must be your My Domain host). The token
  answer's `instance_url` is the API host. With both, the token is used first and a 401
  `INVALID_SESSION_ID` gets one new token from the client credentials.

Each call is `PATCH /services/data/vXX.X/composite/sobjects/Account/<external_id>` with
`{"allOrNone": false, "records": [...]}` (at most 200): Salesforce answers 200 with one result
per record in order, and the failed ones carry `statusCode` and `message`.

Limits: `403 REQUEST_LIMIT_EXCEEDED` is retried with backoff (it is also what the cap on
concurrent long requests answers) unless the `Sforce-Limit-Info` header shows the org's API
requests used up (`api-usage=N/N`): then the sync stops, and the same run id resumes it later.

The custom fields must exist on Account: `python -m serving.crm.salesforce --out DIR` writes
a metadata package for the admin to deploy (also in docs/salesforce-metadata/).
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx

from serving.crm.sync import (
    Rate,
    RateLimiter,
    Request,
    Retryable,
    SyncEngine,
    SyncError,
    TokenExpired,
    message_of,
    retry_after,
    split_target,
)
from serving.sinks import (
    CRM_FIELDS,
    NUMBER_DIGITS,
    SALESFORCE_API,
    SALESFORCE_BATCH_LIMIT,
    _value,
    salesforce_value,
)

DEFAULT_EXTERNAL_ID = "Expansion_Account_Id__c"
_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")


class SalesforceConnector:
    """Bodies and responses of the sObject Collections upsert (see the module docstring)."""

    system = "salesforce"
    max_batch = SALESFORCE_BATCH_LIMIT
    default_rate: Rate | None = None  # Salesforce limits per day and concurrency, not rate

    def __init__(self, external_id: str = DEFAULT_EXTERNAL_ID) -> None:
        self.external_id = external_id
        self.instance_url = (os.environ.get("SALESFORCE_INSTANCE_URL") or "").rstrip("/")
        self.api_version = os.environ.get("SALESFORCE_API_VERSION") or SALESFORCE_API
        self.destination = f"salesforce:{self.instance_url or '?'}?external_id={external_id}"
        self.api_usage: str | None = None  # last Sforce-Limit-Info api-usage, e.g. "18/5000"

    @classmethod
    def from_target(cls, target: str) -> tuple[SalesforceConnector, dict[str, str]]:
        rest, options = split_target(target, "salesforce://", {"external_id"})
        if rest.strip("/"):
            raise ValueError(f"{target!r}: write salesforce:// (the host comes from the env)")
        external_id = options.pop("external_id", DEFAULT_EXTERNAL_ID)
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*__c", external_id):
            raise ValueError(f"{target!r}: external_id must be a custom field name (…__c)")
        return cls(external_id), options

    # -- credentials --
    @property
    def _has_client_credentials(self) -> bool:
        return bool(
            os.environ.get("SALESFORCE_CLIENT_ID") and os.environ.get("SALESFORCE_CLIENT_SECRET")
        )

    def check_credentials(self) -> None:
        token = os.environ.get("SALESFORCE_ACCESS_TOKEN")
        if not self._has_client_credentials and not (token and self.instance_url):
            raise ValueError(
                "salesforce://: set SALESFORCE_INSTANCE_URL and SALESFORCE_ACCESS_TOKEN, or "
                "SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET (client credentials flow; "
                "SALESFORCE_TOKEN_URL or SALESFORCE_INSTANCE_URL for the token endpoint)"
            )
        if self._has_client_credentials and not (
            os.environ.get("SALESFORCE_TOKEN_URL") or self.instance_url
        ):
            raise ValueError("salesforce://: set SALESFORCE_TOKEN_URL or SALESFORCE_INSTANCE_URL")

    def client_headers(self) -> dict[str, str]:
        token = os.environ.get("SALESFORCE_ACCESS_TOKEN")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def refresh_token(self, engine: SyncEngine) -> bool:
        """A new token by the client credentials flow; False when none is configured."""
        if not self._has_client_credentials:
            return False
        token_url = os.environ.get("SALESFORCE_TOKEN_URL") or (
            f"{self.instance_url}/services/oauth2/token"
        )
        form = {
            "grant_type": "client_credentials",
            "client_id": os.environ["SALESFORCE_CLIENT_ID"],
            "client_secret": os.environ["SALESFORCE_CLIENT_SECRET"],
        }
        # the token call must not carry the old bearer token: a header of its own
        response = engine.call(Request("POST", token_url, data=form, headers={"Authorization": ""}))
        if response.status_code != 200:
            body = _json(response)
            detail = (
                body.get("error_description") or body.get("error")
                if isinstance(body, dict)
                else None
            )
            raise SyncError(
                f"Salesforce token request failed: HTTP {response.status_code}"
                + (f" ({detail})" if detail else "")
            )
        body = response.json()
        self.instance_url = body.get("instance_url", self.instance_url).rstrip("/")
        engine.set_header("Authorization", f"Bearer {body['access_token']}")
        return True

    def setup(self, engine: SyncEngine) -> None:
        if engine.options.dry_run is None and not os.environ.get("SALESFORCE_ACCESS_TOKEN"):
            self.refresh_token(engine)  # client credentials only: the first token

    # -- records --
    def item(self, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        key = str(record["account_id"])
        item: dict[str, Any] = {"attributes": {"type": "Account"}, self.external_id: key}
        for f in CRM_FIELDS:
            item[f.salesforce] = salesforce_value(f, _value(record, f.column))
        return key, item

    def batch_request(self, items: list[dict[str, Any]], batch_id: str) -> Request:
        url = (
            f"{self.instance_url or 'https://MyDomainName.my.salesforce.com'}/services/data/"
            f"{self.api_version}/composite/sobjects/Account/{self.external_id}"
        )
        return Request("PATCH", url, {"allOrNone": False, "records": items})

    # -- responses --
    def check(self, response: httpx.Response, limiter: RateLimiter) -> None:
        usage = _USAGE.search(response.headers.get("Sforce-Limit-Info", ""))
        if usage:
            self.api_usage = f"{usage[1]}/{usage[2]}"
        status = response.status_code
        codes = _error_codes(response)
        if status == 401 and "INVALID_SESSION_ID" in codes:
            raise TokenExpired("401 INVALID_SESSION_ID")
        if status == 401:
            raise SyncError(f"Salesforce rejected the credentials: {', '.join(codes) or 401}")
        if status == 403 and "REQUEST_LIMIT_EXCEEDED" in codes:
            if usage and int(usage[1]) >= int(usage[2]):
                raise SyncError(
                    f"Salesforce API request limit used up (api-usage={self.api_usage}); "
                    "rerun with the same --run-id when it resets"
                )
            raise Retryable("403 REQUEST_LIMIT_EXCEEDED", wait=retry_after(response))
        if status == 429 or status >= 500:
            raise Retryable(message_of(response, 200), wait=retry_after(response))
        if status == 403:
            raise SyncError(f"Salesforce refused the request: {message_of(response, 300)}")

    def outcome(self, keys: list[str], response: httpx.Response) -> dict[str, str | None]:
        body = _json(response)
        if response.status_code == 200 and isinstance(body, list) and len(body) == len(keys):
            result: dict[str, str | None] = {}
            for key, item in zip(keys, body, strict=True):
                if item.get("success"):
                    result[key] = None
                else:
                    result[key] = (
                        "; ".join(
                            f"{e.get('statusCode')}: {e.get('message')}"
                            + (f" (fields {', '.join(e['fields'])})" if e.get("fields") else "")
                            for e in item.get("errors", [])
                        )
                        or "failed without a message"
                    )
            return result
        if isinstance(body, list) and body and "errorCode" in body[0]:
            message = "; ".join(f"{e.get('errorCode')}: {e.get('message')}" for e in body)
            return dict.fromkeys(keys, f"HTTP {response.status_code}: {message}")
        return dict.fromkeys(keys, message_of(response))


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_codes(response: httpx.Response) -> list[str]:
    body = _json(response)
    if isinstance(body, list):
        return [str(e.get("errorCode")) for e in body if isinstance(e, dict)]
    return []


# --- field metadata for the admin -----------------------------------------------------------


def _field_xml(f_name: str, label: str, description: str, kind: str, options, column) -> str:
    parts = [
        f"        <fullName>{escape(f_name)}</fullName>",
        f"        <label>{escape(label[:40])}</label>",
        f"        <description>{escape(description)}</description>",
        "        <externalId>false</externalId>",
        "        <required>false</required>",
    ]
    if kind == "number":
        scale = NUMBER_DIGITS.get(column, 2)
        parts += [
            "        <type>Number</type>",
            "        <precision>18</precision>",
            f"        <scale>{scale}</scale>",
        ]
    elif kind == "text":
        parts += ["        <type>Text</type>", "        <length>255</length>"]
    elif kind == "textarea":
        parts += [
            "        <type>LongTextArea</type>",
            "        <length>32768</length>",
            "        <visibleLines>5</visibleLines>",
        ]
    elif kind in ("enumeration", "multi"):
        values = "\n".join(
            "                <value>\n"
            f"                    <fullName>{escape(o)}</fullName>\n"
            "                    <default>false</default>\n"
            f"                    <label>{escape(o)}</label>\n"
            "                </value>"
            for o in options
        )
        kind_xml = "Picklist" if kind == "enumeration" else "MultiselectPicklist"
        parts += [f"        <type>{kind_xml}</type>"]
        if kind == "multi":
            parts += [f"        <visibleLines>{max(3, min(len(options), 10))}</visibleLines>"]
        parts += [
            "        <valueSet>",
            "            <restricted>true</restricted>",
            "            <valueSetDefinition>",
            "                <sorted>false</sorted>",
            values,
            "            </valueSetDefinition>",
            "        </valueSet>",
        ]
    elif kind == "bool":
        parts += ["        <type>Checkbox</type>", "        <defaultValue>false</defaultValue>"]
    elif kind == "date":
        parts += ["        <type>Date</type>"]
    elif kind == "datetime":
        parts += ["        <type>DateTime</type>"]
    else:
        raise ValueError(f"no Salesforce type for {kind!r}")
    return "    <fields>\n" + "\n".join(parts) + "\n    </fields>"


def metadata_package(external_id: str = DEFAULT_EXTERNAL_ID) -> dict[str, str]:
    """Files of a Metadata API package (`package.xml`, `objects/Account.object`) that adds
    our custom fields to Account: `sf project deploy start --metadata-dir DIR`."""
    fields = [
        "    <fields>\n"
        f"        <fullName>{escape(external_id)}</fullName>\n"
        "        <label>Expansion: account id</label>\n"
        "        <description>Our account id: what the expansion sync upserts on.</description>\n"
        "        <externalId>true</externalId>\n"
        "        <unique>true</unique>\n"
        "        <caseSensitive>true</caseSensitive>\n"
        "        <required>false</required>\n"
        "        <type>Text</type>\n"
        "        <length>255</length>\n"
        "    </fields>"
    ]
    fields += [
        _field_xml(f.salesforce, f.label, f.description, f.kind, f.options, f.column)
        for f in CRM_FIELDS
    ]
    names = [external_id] + [f.salesforce for f in CRM_FIELDS]
    members = "\n".join(f"        <members>Account.{n}</members>" for n in names)
    version = SALESFORCE_API.removeprefix("v")
    package = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Package xmlns="http://soap.sforce.com/2006/04/metadata">\n'
        f"    <types>\n{members}\n        <name>CustomField</name>\n    </types>\n"
        f"    <version>{version}</version>\n</Package>\n"
    )
    account = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<CustomObject xmlns="http://soap.sforce.com/2006/04/metadata">\n'
        + "\n".join(fields)
        + "\n</CustomObject>\n"
    )
    return {"package.xml": package, "objects/Account.object": account}


def write_metadata_package(folder: Path, external_id: str = DEFAULT_EXTERNAL_ID) -> list[Path]:
    """Write `metadata_package` under `folder`; returns the files."""
    out = []
    for name, content in metadata_package(external_id).items():
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        out.append(path)
    return out


def main(argv: list[str] | None = None) -> None:
    """`python -m serving.crm.salesforce --out DIR [--external-id FIELD__c]`."""
    parser = argparse.ArgumentParser(description="Write the Account custom fields package.")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--external-id", default=DEFAULT_EXTERNAL_ID)
    args = parser.parse_args(argv)
    for path in write_metadata_package(args.out, args.external_id):
        print(path)
    print(f"deploy with: sf project deploy start --metadata-dir {args.out}")


if __name__ == "__main__":
    main()
