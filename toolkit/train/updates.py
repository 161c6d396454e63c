"""Is a cloud update specific to the user? Score one split with four updates and compare, row by row.

  own       each row's fresh update, from its own history (what the cloud sends)
  mean      one update for everyone: the mean of every row's update (a correction that carries no user signal)
  shuffled  another user's update (a fixed random permutation of the rows)
  none      the all-zero update: the device model alone

If `own` beats `mean` and `shuffled` by more than their paired standard error, the update carries per-user signal;
if `mean` does as well as `own`, the cloud only learned a global shift the device could have learned itself
(the paper's GCN, `cloud=paper`, measured as this case on Beauty: docs/models.md §4.2). Paired s.e.: the standard
error over rows of the per-row NDCG@10 difference, since the variants score the very same rows.
"""

from __future__ import annotations

import numpy as np
import torch

from toolkit.data.store import Dataset
from toolkit.metrics import positive_rank, ranking_metrics
from toolkit.train.loop import EVAL_BATCH, context_rows


@torch.no_grad()
def _updates(model, ctx: np.ndarray) -> torch.Tensor:
    out = [model.cloud_update(torch.tensor(ctx[i:i + EVAL_BATCH])) for i in range(0, len(ctx), EVAL_BATCH)]
    return torch.cat(out) if out else torch.zeros((0, 0))


@torch.no_grad()
def _scores(model, seqs: np.ndarray, cands: np.ndarray, upd: torch.Tensor) -> np.ndarray:
    out = []
    for i in range(0, len(seqs), EVAL_BATCH):
        out.append(model.score_update(torch.tensor(seqs[i:i + EVAL_BATCH]), torch.tensor(cands[i:i + EVAL_BATCH]),
                                      upd[i:i + EVAL_BATCH]).float().numpy())
    return np.concatenate(out)


def _ndcg10(scores: np.ndarray) -> np.ndarray:
    rank = positive_rank(scores, 0)
    return np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0)


def _paired(diff: np.ndarray) -> dict:
    """Mean of a per-row difference and its paired standard error."""
    n = len(diff)
    return {"ndcg@10": float(diff.mean()) if n else 0.0,
            "se": float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0}


def _by_history(seqs: np.ndarray, ctx: np.ndarray | None, per_row: dict) -> dict:
    """The own update's gain, split by whether the cloud's history holds clicks the device window does not.

    Where it holds none (a short history: the cloud reads the same clicks as the device), an update can only add
    capacity, not information; where it holds more, it can also add what the device has forgotten."""
    seen = (seqs != 0).sum(1)
    more = (ctx != 0).sum(1) > seen if ctx is not None else np.zeros(len(seqs), bool)
    out = {}
    for name, rows in (("cloud_sees_more", more), ("same_clicks", ~more)):
        out[name] = {"rows": int(rows.sum()), "own_ndcg@10": float(per_row["own"][rows].mean()) if rows.any() else 0.0,
                     "own_minus_none": _paired(per_row["own"][rows] - per_row["none"][rows]),
                     "own_minus_mean": _paired(per_row["own"][rows] - per_row["mean"][rows])}
    return out


def update_ablation(model, ds: Dataset, split: str, seed: int = 0) -> dict:
    """{"variants": {name: ranking metrics}, "own_minus": {name: {"ndcg@10", "se"}}, "by_history", "rows",
    "update_floats", "update_norm": {"mean_row", "of_mean"}} for a cloud model (models/cloud.py) on `split`."""
    model = model.cpu().eval()
    seqs, cands = ds.split(split)
    ctx = context_rows(model, ds, split)
    own = _updates(model, seqs if ctx is None else ctx)  # context_len 0 (cloud=paper): the cloud reads the window
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(own)))
    updates = {"own": own, "mean": own.mean(0, keepdim=True).expand_as(own), "shuffled": own[perm],
               "none": torch.zeros_like(own)}
    scores = {k: _scores(model, seqs, cands, u) for k, u in updates.items()}
    per_row = {k: _ndcg10(s) for k, s in scores.items()}
    own_minus = {k: _paired(per_row["own"] - per_row[k]) for k in ("mean", "shuffled", "none")}
    return {"split": split, "rows": int(len(seqs)), "update_floats": int(own.shape[1]),
            "variants": {k: ranking_metrics(s, pos_index=0) for k, s in scores.items()},
            "own_minus": own_minus,
            "by_history": _by_history(seqs, ctx, per_row),
            "update_norm": {"mean_row": float(own.norm(dim=1).mean()), "of_mean": float(own.mean(0).norm())},
            "shuffle_seed": seed}
