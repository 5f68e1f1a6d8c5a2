"""The service's per-snapshot shortcuts give exactly what the plain scoring core gives.

Block conversion of model inputs (`ScoringModel.frame`, `lgb_matrix`, `margin` from numpy),
reason records built from numpy arrays (`CellValues`), the churn model's inputs prepared once
per snapshot (`prepare_churn_explainer`, `explain_one`) and the pre-sorted call list
(`RankIndex`) are each checked against a straightforward reference: pandas column by column,
cell by cell, or `rank_accounts`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.model import ScoringModel
from serving.registry import load_scoring_model
from serving.scoring import (
    Models,
    RankIndex,
    describe,
    explain,
    explain_at,
    explain_one,
    next_steps,
    prepare_churn_explainer,
    prepare_explainer,
    prospective_inputs,
    rank_accounts,
    score_frame,
)
from serving.settings import POST_UPSELL_MODEL, Settings
from serving.snapshot import Snapshot, read_snapshot


@pytest.fixture(scope="module")
def loaded(trained) -> tuple[Models, Snapshot, Settings]:
    snapshot = read_snapshot(trained.settings.models_dir / "snapshot")
    models = Models.load(trained.settings, snapshot.feature_names)
    return models, snapshot, trained.settings


def _reference_frame(model: ScoringModel, features: pd.DataFrame) -> pd.DataFrame:
    """The conversion column by column, as LightGBM and the linear model expect it."""
    out = features[model.contract.features].copy()
    for name, levels in model.contract.categorical.items():
        values = out[name].astype(object).where(out[name].notna(), None)
        out[name] = pd.Categorical(values, categories=levels)
    for name in model.contract.features:
        if name not in model.contract.categorical:
            out[name] = pd.to_numeric(out[name], errors="coerce").astype("float64")
    return out


def _reference_records(model: ScoringModel, frame: pd.DataFrame, contrib: np.ndarray) -> list:
    """Every contribution's record, read cell by cell from the pandas frame."""
    names = model.contract.features
    out = []
    for i in range(len(frame)):
        records = []
        for j in np.argsort(-np.abs(contrib[i])):
            v = frame[names].iat[i, j]
            v = None if (not isinstance(v, str) and pd.isna(v)) else v
            v = v if isinstance(v, str) or v is None else float(v)
            c = float(contrib[i, j])
            records.append(
                {
                    "feature": names[j],
                    "value": v,
                    "contribution": c,
                    "text": f"{describe(names[j], v)} ({c:+.2f})",
                }
            )
        out.append(records)
    return out


