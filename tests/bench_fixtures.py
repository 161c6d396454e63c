"""A tiny recommender with a hand-countable cost, used by the bench tests (and rebuilt by the measuring worker).

TinyRec: items -> item table -> Linear(D, D) -> last real position = u; score = dot(u, tower(candidate)).
Its `step` entry carries a running state s [1, D]: u = s + sum_t Linear(emb(items_t)), new s = u.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from toolkit.exporters.sources import ModelSource
from toolkit.models.common import BaseConfig, Recommender, last_real
from toolkit.models.contract import EntryPoint, StateSpec, TensorSpec

HERE = str(Path(__file__).resolve().parent)


@dataclass
class TinyConfig(BaseConfig):
    K: int = 4
    fail_len: int = 0  # windows of exactly this length raise: one cell that must fail on its own


class TinyRec(Recommender):
    name = "tiny"

    def __init__(self, cfg: TinyConfig):
        super().__init__(cfg)
        self.proj = nn.Linear(cfg.dim, cfg.dim)

    def encode(self, items):
        if items.shape[1] == self.cfg.fail_len:
            raise RuntimeError(f"tiny model told to break at length {self.cfg.fail_len}")
        return last_real(self.proj(self.item_emb(items)), items)

    def analytic_macs(self, seq_len: int) -> int:
        return seq_len * self.cfg.dim * self.cfg.dim

    def contract(self, seq_len: int, candidates: int = 100) -> list[EntryPoint]:
        n, D = self.cfg.n_items, self.cfg.dim
        window = EntryPoint("window", _Window(self).eval(),
                            [TensorSpec("items", (1, seq_len), torch.int64, high=n),
                             TensorSpec("candidates", (1, candidates), torch.int64, high=n)], ["scores"])
        step = EntryPoint("step", _Step(self).eval(),
                          [TensorSpec("items", (1, self.cfg.K), torch.int64, high=n),
                           TensorSpec("candidates", (1, candidates), torch.int64, high=n)], ["scores"],
                          states=[StateSpec("s", torch.zeros(1, D))])
        return [window, step]


class _Window(nn.Module):
    def __init__(self, m: TinyRec):
        super().__init__()
        self.m = m

    def forward(self, items, candidates):
        return self.m(items, candidates)


class _Step(nn.Module):
    def __init__(self, m: TinyRec):
        super().__init__()
        self.m = m

    def forward(self, items, candidates, s):
        u = s + self.m.proj(self.m.item_emb(items)).sum(1)  # [1, D]
        return self.m.score(u, candidates), u


def build_tiny(n_items: int = 50, dim: int = 8, K: int = 4, fail_len: int = 0) -> TinyRec:
    return TinyRec(TinyConfig(n_items=n_items, dim=dim, K=K, fail_len=fail_len))


def tiny_source(name: str = "tiny", **config) -> ModelSource:
    return ModelSource("factory", name, config=config, factory="bench_fixtures:build_tiny", factory_path=HERE)


def hand_flops_window(L: int, C: int, D: int) -> int:
    """proj on L tokens + tower (2 Linears) on C candidates + the dot-product score; 2 FLOPs per multiply-add."""
    return 2 * L * D * D + 2 * C * (2 * D * D) + 2 * C * D
