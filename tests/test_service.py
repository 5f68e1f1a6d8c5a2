"""The scoring API on a real BentoML server, against the scoring core called in-process.

One server per module (`bentoml serve` in a child process on a free port) serves a copy of the
session's trained models, so the hot-reload tests at the end can replace its snapshot and move
its champion without touching the models other tests use. Schemathesis fuzzes every operation
of the published OpenAPI document.
"""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from serving.process import start_server, stop_server, wait_until_ready
from serving.scoring import (
    Models,
    describe,
    explain,
    explain_at,
    prepare_explainer,
    rank_accounts,
    score_accounts,
    score_frame,
)
from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL, Settings
from serving.snapshot import Snapshot, read_snapshot, write_snapshot
from serving.state import served_holdout

pytestmark = pytest.mark.integration

KEY, OTHER_KEY = "test-key-0123456789", "second-key-abcdef"
RELOAD_SECONDS = 1.0
NUMBERS = ("p_expand", "p_post_upsell_churn", "expected_uplift_mrr", "expected_net_value")
NUMBERS += ("mrr", "base_value")
LABELS = ("next_step", "route", "suppressed", "suppression_reason", "csm_owner", "segment")


@dataclass
class Served:
    url: str
    settings: Settings
    process: subprocess.Popen
    log: Path
    models: Models  # the same champions, loaded in this process
    snapshot: Snapshot  # the snapshot as served at start

    def post(self, path: str, body: Any, key: str | None = KEY) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.post(f"{self.url}{path}", json=body, headers=headers, timeout=30)

    def get(self, path: str, key: str | None = KEY) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("served")
    models_dir = root / "models"
    shutil.copytree(trained.settings.models_dir, models_dir)
    settings = Settings(
        models_dir=models_dir,
        tracking_uri=None,  # the copied store, whatever an earlier test left in MLFLOW_TRACKING_URI
        api_keys=f"{KEY},{OTHER_KEY}",
        auth_enabled=True,
    )
    port = _free_port()
    log = root / "server.log"
    with log.open("w") as out:
        process = start_server(settings, port=port, reload=RELOAD_SECONDS, output=out)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, timeout=240)  # generous: CI shares 2 cores
        snapshot = read_snapshot(models_dir / "snapshot")
        models = Models.load(trained.settings, snapshot.feature_names)
        yield Served(url, settings, process, log, models, snapshot)
    except Exception:
        print(log.read_text()[-5000:])
        raise
    finally:
        stop_server(process)


def _sample_ids(snapshot: Snapshot) -> list[str]:
    """Active accounts, canceled ones and (when there are any) suppressed active ones."""
    ctx = snapshot.features
    active = ctx.index[ctx["ctx_status"] != "canceled"]
    canceled = ctx.index[ctx["ctx_status"] == "canceled"]
    touched = ctx.index[ctx["ctx_last_outreach_at"].notna() & (ctx["ctx_status"] != "canceled")]
    touched = [a for a in touched if a not in set(active[:6])]
    return [*active[:6], *canceled[:2], *touched[:2]]


def _same(got: Any, want: Any) -> bool:
    if want is None or (isinstance(want, float) and math.isnan(want)):
        return got is None
    if isinstance(want, float | np.floating):
        return got is not None and abs(got - float(want)) <= 1e-9
    return got == want


def _assert_matches(got: dict, want: dict) -> None:
    for key in NUMBERS + LABELS:
        assert _same(got[key], want[key]), (got["account_id"], key, got[key], want[key])
    assert got["triggers"] == list(want["triggers"])
    assert got["as_of"] == str(pd.Timestamp(want["as_of"]).date())
    assert [r["feature"] for r in got["reasons"]] == [r["feature"] for r in want["reasons"]]
    for g, w in zip(got["reasons"], want["reasons"], strict=True):
        assert abs(g["contribution"] - w["contribution"]) <= 1e-9
        assert g["text"] == w["text"]
        assert _same(g["value"], w["value"])


# --- health and auth --------------------------------------------------------------------------


def test_health_and_docs_need_no_key(served):
    for path in ("/livez", "/readyz", "/docs.json"):
        assert served.get(path, key=None).status_code == 200
    spec = served.get("/docs.json", key=None).json()
    assert {"/score", "/rank", "/explain", "/model_info"} <= set(spec["paths"])
    assert spec["paths"]["/score"]["post"]["security"] == [{"apiKey": []}]


