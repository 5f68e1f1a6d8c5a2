"""Explanations: `serving.treeshap` against LightGBM's `pred_contrib`, measured in the same run.

    python -m benchmarks.explain [--quick] [--repeat N]

The model is the project's propensity champion, trained by the project's training pipeline on a
simulated dataset (2,000 accounts x 15 months, cached under `data/bench/` and shared with the
batch benchmark). The rows are the snapshot's real feature rows (NaN and categories included),
drawn with replacement up to 10,000.

Values first: the maximum absolute difference to `pred_contrib` (LightGBM's own pandas path)
over all rows, for the numba kernel and the numpy fallback; the run fails above 1e-9. Then speed
for 1 row (many calls), 50 rows and 10,000 rows, each side run `--repeat` times interleaved
and the fastest run of each compared, so that load from other processes on the machine hits
both sides alike. Single-threaded on both sides (what the service does per request), and for
10,000 rows also on every usable core (LightGBM's OpenMP against the kernel in threads).
CPU-time ratios of the single-threaded runs are printed too: they move less on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 200)
TOLERANCE = 1e-9


def _fastest(calls: list[Callable[[], object]], repeat: int, inner: int) -> list[tuple]:
    """(wall, cpu) seconds per call of each function: the fastest of `repeat` interleaved runs."""
    best = [(np.inf, np.inf) for _ in calls]
    for _ in range(repeat):
        for i, call in enumerate(calls):
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(inner):
                call()
            wall = (time.perf_counter() - wall) / inner
            cpu = (time.process_time() - cpu) / inner
            best[i] = (min(best[i][0], wall), min(best[i][1], cpu))
    return best


def _model_and_rows(rows: int):
    from benchmarks.batch import TRAIN_ACCOUNTS, TRAIN_MONTHS, trained_models
    from benchmarks.common import dataset
    from features.dataset import load_dataset
    from serving.registry import load_scoring_model
    from serving.settings import PROPENSITY_MODEL, Settings
    from serving.snapshot import build_snapshot

    models_dir = trained_models()
    data = load_dataset(dataset(TRAIN_ACCOUNTS, TRAIN_MONTHS), write_quarantine=False)
    snapshot = build_snapshot(data)
    settings = Settings(models_dir=Path(models_dir))
    started = time.perf_counter()
    model, _ = load_scoring_model(settings, PROPENSITY_MODEL)  # builds the explainer
    load_s = time.perf_counter() - started
    features = snapshot.features[model.contract.features]
    features = features[features.notna().any(axis=1)]  # canceled accounts carry no features
    pick = np.random.default_rng(0).integers(0, len(features), size=rows)
    return model, features.iloc[pick], load_s


def _depth(node: dict) -> int:
    if "split_index" not in node:
        return 0
    return 1 + max(_depth(node["left_child"]), _depth(node["right_child"]))


def run(quick: bool = False, repeat: int = 5) -> dict:
    """Check values, measure, print the table; return the figures."""
    from serving.treeshap import TreeShap

    model, frame, load_s = _model_and_rows(10_000)
    booster, explainer = model.booster, model.tree_shap
    assert explainer is not None and explainer.backend == "numba"
    dump = booster.dump_model()
    depth = max(_depth(t["tree_structure"]) for t in dump["tree_info"])
    console.print(
        f"Propensity model: {explainer.n_trees} trees, max depth {depth}, "
        f"{len(model.contract.features)} features ({len(model.contract.categorical)} "
        f"categorical); explainer tables {explainer.table_bytes / 1e6:.1f} MB; "
        f"model load incl. tables and compile/cache load {load_s:.1f} s"
    )
    started = time.perf_counter()
    TreeShap(booster)
    console.print(
        f"Building the tables alone (kernel compiled): {time.perf_counter() - started:.2f} s"
    )

    # --- values first ---
    matrix = model.lgb_matrix(frame)
    reference = booster.predict(model.frame(frame), pred_contrib=True)
    diff = float(np.abs(explainer.shap_values(matrix) - reference).max())
    plain = TreeShap(booster, backend="numpy")
    diff_numpy = float(np.abs(plain.shap_values(matrix[:1000]) - reference[:1000]).max())
    nan_share = float(np.isnan(matrix).mean())
    console.print(
        f"Values: max |treeshap - pred_contrib| = {diff:.2e} (numba, {len(matrix):,} rows), "
        f"{diff_numpy:.2e} (numpy fallback, 1,000 rows); {nan_share:.0%} of inputs missing"
    )
    if max(diff, diff_numpy) > TOLERANCE:
        console.print(f"[red]values differ by more than {TOLERANCE}: no speed figures[/red]")
        raise SystemExit(1)

    # --- speed ---
    repeat = 3 if quick else repeat
    cores = len(os.sched_getaffinity(0))
    cases = [(1, 100 if quick else 400), (50, 5 if quick else 20), (10_000, 1)]
    rows_out, figures = [], {}
    for n, inner in cases:
        x = np.ascontiguousarray(matrix[:n])
        threads = [1] if n < 10_000 else sorted({1, cores})
        for t in threads:
            (lgb_wall, lgb_cpu), (ours_wall, ours_cpu) = _fastest(
                [
                    lambda x=x, t=t: booster.predict(x, pred_contrib=True, num_threads=t),
                    lambda x=x, t=t: explainer.shap_values(x, threads=t),
                ],
                repeat,
                inner,
            )
            figures[(n, t)] = lgb_wall / ours_wall
            rows_out.append(
                (
                    f"{n:,} row{'s' if n > 1 else ''}, {t} thread{'s' if t > 1 else ''}",
                    f"{lgb_wall * 1e3:.3f}",
                    f"{ours_wall * 1e3:.3f}",
                    f"{lgb_wall / ours_wall:.1f}x",
                    f"{lgb_cpu / ours_cpu:.1f}x" if t == 1 else "",
                )
            )
    if not quick:  # the fallback, for the record (it runs when numba is not installed)
        x = np.ascontiguousarray(matrix[:1000])
        (lgb_wall, _), (np_wall, _) = _fastest(
            [
                lambda: booster.predict(x, pred_contrib=True, num_threads=1),
                lambda: plain.shap_values(x),
            ],
            max(1, repeat // 2),
            1,
        )
        rows_out.append(
            (
                "numpy fallback, 1,000 rows",
                f"{lgb_wall * 1e3:.1f}",
                f"{np_wall * 1e3:.1f}",
                f"{lgb_wall / np_wall:.2f}x",
                "",
            )
        )

    table = Table(title=f"Explanations: pred_contrib vs serving.treeshap (fastest of {repeat})")
    for i, column in enumerate(["rows", "pred_contrib ms", "treeshap ms", "speed-up", "CPU"]):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows_out:
        table.add_row(*row)
    console.print(table)
    return {"max_abs_diff": diff, "max_abs_diff_numpy": diff_numpy, "speedups": figures}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Fewer repetitions.")
    parser.add_argument("--repeat", type=int, default=5, help="Interleaved runs per side.")
    args = parser.parse_args(argv)
    run(quick=args.quick, repeat=args.repeat)


if __name__ == "__main__":
    main()
