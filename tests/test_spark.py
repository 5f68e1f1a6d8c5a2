"""Spark parity: the same feature, label, loader and scoring code on Spark equals DuckDB's.

One small local SparkSession for the module (local[2], 4 shuffle partitions, no UI) and one
small dirty simulated dataset (150 accounts x 8 months, with quarantined rows and UTC offsets),
loaded by both engines. Skipped when pyspark or Java is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

if os.environ.get("CI") and shutil.which("java") is None:  # a skip would hide a missing install
    raise RuntimeError("CI needs Java for the Spark tests: make java")
pytest.importorskip("pyspark")
if shutil.which("java") is None:  # pragma: no cover - depends on the machine
    pytest.skip(
        "Spark needs Java (apt-get install openjdk-17-jre-headless)", allow_module_level=True
    )

from features.build import build_feature_frame
from features.dataset import Dataset, load_dataset
from features.engine import DuckDBEngine, SparkEngine, spark_session, to_spark_sql
from serving.scoring import Models, attach_reasons, rank_accounts, score_frame
from serving.snapshot import build_snapshot, write_snapshot
from serving.spark_batch import read_scores, score_on_spark, write_to_target
from training.labels import (
    expansion_events,
    expansion_labels,
    observation_dates,
    post_upsell_training_set,
    propensity_training_set,
)
from training.simulator import SimulationConfig, simulate

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas"),
]
KEYS = ["as_of", "account_id"]


@pytest.fixture(scope="module")
def spark():
    session = spark_session(
        "local[2]",
        conf={
            "spark.sql.shuffle.partitions": "4",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.driver.memory": "1g",
        },
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("spark") / "data"
    simulate(SimulationConfig(accounts=150, months=8, seed=3, dirty=True), out)
    return out


@pytest.fixture(scope="module")
def quarantine(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("quarantine")


@pytest.fixture(scope="module")
def both(data_dir: Path, spark, quarantine: Path) -> tuple[Dataset, Dataset]:
    """The dataset loaded by DuckDB and by Spark (quarantine files to separate folders)."""
    duck = load_dataset(data_dir, quarantine_dir=quarantine / "duckdb")
    sp = load_dataset(
        str(data_dir), engine="spark", spark=spark, quarantine_dir=str(quarantine / "spark")
    )
    return duck, sp


def assert_same(a: pd.DataFrame, b: pd.DataFrame, keys: list[str] | None = None) -> None:
    """Same rows and columns; floats to 1e-9 (sums may add up in another order)."""
    if keys:
        a = a.sort_values(keys).reset_index(drop=True)
        b = b.sort_values(keys).reset_index(drop=True)
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a, b, check_dtype=False, rtol=1e-9, atol=1e-9)


def test_engines(both) -> None:
    duck, sp = both
    assert isinstance(duck.engine, DuckDBEngine) and duck.con is duck.engine.con
    assert isinstance(sp.engine, SparkEngine)
    with pytest.raises(TypeError, match="runs on spark"):
        _ = sp.con


def test_transpiled_sql_keeps_utc_offsets() -> None:
    sql = "SELECT CAST(TRY_CAST(x AS TIMESTAMPTZ) AS TIMESTAMP) FROM t"
    assert "TIMESTAMP_LTZ" in to_spark_sql(sql) and "TIMESTAMP_NTZ" in to_spark_sql(sql)


def test_validation_matches(both, quarantine: Path) -> None:
    duck, sp = both
    assert sp.report.total_quarantined > 0  # the dirty dataset exercises the rules
    for name, a in duck.report.tables.items():
        b = sp.report.tables[name]
        assert (b.present, b.rows_read, b.rows_clean) == (a.present, a.rows_read, a.rows_clean)
        assert b.quarantined == a.quarantined, name
        assert (b.time_min, b.time_max) == (a.time_min, a.time_max), name
        if a.rows_quarantined:  # the same rows, reasons and source rows
            rows_a = pd.read_parquet(quarantine / "duckdb" / f"{name}.parquet")
            rows_b = pd.read_parquet(quarantine / "spark" / name)  # a folder of parts
            assert rows_b["source_row"].tolist() == rows_a["source_row"].tolist()
            assert rows_b["reason"].tolist() == rows_a["reason"].tolist()


def test_features_equal(both) -> None:
    duck, sp = both
    dates = ["2024-04-01", "2024-05-15", "2024-07-01"]
    a = build_feature_frame(duck, dates)
    b = build_feature_frame(sp, dates)
    assert len(a) > 100 and a["as_of"].nunique() == 3
    assert_same(a, b)


def test_highest_bit_is_exact_on_spark(both) -> None:
    """Spark's LOG2 divides two logarithms; the recency's correction keeps the bit exact."""
    from features.build import _highest_bit

    values = sorted({v for k in range(33) for v in (2**k - 1, 2**k, 2**k + 1) if 0 < v < 2**32})
    sql = " UNION ALL ".join(
        f"SELECT {v} AS v, {_highest_bit(f'CAST({v} AS BIGINT)')} AS h" for v in values
    )
    got = both[1].engine.df(sql)
    assert got["h"].tolist() == [v.bit_length() - 1 for v in got["v"]]


def test_labels_and_training_sets_equal(both) -> None:
    duck, sp = both
    dates = observation_dates(duck)
    assert dates == observation_dates(sp)
    assert_same(expansion_labels(duck, dates), expansion_labels(sp, dates), KEYS)
    assert_same(expansion_events(duck), expansion_events(sp))
    assert_same(propensity_training_set(duck, dates[-2:]), propensity_training_set(sp, dates[-2:]))
    a, b = post_upsell_training_set(duck), post_upsell_training_set(sp)
    assert len(a) > 0
    assert_same(a, b)


def test_snapshot_equal(both) -> None:
    duck, sp = both
    a, b = build_snapshot(duck), build_snapshot(sp)
    assert a.as_of == b.as_of and a.feature_names == b.feature_names
    assert_same(a.features.reset_index(), b.features.reset_index())
    # Why this date, and the accounts left out with why: the same on both engines.
    assert a.as_of_reason == b.as_of_reason and "latest clean event" in a.as_of_reason
    pd.testing.assert_frame_equal(a.unscored, b.unscored)


def test_batch_scores_equal(both, trained, spark, tmp_path: Path) -> None:
    """Spark features + Spark scoring == DuckDB features + the embedded scoring core."""
    duck, sp = both
    settings = trained.settings
    embedded_snap = build_snapshot(duck)
    models = Models.load(settings, embedded_snap.feature_names)
    expected = score_frame(models, embedded_snap.features, embedded_snap.plans, settings)
    ranked = rank_accounts(expected)
    expected["rank"] = pd.Series(pd.NA, index=expected.index, dtype="Int64")
    expected.loc[ranked.index, "rank"] = ranked["rank"].to_numpy()
    expected = attach_reasons(models, embedded_snap.features, expected, settings.reasons)
    expected = expected.sort_values("account_id").reset_index(drop=True)

    result = score_on_spark(spark, build_snapshot(sp), settings, str(tmp_path / "scores"))
    got = read_scores(spark, result.path)
    assert got["account_id"].tolist() == expected["account_id"].tolist()
    for col in ("p_expand", "p_post_upsell_churn", "expected_uplift_mrr", "expected_net_value"):
        np.testing.assert_allclose(
            got[col].to_numpy(float), expected[col].to_numpy(float), rtol=1e-9, equal_nan=True
        )
    for col in ("next_step", "route", "suppressed", "suppression_reason", "segment"):
        assert _plain(got[col]) == _plain(expected[col]), col
    assert got["rank"].astype("Int64").tolist() == expected["rank"].tolist()
    assert [list(t) for t in got["triggers"]] == [list(t) for t in expected["triggers"]]
    assert [[r["feature"] for r in x] for x in got["reasons"]] == [
        [r["feature"] for r in x] for x in expected["reasons"]
    ]
    np.testing.assert_allclose(got["base_value"], expected["base_value"], rtol=1e-9)
    assert result.summary.accounts == len(expected)
    assert result.summary.model_versions == models.versions

    # A Spark DataFrame of a written snapshot scores the same (the cluster-sized input).
    write_snapshot(embedded_snap, tmp_path / "snapshot")
    frame = spark.read.parquet(str(tmp_path / "snapshot" / "features.parquet"))
    again = score_on_spark(
        spark, frame, settings, str(tmp_path / "scores2"), plans=embedded_snap.plans
    )
    got2 = read_scores(spark, again.path)
    np.testing.assert_allclose(got2["expected_net_value"], got["expected_net_value"], rtol=1e-9)
    assert got2["rank"].astype("Int64").tolist() == got["rank"].astype("Int64").tolist()

    # Streamed from the driver, in chunks, to a database target: every row, one run.
    summary = write_to_target(spark, result, f"sqlite:///{tmp_path / 'crm.db'}", chunk_size=64)
    assert summary.written == len(expected)
    import sqlite3

    with sqlite3.connect(tmp_path / "crm.db") as db:
        rows = db.execute("SELECT account_id, rank FROM account_expansion_scores").fetchall()
        runs = db.execute("SELECT run_id, status, written FROM scoring_runs").fetchall()
    assert len(rows) == len(expected)
    assert runs == [(result.run.run_id, "completed", len(expected))]


def _plain(values: pd.Series) -> list:
    return [None if (v is None or v is pd.NA or v != v) else v for v in values.astype(object)]


def test_tiny_parquet_dataset_without_optional_tables(make_dataset, spark) -> None:
    """Absent optional tables are empty on Spark too; string timestamps parse the same."""
    path = make_dataset(fmt="parquet")
    duck = load_dataset(path, write_quarantine=False)
    sp = load_dataset(str(path), engine="spark", spark=spark, write_quarantine=False)
    assert not sp.has("event_catalog") and not sp.has("plan_limits")
    for name, a in duck.report.tables.items():
        b = sp.report.tables[name]
        assert (b.present, b.rows_clean, b.time_max) == (a.present, a.rows_clean, a.time_max)
    assert_same(build_feature_frame(duck, ["2024-01-10"]), build_feature_frame(sp, ["2024-01-10"]))


def test_spark_refuses_csv_tables(make_dataset, spark) -> None:
    from features.dataset import ContractError

    path = make_dataset(fmt="csv")
    with pytest.raises(ContractError, match="Parquet tables only"):
        load_dataset(str(path), engine="spark", spark=spark)
