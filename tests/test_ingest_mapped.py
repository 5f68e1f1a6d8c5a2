"""Mapped tables: the TOML mapping language, and RavenStack through the shipped mapping."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.dataset import load_dataset
from features.ingest import IngestError, run_import
from tests.test_ingest_common import assert_balanced, non_null

ROOT = Path(__file__).parents[1]
RAVENSTACK = ROOT / "tests" / "fixtures" / "ravenstack"
RAVENSTACK_MAPPING = ROOT / "examples" / "ravenstack_mapping.toml"


def import_ravenstack(out_dir: Path, source: Path = RAVENSTACK):
    """RavenStack CSVs -> a contract dataset folder, with the shipped mapping."""
    return run_import("mapped", [source], out_dir, mapping=RAVENSTACK_MAPPING)


def test_ravenstack_through_the_shipped_mapping_passes_the_loader(tmp_path):
    summary = import_ravenstack(tmp_path / "ds")
    assert_balanced(summary)
    assert summary.quarantine_counts() == {}
    dataset = load_dataset(tmp_path / "ds")
    assert dataset.report.quarantine_counts() == {}

    account = dataset.frame("accounts").set_index("account_id").loc["A-2e4581"]
    assert non_null(account.to_dict()) == {
        "created_at": pd.Timestamp("2024-10-16"),
        "name": "Company_0",
        "industry": "EdTech",
        "region": "US",
        "referral_source": "partner",
        "signup_plan_tier": "Basic",
    }
    assert "churn_flag" not in dataset.frame("accounts").columns  # the label must not leak

    subs = dataset.frame("subscriptions").query("account_id == 'A-2e4581'")
    first = subs.sort_values("effective_at").iloc[0]
    assert (
        first["effective_at"],
        first["plan_id"],
        first["seats"],
        first["mrr"],
        first["status"],
    ) == (pd.Timestamp("2024-10-20"), "Pro", 9, 441.0, "active")
    trial = subs.set_index("effective_at").loc[pd.Timestamp("2024-10-30")]
    assert (trial["plan_id"], trial["mrr"], trial["status"]) == ("Pro", 0.0, "trialing")

    events = dataset.frame("events").set_index("event_id")
    usage = events.loc["U-805be4"]  # feature usage joined to its subscription's account
    assert (usage["account_id"], usage["timestamp"], usage["event"], usage["quantity"]) == (
        "A-a45270",
        pd.Timestamp("2023-03-23"),
        "feature_24",
        5.0,
    )
    assert pd.isna(usage["user_id"])
    ticket = events.loc["T-30b537"]
    assert (ticket["account_id"], ticket["event"]) == ("A-2e4581", "support_ticket_opened")

    plans = dataset.frame("plans").set_index("plan_id")
    assert plans["tier"].to_dict() == {"Basic": 1, "Pro": 2, "Enterprise": 3}
    users = dataset.frame("users")
    assert len(users) == 60 and set(users["role"]) == {"owner"}
    assert dataset.frame("event_catalog")["signal"].tolist() == ["support"]

    churned = pd.read_csv(RAVENSTACK / "ravenstack_subscriptions.csv").query("churn_flag")
    assert summary.tables["subscriptions"].filtered == 629 - len(churned)


# ----------------------------------------------------------------------------- the language


def _csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


@pytest.fixture
def crm(tmp_path: Path) -> Path:
    folder = tmp_path / "crm"
    folder.mkdir()
    _csv(
        folder / "companies_2024.csv",
        """
id,title,signed,size,tier,owner_id,status
c1,Acme,01/02/2024 09:30,S,gold,o1,live
c2,Globex,15/03/2024 18:00,M,silver,o2,live
c3,Initech,31/13/2024 00:00,L,gold,o1,live
c4,Hooli,20/04/2024 08:00,XL,bronze,o9,live
c5,Umbrella,21/04/2024 08:00,S,gold,o1,gone
""",
    )
    _csv(
        folder / "owners.csv",
        """
owner_id,owner_name
o1,Ann
o2,Bob
""",
    )
    _csv(
        folder / "billing.csv",
        """
company,cents,when
c1,12345,1704067200
c2,,1704153600
""",
    )
    return folder


def _mapping(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mapping.toml"
    path.write_text(text)
    return path


MAPPING = """
[sources]
companies = { file = "companies_*.csv" }
owners = { file = "owners.csv" }
billing = { file = "billing.csv" }

[[tables.accounts]]
from = "companies"
where = { status = ["live"] }
join = [{ source = "owners", on = "owner_id", columns = ["owner_name"] }]

[tables.accounts.columns]
account_id = "id"
created_at = { column = "signed", format = "%d/%m/%Y %H:%M", timezone = "Europe/Paris" }
name = "title"
segment = { column = "size", map = { S = "smb", M = "mid_market", L = "enterprise" } }
csm_owner = "owner_name"
loyalty = { column = "tier", map = { gold = "high" }, default = "normal" }

[[tables.subscriptions]]
from = "billing"

