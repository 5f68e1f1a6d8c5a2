"""Tests of the dataset simulator: determinism, contract validity, planted signals, dirty mode.

Signals are measured from the written tables with DuckDB, the way any consumer of the dataset
would see them, never from simulator internals.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features.contract import EVENT_SIGNALS
from features.dataset import load_dataset
from training.simulator import SimulationConfig, SimulationSummary, simulate

TABLES = (
    "accounts",
    "plans",
    "subscriptions",
    "users",
    "events",
    "event_catalog",
    "plan_limits",
    "outreach",
)
# Big enough for the planted signals to stand out of the noise; two chunks.
SIGNAL_CONFIG = SimulationConfig(accounts=1000, months=12, seed=11, chunk_accounts=500)
DIRTY_CONFIG = SimulationConfig(accounts=300, months=6, seed=5, chunk_accounts=150, dirty=True)
TINY_CONFIG = SimulationConfig(accounts=120, months=3, seed=3, chunk_accounts=50, dirty=True)
# Reasons dirty mode must produce, per table (the loader's and issue 15's defect classes).
DEFECT_REASONS = {
    "events": {
        "duplicate_event_id",
        "unknown_account",
        "unparseable_timestamp",
        "negative_quantity",
        "future_timestamp",
        "ambiguous_timezone",
        "non_finite_quantity",
    },
    "accounts": {
        "future_timestamp",
        "ambiguous_timezone",
        "unparseable_created_at",
        "non_finite_employees",
        "duplicate_account_id",
    },
    "subscriptions": {
        "future_timestamp",
        "ambiguous_timezone",
        "unparseable_effective_at",
        "non_finite_mrr",
        "non_finite_seats",
        "negative_mrr",
        "unknown_account",
    },
    "users": {
        "future_timestamp",
        "ambiguous_timezone",
        "unparseable_created_at",
        "duplicate_user_id",
        "unknown_account",
    },
    "outreach": {
        "future_timestamp",
        "ambiguous_timezone",
        "unparseable_sent_at",
        "invalid_channel",
        "unknown_account",
    },
    "plans": {"non_finite_base_mrr", "non_finite_seat_mrr"},
    "plan_limits": {"non_finite_monthly_limit", "negative_monthly_limit"},
    "event_catalog": {"invalid_signal"},
}


@pytest.fixture(scope="module")
def signal_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimulationSummary]:
    out = tmp_path_factory.mktemp("sim_signal")
    calls: list[tuple[int, int]] = []
    summary = simulate(SIGNAL_CONFIG, out, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(500, 1000), (1000, 1000)]
    return out, summary


@pytest.fixture(scope="module")
def con(signal_run: tuple[Path, SimulationSummary]) -> duckdb.DuckDBPyConnection:
    """The raw simulated tables, plus the contract's change kinds, in DuckDB."""
    out, _ = signal_run
    c = duckdb.connect()
    c.execute("SET TimeZone = 'UTC'")
    for table in TABLES:
        c.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{out / table}.parquet')")
    for truth in ("expansion_probability", "post_upsell_probability"):
        path = out / "_truth" / f"{truth}.parquet"
        c.execute(f"CREATE VIEW {truth} AS SELECT * FROM read_parquet('{path}')")
    # Change kinds exactly as DATA_CONTRACT "Derived facts" defines them.
    c.execute(
        """
        CREATE TABLE changes AS
        WITH s AS (
            SELECT s.*, p.tier,
                row_number() OVER w AS rn,
                lag(s.status) OVER w AS prev_status,
                lag(p.tier) OVER w AS prev_tier,
                lag(s.mrr) OVER w AS prev_mrr
            FROM subscriptions s JOIN plans p USING (plan_id)
            WINDOW w AS (PARTITION BY account_id ORDER BY effective_at)
        )
        SELECT *, CASE
            WHEN rn = 1 THEN 'new'
            WHEN status = 'canceled' THEN 'churn'
            WHEN prev_status = 'canceled' THEN 'reactivation'
            WHEN tier > prev_tier THEN 'upgrade'
            WHEN tier < prev_tier THEN 'downgrade'
            WHEN mrr > prev_mrr THEN 'expansion'
            WHEN mrr < prev_mrr THEN 'contraction'
            ELSE 'other' END AS kind
        FROM s
        """
    )
    return c


