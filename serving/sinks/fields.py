"""Our output columns as CRM properties and fields, and how each value is written to each CRM.

Shared by the request-file writers (`hubspot_files`, `salesforce_files`) and the live sync
(`serving.crm`). Each output column maps to a custom company property named
`expansion_<column>` in HubSpot (`expansion_p_expand`, `expansion_p_post_upsell_churn`,
`expansion_expected_net_value`, `expansion_expected_uplift_mrr`, `expansion_rank`,
`expansion_next_step`, `expansion_triggers`, `expansion_route`, `expansion_suppressed`,
`expansion_suppression_reason`, `expansion_reasons` (the plain-text line), `expansion_as_of`,
`expansion_scored_at`, `expansion_model_versions`) and to an Account custom field
`Expansion_<Column>__c` in Salesforce. We write only our outputs, never the CRM's own owner,
segment or MRR. HubSpot takes every value as a string (numbers as decimals, booleans
`true`/`false`, dates as epoch milliseconds at midnight UTC, multiple checkboxes as `a;b`,
`""` clears a value); Salesforce takes JSON numbers, booleans, ISO dates, `a;b` for a
multi-select picklist and `null` (which clears a field). The record id is our `account_id`:
use account ids that are the CRM's ids, or name a unique property that holds ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from features.triggers import TRIGGERS
from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL

ROUTES = ["csm", "automated"]


@dataclass(frozen=True)
class CrmField:
    """One of our columns as a CRM property/field."""

    column: str
    hubspot: str
    salesforce: str
    kind: str  # number | text | textarea | enumeration | multi | bool | date | datetime
    label: str
    description: str
    options: tuple[str, ...] = ()


CRM_FIELDS: tuple[CrmField, ...] = (
    CrmField(
        "p_expand",
        "expansion_p_expand",
        "Expansion_P_Expand__c",
        "number",
        "Expansion: probability",
        "Calibrated probability that the account expands (upgrade or seats) in the horizon.",
    ),
    CrmField(
        "p_post_upsell_churn",
        "expansion_p_post_upsell_churn",
        "Expansion_P_Post_Upsell_Churn__c",
        "number",
        "Expansion: post-upsell churn risk",
        "Probability that the likely next step is reversed (downgrade or cancel) afterwards.",
    ),
    CrmField(
        "expected_net_value",
        "expansion_expected_net_value",
        "Expansion_Expected_Net_Value__c",
        "number",
        "Expansion: expected net value (MRR)",
        "p_expand x uplift MRR x (1 - post-upsell churn risk); the ranking key.",
    ),
    CrmField(
        "expected_uplift_mrr",
        "expansion_expected_uplift_mrr",
        "Expansion_Expected_Uplift_MRR__c",
        "number",
        "Expansion: uplift MRR of the next step",
        "MRR gained by the likely next step, from the price list.",
    ),
    CrmField(
        "rank",
        "expansion_rank",
        "Expansion_Rank__c",
        "number",
        "Expansion: rank",
        "1 = call first, by expected net value; empty when suppressed.",
    ),
    CrmField(
        "next_step",
        "expansion_next_step",
        "Expansion_Next_Step__c",
        "text",
        "Expansion: next step",
        "The likely next step, e.g. 'upgrade to pro' or 'add 3 seats'.",
    ),
    CrmField(
        "triggers",
        "expansion_triggers",
        "Expansion_Triggers__c",
        "multi",
        "Expansion: PQL triggers",
        "Product-qualified-lead rules that fired.",
        tuple(TRIGGERS),
    ),
    CrmField(
        "route",
        "expansion_route",
        "Expansion_Route__c",
        "enumeration",
        "Expansion: route",
        "csm (large account or value) or automated.",
        tuple(ROUTES),
    ),
    CrmField(
        "suppressed",
        "expansion_suppressed",
        "Expansion_Suppressed__c",
        "bool",
        "Expansion: suppressed",
        "Do not pitch now (see the suppression reason).",
    ),
    CrmField(
        "suppression_reason",
        "expansion_suppression_reason",
        "Expansion_Suppression_Reason__c",
        "text",
        "Expansion: suppression reason",
        "Why the account must not be pitched now.",
    ),
    CrmField(
        "holdout",
        "expansion_holdout",
        "Expansion_Holdout__c",
        "bool",
        "Expansion: holdout",
        "In the holdout (control group): do not contact; it measures what outreach adds.",
    ),
    CrmField(
        "reasons_text",
        "expansion_reasons",
        "Expansion_Reasons__c",
        "textarea",
        "Expansion: top reasons",
        "Strongest reasons for the score (contributions on the log-odds scale).",
    ),
    CrmField(
        "as_of",
        "expansion_as_of",
        "Expansion_As_Of__c",
        "date",
        "Expansion: data as of",
        "The date the features were computed at.",
    ),
    CrmField(
        "scored_at",
        "expansion_scored_at",
        "Expansion_Scored_At__c",
        "datetime",
        "Expansion: scored at",
        "When the batch run scored the account.",
    ),
    CrmField(
        "model_versions",
        "expansion_model_versions",
        "Expansion_Model_Versions__c",
        "text",
        "Expansion: model versions",
        "Registered model versions that produced the scores.",
    ),
)
NUMBER_DIGITS = {"p_expand": 6, "p_post_upsell_churn": 6, "rank": 0}


def _model_versions(record: dict[str, Any]) -> str:
    return (
        f"{PROPENSITY_MODEL}:{record['propensity_model_version']},"
        f"{POST_UPSELL_MODEL}:{record['post_upsell_model_version']}"
    )


def _value(record: dict[str, Any], column: str) -> Any:
    return _model_versions(record) if column == "model_versions" else record[column]


def _epoch_ms(value: date | datetime) -> int:
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    return int(value.astimezone(UTC).timestamp() * 1000)


def hubspot_value(field: CrmField, value: Any) -> str:
    """A value as HubSpot takes it: always a string, `""` to clear."""
    if value is None:
        return ""
    if field.kind == "number":  # fixed point: never `1e-06`
        return f"{float(value):.{NUMBER_DIGITS.get(field.column, 2)}f}"
    if field.kind == "bool":
        return "true" if value else "false"
    if field.kind == "multi":
        return ";".join(value)
    if field.kind in ("date", "datetime"):
        return str(_epoch_ms(value))
    return str(value)


def salesforce_value(field: CrmField, value: Any) -> Any:
    """A value as Salesforce takes it in JSON: null clears a field."""
    if value is None:
        return None
    if field.kind == "number":
        digits = NUMBER_DIGITS.get(field.column, 2)
        return int(value) if digits == 0 else round(float(value), digits)
    if field.kind == "bool":
        return bool(value)
    if field.kind == "multi":
        return ";".join(value) or None
    if field.kind == "date":
        return value.isoformat()
    if field.kind == "datetime":
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return str(value)


def hubspot_property_definitions() -> list[dict[str, Any]]:
    """`POST /crm/v3/properties/companies` bodies (PropertyCreate) for our properties."""
    types = {
        "number": ("number", "number"),
        "text": ("string", "text"),
        "textarea": ("string", "textarea"),
        "enumeration": ("enumeration", "select"),
        "multi": ("enumeration", "checkbox"),
        "bool": ("bool", "booleancheckbox"),
        "date": ("date", "date"),
        "datetime": ("datetime", "date"),
    }
    out = []
    for f in CRM_FIELDS:
        kind, field_type = types[f.kind]
        body: dict[str, Any] = {
            "name": f.hubspot,
            "label": f.label,
            "type": kind,
            "fieldType": field_type,
            "groupName": "companyinformation",
            "description": f.description,
        }
        if f.kind == "bool":
            body["options"] = [
                {"label": "Yes", "value": "true", "displayOrder": 0, "hidden": False},
                {"label": "No", "value": "false", "displayOrder": 1, "hidden": False},
            ]
        elif f.options:
            body["options"] = [
                {"label": o, "value": o, "displayOrder": i, "hidden": False}
                for i, o in enumerate(f.options)
            ]
        out.append(body)
    return out


def salesforce_field_definitions() -> list[dict[str, Any]]:
    """What an admin creates on Account in Setup (documentation, not an API body)."""
    types = {
        "number": "Number(12, 6)",
        "text": "Text(255)",
        "textarea": "Long Text Area(32768)",
        "enumeration": "Picklist",
        "multi": "Picklist (Multi-Select)",
        "bool": "Checkbox",
        "date": "Date",
        "datetime": "Date/Time",
    }
    return [
        {
            "fullName": f"Account.{f.salesforce}",
            "label": f.label,
            "type": types[f.kind],
            "description": f.description,
            **({"values": list(f.options)} if f.options else {}),
        }
        for f in CRM_FIELDS
    ]
