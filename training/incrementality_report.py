"""The report's incrementality section: what outreach adds over the holdout, where, and how
many accounts an experiment needs to tell.

The numbers come from `features.analytics.incrementality`; the units are the `outreach` rows
and, when the caller passes them (`serving.holdout.assignment_history` of the CRM database),
the arms the batch drew. Rendering reuses the report's table and format helpers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from features.analytics import incrementality as inc
from features.analytics.common import TimeLike
from features.dataset import Dataset

SECTION_ID = "incrementality"
LIFTS = (0.01, 0.02, 0.05)  # absolute conversion lifts the sample-size table is shown for
DEFAULT_BASE_RATE = 0.05  # when there is no holdout conversion to start from


@dataclass
class IncrementalityData:
    """Units, lifts overall and by breakdown, and sample sizes."""

    units: int
    holdout_units: int
    sources: dict[str, int]
    overall: pd.DataFrame
    breakdowns: dict[str, pd.DataFrame] = field(default_factory=dict)
    sample_sizes: pd.DataFrame = field(default_factory=pd.DataFrame)
    detectable_lift: float = float("nan")
    base_rate: float = float("nan")
    holdout_share: float = float("nan")


def collect_incrementality(
    dataset: Dataset,
    assignments: pd.DataFrame | None = None,
    *,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
) -> IncrementalityData:
    """Every metric of the section over units entering in `[start, end)`."""
    parts = [inc.outreach_units(dataset)]
    if assignments is not None and len(assignments):
        parts.append(inc.assignment_units(assignments))
    filled = [p for p in parts if len(p)]
    units = pd.concat(filled, ignore_index=True) if filled else parts[0]
    outcomes = inc.unit_outcomes(dataset, units, start=start, end=end)
    overall = inc.incremental_outcomes(outcomes)
    breakdowns = {by: inc.incremental_outcomes(outcomes, by) for by in inc.BREAKDOWNS}
    if outcomes["source"].nunique() > 1:
        breakdowns["source"] = inc.incremental_outcomes(outcomes, "source")
    conv = overall.set_index("metric").loc["converted"]
    base = conv["holdout_mean"] if conv["holdout_n"] and 0 < conv["holdout_mean"] < 1 else None
    base_rate = float(base) if base is not None else DEFAULT_BASE_RATE
    n = int(conv["treated_n"] + conv["holdout_n"])
    share = conv["holdout_n"] / n if n else 0.1
    share = share if 0 < share < 1 else 0.1
    sizes = []
    for lift in LIFTS:
        if 0 < base_rate + lift < 1:
            need = inc.sample_size_for_lift(base_rate, lift, holdout_share=share)
            sizes.append({"lift": lift, **need})
    return IncrementalityData(
        units=len(outcomes),
        holdout_units=int(outcomes["holdout"].sum()),
        sources=outcomes["source"].value_counts().to_dict(),
        overall=overall,
        breakdowns=breakdowns,
        sample_sizes=pd.DataFrame(sizes),
        detectable_lift=inc.minimum_detectable_lift(
            base_rate, int(conv["holdout_n"]), int(conv["treated_n"])
        ),
        base_rate=base_rate,
        holdout_share=share,
    )


TITLES = {
    "converted": "conversion within 60 days",
    "expansion_mrr": "expansion MRR within 60 days",
    "retained_expansion_mrr_90d": "expansion MRR still there 90 days after the upsell",
}
BREAKDOWN_TITLES = {
    "trigger": "By trigger",
    "route": "By route",
    "segment": "By segment",
    "score_decile": "By score decile (01 = top tenth of expected net value)",
    "source": "By source (outreach rows vs the batch's arms)",
}


def _formatted(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Money or rates per metric row: rates as percentages, MRR as money."""
    from training.report import fmt_money, fmt_num, fmt_pct

    shown = frame.assign(metric=frame["metric"].map(TITLES).fillna(frame["metric"]))
    cells = {}
    for col in ("treated_mean", "holdout_mean", "lift", "ci_low", "ci_high"):
        shown[col] = [
            fmt_pct(v) if m == "converted" else fmt_money(v)
            for v, m in zip(frame[col], frame["metric"], strict=True)
        ]
    cells["treated_n"] = lambda v: fmt_num(v, 0)
    cells["holdout_n"] = lambda v: fmt_num(v, 0)
    return shown, cells


def incrementality_section(data: IncrementalityData | None) -> str:
    """The section's HTML (empty when the report was built without it)."""
    from training.report import _table, fmt_num, fmt_pct

    if data is None:
        return ""
    head = f'<section id="{SECTION_ID}"><h2>Incrementality: outreach vs holdout</h2>'
    if data.holdout_units == 0:
        return (
            head + '<p class="note">No holdout units yet: neither the outreach table nor the '
            "batch's holdout arms hold an eligible account left alone, so what outreach adds "
            "cannot be measured. The batch assigns a holdout on every run "
            "(EXPANSION_HOLDOUT_SHARE).</p></section>"
        )
    sources = ", ".join(f"{k} {v:,}" for k, v in data.sources.items())
    overall, cells = _formatted(data.overall.drop(columns=["method"]))
    parts = [
        head,
        f"<p>{data.units:,} units ({sources}), {data.holdout_units:,} of them held out. "
        "Lift = treated minus holdout; conversion has Newcombe's 95% interval, the MRR "
        "metrics a 95% percentile bootstrap. An interval that crosses 0 means the data cannot "
        "tell yet. Treated units count whether or not they were then called (intent to "
        "treat).</p>",
        _table(overall, cells, caption="All units"),
    ]
    for by, frame in data.breakdowns.items():
        shown, cells = _formatted(frame[frame[by] != "all"].drop(columns=["method"]))
        parts.append(_table(shown, cells, caption=BREAKDOWN_TITLES[by], collapsed=True))
    parts.append(
        "<h3>Sample size</h3>"
        f"<p>With the holdout's conversion of {fmt_pct(data.base_rate)} and "
        f"{fmt_pct(data.holdout_share)} of units held out, the arms so far detect a conversion "
        f"lift of {fmt_pct(data.detectable_lift)} or more (5% two-sided, 80% power). "
        "Units needed for smaller lifts:</p>"
    )
    sizes = data.sample_sizes.copy()
    if not sizes.empty:
        sizes["lift"] = [f"+{fmt_num(v * 100, 1)} points" for v in sizes["lift"]]
    parts.append(_table(sizes, caption="Units needed (holdout, treated, total)"))
    parts.append("</section>")
    return "\n".join(parts)
