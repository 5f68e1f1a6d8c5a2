"""Spark vs DuckDB benchmark: the same jobs on both engines, same data, same run.

    python -m benchmarks spark [--quick]      (`make bench-spark`)
    python -m benchmarks.spark [--quick] [training] [batch]      (one job or both)

Two jobs, each run in a fresh child process per engine:

1. the training-set build (`training.labels.training_sets`: load and validate, roll-ups,
   features for every monthly observation date, both label sets);
2. a batch of accounts (100,000; 10,000 with --quick): load, the feature snapshot, then the
   scores, global rank and reasons of every account written as Parquet (DuckDB: the embedded
   `run_batch` to a Parquet file; Spark: `build_snapshot` on Spark then `score_on_spark`).

Seconds are wall time of the child; peak memory is the largest sum of resident memory over the
child's process tree (the Python process, the Spark driver JVM and its Python workers), sampled
by the parent with psutil every 0.1 s. Spark runs on `local[2]`: one machine's two cores, so the
ratio shows Spark's overhead, not a cluster's speed-up.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from benchmarks.batch import trained_models
from benchmarks.common import dataset

console = Console(width=120)
SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.driver.memory": "4g",
}


def tree_peak(fn: Callable, *args: Any) -> dict:
    """Run `fn(*args)` in a fresh process; seconds, result and peak RSS of its process tree."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, fn, *args))
    started = time.perf_counter()
    proc.start()
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        total += p.memory_info().rss
            except psutil.NoSuchProcess:
                break
            peak = max(peak, total)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = queue.get()
    proc.join()
    done.set()
    sampler.join()
    if isinstance(result, BaseException):
        raise result
    return {
        "result": result,
        "seconds": time.perf_counter() - started,
        "peak_gib": peak / 1024**3,
    }


def _child(queue: mp.Queue, fn: Callable, *args: Any) -> None:
    try:
        queue.put(fn(*args))
    except BaseException as exc:  # report, do not hang the parent
        queue.put(RuntimeError(f"{type(exc).__name__}: {exc}"))


def _spark():
    from features.engine import spark_session

    spark = spark_session("local[2]", conf=SPARK_CONF)
    spark.sparkContext.setLogLevel("ERROR")
    return spark


# --- jobs (run in the child) -----------------------------------------------------------------


def _training_sets(engine: str, path: str) -> dict:
    from training.labels import training_sets

    started = time.perf_counter()
    spark = _spark() if engine == "spark" else None
    startup = time.perf_counter() - started
    propensity, post_upsell = training_sets(path, engine=engine, spark=spark)
    return {"rows": len(propensity) + len(post_upsell), "startup": startup}


def _batch(engine: str, path: str, models_dir: str) -> dict:
    from features.dataset import load_dataset
    from serving.batch import run_batch
    from serving.settings import Settings

    settings = Settings(models_dir=Path(models_dir))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        if engine == "duckdb":
            ds = load_dataset(path, write_quarantine=False)
            load = time.perf_counter() - started
            summary = run_batch(ds, settings, str(Path(tmp) / "scores.parquet"))
            stages = {"load": load, "features": summary.timings["features"]}
            stages["scores+reasons+write"] = summary.seconds - stages["features"]
            return {"accounts": summary.written, "startup": 0.0, "stages": stages}
        from serving.snapshot import build_snapshot
        from serving.spark_batch import score_on_spark

        spark = _spark()
        startup = time.perf_counter() - started
        ds = load_dataset(path, engine="spark", spark=spark, write_quarantine=False)
        stages = {"load": time.perf_counter() - started - startup}
        clock = time.perf_counter()
        snapshot = build_snapshot(ds)
        stages["features"] = time.perf_counter() - clock
        clock = time.perf_counter()
        result = score_on_spark(spark, snapshot, settings, str(Path(tmp) / "scores"))
        stages["scores+reasons+write"] = time.perf_counter() - clock
        return {"accounts": result.summary.accounts, "startup": startup, "stages": stages}


# --- the table ------------------------------------------------------------------------------


def main(quick: bool = False, jobs_wanted: tuple[str, ...] = ("training", "batch")) -> dict:
    """Run both jobs on both engines; print one table and return the figures."""
    train_size = (2000, 15) if quick else (5000, 18)
    batch_size = (10_000, 3) if quick else (100_000, 3)
    train_path = str(dataset(*train_size))
    batch_path = str(dataset(*batch_size))
    models_dir = str(trained_models())
    jobs = {
        f"training sets, {train_size[0]:,} accts x {train_size[1]} mo": (
            _training_sets,
            (train_path,),
            "rows",
        ),
        f"batch, {batch_size[0]:,} accts x {batch_size[1]} mo": (
            _batch,
            (batch_path, models_dir),
            "accounts",
        ),
    }
    jobs = {k: v for k, v in jobs.items() if k.split(",")[0].split()[0] in jobs_wanted}
    figures: dict = {}
    table = Table(title="Spark local[2] vs DuckDB (same data, same run)")
    for col in (
        "job",
        "engine",
        "seconds",
        "Spark start s",
        "peak GiB",
        "rows",
        "time ratio",
        "memory ratio",
    ):
        table.add_column(col, justify="left" if col in ("job", "engine") else "right")
    for job, (fn, args, unit) in jobs.items():
        runs = {}
        for engine in ("duckdb", "spark"):
            console.print(f"{job}: {engine} ...")
            runs[engine] = tree_peak(fn, engine, *args)
        base = runs["duckdb"]
        for engine, run in runs.items():
            table.add_row(
                job,
                engine,
                f"{run['seconds']:.1f}",
                f"{run['result']['startup']:.1f}",
                f"{run['peak_gib']:.2f}",
                f"{run['result'][unit]:,}",
                f"{run['seconds'] / base['seconds']:.2f}x",
                f"{run['peak_gib'] / base['peak_gib']:.2f}x",
            )
        figures[job] = runs
    console.print(table)
    for job, runs in figures.items():
        for engine, run in runs.items():
            if "stages" in run["result"]:
                parts = ", ".join(f"{k} {v:.1f} s" for k, v in run["result"]["stages"].items())
                console.print(f"{job}, {engine}: {parts}")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Smaller sizes, for a smoke run.")
    parser.add_argument("jobs", nargs="*", default=["training", "batch"], help="training, batch")
    args = parser.parse_args()
    main(quick=args.quick, jobs_wanted=tuple(args.jobs))
