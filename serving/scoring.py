"""The scoring core: pure functions shared by the API and the batch job.

For each account: the calibrated `p_expand`, the likely next step and its mrr gain
(`expected_uplift_mrr`, from the price list), `p_post_upsell_churn` for that step,
`expected_net_value = p_expand x expected_uplift_mrr x (1 - p_post_upsell_churn)`, the PQL
triggers that fired, a route (CSM or automated), suppression with its reason, and the top
reasons: TreeSHAP contributions of the propensity model on the log-odds scale, as records
`{feature, value, contribution, text}`. Explanations cost 100-200x a score, so they are
computed only for the rows a caller returns.

Where a model has no champion that clears the quality floor, its rule baseline
(`serving.baseline`) scores instead: the PQL rules for `p_expand`, the health rules for
`p_post_upsell_churn`; its contributions are rule points (one per rule that fired), not
log-odds, and `Models.model_source` says which scorer ran and why.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.registry import FEATURES, default_label, feature_list
from features.triggers import TriggerThresholds, fired_triggers
from serving.baseline import RuleBaseline, rule_baseline
from serving.model import ScoringModel, float_matrix, outside_training_range
from serving.registry import (
    ModelContractError,
    ModelInfo,
    ModelSource,
    check_feature_contract,
    load_scoring_model,
    model_source,
)
from serving.settings import POST_UPSELL_MODEL, PROPENSITY_MODEL, Settings
from serving.snapshot import Snapshot

# Columns of a scored frame, in the order the batch job writes them.
RESULT_COLUMNS = [
    "account_id",
    "as_of",
    "p_expand",
    "p_post_upsell_churn",
    "expected_uplift_mrr",
    "expected_net_value",
    "next_step",
    "triggers",
    "route",
    "suppressed",
    "suppression_reason",
    "mrr",
    "csm_owner",
    "segment",
]


@dataclass
class Models:
    """The two scorers the core scores with, and where they came from.

    A scorer is a registered model, or the rule baseline (`serving.baseline`) where no champion
    clears the quality floor; `sources` says which and why.
    """

    propensity: ScoringModel | RuleBaseline
    post_upsell: ScoringModel | RuleBaseline
    infos: dict[str, ModelInfo] = field(default_factory=dict)
    sources: dict[str, ModelSource] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        settings: Settings,
        expected_features: list[str],
        *,
        alias: str = "champion",
        versions: dict[str, str] | None = None,
    ) -> Models:
        """Load both models (alias or pinned versions) and check their feature contract.

        With the `champion` alias, a model without a champion that clears the quality floor is
        replaced by its rule baseline; an explicit alias or version is loaded as asked.
        """
        versions = versions or {}
        loaded, sources = {}, {}
        for name in (PROPENSITY_MODEL, POST_UPSELL_MODEL):
            pinned = alias != "champion" or name in versions
            source = None if pinned else model_source(settings, name)
            if source is None or source.use_model:
                # the version `model_source` judged, even if the alias moved since
                version = versions.get(name) or (source.version if source else None)
                model, info = load_scoring_model(settings, name, alias=alias, version=version)
                check_feature_contract(model, expected_features)
            else:
                if source.rates_version is None:
                    raise ModelContractError(
                        f"no registered model {name!r} in {settings.resolved_tracking_uri}: "
                        "run `expansion train` and `expansion promote` first"
                    )
                measured, measured_info = load_scoring_model(
                    settings, name, version=source.rates_version
                )
                try:
                    model = rule_baseline(
                        name, measured.contract.metadata, expected_features, source.reason
                    )
                except ValueError as exc:
                    raise ModelContractError(str(exc)) from exc
                check_feature_contract(model, expected_features)
                info = ModelInfo(
                    name, "baseline", [], measured_info.run_id, model.contract.metadata
                )
            if source is not None:
                sources[name] = source
            loaded[name] = (model, info)
        return cls(
            loaded[PROPENSITY_MODEL][0],
            loaded[POST_UPSELL_MODEL][0],
            {name: info for name, (_, info) in loaded.items()},
            sources,
        )

    @property
    def versions(self) -> dict[str, str]:
        """Registered version per model, or `baseline` for a rule baseline."""
        return {name: info.version for name, info in self.infos.items()}

    @property
    def source_keys(self) -> dict[str, str]:
        """What `model_source` said at load (compared by the service to notice a change)."""
        return {name: source.key for name, source in self.sources.items()}

    def model_source(self, name: str) -> str:
        """`model v3` or `baseline (rules; why)` for one model."""
        source = self.sources.get(name)
        if source is not None:
            return source.describe()
        return f"model v{self.versions.get(name, '?')}"

    @property
    def model_source_line(self) -> str:
        """Both models' sources in one line, for run summaries."""
        return "; ".join(
            f"{name}: {self.model_source(name)}" for name in (PROPENSITY_MODEL, POST_UPSELL_MODEL)
        )


