"""End to end: a Segment export and a Stripe export merged into one dataset folder that the
loader accepts. `build_segment_stripe_dataset` is meant to be reused by pipeline tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.dataset import load_dataset
from features.ingest import ImportOptions, ImportSummary, IngestError, run_import
from tests.test_ingest_common import assert_balanced, make_world, write_jsonl
from tests.test_ingest_segment import render_segment
from tests.test_ingest_stripe import TIERS, _write_objects, render_stripe_history


def build_segment_stripe_dataset(
    out_dir: Path,
    *,
    seed: int = 13,
    n_accounts: int = 25,
    n_events: int = 3000,
    stripe_first: bool = False,
) -> tuple[Path, dict[str, ImportSummary]]:
    """Import a generated Segment export and a generated Stripe export of the same accounts
    (``acct_000`` ...) into ``out_dir``; return the folder and each import's summary.

    Product usage runs from January 2024 for about 200 days; each account has one Stripe
    subscription with seat expansions, upgrades, trials and some cancellations.
    """
    out_dir = Path(out_dir)
    exports = out_dir.parent / f"{out_dir.name}_exports"
    exports.mkdir(parents=True, exist_ok=True)
    world = make_world(seed=seed, n_accounts=n_accounts, n_events=n_events)
    segment_file = write_jsonl(exports / "segment.jsonl", render_segment(world))
    objects, _ = render_stripe_history(seed=seed, n_accounts=n_accounts)
    stripe_dir = _write_objects(exports / "stripe", objects)

    steps = [("segment", segment_file), ("stripe", stripe_dir)]
    if stripe_first:
        steps.reverse()
    summaries: dict[str, ImportSummary] = {}
    for i, (source, path) in enumerate(steps):
        summaries[source] = run_import(
            source, [path], out_dir, merge=i > 0, options=ImportOptions(tier_map=TIERS)
        )
    return out_dir, summaries


def test_segment_and_stripe_merge_into_a_dataset_the_loader_accepts(tmp_path):
    folder, summaries = build_segment_stripe_dataset(tmp_path / "ds")
    for summary in summaries.values():
        assert_balanced(summary)
    dataset = load_dataset(folder)
    # Only the defects planted in the Segment export were set aside, by the import; the loader
    # finds nothing wrong with what the import wrote.
    assert dataset.report.quarantine_counts() == {}
    assert sorted(p.name for p in folder.glob("*.parquet")) == [
        "accounts.parquet",
        "events.parquet",
        "plans.parquet",
        "subscriptions.parquet",
        "users.parquet",
    ]

    accounts = dataset.frame("accounts").set_index("account_id")
    assert len(accounts) == 25
    world = make_world(seed=13).accounts.set_index("account_id")
    assert accounts["industry"].to_dict() == world["industry"].to_dict()  # from Segment traits
    stripe_accounts = summaries["stripe"].tables["accounts"]
    assert stripe_accounts.replaced == 25 and stripe_accounts.total == 25
    assert len(dataset.frame("subscriptions")["account_id"].unique()) == 25
    assert len(dataset.frame("events")) == 3000


def test_the_order_of_the_imports_does_not_change_the_accounts(tmp_path):
    a, _ = build_segment_stripe_dataset(tmp_path / "a", n_events=200)
    b, _ = build_segment_stripe_dataset(tmp_path / "b", n_events=200, stripe_first=True)
    left = pd.read_parquet(a / "accounts.parquet")
    right = pd.read_parquet(b / "accounts.parquet")[left.columns]
    pd.testing.assert_frame_equal(left, right)


def test_a_second_import_without_merge_is_refused_and_changes_nothing(tmp_path):
    folder, _ = build_segment_stripe_dataset(tmp_path / "ds", n_events=100)
    before = {p.name: p.read_bytes() for p in folder.glob("*.parquet")}
    objects, _ = render_stripe_history(seed=99, n_accounts=2)
    with pytest.raises(IngestError, match="merge"):
        run_import("stripe", [_write_objects(tmp_path / "more", objects)], folder)
    assert {p.name: p.read_bytes() for p in folder.glob("*.parquet")} == before


def test_features_run_on_an_imported_segment_and_stripe_dataset(tmp_path):
    """No catalog, no limits, vendor event names: features still build, without invention."""
    from features.build import build_features

    folder, _ = build_segment_stripe_dataset(tmp_path / "ds")
    dataset = load_dataset(folder)
    as_of = (pd.Timestamp(dataset.report.tables["events"].time_max) - pd.Timedelta(days=30)).date()
    frame = build_features(dataset, as_of)
    assert len(frame) > 0
    assert frame["account_id"].is_unique
    assert (frame["events_90d"] > 0).any() and (frame["distinct_features_90d"] > 0).any()
    assert frame["mrr"].notna().all() and frame["plan_tier"].notna().all()
    # No event catalog or plan limits in these exports: their features are empty, not zero.
    assert frame["power_events_30d"].isna().all()
    assert frame["quota_util_max"].isna().all()
