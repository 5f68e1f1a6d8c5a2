"""The model artifact: a fitted scorer that carries its own contract.

`ScoringModel` is what training fits and logs to MLflow and what serving loads: the raw scorer
(a LightGBM booster, or a logistic regression on standardized features), the calibrator that
turns its raw margin into a probability, and the contract (feature list in model order,
categorical levels, feature-set version, training window, data fingerprint, git commit, metrics).
Contributions are additive on the raw margin (log-odds): `sum(contributions) + base == margin`.
For LightGBM they come from `serving.treeshap` (exact `pred_contrib` values, several times
faster), whose tables are built once per loaded model and never pickled with it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from serving.treeshap import TreeShap, UnsupportedModel

log = logging.getLogger(__name__)


@dataclass
class ModelContract:
    """What a model expects and where it came from."""

    name: str
    features: list[str]
    categorical: dict[str, list[str]]
    feature_set_version: str
    kind: Literal["lightgbm", "logistic"]
    calibration: Literal["isotonic", "sigmoid", "none"] = "none"
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class LinearScorer:
    """Logistic regression on median-imputed, standardized numbers and one-hot categories."""

    numeric: list[str]
    medians: np.ndarray
    means: np.ndarray
    scales: np.ndarray
    categorical: dict[str, list[str]]
    coef: np.ndarray
    intercept: float

    def design(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """The standardized design matrix and, per column, the feature it belongs to."""
        x = frame[self.numeric].to_numpy(dtype="float64", na_value=np.nan)
        x = np.where(np.isnan(x), self.medians, x)
        blocks = [(x - self.means) / self.scales]
        owners = list(self.numeric)
        for name, levels in self.categorical.items():
            values = frame[name].astype(object).to_numpy()
            onehot = [(values == lv).astype("float64") for lv in levels]
            # a category never seen in training (all missing) contributes no columns
            blocks.append(np.stack(onehot, axis=1) if onehot else np.zeros((len(frame), 0)))
            owners += [name] * len(levels)
        return np.hstack(blocks), owners

    def margin(self, frame: pd.DataFrame) -> np.ndarray:
        z, _ = self.design(frame)
        return z @ self.coef + self.intercept


def fit_linear(
    frame: pd.DataFrame, y: np.ndarray, contract: ModelContract, c: float, seed: int
) -> LinearScorer:
    """Fit the logistic fallback / baseline on the contract's features."""
    numeric = [f for f in contract.features if f not in contract.categorical]
    x = frame[numeric].to_numpy(dtype="float64", na_value=np.nan)
    with warnings.catch_warnings():  # an all-missing column has no median: 0 below, no noise
        warnings.simplefilter("ignore", RuntimeWarning)
        medians = np.nan_to_num(np.nanmedian(np.where(np.isinf(x), np.nan, x), axis=0))
    filled = np.where(np.isnan(x), medians, x)
    means, scales = filled.mean(axis=0), filled.std(axis=0)
    scales = np.where(scales > 0, scales, 1.0)
    scorer = LinearScorer(numeric, medians, means, scales, contract.categorical, np.zeros(0), 0.0)
    z, _ = scorer.design(frame)
    lr = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(z, y)
    scorer.coef, scorer.intercept = lr.coef_[0], float(lr.intercept_[0])
    return scorer


