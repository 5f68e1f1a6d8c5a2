"""Fit and evaluate the two models on a time-based split.

- Upgrade propensity: LightGBM with early stopping on validation, then a calibrator (isotonic or
  sigmoid, whichever has the lower out-of-fold Brier score on validation).
- Post-upsell churn: LightGBM on the expansion rows with strong regularization, or a logistic
  regression when positives are too few (recorded in the run).
- Baselines on the same test rows: the rule-based PQL score (health rules for post-upsell
  churn) and a logistic regression.
- What promote's quality floor reads: test rows and positives, a seeded bootstrap interval of
  the test ROC-AUC, the rules' ROC-AUC on the same rows; and what serving needs to stand in
  with the rule baseline (the positive rate per rule score), to bound probabilities (the
  calibration row count) and to flag extrapolation (each feature's training range).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from features.build import Progress, feature_spec
from features.dataset import Dataset
from features.registry import FEATURE_SET_VERSION, FEATURES
from features.triggers import pql_score, trigger_flags
from serving.baseline import health_rules_score, rule_rates, rule_score
from serving.model import (
    ModelContract,
    ScoringModel,
    feature_ranges,
    fit_linear,
    probability_bounds,
)
from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL
from training.config import LightGBMParams, TrainingConfig
from training.evaluate import (
    bootstrap_auc_interval,
    plot_calibration,
    plot_gains,
    plot_importance,
    plot_shap_summary,
    probability_metrics,
    ranking_metrics,
    top_share_mask,
)
from training.history import hold_out_accounts, plan_history
from training.labels import (
    ADOPTION_AFTER_EXPANSION,
    ADOPTION_FEATURES,
    POST_UPSELL_LABEL,
    PROPENSITY_LABEL,
    LabelWindows,
    NotEnoughData,
    post_upsell_training_set,
    propensity_training_set,
)

# What `choose_calibrator` fits on the validation margins.
Calibrator = IsotonicRegression | LogisticRegression
# Features that grow with time (ages such as tenure, days since the last event or expansion):
# no training range is recorded for them, or every later batch would fall outside it.
AGING = [f.name for f in FEATURES if f.ages or f.since_last]


@dataclass
class FittedModel:
    """A fitted model with its evaluation, ready to be logged."""

    model: ScoringModel
    params: dict
    metrics: dict[str, float]
    plots: dict[str, Path] = field(default_factory=dict)
    test_frame: pd.DataFrame | None = None  # features + label, for promote's comparison
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Split:
    train: list[date]
    validation: list[date]
    test: list[date]


def time_split(dates: list[date], config: TrainingConfig) -> Split:
    """Train, validation and test by observation date, a label horizon apart."""
    dates = sorted(dates)
    gap = pd.Timedelta(days=config.horizon_days)
    test = dates[-config.split.test_dates :]
    before_test = [d for d in dates if test and pd.Timestamp(d) + gap <= pd.Timestamp(test[0])]
    validation = before_test[-config.split.validation_dates :]
    train = [
        d
        for d in before_test
        if validation and pd.Timestamp(d) + gap <= pd.Timestamp(validation[0])
    ]
    if not train:
        found = f"{len(dates)} ({dates[0]} to {dates[-1]})" if dates else "none"
        raise NotEnoughData(
            f"not enough {config.cadence} observation dates for a train / validation / test split: "
            f"found {found}; the split needs {config.split.test_dates} test and "
            f"{config.split.validation_dates} validation dates plus training dates, each group "
            f"{config.horizon_days} days apart, and every date needs {config.warmup_days} days "
            f"of events before it and {config.horizon_days} days of data after it. Supply a "
            'longer history (or a weekly cadence: cadence = "weekly" in the config)'
        )
    return Split(train, validation, test)


def fingerprint(frame: pd.DataFrame) -> str:
    """A stable hash of a training frame's content."""
    hashed = pd.util.hash_pandas_object(frame.reset_index(drop=True), index=False)
    return hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()[:16]


def _lgb_params(p: LightGBMParams, seed: int) -> dict:
    return {
        "objective": "binary",
        "learning_rate": p.learning_rate,
        "num_leaves": p.num_leaves,
        "max_depth": p.max_depth,
        "min_child_samples": p.min_child_samples,
        "subsample": p.subsample,
        "subsample_freq": p.subsample_freq,
        "colsample_bytree": p.colsample_bytree,
        "reg_lambda": p.reg_lambda,
        "reg_alpha": p.reg_alpha,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 2,
        "verbose": -1,
    }


