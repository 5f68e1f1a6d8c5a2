"""`serving.treeshap` gives LightGBM's `pred_contrib` values (to 1e-9), on random models and ours.

Random models come from hypothesis-drawn settings (depth, leaves, missing-value handling,
categorical features) trained on small random data with NaN, zeros and categories; they are
explained on their training rows and on edge rows: values exactly at split thresholds and just
above, NaN, zeros and tiny values, negative, fractional, unseen and out-of-range category codes.
The numba kernel and the numpy fallback are both compared. The project's trained models are
explained on real feature rows of the snapshot.
"""

from __future__ import annotations

import pickle

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving import treeshap
from serving.model import ScoringModel
from serving.registry import load_scoring_model
from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL
from serving.snapshot import read_snapshot
from serving.treeshap import TreeShap, UnsupportedModel

TOL = 1e-9
LEVELS = ["a", "b", "c", "d", "e", "f", "g"]  # "f" and "g" never occur in training


def _random_frame(rng: np.random.Generator, rows: int, numeric: int, nan: float, cat: bool):
    """Numbers with NaN and exact zeros, a coarse grid feature, and maybe a category."""
    data = {}
    for j in range(numeric):
        x = rng.normal(size=rows)
        if j % 2 == 1:
            x = np.round(x * 2) / 2  # ties and exact zeros: thresholds between grid points
        x[rng.random(rows) < nan] = np.nan
        x[rng.random(rows) < 0.1] = 0.0
        data[f"x{j}"] = x
    if cat:
        codes = rng.integers(0, 5, size=rows)
        values = np.array(LEVELS, dtype=object)[codes]
        values[rng.random(rows) < nan] = None
        data["plan"] = pd.Categorical(values, categories=LEVELS)
    frame = pd.DataFrame(data)
    signal = np.nan_to_num(frame["x0"].to_numpy()) + (rng.random(rows) < 0.3)
    if cat:
        signal = signal + frame["plan"].isin(["a", "c"]).to_numpy() * 1.5
    return frame, (signal + rng.normal(size=rows) > 0.5).astype(int)


def _codes(frame: pd.DataFrame) -> np.ndarray:
    """LightGBM's numeric view of the frame: category codes, NaN for missing."""
    out = frame.copy()
    for name in out.columns:
        if isinstance(out[name].dtype, pd.CategoricalDtype):
            codes = out[name].cat.codes
            out[name] = codes.astype("float64").where(codes >= 0)
    return out.to_numpy(dtype="float64", na_value=np.nan)


