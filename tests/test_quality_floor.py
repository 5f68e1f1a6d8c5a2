"""The quality floor of `promote`, the rule-baseline fallback, and bounded probabilities.

Issue 15: a post-upsell model with test ROC-AUC 0.4985 became champion and a challenger with
0.36 on 29 test rows replaced one; one account with a million events got a churn probability
of exactly 1.0. The session's models (tests/fixtures_models.py) are real: the propensity model
clears the floor, the post-upsell churn model (AUC near 0.5 on ~110 test rows) does not.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from rich.console import Console
from sklearn.metrics import roc_auc_score

from features.triggers import pql_score
from serving.baseline import RuleBaseline, rule_rates, rule_score
from serving.registry import FLOOR_TAG, configure_mlflow, load_scoring_model
from serving.scoring import Models, score_accounts, score_frame
from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL
from serving.snapshot import read_snapshot
from training.config import QualityFloor
from training.evaluate import bootstrap_auc_interval
from training.tracking import LABELS, check_quality_floor, floor_metrics_of, log_and_register

# --- the floor's criteria, on logged numbers --------------------------------------------------


def test_floor_names_every_failed_criterion():
    """The issue's challenger: ROC-AUC 0.36 on 29 test rows, below the rules."""
    metrics = {
        "rows_test": 29.0,
        "positives_test": 4.0,
        "test_roc_auc": 0.36,
        "test_roc_auc_ci_low": 0.12,
        "test_roc_auc_ci_high": 0.61,
        "rules_roc_auc": 0.55,
    }
    check = check_quality_floor(PROPENSITY_MODEL, metrics, QualityFloor())
    assert not check.passed
    assert check.failures == [
        "test rows: 29, fewer than the minimum 100",
        "test positives: 4, fewer than the minimum 20",
        "test ROC-AUC 0.3600 is not above 0.5 by more than its uncertainty "
        "(95% bootstrap interval 0.1200 to 0.6100)",
        "test ROC-AUC 0.3600 is below the rule baseline's 0.5500 (PQL rules) on the same test rows",
    ]


def test_floor_passes_a_good_model_and_reads_configured_minimums():
    metrics = {
        "rows_test": 500.0,
        "positives_test": 40.0,
        "test_roc_auc": 0.71,
        "test_roc_auc_ci_low": 0.64,
        "test_roc_auc_ci_high": 0.78,
        "rules_roc_auc": 0.66,
    }
    assert check_quality_floor(PROPENSITY_MODEL, metrics).passed
    strict = QualityFloor(min_test_rows=1000, min_test_positives=50)
    assert [
        f.split(":")[0] for f in check_quality_floor(POST_UPSELL_MODEL, metrics, strict).failures
    ] == [
        "test rows",
        "test positives",
    ]
    # An AUC of 0.4985 (the demo's churn model) with an interval straddling 0.5
    weak = {**metrics, "test_roc_auc": 0.4985, "test_roc_auc_ci_low": 0.41}
    assert any("not above 0.5" in f for f in check_quality_floor(POST_UPSELL_MODEL, weak).failures)


def test_bootstrap_interval_is_seeded_and_matches_resampled_sklearn():
    rng = np.random.default_rng(3)
    y = (rng.random(600) < 0.1).astype(int)
    score = np.round(rng.random(600) + 0.4 * y, 1)  # ties on purpose
    low, high = bootstrap_auc_interval(y, score, seed=5)
    assert (low, high) == bootstrap_auc_interval(y, score, seed=5)
    assert low < roc_auc_score(y, score) < high
    # the same percentile interval by resampling rows and calling sklearn
    slow = []
    for _ in range(400):
        pick = rng.integers(0, len(y), len(y))
        if 0 < y[pick].sum() < len(pick):
            slow.append(roc_auc_score(y[pick], score[pick]))
    assert low == pytest.approx(np.percentile(slow, 2.5), abs=0.02)
    assert high == pytest.approx(np.percentile(slow, 97.5), abs=0.02)
    assert np.isnan(bootstrap_auc_interval(np.zeros(5), np.arange(5.0), seed=1)[0])


# --- training logs what promote reads ---------------------------------------------------------


@pytest.mark.integration
def test_training_logs_the_floor_numbers(trained):
    for fitted in (trained.result.propensity, trained.result.post_upsell):
        m = fitted.metrics
        assert m["test_roc_auc_ci_low"] < m["test_roc_auc"] < m["test_roc_auc_ci_high"]
        label = LABELS[fitted.model.contract.name]
        assert m["positives_test"] == fitted.test_frame[label].sum()
        assert m["rows_test"] == len(fitted.test_frame)
        assert np.isfinite(m["rules_roc_auc"])
        rates = fitted.model.contract.metadata["rule_baseline"]
        assert rates["levels"] and min(rates["levels"].values()) > 0
        assert max(rates["levels"].values()) < 1
    # the propensity rule baseline is the PQL score the report and the triggers use
    test = trained.result.propensity.test_frame
    assert (rule_score(PROPENSITY_MODEL, test) == pql_score(test).to_numpy()).all()


