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
    typer.Option(
        "--data",
        "-d",
        help="Dataset that follows DATA_CONTRACT.md: a folder of tables, or a DuckDB file.",
        exists=True,
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
        list[str] | None,
        typer.Option(
            "--as-of",
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
) -> None:
    """Write the point-in-time feature frame: one row per active account and as-of date."""
    import pandas as pd

    from features.build import STEPS, build_feature_frame

    if engine not in ("duckdb", "spark"):
        raise _fail(f"--engine must be duckdb or spark, not {engine!r}")
    ds = _load(data, engine=engine, spark_master=spark_master)
    dates = as_of or [
        (pd.Timestamp(ds.report.tables["events"].time_max) + pd.Timedelta(days=1)).date()
    ]
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
    from features.settings import get_settings
    from training.config import TrainingConfig
    from training.labels import NotEnoughData
    from training.pipeline import train_models

    cfg = TrainingConfig.from_toml(config)
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
    force: Annotated[bool, typer.Option(help="Promote even if it does not win.")] = False,
) -> None:
    """Move `champion` to the challenger if it beats the champion on the same test rows."""
    from features.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL, get_settings
    from training.tracking import promote as run_promote

    for name in [model] if model else [PROPENSITY_MODEL, POST_UPSELL_MODEL]:
        decision = run_promote(get_settings(), name, force=force)
        verb = "[green]promoted[/]" if decision.promoted else "[yellow]kept[/]"
        target = decision.challenger if decision.promoted else decision.champion
        console.print(f"{name}: {verb} v{target} as champion: {decision.reason}")
        for key, value in sorted(decision.numbers.items()):
            if key.endswith(("roc_auc", "pr_auc", "brier", "precision_at_10")):
                console.print(f"    {key} = {value:.4f}")


@app.command()
def compare(
    limit: Annotated[int, typer.Option(help="How many recent runs.")] = 10,
    model: Annotated[str | None, typer.Option(help="Only runs of this model.")] = None,
) -> None:
    """Recent training runs side by side, metrics as columns (from MLflow)."""
    from features.settings import get_settings
    from training.tracking import compare_runs

    runs = compare_runs(get_settings(), limit=limit, model_name=model)
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


@app.command()
def snapshot(
    data: DataDir,
    as_of: Annotated[
        str | None, typer.Option(help="As-of date (default: the day after the last event).")
    ] = None,
) -> None:
    """Build the feature snapshot the service scores accounts from (models/snapshot/)."""
    from features.settings import get_settings
    from serving.snapshot import build_snapshot, write_snapshot

    ds = _load(data)
    with console.status("building the feature snapshot"):
        snap = build_snapshot(ds, as_of)
        folder = write_snapshot(snap, get_settings().models_dir / "snapshot")
    console.print(f"Snapshot of {len(snap):,} accounts as of {snap.as_of} written to {folder}")


@app.command()
def rank(
    limit: Annotated[int, typer.Option(help="How many accounts.", min=1)] = 10,
    csm_owner: Annotated[str | None, typer.Option(help="Only this CSM's accounts.")] = None,
    segment: Annotated[str | None, typer.Option(help="Only this segment.")] = None,
    sort: Annotated[str, typer.Option(help="net_value or propensity.")] = "net_value",
    include_suppressed: Annotated[bool, typer.Option(help="Show suppressed accounts too.")] = False,
) -> None:
    """Print the accounts to pitch now, from the latest snapshot, with their reasons."""
    from features.settings import get_settings
    from serving.registry import ModelContractError
    from serving.scoring import Models, attach_reasons, rank_accounts, score_frame
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
        sort=sort,
        include_suppressed=include_suppressed,
        csm_owner=csm_owner,
        segment=segment,
        limit=limit,
    )
    top = attach_reasons(models, snap.features, top, settings.reasons)
    print_ranked(top, title=f"Top {len(top)} accounts as of {snap.as_of}")


