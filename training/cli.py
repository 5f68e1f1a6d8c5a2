"""The `expansion` command-line program: one verb per job, each a thin wrapper over a library call.

The CLI lives in `training/` because it is the one place allowed to reach every layer
(`features/`, `training/` and `serving/`); heavy imports happen inside each command so that
`expansion --help` stays fast.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from typer.core import TyperGroup

# Width for stdout when it is a pipe, a file or cron's mail rather than a terminal: Rich would
# otherwise lay tables out in 80 columns and cut ids and numbers to "acct_00…".
PIPED_WIDTH = 1000


def _stdout_console() -> Console:
    """Rich's console for stdout: the terminal's width, or wide when piped (unless COLUMNS)."""
    terminal = Console()
    if terminal.is_terminal or os.environ.get("COLUMNS"):
        return terminal
    return Console(width=PIPED_WIDTH)


console = _stdout_console()
# soft_wrap: a message is one line on stderr whatever the width, for logs and for scripts.
err_console = Console(stderr=True, soft_wrap=True)


def _print_error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}")


class OneLineErrors(TyperGroup):
    """Usage mistakes and known operational errors as one `error:` line on stderr.

    Click answers a bad option with a usage banner and a boxed panel; a damaged model store
    surfaces deep inside MLflow as a traceback. Both are ordinary mistakes: say what is wrong
    in one line and exit 2. Anything else is a bug and keeps its traceback.
    """

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as exc:  # click's usage errors (bad option value, ...)
            if type(exc).__name__ == "NoArgsIsHelpError":  # `expansion` alone: help printed
                sys.exit(exc.exit_code)
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            _print_error(exc.format_message() + hint)
            sys.exit(getattr(exc, "exit_code", 2))
        except typer.Abort:
            _print_error("aborted")
            sys.exit(1)
        except Exception as exc:
            if not _is_known_error(exc):
                raise
            _print_error(str(exc))
            sys.exit(2)
        sys.exit(code if isinstance(code, int) else 0)


def _is_known_error(exc: BaseException) -> bool:
    """An error with a complete message for the user (no traceback needed)."""
    # Only a loaded serving.registry can have raised its error; importing it here would load
    # MLflow just to re-raise a bug.
    registry = sys.modules.get("serving.registry")
    return registry is not None and isinstance(exc, registry.ModelStoreError)


app = typer.Typer(
    name="expansion",
    cls=OneLineErrors,
    help="Rank B2B SaaS accounts for upsell: which to pitch now, why, and whether it will stick.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


class OutputFormat(StrEnum):
    """How a command prints its rows: a table for people, csv or json for scripts."""

    table = "table"
    csv = "csv"
    json = "json"


class RankSort(StrEnum):
    """What `rank` orders accounts by."""

    net_value = "net_value"
    propensity = "propensity"


FormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        "-f",
        help="table (for people), or csv / json on stdout (for scripts: every column, "
        "full precision).",
    ),
]


def parse_day(value: str) -> date:
    """A YYYY-MM-DD option value as a date; anything else is a usage error naming the value."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date: use YYYY-MM-DD") from None


DataDir = Annotated[
    Path,
    typer.Option(
        "--data",
        "-d",
        help="Dataset that follows DATA_CONTRACT.md: a folder of tables, or a DuckDB file.",
        exists=True,
    ),
]


AllowOutOfRange = Annotated[
    bool,
    typer.Option(
        "--allow-out-of-range-as-of",
        help="Score an --as-of before the first clean event or more than a week after the "
        "last one (refused otherwise: every feature window would be empty or partial).",
    ),
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
        disable=not err_console.is_terminal,  # a log or a pipe gets results, not bar frames
    ) as progress:
        yield progress


def _fail(message: str) -> typer.Exit:
    _print_error(message)
    return typer.Exit(code=2)


