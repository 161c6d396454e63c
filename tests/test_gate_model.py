"""The gate's model: DM uncertainty semantics, KL, MRS range, export contract, parameter budget."""

from __future__ import annotations

import math

import pytest
import torch

from toolkit.models.gate import Gate, GateConfig, gaussian_kl


def _gate(**kw) -> Gate:
    torch.manual_seed(0)
    return Gate(GateConfig(**kw)).eval()


def test_uncertainty_is_zero_when_every_noise_draw_is_equal():
    gate = _gate()
    r = torch.randn(6, 64)
    one = torch.randn(1, 1, gate.cfg.z_dim)
    noise = one.expand(1, gate.cfg.n_samples, -1).contiguous()
    with torch.no_grad():
        u_equal = gate.dm.uncertainty(r, noise)
        u_random = gate.dm.uncertainty(r, gate.default_noise)
    assert u_equal.shape == (6,)
    assert torch.all(u_equal.abs() < 1e-10), u_equal
    assert torch.all(u_random > 1e-6), u_random


def test_uncertainty_grows_with_prior_variance():
    gate = _gate()
    z = gate.cfg.z_dim
    r = torch.randn(4, 64)
    us = []
    with torch.no_grad():
        gate.dm.prior_head.weight.zero_()  # prior = N(0, exp(logvar)) for every r
        for logvar in (-6.0, -3.0, -1.0, 0.0, 1.0):
            gate.dm.prior_head.bias[:z] = 0.0
            gate.dm.prior_head.bias[z:] = logvar
            us.append(gate.dm.uncertainty(r, gate.default_noise))
    us = torch.stack(us)  # [5 variances, 4 windows]
    assert torch.all(us[1:] > us[:-1]), us
    # small variance: f is ~linear in z, so u scales with sigma^2 = exp(logvar)
    ratio = us[1] / us[0]
    assert torch.allclose(ratio, torch.full_like(ratio, float(torch.exp(torch.tensor(3.0)))), rtol=0.05), ratio


def test_uncertainty_is_the_summed_across_sample_variance():
    gate = _gate()
    r = torch.randn(3, 64)
    with torch.no_grad():
        samples = gate.dm.samples(r, gate.default_noise)  # [3, n, 64]
        expected = samples.var(dim=1, unbiased=False).sum(-1)
        assert torch.allclose(gate.dm.uncertainty(r, gate.default_noise), expected, rtol=1e-5, atol=1e-7)
        assert samples.shape == (3, gate.cfg.n_samples, 64)


