"""What every benchmark shares: a measured child process, cached simulated datasets, a table.

Each measured step runs in a fresh subprocess so its peak memory (max RSS) is its own. Simulated
datasets are cached under `data/bench/` so repeated runs skip the simulation.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 220)
BENCH_DIR = Path("data/bench")


def measured(fn: Callable, *args: Any) -> dict:
    """Run `fn(*args)` in a fresh process; return its result, seconds and peak RSS (GiB)."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_run_measured, (fn, *args))


def _run_measured(fn: Callable, *args: Any) -> dict:
    started = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - started
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux
    return {"result": result, "seconds": seconds, "peak_gib": peak_gib}


def dataset(accounts: int, months: int, seed: int = 42) -> Path:
    """A cached simulated dataset of this size."""
    from training.simulator import SimulationConfig, simulate

    out = BENCH_DIR / f"sim_{accounts}x{months}_s{seed}"
    if not (out / "events.parquet").exists():
        console.print(f"simulating {accounts:,} accounts x {months} months into {out} ...")
        simulate(SimulationConfig(accounts=accounts, months=months, seed=seed), out)
    return out


def print_table(title: str, rows: list[tuple], columns: list[str]) -> None:
    """Print `rows` under `columns`: the first column left-aligned, the figures right."""
    table = Table(title=title)
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*[str(x) for x in r])
    console.print(table)