@pytest.fixture(scope="module")
def snapshots(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Accounts active at each month start with observable behaviour and the 60-day label."""
    return con.sql(
        """
        WITH as_ofs AS (
            SELECT DISTINCT as_of FROM expansion_probability
            WHERE as_of + INTERVAL 60 DAY <= (SELECT max(timestamp) FROM events)
        ),
        state AS (
            SELECT a.as_of, c.account_id,
                arg_max(c.status, c.effective_at) AS status,
                arg_max(c.plan_id, c.effective_at) AS plan_id
            FROM as_ofs a JOIN changes c ON c.effective_at < a.as_of
            GROUP BY ALL
        ),
        ev AS (
            SELECT e.*, k.feature, k.power, k.quota_metric, k.signal
            FROM events e LEFT JOIN event_catalog k USING (event)
        ),
        used AS (
            SELECT a.as_of, ev.account_id, ev.quota_metric AS metric, sum(ev.quantity) AS used
            FROM as_ofs a JOIN ev
              ON ev.timestamp >= a.as_of - INTERVAL 1 MONTH AND ev.timestamp < a.as_of
            WHERE ev.quota_metric IS NOT NULL
            GROUP BY ALL
        ),
        util AS (
            SELECT u.as_of, u.account_id, max(u.used / l.monthly_limit) AS util
            FROM used u JOIN state s USING (as_of, account_id)
            JOIN plan_limits l ON l.plan_id = s.plan_id AND l.metric = u.metric
            GROUP BY ALL
        ),
        per_feature AS (
            SELECT a.as_of, ev.account_id, ev.feature,
                ev.signal IS NULL AND ev.feature NOT IN ('billing', 'support', 'data_export')
                    AS product,
                count(*) AS n
            FROM as_ofs a JOIN ev
              ON ev.timestamp >= a.as_of - INTERVAL 30 DAY AND ev.timestamp < a.as_of
            GROUP BY ALL
        ),
        activity AS (
            SELECT as_of, account_id,
                count(*) FILTER (WHERE product) AS breadth,
                sum(n) AS volume, max(n) AS top_feature_volume
            FROM per_feature GROUP BY ALL
        ),
        label AS (
            SELECT DISTINCT a.as_of, c.account_id, true AS expanded
            FROM as_ofs a JOIN changes c
              ON c.effective_at >= a.as_of AND c.effective_at < a.as_of + INTERVAL 60 DAY
            WHERE c.kind IN ('upgrade', 'expansion')
        )
        SELECT s.as_of, s.account_id, coalesce(util.util, 0) AS util,
            coalesce(activity.breadth, 0) AS breadth, coalesce(activity.volume, 0) AS volume,
            coalesce(activity.top_feature_volume, 0) AS top_feature_volume,
            coalesce(label.expanded, false) AS expanded, t.p_expand_60d
        FROM state s
        LEFT JOIN util USING (as_of, account_id)
        LEFT JOIN activity USING (as_of, account_id)
        LEFT JOIN label USING (as_of, account_id)
        LEFT JOIN expansion_probability t USING (as_of, account_id)
        WHERE s.status = 'active'
        """
    ).df()


def _file_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "_quarantine" not in p.parts
    }


def _simulated(config: SimulationConfig, out: Path) -> Path:
    simulate(config, out)
    return out


# --- determinism and contract ---------------------------------------------------------------


def test_same_seed_writes_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    first = _file_bytes(_simulated(TINY_CONFIG, tmp_path / "a"))
    again = _file_bytes(_simulated(TINY_CONFIG, tmp_path / "b"))
    other = _file_bytes(_simulated(replace(TINY_CONFIG, seed=4), tmp_path / "c"))
    assert set(first) == {f"{t}.parquet" for t in TABLES} | {
        "_truth/expansion_probability.parquet",
        "_truth/post_upsell_probability.parquet",
        "_truth/outreach_effect.parquet",
        "_truth/dirty_manifest.json",
        "_truth/dirty_manifest.parquet",
    }
    assert first == again
    assert first["events.parquet"] != other["events.parquet"]
    assert first["accounts.parquet"] != other["accounts.parquet"]


def test_clean_dataset_loads_with_zero_quarantined_rows(
    signal_run: tuple[Path, SimulationSummary],
) -> None:
    out, summary = signal_run
    dataset = load_dataset(out, write_quarantine=False)
    try:
        assert dataset.report.quarantine_counts() == {}
        for table in TABLES:
            assert dataset.report.tables[table].rows_clean == summary.rows[table], table
        assert summary.defects == {}
        assert not (out / "_truth" / "dirty_manifest.json").exists()
        assert not (out / "_truth" / "dirty_manifest.parquet").exists()
        events = dataset.con.sql("SELECT count(*), count(DISTINCT event_id) FROM events")
        n, distinct = events.fetchall()[0]
        assert n == distinct == summary.rows["events"]
    finally:
        dataset.close()


def test_tables_follow_the_contract_shapes(con: duckdb.DuckDBPyConnection) -> None:
    plans = con.sql("SELECT tier, base_mrr, seat_mrr FROM plans ORDER BY tier").df()
    assert plans.tier.tolist() == [1, 2, 3, 4]
    assert plans.base_mrr.is_monotonic_increasing and plans.seat_mrr.is_monotonic_increasing
    assert con.sql("SELECT count(DISTINCT metric) FROM plan_limits").fetchall()[0][0] >= 2
    catalog = con.sql("SELECT * FROM event_catalog").df()
    assert 20 <= len(catalog) <= 40
    assert set(catalog.signal.dropna()) == set(EVENT_SIGNALS)
    assert set(catalog.min_tier) == {1, 2, 3, 4}
    assert catalog.power.sum() >= 3 and catalog.quota_metric.notna().sum() >= 2
    # The price list and the contract history agree: mrr = base + seat price x seats.
    mismatched = con.sql(
        """
        SELECT count(*) FROM subscriptions s JOIN plans p USING (plan_id)
        WHERE abs(s.mrr - CASE WHEN s.status = 'canceled' THEN 0
                               ELSE p.base_mrr + p.seat_mrr * s.seats END) > 0.01
        """
    ).fetchall()[0][0]
    assert mismatched == 0
    kinds = dict(con.sql("SELECT kind, count(*) FROM changes GROUP BY kind").fetchall())
    for kind in ("new", "churn", "reactivation", "upgrade", "downgrade", "expansion"):
        assert kinds.get(kind, 0) > 0, kind
    statuses = {r[0] for r in con.sql("SELECT DISTINCT status FROM subscriptions").fetchall()}
    assert statuses == {"active", "trialing", "canceled"}
    holdout_share = con.sql("SELECT avg(holdout::INT) FROM outreach").fetchall()[0][0]
    assert 0.04 < holdout_share < 0.18
    # Many accounts signed up before the window: they have tenure.
    before = con.sql(
        "SELECT avg((created_at < (SELECT min(as_of) FROM expansion_probability))::INT) "
        "FROM accounts"
    ).fetchall()[0][0]
    assert before > 0.6


def test_expansions_are_the_contract_labels(
    con: duckdb.DuckDBPyConnection, signal_run: tuple[Path, SimulationSummary]
) -> None:
    _, summary = signal_run
    kinds = dict(con.sql("SELECT kind, count(*) FROM changes GROUP BY kind").fetchall())
    assert kinds["upgrade"] == summary.upgrades
    assert kinds["expansion"] == summary.seat_expansions
    # Each simulated expansion is one labelled change at the same instant, of the same kind.
    unmatched = con.sql(
        """
        SELECT count(*) FROM post_upsell_probability t
        LEFT JOIN changes c ON c.account_id = t.account_id AND c.effective_at = t.expanded_at
        WHERE c.kind IS DISTINCT FROM t.kind
        """
    ).fetchall()[0][0]
    assert unmatched == 0
    assert con.sql("SELECT count(*) FROM post_upsell_probability").fetchall()[0][0] == (
        summary.expansions
    )


def test_truth_covers_live_accounts_at_each_month_start(
    con: duckdb.DuckDBPyConnection, snapshots: pd.DataFrame
) -> None:
    as_ofs = [r[0] for r in con.sql("SELECT DISTINCT as_of FROM expansion_probability").fetchall()]
    assert sorted(t.strftime("%Y-%m-%d") for t in as_ofs) == [
        f"2024-{m:02d}-01" for m in range(1, 13)
    ]
    # Truth rows exist exactly for accounts active or trialing at as_of.
    extra = con.sql(
        """
        WITH state AS (
            SELECT t.as_of, t.account_id, arg_max(c.status, c.effective_at) AS status
            FROM expansion_probability t JOIN changes c
              ON c.account_id = t.account_id AND c.effective_at < t.as_of
            GROUP BY ALL
        )
        SELECT count(*) FROM expansion_probability t LEFT JOIN state USING (as_of, account_id)
        WHERE state.status IS NULL OR state.status = 'canceled'
        """
    ).fetchall()[0][0]
    assert extra == 0
    assert snapshots.p_expand_60d.notna().all()
    assert snapshots.p_expand_60d.between(0, 1).all()
    # The true probability ranks the realized expansions well: the signals are learnable.
    assert roc_auc_score(snapshots.expanded, snapshots.p_expand_60d) > 0.78
    # A realistic base rate: a few percent of active accounts expand per month.
    assert 0.02 < snapshots.expanded.mean() < 0.12


# --- planted signals --------------------------------------------------------------------------


def test_quota_pressure_triples_the_expansion_rate(snapshots: pd.DataFrame) -> None:
    high = snapshots[snapshots.util >= 0.85]
    low = snapshots[snapshots.util < 0.5]
    assert len(high) >= 100
    assert high.expanded.mean() >= 3 * low.expanded.mean()


def test_breadth_beats_raw_volume(snapshots: pd.DataFrame) -> None:
    """Heavy use of one feature predicts less than light use of many.

    Quota pressure is held out: quota-metered events are volume too, and they do signal.
    """
    s = snapshots[snapshots.util < 0.6]
    broad, narrow = s.breadth >= 5, s.breadth <= 3
    heavy = s.top_feature_volume >= s.top_feature_volume.quantile(0.75)
    light = s.volume < s.volume.median()
    heavy_narrow, light_broad = s[heavy & narrow], s[light & broad]
    assert len(heavy_narrow) >= 200 and len(light_broad) >= 100
    assert s[broad].expanded.mean() >= 2 * heavy_narrow.expanded.mean()
    assert light_broad.expanded.mean() > heavy_narrow.expanded.mean()
    # Raw volume ranks expansions worse than breadth does.
    assert roc_auc_score(s.expanded, s.breadth) > roc_auc_score(s.expanded, s.volume)


def test_post_upsell_non_adopters_churn_more(con: duckdb.DuckDBPyConnection) -> None:
    """Adoption = the new tier's features used, or new seats filled, within 30 days."""
    rates = con.sql(
        """
        WITH expansions AS (
            SELECT account_id, effective_at AS t, kind, prev_tier, tier, prev_mrr
            FROM changes WHERE kind IN ('upgrade', 'expansion')
              AND effective_at + INTERVAL 90 DAY <= (SELECT max(timestamp) FROM events)
        ),
        gated AS (
            SELECT x.account_id, x.t, count(*) AS n FROM expansions x
            JOIN events e ON e.account_id = x.account_id
              AND e.timestamp > x.t AND e.timestamp < x.t + INTERVAL 30 DAY
            JOIN event_catalog k ON k.event = e.event
              AND k.min_tier > x.prev_tier AND k.min_tier <= x.tier
            GROUP BY ALL
        ),
        joined AS (
            SELECT x.account_id, x.t, count(*) AS n FROM expansions x
            JOIN users u ON u.account_id = x.account_id
              AND u.created_at > x.t AND u.created_at < x.t + INTERVAL 30 DAY
            GROUP BY ALL
        ),
        lost AS (
            SELECT DISTINCT x.account_id, x.t FROM expansions x
            JOIN changes c ON c.account_id = x.account_id
              AND c.effective_at > x.t AND c.effective_at < x.t + INTERVAL 90 DAY
            WHERE c.kind = 'churn'
               OR (c.kind IN ('downgrade', 'contraction') AND c.mrr < x.prev_mrr)
        )
        SELECT
            CASE WHEN x.kind = 'upgrade' THEN g.n IS NOT NULL ELSE j.n IS NOT NULL END
                AS adopted,
            count(*) AS n, avg((l.t IS NOT NULL)::INT) AS churn_rate
        FROM expansions x
        LEFT JOIN gated g USING (account_id, t)
        LEFT JOIN joined j USING (account_id, t)
        LEFT JOIN lost l USING (account_id, t)
        GROUP BY adopted
        """
    ).df()
    by = rates.set_index("adopted")
    assert by.n.min() >= 60
    assert by.churn_rate[False] >= 1.5 * by.churn_rate[True]
    truth = con.sql(
        "SELECT adopted, avg(p_churn_90d) AS p FROM post_upsell_probability GROUP BY adopted"
    ).df()
    truth = truth.set_index("adopted").p
    assert truth[False] >= 2.5 * truth[True]


def test_outreach_triggers_convert_better_than_manual(con: duckdb.DuckDBPyConnection) -> None:
    rates = con.sql(
        """
        SELECT o.trigger = 'manual' AS manual, o.holdout, count(*) AS n,
            avg((EXISTS (
                SELECT 1 FROM changes c WHERE c.account_id = o.account_id
                  AND c.kind IN ('upgrade', 'expansion')
                  AND c.effective_at >= o.sent_at
                  AND c.effective_at < o.sent_at + INTERVAL 60 DAY))::INT) AS converted
        FROM outreach o
        WHERE o.sent_at + INTERVAL 60 DAY <= (SELECT max(timestamp) FROM events)
        GROUP BY ALL
        """
    ).df()
    contacted = rates[~rates.holdout].set_index("manual").converted
    assert contacted[False] > contacted[True] > 0.1
    triggers = {r[0] for r in con.sql("SELECT DISTINCT trigger FROM outreach").fetchall()}
    assert {"quota_85", "manual"} <= triggers


# --- dirty mode ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dirty_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimulationSummary]:
    out = tmp_path_factory.mktemp("sim_dirty")
    return out, simulate(DIRTY_CONFIG, out)


def test_dirty_quarantine_matches_the_manifest(
    dirty_run: tuple[Path, SimulationSummary],
) -> None:
    """Every table holds defects, and the quarantine holds exactly the manifest's rows, each
    for the reason the manifest expects (row by row, not only in number)."""
    out, summary = dirty_run
    manifest = json.loads((out / "_truth" / "dirty_manifest.json").read_text())
    assert manifest.pop("mixed_timezone_rows") == summary.mixed_timezone_rows > 0
    assert manifest == summary.defects
    assert {t: set(reasons) for t, reasons in manifest.items()} == DEFECT_REASONS
    rows = pd.read_parquet(out / "_truth" / "dirty_manifest.parquet")
    dataset = load_dataset(out)
    try:
        expected = {(t, r): n for t, reasons in manifest.items() for r, n in reasons.items()}
        assert dataset.report.quarantine_counts() == expected
        for table in TABLES:
            quarantined = pd.read_parquet(out / "_quarantine" / f"{table}.parquet")
            want = rows[rows["table"] == table].sort_values("source_row")
            got = quarantined.sort_values("source_row")
            assert got["source_row"].tolist() == want["source_row"].tolist(), table
            assert got["reason"].tolist() == want["reason"].tolist(), table
            report = dataset.report.tables[table]
            assert report.rows_read == report.rows_clean + len(want) == summary.rows[table]
    finally:
        dataset.close()


def test_mixed_time_zones_are_valid_and_converted_to_utc(
    dirty_run: tuple[Path, SimulationSummary],
) -> None:
    out, summary = dirty_run
    raw = pd.read_parquet(out / "events.parquet", columns=["event_id", "timestamp"])
    offset = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
    mixed = raw[raw.timestamp.str.match(offset)]
    assert len(mixed) == summary.mixed_timezone_rows
    assert mixed.event_id.is_unique
    expected = pd.to_datetime(mixed.timestamp, utc=True).dt.tz_localize(None)
    dataset = load_dataset(out, write_quarantine=False)
    try:
        clean = dataset.con.sql(
            "SELECT event_id, timestamp FROM events WHERE list_contains($ids, event_id)",
            params={"ids": mixed.event_id.tolist()},
        ).df()
    finally:
        dataset.close()
    got = clean.set_index("event_id").timestamp.astype("datetime64[us]")
    want = pd.Series(expected.to_numpy(), index=mixed.event_id).astype("datetime64[us]")
    assert len(got) == len(mixed)
    assert (got.sort_index() == want.sort_index()).all()


def test_dirty_dataset_is_its_clean_twin_plus_defects(
    tmp_path: Path, dirty_run: tuple[Path, SimulationSummary]
) -> None:
    """Apart from events (spoiled in place too), the clean rows of every table are exactly
    the clean twin's: the defects are appended copies, and quarantine takes just them."""
    dirty_out, dirty_summary = dirty_run
    clean_out = tmp_path / "clean"
    clean_summary = simulate(replace(DIRTY_CONFIG, dirty=False), clean_out)
    dirty_ds = load_dataset(dirty_out, write_quarantine=False)
    clean_ds = load_dataset(clean_out, write_quarantine=False)
    try:
        for table in TABLES:
            if table != "events":
                pd.testing.assert_frame_equal(
                    dirty_ds.frame(table), clean_ds.frame(table), obj=table
                )
    finally:
        dirty_ds.close()
        clean_ds.close()
    appended = sum(dirty_summary.defects["events"].values()) - sum(
        dirty_summary.defects["events"][r]
        for r in ("unknown_account", "unparseable_timestamp", "negative_quantity")
    )
    assert dirty_summary.rows["events"] == clean_summary.rows["events"] + appended


def test_invalid_configs_are_refused() -> None:
    with pytest.raises(ValueError):
        SimulationConfig(accounts=0)
    with pytest.raises(ValueError):
        SimulationConfig(seed=-1)
    with pytest.raises(ValueError):
        SimulationConfig(start=SimulationConfig().start.replace(day=2))
