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
when given, a model card. Charts are matplotlib PNGs (Agg canvas, no pyplot state) embedded as
base64; CSS is inline; the file references nothing outside itself.
"""

from __future__ import annotations

import base64
import html
import io
import math
import mimetypes
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from features import analytics as an
from features.analytics.common import Freq, TimeLike, resolve_window
from features.analytics.value import GROUPS
from features.dataset import Dataset, load_dataset
from features.triggers import describe_trigger
from training.incrementality_report import (
    SECTION_ID as INCREMENTALITY_ID,
)
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
GROUP_LABELS = {
    "upsold": "Upsold",
    "pql_not_upsold": "PQL, not upsold",
    "all": "All accounts",
    "adopters": "Used the new tier within 30 days",
    "non_adopters": "Did not",
}
COLORS = {
    "new": "#4C78A8",
    "expansion": "#54A24B",
    "reactivation": "#72B7B2",
    "contraction": "#F58518",
    "churn": "#E45756",
    "contacted": "#4C78A8",
    "holdout": "#BAB0AC",
    "upsold": "#54A24B",
    "pql_not_upsold": "#F58518",
    "all": "#4C78A8",
    "rest": "#BAB0AC",
    "any_trigger": "#000000",
    "adopters": "#54A24B",
    "non_adopters": "#E45756",
}
TRIGGER_COLORS = ["#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2"]


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
    nav = [
        ("summary", "Summary"),
        ("views", "By period"),
        ("revenue", "Revenue"),
        ("pipeline", "Pipeline"),
        ("conversion", "Conversion"),
        (INCREMENTALITY_ID, "Incrementality"),
        ("value", "Value"),
    ]
    if model_card:
        nav.append((MODEL_CARD_ID, "Model card"))
    nav.append(("definitions", "Definitions"))
    links = " ".join(f'<a href="#{i}">{html.escape(t)}</a>' for i, t in nav)
    body = "\n".join(
        [
            _summary_section(data),
            _views_section(data),
            _revenue_section(data),
            _pipeline_section(data),
            _conversion_section(data),
            incrementality_section(data.incrementality),
            _value_section(data),
            _model_card_section(model_card) if model_card else "",
            _definitions_section(),
        ]
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Upsell analytics: {html.escape(period)}</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>Upsell analytics</h1>
<p class="meta">Dataset <code>{html.escape(data.dataset_path)}</code> &middot; window
{html.escape(period)} &middot; money is live MRR in the dataset's currency</p>
<nav>{links}</nav>
</header>
<main>
{body}
</main>
</body>
</html>
"""


# --- formatting helpers ----------------------------------------------------------------------


def _isnan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_money(value: Any) -> str:
    return "–" if _isnan(value) else f"{value:,.0f}"


def fmt_pct(value: Any, digits: int = 1) -> str:
    return "–" if _isnan(value) else f"{100 * value:.{digits}f}%"


def fmt_num(value: Any, digits: int = 1) -> str:
    if _isnan(value):
        return "–"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def fmt_interval(diff: float, low: float, high: float) -> str:
    if _isnan(diff):
        return "–"
    return f"{100 * diff:+.1f} pts [{100 * low:+.1f}, {100 * high:+.1f}]"


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


def _table(
    frame: pd.DataFrame,
    formats: dict[str, Callable[[Any], str]] | None = None,
    *,
    caption: str | None = None,
    collapsed: bool = False,
) -> str:
    """An HTML table of `frame` with per-column formatters (escaped)."""
    if frame is None or frame.empty:
        return '<p class="note">No rows.</p>'
    formats = formats or {}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    columns = list(frame.columns)
    for values in zip(*(frame[c].tolist() for c in columns), strict=True):
        cells = []
        for col, value in zip(columns, values, strict=True):
            fmt = formats.get(col)
            if fmt is not None:
                text = fmt(value)
            elif isinstance(value, pd.Timestamp):
                text = str(value.date())
            elif isinstance(value, (float, np.floating)):
                text = fmt_num(float(value), 2)
            else:
                text = "–" if _isnan(value) else str(value)
            numeric = isinstance(value, (int, float, np.integer, np.floating))
            cells.append(f'<td class="{"num" if numeric else ""}">{html.escape(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    table = (
        f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
    if collapsed:
        label = html.escape(caption or "Table")
        return f"<details><summary>{label} (table)</summary>{table}</details>"
    return table


def _img(uri: str | None, alt: str) -> str:
    if uri is None:
        return f'<p class="note">No data for: {html.escape(alt)}.</p>'
    return f'<figure><img src="{uri}" alt="{html.escape(alt)}"></figure>'


def _png(fig: Figure) -> str:
    """The figure as a base64 PNG data URI."""
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float = 8.0, height: float = 3.2) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height))
    ax = fig.add_subplot(1, 1, 1)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    return fig, ax


