"""Live sync to HubSpot, Salesforce and a webhook, against local servers (tests/crm_servers.py)
that check every request against the documented shapes in tests/fixtures/crm and inject
429s with headers, 5xx, timeouts, partial failures, expired tokens and duplicate ids.

What must hold: every account lands exactly once with the right values, the failed ones are
reported with the CRM's message (run summary and `scoring_runs.crm_sync`), a rerun or a
resume after a crash sends nothing twice, and tokens never appear in logs or output.
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from serving.batch import score_snapshot
from serving.crm.hubspot import GROUP, property_definitions
from serving.crm.sync import Rate, SyncError
from serving.crm.webhook import SIGNATURE_HEADER, sign, verify
from serving.sinks import (
    CRM_FIELDS,
    RunInfo,
    _value,
    hubspot_value,
    open_target,
    salesforce_value,
    to_records,
)
from tests.crm_servers import HubSpotApi, SalesforceApi, WebhookReceiver

HS_TOKEN = "pat-na1-11111111-2222-3333-4444-SECRETHUBSPOT"
SF_TOKEN = "00Dxx0000001gPL!AQ4AQSECRETSALESFORCE"
SF_CLIENT_SECRET = "8A4BE698SECRETCLIENT"
WEBHOOK_SECRET = "whsec-SECRETWEBHOOK"
SECRETS = (HS_TOKEN, SF_TOKEN, SF_CLIENT_SECRET, WEBHOOK_SECRET, "SECRET")
FAST = "timeout=0.5&backoff=0.01&backoff_max=0.2&attempts=6"


# --- fixtures -------------------------------------------------------------------------------


class _Collect:
    """A sink that keeps the rows: the real rows a run writes, for the sync tests."""

    description = "memory"

    def __init__(self) -> None:
        self.frames: list[pd.DataFrame] = []

    def prepare(self) -> None: ...

    def open(self, run) -> None: ...

    def write(self, rows: pd.DataFrame) -> None:
        self.frames.append(rows.copy())

    def commit(self, record) -> None: ...

    def abort(self, record) -> None: ...


@pytest.fixture(scope="module")
def rows(trained, snapshot, models) -> pd.DataFrame:
    """The rows of one real scoring run (scores, reasons, routes) of the 1,500 accounts."""
    sink = _Collect()
    score_snapshot(snapshot, models, trained.settings, sink, chunk_size=500)
    return pd.concat(sink.frames, ignore_index=True)


@pytest.fixture
def state(tmp_path) -> str:
    """Checkpoint and scoring_runs of a test in its own folder."""
    return f"state_dir={tmp_path / 'state'}&runs_db=sqlite:///{tmp_path / 'crm.db'}"


@pytest.fixture
def hubspot_env(monkeypatch):
    def _set(api: HubSpotApi) -> None:
        monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", HS_TOKEN)
        monkeypatch.setenv("EXPANSION_HUBSPOT_API_URL", api.url)

    return _set


@pytest.fixture
def salesforce_env(monkeypatch):
    def _set(api: SalesforceApi, *, token: str | None = None, client: bool = True) -> None:
        for name in ("SALESFORCE_ACCESS_TOKEN", "SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("SALESFORCE_INSTANCE_URL", api.url)
        if token:
            monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", token)
        if client:
            monkeypatch.setenv("SALESFORCE_CLIENT_ID", "3MVG9-client")
            monkeypatch.setenv("SALESFORCE_CLIENT_SECRET", SF_CLIENT_SECRET)
        monkeypatch.setenv("SALESFORCE_TOKEN_URL", f"{api.url}/services/oauth2/token")

    return _set


def run_info(run_id: str | None = None) -> RunInfo:
    return RunInfo(
        run_id or str(uuid.uuid4()),
        datetime(2026, 1, 1).date(),
        datetime.now(UTC),
        {"expansion-propensity": "1", "post-upsell-churn": "1"},
    )


def sync(target: str, frame: pd.DataFrame, run_id: str | None = None, chunk: int = 400):
    """What the batch job does with a sink: prepare, open, write chunks, commit."""
    sink = open_target(target)
    sink.prepare()
    run = run_info(run_id)
    record = {"run_id": run.run_id, "status": "completed", "as_of": run.as_of}
    record["started_at"] = run.scored_at
    sink.open(run)
    try:
        for lo in range(0, len(frame), chunk):
            sink.write(frame.iloc[lo : lo + chunk])
        sink.commit(record)
    except BaseException as exc:
        sink.abort({**record, "status": "failed", "error": str(exc)})
        raise
    return sink


def run_row(tmp_path: Path, run_id: str) -> dict:
    with sqlite3.connect(tmp_path / "crm.db") as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM scoring_runs WHERE run_id = ?", (run_id,)).fetchone()
    return {**dict(row), "crm_sync": json.loads(row["crm_sync"])}


def expected_hubspot(frame: pd.DataFrame) -> dict[str, dict[str, str]]:
    return {
        str(r["account_id"]): {f.hubspot: hubspot_value(f, _value(r, f.column)) for f in CRM_FIELDS}
        for r in to_records(frame)
    }


# --- HubSpot --------------------------------------------------------------------------------


def test_hubspot_creates_properties_then_upserts_every_account_once(
    rows, hubspot_env, state, tmp_path
):
    # 429 (with headers, no Retry-After), 500 and a timeout on the first three batches
    script = {1: "429", 2: "500", 3: "timeout"}
    with HubSpotApi(HS_TOKEN, script=script, rate=(20, 1.0), hang_s=1.0) as api:
        hubspot_env(api)
        sink = sync(f"hubspot://?{FAST}&rate=20/1s&{state}", rows)
        assert api.violations == []
        assert api.faults == {"429": 1, "500": 1, "timeout": 1}
        assert api.rate_limited == 0  # the client-side limiter kept within 20/s
        # the group and every property were missing: created once, in the group
        assert GROUP["name"] in api.groups
        assert sorted(api.created) == sorted(
            p["name"] for p in property_definitions("expansion_account_id")
        )
        assert {api.properties[f.hubspot]["groupName"] for f in CRM_FIELDS} == {GROUP["name"]}
        assert api.properties["expansion_account_id"]["hasUniqueValue"] is True
        # every account once, with the values the batch job computed
        assert api.records == expected_hubspot(rows)
        assert set(api.applied.values()) == {1}
        report = sink.report
        assert report.status == "completed" and report.landed == len(rows)
        assert report.retries >= 3 and report.failures == {}
        # a second run finds the properties: no creation, only the upserts
        created = list(api.created)
        sync(f"hubspot://?{FAST}&{state}", rows)
        assert api.created == created
        assert set(api.applied.values()) == {2}  # a new run id writes again (fresh scores)


def test_hubspot_207_partial_failure_is_reported_and_the_rest_committed(
    rows, hubspot_env, state, tmp_path
):
    ids = rows["account_id"].astype(str).tolist()
    reject = {ids[3]: 'Property values were not valid: "expansion_rank"', ids[700]: "blocked"}
    with HubSpotApi(HS_TOKEN, reject=reject) as api:
        hubspot_env(api)
        sink = sync(f"hubspot://?{FAST}&{state}", rows)
        assert api.violations == []
        assert set(api.records) == set(ids) - set(reject)
        report = sink.report
        assert report.status == "partial"
        assert set(report.failures) == set(reject)
        assert "expansion_rank" in report.failures[ids[3]]  # the CRM's own message
        stored = run_row(tmp_path, report.run_id)
        assert stored["status"] == "partial"
        assert {f["account_id"] for f in stored["crm_sync"]["failures"]} == set(reject)

        # the same run id again, once HubSpot accepts them: only the two are sent
        api.reject.clear()
        before = api.received.copy()
        again = sync(f"hubspot://?{FAST}&{state}", rows, run_id=report.run_id)
        sent = api.received - before
        assert set(sent) == set(reject) and set(sent.values()) == {1}
        assert again.report.status == "completed" and again.report.failures == {}
        assert again.report.already_landed == len(ids) - 2
        assert run_row(tmp_path, report.run_id)["status"] == "completed"


def test_duplicate_account_ids_never_share_a_batch(rows, hubspot_env, state):
    doubled = pd.concat([rows.iloc[:150], rows.iloc[[5, 120]]], ignore_index=True)
    with HubSpotApi(HS_TOKEN) as api:
        hubspot_env(api)
        sink = sync(f"hubspot://?{FAST}&{state}", doubled, chunk=1000)
        # HubSpot would refuse the whole batch (400 "Duplicate IDs found in batch input")
        assert api.violations == []
        assert len(api.records) == 150 and set(api.applied.values()) == {1}
        assert sink.report.status == "partial"  # nothing silently dropped: it is said
        assert len(sink.report.notes) == 2 and "duplicate account id" in sink.report.notes[0]


def test_hubspot_duplicate_ids_answer_fails_the_batch_with_its_message():
    """What a 400 for the whole batch does: all its records fail with HubSpot's message."""
    from serving.crm.hubspot import HubSpotConnector

    connector = HubSpotConnector()
    import httpx

    body = json.loads(
        (
            Path(__file__).parent
            / "fixtures/crm/hubspot_batch_update_400_duplicate_ids_response.json"
        ).read_text()
    )["body"]
    outcome = connector.outcome(["a", "b"], httpx.Response(400, json=body))
    assert outcome == dict.fromkeys(["a", "b"], f"HTTP 400: {body['message']}")