[tables.subscriptions.columns]
account_id = "company"
effective_at = { column = "when", format = "unix_s" }
plan_id = { value = "standard" }
seats = { value = 1 }
mrr = { column = "cents", scale = 0.01, default = 0 }
status = { value = "active" }

[[tables.plans]]
from = "companies"
distinct = true

[tables.plans.columns]
plan_id = { value = "standard" }
tier = { value = 1 }

[[tables.users]]
from = "companies"
where = { status = ["live"] }

[tables.users.columns]
user_id = { template = "{id}:{owner_id}" }
account_id = "id"
created_at = { column = "signed", format = "%d/%m/%Y %H:%M" }
"""


def test_mapping_language_renames_parses_maps_joins_and_derives(tmp_path, crm):
    mapping = _mapping(tmp_path, MAPPING)
    summary = run_import("mapped", [crm], tmp_path / "ds", mapping=mapping)
    accounts = pd.read_parquet(tmp_path / "ds" / "accounts.parquet").set_index("account_id")
    # c1: Paris 09:30 in winter is 08:30 UTC; c3 has no month 13; c4's owner is unknown and
    # XL is not in the segment map; c5 is filtered out by `where`.
    assert non_null(accounts.loc["c1"].to_dict()) == {
        "created_at": pd.Timestamp("2024-02-01 08:30"),
        "name": "Acme",
        "segment": "smb",
        "csm_owner": "Ann",
        "loyalty": "high",
    }
    assert accounts.loc["c2", "loyalty"] == "normal"
    assert accounts.loc["c2", "created_at"] == pd.Timestamp("2024-03-15 17:00")
    counts = summary.tables["accounts"]
    assert counts.filtered == 1
    assert counts.quarantined == {"no_match_owner_id": 1, "unparseable_created_at": 1}
    assert counts.written == 2
    assert_balanced(summary)

    subs = pd.read_parquet(tmp_path / "ds" / "subscriptions.parquet").set_index("account_id")
    assert subs.loc["c1", "mrr"] == pytest.approx(123.45)
    assert subs.loc["c1", "effective_at"] == pd.Timestamp("2024-01-01")
    assert subs.loc["c2", "mrr"] == 0.0  # missing cents -> default
    plans = pd.read_parquet(tmp_path / "ds" / "plans.parquet")
    assert plans[["plan_id", "tier"]].values.tolist() == [["standard", 1]]
    assert summary.tables["plans"].deduplicated == 4  # five companies, one derived plan row
    users = pd.read_parquet(tmp_path / "ds" / "users.parquet")
    assert sorted(users["user_id"]) == ["c1:o1", "c2:o2", "c4:o9"]

    quarantine = pd.read_parquet(tmp_path / "ds" / "_quarantine" / "import_mapped.parquet")
    bad = quarantine.query("table == 'accounts' and reason == 'unparseable_created_at'")
    assert bad["line"].tolist() == [4] and '"Initech"' in bad["record"].iloc[0]


def test_an_unmapped_value_without_default_quarantines_the_row(tmp_path, crm):
    text = MAPPING.replace(
        'join = [{ source = "owners", on = "owner_id", columns = ["owner_name"] }]', ""
    ).replace('csm_owner = "owner_name"\n', "")
    summary = run_import("mapped", [crm], tmp_path / "ds", mapping=_mapping(tmp_path, text))
    assert summary.tables["accounts"].quarantined == {
        "unmapped_segment": 1,
        "unparseable_created_at": 1,
    }


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda m: m.replace("[[tables.plans]]", "[[tables.prices]]").replace(
                "[tables.plans.columns]", "[tables.prices.columns]"
            ),
            "unknown contract table",
        ),
        (lambda m: m.replace('name = "title"', 'name = "headline"'), "no column 'headline'"),
        (lambda m: m.replace('"companies_*.csv"', '"firms.csv"'), "no input file matches"),
        (lambda m: m.replace('source = "owners"', 'source = "nobody"'), "undeclared source"),
        (
            lambda m: m.replace(
                'plan_id = { value = "standard" }\ntier',
                'plan_id = { value = "x", column = "id" }\ntier',
            ),
            "exactly one",
        ),
        (lambda m: m + "\n[oops]\n", "Extra inputs"),
        (lambda m: m.replace("Europe/Paris", "Europe/Atlantis"), "unknown timezone"),
        (lambda m: "version = 2\n" + m, "version"),
    ],
)
def test_mapping_mistakes_stop_the_import_with_a_clear_message(tmp_path, crm, edit, message):
    with pytest.raises(IngestError, match=message):
        run_import("mapped", [crm], tmp_path / "ds", mapping=_mapping(tmp_path, edit(MAPPING)))
    assert not (tmp_path / "ds").exists()


def test_a_join_key_must_be_unique(tmp_path, crm):
    (crm / "owners.csv").write_text("owner_id,owner_name\no1,Ann\no1,Annie\n")
    with pytest.raises(IngestError, match="not unique"):
        run_import("mapped", [crm], tmp_path / "ds", mapping=_mapping(tmp_path, MAPPING))
