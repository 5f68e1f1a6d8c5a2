"""The `expansion` program as a user meets it: ordinary mistakes and output for scripts.

Every case runs the real program in a subprocess (the console script, or `python -m
training.cli`), as a shell or cron would, with stdout and stderr piped: a mistake must give
exactly one line on stderr, no traceback and the documented exit code; tables written to a
pipe must keep every id whole; `--format csv|json` must carry every digit.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from serving.scoring import Models, rank_accounts, score_frame
from serving.settings import Settings
from serving.snapshot import read_snapshot
from serving.state import StateKeeper

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("expansion")
PROGRAM = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "training.cli"]


def expansion(
    *args: str, models: Path, cwd: Path, columns: int | None = None
) -> subprocess.CompletedProcess:
    """Run `expansion ARGS` with pipes for stdout and stderr (not a terminal), as cron does.

    `columns` sets COLUMNS, as a terminal of that width would."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "EXPANSION_TRACKING_URI", "COLUMNS", "LINES")
    }
    if columns is not None:
        env["COLUMNS"] = str(columns)
    env["EXPANSION_MODELS_DIR"] = str(models)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [*PROGRAM, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def assert_one_line(done: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """Exactly one non-empty line on stderr, no traceback, the exit code; returns the line."""
    shown = (
        f"exit {done.returncode}\nstdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-4000:]}"
    )
    lines = done.stderr.splitlines()
    assert "Traceback" not in done.stderr, shown
    assert len(lines) == 1 and lines[0].strip(), shown
    assert done.returncode == code, shown
    for word in words:
        assert word in lines[0], shown
    return lines[0]


# --- data and model stores for the mistakes ---------------------------------------------------


@pytest.fixture(scope="module")
def headeronly_events(sim_data, tmp_path_factory) -> Path:
    """The simulated dataset with an events table that has its columns but no rows."""
    out = tmp_path_factory.mktemp("headeronly") / "data"
    shutil.copytree(sim_data, out, ignore=shutil.ignore_patterns("_truth"))
    events = pd.read_parquet(out / "events.parquet")
    events.head(0).to_parquet(out / "events.parquet", index=False)
    return out


def models_with_store(trained, folder: Path, content: bytes) -> Path:
    """A copy of the trained models folder whose mlflow.db is replaced by `content`."""
    shutil.copytree(trained.settings.models_dir / "snapshot", folder / "snapshot")
    (folder / "mlflow.db").write_bytes(content)
    return folder


GARBAGE = b"not an sqlite file\n" * 200


# --- ordinary mistakes: one line, exit 2 (or 0 for an empty answer) ---------------------------


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["rank", "--segment", "enterprize"], 0, ["0 accounts match", "enterprize"]),
        (["rank", "--csm-owner", "nobody"], 0, ["0 accounts match", "nobody"]),
        (["rank", "--sort", "foo"], 2, ["--sort", "foo", "net_value"]),
        (["rank", "--format", "xml"], 2, ["--format", "xml"]),
        (["compare", "--format", "yaml"], 2, ["--format", "yaml"]),
    ],
    ids=["unknown-segment", "unknown-owner", "bad-sort", "bad-rank-format", "bad-compare-format"],
)
def test_rank_and_compare_mistakes(trained, tmp_path, args, code, words):
    done = expansion(*args, models=trained.settings.models_dir, cwd=tmp_path)
    assert_one_line(done, code, *words)
    if code == 0:
        assert done.stdout.strip() == ""  # no table of nothing


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["features", "--as-of", "notadate", "--out", "f.parquet"], ["--as-of", "notadate"]),
        (["snapshot", "--as-of", "2025-02-30"], ["--as-of", "2025-02-30"]),
        (["score", "--as-of", "yesterday", "--to", "s.csv"], ["--as-of", "yesterday"]),
        (["report", "--from", "notadate"], ["--from", "notadate"]),
        (["report", "--from", "2025-03-01", "--to", "2025-01-01"], ["--from", "after", "--to"]),
    ],
    ids=["features-as-of", "snapshot-as-of", "score-as-of", "report-from", "report-from-after-to"],
)
def test_bad_dates(trained, tmp_path, args, words):
    command, *rest = args
    done = expansion(
        command, "--data", str(trained.data_dir), *rest, models=tmp_path / "m", cwd=tmp_path
    )
    assert_one_line(done, 2, *words)
    assert not (tmp_path / "f.parquet").exists() and not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("command", ["score", "features", "snapshot"])