# --- next step and its value -------------------------------------------------------------


def _same_variant(up: pd.DataFrame, plan_id: pd.Series, prices: pd.DataFrame) -> pd.DataFrame:
    """The next tier's plan of the same variant (billing period) as the current plan.

    A tier sold in several variants (monthly, annual) has several plans; ranked by price within
    their tier, the variant keeps its rank across tiers, so a monthly customer is offered the
    next tier's monthly plan, never its annual one. Unknown plans keep the tier's first plan.
    """
    ranked = prices.assign(_price=prices["base_mrr"] + prices["seat_mrr"]).sort_values(
        ["tier", "_price", "plan_id"]
    )
    ranked["_rank"] = ranked.groupby("tier").cumcount()
    rank = plan_id.astype(object).map(ranked.set_index("plan_id")["_rank"]).to_numpy()
    known = ~pd.isna(rank)
    if not known.any():
        return up
    last = ranked.groupby("tier")["_rank"].max()
    target_rank = np.minimum(
        np.where(known, rank, 0).astype("int64"),
        up["tier"].map(last).fillna(0).to_numpy(dtype="int64"),
    )
    match = ranked.set_index(["tier", "_rank"]).reindex(
        pd.MultiIndex.from_arrays([up["tier"].to_numpy(), target_rank])
    )
    out = up.copy()
    for col in ("plan_id", "base_mrr", "seat_mrr"):
        out[col] = np.where(known, match[col].to_numpy(), up[col].to_numpy())
    return out


def next_steps(frame: pd.DataFrame, plans: pd.DataFrame) -> pd.DataFrame:
    """The likely next step of each account and its mrr gain, from the price list.

    An account pressing on its plan (a quota at 85%+, premium-feature trials or paywall hits)
    is likely to move up one tier at its current seats; otherwise it is likely to add seats:
    at least one, or enough for the users it already has plus last month's additions.
    """
    prices = plans.assign(
        base_mrr=plans["base_mrr"].fillna(0.0), seat_mrr=plans["seat_mrr"].fillna(0.0)
    ).sort_values(["tier", "plan_id"])
    tiers = prices.drop_duplicates("tier")
    tier_values = tiers["tier"].to_numpy(dtype="float64")
    seats = frame["seats"].fillna(0).clip(lower=0).to_numpy(dtype="float64")
    mrr = frame["mrr"].fillna(0).to_numpy(dtype="float64")
    tier = frame["plan_tier"].to_numpy(dtype="float64")
    pressing = (
        (frame["quota_util_max"].fillna(0) >= 0.85)
        | (frame["premium_trial_features_30d"].fillna(0) > 0)
        | (frame["paywall_hits_30d"].fillna(0) > 0)
    ).to_numpy()

    # The next tier up: the first listed tier above the current one (none at the top).
    up_pos = np.searchsorted(tier_values, np.nan_to_num(tier, nan=np.inf), side="right")
    has_up = up_pos < len(tiers)
    up = tiers.iloc[np.minimum(up_pos, len(tiers) - 1)].reset_index(drop=True)
    if "ctx_plan_id" in frame:
        up = _same_variant(up, frame["ctx_plan_id"], prices)
    up_gain = up["base_mrr"].to_numpy() + up["seat_mrr"].to_numpy() * np.maximum(seats, 1) - mrr
    upgrade = pressing & has_up

    # Seat price of the current plan (by plan id when known, else by tier).
    by_plan = prices.set_index("plan_id")["seat_mrr"]
    by_tier = tiers.set_index("tier")["seat_mrr"]
    seat_price = pd.Series(tier).map(by_tier).to_numpy(dtype="float64")
    if "ctx_plan_id" in frame:
        known = frame["ctx_plan_id"].map(by_plan).to_numpy(dtype="float64")
        seat_price = np.where(np.isnan(known), seat_price, known)
    seat_price = np.nan_to_num(seat_price)
    in_use = frame["seats_in_use"].fillna(0).to_numpy() if "seats_in_use" in frame else 0.0
    added = frame["users_added_30d"].fillna(0).to_numpy() if "users_added_30d" in frame else 0.0
    add = np.maximum(1.0, np.ceil(in_use + added - seats))

    names = up["plan_id"].astype(str).to_numpy()
    step = np.where(
        upgrade,
        np.char.add("upgrade to ", names),
        np.char.add(
            np.char.add("add ", add.astype(int).astype(str)), np.where(add == 1, " seat", " seats")
        ),
    )
    return pd.DataFrame(
        {
            "next_step": step,
            "expected_uplift_mrr": np.where(upgrade, np.maximum(up_gain, 0.0), add * seat_price),
            "is_tier_upgrade": upgrade.astype("float64"),
            "expansion_seats_delta": np.where(upgrade, 0.0, add),
        },
        index=frame.index,
    )


