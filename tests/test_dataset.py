"""The dataset loader: every contract rule, what is accepted, quarantined or fatal."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest

from features.dataset import ContractError, load_dataset


def test_valid_dataset_loads_with_nothing_quarantined(make_dataset):
    ds = load_dataset(make_dataset())
    assert ds.report.total_quarantined == 0
    assert len(ds.frame("accounts")) == 2
    assert not (ds.path / "_quarantine").exists()
    events = ds.frame("events")
    assert str(events["timestamp"].dtype) == "datetime64[us]"
    assert events["account_id"].map(type).eq(str).all()
    assert ds.report.tables["events"].time_min == datetime(2024, 1, 3, 10)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_both_file_formats_load(make_dataset, fmt):
    ds = load_dataset(make_dataset(fmt=fmt))
    assert ds.report.tables["subscriptions"].rows_clean == 2
    assert ds.report.tables["subscriptions"].file.endswith(fmt)


def test_missing_required_table_is_fatal_and_named(make_dataset):
    path = make_dataset(replace={"users": None})
    with pytest.raises(ContractError, match=r"users\.parquet.*required table 'users'"):
        load_dataset(path)


def test_missing_optional_table_is_empty_not_fatal(make_dataset):
    ds = load_dataset(make_dataset())
    assert not ds.has("event_catalog")
    assert ds.frame("plan_limits").empty
    assert list(ds.frame("outreach").columns) == [
        "account_id",
        "sent_at",
        "channel",
        "trigger",
        "holdout",
    ]


def test_missing_required_column_is_fatal_and_names_file_and_column(make_dataset):
    rows = [
        {k: v for k, v in r.items() if k != "mrr"}
        for r in [
            {
                "account_id": "a1",
                "effective_at": "2024-01-01",
                "plan_id": "starter",
                "seats": 1,
                "mrr": 60,
                "status": "active",
            }
        ]
    ]
    path = make_dataset(replace={"subscriptions": rows})
    with pytest.raises(ContractError) as err:
        load_dataset(path)
    assert err.value.column == "mrr"
    assert err.value.file.endswith("subscriptions.csv")
    assert "column 'mrr'" in str(err.value)


def test_unreadable_file_is_fatal_and_names_file_and_row(make_dataset):
    path = make_dataset()
    (path / "events.csv").write_text(
        "account_id,timestamp,event\na1,2024-01-03,login\na1,2024-01-03,login,extra,fields\n"
    )
    with pytest.raises(ContractError) as err:
        load_dataset(path)
    assert err.value.file.endswith("events.csv")
    assert "line" in str(err.value).lower() or "row" in str(err.value).lower()


def test_two_files_for_one_table_is_fatal(make_dataset):
    path = make_dataset()
    pd.DataFrame([{"plan_id": "x", "tier": 1}]).to_parquet(path / "plans.parquet")
    with pytest.raises(ContractError, match="keep one"):
        load_dataset(path)


EVENT_CASES = [
    (
        {"account_id": "nope", "timestamp": "2024-01-03", "event": "x", "event_id": "n1"},
        "unknown_account",
    ),
    (
        {"account_id": "a1", "timestamp": "not-a-date", "event": "x", "event_id": "n2"},
        "unparseable_timestamp",
    ),
    (
        {"account_id": "a1", "timestamp": "2024-13-45T99:00", "event": "x", "event_id": "n3"},
        "unparseable_timestamp",
    ),
    ({"account_id": "a1", "timestamp": None, "event": "x", "event_id": "n4"}, "missing_timestamp"),
    (
        {"account_id": "a1", "timestamp": "2024-01-03", "event": None, "event_id": "n5"},
        "missing_event",
    ),
    (
        {
            "account_id": "a1",
            "timestamp": "2024-01-03",
            "event": "x",
            "event_id": "n6",
            "quantity": -2,
        },
        "negative_quantity",
    ),
    (
        {
            "account_id": "a1",
            "timestamp": "2024-01-03",
            "event": "x",
            "event_id": "n7",
            "quantity": "lots",
        },
        "unparseable_quantity",
    ),
    (
        {"account_id": "a1", "timestamp": "2024-01-03", "event": "x", "event_id": "e1"},
        "duplicate_event_id",
    ),
    (
        {"account_id": None, "timestamp": "2024-01-03", "event": "x", "event_id": "n8"},
        "missing_account_id",
    ),
]


@pytest.mark.parametrize(("row", "reason"), EVENT_CASES, ids=[r for _, r in EVENT_CASES])
def test_bad_event_rows_are_quarantined_with_reason(make_dataset, row, reason):
    ds = load_dataset(make_dataset(extra={"events": [row]}))
    assert ds.report.quarantine_counts() == {("events", reason): 1}
    q = pd.read_parquet(ds.path / "_quarantine" / "events.parquet")
    assert q["reason"].tolist() == [reason]
    assert q["source_row"].tolist() == [3]  # third data row in the file
    assert len(ds.frame("events")) == 2  # the good rows are untouched


def test_duplicate_keeps_first_occurrence(make_dataset):
    dup = {"account_id": "a2", "timestamp": "2024-02-01", "event": "late", "event_id": "e1"}
    ds = load_dataset(make_dataset(extra={"events": [dup]}))
    kept = ds.frame("events").set_index("event_id")
    assert kept.loc["e1", "event"] == "login"


def test_duplicate_of_a_quarantined_row_is_kept(make_dataset):
    """Only valid rows count as first occurrences: a bad row does not shadow a good one."""
    bad = {"account_id": "a1", "timestamp": "not a time", "event": "x", "event_id": "d1"}
    good = {"account_id": "a1", "timestamp": "2024-02-01", "event": "kept", "event_id": "d1"}
    ds = load_dataset(make_dataset(extra={"events": [bad, good]}))
    assert ds.frame("events").query("event_id == 'd1'")["event"].tolist() == ["kept"]
    assert ds.report.tables["events"].quarantined == {"unparseable_timestamp": 1}


def test_events_without_an_event_id_are_not_duplicates(make_dataset):
    rows = [
        {"account_id": "a1", "timestamp": "2024-02-01", "event": "no_id", "event_id": ""},
        {"account_id": "a1", "timestamp": "2024-02-02", "event": "no_id", "event_id": ""},
    ]
    ds = load_dataset(make_dataset(extra={"events": rows}))
    assert len(ds.frame("events").query("event == 'no_id'")) == 2
    assert not ds.report.tables["events"].quarantined


def test_time_zones_are_converted_to_naive_utc(make_dataset):
    rows = [
        {
            "account_id": "a1",
            "timestamp": "2024-01-03T12:00:00+02:00",
            "event": "tz",
            "event_id": "t1",
        },
        {
            "account_id": "a1",
            "timestamp": "2024-01-03T05:00:00-05:00",
            "event": "tz",
            "event_id": "t2",
        },
        {"account_id": "a1", "timestamp": "2024-01-03T10:00:00Z", "event": "tz", "event_id": "t3"},
    ]
    ds = load_dataset(make_dataset(extra={"events": rows}))
    tz = ds.frame("events").query("event == 'tz'")
    assert set(tz["timestamp"]) == {pd.Timestamp("2024-01-03 10:00:00")}


def test_aware_parquet_timestamps_are_converted(make_dataset):
    events = pd.DataFrame(
        {
            "account_id": ["a1"],
            "event": ["login"],
            "event_id": ["z1"],
            "timestamp": pd.to_datetime(["2024-01-03 12:00"]).tz_localize("Europe/Berlin"),
        }
    )
    ds = load_dataset(make_dataset(replace={"events": events}, fmt="parquet"))
    assert ds.frame("events")["timestamp"].iloc[0] == pd.Timestamp("2024-01-03 11:00")


def test_quantity_defaults_to_one(make_dataset):
    rows = [{"account_id": "a1", "timestamp": "2024-01-03", "event": "x", "event_id": "q"}]
    ds = load_dataset(make_dataset(extra={"events": rows}))
    assert ds.frame("events").set_index("event_id").loc["q", "quantity"] == 1.0


SUBSCRIPTION_CASES = [
    (
        {
            "account_id": "a1",
            "effective_at": "2024-02-01",
            "plan_id": "gold",
            "seats": 1,
            "mrr": 1,
            "status": "active",
        },
        "unknown_plan",
    ),
    (
        {
            "account_id": "a1",
            "effective_at": "2024-02-01",
            "plan_id": "pro",
            "seats": 1,
            "mrr": -5,
            "status": "active",
        },
        "negative_mrr",
    ),
    (
        {
            "account_id": "a1",
            "effective_at": "2024-02-01",
            "plan_id": "pro",
            "seats": -1,
            "mrr": 5,
            "status": "active",
        },
        "negative_seats",
    ),
    (
        {
            "account_id": "a1",
            "effective_at": "2024-02-01",
            "plan_id": "pro",
            "seats": 2.5,
            "mrr": 5,
            "status": "active",
        },
        "unparseable_seats",
    ),
    (
        {
            "account_id": "a1",
            "effective_at": "2024-02-01",
            "plan_id": "pro",
            "seats": 1,
            "mrr": 5,
            "status": "paused",
        },
        "invalid_status",
    ),
    (
        {
            "account_id": "zz",
            "effective_at": "2024-02-01",
            "plan_id": "pro",
            "seats": 1,
            "mrr": 5,
            "status": "active",
        },
        "unknown_account",
    ),
    (
        {
            "account_id": "a1",
            "effective_at": "2024-01-01",
            "plan_id": "pro",
            "seats": 1,
            "mrr": 5,
            "status": "active",
        },
        "duplicate_account_id_effective_at",
    ),
]


@pytest.mark.parametrize(
    ("row", "reason"), SUBSCRIPTION_CASES, ids=[r for _, r in SUBSCRIPTION_CASES]
)
def test_bad_subscription_rows_are_quarantined(make_dataset, row, reason):
    ds = load_dataset(make_dataset(extra={"subscriptions": [row]}))
    assert ds.report.quarantine_counts() == {("subscriptions", reason): 1}


def test_status_is_case_insensitive(make_dataset):
    row = {
        "account_id": "a1",
        "effective_at": "2024-02-01",
        "plan_id": "pro",
        "seats": 1,
        "mrr": 120,
        "status": "Canceled",
    }
    ds = load_dataset(make_dataset(extra={"subscriptions": [row]}))
    assert "canceled" in set(ds.frame("subscriptions")["status"])


def test_account_rules_and_extra_attributes(make_dataset):
    accounts = [
        {"account_id": "a1", "created_at": "2024-01-01", "tier_hint": "x"},
        {"account_id": "a2", "created_at": "2024-01-02", "tier_hint": "y"},
        {"account_id": "a2", "created_at": "2024-01-09", "tier_hint": "dup"},
        {"account_id": "a3", "created_at": "soon", "tier_hint": "z"},
    ]
    ds = load_dataset(make_dataset(replace={"accounts": accounts}))
    assert ds.report.quarantine_counts() == {
        ("accounts", "duplicate_account_id"): 1,
        ("accounts", "unparseable_created_at"): 1,
    }
    assert ds.frame("accounts")["tier_hint"].tolist() == ["x", "y"]


def test_rows_referencing_a_quarantined_account_are_quarantined_too(make_dataset):
    accounts = [
        {"account_id": "a1", "created_at": "2024-01-01"},
        {"account_id": "a2", "created_at": "bad"},
    ]
    ds = load_dataset(make_dataset(replace={"accounts": accounts}))
    counts = ds.report.quarantine_counts()
    assert counts[("events", "unknown_account")] == 1
    assert counts[("subscriptions", "unknown_account")] == 1


def test_user_rules(make_dataset):
    rows = [
        {
            "user_id": "u9",
            "account_id": "a1",
            "created_at": "2024-02-01",
            "deactivated_at": "2024-01-01",
        },
        {"user_id": "u1", "account_id": "a1", "created_at": "2024-02-01"},
    ]
    ds = load_dataset(make_dataset(extra={"users": rows}))
    assert ds.report.quarantine_counts() == {
        ("users", "deactivated_before_created"): 1,
        ("users", "duplicate_user_id"): 1,
    }


def test_catalog_defaults_and_signal_rule(make_dataset):
    catalog = [
        {"event": "login", "feature": None, "power": None, "signal": None},
        {"event": "report_run", "feature": "reports", "power": True, "signal": None},
        {"event": "pricing", "feature": None, "power": False, "signal": "Pricing_Page"},
        {"event": "weird", "feature": None, "power": False, "signal": "telepathy"},
    ]
    ds = load_dataset(make_dataset(extra={"event_catalog": catalog}))
    assert ds.report.quarantine_counts() == {("event_catalog", "invalid_signal"): 1}
    cat = ds.frame("event_catalog").set_index("event")
    assert cat.loc["login", "feature"] == "login"
    assert not cat.loc["login", "power"]
    assert cat.loc["pricing", "signal"] == "pricing_page"


def test_plan_limits_and_outreach_rules(make_dataset):
    extra = {
        "plan_limits": [
            {"plan_id": "starter", "metric": "api_calls", "monthly_limit": 1000},
            {"plan_id": "starter", "metric": "api_calls", "monthly_limit": 2000},
            {"plan_id": "ghost", "metric": "api_calls", "monthly_limit": 10},
            {"plan_id": "pro", "metric": "api_calls", "monthly_limit": -1},
        ],
        "outreach": [
            {"account_id": "a1", "sent_at": "2024-01-05", "channel": "email", "holdout": None},
            {"account_id": "a1", "sent_at": "2024-01-05", "channel": "pigeon", "holdout": None},
        ],
    }
    ds = load_dataset(make_dataset(extra=extra))
    assert ds.report.quarantine_counts() == {
        ("plan_limits", "duplicate_plan_id_metric"): 1,
        ("plan_limits", "negative_monthly_limit"): 1,
        ("plan_limits", "unknown_plan"): 1,
        ("outreach", "invalid_channel"): 1,
    }
    assert not ds.frame("outreach")["holdout"].iloc[0]


def test_stale_quarantine_file_is_removed_when_data_is_fixed(make_dataset):
    bad = {"account_id": "zz", "timestamp": "2024-01-03", "event": "x", "event_id": "n"}
    path = make_dataset(extra={"events": [bad]})
    load_dataset(path)
    assert (path / "_quarantine" / "events.parquet").exists()
    events = pd.read_csv(path / "events.csv")
    events[events.account_id != "zz"].to_csv(path / "events.csv", index=False)
    load_dataset(path)
    assert not (path / "_quarantine" / "events.parquet").exists()


def test_duckdb_memory_limit_comes_from_the_setting(monkeypatch):
    from features.engine import connect
    from features.settings import get_settings

    monkeypatch.setenv("EXPANSION_DUCKDB_MEMORY_LIMIT", "1GB")
    get_settings.cache_clear()
    try:
        limit = connect().execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    finally:
        get_settings.cache_clear()
    assert limit == "953.6 MiB"  # DuckDB reports 1 GB (10^9 bytes) in binary units


def _to_duckdb_file(folder, file):
    """The folder's tables (read with their Parquet types) as tables of one DuckDB file."""
    import duckdb

    con = duckdb.connect(str(file))
    for table in sorted(folder.glob("*.parquet")):
        con.execute(f'CREATE TABLE "{table.stem}" AS SELECT * FROM read_parquet(?)', [str(table)])
    con.close()
    return file