def test_every_endpoint_needs_a_valid_key(served):
    body = {"account_ids": [served.snapshot.features.index[0]]}
    for key in (None, "wrong-key", KEY + "x"):
        response = served.post("/score", body, key=key)
        assert response.status_code == 401
        assert response.json()["error"] == "missing or invalid API key"
        assert served.post("/rank", {}, key=key).status_code == 401
        assert served.post("/explain", {"account_id": "x"}, key=key).status_code == 401
        assert served.get("/model_info", key=key).status_code == 401
        assert served.get("/metrics", key=key).status_code == 401
    assert served.post("/score", body, key=KEY).status_code == 200
    assert served.post("/score", body, key=OTHER_KEY).status_code == 200
    assert KEY not in served.log.read_text()  # keys are never logged


# --- /score -----------------------------------------------------------------------------------


def test_score_by_id_equals_the_core_in_process(served):
    ids = _sample_ids(served.snapshot)
    response = served.post("/score", {"account_ids": ids})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_versions"] == served.models.versions
    assert [a["account_id"] for a in body["accounts"]] == ids
    want = score_accounts(served.models, served.snapshot, ids, served.settings)
    for got, expected in zip(body["accounts"], want.to_dict("records"), strict=True):
        _assert_matches(got, expected)
    gone = [a for a in body["accounts"] if a["suppression_reason"] == "canceled"]
    assert gone, "the sample has canceled accounts"
    for account in gone:  # nothing to predict, offer or explain for an account that left
        assert account["p_expand"] is None and account["next_step"] is None
        assert account["reasons"] == [] and account["reasons_text"] == ""


def test_score_feature_rows_equals_score_by_id(served):
    ids = _sample_ids(served.snapshot)[:4] + _sample_ids(served.snapshot)[6:7]
    frame = served.snapshot.features.loc[ids]
    rows = []
    for account_id, row in frame.iterrows():
        touched = row["ctx_last_outreach_at"]
        rows.append(
            {
                "account_id": account_id,
                "features": {
                    n: None if pd.isna(row[n]) else row[n] for n in served.snapshot.feature_names
                },
                "as_of": str(served.snapshot.as_of),
                "plan_id": row["ctx_plan_id"],
                "status": row["ctx_status"],
                "csm_owner": row["ctx_csm_owner"],
                "last_outreach_at": None if pd.isna(touched) else touched.isoformat(),
            }
        )
    by_rows = served.post("/score", {"rows": rows})
    assert by_rows.status_code == 200, by_rows.text
    by_id = served.post("/score", {"account_ids": ids}).json()
    for got, want in zip(by_rows.json()["accounts"], by_id["accounts"], strict=True):
        for key in NUMBERS + LABELS + ("triggers", "reasons", "account_id"):
            assert _same(got[key], want[key]) or got[key] == pytest.approx(want[key]), key


def test_unknown_account_is_404_naming_it(served):
    known = served.snapshot.features.index[0]
    response = served.post("/score", {"account_ids": [known, "acct_does_not_exist"]})
    assert response.status_code == 404
    assert "acct_does_not_exist" in response.json()["error"]
    response = served.post("/explain", {"account_id": "acct_nope"})
    assert response.status_code == 404
    assert "acct_nope" in response.json()["error"]


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("/score", {}, "account_ids"),
        ("/score", {"account_ids": []}, "account_ids"),
        ("/score", {"account_ids": "acct_1"}, "account_ids"),
        ("/score", {"account_ids": ["a"], "rows": [{"account_id": "a", "features": {}}]}, "rows"),
        ("/score", {"account_ids": ["a"], "colour": "red"}, "colour"),
        ("/score", {"rows": [{"account_id": "a", "features": {"no_such": 1}}]}, "no_such"),
        ("/score", {"rows": [{"account_id": "a", "features": {}}]}, "missing feature"),
        ("/score", {"rows": [{"features": {}}]}, "account_id"),
        ("/rank", {"limit": 0}, "limit"),
        ("/rank", {"limit": "ten"}, "limit"),
        ("/rank", {"sort": "alphabetical"}, "sort"),
        ("/rank", {"min_mrr": -5}, "min_mrr"),
        ("/rank", {"include_suppressed": "yes"}, "include_suppressed"),
        ("/explain", {}, "account_id"),
        ("/explain", [1, 2], "body"),
    ],
)
def test_malformed_payload_is_4xx_naming_the_field(served, path, body, named):
    response = served.post(path, body)
    assert 400 <= response.status_code < 500, response.text
    assert named in response.json()["error"]


def test_feature_row_types_are_checked(served):
    names = served.snapshot.feature_names
    features: dict[str, Any] = dict.fromkeys(names)
    features["mrr"] = "a lot"
    response = served.post("/score", {"rows": [{"account_id": "a", "features": features}]})
    assert response.status_code == 400
    assert "rows[0].features.mrr" in response.json()["error"]