def prospective_inputs(frame: pd.DataFrame, steps: pd.DataFrame, metadata: dict) -> pd.DataFrame:
    """The post-upsell model's inputs for a step not yet taken.

    The step's kind and size come from `next_steps`; adoption after it (the model's recorded
    `adoption_features`) is unknown, so NaN, as the model saw it in training, and the model's
    `prospective_values` (e.g. `adoption_known = 0`) are set.
    """
    return frame.assign(
        is_tier_upgrade=steps["is_tier_upgrade"],
        expansion_mrr_delta=steps["expected_uplift_mrr"],
        expansion_seats_delta=steps["expansion_seats_delta"],
        **{name: np.nan for name in metadata.get("adoption_features", [])},
        **metadata.get("prospective_values", {}),
    )


# --- suppression and routing --------------------------------------------------------------


def suppression(frame: pd.DataFrame, as_of: pd.Series, settings: Settings) -> pd.Series:
    """Why an account must not be pitched now (None when it may be)."""
    reasons = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    if "ctx_last_outreach_at" in frame:
        touched = pd.to_datetime(frame["ctx_last_outreach_at"])
        days = (as_of - touched).dt.total_seconds() / 86400
        recent = days < settings.outreach_cooldown_days
        reasons[recent.fillna(False).to_numpy()] = (
            f"touched within the {settings.outreach_cooldown_days}-day cooldown"
        )
    expanded = frame["days_since_last_expansion"] < settings.suppress_after_expansion_days
    reasons[expanded.fillna(False).to_numpy()] = (
        f"expanded in the last {settings.suppress_after_expansion_days} days"
    )
    if "ctx_status" in frame:
        reasons[(frame["ctx_status"] == "canceled").to_numpy()] = "canceled"
    return reasons


def route(mrr: pd.Series, net_value: pd.Series, settings: Settings) -> pd.Series:
    """`csm` for large accounts (ARR) or large expected value, else `automated`."""
    csm = (mrr.fillna(0) * 12 >= settings.csm_arr_threshold) | (
        net_value.fillna(0) >= settings.csm_value_threshold
    )
    return pd.Series(np.where(csm, "csm", "automated"), index=mrr.index)


# --- scores -----------------------------------------------------------------------------------


