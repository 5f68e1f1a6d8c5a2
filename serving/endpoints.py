"""The work behind each endpoint: pure functions of a `ServingState` (`serving.state`).

`serving.service` wraps each in a thin BentoML API method. A request looks its accounts up,
explains only the rows it returns (TreeSHAP on a numpy slice of the inputs prepared per load;
/explain's raw score is the base value plus the contributions) and names every problem by its
field: an unknown account id is `NotFound` (404), a malformed feature row `InvalidArgument` (400).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC
from typing import Any

import pandas as pd
from bentoml.exceptions import InvalidArgument, NotFound

from serving.api_models import (
    ExplainResponse,
    FeatureRow,
    ModelDescription,
    ModelExplanation,
    RankRequest,
    ServiceInfo,
    SnapshotDescription,
)
from serving.middleware import _clip
from serving.scoring import (
    RESULT_COLUMNS,
    attach_reasons,
    explain_at,
    explain_one,
    reasons_line,
    score_frame,
)
from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL, Settings
from serving.state import MAX_EXPLAINED, ServingState, _plain


def _positions(state: ServingState, account_ids: Iterable[str]) -> list[int]:
    ids = list(account_ids)
    missing = [a for a in dict.fromkeys(ids) if a not in state.positions]
    if missing:
        shown = missing[:20]
        more = f" and {len(missing) - len(shown)} more" if len(missing) > len(shown) else ""
        raise NotFound(
            f"unknown account_id(s) in the snapshot as of {state.snapshot.as_of}: {shown}{more}"
        )
    return [state.positions[a] for a in ids]


def account_records(state: ServingState, positions: list[int], top: int) -> list[dict]:
    """Scored accounts at `positions` with their top reasons (explained here, only these)."""
    todo = [p for p in dict.fromkeys(positions) if (p, top) not in state.explained]
    fresh = {}
    if todo:
        reasons, base = explain_at(state.explainer, todo, top=top)
        for k, pos in enumerate(todo):
            record = {c: state.columns[c][pos] for c in RESULT_COLUMNS}
            why = reasons[k] if record["p_expand"] is not None else []  # canceled: no score
            record.update(reasons=why, reasons_text=reasons_line(why), base_value=float(base[k]))
            fresh[pos] = record
        if len(state.explained) < MAX_EXPLAINED:
            state.explained.update(((pos, top), r) for pos, r in fresh.items())
    # copies: callers add fields (rank) to what they get
    return [dict(fresh[p] if p in fresh else state.explained[(p, top)]) for p in positions]


def score_ids(state: ServingState, account_ids: list[str], top: int) -> list[dict]:
    """/score by account id; unknown ids raise NotFound naming them."""
    return account_records(state, _positions(state, account_ids), top)


def feature_frame(state: ServingState, rows: list[FeatureRow]) -> pd.DataFrame:
    """Caller-computed rows as a feature frame; every problem is named by its field."""
    names = state.snapshot.feature_names
    known = set(names)
    categorical = {
        **state.models.propensity.contract.categorical,
        **state.models.post_upsell.contract.categorical,
    }
    seen: set[str] = set()
    records = []
    for i, row in enumerate(rows):
        where = f"rows[{i}]"
        if row.account_id in seen:
            raise InvalidArgument(f"{where}.account_id: {row.account_id!r} appears twice")
        seen.add(row.account_id)
        unknown = sorted(set(row.features) - known)
        if unknown:
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            shown = [_clip(name, 60) for name in unknown[:10]]
            raise InvalidArgument(f"{where}.features: unknown feature(s) {shown}{more}")
        missing = [n for n in names if n not in row.features]
        if missing:
            raise InvalidArgument(
                f"{where}.features: missing feature(s) {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''} (send null for an unknown value)"
            )
        for name, value in row.features.items():
            if value is None:
                continue
            if name in categorical and not isinstance(value, str):
                raise InvalidArgument(f"{where}.features.{name}: expected a string")
            if name not in categorical and isinstance(value, str):
                raise InvalidArgument(f"{where}.features.{name}: expected a number")
        touched = row.last_outreach_at
        if touched is not None and touched.tzinfo is not None:
            touched = touched.astimezone(UTC).replace(tzinfo=None)
        records.append(
            {
                "account_id": row.account_id,
                "ctx_plan_id": row.plan_id,
                "ctx_status": row.status,
                "ctx_csm_owner": row.csm_owner,
                "ctx_name": None,
                "ctx_last_outreach_at": touched,
                "as_of": pd.Timestamp(row.as_of or state.snapshot.as_of),
                **row.features,
            }
        )
    frame = pd.DataFrame.from_records(records).set_index("account_id")
    frame["ctx_last_outreach_at"] = pd.to_datetime(frame["ctx_last_outreach_at"])
    for name in names:
        if name not in categorical:
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
        else:
            frame[name] = frame[name].astype(object)
    return frame


def score_rows(state: ServingState, rows: list[FeatureRow], settings: Settings) -> list[dict]:
    """/score on caller-computed feature rows: the batch job's code path, row for row."""
    frame = feature_frame(state, rows)
    scored = score_frame(state.models, frame, state.snapshot.plans, settings)
    scored = attach_reasons(state.models, frame, scored, settings.reasons)
    return [
        {k: v if k == "reasons" else _plain(v) for k, v in r.items()}
        for r in scored.to_dict("records")
    ]