def fit_lightgbm(
    contract: ModelContract,
    train: pd.DataFrame,
    y_train: np.ndarray,
    valid: pd.DataFrame,
    y_valid: np.ndarray,
    p: LightGBMParams,
    seed: int,
) -> lgb.Booster:
    """LightGBM with early stopping on the validation rows."""
    scorer = ScoringModel(contract)
    dtrain = lgb.Dataset(scorer.frame(train), label=y_train, free_raw_data=False)
    dvalid = lgb.Dataset(scorer.frame(valid), label=y_valid, reference=dtrain)
    return lgb.train(
        _lgb_params(p, seed),
        dtrain,
        num_boost_round=p.n_estimators,
        valid_sets=[dvalid],
        callbacks=[lgb.early_stopping(p.early_stopping_rounds, verbose=False)],
    )


def choose_calibrator(
    margin: np.ndarray, y: np.ndarray, method: str, seed: int
) -> tuple[str, Calibrator, dict[str, float]]:
    """Fit the calibrator on validation; 'auto' picks the lower out-of-fold Brier score."""

    def fit(kind: str, m: np.ndarray, t: np.ndarray) -> Calibrator:
        if kind == "isotonic":
            return IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(m, t)
        return LogisticRegression(C=1e6, max_iter=1000).fit(m.reshape(-1, 1), t)

    def predict(cal: Calibrator, m: np.ndarray) -> np.ndarray:
        if isinstance(cal, IsotonicRegression):
            return np.clip(cal.predict(m), 1e-6, 1 - 1e-6)
        return cal.predict_proba(m.reshape(-1, 1))[:, 1]

    if method != "auto":
        return method, fit(method, margin, y), {}
    folds = np.random.default_rng(seed).integers(0, 2, len(y))
    scores = {}
    for kind in ("isotonic", "sigmoid"):
        out = np.zeros(len(y))
        for k in (0, 1):
            train, test = folds != k, folds == k
            if len(np.unique(y[train])) < 2:
                out[test] = y[train].mean()
                continue
            out[test] = predict(fit(kind, margin[train], y[train]), margin[test])
        scores[kind] = float(np.mean((out - y) ** 2))
    best = min(scores, key=scores.get)
    return best, fit(best, margin, y), {f"calibration_oof_brier_{k}": v for k, v in scores.items()}


def _categorical_levels(frame: pd.DataFrame, names: list[str]) -> dict[str, list[str]]:
    return {n: sorted(frame[n].dropna().astype(str).unique().tolist()) for n in names}