def _x_labels(ax, labels: list[str], max_labels: int = 14) -> None:
    """Period labels on the x axis, thinned so that they stay readable."""
    step = max(1, math.ceil(len(labels) / max_labels))
    ax.set_xticks(range(0, len(labels), step))
    ax.set_xticklabels(
        labels[::step],
        rotation=45 if len(labels) > 6 else 0,
        ha="right" if len(labels) > 6 else "center",
        fontsize=8,
    )


def _percent_axis(ax) -> None:
    ax.yaxis.set_major_formatter(lambda v, _pos: f"{100 * v:.0f}%")


# --- charts ----------------------------------------------------------------------------------


def chart_mrr(mrr: pd.DataFrame, movements: pd.DataFrame) -> str | None:
    """MRR at period end (line) over the MRR bridge (bars: gains up, losses down)."""
    if mrr.empty:
        return None
    fig = Figure(figsize=(8, 4.6))
    ax_top, ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.2, 1]})
    x = np.arange(len(mrr))
    ax_top.plot(x, mrr["mrr"], color="#222", marker="o", markersize=3)
    ax_top.set_ylabel("MRR at period end")
    ax_top.yaxis.set_major_formatter(lambda v, _p: f"{v:,.0f}")
    gains = ["new_mrr", "expansion_mrr", "reactivation_mrr"]
    bottom = np.zeros(len(x))
    for col in gains:
        ax.bar(
            x,
            movements[col],
            bottom=bottom,
            color=COLORS[col.removesuffix("_mrr")],
            label=col.removesuffix("_mrr"),
        )
        bottom += movements[col].to_numpy()
    bottom = np.zeros(len(x))
    for col in ("contraction_mrr", "churn_mrr"):
        ax.bar(
            x,
            -movements[col],
            bottom=bottom,
            color=COLORS[col.removesuffix("_mrr")],
            label=col.removesuffix("_mrr"),
        )
        bottom -= movements[col].to_numpy()
    ax.plot(x, movements["net_new_mrr"], color="#222", linewidth=1, marker=".", label="net")
    ax.axhline(0, color="#444", linewidth=0.8)
    ax.set_ylabel("MRR moves")
    ax.yaxis.set_major_formatter(lambda v, _p: f"{v:,.0f}")
    ax.legend(ncol=6, fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.35), frameon=False)
    for a in (ax_top, ax):
        a.spines[["top", "right"]].set_visible(False)
        a.grid(axis="y", alpha=0.3)
    _x_labels(ax, list(mrr["period"]))
    return _png(fig)


def chart_retention(retention: pd.DataFrame, trailing: pd.DataFrame | None) -> str | None:
    """NRR and GRR per period, and their trailing-12-month values (dashed)."""
    if retention.empty or retention["nrr"].isna().all():
        return None
    fig, ax = _figure()
    x = np.arange(len(retention))
    ax.plot(x, retention["nrr"], marker="o", markersize=3, color="#54A24B", label="NRR (period)")
    ax.plot(x, retention["grr"], marker="o", markersize=3, color="#4C78A8", label="GRR (period)")
    if trailing is not None and not trailing["nrr"].isna().all():
        ax.plot(x, trailing["nrr"], linestyle="--", color="#54A24B", label="NRR (trailing 12m)")
        ax.plot(x, trailing["grr"], linestyle="--", color="#4C78A8", label="GRR (trailing 12m)")
    ax.axhline(1.0, color="#444", linewidth=0.8)
    _percent_axis(ax)
    ax.legend(fontsize=8, ncol=4, loc="upper left", bbox_to_anchor=(0, -0.25), frameon=False)
    _x_labels(ax, list(retention["period"]))
    return _png(fig)


def chart_pql_volume(volume: pd.DataFrame | None) -> str | None:
    """New PQL entries per period, one line per trigger; bold black = any trigger."""
    if volume is None or volume.empty:
        return None
    fig, ax = _figure()
    x = np.arange(len(volume))
    names = [c for c in an.trigger_names() if c in volume.columns]
    for i, name in enumerate(names):
        if name == an.ANY_TRIGGER:
            ax.plot(x, volume[name], color="black", linewidth=2.2, label="any trigger (accounts)")
        else:
            ax.plot(
                x,
                volume[name],
                color=TRIGGER_COLORS[i % len(TRIGGER_COLORS)],
                linewidth=1.3,
                label=name,
            )
    ax.set_ylabel("new PQL entries")
    ax.legend(fontsize=8, ncol=6, loc="upper left", bbox_to_anchor=(0, -0.25), frameon=False)
    _x_labels(ax, list(volume["period"]))
    return _png(fig)


