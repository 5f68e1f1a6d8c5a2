"""Batch scoring benchmark: 100k accounts end to end, beside raw model throughput.

    python -m benchmarks.batch [--accounts N] [--months M] [--target URL] [--quick]

End to end means what `expansion score` does: features from the raw tables (DuckDB), both
models' scores, the global rank, drift, reasons (TreeSHAP) for every account and the database
write (SQLite by default; pass `--target postgresql://...` for a server). The reference,
measured in the same process on the same rows: the propensity model's raw prediction
throughput and its raw TreeSHAP throughput, so the figures survive a slower or faster machine.

The accounts are simulated with few months (3 by default: enough for every 30-day window and
the quota features, quick to generate) and cached under `data/bench/`; the models are trained
once on a smaller, longer history (2,000 accounts x 15 months) and cached too.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.common import BENCH_DIR, dataset, measured

console = Console()
TRAIN_ACCOUNTS, TRAIN_MONTHS = 2000, 15


def _status_gib(field: str) -> float:
    """`VmRSS` (now) or `VmHWM` (peak since start or the last reset) of this process, GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def _reset_peak() -> None:
    """Reset VmHWM (Linux >= 4.0), so the next stage's peak is its own."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def trained_models(accounts: int = TRAIN_ACCOUNTS, months: int = TRAIN_MONTHS) -> Path:
    """A models folder with both champions, trained once on a cached simulated dataset."""
    models_dir = BENCH_DIR / f"models_{accounts}x{months}"
    if not (models_dir / "champions.ok").exists():
        measured(_train, str(dataset(accounts, months)), str(models_dir))
        (models_dir / "champions.ok").write_text("both models promoted\n")
    return models_dir


def _train(data: str, models_dir: str) -> None:
    from features.dataset import load_dataset
    from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL, Settings
    from training.config import TrainingConfig
    from training.pipeline import train_models
    from training.tracking import promote

    settings = Settings(models_dir=Path(models_dir))
    train_models(load_dataset(Path(data), write_quarantine=False), TrainingConfig(), settings)
    for name in (PROPENSITY_MODEL, POST_UPSELL_MODEL):
        promote(settings, name)


def _batch(data: str, models_dir: str, target: str, chunk_size: int) -> dict:
    """In a fresh process: the batch run, then the raw-model references on the same rows."""
    from features.dataset import load_dataset
    from serving.batch import run_batch
    from serving.scoring import Models
    from serving.settings import Settings
    from serving.snapshot import build_snapshot

    settings = Settings(models_dir=Path(models_dir))
    ds = load_dataset(Path(data), write_quarantine=False)
    rss_before = _status_gib("VmRSS")
    memory = {}

    def stage_peaks(stage: str, done: int, total: int) -> None:
        if stage == "features" and done == total:  # features built: their peak, then reset
            memory["features_peak"] = _status_gib("VmHWM")
            memory["after_features"] = _status_gib("VmRSS")
            _reset_peak()

    started = time.perf_counter()
    summary = run_batch(ds, settings, target, chunk_size=chunk_size, progress=stage_peaks)
    end_to_end = time.perf_counter() - started
    scoring_peak = _status_gib("VmHWM")  # scores, drift, reasons and writes
    # ru_maxrss follows the same high-water mark, which the reset lowered: take the larger.
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,  # KiB on Linux
        memory.get("features_peak", 0.0),
    )

    # References on the same rows, after the peak was read (they allocate their own copies).
    snapshot = build_snapshot(ds, summary.as_of)
    models = Models.load(settings, snapshot.feature_names)
    rows = snapshot.features
    started = time.perf_counter()
    models.propensity.predict_proba(rows)
    predict_s = time.perf_counter() - started
    sample = rows.iloc[: min(len(rows), 20_000)]
    # The reference is LightGBM's own TreeSHAP (`pred_contrib`), which the product's
    # `contributions` replaced with serving.treeshap: the batch is compared with the anchor.
    booster = models.propensity.booster
    matrix = models.propensity.lgb_matrix(sample) if booster is not None else None
    started = time.perf_counter()
    if booster is not None:
        booster.predict(matrix, pred_contrib=True)
    else:
        models.propensity.contributions(sample)
    shap_s = time.perf_counter() - started
    return {
        "accounts": summary.written,
        "timings": summary.timings,
        "end_to_end": end_to_end,
        "predict_s": predict_s,
        "predict_rows": len(rows),
        "shap_s": shap_s,
        "shap_rows": len(sample),
        "rss_before_gib": rss_before,
        "peak_gib": peak,
        "features_peak_gib": memory.get("features_peak", float("nan")),
        "after_features_gib": memory.get("after_features", float("nan")),
        "scoring_peak_gib": scoring_peak,
        "trees": models.propensity.booster.num_trees() if models.propensity.booster else 0,
        "drift_warnings": summary.drift_warnings,
    }


def run_batch_bench(
    accounts: int = 100_000,
    months: int = 3,
    *,
    target: str | None = None,
    chunk_size: int = 50_000,
) -> dict:
    """Measure one batch run on `accounts` simulated accounts; print and return the figures."""
    data = dataset(accounts, months)
    models_dir = trained_models()
    with tempfile.TemporaryDirectory() as tmp:
        url = target or f"sqlite:///{Path(tmp) / 'crm.db'}"
        run = measured(_batch, str(data), str(models_dir), url, chunk_size)["result"]
    n = run["accounts"]
    t = run["timings"]
    rate = n / run["end_to_end"]
    predict_rate = run["predict_rows"] / run["predict_s"]
    shap_rate = run["shap_rows"] / run["shap_s"]
    rows = [
        ("features (DuckDB, build_snapshot)", t["features"], n / t["features"]),
        ("scores: both models, steps, rules, rank", t["scores"], n / t["scores"]),
        ("drift (PSI per feature)", t["drift"], n / t["drift"]),
        ("reasons + write, per chunk", t["explain_write"], n / t["explain_write"]),
        ("end to end (incl. model load)", run["end_to_end"], rate),
        ("reference: raw propensity predict_proba", run["predict_s"], predict_rate),
        (
            f"reference: LightGBM pred_contrib ({run['shap_rows']:,} rows)",
            run["shap_s"],
            shap_rate,
        ),
    ]
    table = Table(title=f"Batch scoring: {n:,} accounts ({months} simulated months) -> {url}")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("accounts/s", justify="right")
    for name, seconds, per_s in rows:
        table.add_row(name, f"{seconds:.1f}", f"{per_s:,.0f}")
    console.print(table)
    console.print(
        f"End to end {rate:,.0f} accounts/s = {rate / predict_rate:.3f}x raw prediction, "
        f"{rate / shap_rate:.2f}x LightGBM pred_contrib "
        f"({run['trees']} trees in the propensity model)."
    )
    console.print(
        f"Peak RSS {run['peak_gib']:.2f} GiB: {run['rss_before_gib']:.2f} GiB before the run "
        f"(imports, the loaded dataset), {run['features_peak_gib']:.2f} GiB while building "
        f"features (DuckDB), {run['after_features_gib']:.2f} GiB after them, "
        f"{run['scoring_peak_gib']:.2f} GiB while scoring, explaining and writing."
    )
    return {**run, "rate": rate, "predict_rate": predict_rate, "shap_rate": shap_rate}


def main(quick: bool = False, argv: list[str] | None = None) -> None:
    """`python -m benchmarks batch` entry (it calls `main(quick=...)`) and the module's CLI."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=None)
    parser.add_argument("--months", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--target", default=None, help="Database URL (default: temp SQLite).")
    parser.add_argument("--quick", action="store_true", help="10,000 accounts.")
    args = parser.parse_args(argv if argv is not None else [])
    accounts = args.accounts or (10_000 if (quick or args.quick) else 100_000)
    run_batch_bench(accounts, args.months, target=args.target, chunk_size=args.chunk_size)


if __name__ == "__main__":
    import sys

    main(argv=sys.argv[1:])
