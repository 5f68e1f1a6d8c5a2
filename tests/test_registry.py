"""The feature registry: a feature is one declaration, and adding one takes this test.

`test_a_new_feature_is_one_declaration` is the example docs/adding-a-feature.md shows: it
declares features in a temporary registry, builds them with the real builder and checks them
against the plain reference SQL generated from the same declarations.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from features.build import KEYS, build_feature_frame, feature_spec
from features.dataset import load_dataset
from features.reference import reference_sql
from features.registry import (
    DEFINITIONS_FINGERPRINT,
    FEATURE_SET_VERSION,
    FEATURES,
    Feature,
    Window,
    definitions_fingerprint,
    feature_names,
)

DATES = [pd.Timestamp("2024-09-15"), pd.Timestamp("2025-01-01")]

EXPORTS_7D = Feature(
    name="exports_7d",
    family="intent",
    description="Export signals in the last 7 days.",
    label="Exports in 7 days",
    kind="count",
    source="events",
    window=Window(7),
    where="a.signal = 'export'",
    requires="event_catalog",
)
# Two more in windows no registry feature uses yet: the builder makes their windows itself.
WORKFLOWS_45D = dataclasses.replace(
    EXPORTS_7D,
    name="distinct_workflows_45d",
    description="Workflows touched in the last 45 days.",
    label="Workflows in 45 days",
    kind="distinct",
    of="workflow",
    window=Window(45),
    where=None,
)
ACTIVE_DAYS_PREV_7D = dataclasses.replace(
    EXPORTS_7D,
    name="active_days_prev_7d",
    description="Days with any event 7 to 14 days ago.",
    label="Active days 7 to 14 days ago",
    kind="active_days",
    of="account",
    window=Window(7, offset=7),
    where=None,
    requires=None,
)
NEW = (EXPORTS_7D, WORKFLOWS_45D, ACTIVE_DAYS_PREV_7D)


@pytest.mark.integration
def test_a_new_feature_is_one_declaration(sim_data):
    ds = load_dataset(sim_data)
    registry = FEATURES + NEW
    frame = build_feature_frame(ds, DATES, registry=registry)
    # Model order: after the registry's features, before the per-quota columns.
    assert list(frame.columns) == KEYS + feature_spec(ds, registry).names
    assert frame.columns.get_loc("exports_7d") == len(KEYS) + len(feature_names([]))
    reference = reference_sql(NEW, registry=registry)
    for t in DATES:
        got = frame[frame.as_of == t]
        ref = ds.engine.df(reference, {"t": t.to_pydatetime()})
        both = got.merge(ref, on="account_id", suffixes=("", "_ref"))
        assert len(both) == len(got)
        for f in NEW:
            assert both[f.name].sum() > 0, f"{f.name} is zero everywhere: nothing was checked"
            np.testing.assert_array_equal(both[f.name], both[f"{f.name}_ref"], err_msg=f.name)
    # The registry's own features do not move when others are added.
    plain = build_feature_frame(ds, DATES)
    pd.testing.assert_frame_equal(frame[plain.columns], plain)


def test_the_window_rule():
    w = Window(30)
    assert (w.name, w.start, w.end) == ("30d", 30, 0)
    t = 20_000
    assert [d for d in range(t - 40, t + 2) if w.contains(d, t)] == list(range(t - 30, t))
    prev = Window(30, offset=30)
    assert prev.name == "prev30d"
    assert [d for d in range(t - 70, t) if prev.contains(d, t)] == list(range(t - 60, t - 30))
    assert w.sql("a.d") == "a.d >= dt.t - 30 AND a.d < dt.t - 0"
    with pytest.raises(ValueError):
        Window(0)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"kind": "state"}, "is not one of"),  # events have no state
        ({"window": None}, "needs a window"),
        ({"kind": "distinct", "of": "plan"}, "counts one of"),
        ({"kind": "active_days", "of": "user", "where": "a.power"}, "not supported"),
    ],
)
def test_a_declaration_that_cannot_be_built_is_refused(change, problem):
    with pytest.raises(ValueError, match=problem):
        dataclasses.replace(EXPORTS_7D, **change)


def test_duplicate_names_are_refused(tiny_dataset):
    with pytest.raises(ValueError, match="declared twice"):
        build_feature_frame(tiny_dataset, ["2024-02-01"], registry=(*FEATURES, FEATURES[-1]))


@pytest.fixture
def tiny_dataset(make_dataset):
    return load_dataset(make_dataset())


def test_changed_definitions_need_a_new_feature_set_version():
    """Models record FEATURE_SET_VERSION and serving refuses another one. When a definition
    changes, bump FEATURE_SET_VERSION (features/registry.py) and record the new fingerprint."""
    assert definitions_fingerprint() == DEFINITIONS_FINGERPRINT, (
        f"the feature definitions changed: bump FEATURE_SET_VERSION (now {FEATURE_SET_VERSION})"
        f" and set DEFINITIONS_FINGERPRINT = {definitions_fingerprint()!r}"
    )
    # Labels and descriptions are not definitions: changing them keeps the version.
    relabelled = tuple(dataclasses.replace(f, label=f.label + "!") for f in FEATURES)
    assert definitions_fingerprint(relabelled) == DEFINITIONS_FINGERPRINT
    redefined = (dataclasses.replace(FEATURES[0], value="s.tier + 1"), *FEATURES[1:])
    assert definitions_fingerprint(redefined) != DEFINITIONS_FINGERPRINT
