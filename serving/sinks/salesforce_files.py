"""Salesforce request files: sObject Collections bodies in a folder.

`salesforce:DIR[?external_id=FIELD__c]`: `PATCH /services/data/vXX.X/composite/sobjects`
bodies, `{"allOrNone": false, "records": [...]}`, at most 200 records per file, each with
`attributes.type = Account` and its `id` (with `external_id`, an upsert on that field instead);
`DIR/fields.json` (the fields an admin creates) and `DIR/manifest.json`. The live sync
(`salesforce://`) is `serving.crm.salesforce`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serving.sinks.base import _CrmSink
from serving.sinks.fields import (
    CRM_FIELDS,
    _value,
    salesforce_field_definitions,
    salesforce_value,
)

SALESFORCE_BATCH_LIMIT = 200  # records per sObject Collections request
SALESFORCE_API = "v68.0"


class SalesforceSink(_CrmSink):
    """sObject Collections bodies: `{"allOrNone": false, "records": [...]}`, 200 each.

    By default an update (`PATCH /composite/sobjects`, each record with its Account `id`);
    with `external_id` an upsert keyed on that external-id field
    (`PATCH /composite/sobjects/Account/<field>`), for orgs that store our account id.
    """

    system = "salesforce"
    limit = SALESFORCE_BATCH_LIMIT

    def __init__(self, folder: Path, external_id: str | None = None) -> None:
        super().__init__(folder)
        self.external_id = external_id

    def item(self, record: dict[str, Any]) -> dict[str, Any]:
        item: dict[str, Any] = {"attributes": {"type": "Account"}}
        if self.external_id:
            item[self.external_id] = str(record["account_id"])
        else:
            item["id"] = str(record["account_id"])
        for f in CRM_FIELDS:
            item[f.salesforce] = salesforce_value(f, _value(record, f.column))
        return item

    def body(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"allOrNone": False, "records": items}

    def request(self) -> dict[str, Any]:
        path = f"/services/data/{SALESFORCE_API}/composite/sobjects"
        if self.external_id:
            path += f"/Account/{self.external_id}"
        return {"method": "PATCH", "endpoint": path}

    def extras(self) -> dict[str, Any]:
        return {"fields.json": salesforce_field_definitions()}
