"""TTT-Linear (Sun et al. 2024) as CoCorrRec's SCN uses it: dual, primal and streaming forms side by side.

The hidden state of each head is a linear model (W [d, d], b [d]). Every token takes a self-supervised gradient
step on l_t = 1/2 ||LN_h(k_t W + b) - (v_t - k_t)||^2. Inside a mini-batch of K tokens every gradient is taken at
the mini-batch's starting (W0, b0) (docs/models.md §2.4-§2.5), which is what makes the dual form a few matmuls.

Shapes: B batch, H heads, L tokens, K mini-batch size, k <= K tokens in the current mini-batch, d head width.
Corrections (CoCorrRec's GCN) are per mini-batch: attn [B, M, H, K, K], bias [B, M, H, K, d]; zeros = none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6


def rope_tables(k: int, d: int, theta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cos/sin [k, d] for positions 0..k-1 (RoPE at `t mod K`: positions restart every mini-batch), and the
    rotate-half map R [d, d] (x @ R == cat(-x2, x1)): one small matmul instead of slice/negate/concat."""
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    ang = torch.arange(k, dtype=torch.float32)[:, None] * inv[None, :]  # [k, d/2]
    ang = torch.cat([ang, ang], dim=-1)  # [k, d]
    half = d // 2
    rot = torch.zeros(d, d)
    rot[half:, :half] = -torch.eye(half)
    rot[:half, half:] = torch.eye(half)
    return ang.cos(), ang.sin(), rot


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """x [..., k, d] rotated by position (rotate-half convention)."""
    return x * cos + (x @ rot) * sin


