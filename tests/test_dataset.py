"""The dataset loader: every contract rule, what is accepted, quarantined or fatal."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

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
    from features.settings import get_feature_settings

    monkeypatch.setenv("EXPANSION_DUCKDB_MEMORY_LIMIT", "1GB")
    get_feature_settings.cache_clear()
    try:
        limit = connect().execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    finally:
        get_feature_settings.cache_clear()
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
    # Run "in 2032", so that the late row is a duplicate and not a future one.
    ds = load_dataset(make_dataset(extra={"events": [late]}), now=datetime(2032, 1, 1))
    report = ds.report.tables["events"]
    assert report.quarantined == {"duplicate_event_id": 1}
    assert (report.time_min, report.time_max) == (clean.time_min, clean.time_max)
    assert report.rows_clean == clean.rows_clean and report.rows_read == clean.rows_read + 1


# --- future timestamps, non-finite numbers, zone abbreviations (issue 15) ----------------------

RUN_AT = datetime(2024, 3, 1, 12, 0)  # the injected moment of the run; the tolerance is 1 day

# One row per table with a time column, dated 2031: each is quarantined as future_timestamp.
FUTURE_ROWS = {
    "accounts": [{"account_id": "a9", "created_at": "2031-01-01T00:00:00"}],
    "subscriptions": [
        {
            "account_id": "a1",
            "effective_at": "2031-01-01",
            "plan_id": "pro",
            "seats": 1,
            "mrr": 5,
            "status": "active",
        }
    ],
    "users": [{"user_id": "u9", "account_id": "a1", "created_at": "2031-01-01"}],
    "events": [{"account_id": "a1", "timestamp": "2031-03-01", "event": "late", "event_id": "f1"}],
    "outreach": [{"account_id": "a1", "sent_at": "2031-01-05", "channel": "email"}],
}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_rows_dated_after_the_run_are_quarantined_in_every_dated_table(make_dataset, fmt):
    from features.contract import TABLES

    dated = {name for name, spec in TABLES.items() if spec.time_column}
    assert dated == set(FUTURE_ROWS)  # a new dated table needs a case here
    ds = load_dataset(make_dataset(extra=FUTURE_ROWS, fmt=fmt), now=RUN_AT)
    assert ds.report.quarantine_counts() == {(t, "future_timestamp"): 1 for t in FUTURE_ROWS}
    assert ds.report.future_cutoff == RUN_AT + timedelta(days=1)
    q = pd.read_parquet(ds.path / "_quarantine" / "events.parquet")
    assert q["event_id"].tolist() == ["f1"]
    # The clean range, and the default as-of derived from it, ignore the future row.
    assert ds.report.tables["events"].time_max == datetime(2024, 1, 3, 11)
    assert ds.report.clean_time_range() == (datetime(2024, 1, 3, 10), datetime(2024, 1, 3, 11))
    assert ds.report.default_as_of() == date(2024, 1, 4)


def test_the_future_tolerance_and_the_moment_of_the_run_are_honoured(make_dataset):
    soon = {"account_id": "a1", "timestamp": "2024-03-02T06:00:00", "event": "x", "event_id": "s"}
    path = make_dataset(extra={"events": [soon]})
    assert load_dataset(path, now=RUN_AT).report.total_quarantined == 0  # within a day
    strict = load_dataset(path, now=RUN_AT, future_tolerance=timedelta(hours=1))
    assert strict.report.quarantine_counts() == {("events", "future_timestamp"): 1}
    aware = datetime(2024, 3, 1, 13, 0, tzinfo=UTC).astimezone()  # same instant, any zone
    assert load_dataset(path, now=aware, future_tolerance=timedelta(0)).report.total_quarantined
    # Without `now`, the wall clock: 2031 is in the future, 2024 is not.
    assert load_dataset(path).report.total_quarantined == 0
    late = {"account_id": "a1", "timestamp": "2031-01-01", "event": "x", "event_id": "l"}
    ds = load_dataset(make_dataset(extra={"events": [late]}, name="late"))
    assert ds.report.quarantine_counts() == {("events", "future_timestamp"): 1}


def test_the_tolerance_comes_from_the_setting(make_dataset, monkeypatch):
    from features.settings import get_feature_settings

    soon = {"account_id": "a1", "timestamp": "2024-03-01T18:00:00", "event": "x", "event_id": "s"}
    path = make_dataset(extra={"events": [soon]})
    monkeypatch.setenv("EXPANSION_FUTURE_TOLERANCE_DAYS", "0.1")
    get_feature_settings.cache_clear()
    try:
        ds = load_dataset(path, now=RUN_AT)
    finally:
        get_feature_settings.cache_clear()
    assert ds.report.quarantine_counts() == {("events", "future_timestamp"): 1}


def test_a_planned_deactivation_is_not_a_future_row(make_dataset):
    user = {"user_id": "u9", "account_id": "a1", "created_at": "2024-01-05",
            "deactivated_at": "9999-12-31"}  # fmt: skip
    ds = load_dataset(make_dataset(extra={"users": [user]}), now=RUN_AT)
    assert ds.report.total_quarantined == 0


def _rewrite_parquet_keeping_nan(path):
    """pandas writes NaN as null: write the added rows' floats as they are (base rows' gaps
    stay nulls)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.conftest import BASE_TABLES

    for file in path.glob("*.parquet"):
        frame = pd.read_parquet(file)
        base = frame.index < len(BASE_TABLES.get(file.stem, []))
        columns = {
            c: pa.array(frame[c].to_numpy(), mask=frame[c].isna().to_numpy() & base)
            if frame[c].dtype == "float64"
            else pa.Array.from_pandas(frame[c])
            for c in frame.columns
        }
        pq.write_table(pa.table(columns), file)