def print_ranked(top, title: str) -> None:
    """A ranked list with the numbers a CSM acts on and the reasons in plain language."""
    table = Table(title=title, show_lines=True)
    for col, justify in (
        ("#", "right"),
        ("account", "left"),
        ("p(expand)", "right"),
        ("p(churn after)", "right"),
        ("net value/mo", "right"),
        ("next step", "left"),
        ("route", "left"),
        ("why", "left"),
    ):
        table.add_column(col, justify=justify)
    for _, r in top.iterrows():
        table.add_row(
            str(r["rank"]),
            str(r["account_id"]),
            f"{r['p_expand']:.1%}",
            f"{r['p_post_upsell_churn']:.1%}",
            f"{r['expected_net_value']:,.0f}",
            str(r["next_step"]),
            str(r["route"]),
            "\n".join(x["text"] for x in r["reasons"]) or ", ".join(r["triggers"]),
        )
    console.print(table)


@app.command()
def score(
    data: DataDir,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="sqlite:///FILE (default models/crm.db), postgresql://..., FILE.parquet|.csv, "
            "hubspot:DIR or salesforce:DIR.",
        ),
    ] = None,
    as_of: Annotated[
        str | None, typer.Option(help="As-of date (default: the day after the last event).")
    ] = None,
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
    """Score every account and write the ranked list with reasons to a database, file or CRM."""
    from features.settings import get_settings
    from serving.batch import default_target, run_batch
    from serving.registry import ModelContractError

    settings = get_settings()
    if engine not in ("duckdb", "spark"):
        raise _fail(f"--engine must be duckdb or spark, not {engine!r}")
    target = to or default_target(settings)
    if engine == "spark":
        if snapshot:
            raise _fail("--snapshot is for the DuckDB engine (run `expansion snapshot` instead)")
        _score_on_spark(data, settings, target, as_of, chunk_size, spark_master, spark_out)
        if top and target.startswith(("sqlite:", "postgresql:", "postgres:")):
            _print_top_from_crm(target, top)
        return
    ds = _load(data)
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
            )
        except (ModelContractError, ValueError) as exc:
            raise _fail(str(exc)) from exc
    console.print(summary.to_table())
    if snapshot:
        console.print(
            f"Snapshot as of {summary.as_of} published to {settings.models_dir / 'snapshot'}"
        )
    if top and target.startswith(("sqlite:", "postgresql:", "postgres:")):
        _print_top_from_crm(target, top)


def _score_on_spark(data, settings, target, as_of, chunk_size, spark_master, spark_out) -> None:
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
            result = score_on_spark(spark, build_snapshot(ds, as_of), settings, out)
        with console.status(f"writing to {target}"):
            summary = write_to_target(spark, result, target, chunk_size=chunk_size)
    except (ModelContractError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    console.print(summary.to_table())
    console.print(f"Scores as Parquet in {result.path}")


def _print_top_from_crm(target: str, limit: int) -> None:
    """Read back the top accounts from the CRM table, as a CSM tool would."""
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
    print_ranked(top, title=f"Top {len(top)} accounts in {target}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 for all).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 3000,
) -> None:
    """Start the scoring API (BentoML): /score, /rank, /explain, /model_info, /readyz."""
    from features.settings import get_settings
    from serving.auth import AuthConfigError
    from serving.service import serve as run_server

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
        str | None, typer.Option("--from", help="First day (YYYY-MM-DD), inclusive.")
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Last day (YYYY-MM-DD), inclusive.")
    ] = None,
) -> None:
    """Write the upsell analytics report: one self-contained HTML file (plus model cards)."""
    import tempfile
    from datetime import timedelta

    from features.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL, get_settings
    from training.report import model_card_from_mlflow, render_report

    ds = _load(data)
    start = date.fromisoformat(from_) if from_ else None
    end = date.fromisoformat(to) + timedelta(days=1) if to else None  # the report's end is open
    with tempfile.TemporaryDirectory() as tmp, console.status("rendering the report"):
        uri = get_settings().resolved_tracking_uri
        cards = [
            card
            for name in (PROPENSITY_MODEL, POST_UPSELL_MODEL)
            if (card := model_card_from_mlflow(name, tmp, tracking_uri=uri))
        ]
        path = render_report(ds, out, start=start, end=end, model_card=cards or None)
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
