"""TTT-Linear pinned to the spec (docs/models.md §2) by a hand-written reference.

The reference below is written from the text of docs/models.md §2 with explicit Python loops over batch, head and
token, in fp64 and at small sizes, and calls none of the layer's own helpers (no `project`, `apply_rope`, `rope_tables`,
`ln_l2_grad`, `layer_norm`, `tau`). It reads only the layer's parameters. The tests compare the layer's outputs AND
its carried state (W, b) against it, so a copy without the padding mask, without RoPE, with RoPE positions
shifted, without the /d in eta, or carrying the state with tau of the padded length fails here.

Tolerance: the layer's RoPE tables are fp32 constants (built once, then cast), so anything downstream of q and k is
compared at 1e-6; every defect above moves results by 1e-2 or more.
"""

from __future__ import annotations

import math

import pytest
import torch

from toolkit.models.scn import SCN, SCNConfig
from toolkit.models.ttt import TTTLinear

D, H, K = 8, 2, 3  # small sizes: d = 4
d = D // H
EPS = 1e-6  # the inner LayerNorm's epsilon
THETA = 1e4
TOL = dict(rtol=1e-6, atol=1e-6)  # see the module docstring


def _layer(seed: int = 0, base_lr: float = 1.0) -> TTTLinear:
    torch.manual_seed(seed)
    layer = TTTLinear(dim=D, heads=H, mini_batch=K, base_lr=base_lr, rope_theta=THETA).double()
    with torch.no_grad():  # every term non-trivial and of order 1 so each one shows in the result
        for lin in (layer.wq, layer.wk, layer.wv):
            lin.weight.normal_(0, 0.5)
        layer.lr_weight.normal_(0, 0.5)
        layer.lr_bias.normal_(0, 1.0)
        layer.tau_offset.normal_(0, 0.2)
        layer.W0.normal_(0, 0.5)
        layer.b0.normal_(0, 0.3)
        layer.ln_weight.normal_(1, 0.3)
        layer.ln_bias.normal_(0, 0.3)
    return layer


# ---- the reference, from the text ------------------------------------------------------------------------------
def ref_rope(vec: list[float], pos: int) -> list[float]:
    """Rotate-half RoPE of one head vector at integer position `pos`: pair (i, i + d/2) rotated by pos * theta^(-2i/d)."""
    half = d // 2
    out = [0.0] * d
    for i in range(half):
        ang = pos * THETA ** (-(2 * i) / d)
        c, s = math.cos(ang), math.sin(ang)
        out[i] = vec[i] * c - vec[i + half] * s
        out[i + half] = vec[i + half] * c + vec[i] * s
    return out


def ref_ln(z: list[float], gamma: list[float], beta: list[float]) -> list[float]:
    mu = sum(z) / d
    var = sum((zi - mu) ** 2 for zi in z) / d
    return [(z[j] - mu) / math.sqrt(var + EPS) * gamma[j] + beta[j] for j in range(d)]


def ref_inner_grad(z: list[float], target: list[float], gamma: list[float], beta: list[float]) -> list[float]:
    """d/dz of 1/2 ||LN(z) - target||^2, by autograd through `ref_ln` written with scalars (not the closed form)."""
    zt = [torch.tensor(zi, dtype=torch.float64, requires_grad=True) for zi in z]
    mu = sum(zt) / d
    var = sum((zi - mu) ** 2 for zi in zt) / d
    loss = sum(0.5 * ((zt[j] - mu) / torch.sqrt(var + EPS) * gamma[j] + beta[j] - target[j]) ** 2 for j in range(d))
    return [float(g) for g in torch.autograd.grad(loss, zt)]


def ref_projections(layer: TTTLinear, x: torch.Tensor, mask: torch.Tensor):
    """q, k, v per [b][h][t] (lists of d floats, RoPE at t mod K on q and k) and eta[b][h][t]."""
    Wq, Wk, Wv = (lin.weight.tolist() for lin in (layer.wq, layer.wk, layer.wv))
    lw, lb = layer.lr_weight.tolist(), layer.lr_bias.tolist()
    B, L, _ = x.shape
    xs = x.tolist()
    q = [[[None] * L for _ in range(H)] for _ in range(B)]
    k = [[[None] * L for _ in range(H)] for _ in range(B)]
    v = [[[None] * L for _ in range(H)] for _ in range(B)]
    eta = [[[0.0] * L for _ in range(H)] for _ in range(B)]
    for b in range(B):
        for t in range(L):
            xt = xs[b][t]
            full = [[sum(W[o][i] * xt[i] for i in range(D)) for o in range(D)] for W in (Wq, Wk, Wv)]
            for h in range(H):
                sl = slice(h * d, (h + 1) * d)
                q[b][h][t] = ref_rope(full[0][sl], t % K)
                k[b][h][t] = ref_rope(full[1][sl], t % K)
                v[b][h][t] = full[2][sl]
                gate = 1.0 / (1.0 + math.exp(-(sum(lw[h][i] * xt[i] for i in range(D)) + lb[h])))
                eta[b][h][t] = layer.base_lr / d * gate * float(mask[b, t])
    return q, k, v, eta


