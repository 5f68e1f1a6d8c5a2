"""What the feature build reads from the environment: one typed, frozen object, read once.

Only what `features/` itself needs: DuckDB's memory limit and how far in the future a row may
be dated. The service's and the jobs' settings (models, API keys, routing) are
`serving/settings.py`; both read `EXPANSION_*` variables, each only its own. Tests that change
a variable call `get_feature_settings.cache_clear()`. Nothing here touches the disk at import.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FeatureSettings(BaseSettings):
    """How feature builds use memory and which rows they quarantine (env prefix `EXPANSION_`)."""

    model_config = SettingsConfigDict(
        env_prefix="EXPANSION_", frozen=True, extra="forbid", populate_by_name=True
    )

    duckdb_memory_limit: str | None = Field(
        "25%",
        description="DuckDB's memory limit for feature builds ('6GB', or a share of RAM such "
        "as '25%'); beyond it DuckDB spills to its temp directory, slower but within budget. "
        "Empty: DuckDB's own default (80% of RAM).",
    )
    future_tolerance_days: float = Field(
        1.0,
        ge=0,
        description="Rows dated more than this after the moment of the run are quarantined "
        "(future_timestamp): clocks and exports drift a little, not by months.",
    )


@lru_cache(maxsize=1)
def get_feature_settings() -> FeatureSettings:
    return FeatureSettings()