@pytest.mark.integration
def test_an_older_run_without_floor_numbers_gets_them_from_its_test_frame(trained, tmp_path):
    """Runs logged before the floor existed: promote computes the same numbers itself."""
    fitted = trained.result.propensity
    logged = {k: v for k, v in fitted.metrics.items() if not k.startswith("test_roc_auc_ci")}
    logged.pop("positives_test")
    old = replace(fitted, metrics=logged, plots={})  # the plot files are gone by now
    version = log_and_register(old, trained.settings, training_id="old", config_json="{}")
    configure_mlflow(trained.settings)
    client = MlflowClient()
    computed = floor_metrics_of(trained.settings, client, PROPENSITY_MODEL, version, QualityFloor())
    for key in ("test_roc_auc_ci_low", "test_roc_auc_ci_high", "positives_test", "rules_roc_auc"):
        assert computed[key] == pytest.approx(fitted.metrics[key], abs=1e-9), key


# --- promote refuses, --force overrides loudly, scoring falls back --------------------------


def _cli(args: list[str], models_dir: Path, monkeypatch):
    from typer.testing import CliRunner

    from serving.settings import get_settings
    from training.cli import app

    monkeypatch.setenv("EXPANSION_MODELS_DIR", str(models_dir))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, args)
    finally:
        get_settings.cache_clear()


@pytest.mark.integration
def test_promote_refuses_a_model_below_the_floor_and_scoring_uses_the_baseline(
    trained, monkeypatch
):
    decision = trained.promotions[POST_UPSELL_MODEL]
    assert decision.refused and not decision.promoted
    assert decision.failures and any("not above 0.5" in f for f in decision.failures)
    configure_mlflow(trained.settings)
    client = MlflowClient()
    version = trained.result.versions[POST_UPSELL_MODEL]
    assert client.get_model_version(POST_UPSELL_MODEL, version).tags[FLOOR_TAG] == "failed"
    champion = trained.result.versions[PROPENSITY_MODEL]
    assert client.get_model_version(PROPENSITY_MODEL, champion).tags[FLOOR_TAG] == "passed"

    # the command: exit 2, the refusal and one line per failed criterion
    result = _cli(["promote"], trained.settings.models_dir, monkeypatch)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    refused = [line for line in lines if line.startswith(f"{POST_UPSELL_MODEL}: refused")]
    assert refused and "scoring uses the health rules baseline" in refused[0]
    criteria = [line.strip()[2:] for line in lines if line.startswith("  - ")]
    assert criteria == decision.failures
    assert "Traceback" not in result.output

    snapshot = read_snapshot(trained.settings.models_dir / "snapshot")
    models = Models.load(trained.settings, snapshot.feature_names)
    assert isinstance(models.post_upsell, RuleBaseline)
    assert not isinstance(models.propensity, RuleBaseline)
    assert models.versions == {PROPENSITY_MODEL: champion, POST_UPSELL_MODEL: "baseline"}
    assert models.model_source(PROPENSITY_MODEL) == f"model v{champion}"
    assert models.model_source(POST_UPSELL_MODEL).startswith("baseline (health rules")
    scored = score_frame(models, snapshot.features, snapshot.plans, trained.settings)
    live = scored["p_post_upsell_churn"].dropna()
    rates = trained.result.post_upsell.model.contract.metadata["rule_baseline"]["levels"]
    assert set(live.round(12)) <= {round(r, 12) for r in rates.values()}
    # the explanations of the baseline add up to its raw score (the rules that fired)
    contrib, base = models.post_upsell.contributions(snapshot.features.head(50))
    assert np.allclose(
        contrib.sum(axis=1) + base, models.post_upsell.margin(snapshot.features.head(50))
    )


