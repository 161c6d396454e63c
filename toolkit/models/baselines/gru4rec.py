"""GRU4Rec baseline: a GRU over the window's item embeddings; the user state is the GRU output at the last real item.

Architecture (the CoCorrRec authors' GRU4Rec baseline, which is also what docs/models.md §9's hand count describes):
  E = item_emb(items)                       [B, L, D]
  X = tanh(Linear(D, D)(E))                 input transform (`in_transform`, on by default)
  h_t = GRU(X_t, h_{t-1}), h_0 = 0          1 layer, hidden D
  u = MLP(h_{len-1})                        `out_layers` Linear(D, D), tanh between (2 by default)
Scoring goes through the shared candidate tower: score = dot(u, tower(item)).

The GRU is written as an explicit cell unrolled over the static window length, with the input and hidden gate
projections as two Linear(D, 3D) layers in PyTorch's gate order (r, z, n). Its maths is exactly `nn.GRU`'s (a test
checks it against `nn.GRU` with copied weights); unrolling keeps the exported graph to plain linear/sigmoid/tanh
ops, which every runtime (ONNX, ExecuTorch + XNNPACK, Core ML) handles the same way, instead of one fused
`aten.gru` op whose support varies by backend.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.models.common import (
    BaseConfig,
    Recommender,
    device_scores,
    last_real,
    last_real_map,
    real_mask_table,
    register_tower_table,
)
from toolkit.models.contract import EntryPoint, TensorSpec


@dataclass
class GRU4RecConfig(BaseConfig):
    in_transform: bool = True  # Linear(D, D) + tanh on every item embedding before the GRU (authors' baseline)
    out_layers: int = 2  # Linear(D, D) layers on the final GRU state, tanh between them (0 = u is the GRU state)
    dropout: float = 0.0  # training only: dropout on the item embeddings of the window (identity when exported)


def output_mlp(dim: int, layers: int) -> nn.Module:
    """`layers` Linear(D, D) with tanh between them (none after the last); identity for 0 layers."""
    mods: list[nn.Module] = []
    for i in range(layers):
        mods.append(nn.Linear(dim, dim))
        if i < layers - 1:
            mods.append(nn.Tanh())
    return nn.Sequential(*mods) if mods else nn.Identity()


class GRUCellUnrolled(nn.Module):
    """One GRU layer (input D, hidden D) as an explicit cell; same equations and gate order as `nn.GRU`."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.ih = nn.Linear(dim, 3 * dim)  # = nn.GRU.weight_ih_l0 / bias_ih_l0
        self.hh = nn.Linear(dim, 3 * dim)  # = nn.GRU.weight_hh_l0 / bias_hh_l0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, D] -> outputs h_t for every t [B, L, D] (h_0 = 0).

        Gates are taken with static slices rather than chunk/select: XNNPACK delegates slices and reshapes, so the
        whole unrolled cell lowers to one delegated partition instead of one per step.
        """
        B, L, D = x.shape
        gi = self.ih(x)  # [B, L, 3D], all input projections in one matmul
        h = x.new_zeros(B, D)
        outs = []
        for t in range(L):  # static L: unrolled into a fixed graph at export
            g = gi[:, t:t + 1, :].reshape(B, 3 * D)
            gh = self.hh(h)  # [B, 3D]
            r = torch.sigmoid(g[:, :D] + gh[:, :D])
            z = torch.sigmoid(g[:, D:2 * D] + gh[:, D:2 * D])
            n = torch.tanh(g[:, 2 * D:] + r * gh[:, 2 * D:])
            h = (1 - z) * n + z * h
            outs.append(h)
        return torch.stack(outs, dim=1)


class GRU4Rec(Recommender):
    name = "gru4rec"

    def __init__(self, cfg: GRU4RecConfig):
        super().__init__(cfg)
        D = cfg.dim
        self.in_proj = nn.Linear(D, D) if cfg.in_transform else None
        self.gru = GRUCellUnrolled(D)
        self.out = output_mlp(D, cfg.out_layers)
        self.emb_drop = nn.Dropout(cfg.dropout)

    def hidden(self, items: torch.Tensor) -> torch.Tensor:
        """GRU outputs at every position [B, L, D]; position t depends only on items[:, :t+1]."""
        x = self.emb_drop(self.item_emb(items))
        if self.in_proj is not None:
            x = torch.tanh(self.in_proj(x))
        return self.gru(x)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """items [B, L] right-padded -> u [B, D]: the output at position len-1, so trailing padding is ignored."""
        return self.out(last_real(self.hidden(items), items))

    def position_states(self, items: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(items))

    def analytic_macs(self, seq_len: int, candidates: int = 100) -> int:
        """Multiply-adds per user window, excluding the item lookup, the candidate tower and the final dot product
        (`candidates` is accepted for a uniform signature across baselines and does not change the count):

            MACs = T * L * D^2          input transform (T = 1 if in_transform)
                 + 6 * L * D^2          GRU: x W_ih (D x 3D) and h W_hh (D x 3D) at each of the L steps
                 + O * D^2              output MLP (O = out_layers)

        Defaults (D = 64, T = 1, O = 2): (7L + 2) D^2 = 294,912 at L = 10 and 724,992 at L = 25, the figures of
        docs/models.md §9. Elementwise work (gates' sigmoid/tanh, biases) is not counted.
        """
        D, L = self.cfg.dim, seq_len
        return (int(self.cfg.in_transform) + 6) * L * D * D + self.cfg.out_layers * D * D

    def contract(self, seq_len: int, candidates: int = 100, tower_table: bool = False) -> list[EntryPoint]:
        """One stateless entry point `window`: items [1, L] + candidates [1, C] -> scores [1, C] (tower_table: the
        candidate tower precomputed for every item and gathered, see Recommender.tower_table)."""
        return [window_entry(self, seq_len, candidates, tower_table, module=_DeviceGraph(self, seq_len, tower_table))]


class _DeviceGraph(nn.Module):
    """GRU4Rec's window as exported: `GRU4Rec.forward` for a static batch of 1 (the treatment of SCN's
    `DeviceGraph` in scn_device.py, docs/models.md §3.3): the initial state is a constant zero row (no `full`), the real-token mask
    a gather of a 0/1 table (no `!=`, no cast), the last real output a one-hot bmm (no `sum`, no `zeros_like`), the
    outputs a concat of [1, D] rows (no stack), `1 - z` against a constant (a Python 1 is lifted and cast at run
    time), the scores one bmm."""

    def __init__(self, model: "GRU4Rec", seq_len: int, tower_table: bool = False):
        super().__init__()
        self.model, self.L, self.D = model, seq_len, model.cfg.dim
        with torch.no_grad():
            register_tower_table(self, model, tower_table)
            self.register_buffer("mask_table", real_mask_table(model.cfg.n_items))
            self.register_buffer("sel_map", last_real_map(seq_len))
            self.register_buffer("h0", torch.zeros(1, model.cfg.dim))
            self.register_buffer("one", torch.ones(1))  # 1 - z with a constant tensor: a Python 1 becomes a cast

    def forward(self, items, candidates):
        m, L, D = self.model, self.L, self.D
        x = m.item_emb(items).view(L, D)
        if m.in_proj is not None:
            x = torch.tanh(m.in_proj(x))
        gi = m.gru.ih(x)  # [L, 3D]
        h, outs = self.h0, []
        for t in range(L):  # the same equations as GRUCellUnrolled
            g = gi[t:t + 1]
            gh = m.gru.hh(h)
            r = torch.sigmoid(g[:, :D] + gh[:, :D])
            z = torch.sigmoid(g[:, D:2 * D] + gh[:, D:2 * D])
            n = torch.tanh(g[:, 2 * D:] + r * gh[:, 2 * D:])
            h = (self.one - z) * n + z * h
            outs.append(h)
        sel = F.linear(F.embedding(items, self.mask_table).view(1, L), self.sel_map)  # [1, L]
        # [1, D]; all padding -> zeros, as last_real. bmm: XNNPACK takes a matmul of two runtime tensors as bmm
        u = m.out(torch.bmm(sel.view(1, 1, L), torch.cat(outs, dim=0).view(1, L, D)).view(1, D))
        return device_scores(m, self.tower_table, candidates, u)


class WindowEntry(nn.Module):
    """The exported `window` module of a stateless baseline: forward(items [1, L], candidates [1, C]) -> scores.

    tower_table=True: the candidate tower's output for every item is a constant buffer `tower_table`
    [n_items + 1, D] (a snapshot of the weights when the entry is built) and candidates are gathered from it."""

    def __init__(self, model: Recommender, tower_table: bool = False):
        super().__init__()
        self.model = model
        register_tower_table(self, model, tower_table)

    def forward(self, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        if self.tower_table is None:
            return self.model(items, candidates)  # [1, C]
        return self.model.score_vectors(items, F.embedding(candidates, self.tower_table))


def window_entry(model: Recommender, seq_len: int, candidates: int, tower_table: bool = False,
                 module: nn.Module | None = None) -> EntryPoint:
    """The `window` EntryPoint shared by the baselines (no state). Puts the model in eval mode.
    `module`: the model's own exported form of forward(items, candidates), if it has one."""
    n = model.cfg.n_items
    return EntryPoint(
        name="window",
        module=(module if module is not None else WindowEntry(model, tower_table)).eval(),
        inputs=[TensorSpec("items", (1, seq_len), torch.int64, high=n),
                TensorSpec("candidates", (1, candidates), torch.int64, high=n)],
        outputs=["scores"],
        description=f"{model.name}: scores of {candidates} candidates for a right-padded window of {seq_len} items",
    )
