"""The simulator's treatment effects: configurable rules by account state, applied to the
hazard (so they show in the data), with the true individual effect in `_truth/`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.simulator import SimulationConfig, simulate
from training.simulator.treatment import EFFECT_RULE_SETS, effect_rules


def state(**values) -> dict[str, np.ndarray]:
    base = {
        "util": [0.5],
        "breadth": [3],
        "power14": [0],
        "pricing30": [0],
        "paywall30": [0],
        "team": [False],
        "support30": [0],
        "segment": [1],
        "manual": [False],
    }
    base.update(values)
    n = max(len(v) for v in base.values())  # one-value columns repeat over the accounts
    return {k: np.resize(np.asarray(v), n) for k, v in base.items()}


def test_rules_first_match_wins_and_default():
    rules = effect_rules("quota_pressure")
    assert rules.multiplier(state(util=[0.9]))[0] == 3.0
    assert rules.multiplier(state(util=[0.9], pricing30=[4]))[0] == 1.0  # would buy anyway
    assert rules.multiplier(state())[0] == 1.1
    small = effect_rules("small_accounts")
    assert list(small.multiplier(state(segment=[0, 1, 2]))) == [2.5, 1.0, 1.0]
    assert effect_rules("mixed").multiplier(state(support30=[3], breadth=[6], team=[True]))[0] < 1
    constant = effect_rules("constant")
    assert list(constant.multiplier(state(manual=[True, False]))) == [1.3, 1.6]
    assert (effect_rules("none").multiplier(state(util=[0.99])) == 1.0).all()


def test_unknown_rule_set_is_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown treatment effect 'magic'.*quota_pressure"):
        SimulationConfig(treatment_effect="magic")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for name in ("none", "small_accounts", "quota_pressure"):
        folder = tmp_path_factory.mktemp(f"treatment_{name}")
        simulate(SimulationConfig(accounts=500, months=6, seed=3, treatment_effect=name), folder)
        out[name] = folder
    return out


def truth(folder: Path) -> pd.DataFrame:
    tr = pd.read_parquet(folder / "_truth" / "expansion_probability.parquet")
    accounts = pd.read_parquet(folder / "accounts.parquet")[["account_id", "segment"]]
    tr = tr.merge(accounts, on="account_id")
    return tr.assign(uplift=tr["p_expand_60d_touched"] - tr["p_expand_60d"])


def test_no_effect_means_no_uplift(runs):
    tr = truth(runs["none"])
    assert len(tr) > 1000
    assert (tr["uplift"] == 0).all() and (tr["touch_effect"] == 1.0).all()
    effects = pd.read_parquet(runs["none"] / "_truth" / "outreach_effect.parquet")
    assert (effects["touch_effect"] == 1.0).all()


def test_small_accounts_rule_helps_only_small_accounts(runs):
    tr = truth(runs["small_accounts"])
    small = tr["segment"] == "smb"
    assert small.any() and (~small).any()
    assert (tr.loc[~small, "uplift"] == 0).all()
    assert (tr.loc[small, "uplift"] >= 0).all() and tr.loc[small, "uplift"].mean() > 0.005
    assert (tr.loc[small, "touch_effect"] == 2.5).all()


def test_quota_pressure_rule_puts_the_uplift_where_the_rule_says(runs):
    tr = truth(runs["quota_pressure"])
    by_effect = tr.groupby("touch_effect")["uplift"].mean()
    assert set(by_effect.index) == {1.0, 1.1, 3.0}
    assert by_effect[1.0] == 0  # already shopping: a touch adds nothing
    assert by_effect[3.0] > 5 * by_effect[1.1] > 0


def test_outreach_truth_lines_up_with_the_outreach_table(runs):
    folder = runs["small_accounts"]
    outreach = pd.read_parquet(folder / "outreach.parquet")
    effects = pd.read_parquet(folder / "_truth" / "outreach_effect.parquet")
    assert len(outreach) == len(effects) > 20
    assert (outreach["account_id"].to_numpy() == effects["account_id"].to_numpy()).all()
    assert (outreach["holdout"].to_numpy() == effects["holdout"].to_numpy()).all()
    segment = pd.read_parquet(folder / "accounts.parquet").set_index("account_id")["segment"]
    small = effects["account_id"].map(segment).eq("smb").to_numpy()
    assert (effects["touch_effect"].to_numpy() == np.where(small, 2.5, 1.0)).all()


def test_the_rules_drive_the_data_not_only_the_truth(runs):
    """Same seed, other effect rules: the same outreach draws, other expansions."""
    a = pd.read_parquet(runs["none"] / "subscriptions.parquet")
    b = pd.read_parquet(runs["small_accounts"] / "subscriptions.parquet")
    assert not a.equals(b)


def test_every_rule_set_is_named_after_its_key():
    assert all(rules.name == key for key, rules in EFFECT_RULE_SETS.items())
