"""The TTT-Linear layer: dual == primal == streaming, the closed-form gradient, corrections, gradients flow."""

import pytest
import torch

from toolkit.models.cocorrrec import CoCorrRec, CoCorrRecConfig
from toolkit.models.scn import SCN, SCNConfig
from toolkit.models.ttt import TTTLinear, layer_norm, ln_l2_grad

torch.manual_seed(0)


def _layer(K=10):
    layer = TTTLinear(dim=64, heads=4, mini_batch=K)
    with torch.no_grad():  # non-trivial values so every term matters
        layer.tau_offset.normal_(0, 0.1)
        layer.lr_bias.fill_(2.0)
        layer.ln_weight.normal_(1, 0.1)
        layer.ln_bias.normal_(0, 0.1)
        layer.b0.normal_(0, 0.1)
        layer.W0.normal_(0, 0.3)
    return layer.double()


@pytest.mark.parametrize("L", [10, 15, 20, 25, 40])
def test_dual_equals_primal(L):
    layer = _layer()
    x = torch.randn(3, L, 64, dtype=torch.float64)
    mask = torch.ones(3, L, dtype=torch.float64)
    out_d, (Wd, bd) = layer(x, mask)
    out_p, (Wp, bp) = layer.forward_primal(x, mask)
    torch.testing.assert_close(out_d, out_p, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(Wd, Wp, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(bd, bp, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("L", [10, 15, 20, 25, 40])
def test_dual_equals_primal_fp32(L):
    layer = _layer().float()
    x = torch.randn(2, L, 64)
    mask = torch.ones(2, L)
    torch.testing.assert_close(layer(x, mask)[0], layer.forward_primal(x, mask)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("L", [10, 15, 20, 25, 40])
def test_streaming_equals_dual(L):
    """Full mini-batches through `step` carrying (W, b), then the partial rest from that state == one dual call."""
    layer = _layer().float()
    x = torch.randn(2, L, 64)
    mask = torch.ones(2, L)
    full, _ = layer(x, mask)
    state = layer.initial_state(2)
    outs = []
    n_full = L // 10
    for m in range(n_full):
        o, state = layer.step(x[:, m * 10:(m + 1) * 10], state)
        outs.append(o)
    if L % 10:
        o, state = layer(x[:, n_full * 10:], mask[:, n_full * 10:], state=state)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-5, atol=1e-5)


def test_ln_l2_grad_matches_autograd():
    z = torch.randn(2, 4, 10, 16, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 4, 10, 16, dtype=torch.float64)
    gamma = torch.randn(4, 16, dtype=torch.float64)
    beta = torch.randn(4, 16, dtype=torch.float64)
    loss = 0.5 * (layer_norm(z, gamma, beta) - target).pow(2).sum()
    (auto,) = torch.autograd.grad(loss, z)
    torch.testing.assert_close(ln_l2_grad(z.detach(), target, gamma, beta), auto, rtol=1e-8, atol=1e-10)


def test_padding_does_not_touch_the_state_or_earlier_outputs():
    layer = _layer().float()
    x = torch.randn(1, 20, 64)
    mask = torch.ones(1, 20)
    mask[:, 13:] = 0
    x_pad = x.clone()
    x_pad[:, 13:] = 0
    out_a, _ = layer(x_pad, mask)
    x_other = x_pad.clone()
    x_other[:, 13:] = torch.randn(1, 7, 64)  # garbage after the last real token: outputs up to it unchanged
    out_b, _ = layer(x_other, mask)
    torch.testing.assert_close(out_a[:, :13], out_b[:, :13])


def test_scn_params_and_state_size():
    scn = SCN(SCNConfig(n_items=100))
    counts = scn.param_counts()
    assert 26_000 <= counts["params_excluding_item_table"] <= 27_000  # docs/models.md §3.1: about 26.4k
    assert scn.state_floats() == 1088
    assert scn.analytic_macs(10) == 216_320 and scn.analytic_macs(25) == 536_000  # docs/models.md §9


def test_scn_step_three_times_equals_window_of_3K():
    scn = SCN(SCNConfig(n_items=200)).eval()
    items = torch.randint(1, 201, (2, 30))
    cands = torch.randint(1, 201, (2, 100))
    with torch.no_grad():
        ref = scn(items, cands)
        state = scn.initial_state(2)
        for m in range(3):
            u, state = scn.step(items[:, 10 * m:10 * (m + 1)], state)
        torch.testing.assert_close(scn.score(u, cands), ref, rtol=1e-5, atol=1e-5)


def test_zero_corrections_mean_none_and_nonzero_change_outputs():
    model = CoCorrRec(CoCorrRecConfig(n_items=50)).eval()
    with torch.no_grad():
        model.scn.ttt.corr_p.fill_(0.5)
    items = torch.randint(1, 51, (2, 25))
    cands = torch.randint(1, 51, (2, 100))
    zeros_a = torch.zeros(2, 3, 4, 10, 10)
    zeros_b = torch.zeros(2, 3, 4, 10, 16)
    with torch.no_grad():
        plain = model.scn(items, cands)
        torch.testing.assert_close(model.scn(items, cands, zeros_a, zeros_b), plain)
        ca, cb = model.corrections(items)
        assert ca.shape == (2, 3, 4, 10, 10) and cb.shape == (2, 3, 4, 10, 16)
        assert not torch.allclose(model(items, cands), plain)


def test_gradients_reach_ttt_parameters():
    model = CoCorrRec(CoCorrRecConfig(n_items=50))
    items = torch.randint(1, 51, (4, 10))
    cands = torch.randint(1, 51, (4, 5))
    loss = model(items, cands).pow(2).mean()
    loss.backward()
    ttt = model.scn.ttt
    for name in ("lr_weight", "lr_bias", "W0", "b0", "tau_offset", "corr_p", "corr_q", "ln_weight"):
        g = getattr(ttt, name).grad
        assert g is not None and g.abs().sum() > 0, name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.gcn.parameters())


def test_inner_grad_backward_matches_autograd_through_closed_form():
    from toolkit.models.ttt import inner_grad

    z = torch.randn(2, 4, 5, 16, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 4, 5, 16, dtype=torch.float64, requires_grad=True)
    gamma = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    up = torch.randn(2, 4, 5, 16, dtype=torch.float64)
    fast = torch.autograd.grad((inner_grad(z, target, gamma[:, None], beta[:, None]) * up).sum(), (z, target, gamma, beta))
    ref = torch.autograd.grad((ln_l2_grad(z, target, gamma, beta) * up).sum(), (z, target, gamma, beta))
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *t: inner_grad(t[0], t[1], t[2][:, None], t[3][:, None]),
                                    (z, target, gamma, beta))


@pytest.mark.parametrize("L", [7, 10, 13, 25])
def test_selected_path_equals_full_window_then_last_real(L):
    """SCN.encode (outputs only at the last real token) == hidden() then last_real, values and gradients, fp64,
    with right-padded rows and an all-padding row."""
    from toolkit.models.common import last_real

    torch.manual_seed(3)
    scn = SCN(SCNConfig(n_items=60)).double()
    with torch.no_grad():
        scn.ttt.tau_offset.normal_(0, 0.1)
        scn.ttt.lr_bias.fill_(2.0)
        scn.ttt.W0.normal_(0, 0.3)
    items = torch.randint(1, 61, (5, L))
    items[1, L // 2:] = 0
    items[2, 1:] = 0
    items[3] = 0
    u_fast = scn.encode(items)
    h, _ = scn.hidden(items)
    u_ref = last_real(h, items)
    torch.testing.assert_close(u_fast, u_ref, rtol=1e-9, atol=1e-9)
    w = torch.randn_like(u_ref)
    params = [p for p in scn.parameters()]
    g_fast = torch.autograd.grad((u_fast * w).sum(), params, allow_unused=True)
    g_ref = torch.autograd.grad((u_ref * w).sum(), params, allow_unused=True)
    for _p, a, b in zip(params, g_fast, g_ref):
        if b is None:
            assert a is None or a.abs().max() == 0
            continue
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    # the state it can also carry is forward's state
    x = scn.embed(items)
    _, (Ws, bs) = scn.ttt.forward_selected(x, items != 0, torch.zeros(5, L, dtype=torch.float64), need_state=True)
    _, (Wf, bf) = scn.ttt(x, items != 0)
    torch.testing.assert_close(Ws, Wf, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(bs, bf, rtol=1e-9, atol=1e-12)
