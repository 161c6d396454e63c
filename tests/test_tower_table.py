"""The precomputed candidate tower (`toolkit export --tower precomputed`): the shipped table [n_items + 1, D] is the
tower's output, so every model that offers it scores exactly as with the tower in the graph (eager, fp32 rounding),
over a stateful trajectory where the entry carries state; models without a separable tower refuse in one line.
(Through the runtimes and verify: tests/test_export_cli.py.)"""

from __future__ import annotations

import pytest
import torch

from toolkit.errors import ToolkitError
from toolkit.exporters import sources
from toolkit.exporters.parity import eager_trajectory, trajectory_inputs

N = 60

CASES = [("scn", {}, False), ("scn", {}, True), ("cocorrrec", {}, True), ("cocorrrec", {"cloud": "history"}, False),
         ("duet", {}, False), ("duet", {"backbone": "din"}, False), ("gru4rec", {}, False), ("sasrec", {}, False),
         ("din", {}, False)]


@pytest.mark.parametrize("name, config, corrections", CASES)
def test_table_entries_score_as_the_tower(name, config, corrections):
    torch.manual_seed(0)
    model, _, _ = sources.fresh(name, N, {"dim": 32, **config})
    with torch.no_grad():  # a trained-looking tower: fresh embeddings (std 0.02) would make every score tiny
        model.item_emb.weight.normal_()
        model.item_emb.weight[0].zero_()
    table, kw = sources.entries_for(model, 12, 15, corrections, tower_table=True)
    plain, _ = sources.entries_for(model, 12, 15, corrections, tower_table=False)
    assert [e.name for e in table] == [e.name for e in plain]
    for t, p in zip(table, plain):
        assert sources.tower_tables([t]) == {t.name: [N + 1, 32]} and sources.tower_tables([p]) == {}
        assert [s.name for s in t.inputs] == [s.name for s in p.inputs] and t.outputs == p.outputs
        inputs = trajectory_inputs(t, 4, seed=3)
        for a, b in zip(eager_trajectory(t, inputs), eager_trajectory(p, inputs)):
            assert abs(b["outputs"][0]).max() > 1e-2  # scores of a real size, so the comparison means something
            for x, y in zip(a["outputs"] + a["states"], b["outputs"] + b["states"]):
                torch.testing.assert_close(torch.from_numpy(x), torch.from_numpy(y), rtol=1e-5, atol=1e-6)
    rec = sources.tower_record(model, table, kw, 3, 1e-4, 1e-4)
    assert rec["pass"] and rec["kind"] == "precomputed" and rec["table_shape"] == [N + 1, 32]
    assert rec["table_bytes_per_entry"] == {e.name: 4 * (N + 1) * 32 for e in table}


def test_the_table_check_catches_a_table_that_is_not_the_tower():
    torch.manual_seed(0)
    model, _, _ = sources.fresh("scn", N, {"dim": 32})
    with torch.no_grad():
        model.item_emb.weight.normal_()
    entries, kw = sources.entries_for(model, 12, 15, tower_table=True)
    entries[0].module.tower_table[5:].mul_(1.01)
    rec = sources.tower_record(model, entries, kw, 3, 1e-4, 1e-4)
    assert not rec["pass"] and not rec["table_vs_tower"]["window"]["pass"] and rec["table_vs_tower"]["step"]["pass"]


def test_a_model_without_a_separable_tower_is_one_clear_error():
    gate, _, _ = sources.fresh("gate", N)
    with pytest.raises(ToolkitError, match="gate has no separable candidate tower to precompute"):
        sources.entries_for(gate, 12, 15, tower_table=True)


@pytest.mark.parametrize("name", ["scn", "cocorrrec", "gru4rec", "sasrec", "din"])
def test_flop_counts_drop_by_exactly_the_tower(name):
    """Counted and hand-counted FLOPs of a table entry are the tower entry's less the tower's matmuls (4 C D^2)."""
    from toolkit.models.flops import analytic_flops, count_flops

    model, _, _ = sources.fresh(name, N, {"dim": 32})
    C = 15
    table, _ = sources.entries_for(model, 12, C, name == "cocorrrec", tower_table=True)
    plain, _ = sources.entries_for(model, 12, C, name == "cocorrrec", tower_table=False)
    for t, p in zip(table, plain):
        tower = 4 * C * 32 * 32
        assert count_flops(p)[0] - count_flops(t)[0] == tower
        a_t, a_p = analytic_flops(model, t, 12), analytic_flops(model, p, 12)
        assert a_t is not None and a_p - a_t == tower
