"""What a scoring run covers: its as-of date (which one, why, and whether the data reaches it)
and its accounts (every account of `accounts` is either scored or listed with why not).

Every command that takes `--as-of` (`score`, `features`, `snapshot`) and the batch core go
through `resolve_as_of`, so the default and the range check are the same everywhere:

- the default is the day after the latest *clean* event (`data_range`: the validated events
  only, so rows the loader quarantines never move it);
- a date before the first clean event, or more than `AS_OF_TOLERANCE` after the last one, is
  refused (`AsOfOutOfRange`) with one line naming the data's range: every feature window would
  be empty or only partly filled, and the scores would look valid while meaning nothing. Pass
  `allow_out_of_range=True` (`--allow-out-of-range-as-of`) to score such a date anyway.

`unscored_accounts` says, from the data, why an account of `accounts` has no row in a
snapshot: its account row or all its subscription rows were quarantined, it was created after
the as-of date, or its first subscription row is after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pandas as pd

from features.build import to_as_of
from features.dataset import Dataset

# A week: an export scored on any day of the following week still counts as covered; a month
# later, the 30-day windows would be mostly empty.
AS_OF_TOLERANCE = timedelta(days=7)
ALLOW_FLAG = "--allow-out-of-range-as-of"


class AsOfOutOfRange(ValueError):
    """An as-of date the dataset does not cover (or a dataset with no clean event at all)."""


@dataclass(frozen=True)
class DataRange:
    """First and last clean event of a dataset, and the as-of dates they cover."""

    first_event: datetime
    last_event: datetime

    @property
    def earliest_as_of(self) -> date:
        """The first date with any event strictly before it (the window rule: `t < as_of`)."""
        return pd.Timestamp(self.first_event).date() + timedelta(days=1)

    @property
    def default_as_of(self) -> date:
        """The day after the last clean event: 'now' for a dataset exported today."""
        return pd.Timestamp(self.last_event).date() + timedelta(days=1)

    @property
    def latest_as_of(self) -> date:
        return self.default_as_of + AS_OF_TOLERANCE

    def covers(self, as_of: date) -> bool:
        return self.earliest_as_of <= as_of <= self.latest_as_of

    def describe(self) -> str:
        return f"clean events run from {self.first_event} to {self.last_event}"


@dataclass(frozen=True)
class AsOf:
    """The as-of date of a run and why it is that date (for the run summary)."""

    date: date
    reason: str


def data_range(dataset: Dataset) -> DataRange | None:
    """The clean events' time range (None without a clean event).

    The one place that says which rows date a dataset: the validation report's span of the
    events that passed every rule (quarantined rows, future-dated ones included, are not in it)."""
    span = dataset.report.clean_time_range(("events",))
    return None if span is None else DataRange(*span)


def resolve_as_of(
    dataset: Dataset,
    as_of: date | datetime | str | None = None,
    *,
    allow_out_of_range: bool = False,
) -> AsOf:
    """The as-of date to score `dataset` at, and why; refuses dates the data does not cover.

    Raises `AsOfOutOfRange` (a `ValueError`, one line) for a date outside `data_range` unless
    `allow_out_of_range`, and for a missing `as_of` when there is no clean event to default to.
    """
    span = data_range(dataset)
    where = dataset.uri or str(dataset.path)
    if as_of is None:
        if span is None:
            raise AsOfOutOfRange(
                f"{where}: the events table has no clean rows, so there is no default as-of "
                "date (run `expansion validate` for the reasons)"
            )
        return AsOf(span.default_as_of, f"day after the latest clean event {span.last_event}")
    try:
        day = to_as_of(as_of)
    except ValueError as exc:
        raise AsOfOutOfRange(f"as-of {as_of!r} is not a date (YYYY-MM-DD)") from exc
    if span is not None and span.covers(day):
        return AsOf(day, "--as-of given")
    if allow_out_of_range:
        outside = "no clean events" if span is None else span.describe()
        return AsOf(day, f"--as-of given, outside the data ({outside}; allowed by {ALLOW_FLAG})")
    if span is None:
        raise AsOfOutOfRange(
            f"as-of {day} cannot be checked: {where} has no clean events "
            f"(pass {ALLOW_FLAG} to score it anyway)"
        )
    raise AsOfOutOfRange(
        f"as-of {day} is outside the data ({span.describe()}: as-of {span.earliest_as_of} to "
        f"{span.latest_as_of}); pass {ALLOW_FLAG} to score it anyway"
    )


def unscored_accounts(dataset: Dataset, as_of: date, scored: pd.Index) -> pd.DataFrame:
    """Accounts of `accounts` (its file, clean or quarantined rows) that are not in `scored`,
    with why: one row each, columns `account_id` and `reason`, sorted by account."""
    engine = dataset.engine
    cut = pd.Timestamp(as_of).to_pydatetime()
    known = set(scored.astype(str))
    accounts = engine.df("SELECT account_id, created_at FROM accounts")
    quarantined_accounts = _quarantined(dataset, "accounts")
    subs = engine.df(
        """
        SELECT account_id, COUNT(*) AS n, MIN(effective_at) AS first_at,
            MAX(CASE WHEN effective_at < ? THEN effective_at END) AS last_before
        FROM subscriptions GROUP BY account_id
        """,
        [cut],
    ).set_index("account_id")
    status = engine.df(
        """
        SELECT s.account_id, s.status FROM subscriptions s
        JOIN (SELECT account_id, MAX(effective_at) AS at FROM subscriptions
              WHERE effective_at < ? GROUP BY account_id) l
            ON l.account_id = s.account_id AND l.at = s.effective_at
        """,
        [cut],
    ).set_index("account_id")["status"]
    quarantined_subs = _quarantined(dataset, "subscriptions")
    # Without the loader's annotated rows we cannot tell "none" from "all quarantined".
    none = "no subscription rows" if quarantined_subs is not None else "no clean subscription rows"
    quarantined_subs = quarantined_subs or {}

    rows = []
    for account_id, created_at in zip(accounts["account_id"], accounts["created_at"], strict=True):
        if account_id in known:
            continue
        if pd.Timestamp(created_at) >= pd.Timestamp(cut):
            reason = f"created after as-of ({created_at})"
        elif account_id not in subs.index:
            bad = quarantined_subs.get(account_id)
            if bad:
                n = sum(bad.values())
                reason = f"no clean subscription rows: all {n} quarantined ({_reasons(bad)})"
            else:
                reason = none
        elif pd.isna(subs.at[account_id, "last_before"]):
            reason = f"first subscription row after as-of ({subs.at[account_id, 'first_at']})"
        else:
            reason = f"subscription status {status.get(account_id)!r} at as-of"
        rows.append((account_id, reason))
    clean = set(accounts["account_id"])
    for account_id, bad in (quarantined_accounts or {}).items():
        if account_id not in clean and account_id not in known:
            rows.append((account_id, f"account row quarantined ({_reasons(bad)})"))
    out = pd.DataFrame(rows, columns=["account_id", "reason"], dtype=object)
    return out.sort_values("account_id", ignore_index=True)


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))


def _quarantined(dataset: Dataset, table: str) -> dict[str, dict[str, int]] | None:
    """Quarantined rows of `table` per account id and reason (None if unknown).

    Read from the loader's `annotated_<table>` view (every row of the file with its `reason`,
    ids typed as `t_account_id`), which is there whenever the table was loaded from a file."""
    view = f"annotated_{table}"
    if not dataset.engine.table_exists(view):
        return None
    rows = dataset.engine.df(
        f"SELECT t_account_id AS account_id, reason, COUNT(*) AS n FROM {view} "
        "WHERE reason IS NOT NULL AND t_account_id IS NOT NULL GROUP BY t_account_id, reason"
    )
    out: dict[str, dict[str, int]] = {}
    for account_id, reason, n in rows.itertuples(index=False):
        out.setdefault(str(account_id), {})[str(reason)] = int(n)
    return out