def test_a_duckdb_file_loads_like_the_folder_it_came_from(make_dataset, tmp_path):
    bad = {"account_id": "nobody", "timestamp": "2024-02-01", "event": "x", "event_id": "u1"}
    folder = make_dataset(extra={"events": [bad]}, fmt="parquet")
    file = _to_duckdb_file(folder, tmp_path / "shop.duckdb")
    from_folder, from_file = load_dataset(folder), load_dataset(file)
    for table in ("accounts", "subscriptions", "users", "events", "event_catalog"):
        pd.testing.assert_frame_equal(from_file.frame(table), from_folder.frame(table))
    assert from_file.report.tables["events"].quarantined == {"unknown_account": 1}
    quarantined = pd.read_parquet(tmp_path / "shop_quarantine" / "events.parquet")
    assert quarantined["account_id"].tolist() == ["nobody"]
    assert quarantined["reason"].tolist() == ["unknown_account"]


def test_a_duckdb_file_without_a_required_table_names_it(make_dataset, tmp_path):
    folder = make_dataset(replace={"users": None}, fmt="parquet")
    file = _to_duckdb_file(folder, tmp_path / "shop.duckdb")
    with pytest.raises(
        ContractError, match=r"missing \(expected a table or view named users\)"
    ) as err:
        load_dataset(file)
    assert "shop.duckdb" in str(err.value)


def test_a_quarantined_duplicate_does_not_stretch_the_time_range(make_dataset):
    late = {"account_id": "a1", "timestamp": "2031-01-01", "event": "late", "event_id": "e1"}
    clean = load_dataset(make_dataset(name="clean")).report.tables["events"]
    ds = load_dataset(make_dataset(extra={"events": [late]}))
    report = ds.report.tables["events"]
    assert report.quarantined == {"duplicate_event_id": 1}
    assert (report.time_min, report.time_max) == (clean.time_min, clean.time_max)
    assert report.rows_clean == clean.rows_clean and report.rows_read == clean.rows_read + 1
