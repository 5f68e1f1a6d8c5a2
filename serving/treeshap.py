"""Exact TreeSHAP for LightGBM models, precomputed per leaf at load (FastTreeSHAP v2 style).

LightGBM's `predict(pred_contrib=True)` (the same algorithm as shap's TreeExplainer) walks every
root-to-leaf path for every row and rebuilds the path's Shapley weights each time. Those weights
depend on the row only through which path conditions it satisfies, so they can be computed once
per model (Yang 2021, "Fast TreeSHAP", algorithm v2). For a leaf with value `v` whose path splits
on the distinct features `P` (k of them) with cover fractions `z_j` (the product of
child count / parent count over the path's splits on `j`), a row satisfying the path's
conditions on the features `O` gives each path feature (path-dependent TreeSHAP):

    i in O:      (1 - z_i) * Z(O) * A(O - {i})
    i not in O:      - Z(O) * A(O)

with `Z(O) = prod_{j in P - O} z_j` and `A(Q) = v * sum_{S <= Q} |S|!(k-|S|-1)!/k! *
prod_{j in Q - S} z_j`. Both cases are tabulated at load: 2^k x k numbers per leaf (every
subset O, every path feature). A row then costs one comparison per split and, per leaf, k
additions from one row of its table, instead of LightGBM's O(k^2) path unwinding with divisions
per leaf. The project's trees are at most 5 deep: at most 160 numbers per leaf (0.8 MB for a
69-tree propensity model).

Decisions follow LightGBM's C++ `NumericalDecision` / `CategoricalDecision` exactly: values with
|x| <= 1e-35 read as 0 (the C API drops them as zeros); a numerical NaN is 0 unless the split's
missing type is NaN; missing type Zero / NaN sends zeros / NaN to the default side; a
categorical value goes left when its integer part is in the split's bitset, NaN and negatives go
right. The output has `pred_contrib`'s layout: one column per feature and the expected value
last.

The row loops are compiled with numba (`cache=True`, compiled by a warm-up call when the
explainer is built, never per request); without numba the same arithmetic runs in numpy,
vectorized over rows (correct, but slower than LightGBM for small batches).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import lightgbm as lgb
import numpy as np

# numba is optional (the numpy path gives the same values) and imported only when an explainer
# is built: importing it costs about half a second that CLI commands need not pay.
HAVE_NUMBA = importlib.util.find_spec("numba") is not None

# LightGBM's kZeroThreshold is the float 1e-35f, compared after promotion to double.
K_ZERO = float(np.float32(1e-35))
MISSING = {"None": 0, "Zero": 1, "NaN": 2}
# 2^k table entries per leaf: refuse models whose paths have more distinct features than this
# (deep unconstrained trees) instead of allocating gigabytes; callers fall back to pred_contrib.
MAX_PATH_FEATURES = 16
MAX_TABLE_BYTES = 256 * 2**20
# Rows at or above which the numba kernel runs rows in parallel threads.
PARALLEL_ROWS = 512


class UnsupportedModel(ValueError):
    """A LightGBM model this explainer does not handle (the caller uses pred_contrib)."""


@dataclass
class _Flat:
    """All trees flattened into arrays (the numba kernel's inputs).

    Internal nodes of each tree are stored parent-before-child from `tree_node_start[t]`;
    `node_parent` is the tree-local index of the parent (-1 at the root). Leaves of each tree
    are stored from `tree_leaf_start[t]`; a leaf's distinct path features (slots 0..k-1, in
    order of first appearance from the root) start at `leaf_slot_start`, its 2^k table at
    `leaf_table_start`.
    """

    tree_node_start: np.ndarray
    tree_leaf_start: np.ndarray
    node_feature: np.ndarray
    node_threshold: np.ndarray
    node_categorical: np.ndarray
    node_missing: np.ndarray
    node_default_left: np.ndarray
    node_cat_start: np.ndarray
    node_cat_len: np.ndarray
    node_parent: np.ndarray
    node_is_left: np.ndarray
    node_slot: np.ndarray
    cat_bits: np.ndarray
    leaf_parent: np.ndarray
    leaf_is_left: np.ndarray
    leaf_k: np.ndarray
    leaf_slot_start: np.ndarray
    leaf_table_start: np.ndarray
    slot_feature: np.ndarray
    slot_zero: np.ndarray
    table: np.ndarray
    max_nodes: int


def _parse(dump: dict[str, Any]) -> tuple[_Flat, float]:
    """Flatten `booster.dump_model()` and precompute the per-leaf tables; also the base value."""
    if dump.get("num_tree_per_iteration", 1) != 1:
        raise UnsupportedModel("multiclass models are not supported")
    if dump.get("average_output"):
        raise UnsupportedModel("random-forest (average_output) models are not supported")

    tree_node_start, tree_leaf_start = [0], [0]
    nodes: list[tuple] = []  # feature, threshold, categorical, missing, default_left, cat, ...
    cat_bits: list[int] = []
    leaves: list[tuple] = []  # parent, is_left, value, slot features, slot zero fractions
    expected = 0.0
    for tree in dump["tree_info"]:
        root = tree["tree_structure"]
        if "split_index" not in root:  # a single leaf: a constant, no contributions
            expected += float(root["leaf_value"])
            tree_node_start.append(len(nodes))
            tree_leaf_start.append(len(leaves))
            continue
        total = float(root["internal_count"])
        tree_expected = 0.0  # summed per tree, then over trees, as LightGBM does
        base = len(nodes)
        # Breadth-first: a parent is always stored before its children.
        queue: list[tuple[dict, int, bool, list[int], list[float]]] = [(root, -1, True, [], [])]
        head = 0
        while head < len(queue):
            node, parent, is_left, feats, zeros = queue[head]
            head += 1
            if "split_index" not in node:
                if "leaf_const" in node:  # a linear model in the leaf (linear_tree=True)
                    raise UnsupportedModel("linear trees are not supported")
                if len(feats) > MAX_PATH_FEATURES:
                    raise UnsupportedModel(
                        f"a path splits on {len(feats)} distinct features (more than "
                        f"{MAX_PATH_FEATURES}): train shallower trees (max_depth)"
                    )
                value = float(node["leaf_value"])
                leaves.append((parent, is_left, value, feats, zeros))
                tree_expected += float(node["leaf_count"]) / total * value  # ExpectedValue()
                continue
            feature = int(node["split_feature"])
            slot = feats.index(feature) if feature in feats else len(feats)
            here = len(nodes) - base
            if node["decision_type"] == "==":
                cats = [int(c) for c in str(node["threshold"]).split("||")]
                words = np.zeros(max(cats) // 32 + 1, dtype=np.uint64)
                for c in cats:
                    words[c // 32] |= np.uint64(1) << np.uint64(c % 32)
                cat = (True, len(cat_bits), len(words))
                cat_bits.extend(int(w) for w in words)
                threshold = 0.0
            elif node["decision_type"] == "<=":
                cat = (False, 0, 0)
                threshold = float(node["threshold"])
            else:
                raise UnsupportedModel(f"unknown decision type {node['decision_type']!r}")
            nodes.append(
                (
                    feature,
                    threshold,
                    cat[0],
                    MISSING[node["missing_type"]],
                    bool(node["default_left"]),
                    cat[1],
                    cat[2],
                    parent,
                    is_left,
                    slot,
                )
            )
            count = float(node["internal_count"])
            for child, left in ((node["left_child"], True), (node["right_child"], False)):
                fraction = _count(child) / count
                f2, z2 = list(feats), list(zeros)
                if slot < len(f2):
                    z2[slot] *= fraction  # a feature split again: fractions multiply
                else:
                    f2.append(feature)
                    z2.append(fraction)
                queue.append((child, here, left, f2, z2))
        expected += tree_expected
        tree_node_start.append(len(nodes))
        tree_leaf_start.append(len(leaves))

    flat = _flatten(nodes, cat_bits, leaves, tree_node_start, tree_leaf_start)
    return flat, expected


def _count(node: dict) -> float:
    return float(node["internal_count"] if "split_index" in node else node["leaf_count"])


def _flatten(nodes, cat_bits, leaves, tree_node_start, tree_leaf_start) -> _Flat:
    col = list(zip(*nodes, strict=True)) if nodes else [[]] * 10
    ks = np.array([len(leaf[3]) for leaf in leaves], dtype=np.int64)
    slot_start = np.concatenate([[0], np.cumsum(ks)]).astype(np.int64)
    table_start = np.concatenate([[0], np.cumsum((1 << ks) * ks)]).astype(np.int64)
    if table_start[-1] * 8 > MAX_TABLE_BYTES:
        raise UnsupportedModel(
            f"the explainer's tables would take {table_start[-1] * 8 / 2**20:,.0f} MiB (more "
            f"than {MAX_TABLE_BYTES / 2**20:,.0f}): train shallower trees (max_depth)"
        )
    slot_feature = np.array([f for leaf in leaves for f in leaf[3]], dtype=np.int64)
    slot_zero = np.array([z for leaf in leaves for z in leaf[4]], dtype=np.float64)
    values = np.array([leaf[2] for leaf in leaves], dtype=np.float64)
    table = _leaf_tables(ks, slot_start, table_start, slot_zero, values)
    starts = np.array(tree_node_start, dtype=np.int64)
    return _Flat(
        tree_node_start=starts,
        tree_leaf_start=np.array(tree_leaf_start, dtype=np.int64),
        node_feature=np.array(col[0], dtype=np.int64),
        node_threshold=np.array(col[1], dtype=np.float64),
        node_categorical=np.array(col[2], dtype=np.bool_),
        node_missing=np.array(col[3], dtype=np.int64),
        node_default_left=np.array(col[4], dtype=np.bool_),
        node_cat_start=np.array(col[5], dtype=np.int64),
        node_cat_len=np.array(col[6], dtype=np.int64),
        node_parent=np.array(col[7], dtype=np.int64),
        node_is_left=np.array(col[8], dtype=np.bool_),
        node_slot=np.array(col[9], dtype=np.int64),
        cat_bits=np.array(cat_bits, dtype=np.uint64),
        leaf_parent=np.array([leaf[0] for leaf in leaves], dtype=np.int64),
        leaf_is_left=np.array([leaf[1] for leaf in leaves], dtype=np.bool_),
        leaf_k=ks,
        leaf_slot_start=slot_start[:-1].copy(),
        leaf_table_start=table_start[:-1].copy(),
        slot_feature=slot_feature,
        slot_zero=slot_zero,
        table=table,
        max_nodes=int(np.diff(starts).max(initial=0)),
    )


def _leaf_tables(ks, slot_start, table_start, slot_zero, values) -> np.ndarray:
    """Each leaf's contribution to each of its path features, for every subset followed.

    Row-major (2^k, k) per leaf: entry [O, r] is (1 - z_r) Z(O) A(O - {r}) when slot r is in O,
    else -Z(O) A(O), with A(Q) = v sum_{S <= Q} w(|S|, k) prod_{j in Q - S} z_j and
    Z(O) = prod_{j not in O} z_j. The sum in A groups subsets by size: prod_{j in Q} (z_j + t)
    has coefficient sum_{|S|=s} prod_{Q - S} z_j at t^s. Leaves with the same k go together.
    """
    table = np.zeros(int(table_start[-1]), dtype=np.float64)
    for k in np.unique(ks):
        k = int(k)
        which = np.flatnonzero(ks == k)
        if k == 0:
            continue  # a path without splits contributes nothing
        z = slot_zero[slot_start[which][:, None] + np.arange(k)]  # (leaves, k)
        masks = np.arange(1 << k)
        member = ((masks[:, None] >> np.arange(k)) & 1) == 1  # (2^k, k)
        poly = np.zeros((len(which), 1 << k, k + 1))
        poly[:, :, 0] = 1.0
        for r in range(k):
            # multiply by (z_r + t) where slot r is in the subset
            shifted = np.concatenate([np.zeros_like(poly[:, :, :1]), poly[:, :, :-1]], axis=2)
            grown = poly * z[:, r][:, None, None] + shifted
            poly = np.where(member[None, :, r, None], grown, poly)
        w = np.array(
            [math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k) for s in range(k)]
            + [0.0]  # |S| = k cannot occur: S never holds every path feature
        )
        a = (poly @ w) * values[which][:, None]  # A(Q): (leaves, 2^k)
        # Z(O): the cover fractions of the path features the row does not follow
        z_out = np.prod(np.where(member[None, :, :], 1.0, z[:, None, :]), axis=2)
        without = masks[:, None] ^ (1 << np.arange(k))[None, :]  # O - {r} or O + {r}: (2^k, k)
        inside = (1.0 - z[:, None, :]) * z_out[:, :, None] * a[:, without]
        outside = -(z_out * a)[:, :, None]
        entries = np.where(member[None, :, :], inside, outside)  # (leaves, 2^k, k)
        offsets = table_start[which][:, None] + np.arange((1 << k) * k)[None, :]
        table[offsets] = entries.reshape(len(which), -1)
    return table


# --- the row kernels ----------------------------------------------------------------------


@functools.cache
def _compiled_kernel():
    """`_explain_rows` compiled by numba: cached on disk, releasing the GIL for threads."""
    import numba

    return numba.njit(cache=True, nogil=True)(_explain_rows)


def _explain_rows(
    x,
    out,
    max_nodes,
    tree_node_start,
    tree_leaf_start,
    node_feature,
    node_threshold,
    node_categorical,
    node_missing,
    node_default_left,
    node_cat_start,
    node_cat_len,
    node_parent,
    node_is_left,
    node_slot,
    cat_bits,
    leaf_parent,
    leaf_is_left,
    leaf_k,
    leaf_slot_start,
    leaf_table_start,
    slot_feature,
    slot_zero,
    table,
):
    """Add every tree's contributions for each row of `x` into the same row of `out`."""
    mask = np.empty(max(max_nodes, 1), dtype=np.int64)  # path features followed, per node
    go = np.empty(max(max_nodes, 1), dtype=np.bool_)  # the row goes left at the node
    full = (1 << 62) - 1
    for i in range(x.shape[0]):
        for t in range(len(tree_node_start) - 1):
            base = tree_node_start[t]
            for j in range(tree_node_start[t + 1] - base):
                n = base + j
                p = node_parent[n]
                if p < 0:
                    mask[j] = full
                else:
                    off = np.int64(go[p] != node_is_left[n])
                    mask[j] = mask[p] & ~(off << node_slot[base + p])
                # LightGBM's decision, inline (a call per node passing arrays costs more)
                v = x[i, node_feature[n]]
                if -K_ZERO <= v <= K_ZERO:
                    v = 0.0  # the C API drops such values as zeros before predicting
                if node_categorical[n]:
                    left = False  # NaN, negative and unseen categories go right
                    if v > -1.0 and v < 2147483648.0:  # False for NaN
                        c = int(v)  # C's static_cast<int>: truncation toward zero
                        word = c >> 5
                        if word < node_cat_len[n]:
                            bits = cat_bits[node_cat_start[n] + word]
                            left = (bits >> np.uint64(c & 31)) & np.uint64(1) == np.uint64(1)
                    go[j] = left
                    continue
                missing = node_missing[n]
                if np.isnan(v):
                    if missing == 2:
                        go[j] = node_default_left[n]
                        continue
                    v = 0.0
                if missing == 1 and v == 0.0:
                    go[j] = node_default_left[n]
                else:
                    go[j] = v <= node_threshold[n]
            for leaf in range(tree_leaf_start[t], tree_leaf_start[t + 1]):
                k = leaf_k[leaf]
                if k == 0:
                    continue
                p = leaf_parent[leaf]
                # branch-free: clear the parent's slot when the row went the other way
                off = np.int64(go[p] != leaf_is_left[leaf])
                m = mask[p] & ~(off << node_slot[base + p]) & ((1 << k) - 1)
                s0 = leaf_slot_start[leaf]
                row = leaf_table_start[leaf] + m * k
                for r in range(k):
                    out[i, slot_feature[s0 + r]] += table[row + r]