def test_resume_after_a_crash_sends_nothing_twice(
    trained, snapshot, models, hubspot_env, state, tmp_path
):
    with HubSpotApi(HS_TOKEN) as api:
        hubspot_env(api)
        target = f"hubspot://?{FAST}&{state}"

        def crash(stage, done, total):
            if stage == "write" and done >= 600:
                raise KeyboardInterrupt("killed mid-sync")

        run_id = str(uuid.uuid4())
        with pytest.raises(KeyboardInterrupt):
            score_snapshot(
                snapshot,
                models,
                trained.settings,
                open_target(target),
                chunk_size=300,
                progress=crash,
                run_id=run_id,
            )
        landed_before = set(api.records)
        assert 0 < len(landed_before) < len(snapshot.features)
        stored = run_row(tmp_path, run_id)
        assert stored["status"] == "failed"

        summary = score_snapshot(
            snapshot,
            models,
            trained.settings,
            open_target(target),
            chunk_size=300,
            run_id=run_id,
        )
        accounts = set(snapshot.features.index.astype(str))
        assert set(api.records) == accounts
        assert set(api.received.values()) == {1}  # not one record sent twice
        assert summary.sync["status"] == "completed"
        assert summary.sync["already_landed"] == len(landed_before)
        assert run_row(tmp_path, run_id)["status"] == "completed"
        console = Console(file=io.StringIO(), width=200)
        console.print(summary.to_table())
        assert "CRM sync" in console.file.getvalue()


