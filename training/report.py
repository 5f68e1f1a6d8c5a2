"""The upsell analytics report: one self-contained HTML file, `render_report(dataset, out_path)`.

Three layers, each from `features.analytics` (the metrics are defined there, not here):

1. revenue: MRR, the MRR bridge, NRR/GRR (per period and trailing 12 months), NRR by signup
   cohort, ACV uplift by upgrade path and segment, LTV;
2. pipeline and conversion: weekly PQL entries by trigger, PQLs per 100 active accounts, time
   from trigger to first contact, conversion by trigger and channel, the holdout comparison,
   time to upsell;
3. value: retention of upsold accounts vs PQLs that did not upsell vs all, post-upsell adoption
   and churn, NRR of upsold cohorts vs the rest;

plus a weekly / monthly / quarterly view (tabs made of radio inputs and CSS, no JavaScript) and,
when given, a model card.

This module gathers the data (the metrics, and a model's MLflow run for its card) and turns it
into plain view objects; the page itself is drawn by the shared HTML toolkit in `serving.web`:
one Jinja2 template per section (`serving/web/templates/report/`), the stylesheet inlined, the
charts as base64 PNGs (`serving.web.charts`). The file references nothing outside itself.

To add a section: write its template under `templates/report/` (it reads `section.data`), add
a `Section` for it in `report_sections` and its id to `SECTION_IDS` (the tests check each id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from features import analytics as an
from features.analytics.common import Freq, TimeLike, resolve_window
from features.analytics.value import GROUPS
from features.dataset import Dataset, load_dataset
from features.triggers import describe_trigger
from serving.web import charts
from serving.web.components import Chart, Section, Tile, key_values, table
from serving.web.format import fmt_interval, fmt_money, fmt_num, fmt_pct
from serving.web.render import render
from training.incrementality_report import (
    IncrementalityData,
    collect_incrementality,
    incrementality_section,
)
from training.labels import expansion_events

VIEWS: tuple[tuple[Freq, str, str], ...] = (
    ("W", "weekly", "Weekly"),
    ("M", "monthly", "Monthly"),
    ("Q", "quarterly", "Quarterly"),
)
SECTION_IDS = (
    "summary",
    "views",
    "revenue",
    "pipeline",
    "conversion",
    "incrementality",
    "value",
    "definitions",
)
MODEL_CARD_ID = "model-card"
IMAGE_KEYS = {
    "calibration_curve": "Calibration curve",
    "gains_chart": "Cumulative gains",
    "shap_summary": "SHAP summary",
}
# Where training logs its plots (artifact `plots/<file>`) and which run tags a card shows.
PLOT_FILES = {
    "calibration_curve": "calibration_curve.png",
    "gains_chart": "cumulative_gains.png",
    "shap_summary": "shap_summary.png",
}
RUN_TAGS = ("training_id", "feature_set_version", "data_fingerprint", "git_commit")
RETENTION_CURVE_DAYS = (30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 330, 365)


# --- data ------------------------------------------------------------------------------------


@dataclass
class ViewData:
    """The metrics of one period view (weekly, monthly or quarterly)."""

    freq: Freq
    mrr: pd.DataFrame
    movements: pd.DataFrame
    retention: pd.DataFrame
    trailing: pd.DataFrame | None
    pql_volume: pd.DataFrame | None
    pql_per_100: pd.DataFrame | None


@dataclass
class ReportData:
    """Every frame the report shows, computed once."""

    dataset_path: str
    start: pd.Timestamp
    end: pd.Timestamp
    views: dict[Freq, ViewData]
    cohort_nrr: pd.DataFrame
    acv_path: pd.DataFrame
    acv_segment: pd.DataFrame
    ltv: pd.DataFrame
    pql_note: str | None
    time_in_pql: pd.DataFrame | None
    trigger_conversion: pd.DataFrame | None
    conversion_trigger: pd.DataFrame
    conversion_channel: pd.DataFrame
    holdout: pd.DataFrame
    time_to_upsell: pd.DataFrame
    retention: pd.DataFrame
    retention_diff: pd.DataFrame
    adoption: pd.DataFrame
    nrr_upsold: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    incrementality: IncrementalityData | None = None  # training.incrementality_report


def collect(
    dataset: Dataset,
    *,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    assignments: pd.DataFrame | None = None,
) -> ReportData:
    """Compute every metric the report shows over `[start, end)` (`assignments`: the batch's
    holdout arms, `serving.holdout.assignment_history`, for the incrementality section)."""
    lo, hi = resolve_window(dataset, start, end)
    window = {"start": lo, "end": hi}
    pql, pql_note = _pql_or_note(dataset, lo, hi)
    views = {}
    for freq, _, _ in VIEWS:
        views[freq] = ViewData(
            freq=freq,
            mrr=an.mrr_by_period(dataset, freq=freq, **window),
            movements=an.mrr_movements(dataset, freq=freq, **window),
            retention=an.revenue_retention(dataset, freq=freq, **window),
            trailing=(
                an.revenue_retention(dataset, freq=freq, trailing_months=12, **window)
                if freq != "W"
                else None
            ),
            pql_volume=an.pql_volume(pql, freq) if pql is not None else None,
            pql_per_100=an.pqls_per_100_active(pql, freq) if pql is not None else None,
        )
    retention = an.retention_by_group(dataset, pql, horizons_days=RETENTION_CURVE_DAYS, **window)
    return ReportData(
        dataset_path=str(dataset.path),
        start=lo,
        end=hi,
        views=views,
        cohort_nrr=an.nrr_by_signup_cohort(dataset, cohort_freq="Q", **window),
        acv_path=an.acv_uplift_by_upgrade_path(dataset, **window),
        acv_segment=an.acv_uplift_by_segment(dataset, **window),
        ltv=an.ltv_estimate(dataset, **window),
        pql_note=pql_note,
        time_in_pql=an.time_in_pql_status(dataset, pql) if pql is not None else None,
        trigger_conversion=(
            an.time_from_trigger_to_conversion(dataset, pql) if pql is not None else None
        ),
        conversion_trigger=an.conversion_by_trigger(dataset, **window),
        conversion_channel=an.conversion_by_channel(dataset, **window),
        holdout=an.holdout_comparison(dataset, by="trigger", **window),
        time_to_upsell=an.time_to_upsell_from_signup(dataset, **window),
        retention=retention,
        retention_diff=an.retention_differential(retention),
        adoption=an.post_upsell_adoption(expansion_events(dataset)),
        nrr_upsold=an.nrr_upsold_vs_rest(dataset, cohort_freq="Q", **window),
        incrementality=collect_incrementality(dataset, assignments, **window),
    )


def _pql_or_note(
    dataset: Dataset, lo: pd.Timestamp, hi: pd.Timestamp
) -> tuple[pd.DataFrame | None, str | None]:
    """Weekly PQL status, or why there is none (a window too short for two Mondays)."""
    try:
        return an.pql_status(dataset, start=lo, end=hi), None
    except ValueError as exc:
        return None, str(exc)


# --- rendering entry point -------------------------------------------------------------------


def render_report(
    dataset: Dataset | str | Path,
    out_path: str | Path,
    *,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    model_card: dict[str, Any] | list[dict[str, Any]] | None = None,
    assignments: pd.DataFrame | None = None,
) -> Path:
    """Write the analytics report for `dataset` (a loaded `Dataset` or a dataset folder) over
    `[start, end)` (default: the observed window; `end` is exclusive) to `out_path` as one
    self-contained HTML file, and return its path.

    `model_card`: a dict (or a list of them, one per model) with `name`, `version`, `metrics`
    (a dict, may nest one level) and optional image paths `calibration_curve`, `gains_chart`,
    `shap_summary` (or `images`: {title: path}); any other key is shown as a detail.
    `model_card_from_mlflow` builds one from a registered model.
    """
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    data = collect(ds, start=start, end=end, assignments=assignments)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(data, model_card), encoding="utf-8")
    return out


def render_html(
    data: ReportData, model_card: dict[str, Any] | list[dict[str, Any]] | None = None
) -> str:
    """The whole page as a string."""
    period = f"{data.start.date()} to {(data.end - pd.Timedelta(days=1)).date()}"
    return render(
        "report/page.html",
        period=period,
        dataset_path=data.dataset_path,
        sections=report_sections(data, model_card),
    )


def report_sections(
    data: ReportData, model_card: dict[str, Any] | list[dict[str, Any]] | None = None
) -> list[Section]:
    """The sections in page order (each is a navigation link too); the model card only when
    one is given."""
    sections = [
        Section("summary", "Summary", "report/summary.html", _summary(data)),
        Section("views", "By period", "report/views.html", _views(data)),
        Section("revenue", "Revenue", "report/revenue.html", _revenue(data)),
        Section("pipeline", "Pipeline", "report/pipeline.html", _pipeline(data)),
        Section("conversion", "Conversion", "report/conversion.html", _conversion(data)),
        *incrementality_section(data.incrementality),
        Section("value", "Value", "report/value.html", _value(data)),
    ]
    if model_card:
        sections.append(_model_card(model_card))
    sections.append(Section("definitions", "Definitions", "report/definitions.html"))
    return sections


# --- column formats --------------------------------------------------------------------------


MONEY = {
    c: fmt_money
    for c in (
        "start_mrr",
        "new_mrr",
        "expansion_mrr",
        "contraction_mrr",
        "churn_mrr",
        "reactivation_mrr",
        "end_mrr",
        "net_new_mrr",
        "retained_mrr",
    )
}
RATIOS = {
    c: fmt_pct
    for c in (
        "nrr",
        "grr",
        "retention_rate",
        "churn_rate",
        "conversion_rate",
        "contact_rate",
        "share_of_upgrades",
        "ci_low",
        "ci_high",
    )
}


# --- sections: the data each template reads --------------------------------------------------


def _summary(data: ReportData) -> dict[str, Any]:
    monthly = data.views["M"]
    tiles = []
    if not monthly.mrr.empty:
        first, last = monthly.movements.iloc[0], monthly.mrr.iloc[-1]
        tiles.append(
            Tile(
                "MRR at end",
                fmt_money(last["mrr"]),
                f"from {fmt_money(first['start_mrr'])} at start",
            )
        )
        tiles.append(Tile("Paying accounts", fmt_num(int(last["accounts"]))))
    if monthly.trailing is not None and not monthly.trailing.empty:
        t12 = monthly.trailing.iloc[-1]
        tiles.append(Tile("NRR, trailing 12 months", fmt_pct(t12["nrr"]), f"to {t12['period']}"))
        tiles.append(Tile("GRR, trailing 12 months", fmt_pct(t12["grr"])))
    expansion = monthly.movements["expansion_mrr"].sum()
    tiles.append(
        Tile(
            "Expansion MRR in window",
            fmt_money(expansion),
            f"{len(data.time_to_upsell)} accounts upsold for the first time",
        )
    )
    per100 = data.views["W"].pql_per_100
    if per100 is not None and not per100.empty:
        tiles.append(
            Tile(
                "New PQLs per 100 active / week",
                fmt_num(per100["pqls_per_100_active"].mean()),
                f"{fmt_pct(per100['pql_share'].mean(), 0)} of active accounts are PQLs",
            )
        )
    overall = data.holdout.iloc[0] if not data.holdout.empty else None
    if overall is not None and overall["holdout_touches"] > 0:
        tiles.append(
            Tile(
                "Outreach lift (60 days)",
                fmt_interval(overall["difference"], overall["ci_low"], overall["ci_high"]),
                f"contacted {fmt_pct(overall['contacted_rate'])} vs holdout "
                f"{fmt_pct(overall['holdout_rate'])}",
            )
        )
    diff90 = data.retention_diff[data.retention_diff["horizon_days"] == 90]
    if not diff90.empty:
        row = diff90.iloc[0]
        rates = f"{fmt_pct(row['upsold_rate'])} vs {fmt_pct(row['pql_not_upsold_rate'])}"
        tiles.append(
            Tile(
                "90-day retention, upsold vs PQL not upsold",
                rates,
                fmt_interval(row["difference"], row["ci_low"], row["ci_high"]),
            )
        )
    ltv = data.ltv.iloc[0]
    tiles.append(
        Tile(
            "LTV (ARPA x lifetime)",
            fmt_money(ltv["ltv"]),
            f"ARPA {fmt_money(ltv['arpa'])}, {fmt_num(ltv['lifetime_months'])} months",
        )
    )
    return {"tiles": tiles, "notes": data.notes}


def _view_panel(view: ViewData, slug: str, title: str) -> dict[str, Any]:
    bridge = view.movements.drop(columns=["period_start", "period_end"])
    ret = view.retention[
        [
            "period",
            "cohort_accounts",
            "start_mrr",
            "expansion_mrr",
            "contraction_mrr",
            "churn_mrr",
            "nrr",
            "grr",
        ]
    ]
    pql_volume = charts.chart_pql_volume(view.pql_volume, an.trigger_names(), an.ANY_TRIGGER)
    per100 = None
    if view.pql_per_100 is not None:
        per100 = table(
            view.pql_per_100.drop(columns="period_start"),
            {"pql_share": fmt_pct},
            caption=f"{title} PQLs per 100 active",
            collapsed=True,
        )
    return {
        "slug": slug,
        "title": title,
        "checked": view.freq == "M",
        "mrr_chart": Chart(
            charts.chart_mrr(view.mrr, view.movements), f"{title} MRR and MRR bridge"
        ),
        "bridge": table(
            bridge,
            {**MONEY, "expansion_mrr_rate": fmt_pct},
            caption=f"{title} MRR bridge",
            collapsed=True,
        ),
        "retention_chart": Chart(
            charts.chart_retention(view.retention, view.trailing), f"{title} NRR and GRR"
        ),
        "retention": table(
            ret,
            {**MONEY, "nrr": fmt_pct, "grr": fmt_pct},
            caption=f"{title} NRR and GRR (cohort moves)",
            collapsed=True,
        ),
        "pql_chart": Chart(pql_volume, f"{title} PQL entries"),
        "per100_chart": Chart(
            charts.chart_pql_per_100(view.pql_per_100), f"{title} PQLs per 100 active accounts"
        ),
        "per100": per100,
    }


def _views(data: ReportData) -> dict[str, Any]:
    return {"views": [_view_panel(data.views[freq], slug, title) for freq, slug, title in VIEWS]}


def _revenue(data: ReportData) -> dict[str, Any]:
    path = data.acv_path
    path_chart = None
    if not path.empty:
        notes = [
            f"{n} upgrade{'s' if n != 1 else ''}, +{fmt_pct(p, 0)}"
            for n, p in zip(path["upsells"], path["acv_uplift_pct"], strict=True)
        ]
        path_chart = charts.chart_hbar(
            list(path["path"]),
            path["acv_uplift_mean"],
            xlabel="mean ACV uplift per upgrade",
            annotations=notes,
        )
    path_table = path.drop(columns=["from_tier", "to_tier", "from_plan_name", "to_plan_name"])
    ltv_formats = {
        "arpa": fmt_money,
        "ltv": fmt_money,
        "monthly_logo_churn": lambda v: fmt_pct(v, 2),
    }
    return {
        "cohort_chart": Chart(charts.chart_cohort_nrr(data.cohort_nrr), "NRR by signup cohort"),
        "cohort": table(
            data.cohort_nrr, {**MONEY, **RATIOS}, caption="NRR by signup cohort", collapsed=True
        ),
        "path_chart": Chart(path_chart, "ACV uplift by upgrade path"),
        "path": table(
            path_table,
            {"acv_uplift_pct": fmt_pct},
            caption="ACV uplift by upgrade path",
            collapsed=True,
        ),
        "segment_chart": Chart(charts.chart_acv_segment(data.acv_segment), "ACV uplift by segment"),
        "segment": table(
            data.acv_segment,
            {"acv_uplift_pct": fmt_pct},
            caption="ACV uplift by segment",
            collapsed=True,
        ),
        "ltv": table(data.ltv, ltv_formats),
    }


def _pipeline(data: ReportData) -> dict[str, Any]:
    if data.time_in_pql is None:
        return {"missing": data.pql_note or "no weekly dates"}
    tip = data.time_in_pql.dropna(subset=["days_median"])
    chart = None
    if not tip.empty:
        notes = [f"{fmt_pct(r, 0)} contacted" for r in tip["contact_rate"]]
        chart = charts.chart_hbar(
            list(tip["trigger"]),
            tip["days_median"],
            annotations=notes,
            xlabel="median days from trigger to first contact",
            low=tip["days_p25"],
            high=tip["days_p75"],
        )
    return {
        "missing": None,
        "triggers": [
            (name, describe_trigger(name)) for name in an.trigger_names() if name != an.ANY_TRIGGER
        ],
        "chart": Chart(chart, "Time from trigger to first contact"),
        "table": table(data.time_in_pql, RATIOS, caption="Time in PQL status", collapsed=True),
    }


def _conversion(data: ReportData) -> dict[str, Any]:
    conv_t, conv_c = data.conversion_trigger, data.conversion_channel
    holdout_fmt = {
        **RATIOS,
        "contacted_rate": fmt_pct,
        "holdout_rate": fmt_pct,
        "difference": fmt_pct,
    }
    out: dict[str, Any] = {"by_trigger": None}
    if not conv_t.empty:  # else the template says there were no outreach rows
        out |= {
            "by_trigger_chart": Chart(
                charts.chart_group_rates(
                    conv_t,
                    "trigger",
                    rate="conversion_rate",
                    groups=("contacted", "holdout"),
                    ylabel="converted within 60 days",
                ),
                "Conversion by trigger",
            ),
            "by_trigger": table(conv_t, RATIOS, caption="Conversion by trigger", collapsed=True),
            "by_channel_chart": Chart(
                charts.chart_group_rates(
                    conv_c,
                    "channel",
                    rate="conversion_rate",
                    groups=("contacted", "holdout"),
                    ylabel="converted within 60 days",
                ),
                "Conversion by channel",
            ),
            "by_channel": table(conv_c, RATIOS, caption="Conversion by channel", collapsed=True),
            "holdout_chart": Chart(charts.chart_holdout(data.holdout), "Holdout comparison"),
            "holdout": table(
                data.holdout.drop(
                    columns=["method", "contacted_conversions", "holdout_conversions"]
                ),
                holdout_fmt,
                caption="Holdout comparison (Newcombe 95%)",
            ),
        }
    out |= {
        "time_to_upsell_chart": Chart(
            charts.chart_histogram(
                data.time_to_upsell["days_to_upsell"], xlabel="days from signup to the first upsell"
            ),
            "Time to upsell from signup",
        ),
        "time_to_upsell": table(
            an.duration_summary(data.time_to_upsell, "days_to_upsell", by="segment"),
            caption="Days from signup to first upsell, by segment",
        ),
        "after_trigger": None,
    }
    ttc = data.trigger_conversion
    if ttc is not None and not ttc.empty:
        out |= {
            "after_trigger_chart": Chart(
                charts.chart_hbar(
                    list(ttc["trigger"]),
                    ttc["conversion_rate"],
                    xlabel="upsold within 60 days of the trigger",
                    percent=True,
                    low=ttc["ci_low"],
                    high=ttc["ci_high"],
                    annotations=[
                        f"n={n}, median {fmt_num(d, 0)} days"
                        for n, d in zip(ttc["entries"], ttc["days_median"], strict=True)
                    ],
                ),
                "Conversion after a trigger",
            ),
            "after_trigger": table(ttc, RATIOS, caption="Trigger to conversion", collapsed=True),
        }
    return out


def _value(data: ReportData) -> dict[str, Any]:
    ret = data.retention
    ret = ret[ret["horizon_days"].isin([90, 365]) & (ret["accounts"] > 0)]
    diff = data.retention_diff
    diff = diff[diff["horizon_days"].isin([90, 180, 365])]
    diff_formats = {c: fmt_pct for c in diff.columns if c != "horizon_days"}
    adoption_chart = charts.chart_group_rates(
        data.adoption.assign(k="post-upsell churn (90 days)"),
        "k",
        rate="churn_rate",
        groups=("adopters", "non_adopters"),
        ylabel="churned after upsell",
    )
    return {
        "retention_chart": Chart(
            charts.chart_retention_curves(data.retention, GROUPS), "Retention curves by group"
        ),
        "retention": table(ret, RATIOS, caption="Retention at 90 and 365 days"),
        "retention_diff": table(
            diff,
            diff_formats,
            caption="Retention differential: upsold minus PQL not upsold (Newcombe 95%)",
        ),
        "adoption_chart": Chart(adoption_chart, "Post-upsell churn of adopters vs non-adopters"),
        "adoption": table(data.adoption, RATIOS),
        "nrr_chart": Chart(
            charts.chart_nrr_upsold(data.nrr_upsold), "NRR of upsold cohorts vs the rest"
        ),
        "nrr": table(
            data.nrr_upsold, {**MONEY, **RATIOS}, caption="NRR upsold vs rest", collapsed=True
        ),
    }


# --- model cards -----------------------------------------------------------------------------


def _card(card: dict[str, Any]) -> dict[str, Any]:
    """One model: name and version, other details, metrics, and its images embedded."""
    images = {title: card[key] for key, title in IMAGE_KEYS.items() if card.get(key)}
    images.update(card.get("images") or {})
    skip = {"name", "version", "metrics", "images", *IMAGE_KEYS}
    details = {k: v for k, v in card.items() if k not in skip}
    source = str(card.get("model_source") or "")
    return {
        "name": str(card.get("name", "model")),
        "version": str(card.get("version", "?")),
        "baseline_source": source if source.startswith("baseline") else None,
        "details": key_values(details) if details else None,
        "metrics": key_values(card.get("metrics") or {}) or None,
        "images": [
            {"chart": Chart(charts.image_uri(path), title), "path": str(path)}
            for title, path in images.items()
        ],
    }


def _model_card(cards: dict[str, Any] | list[dict[str, Any]]) -> Section:
    """The model card section: one card per model."""
    cards = [cards] if isinstance(cards, dict) else list(cards)
    return Section(
        MODEL_CARD_ID, "Model card", "report/model_card.html", {"cards": [_card(c) for c in cards]}
    )


def _model_card_section(cards: dict[str, Any] | list[dict[str, Any]]) -> str:
    """The model card section alone, as HTML (what the report shows for `cards`)."""
    return render("report/section.html", section=_model_card(cards))


def model_card_from_mlflow(
    model_name: str,
    image_dir: str | Path,
    *,
    alias: str = "champion",
    tracking_uri: str | None = None,
) -> dict[str, Any] | None:
    """A model card for the registered version behind `alias`, from its MLflow run.

    Metrics and tags come from the run; the calibration curve, gains chart and SHAP summary that
    training logs under `plots/` are downloaded into a folder of `image_dir` of its own. With the
    `champion` alias the card says where the scores come from (`model_source`): without a
    champion that cleared the quality floor, the rule baseline scores, and the card shows the
    newest version, the one promote refused. None when no version has the alias (no version at
    all, for `champion`), or when `tracking_uri` names a SQLite store that does not exist yet.
    """
    sqlite = tracking_uri.removeprefix("sqlite:///") if tracking_uri else None
    if sqlite is not None and sqlite != tracking_uri and not Path(sqlite).exists():
        return None  # no store yet; opening one would create it
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from serving.registry import model_source_in

    # The registry lives in the same store (as `serving.registry.configure_mlflow` sets it).
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    source = model_source_in(client, model_name) if alias == "champion" else None
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        if source is None or source.rates_version is None:
            return None
        # No champion: the rule baseline scores, and the card of the newest version (the one
        # promote refused) says so, with the numbers that kept it out.
        version = client.get_model_version(model_name, source.rates_version)
        alias = "none (no version has cleared the quality floor)"
    run = client.get_run(version.run_id)
    tags = run.data.tags
    card: dict[str, Any] = {
        "name": model_name,
        "version": str(version.version),
        "alias": alias,
        "run_id": run.info.run_id,
        **{k: tags[k] for k in RUN_TAGS if tags.get(k)},
        "metrics": dict(sorted(run.data.metrics.items())),
    }
    if source is not None:
        card["model_source"] = source.describe()
    # Every model logs its plots under the same file names: each card downloads into its own
    # folder, or the second card's plots would overwrite the first's.
    folder = Path(image_dir) / f"{model_name}-v{version.version}"
    folder.mkdir(parents=True, exist_ok=True)
    for key, file in PLOT_FILES.items():
        try:
            card[key] = mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id,
                artifact_path=f"plots/{file}",
                dst_path=str(folder),
                tracking_uri=tracking_uri,
            )
        except (MlflowException, OSError):  # this run did not log that plot
            continue
    return card