# --- the same arithmetic in numpy, vectorized over rows (no numba) --------------------------


def _goes_left_numpy(v: np.ndarray, n: int, f: _Flat) -> np.ndarray:
    if f.node_categorical[n]:
        ok = ~np.isnan(v) & (v > -1.0) & (v < 2147483648.0)
        c = np.where(ok, v, 0.0).astype(np.int64)  # truncation toward zero, as in C
        word = c >> 5
        ok &= word < f.node_cat_len[n]
        bits = f.cat_bits[f.node_cat_start[n] + np.minimum(word, f.node_cat_len[n] - 1)]
        return ok & (((bits >> (c & 31).astype(np.uint64)) & np.uint64(1)) == 1)
    missing, default_left = f.node_missing[n], f.node_default_left[n]
    nan = np.isnan(v)
    if missing == 2:
        return np.where(nan, default_left, v <= f.node_threshold[n])
    v = np.where(nan, 0.0, v)
    if missing == 1:
        return np.where(np.abs(v) <= K_ZERO, default_left, v <= f.node_threshold[n])
    return v <= f.node_threshold[n]


def _explain_numpy(x: np.ndarray, out: np.ndarray, f: _Flat) -> None:
    """`_explain_rows` with rows as vectors: one numpy operation per node, leaf and slot."""
    x = np.where(np.abs(x) <= K_ZERO, 0.0, x)  # NaN stays NaN
    full = (1 << 62) - 1
    for t in range(len(f.tree_node_start) - 1):
        base, size = f.tree_node_start[t], f.tree_node_start[t + 1] - f.tree_node_start[t]
        mask = np.empty((len(x), size), dtype=np.int64)
        go = np.empty((len(x), size), dtype=np.bool_)
        for j in range(size):
            n, p = base + j, f.node_parent[base + j]
            if p < 0:
                mask[:, j] = full
            else:
                cleared = mask[:, p] & ~(1 << int(f.node_slot[base + p]))
                mask[:, j] = np.where(go[:, p] == f.node_is_left[n], mask[:, p], cleared)
            go[:, j] = _goes_left_numpy(x[:, f.node_feature[n]], n, f)
        for leaf in range(f.tree_leaf_start[t], f.tree_leaf_start[t + 1]):
            k = int(f.leaf_k[leaf])
            if k == 0:
                continue
            p = f.leaf_parent[leaf]
            cleared = mask[:, p] & ~(1 << int(f.node_slot[base + p]))
            m = np.where(go[:, p] == f.leaf_is_left[leaf], mask[:, p], cleared) & ((1 << k) - 1)
            s0, row = f.leaf_slot_start[leaf], f.leaf_table_start[leaf] + m * k
            for r in range(k):
                out[:, f.slot_feature[s0 + r]] += f.table[row + r]


