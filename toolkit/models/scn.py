"""CoCorrRec's on-device Self-Correction Network (SCN); its exported graph is toolkit.models.scn_device, CoCorrRec =
SCN + a cloud correction is toolkit.models.cocorrrec.

SCN (docs/models.md §3): Embedding -> RMSNorm -> TTT-Linear -> LayerNorm -> Linear (no residual, no FFN by default) ->
RMSNorm; the user state u is the output at the last real position; score = dot(u, tower(candidate)).
Two exported entry points: `window` (static [1, L], from the learned initial state) and `step` (the next K clicks
plus the carried TTT state (W, b) -> scores and the new state).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from toolkit.models.common import BaseConfig, Recommender, RMSNorm, last_real, last_real_onehot
from toolkit.models.contract import EntryPoint, StateSpec, TensorSpec
from toolkit.models.scn_device import DeviceGraph
from toolkit.models.ttt import TTTLinear, state_floats


@dataclass
class SCNConfig(BaseConfig):
    heads: int = 4
    mini_batch: int = 10
    base_lr: float = 1.0
    rope_theta: float = 1e4
    residual: bool = False  # the authors' block has none; a switch for experiments
    dropout: float = 0.0  # training only: dropout on the normalised item embeddings (identity when exported)
    # training only: run the uncorrected forward (encode + scores) through torch.compile (same maths; ~2x faster per step on CPU,
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
        self.emb_drop = nn.Dropout(cfg.dropout)
        self._compiled_forward = None  # built on first use when cfg.compile_train

    @property
    def K(self) -> int:
        return self.cfg.mini_batch

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        """RMSNorm'd embeddings X [B, L, D]: what the device uploads to the cloud GCN."""
        return self.emb_drop(self.in_norm(self.item_emb(items)))

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
        return self._encode_last(items)

    def position_states(self, items):
        """Per-token outputs [B, L, D]: the dual form is causal, so token t sees only clicks up to t."""
        return self.hidden(items, need_state=False)[0]

    def _encode_last(self, items, state=None):
        # the head is per token, so taking the last real position first gives the same u for 1/L of the work
        x = self.embed(items)
        mask = items != 0
        sel = last_real_onehot(items).to(x.dtype)  # [B, L]
        o, _ = self.ttt.forward_selected(x, mask, sel, state)
        x_last = (sel[:, None, :] @ x).squeeze(1)
        return self._head(x_last, o) * sel.sum(-1, keepdim=True)  # all-padding row -> zeros, as last_real

    def forward(self, items, candidates, corr_attn=None, corr_bias=None):
        if corr_attn is None and self.cfg.compile_train and self.training and torch.is_grad_enabled():
            if self._compiled_forward is None:  # encode + scoring in one compiled graph
                self._compiled_forward = torch.compile(self._forward_plain)
            return self._compiled_forward(items, candidates)
        return self.score(self.encode(items, corr_attn, corr_bias), candidates)

    def _forward_plain(self, items, candidates):
        return self.score(self._encode_last(items), candidates)

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

    def entry_analytic_macs(self, entry_name: str, seq_len: int, candidates: int = 100,
                            tower_table: bool = False, with_corrections: bool = False) -> int | None:
        """Hand count of what an exported entry (`DeviceGraph`) computes, including the candidate scoring.

        `analytic_macs` is the docs/models.md §9 figure (outputs at every token); the exported graph needs the output
        at the last real token only. Without corrections (the rolled graph): k, v, the lr gate for the window padded
        to M K slots, q for one row; per mini-batch k W + b, LayerNorm's centring, the inner-gradient averages and
        (except the last, in a window) the update; the output row once. With corrections: every mini-batch
        computes its selected row (q W, Q K^T, (E + E A) G). Averages and selectors are matmuls with constant
        rows and are counted too."""
        if entry_name not in ("window", "step"):
            return None
        D, H, K = self.cfg.dim, self.cfg.heads, self.K
        d = D // H
        L = K if entry_name == "step" else seq_len
        tail = 2 * D + D * D + D + L  # post-LN averages, projection, out-RMSNorm average, all-padding mask
        tail += candidates * D + (0 if tower_table else candidates * 2 * D * D)  # scores (+ the tower)
        if with_corrections:
            macs = L * (3 * D * D + H * D) + L * D  # projections + lr gate; in-RMSNorm average
            starts = list(range(0, L, K))
            for i, start in enumerate(starts):
                n = min(K, L - start)
                macs += H * n * d * d + 4 * H * n * d  # k W; inner-gradient averages
                macs += n * D + n * n + 2 * H * n * d + H * d * d + 2 * H * d + n  # selected row
                if entry_name == "step" or i < len(starts) - 1:
                    macs += H * n * d * d + H * n * d + n  # state update (W, b) and tau of the last real token
            return macs + L + tail
        M = -(-L // K)
        n = K if M > 1 else L
        Lp = M * n
        macs = L * D + L * L + L * D + D * D + 2 * L * D  # in-RMSNorm, selector, x and q at it, its RoPE rows
        if M > 1:
            macs += L * M + M * M * M + M * M * (K * D + K)  # which mini-batch, the roll, rolling x and the mask
        macs += Lp * (2 * D * D + H * D) + Lp * Lp  # k, v, lr gate; tau of each slot's last real token
        for i in range(M):
            macs += H * n * (d + 1) * d + H * n * d * d + 3 * H * n * d  # k W + b, centring, averages
            if entry_name == "step" or i < M - 1:
                macs += H * (d + 1) * n * d  # the update of [W; b]
        macs += 2 * n * n + n + 2 * H * n * d + H * (d + 1) * d + H * d * d + H * d  # the output row, its LN
        return macs + tail

    def state_floats(self) -> int:
        return state_floats(self.cfg.heads, self.cfg.dim // self.cfg.heads)

    def contract(self, seq_len: int, candidates: int = 100, with_corrections: bool = False,
                 tower_table: bool = False) -> list[EntryPoint]:
        """The exported entry points (docs/export.md §1, docs/models.md §3.2): `window` and `step`, static shapes.

        Both are `DeviceGraph`s (built for XNNPACK: one partition for the window). tower_table=True ships the candidate
        tower's output for every item ([n_items + 1, D], a pure function of the item) and gathers candidate rows
        instead of running Linear-tanh-Linear on every candidate."""
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
            module=DeviceGraph(self, seq_len, False, tower_table, with_corrections).eval(),
            inputs=[TensorSpec("items", (1, seq_len), torch.int64, high=n),
                    TensorSpec("candidates", (1, candidates), torch.int64, high=n), *corr_specs(M)],
            outputs=["scores"],
            description=f"scores of {candidates} candidates for a right-padded window of {seq_len} items, "
                        "from the learned initial TTT state",
        )
        step = EntryPoint(
            name="step",
            module=DeviceGraph(self, K, True, tower_table, with_corrections).eval(),
            inputs=[TensorSpec("items", (1, K), torch.int64, high=n),
                    TensorSpec("candidates", (1, candidates), torch.int64, high=n), *corr_specs(1)],
            outputs=["scores"],
            states=[StateSpec("ttt_W", W0.detach()), StateSpec("ttt_b", b0.detach())],
            description=f"the next {K} clicks + carried TTT state (W, b) -> scores and the new state",
        )
        return [window, step]
