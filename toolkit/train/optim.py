"""Optimisers of the training loop: torch's Adam (default) or row-wise Adam for a sparse item table.

With `--sparse-embeddings` the item table is an nn.Embedding(sparse=True): backward yields only the rows a batch
touched, and `RowSparseAdam` updates only those rows (their moments and values), like torch.optim.SparseAdam,
while every dense parameter gets the ordinary Adam update. A row absent from a batch keeps its moments instead of
decaying them, so results differ from dense Adam (hence a flag). One optimizer, one standard state_dict
({"state": {i: {"step", "exp_avg", "exp_avg_sq"}}, "param_groups": [...]}), so checkpoints keep their format.
Measured (benches/baselines/scale.json, SCN, batch 1024): the dense update of a 64-wide table is 2% of a step at
12k items, 24% at 100k and over half from ~400k; the sparse path is 1.4x faster per step at 100k, 3.8x at 500k.
"""

from __future__ import annotations

import torch

from toolkit.errors import ToolkitError


class RowSparseAdam(torch.optim.Optimizer):
    """Adam (no weight decay) that accepts sparse gradients and then updates only their rows."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ARG002 - the torch signature
        for group in self.param_groups:
            (b1, b2), lr, eps = group["betas"], group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.tensor(0.0)
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["step"] += 1
                t = float(st["step"])
                step_size, bc2_sqrt = lr / (1 - b1**t), (1 - b2**t) ** 0.5
                m, v, g = st["exp_avg"], st["exp_avg_sq"], p.grad
                if g.is_sparse:
                    g = g.coalesce()
                    rows, vals = g.indices()[0], g.values()
                    m_rows = m[rows].mul_(b1).add_(vals, alpha=1 - b1)
                    v_rows = v[rows].mul_(b2).addcmul_(vals, vals, value=1 - b2)
                    m[rows], v[rows] = m_rows, v_rows
                    p[rows] -= step_size * m_rows / (v_rows.sqrt() / bc2_sqrt + eps)
                else:
                    m.mul_(b1).add_(g, alpha=1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    p.addcdiv_(m, v.sqrt().div_(bc2_sqrt).add_(eps), value=-step_size)


def make_optimizer(model, lr: float, weight_decay: float, sparse_embeddings: bool):
    """torch.optim.Adam over every trainable parameter (default), or RowSparseAdam with a sparse item table.

    Adam is torch's fused kernel (one pass over each tensor instead of a chain of element-wise ops): the same
    update up to float rounding, and 0.005 s of a 0.029 s compiled SCN step on 1,024 rows here
    (benches/baselines/train_speed_scn.json)."""
    params = [p for p in model.parameters() if p.requires_grad]  # a frozen device part (--freeze-device) is left out
    if not sparse_embeddings:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    if weight_decay:
        raise ToolkitError("--sparse-embeddings updates only the rows a batch touches; it cannot apply "
                           "--weight-decay (drop one of them)")
    table = getattr(model, "item_emb", None)
    if not isinstance(table, torch.nn.Embedding):
        raise ToolkitError(f"--sparse-embeddings needs a model with an item table; {type(model).__name__} has none")
    table.sparse = True
    return RowSparseAdam(params, lr=lr)
