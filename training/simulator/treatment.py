"""What an upsell touch does to an account's expansion hazard: named, configurable effect rules.

A touch (outreach not held out) multiplies the account's daily expansion hazard by a factor
for `OUTREACH_EFFECT_DAYS`. The factor depends on the account's observable state *when it is
touched*, through an ordered list of rules: the first rule whose condition holds gives the
factor, else the set's default. Several rule sets exist so that the experiment analysis and an
uplift model can be tested on effect structures they were not written for:

- `constant`: the original simulator: a triggered touch x1.6, a manual one x1.3, whoever the
  account is (the default: datasets written before effect rules existed stay byte-identical);
- `quota_pressure`: helps accounts under quota pressure (x3), does nothing for accounts that
  would upgrade anyway (already shopping: 3+ pricing-page views), little for the rest (x1.1);
- `small_accounts`: helps small (SMB) accounts only (x2.5);
- `mixed`: helps broad adopters that are growing their team (x2.5), annoys accounts with open
  support trouble (x0.6: a touch can hurt), nothing otherwise;
- `none`: outreach has no effect at all.

The factor of every outreach row (held out or not: what the touch would have done) and the
true 60-day expansion probability with and without a touch at each month start are written to
`_truth/` (see `training.simulator.output`); nothing in the written tables names the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

State = dict[str, np.ndarray]
"""Arrays over accounts: util, breadth, power14, pricing30, paywall30, team, support30,
segment (0 smb, 1 mid-market, 2 enterprise), manual (the touch is a CSM's own, not a trigger)."""


@dataclass(frozen=True)
class EffectRule:
    """If `when(state)` holds for an account (and no earlier rule did), the touch multiplies
    its expansion hazard by `multiplier`."""

    name: str
    when: Callable[[State], np.ndarray]
    multiplier: float


@dataclass(frozen=True)
class EffectRules:
    """An ordered rule set: first matching rule wins, else `default`."""

    name: str
    rules: tuple[EffectRule, ...]
    default: float

    def multiplier(self, state: State) -> np.ndarray:
        """The hazard factor a touch gives each account of `state` (1.0 = no effect)."""
        n = len(state["util"])
        out = np.full(n, self.default, dtype="float64")
        decided = np.zeros(n, dtype=bool)
        for rule in self.rules:
            hit = np.asarray(rule.when(state), dtype=bool) & ~decided
            out[hit] = rule.multiplier
            decided |= hit
        return out


EFFECT_RULE_SETS: dict[str, EffectRules] = {
    "constant": EffectRules(
        "constant",
        (EffectRule("manual touch", lambda s: s["manual"], 1.3),),
        default=1.6,
    ),
    "quota_pressure": EffectRules(
        "quota_pressure",
        (
            EffectRule("already shopping", lambda s: s["pricing30"] >= 3, 1.0),
            EffectRule("quota pressure", lambda s: s["util"] >= 0.85, 3.0),
        ),
        default=1.1,
    ),
    "small_accounts": EffectRules(
        "small_accounts",
        (EffectRule("small account", lambda s: s["segment"] == 0, 2.5),),
        default=1.0,
    ),
    "mixed": EffectRules(
        "mixed",
        (
            EffectRule("support trouble", lambda s: s["support30"] >= 2, 0.6),
            EffectRule("broad and growing", lambda s: (s["breadth"] >= 4) & s["team"], 2.5),
        ),
        default=1.0,
    ),
    "none": EffectRules("none", (), default=1.0),
}


def effect_rules(name: str) -> EffectRules:
    """The rule set called `name`; a clear error listing the known ones otherwise."""
    try:
        return EFFECT_RULE_SETS[name]
    except KeyError:
        known = ", ".join(sorted(EFFECT_RULE_SETS))
        raise ValueError(f"unknown treatment effect {name!r}: use one of {known}") from None


def p_expand(h: np.ndarray, days: np.ndarray) -> np.ndarray:
    """P(at least one expansion in `days` days) at a constant daily hazard `h`."""
    return 1 - np.exp(-h * days)
