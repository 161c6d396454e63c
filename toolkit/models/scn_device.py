"""SCN's hand-lowered device graph: the `window` and `step` entries as exported (static batch of 1, every
shape-only quantity a constant), separate from the training model in toolkit.models.scn (docs/models.md §3.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.models.common import fp32_dot
from toolkit.models.ttt import LN_EPS


class DeviceGraph(nn.Module):
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
    `scn` is a toolkit.models.scn.SCN (not imported: scn imports this module).
    """

    def __init__(self, scn: nn.Module, seq_len: int, step: bool, tower_table: bool = False,
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
        cand, u = fp32_dot(cand, u)
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
