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


def float_matrix(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Columns `names` of `frame` as one float64 matrix, NaN for missing or non-numbers.

    One block conversion when every column is numeric (the usual case: one pandas call instead
    of one per column); otherwise column by column with `pd.to_numeric(errors="coerce")`.
    """
    block = frame[names]
    if all(pd.api.types.is_numeric_dtype(t) for t in block.dtypes):
        return block.to_numpy(dtype="float64", na_value=np.nan).reshape(len(frame), len(names))
    out = np.empty((len(frame), len(names)))
    for i, name in enumerate(names):
        column = pd.to_numeric(block[name], errors="coerce")
        out[:, i] = column.to_numpy(dtype="float64", na_value=np.nan)
    return out


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
        state.pop("_linear_base", None)  # derived from the scorer, rebuilt on first use
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
        self._check_columns(features)
        numeric = [f for f in self.contract.features if f not in self.contract.categorical]
        block = iter(float_matrix(features, numeric).T)
        columns = {}
        for name in self.contract.features:
            levels = self.contract.categorical.get(name)
            if levels is None:
                columns[name] = next(block)
            else:
                values = features[name].astype(object)
                columns[name] = pd.Categorical(values.where(values.notna(), None), levels)
        return pd.DataFrame(columns, index=features.index)

    def lgb_matrix(self, features: pd.DataFrame) -> np.ndarray:
        """The booster's numeric input, converted as LightGBM converts a pandas frame of `frame`.

        Categories become their codes in the booster's training levels, unknown ones NaN.
        Built straight into one numpy array: no per-column pandas work on the numbers.
        """
        self._check_columns(features)
        names = self.contract.features
        numeric = [i for i, f in enumerate(names) if f not in self.contract.categorical]
        x = np.empty((len(features), len(names)))
        x[:, numeric] = float_matrix(features, [names[i] for i in numeric])
        booster_levels = iter(self.booster.pandas_categorical or [])
        for i, name in enumerate(names):
            if name not in self.contract.categorical:
                continue
            values = features[name].astype(object)
            column = pd.Categorical(
                values.where(values.notna(), None), self.contract.categorical[name]
            ).set_categories(next(booster_levels))
            x[:, i] = np.where(column.codes >= 0, column.codes, np.nan)
        return x

    def _check_columns(self, features: pd.DataFrame) -> None:
        missing = [f for f in self.contract.features if f not in features.columns]
        if missing:
            raise KeyError(f"{self.contract.name}: missing feature columns {missing}")

    # --- outputs ---------------------------------------------------------------------------
    def margin(self, features: pd.DataFrame) -> np.ndarray:
        """Raw score in log-odds, before calibration."""
        if self.booster is not None:
            # The matrix LightGBM would build from `frame(features)`: the same numbers.
            return self.booster.predict(self.lgb_matrix(features), raw_score=True)
        return self.linear.margin(self.frame(features))

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
        TreeExplainer), computed by `serving.treeshap`. For the linear model: each standardized
        column's coefficient times its distance from the training means, summed per feature.
        """
        contrib = self.matrix_contributions(self.input_matrix(features))
        return contrib[:, :-1], contrib[:, -1]

    def input_matrix(self, features: pd.DataFrame) -> np.ndarray:
        """What `matrix_contributions` explains: `lgb_matrix`, or the linear design matrix.

        Rows of it can be converted once (per snapshot) and explained many times.
        """
        if self.booster is not None:
            return self.lgb_matrix(features)
        return self.linear.design(self.frame(features))[0]

    def matrix_contributions(self, matrix: np.ndarray, threads: int | None = None) -> np.ndarray:
        """`pred_contrib` for rows of `input_matrix` (features, then the base value)."""
        if self.booster is None:
            return self._linear_contributions(matrix)
        if self.tree_shap is not None:
            return self.tree_shap.shap_values(matrix, threads=threads)
        threading = {} if threads is None else {"num_threads": threads}
        return self.booster.predict(matrix, pred_contrib=True, **threading)

    def _linear_contributions(self, z: np.ndarray) -> np.ndarray:
        z_mean, owners, base = self._linear_reference()
        parts = (z - z_mean) * self.linear.coef
        out = np.zeros((len(z), len(self.contract.features) + 1))
        for col, owner in enumerate(owners):
            out[:, owner] += parts[:, col]
        out[:, -1] = base
        return out

    def _linear_reference(self) -> tuple[np.ndarray, list[int], float]:
        """The linear model's base point (training means, no category) in design space, the
        feature index of each design column, and the base value; computed once per model."""
        if "_linear_base" not in self.__dict__:
            ref = pd.DataFrame(
                {
                    **{n: [m] for n, m in zip(self.linear.numeric, self.linear.means, strict=True)},
                    **{
                        n: pd.Categorical([None], categories=levels)
                        for n, levels in self.linear.categorical.items()
                    },
                }
            )
            z_mean, owners = self.linear.design(ref)
            index = {name: i for i, name in enumerate(self.contract.features)}
            base = float(z_mean[0] @ self.linear.coef + self.linear.intercept)
            self.__dict__["_linear_base"] = (z_mean, [index[o] for o in owners], base)
        return self.__dict__["_linear_base"]


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
