"""The report's incrementality section: what outreach adds over the holdout, where, and how
many accounts an experiment needs to tell.

The numbers come from `features.analytics.incrementality`; the units are the `outreach` rows
and, when the caller passes them (`serving.holdout.assignment_history` of the CRM database),
the arms the batch drew. The page text is the template `report/incrementality.html`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from features.analytics import incrementality as inc
from features.analytics.common import TimeLike
from features.dataset import Dataset
from serving.web.components import Section, Table, table
from serving.web.format import fmt_money, fmt_num, fmt_pct

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


def _formatted(frame: pd.DataFrame, caption: str, collapsed: bool = False) -> Table:
    """A table of lifts: rates as percentages, MRR as money, per metric row."""
    shown = frame.assign(metric=frame["metric"].map(TITLES).fillna(frame["metric"]))
    for col in ("treated_mean", "holdout_mean", "lift", "ci_low", "ci_high"):
        shown[col] = [
            fmt_pct(v) if m == "converted" else fmt_money(v)
            for v, m in zip(frame[col], frame["metric"], strict=True)
        ]
    counts = {"treated_n": lambda v: fmt_num(v, 0), "holdout_n": lambda v: fmt_num(v, 0)}
    return table(shown, counts, caption=caption, collapsed=collapsed)


def incrementality_section(data: IncrementalityData | None) -> list[Section]:
    """The section (none when the report was built without it); its text is in
    `serving/web/templates/report/incrementality.html`."""
    if data is None:
        return []
    view: dict[str, object] = {"holdout_units": data.holdout_units}
    if data.holdout_units:
        sizes = data.sample_sizes.copy()
        if not sizes.empty:
            sizes["lift"] = [f"+{fmt_num(v * 100, 1)} points" for v in sizes["lift"]]
        view |= {
            "units": fmt_num(data.units, 0),
            "held_out": fmt_num(data.holdout_units, 0),
            "sources": ", ".join(f"{k} {v:,}" for k, v in data.sources.items()),
            "overall": _formatted(data.overall.drop(columns=["method"]), "All units"),
            "breakdowns": [
                _formatted(
                    frame[frame[by] != "all"].drop(columns=["method"]),
                    BREAKDOWN_TITLES[by],
                    collapsed=True,
                )
                for by, frame in data.breakdowns.items()
            ],
            "base_rate": fmt_pct(data.base_rate),
            "holdout_share": fmt_pct(data.holdout_share),
            "detectable_lift": fmt_pct(data.detectable_lift),
            "sample_sizes": table(sizes, caption="Units needed (holdout, treated, total)"),
        }
    return [
        Section(
            SECTION_ID,
            "Incrementality: outreach vs holdout",
            "report/incrementality.html",
            view,
        )
    ]