def test_deadline_stops_and_reports_what_was_not_sent(rows, hubspot_env, state):
    with HubSpotApi(HS_TOKEN, fault_rate=1.0, fault_kinds=("500",)) as api:
        hubspot_env(api)
        sink = sync(f"hubspot://?timeout=0.5&backoff=0.05&attempts=100&deadline=1&{state}", rows)
        report = sink.report
        assert report.seconds < 5
        assert len(report.failures) == len(rows) and report.landed == 0
        assert all(m.startswith("not sent") for m in report.failures.values())


def test_daily_limit_stops_the_sync():
    import httpx

    from serving.crm.hubspot import HubSpotConnector
    from serving.crm.sync import RateLimiter

    daily = json.loads(
        (Path(__file__).parent / "fixtures/crm/hubspot_429_daily_response.json").read_text()
    )["body"]
    with pytest.raises(SyncError, match="daily"):
        HubSpotConnector().check(httpx.Response(429, json=daily), RateLimiter(None))


def test_limiter_adopts_the_advertised_hubspot_limit(rows, hubspot_env, state):
    # no rate given: the default (100 per 10 s) gives way to what the headers say (8 per 0.5 s)
    with HubSpotApi(HS_TOKEN, rate=(8, 0.5)) as api:
        hubspot_env(api)
        sink = sync(f"hubspot://?{FAST}&{state}", rows)
        assert set(api.records) == set(rows["account_id"].astype(str))
        assert api.rate_limited <= 2  # only while the client still had the default
        assert sink.report.failures == {}