def test_no_events_to_date_a_default_as_of(trained, headeronly_events, tmp_path, command):
    """A header-only events table: no last event, so no default as-of (was a TypeError)."""
    extra = {"score": ["--to", "s.csv"], "features": ["--out", "f.parquet"], "snapshot": []}
    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    done = expansion(
        command, "--data", str(headeronly_events), *extra[command], models=models, cwd=tmp_path
    )
    assert_one_line(done, 2, "events")  # names the empty table


def test_empty_events_file(trained, headeronly_events, tmp_path):
    """A 0-byte events file (no header at all) is a contract error, named, in one line."""
    data = tmp_path / "data"
    shutil.copytree(headeronly_events, data)
    (data / "events.parquet").unlink()
    (data / "events.csv").write_bytes(b"")
    done = expansion(
        "score", "--data", str(data), "--to", "s.csv", models=tmp_path / "m", cwd=tmp_path
    )
    assert_one_line(done, 2, "events.csv")


@pytest.mark.parametrize(
    "args",
    [["rank"], ["compare"], ["promote"], ["score", "--to", "s.csv"], ["report"], ["train"]],
    ids=lambda a: a[0],
)
def test_corrupt_model_store(trained, tmp_path, args):
    models = models_with_store(trained, tmp_path / "models", GARBAGE)
    command, *rest = args
    data = ["--data", str(trained.data_dir)] if command in ("score", "report", "train") else []
    done = expansion(command, *data, *rest, models=models, cwd=tmp_path)
    line = assert_one_line(done, 2, "mlflow.db", "unreadable")
    assert "SELECT" not in line and "sqlalche" not in line
    assert (models / "mlflow.db").read_bytes() == GARBAGE  # left for the user to restore


@pytest.mark.parametrize("args", [["rank"], ["train"]], ids=lambda a: a[0])
def test_zero_byte_model_store_is_not_recreated(trained, tmp_path, args):
    """A 0-byte mlflow.db (a failed copy) is refused, not silently turned into a new store."""
    models = models_with_store(trained, tmp_path / "models", b"")
    data = ["--data", str(trained.data_dir)] if args[0] == "train" else []
    done = expansion(*args, *data, models=models, cwd=tmp_path)
    assert_one_line(done, 2, "mlflow.db", "empty (0 bytes)")
    assert (models / "mlflow.db").stat().st_size == 0


def test_store_check_passes_a_good_or_new_store(trained, tmp_path):
    from serving.registry import ModelStoreError, check_model_store

    check_model_store(trained.settings.resolved_tracking_uri)  # the trained store
    check_model_store(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")  # none yet: MLflow makes it
    check_model_store("http://127.0.0.1:5000")  # not a file: MLflow's server checks itself
    truncated = Path(trained.settings.resolved_tracking_uri.removeprefix("sqlite:///"))
    (tmp_path / "half.db").write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 3])
    with pytest.raises(ModelStoreError, match="unreadable"):
        check_model_store(f"sqlite:///{tmp_path / 'half.db'}")


def test_service_reports_a_short_error_for_a_corrupt_store(trained, tmp_path):
    """/model_info answers 503 with the keeper's error: one sentence, not SQLAlchemy's SQL."""
    models = models_with_store(trained, tmp_path / "models", GARBAGE)
    keeper = StateKeeper(Settings(models_dir=models, tracking_uri=None, auth_enabled=False), 30)
    assert keeper.refresh() is False
    assert keeper.state is None
    assert keeper.error is not None and keeper.error.startswith("ModelStoreError:")
    assert "SELECT" not in keeper.error and "\n" not in keeper.error
    assert len(keeper.error) < 300


# --- output for people (piped) and for scripts -----------------------------------------------


@pytest.fixture(scope="module")
def expected_rank(trained) -> pd.DataFrame:
    """The top 15 computed in-process with the same scoring core, for exact comparison."""
    snap = read_snapshot(trained.settings.models_dir / "snapshot")
    models = Models.load(trained.settings, snap.feature_names)
    scored = score_frame(models, snap.features, snap.plans, trained.settings)
    top = rank_accounts(scored, limit=15)
    names = snap.features["ctx_name"]
    return top.assign(name=top["account_id"].map(names))


def test_rank_csv_is_complete_and_exact(trained, tmp_path, expected_rank):
    done = expansion(
        "rank", "--limit", "15", "--format", "csv", models=trained.settings.models_dir, cwd=tmp_path
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["account_id"] for r in rows] == expected_rank["account_id"].tolist()
    assert [r["name"] for r in rows] == expected_rank["name"].tolist()
    for row, (_, want) in zip(rows, expected_rank.iterrows(), strict=True):
        # every digit: the text reads back to the very same float
        assert float(row["p_expand"]) == want["p_expand"]
        assert float(row["expected_net_value"]) == want["expected_net_value"]
        assert row["csm_owner"] == want["csm_owner"]
        assert row["plan"] and not row["plan"].startswith("plan_")  # the plan's name
        assert row["reasons"] and "(+" not in row["reasons"]  # words, not log-odds