def train_propensity(
    dataset: Dataset, config: TrainingConfig, workdir: Path, progress: Progress | None = None
) -> FittedModel:
    """Fit, calibrate and evaluate the upgrade-propensity model."""
    windows = LabelWindows(config.horizon_days, config.post_upsell_days)
    plan = plan_history(dataset, config)
    split = Split(plan.train, plan.validation or plan.train, plan.test)
    frame = propensity_training_set(
        dataset, plan.train + plan.validation + plan.test, windows, progress=progress
    )
    spec = feature_spec(dataset)
    parts = {
        name: frame[frame["as_of"].dt.date.isin(ds_)].reset_index(drop=True)
        for name, ds_ in (
            ("train", split.train),
            ("validation", split.validation),
            ("test", split.test),
        )
    }
    if plan.validation_on_accounts:  # short history: validation = held-out accounts
        held = hold_out_accounts(
            parts["train"]["account_id"], config.validation_account_share, config.seed
        )
        parts["validation"] = parts["train"][held].reset_index(drop=True)
        parts["train"] = parts["train"][~held].reset_index(drop=True)
    train, valid, test = parts["train"], parts["validation"], parts["test"]
    y_tr, y_va, y_te = (p[PROPENSITY_LABEL].to_numpy() for p in (train, valid, test))
    contract = ModelContract(
        name=PROPENSITY_MODEL,
        features=spec.names,
        categorical=_categorical_levels(train, spec.categorical),
        feature_set_version=FEATURE_SET_VERSION,
        kind="lightgbm",
    )
    booster = fit_lightgbm(contract, train, y_tr, valid, y_va, config.propensity, config.seed)
    model = ScoringModel(contract, booster=booster)
    method, calibrator, cal_scores = choose_calibrator(
        model.margin(valid), y_va, config.calibration, config.seed
    )
    model.calibrator = calibrator
    contract.calibration = method
    contract.metadata["probability_bounds"] = probability_bounds(len(y_va))
    contract.metadata["feature_ranges"] = feature_ranges(train, contract, skip=AGING)
    seen = pd.concat([train, valid], ignore_index=True)
    contract.metadata["rule_baseline"] = rule_rates(
        rule_score(PROPENSITY_MODEL, seen), seen[PROPENSITY_LABEL].to_numpy()
    )

    p_test = model.predict_proba(test)
    uncalibrated = 1 / (1 + np.exp(-model.margin(test)))
    rules = pql_score(test).to_numpy().astype(float)
    baseline = ScoringModel(
        contract, linear=fit_linear(train, y_tr, contract, config.baseline_logistic_c, config.seed)
    )
    metrics = {
        **ranking_metrics(y_te, p_test, "test_"),
        **probability_metrics(y_te, p_test, "test_"),
        "test_brier_uncalibrated": float(np.mean((uncalibrated - y_te) ** 2)),
        **ranking_metrics(y_te, rules, "rules_"),
        **ranking_metrics(y_te, baseline.margin(test), "logreg_"),
        **probability_metrics(y_te, baseline.predict_proba(test), "logreg_"),
        **cal_scores,
        "best_iteration": float(booster.best_iteration),
        "rows_train": float(len(train)),
        "rows_validation": float(len(valid)),
        "rows_test": float(len(test)),
        "positive_rate_train": float(y_tr.mean()),
        "positive_rate_test": float(y_te.mean()),
    }
    metrics.update(floor_metrics(y_te, p_test, rules, config))
    flagged = trigger_flags(test).any(axis=1).to_numpy()
    metrics["test_top_decile_conversion"] = float(y_te[top_share_mask(p_test, 0.10)].mean())
    metrics["rules_flagged_conversion"] = float(y_te[flagged].mean()) if flagged.any() else 0.0
    metrics["rules_flagged_share"] = float(flagged.mean())
    metrics.update(
        _oracle_metrics(
            dataset,
            test,
            p_test,
            "as_of",
            "p_expand_60d",
            "expansion_probability.parquet",
            PROPENSITY_LABEL,
        )
    )
    contract.metadata.update(
        {
            "training_window": [str(split.train[0]), str(split.train[-1])],
            "validation_window": [str(split.validation[0]), str(split.validation[-1])],
            "test_window": [str(split.test[0]), str(split.test[-1])],
            "horizon_days": config.horizon_days,
            "history": plan.statements,  # what a short history shortened (empty: nothing)
            "data_fingerprint": fingerprint(train),
            "dataset": str(dataset.path),
            # Drift is measured against the latest training date: features such as tenure grow
            # with time, so a sample across all dates would flag every later batch.
            "training_feature_sample": _feature_sample(
                train[train["as_of"] == train["as_of"].max()], spec.names, config.seed
            ),
            "training_feature_sample_as_of": str(train["as_of"].max().date()),
        }
    )
    plots = {
        "calibration_curve.png": plot_calibration(
            y_te, p_test, workdir / "calibration_curve.png", "Upgrade propensity: calibration"
        ),
        "cumulative_gains.png": plot_gains(
            y_te,
            {"model": p_test, "rules (PQL score)": rules, "logistic": baseline.margin(test)},
            workdir / "cumulative_gains.png",
            "Upgrade propensity: cumulative gains",
        ),
        "importance.png": plot_importance(
            spec.names,
            booster.feature_importance("gain"),
            workdir / "importance.png",
            "Upgrade propensity: importance",
        ),
    }
    sample = test.sample(min(len(test), config.shap_sample), random_state=config.seed)
    contrib, _ = model.contributions(sample)
    plots["shap_summary.png"] = plot_shap_summary(
        contrib, model.frame(sample), spec.names, workdir / "shap_summary.png"
    )
    params = {
        **config.propensity.model_dump(),
        **plan.params(),
        "seed": config.seed,
        "cadence": plan.cadence,
        "horizon_days": config.horizon_days,
        "calibration": method,
        "feature_set_version": FEATURE_SET_VERSION,
        "n_features": len(spec.names),
    }
    return FittedModel(model, params, metrics, plots, test_frame=test, notes=plan.statements)


