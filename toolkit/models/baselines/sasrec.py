"""SASRec baseline: causal self-attention over the window; the user state is the output at the last real item.

Architecture:
  X = tanh(Linear(D, D)(item_emb(items) + pos_emb[0:L]))       learned positions; input transform on by default
  n_blocks x [ X = X + Drop(MHA(LN(X)));  X = X + Drop(FFN(LN(X))) ]   pre-LayerNorm blocks as in the SASRec paper
  u = MLP(LN(X)[len-1])                                         `out_layers` Linear(D, D), tanh between
MHA masks are causal (query t sees keys <= t) AND padding (keys that are padding are hidden, except a position's own
key so an all-padding row stays finite). With right padding, real positions only ever see real items.
FFN is pointwise Linear(D, m D) -> ReLU -> Linear(m D, D).

Defaults follow the CoCorrRec authors' SASRec baseline (one encoder layer, FFN width 4D, input transform, 2-layer
output MLP), because that is the model behind the paper's table and the hand count in docs/models.md §9
(553k / 1.42M MACs at L = 10 / 25). The original SASRec paper uses 2 blocks with FFN width D:
`SASRecConfig(n_blocks=2, ffn_mult=1)`. Heads default to 1 as in the SASRec paper; the head count does not change
the multiply-adds. We add what the authors' baseline lacks and the SASRec paper has: causal and padding masks,
pre-LN, dropout (0.2, a no-op in eval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.errors import ToolkitError
from toolkit.models.baselines.gru4rec import output_mlp, window_entry
from toolkit.models.common import (
    BaseConfig,
    Recommender,
    device_scores,
    last_real,
    last_real_map,
    real_mask_table,
    register_tower_table,
)
from toolkit.models.contract import EntryPoint


@dataclass
class SASRecConfig(BaseConfig):
    n_blocks: int = 1
    heads: int = 1
    ffn_mult: int = 4  # FFN hidden width = ffn_mult * D
    max_len: int = 50  # learned positions 0..max_len-1; longest window that can be encoded or exported
    dropout: float = 0.2
    in_transform: bool = True
    out_layers: int = 2


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ToolkitError(f"sasrec: dim {dim} is not divisible by heads {heads}")
        self.heads, self.d = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x [B, L, D], bias [B, 1, L, L] additive mask (see attention_bias) -> [B, L, D]."""
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, self.d).permute(2, 0, 3, 1, 4)  # each [B, H, L, d]
        att = ((q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.d)) + bias).softmax(dim=-1)  # [B, H, L, L]
        out = self.drop(att) @ v  # [B, H, L, d]
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


class SASRecBlock(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_mult: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_mult * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), bias))
        return x + self.drop(self.ffn(self.ln2(x)))