NON_FINITE = ["NaN", "nan", "inf", "-inf", "Infinity", "-Infinity"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("value", NON_FINITE)
def test_non_finite_numbers_are_quarantined_in_every_numeric_column(make_dataset, fmt, value):
    """Every numeric column of the contract (read from the column kinds), text or float."""
    from features.contract import TABLES

    number = value if fmt == "csv" else float(value)
    extra = {
        "accounts": [{"account_id": "a8", "created_at": "2024-01-01", "employees": number}],
        "plans": [
            {"plan_id": "p1", "tier": number, "base_mrr": 1.0, "seat_mrr": 1.0},
            {"plan_id": "p2", "tier": 3, "base_mrr": number, "seat_mrr": 1.0},
            {"plan_id": "p3", "tier": 3, "base_mrr": 1.0, "seat_mrr": number},
        ],
        "subscriptions": [
            {
                "account_id": "a1",
                "effective_at": "2024-02-01",
                "plan_id": "pro",
                "seats": number,
                "mrr": 5.0,
                "status": "active",
            },
            {
                "account_id": "a1",
                "effective_at": "2024-02-02",
                "plan_id": "pro",
                "seats": 2,
                "mrr": number,
                "status": "active",
            },
            {
                "account_id": "a1",
                "effective_at": "2024-02-03",
                "plan_id": "pro",
                "seats": 2,
                "mrr": 5.0,
                "status": "active",
                "list_mrr": number,
            },
        ],
        "events": [
            {
                "account_id": "a1",
                "timestamp": "2024-01-04",
                "event": "x",
                "event_id": "n1",
                "quantity": number,
            }
        ],
        "plan_limits": [{"plan_id": "pro", "metric": "api", "monthly_limit": number}],
        "event_catalog": [
            {"event": "login", "min_tier": 1},
            {"event": "y", "min_tier": number},
        ],
    }
    path = make_dataset(extra=extra, fmt=fmt)
    if fmt == "parquet":  # pandas writes NaN as null: write the float columns as they are
        _rewrite_parquet_keeping_nan(path)
    ds = load_dataset(path, now=RUN_AT)
    expected = {
        (name, f"non_finite_{col}"): 1
        for name, spec in TABLES.items()
        for col in spec.numeric_columns
    }
    assert ds.report.quarantine_counts() == expected
    q = pd.read_parquet(ds.path / "_quarantine" / "subscriptions.parquet")
    assert q["reason"].tolist() == ["non_finite_seats", "non_finite_mrr", "non_finite_list_mrr"]
    assert q["source_row"].tolist() == [3, 4, 5]
    assert len(ds.frame("events")) == 2 and len(ds.frame("plans")) == 2


def test_integer_columns_out_of_range_are_unparseable_not_a_crash(make_dataset):
    row = {"account_id": "a1", "effective_at": "2024-02-01", "plan_id": "pro", "seats": "1e300",
           "mrr": 5, "status": "active"}  # fmt: skip
    ds = load_dataset(make_dataset(extra={"subscriptions": [row]}))
    assert ds.report.quarantine_counts() == {("subscriptions", "unparseable_seats"): 1}


AMBIGUOUS = [
    "2025-07-01 10:00:00 PST",
    "2025-07-01 10:00:00 PDT",
    "2025-07-01T10:00:00 EST",
    "2025-07-01 10:00:00 CEST",
    "2025-07-01 10:00:00 CET",
    "2025-07-01 10:00:00 BST",
    "2025-07-01 10:00:00 IST",
    "2025-07-01 10:00:00PST",
    "2025-07-01 10:00:00 EST5EDT",
    "2025-07-01 10:00 pst",
]


@pytest.mark.parametrize("stamp", AMBIGUOUS)
def test_zone_abbreviations_are_quarantined_not_guessed(make_dataset, stamp):
    rows = {
        "events": [{"account_id": "a1", "timestamp": stamp, "event": "x", "event_id": "z"}],
        "outreach": [{"account_id": "a1", "sent_at": stamp, "channel": "email"}],
    }
    ds = load_dataset(make_dataset(extra=rows), now=datetime(2026, 1, 1))
    assert ds.report.quarantine_counts() == {
        ("events", "ambiguous_timezone"): 1,
        ("outreach", "ambiguous_timezone"): 1,
    }


UNAMBIGUOUS = [
    ("2025-07-01 10:00:00 America/Los_Angeles", "2025-07-01 17:00"),  # PDT, -7 in July
    ("2025-01-01 10:00:00 America/Los_Angeles", "2025-01-01 18:00"),  # PST, -8 in winter
    ("2025-07-01T10:00:00 Europe/Berlin", "2025-07-01 08:00"),
    ("2025-07-01 10:00:00 Etc/GMT+5", "2025-07-01 15:00"),
    ("2025-07-01 10:00:00 UTC", "2025-07-01 10:00"),
    ("2025-07-01 10:00:00 GMT", "2025-07-01 10:00"),
    ("2025-07-01T10:00:00Z", "2025-07-01 10:00"),
    ("2025-07-01T10:00:00.250Z", "2025-07-01 10:00:00.250"),
    ("2025-07-01 10:00:00-08:00", "2025-07-01 18:00"),
    ("2025-07-01 10:00:00+0530", "2025-07-01 04:30"),
    ("2025-07-01", "2025-07-01 00:00"),
]


@pytest.mark.parametrize(("stamp", "utc"), UNAMBIGUOUS, ids=[s for s, _ in UNAMBIGUOUS])
def test_zone_names_and_offsets_are_converted_exactly(make_dataset, stamp, utc):
    rows = [{"account_id": "a1", "timestamp": stamp, "event": "tz", "event_id": "z"}]
    ds = load_dataset(make_dataset(extra={"events": rows}), now=datetime(2026, 1, 1))
    assert ds.report.total_quarantined == 0
    got = ds.frame("events").set_index("event_id").loc["z", "timestamp"]
    assert got == pd.Timestamp(utc)


def test_the_non_finite_check_is_spelled_out_for_spark():
    """Spark has no isfinite: the engine's dialect writes it as isnan or an infinity."""
    from features.contract import TABLES
    from features.dataset import _rules
    from features.engine import to_spark_sql

    types = {
        "account_id": "VARCHAR",
        "timestamp": "VARCHAR",
        "event": "VARCHAR",
        "quantity": "DOUBLE",
    }
    case = " ".join(f"WHEN {c} THEN '{r}'" for c, r in _rules(TABLES["events"], set(types), types))
    spark = to_spark_sql(f"SELECT CASE {case} END FROM raw_events")
    assert "ISFINITE" not in spark.upper()
    assert (
        "NOT NOT (ISNAN(`t_quantity`) OR ABS(`t_quantity`) = CAST('Infinity' AS DOUBLE))" in spark
    )
    assert "RLIKE" in spark  # the zone abbreviation check
