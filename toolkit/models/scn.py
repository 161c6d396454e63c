"""CoCorrRec's on-device Self-Correction Network (SCN) and CoCorrRec = SCN + cloud GCN trained jointly.

SCN (models.md 1): Embedding -> RMSNorm -> TTT-Linear -> LayerNorm -> Linear (no residual, no FFN by default) ->
RMSNorm; the user state u is the output at the last real position; score = dot(u, tower(candidate)).
Two exported entry points: `window` (static [1, L], from the learned initial state) and `step` (the next K clicks
plus the carried TTT state (W, b) -> scores and the new state).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from toolkit.exporters.contract import EntryPoint, StateSpec, TensorSpec
from toolkit.models.common import BaseConfig, RMSNorm, Recommender, last_real, last_real_onehot
from toolkit.models.gcn import GCN
from toolkit.models.ttt import TTTLinear, state_floats


@dataclass
class SCNConfig(BaseConfig):
    heads: int = 4
    mini_batch: int = 10
    base_lr: float = 1.0
    rope_theta: float = 1e4
    residual: bool = False  # the authors' block has none; a switch for experiments
    # training only: run the uncorrected encode through torch.compile (same maths; ~2x faster per step on CPU,
    # at the price of a one-off compile of about a minute, and another when the batch size changes)
    compile_train: bool = False


class SCN(Recommender):
    name = "scn"

    def __init__(self, cfg: SCNConfig):
        super().__init__(cfg)
        D = cfg.dim
        self.in_norm = RMSNorm(D)
        self.ttt = TTTLinear(D, cfg.heads, cfg.mini_batch, cfg.base_lr, cfg.rope_theta)
        self.post_ln = nn.LayerNorm(D)
        self.proj = nn.Linear(D, D, bias=False)
        self.out_norm = RMSNorm(D)
        self._compiled_encode = None  # built on first use when cfg.compile_train

    @property
    def K(self) -> int:
        return self.cfg.mini_batch

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        """RMSNorm'd embeddings X [B, L, D]: what the device uploads to the cloud GCN."""
        return self.in_norm(self.item_emb(items))

    def _head(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        h = self.proj(self.post_ln(o))
        if self.cfg.residual:
            h = x + h
        return self.out_norm(h)

    def hidden(self, items, corr_attn=None, corr_bias=None, state=None, need_state: bool = True):
        """Per-token outputs h [B, L, D] and the TTT state after the window."""
        x = self.embed(items)
        o, new_state = self.ttt(x, (items != 0), corr_attn, corr_bias, state, need_state)
        return self._head(x, o), new_state

    def encode(self, items, corr_attn=None, corr_bias=None):
        if corr_attn is not None:
            h, _ = self.hidden(items, corr_attn, corr_bias, need_state=False)
            return last_real(h, items)
        if self.cfg.compile_train and self.training and torch.is_grad_enabled():
            if self._compiled_encode is None:
                self._compiled_encode = torch.compile(self._encode_last)
            return self._compiled_encode(items)
        return self._encode_last(items)

    def _encode_last(self, items):
        # the head is per token, so taking the last real position first gives the same u for 1/L of the work
        x = self.embed(items)
        mask = items != 0
        sel = last_real_onehot(items).to(x.dtype)  # [B, L]
        o, _ = self.ttt.forward_selected(x, mask, sel)
        x_last = (sel[:, None, :] @ x).squeeze(1)
        return self._head(x_last, o) * sel.sum(-1, keepdim=True)  # all-padding row -> zeros, as last_real

    def forward(self, items, candidates, corr_attn=None, corr_bias=None):
        return self.score(self.encode(items, corr_attn, corr_bias), candidates)

    def initial_state(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        W, b = self.ttt.initial_state(batch)
        return W.clone(), b.clone()

    def step(self, items, state, corr_attn=None, corr_bias=None):
        """Streaming: the next K item ids [B, K] from state (W [B, H, d, d], b [B, H, d]) -> (u [B, D], state).

        Id 0 is padding (right-padded): it never updates the state, and u is taken at the last real click."""
        x = self.embed(items)
        o, new_state = self.ttt.step(x, state, corr_attn, corr_bias, mask=items != 0)
        return last_real(self._head(x, o), items), new_state

    def analytic_macs(self, seq_len: int) -> int:
        """Per window, excluding the item lookup and the candidate tower: TTT layer + output projection."""
        return self.ttt.analytic_macs(seq_len) + seq_len * self.cfg.dim * self.cfg.dim

    def state_floats(self) -> int:
        return state_floats(self.cfg.heads, self.cfg.dim // self.cfg.heads)

    def contract(self, seq_len: int, candidates: int = 100, with_corrections: bool = False) -> list[EntryPoint]:
        """The exported entry points (export.md contract): `window` and `step`, static shapes."""
        n, H, K, d = self.cfg.n_items, self.cfg.heads, self.K, self.cfg.dim // self.cfg.heads
        M = -(-seq_len // K)

        def corr_specs(m: int) -> list[TensorSpec]:
            if not with_corrections:
                return []
            return [TensorSpec("corr_attn", (1, m, H, K, K), torch.float32),
                    TensorSpec("corr_bias", (1, m, H, K, d), torch.float32)]

        W0, b0 = self.initial_state(1)
        window = EntryPoint(
            name="window",
            module=_WindowEntry(self, with_corrections).eval(),
            inputs=[TensorSpec("items", (1, seq_len), torch.int64, high=n),
                    TensorSpec("candidates", (1, candidates), torch.int64, high=n), *corr_specs(M)],
            outputs=["scores"],
            description=f"scores of {candidates} candidates for a right-padded window of {seq_len} items, "
                        "from the learned initial TTT state",
        )
        step = EntryPoint(
            name="step",
            module=_StepEntry(self, with_corrections).eval(),
            inputs=[TensorSpec("items", (1, K), torch.int64, high=n),
                    TensorSpec("candidates", (1, candidates), torch.int64, high=n), *corr_specs(1)],
            outputs=["scores"],
            states=[StateSpec("ttt_W", W0.detach()), StateSpec("ttt_b", b0.detach())],
            description=f"the next {K} clicks + carried TTT state (W, b) -> scores and the new state",
        )
        return [window, step]


class _WindowEntry(nn.Module):
    def __init__(self, scn: SCN, with_corrections: bool):
        super().__init__()
        self.scn, self.with_corrections = scn, with_corrections

    def forward(self, items, candidates, *corr):
        ca, cb = (corr[0], corr[1]) if self.with_corrections else (None, None)
        return self.scn(items, candidates, ca, cb)


class _StepEntry(nn.Module):
    def __init__(self, scn: SCN, with_corrections: bool):
        super().__init__()
        self.scn, self.with_corrections = scn, with_corrections

    def forward(self, items, candidates, *rest):
        if self.with_corrections:
            ca, cb, W, b = rest
        else:
            (W, b), ca, cb = rest, None, None
        u, (W2, b2) = self.scn.step(items, (W, b), ca, cb)
        return self.scn.score(u, candidates), W2, b2


@dataclass
class CoCorrRecConfig(SCNConfig):
    pass


class CoCorrRec(nn.Module):
    """SCN on the device + GCN in the cloud, trained jointly; the device artifact is the SCN with correction inputs."""

    name = "cocorrrec"

    def __init__(self, cfg: CoCorrRecConfig):
        super().__init__()
        self.cfg = cfg
        self.scn = SCN(cfg)
        self.gcn = GCN(cfg.dim, cfg.heads, cfg.mini_batch)

    @property
    def item_emb(self) -> nn.Embedding:
        return self.scn.item_emb

    def corrections(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the cloud sends back for a window: GCN over the uploaded X of every mini-batch."""
        return self.gcn(self.scn.embed(items), items != 0)

    def encode(self, items, corr_attn=None, corr_bias=None):
        if corr_attn is None:
            corr_attn, corr_bias = self.corrections(items)
        return self.scn.encode(items, corr_attn, corr_bias)

    def forward(self, items, candidates, corr_attn=None, corr_bias=None):
        return self.scn.score(self.encode(items, corr_attn, corr_bias), candidates)

    def param_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        table = self.scn.item_emb.weight.numel()
        gcn = sum(p.numel() for p in self.gcn.parameters())
        return {"params": total, "params_excluding_item_table": total - table,
                "device_params_excluding_item_table": total - table - gcn, "cloud_params": gcn}

    def analytic_macs(self, seq_len: int) -> int:
        return self.scn.analytic_macs(seq_len)

    def contract(self, seq_len: int, candidates: int = 100, with_corrections: bool = True) -> list[EntryPoint]:
        return self.scn.contract(seq_len, candidates, with_corrections)