def test_not_json_is_415_and_bad_json_is_400(served):
    headers = {"Authorization": f"Bearer {KEY}"}
    for kind in ("multipart/form-data", "text/plain", "application/x-www-form-urlencoded"):
        response = httpx.post(
            f"{served.url}/score",
            content=b"account_ids=1",
            headers={**headers, "Content-Type": kind},
        )
        assert response.status_code == 415, (kind, response.text)
    response = httpx.post(f"{served.url}/score", content=b"{not json", headers=headers)
    assert response.status_code == 400


# --- /rank ------------------------------------------------------------------------------------


def _ranked_in_process(served: Served, **filters: Any) -> pd.DataFrame:
    scored = score_frame(
        served.models, served.snapshot.features, served.snapshot.plans, served.settings
    )
    scored["holdout"] = served_holdout(scored, served.snapshot.as_of, served.settings)
    return rank_accounts(scored, **filters)


def test_rank_default_is_the_core_call_list(served):
    response = served.post("/rank", {"limit": 10})
    assert response.status_code == 200, response.text
    body = response.json()
    want = _ranked_in_process(served)
    assert body["total"] == len(want)
    accounts = body["accounts"]
    assert [a["account_id"] for a in accounts] == list(want["account_id"].head(10))
    assert [a["rank"] for a in accounts] == list(range(1, len(accounts) + 1))
    assert not any(a["suppressed"] or a["holdout"] for a in accounts)
    values = [a["expected_net_value"] for a in accounts]
    assert values == sorted(values, reverse=True)
    assert all(a["reasons"] and a["reasons_text"] for a in accounts)


def test_rank_filters_and_sort(served):
    features = served.snapshot.features
    owner = features["ctx_csm_owner"].dropna().iloc[0]
    segment = features["segment"].dropna().iloc[0]
    for filters in (
        {"csm_owner": owner, "limit": 5},
        {"segment": segment, "min_mrr": 100.0, "sort": "propensity"},
        {"include_suppressed": True, "limit": 1000, "sort": "propensity"},
        {"include_holdout": True, "limit": 1000},
    ):
        response = served.post("/rank", filters)
        assert response.status_code == 200, response.text
        body = response.json()
        limit = filters.pop("limit", 50)
        want = _ranked_in_process(served, **filters)
        assert body["total"] == len(want)
        assert [a["account_id"] for a in body["accounts"]] == list(want["account_id"].head(limit))
        if "csm_owner" in filters:
            assert {a["csm_owner"] for a in body["accounts"]} <= {owner}
        if "min_mrr" in filters:
            assert all(a["mrr"] >= 100.0 for a in body["accounts"])
        if "include_holdout" in filters:  # the holdout is listed, and marked
            assert any(a["holdout"] for a in body["accounts"])


# --- /explain and /model_info -----------------------------------------------------------------


def test_explain_contributions_reconstruct_the_margin(served):
    account_id = _sample_ids(served.snapshot)[0]
    response = served.post("/explain", {"account_id": account_id})
    assert response.status_code == 200, response.text
    body = response.json()
    scored = served.post("/score", {"account_ids": [account_id]}).json()["accounts"][0]
    assert body["account"] == scored
    row = served.snapshot.features.loc[[account_id]]
    for part, model in (
        ("propensity", served.models.propensity),
        ("post_upsell", served.models.post_upsell),
    ):
        explained = body[part]
        total = sum(c["contribution"] for c in explained["contributions"])
        assert total + explained["base_value"] == pytest.approx(explained["margin"], abs=1e-9)
        assert len(explained["contributions"]) == len(model.contract.features)
        assert explained["version"] == served.models.versions[explained["model"]]
    margin = float(served.models.propensity.margin(row)[0])
    assert body["propensity"]["margin"] == pytest.approx(margin, abs=1e-9)
    assert body["propensity"]["probability"] == pytest.approx(scored["p_expand"], abs=1e-12)
    assert body["post_upsell"]["probability"] == pytest.approx(
        scored["p_post_upsell_churn"], abs=1e-12
    )


def test_model_info_describes_the_served_models(served):
    response = served.get("/model_info")
    assert response.status_code == 200, response.text
    body = response.json()
    by_name = {m["name"]: m for m in body["models"]}
    assert set(by_name) == {PROPENSITY_MODEL, POST_UPSELL_MODEL}
    for name, model in by_name.items():
        assert model["version"] == served.models.versions[name]
        assert model["model_source"] == served.models.model_source(name)
        assert model["test_window"] and model["training_window"]
        assert "test_roc_auc" in model["metrics"]
    assert "champion" in by_name[PROPENSITY_MODEL]["aliases"]
    # the session's churn model is below the quality floor: the health rules score instead
    churn = by_name[POST_UPSELL_MODEL]
    assert churn["model_source"].startswith("baseline (health rules")
    assert (churn["version"], churn["kind"]) == ("baseline", "rules")
    assert by_name[PROPENSITY_MODEL]["features"] == served.snapshot.feature_names
    assert body["snapshot"]["as_of"] == str(served.snapshot.as_of)
    assert body["snapshot"]["accounts"] == len(served.snapshot)
    assert body["reload_seconds"] == RELOAD_SECONDS


