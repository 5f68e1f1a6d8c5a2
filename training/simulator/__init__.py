"""Synthetic B2B SaaS history with planted expansion signals and known ground truth.

`simulate(SimulationConfig(...), out_dir)` writes a dataset folder that follows the data
contract (DATA_CONTRACT.md, `features/contract.py`) plus `_truth/` with the simulator's true
probabilities, so every job can be tested end to end and every model checked against what
actually drove the data. The dynamics live in `dynamics.py`, the product in `catalog.py`, the
file layout and dirty-mode defects in `output.py`.

Accounts are simulated in chunks of `chunk_accounts` (memory is bounded by the chunk), each
with its own random stream derived from `(seed, chunk index)`: the same config always writes
byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from training.simulator.dynamics import ChunkSimulation, Timeline
from training.simulator.output import (
    TRUTH_DIR,
    DatasetWriter,
    defect_counts,
    write_static_tables,
)
from training.simulator.pricing import PricingShape
from training.simulator.treatment import effect_rules

__all__ = ["SimulationConfig", "SimulationSummary", "simulate"]


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. The seed and every other field together fix the output bytes."""

    accounts: int = 2000
    months: int = 18
    seed: int = 42
    start: date = date(2024, 1, 1)
    # What an upsell touch does, by account state: a rule set of `treatment.EFFECT_RULE_SETS`.
    treatment_effect: str = "constant"
    dirty: bool = False
    # Accounts simulated and written per chunk: bounds memory. At 2000 the per-day (accounts x
    # event types) arrays stay in CPU cache; 5000 measured ~1.7x slower per event.
    chunk_accounts: int = 2000
    # Shapes of other datasets (see `pricing.py`): flat prices and no seat price; each tier
    # sold monthly and annually (this share of accounts billed annually); discounts that end
    # (this share of accounts); tier upgrades only at a renewal; no plan_limits; no outreach.
    flat_pricing: bool = False
    annual_share: float = 0.0
    discount_share: float = 0.0
    upgrades_at_renewal: bool = False
    plan_limits: bool = True
    outreach: bool = True

    @property
    def pricing(self) -> PricingShape:
        return PricingShape(self.flat_pricing, self.annual_share, self.discount_share)

    def __post_init__(self) -> None:
        if self.accounts < 1 or self.months < 1 or self.chunk_accounts < 1:
            raise ValueError("accounts, months and chunk_accounts must be >= 1")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.start.day != 1:
            raise ValueError("start must be the first day of a month")
        effect_rules(self.treatment_effect)  # an unknown name fails here, naming the known ones
        self.pricing  # noqa: B018  (validates the shares)


@dataclass(frozen=True)
class SimulationSummary:
    """Row counts per written table, expansions, and the defects injected in dirty mode."""

    out_dir: Path
    rows: dict[str, int]
    expansions: int
    upgrades: int
    seat_expansions: int
    # table -> expected quarantine reason -> rows injected (empty for a clean dataset)
    defects: dict[str, dict[str, int]]
    mixed_timezone_rows: int


def simulate(
    config: SimulationConfig,
    out_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> SimulationSummary:
    """Write a simulated dataset folder; `progress(done, total)` is called after each chunk."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for suffix in ("json", "parquet"):  # a clean rerun into a dirty folder must not keep it
        (out_dir / TRUTH_DIR / f"dirty_manifest.{suffix}").unlink(missing_ok=True)
    timeline = Timeline.build(config.start, config.months)
    effects = effect_rules(config.treatment_effect)
    # Static tables' defects draw from their own stream, apart from the chunks' streams.
    static_rng = np.random.default_rng([config.seed, 1 << 20]) if config.dirty else None
    static_rows, static_defects = write_static_tables(
        out_dir, static_rng, config.pricing, plan_limits=config.plan_limits
    )
    with DatasetWriter(
        out_dir,
        config.accounts,
        timeline.start_us,
        config.dirty,
        pricing=config.pricing,
        outreach=config.outreach,
    ) as writer:
        for chunk, first in enumerate(range(0, config.accounts, config.chunk_accounts)):
            n = min(config.chunk_accounts, config.accounts - first)
            # spawn(3)'s first two children equal spawn(2)'s: the default shape is unchanged.
            seeds = np.random.SeedSequence([config.seed, chunk]).spawn(3)
            result = ChunkSimulation(
                n,
                timeline,
                np.random.default_rng(seeds[0]),
                effects,
                outreach=config.outreach,
                upgrades_at_renewal=config.upgrades_at_renewal,
            ).run()
            # A separate stream for defects: a dirty dataset is its clean twin plus defects;
            # and one for the pricing draws (billing period, discounts).
            writer.write_chunk(
                result, np.random.default_rng(seeds[1]), np.random.default_rng(seeds[2])
            )
            if progress is not None:
                progress(first + n, config.accounts)
        if config.dirty:
            writer.write_manifest(static_defects)
    totals = writer.totals
    rows = {**totals.rows, **static_rows}
    return SimulationSummary(
        out_dir=out_dir,
        rows=dict(sorted(rows.items())),
        expansions=totals.upgrades + totals.seat_expansions,
        upgrades=totals.upgrades,
        seat_expansions=totals.seat_expansions,
        defects=defect_counts(static_defects + totals.defects),
        mixed_timezone_rows=totals.mixed_timezone_rows,
    )