def _edge_rows(booster: lgb.Booster, base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows at each threshold and the next double above it, and rows of odd values."""
    thresholds: dict[int, list[float]] = {}

    def walk(node: dict) -> None:
        if "split_index" in node:
            if node["decision_type"] == "<=":
                thresholds.setdefault(node["split_feature"], []).append(float(node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    rows = []
    for feature, values in thresholds.items():
        for t in values:
            for v in (t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf)):
                row = base[rng.integers(len(base))].copy()
                row[feature] = v
                rows.append(row)
    odd = [np.nan, 0.0, -0.0, 1e-40, -1e-40, 1e-30, -1.0, -0.5, 0.5, 2.7, 4.0, 5.0, 6.0, 9.0]
    odd += [33.0, 1e10]
    for v in odd:
        row = base[rng.integers(len(base))].copy()
        row[:] = v  # every column: numbers and category codes alike
        rows.append(row)
    return np.array(rows).reshape(-1, base.shape[1])


def _assert_same(ours: np.ndarray, reference: np.ndarray) -> None:
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max(initial=0.0) <= TOL


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    seed=st.integers(0, 2**31 - 1),
    rows=st.integers(60, 400),
    numeric=st.integers(1, 5),
    nan=st.sampled_from([0.0, 0.1, 0.4]),
    cat=st.booleans(),
    num_leaves=st.integers(2, 15),
    max_depth=st.sampled_from([-1, 1, 2, 3, 5]),
    trees=st.integers(1, 6),
    zero_as_missing=st.booleans(),
    use_missing=st.booleans(),
    min_data=st.sampled_from([1, 3, 10]),
)
def test_random_models_match_pred_contrib(
    seed,
    rows,
    numeric,
    nan,
    cat,
    num_leaves,
    max_depth,
    trees,
    zero_as_missing,
    use_missing,
    min_data,
):
    rng = np.random.default_rng(seed)
    frame, y = _random_frame(rng, rows, numeric, nan, cat)
    params = {
        "objective": "binary",
        "num_leaves": num_leaves,
        "max_depth": max_depth,
        "min_data_in_leaf": min_data,
        "min_data_per_group": 1,
        "cat_smooth": 1.0,
        "max_cat_to_onehot": 2 if seed % 2 else 8,  # bitset splits and one-vs-rest splits
        "zero_as_missing": zero_as_missing,
        "use_missing": use_missing,
        "learning_rate": 0.3,
        "num_threads": 1,
        "verbose": -1,
        "seed": seed % 1000,
    }
    booster = lgb.train(params, lgb.Dataset(frame, y), num_boost_round=trees)
    matrix = _codes(frame)
    edges = _edge_rows(booster, matrix, rng)
    fast, plain = TreeShap(booster, backend="numba"), TreeShap(booster, backend="numpy")

    # the frame through LightGBM's own pandas conversion, and raw matrices with odd values
    _assert_same(fast.shap_values(matrix), booster.predict(frame, pred_contrib=True))
    _assert_same(fast.shap_values(edges), booster.predict(edges, pred_contrib=True))
    _assert_same(plain.shap_values(matrix), booster.predict(matrix, pred_contrib=True))
    _assert_same(plain.shap_values(edges), booster.predict(edges, pred_contrib=True))


def test_batches_split_over_threads_match_one_thread():
    """Large batches run in several threads; the rows come out the same, in order."""
    rng = np.random.default_rng(3)
    frame, y = _random_frame(rng, 3000, 4, 0.2, True)
    params = {"objective": "binary", "num_leaves": 15, "max_depth": 5, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(frame, y), num_boost_round=20)
    explainer, matrix = TreeShap(booster), _codes(frame)
    threaded = explainer.shap_values(matrix, threads=3)
    np.testing.assert_array_equal(threaded, explainer.shap_values(matrix, threads=1))
    _assert_same(threaded, booster.predict(frame, pred_contrib=True))


def test_without_numba_the_numpy_path_is_used(monkeypatch):
    rng = np.random.default_rng(5)
    frame, y = _random_frame(rng, 300, 3, 0.2, True)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 7, "verbose": -1}, lgb.Dataset(frame, y), 5
    )
    monkeypatch.setattr(treeshap, "HAVE_NUMBA", False)
    explainer = TreeShap(booster)
    assert explainer.backend == "numpy"
    _assert_same(explainer.shap_values(_codes(frame)), booster.predict(frame, pred_contrib=True))
    with pytest.raises(UnsupportedModel, match="numba is not installed"):
        TreeShap(booster, backend="numba")


def test_bad_input_and_unsupported_models_are_refused(monkeypatch):
    rng = np.random.default_rng(11)
    frame, y = _random_frame(rng, 300, 3, 0.0, False)
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(frame, y), 3)
    with pytest.raises(ValueError, match="3 feature columns"):
        TreeShap(booster).shap_values(np.zeros((2, 4)))
    multiclass = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1},
        lgb.Dataset(frame, rng.integers(0, 3, size=len(frame))),
        2,
    )
    with pytest.raises(UnsupportedModel, match="multiclass"):
        TreeShap(multiclass)
    linear = lgb.train(
        {"objective": "binary", "linear_tree": True, "verbose": -1}, lgb.Dataset(frame, y), 2
    )
    with pytest.raises(UnsupportedModel, match="linear trees"):
        TreeShap(linear)
    monkeypatch.setattr(treeshap, "MAX_TABLE_BYTES", 64)
    with pytest.raises(UnsupportedModel, match="shallower trees"):
        TreeShap(booster)


# --- the project's models ------------------------------------------------------------------


@pytest.fixture(scope="module")
def project_models(trained):
    models = {}
    for name in (PROPENSITY_MODEL, POST_UPSELL_MODEL):
        # By version: the small-data churn model may be below the quality floor (no champion).
        version = trained.result.versions[name]
        model, _ = load_scoring_model(trained.settings, name, version=version)
        models[name] = model
    snapshot = read_snapshot(trained.settings.models_dir / "snapshot")
    return models, snapshot


def test_project_models_match_pred_contrib(project_models):
    """Both trained models, on every account of the snapshot (NaN and categories included)."""
    models, snapshot = project_models
    checked = 0
    for model in models.values():
        if model.booster is None:
            continue  # the small-data churn model may be the logistic fallback
        assert model.tree_shap is not None and model.tree_shap.backend == "numba"
        frame = snapshot.features
        contrib, base = model.contributions(frame)
        reference = model.booster.predict(model.frame(frame), pred_contrib=True)
        _assert_same(np.column_stack([contrib, base]), reference)
        # and additive: contributions + base give the raw score
        margin = model.margin(frame)
        assert np.abs(contrib.sum(axis=1) + base - margin).max() < 1e-9
        checked += 1
    assert checked >= 1
    propensity = models[PROPENSITY_MODEL]
    assert propensity.contract.categorical, "the project's model should have categories"
    assert snapshot.features[propensity.contract.features].isna().any().any()


def test_the_explainer_is_not_pickled_and_falls_back(project_models, monkeypatch):
    models, snapshot = project_models
    model = models[PROPENSITY_MODEL]
    assert model.tree_shap is not None
    copy = pickle.loads(pickle.dumps(model))
    assert "_tree_shap" not in copy.__dict__  # rebuilt from the booster where it is loaded
    # a model the explainer refuses is explained by LightGBM itself, same values
    monkeypatch.setattr(treeshap, "MAX_PATH_FEATURES", 1)
    assert copy.tree_shap is None
    rows = snapshot.features.iloc[:50]
    contrib, base = copy.contributions(rows)
    reference = model.booster.predict(model.frame(rows), pred_contrib=True)
    _assert_same(np.column_stack([contrib, base]), reference)
    assert isinstance(copy, ScoringModel)