def layer_norm(z: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Per-head LayerNorm over d. z [B, H, k, d]; gamma, beta [H, d]."""
    mu = z.mean(-1, keepdim=True)
    var = (z - mu).pow(2).mean(-1, keepdim=True)
    return (z - mu) * torch.rsqrt(var + LN_EPS) * gamma[:, None, :] + beta[:, None, :]


def ln_l2_grad(z: torch.Tensor, target: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Closed-form d/dz of 1/2 ||LN(z) - target||^2 through the LayerNorm (no autograd). All [B, H, k, d]."""
    d = z.shape[-1]
    mu = z.mean(-1, keepdim=True)
    var = (z - mu).pow(2).mean(-1, keepdim=True)
    std = torch.sqrt(var + LN_EPS)
    x_hat = (z - mu) / std
    grad_y = gamma[:, None, :] * x_hat + beta[:, None, :] - target
    grad_xhat = grad_y * gamma[:, None, :]
    return (
        d * grad_xhat - grad_xhat.sum(-1, keepdim=True) - x_hat * (grad_xhat * x_hat).sum(-1, keepdim=True)
    ) / (d * std)


class _InnerGrad(torch.autograd.Function):
    """g = d/dz 1/2 ||gamma * LN(z) + beta - target||^2 with a closed-form backward (training speed).

    Forward, per row of d: xh = (z - mu) / s, a = gamma * (gamma * xh + beta - target), g = P(a) / s with
    P(a) = a - mean(a) - xh * mean(a * xh) (symmetric). Backward for upstream u, c = u / s, p = P(c):
    dL/da = p; dL/dxh = gamma^2 p - mean(a xh) c - a mean(c xh); dL/ds = -sum(u g) / s;
    dL/dz = P(dL/dxh) / s + dL/ds * xh / d; dL/dtarget = -gamma p; dL/dbeta = gamma p; dL/dgamma = p (r + gamma xh)
    with r = gamma * xh + beta - target. gamma, beta broadcast against z; their gradients are summed back.
    Checked against autograd through `ln_l2_grad` (tests/test_models_ttt.py)."""

    @staticmethod
    def forward(ctx, z, target, gamma, beta):
        d = z.shape[-1]
        mu = z.mean(-1, keepdim=True)
        zc = z - mu
        s = torch.sqrt(zc.pow(2).mean(-1, keepdim=True) + LN_EPS)
        xh = zc / s
        r = gamma * xh + beta - target
        a = gamma * r
        m = (a * xh).mean(-1, keepdim=True)
        g = (a - a.mean(-1, keepdim=True) - xh * m) / s
        ctx.save_for_backward(xh, s, r, a, m, g, gamma, beta)
        ctx.d = d
        return g

    @staticmethod
    def backward(ctx, u):
        xh, s, r, a, m, g, gamma, beta = ctx.saved_tensors
        d = ctx.d
        P = lambda t: t - t.mean(-1, keepdim=True) - xh * (t * xh).mean(-1, keepdim=True)  # noqa: E731
        c = u / s
        p = P(c)
        gxh = gamma * gamma * p - m * c - a * (c * xh).mean(-1, keepdim=True)
        gs = -(u * g).sum(-1, keepdim=True) / s
        gz = P(gxh) / s + gs * xh / d
        gp = gamma * p
        g_gamma = (p * (r + gamma * xh)).sum_to_size(gamma.shape) if ctx.needs_input_grad[2] else None
        g_beta = gp.sum_to_size(beta.shape) if ctx.needs_input_grad[3] else None
        return gz, -gp, g_gamma, g_beta


def inner_grad(z: torch.Tensor, target: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Same value as `ln_l2_grad` (gamma, beta already broadcastable against z); closed-form backward."""
    return _InnerGrad.apply(z, target, gamma, beta)


def _state_mm(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """x [B, H, n, d] @ W: per-row state [B, H, d, d], or the shared initial state [H, d, d] (one matmul per head,
    no copy of W per row)."""
    return x @ W  # broadcasting; an einsum over the shared state measured slower in backward


def fuse_correction(corr: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Standardise `corr` along its last axis, rescale it to `target`'s own per-row mean/std (docs/models.md §4.2).

    A row of zeros stays zero, so an all-zero correction means "no correction" exactly.
    """
    cm = corr.mean(-1, keepdim=True)
    cs = (corr - cm).pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    tm = target.mean(-1, keepdim=True)
    ts = (target - tm).pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    present = (corr.abs().amax(-1, keepdim=True) > 0).to(corr.dtype)
    return ((corr - cm) / cs * ts + tm) * present


class TTTLinear(nn.Module):
    """Multi-head TTT-Linear with learned inner learning rate, per-position scale and learned initial state."""

    def __init__(self, dim: int, heads: int, mini_batch: int, base_lr: float = 1.0, rope_theta: float = 1e4):
        super().__init__()
        assert dim % heads == 0, "dim must be divisible by heads"
        self.dim, self.heads, self.K, self.base_lr = dim, heads, mini_batch, base_lr
        self.d = d = dim // heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        for lin in (self.wq, self.wk, self.wv):
            nn.init.normal_(lin.weight, std=0.02)
        # inner learning rate gate: eta_t = base_lr / d * sigmoid(w_h . X_t + c_h)
        self.lr_weight = nn.Parameter(torch.randn(heads, dim) * 0.02)
        self.lr_bias = nn.Parameter(torch.zeros(heads))
        # per-position scale tau_s = max(0, 1/s + delta_s), delta init 0
        self.tau_offset = nn.Parameter(torch.zeros(mini_batch))
        # learned initial hidden state of every head
        self.W0 = nn.Parameter(torch.randn(heads, d, d) * 0.02)
        self.b0 = nn.Parameter(torch.zeros(heads, d))
        # per-head LayerNorm of the inner model
        self.ln_weight = nn.Parameter(torch.ones(heads, d))
        self.ln_bias = nn.Parameter(torch.zeros(heads, d))
        # CoCorrRec fusion scalars (P for the attention matrix, Q for the bias trajectory)
        self.corr_p = nn.Parameter(torch.zeros(()))
        self.corr_q = nn.Parameter(torch.full((), 0.25))
        cos, sin, rot = rope_tables(mini_batch, d, rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("rope_rot", rot, persistent=False)
        self.register_buffer("tril", torch.tril(torch.ones(mini_batch, mini_batch)), persistent=False)

    # ---- shared pieces -------------------------------------------------------------------------------------
    def tau(self) -> torch.Tensor:
        s = torch.arange(1, self.K + 1, dtype=self.tau_offset.dtype, device=self.tau_offset.device)
        return torch.clamp(1.0 / s + self.tau_offset, min=0.0)  # [K]

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.W0.unsqueeze(0).expand(batch, -1, -1, -1), self.b0.unsqueeze(0).expand(batch, -1, -1)

    def fused_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight [3D + H, D] and bias of ONE matmul giving q, k, v (before RoPE) and the lr-gate logits."""
        w = torch.cat([self.wq.weight, self.wk.weight, self.wv.weight, self.lr_weight], 0)
        bias = torch.cat([torch.zeros(3 * self.dim, dtype=w.dtype, device=w.device), self.lr_bias])
        return w, bias

    def rope_rows(self, L: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [L, D] at position t mod K, tiled over the heads."""
        pos = torch.arange(L, device=device) % self.K
        cos = self.rope_cos[pos].to(dtype).repeat(1, self.heads)
        sin = self.rope_sin[pos].to(dtype).repeat(1, self.heads)
        return cos, sin

    def _rotate_half(self, y: torch.Tensor) -> torch.Tensor:
        """Per head, cat(-x2, x1) of y [..., D] (the `x @ R` of `apply_rope`, as copies instead of a matmul)."""
        h = y.unflatten(-1, (self.heads, 2, self.d // 2))
        return torch.cat([-h[..., 1:, :], h[..., :1, :]], dim=-2).flatten(-3)

    def project(self, x: torch.Tensor, mask: torch.Tensor):
        """x [B, L, D], mask [B, L] -> q, k, v [B, H, L, d] (RoPE at t mod K applied) and eta [B, H, L]."""
        return self._project(x, mask, with_q=True)

    def project_kv(self, x: torch.Tensor, mask: torch.Tensor):
        """`project` without q: k, v [B, H, L, d] and eta [B, H, L] (every token updates the state; q is read only
        where an output is wanted, see `query_selected`)."""
        return self._project(x, mask, with_q=False)

    def _project(self, x: torch.Tensor, mask: torch.Tensor, with_q: bool):
        B, L, D = x.shape
        weight, bias = self.fused_projection()
        if not with_q:  # the fused rows are q, k, v, lr gate: drop q's
            weight, bias = weight[D:], bias[D:]
        y = F.linear(x, weight, bias)  # [B, L, (3 or 2) D + H]
        cos, sin = self.rope_rows(L, x.dtype, x.device)
        # split, not slicing: a slice's backward zero-fills the whole fused output once per slice
        *qk, v, lr = y.split([D] * (3 if with_q else 2) + [self.heads], dim=-1)
        rotated = [t * cos + self._rotate_half(t) * sin for t in qk]
        heads = lambda t: t.reshape(B, L, self.heads, self.d).transpose(1, 2)  # noqa: E731
        eta = torch.sigmoid(lr) * (self.base_lr / self.d)  # [B, L, H]
        eta = eta.transpose(1, 2) * mask[:, None, :].to(x.dtype)  # padding tokens never update the state
        return (*(heads(t) for t in rotated), heads(v), eta)

    def query_selected(self, x: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
        """q at the token a one-hot `select` [B, L] points to -> [B, H, 1, d] (zeros for a zero row): the projection
        and RoPE are per token, so selecting x and the position's cos/sin first gives the same q for 1/L of the
        work."""
        B, L, D = x.shape
        cos, sin = self.rope_rows(L, x.dtype, x.device)
        yq = F.linear((select[:, None, :] @ x).squeeze(1), self.wq.weight)  # [B, D]
        q = yq * (select @ cos) + self._rotate_half(yq) * (select @ sin)
        return q.view(B, self.heads, 1, self.d)

    # ---- dual form: one mini-batch ---------------------------------------------------------------------------
    def last_tau(self, mask: torch.Tensor) -> torch.Tensor:
        """tau of the last REAL token of each row of a right-padded mini-batch mask [B, n] -> [B] (0 if none).

        The state carried out of a mini-batch of r real tokens is W0 - tau_r * sum_t eta_t k_t^T g_t
        (docs/models.md §2.6): padding must not stretch r to the padded length."""
        m = mask.to(self.tau_offset.dtype)
        nxt = torch.cat([m[:, 1:], torch.zeros_like(m[:, :1])], dim=1)
        return (m * (1 - nxt)) @ self.tau()[: m.shape[1]]

    def minibatch_dual(self, q, k, v, eta, W, b, corr_attn=None, corr_bias=None, need_state: bool = True,
                       mask=None):
        """One mini-batch of n <= K tokens in dual form.

        q, k, v [B, H, n, d]; eta [B, H, n]; W [B, H, d, d]; b [B, H, d]; corr_* [B, H, K, K] / [B, H, K, d];
        mask [B, n] right-padded real-token mask (None = all real; it sets which tau the carried state uses).
        Returns out [B, H, n, d] and the state (W, b) carried to the next mini-batch.
        """
        n = q.shape[-2]
        tril = self.tril[:n, :n]
        gamma, beta = self.ln_weight[:, None, :], self.ln_bias[:, None, :]
        E = self.tau()[:n, None] * eta[..., None, :] * tril  # E[s, t] = tau_s * eta_t, t <= s   [B, H, n, n]
        Z1 = _state_mm(k, W) + b.unsqueeze(-2)  # pre-norm reconstruction at (W0, b0)                [B, H, n, d]
        G = inner_grad(Z1, v - k, gamma, beta)  # g_t                                              [B, H, n, d]
        A = (q @ k.transpose(-1, -2)) * tril  # tril(Q K^T)                                        [B, H, n, n]
        if corr_attn is None:
            # b_bar = b0 - E G and Z = q W0 - (E * A) G + b_bar merge into one matmul: (E + E * A) G
            Z = _state_mm(q, W) + b.unsqueeze(-2) - (E + E * A) @ G  # z_s = q_s W_s + b_s       [B, H, n, d]
        else:
            b_bar = b.unsqueeze(-2) - E @ G  # bias trajectory b_s                                [B, H, n, d]
            A_used = A + self.corr_p * fuse_correction(corr_attn[..., :n, :n], A) * tril
            b_used = b_bar + self.corr_q * fuse_correction(corr_bias[..., :n, :], b_bar)
            Z = _state_mm(q, W) - (E * A_used) @ G + b_used
        out = q + F.layer_norm(Z, (self.d,), eps=LN_EPS) * gamma + beta
        if not need_state:  # the last mini-batch of a scoring-only window: its state is never read
            return out, W, b
        # carried state uses the uncorrected gradients and tau of the last real token (the last row of E when all
        # n tokens are real)
        if mask is None:
            e_last = E[..., -1, :, None]  # [B, H, n, 1]
        else:
            e_last = (self.last_tau(mask)[:, None, None] * eta)[..., None]
        W_next = W - (k * e_last).transpose(-1, -2) @ G
        b_next = b - (e_last * G).sum(-2)
        return out, W_next, b_next

    def forward(self, x, mask, corr_attn=None, corr_bias=None, state=None, need_state: bool = True):
        """Dual form over a window. x [B, L, D]; corr_* per mini-batch [B, M, H, K, *]. -> out [B, L, D], state.

        With need_state=False the returned state is not the one after the window (saves the last update)."""
        B, L, _ = x.shape
        q, k, v, eta = self.project(x, mask)
        W, b = state if state is not None else (self.W0, self.b0)  # shared [H, d, d] until the first update
        outs = []
        starts = list(range(0, L, self.K))
        for m, start in enumerate(starts):  # static unroll over ceil(L / K) mini-batches
            sl = slice(start, min(start + self.K, L))
            ca = corr_attn[:, m] if corr_attn is not None else None
            cb = corr_bias[:, m] if corr_bias is not None else None
            last = m == len(starts) - 1
            o, W, b = self.minibatch_dual(q[:, :, sl], k[:, :, sl], v[:, :, sl], eta[:, :, sl], W, b, ca, cb,
                                          need_state=need_state or not last, mask=mask[:, sl])
            outs.append(o)
        out = torch.cat(outs, dim=2).transpose(1, 2).reshape(B, L, self.dim)
        if W.dim() == 3:  # never updated (need_state=False on a single mini-batch): the per-row view of the shared state
            W, b = W.expand(B, -1, -1, -1), b.expand(B, -1, -1)
        return out, (W, b)

    def forward_selected(self, x, mask, select, state=None, need_state: bool = False):
        """Dual form over a window, with outputs only where `select` [B, L] (one-hot rows: the last real token; a zero
        row gives zeros) points -> out [B, D], state. The same maths as `forward` followed by the selection, without
        computing outputs nobody reads: every token still takes its inner gradient step (the state needs them all),
        but q (projection and RoPE) is computed at the selected token only, and q W, tril(Q K^T), (E + E A) G and
        the output LayerNorm are evaluated for one row per mini-batch.
        No corrections here (the corrected path is `forward`)."""
        B, L, _ = x.shape
        k, v, eta = self.project_kv(x, mask)
        W, b = state if state is not None else (self.W0, self.b0)
        gamma, beta = self.ln_weight[:, None, :], self.ln_bias[:, None, :]
        tau = self.tau()
        sel_all = select.to(x.dtype)
        q_sel = self.query_selected(x, sel_all)  # [B, H, 1, d]: q is read at the selected token only
        out = None
        starts = list(range(0, L, self.K))
        for m, start in enumerate(starts):
            n = min(self.K, L - start)
            sl = slice(start, start + n)
            km, vm, em = k[:, :, sl], v[:, :, sl], eta[:, :, sl]
            sel = sel_all[:, sl]  # [B, n]
            G = inner_grad(_state_mm(km, W) + b.unsqueeze(-2), vm - km, gamma, beta)  # [B, H, n, d]
            qs = q_sel * sel.sum(-1)[:, None, None, None]  # the selected query if it is in this mini-batch
            # selected row of E: e[t] = sum_s sel_s tau_s [t <= s] eta_t
            es = ((sel * tau[:n]) @ self.tril[:n, :n])[:, None, None, :] * em[:, :, None, :]  # [B, H, 1, n]
            As = qs @ km.transpose(-1, -2)  # selected row of Q K^T                   [B, H, 1, n]
            Zs = _state_mm(qs, W) + b.unsqueeze(-2) - (es + es * As) @ G  # [B, H, 1, d]
            o = qs + sel.sum(-1)[:, None, None, None] * (F.layer_norm(Zs, (self.d,), eps=LN_EPS) * gamma + beta)
            out = o if out is None else out + o
            if need_state or m < len(starts) - 1:
                e_last = (self.last_tau(mask[:, sl])[:, None, None] * em)[..., None]  # [B, H, n, 1]
                W = W - (km * e_last).transpose(-1, -2) @ G
                b = b - (e_last * G).sum(-2)
        if W.dim() == 3:
            W, b = W.expand(B, -1, -1, -1), b.expand(B, -1, -1)
        return out.reshape(B, self.dim), (W, b)

    # ---- streaming form ----------------------------------------------------------------------------------------
    def step(self, x, state, corr_attn=None, corr_bias=None, mask=None):
        """The next K tokens x [B, K, D] from a carried state (W, b): O(1) work per batch of clicks.

        mask [B, K] (right-padded, None = all real): padding tokens never update the state."""
        assert x.shape[1] == self.K, f"step takes exactly K={self.K} tokens"
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
        return self.forward(x, mask, corr_attn, corr_bias, state)

    # ---- primal form (token by token; the reference the dual form must match) ---------------------------------
    def forward_primal(self, x, mask, state=None):
        """Token-by-token: materialise each token's W_s, b_s explicitly. Slow; for tests only."""
        B, L, _ = x.shape
        q, k, v, eta = self.project(x, mask)
        W, b = state if state is not None else self.initial_state(B)
        tau = self.tau()
        outs = []
        for start in range(0, L, self.K):
            n = min(self.K, L - start)
            sl = slice(start, start + n)
            qm, km, vm, em = q[:, :, sl], k[:, :, sl], v[:, :, sl], eta[:, :, sl]
            G = ln_l2_grad(km @ W + b[:, :, None, :], vm - km, self.ln_weight, self.ln_bias)
            gW = torch.zeros_like(W)
            gb = torch.zeros_like(b)
            for s in range(n):  # accumulate eta_t k_t^T g_t for t <= s
                gW = gW + em[..., s, None, None] * km[..., s, :, None] * G[..., s, None, :]
                gb = gb + em[..., s, None] * G[..., s, :]
                W_s = W - tau[s] * gW
                b_s = b - tau[s] * gb
                z = (qm[..., s, None, :] @ W_s).squeeze(-2) + b_s
                outs.append(qm[..., s, :] + layer_norm(z[:, :, None, :], self.ln_weight, self.ln_bias)[:, :, 0])
            t_last = self.last_tau(mask[:, sl])[:, None, None]  # tau of the last real token   [B, 1, 1]
            W, b = W - t_last[..., None] * gW, b - t_last * gb
        out = torch.stack(outs, dim=2).transpose(1, 2).reshape(B, L, self.dim)
        return out, (W, b)

    def analytic_macs(self, seq_len: int) -> int:
        """Multiply-adds of the layer per window: projections, lr gate, and per mini-batch of n tokens per head
        k@W, q@W, W-update (3 n d^2) plus Q K^T, E@G, (E*A)@G (3 n^2 d)."""
        D, H, d, K = self.dim, self.heads, self.d, self.K
        macs = seq_len * (3 * D * D + H * D)
        for start in range(0, seq_len, K):
            n = min(K, seq_len - start)
            macs += H * (3 * n * d * d + 3 * n * n * d)
        return macs


def state_floats(heads: int, d: int) -> int:
    """Persistent per-user state: H * (d*d + d) floats (1,088 for H=4, d=16)."""
    return heads * (d * d + d)


__all__ = ["TTTLinear", "ln_l2_grad", "layer_norm", "apply_rope", "rope_tables", "fuse_correction", "state_floats"]
