"""Evaluate the way the scores are used: ranking quality at the top of the list, calibration,
and the rule-based baseline beside the model on the same rows."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)

if TYPE_CHECKING:
    import pandas as pd

TOP_SHARES = (0.05, 0.10, 0.20)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean prediction| over equal-width probability bins, weighted."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(y[mask].mean() - p[mask].mean())
    return float(ece)


def top_share_mask(score: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """The top `share` of rows by score; ties broken by a seeded shuffle, not by row order."""
    n = max(1, round(len(score) * share))
    order = np.lexsort((np.random.default_rng(seed).random(len(score)), -np.asarray(score)))
    mask = np.zeros(len(score), bool)
    mask[order[:n]] = True
    return mask


def ranking_metrics(y: np.ndarray, score: np.ndarray, prefix: str = "") -> dict[str, float]:
    """ROC-AUC, PR-AUC and precision / lift in the top 5, 10 and 20% of accounts."""
    y = np.asarray(y, int)
    base = y.mean() if len(y) else float("nan")
    out = {}
    if 0 < y.sum() < len(y):
        out[f"{prefix}roc_auc"] = float(roc_auc_score(y, score))
        out[f"{prefix}pr_auc"] = float(average_precision_score(y, score))
    for share in TOP_SHARES:
        pct = int(share * 100)
        precision = float(y[top_share_mask(score, share)].mean())
        out[f"{prefix}precision_at_{pct}"] = precision
        out[f"{prefix}lift_at_{pct}"] = precision / base if base else float("nan")
    return out


def bootstrap_auc_interval(
    y: np.ndarray, score: np.ndarray, seed: int, samples: int = 1000, level: float = 0.95
) -> tuple[float, float]:
    """A percentile bootstrap interval of ROC-AUC over the rows (resampled with replacement).

    Seeded, so the same rows give the same interval. Every resample is a vector of row counts
    (multinomial), and its AUC is computed from the rows sorted once by score: the share of
    (positive, negative) pairs ranked right, ties counting half. Resamples holding one class
    have no AUC and are skipped; (nan, nan) when the rows themselves hold one class.
    """
    y, score = np.asarray(y, int), np.asarray(score, float)
    n = len(y)
    if not 0 < y.sum() < n:
        return float("nan"), float("nan")
    order = np.argsort(score, kind="stable")
    ordered, positive = score[order], y[order].astype(bool)
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # tied scores: one group
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=samples)
    counts = counts[:, order]
    pos = np.add.reduceat(np.where(positive, counts, 0), starts, axis=1).astype(float)
    neg = np.add.reduceat(np.where(positive, 0, counts), starts, axis=1).astype(float)
    below = np.cumsum(neg, axis=1) - neg  # negatives scored lower than each group
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    right = (pos * (below + 0.5 * neg)).sum(axis=1)
    aucs = right[pairs > 0] / pairs[pairs > 0]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(aucs, [tail, 100 - tail])
    return float(low), float(high)


def probability_metrics(y: np.ndarray, p: np.ndarray, prefix: str = "") -> dict[str, float]:
    """Brier score, expected calibration error and log loss of calibrated probabilities."""
    y = np.asarray(y, int)
    p = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    return {
        f"{prefix}brier": float(brier_score_loss(y, p)),
        f"{prefix}ece": expected_calibration_error(y, p),
        f"{prefix}log_loss": float(log_loss(y, p, labels=[0, 1])),
    }


def plot_calibration(y: ArrayLike, p: ArrayLike, path: Path, title: str, bins: int = 10) -> Path:
    y, p = np.asarray(y, float), np.asarray(p, float)
    edges = np.quantile(p, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges[1:-1], p, side="right"), 0, bins - 1)
    pred = [p[which == b].mean() for b in range(bins) if (which == b).any()]
    obs = [y[which == b].mean() for b in range(bins) if (which == b).any()]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    top = max(max(pred, default=0), max(obs, default=0)) * 1.1 or 1
    ax.plot([0, top], [0, top], ls="--", color="grey", label="perfect")
    ax.plot(pred, obs, marker="o", label="model")
    ax.set(xlabel="predicted probability", ylabel="observed rate", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_gains(y: ArrayLike, scores: dict[str, np.ndarray], path: Path, title: str) -> Path:
    """Cumulative gains: share of all positives captured in the top x% of accounts."""
    y = np.asarray(y, float)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    share = np.arange(1, len(y) + 1) / len(y)
    for label, s in scores.items():
        order = np.lexsort((np.random.default_rng(0).random(len(s)), -np.asarray(s)))
        ax.plot(share, np.cumsum(y[order]) / max(y.sum(), 1), label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="random")
    ax.set(xlabel="share of accounts contacted", ylabel="share of expansions captured", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_importance(
    names: list[str], gains: np.ndarray, path: Path, title: str, xlabel: str = "total gain"
) -> Path:
    order = np.argsort(gains)[-20:]
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.barh([names[i] for i in order], gains[order])
    ax.set(xlabel=xlabel, title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_shap_summary(
    contrib: np.ndarray, frame: pd.DataFrame, names: list[str], path: Path
) -> Path:
    """SHAP beeswarm of the margin contributions (shap's own plot)."""
    import shap

    numeric = frame[names].copy()
    for col in numeric.columns:
        if str(numeric[col].dtype) == "category":
            numeric[col] = numeric[col].cat.codes.astype(float)
    plt.figure()
    shap.summary_plot(contrib, numeric, feature_names=names, show=False, max_display=15)
    plt.title("SHAP summary (log-odds)")
    plt.tight_layout()
    plt.savefig(path, dpi=110)
    plt.close("all")
    return path
