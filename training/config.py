"""The training configuration: one typed, frozen object with sensible defaults.

Load it from an optional TOML file (`expansion train --config FILE`); unknown keys are errors.
Seeds fix everything: the same data, config and seed give identical models and metrics.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LightGBMParams(_Frozen):
    """LightGBM settings (shallow trees: TreeSHAP cost grows with depth)."""

    num_leaves: int = 15
    max_depth: int = 5
    learning_rate: float = 0.05
    n_estimators: int = 600
    min_child_samples: int = 40
    subsample: float = 0.8
    subsample_freq: int = 1
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    reg_alpha: float = 0.0
    early_stopping_rounds: int = 50


class SplitConfig(_Frozen):
    """Time-based split by observation date, with a gap of one label horizon between parts."""

    validation_dates: int = Field(2, ge=1, description="Observation dates in validation.")
    test_dates: int = Field(2, ge=1, description="Observation dates in the test period.")


class PostUpsellConfig(_Frozen):
    """The post-upsell churn model: small data, strong regularization."""

    min_positives: int = Field(
        60, description="Fewer positive expansions: logistic regression only, no LightGBM."
    )
    validation_share: float = 0.2
    test_share: float = 0.25
    lightgbm: LightGBMParams = LightGBMParams(
        num_leaves=7,
        max_depth=3,
        min_child_samples=30,
        reg_lambda=10.0,
        learning_rate=0.03,
        n_estimators=400,
    )
    logistic_c: float = 0.1
    features: tuple[str, ...] = Field(
        (
            "plan_tier",
            "mrr",
            "tenure_days",
            "seats",
            "seat_utilization",
            "quota_util_max",
            "distinct_features_30d",
            "active_days_30d",
            "stickiness_30d",
            "active_users_trend_30d",
            "events_trend_30d",
            "days_since_last_event",
            "past_contractions",
            "support_signals_30d",
            "users_added_30d",
        ),
        description="Pre-expansion features of the churn model (a few hundred rows cannot "
        "carry the whole registry); the expansion's kind, size and adoption are added.",
    )


class QualityFloor(_Frozen):
    """What a model must show on its test rows before `expansion promote` makes it champion.

    Training logs the test ROC-AUC's bootstrap interval (seeded); promote reads it with the
    test row and positive counts and the rule baseline's AUC on the same rows.
    """

    min_test_rows: int = Field(100, ge=1, description="Fewer test rows: refused.")
    min_test_positives: int = Field(20, ge=1, description="Fewer positives in test: refused.")
    bootstrap_samples: int = Field(1000, ge=100, description="Resamples for the AUC interval.")
    interval_level: float = Field(
        0.95, gt=0, lt=1, description="The interval's lower end must be above 0.5."
    )


class TrainingConfig(_Frozen):
    seed: int = 42
    cadence: Literal["monthly", "weekly"] = "monthly"
    horizon_days: int = 60
    post_upsell_days: int = 90
    warmup_days: int = Field(90, description="History required before the first date.")
    # Short histories (training.history): relax the plan only as far as the data needs.
    short_history: Literal["auto", "refuse"] = Field(
        "auto", description="'auto': shorten warm-up, cadence and validation gap if needed."
    )
    min_warmup_days: int = Field(30, ge=1, description="Shortest warm-up 'auto' may use.")
    min_train_dates: int = Field(2, ge=1, description="Training dates a shortened plan needs.")
    validation_account_share: float = Field(
        0.2, gt=0, lt=1, description="Accounts held out for validation in a shortened plan."
    )
    split: SplitConfig = SplitConfig()
    propensity: LightGBMParams = LightGBMParams()
    post_upsell: PostUpsellConfig = PostUpsellConfig()
    calibration: Literal["auto", "isotonic", "sigmoid"] = "auto"
    baseline_logistic_c: float = 1.0
    shap_sample: int = Field(2000, description="Rows explained for the SHAP summary plot.")
    quality_floor: QualityFloor = QualityFloor()

    @classmethod
    def from_toml(cls, path: Path | None) -> TrainingConfig:
        if path is None:
            return cls()
        with Path(path).open("rb") as fh:
            return cls.model_validate(tomllib.load(fh))
