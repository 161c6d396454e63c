"""Ranking metrics of the papers' protocol (public API): UAUC, NDCG@k, HR@k over candidate lists.

Each row is one user: a score per candidate, the positive at column pos_index, the rest negatives.
Ties are pessimistic: a negative scoring equal to the positive ranks above it, and counts as a mis-ordered
pair for UAUC. So a constant scorer gets HR@k = 0 and UAUC = 0, never a lucky tie-break.
"""

from __future__ import annotations

import numpy as np

from toolkit.errors import ToolkitError

CUTOFFS = (5, 10, 20)
METRIC_NAMES = ("uauc",) + tuple(f"ndcg@{k}" for k in CUTOFFS) + tuple(f"hr@{k}" for k in CUTOFFS)


def _as_array(x) -> np.ndarray:
    """numpy view of scores: torch tensors (any device, grad, bf16/fp16) become CPU float32 arrays."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def positive_rank(scores, pos_index: int = 0) -> np.ndarray:
    """0-based rank of the positive in each row [n_users]: the number of negatives scoring >= it.

    Written as "not below" so NaN is pessimistic too: a NaN negative ranks above, a NaN positive ranks last.
    """
    scores = _as_array(scores)
    pos = scores[:, [pos_index]]  # [N, 1]
    return (~(scores < pos)).sum(axis=1) - 1  # minus the positive itself


def ranking_metrics(scores, pos_index: int = 0, labels=None) -> dict[str, float]:
    """uauc, ndcg@5/10/20, hr@5/10/20 (and `auc` when labels are given) as Python floats.

    scores: [n_users, n_candidates] floats (numpy array, array-like, or a torch tensor).
    labels: optional 0/1 array of the same shape; adds `auc`, the pointwise ROC-AUC over all entries
    (the usual definition, where a tied positive/negative pair counts one half).
    """
    scores = _as_array(scores)
    if scores.ndim != 2:
        raise ToolkitError(f"scores must be 2-D [n_users, n_candidates], got shape {scores.shape}")
    n_users, n_cands = scores.shape
    if n_users == 0 or n_cands < 2:
        raise ToolkitError(f"scores need at least 1 user and 2 candidates, got shape {scores.shape}")
    if not -n_cands <= pos_index < n_cands:
        raise ToolkitError(f"pos_index {pos_index} out of range for {n_cands} candidates")
    pos_index %= n_cands
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.complexfloating):
        raise ToolkitError(f"scores must be real numbers, got dtype {scores.dtype}")
    if np.issubdtype(scores.dtype, np.floating):
        nan = np.isnan(scores)
        if nan.any():
            first = int(np.argmax(nan.any(axis=1)))
            raise ToolkitError(f"scores contain {int(nan.sum())} NaN values (first in row {first})")
    rank = positive_rank(scores, pos_index)  # [N] in 0..C-1
    out = {"uauc": float(np.mean((n_cands - 1 - rank) / (n_cands - 1)))}
    gain = 1.0 / np.log2(rank + 2.0)  # [N]
    for k in CUTOFFS:
        out[f"ndcg@{k}"] = float(np.mean(np.where(rank < k, gain, 0.0)))
    for k in CUTOFFS:
        out[f"hr@{k}"] = float(np.mean(rank < k))
    if labels is not None:
        out["auc"] = roc_auc(scores, labels)
    return out


def roc_auc(scores, labels) -> float:
    """Pointwise ROC-AUC over all entries (Mann-Whitney U; a tied positive/negative pair counts one half)."""
    scores = _as_array(scores).reshape(-1)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)  # float inputs keep their width: sorting float32 is faster
    labels = _as_array(labels)
    if labels.size != scores.size:
        raise ToolkitError(f"labels must match scores: {labels.size} labels for {scores.size} scores")
    labels = labels.reshape(-1)
    if np.isnan(scores).any():
        raise ToolkitError(f"scores contain {int(np.isnan(scores).sum())} NaN values")
    if not ((labels == 0) | (labels == 1)).all():
        raise ToolkitError("labels must be 0 or 1")
    positive = labels == 1
    n_pos = int(positive.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ToolkitError(f"auc needs both classes in labels, got {n_pos} positives and {n_neg} negatives")
    # P(positive > negative) + 1/2 P(tie): sort the negatives, locate each positive (sorting beats argsort here)
    neg = np.sort(scores[~positive])
    pos = scores[positive]
    below = np.searchsorted(neg, pos, side="left")  # negatives strictly below each positive
    tied = np.searchsorted(neg, pos, side="right") - below
    return float((below.sum() + 0.5 * tied.sum()) / (n_pos * n_neg))