@pytest.mark.integration
def test_force_promotes_below_the_floor_loudly_and_scoring_keeps_the_baseline(trained, monkeypatch):
    configure_mlflow(trained.settings)
    client = MlflowClient()
    version = trained.result.versions[POST_UPSELL_MODEL]
    try:
        result = _cli(
            ["promote", "--model", POST_UPSELL_MODEL, "--force"],
            trained.settings.models_dir,
            monkeypatch,
        )
        assert result.exit_code == 0, result.output
        assert f"{POST_UPSELL_MODEL}: promoted v{version} as champion" in result.stdout
        warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert warning and "below the quality floor" in warning[0]
        mv = client.get_model_version(POST_UPSELL_MODEL, version)
        assert mv.tags[FLOOR_TAG] == "forced" and "champion" in mv.aliases
        snapshot = read_snapshot(trained.settings.models_dir / "snapshot")
        models = Models.load(trained.settings, snapshot.feature_names)
        # --force overrides the floor: the forced model is served, and its source says so.
        assert not isinstance(models.post_upsell, RuleBaseline)
        assert (
            f"model v{version} (promoted by --force below the quality floor"
            in models.model_source(POST_UPSELL_MODEL)
        )
    finally:  # the other tests expect no post-upsell champion
        client.delete_registered_model_alias(POST_UPSELL_MODEL, "champion")
        client.set_model_version_tag(POST_UPSELL_MODEL, version, FLOOR_TAG, "failed")


@pytest.mark.integration
def test_the_run_summary_says_where_scores_come_from(trained, tmp_path):
    from serving.batch import run_batch

    out = tmp_path / "scores.csv"
    summary = run_batch(trained.dataset, trained.settings, str(out))
    champion = trained.result.versions[PROPENSITY_MODEL]
    assert summary.model_source.startswith(
        f"{PROPENSITY_MODEL}: model v{champion}; {POST_UPSELL_MODEL}: baseline (health rules"
    )
    record = json.loads(Path(f"{out}.run.json").read_text())
    assert record["model_source"] == summary.model_source
    assert record["post_upsell_model_version"] == "baseline"
    console = Console(width=400, record=True)
    console.print(summary.to_table())
    row = [line for line in console.export_text().splitlines() if "model source" in line]
    assert row and summary.model_source in row[0]


# --- probabilities inside what calibration supports; extreme values flagged -----------------


@pytest.mark.integration
@pytest.mark.parametrize("name", [PROPENSITY_MODEL, POST_UPSELL_MODEL])
def test_probabilities_never_reach_0_or_1(trained, name):
    fitted = {
        PROPENSITY_MODEL: trained.result.propensity,
        POST_UPSELL_MODEL: trained.result.post_upsell,
    }[name]
    model, _ = load_scoring_model(trained.settings, name, version=trained.result.versions[name])
    n = fitted.metrics["rows_validation"]  # the calibration rows
    rows = fitted.test_frame.head(4).copy()
    numeric = [f for f in model.contract.features if f not in model.contract.categorical]
    rows.loc[rows.index[0], numeric] = 1e9  # absurdly large everywhere
    rows.loc[rows.index[1], numeric] = -1e9
    rows.loc[rows.index[2], ["mrr", "events_30d"] if "events_30d" in rows else ["mrr"]] = 1e6
    p = model.predict_proba(rows)
    assert np.isfinite(p).all()
    assert (p >= 1 / (n + 1) - 1e-12).all() and (p <= n / (n + 1) + 1e-12).all(), p


@pytest.mark.integration
def test_a_value_far_outside_training_is_flagged_in_the_reasons(trained):
    snapshot = read_snapshot(trained.settings.models_dir / "snapshot")
    models = Models.load(trained.settings, snapshot.feature_names)
    live = snapshot.features.index[snapshot.features["ctx_status"] != "canceled"]
    extreme = live[0]
    ranges = models.propensity.contract.metadata["feature_ranges"]
    high = ranges["events_30d"][1]
    snapshot.features.loc[extreme, "events_30d"] = 1_000_000.0
    scored = score_accounts(models, snapshot, list(live), trained.settings)
    flags = {
        account: [r for r in reasons if "outside the range" in r["text"]]
        for account, reasons in zip(scored["account_id"], scored["reasons"], strict=True)
    }
    assert [r["feature"] for r in flags[extreme]] == ["events_30d"]
    assert flags[extreme][0]["contribution"] == 0
    assert flags[extreme][0]["text"] == (
        f"Events (30 days) 1,000,000 is outside the range seen in training (max {high:,.0f})"
    )
    # an ordinary day: no other account of the snapshot is flagged
    assert sum(bool(f) for f in flags.values()) == 1
    # aging features record no range: an old account is not an extrapolation
    assert "tenure_days" not in ranges


def test_rule_rates_never_reach_0_or_1():
    rates = rule_rates(np.array([0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 1]))
    assert all(1 / 6 <= r <= 5 / 6 for r in rates["levels"].values())
    assert set(rates["levels"]) == {"0", "1", "2"}
    frame = pd.DataFrame({"adopted_30d": [0.0, 1.0], "events_trend_30d": [0.5, 2.0]})
    assert list(rule_score(POST_UPSELL_MODEL, frame)) == [2.0, 0.0]  # no seat column: no point