def attention_bias(items: torch.Tensor, causal: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """items [B, L], causal/own [L, L] (lower-triangular ones, identity) -> additive bias [B, 1, L, L]:
    0 where key j is visible to query i, -1e4 elsewhere. Visible iff j <= i and (item j is real or j == i).

    Arithmetic only (no bool and/or/not, which Core ML's converter rejects); `causal` and `own` are constant
    buffers so the exported graph does not rebuild them at run time. -1e4 rather than -1e9 or -inf: it stays
    finite in fp16 (Core ML's default compute precision), where 1e9 would become inf and 0 * inf a NaN; after
    softmax it is still exactly 0 next to any realistic logit.
    """
    key_real = (items != 0).to(causal.dtype)[:, None, :]  # [B, 1, L]
    visible = causal * (key_real + own).clamp(max=1.0)  # [B, L, L] in {0, 1}
    return ((visible - 1.0) * 1e4)[:, None]

class SASRec(Recommender):
    name = "sasrec"

    def __init__(self, cfg: SASRecConfig):
        super().__init__(cfg)
        if not 1 <= cfg.n_blocks:
            raise ToolkitError(f"sasrec: n_blocks must be >= 1, got {cfg.n_blocks}")
        D = cfg.dim
        self.pos_emb = nn.Embedding(cfg.max_len, D)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        self.in_proj = nn.Linear(D, D) if cfg.in_transform else None
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(SASRecBlock(D, cfg.heads, cfg.ffn_mult, cfg.dropout) for _ in range(cfg.n_blocks))
        self.final_ln = nn.LayerNorm(D)
        self.out = output_mlp(D, cfg.out_layers)
        self.register_buffer("causal", torch.ones(cfg.max_len, cfg.max_len).tril(), persistent=False)
        self.register_buffer("own", torch.eye(cfg.max_len), persistent=False)

    def _check_len(self, seq_len: int) -> None:
        if seq_len > self.cfg.max_len:
            raise ToolkitError(f"sasrec: window of {seq_len} items is longer than the {self.cfg.max_len} learned "
                               "positions (SASRecConfig.max_len)")

    def hidden(self, items: torch.Tensor) -> torch.Tensor:
        """Per-position outputs [B, L, D]; position t depends only on items[:, :t+1] (causal mask)."""
        L = items.shape[1]
        self._check_len(L)
        x = self.item_emb(items) + self.pos_emb.weight[:L]  # [B, L, D]
        if self.in_proj is not None:
            x = torch.tanh(self.in_proj(x))
        x = self.emb_drop(x)
        bias = attention_bias(items, self.causal[:L, :L], self.own[:L, :L])
        for block in self.blocks:
            x = block(x, bias)
        return self.final_ln(x)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """items [B, L] right-padded -> u [B, D] from the output at position len-1."""
        return self.out(last_real(self.hidden(items), items))

    def position_states(self, items: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(items))

    def analytic_macs(self, seq_len: int, candidates: int = 100) -> int:
        """Multiply-adds per user window, excluding the item lookup, the candidate tower and the final dot product
        (`candidates` does not change the count; accepted for a uniform signature):

            MACs = T * L * D^2                               input transform (T = 1 if in_transform)
                 + N * (4 * L * D^2                          Q, K, V and output projections
                        + 2 * L^2 * D                        Q K^T and attention @ V (the masked L x L is computed)
                        + 2 * m * L * D^2)                   FFN D -> mD -> D
                 + O * D^2                                   output MLP

        Defaults (D = 64, N = 1, m = 4, T = 1, O = 2): 13 L D^2 + 2 L^2 D + 2 D^2 = 553,472 at L = 10 and
        1,419,392 at L = 25 (docs/models.md §9). Independent of the head count. Elementwise work (softmax,
        LayerNorm, ReLU, masking, biases, positional add) is not counted.
        """
        D, L, c = self.cfg.dim, seq_len, self.cfg
        per_block = 4 * L * D * D + 2 * L * L * D + 2 * c.ffn_mult * L * D * D
        return int(c.in_transform) * L * D * D + c.n_blocks * per_block + c.out_layers * D * D

    def contract(self, seq_len: int, candidates: int = 100, tower_table: bool = False) -> list[EntryPoint]:
        """One stateless entry point `window`: items [1, L] + candidates [1, C] -> scores [1, C] (tower_table: the
        candidate tower precomputed for every item and gathered, see Recommender.tower_table)."""
        self._check_len(seq_len)
        return [window_entry(self, seq_len, candidates, tower_table, module=_DeviceGraph(self, seq_len, tower_table))]


class _DeviceGraph(nn.Module):
    """SASRec's window as exported: `SASRec.forward` for a static batch of 1, written so XNNPACK takes the whole graph
    (the treatment of `scn_device.DeviceGraph`, docs/models.md §3.3); eval mode (dropout is the identity).

    * Shape-only quantities are constants built here once: the positions' rows, the causal and own-key masks, the
      last-real-token selector map, the averaging row of LayerNorm.
    * The real-token mask is a gather of a 0/1 table (no `!=`, no cast); the attention bias is element-wise
      broadcasts of constants (no expand/unsqueeze).
    * LayerNorm is written out with the averaging row as a matmul (`native_layer_norm` is not delegated here).
    * The user state is the last real token's row, taken with a one-hot matmul (no `sum`, no `zeros_like`).
    """

    def __init__(self, model: "SASRec", seq_len: int, tower_table: bool = False):
        super().__init__()
        cfg = model.cfg
        D, L = cfg.dim, seq_len
        self.model, self.L, self.D, self.H, self.d = model, L, D, cfg.heads, D // cfg.heads
        self.scale = 1.0 / math.sqrt(self.d)
        self.lns = [*(ln for b in model.blocks for ln in (b.ln1, b.ln2)), model.final_ln]
        reg = self.register_buffer
        with torch.no_grad():
            register_tower_table(self, model, tower_table)
            reg("pos", model.pos_emb.weight[:L].detach().clone())
            reg("mask_table", real_mask_table(cfg.n_items))
            reg("causal", torch.ones(L, L).tril())
            reg("own", torch.eye(L))
            reg("sel_map", last_real_map(L))
            reg("mean_D", torch.full((1, D), 1.0 / D))
            for i, ln in enumerate(self.lns):
                reg(f"eps{i}", torch.full((1,), ln.eps))

    def _ln(self, x, i):
        ln = self.lns[i]
        xc = x - F.linear(x, self.mean_D)
        return xc * torch.rsqrt(F.linear(xc * xc, self.mean_D, getattr(self, f"eps{i}"))) * ln.weight + ln.bias

    def _heads(self, t):  # [L, D] -> [H, L, d]
        return t.view(self.L, self.H, self.d).permute(1, 0, 2)

    def forward(self, items, candidates):
        m, L, D = self.model, self.L, self.D
        x = m.item_emb(items).view(L, D) + self.pos
        if m.in_proj is not None:
            x = torch.tanh(m.in_proj(x))
        m_row = F.embedding(items, self.mask_table).view(1, L)  # 1 = real item
        bias = (self.causal * torch.clamp(m_row + self.own, max=1.0) - 1.0) * 1e4  # [L, L], as attention_bias
        for i, block in enumerate(m.blocks):
            a = block.attn
            qkv = a.qkv(self._ln(x, 2 * i))  # [L, 3D]
            q, k, v = self._heads(qkv[:, :D]), self._heads(qkv[:, D:2 * D]), self._heads(qkv[:, 2 * D:])
            att = torch.softmax(torch.bmm(q, k.permute(0, 2, 1)) * self.scale + bias, dim=-1)  # [H, L, L]
            x = x + a.proj(torch.bmm(att, v).permute(1, 0, 2).reshape(L, D))
            f = block.ffn
            x = x + f[3](torch.relu(f[0](self._ln(x, 2 * i + 1))))
        h = self._ln(x, len(self.lns) - 1)
        sel = F.linear(m_row, self.sel_map).view(1, 1, L)  # one-hot of the last real token; zeros row -> as last_real
        u = m.out(torch.bmm(sel, h.view(1, L, D)).view(1, D))  # bmm: XNNPACK's matmul of two runtime tensors
        return device_scores(m, self.tower_table, candidates, u)
