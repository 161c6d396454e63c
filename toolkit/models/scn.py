"""CoCorrRec's on-device Self-Correction Network (SCN) and CoCorrRec = SCN + cloud GCN trained jointly.

SCN (docs/models.md §3): Embedding -> RMSNorm -> TTT-Linear -> LayerNorm -> Linear (no residual, no FFN by default) ->
RMSNorm; the user state u is the output at the last real position; score = dot(u, tower(candidate)).
Two exported entry points: `window` (static [1, L], from the learned initial state) and `step` (the next K clicks
plus the carried TTT state (W, b) -> scores and the new state).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.models.common import BaseConfig, Recommender, RMSNorm, last_real, last_real_onehot
from toolkit.models.contract import EntryPoint, StateSpec, TensorSpec
from toolkit.models.gcn import GCN
from toolkit.models.ttt import LN_EPS, TTTLinear, state_floats


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
        """Hand count of what an exported entry (`_DeviceGraph`) computes, including the candidate scoring.

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

        Both are `_DeviceGraph`s (built for XNNPACK: one partition for the window). tower_table=True ships the candidate
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
            module=_DeviceGraph(self, seq_len, False, tower_table, with_corrections).eval(),
            inputs=[TensorSpec("items", (1, seq_len), torch.int64, high=n),
                    TensorSpec("candidates", (1, candidates), torch.int64, high=n), *corr_specs(M)],
            outputs=["scores"],
            description=f"scores of {candidates} candidates for a right-padded window of {seq_len} items, "
                        "from the learned initial TTT state",
        )
        step = EntryPoint(
            name="step",
            module=_DeviceGraph(self, K, True, tower_table, with_corrections).eval(),
            inputs=[TensorSpec("items", (1, K), torch.int64, high=n),
                    TensorSpec("candidates", (1, candidates), torch.int64, high=n), *corr_specs(1)],
            outputs=["scores"],
            states=[StateSpec("ttt_W", W0.detach()), StateSpec("ttt_b", b0.detach())],
            description=f"the next {K} clicks + carried TTT state (W, b) -> scores and the new state",
        )
        return [window, step]