def floor_metrics(
    y: np.ndarray, p: np.ndarray, rules: np.ndarray, config: TrainingConfig
) -> dict[str, float]:
    """What promote's quality floor reads: test counts, the AUC interval, the rules' AUC."""
    low, high = bootstrap_auc_interval(
        y,
        p,
        config.seed,
        samples=config.quality_floor.bootstrap_samples,
        level=config.quality_floor.interval_level,
    )
    return {
        "positives_test": float(np.sum(y)),
        "test_roc_auc_ci_low": low,
        "test_roc_auc_ci_high": high,
        "test_roc_auc_ci_level": config.quality_floor.interval_level,
        **ranking_metrics(y, rules, "rules_"),
    }


def _feature_sample(frame: pd.DataFrame, names: list[str], seed: int) -> list[dict]:
    """A small sample of training features (for drift checks against new batches)."""
    sample = frame.sample(min(len(frame), 5000), random_state=seed)[names]
    return sample.astype(object).where(sample.notna(), None).to_dict("list")


def _oracle_metrics(
    dataset: Dataset,
    test: pd.DataFrame,
    p: np.ndarray,
    time_col: str,
    truth_col: str,
    truth_file: str,
    label: str,
) -> dict:
    """Where the dataset ships ground truth (`_truth/`), the oracle's AUC on the same rows."""
    from sklearn.metrics import roc_auc_score

    path = dataset.path / "_truth" / truth_file
    if not path.exists():
        return {}
    truth = pd.read_parquet(path)
    truth = truth.rename(
        columns={c: time_col for c in truth.columns if c in ("as_of", "expanded_at")}
    )
    merged = (
        test[["account_id", time_col, label]]
        .assign(p=p)
        .merge(truth[["account_id", time_col, truth_col]], on=["account_id", time_col], how="inner")
    )
    y = merged[label].to_numpy()
    if len(merged) == 0 or y.min() == y.max():
        return {}
    oracle = float(roc_auc_score(y, merged[truth_col]))
    model = float(roc_auc_score(y, merged["p"]))
    return {
        # the ceiling of any ranking on this data: the true probabilities' own top decile
        "oracle_precision_at_10": float(
            y[top_share_mask(merged[truth_col].to_numpy(), 0.1)].mean()
        ),
        "oracle_roc_auc": oracle,
        "oracle_rows": float(len(merged)),
        "model_roc_auc_on_oracle_rows": model,
        "auc_ratio_to_oracle": model / oracle,
    }