def chart_pql_per_100(per100: pd.DataFrame | None) -> str | None:
    """New PQLs per 100 active accounts (bars) and the share in PQL status (line)."""
    if per100 is None or per100.empty:
        return None
    fig, ax = _figure()
    x = np.arange(len(per100))
    ax.bar(x, per100["pqls_per_100_active"], color="#4C78A8", label="new PQLs per 100 active")
    ax.set_ylabel("new PQLs per 100 active")
    twin = ax.twinx()
    twin.plot(
        x,
        per100["pql_share"],
        color="#E45756",
        marker="o",
        markersize=3,
        label="share of active accounts in PQL status",
    )
    twin.set_ylim(0, 1.05)
    _percent_axis(twin)
    twin.spines[["top"]].set_visible(False)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(
        handles=handles,
        fontsize=8,
        ncol=2,
        loc="upper left",
        bbox_to_anchor=(0, -0.25),
        frameon=False,
    )
    _x_labels(ax, list(per100["period"]))
    return _png(fig)


def chart_cohort_nrr(cohort: pd.DataFrame) -> str | None:
    """NRR over the window of the accounts paying at its start, by signup quarter."""
    if cohort.empty:
        return None
    fig, ax = _figure(8, 3.0)
    x = np.arange(len(cohort))
    colors = np.where(cohort["nrr"] >= 1, "#54A24B", "#E45756")
    ax.bar(x, cohort["nrr"], color=colors)
    ax.plot(x, cohort["grr"], "o", color="#222", markersize=4, label="GRR")
    ax.axhline(1.0, color="#444", linewidth=0.8)
    _percent_axis(ax)
    ax.set_ylabel("NRR over the window")
    ax.legend(fontsize=8, frameon=False)
    _x_labels(ax, list(cohort["cohort"]), max_labels=24)
    return _png(fig)


def chart_hbar(
    labels: list[str],
    values: Iterable[float],
    *,
    xlabel: str,
    annotations: list[str] | None = None,
    color: str = "#4C78A8",
    low: Iterable[float] | None = None,
    high: Iterable[float] | None = None,
    percent: bool = False,
) -> str | None:
    """Horizontal bars (optionally with intervals and a note right of each bar)."""
    values = list(values)
    if not values:
        return None
    fig, ax = _figure(8, 0.45 * len(values) + 1.0)
    ax.grid(axis="y", alpha=0)
    ax.grid(axis="x", alpha=0.3)
    y = np.arange(len(values))
    xerr = None
    if low is not None and high is not None:
        lo, hi = np.asarray(list(low), float), np.asarray(list(high), float)
        v = np.asarray(values, float)
        xerr = np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
        xerr = np.nan_to_num(xerr)
    ax.barh(y, values, color=color, xerr=xerr, capsize=3 if xerr is not None else 0)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    if percent:
        ax.xaxis.set_major_formatter(lambda v, _p: f"{100 * v:.0f}%")
    else:
        ax.xaxis.set_major_formatter(lambda v, _p: f"{v:,.0f}")
    if annotations:
        ends = np.nan_to_num(np.asarray(values, float))
        if xerr is not None:
            ends = ends + xerr[1]
        for yi, x_end, text in zip(y, ends, annotations, strict=True):
            ax.annotate(
                text,
                (x_end, yi),
                xytext=(5, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
                color="#333",
            )
        ax.set_xlim(right=ax.get_xlim()[1] * 1.25)
    return _png(fig)


def chart_acv_segment(seg: pd.DataFrame) -> str | None:
    """Mean ACV uplift per upsell, by segment, for upgrades and seat/price expansions."""
    frame = seg[seg["change_kind"] != "all"]
    if frame.empty:
        return None
    pivot = frame.pivot_table(index="segment", columns="change_kind", values="acv_uplift_mean")
    fig, ax = _figure()
    width = 0.8 / max(len(pivot.columns), 1)
    x = np.arange(len(pivot))
    for i, kind in enumerate(pivot.columns):
        ax.bar(
            x + i * width,
            pivot[kind].fillna(0),
            width,
            label=kind,
            color=COLORS.get(kind, TRIGGER_COLORS[i % len(TRIGGER_COLORS)]),
        )
    ax.set_xticks(x + width * (len(pivot.columns) - 1) / 2)
    ax.set_xticklabels(pivot.index)
    ax.set_ylabel("mean ACV uplift per upsell")
    ax.yaxis.set_major_formatter(lambda v, _p: f"{v:,.0f}")
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def chart_group_rates(
    frame: pd.DataFrame,
    key: str,
    *,
    rate: str,
    groups: tuple[str, ...],
    ylabel: str,
    group_col: str = "group",
) -> str | None:
    """Grouped bars of a rate per `key` value and group, with Wilson 95% error bars."""
    if frame is None or frame.empty or frame[rate].isna().all():
        return None
    keys = list(dict.fromkeys(frame[key]))
    fig, ax = _figure()
    width = 0.8 / len(groups)
    x = np.arange(len(keys))
    for i, group in enumerate(groups):
        sub = frame[frame[group_col] == group].set_index(key).reindex(keys)
        values = sub[rate].to_numpy(float)
        err = np.nan_to_num(
            np.vstack(
                [values - sub["ci_low"].to_numpy(float), sub["ci_high"].to_numpy(float) - values]
            )
        )
        err = np.clip(err, 0, None)
        ax.bar(
            x + i * width,
            np.nan_to_num(values),
            width,
            yerr=err,
            capsize=3,
            color=COLORS.get(group, TRIGGER_COLORS[i]),
            label=GROUP_LABELS.get(group, group),
        )
    ax.set_xticks(x + width * (len(groups) - 1) / 2)
    ax.set_xticklabels(keys, fontsize=9)
    ax.set_ylabel(ylabel)
    _percent_axis(ax)
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def chart_holdout(holdout: pd.DataFrame, key: str = "trigger") -> str | None:
    """Contacted minus holdout conversion with 95% intervals (right of 0 = outreach helps)."""
    frame = holdout.dropna(subset=["difference"])
    if frame.empty:
        return None
    fig, ax = _figure(8, 0.5 * len(frame) + 1.2)
    ax.grid(axis="y", alpha=0)
    ax.grid(axis="x", alpha=0.3)
    y = np.arange(len(frame))
    diff = frame["difference"].to_numpy(float)
    err = np.clip(
        np.vstack(
            [diff - frame["ci_low"].to_numpy(float), frame["ci_high"].to_numpy(float) - diff]
        ),
        0,
        None,
    )
    for yi, k in enumerate(frame[key]):
        color = "#222" if k == "all" else "#4C78A8"
        ax.errorbar(diff[yi], yi, xerr=err[:, yi : yi + 1], fmt="o", color=color, capsize=4)
    ax.axvline(0, color="#E45756", linewidth=1)
    labels = [
        f"{k} (n={c}/{h})"
        for k, c, h in zip(
            frame[key], frame["contacted_touches"], frame["holdout_touches"], strict=True
        )
    ]
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=9)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(lambda v, _p: f"{100 * v:+.0f} pts")
    ax.set_xlabel("conversion lift: contacted minus holdout (95% Newcombe interval)")
    return _png(fig)


