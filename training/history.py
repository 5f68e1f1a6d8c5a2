"""How much history a training run can afford, and what it shortens when the data is short.

The standard plan (`TrainingConfig` as written) needs a warm-up before the first observation
date and a full label horizon between training, validation and test dates. Real customers often
have 6-12 months of events, which that plan cannot split. With `short_history = "auto"` the
planner relaxes, one step at a time and only as far as needed:

1. validation on held-out accounts at the training dates instead of later dates behind a
   label-horizon gap (early stopping and calibration lose no time; the test period keeps its
   full gap, so the test metrics stay honest);
2. weekly instead of monthly observation dates;
3. a shorter warm-up (60, then `min_warmup_days`): features that look back further than the
   warm-up see fewer days at the earliest dates.

Every relaxation is stated in plain words (`HistoryPlan.statements`): the run prints them and
logs them to MLflow (params `history_*`, the `notes` tag). If even the shortest plan leaves no
training dates, `NotEnoughData` says in one line how many days the data spans and needs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from features.dataset import Dataset
from training.config import TrainingConfig
from training.labels import NotEnoughData, data_end, data_start, observation_dates


@dataclass(frozen=True)
class HistoryPlan:
    """Observation dates and split of one propensity training run."""

    cadence: str
    warmup_days: int
    train: list[date]
    validation: list[date]  # empty when validation is on held-out accounts
    test: list[date]
    validation_on_accounts: bool = False
    statements: list[str] = field(default_factory=list)

    @property
    def shortened(self) -> bool:
        return bool(self.statements)

    def params(self) -> dict[str, str | int | float]:
        """What the run logs to MLflow so a shortened run is visible in `compare`."""
        return {
            "history_shortened": str(self.shortened).lower(),
            "history_cadence": self.cadence,
            "history_warmup_days": self.warmup_days,
            "history_validation": "held_out_accounts" if self.validation_on_accounts else "dates",
            "history_train_dates": len(self.train),
        }


def split_dates(
    dates: list[date], config: TrainingConfig, *, validation_on_accounts: bool = False
) -> tuple[list[date], list[date], list[date]]:
    """Train, validation and test dates, each part a label horizon apart.

    With `validation_on_accounts` the validation dates are the training dates themselves (the
    caller holds out accounts), so only the test period costs a gap.
    """
    dates = sorted(dates)
    gap = pd.Timedelta(days=config.horizon_days)
    test = dates[-config.split.test_dates :]
    before_test = [d for d in dates if test and pd.Timestamp(d) + gap <= pd.Timestamp(test[0])]
    if validation_on_accounts:
        return before_test, [], test
    validation = before_test[-config.split.validation_dates :]
    train = [
        d
        for d in before_test
        if validation and pd.Timestamp(d) + gap <= pd.Timestamp(validation[0])
    ]
    return train, validation, test


def plan_history(dataset: Dataset, config: TrainingConfig) -> HistoryPlan:
    """The least-shortened plan that leaves enough training dates (see the module doc)."""
    standard = (config.cadence, config.warmup_days, False)
    steps = [standard]
    if config.short_history == "auto":
        warmups = [config.warmup_days] + [
            w for w in (60, config.min_warmup_days) if w < config.warmup_days
        ]
        cadences = [config.cadence] + (["weekly"] if config.cadence == "monthly" else [])
        steps += [(c, w, True) for w in dict.fromkeys(warmups) for c in cadences]
    for cadence, warmup, on_accounts in steps:
        dates = observation_dates(
            dataset, cadence, warmup_days=warmup, horizon_days=config.horizon_days
        )
        train, validation, test = split_dates(dates, config, validation_on_accounts=on_accounts)
        if len(train) >= (config.min_train_dates if on_accounts else 1):
            statements = _statements(config, cadence, warmup, on_accounts)
            return HistoryPlan(cadence, warmup, train, validation, test, on_accounts, statements)
    raise NotEnoughData(_refusal(dataset, config))


def _statements(config: TrainingConfig, cadence: str, warmup: int, on_accounts: bool) -> list[str]:
    out = []
    if on_accounts:
        out.append(
            f"short history: validation on {config.validation_account_share:.0%} of accounts "
            f"held out at the training dates, not on later dates behind a "
            f"{config.horizon_days}-day gap (the test period keeps its gap)"
        )
    if cadence != config.cadence:
        out.append(f"short history: {cadence} observation dates instead of {config.cadence}")
    if warmup != config.warmup_days:
        out.append(
            f"short history: {warmup}-day warm-up instead of {config.warmup_days}: features "
            f"looking back further than {warmup} days see fewer days at the earliest dates"
        )
    return out


def _refusal(dataset: Dataset, config: TrainingConfig) -> str:
    start, end = data_start(dataset), data_end(dataset)
    span = (end - start).days
    if config.short_history == "auto":
        warmup = min(config.warmup_days, config.min_warmup_days)
        needed_dates, step = config.min_train_dates, 7
        how = f"shortened ({warmup}-day warm-up, weekly dates, validation on held-out accounts)"
    else:
        warmup, needed_dates = config.warmup_days, 1
        step = 7 if config.cadence == "weekly" else 30
        how = 'as configured (short_history = "refuse")'
    need = warmup + (needed_dates - 1) * step + 2 * config.horizon_days
    return (
        f"not enough history to train: events span {span} days ({start.date()} to "
        f"{end.date()}); even {how} a split needs about {need} days ({warmup} days of warm-up, "
        f"{needed_dates} training date(s), a {config.horizon_days}-day gap before the test "
        f"dates and {config.horizon_days} days of labels after them). Supply a longer history"
    )


def hold_out_accounts(account_ids: pd.Series, share: float, seed: int) -> np.ndarray:
    """A stable, seeded choice of accounts for validation: True = held out.

    Hashing the id (not drawing per row) keeps every date of an account on the same side, so
    validation never scores an account the trees saw at another date.
    """
    salt = str(seed).encode()
    unique = pd.unique(account_ids.astype(str))
    held = {
        a
        for a in unique
        if int.from_bytes(hashlib.blake2b(salt + a.encode(), digest_size=8).digest(), "big")
        < share * 2**64
    }
    return account_ids.astype(str).isin(held).to_numpy()