def score_frame(
    models: Models,
    frame: pd.DataFrame,
    plans: pd.DataFrame,
    settings: Settings,
    thresholds: TriggerThresholds | None = None,
) -> pd.DataFrame:
    """Score every row of a feature frame (indexed by account_id); no explanations."""
    steps = next_steps(frame, plans)
    p_expand = models.propensity.predict_proba(frame)
    p_churn = models.post_upsell.predict_proba(
        prospective_inputs(frame, steps, models.post_upsell.contract.metadata)
    )
    as_of = pd.to_datetime(frame["as_of"])
    net = p_expand * steps["expected_uplift_mrr"].to_numpy() * (1 - p_churn)
    out = pd.DataFrame(
        {
            "account_id": frame.index.astype(str),
            "as_of": as_of.to_numpy(),
            "p_expand": p_expand,
            "p_post_upsell_churn": p_churn,
            "expected_uplift_mrr": steps["expected_uplift_mrr"].to_numpy(),
            "expected_net_value": net,
            "next_step": steps["next_step"].to_numpy(),
            "triggers": fired_triggers(frame, thresholds),
            "mrr": frame["mrr"].to_numpy(),
            "csm_owner": frame["ctx_csm_owner"].to_numpy() if "ctx_csm_owner" in frame else None,
            "segment": frame["segment"].to_numpy(),
        },
        index=frame.index,
    )
    why = suppression(frame, as_of, settings)
    canceled = (why == "canceled").to_numpy()
    # Nothing to predict, offer or explain for an account that left.
    for col in ("p_expand", "p_post_upsell_churn", "expected_uplift_mrr", "expected_net_value"):
        out.loc[canceled, col] = np.nan
    out["next_step"] = out["next_step"].astype(object).where(~canceled, None)
    out["route"] = route(out["mrr"], out["expected_net_value"], settings)
    out["suppressed"] = why.notna().to_numpy()
    out["suppression_reason"] = why.to_numpy()
    return out[RESULT_COLUMNS].reset_index(drop=True)


