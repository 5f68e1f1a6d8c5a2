"""Request and response bodies of the scoring API, declared once at the HTTP boundary.

Every field carries a description and the models carry examples, so the OpenAPI document the
service publishes at `/docs.json` (and the Swagger page at `/`) documents the API. Requests are
validated here (a malformed body is answered 400 naming the field); everything inside trusts
them. Probabilities are calibrated; `contribution` and `base_value` are on the log-odds scale
of the raw model score (TreeSHAP for LightGBM): contributions plus the base value add up to it.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

MAX_ACCOUNTS = 1000  # per /score request: enough for a CSM's book, small enough to stay fast
MAX_UNKNOWN_FIELDS = 20  # an error names this many unknown fields, then counts the rest

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
AccountId = Annotated[str, Field(min_length=1, max_length=200, examples=["acct_000042"])]


class _Body(BaseModel):
    """A request body: strict types, and unknown fields are an error, not silently dropped.

    Unknown fields are one error naming the first few, not one error each as pydantic's
    `extra="forbid"` reports them: a body of 200,000 made-up keys meant 200,000 errors, ~9 s
    of server time and an error body of tens of MB. So extra fields are let in and refused
    after validation (a "before" validator would do it sooner, but pydantic then validates
    the body as Python, not JSON, and strict mode refuses dates sent as strings); the JSON
    schema still says `additionalProperties: false`.

    Model-level examples use OpenAPI 3.0's `example`: BentoML 1.4 builds its OpenAPI schema
    objects from the JSON schema and fails on a model-level `examples` key.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    @model_validator(mode="after")
    def _no_unknown_fields(self) -> Self:
        unknown = [str(k) for k in self.model_extra or {}]
        if unknown:
            shown = [k if len(k) <= 40 else f"{k[:40]}..." for k in unknown[:MAX_UNKNOWN_FIELDS]]
            more = len(unknown) - len(shown)
            raise ValueError(
                f"{len(unknown)} unknown field(s) {shown}{f' and {more} more' if more else ''}; "
                f"known: {', '.join(type(self).model_fields)}"
            )
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler.resolve_ref_schema(handler(core_schema))
        schema["additionalProperties"] = False
        return schema


def feature_row_example(features: list[str], categorical: dict[str, list[str]]) -> dict[str, Any]:
    """A `features` object the served models accept: every feature they need, typed right.

    A row must name every model feature (a missing one is answered 400), and the features
    depend on the dataset (one per quota metric, say), so no fixed example could be sent as
    is: the service puts this one, made from its models, into its OpenAPI document. Values are
    placeholders (0, or a categorical feature's first level), not an account's data.
    """
    return {
        name: (categorical[name][0] if categorical[name] else None) if name in categorical else 0
        for name in features
    }


# --- pieces ----------------------------------------------------------------------------------


class Reason(BaseModel):
    """One feature's push on the raw score (log-odds), with its value and a readable text."""

    feature: str = Field(description="Feature column name.", examples=["seat_utilization"])
    value: float | str | None = Field(
        description="The account's value of the feature (null when unknown).", examples=[1.06]
    )
    contribution: float = Field(
        description="Contribution to the raw score (log-odds; rule points for a rule baseline); "
        "positive pushes it up. 0 on a record flagging a value far outside the range the model "
        "saw in training.",
        examples=[0.24],
    )
    text: str = Field(
        description="Plain-language reason.", examples=["Seat utilization 106% (+0.24)"]
    )


class ScoredAccount(BaseModel):
    """One account's upsell score, its likely next step, routing and its top reasons."""

    account_id: str = Field(description="The account.", examples=["acct_000042"])
    as_of: date = Field(description="Date the features were computed as of.")
    p_expand: float | None = Field(
        description="Calibrated probability that the account expands within the horizon "
        "(null for a canceled account).",
        examples=[0.31],
    )
    p_post_upsell_churn: float | None = Field(
        description="Probability the account churns or contracts after taking `next_step`.",
        examples=[0.08],
    )
    expected_uplift_mrr: float | None = Field(
        description="mrr gained if the account takes `next_step` (from the price list).",
        examples=[120.0],
    )
    expected_net_value: float | None = Field(
        description="p_expand x expected_uplift_mrr x (1 - p_post_upsell_churn): the sort key.",
        examples=[34.2],
    )
    next_step: str | None = Field(
        description="Likely next purchase (null for a canceled account).", examples=["add 3 seats"]
    )
    triggers: list[str] = Field(
        description="Product-qualified triggers that fired.", examples=[["seat_pressure"]]
    )
    route: Literal["csm", "automated"] = Field(
        description="`csm` for large accounts or large expected value, else `automated`."
    )
    suppressed: bool = Field(description="True when the account must not be pitched now.")
    suppression_reason: str | None = Field(
        description="Why it is suppressed (null when it is not).",
        examples=["touched within the 14-day cooldown"],
    )
    reasons: list[Reason] = Field(
        description="Strongest reasons pushing p_expand up, one per feature family "
        "(empty for a canceled account)."
    )
    reasons_text: str = Field(description="The reasons as one line.")
    base_value: float = Field(
        description="The propensity model's base value (log-odds) the contributions add to."
    )
    mrr: float | None = Field(description="Current monthly recurring revenue.", examples=[1332])
    csm_owner: str | None = Field(description="Owning CSM.", examples=["csm_09"])
    segment: str | None = Field(description="Customer segment.", examples=["mid_market"])


