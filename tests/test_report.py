"""The HTML analytics report: self-contained, every section present, renders in headless Chromium.

Chromium comes from Debian (`apt-get install -y chromium`); without it the browser test is
skipped locally and fails under CI=true, so a missing install step cannot hide behind a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from features.dataset import load_dataset
from training.report import (
    MODEL_CARD_ID,
    SECTION_IDS,
    VIEWS,
    _model_card_section,
    model_card_from_mlflow,
    render_report,
)
from training.simulator import SimulationConfig, simulate

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
]


def expected_ids(with_card: bool) -> list[str]:
    ids = [
        *SECTION_IDS,
        *(f"view-{slug}" for _, slug, _ in VIEWS),
        *(f"tab-{slug}" for _, slug, _ in VIEWS),
    ]
    return [*ids, MODEL_CARD_ID] if with_card else ids


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is missing: apt-get install -y chromium")
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "ds"
    simulate(SimulationConfig(accounts=60, months=5, seed=3), out)
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "calibration.png"
    fig = Figure(figsize=(2, 2))
    FigureCanvasAgg(fig)
    fig.add_subplot(1, 1, 1).plot([0, 1], [0, 1])
    fig.savefig(path)
    return path


@pytest.fixture(scope="module")
def report(small_dataset, image, tmp_path_factory) -> Path:
    card = {
        "name": "expansion-propensity",
        "version": "7",
        "metrics": {"test_roc_auc": 0.8123, "test_brier": 0.051},
        "calibration_curve": str(image),
        "gains_chart": str(image),
        "training_window": "2024-01-01 to 2024-04-30",
    }
    out = tmp_path_factory.mktemp("report") / "report.html"
    return render_report(small_dataset, out, model_card=card)


def test_report_is_one_self_contained_file(report):
    text = report.read_text(encoding="utf-8")
    for section in expected_ids(with_card=True):
        assert f'id="{section}"' in text, section
    assert "<script" not in text.lower()
    assert "://" not in text  # no external URL anywhere (base64 never contains ':')
    for src in re.findall(r'src="([^"]*)"', text):
        assert src.startswith("data:image/"), src[:40]
    for href in re.findall(r'href="([^"]*)"', text):
        assert href.startswith("#"), href
    assert text.count("<img") >= 20
    assert "0.8123" in text  # the model card's metrics
    assert "Calibration curve" in text and "Cumulative gains" in text


def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = chromium()
    proc = subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            report.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    for section in expected_ids(with_card=True):
        assert f'id="{section}"' in dom, section
    console = [
        line for line in proc.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line
    ]
    assert not console, console


def test_report_without_outreach_or_enough_weeks(make_dataset, tmp_path):
    # The base dataset: two accounts, one day of events, no outreach table.
    ds = load_dataset(make_dataset())
    out = render_report(ds, tmp_path / "r.html", start="2024-01-01", end="2024-01-10")
    text = out.read_text(encoding="utf-8")
    for section in expected_ids(with_card=False):
        assert f'id="{section}"' in text, section
    assert MODEL_CARD_ID not in text
    assert "No outreach rows" in text
    assert "No PQL figures" in text


def test_model_card_notes_a_missing_image(tmp_path):
    card = {
        "name": "m",
        "version": "1",
        "metrics": {"auc": 0.7},
        "shap_summary": str(tmp_path / "missing.png"),
    }
    text = _model_card_section(card)
    assert f'id="{MODEL_CARD_ID}"' in text
    assert "Image not found" in text and "missing.png" in text
    assert "SHAP summary" in text and "0.7" in text


def test_model_card_from_mlflow(tmp_path, image, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # fast to create; same tracking API
    monkeypatch.chdir(tmp_path)  # a stray default store would land here, not in the repo
    uri = (tmp_path / "mlruns").as_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(experiment, tags={"training_id": "abc123"})
    client.log_metric(run.info.run_id, "test_roc_auc", 0.77)
    client.log_artifact(run.info.run_id, str(image), artifact_path="plots")  # calibration.png
    shutil.copy(image, tmp_path / "cumulative_gains.png")
    client.log_artifact(run.info.run_id, str(tmp_path / "cumulative_gains.png"), "plots")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("expansion-propensity")
    version = client.create_model_version(
        "expansion-propensity", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias("expansion-propensity", "champion", version.version)

    card = model_card_from_mlflow("expansion-propensity", tmp_path / "img", tracking_uri=uri)
    assert card is not None
    assert (card["version"], card["training_id"]) == ("1", "abc123")
    assert card["metrics"] == {"test_roc_auc": 0.77}
    assert Path(card["gains_chart"]).is_file()
    assert "calibration_curve" not in card  # logged under another name: not shown
    assert (
        model_card_from_mlflow("expansion-propensity", tmp_path, alias="x", tracking_uri=uri)
        is None
    )
    text = _model_card_section([card, {"name": "post-upsell-churn", "version": "2"}])
    assert text.count("<h3>") == 2 and "data:image/png;base64," in text
    missing = f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"
    assert model_card_from_mlflow("expansion-propensity", tmp_path, tracking_uri=missing) is None
    assert not (tmp_path / "mlflow.db").exists()  # nothing fell back to the default store
    mlflow.set_tracking_uri(None)


@pytest.mark.integration
def test_each_model_card_shows_its_own_models_plots(trained, tmp_path):
    """Both models log `plots/calibration_curve.png` etc.: downloaded into one folder, the
    second card overwrote the first's files and both cards showed the churn model's plots."""
    from mlflow import MlflowClient

    from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL
    from training.report import IMAGE_KEYS

    uri = trained.settings.resolved_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for name in (PROPENSITY_MODEL, POST_UPSELL_MODEL):  # the trained versions, champion or not
        client.set_registered_model_alias(name, "report-test", trained.result.versions[name])
    cards = [
        model_card_from_mlflow(name, tmp_path, alias="report-test", tracking_uri=uri)
        for name in (PROPENSITY_MODEL, POST_UPSELL_MODEL)
    ]
    assert all(cards)
    for key in IMAGE_KEYS:
        propensity, churn = (Path(card[key]).read_bytes() for card in cards)
        assert propensity != churn, key
    for card in cards:  # each card's file is its own model's logged plot
        version = client.get_model_version_by_alias(card["name"], "report-test")
        logged = Path(
            client.download_artifacts(version.run_id, "plots/calibration_curve.png", tmp_path)
        )
        assert Path(card["calibration_curve"]).read_bytes() == logged.read_bytes()
    html = _model_card_section(cards)
    first, second = html.split("<h3>")[1:]
    images = lambda part: re.findall(r'src="(data:image/[^"]+)"', part)  # noqa: E731
    assert images(first) and not set(images(first)) & set(images(second))


@pytest.mark.integration
def test_the_report_says_when_the_rule_baseline_scores(trained, tmp_path):
    """The session's churn model is below the quality floor: no champion, the baseline scores."""
    from serving.settings import POST_UPSELL_MODEL

    uri = trained.settings.resolved_tracking_uri
    card = model_card_from_mlflow(POST_UPSELL_MODEL, tmp_path, tracking_uri=uri)
    assert card is not None and card["model_source"].startswith("baseline (health rules")
    # the refused version's own numbers and plots, to show why it is not scoring
    assert card["version"] == trained.result.versions[POST_UPSELL_MODEL]
    assert card["metrics"]["test_roc_auc"] == trained.result.post_upsell.metrics["test_roc_auc"]
    assert Path(card["calibration_curve"]).is_file()
    text = _model_card_section([card])
    assert "Scores come from the rule baseline, not this model" in text
