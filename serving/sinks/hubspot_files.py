"""HubSpot request files: `POST /crm/v3/objects/companies/batch/update` bodies in a folder.

`hubspot:DIR[?id_property=NAME]`: `{"inputs": [{"id", "properties", "idProperty"?}]}`, at most
100 inputs per file, in `DIR/requests/`; `DIR/properties.json` (the PropertyCreate bodies to
create our properties once) and `DIR/manifest.json` (endpoint, files, run record). The live
sync (`hubspot://`) is `serving.crm.hubspot`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serving.sinks.base import _CrmSink
from serving.sinks.fields import CRM_FIELDS, _value, hubspot_property_definitions, hubspot_value

HUBSPOT_BATCH_LIMIT = 100  # inputs per companies batch/update request
HUBSPOT_ENDPOINT = "https://api.hubapi.com/crm/v3/objects/companies/batch/update"
HUBSPOT_PROPERTIES_ENDPOINT = "https://api.hubapi.com/crm/v3/properties/companies"


class HubSpotSink(_CrmSink):
    """`POST /crm/v3/objects/companies/batch/update` bodies: `{"inputs": [...]}`, 100 each."""

    system = "hubspot"
    limit = HUBSPOT_BATCH_LIMIT

    def __init__(self, folder: Path, id_property: str | None = None) -> None:
        super().__init__(folder)
        self.id_property = id_property

    def item(self, record: dict[str, Any]) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": str(record["account_id"]),
            "properties": {
                f.hubspot: hubspot_value(f, _value(record, f.column)) for f in CRM_FIELDS
            },
        }
        if self.id_property:
            item["idProperty"] = self.id_property
        return item

    def body(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"inputs": items}

    def request(self) -> dict[str, Any]:
        return {"method": "POST", "endpoint": HUBSPOT_ENDPOINT}

    def extras(self) -> dict[str, Any]:
        return {
            "properties.json": {
                "method": "POST",
                "endpoint": HUBSPOT_PROPERTIES_ENDPOINT,
                "bodies": hubspot_property_definitions(),
            }
        }