class RankedAccount(ScoredAccount):
    """A scored account with its place in the list (1 = call first)."""

    rank: int = Field(ge=1, description="Position in the ranked list, 1 first.", examples=[1])
    holdout: bool = Field(
        False,
        description="In the holdout experiment's control group: do not contact (listed only "
        "with `include_holdout`).",
    )


class FeatureRow(_Body):
    """Features of one account computed by the caller (instead of the served snapshot)."""

    account_id: AccountId = Field(description="Identifier echoed back in the result.")
    # No static example: the served document gets a complete one (`feature_row_example`).
    features: dict[str, FiniteFloat | str | None] = Field(
        description="Every model feature by name, as GET /model_info lists them (the example "
        "lists those of the served models, with placeholder values): null when unknown; a "
        "missing or unknown name is answered 400. Categorical features (e.g. `segment`) are "
        "strings, the rest numbers.",
    )
    as_of: date | None = Field(
        None, description="Date the features describe (default: the served snapshot's)."
    )
    plan_id: str | None = Field(
        None, description="Current plan (prices the next step).", examples=["plan_team"]
    )
    status: Literal["active", "trialing", "canceled"] | None = Field(
        None, description="Subscription status; `canceled` is suppressed."
    )
    csm_owner: str | None = Field(None, description="Owning CSM.", examples=["csm_09"])
    last_outreach_at: datetime | None = Field(
        None, description="Last sales touch (starts the outreach cooldown)."
    )


# --- requests --------------------------------------------------------------------------------