def rank_accounts(
    scored: pd.DataFrame,
    *,
    sort: str = "net_value",
    include_suppressed: bool = False,
    include_holdout: bool = False,
    csm_owner: str | None = None,
    segment: str | None = None,
    min_mrr: float | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Filter and order scored accounts; `rank` is 1 for the account to call first.

    Accounts in the holdout (a `holdout` column, see `serving.holdout`) are left out of the
    call list unless `include_holdout`."""
    keep = pd.Series(True, index=scored.index)
    if not include_suppressed:
        keep &= ~scored["suppressed"]
    if not include_holdout and "holdout" in scored.columns:
        keep &= ~scored["holdout"].astype(bool)
    if csm_owner is not None:
        keep &= scored["csm_owner"] == csm_owner
    if segment is not None:
        keep &= scored["segment"] == segment
    if min_mrr is not None:
        keep &= scored["mrr"].fillna(0) >= min_mrr
    key = {"net_value": "expected_net_value", "propensity": "p_expand"}[sort]
    ranked = scored[keep].sort_values(
        [key, "account_id"], ascending=[False, True], na_position="last"
    )
    ranked = ranked.assign(rank=np.arange(1, len(ranked) + 1))
    return ranked.head(limit) if limit is not None else ranked


class RankIndex:
    """`rank_accounts` for a scored snapshot, with the sorting done once at load.

    Both sort orders are computed when the snapshot is loaded; a request then only filters
    the pre-sorted positions (a few numpy comparisons on integer codes), instead of copying and
    sorting every account. Same order as `rank_accounts`: key descending, missing keys last,
    ties by account_id.
    """

    def __init__(self, scored: pd.DataFrame) -> None:
        ids = scored["account_id"].to_numpy(dtype=object)
        by_id = np.argsort(np.argsort(ids, kind="stable"), kind="stable")
        self.orders = {}
        for sort, column in {"net_value": "expected_net_value", "propensity": "p_expand"}.items():
            key = pd.to_numeric(scored[column], errors="coerce").to_numpy(dtype="float64")
            missing = np.isnan(key)
            self.orders[sort] = np.lexsort((by_id, -np.where(missing, 0.0, key), missing))
        self.suppressed = scored["suppressed"].to_numpy(dtype=bool)
        self.holdout = (
            scored["holdout"].to_numpy(dtype=bool)
            if "holdout" in scored.columns
            else np.zeros(len(scored), dtype=bool)
        )
        self.mrr = scored["mrr"].fillna(0).to_numpy(dtype="float64")
        self.codes, self.levels = {}, {}
        for column in ("csm_owner", "segment"):
            codes, uniques = pd.factorize(scored[column])
            self.codes[column] = codes
            self.levels[column] = {v: k for k, v in enumerate(uniques)}

    def positions(
        self,
        *,
        sort: str = "net_value",
        include_suppressed: bool = False,
        include_holdout: bool = False,
        csm_owner: str | None = None,
        segment: str | None = None,
        min_mrr: float | None = None,
    ) -> np.ndarray:
        """Rows of the scored frame that match, in rank order (rank = index + 1).

        Held-out accounts (`serving.holdout`) are left out of the call list unless asked."""
        order = self.orders[sort]
        keep = np.ones(len(order), dtype=bool)
        if not include_suppressed:
            keep &= ~self.suppressed
        if not include_holdout:
            keep &= ~self.holdout
        for column, wanted in (("csm_owner", csm_owner), ("segment", segment)):
            if wanted is not None:
                keep &= self.codes[column] == self.levels[column].get(wanted, -2)
        if min_mrr is not None:
            keep &= self.mrr >= min_mrr
        return order[keep[order]]


# --- explanations -----------------------------------------------------------------------------


# Labels and the texts for missing values are declared with each feature (features.registry).
LABELS = {f.name: f.label for f in FEATURES}


_FAMILIES = {f.name: f.family for f in feature_list([])}


def _family(name: str) -> str:
    """The business family of a feature, so reasons do not repeat one signal three times."""
    return _FAMILIES.get(name, "quota" if name.startswith("quota_") else name)


@functools.lru_cache(maxsize=8)
def _families(names: tuple[str, ...]) -> list[str]:
    return [_family(n) for n in names]


@functools.lru_cache(maxsize=4096)  # called for every reason; labels never change
def humanize(name: str) -> str:
    """A plain-language label for a feature column."""
    return LABELS.get(name) or default_label(name)


# What an empty value means, where the feature's declaration says: the whole reason's wording.
MISSING = {f.name: f.missing for f in FEATURES if f.missing}


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def describe(name: str, value: Any) -> str:
    """A feature and its value in plain language ("Seat utilization 93%", "Never expanded")."""
    if _is_missing(value):
        if name in MISSING:
            return MISSING[name]
        # The quota summaries are empty only when the plan has no quota limit; a per-metric
        # column can also be empty for other reasons (month-to-date on the 1st).
        if name.startswith("quota") and "__" not in name:
            return f"{humanize(name)}: no limit on the plan"
    return f"{humanize(name)} {format_value(name, value)}"


def format_value(name: str, value: Any) -> str:
    if _is_missing(value):
        return "unknown"
    if isinstance(value, str):
        return value
    if any(k in name for k in ("util", "share", "stickiness")):
        return f"{value:.0%}"
    if "trend" in name:
        return f"x{value:.2f}"
    if name == "mrr" or "mrr" in name:
        return f"{value:,.0f}/month"
    if name.startswith("days") or name.endswith("_days"):
        return f"{value:.0f} days"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def out_of_range_reason(name: str, value: float, side: str, bound: float) -> dict:
    """A reason record flagging a value beyond what the model saw in training."""
    return {
        "feature": name,
        "value": value,
        "contribution": 0.0,  # a warning, not a push: the margin is unchanged
        "text": f"{humanize(name)} {format_value(name, value)} is outside the range seen in "
        f"training ({side} {format_value(name, bound)})",
    }


@dataclass
class CellValues:
    """Feature values of rows as numpy arrays, for reason texts without per-cell pandas access.

    `numbers` holds every feature as float64 (NaN when missing; NaN in categorical columns),
    `labels` the categorical columns' raw values by column position.
    """

    numbers: np.ndarray
    labels: dict[int, np.ndarray]

    @classmethod
    def of(cls, model: ScoringModel, frame: pd.DataFrame) -> CellValues:
        names, categorical = model.contract.features, model.contract.categorical
        numeric = [i for i, n in enumerate(names) if n not in categorical]
        numbers = np.full((len(frame), len(names)), np.nan)
        numbers[:, numeric] = float_matrix(frame, [names[i] for i in numeric])
        labels = {
            i: frame[n].to_numpy(dtype=object) for i, n in enumerate(names) if n in categorical
        }
        return cls(numbers, labels)

    def value(self, row: int, col: int) -> float | str | None:
        """One cell as a reason shows it: a float, a label, or None when missing."""
        if col in self.labels:
            v = self.labels[col][row]
            if isinstance(v, str) or v is None:
                return v
            return None if pd.isna(v) else float(v)
        v = float(self.numbers[row, col])
        return None if math.isnan(v) else v


def reason_records(
    names: list[str],
    contrib: np.ndarray,
    values: CellValues,
    rows: np.ndarray,
    top: int | None = None,
    beyond: list[list[tuple]] | None = None,
) -> list[list[dict]]:
    """Reason records of each row of `contrib` (values at `rows` of `values`); see `explain`.

    `beyond[i]` (from `serving.model.outside_training_range`) flags row i's values outside the
    range seen in training; each becomes a record after the reasons."""
    families = _families(tuple(names))
    order = np.argsort(-contrib if top is not None else -np.abs(contrib), axis=1)
    ranked = np.take_along_axis(contrib, order, axis=1)
    out = []
    for i, row in enumerate(np.asarray(rows).tolist()):
        records, seen = [], set()
        # Python lists per row: the loop below reads a few cells, numpy scalars cost more.
        for j, c in zip(order[i].tolist(), ranked[i].tolist(), strict=True):
            if top is not None and (len(records) >= top or c <= 0):
                break
            if top is not None and families[j] in seen:
                continue  # one reason per family: the strongest
            seen.add(families[j])
            v = values.value(row, j)
            records.append(
                {
                    "feature": names[j],
                    "value": v,
                    "contribution": c,
                    "text": f"{describe(names[j], v)} ({c:+.2f})",
                }
            )
        if beyond is not None:
            records += [out_of_range_reason(*flag) for flag in beyond[i]]
        out.append(records)
    return out


def explain(
    model: ScoringModel | RuleBaseline, frame: pd.DataFrame, top: int | None = None
) -> tuple[list[list[dict]], np.ndarray]:
    """Reason records per row, largest contribution first, plus the base value per row.

    `top` keeps the strongest reasons pushing the score up (all contributions when None).
    Contributions are on the log-odds scale: they and the base value add up to the raw score.
    With `top`, reasons come one per feature family (quota, team, breadth, ...), followed by a
    record (contribution 0) for each feature outside the range seen in training: the score of
    such an account is an extrapolation, and the reader should know.
    """
    contrib, base = model.contributions(frame)
    names = model.contract.features
    values = CellValues.of(model, frame)
    rows = np.arange(len(frame))
    beyond = outside_training_range(model.contract, frame[names]) if top is not None else None
    return reason_records(names, contrib, values, rows, top, beyond), base


def reasons_line(records: list[dict]) -> str:
    return "; ".join(r["text"] for r in records)


def score_accounts(
    models: Models,
    snapshot: Snapshot,
    account_ids: list[str] | None,
    settings: Settings,
    *,
    explain_rows: bool = True,
) -> pd.DataFrame:
    """Score (and explain) accounts of a snapshot; unknown ids raise KeyError naming them."""
    frame = snapshot.features
    if account_ids is not None:
        missing = [a for a in account_ids if a not in frame.index]
        if missing:
            raise KeyError(missing)
        frame = frame.loc[list(dict.fromkeys(account_ids))]  # each account once, in order
    scored = score_frame(models, frame, snapshot.plans, settings)
    if explain_rows:
        scored = attach_reasons(models, frame, scored, settings.reasons)
    return scored


def attach_reasons(
    models: Models, frame: pd.DataFrame, scored: pd.DataFrame, top: int
) -> pd.DataFrame:
    """Add `reasons`, `reasons_text` and `base_value` for exactly the rows of `scored`."""
    if scored.empty:  # a filter that matched nothing: no rows to explain (LightGBM needs one)
        return scored.assign(reasons=[], reasons_text=[], base_value=[])
    rows = frame.loc[scored["account_id"]]
    records, base = explain(models.propensity, rows, top=top)
    unscored = scored["p_expand"].isna().to_numpy()  # canceled: no score, so no reasons
    records = [[] if gone else r for r, gone in zip(records, unscored, strict=True)]
    return scored.assign(
        reasons=records,
        reasons_text=[reasons_line(r) for r in records],
        base_value=base,
    )


# --- explanations for a loaded snapshot (the API's hot path) ---------------------------------


@dataclass
class ExplainerInputs:
    """One model's inputs for every account of a snapshot, converted once.

    Converting rows to model inputs costs milliseconds even for a single row (pandas work per
    column). A service that explains one account per request converts the whole snapshot when
    it loads it and then explains any rows with one explainer call on a numpy slice: the
    numbers LightGBM derives from the pandas frame, so the same contributions. The values
    shown in reason texts are kept as arrays too (`CellValues`).
    """

    model: ScoringModel
    matrix: np.ndarray  # `ScoringModel.input_matrix`: LightGBM's input or the linear design
    values: CellValues  # the raw values, for the reason texts
    # per row, the values outside the range seen in training (`outside_training_range`)
    beyond: list[list[tuple]]


def prepare_explainer(model: ScoringModel, frame: pd.DataFrame) -> ExplainerInputs:
    """Convert every row of `frame` to the model's input matrix once."""
    return ExplainerInputs(
        model,
        model.input_matrix(frame),
        CellValues.of(model, frame),
        outside_training_range(model.contract, frame[model.contract.features]),
    )


def prepare_churn_explainer(models: Models, snapshot: Snapshot) -> ExplainerInputs:
    """The post-upsell model's inputs for every account's likely next step, converted once.

    They depend only on the snapshot and the price list, so /explain need not rebuild them
    (`next_steps`, `prospective_inputs`) per request.
    """
    frame = snapshot.features
    metadata = models.post_upsell.contract.metadata
    inputs = prospective_inputs(frame, next_steps(frame, snapshot.plans), metadata)
    return prepare_explainer(models.post_upsell, inputs)


def contributions_at(
    inputs: ExplainerInputs, positions: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Contributions and base values of the rows at `positions` of a prepared snapshot."""
    # One thread: starting threads costs more than a few rows take (100x on a busy machine).
    contrib = inputs.model.matrix_contributions(inputs.matrix[positions], threads=1)
    return contrib[:, :-1], contrib[:, -1]


def explain_at(
    inputs: ExplainerInputs, positions: list[int], top: int | None = None
) -> tuple[list[list[dict]], np.ndarray]:
    """`explain` for the rows at `positions` of a prepared snapshot, without re-converting."""
    if not positions:
        return [], np.zeros(0)
    contrib, base = contributions_at(inputs, positions)
    names = inputs.model.contract.features
    beyond = [inputs.beyond[p] for p in positions] if top is not None else None
    return reason_records(names, contrib, inputs.values, np.asarray(positions), top, beyond), base


def explain_one(inputs: ExplainerInputs, position: int) -> tuple[list[dict], float, float]:
    """Every contribution of one prepared row, its base value and its raw score (margin).

    The margin is the base value plus the contributions (TreeSHAP is exact: LightGBM's raw
    score to rounding), so no second pass over the model is needed.
    """
    contrib, base = contributions_at(inputs, [position])
    names = inputs.model.contract.features
    records = reason_records(names, contrib, inputs.values, np.array([position]), None)
    return records[0], float(base[0]), float(base[0] + contrib[0].sum())