def _awkward(model: ScoringModel, frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with a nullable-integer column, a number sent as text and an unknown category."""
    rows = frame.iloc[:40].copy()
    numeric = [f for f in model.contract.features if f not in model.contract.categorical]
    rows[numeric[0]] = pd.array([None if i % 3 else i for i in range(len(rows))], "Int64")
    rows[numeric[1]] = [("7.5" if i % 2 else "n/a") for i in range(len(rows))]
    for name in model.contract.categorical:
        rows[name] = rows[name].astype(object)
        rows.iloc[0, rows.columns.get_loc(name)] = "never-seen-level"
        rows.iloc[1, rows.columns.get_loc(name)] = None
    return rows


def test_block_conversion_equals_column_by_column(loaded, trained):
    models, snapshot, settings = loaded
    features = snapshot.features
    # The trained churn model itself (by version): at this size it is below the quality floor,
    # so `models.post_upsell` is the rule baseline, which converts nothing.
    version = trained.result.versions[POST_UPSELL_MODEL]
    churn, _ = load_scoring_model(settings, POST_UPSELL_MODEL, version=version)
    churn_features = prospective_inputs(
        features, next_steps(features, snapshot.plans), churn.contract.metadata
    )
    for model, inputs in ((models.propensity, features), (churn, churn_features)):
        for frame in (inputs, _awkward(model, inputs)):
            want = _reference_frame(model, frame)
            pd.testing.assert_frame_equal(model.frame(frame), want)
            if model.booster is None:
                continue
            # LightGBM's own pandas conversion is the reference for the matrix and the margin.
            reference = model.booster.predict(want, raw_score=True)
            np.testing.assert_array_equal(model.margin(frame), reference)
            np.testing.assert_array_equal(
                model.booster.predict(model.lgb_matrix(frame), raw_score=True), reference
            )
    with pytest.raises(KeyError, match="missing feature columns"):
        models.propensity.lgb_matrix(snapshot.features.drop(columns=["mrr"]))


def test_reason_records_equal_cell_by_cell(loaded):
    models, snapshot, _ = loaded
    model = models.propensity
    for frame in (snapshot.features.iloc[::5], _awkward(model, snapshot.features)):
        records, base = explain(model, frame)
        contrib, want_base = model.contributions(frame)
        np.testing.assert_array_equal(base, want_base)
        want = _reference_records(model, _reference_frame_values(model, frame), contrib)
        assert records == want


def _reference_frame_values(model: ScoringModel, frame: pd.DataFrame) -> pd.DataFrame:
    # Reason values are the numbers the model saw: text in a numeric column is unknown (NaN).
    numeric = [f for f in model.contract.features if f not in model.contract.categorical]
    out = frame.copy()
    for name in numeric:
        out[name] = pd.to_numeric(out[name], errors="coerce")
    return out


def test_explain_one_equals_explaining_the_rebuilt_inputs(loaded):
    """/explain's prepared inputs: the same records, base and margin as building them per row."""
    models, snapshot, _ = loaded
    prepared = {
        "propensity": prepare_explainer(models.propensity, snapshot.features),
        "churn": prepare_churn_explainer(models, snapshot),
    }
    for pos in range(0, len(snapshot), max(len(snapshot) // 25, 1)):
        row = snapshot.features.iloc[[pos]]
        churn_row = prospective_inputs(
            row, next_steps(row, snapshot.plans), models.post_upsell.contract.metadata
        )
        for key, model, frame in (
            ("propensity", models.propensity, row),
            ("churn", models.post_upsell, churn_row),
        ):
            records, base, margin = explain_one(prepared[key], pos)
            want, want_base = explain(model, frame, top=None)
            assert records == want[0]
            assert base == want_base[0]
            assert margin == pytest.approx(float(model.margin(frame)[0]), abs=1e-9)
    top, _ = explain_at(prepared["propensity"], [0, 3, 5], top=3)
    assert top == explain(models.propensity, snapshot.features.iloc[[0, 3, 5]], top=3)[0]


def test_rank_index_equals_rank_accounts(loaded):
    models, snapshot, settings = loaded
    scored = score_frame(models, snapshot.features, snapshot.plans, settings)
    # ties and missing keys must order as rank_accounts orders them
    scored.loc[scored.index[:30], "expected_net_value"] = 5.0
    scored.loc[scored.index[30:40], "expected_net_value"] = np.nan
    index = RankIndex(scored)
    owner = scored["csm_owner"].dropna().iloc[0]
    segment = scored["segment"].dropna().iloc[0]
    cases = [
        {},
        {"sort": "propensity"},
        {"include_suppressed": True},
        {"csm_owner": owner},
        {"csm_owner": "nobody"},
        {"segment": segment, "min_mrr": 100.0},
        {"sort": "propensity", "include_suppressed": True, "segment": segment},
    ]
    for filters in cases:
        want = rank_accounts(scored, **filters)
        got = index.positions(**filters)
        assert got.tolist() == want.index.tolist(), filters


def test_explained_accounts_are_kept_per_state_and_handed_out_as_copies(loaded):
    from serving.endpoints import account_records
    from serving.scoring import explain_at
    from serving.state import ServingState

    models, snapshot, settings = loaded
    state = ServingState.build(models, snapshot, settings)
    positions = [4, 1, 4, 7]
    first = account_records(state, positions, 3)
    assert set(state.explained) == {(4, 3), (1, 3), (7, 3)}
    first[0]["rank"] = 1  # a caller's change must not reach the kept record
    again = account_records(state, positions, 3)
    assert "rank" not in again[0] and again[1:] == first[1:]
    reasons, base = explain_at(state.explainer, positions, top=3)
    for record, why, b in zip(again, reasons, base, strict=True):
        assert record["reasons"] == (why if record["p_expand"] is not None else [])
        assert record["base_value"] == b