# --- Salesforce -----------------------------------------------------------------------------


def salesforce_fields(external_id: str = "Expansion_Account_Id__c") -> set[str]:
    return {f.salesforce for f in CRM_FIELDS} | {external_id}


def test_salesforce_client_credentials_expired_token_limits_and_per_record_errors(
    rows, salesforce_env, state, tmp_path
):
    ids = rows["account_id"].astype(str).tolist()
    reject = {ids[10]: "entity is deleted"}
    script = {2: "expire", 3: "limit", 4: "500", 5: "timeout"}
    api = SalesforceApi(
        salesforce_fields(), "3MVG9-client", SF_CLIENT_SECRET, script=script, reject=reject
    )
    with api:
        salesforce_env(api)
        sink = sync(f"salesforce://?{FAST}&{state}", rows)
        assert api.violations == []
        assert api.tokens_issued == 2  # the first, and one refresh after INVALID_SESSION_ID
        assert set(api.records) == set(ids) - set(reject)
        assert set(api.applied.values()) == {1}
        want = {
            str(r["account_id"]): {
                "Expansion_Account_Id__c": str(r["account_id"]),
                **{f.salesforce: salesforce_value(f, _value(r, f.column)) for f in CRM_FIELDS},
            }
            for r in to_records(rows)
            if str(r["account_id"]) not in reject
        }
        assert api.records == json.loads(json.dumps(want))  # as JSON carries them
        report = sink.report
        assert report.failures == {ids[10]: "ENTITY_IS_DELETED: entity is deleted"}
        assert run_row(tmp_path, report.run_id)["crm_sync"]["failed"] == 1


def test_salesforce_static_token_rejected_without_client_credentials(
    rows, salesforce_env, state, caplog
):
    api = SalesforceApi(salesforce_fields(), "3MVG9-client", SF_CLIENT_SECRET)
    with api:
        salesforce_env(api, token=SF_TOKEN, client=False)  # the server never issued it
        with caplog.at_level(logging.DEBUG), pytest.raises(SyncError) as error:
            sync(f"salesforce://?{FAST}&{state}", rows.iloc[:10])
        assert "token was rejected" in str(error.value)
        assert SF_TOKEN not in str(error.value) and SF_TOKEN not in caplog.text


def test_salesforce_limit_used_up_stops(rows, salesforce_env, state):
    api = SalesforceApi(salesforce_fields(), "3MVG9-client", SF_CLIENT_SECRET, script={1: "limit"})
    with api:
        salesforce_env(api)
        api.usage_max = 1  # the org's daily allocation is used up
        with pytest.raises(SyncError, match="api-usage=1/1"):
            sync(f"salesforce://?{FAST}&{state}", rows.iloc[:10])


def test_salesforce_metadata_package_declares_every_field(tmp_path):
    import xml.etree.ElementTree as ET

    from serving.crm.salesforce import write_metadata_package

    files = write_metadata_package(tmp_path)
    ns = {"m": "http://soap.sforce.com/2006/04/metadata"}
    account = ET.parse(tmp_path / "objects" / "Account.object").getroot()
    names = {f.find("m:fullName", ns).text for f in account.findall("m:fields", ns)}
    assert names == salesforce_fields()
    ext = [f for f in account.findall("m:fields", ns) if f.find("m:externalId", ns).text == "true"]
    assert [f.find("m:fullName", ns).text for f in ext] == ["Expansion_Account_Id__c"]
    package = ET.parse(tmp_path / "package.xml").getroot()
    members = {m.text for m in package.iter("{http://soap.sforce.com/2006/04/metadata}members")}
    assert members == {f"Account.{n}" for n in names}
    assert len(files) == 2