def test_rank_json_has_contributions_and_names(trained, tmp_path, expected_rank):
    done = expansion(
        "rank", "--limit", "15", "-f", "json", models=trained.settings.models_dir, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["account_id"] for r in rows] == expected_rank["account_id"].tolist()
    assert [r["p_post_upsell_churn"] for r in rows] == expected_rank["p_post_upsell_churn"].tolist()
    assert [r["rank"] for r in rows] == list(range(1, 16))
    for r in rows:
        assert r["name"] and r["plan"] and r["csm_owner"] and isinstance(r["mrr"], float)
        assert r["reasons"], r
        for reason in r["reasons"]:
            assert isinstance(reason["contribution"], float) and reason["contribution"] > 0
            assert "(+" not in reason["text"]


def test_rank_table_piped_keeps_ids_and_speaks_words(trained, tmp_path, expected_rank):
    done = expansion("rank", "--limit", "15", models=trained.settings.models_dir, cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    out = done.stdout
    assert "…" not in out  # nothing cut to fit 80 columns
    for _, want in expected_rank.iterrows():
        assert want["account_id"] in out and want["name"] in out
    assert "(+" not in out  # no log-odds in the table
    assert "plan_" not in out  # plan names, not ids
    assert "upgrade to " in out or "add " in out


def test_rank_table_on_an_80_column_terminal(trained, tmp_path, expected_rank):
    """Narrow: name, owner and plan stack under the id; ids and reasons still whole."""
    models = trained.settings.models_dir
    done = expansion("rank", "--limit", "5", models=models, cwd=tmp_path, columns=80)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[-1].endswith("┘")  # the table fits: its right border is there
    assert "…" not in done.stdout
    for account in expected_rank["account_id"].head(5):
        assert account in done.stdout


def test_compare_formats_for_scripts(trained, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=trained.settings.resolved_tracking_uri)
    experiment = client.get_experiment_by_name(trained.settings.experiment)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    want = {r.info.run_id: r.data.metrics["test_roc_auc"] for r in runs}
    models = trained.settings.models_dir
    as_json = json.loads(
        expansion(
            "compare", "--limit", "100", "--format", "json", models=models, cwd=tmp_path
        ).stdout
    )
    as_csv = list(
        csv.DictReader(
            io.StringIO(
                expansion(
                    "compare", "--limit", "100", "-f", "csv", models=models, cwd=tmp_path
                ).stdout
            )
        )
    )
    assert {r["run_id"] for r in as_json} == set(want)  # whole ids, every run
    assert [r["run_id"] for r in as_csv] == [r["run_id"] for r in as_json]
    for j, c in zip(as_json, as_csv, strict=True):
        assert j["test_roc_auc"] == want[j["run_id"]]  # every digit
        assert float(c["test_roc_auc"]) == want[j["run_id"]]
        assert j["model"] and j["aliases"]


def test_compare_table_piped_is_not_cut(trained, tmp_path):
    done = expansion("compare", models=trained.settings.models_dir, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout
    assert "expansion-propensity" in done.stdout and "post-upsell-churn" in done.stdout


def test_score_top_in_a_log_file_is_readable(trained, tmp_path):
    """The demo's last step, stdout redirected to a file: whole ids, names and plan names."""
    log = tmp_path / "score.log"
    env_models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, env_models)
    crm = f"sqlite:///{tmp_path / 'crm.db'}"
    done = expansion(
        "score",
        "--data",
        str(trained.data_dir),
        "--to",
        crm,
        "--top",
        "5",
        models=env_models,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log.write_text(done.stdout)
    text = log.read_text()
    import sqlalchemy as sa

    engine = sa.create_engine(crm)
    with engine.connect() as conn:
        top = pd.read_sql(
            "SELECT account_id FROM account_expansion_scores WHERE rank IS NOT NULL "
            "ORDER BY rank LIMIT 5",
            conn,
        )
    engine.dispose()
    accounts = pd.read_parquet(trained.data_dir / "accounts.parquet").set_index("account_id")
    assert "…" not in text
    for account in top["account_id"]:
        assert account in text and accounts.loc[account, "name"] in text
    assert "(+" not in text and "plan_" not in text
