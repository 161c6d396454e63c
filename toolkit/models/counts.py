"""The non-learned baselines every model table shows: popularity and item-to-item co-occurrence counts.

Both are counted on the training part of each history only (targets h[1..n-3] and the clicks before them), so
nothing of a validation or test target reaches them:
  pop    score(c) = how often c was clicked in the training part (RecBole's Pop);
  cooc   score(c | window) = sum over the window's items a of how often c followed a within `span` clicks
         (the rows `toolkit train` trains on: a in a training window, c its target), plus popularity / (max + 1),
         which only breaks ties (RecBole's ItemKNN counts the same pairs, unordered and normalised).
They score with forward(items [B, L], candidates [B, C]) -> [B, C] like every recommender, so evaluation, tables
and comparisons treat them alike; they are not exported (a lookup table is not a model to ship).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from toolkit.errors import ToolkitError

COUNT_MODELS = ("pop", "cooc")


@dataclass
class CountConfig:
    n_items: int
    span: int = 10  # cooc: clicks before a target that count as its predecessors (the dataset's window)
    nnz: int = 0  # cooc: distinct (predecessor, item) pairs counted

    def to_dict(self) -> dict:
        return asdict(self)


def training_popularity(ds) -> np.ndarray:
    """[n_items + 1] clicks per item over h[0..n-3] of every user (the validation and test targets left out)."""
    lengths = np.diff(ds.user_ptr)
    pos = np.arange(ds.user_items.size) - np.repeat(ds.user_ptr[:-1], lengths)
    keep = pos < np.repeat(lengths - 2, lengths)
    return np.bincount(ds.user_items[keep], minlength=ds.n_items + 1).astype(np.float32)


def transition_counts(ds, span: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted keys a * (n_items + 1) + c, counts) of (predecessor a, target c) pairs in the training rows."""
    seqs = np.asarray(ds.train_seqs)
    if span < seqs.shape[1]:  # the last `span` real clicks of each right-padded window
        real = (seqs != 0).sum(1)
        j = np.arange(seqs.shape[1])
        seqs = np.where(j[None, :] >= (real - span)[:, None], seqs, 0)
    target = np.asarray(ds.train_cands[:, 0], dtype=np.int64)
    keys = seqs.astype(np.int64) * (ds.n_items + 1) + target[:, None]
    keys = keys[seqs != 0]
    uniq, counts = np.unique(keys, return_counts=True)
    return uniq, counts.astype(np.float32)


class Pop(nn.Module):
    name = "pop"

    def __init__(self, cfg: CountConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("popularity", torch.zeros(cfg.n_items + 1))

    def fit(self, ds) -> "Pop":
        self.popularity.copy_(torch.from_numpy(training_popularity(ds)))
        return self

    def forward(self, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return self.popularity[candidates]

    def param_counts(self) -> dict[str, int]:
        return {"params": 0, "params_excluding_item_table": 0, "table_entries": int(self.popularity.numel())}


class Cooc(Pop):
    name = "cooc"

    def __init__(self, cfg: CountConfig):
        super().__init__(cfg)
        self.register_buffer("keys", torch.zeros(cfg.nnz, dtype=torch.int64))
        self.register_buffer("counts", torch.zeros(cfg.nnz))

    @classmethod
    def fitted(cls, ds, span: int) -> "Cooc":
        keys, counts = transition_counts(ds, span)
        model = cls(CountConfig(n_items=ds.n_items, span=span, nnz=int(keys.size)))
        model.keys.copy_(torch.from_numpy(keys))
        model.counts.copy_(torch.from_numpy(counts))
        return Pop.fit(model, ds)

    def forward(self, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        if self.keys.numel() == 0:
            return self.popularity[candidates] / (self.popularity.max() + 1)
        span = min(self.cfg.span, items.shape[1])
        real = (items != 0).sum(1, keepdim=True)  # [B, 1]
        recent = (torch.arange(items.shape[1], device=items.device)[None, :] >= real - span) & (items != 0)
        q = items[:, :, None] * (self.cfg.n_items + 1) + candidates[:, None, :]  # [B, L, C]
        at = torch.searchsorted(self.keys, q).clamp(max=self.keys.numel() - 1)
        hit = (self.keys[at] == q) & recent[:, :, None]
        pairs = (self.counts[at] * hit).sum(1)  # [B, C]
        return pairs + self.popularity[candidates] / (self.popularity.max() + 1)

    def param_counts(self) -> dict[str, int]:
        return {"params": 0, "params_excluding_item_table": 0, "table_entries": int(self.keys.numel())}


def fit(name: str, ds, span: int | None = None) -> nn.Module:
    """A count baseline fitted on the training part of `ds`."""
    if name == "pop":
        return Pop(CountConfig(n_items=ds.n_items, span=ds.seq_len)).fit(ds)
    if name == "cooc":
        return Cooc.fitted(ds, span or ds.seq_len)
    raise ToolkitError(f"unknown count baseline '{name}' (valid: {', '.join(COUNT_MODELS)})")


def from_config(name: str, config: dict) -> nn.Module:
    """An empty model of a saved run's shape (its buffers are then loaded from the run's weights)."""
    fields = {"n_items", "span", "nnz"}
    if set(config) - fields or not all(isinstance(config.get(k), int) and config[k] >= 0 for k in fields):
        raise ToolkitError(f"{name} run config must hold integers {', '.join(sorted(fields))}, got {config}")
    if config["nnz"] > 2**31 or config["n_items"] > 2**31:
        raise ToolkitError(f"{name} run config is out of range: {config}")
    cfg = CountConfig(**config)
    return Pop(cfg) if name == "pop" else Cooc(cfg)