class ScoringModel:
    """A fitted, calibrated scorer with its contract."""

    def __init__(
        self,
        contract: ModelContract,
        booster: lgb.Booster | None = None,
        linear: LinearScorer | None = None,
        calibrator: IsotonicRegression | LogisticRegression | None = None,
    ) -> None:
        self.contract = contract
        self.booster = booster
        self.linear = linear
        self.calibrator = calibrator

    def __getstate__(self) -> dict[str, Any]:
        # The explainer's tables are rebuilt from the booster at load: never in the artifact.
        state = self.__dict__.copy()
        state.pop("_tree_shap", None)
        return state

    @property
    def tree_shap(self) -> TreeShap | None:
        """The fast exact explainer of the booster, built on first use (serving: at load).

        None for a linear model, or for a booster `serving.treeshap` does not handle (then
        contributions come from LightGBM's `pred_contrib`, with a warning logged once).
        """
        if "_tree_shap" not in self.__dict__:
            explainer = None
            if self.booster is not None:
                try:
                    explainer = TreeShap(self.booster)
                except UnsupportedModel as exc:
                    log.warning("%s: explaining with pred_contrib: %s", self.contract.name, exc)
            self.__dict__["_tree_shap"] = explainer
        return self.__dict__["_tree_shap"]

    # --- inputs ----------------------------------------------------------------------------
    def frame(self, features: pd.DataFrame) -> pd.DataFrame:
        """The model's columns in model order, categories rebuilt from the recorded levels."""
        missing = [f for f in self.contract.features if f not in features.columns]
        if missing:
            raise KeyError(f"{self.contract.name}: missing feature columns {missing}")
        out = features[self.contract.features].copy()
        for name, levels in self.contract.categorical.items():
            values = out[name].astype(object).where(out[name].notna(), None)
            out[name] = pd.Categorical(values, categories=levels)
        for name in self.contract.features:
            if name not in self.contract.categorical:
                out[name] = pd.to_numeric(out[name], errors="coerce").astype("float64")
        return out

    def lgb_matrix(self, features: pd.DataFrame) -> np.ndarray:
        """The booster's numeric input, converted as LightGBM converts a pandas frame.

        Categories become their codes in the booster's training levels, unknown ones NaN.
        """
        x = self.frame(features)
        levels = iter(self.booster.pandas_categorical or [])
        for name in x.columns:
            if isinstance(x[name].dtype, pd.CategoricalDtype):
                column = x[name].cat.set_categories(next(levels))
                x[name] = column.cat.codes.astype("float64").where(column.cat.codes >= 0)
        return x.to_numpy(dtype="float64", na_value=np.nan)

    # --- outputs ---------------------------------------------------------------------------
    def margin(self, features: pd.DataFrame) -> np.ndarray:
        """Raw score in log-odds, before calibration."""
        x = self.frame(features)
        if self.booster is not None:
            return self.booster.predict(x, raw_score=True)
        return self.linear.margin(x)

    def calibrate(self, margin: np.ndarray) -> np.ndarray:
        """The calibrated probability, inside what the calibration rows support.

        n calibration rows cannot tell a probability below 1/(n+1) or above n/(n+1) apart from
        0 or 1; a margin far outside them (one account with a million events) would otherwise
        read as certainty. Models trained before the bounds were recorded keep (1e-6, 1-1e-6).
        """
        if self.calibrator is None:
            p = 1.0 / (1.0 + np.exp(-margin))
        elif isinstance(self.calibrator, IsotonicRegression):
            p = self.calibrator.predict(margin)
        else:
            p = self.calibrator.predict_proba(margin.reshape(-1, 1))[:, 1]
        low, high = self.contract.metadata.get("probability_bounds", (1e-6, 1 - 1e-6))
        return np.clip(p, low, high)

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of the positive class."""
        return self.calibrate(self.margin(features))

    def contributions(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature contributions to the margin, and the base value, per row.

        For LightGBM: the values of its TreeSHAP (`pred_contrib`, the same as shap's
        TreeExplainer), computed by `serving.treeshap`.
        """
        if self.booster is not None:
            contrib = self.matrix_contributions(self.lgb_matrix(features))
            return contrib[:, :-1], contrib[:, -1]
        x = self.frame(features)
        z, owners = self.linear.design(x)
        z_mean, _ = self.linear.design(self._reference_row(x))
        parts = (z - z_mean) * self.linear.coef
        out = np.zeros((len(x), len(self.contract.features)))
        index = {name: i for i, name in enumerate(self.contract.features)}
        for col, owner in enumerate(owners):
            out[:, index[owner]] += parts[:, col]
        base = float(z_mean[0] @ self.linear.coef + self.linear.intercept)
        return out, np.full(len(x), base)

    def matrix_contributions(self, matrix: np.ndarray, threads: int | None = None) -> np.ndarray:
        """`pred_contrib` for rows of `lgb_matrix` (features, then the base value)."""
        if self.tree_shap is not None:
            return self.tree_shap.shap_values(matrix, threads=threads)
        threading = {} if threads is None else {"num_threads": threads}
        return self.booster.predict(matrix, pred_contrib=True, **threading)

    def _reference_row(self, x: pd.DataFrame) -> pd.DataFrame:
        """The training means (numbers) and no category: the linear model's base point."""
        ref = x.iloc[:1].copy()
        for i, name in enumerate(self.linear.numeric):
            ref[name] = self.linear.means[i]
        for name, levels in self.linear.categorical.items():
            ref[name] = pd.Categorical([None], categories=levels)
        return ref


def probability_bounds(calibration_rows: int) -> list[float]:
    """[1/(n+1), n/(n+1)]: the probabilities n calibration rows can support."""
    n = max(int(calibration_rows), 1)
    return [1.0 / (n + 1), n / (n + 1)]


# How far beyond the training range, as a share of its width, a value must lie to be flagged:
# an account somewhat past the largest training value is ordinary (the data moves on between
# training and scoring: counters such as past expansions grow); one far past it (a million
# events where training saw a few thousand) is scored by extrapolation. Measured on the test
# session's snapshot: a quarter of the width flagged 11 ordinary accounts of 1,028 (past
# expansions 4 where training saw at most 2), the full width none.
OUT_OF_RANGE_MARGIN = 1.0


def feature_ranges(
    frame: pd.DataFrame, contract: ModelContract, skip: Iterable[str] = ()
) -> dict[str, list[float]]:
    """Min and max of each numeric feature over the training rows (finite values only).

    `skip` names features that grow with time (tenure, days since ...): a later batch leaves
    their training range by construction, so a range would flag every old account.
    """
    out = {}
    skipped = set(skip)
    for name in contract.features:
        if name in contract.categorical or name not in frame.columns or name in skipped:
            continue
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy("float64", na_value=np.nan)
        values = values[np.isfinite(values)]
        if len(values):
            out[name] = [float(values.min()), float(values.max())]
    return out


def outside_training_range(
    contract: ModelContract, frame: pd.DataFrame
) -> list[list[tuple[str, float, str, float]]]:
    """Per row, the features far outside the range recorded at training:
    (name, value, side, bound), `side` "max" or "min".

    Far: beyond the range by more than `OUT_OF_RANGE_MARGIN` of its width. Trees answer a
    value beyond the training range as if it were at the edge, and a linear margin grows
    without bound: either way the score is an extrapolation.
    """
    ranges = contract.metadata.get("feature_ranges") or {}
    out: list[list[tuple[str, float, str, float]]] = [[] for _ in range(len(frame))]
    for name, (low, high) in ranges.items():
        if name not in frame.columns:
            continue
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy("float64", na_value=np.nan)
        margin = OUT_OF_RANGE_MARGIN * (high - low)
        for i in np.flatnonzero(values > high + margin):
            out[i].append((name, float(values[i]), "max", high))
        for i in np.flatnonzero(values < low - margin):
            out[i].append((name, float(values[i]), "min", low))
    return out


class PyfuncScoringModel(mlflow.pyfunc.PythonModel):
    """MLflow wrapper: `predict` returns the calibrated probability per input row."""

    def __init__(self, model: ScoringModel) -> None:
        self.model = model

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        return pd.DataFrame({"probability": self.model.predict_proba(model_input)})
