"""Pieces every recommender shares: RMSNorm, the candidate tower, last-position pooling, id checks.

All models follow one interface so training, evaluation, export and bench treat them alike:
`encode(items[B, L]) -> u[B, D]` (items right-padded with 0), `forward(items, candidates[B, C]) -> scores[B, C]`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from toolkit.errors import ToolkitError


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class CandidateTower(nn.Module):
    """Item embedding -> Linear + tanh + Linear (docs/models.md §1); the table is shared with the encoder."""

    def __init__(self, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(emb)))


def last_real(h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """h[B, L, D] at the last non-padding position of right-padded `items` [B, L] (zeros if all padding).

    Written as a masked sum rather than a gather: Core ML's converter receives a gather index as fp32 and rejects it.
    """
    return (h * last_real_onehot(items).to(h.dtype)[..., None]).sum(1)


def last_real_onehot(items: torch.Tensor) -> torch.Tensor:
    """[B, L] float: 1 at the last non-padding position of each right-padded row, 0 elsewhere (a zero row if all
    padding)."""
    real = (items != 0).float()
    nxt = torch.cat([real[:, 1:], torch.zeros_like(real[:, :1])], dim=1)
    return real * (1 - nxt)


def real_mask_table(n_items: int) -> torch.Tensor:
    """[n_items + 1, 1]: 0 for the padding id, 1 for every item. Exported graphs gather the real-token mask from it
    (F.embedding, like the item table) instead of computing `items != 0` and a cast at run time."""
    mask = torch.ones(n_items + 1, 1)
    mask[0] = 0
    return mask


def last_real_map(seq_len: int) -> torch.Tensor:
    """[L, L] constant with F.linear(m_row [1, L], map) = one-hot of the last real position of a right-padded 0/1
    mask row (zeros if none): m @ (I - S), S[s + 1, s] = 1, i.e. m_s - m_{s+1}."""
    S = torch.zeros(seq_len, seq_len)
    idx = torch.arange(seq_len - 1)
    S[idx + 1, idx] = 1
    return (torch.eye(seq_len) - S).T.contiguous()


def register_tower_table(module: nn.Module, model, precomputed: bool) -> None:
    """`module.tower_table`: the candidate tower's output for every item of `model`, as a constant buffer shipped with
    the exported graph (`--tower precomputed`), or None when the graph runs the tower itself."""
    if precomputed:
        with torch.no_grad():
            module.register_buffer("tower_table", model.tower_table())
    else:
        module.tower_table = None


def device_scores(model, tower_table: torch.Tensor | None, candidates: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Scores [1, C] of one user vector u [1, D] in an exported batch-1 graph: candidates through the model's tower,
    or gathered from a precomputed tower table; the dot products as one bmm (in fp32: `fp32_dot`)."""
    C, D = candidates.shape[1], u.shape[-1]
    if tower_table is None:
        cand = model.tower(model.item_emb(candidates)).view(1, C, D)
    else:
        cand = torch.nn.functional.embedding(candidates, tower_table).view(1, C, D)
    cand, u = fp32_dot(cand, u)
    return torch.bmm(cand, u.view(1, D, 1)).view(1, C)


def fp32_dot(cand: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The scoring dot product's operands in fp32 when an fp16 export cast the graph. Trained scores reach |30-50|,
    where fp16 steps by 0.03: rounding the scores alone reorders close candidates (eager SCN on Beauty: NDCG@10 -0.59%
    all in fp16, -0.009% with this one product in fp32). A no-op in fp32 graphs (decided at trace time)."""
    if cand.dtype == torch.float16:
        return cand.float(), u.float()
    return cand, u


@dataclass
class BaseConfig:
    n_items: int
    dim: int = 64

    def to_dict(self) -> dict:
        return asdict(self)


class Recommender(nn.Module):
    """Base class: item table + candidate tower + dot-product scoring; subclasses implement `encode`."""

    name = "base"

    def __init__(self, cfg: BaseConfig):
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=0)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.tower = CandidateTower(cfg.dim)

    def encode(self, items: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def candidate_vectors(self, candidates: torch.Tensor) -> torch.Tensor:
        """tower(item_emb(candidates)) [B, C, D]. When a training batch holds more candidate slots than there
        are items (1024 rows x 65 candidates against ~12k Beauty items), the tower runs once over the item table
        and the rows are gathered: the same values and gradients for a fraction of the multiply-adds. Eval mode
        keeps the per-candidate form, which is what an exported graph computes and what FLOP counts describe; so
        does a sparse item table (--sparse-embeddings), whose gradient must stay on the rows a batch touched."""
        emb = self.item_emb
        if self.training and not emb.sparse and candidates.numel() > emb.num_embeddings:
            # index_select, not F.embedding: its backward is an index_add, ~3x faster on CPU than the embedding
            # backward's sort-and-accumulate at 66k rows
            table = self.tower(self.item_emb.weight)
            return table.index_select(0, candidates.reshape(-1)).view(*candidates.shape, table.shape[-1])
        return self.tower(self.item_emb(candidates))

    def score(self, u: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bd,bcd->bc", u, self.candidate_vectors(candidates))

    def tower_table(self) -> torch.Tensor:
        """The candidate tower's output for every item id [n_items + 1, D]: a pure function of the item, so an
        export can ship it and gather candidate rows instead of running the tower (export --tower precomputed)."""
        with torch.no_grad():
            return self.tower(self.item_emb.weight).detach().clone().float()

    def score_vectors(self, items: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """Scores [B, C] of a window against candidate vectors cand [B, C, D] that already went through the tower
        (rows of `tower_table()`); `forward` is `score_vectors(items, tower(item_emb(candidates)))`."""
        return torch.einsum("bd,bcd->bc", self.encode(items), cand)

    def forward(self, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return self.score(self.encode(items), candidates)

    def position_states(self, items: torch.Tensor) -> torch.Tensor:
        """The user state after each position [B, L, D]; position t depends only on items[:, :t+1]. Training's
        every-position loss reads it (`encode` is its value at the last real position)."""
        raise ToolkitError(f"{self.name}: no per-position user states (train it with positions=last)")

    def position_scores(self, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Scores [B, L, C] of every candidate after every prefix of the window (training only)."""
        return torch.einsum("bld,bcd->blc", self.position_states(items), self.candidate_vectors(candidates))

    def param_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        table = self.item_emb.weight.numel()
        return {"params": total, "params_excluding_item_table": total - table}


def check_item_ids(ids, n_items: int, what: str = "items") -> None:
    """Reject ids outside 0..n_items before they reach an embedding lookup (or a runtime), naming the offender."""
    arr = ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    if arr.size == 0:
        return
    bad = (arr < 0) | (arr > n_items)
    if bad.any():
        offending = int(arr[bad].flat[0])
        raise ToolkitError(f"{what}: item id {offending} is outside the vocabulary 0..{n_items} (0 = padding)")