def rank_snapshot(state: ServingState, request: RankRequest, top: int) -> tuple[int, list[dict]]:
    """/rank: how many accounts match, and the first `limit` of them with their reasons."""
    ranked = state.ranking.positions(
        sort=request.sort,
        include_suppressed=request.include_suppressed,
        include_holdout=request.include_holdout,
        csm_owner=request.csm_owner,
        segment=request.segment,
        min_mrr=request.min_mrr,
    )
    head = ranked[: request.limit].tolist()
    records = account_records(state, head, top)
    for rank, (record, pos) in enumerate(zip(records, head, strict=True), start=1):
        record["rank"] = rank
        record["holdout"] = bool(state.columns["holdout"][pos])
    return len(ranked), records


def explain_account(state: ServingState, account_id: str, top: int) -> ExplainResponse:
    """/explain: every contribution of both models for one account of the snapshot."""
    pos = _positions(state, [account_id])[0]
    account = account_records(state, [pos], top)[0]
    inputs = {
        PROPENSITY_MODEL: (state.explainer, account["p_expand"]),
        POST_UPSELL_MODEL: (state.churn_explainer, account["p_post_upsell_churn"]),
    }
    parts = {}
    for name, (prepared, probability) in inputs.items():
        # Prepared once per snapshot; the margin is base + contributions (TreeSHAP is exact).
        records, base, margin = explain_one(prepared, pos)
        parts[name] = ModelExplanation(
            model=name,
            version=state.models.versions[name],
            margin=margin,
            base_value=base,
            probability=probability,
            contributions=records,
        )
    return ExplainResponse(
        account=account, propensity=parts[PROPENSITY_MODEL], post_upsell=parts[POST_UPSELL_MODEL]
    )


def _finite_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out


def describe(state: ServingState, interval: float) -> ServiceInfo:
    """/model_info: what is served, from the models' recorded contract and metadata."""
    models = []
    for name, model in (
        (PROPENSITY_MODEL, state.models.propensity),
        (POST_UPSELL_MODEL, state.models.post_upsell),
    ):
        info, meta = state.models.infos[name], model.contract.metadata
        models.append(
            ModelDescription(
                name=name,
                version=info.version,
                aliases=info.aliases,
                run_id=info.run_id,
                kind=model.contract.kind,
                calibration=model.contract.calibration,
                feature_set_version=model.contract.feature_set_version,
                features=model.contract.features,
                training_window=_window(meta.get("training_window")),
                validation_window=_window(meta.get("validation_window")),
                test_window=_window(meta.get("test_window")),
                data_fingerprint=meta.get("data_fingerprint"),
                git_commit=meta.get("git_commit"),
                notes=[str(n) for n in meta.get("notes", [])],
                metrics=_finite_metrics(meta.get("metrics", {})),
                model_source=state.models.model_source(name),
            )
        )
    snapshot = SnapshotDescription(
        as_of=state.snapshot.as_of, accounts=len(state.snapshot), loaded_at=state.loaded_at
    )
    return ServiceInfo(models=models, snapshot=snapshot, reload_seconds=interval)


def _window(value: Any) -> list[str] | None:
    return [str(v) for v in value] if isinstance(value, list | tuple) else None