def test_bentoml_client_with_a_token(served):
    account_id = _sample_ids(served.snapshot)[0]
    with bentoml.SyncHTTPClient(served.url, token=KEY) as client:
        result = client.score({"account_ids": [account_id]})
        assert result["accounts"][0]["account_id"] == account_id
        assert client.rank({"limit": 3})["accounts"][0]["rank"] == 1
    with (
        bentoml.SyncHTTPClient(served.url, token="wrong") as client,
        pytest.raises(bentoml.exceptions.BentoMLException, match="Authorization"),
    ):
        client.score({"account_ids": [account_id]})


def test_fast_explanations_equal_explain(served):
    """The service's prepared-matrix explanations are the core's `explain`, number for number."""
    prepared = prepare_explainer(served.models.propensity, served.snapshot.features)
    positions = list(range(0, len(served.snapshot), 7))
    fast, fast_base = explain_at(prepared, positions, top=3)
    slow, slow_base = explain(
        served.models.propensity, served.snapshot.features.iloc[positions], top=3
    )
    np.testing.assert_allclose(fast_base, slow_base, atol=1e-12)
    assert [[r["text"] for r in row] for row in fast] == [[r["text"] for r in row] for row in slow]
    for f_row, s_row in zip(fast, slow, strict=True):
        for f, s in zip(f_row, s_row, strict=True):
            assert f["contribution"] == pytest.approx(s["contribution"], abs=1e-12)


# --- the published contract, fuzzed -----------------------------------------------------------


def test_schemathesis_finds_no_5xx_and_no_schema_violation(served, tmp_path):
    """Every operation of /docs.json, 30 examples each: no server error, answers as documented.

    `positive_data_acceptance` is left out: a schema-valid feature row with made-up feature
    names is rightly refused (400), which no static schema can express.
    """
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{served.url}/docs.json",
        "--header",
        f"Authorization: Bearer {KEY}",
        "--max-examples",
        "30",
        "--seed",
        "7",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--no-color",
        "--request-timeout",
        "30",
    ]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "status=5" not in served.log.read_text()


# --- hot reload (last: they change what the server serves) ------------------------------------


def _poll(check, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"not reloaded within {timeout:.0f} s")


def test_a_new_snapshot_is_served_without_restart(served):
    source_id = _sample_ids(served.snapshot)[0]
    features = served.snapshot.features
    clone = features.loc[[source_id]].rename(index={source_id: "acct_hot_reload"})
    updated = Snapshot(
        served.snapshot.as_of,
        pd.concat([features, clone]),
        served.snapshot.plans,
        served.snapshot.feature_names,
        served.snapshot.source,
    )
    write_snapshot(updated, served.settings.models_dir / "snapshot")

    def served_clone():
        response = served.post("/score", {"account_ids": ["acct_hot_reload", source_id]})
        return response.json() if response.status_code == 200 else None

    body = _poll(served_clone)
    clone_result, source_result = body["accounts"]
    assert clone_result["p_expand"] == source_result["p_expand"]
    assert served.get("/model_info").json()["snapshot"]["accounts"] == len(features) + 1


def test_a_new_champion_is_served_without_restart(served):
    uri = served.settings.resolved_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    current = client.get_model_version_by_alias(PROPENSITY_MODEL, "champion")
    new = client.create_model_version(
        PROPENSITY_MODEL, source=current.source, run_id=current.run_id
    )
    client.set_registered_model_alias(PROPENSITY_MODEL, "champion", new.version)

    def new_version_served():
        info = served.get("/model_info").json()
        versions = {m["name"]: m["version"] for m in info["models"]}
        return versions[PROPENSITY_MODEL] == str(new.version)

    _poll(new_version_served)
    account_id = _sample_ids(served.snapshot)[0]
    body = served.post("/score", {"account_ids": [account_id]}).json()
    assert body["model_versions"][PROPENSITY_MODEL] == str(new.version)


def test_an_empty_value_reads_as_what_it_means():
    """A CSM reads 'Never expanded', not 'Days since last expansion unknown'."""
    nan = float("nan")
    assert describe("days_since_last_expansion", nan) == "Never expanded"
    assert describe("days_since_last_expansion", 12.0) == "Days since last expansion 12 days"
    assert describe("quota_util_max", nan) == "Highest quota use: no limit on the plan"
    assert describe("quota_util_mtd__api_calls", nan).endswith(" unknown")  # on the 1st
    assert describe("events_30d", None) == "Events (30 days) unknown"