@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the dataset to.")],
    accounts: Annotated[int, typer.Option(help="Number of customer accounts.", min=1)] = 2000,
    months: Annotated[int, typer.Option(help="Months of history to simulate.", min=1)] = 18,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 42,
    start: Annotated[
        str, typer.Option(help="First simulated month (YYYY-MM-01); one warm-up month precedes it.")
    ] = "2024-01-01",
    dirty: Annotated[
        bool, typer.Option(help="Inject known defects (for testing the quarantine).")
    ] = False,
    flat_pricing: Annotated[bool, typer.Option(help="One price per tier, no seat price.")] = False,
    annual_share: Annotated[
        float, typer.Option(help="Share of accounts billed annually (tiers sold both ways).")
    ] = 0.0,
    discount_share: Annotated[
        float, typer.Option(help="Share of accounts with a sign-up discount that ends.")
    ] = 0.0,
    upgrades_at_renewal: Annotated[
        bool, typer.Option(help="Tier upgrades only on a monthly renewal day.")
    ] = False,
    plan_limits: Annotated[bool, typer.Option(help="Write the plan_limits table.")] = True,
    outreach: Annotated[bool, typer.Option(help="Simulate and write upsell outreach.")] = True,
    treatment_effect: Annotated[
        str,
        typer.Option(
            help="How a touch changes the expansion hazard by account state: constant, "
            "quota_pressure, small_accounts, mixed or none (the true per-account effect goes "
            "to _truth/)."
        ),
    ] = "constant",
) -> None:
    """Write a synthetic B2B SaaS dataset (contract tables plus ground truth in _truth/)."""
    from training.simulator import SimulationConfig
    from training.simulator import simulate as run_simulation

    try:
        config = SimulationConfig(
            accounts=accounts,
            months=months,
            seed=seed,
            start=date.fromisoformat(start),
            dirty=dirty,
            flat_pricing=flat_pricing,
            annual_share=annual_share,
            discount_share=discount_share,
            upgrades_at_renewal=upgrades_at_renewal,
            plan_limits=plan_limits,
            outreach=outreach,
            treatment_effect=treatment_effect,
        )
    except ValueError as exc:
        raise _fail(str(exc)) from exc
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
        Path, typer.Argument(help="Dataset folder (or DuckDB file) to check.", exists=True)
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


def _load(data_dir: Path, engine: str = "duckdb", spark_master: str | None = None):
    """Load and validate a dataset for a job, printing what was quarantined."""
    from features.dataset import ContractError, load_dataset

    try:
        with console.status(f"validating {data_dir}"):
            ds = load_dataset(data_dir, engine=engine, spark_master=spark_master)
    except ContractError as exc:
        raise _fail(str(exc)) from exc
    if ds.report.total_quarantined:
        err_console.print(
            f"[yellow]{ds.report.total_quarantined:,} rows quarantined[/] "
            f"(run `expansion validate {data_dir}` for the reasons)"
        )
    return ds


def _write_frame(frame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        frame.to_csv(out, index=False)
    elif out.suffix == ".parquet":
        frame.to_parquet(out, index=False)
    else:
        raise _fail(f"--out must end in .parquet or .csv, not {out.name!r}")


@app.command()
def features(
    data: DataDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.parquet or .csv).")],
    as_of: Annotated[
        list[date] | None,
        typer.Option(
            "--as-of",
            parser=parse_day,
            help="As-of date (YYYY-MM-DD); repeat for several. "
            "Default: the day after the last event.",
        ),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(help="duckdb (embedded) or spark: the same feature SQL on Apache Spark."),
    ] = "duckdb",
    spark_master: Annotated[
        str,
        typer.Option(help="Spark master URL with --engine spark (local[*], spark://host:7077)."),
    ] = "local[*]",
    allow_out_of_range_as_of: AllowOutOfRange = False,
) -> None:
    """Write the point-in-time feature frame: one row per active account and as-of date."""
    from features.build import STEPS, build_feature_frame
    from serving.coverage import AsOfOutOfRange, resolve_as_of

    if engine not in ("duckdb", "spark"):
        raise _fail(f"--engine must be duckdb or spark, not {engine!r}")
    ds = _load(data, engine=engine, spark_master=spark_master)
    try:
        chosen = [
            resolve_as_of(ds, day, allow_out_of_range=allow_out_of_range_as_of)
            for day in (as_of or [None])
        ]
    except AsOfOutOfRange as exc:
        raise _fail(str(exc)) from exc
    dates = [c.date for c in chosen]
    with progress_bar("features") as progress:
        task = progress.add_task("features", total=len(STEPS))
        frame = build_feature_frame(
            ds, dates, progress=lambda step: progress.update(task, advance=1, description=step)
        )
        progress.update(task, completed=len(STEPS), description="features")
    _write_frame(frame, out)
    console.print(
        f"Wrote {len(frame):,} rows x {frame.shape[1] - 2} features for "
        f"{frame['as_of'].nunique()} as-of date(s) to {out}"
    )
    for c in chosen:
        console.print(f"as of {c.date}: {c.reason}")