def chart_histogram(values: pd.Series, *, xlabel: str, bins: int = 20) -> str | None:
    """A histogram with the median marked."""
    values = values.dropna()
    if values.empty:
        return None
    fig, ax = _figure(8, 2.8)
    ax.hist(values, bins=bins, color="#4C78A8", edgecolor="white")
    median = float(values.median())
    ax.axvline(median, color="#E45756", linewidth=1.5)
    ax.annotate(
        f"median {median:,.0f}",
        (median, ax.get_ylim()[1] * 0.9),
        xytext=(4, 0),
        textcoords="offset points",
        color="#E45756",
        fontsize=9,
    )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accounts")
    return _png(fig)


def chart_retention_curves(retention: pd.DataFrame) -> str | None:
    """Logo retention by days after the anchor, per group (uncensored accounts at each point)."""
    frame = retention.dropna(subset=["retention_rate"])
    if frame.empty:
        return None
    fig, ax = _figure()
    for group in GROUPS:
        sub = frame[frame["group"] == group]
        if sub.empty:
            continue
        ax.plot(
            sub["horizon_days"],
            sub["retention_rate"],
            marker="o",
            markersize=3,
            color=COLORS[group],
            label=GROUP_LABELS[group],
        )
        ax.fill_between(
            sub["horizon_days"], sub["ci_low"], sub["ci_high"], color=COLORS[group], alpha=0.12
        )
    for day in (90, 365):
        ax.axvline(day, color="#999", linewidth=0.8, linestyle=":")
    ax.set_xlabel("days after upsell / first PQL week / window start")
    ax.set_ylabel("still a customer")
    _percent_axis(ax)
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def chart_nrr_upsold(frame: pd.DataFrame) -> str | None:
    """NRR after each period of the accounts upsold in it vs the rest."""
    if frame.empty:
        return None
    pivot = frame.pivot_table(index="period", columns="group", values="nrr")
    fig, ax = _figure()
    x = np.arange(len(pivot))
    for i, group in enumerate(("upsold", "rest")):
        if group in pivot:
            ax.bar(
                x + i * 0.4,
                pivot[group],
                0.4,
                color=COLORS[group],
                label="upsold in the period" if group == "upsold" else "the rest",
            )
    ax.axhline(1.0, color="#444", linewidth=0.8)
    low = float(np.nanmin(pivot.to_numpy())) if pivot.notna().any().any() else 1.0
    ax.set_ylim(bottom=max(0.0, min(low, 1.0) - 0.1))
    ax.set_xticks(x + 0.2)
    ax.set_xticklabels(pivot.index)
    _percent_axis(ax)
    ax.set_ylabel("NRR from period end")
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)


# --- sections --------------------------------------------------------------------------------


def _tile(label: str, value: str, note: str = "") -> str:
    small = f"<small>{html.escape(note)}</small>" if note else ""
    return (
        f'<div class="tile"><span>{html.escape(label)}</span>'
        f"<strong>{html.escape(value)}</strong>{small}</div>"
    )


