"""The rule baselines the scoring core falls back to when no model clears the quality floor.

- Upgrade propensity: the PQL rules of `features.triggers` (quota at 85%+, power user, seat
  growth, breadth, pricing-page visits); the raw score is how many fired (0-5).
- Post-upsell churn: the health rules below (no adoption of what was bought in 30 days, usage
  falling, under half of the seats in use); the raw score is how many hold (0-3). A prospective
  score (before the upsell) cannot know adoption, so only the last two can hold there.

A rule count is not a probability, and `expected_net_value` needs one: training records, for
each model, the positive rate per rule score on its training and validation rows
(`rule_baseline` in the model's contract metadata), and the baseline turns a score into that
rate. Explanations are the rules that fired, one point each: `sum(contributions) + base` is the
rule score, as a model's contributions add up to its margin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from features.registry import FEATURE_SET_VERSION
from features.triggers import TRIGGERS, TriggerThresholds
from serving.model import ModelContract
from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL

# The column each PQL trigger reads: what a reason shows for a fired rule.
PQL_RULE_FEATURES = {
    "quota_85": "quota_util_max",
    "power_user": "power_events_14d",
    "seat_growth": "users_added_30d",
    "breadth": "distinct_features_30d",
    "pricing_page": "pricing_page_visits_30d",
}

HealthRule = Callable[[pd.DataFrame], pd.Series]

# The rule-based health score a CS team would use to call an upsell at risk, one point each:
# name -> (the column it reads, the rule).
HEALTH_RULES: dict[str, tuple[str, HealthRule]] = {
    "no adoption of what was bought in 30 days": ("adopted_30d", lambda f: f["adopted_30d"] == 0),
    "usage falling (events, last 30 days vs the 30 before)": (
        "events_trend_30d",
        lambda f: f["events_trend_30d"] < 1,
    ),
    "under half of the seats in use": ("seat_utilization", lambda f: f["seat_utilization"] < 0.5),
}
HEALTH_RULES_COLUMNS = [column for column, _ in HEALTH_RULES.values()]

RULE_NAMES = {PROPENSITY_MODEL: "PQL rules", POST_UPSELL_MODEL: "health rules"}
# The rules in a few words, for run summaries, /model_info and the report.
RULE_SUMMARIES = {
    PROPENSITY_MODEL: "PQL rules: quota 85%+, power use, seat growth, breadth, pricing page",
    POST_UPSELL_MODEL: "health rules: no adoption in 30 days, usage falling, seats under half used",
}


def _fired(frame: pd.DataFrame, column: str, rule: Callable[[], pd.Series]) -> np.ndarray:
    """A rule's verdict per row; a missing column or value never fires it."""
    if column not in frame.columns:
        return np.zeros(len(frame), bool)
    return rule().fillna(False).to_numpy(bool)


def pql_rule_flags(frame: pd.DataFrame, thresholds: TriggerThresholds | None = None) -> dict:
    """Column -> fired per row, for each PQL trigger."""
    th = thresholds or TriggerThresholds()
    return {
        PQL_RULE_FEATURES[name]: _fired(frame, PQL_RULE_FEATURES[name], lambda r=rule: r(frame, th))
        for name, (_, rule) in TRIGGERS.items()
    }


def health_rule_flags(frame: pd.DataFrame) -> dict:
    """Column -> fired per row, for each health rule."""
    return {
        column: _fired(frame, column, lambda r=rule: r(frame))
        for column, rule in HEALTH_RULES.values()
    }


def health_rules_score(frame: pd.DataFrame) -> np.ndarray:
    """How many churn-risk rules hold per row (missing values never fire a rule)."""
    return np.sum(list(health_rule_flags(frame).values()), axis=0).astype(int)