@app.command("import")
def import_(
    source: Annotated[
        str,
        typer.Option("--from", help="segment, amplitude, mixpanel, posthog, stripe or mapped."),
    ],
    paths: Annotated[list[Path], typer.Argument(help="Export files or folders.", exists=True)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write.")],
    mapping: Annotated[
        Path | None, typer.Option(help="TOML mapping (required for --from mapped).")
    ] = None,
    merge: Annotated[bool, typer.Option(help="Merge into the tables already in --out.")] = False,
    group_type: Annotated[
        str, typer.Option(help="Amplitude/PostHog group type that holds the account id.")
    ] = "company",
    account_property: Annotated[
        str, typer.Option(help="Mixpanel event property that holds the account id.")
    ] = "company_id",
    stripe_customer_map: Annotated[
        Path | None, typer.Option(help="CSV/JSON customer_id -> account_id for Stripe.")
    ] = None,
) -> None:
    """Convert analytics or billing exports into contract tables (with a summary)."""
    from features.ingest import IngestError, run_import
    from features.ingest.options import ImportOptions

    options = ImportOptions(
        group_type=group_type,
        account_property=account_property,
        stripe_customer_map=stripe_customer_map,
    )
    try:
        with console.status(f"importing {source}"):
            summary = run_import(
                source, list(paths), out, mapping=mapping, merge=merge, options=options
            )
    except IngestError as exc:
        raise _fail(str(exc)) from exc
    console.print(summary.to_table())


@app.command()
def train(
    data: DataDir,
    config: Annotated[
        Path | None, typer.Option(help="Training config (TOML); defaults otherwise.")
    ] = None,
) -> None:
    """Fit, evaluate and register both models (new versions get alias `challenger`)."""
    from serving.registry import check_model_store
    from serving.settings import get_settings
    from training.config import TrainingConfig
    from training.labels import NotEnoughData
    from training.pipeline import train_models

    cfg = TrainingConfig.from_toml(config)
    check_model_store(get_settings().resolved_tracking_uri)  # now, not after the training
    ds = _load(data)
    steps = ["propensity model", "post-upsell churn model", "decision metric", "logging to MLflow"]
    try:
        with progress_bar("training") as progress:
            task = progress.add_task("training", total=len(steps))
            result = train_models(
                ds,
                cfg,
                get_settings(),
                progress=lambda step: progress.update(task, advance=1, description=step),
            )
            progress.update(task, completed=len(steps), description="trained")
    except NotEnoughData as exc:
        raise _fail(f"{data}: {exc}") from exc
    for fitted in (result.propensity, result.post_upsell):
        _print_metrics(fitted.model.contract.name, fitted.metrics, result.versions)
        for note in fitted.notes:
            console.print(f"[yellow]note:[/] {note}")
    console.print(f"Trained in {result.seconds:.1f} s. Next: `expansion promote`.")


def _print_metrics(name: str, metrics: dict[str, float], versions: dict[str, str]) -> None:
    shown = [
        ("ROC-AUC", "test_roc_auc"),
        ("PR-AUC", "test_pr_auc"),
        ("Brier", "test_brier"),
        ("ECE", "test_ece"),
        ("precision@10%", "test_precision_at_10"),
        ("lift@10%", "test_lift_at_10"),
        ("rules ROC-AUC", "rules_roc_auc"),
        ("rules precision@10%", "rules_precision_at_10"),
        ("logistic ROC-AUC", "logreg_roc_auc"),
        ("oracle ROC-AUC", "oracle_roc_auc"),
        ("model / oracle", "auc_ratio_to_oracle"),
    ]
    table = Table(title=f"{name} v{versions.get(name, '?')} (test period)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, key in shown:
        if key in metrics:
            table.add_row(label, f"{metrics[key]:.4f}")
    console.print(table)


@app.command()
def promote(
    model: Annotated[
        str | None, typer.Option(help="Only this registered model (default: both).")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Promote even below the quality floor or if it does not win.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(help="Training config (TOML) whose [quality_floor] sets the minimums."),
    ] = None,
) -> None:
    """Move `champion` to the challenger if it clears the quality floor and beats the champion.

    Exit 2 when a challenger is refused (one line per failed criterion); scoring then uses the
    champion, or the rule baseline where no champion clears the floor.
    """
    from serving.baseline import RULE_NAMES
    from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL, get_settings
    from training.config import TrainingConfig
    from training.tracking import promote as run_promote

    floor = TrainingConfig.from_toml(config).quality_floor
    refused = False
    for name in [model] if model else [PROPENSITY_MODEL, POST_UPSELL_MODEL]:
        decision = run_promote(get_settings(), name, force=force, floor=floor)
        if decision.refused:
            refused = True
            stays = (
                f"champion stays v{decision.champion}"
                if decision.champion
                else f"no champion: scoring uses the {RULE_NAMES[name]} baseline"
            )
            err_console.print(
                f"{name}: [bold red]refused[/] v{decision.challenger} ({stays}): {decision.reason}",
                soft_wrap=True,
            )
            for failure in decision.failures:
                err_console.print(f"  - {failure}", soft_wrap=True)
        else:
            verb = "[green]promoted[/]" if decision.promoted else "[yellow]kept[/]"
            target = decision.challenger if decision.promoted else decision.champion
            line = f"{name}: {verb} v{target} as champion: {decision.reason}"
            console.print(line, soft_wrap=True)
        if decision.forced:
            err_console.print(
                f"[bold yellow]warning:[/] {name} v{decision.challenger} is champion by --force "
                "below the quality floor (version tagged quality_floor=forced); scoring uses "
                f"it instead of the {RULE_NAMES[name]} baseline, and every run says so:",
                soft_wrap=True,
            )
            for failure in decision.failures:
                err_console.print(f"  - {failure}", soft_wrap=True)
        for key, value in sorted(decision.numbers.items()):
            if key.endswith(("roc_auc", "pr_auc", "brier", "precision_at_10")):
                console.print(f"    {key} = {value:.4f}")
    if refused:
        raise typer.Exit(code=2)


@app.command()
def compare(
    limit: Annotated[int, typer.Option(help="How many recent runs.")] = 10,
    model: Annotated[str | None, typer.Option(help="Only runs of this model.")] = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Recent training runs side by side, metrics as columns (from MLflow)."""
    from serving.settings import get_settings
    from training.tracking import compare_runs

    runs = compare_runs(get_settings(), limit=limit, model_name=model)
    if output is not OutputFormat.table:
        if runs.empty:
            err_console.print("No runs yet: run `expansion train --data DIR`.")
        write_rows(runs_for_scripts(runs), output)
        return
    if runs.empty:
        console.print("No runs yet: run `expansion train --data DIR`.")
        return
    metrics = [
        "test_roc_auc",
        "test_pr_auc",
        "test_brier",
        "test_ece",
        "test_precision_at_10",
        "rules_precision_at_10",
        "auc_ratio_to_oracle",
        # top-decile share of retained expansion MRR (training.decision_metric)
        "decision_capture_net_value",
        "decision_capture_propensity",
        "decision_capture_current_mrr",
    ]
    table = Table(title="Recent runs")
    for col in ["run", "model", "version", "aliases", "started", *metrics]:
        label = col.replace("test_", "").replace("decision_capture_", "top10% kept MRR: ")
        table.add_column(label, justify="right" if col in metrics else "left")
    for _, r in runs.iterrows():
        table.add_row(
            r["run_id"][:8],
            str(r.get("tags.model_name", "")),
            str(r["version"]),
            str(r["aliases"]),
            str(r["start_time"])[:19],
            *[
                f"{r.get(f'metrics.{m}'):.4f}"
                if r.get(f"metrics.{m}") == r.get(f"metrics.{m}")
                else ""
                for m in metrics
            ],
        )
    console.print(table)


def runs_for_scripts(runs) -> list[dict[str, Any]]:
    """`compare` rows for csv/json: full run ids, ISO start times and every logged metric."""
    metrics = sorted(c for c in runs.columns if c.startswith("metrics."))
    return [
        {
            "run_id": r["run_id"],
            "model": r.get("tags.model_name"),
            "version": r["version"],
            "aliases": r["aliases"],
            "started": r["start_time"],  # a Timestamp: ISO 8601 in csv and json
            **{m.removeprefix("metrics."): r[m] for m in metrics},
        }
        for _, r in runs.iterrows()
    ]


def _plain(value: Any) -> Any:
    """A cell as JSON-ready Python: numpy scalars unwrapped, NaN/NaT/NA as None, times as ISO."""
    import numpy as np
    import pandas as pd

    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, date):  # datetime and pd.Timestamp too
        return value.isoformat()
    return value


def write_rows(
    rows: list[dict[str, Any]], output: OutputFormat, columns: list[str] | None = None
) -> None:
    """Rows on stdout for scripts: csv (lists joined with "; ") or a json array.

    Written with the standard library, not Rich: nothing is wrapped, cut or styled, and floats
    keep every digit (Python's shortest repr that reads back to the same number). `columns`
    gives the csv header when there may be no rows.
    """
    import csv

    rows = [_plain(r) for r in rows]
    if output is OutputFormat.json:
        json.dump(rows, sys.stdout, indent=1, allow_nan=False)
        sys.stdout.write("\n")
        return
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    if not columns:
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(
            {k: "; ".join(map(str, v)) if isinstance(v, list) else v for k, v in r.items()}
        )


@app.command()
def snapshot(
    data: DataDir,
    as_of: Annotated[
        date | None,
        typer.Option(
            parser=parse_day, help="As-of date (default: the day after the last clean event)."
        ),
    ] = None,
    allow_out_of_range_as_of: AllowOutOfRange = False,
) -> None:
    """Build the feature snapshot the service scores accounts from (models/snapshot/)."""
    from serving.coverage import AsOfOutOfRange
    from serving.settings import get_settings
    from serving.snapshot import build_snapshot, write_snapshot

    ds = _load(data)
    try:
        with console.status("building the feature snapshot"):
            snap = build_snapshot(ds, as_of, allow_out_of_range_as_of=allow_out_of_range_as_of)
            folder = write_snapshot(snap, get_settings().models_dir / "snapshot")
    except AsOfOutOfRange as exc:
        raise _fail(str(exc)) from exc
    console.print(
        f"Snapshot of {len(snap):,} accounts as of {snap.as_of} ({snap.as_of_reason}) "
        f"written to {folder}"
    )
    if snap.unscored is not None and len(snap.unscored):
        counts = snap.unscored["reason"].value_counts()
        console.print(
            f"{len(snap.unscored):,} accounts of `accounts` not in it: "
            + "; ".join(f"{n:,} {reason}" for reason, n in counts.items())
        )


@app.command()
def rank(
    limit: Annotated[int, typer.Option(help="How many accounts.", min=1)] = 10,
    csm_owner: Annotated[str | None, typer.Option(help="Only this CSM's accounts.")] = None,
    segment: Annotated[str | None, typer.Option(help="Only this segment.")] = None,
    sort: Annotated[
        RankSort, typer.Option(help="Expected net value per month, or propensity.")
    ] = RankSort.net_value,
    include_suppressed: Annotated[bool, typer.Option(help="Show suppressed accounts too.")] = False,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Print the accounts to pitch now, from the latest snapshot, with their reasons."""
    from serving.registry import ModelContractError
    from serving.scoring import Models, attach_reasons, rank_accounts, score_frame
    from serving.settings import get_settings
    from serving.snapshot import read_snapshot

    settings = get_settings()
    folder = settings.models_dir / "snapshot"
    if not (folder / "features.parquet").exists():
        raise _fail(f"no snapshot in {folder}: run `expansion snapshot --data DIR` first")
    snap = read_snapshot(folder)
    try:
        models = Models.load(settings, snap.feature_names)
    except ModelContractError as exc:
        raise _fail(str(exc)) from exc
    scored = score_frame(models, snap.features, snap.plans, settings)
    top = rank_accounts(
        scored,
        sort=sort.value,
        include_suppressed=include_suppressed,
        csm_owner=csm_owner,
        segment=segment,
        limit=limit,
    )
    top = attach_reasons(models, snap.features, top, settings.reasons)
    top = with_account_context(top, snap.features, snap.plans)
    if top.empty:  # a filter that matches nothing is an answer, not an error
        message = no_match_line(scored, csm_owner, segment, include_suppressed)
        err_console.print(message, markup=False, highlight=False)
    if output is OutputFormat.table:
        if not top.empty:
            print_ranked(top, title=f"Top {len(top)} accounts as of {snap.as_of}", plans=snap.plans)
        return
    write_rows(ranked_for_scripts(top, output), output, columns=RANKED_COLUMNS)


def no_match_line(scored, csm_owner: str | None, segment: str | None, suppressed: bool) -> str:
    """Why `rank` found nothing, with the values that do exist when a filter names none."""
    filters, hints = [], []
    for option, value, column in (
        ("--segment", segment, "segment"),
        ("--csm-owner", csm_owner, "csm_owner"),
    ):
        if value is None:
            continue
        filters.append(f"{option} {value!r}")
        known = sorted(scored[column].dropna().astype(str).unique())
        if value not in known:
            shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
            hints.append(f"{option.removeprefix('--')} values: {shown}")
    if not hints and not suppressed:
        hints.append("suppressed accounts are left out: add --include-suppressed to see them")
    where = f" {' '.join(filters)}" if filters else ""
    return f"0 accounts match{where}" + (f" ({'; '.join(hints)})" if hints else "")


# `rank --format csv|json` columns, in order (json adds `reasons` records and `base_value`).
RANKED_COLUMNS = [
    "rank",
    "account_id",
    "name",
    "csm_owner",
    "segment",
    "plan_id",
    "plan",
    "mrr",
    "p_expand",
    "p_post_upsell_churn",
    "expected_uplift_mrr",
    "expected_net_value",
    "next_step",
    "route",
    "suppressed",
    "suppression_reason",
    "triggers",
    "reasons",
    "as_of",
]


def with_account_context(top, context, plans):
    """Add what a CSM recognises an account by: its name, owner and current plan's name.

    `context` is indexed by account_id with the snapshot's `ctx_` columns (name, plan id,
    owner); `plans` is the price list, whose `name` labels plan ids (the id when it has none).
    """
    ctx = context.reindex(top["account_id"].astype(str))

    def column(name: str) -> Any:
        return ctx[name].to_numpy() if name in ctx else None

    names = plan_names(plans)
    out = top.assign(name=column("ctx_name"), plan_id=column("ctx_plan_id"))
    out["plan"] = [names.get(p, p) if isinstance(p, str) else None for p in out["plan_id"]]
    if "csm_owner" not in out:
        out["csm_owner"] = column("ctx_csm_owner")
    return out


def plan_names(plans) -> dict[str, str]:
    """plan_id -> the plan's name from the price list (plans without a name keep their id)."""
    if plans is None or "name" not in plans:
        return {}
    return {str(p): n for p, n in zip(plans["plan_id"], plans["name"], strict=True) if n and n == n}


def step_words(step: Any, names: dict[str, str]) -> str:
    """The next step with plan names: "upgrade to Enterprise" rather than its plan id."""
    if not isinstance(step, str):
        return ""
    prefix = "upgrade to "
    if not step.startswith(prefix):
        return step
    plan = step.removeprefix(prefix)
    return prefix + names.get(plan, plan)


def reason_words(records: Any) -> list[str]:
    """Reasons as a CSM reads them ("Seat utilization 93%"), without the log-odds numbers."""
    from serving.scoring import describe

    return [describe(r["feature"], r.get("value")) for r in records or []]


def ranked_for_scripts(top, output: OutputFormat) -> list[dict[str, Any]]:
    """Ranked rows for csv/json: csv has reasons in words, json the records with contributions."""
    rows = []
    for _, r in top.iterrows():
        row = {c: r.get(c) for c in RANKED_COLUMNS}
        row["triggers"] = list(r["triggers"]) if r.get("triggers") is not None else []
        words = reason_words(r.get("reasons"))
        if output is OutputFormat.json:
            row["reasons"] = [
                {**rec, "text": text} for rec, text in zip(r["reasons"] or [], words, strict=True)
            ]
            row["base_value"] = r.get("base_value")
        else:
            row["reasons"] = words
        rows.append(row)
    return rows


def _percent(value: Any) -> str:
    return "" if value is None or value != value else f"{value:.1%}"


def _amount(value: Any) -> str:
    return "" if value is None or value != value else f"{value:,.0f}"


# Below this console width the ranked table stacks name, owner, plan and MRR under the id
# and the route under the next step, so that the reasons keep room on an 80-column terminal.
WIDE_RANKED_TABLE = 170


def print_ranked(top, title: str, plans=None) -> None:
    """A ranked list with the numbers a CSM acts on and the reasons in plain language.

    Account ids are never cut: their column is as wide as the longest id and folds rather
    than truncates. Name, owner and plan appear when the frame has them.
    """
    names = plan_names(plans)
    wide = console.width >= WIDE_RANKED_TABLE
    about = [k for k in ("name", "csm_owner", "plan") if k in top and top[k].notna().any()]
    table = Table(title=title, show_lines=True)
    id_width = int(top["account_id"].astype(str).str.len().max()) if len(top) else 7
    table.add_column("#", justify="right")
    table.add_column("account", min_width=id_width, overflow="fold")
    if wide:
        for key in about:
            table.add_column({"csm_owner": "owner"}.get(key, key))
        table.add_column("MRR", justify="right")
    numbers = (
        ("p(expand)", "p(churn after)", "net value/mo")
        if wide
        else ("p(exp)", "p(churn)", "net/mo")
    )
    for col in numbers:
        table.add_column(col, justify="right")
    table.add_column("next step")
    if wide:
        table.add_column("route")
    table.add_column("why")
    for _, r in top.iterrows():
        why = reason_words(r.get("reasons")) or list(r.get("triggers") or [])
        if r.get("suppressed"):
            why = [f"suppressed: {r.get('suppression_reason')}", *why]
        known = [str(r[k]) if isinstance(r[k], str) else "" for k in about]
        mrr = _amount(r.get("mrr"))
        step = step_words(r["next_step"], names)
        if wide:
            account = [str(r["account_id"]), *known, mrr]
            action = [step, str(r["route"])]
        else:
            account = ["\n".join([str(r["account_id"]), *known, f"{mrr}/mo" if mrr else ""])]
            action = [f"{step}\n({r['route']})"]
        row = [
            str(r["rank"]),
            *account,
            _percent(r["p_expand"]),
            _percent(r["p_post_upsell_churn"]),
            _amount(r["expected_net_value"]),
            *action,
            "\n".join(why),
        ]
        table.add_row(*map(escape, row))  # data, not markup: "[reports]" must stay
    console.print(table)


@app.command()
def score(
    data: DataDir,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="sqlite:///FILE (default models/crm.db), postgresql://..., FILE.parquet|.csv, "
            "hubspot:DIR or salesforce:DIR (request files), or a live sync: hubspot://, "
            "salesforce://, https://... (signed webhook); see docs/crm-sync.md.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Live targets: write the exact requests to models/dry-run/<system>/ and send "
            "nothing.",
        ),
    ] = False,
    run_id: Annotated[
        str | None,
        typer.Option(
            help="Reuse a run id: a live sync resumes and sends only what has not landed."
        ),
    ] = None,
    as_of: Annotated[
        date | None,
        typer.Option(
            parser=parse_day, help="As-of date (default: the day after the last clean event)."
        ),
    ] = None,
    allow_out_of_range_as_of: AllowOutOfRange = False,
    chunk_size: Annotated[
        int, typer.Option(help="Accounts explained and written per chunk.", min=1)
    ] = 50_000,
    top: Annotated[int, typer.Option(help="Print this many top accounts afterwards.")] = 0,
    engine: Annotated[
        str, typer.Option(help="duckdb (embedded) or spark (features and scores on Spark).")
    ] = "duckdb",
    spark_master: Annotated[
        str, typer.Option(help="Spark master URL with --engine spark.")
    ] = "local[*]",
    spark_out: Annotated[
        str | None,
        typer.Option(help="With --engine spark: Parquet folder (any Spark URI) for the scores."),
    ] = None,
    snapshot: Annotated[
        bool,
        typer.Option(
            "--snapshot",
            help="Also publish the same features as the service's snapshot (models/snapshot/) "
            "once the scores are written: the nightly job in one command.",
        ),
    ] = False,
) -> None:
    """Score every account and write the ranked list with reasons to a database, file or CRM.

    Exit code 3: a live CRM/webhook sync finished but some records did not land (listed in
    the summary and in scoring_runs.crm_sync); rerun with the same --run-id to resend them.
    """
    from serving.batch import default_target, run_batch
    from serving.coverage import AsOfOutOfRange, resolve_as_of
    from serving.registry import ModelContractError
    from serving.settings import get_settings

    settings = get_settings()
    if engine not in ("duckdb", "spark"):
        raise _fail(f"--engine must be duckdb or spark, not {engine!r}")
    target = to or default_target(settings)
    target = _live_target_options(target, dry_run, run_id, settings)
    if engine == "spark":
        if snapshot:
            raise _fail("--snapshot is for the DuckDB engine (run `expansion snapshot` instead)")
        _score_on_spark(
            data,
            settings,
            target,
            as_of,
            chunk_size,
            spark_master,
            spark_out,
            allow_out_of_range_as_of,
        )
        if top and target.startswith(("sqlite:", "postgresql:", "postgres:")):
            _print_top_from_crm(target, top)
        return
    ds = _load(data)
    try:  # refused before the progress bar starts: the refusal is the only line
        resolve_as_of(ds, as_of, allow_out_of_range=allow_out_of_range_as_of)
    except AsOfOutOfRange as exc:
        raise _fail(str(exc)) from exc
    with progress_bar("scoring") as bar:
        tasks: dict[str, int] = {}

        def note(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        try:
            summary = run_batch(
                ds,
                settings,
                target,
                as_of=as_of,
                chunk_size=chunk_size,
                progress=note,
                snapshot_to=settings.models_dir / "snapshot" if snapshot else None,
                allow_out_of_range_as_of=allow_out_of_range_as_of,
                run_id=run_id,
            )
        except (ModelContractError, ValueError) as exc:
            raise _fail(str(exc)) from exc
    console.print(summary.to_table())
    partial = bool(summary.sync) and summary.sync["status"] == "partial"
    if snapshot:
        console.print(
            f"Snapshot as of {summary.as_of} published to {settings.models_dir / 'snapshot'}"
        )
    if top and target.startswith(("sqlite:", "postgresql:", "postgres:")):
        _print_top_from_crm(target, top, ds, summary.as_of)
    if partial:
        raise typer.Exit(code=PARTIAL_EXIT)


PARTIAL_EXIT = 3  # `score`: a live sync left some records unsynced (documented in --help)


def _live_target_options(target: str, dry_run: bool, run_id: str | None, settings) -> str:
    """Check --dry-run / --run-id against the target; a dry run names its folder."""
    from serving.crm import is_live_target, system_of, with_dry_run

    if run_id is not None and not (1 <= len(run_id) <= 36):
        raise _fail("--run-id must be 1-36 characters (scoring_runs.run_id)")
    if not dry_run:
        return target
    if not is_live_target(target):
        raise _fail("--dry-run is for live targets (hubspot://, salesforce://, https://...)")
    folder = settings.models_dir / "dry-run" / system_of(target)
    return with_dry_run(target, str(folder))


def _score_on_spark(
    data, settings, target, as_of, chunk_size, spark_master, spark_out, allow_out_of_range_as_of
) -> None:
    """Features and scores on Spark (the same SQL and scoring core), then the rows are
    written as Parquet and streamed from the driver to the target in chunks."""
    from serving.registry import ModelContractError
    from serving.snapshot import build_snapshot
    from serving.spark_batch import score_on_spark, write_to_target

    ds = _load(data, engine="spark", spark_master=spark_master)
    spark = ds.engine.spark
    out = spark_out or str((settings.models_dir / "spark_scores").resolve())
    try:
        with console.status("features and scores on Spark"):
            snap = build_snapshot(ds, as_of, allow_out_of_range_as_of=allow_out_of_range_as_of)
            result = score_on_spark(spark, snap, settings, out)
            result.summary.cover(snap)  # the as-of reason and the accounts not scored
        with console.status(f"writing to {target}"):
            summary = write_to_target(spark, result, target, chunk_size=chunk_size)
    except (ModelContractError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    console.print(summary.to_table())
    console.print(f"Scores as Parquet in {result.path}")


def _print_top_from_crm(target: str, limit: int, dataset=None, as_of: date | None = None) -> None:
    """Read back the top accounts from the CRM table, as a CSM tool would.

    The CRM rows carry ids; with the dataset, the table also names each account, its owner
    and its plan as of the run.
    """
    import json

    import pandas as pd
    import sqlalchemy as sa

    from serving.sinks import create_database_engine

    engine = create_database_engine(target)  # the batch job's own URL handling
    with engine.connect() as conn:
        top = pd.read_sql(
            sa.text(
                "SELECT * FROM account_expansion_scores WHERE rank IS NOT NULL "
                "ORDER BY rank LIMIT :n"
            ),
            conn,
            params={"n": limit},
        )
    engine.dispose()
    for col in ("reasons", "triggers"):  # JSON columns come back as text from SQLite
        top[col] = top[col].map(lambda v: json.loads(v) if isinstance(v, str) else v)
    plans = None
    if dataset is not None and as_of is not None:
        from serving.snapshot import context_frame

        plans = dataset.frame("plans")
        context = context_frame(dataset, as_of).set_index("account_id")
        top = with_account_context(top, context, plans)
    print_ranked(top, title=f"Top {len(top)} accounts in {target}", plans=plans)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 for all).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 3000,
) -> None:
    """Start the scoring API (BentoML): /score, /rank, /explain, /model_info, /readyz."""
    from serving.auth import AuthConfigError
    from serving.process import serve as run_server
    from serving.settings import get_settings

    try:
        code = run_server(host, port, get_settings())
    except AuthConfigError as exc:
        raise _fail(str(exc)) from exc
    raise typer.Exit(code)


@app.command()
def report(
    data: DataDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path(
        "report.html"
    ),
    from_: Annotated[
        date | None,
        typer.Option("--from", parser=parse_day, help="First day (YYYY-MM-DD), inclusive."),
    ] = None,
    to: Annotated[
        date | None,
        typer.Option("--to", parser=parse_day, help="Last day (YYYY-MM-DD), inclusive."),
    ] = None,
    holdout_from: Annotated[
        str | None,
        typer.Option(
            "--holdout-from",
            help="Database with the batch's holdout arms for the incrementality section "
            "(default: the batch's default target, models/crm.db, if it exists).",
        ),
    ] = None,
) -> None:
    """Write the upsell analytics report: one self-contained HTML file (plus model cards)."""
    import tempfile
    from datetime import timedelta

    from serving.holdout import assignment_history
    from serving.registry import check_model_store
    from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL, get_settings
    from training.report import model_card_from_mlflow, render_report

    if from_ and to and from_ > to:
        raise _fail(f"--from {from_} is after --to {to}")
    uri = get_settings().resolved_tracking_uri
    check_model_store(uri)  # the model cards read it: refuse a damaged store in one line
    ds = _load(data)
    start = from_
    end = to + timedelta(days=1) if to else None  # the report's end is open
    crm_db = get_settings().models_dir / "crm.db"
    if holdout_from is None and crm_db.exists():
        holdout_from = f"sqlite:///{crm_db}"
    assignments = assignment_history(holdout_from) if holdout_from else None
    with tempfile.TemporaryDirectory() as tmp, console.status("rendering the report"):
        cards = [
            card
            for name in (PROPENSITY_MODEL, POST_UPSELL_MODEL)
            if (card := model_card_from_mlflow(name, tmp, tracking_uri=uri))
        ]
        path = render_report(
            ds, out, start=start, end=end, model_card=cards or None, assignments=assignments
        )
    console.print(f"Report written to {path}")


def print_validation(report) -> None:
    """Print rows per table, time range and quarantined rows per reason."""
    table = Table(title=f"Dataset {report.path}")
    for col, justify in (
        ("table", "left"),
        ("rows read", "right"),
        ("clean", "right"),
        ("quarantined", "right"),
        ("from", "left"),
        ("to", "left"),
    ):
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