class ScoreRequest(_Body):
    """Accounts to score: ids from the served snapshot, or feature rows. Exactly one of them."""

    model_config = ConfigDict(
        strict=True,
        json_schema_extra={
            "example": {"account_ids": ["acct_000042", "acct_000007"]},
            "oneOf": [{"required": ["account_ids"]}, {"required": ["rows"]}],
        },
    )

    # Absent, not null: the OpenAPI document (BentoML drops `null` from top-level unions)
    # says an array, so an explicit null is rejected too.
    account_ids: list[AccountId] = Field(  # type: ignore[assignment]
        None,
        min_length=1,
        max_length=MAX_ACCOUNTS,
        description=f"Accounts of the served snapshot (1 to {MAX_ACCOUNTS}); an unknown id "
        "is answered 404 naming it.",
        examples=[["acct_000042"]],
    )
    rows: list[FeatureRow] = Field(  # type: ignore[assignment]
        None,
        min_length=1,
        max_length=MAX_ACCOUNTS,
        description=f"Feature rows computed elsewhere (1 to {MAX_ACCOUNTS}).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ScoreRequest:
        if (self.account_ids is None) == (self.rows is None):
            raise ValueError("send exactly one of `account_ids` or `rows`")
        return self


class RankRequest(_Body):
    """Filters and order for the call list."""

    model_config = ConfigDict(
        strict=True,
        json_schema_extra={"example": {"limit": 20, "csm_owner": "csm_09"}},
    )

    limit: int = Field(50, ge=1, le=MAX_ACCOUNTS, description="How many accounts to return.")
    csm_owner: str | None = Field(None, description="Only this CSM's accounts.")
    segment: str | None = Field(None, description="Only this segment.", examples=["smb"])
    min_mrr: FiniteFloat | None = Field(
        None, ge=0, description="Only accounts with at least this mrr.", examples=[100.0]
    )
    include_suppressed: bool = Field(
        False, description="Also list accounts that must not be pitched now."
    )
    include_holdout: bool = Field(
        False,
        description="Also list accounts held out by the holdout experiment (marked "
        "`holdout: true`; they must not be contacted).",
    )
    sort: Literal["net_value", "propensity"] = Field(
        "net_value",
        description="`net_value`: expected net mrr (value-weighted); `propensity`: p_expand.",
    )


class ExplainRequest(_Body):
    """The account to explain."""

    model_config = ConfigDict(
        strict=True, json_schema_extra={"example": {"account_id": "acct_000042"}}
    )

    account_id: AccountId = Field(description="Account of the served snapshot.")


# --- responses -------------------------------------------------------------------------------


class ScoreResponse(BaseModel):
    """One result per requested account, in request order."""

    as_of: date = Field(description="As-of date of the served snapshot.")
    model_versions: dict[str, str] = Field(
        description="Registered model versions that scored.",
        examples=[{"expansion-propensity": "3", "post-upsell-churn": "2"}],
    )
    accounts: list[ScoredAccount] = Field(description="The scored accounts.")


class RankResponse(BaseModel):
    """The top of the call list."""

    as_of: date = Field(description="As-of date of the served snapshot.")
    model_versions: dict[str, str] = Field(description="Registered model versions that scored.")
    total: int = Field(ge=0, description="Accounts matching the filters (before `limit`).")
    accounts: list[RankedAccount] = Field(description="Best first.")


class ModelExplanation(BaseModel):
    """Every feature's contribution to one model's raw score for one account."""

    model: str = Field(description="Registered model name.", examples=["expansion-propensity"])
    version: str = Field(description="Registered model version.", examples=["3"])
    margin: float = Field(description="Raw score (log-odds) before calibration.")
    base_value: float = Field(description="Base value: margin = base_value + sum(contributions).")
    probability: float | None = Field(
        description="Calibrated probability (null for a canceled account)."
    )
    contributions: list[Reason] = Field(
        description="One record per model feature, largest absolute contribution first."
    )


class ExplainResponse(BaseModel):
    """An account's score with the full explanation of both models."""

    account: ScoredAccount = Field(description="The account as /score returns it.")
    propensity: ModelExplanation = Field(description="The expansion-propensity model.")
    post_upsell: ModelExplanation = Field(
        description="The post-upsell churn model, for the account taking `next_step`."
    )


class ModelDescription(BaseModel):
    """A served model: which version, trained on what, and how it tested."""

    name: str = Field(description="Registered model name.")
    version: str = Field(description="Registered model version being served.")
    aliases: list[str] = Field(description="Aliases of that version (e.g. champion).")
    run_id: str = Field(description="MLflow run that trained it.")
    kind: str = Field(description="lightgbm, logistic, or rules (the rule baseline).")
    calibration: str = Field(description="isotonic, sigmoid or none.")
    feature_set_version: str = Field(description="Version of the feature definitions.")
    features: list[str] = Field(description="Input features, in model order.")
    training_window: list[str] | None = Field(description="First and last training as-of.")
    validation_window: list[str] | None = Field(description="Validation window, if any.")
    test_window: list[str] | None = Field(description="Held-out test window.")
    data_fingerprint: str | None = Field(description="Fingerprint of the training data.")
    git_commit: str | None = Field(description="Code version that trained it.")
    notes: list[str] = Field(description="Caveats recorded at training time.")
    metrics: dict[str, float] = Field(
        description="Test metrics (roc_auc, pr_auc, lift and precision at k, brier, ...)."
    )
    model_source: str = Field(
        description="`model vN` when the registered champion scores; `baseline (rules; why)` "
        "when no champion clears the quality floor and the documented rule baseline scores "
        "instead (the PQL rules for propensity, the health rules for post-upsell churn).",
        examples=["model v3"],
    )


class SnapshotDescription(BaseModel):
    """The feature snapshot accounts are scored from."""

    as_of: date = Field(description="Date the features were computed as of.")
    accounts: int = Field(description="Accounts in the snapshot.")
    loaded_at: datetime = Field(description="When the service loaded it (UTC).")


class ServiceInfo(BaseModel):
    """What the service is serving right now."""

    models: list[ModelDescription] = Field(description="The two served models.")
    snapshot: SnapshotDescription = Field(description="The served feature snapshot.")
    reload_seconds: float = Field(
        description="How often the service checks for a new snapshot or champion."
    )


class ErrorBody(BaseModel):
    """An error: what went wrong, naming the field or account concerned."""

    error: str = Field(description="Message.", examples=["unknown account_id(s): ['acct_x']"])
    detail: str | None = Field(None, description="More detail, when there is any.")
