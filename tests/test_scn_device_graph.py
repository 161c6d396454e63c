"""SCN's exported graph (`scn_device.DeviceGraph`: constants folded, reductions as matmuls, outputs at the last real token)
equals the eager model it was built from: window at several L with padding, step with a carried state and with
padding ids, and the precomputed tower table. (Through the runtimes: tests/test_export_scn.py.)"""

import pytest
import torch

from toolkit.errors import ToolkitError
from toolkit.exporters.sources import contract_kwargs
from toolkit.models.cocorrrec import CoCorrRec, CoCorrRecConfig
from toolkit.models.scn import SCN, SCNConfig

N = 200


@pytest.fixture(scope="module")
def scn():
    torch.manual_seed(0)
    m = SCN(SCNConfig(n_items=N)).eval()
    with torch.no_grad():  # non-trivial values so every term matters
        m.ttt.tau_offset.normal_(0, 0.1)
        m.ttt.lr_bias.fill_(2.0)
        m.ttt.W0.normal_(0, 0.3)
        m.ttt.b0.normal_(0, 0.1)
        m.ttt.ln_weight.normal_(1, 0.1)
        m.post_ln.bias.normal_(0, 0.1)
    return m


def _entries(model, L, **kw):
    return {e.name: e for e in model.contract(seq_len=L, candidates=20, **kw)}


