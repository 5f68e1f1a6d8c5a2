"""The notebooks run top to bottom in a fresh kernel (nbclient + ipykernel).

Each notebook simulates its own small dataset. The model-comparison notebook runs twice: against
an empty MLflow store (it must say how to train, and create nothing) and against a store with a
few logged runs and a registered version (it must compare them).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run_notebook(name: str) -> str:
    """Execute a notebook in the notebooks folder and return all its text output."""
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        book,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    texts = []
    for cell in book.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                texts.append(output["text"])
            texts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


@pytest.mark.parametrize("name", ["01_explore_dataset.ipynb", "03_what_if_triggers.ipynb"])
def test_notebook_runs(name):
    run_notebook(name)


def test_compare_models_without_runs_says_how_to_train(tmp_path, monkeypatch):
    db = tmp_path / "nothing" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    text = run_notebook("02_compare_models.ipynb")
    assert "No training runs yet" in text
    assert "expansion train --data" in text
    assert not db.exists()  # looking must not create a store


def test_compare_models_with_runs(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    # A file store: creating a SQLite store runs every migration (~9 s here); the notebook only
    # talks to the tracking API, so the store kind does not matter to it.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    png = tmp_path / "calibration_curve.png"
    fig = Figure(figsize=(2, 2))
    FigureCanvasAgg(fig)
    fig.add_subplot(1, 1, 1).plot([0, 1], [0, 1])
    fig.savefig(png)
    monkeypatch.chdir(tmp_path)  # a stray default store would land here, not in the repo
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment(
        "expansion-scoring", artifact_location=(tmp_path / "art").as_uri()
    )
    for i, auc in enumerate((0.71, 0.74)):
        for model in ("expansion-propensity", "post-upsell-churn"):
            with mlflow.start_run(experiment_id=experiment, run_name=f"{model}-{i}") as run:
                mlflow.set_tags({"model_name": model, "training_id": f"t{i}"})
                mlflow.log_metrics(
                    {
                        "test_roc_auc": auc,
                        "test_pr_auc": 0.3,
                        "test_brier": 0.1,
                        "test_lift_at_10": 2.5,
                        "logreg_roc_auc": 0.69,
                        "rules_roc_auc": 0.6,
                    }
                )
                mlflow.log_artifact(str(png), artifact_path="plots")
    client.create_registered_model("expansion-propensity")
    version = client.create_model_version(
        "expansion-propensity", f"runs:/{run.info.run_id}/m", run_id=run.info.run_id
    )
    client.set_registered_model_alias("expansion-propensity", "champion", version.version)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    text = run_notebook("02_compare_models.ipynb")
    assert "4 runs found" in text
    assert "champion" in text  # the alias column of the registered versions
    assert "0.74" in text  # the latest run's ROC-AUC in the comparison
    assert "calibration_curve.png" in text  # the logged plots are shown
    assert not (tmp_path / "mlflow.db").exists()
    assert not (NOTEBOOKS / "mlflow.db").exists()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
