"""FLOPs of an exported entry point: the operator-level counter and the analytic count (docs/models.md §9).

It sits with the models because the cost is theirs: the exporter records the counted FLOPs in each manifest record,
and the bench reads them from there for the artifacts it measures (and counts them itself for fresh models).
The operator-level counter sees every aten op the entry runs, so the TTT inner matmuls (k@W, q@W, the W update)
are counted, which module-hook counters miss. It only has formulas for the matmul family (mm, addmm, bmm,
baddbmm, scaled-dot-product attention, convolution): element-wise ops, norms, softmax, activations, gathers and
the GRU cell's gate non-linearities count 0. One multiply-add = 2 FLOPs; a Linear's bias add is not counted.
"""

from __future__ import annotations

import inspect

import torch
from torch.utils.flop_counter import FlopCounterMode

from toolkit.models.contract import EntryPoint

COUNTER = "torch.utils.flop_counter.FlopCounterMode"
COVERS = "matmul-family aten ops (mm, addmm, bmm, baddbmm, SDPA, convolution); element-wise, norm, softmax, gather = 0"


def counted_ops() -> list[str]:
    """The aten ops the counter has formulas for (recorded in the bench JSON environment)."""
    return sorted(str(k).removeprefix("aten.") for k in FlopCounterMode().flop_registry)


def count_flops(entry: EntryPoint, seed: int = 0) -> tuple[int, dict[str, int]]:
    """FLOPs of one call of `entry` on its example inputs (+ initial state) -> (total, per-op breakdown)."""
    inputs = entry.example_inputs(seed)
    states = entry.initial_states()
    counter = FlopCounterMode(display=False)
    # No parameter may require grad while counting: the counter's module tracker hooks autograd on any output that
    # does, and fails on a returned leaf (e.g. an initial-state Parameter passed through unchanged).
    params = list(entry.module.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.no_grad(), counter:
            entry.module(*inputs, *states)
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    per_op = {str(op).removeprefix("aten."): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


def tower_macs(dim: int, candidates: int, table: bool = False) -> int:
    """Candidate tower (Linear + tanh + Linear, bias not counted) and the dot-product score, per call; with a
    precomputed tower table (export --tower precomputed) the score only."""
    return candidates * ((0 if table else 2 * dim * dim) + dim)


def ships_tower_table(entry: EntryPoint) -> bool:
    """The entry gathers candidates from a precomputed tower table instead of running the tower."""
    return any(name.split(".")[-1] == "tower_table" for name, _ in entry.module.named_buffers())


def analytic_flops(model, entry: EntryPoint, seq_len: int) -> int | None:
    """2 x the model's hand-derived multiply-adds for what this entry computes, or None if the model has none.

    `analytic_macs(L)` counts the sequence encoder (no item lookup, no tower); a `step` is one encoder mini-batch of
    its K input items; entries that score candidates add the tower and the dot-product score (models whose
    `analytic_macs` takes `candidates`, like DIN's target attention, get the entry's candidate count). Entries whose model defines
    `entry_analytic_macs(entry_name, seq_len)` use that instead (e.g. the gate's `mrs`).
    """
    if hasattr(model, "entry_analytic_macs"):
        names = [s.name for s in entry.inputs]
        extra = {}
        if "candidates" in names and "candidates" in inspect.signature(model.entry_analytic_macs).parameters:
            extra["candidates"] = entry.inputs[names.index("candidates")].shape[-1]
        if "with_corrections" in inspect.signature(model.entry_analytic_macs).parameters:
            extra["with_corrections"] = "corr_attn" in names
        if "tower_table" in inspect.signature(model.entry_analytic_macs).parameters:
            extra["tower_table"] = ships_tower_table(entry)
        macs = model.entry_analytic_macs(entry.name, seq_len, **extra)
        return None if macs is None else 2 * int(macs)
    if not hasattr(model, "analytic_macs"):
        return None
    names = [s.name for s in entry.inputs]
    C = entry.inputs[names.index("candidates")].shape[-1] if "candidates" in names else None
    kw = {"candidates": C} if C is not None and "candidates" in inspect.signature(model.analytic_macs).parameters else {}
    if entry.name == "window":
        macs = model.analytic_macs(seq_len, **kw)
    elif entry.name == "step" and "items" in names:
        macs = model.analytic_macs(entry.inputs[names.index("items")].shape[-1], **kw)
    else:
        return None
    if C is not None:
        macs += tower_macs(model.cfg.dim, C, ships_tower_table(entry))
    return 2 * int(macs)