def ref_ttt(layer: TTTLinear, x: torch.Tensor, mask: torch.Tensor, state=None):
    """Mini-batch gradient descent exactly as docs/models.md §2.4 states it, token by token.

    Returns the outputs [B, L, D] (padding positions left at 0) and the state (W [B, H, d, d], b [B, H, d]) after
    the last REAL token of every row (a mini-batch of r real tokens carries W0 - tau_r * sum_t eta_t k_t^T g_t).
    """
    q, k, v, eta = ref_projections(layer, x, mask)
    B, L, _ = x.shape
    delta = layer.tau_offset.tolist()
    tau = [max(0.0, 1.0 / s + delta[s - 1]) for s in range(1, K + 1)]  # tau[s-1] = tau_s
    gam, bet = layer.ln_weight.tolist(), layer.ln_bias.tolist()
    out = torch.zeros(B, L, D, dtype=torch.float64)
    W_out = torch.zeros(B, H, d, d, dtype=torch.float64)
    b_out = torch.zeros(B, H, d, dtype=torch.float64)
    for b in range(B):
        real = [bool(mask[b, t]) for t in range(L)]
        for h in range(H):
            if state is None:
                W = layer.W0[h].tolist()
                bias = layer.b0[h].tolist()
            else:
                W = state[0][b, h].tolist()
                bias = state[1][b, h].tolist()
            for start in range(0, L, K):
                idx = [t for t in range(start, min(start + K, L)) if real[t]]
                gW = [[0.0] * d for _ in range(d)]
                gb = [0.0] * d
                for _s_pos, t in enumerate(idx):  # s = s_pos + 1 (position inside the mini-batch, 1-based)
                    z = [sum(k[b][h][t][i] * W[i][j] for i in range(d)) + bias[j] for j in range(d)]
                    target = [v[b][h][t][j] - k[b][h][t][j] for j in range(d)]
                    g = ref_inner_grad(z, target, gam[h], bet[h])
                    e = eta[b][h][t]
                    for i in range(d):
                        for j in range(d):
                            gW[i][j] += e * k[b][h][t][i] * g[j]
                    for j in range(d):
                        gb[j] += e * g[j]
                    ts = tau[t - start]  # tau at the token's position in the mini-batch
                    Ws = [[W[i][j] - ts * gW[i][j] for j in range(d)] for i in range(d)]
                    bs = [bias[j] - ts * gb[j] for j in range(d)]
                    zq = [sum(q[b][h][t][i] * Ws[i][j] for i in range(d)) + bs[j] for j in range(d)]
                    ln = ref_ln(zq, gam[h], bet[h])
                    out[b, t, h * d:(h + 1) * d] = torch.tensor([q[b][h][t][j] + ln[j] for j in range(d)])
                if idx:
                    t_last = tau[idx[-1] - start]
                    W = [[W[i][j] - t_last * gW[i][j] for j in range(d)] for i in range(d)]
                    bias = [bias[j] - t_last * gb[j] for j in range(d)]
            W_out[b, h] = torch.tensor(W)
            b_out[b, h] = torch.tensor(bias)
    return out, (W_out, b_out)


# ---- the tests -------------------------------------------------------------------------------------------------
def test_eta_is_base_lr_over_d_times_sigmoid():
    layer = _layer(base_lr=0.7)
    x = torch.randn(2, 5, D, dtype=torch.float64)
    mask = torch.ones(2, 5, dtype=torch.float64)
    *_, eta = layer.project(x, mask)
    _, _, _, ref = ref_projections(layer, x, mask)
    torch.testing.assert_close(eta, torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=1e-14)


def test_rope_position_is_t_mod_K():
    """q and k rotated at t mod K: token t and token t + K with the same input get the same rotation."""
    layer = _layer()
    L = 2 * K + 1
    x = torch.randn(1, L, D, dtype=torch.float64)
    x[:, K:2 * K] = x[:, :K]  # the second mini-batch repeats the first
    mask = torch.ones(1, L, dtype=torch.float64)
    q, k, _, _ = layer.project(x, mask)
    rq, rk, _, _ = ref_projections(layer, x, mask)
    torch.testing.assert_close(q, torch.tensor(rq, dtype=torch.float64), **TOL)
    torch.testing.assert_close(k, torch.tensor(rk, dtype=torch.float64), **TOL)
    torch.testing.assert_close(q[:, :, K:2 * K], q[:, :, :K], rtol=1e-12, atol=1e-12)
    # position 0 is no rotation at all: q_0 is the plain projection
    plain = (x[0, 0] @ layer.wq.weight.T).view(H, d)
    torch.testing.assert_close(q[0, :, 0], plain, rtol=1e-12, atol=1e-12)


