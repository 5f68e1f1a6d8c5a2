"""The `expansion` command-line program: one verb per job, each a thin wrapper over a library call.

The CLI lives in `training/` because it is the one place allowed to reach every layer
(`features/`, `training/` and `serving/`); heavy imports happen inside each command so that
`expansion --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

app = typer.Typer(
    name="expansion",
    help="Rank B2B SaaS accounts for upsell: which to pitch now, why, and whether it will stick.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

DataDir = Annotated[
    Path,
    typer.Option("--data", "-d", help="Dataset folder that follows DATA_CONTRACT.md.",
                 exists=True, file_okay=False),
]


@contextmanager
def progress_bar(description: str) -> Iterator[Progress]:
    """A Rich progress bar for jobs that take more than a couple of seconds."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        yield progress


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)


@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the dataset to.")],
    accounts: Annotated[int, typer.Option(help="Number of customer accounts.", min=1)] = 2000,
    months: Annotated[int, typer.Option(help="Months of history to simulate.", min=1)] = 18,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 42,
    start: Annotated[str, typer.Option(help="First simulated day (YYYY-MM-DD).")] = "2024-01-01",
    dirty: Annotated[
        bool, typer.Option(help="Inject known defects (for testing the quarantine).")
    ] = False,
) -> None:
    """Write a synthetic B2B SaaS dataset (contract tables plus ground truth in _truth/)."""
    from training.simulator import SimulationConfig
    from training.simulator import simulate as run_simulation

    config = SimulationConfig(
        accounts=accounts, months=months, seed=seed, start=date.fromisoformat(start), dirty=dirty
    )
    with progress_bar("simulating accounts") as progress:
        task = progress.add_task("simulating accounts", total=accounts)
        summary = run_simulation(
            config, out, progress=lambda done, total: progress.update(task, completed=done)
        )
    table = Table(title=f"Simulated dataset in {out}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in summary.rows.items():
        table.add_row(name, f"{n:,}")
    console.print(table)


@app.command()
def validate(
    data_dir: Annotated[
        Path, typer.Argument(help="Dataset folder to check.", exists=True, file_okay=False)
    ],
) -> None:
    """Check a dataset against the contract; quarantine bad rows; exit non-zero if fatal."""
    from features.dataset import ContractError, load_dataset

    try:
        with console.status("validating"):
            ds = load_dataset(data_dir)
    except ContractError as exc:
        raise _fail(str(exc)) from exc
    print_validation(ds.report)


def print_validation(report) -> None:
    """Print rows per table, time range and quarantined rows per reason."""
    table = Table(title=f"Dataset {report.path}")
    for col, justify in (("table", "left"), ("rows read", "right"), ("clean", "right"),
                         ("quarantined", "right"), ("from", "left"), ("to", "left")):
        table.add_column(col, justify=justify)
    for t in report.tables.values():
        if not t.present:
            table.add_row(t.table, "[dim]absent (optional)[/]", "", "", "", "")
            continue
        table.add_row(
            t.table,
            f"{t.rows_read:,}",
            f"{t.rows_clean:,}",
            f"[red]{t.rows_quarantined:,}[/]" if t.rows_quarantined else "0",
            str(t.time_min or ""),
            str(t.time_max or ""),
        )
    console.print(table)
    counts = report.quarantine_counts()
    if counts:
        q = Table(title="Quarantined rows (see _quarantine/<table>.parquet)")
        q.add_column("table")
        q.add_column("reason")
        q.add_column("rows", justify="right")
        for (tname, reason), n in counts.items():
            q.add_row(tname, reason, f"{n:,}")
        console.print(q)
    else:
        console.print("[green]No rows quarantined.[/]")


if __name__ == "__main__":  # pragma: no cover - `python -m training.cli`
    app()
