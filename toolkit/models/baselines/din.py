"""DIN baseline: target attention. Each candidate pools the history with its own weights, so there is no single
user vector per window: DIN overrides `forward(items, candidates)` and `encode` refuses (see `encode`).

  h_j = tanh(Linear(D, D)(item_emb(items_j)))            history items, input transform on by default   [B, L, D]
  c   = tower(item_emb(candidate))                        the shared candidate tower                      [B, C, D]
  a_j(c) = Linear(A, 1)(PReLU(Linear(4D, A)([h_j, c, h_j - c, h_j * c])))   local activation unit (DIN paper)
  u(c) = sum_j mask_j * a_j(c) * h_j                      weights are NOT softmax-normalised (as in DIN: the sum
                                                          keeps the intensity of the user's interest)
  score(c) = dot(u(c), c)                                 same dot-product head as every other model

The activation unit's first layer is stored in an equivalent three-block form (see `ActivationUnit`), so the
history part is computed once per item and the candidate part once per candidate. A test checks it against the
paper's concatenated form.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.errors import ToolkitError
from toolkit.models.baselines.gru4rec import window_entry
from toolkit.models.common import BaseConfig, Recommender, real_mask_table, register_tower_table
from toolkit.models.contract import EntryPoint


@dataclass
class DINConfig(BaseConfig):
    att_hidden: int = 36  # hidden width of the local activation unit (DIN paper, Fig. 2: PReLU(36) -> Linear(1))
    in_transform: bool = True  # Linear(D, D) + tanh on the history embeddings (authors' baseline)
    dropout: float = 0.0  # training only: dropout on the history embeddings (identity when exported)


class ActivationUnit(nn.Module):
    """a(h, c) = Linear(A, 1)(PReLU(Linear(4D, A)([h, c, h - c, h * c]))) for every (candidate, history item).

    The first layer over the concatenation is stored in its equivalent three-block form: the (h - c) block is a
    linear combination of the h and c blocks, so [h, c, h-c, h*c] W^T = h W_h'^T + c W_c'^T + (h*c) W_p^T with
    W_h' = W_h + W_d and W_c' = W_c - W_d. Same function class, D*A fewer (redundant) parameters, and the h part
    runs once per history item and the c part once per candidate; only the (h*c) part is per (candidate, item)
    pair. Plain Linear layers with constant weights also keep every matmul delegable to XNNPACK.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.from_history = nn.Linear(dim, hidden, bias=False)  # W_h'
        self.from_candidate = nn.Linear(dim, hidden)  # W_c' and the layer's bias
        self.from_product = nn.Linear(dim, hidden, bias=False)  # W_p
        self.prelu_slope = nn.Parameter(torch.full((hidden,), 0.25))  # PReLU per hidden unit (last axis)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """h [B, L, D], c [B, C, D] -> raw (unnormalised) weights [B, C, L].

        The first layer for every (candidate, history item) pair is one batched matmul: with
        K[b, :, (l, a)] = h[b, l] * W_p[a] + W_c'[a] (a [D, L*A] block per row), c K adds the candidate and pair
        parts at once and the history part rides in as baddbmm's bias. No [B, C, L, D] product tensor is built,
        and the [B, C, L, A] activation goes through one native PReLU: a training step of the default recipe
        (64 negatives) is ~1.5x faster than the three-block form, with the same function and gradients. In eval
        mode the three-block form runs (`forward_blocks`: fewer multiply-adds, see `analytic_macs`, and the
        exported graph's form).
        """
        if not self.training:
            return self.forward_blocks(h, c)
        B, L, D = h.shape
        A = self.prelu_slope.shape[0]
        # K as one matmul [h, 1] @ M: M[d', (a, d)] = W_p[a, d] if d' == d, and the ones row adds W_c'. Written
        # as a broadcast multiply instead, its backward is three strided reductions over [B, L, A, D], which
        # cost more than all the matmuls of the step together.
        eye = torch.eye(D, dtype=h.dtype, device=h.device)
        m = torch.cat([(eye[:, None, :] * self.from_product.weight).reshape(D, A * D),
                       self.from_candidate.weight.reshape(1, A * D)])  # [D + 1, A * D]
        ones = torch.ones(B, L, 1, dtype=h.dtype, device=h.device)
        k = (torch.cat([h, ones], dim=-1) @ m).reshape(B, L * A, D)
        base = (self.from_history(h) + self.from_candidate.bias).reshape(B, 1, L * A)
        pre = torch.baddbmm(base, c, k.transpose(1, 2))  # [B, C, L * A]
        z = F.prelu(pre.reshape(-1, A), self.prelu_slope)  # channels on dim 1 of [B*C*L, A]
        return F.linear(z, self.fc2.weight, self.fc2.bias).view(B, c.shape[1], L)

    def forward_blocks(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The three-block form term by term (what the exported graph computes); for tests."""
        a_h = self.from_history(h)  # [B, L, A]
        a_c = self.from_candidate(c)  # [B, C, A]
        a_p = self.from_product(c[:, :, None, :] * h[:, None, :, :])  # [B, C, L, A]
        z = self.prelu(a_p + a_h[:, None, :, :] + a_c[:, :, None, :])
        return self.fc2(z).squeeze(-1)

    def concat_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """An equivalent (weight [A, 4D], bias [A]) for the paper's Linear over [h, c, h - c, h * c]."""
        W_h, W_c, W_p = self.from_history.weight, self.from_candidate.weight, self.from_product.weight
        return torch.cat([W_h, W_c, torch.zeros_like(W_h), W_p], dim=1), self.from_candidate.bias

    def forward_concat(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Reference form: the paper's first layer on the literal concatenation [h, c, h - c, h * c]; for tests."""
        B, L, D = h.shape
        C = c.shape[1]
        hh = h[:, None].expand(B, C, L, D)
        cc = c[:, :, None].expand(B, C, L, D)
        W, b = self.concat_weight()
        z = torch.nn.functional.linear(torch.cat([hh, cc, hh - cc, hh * cc], dim=-1), W, b)
        return self.fc2(self.prelu(z)).squeeze(-1)

    def prelu(self, z: torch.Tensor) -> torch.Tensor:
        # nn.PReLU puts channels on dim 1; here they are the last axis of [B, C, L, A].
        return z.clamp(min=0) + self.prelu_slope * z.clamp(max=0)


class DIN(Recommender):
    name = "din"

    def __init__(self, cfg: DINConfig):
        super().__init__(cfg)
        D = cfg.dim
        self.in_proj = nn.Linear(D, D) if cfg.in_transform else None
        self.att = ActivationUnit(D, cfg.att_hidden)
        self.emb_drop = nn.Dropout(cfg.dropout)

    def history(self, items: torch.Tensor) -> torch.Tensor:
        """h [B, L, D]: the (transformed) history embeddings; padding rows are masked out later."""
        h = self.emb_drop(self.item_emb(items))
        return torch.tanh(self.in_proj(h)) if self.in_proj is not None else h

    def pooled(self, items: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """items [B, L] + candidate representations c [B, C, D] -> one pooled user vector per candidate [B, C, D]."""
        h = self.history(items)  # [B, L, D]
        w = self.att(h, c) * (items != 0)[:, None, :].to(h.dtype)  # [B, C, L], padding weight 0
        return w @ h

    def attend_and_score(self, items: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """items [B, L] + candidate representations c [B, C, D] -> scores [B, C]."""
        return (self.pooled(items, c) * c).sum(-1)

    def user_vectors(self, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """The candidate-dependent user vectors u(c) [B, C, D] (what DIN has instead of one u per window)."""
        return self.pooled(items, self.candidate_vectors(candidates))

    def forward(self, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """items [B, L] right-padded, candidates [B, C] -> scores [B, C]."""
        return self.attend_and_score(items, self.candidate_vectors(candidates))

    def position_scores(self, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Scores [B, L, C] after every prefix: DIN's weights are unnormalised, so the score after position t is
        the running sum over i <= t of w(c, h_i) * <h_i, c> (training only)."""
        c = self.candidate_vectors(candidates)  # [B, C, D]
        h = self.history(items)  # [B, L, D]
        w = self.att(h, c) * (items != 0)[:, None, :].to(h.dtype)  # [B, C, L]
        return torch.cumsum(w * torch.einsum("bld,bcd->bcl", h, c), dim=-1).transpose(1, 2)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """DIN has no candidate-independent user vector: refuse loudly rather than score with a stand-in.

        Callers that do `score(encode(items), candidates)` would silently get a different model; use
        `model(items, candidates)` (or `user_vectors`) instead.
        """
        raise ToolkitError("din: the user vector depends on the candidate (target attention); "
                           "score with model(items, candidates) instead of encode() + score()")

    def score_vectors(self, items: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """Scores from candidate vectors that already went through the tower (rows of `tower_table()`)."""
        return self.attend_and_score(items, cand)

    def score(self, u: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        raise ToolkitError("din: score(u, candidates) does not apply (target attention); use model(items, candidates)")

    def analytic_macs(self, seq_len: int, candidates: int = 100) -> int:
        """Multiply-adds to score `candidates` candidates for one window, excluding the item lookup, the candidate
        tower and the final dot products. Unlike the other models this grows with the candidate count C, because
        every candidate attends over the history (A = att_hidden):

            MACs = T * L * D^2           history input transform (T = 1 if in_transform)
                 + L * D * A             activation unit, history part h W_h'^T
                 + C * D * A             activation unit, candidate part c W_c'^T
                 + C * L * D * A         activation unit, pair part (h * c) W_p^T
                 + C * L * A             activation unit output layer
                 + C * L * D             weighted pooling u(c) = sum_j a_j h_j

        Defaults (D = 64, A = 36): L = 10 -> 2,698,400 for C = 100 (90,344 for C = 1); L = 25 -> 6,400,400 for
        C = 100 (222,404 for C = 1). The naive concatenated first layer would cost 4 D A per pair instead of D A. Elementwise work
        (h * c, PReLU, masking, biases) is not counted.
        """
        D, L, C, A = self.cfg.dim, seq_len, candidates, self.cfg.att_hidden
        return (int(self.cfg.in_transform) * L * D * D + L * D * A + C * D * A + C * L * D * A
                + C * L * A + C * L * D)

    def contract(self, seq_len: int, candidates: int = 100, tower_table: bool = False) -> list[EntryPoint]:
        """One stateless entry point `window`: items [1, L] + candidates [1, C] -> scores [1, C] (tower_table: the
        candidate tower precomputed for every item and gathered, see Recommender.tower_table)."""
        return [window_entry(self, seq_len, candidates, tower_table, module=_DeviceGraph(self, seq_len, tower_table))]


class _DeviceGraph(nn.Module):
    """DIN's window as exported: `DIN.forward` for a static batch of 1 (the treatment of `scn_device.DeviceGraph`,
    docs/models.md §3.3): broadcasts are views + element-wise ops (no unsqueeze/expand), the padding mask a gather
    of a 0/1 table (no `!=`, no cast), the weighted pooling one bmm, and the per-candidate dot products a matmul
    with a constant ones row (XNNPACK has no `sum`)."""

    def __init__(self, model: "DIN", seq_len: int, tower_table: bool = False):
        super().__init__()
        self.model, self.L, self.D, self.A = model, seq_len, model.cfg.dim, model.cfg.att_hidden
        with torch.no_grad():
            register_tower_table(self, model, tower_table)
            self.register_buffer("mask_table", real_mask_table(model.cfg.n_items))
            self.register_buffer("ones_D", torch.ones(1, model.cfg.dim))

    def forward(self, items, candidates):
        m, L, D, A = self.model, self.L, self.D, self.A
        C = candidates.shape[1]
        h = m.history(items).view(L, D)
        if self.tower_table is None:
            c = m.tower(m.item_emb(candidates)).view(C, D)
        else:
            c = F.embedding(candidates, self.tower_table).view(C, D)
        att = m.att
        a_p = att.from_product(c.view(C, 1, D) * h.view(1, L, D))  # [C, L, A]
        z = att.prelu(a_p + att.from_history(h).view(1, L, A) + att.from_candidate(c).view(C, 1, A))
        w = att.fc2(z).view(C, L) * F.embedding(items, self.mask_table).view(1, L)  # padding weight 0
        pooled = torch.bmm(w.view(1, C, L), h.view(1, L, D))  # [1, C, D]
        return F.linear(pooled * c.view(1, C, D), self.ones_D).view(1, C)