def test_inner_gradient_matches_reference():
    """The g_t the layer uses (through its state update after one mini-batch) equals d l_t / d z_t by autograd."""
    layer = _layer()
    x = torch.randn(1, K, D, dtype=torch.float64)
    mask = torch.ones(1, K, dtype=torch.float64)
    _, (W, b) = layer(x, mask)
    _, (rW, rb) = ref_ttt(layer, x, mask)
    torch.testing.assert_close(b, rb, **TOL)
    torch.testing.assert_close(W, rW, **TOL)


@pytest.mark.parametrize("L", [K, 2 * K, 2 * K + 2, 3 * K + 1])
def test_window_outputs_and_state_match_reference(L):
    layer = _layer()
    x = torch.randn(2, L, D, dtype=torch.float64)
    mask = torch.ones(2, L, dtype=torch.float64)
    out, (W, b) = layer(x, mask)
    rout, (rW, rb) = ref_ttt(layer, x, mask)
    torch.testing.assert_close(out, rout, **TOL)
    torch.testing.assert_close(W, rW, **TOL)
    torch.testing.assert_close(b, rb, **TOL)
    # the primal form is held to the same reference
    pout, (pW, pb) = layer.forward_primal(x, mask)
    torch.testing.assert_close(pout, rout, **TOL)
    torch.testing.assert_close(pW, rW, **TOL)


@pytest.mark.parametrize("n_real", [1, 2, K, K + 1, 2 * K - 1])
def test_padding_never_touches_the_state(n_real):
    """A right-padded window carries exactly the state of its real tokens (tau of the last REAL token), whatever
    sits in the padded positions; outputs at real positions match the reference too."""
    layer = _layer()
    L = 3 * K
    x = torch.randn(1, L, D, dtype=torch.float64)
    mask = torch.zeros(1, L, dtype=torch.float64)
    mask[:, :n_real] = 1
    out, (W, b) = layer(x, mask)
    rout, (rW, rb) = ref_ttt(layer, x, mask)
    torch.testing.assert_close(W, rW, **TOL)
    torch.testing.assert_close(b, rb, **TOL)
    torch.testing.assert_close(out[:, :n_real], rout[:, :n_real], **TOL)
    # same state as the unpadded window of the real tokens alone
    _, (W1, b1) = layer(x[:, :n_real], mask[:, :n_real])
    torch.testing.assert_close(W, W1, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(b, b1, rtol=1e-12, atol=1e-13)
    # garbage in the padded positions changes nothing that is kept
    x2 = x.clone()
    x2[:, n_real:] = torch.randn(1, L - n_real, D, dtype=torch.float64) * 5
    out2, (W2, b2) = layer(x2, mask)
    torch.testing.assert_close(W2, W, rtol=0, atol=0)
    torch.testing.assert_close(b2, b, rtol=0, atol=0)
    torch.testing.assert_close(out2[:, :n_real], out[:, :n_real], rtol=0, atol=0)
    # the primal form carries the same state
    _, (pW, pb) = layer.forward_primal(x, mask)
    torch.testing.assert_close(pW, rW, **TOL)
    torch.testing.assert_close(pb, rb, **TOL)


def test_step_from_a_carried_state_matches_reference():
    layer = _layer()
    x = torch.randn(2, 2 * K, D, dtype=torch.float64)
    mask = torch.ones(2, 2 * K, dtype=torch.float64)
    _, state = ref_ttt(layer, x[:, :K], mask[:, :K])
    out, (W, b) = layer.step(x[:, K:], state)
    rout, (rW, rb) = ref_ttt(layer, x[:, K:], mask[:, K:], state=state)
    torch.testing.assert_close(out, rout, **TOL)
    torch.testing.assert_close(W, rW, **TOL)
    torch.testing.assert_close(b, rb, **TOL)


def test_scn_step_ignores_padding_ids():
    """`step` with trailing id-0 clicks: id 0 never updates the state, and u is taken at the last real click."""
    torch.manual_seed(1)
    scn = SCN(SCNConfig(n_items=50, dim=D, heads=H, mini_batch=K)).double().eval()
    with torch.no_grad():
        scn.ttt.tau_offset.normal_(0, 0.2)
        scn.ttt.lr_bias.fill_(1.0)
    items = torch.tensor([[7, 3, 0]])
    cands = torch.randint(1, 51, (1, 6))
    with torch.no_grad():
        state0 = scn.initial_state(1)
        u, (W, b) = scn.step(items, state0)
        # reference: the window of the 2 real clicks alone (from the same initial state)
        h, (W1, b1) = scn.hidden(items[:, :2])
        torch.testing.assert_close(W, W1, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(b, b1, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(u, h[:, -1], rtol=1e-12, atol=1e-13)
        # an all-padding step leaves the state exactly as it was
        _, (W0, b0) = scn.step(torch.zeros(1, K, dtype=torch.long), state0)
        torch.testing.assert_close(W0, state0[0], rtol=0, atol=0)
        torch.testing.assert_close(b0, state0[1], rtol=0, atol=0)
        assert torch.isfinite(scn.score(u, cands)).all()
