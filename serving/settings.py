"""Settings of the service and the jobs: one typed, frozen object, read from the environment once.

The service, the batch job, training and the CLI read `get_settings()`; tests build their own
`Settings(...)`. Secrets (API keys) come only from the environment. Nothing here touches the
disk at import. What the feature build itself reads (DuckDB's memory limit, the tolerance for
future rows) lives in `features/settings.py`, so that `features/` needs nothing from here.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROPENSITY_MODEL = "expansion-propensity"
POST_UPSELL_MODEL = "post-upsell-churn"


class Settings(BaseSettings):
    """Where models live and how the service behaves (env prefix `EXPANSION_`)."""

    model_config = SettingsConfigDict(
        env_prefix="EXPANSION_", frozen=True, extra="forbid", populate_by_name=True
    )

    models_dir: Path = Field(Path("models"), description="Embedded MLflow store and snapshots.")
    tracking_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "EXPANSION_TRACKING_URI"),
        description="MLflow tracking URI; default: a SQLite store under models_dir.",
    )
    experiment: str = Field("expansion-scoring", description="MLflow experiment name.")
    api_keys: SecretStr = Field(
        SecretStr(""), description="Comma-separated API keys for the service (never printed)."
    )
    auth_enabled: bool = Field(True, description="Require an API key on every endpoint.")
    csm_arr_threshold: float = Field(
        12_000.0, description="Accounts at or above this ARR are routed to a CSM."
    )
    csm_value_threshold: float = Field(
        50.0, description="Expected net value (mrr) at or above which a CSM is routed."
    )
    suppress_after_expansion_days: int = Field(30, description="No pitch this soon after one.")
    outreach_cooldown_days: int = Field(14, description="No pitch this soon after a touch.")
    holdout_experiment: str = Field(
        "expansion-holdout",
        min_length=1,
        description="Id of the holdout experiment the batch assigns arms in (a new id draws "
        "new arms; arms are kept for the experiment's duration).",
    )
    holdout_share: float = Field(
        0.10, ge=0, lt=1, description="Share of actionable accounts held out, in each route."
    )
    holdout_start: date | None = Field(None, description="First as-of day of the experiment.")
    holdout_end: date | None = Field(None, description="As-of day the experiment ends (excl.).")
    holdout_store: str | None = Field(
        None,
        description="Database holding the experiment's arms that the service reads "
        "(default: the batch's default target, models_dir/crm.db).",
    )
    reasons: int = Field(3, description="Reason codes returned per account.")
    reload_seconds: float = Field(
        30.0, gt=0, description="How often the service checks for a new snapshot or champion."
    )
    max_request_bytes: int = Field(
        4 * 1024 * 1024,
        gt=0,
        description="Largest request body the service reads (bytes); a larger one is answered "
        "413 before it is parsed. The default holds a full /score request of feature rows.",
    )

    @property
    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{(self.models_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        return (self.models_dir / "artifacts").resolve()

    @property
    def snapshot_path(self) -> Path:
        """The latest feature snapshot the service reads accounts from."""
        return self.models_dir / "snapshot" / "features.parquet"

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