# --- the explainer --------------------------------------------------------------------------


class TreeShap:
    """Exact `pred_contrib` for one LightGBM booster, with its tables built once.

    `backend="auto"` uses numba when installed, else numpy; "numba" / "numpy" force one.
    Raises `UnsupportedModel` for models it does not handle (multiclass, random forest,
    linear trees, paths with more than MAX_PATH_FEATURES distinct features, tables over
    MAX_TABLE_BYTES).
    """

    def __init__(
        self, booster: lgb.Booster, backend: Literal["auto", "numba", "numpy"] = "auto"
    ) -> None:
        if backend == "numba" and not HAVE_NUMBA:
            raise UnsupportedModel("backend='numba' but numba is not installed")
        if backend == "auto":
            backend = "numba" if HAVE_NUMBA else "numpy"
        self.backend = backend
        # dump_model and predict both default to the best iteration when there is one.
        dump = booster.dump_model()
        self.n_features = int(dump["max_feature_idx"]) + 1
        self._flat, self.expected_value = _parse(dump)
        self.n_trees = len(dump["tree_info"])
        if self.backend == "numba":
            self.shap_values(np.zeros((1, self.n_features)))  # compile (or load) now, not later

    @property
    def table_bytes(self) -> int:
        """Memory held by the precomputed per-leaf tables."""
        return int(self._flat.table.nbytes)

    def shap_values(self, x: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Contributions per row, `pred_contrib`'s layout: features, then the expected value.

        `x` is LightGBM's numeric input (categories as their integer codes, NaN for missing or
        unknown). Batches of PARALLEL_ROWS rows or more are split over `threads` threads
        (default: the usable cores); the compiled kernel releases the GIL.
        """
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(
                f"expected a 2-d array with {self.n_features} feature columns, got shape {x.shape}"
            )
        out = np.zeros((x.shape[0], self.n_features + 1))
        if self.backend == "numpy":
            _explain_numpy(x, out, self._flat)
        else:
            threads = threads or len(os.sched_getaffinity(0))
            chunks = min(threads, max(1, x.shape[0] // (PARALLEL_ROWS // 2)))
            if chunks <= 1 or x.shape[0] < PARALLEL_ROWS:
                self._run(x, out)
            else:
                bounds = np.linspace(0, x.shape[0], chunks + 1).astype(int)
                with ThreadPoolExecutor(chunks) as pool:
                    list(
                        pool.map(
                            lambda i: self._run(
                                x[bounds[i] : bounds[i + 1]], out[bounds[i] : bounds[i + 1]]
                            ),
                            range(chunks),
                        )
                    )
        out[:, -1] = self.expected_value
        return out

    def _run(self, x: np.ndarray, out: np.ndarray) -> None:
        f = self._flat
        _compiled_kernel()(
            x,
            out,
            f.max_nodes,
            f.tree_node_start,
            f.tree_leaf_start,
            f.node_feature,
            f.node_threshold,
            f.node_categorical,
            f.node_missing,
            f.node_default_left,
            f.node_cat_start,
            f.node_cat_len,
            f.node_parent,
            f.node_is_left,
            f.node_slot,
            f.cat_bits,
            f.leaf_parent,
            f.leaf_is_left,
            f.leaf_k,
            f.leaf_slot_start,
            f.leaf_table_start,
            f.slot_feature,
            f.slot_zero,
            f.table,
        )