def train_post_upsell(
    dataset: Dataset, config: TrainingConfig, workdir: Path, progress: Progress | None = None
) -> FittedModel:
    """Fit and evaluate the post-upsell churn model on the expansion rows."""
    pc = config.post_upsell
    windows = LabelWindows(config.horizon_days, config.post_upsell_days)
    frame = post_upsell_training_set(dataset, windows, progress=progress)
    if len(frame) < 30:
        raise NotEnoughData(
            f"only {len(frame)} expansions with {config.post_upsell_days} days of follow-up: "
            "too few to train the post-upsell churn model on (30 needed)"
        )
    spec = feature_spec(dataset)
    missing = [f for f in pc.features if f not in spec.names]
    if missing:
        raise ValueError(f"post_upsell.features not built for this dataset: {missing}")
    names = [*pc.features, *ADOPTION_FEATURES, "adoption_known"]
    frame = frame.sort_values(["expanded_at", "account_id"]).reset_index(drop=True)
    t = frame["expanded_at"]
    gap = pd.Timedelta(days=config.post_upsell_days)
    test_start = t.quantile(1 - pc.test_share)
    test = frame[t >= test_start]
    # A label window's gap guards the test period only: a second 90-day gap between training
    # and validation would leave too few expansions to stop early and calibrate on.
    earlier = frame[t + gap <= test_start]
    notes = []
    if len(earlier) < 50:
        earlier = frame[t < test_start]
        notes.append("test period adjacent to training (no 90-day gap): too few expansions")
    te = earlier["expanded_at"]
    valid_start = te.quantile(1 - pc.validation_share / (1 - pc.test_share))
    train, valid = earlier[te < valid_start], earlier[te >= valid_start]
    train, valid, test = (_with_unknown_adoption(p) for p in (train, valid, test))
    y_tr, y_va = train[POST_UPSELL_LABEL].to_numpy(), valid[POST_UPSELL_LABEL].to_numpy()
    _require_both_outcomes(frame, y_tr, y_va, config.post_upsell_days)
    contract = ModelContract(
        name=POST_UPSELL_MODEL,
        features=names,
        categorical=_categorical_levels(train, [c for c in spec.categorical if c in names]),
        feature_set_version=FEATURE_SET_VERSION,
        kind="lightgbm",
    )
    positives = int(y_tr.sum()) // 2  # every expansion appears twice (adoption known/unknown)
    linear = ScoringModel(
        contract, linear=fit_linear(train, y_tr, contract, pc.logistic_c, config.seed)
    )
    model = linear
    if positives >= pc.min_positives and y_va.sum() > 0:
        booster = fit_lightgbm(contract, train, y_tr, valid, y_va, pc.lightgbm, config.seed)
        boosted = ScoringModel(contract, booster=booster)
        # Small data: keep the boosted trees only if they beat the logistic model on validation.
        losses = {
            kind: float(log_loss(y_va, 1 / (1 + np.exp(-m.margin(valid))), labels=[0, 1]))
            for kind, m in (("lightgbm", boosted), ("logistic", linear))
        }
        if losses["lightgbm"] <= losses["logistic"]:
            model = boosted
        else:
            notes.append(
                f"logistic regression: validation log loss {losses['logistic']:.4f} beat "
                f"LightGBM's {losses['lightgbm']:.4f}"
            )
    else:
        notes.append(
            f"logistic regression: only {positives} positives in training "
            f"(LightGBM needs {pc.min_positives})"
        )
    contract.kind = "lightgbm" if model.booster is not None else "logistic"
    method, calibrator, cal_scores = choose_calibrator(
        model.margin(valid), y_va, config.calibration, config.seed
    )
    model.calibrator, contract.calibration = calibrator, method
    contract.metadata["probability_bounds"] = probability_bounds(len(y_va) // 2)
    contract.metadata["feature_ranges"] = feature_ranges(train, contract, skip=AGING)
    # The health rules' churn rate per score, on prospective rows (adoption unknown) as the
    # baseline scores them when it stands in for this model.
    seen = pd.concat([train, valid], ignore_index=True)
    seen = seen[seen["adoption_known"] == 0]
    contract.metadata["rule_baseline"] = rule_rates(
        rule_score(POST_UPSELL_MODEL, seen), seen[POST_UPSELL_LABEL].to_numpy()
    )
    # Scores for a prospective upsell: adoption not yet observable.
    prospective = test[test["adoption_known"] == 0]
    observed = test[test["adoption_known"] == 1]
    p_pro, p_obs = model.predict_proba(prospective), model.predict_proba(observed)
    y_pro = prospective[POST_UPSELL_LABEL].to_numpy()
    metrics = {
        **ranking_metrics(y_pro, p_pro, "test_"),
        **probability_metrics(y_pro, p_pro, "test_"),
        **{
            f"test_with_adoption_{k}": v
            for k, v in ranking_metrics(observed[POST_UPSELL_LABEL].to_numpy(), p_obs).items()
        },
        **cal_scores,
        "rows_train": float(len(train) // 2),
        "rows_validation": float(len(valid) // 2),
        "rows_test": float(len(prospective)),
        "positives_train": float(positives),
        "positive_rate_test": float(y_pro.mean()) if len(y_pro) else float("nan"),
        "uses_logistic_fallback": float(contract.kind == "logistic"),
    }
    baseline = ScoringModel(
        contract, linear=fit_linear(train, y_tr, contract, config.baseline_logistic_c, config.seed)
    )
    metrics.update(ranking_metrics(y_pro, baseline.margin(prospective), "logreg_"))
    metrics.update(floor_metrics(y_pro, p_pro, health_rules_score(prospective), config))
    y_obs = observed[POST_UPSELL_LABEL].to_numpy()
    if len(y_obs) and 0 < y_obs.mean() < 1:
        rules = health_rules_score(observed)
        flagged = rules >= 2
        metrics.update(ranking_metrics(y_obs, rules, "rules_with_adoption_"))
        metrics["test_with_adoption_top_decile_conversion"] = float(
            y_obs[top_share_mask(p_obs, 0.10)].mean()
        )
        metrics["rules_flagged_conversion"] = float(y_obs[flagged].mean()) if flagged.any() else 0.0
        metrics["rules_flagged_share"] = float(flagged.mean())
    # The simulator's true churn probability knows the realized adoption, so the oracle is
    # compared with the model on the rows where adoption is observed too.
    metrics.update(
        _oracle_metrics(
            dataset,
            observed,
            p_obs,
            "expanded_at",
            "p_churn_90d",
            "post_upsell_probability.parquet",
            POST_UPSELL_LABEL,
        )
    )
    contract.metadata.update(
        {
            "training_window": [str(train["expanded_at"].min()), str(train["expanded_at"].max())],
            "test_window": [str(test["expanded_at"].min()), str(test["expanded_at"].max())],
            "post_upsell_days": config.post_upsell_days,
            "data_fingerprint": fingerprint(train[[*names, POST_UPSELL_LABEL]]),
            "dataset": str(dataset.path),
            "adoption_features": list(ADOPTION_AFTER_EXPANSION),
            "extra_features": [*ADOPTION_FEATURES, "adoption_known"],
            # what a prospective score (before the upsell) feeds for the non-feature inputs
            "prospective_values": {"adoption_known": 0.0},
            "registry_subset": True,
            "notes": notes,
        }
    )
    plots = {
        "calibration_curve.png": plot_calibration(
            y_pro,
            p_pro,
            workdir / "calibration_curve.png",
            "Post-upsell churn: calibration (prospective)",
        ),
        "cumulative_gains.png": plot_gains(
            y_pro,
            {"model": p_pro},
            workdir / "cumulative_gains.png",
            "Post-upsell churn: cumulative gains",
        ),
    }
    # Both kinds get both plots: TreeSHAP for the trees, exact contributions for the logistic
    # model (coefficient x distance from the training mean), on every test row, so the
    # adoption features show (they are unknown on the prospective rows).
    contrib, _ = model.contributions(test)
    plots["shap_summary.png"] = plot_shap_summary(
        contrib, model.frame(test), names, workdir / "shap_summary.png"
    )
    if model.booster is not None:
        importance, xlabel = model.booster.feature_importance("gain"), "total gain"
    else:
        importance, xlabel = np.abs(contrib).mean(axis=0), "mean |contribution| (log-odds)"
    plots["importance.png"] = plot_importance(
        names, importance, workdir / "importance.png", "Post-upsell churn: importance", xlabel
    )
    params = {
        **pc.lightgbm.model_dump(),
        "kind": contract.kind,
        "seed": config.seed,
        "min_positives": pc.min_positives,
        "calibration": method,
        "post_upsell_days": config.post_upsell_days,
        "feature_set_version": FEATURE_SET_VERSION,
        "n_features": len(names),
    }
    return FittedModel(model, params, metrics, plots, test_frame=prospective, notes=notes)


def _require_both_outcomes(
    frame: pd.DataFrame, y_train: np.ndarray, y_valid: np.ndarray, follow_up_days: int
) -> None:
    """Refuse in one line when the training or validation part has a single outcome.

    A short history leaves only the expansions of its first months with a full follow-up, so
    on a few hundred accounts the churned ones can all fall into the test period.
    """
    parts = {"training": y_train, "validation": y_valid}
    single = [name for name, y in parts.items() if len(np.unique(y)) < 2]
    if single:
        churned = int(frame[POST_UPSELL_LABEL].sum())
        raise NotEnoughData(
            f"post-upsell churn model: {churned} of {len(frame)} expansions with "
            f"{follow_up_days} days of follow-up churned, and the {' and '.join(single)} "
            "part has none (or only churned ones): too few to fit and calibrate on. Supply "
            "more accounts or a longer history"
        )


def _with_unknown_adoption(frame: pd.DataFrame) -> pd.DataFrame:
    """Each expansion twice: with its observed adoption, and with adoption unknown (NaN).

    A prospective score (before the upsell happens) cannot know adoption; training on both
    copies teaches the model what to predict when it is missing, while an account already
    upsold for 30 days is scored with what it actually adopted.
    """
    known = frame.assign(adoption_known=1)
    unknown = frame.assign(adoption_known=0)
    for col in ADOPTION_AFTER_EXPANSION:
        unknown[col] = np.nan
    return pd.concat([known, unknown], ignore_index=True)