class _DeviceGraph(nn.Module):
    """SCN as exported (window and step, with or without correction inputs): the same maths as `SCN.encode` / `SCN.step`, written
    for a static batch of 1 so XNNPACK can take the whole graph (docs/models.md §3.3).

    * Every shape-only quantity is a constant built here once: RoPE cos/sin rows at t mod K for each position, tau
      folded into the E row maps and into the "tau of the last real token" vector, the last-real-token selector,
      the averaging maps; RoPE's rotate-half is slices + a concat.
    * Reductions over the last axis are matmuls with a constant [1, d] averaging row (XNNPACK delegates `mean.dim`
      only on 4-D inputs over the two innermost axes, and has no `sum`), broadcast back element-wise.
    * No expand/unsqueeze/arange/remainder/cast: the real-token mask comes from a gather of a 0/1 table (like the
      item table), matmuls between runtime tensors are `bmm` with matching batch, broadcasts are element-wise.
    * Outputs are computed only at the last real token (as `SCN.encode`). Without correction inputs the window is
      rolled by whole mini-batches so the one holding that token is the last (`_register_rolled`): the output row is
      computed once, everything that does not depend on the state is computed for all tokens at once, and each
      mini-batch is left with k W + b, the inner gradient and one update matmul on the augmented state [W; b].
    Constants are a snapshot of the weights when the entry is built (the contract is built right before export).
    """

    def __init__(self, scn: "SCN", seq_len: int, step: bool, tower_table: bool = False,
                 with_corrections: bool = False):
        super().__init__()
        ttt, cfg = scn.ttt, scn.cfg
        D, H, d, K = cfg.dim, cfg.heads, cfg.dim // cfg.heads, scn.K
        self.D, self.H, self.d, self.L, self.step, self.residual = D, H, d, seq_len, step, cfg.residual
        self.K, self.with_corrections = K, with_corrections
        self.corr_p, self.corr_q = float(ttt.corr_p.detach()), float(ttt.corr_q.detach())
        self.item_emb = scn.item_emb
        self.tower = None if tower_table else scn.tower
        c = lambda t: t.detach().clone().float()  # noqa: E731
        reg = self.register_buffer
        with torch.no_grad():
            if tower_table:
                reg("tower_table", scn.tower_table())
            mask = torch.ones(cfg.n_items + 1, 1)
            mask[0] = 0
            reg("mask_table", mask)
            eye = lambda n: torch.eye(n)  # noqa: E731
            reg("mean_D", torch.full((1, D), 1.0 / D))  # F.linear(z, mean_D) = mean over the last axis [.., 1]
            reg("mean_d", torch.full((1, d), 1.0 / d))
            # epsilons as the averaging linears' bias: Core ML's fuse_linear_bias pass fails on `linear(.) + eps`
            # when the linear has one output
            reg("eps_in", torch.full((1,), scn.in_norm.eps))
            reg("eps_out", torch.full((1,), scn.out_norm.eps))
            reg("eps_post", torch.full((1,), scn.post_ln.eps))
            reg("eps_ln", torch.full((1,), LN_EPS))
            reg("in_w", c(scn.in_norm.weight))
            reg("out_w", c(scn.out_norm.weight))
            reg("post_w", c(scn.post_ln.weight))
            reg("post_b", c(scn.post_ln.bias))
            reg("proj_w", c(scn.proj.weight))
            reg("wq", c(ttt.wq.weight))
            reg("wk", c(ttt.wk.weight))
            reg("wv", c(ttt.wv.weight))
            reg("lr_w", c(ttt.lr_weight))
            reg("lr_b", c(ttt.lr_bias))
            self.lr_scale = ttt.base_lr / d
            pos = torch.arange(seq_len) % K
            reg("cos", ttt.rope_cos[pos].float().repeat(1, H))  # [L, D]
            reg("sin", ttt.rope_sin[pos].float().repeat(1, H))
            reg("gamma", c(ttt.ln_weight).view(H, 1, d))
            reg("beta", c(ttt.ln_bias).view(H, 1, d))
            tau = c(ttt.tau())
            # last-real selector over the window: sel = m - m_next = m @ (I - S), S[s+1, s] = 1
            S = torch.zeros(seq_len, seq_len)
            idx = torch.arange(seq_len - 1)
            S[idx + 1, idx] = 1
            reg("sel_map", (eye(seq_len) - S).T.contiguous())  # F.linear(m_row, sel_map) = m_row @ (I - S)
            reg("ones_L", torch.ones(1, seq_len))
            if with_corrections:
                self._register_blocks(ttt, tau, seq_len)
            else:
                self._register_rolled(ttt, tau, seq_len)

    def _register_blocks(self, ttt, tau: torch.Tensor, L: int) -> None:
        """Constants of the corrected graph, which computes its output row in every mini-batch: per mini-batch the
        E row map, tau of the last real token, its masks and averaging rows, and the initial state."""
        K, H, d = self.K, self.H, self.d
        reg = self.register_buffer
        reg("eps_fuse", torch.full((1,), 1e-6))
        reg("W0", ttt.W0.detach().clone().float())  # [H, d, d]
        reg("b0", ttt.b0.detach().clone().float().view(H, 1, d))
        self.blocks = []
        for start in range(0, L, K):
            n = min(K, L - start)
            tril = torch.tril(torch.ones(n, n))
            prev = torch.cat([torch.zeros(1), tau[:n - 1]])
            i = len(self.blocks)
            # selected row of E: es[t] = sum_s sel_s tau_s [t <= s] (times eta_t) = sel @ (diag(tau) tril)
            reg(f"e_map{i}", (torch.diag(tau[:n]) @ tril).T.contiguous())
            # tau of the last real token of a right-padded mask m: sum_s (m_s - m_{s+1}) tau_s
            #   = sum_s m_s (tau_s - tau_{s-1}), tau_0 = 0
            reg(f"tlast{i}", (tau[:n] - prev).view(1, n))
            reg(f"ones{i}", torch.ones(1, n))
            reg(f"tril{i}", tril.T.contiguous())  # F.linear(sel, .) = sel @ tril: the selected row's mask
            reg(f"mean_n{i}", torch.full((1, n), 1.0 / n))
            self.blocks.append((start, n))

    def _register_rolled(self, ttt, tau: torch.Tensor, L: int) -> None:
        """Constants of the rolled window (`_forward_rolled`): the window is moved, by whole mini-batches, so the
        mini-batch holding the last real click is the graph's last one, into M K slots (L rounded up to K).

        Mini-batches after the last real click are all padding: they never change the state, and nobody reads their
        outputs. Rolling them to the front (as zero rows) keeps every position's t mod K, so the output is computed
        once, in the last mini-batch, instead of once per mini-batch behind a selector."""
        K, H = self.K, self.H
        M = -(-L // K)
        self.M = M
        reg = self.register_buffer
        block_map = torch.zeros(M, L)  # F.linear(sel, block_map) = which mini-batch holds the last real click
        for t in range(L):
            block_map[t // K, t] = 1.0
        reg("block_map", block_map)
        # row j of roll [M, M * M]: the [M, M] matrix moving mini-batches 0..j to the end (zeros before them);
        # it permutes whole mini-batches of the window padded to M K slots ([M, K D] rows)
        Lp = M * K if M > 1 else L  # one mini-batch (L <= K: the step, short windows) is not rolled
        self.Lp, self.nb = Lp, (K if M > 1 else L)  # slots, and the size of the last mini-batch
        roll = torch.zeros(M, M, M)
        for j in range(M):
            for blk in range(j + 1):
                roll[j, blk + (M - 1 - j), blk] = 1.0
        reg("roll", roll.view(M, M * M).T.contiguous())  # F.linear(block one-hot, roll) = that matrix, flat
        if Lp > L:
            reg("pad_x", torch.zeros(Lp - L, self.D))
            reg("pad_m", torch.zeros(Lp - L, 1))
        pos = torch.arange(Lp) % K
        reg("cos_p", ttt.rope_cos[pos].float().repeat(1, H))  # [Lp, D]
        reg("sin_p", ttt.rope_sin[pos].float().repeat(1, H))
        reg("cos_t", self.cos.T.contiguous())  # F.linear(sel, cos_t) = cos at the last real click   [1, D]
        reg("sin_t", self.sin.T.contiguous())
        n = self.nb
        S = torch.zeros(n, n)
        S[torch.arange(1, n), torch.arange(n - 1)] = 1.0
        reg("sel_map_K", (torch.eye(n) - S).T.contiguous())
        tril = torch.tril(torch.ones(n, n))
        reg("e_map_K", (torch.diag(tau[:n]) @ tril).T.contiguous())
        tdiff = tau[:n] - torch.cat([torch.zeros(1), tau[:n - 1]])
        reg("ones_K", torch.ones(1, n))
        # tau of the last real click of each slot's mini-batch, for every slot at once: F.linear(m [1, Lp], .)
        tl = torch.zeros(Lp, Lp)
        for blk in range(0, Lp, n):
            tl[blk:blk + n, blk:blk + n] = tdiff.view(1, n)
        reg("tlast_all", tl)
        # the state is kept augmented, Wb = [W; b] [H, d+1, d], so [k, 1] Wb is k W + b in one matmul and the
        # update of W and b is one matmul too; LayerNorm's centring is a matmul with C = I - 1 1^T / d. (Keeping the
        # state itself centred would save that matmul, but the drift of its mean then grows ~10x per mini-batch.)
        d = self.d
        reg("centre", torch.eye(d) - torch.full((d, d), 1.0 / d))
        reg("Wb0", torch.cat([ttt.W0.detach(), ttt.b0.detach().view(H, 1, d)], dim=1).float())  # [H, d+1, d]
        reg("ones_aug", torch.ones(H, Lp, 1))
        reg("ones_q", torch.ones(H, 1, 1))
        reg("gamma2", self.gamma * self.gamma)
        reg("gbeta", self.gamma * self.beta)

    # ---- pieces -------------------------------------------------------------------------------------------------
    def _rms(self, x, w, eps):
        return x * torch.rsqrt(F.linear(x * x, self.mean_D, eps)) * w

    def _ln_h(self, z):
        """Per-head LayerNorm over d of z [H, r, d] (inner model's, eps 1e-6)."""
        zc = z - F.linear(z, self.mean_d)
        return zc * torch.rsqrt(F.linear(zc * zc, self.mean_d, self.eps_ln)) * self.gamma + self.beta

    def _inner_grad(self, z, target):
        """g = d/dz 1/2 ||LN_h(z) - target||^2 (closed form, docs/models.md §2.2), z/target [H, n, d]."""
        zc = z - F.linear(z, self.mean_d)
        r = torch.rsqrt(F.linear(zc * zc, self.mean_d, self.eps_ln))
        xh = zc * r
        a = self.gamma * (self.gamma * xh + self.beta - target)
        return (a - F.linear(a, self.mean_d) - xh * F.linear(a * xh, self.mean_d)) * r

    def _rotate_half(self, y, rows):
        """Per head cat(-x2, x1) of y [rows, D]: slices and a concat, no arithmetic."""
        h = y.view(rows, self.H, 2, self.d // 2)
        return torch.cat([-h[:, :, 1:2, :], h[:, :, 0:1, :]], dim=2).view(rows, self.D)

    @staticmethod
    def _fuse(corr, target, mean, eps):
        """`fuse_correction` row-wise over the last axis (mean: the [1, width] averaging map of that axis).

        present = ceil(clamp(mean |corr|, 0, 1)) is 1 exactly when a row has a non-zero entry (as its amax > 0)."""
        cc = F.linear(corr, mean)
        cd = corr - cc
        cs = torch.sqrt(F.linear(cd * cd, mean, eps))
        tc = F.linear(target, mean)
        td = target - tc
        ts = torch.sqrt(F.linear(td * td, mean, eps))
        present = torch.ceil(torch.clamp(F.linear(torch.abs(corr), mean), 0.0, 1.0))
        return (cd / cs * ts + tc) * present

    def _select_rows(self, sel_m, corr, n, width):
        """Row s* (one-hot sel_m [1, n]) of corr [H, n, width] for every head -> [H, 1, width]."""
        flat = corr.permute(1, 0, 2).reshape(1, n, self.H * width)
        return torch.bmm(sel_m.view(1, 1, n), flat).view(self.H, 1, width)

    def _heads(self, t, rows):  # [rows, D] -> [H, rows, d]
        return t.view(rows, self.H, self.d).permute(1, 0, 2)

    def _forward_rolled(self, items, candidates, state):
        """The graph without correction inputs (see `_register_rolled`). Everything that does not depend on the
        state is computed for every slot at once (k, v, the inner-loss target, each slot's share of its
        mini-batch's update); per mini-batch only k W + b, the inner gradient and the update are left; q, the
        output row and its LayerNorm are computed once, at the last real click."""
        L, D, H, d, K, M, Lp = self.L, self.D, self.H, self.d, self.nb, self.M, self.Lp
        e = self.item_emb(items).view(L, D)
        m = F.embedding(items, self.mask_table).view(L, 1)  # 1 = real token
        x = self._rms(e, self.in_w, self.eps_in)
        sel = F.linear(m.view(1, L), self.sel_map)  # [1, L] one-hot at the last real token (zeros if none)
        if M > 1:
            P = F.linear(F.linear(sel, self.block_map), self.roll).view(1, M, M)
            xs, ms = (x, m) if Lp == L else (torch.cat([x, self.pad_x]), torch.cat([m, self.pad_m]))
            xp = torch.bmm(P, xs.view(1, M, K * D)).view(Lp, D)
            mp = torch.bmm(P, ms.view(1, M, K)).view(Lp, 1)
        else:
            xp, mp = x, m
        x_sel = torch.bmm(sel.view(1, 1, L), x.view(1, L, D)).view(1, D)
        yq = F.linear(x_sel, self.wq)
        q = yq * F.linear(sel, self.cos_t) + self._rotate_half(yq, 1) * F.linear(sel, self.sin_t)  # [1, D]
        yk = F.linear(xp, self.wk)
        kh = self._heads(yk * self.cos_p + self._rotate_half(yk, Lp) * self.sin_p, Lp)  # RoPE at t mod K
        vh = self._heads(F.linear(xp, self.wv), Lp)
        c = self.gbeta - self.gamma * (vh - kh)  # gamma (beta - target) of the inner loss        [H, Lp, d]
        eta = torch.sigmoid(F.linear(xp, self.lr_w, self.lr_b)) * self.lr_scale * mp  # [Lp, H]
        etah = eta.permute(1, 0).view(H, 1, Lp)
        m_row = mp.view(1, Lp)
        ka = torch.cat([kh, self.ones_aug], dim=2)  # [H, Lp, d+1]
        # each slot's k^T scaled by eta_t tau(last real click of its mini-batch): the update is one matmul
        kTe = ka.permute(0, 2, 1) * (etah * F.linear(m_row, self.tlast_all).view(1, 1, Lp))  # [H, d+1, Lp]
        qs = q.view(1, H, d).permute(1, 0, 2)  # [H, 1, d]
        Wb = torch.cat([state[0].view(H, d, d), state[1].view(H, 1, d)], dim=1) if state else self.Wb0
        o = None
        one = M == 1  # one mini-batch is used unsliced: a full-range slice lowers to an alias_copy XNNPACK refuses
        for i in range(M):
            st = i * K
            kam = ka if one else ka[:, st:st + K]
            zc = F.linear(torch.bmm(kam, Wb), self.centre)  # k W + b, centred (C is symmetric) [H, K, d]
            r = torch.rsqrt(F.linear(zc * zc, self.mean_d, self.eps_ln))
            xh = zc * r
            a = self.gamma2 * xh + (c if one else c[:, st:st + K])
            G = (a - F.linear(a, self.mean_d) - xh * F.linear(a * xh, self.mean_d)) * r  # inner gradient [H, K, d]
            if i == M - 1:  # the mini-batch holding the last real click: its output row
                em = etah if one else etah[:, :, st:st + K]
                sel_k = F.linear(m_row if one else m_row[:, st:st + K], self.sel_map_K)  # [1, K]
                es = F.linear(sel_k, self.e_map_K).view(1, 1, K) * em  # selected row of E          [H, 1, K]
                As = torch.bmm(qs, (kh if one else kh[:, st:st + K]).permute(0, 2, 1))  # row of Q K^T
                Zs = torch.bmm(torch.cat([qs, self.ones_q], dim=2), Wb) - torch.bmm(es + es * As, G)
                Zs = F.linear(Zs, self.centre)
                ln = Zs * torch.rsqrt(F.linear(Zs * Zs, self.mean_d, self.eps_ln)) * self.gamma + self.beta
                o = qs + F.linear(sel_k, self.ones_K).view(1, 1, 1) * ln
            if self.step or i < M - 1:
                Wb = Wb - torch.bmm(kTe if one else kTe[:, :, st:st + K], G)  # W and b together
        W = b = None
        if self.step:
            W, b = Wb[:, :d], Wb[:, d:]
        return self._scores(o, x_sel, sel, candidates, W, b)

    def _scores(self, o, x_sel, sel, candidates, W, b):
        """The head on the output row o [H, 1, d] -> scores [1, C] (and the state, for `step`)."""
        H, d, D = self.H, self.d, self.D
        h = o.permute(1, 0, 2).reshape(1, D)
        h = h - F.linear(h, self.mean_D)
        h = h * torch.rsqrt(F.linear(h * h, self.mean_D, self.eps_post)) * self.post_w + self.post_b
        h = F.linear(h, self.proj_w)
        if self.residual:
            h = x_sel + h
        u = self._rms(h, self.out_w, self.eps_out) * F.linear(sel, self.ones_L)  # all padding -> zeros
        C = candidates.shape[1]
        if self.tower is None:
            cand = F.embedding(candidates, self.tower_table).view(1, C, D)
        else:
            cand = self.tower(self.item_emb(candidates)).view(1, C, D)
        scores = torch.bmm(cand, u.view(1, D, 1)).view(1, C)
        if not self.step:
            return scores
        return scores, W.view(1, H, d, d), b.view(1, H, d)

    def forward(self, items, candidates, *rest):
        if not self.with_corrections:
            return self._forward_rolled(items, candidates, list(rest))
        corr_attn, corr_bias, *state = rest
        W, b = state if state else (None, None)
        L, D, H, d, K = self.L, self.D, self.H, self.d, self.K
        e = self.item_emb(items).view(L, D)
        m = F.embedding(items, self.mask_table).view(L, 1)  # 1 = real token
        x = self._rms(e, self.in_w, self.eps_in)
        yq, yk = F.linear(x, self.wq), F.linear(x, self.wk)
        q = yq * self.cos + self._rotate_half(yq, L) * self.sin  # [L, D], RoPE at t mod K
        k = yk * self.cos + self._rotate_half(yk, L) * self.sin
        v = F.linear(x, self.wv)
        eta = torch.sigmoid(F.linear(x, self.lr_w, self.lr_b)) * self.lr_scale * m  # [L, H]
        qh, kh, vh = self._heads(q, L), self._heads(k, L), self._heads(v, L)
        etah = eta.permute(1, 0).view(H, 1, L)
        m_row = m.view(1, L)
        sel = F.linear(m_row, self.sel_map)  # [1, L] one-hot at the last real token (zeros if none)
        if W is None:
            W, b = self.W0, self.b0
        else:
            W, b = W.view(H, d, d), b.view(H, 1, d)
        o = None
        last = len(self.blocks) - 1
        for i, (st, n) in enumerate(self.blocks):
            # a block spanning the whole window (the step: L = K) is used as is: a full-range slice lowers to an
            # alias_copy that XNNPACK does not take, which split the step into two partitions
            full = st == 0 and n == L
            qm, km, vm = (qh, kh, vh) if full else (qh[:, st:st + n], kh[:, st:st + n], vh[:, st:st + n])
            em = etah if full else etah[:, :, st:st + n]  # [H, 1, n]
            sel_m = sel if full else sel[:, st:st + n]  # [1, n]
            kT = km.permute(0, 2, 1)  # [H, d, n]
            G = self._inner_grad(torch.bmm(km, W) + b, vm - km)  # [H, n, d]
            qblock = q if full else q[st:st + n]
            qs = torch.bmm(sel_m.view(1, 1, n), qblock.view(1, n, D))  # selected query [1, 1, D]
            qs = qs.view(1, H, d).permute(1, 0, 2)  # [H, 1, d]
            es = F.linear(sel_m, getattr(self, f"e_map{i}")).view(1, 1, n) * em  # selected row of E [H, 1, n]
            As = torch.bmm(qs, kT)  # selected row of Q K^T [H, 1, n]
            if corr_attn is None:
                Zs = torch.bmm(qs, W) + b - torch.bmm(es + es * As, G)
            else:  # the selected row of docs/models.md §4.2's fusion (row-wise, so the row alone is exact)
                ca = corr_attn.view(-1, H, K, K)[i:i + 1, :, :n, :n].view(H, n, n)
                cb = corr_bias.view(-1, H, K, d)[i:i + 1, :, :n, :].view(H, n, d)
                trow = F.linear(sel_m, getattr(self, f"tril{i}")).view(1, 1, n)  # [t <= s*]
                A_sel = As * trow
                mean_n = getattr(self, f"mean_n{i}")
                A_used = A_sel + self.corr_p * self._fuse(self._select_rows(sel_m, ca, n, n), A_sel, mean_n, self.eps_fuse) * trow
                b_bar = b - torch.bmm(es, G)
                b_used = b_bar + self.corr_q * self._fuse(self._select_rows(sel_m, cb, n, d), b_bar, self.mean_d,
                                                          self.eps_fuse)
                Zs = torch.bmm(qs, W) - torch.bmm(es * A_used, G) + b_used
            cnt = F.linear(sel_m, getattr(self, f"ones{i}")).view(1, 1, 1)  # 1 if the last real token is here
            o_m = qs + cnt * self._ln_h(Zs)
            o = o_m if o is None else o + o_m
            if self.step or i < last:
                tl = F.linear(m_row if full else m_row[:, st:st + n], getattr(self, f"tlast{i}")).view(1, 1, 1)
                e_last = em * tl  # [H, 1, n]
                W = W - torch.bmm(kT * e_last, G)
                b = b - torch.bmm(e_last, G)
        x_sel = torch.bmm(sel.view(1, 1, L), x.view(1, L, D)).view(1, D) if self.residual else None
        return self._scores(o, x_sel, sel, candidates, W, b)


@dataclass
class CoCorrRecConfig(SCNConfig):
    # "paper": the GCN reads the device's window and corrects A and b_bar with re-standardised fusion
    #          (docs/models.md §4.2, CoCorrRec as published; kept for comparison).
    # "history": the cloud reads the user's longer history (context_len clicks) and sends a per-user correction of
    #          the TTT initial state (delta W, b: H (d^2 + d) floats) that persists through the window; its head
    #          starts at zero, so training starts exactly at SCN and learns each user's own correction size.
    cloud: str = "paper"
    context_len: int = 20  # "history" only: clicks of history the cloud reads (GRU cost grows with it)
    cloud_hidden: int = 64  # "history" only: width of the cloud's GRU + MLP
    update_dropout: float = 0.0  # "history" only: share of training rows with no update (toolkit.models.cloud)
    cloud_table: bool = False  # "history" only: the cloud embeds the history with its own item table (not shipped)
    offline_loss: bool = True  # training only: every row also scored with no update, with SCN's own loss


CLOUD_KINDS = ("paper", "history")


class CoCorrRec(nn.Module):
    """SCN on the device + a cloud correction trained jointly (docs/models.md §4); see CoCorrRecConfig.cloud.

    Implements the cloud-model interface of toolkit.models.cloud. With cloud="paper" the update is the GCN's
    (corr_attn, corr_bias) of every mini-batch flattened, and the device artifact is the SCN with correction inputs.
    """

    name = "cocorrrec"

    def __init__(self, cfg: CoCorrRecConfig):
        super().__init__()
        if cfg.cloud not in CLOUD_KINDS:
            from toolkit.errors import ToolkitError

            raise ToolkitError(f"unknown cocorrrec cloud '{cfg.cloud}' (valid: {', '.join(CLOUD_KINDS)})")
        if cfg.cloud_table and cfg.cloud != "history":
            from toolkit.errors import ToolkitError

            raise ToolkitError("cocorrrec cloud_table=true is a cloud=history option (the paper's GCN reads the "
                               "device's own embeddings)")
        self.cfg = cfg
        self.scn = SCN(cfg)
        H, d = cfg.heads, cfg.dim // cfg.heads
        if cfg.cloud == "paper":
            self.gcn = GCN(cfg.dim, cfg.heads, cfg.mini_batch)
            self.context_len = 0  # the cloud sees the device's own window
        else:
            from toolkit.models.cloud import HistoryEncoder

            self.cloud = HistoryEncoder(cfg.dim, cfg.cloud_hidden, cfg.cloud_hidden)
            # the cloud's own item table: the device's table is shaped by what the device needs, the cloud's by
            # what the correction needs (it stays in the cloud: nothing of it is downloaded)
            self.cloud_emb = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=0) if cfg.cloud_table else None
            self.state_head = nn.Linear(cfg.cloud_hidden, H * (d * d + d))
            nn.init.zeros_(self.state_head.weight)
            nn.init.zeros_(self.state_head.bias)
            self.context_len = cfg.context_len

    @property
    def item_emb(self) -> nn.Embedding:
        return self.scn.item_emb

    @property
    def device(self) -> nn.Module:
        """The on-device SCN (its item table and candidate tower score every candidate)."""
        return self.scn

    def corrections(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the paper's GCN sends back for a window: GCN over the uploaded X of every mini-batch."""
        return self.gcn(self.scn.embed(items), items != 0)

    # ---- the cloud-model interface (toolkit.models.cloud) ----------------------------------------------------------
    def update_floats(self, seq_len: int | None = None) -> int:
        H, K, d = self.cfg.heads, self.cfg.mini_batch, self.cfg.dim // self.cfg.heads
        if self.cfg.cloud == "history":
            return H * (d * d + d)
        M = -(-(seq_len or K) // K)
        return M * H * K * (K + d)

    def device_encode(self, items: torch.Tensor) -> torch.Tensor:
        return self.scn.encode(items)

    def cloud_update(self, context: torch.Tensor) -> torch.Tensor:
        """context [B, N] (paper: the device window itself) -> flat update [B, P]."""
        if self.cfg.cloud == "paper":
            ca, cb = self.corrections(context)
            return torch.cat([ca.flatten(1), cb.flatten(1)], dim=1)
        x = self.scn.embed(context) if self.cloud_emb is None else self.scn.in_norm(self.cloud_emb(context))
        return self.state_head(self.cloud(x, context != 0))

    def _split(self, items: torch.Tensor, update: torch.Tensor):
        B, L = items.shape
        H, K, d = self.cfg.heads, self.cfg.mini_batch, self.cfg.dim // self.cfg.heads
        if self.cfg.cloud == "paper":
            M = -(-L // K)
            ca, cb = torch.split(update, [M * H * K * K, M * H * K * d], dim=1)
            return ca.reshape(B, M, H, K, K), cb.reshape(B, M, H, K, d)
        dW, db = torch.split(update, [H * d * d, H * d], dim=1)
        return dW.reshape(B, H, d, d), db.reshape(B, H, d)

    def score_update(self, items, candidates, update):
        if self.cfg.cloud == "paper":
            ca, cb = self._split(items, update)
            return self.scn(items, candidates, ca, cb)
        dW, db = self._split(items, update)
        ttt = self.scn.ttt
        return self.scn.score(self.scn._encode_last(items, (ttt.W0 + dW, ttt.b0 + db)), candidates)

    def encode(self, items, corr_attn=None, corr_bias=None):
        if self.cfg.cloud != "paper":
            raise NotImplementedError("cocorrrec(cloud=history) scores through score_update")
        if corr_attn is None:
            corr_attn, corr_bias = self.corrections(items)
        return self.scn.encode(items, corr_attn, corr_bias)

    def forward(self, items, candidates, corr_attn=None, corr_bias=None, context=None):
        if self.cfg.cloud == "paper":
            return self.scn.score(self.encode(items, corr_attn, corr_bias), candidates)
        from toolkit.models.cloud import drop_updates

        update = self.cloud_update(items if context is None else context)
        return self.score_update(items, candidates, drop_updates(update, self.cfg.update_dropout, self.training))

    def position_scores(self, items, candidates, context=None):
        """Training with a loss at every position (toolkit.models.cloud.cloud_position_scores)."""
        from toolkit.models.cloud import cloud_position_scores

        return cloud_position_scores(self, items, candidates, context)

    def payload(self, seq_len: int = 10) -> dict:
        """Bytes on the wire per update, beside the paper's 2.56 KB up / 4.16 KB down."""
        if self.cfg.cloud == "paper":
            up, down = 4 * -(-seq_len // self.cfg.mini_batch) * self.cfg.mini_batch * self.cfg.dim, \
                4 * self.update_floats(seq_len)
        else:  # the cloud keeps the click log: the device sends only its window's ids (int64)
            up, down = 8 * seq_len, 4 * self.update_floats()
        return {"upload_bytes": up, "download_bytes": down, "download_floats": down // 4,
                "paper_upload_bytes": 2_560, "paper_download_bytes": 4_160, "cloud_macs_per_update": self.cloud_macs()}

    def cloud_macs(self, seq_len: int = 10) -> int:
        if self.cfg.cloud == "paper":
            D, K = self.cfg.dim, self.cfg.mini_batch
            M = -(-seq_len // K)
            return M * (K * 3 * 2 * D * D + 2 * D * D + D * self.update_floats(K))
        return self.cloud.macs(self.cfg.context_len, self.cfg.dim) + self.cfg.cloud_hidden * self.update_floats()

    def param_counts(self) -> dict[str, int]:
        from toolkit.models.cloud import param_split

        return param_split(self, [m for name, m in self.named_children() if name != "scn"])

    def analytic_macs(self, seq_len: int) -> int:
        return self.scn.analytic_macs(seq_len)

    def entry_analytic_macs(self, entry_name: str, seq_len: int, candidates: int = 100,
                            tower_table: bool = False, with_corrections: bool = False) -> int | None:
        return self.scn.entry_analytic_macs(entry_name, seq_len, candidates, tower_table, with_corrections)

    def contract(self, seq_len: int, candidates: int = 100, with_corrections: bool = True,
                 tower_table: bool = False) -> list[EntryPoint]:
        if self.cfg.cloud == "paper":
            return self.scn.contract(seq_len, candidates, with_corrections, tower_table)
        from toolkit.models.cloud import update_window_entry

        step = [e for e in self.scn.contract(seq_len, candidates, False, tower_table) if e.name == "step"]
        window = _StateCorrectedWindow(self.scn, seq_len, tower_table)
        return [update_window_entry(self, seq_len, candidates, "TTT state correction", module=window), *step]


class _StateCorrectedWindow(nn.Module):
    """The exported window of cocorrrec(cloud=history): SCN's device graph started from the corrected initial state
    W0 + delta W, b0 + delta b, the correction being the `update` input [1, H (d^2 + d)] (zeros = plain SCN)."""

    def __init__(self, scn: SCN, seq_len: int, tower_table: bool = False):
        super().__init__()
        H, d = scn.cfg.heads, scn.cfg.dim // scn.cfg.heads
        self.H, self.d = H, d
        # not "graph": fx modules have a .graph
        self.scn_graph = _DeviceGraph(scn, seq_len, step=False, tower_table=tower_table)
        self.register_buffer("W0", scn.ttt.W0.detach().clone().float())  # [H, d, d]
        self.register_buffer("b0", scn.ttt.b0.detach().clone().float().view(H, 1, d))

    def forward(self, items, candidates, update):
        H, d = self.H, self.d
        dW = update[:, : H * d * d].view(H, d, d)
        db = update[:, H * d * d:].view(H, 1, d)
        return self.scn_graph(items, candidates, self.W0 + dW, self.b0 + db)
