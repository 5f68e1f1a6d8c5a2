"""Charts as self-contained images: matplotlib figures rendered to base64 PNG data URIs.

Each `chart_*` function takes the frame a metric function returns and gives a data URI, or None
when there is nothing to draw (the page then says "No data for: ..."). Figures use the Agg
canvas directly, never pyplot, so rendering keeps no global state and is safe in a server.
`image_uri` embeds an image file (a model's logged plot) the same way, so a page references
nothing outside itself.
"""

from __future__ import annotations

import base64
import io
import math
import mimetypes
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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


# --- primitives ------------------------------------------------------------------------------


def image_uri(path: str | Path) -> str | None:
    """An image file as a data URI (None when the file is missing)."""
    file = Path(path)
    if not file.is_file():
        return None
    mime = mimetypes.guess_type(file.name)[0] or "image/png"
    return f"data:{mime};base64," + base64.b64encode(file.read_bytes()).decode("ascii")


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


# --- the report's charts -------------------------------------------------------------------------


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


def chart_pql_volume(
    volume: pd.DataFrame | None, triggers: Sequence[str], any_trigger: str
) -> str | None:
    """New PQL entries per period, one line per trigger (in the order of `triggers`, those that
    are columns of `volume`); bold black = the `any_trigger` column."""
    if volume is None or volume.empty:
        return None
    fig, ax = _figure()
    x = np.arange(len(volume))
    names = [c for c in triggers if c in volume.columns]
    for i, name in enumerate(names):
        if name == any_trigger:
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


def chart_retention_curves(retention: pd.DataFrame, groups: Sequence[str]) -> str | None:
    """Logo retention by days after the anchor, one curve per group in `groups` (uncensored
    accounts at each point)."""
    frame = retention.dropna(subset=["retention_rate"])
    if frame.empty:
        return None
    fig, ax = _figure()
    for group in groups:
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