# --- webhook --------------------------------------------------------------------------------


def test_webhook_batches_are_signed_and_delivered_once(rows, state, monkeypatch):
    monkeypatch.setenv("EXPANSION_WEBHOOK_SECRET", WEBHOOK_SECRET)
    script = {1: "429", 2: "500", 3: "timeout"}
    with WebhookReceiver(WEBHOOK_SECRET, script=script, hang_s=1.0) as hook:
        sink = sync(f"webhook+{hook.url}/hooks/expansion?{FAST}&batch_size=250&{state}", rows)
        assert hook.violations == []
        assert set(hook.applied.values()) == {1}
        assert set(hook.records) == set(rows["account_id"].astype(str))
        first = to_records(rows.iloc[:1])[0]
        got = hook.records[str(first["account_id"])]
        assert got["p_expand"] == first["p_expand"] and got["reasons"] == first["reasons"]
        assert sink.report.status == "completed"
    # a receiver with another secret refuses: the batches fail with its answer, reported
    with WebhookReceiver("another-secret") as hook:
        sink = sync(f"{hook.url}/h?{FAST}&{state}", rows.iloc[:20])
        assert hook.records == {} and len(sink.report.failures) == 20
        assert "bad signature" in next(iter(sink.report.failures.values()))


def test_webhook_signature_is_what_a_receiver_can_verify():
    body = b'{"records":[]}'
    signature = sign("s3cret", "1767225600", body)
    assert verify("s3cret", "1767225600", body, signature, now=1767225600 + 10)
    assert not verify("s3cret", "1767225600", body + b" ", signature, now=1767225600)
    assert not verify("other", "1767225600", body, signature, now=1767225600)
    assert not verify("s3cret", "1767225600", body, signature, now=1767225600 + 301)
    assert SIGNATURE_HEADER == "X-Expansion-Signature"


def test_plain_http_webhooks_only_on_loopback():
    with pytest.raises(ValueError, match="loopback"):
        open_target("http://hooks.example.com/x")
    with pytest.raises(ValueError, match="unknown option"):
        open_target("hubspot://?nope=1")
    with pytest.raises(ValueError, match="batch_size"):
        open_target("hubspot://?batch_size=101")
    assert Rate.parse("190/10s") == Rate(190, 10.0) and Rate.parse("10/s") == Rate(10, 1.0)


# --- dry run, secrets -----------------------------------------------------------------------


def test_dry_run_writes_the_exact_bodies_and_sends_nothing(rows, hubspot_env, state, tmp_path):
    with HubSpotApi(HS_TOKEN) as api:
        hubspot_env(api)
        live_bodies = []
        original = api.upsert
        api.upsert = lambda body: (live_bodies.append(body), original(body))[1]
        run_id = str(uuid.uuid4())
        sync(f"hubspot://?{FAST}&{state}", rows, run_id=run_id)
        sent = len(api.log)
        dry = tmp_path / "dry"
        sync(f"hubspot://?{FAST}&{state}&dry_run={dry}", rows, run_id=run_id)
        assert len(api.log) == sent  # not one request
        manifest = json.loads((dry / "manifest.json").read_text())
        written = [json.loads((dry / name).read_text()) for name in manifest["requests"]]
        assert [w["body"] for w in written] == live_bodies
        assert written[0]["method"] == "POST" and written[0]["url"].endswith("/batch/upsert")
        setup = sorted(p.name for p in (dry / "setup").iterdir())
        assert "group.json" in setup and "expansion_p_expand.json" in setup
        assert not any(s in p.read_text() for p in dry.rglob("*.json") for s in SECRETS)