def _summary_section(data: ReportData) -> str:
    monthly = data.views["M"]
    tiles = []
    if not monthly.mrr.empty:
        first, last = monthly.movements.iloc[0], monthly.mrr.iloc[-1]
        tiles.append(
            _tile(
                "MRR at end",
                fmt_money(last["mrr"]),
                f"from {fmt_money(first['start_mrr'])} at start",
            )
        )
        tiles.append(_tile("Paying accounts", fmt_num(int(last["accounts"]))))
    if monthly.trailing is not None and not monthly.trailing.empty:
        t12 = monthly.trailing.iloc[-1]
        tiles.append(_tile("NRR, trailing 12 months", fmt_pct(t12["nrr"]), f"to {t12['period']}"))
        tiles.append(_tile("GRR, trailing 12 months", fmt_pct(t12["grr"])))
    expansion = monthly.movements["expansion_mrr"].sum()
    tiles.append(
        _tile(
            "Expansion MRR in window",
            fmt_money(expansion),
            f"{len(data.time_to_upsell)} accounts upsold for the first time",
        )
    )
    per100 = data.views["W"].pql_per_100
    if per100 is not None and not per100.empty:
        tiles.append(
            _tile(
                "New PQLs per 100 active / week",
                fmt_num(per100["pqls_per_100_active"].mean()),
                f"{fmt_pct(per100['pql_share'].mean(), 0)} of active accounts are PQLs",
            )
        )
    overall = data.holdout.iloc[0] if not data.holdout.empty else None
    if overall is not None and overall["holdout_touches"] > 0:
        tiles.append(
            _tile(
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
            _tile(
                "90-day retention, upsold vs PQL not upsold",
                rates,
                fmt_interval(row["difference"], row["ci_low"], row["ci_high"]),
            )
        )
    ltv = data.ltv.iloc[0]
    tiles.append(
        _tile(
            "LTV (ARPA x lifetime)",
            fmt_money(ltv["ltv"]),
            f"ARPA {fmt_money(ltv['arpa'])}, {fmt_num(ltv['lifetime_months'])} months",
        )
    )
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in data.notes)
    return f"""<section id="summary"><h2>Summary</h2>
<div class="tiles">{"".join(tiles)}</div>{notes}</section>"""


def _view_panel(view: ViewData, slug: str, title: str) -> str:
    money = MONEY
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
    parts = [
        f"<h3>{title} MRR and its moves</h3>",
        _img(chart_mrr(view.mrr, view.movements), f"{title} MRR and MRR bridge"),
        _table(
            bridge,
            {**money, "expansion_mrr_rate": fmt_pct},
            caption=f"{title} MRR bridge",
            collapsed=True,
        ),
        f"<h3>{title} revenue retention</h3>",
        _img(chart_retention(view.retention, view.trailing), f"{title} NRR and GRR"),
        _table(
            ret,
            {**money, "nrr": fmt_pct, "grr": fmt_pct},
            caption=f"{title} NRR and GRR (cohort moves)",
            collapsed=True,
        ),
        f"<h3>{title} PQL entries by trigger</h3>",
        _img(chart_pql_volume(view.pql_volume), f"{title} PQL entries"),
        _img(chart_pql_per_100(view.pql_per_100), f"{title} PQLs per 100 active accounts"),
    ]
    if view.pql_per_100 is not None:
        parts.append(
            _table(
                view.pql_per_100.drop(columns="period_start"),
                {"pql_share": fmt_pct},
                caption=f"{title} PQLs per 100 active",
                collapsed=True,
            )
        )
    return f'<div class="view" id="view-{slug}">{"".join(parts)}</div>'


def _views_section(data: ReportData) -> str:
    radios, labels, panels = [], [], []
    for freq, slug, title in VIEWS:
        checked = " checked" if freq == "M" else ""
        radios.append(f'<input type="radio" name="view" id="tab-{slug}"{checked}>')
        labels.append(f'<label for="tab-{slug}">{title}</label>')
        panels.append(_view_panel(data.views[freq], slug, title))
    return f"""<section id="views"><h2>By period</h2>
<p>Pick a view. Weeks run Monday to Sunday; the last period may be incomplete.</p>
<div class="tabs">{"".join(radios)}<div class="tab-labels">{"".join(labels)}</div>
{"".join(panels)}</div></section>"""


