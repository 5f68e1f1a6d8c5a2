"""Product-qualified-lead (PQL) triggers: the rule-based signals CS teams already use.

Each trigger is a named rule over the feature frame. The rule-based PQL score (the baseline the
models must beat) is the number of triggers that fired. Thresholds are a typed, frozen config so
the what-if notebook and the service can change them without touching code.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field


class TriggerThresholds(BaseModel):
    """Thresholds of the PQL triggers (defaults from the mission's source material)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    quota_utilization: float = Field(0.85, description="Any quota at or above this share.")
    power_events_14d: float = Field(3, description="Power-feature activations in 14 days.")
    users_added_30d: float = Field(2, description="Seats/users added in 30 days.")
    distinct_features_30d: float = Field(4, description="Product features used in 30 days.")
    pricing_page_visits_30d: float = Field(1, description="Pricing-page visits in 30 days.")


Rule = Callable[[pd.DataFrame, TriggerThresholds], pd.Series]

TRIGGERS: dict[str, tuple[str, Rule]] = {
    "quota_85": (
        "A quota is at or above {quota_utilization:.0%} of its monthly limit",
        lambda f, th: f["quota_util_max"] >= th.quota_utilization,
    ),
    "power_user": (
        "{power_events_14d:.0f}+ power-feature activations in 14 days",
        lambda f, th: f["power_events_14d"] >= th.power_events_14d,
    ),
    "seat_growth": (
        "{users_added_30d:.0f}+ users added in 30 days",
        lambda f, th: f["users_added_30d"] >= th.users_added_30d,
    ),
    "breadth": (
        "{distinct_features_30d:.0f}+ product features used in 30 days",
        lambda f, th: f["distinct_features_30d"] >= th.distinct_features_30d,
    ),
    "pricing_page": (
        "{pricing_page_visits_30d:.0f}+ pricing-page visits in 30 days",
        lambda f, th: f["pricing_page_visits_30d"] >= th.pricing_page_visits_30d,
    ),
}


def trigger_flags(
    features: pd.DataFrame, thresholds: TriggerThresholds | None = None
) -> pd.DataFrame:
    """One boolean column per trigger (missing features never fire)."""
    th = thresholds or TriggerThresholds()
    return pd.DataFrame(
        {
            name: rule(features, th).fillna(False).astype(bool)
            for name, (_, rule) in TRIGGERS.items()
        },
        index=features.index,
    )


def pql_score(features: pd.DataFrame, thresholds: TriggerThresholds | None = None) -> pd.Series:
    """The rule-based PQL score: how many triggers fired (0-5)."""
    return trigger_flags(features, thresholds).sum(axis=1).astype("int64")


def fired_triggers(
    features: pd.DataFrame, thresholds: TriggerThresholds | None = None
) -> list[list[str]]:
    """For each row, the names of the triggers that fired, in registry order."""
    flags = trigger_flags(features, thresholds)
    names = np.array(flags.columns)
    return [names[row].tolist() for row in flags.to_numpy()]


def describe_trigger(name: str, thresholds: TriggerThresholds | None = None) -> str:
    th = thresholds or TriggerThresholds()
    return TRIGGERS[name][0].format(**th.model_dump())
