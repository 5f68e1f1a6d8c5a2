"""File and CRM targets of the batch job, checked against the real payload shapes.

The HubSpot and Salesforce examples in tests/fixtures/crm/ are verbatim from the vendors' API
references (see SOURCE.md there); the payloads we write must have their shape.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from serving.batch import run_batch, score_snapshot
from serving.sinks import (
    CRM_FIELDS,
    HUBSPOT_BATCH_LIMIT,
    ROW_COLUMNS,
    SALESFORCE_BATCH_LIMIT,
    DatabaseSink,
    FileSink,
    HubSpotSink,
    SalesforceSink,
    database_url,
    iter_request_bodies,
    open_target,
)
from tests.crm_servers import FIELD_TYPES, PROPERTY_TYPES

CRM = Path(__file__).parent / "fixtures" / "crm"


def write(trained, snapshot, models, target: str, chunk_size: int = 128, progress=None):
    return score_snapshot(
        snapshot,
        models,
        trained.settings,
        open_target(target),
        chunk_size=chunk_size,
        progress=progress,
    )


@pytest.fixture(scope="module")
def reference(trained, snapshot, models, tmp_path_factory) -> pd.DataFrame:
    """The same run written to SQLite: what every other target must agree with."""
    from sqlalchemy import select

    from serving.sinks import create_database_engine, scores_table

    url = f"sqlite:///{tmp_path_factory.mktemp('ref') / 'ref.db'}"
    write(trained, snapshot, models, url)
    engine = create_database_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(scores_table)).mappings().all()
    engine.dispose()
    return pd.DataFrame([dict(r) for r in rows]).set_index("account_id").sort_index()


def load(name: str):
    return json.loads((CRM / name).read_text())


# --- target strings -------------------------------------------------------------------------


def test_target_strings_pick_the_sink(tmp_path):
    assert isinstance(open_target("sqlite:///models/crm.db"), DatabaseSink)
    pg = open_target("postgresql://scorer:s3cret@db.internal:5432/crm")
    assert isinstance(pg, DatabaseSink)
    assert pg.url == "postgresql+psycopg://scorer:s3cret@db.internal:5432/crm"
    assert "s3cret" not in pg.description  # summaries never print the password
    assert database_url("postgres://h/db") == "postgresql+psycopg://h/db"
    assert database_url("postgresql+psycopg://h/db") == "postgresql+psycopg://h/db"
    assert isinstance(open_target(str(tmp_path / "s.parquet")), FileSink)
    assert isinstance(open_target(str(tmp_path / "s.CSV")), FileSink)
    hub = open_target(f"hubspot:{tmp_path}/hs?id_property=expansion_account_id")
    assert isinstance(hub, HubSpotSink) and hub.id_property == "expansion_account_id"
    sf = open_target(f"salesforce:{tmp_path}/sf")
    assert isinstance(sf, SalesforceSink) and sf.external_id is None
    for bad in ("scores.xlsx", "mysql://h/db", "hubspot:", f"hubspot:{tmp_path}?nope=1"):
        with pytest.raises(ValueError):
            open_target(bad)


# --- files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_file_target_matches_the_database_rows(
    trained, snapshot, models, reference, tmp_path, suffix
):
    path = tmp_path / "out" / f"scores.{suffix}"
    summary = write(trained, snapshot, models, str(path))
    frame = pd.read_parquet(path) if suffix == "parquet" else pd.read_csv(path)
    assert list(frame.columns) == ROW_COLUMNS
    assert len(frame) == len(snapshot) and frame["account_id"].is_unique
    frame = frame.set_index("account_id").sort_index()
    pd.testing.assert_series_equal(frame["p_expand"], reference["p_expand"], rtol=1e-9)
    pd.testing.assert_series_equal(
        frame["rank"].astype("Float64"), reference["rank"].astype("Float64"), check_dtype=False
    )
    assert frame["reasons_text"].fillna("").tolist() == reference["reasons_text"].tolist()
    assert [json.loads(r) for r in frame["reasons"]] == reference["reasons"].tolist()
    triggers = frame["triggers"].map(json.loads if suffix == "csv" else list)
    assert triggers.tolist() == reference["triggers"].tolist()
    run = json.loads(path.with_name(path.name + ".run.json").read_text())
    assert run["run_id"] == summary.run_id and run["status"] == "completed"
    # Every feature is compared, or listed as not comparable on this day (see serving.drift).
    compared, skipped = set(run["drift"]["psi"]), set(run["drift"]["not_compared"])
    assert compared | skipped == set(models.propensity.contract.features)
    assert not compared & skipped
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".run.json"]


def test_file_target_failure_keeps_the_previous_file(trained, snapshot, models, tmp_path):
    path = tmp_path / "scores.parquet"
    write(trained, snapshot, models, str(path))
    before = path.read_bytes()
    (tmp_path / ".scores.parquet.dead-run.partial").write_text("left by a killed run")

    def explode(stage, done, total):
        if stage == "write" and done >= 256:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write(trained, snapshot, models, str(path), progress=explode)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "scores.parquet",
        "scores.parquet.run.json",
    ]


# --- HubSpot --------------------------------------------------------------------------------


def test_hubspot_payloads_have_the_batch_update_shape(
    trained, snapshot, models, reference, tmp_path
):
    example = load("hubspot_batch_update_companies_request.json")
    example_input_keys = set(example["inputs"][0])
    response = load("hubspot_batch_update_companies_response.json")
    assert all(isinstance(v, str) for v in response["results"][0]["properties"].values())

    folder = tmp_path / "hubspot"
    summary = write(trained, snapshot, models, f"hubspot:{folder}?id_property=expansion_account_id")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["method"] == "POST"
    assert manifest["endpoint"].endswith("/crm/v3/objects/companies/batch/update")
    assert manifest["run"]["run_id"] == summary.run_id
    bodies = list(iter_request_bodies(folder))
    sizes = [len(b["inputs"]) for b in bodies]
    assert sum(sizes) == len(snapshot) == manifest["records"]
    assert max(sizes) <= HUBSPOT_BATCH_LIMIT == 100
    assert all(s == HUBSPOT_BATCH_LIMIT for s in sizes[:-1])  # full requests, carried over chunks

    definitions = json.loads((folder / "properties.json").read_text())["bodies"]
    by_name = {d["name"]: d for d in definitions}
    assert set(by_name) == {f.hubspot for f in CRM_FIELDS}
    for d in definitions:
        assert d["type"] in PROPERTY_TYPES and d["fieldType"] in FIELD_TYPES
        assert re.fullmatch(r"[a-z][a-z0-9_]*", d["name"])  # HubSpot internal names
    ids = []
    for body in bodies:
        assert set(body) == set(example)
        for item in body["inputs"]:
            assert set(item) <= example_input_keys and {"id", "properties"} <= set(item)
            assert item["idProperty"] == "expansion_account_id"
            assert isinstance(item["id"], str)
            props = item["properties"]
            assert set(props) == set(by_name)
            assert all(isinstance(v, str) for v in props.values())  # HubSpot's own value types
            for name, value in props.items():
                check_hubspot_value(by_name[name], value)
            ids.append(item["id"])
    assert sorted(ids) == reference.index.tolist()
    first = next(i for b in bodies for i in b["inputs"] if i["id"] == reference.index[0])
    row = reference.iloc[0]
    assert first["properties"]["expansion_reasons"] == row["reasons_text"]
    assert float(first["properties"]["expansion_p_expand"] or "nan") == pytest.approx(
        row["p_expand"], abs=1e-6, nan_ok=True
    )


def check_hubspot_value(definition: dict, value: str) -> None:
    if value == "":  # clears the property (e.g. no rank when suppressed)
        return
    kind = definition["type"]
    if kind == "number":
        float(value)
    elif kind == "bool":
        assert value in ("true", "false")
    elif kind == "enumeration":
        allowed = {o["value"] for o in definition["options"]}
        assert set(value.split(";")) <= allowed, (definition["name"], value)
    elif kind in ("date", "datetime"):
        moment = datetime.fromtimestamp(int(value) / 1000, tz=UTC)
        if kind == "date":
            assert (moment.hour, moment.minute, moment.second) == (0, 0, 0)  # midnight UTC


# --- Salesforce -----------------------------------------------------------------------------


def test_salesforce_payloads_have_the_collections_shape(
    trained, snapshot, models, reference, tmp_path
):
    example = load("salesforce_collections_update_request.json")
    account = next(r for r in example["records"] if r["attributes"]["type"] == "Account")
    single = load("salesforce_patch_account_request.json")  # field: value, no wrapper

    folder = tmp_path / "salesforce"
    write(trained, snapshot, models, f"salesforce:{folder}")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["method"] == "PATCH"
    assert re.fullmatch(r"/services/data/v\d+\.\d/composite/sobjects", manifest["endpoint"])
    bodies = list(iter_request_bodies(folder))
    sizes = [len(b["records"]) for b in bodies]
    assert sum(sizes) == len(snapshot) and max(sizes) <= SALESFORCE_BATCH_LIMIT == 200
    fields = {f.salesforce for f in CRM_FIELDS}
    ids = []
    for body in bodies:
        assert set(body) == set(example) and body["allOrNone"] is example["allOrNone"]
        for record in body["records"]:
            assert record["attributes"] == account["attributes"] == {"type": "Account"}
            assert isinstance(record["id"], str)
            custom = set(record) - set(account)
            assert custom == fields and all(f.endswith("__c") for f in custom)
            # Without its envelope a record is a single-record PATCH body: field -> JSON scalar.
            patch = {k: record[k] for k in custom}
            assert all(isinstance(k, str) for k in patch) and all(
                isinstance(k, str) for k in single
            )
            assert all(isinstance(v, type(None) | bool | int | float | str) for v in patch.values())
            ids.append(record["id"])
            if record["Expansion_As_Of__c"] is not None:
                assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", record["Expansion_As_Of__c"])
            assert re.fullmatch(
                r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", record["Expansion_Scored_At__c"]
            )
    assert sorted(ids) == reference.index.tolist()

    # Upsert on an external-id field: the key moves from `id` to that field and the URL.
    upsert = tmp_path / "salesforce_upsert"
    write(trained, snapshot, models, f"salesforce:{upsert}?external_id=Expansion_Account_Id__c")
    manifest = json.loads((upsert / "manifest.json").read_text())
    assert manifest["endpoint"].endswith("/composite/sobjects/Account/Expansion_Account_Id__c")
    record = next(iter(iter_request_bodies(upsert)))["records"][0]
    assert "id" not in record and record["Expansion_Account_Id__c"] in reference.index


def test_crm_folder_is_replaced_whole(trained, snapshot, models, tmp_path):
    folder = tmp_path / "hs"
    write(trained, snapshot, models, f"hubspot:{folder}")
    (folder / "requests" / "999999.json").write_text("{}")  # stale file of an older run
    first = json.loads((folder / "manifest.json").read_text())["run"]["run_id"]

    def explode(stage, done, total):
        if stage == "write" and done >= 256:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write(trained, snapshot, models, f"hubspot:{folder}", progress=explode)
    assert json.loads((folder / "manifest.json").read_text())["run"]["run_id"] == first
    write(trained, snapshot, models, f"hubspot:{folder}")
    assert not (folder / "requests" / "999999.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hs"]  # no partial leftovers


def test_unreachable_database_fails_before_the_features(trained):
    from sqlalchemy.exc import OperationalError

    stages = []
    with pytest.raises(OperationalError):
        run_batch(
            trained.dataset,
            trained.settings,
            "postgresql://nobody@127.0.0.1:1/nowhere",
            progress=lambda stage, done, total: stages.append(stage),
        )
    assert stages == []