def rule_flags(model_name: str, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    if model_name == PROPENSITY_MODEL:
        return pql_rule_flags(frame)
    return health_rule_flags(frame)


def rule_score(model_name: str, frame: pd.DataFrame) -> np.ndarray:
    """The rule baseline's raw score of `model_name`: how many of its rules fired."""
    flags = list(rule_flags(model_name, frame).values())
    return np.sum(flags, axis=0).astype(float) if flags else np.zeros(len(frame))


def rule_rates(score: np.ndarray, y: np.ndarray, prior_rows: float = 10.0) -> dict[str, Any]:
    """The positive rate per rule score, shrunk toward the overall rate on few rows.

    Rates stay inside [1/(n+1), n/(n+1)] of the n rows they were measured on: no hard 0 or 1.
    """
    score, y = np.asarray(score, float), np.asarray(y, float)
    n = len(y)
    overall = float(y.mean()) if n else float("nan")
    lo, hi = 1 / (n + 1), n / (n + 1)
    levels = {}
    for level in np.unique(score):
        mask = score == level
        rate = (y[mask].sum() + prior_rows * overall) / (mask.sum() + prior_rows)
        levels[str(int(level))] = float(np.clip(rate, lo, hi))
    return {"levels": levels, "overall": float(np.clip(overall, lo, hi)), "rows": n}


class RuleBaseline:
    """A rule baseline with the scoring interface of `ScoringModel` (margin = rule score)."""

    def __init__(self, contract: ModelContract, rates: dict[str, Any]) -> None:
        self.contract = contract
        self.rates = rates
        self.booster = None  # no trees: explanations go through `contributions`

    def margin(self, features: pd.DataFrame) -> np.ndarray:
        """The rule score: how many rules fired (not log-odds)."""
        contrib, base = self.contributions(features)
        return contrib.sum(axis=1) + base

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """The positive rate training observed at each rule score."""
        levels, overall = self.rates["levels"], self.rates["overall"]
        return np.array(
            [levels.get(str(int(s)), overall) for s in self.margin(features)], dtype="float64"
        )

    def contributions(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """One point per fired rule, on its column; base value 0."""
        flags = rule_flags(self.contract.name, features)
        out = np.zeros((len(features), len(self.contract.features)))
        for j, name in enumerate(self.contract.features):
            if name in flags:
                out[:, j] = flags[name]
        return out, np.zeros(len(features))

    def input_matrix(self, features: pd.DataFrame) -> np.ndarray:
        """What `matrix_contributions` explains (as `ScoringModel.input_matrix`): the rules are
        cheap, so the prepared rows are their contributions already, base value last."""
        contrib, base = self.contributions(features)
        return np.column_stack([contrib, base])

    def matrix_contributions(self, matrix: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Contributions of rows of `input_matrix` (features, then the base value)."""
        return matrix


def rule_baseline(
    name: str, source: dict[str, Any], expected: list[str], reason: str
) -> RuleBaseline:
    """The baseline of model `name`, with the rates recorded in a version's `source` metadata.

    `source` is the contract metadata of the version that measured the rates (the champion
    below the floor, or the newest version when there is no champion); its training window,
    drift sample and prospective inputs carry over so the rest of the core works unchanged.
    """
    recorded = source.get("rule_baseline")
    if not recorded or not recorded.get("levels"):
        raise ValueError(
            f"{name}: no champion clears the quality floor and the newest version records no "
            "rule-baseline rates (trained before rule baselines were recorded): retrain with "
            "`expansion train`"
        )
    columns = PQL_RULE_FEATURES.values() if name == PROPENSITY_MODEL else HEALTH_RULES_COLUMNS
    extra = [c for c in source.get("extra_features", []) if c in HEALTH_RULES_COLUMNS]
    features = [c for c in columns if c in set(expected) or c in extra]
    metadata = {
        **source,
        "registry_subset": True,
        "extra_features": extra,
        "model_source": reason,
    }
    contract = ModelContract(
        name=name,
        features=features,
        categorical={},
        feature_set_version=FEATURE_SET_VERSION,
        kind="rules",  # type: ignore[arg-type]
        calibration="none",
        metadata=metadata,
    )
    return RuleBaseline(contract, recorded)


def describe_rules(name: str) -> str:
    """The baseline in a few words, for run summaries, /model_info and the report."""
    return RULE_SUMMARIES[name]
