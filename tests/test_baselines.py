"""Baselines (GRU4Rec, SASRec, DIN): shapes, padding invariance, causality, DIN's target attention, parameter counts,
torch.export of the `window` contract, a short training run, and analytic MACs against torch's FLOP counter."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from toolkit.errors import ToolkitError
from toolkit.models.baselines import BASELINES, GRU4Rec, GRU4RecConfig, SASRec, SASRecConfig

N_ITEMS = 40
NAMES = sorted(BASELINES)


def make(name: str, **overrides):
    cls, cfg_cls = BASELINES[name]
    torch.manual_seed(0)
    return cls(cfg_cls(n_items=N_ITEMS, **overrides))


def right_padded(lengths: list[int], L: int, seed: int = 0) -> torch.Tensor:
    """[B, L] int64 windows of the given real lengths, right-padded with 0."""
    g = torch.Generator().manual_seed(seed)
    items = torch.zeros(len(lengths), L, dtype=torch.int64)
    for b, n in enumerate(lengths):
        items[b, :n] = torch.randint(1, N_ITEMS + 1, (n,), generator=g)
    return items


def candidates(B: int, C: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, N_ITEMS + 1, (B, C), generator=g)


@pytest.mark.parametrize("name", NAMES)
def test_scores_shape_and_finite(name):
    model = make(name).eval()
    items = right_padded([10, 3, 1], 10)
    with torch.no_grad():
        scores = model(items, candidates(3, 7))
    assert scores.shape == (3, 7)
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("name", ["gru4rec", "sasrec"])
def test_encode_shape(name):
    model = make(name).eval()
    with torch.no_grad():
        u = model.encode(right_padded([4, 6], 6))
    assert u.shape == (2, model.cfg.dim)


@pytest.mark.parametrize("name", NAMES)
def test_appending_padding_does_not_change_scores(name):
    model = make(name).eval()
    items = right_padded([8, 5, 1], 8)
    longer = torch.cat([items, torch.zeros(3, 6, dtype=torch.int64)], dim=1)
    cands = candidates(3, 5)
    with torch.no_grad():
        a, b = model(items, cands), model(longer, cands)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,overrides", [("sasrec", {}), ("sasrec", {"n_blocks": 2, "heads": 2, "ffn_mult": 1}),
                                            ("gru4rec", {})])
def test_state_at_t_ignores_later_items(name, overrides):
    model = make(name, **overrides).eval()
    items = right_padded([9, 9], 9)
    t = 4
    changed = items.clone()
    changed[:, t + 1:] = torch.randint(1, N_ITEMS + 1, (2, 9 - t - 1))
    changed[1, 7:] = 0  # later items may also turn into padding
    with torch.no_grad():
        h, h2 = model.hidden(items), model.hidden(changed)
    torch.testing.assert_close(h[:, :t + 1], h2[:, :t + 1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(h[:, t + 1:], h2[:, t + 1:])  # the change is visible after t


def test_sasrec_rejects_windows_longer_than_its_positions():
    model = make("sasrec", max_len=12)
    with pytest.raises(ToolkitError, match="max_len"):
        model.contract(13)
    with pytest.raises(ToolkitError, match="max_len"):
        model.encode(right_padded([13], 13))


def test_gru_cell_matches_torch_gru():
    model = make("gru4rec").eval()
    ref = nn.GRU(model.cfg.dim, model.cfg.dim, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(model.gru.ih.weight)
        ref.bias_ih_l0.copy_(model.gru.ih.bias)
        ref.weight_hh_l0.copy_(model.gru.hh.weight)
        ref.bias_hh_l0.copy_(model.gru.hh.bias)
        x = torch.randn(3, 7, model.cfg.dim)
        torch.testing.assert_close(model.gru(x), ref(x)[0], rtol=1e-5, atol=1e-6)


def test_din_user_vector_depends_on_the_candidate():
    model = make("din").eval()
    items = right_padded([6], 6)
    cands = candidates(1, 4)
    with torch.no_grad():
        u = model.user_vectors(items, cands)  # [1, 4, D]
        scores = model(items, cands)
        scores_rev = model(items, cands.flip(1))
    assert u.shape == (1, 4, model.cfg.dim)
    assert (u[0, 1:] - u[0, :1]).abs().amax() > 1e-4  # different candidates pool the history differently
    torch.testing.assert_close(scores_rev, scores.flip(1))  # each candidate scored on its own
    with pytest.raises(ToolkitError, match="candidate"):
        model.encode(items)


def test_din_split_activation_unit_equals_concatenated_form():
    model = make("din").eval()
    with torch.no_grad():
        h = model.history(right_padded([5, 3], 5))
        c = model.candidate_vectors(candidates(2, 6))
        torch.testing.assert_close(model.att(h, c), model.att.forward_concat(h, c), rtol=1e-5, atol=1e-6)


def test_din_batched_activation_unit_has_the_gradients_of_the_three_block_form():
    """Training runs the one-baddbmm form, the exported graph the three-block form: same values, same gradients."""
    torch.manual_seed(0)
    att = make("din").att
    with torch.no_grad():
        att.prelu_slope.uniform_(-0.5, 0.5)  # both PReLU branches matter
    h = torch.randn(3, 5, att.from_history.in_features, requires_grad=True)
    c = torch.randn(3, 7, att.from_history.in_features, requires_grad=True)
    leaves = [h, c, *att.parameters()]
    att.train()
    fast, blocks = att(h, c), att.forward_blocks(h, c)
    torch.testing.assert_close(fast, blocks, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(fast)  # a generic upstream gradient
    for g1, g2 in zip(torch.autograd.grad((fast * weights).sum(), leaves),
                      torch.autograd.grad((blocks * weights).sum(), leaves)):
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-4)


def test_din_all_padding_window_scores_zero():
    model = make("din").eval()
    with torch.no_grad():
        scores = model(torch.zeros(2, 5, dtype=torch.int64), candidates(2, 3))
    assert torch.equal(scores, torch.zeros(2, 3))


@pytest.mark.parametrize("name", NAMES)
def test_param_counts_with_and_without_item_table(name):
    small, big = make(name), BASELINES[name][0](BASELINES[name][1](n_items=2 * N_ITEMS))
    counts = small.param_counts()
    assert counts["params"] == sum(p.numel() for p in small.parameters())
    assert counts["params"] - counts["params_excluding_item_table"] == (N_ITEMS + 1) * small.cfg.dim
    # the vocabulary only changes the item table
    assert big.param_counts()["params_excluding_item_table"] == counts["params_excluding_item_table"]
    assert big.param_counts()["params"] > counts["params"]


@pytest.mark.parametrize("name", NAMES)
def test_window_contract_exports_with_torch_export(name):
    model = make(name)
    (entry,) = model.contract(seq_len=6, candidates=9)
    assert entry.name == "window" and entry.outputs == ["scores"] and entry.states == []
    assert [(s.name, s.shape, s.dtype, s.high) for s in entry.inputs] == [
        ("items", (1, 6), torch.int64, N_ITEMS), ("candidates", (1, 9), torch.int64, N_ITEMS)]
    full = entry.example_inputs()
    padded = (full[0].clone(), full[1])
    padded[0][0, 3:] = 0
    with torch.no_grad():
        program = torch.export.export(entry.module, full).run_decompositions({})
        for inputs in (full, padded):
            expected = entry.module(*inputs)
            assert expected.shape == (1, 9)
            torch.testing.assert_close(program.module()(*inputs), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, overrides", [(n, {}) for n in NAMES] + [
    ("sasrec", {"heads": 2, "n_blocks": 2}), ("sasrec", {"in_transform": False, "out_layers": 0}),
    ("gru4rec", {"in_transform": False, "out_layers": 0}), ("din", {"in_transform": False})])
def test_window_contract_scores_as_the_model(name, overrides):
    """The exported window (the baselines' device graphs of constants and matmul reductions) gives the model's own
    scores to fp32 rounding at every real length 0..L, with weights away from their initialisation."""
    model = make(name, **overrides).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    L = 12
    (entry,) = model.contract(seq_len=L, candidates=9)
    cands = candidates(1, 9)
    with torch.no_grad():
        for n in range(L + 1):
            items = right_padded([n], L, seed=n)
            want = model(items, cands)
            # fp32 rounding relative to the scores' scale (sums of D products through several layers)
            scale = float(want.abs().max())
            torch.testing.assert_close(entry.module(items, cands), want, rtol=1e-5, atol=1e-5 * scale + 1e-6)


def synthetic_batch(B: int, L: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A learnable task: the next item is (last item mod N) + 1; 1 positive + 4 random negatives per row."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, L + 1, (B,), generator=g).tolist()
    items = right_padded(lengths, L, seed)
    last = items.gather(1, torch.tensor(lengths).view(-1, 1) - 1).squeeze(1)
    pos = last % N_ITEMS + 1
    neg = (pos.view(-1, 1) + torch.randint(1, N_ITEMS, (B, 4), generator=g) - 1) % N_ITEMS + 1  # never pos
    cands = torch.cat([pos.view(-1, 1), neg], dim=1)  # [B, 5]
    labels = torch.zeros(B, 5)
    labels[:, 0] = 1
    return items, cands, labels


@pytest.mark.parametrize("name", NAMES)
def test_adam_steps_reduce_bce(name):
    model = make(name, dim=32)
    items, cands, labels = synthetic_batch(48, 8, seed=3)
    bce = nn.BCEWithLogitsLoss()

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return bce(model(items, cands), labels).item()

    before = eval_loss()
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    model.train()
    for _ in range(20):
        opt.zero_grad()
        bce(model(items, cands), labels).backward()
        opt.step()
    after = eval_loss()
    print(f"{name}: BCE {before:.4f} -> {after:.4f}")
    assert after < 0.8 * before, (before, after)


def counted_macs(fn, *args) -> int:
    """Multiply-adds seen by torch's operator-level counter (it reports FLOPs = 2 x MACs of matmul-family ops)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops() // 2


# Tolerance: exact. Both counts cover exactly the matmul-family ops (linear, mm/bmm, attention matmuls); neither
# counts elementwise work (gates' sigmoid/tanh, softmax, LayerNorm, PReLU, bias adds, masking), so any difference
# would mean the hand formula and the model disagree about the architecture.
@pytest.mark.parametrize("name,overrides", [
    ("gru4rec", {}), ("gru4rec", {"in_transform": False, "out_layers": 0}),
    ("sasrec", {}), ("sasrec", {"n_blocks": 2, "heads": 2, "ffn_mult": 1, "out_layers": 1}),
])
@pytest.mark.parametrize("L", [5, 10])
def test_analytic_macs_match_flop_counter(name, overrides, L):
    model = make(name, **overrides).eval()
    assert counted_macs(model.encode, right_padded([L], L)) == model.analytic_macs(L)


@pytest.mark.parametrize("L,C", [(5, 1), (10, 100)])
def test_din_analytic_macs_match_flop_counter(L, C):
    model = make("din").eval()
    c = model.candidate_vectors(candidates(1, C)).detach()  # tower excluded, as in analytic_macs
    assert counted_macs(model.attend_and_score, right_padded([L], L), c) == model.analytic_macs(L, C)


def test_analytic_macs_reproduce_the_design_note_hand_counts():
    """docs/models.md §9 cross-check figures for D = 64 (GRU4Rec 295k / 725k, SASRec 553k / 1.42M at L = 10 / 25)."""
    gru, sas = GRU4Rec(GRU4RecConfig(n_items=N_ITEMS)), SASRec(SASRecConfig(n_items=N_ITEMS))
    assert round(gru.analytic_macs(10), -3) == 295_000 and round(gru.analytic_macs(25), -3) == 725_000
    assert round(sas.analytic_macs(10), -3) == 553_000 and round(sas.analytic_macs(25), -4) == 1_420_000


@pytest.mark.slow  # real ExecuTorch exports
@pytest.mark.parametrize("name", NAMES + ["gate"])
def test_window_pte_is_one_xnnpack_graph(name, tmp_path):
    """The gate's and every baseline's .pte is one XNNPACK partition; outside it only the
    embedding gathers (item table, 0/1 real-token mask) and nothing else, and it passes its trajectory parity."""
    from toolkit.exporters import export_artifacts
    from toolkit.exporters.sources import fresh

    model, _, info = fresh(name, N_ITEMS, {"dim": 16})
    entries = model.contract() if name == "gate" else model.contract(seq_len=8, candidates=6)
    m = export_artifacts(entries, name, ["executorch"], tmp_path / "a", parity_steps=2, model_info=info)
    (rec,) = m["artifacts"]
    d = rec["delegation"]
    assert rec["parity"]["pass"] and d["partitions"] == 1, d
    assert set(d["fallback_ops"]) <= {"aten_embedding_default"}, d["fallback_ops"]
    assert d["compute_ops_delegated"] == d["compute_ops_total"] > 0


def test_training_gathers_candidates_from_one_tower_pass_with_the_same_gradients():
    """More candidate slots than items: training runs the tower once over the item table and gathers rows;
    values and gradients are those of the per-slot form (eval mode keeps the per-slot form)."""
    model = make("sasrec")
    cands = torch.randint(1, N_ITEMS + 1, (8, 2 * N_ITEMS))  # 16x more slots than items
    assert cands.numel() > model.item_emb.num_embeddings
    weights = torch.randn(8, 2 * N_ITEMS, model.cfg.dim)
    model.train()
    fast = model.candidate_vectors(cands)
    g_fast = torch.autograd.grad((fast * weights).sum(), list(model.tower.parameters()) + [model.item_emb.weight])
    slots = model.tower(model.item_emb(cands))
    g_slots = torch.autograd.grad((slots * weights).sum(), list(model.tower.parameters()) + [model.item_emb.weight])
    torch.testing.assert_close(fast, slots, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_fast, g_slots):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    model.eval()
    gathered = lambda t: t.grad_fn.next_functions[0][0].name().startswith("IndexSelect")  # noqa: E731
    assert gathered(fast) and not gathered(model.candidate_vectors(cands))  # eval: per slot
    model.train()
    model.item_emb.sparse = True  # --sparse-embeddings: the table's gradient stays on the touched rows
    assert not gathered(model.candidate_vectors(cands))