def _revenue_section(data: ReportData) -> str:
    path = data.acv_path
    path_chart = None
    if not path.empty:
        notes = [
            f"{n} upgrade{'s' if n != 1 else ''}, +{fmt_pct(p, 0)}"
            for n, p in zip(path["upsells"], path["acv_uplift_pct"], strict=True)
        ]
        path_chart = chart_hbar(
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
    parts = [
        '<section id="revenue"><h2>Revenue</h2>',
        "<h3>NRR by signup cohort</h3>",
        "<p>Accounts paying at the window start, grouped by the quarter they signed up: red bars "
        "lost revenue over the window, green ones grew; dots are GRR.</p>",
        _img(chart_cohort_nrr(data.cohort_nrr), "NRR by signup cohort"),
        _table(
            data.cohort_nrr, {**MONEY, **RATIOS}, caption="NRR by signup cohort", collapsed=True
        ),
        "<h3>ACV uplift by upgrade path</h3>",
        _img(path_chart, "ACV uplift by upgrade path"),
        _table(
            path_table,
            {"acv_uplift_pct": fmt_pct},
            caption="ACV uplift by upgrade path",
            collapsed=True,
        ),
        "<h3>ACV uplift by segment</h3>",
        _img(chart_acv_segment(data.acv_segment), "ACV uplift by segment"),
        _table(
            data.acv_segment,
            {"acv_uplift_pct": fmt_pct},
            caption="ACV uplift by segment",
            collapsed=True,
        ),
        "<h3>Lifetime value</h3>",
        _table(data.ltv, ltv_formats),
        "</section>",
    ]
    return "\n".join(parts)


def _pipeline_section(data: ReportData) -> str:
    if data.time_in_pql is None:
        return f"""<section id="pipeline"><h2>Pipeline</h2>
<p class="note">No PQL figures: {html.escape(data.pql_note or "no weekly dates")}</p></section>"""
    tip = data.time_in_pql.dropna(subset=["days_median"])
    chart = None
    if not tip.empty:
        notes = [f"{fmt_pct(r, 0)} contacted" for r in tip["contact_rate"]]
        chart = chart_hbar(
            list(tip["trigger"]),
            tip["days_median"],
            annotations=notes,
            xlabel="median days from trigger to first contact",
            low=tip["days_p25"],
            high=tip["days_p75"],
        )
    triggers = "".join(
        f"<li><code>{html.escape(n)}</code>: {html.escape(describe_trigger(n))}</li>"
        for n in an.trigger_names()
        if n != an.ANY_TRIGGER
    )
    return f"""<section id="pipeline"><h2>Pipeline</h2>
<p>PQL volume per week and per 100 active accounts is in <a href="#views">By period</a>.
Triggers (default thresholds):</p><ul>{triggers}</ul>
<h3>Time in PQL status: trigger to first contact</h3>
<p>Bars: median days (whiskers: quartiles) from the week a trigger fired to the first outreach
(holdout rows are not contacts), among entries contacted within 90 days.</p>
{_img(chart, "Time from trigger to first contact")}
{_table(data.time_in_pql, RATIOS, caption="Time in PQL status", collapsed=True)}
</section>"""


def _conversion_section(data: ReportData) -> str:
    conv_t, conv_c = data.conversion_trigger, data.conversion_channel
    rates = RATIOS
    holdout_fmt = {
        **RATIOS,
        "contacted_rate": fmt_pct,
        "holdout_rate": fmt_pct,
        "difference": fmt_pct,
    }
    parts = ['<section id="conversion"><h2>Conversion</h2>']
    if conv_t.empty:
        parts.append('<p class="note">No outreach rows in the window (or all are censored).</p>')
    else:
        parts += [
            "<h3>Upsell within 60 days of a touch, by trigger</h3>",
            _img(
                chart_group_rates(
                    conv_t,
                    "trigger",
                    rate="conversion_rate",
                    groups=("contacted", "holdout"),
                    ylabel="converted within 60 days",
                ),
                "Conversion by trigger",
            ),
            _table(conv_t, rates, caption="Conversion by trigger", collapsed=True),
            "<h3>By channel</h3>",
            _img(
                chart_group_rates(
                    conv_c,
                    "channel",
                    rate="conversion_rate",
                    groups=("contacted", "holdout"),
                    ylabel="converted within 60 days",
                ),
                "Conversion by channel",
            ),
            _table(conv_c, rates, caption="Conversion by channel", collapsed=True),
            "<h3>Holdout comparison</h3>",
            "<p>Contacted minus holdout conversion: what outreach adds over leaving an eligible "
            "account alone. An interval that crosses 0 means the data cannot tell yet.</p>",
            _img(chart_holdout(data.holdout), "Holdout comparison"),
            _table(
                data.holdout.drop(
                    columns=["method", "contacted_conversions", "holdout_conversions"]
                ),
                holdout_fmt,
                caption="Holdout comparison (Newcombe 95%)",
            ),
        ]
    parts += [
        "<h3>Time to upsell from signup</h3>",
        _img(
            chart_histogram(
                data.time_to_upsell["days_to_upsell"], xlabel="days from signup to the first upsell"
            ),
            "Time to upsell from signup",
        ),
        _table(
            an.duration_summary(data.time_to_upsell, "days_to_upsell", by="segment"),
            caption="Days from signup to first upsell, by segment",
        ),
    ]
    ttc = data.trigger_conversion
    if ttc is not None and not ttc.empty:
        parts += [
            "<h3>From trigger to conversion</h3>",
            "<p>Share of PQL entries that upsold within 60 days of the week the trigger fired "
            "(Wilson 95%), with median days to the upsell.</p>",
            _img(
                chart_hbar(
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
            _table(ttc, rates, caption="Trigger to conversion", collapsed=True),
        ]
    parts.append("</section>")
    return "\n".join(parts)


def _value_section(data: ReportData) -> str:
    ret = data.retention
    ret = ret[ret["horizon_days"].isin([90, 365]) & (ret["accounts"] > 0)]
    diff = data.retention_diff
    diff = diff[diff["horizon_days"].isin([90, 180, 365])]
    diff_formats = {c: fmt_pct for c in diff.columns if c != "horizon_days"}
    adoption_chart = chart_group_rates(
        data.adoption.assign(k="post-upsell churn (90 days)"),
        "k",
        rate="churn_rate",
        groups=("adopters", "non_adopters"),
        ylabel="churned after upsell",
    )
    parts = [
        '<section id="value"><h2>Value</h2>',
        "<h3>Retention: upsold vs PQLs that did not upsell vs all</h3>",
        "<p>Share of accounts still customers a number of days after their upsell (upsold), "
        "their first PQL week (PQL, not upsold) or the window start (all). Bands: Wilson 95%. "
        "Points with too little follow-up are left out.</p>",
        _img(chart_retention_curves(data.retention), "Retention curves by group"),
        _table(ret, RATIOS, caption="Retention at 90 and 365 days"),
        _table(
            diff,
            diff_formats,
            caption="Retention differential: upsold minus PQL not upsold (Newcombe 95%)",
        ),
        "<h3>Post-upsell adoption and churn</h3>",
        "<p>Tier upgrades whose account used a feature of the new tier within 30 days "
        "(adopters), and the share of each that churned or fell below the pre-upsell MRR within "
        "90 days.</p>",
        _img(adoption_chart, "Post-upsell churn of adopters vs non-adopters"),
        _table(data.adoption, RATIOS),
        "<h3>NRR of upsold cohorts vs the rest</h3>",
        "<p>Accounts upsold in a quarter against all other paying accounts, from the quarter's "
        "end over the following 12 months (or until the data ends).</p>",
        _img(chart_nrr_upsold(data.nrr_upsold), "NRR of upsold cohorts vs the rest"),
        _table(data.nrr_upsold, {**MONEY, **RATIOS}, caption="NRR upsold vs rest", collapsed=True),
        "</section>",
    ]
    return "\n".join(parts)


def _image_uri(path: str | Path) -> str | None:
    """A model-card image file as a data URI (None when the file is missing)."""
    file = Path(path)
    if not file.is_file():
        return None
    mime = mimetypes.guess_type(file.name)[0] or "image/png"
    return f"data:{mime};base64," + base64.b64encode(file.read_bytes()).decode("ascii")


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = []
    for name, value in metrics.items():
        if isinstance(value, dict):
            rows.append(f"<tr><th colspan=2>{html.escape(str(name))}</th></tr>")
            rows += [
                f"<tr><td>{html.escape(str(k))}</td><td class=num>"
                f"{html.escape(_fmt_metric(v))}</td></tr>"
                for k, v in value.items()
            ]
        else:
            rows.append(
                f"<tr><td>{html.escape(str(name))}</td><td class=num>"
                f"{html.escape(_fmt_metric(value))}</td></tr>"
            )
    return f"<table class=kv><tbody>{''.join(rows)}</tbody></table>"


def _fmt_metric(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _model_card(card: dict[str, Any]) -> str:
    """One model: name and version, other details, metrics, and its images embedded."""
    name = html.escape(str(card.get("name", "model")))
    version = html.escape(str(card.get("version", "?")))
    metrics = card.get("metrics") or {}
    images = {title: card[key] for key, title in IMAGE_KEYS.items() if card.get(key)}
    images.update(card.get("images") or {})
    skip = {"name", "version", "metrics", "images", *IMAGE_KEYS}
    details = {k: v for k, v in card.items() if k not in skip}
    figures = []
    for title, path in images.items():
        uri = _image_uri(path)
        missing = f'<p class="note">Image not found: {html.escape(str(path))}</p>'
        figures.append(f"<h4>{html.escape(title)}</h4>" + (_img(uri, title) if uri else missing))
    no_metrics = '<p class="note">No metrics given.</p>'
    source = str(card.get("model_source") or "")
    rules = (
        f'<p class="note"><strong>Scores come from the rule baseline, not this model:</strong> '
        f"{html.escape(source)}</p>"
        if source.startswith("baseline")
        else ""
    )
    return "\n".join(
        [
            f"<h3>{name}, version {version}</h3>",
            rules,
            _metrics_table(details) if details else "",
            "<h4>Metrics</h4>",
            _metrics_table(metrics) if metrics else no_metrics,
            f'<div class="figures">{"".join(figures)}</div>',
        ]
    )


def _model_card_section(cards: dict[str, Any] | list[dict[str, Any]]) -> str:
    """The model card section: one card per model."""
    cards = [cards] if isinstance(cards, dict) else list(cards)
    body = "\n".join(_model_card(card) for card in cards)
    return f'<section id="{MODEL_CARD_ID}"><h2>Model card</h2>\n{body}\n</section>'


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


def _definitions_section() -> str:
    terms = {
        "Live MRR": "mrr of the latest subscription row before a time, when its status is active "
        "or trialing; 0 after a cancellation.",
        "MRR bridge": "end = start + new + expansion - contraction - churn + reactivation; each "
        "move is one subscription change, bucketed by its change kind.",
        "NRR": "(start + expansion - contraction - churn) / start, over the accounts paying at "
        "the window start; trailing 12 months uses the 12 months to the period's end.",
        "GRR": "sum of min(start, retained) / start over the same accounts: expansion never "
        "counts.",
        "Expansion MRR rate": "expansion MRR of the period / MRR at its start.",
        "ACV uplift": "12 x (mrr after - mrr before) of an upgrade (higher tier) or expansion "
        "(same tier, more mrr).",
        "LTV": "ARPA x expected lifetime, where lifetime = 1 / monthly logo churn.",
        "PQL": "an active account on which a trigger fires, evaluated each Monday with the "
        "point-in-time features; an entry is the first Monday it fires.",
        "Conversion": "an upgrade or expansion within 60 days after a touch or a trigger; rows "
        "with less follow-up are censored (left out).",
        "Holdout": "eligible accounts deliberately not contacted; the lift is contacted minus "
        "holdout conversion, with a Newcombe (Wilson-based) 95% interval.",
        "Retention": "the account is still active or trialing the given number of days later.",
        "Post-upsell churn": "churn, or a downgrade or contraction below the pre-upsell mrr, "
        "within 90 days of a tier upgrade.",
    }
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in terms.items())
    return f'<section id="definitions"><h2>Definitions</h2><dl>{items}</dl></section>'


CSS = """
:root { --ink: #1d1d1f; --muted: #666; --line: #ddd; --accent: #4C78A8; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #fafafa; }
header { background: #fff; border-bottom: 1px solid var(--line); padding: 1rem 2rem;
         position: sticky; top: 0; z-index: 2; }
header h1 { margin: 0; font-size: 1.4rem; }
.meta { margin: .2rem 0 .4rem; color: var(--muted); font-size: .9rem; }
nav a { margin-right: 1rem; color: var(--accent); text-decoration: none; font-size: .9rem; }
main { max-width: 1000px; margin: 0 auto; padding: 1rem 2rem 4rem; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
          padding: 1rem 1.5rem; margin: 1.2rem 0; }
h2 { margin-top: 0; font-size: 1.25rem; }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; }
figure { margin: .5rem 0; }
figure img { max-width: 100%; height: auto; }
.note { color: var(--muted); font-style: italic; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr));
         gap: .8rem; }
.tile { border: 1px solid var(--line); border-radius: 6px; padding: .6rem .8rem; }
.tile span { display: block; color: var(--muted); font-size: .8rem; }
.tile strong { display: block; font-size: 1.25rem; }
.tile small { color: var(--muted); }
table { border-collapse: collapse; font-size: .8rem; margin: .5rem 0; width: 100%; }
caption { text-align: left; font-weight: 600; padding: .3rem 0; }
th, td { border-bottom: 1px solid var(--line); padding: .25rem .5rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv { width: auto; }
.scroll { overflow-x: auto; }
details { margin: .4rem 0; }
summary { cursor: pointer; color: var(--accent); font-size: .85rem; }
.tabs > input { position: absolute; opacity: 0; pointer-events: none; }
.tab-labels { display: flex; gap: .4rem; border-bottom: 1px solid var(--line);
              margin-bottom: .8rem; }
.tab-labels label { padding: .4rem 1rem; border: 1px solid var(--line); border-bottom: none;
                    border-radius: 6px 6px 0 0; cursor: pointer; background: #f3f3f3; }
.view { display: none; }
#tab-weekly:checked ~ #view-weekly, #tab-monthly:checked ~ #view-monthly,
#tab-quarterly:checked ~ #view-quarterly { display: block; }
#tab-weekly:checked ~ .tab-labels label[for=tab-weekly],
#tab-monthly:checked ~ .tab-labels label[for=tab-monthly],
#tab-quarterly:checked ~ .tab-labels label[for=tab-quarterly] {
    background: #fff; font-weight: 600; border-color: var(--accent); }
dt { font-weight: 600; margin-top: .5rem; }
dd { margin-left: 1rem; color: #333; }
@media print { .view { display: block; } header { position: static; } }
"""