def test_gaussian_kl_matches_torch_distributions():
    torch.manual_seed(1)
    mu_q, mu_p = torch.randn(5, 8), torch.randn(5, 8)
    lv_q, lv_p = torch.randn(5, 8), torch.randn(5, 8)
    q = torch.distributions.Normal(mu_q, torch.exp(0.5 * lv_q))
    p = torch.distributions.Normal(mu_p, torch.exp(0.5 * lv_p))
    ref = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(gaussian_kl(mu_q, lv_q, mu_p, lv_p), ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(gaussian_kl(mu_q, lv_q, mu_q, lv_q), torch.zeros(5), atol=1e-6)


def test_param_budget_is_the_papers_and_excludes_the_posterior():
    counts = _gate().param_counts()
    assert 4000 <= counts["device_params"] <= 6000, counts  # the paper's gate: about 5.06k
    parts = ("dm_prior_params", "dm_next_item_params", "mrd_params", "joint_params")
    assert sum(counts[k] for k in parts) == counts["device_params"] == counts["params"]
    assert counts["training_only_params"] > 0


def test_contract_is_deterministic_and_matches_forward():
    gate = _gate()
    (entry,) = gate.contract()
    assert entry.name == "mrs" and entry.outputs == ["mrs"] and entry.states == []
    assert [s.name for s in entry.inputs] == ["r_now", "r_stale", "noise", "lag"]
    assert [s.shape for s in entry.inputs] == [(1, 64), (1, 64), (1, gate.cfg.n_samples, gate.cfg.z_dim), (1,)]
    assert all(s.dtype == torch.float32 for s in entry.inputs)
    x = entry.example_inputs(seed=3)
    assert 1 <= float(x[3]) <= gate.cfg.lag_cap and float(x[3]) == int(x[3])  # a count, carried as a float
    with torch.no_grad():
        a, b = entry.module(*x), entry.module(*x)
        parts = gate.parts(x[0], x[1], x[2], x[3])
    assert a.shape == (1,) and torch.equal(a, b)
    assert 0.0 < float(a) < 1.0
    assert torch.allclose(a, parts["mrs"])


def test_contract_exports_with_torch_export():
    (entry,) = _gate().contract()
    x = entry.example_inputs()
    prog = torch.export.export(entry.module, x)
    with torch.no_grad():
        assert torch.allclose(prog.module()(*x), entry.module(*x), atol=1e-6)


def test_unknown_config_key_is_named():
    from toolkit.errors import ToolkitError

    with pytest.raises(ToolkitError, match="zdim"):
        GateConfig.from_dict({"zdim": 3})


def test_exported_graph_equals_the_gate_with_every_part_active():
    """The device graph (constants, split weights, reductions as matmuls) is Gate.forward to fp32 rounding, with a
    non-zero joint head and a non-trivial log-u standardisation (a fresh gate leaves both at identity)."""
    torch.manual_seed(1)
    gate = _gate()
    with torch.no_grad():
        for p in gate.parameters():
            p.add_(0.3 * torch.randn_like(p))
        gate.u_log_mean.fill_(-2.0)
        gate.u_log_std.fill_(1.7)
    (entry,) = gate.contract()
    assert not any(True for _ in entry.module.parameters())  # weights are constants of the graph
    joint = []
    for seed in range(20):
        x = entry.example_inputs(seed=seed)
        with torch.no_grad():
            got, want = entry.module(*x), gate(*x)
            parts = gate.parts(*x)
        assert got.shape == want.shape == (1,)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        joint.append(abs(float(parts["logit"]) - float(parts["mrd_logit"])))
    assert max(joint) > 0.1  # the joint head contributes


def test_paper_form_reads_the_two_windows_only():
    gate = _gate(lag_input=False)
    (entry,) = gate.contract()
    assert [s.name for s in entry.inputs] == ["r_now", "r_stale", "noise"]
    assert gate.mrd.hidden.in_features == 3 * gate.cfg.mrd_hidden + 2
    x = entry.example_inputs(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(entry.module(*x), gate(*x), rtol=1e-5, atol=1e-6)


def test_saved_gates_without_the_lag_key_load_in_the_paper_form():
    cfg = _gate().cfg.to_dict()
    cfg.pop("lag_input")
    cfg.pop("lag_cap")
    assert GateConfig.from_dict(cfg).lag_input is False
    assert GateConfig.from_dict({**cfg, "lag_input": True}).lag_input is True


def test_lag_feature_by_hand():
    from toolkit.models.gate import lag_feature

    lag = torch.tensor([0.0, 1.0, 5.0, 50.0, 400.0])
    want = torch.tensor([0.0, 0.0, math.log(5) / math.log(50), 1.0, 1.0])  # clamped to 1..cap, log, / log(cap)
    torch.testing.assert_close(lag_feature(lag, 50), want)


def test_the_lag_changes_the_score_and_the_exported_graph_follows_it():
    """Across lags below 1, inside 1..cap and above the cap, the device graph equals Gate.forward, and the lag
    moves the MRS (its hidden-layer column is live); lags beyond the cap read as the cap."""
    torch.manual_seed(2)
    gate = _gate(lag_cap=20)
    with torch.no_grad():
        for p in gate.parameters():
            p.add_(0.3 * torch.randn_like(p))
    (entry,) = gate.contract()
    r_now, r_stale, noise, _ = entry.example_inputs(seed=5)
    got = {}
    for lag in (0.0, 1.0, 2.0, 7.0, 20.0, 21.0, 500.0):
        lg = torch.tensor([lag])
        with torch.no_grad():
            got[lag] = entry.module(r_now, r_stale, noise, lg)
            torch.testing.assert_close(got[lag], gate(r_now, r_stale, noise, lg), rtol=1e-5, atol=1e-6)
    assert torch.equal(got[0.0], got[1.0]) and torch.equal(got[20.0], got[500.0])
    assert abs(float(got[1.0]) - float(got[20.0])) > 1e-3


def test_a_gate_that_reads_the_lag_refuses_to_score_without_it():
    from toolkit.errors import ToolkitError

    gate = _gate()
    with pytest.raises(ToolkitError, match="lag"):
        gate.parts(torch.randn(2, 64), torch.randn(2, 64))