@pytest.mark.parametrize("L", [7, 10, 13, 25, 40])
# the last real click in the first, a middle or the last mini-batch (the rolled graph moves each to the end)
@pytest.mark.parametrize("n_real", [1, 6, 10, 15, None])
def test_window_graph_equals_eager(scn, L, n_real):
    g = torch.Generator().manual_seed(L)
    items = torch.randint(1, N + 1, (1, L), generator=g)
    if n_real is not None and n_real < L:
        items[:, n_real:] = 0
    cands = torch.randint(1, N + 1, (1, 20), generator=g)
    win = _entries(scn, L)["window"].module
    with torch.no_grad():
        torch.testing.assert_close(win(items, cands), scn(items, cands), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(win(torch.zeros_like(items), cands), scn(torch.zeros_like(items), cands))


@pytest.mark.parametrize("n_real", [0, 3, 10])
def test_step_graph_equals_eager(scn, n_real):
    g = torch.Generator().manual_seed(n_real)
    step = _entries(scn, 25)["step"].module
    W, b = scn.initial_state(1)
    W = W + 0.1 * torch.randn(W.shape, generator=g)
    b = b + 0.1 * torch.randn(b.shape, generator=g)
    items = torch.randint(1, N + 1, (1, scn.K), generator=g)
    items[:, n_real:] = 0
    cands = torch.randint(1, N + 1, (1, 20), generator=g)
    with torch.no_grad():
        s, W2, b2 = step(items, cands, W, b)
        u, (W3, b3) = scn.step(items, (W, b))
        torch.testing.assert_close(s, scn.score(u, cands), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(W2, W3, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b2, b3, rtol=1e-5, atol=1e-6)
        if n_real == 0:
            assert torch.equal(W2, W) and torch.equal(b2, b)


def test_tower_table_scores_match_the_tower(scn):
    """The precomputed table gives the tower's scores to fp32 rounding, for window and step, with and without
    corrections (CoCorrRec's device part)."""
    items = torch.randint(1, N + 1, (1, 25))
    cands = torch.randint(1, N + 1, (1, 20))
    plain, table = _entries(scn, 25), _entries(scn, 25, tower_table=True)
    W, b = scn.initial_state(1)
    with torch.no_grad():
        torch.testing.assert_close(table["window"].module(items, cands), plain["window"].module(items, cands),
                                   rtol=1e-5, atol=1e-6)
        for a, c in zip(table["step"].module(items[:, :10], cands, W, b), plain["step"].module(items[:, :10], cands, W, b)):
            torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)
        assert table["window"].module.tower_table.shape == (N + 1, scn.cfg.dim)
    cc = CoCorrRec(CoCorrRecConfig(n_items=N)).eval()
    ca, cb = torch.randn(1, 3, 4, 10, 10), torch.randn(1, 3, 4, 10, 16)
    with torch.no_grad():
        torch.testing.assert_close(_entries(cc, 25, tower_table=True)["window"].module(items, cands, ca, cb),
                                   _entries(cc, 25)["window"].module(items, cands, ca, cb), rtol=1e-5, atol=1e-6)


def test_tower_table_on_a_model_without_a_tower_is_one_clear_error():
    from toolkit.models.gate import Gate, GateConfig

    gate = Gate(GateConfig())
    with pytest.raises(ToolkitError, match="no separable candidate tower"):
        contract_kwargs(gate, 25, 100, tower_table=True)


@pytest.mark.parametrize("L", [10, 25])
def test_corrected_graphs_equal_eager(L):
    """With correction inputs (CoCorrRec's device part): window and step equal the eager SCN given the same
    corrections, including all-zero corrections (= none) and a correction with zero rows."""
    torch.manual_seed(5)
    cc = CoCorrRec(CoCorrRecConfig(n_items=N)).eval()
    with torch.no_grad():
        cc.scn.ttt.corr_p.fill_(0.7)
        cc.scn.ttt.tau_offset.normal_(0, 0.1)
        cc.scn.ttt.lr_bias.fill_(2.0)
    M = -(-L // 10)
    ents = _entries(cc, L)
    items = torch.randint(1, N + 1, (1, L))
    items[:, L - 4:] = 0
    cands = torch.randint(1, N + 1, (1, 20))
    W, b = cc.scn.initial_state(1)
    W = W + 0.1 * torch.randn_like(W)
    ca, cb = torch.randn(1, M, 4, 10, 10), torch.randn(1, M, 4, 10, 16)
    ca[:, :, :, 3] = 0  # zero rows stay "no correction"
    cb[:, :, 1, 5] = 0
    for a_, b_ in ((ca, cb), (torch.zeros_like(ca), torch.zeros_like(cb))):
        with torch.no_grad():
            torch.testing.assert_close(ents["window"].module(items, cands, a_, b_), cc(items, cands, a_, b_),
                                       rtol=1e-5, atol=1e-5)
            st = items[:, :10]
            s, W2, b2 = ents["step"].module(st, cands, a_[:, :1], b_[:, :1], W, b)
            u, (W3, b3) = cc.scn.step(st, (W, b), a_[:, :1], b_[:, :1])
            torch.testing.assert_close(s, cc.scn.score(u, cands), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(W2, W3, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(b2, b3, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model_name", ["scn", "sasrec"])
def test_fp16_cast_graph_scores_in_fp32(scn, model_name):
    """An fp16 export casts the whole graph; trained scores reach |30-50|, where fp16 steps by 0.03, so the scoring
    dot product alone stays fp32 (`common.fp32_dot`): the scores leave the cast graph as fp32, finer than fp16 can
    hold, and close to the fp32 graph's."""
    import copy

    from toolkit.exporters.common import cast_entry
    from toolkit.models.baselines.sasrec import SASRec, SASRecConfig

    if model_name == "scn":
        model = copy.deepcopy(scn)
    else:
        torch.manual_seed(0)
        model = SASRec(SASRecConfig(n_items=N)).eval()
    def window_scores(module, inputs):
        out = module(*inputs)
        return out[0] if isinstance(out, tuple) else out

    with torch.no_grad():  # trained magnitudes: the candidate tower's last layer scaled to scores of about 40
        entry = _entries(model, 10)["window"]
        first = window_scores(entry.module, entry.example_inputs())
        factor = 40.0 / float(first.abs().max())
        model.tower.fc2.weight.mul_(factor)
        model.tower.fc2.bias.mul_(factor)
        entry = _entries(model, 10)["window"]
        ref = window_scores(entry.module, entry.example_inputs())
        half = cast_entry(entry, "fp16")
        got = window_scores(half.module, half.example_inputs())
    assert ref.abs().max() > 16, "the check needs scores where fp16 is coarse"
    assert got.dtype == torch.float32
    assert (got.half().float() != got).any(), "scores no finer than fp16"
    assert torch.allclose(got, ref, atol=0.1 * float(ref.abs().max()) / 16)