def test_tokens_never_reach_logs_output_or_state(
    rows, hubspot_env, salesforce_env, state, tmp_path, caplog, capsys
):
    caplog.set_level(logging.DEBUG)  # httpx and httpcore at DEBUG too
    with HubSpotApi(HS_TOKEN, script={1: "429", 2: "500"}) as api:
        hubspot_env(api)
        sink = sync(f"hubspot://?{FAST}&{state}", rows.iloc[:300])
        print(sink.report.to_dict(), sink.description)
    api = SalesforceApi(salesforce_fields(), "3MVG9-client", SF_CLIENT_SECRET, script={1: "expire"})
    with api:
        salesforce_env(api)
        sink = sync(f"salesforce://?{FAST}&{state}", rows.iloc[:300])
        issued = set(api.valid_tokens)
        print(sink.report.to_dict(), sink.description)
    with WebhookReceiver(WEBHOOK_SECRET) as hook, pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXPANSION_WEBHOOK_SECRET", WEBHOOK_SECRET)
        sink = sync(f"{hook.url}/h?{FAST}&{state}", rows.iloc[:50])
        print(sink.report.to_dict())
    out = capsys.readouterr()
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert "retry" in caplog.text  # the logs were captured, with the retries in them
    for secret in (*SECRETS[:4], *issued):
        assert secret not in caplog.text
        assert secret not in out.out + out.err
        assert secret.encode() not in stored


# --- the command ----------------------------------------------------------------------------


def test_score_command_exit_code_3_on_partial_then_resume_and_dry_run(
    trained, snapshot, hubspot_env, state, tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from serving.settings import get_settings
    from training.cli import PARTIAL_EXIT, app

    first = str(snapshot.features.index[0])
    monkeypatch.setenv("EXPANSION_MODELS_DIR", str(trained.settings.models_dir))
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    run_id = "nightly-2026-01-01"
    target = f"hubspot://?{FAST}&{state}"
    data = ["--data", str(trained.data_dir)]
    try:
        with HubSpotApi(HS_TOKEN, reject={first: "OBJECT_NOT_FOUND company deleted"}) as api:
            hubspot_env(api)
            runner = CliRunner()
            result = runner.invoke(app, ["score", *data, "--to", target, "--run-id", run_id])
            assert result.exit_code == PARTIAL_EXIT == 3, result.output
            assert first in result.output and "partial" in result.output
            assert HS_TOKEN not in result.output

            api.reject.clear()
            result = runner.invoke(app, ["score", *data, "--to", target, "--run-id", run_id])
            assert result.exit_code == 0, result.output
            # the rerun sent only the one that had failed
            assert api.received.pop(first) == 2 and set(api.received.values()) == {1}

            requests = len(api.log)
            result = runner.invoke(app, ["score", *data, "--to", target, "--dry-run"])
            assert result.exit_code == 0, result.output
            assert len(api.log) == requests
            folder = trained.settings.models_dir / "dry-run" / "hubspot"
            assert json.loads((folder / "manifest.json").read_text())["records"] == len(
                snapshot.features
            )
            result = runner.invoke(app, ["score", *data, "--to", "out.csv", "--dry-run"])
            assert result.exit_code == 2 and "live targets" in result.output
    finally:
        get_settings.cache_clear()
    assert run_row(tmp_path, run_id)["status"] == "completed"


def test_rate_limiter_never_lets_more_than_n_start_in_a_window():
    import time

    from serving.crm.sync import RateLimiter

    limiter = RateLimiter(Rate(5, 0.2), explicit=True)
    starts = []
    for _ in range(16):
        limiter.acquire()
        starts.append(time.monotonic())
    for i in range(len(starts) - 5):
        assert starts[i + 5] - starts[i] >= 0.2  # the 6th start is a full window later
    limiter.advertise(Rate(10, 0.2))  # looser than the explicit setting: ignored
    assert limiter.rate == Rate(5, 0.2)
    limiter.advertise(Rate(2, 0.2))  # tighter: adopted
    assert limiter.rate == Rate(2, 0.2)
