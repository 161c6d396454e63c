"""What one training step optimises: fresh negatives, and the loss of a batch under a recipe (toolkit.train.recipes).

A batch's loss is the sum of its terms over (rows x positions per row): one term per (row, real position), a BCE
term the mean over its 1 + K candidates. For the paper recipe that is exactly BCEWithLogitsLoss over [B, 5].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from toolkit.train.recipes import Recipe


class NegativeSampler:
    """Fresh negatives for training rows: uniform over the items each user never touched, distinct within a row,
    a pure function of (seed, epoch, step, users), so a resumed or data-parallel run draws exactly the same."""

    def __init__(self, ds, seed: int):
        from toolkit.data.protocol import touched_key_set

        self.ds, self.seed = ds, int(seed)
        self.keys = touched_key_set(ds.user_ptr, ds.user_items, ds.n_items)

    def draw(self, users: np.ndarray, k: int, epoch: int, step: int) -> np.ndarray:
        from toolkit.data.protocol import sample_negatives

        rng = np.random.default_rng(np.random.SeedSequence((self.seed, int(epoch), int(step))))
        return sample_negatives(rng, np.asarray(users, np.int64), k, self.ds.n_items, self.ds.user_ptr,
                                self.ds.user_items, self.keys)


def step_candidates(recipe: Recipe, ds, idx: np.ndarray, sampler: NegativeSampler | None, epoch: int,
                    step: int) -> np.ndarray:
    """[len(idx), 1 + K]: each row's target then its negatives (the dataset's fixed ones or fresh draws)."""
    if not recipe.resample:
        return np.ascontiguousarray(ds.train_cands[idx])
    target = ds.train_cands[idx, :1]
    return np.concatenate([target, sampler.draw(ds.train_user[idx], recipe.negatives, epoch, step)], axis=1)


def _terms(pos: torch.Tensor, neg: torch.Tensor, loss: str) -> torch.Tensor:
    """pos [...], neg [..., K] -> one loss term per position [...]."""
    if loss == "ce":
        return torch.logsumexp(torch.cat([pos[..., None], neg], dim=-1), dim=-1) - pos
    k = neg.shape[-1]
    return (F.softplus(-pos) + F.softplus(neg).sum(-1)) / (1 + k)


def batch_loss_sum(model, items: torch.Tensor, cands: torch.Tensor, ctx: torch.Tensor | None,
                   recipe: Recipe) -> tuple[torch.Tensor, int]:
    """(sum of the batch's loss terms, positions per row) for a training batch; `model` may be a DDP wrapper.

    items [B, L] right-padded windows, cands [B, 1 + K] (target first). positions=all: candidate set
    [next click at every position (L), K negatives]; position t's positive is column t, negatives the last K."""
    if recipe.positions == "last":
        logits = model(items, cands) if ctx is None else model(items, cands, context=ctx)  # [B, 1 + K]
        return _terms(logits[:, 0], logits[:, 1:], recipe.loss).sum(), 1
    B, L = items.shape
    nxt = torch.cat([items[:, 1:], torch.zeros_like(items[:, :1])], dim=1)  # [B, L] the click after each position
    real = items != 0
    last = real & ~torch.cat([real[:, 1:], torch.zeros_like(real[:, :1])], dim=1)  # last real position
    nxt = torch.where(last, cands[:, :1].expand(-1, L), nxt)
    all_cands = torch.cat([nxt, cands[:, 1:]], dim=1)  # [B, L + K]
    kwargs = {} if ctx is None else {"context": ctx}
    scores = model(items, all_cands, positions=True, **kwargs)  # [B, L, L + K]
    pos = torch.diagonal(scores[:, :, :L], dim1=1, dim2=2)  # [B, L]
    terms = _terms(pos, scores[:, :, L:], recipe.loss)  # [B, L]
    return (terms * real.to(terms.dtype)).sum(), L


class PositionScorer(torch.nn.Module):
    """The module a training step calls (and DDP wraps): `forward(..., positions=True)` routes to the model's
    `position_scores`, everything else to its own forward, so gradients flow through one nn.Module call.

    A cloud model with `offline_loss` (the default) also scores the last position of every row with no update
    (all zeros) and returns those rows after the updated ones ([2B, C]): the device part keeps its backbone's own
    loss, so a phone that never received an update ranks as well as the backbone trained alone. With
    positions=all the earlier positions already score without an update (cloud_position_scores)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.offline = bool(getattr(getattr(model, "cfg", None), "offline_loss", False))

    def forward(self, items, candidates, positions: bool = False, **kwargs):
        if positions:
            return self.model.position_scores(items, candidates, **kwargs)
        if not (self.offline and self.training):
            return self.model(items, candidates, **kwargs)
        return self.model.score_with_offline(items, candidates, **kwargs)  # the cloud-model interface
