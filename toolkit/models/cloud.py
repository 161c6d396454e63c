"""Cloud updates (docs/models.md §4.1): what the device can ask the cloud for, behind one interface.

A cloud model has a device part (the exported artifact) and a cloud part that reads the click history the cloud
keeps for the user (`context_len` items, at least the device's window) and returns an *update*: one flat float
vector per user that the device applies until it asks again. The gate decides when asking again is worth it, so
every cloud model answers the same four questions:

  device_encode(items) -> r [B, D]               the device's own user state, no update (the gate's input r)
  cloud_update(context) -> update [B, P]          computed in the cloud from the history up to t'
  score_update(items, candidates, update)         the device's scores with an update (all zeros = no update)
  forward(items, candidates, context)             training: the fresh update for each row
  score_with_offline(items, candidates, context)  training's offline loss: forward's scores, then with no update

`update_floats()` is P (bytes down = 4 P in fp32) and `cloud_macs()` the cloud's work per update. A stale update
is simply `cloud_update` of an earlier context applied to today's window, so staleness has a real cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.models.common import register_tower_table
from toolkit.models.contract import EntryPoint, TensorSpec


class HistoryEncoder(nn.Module):
    """GRU over the embedded history, its state at the last real click, then a 2-layer MLP -> code [B, out].

    DUET's generator trunk (GRU over the window, last hidden state, MLP -> code z); an all-padding history gives
    a zero code.
    """

    def __init__(self, dim: int, hidden: int, out: int):
        super().__init__()
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, out))
        self.hidden = hidden

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, N, D] embedded history (right-padded), mask [B, N] bool -> code [B, out]."""
        out, _ = self.gru(x)  # [B, N, hidden]
        count = mask.sum(-1)
        idx = (count - 1).clamp(min=0).long()
        last = out.gather(1, idx.view(-1, 1, 1).expand(-1, 1, self.hidden)).squeeze(1)
        return self.mlp(last) * (count > 0).to(x.dtype)[:, None]

    def macs(self, steps: int, dim: int) -> int:
        """Multiply-adds for a history of `steps` clicks: GRU (3 gates, input + hidden) + MLP."""
        h = self.hidden
        out = self.mlp[2].out_features
        return steps * 3 * (dim * h + h * h) + h * h + h * out


class UpdateWindowEntry(nn.Module):
    """Exported `window` of a cloud model: forward(items [1, L], candidates [1, C], update [1, P]) -> scores.

    tower_table=True: the device model's candidate tower output for every item is a constant buffer `tower_table`
    [n_items + 1, D] gathered by id (the model scores through `score_update_vectors`)."""

    def __init__(self, model: nn.Module, tower_table: bool = False):
        super().__init__()
        self.model = model
        register_tower_table(self, model.device, tower_table)

    def forward(self, items: torch.Tensor, candidates: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        if self.tower_table is None:
            return self.model.score_update(items, candidates, update)
        return self.model.score_update_vectors(items, F.embedding(candidates, self.tower_table), update)


def update_window_entry(model, seq_len: int, candidates: int, what: str, module: nn.Module | None = None,
                        tower_table: bool = False) -> EntryPoint:
    """The device artifact of a cloud model: static shapes, the update as an explicit input (zeros = none).
    `module`: the model's own exported form of forward(items, candidates, update), if it has one."""
    n = model.cfg.n_items
    return EntryPoint(
        name="window",
        module=(module if module is not None else UpdateWindowEntry(model, tower_table)).eval(),
        inputs=[TensorSpec("items", (1, seq_len), torch.int64, high=n),
                TensorSpec("candidates", (1, candidates), torch.int64, high=n),
                TensorSpec("update", (1, model.update_floats()), torch.float32)],
        outputs=["scores"],
        description=f"scores of {candidates} candidates for a right-padded window of {seq_len} items with the "
                    f"last {what} the cloud sent ({model.update_floats()} floats; zeros = none)",
    )


def param_split(model: nn.Module, cloud_modules) -> dict[str, int]:
    """Parameter counts of a cloud model: all, without the item table, on the device, in the cloud."""
    total = sum(p.numel() for p in model.parameters())
    table = model.item_emb.weight.numel()
    cloud = sum(p.numel() for m in cloud_modules for p in m.parameters())
    return {"params": total, "params_excluding_item_table": total - table,
            "device_params_excluding_item_table": total - table - cloud, "cloud_params": cloud}


def drop_updates(update: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Training only: zero the whole update of a random share p of the rows, so the device model is also trained to
    work with no update at all (a phone that is offline, or never asks) instead of co-adapting to always having one.
    """
    if not training or p <= 0.0:
        return update
    keep = (torch.rand(update.shape[0], 1, device=update.device) >= p).to(update.dtype)
    return update * keep


def two_pass_offline_scores(model, items, candidates, context) -> torch.Tensor:
    """`score_with_offline` of a cloud model whose update changes the device part itself (CoCorrRec's TTT weights):
    the scores with the row's fresh update, then with none (all zeros), [2B, C], each from its own pass."""
    scores = model(items, candidates, context=context)
    none = torch.zeros(items.shape[0], model.update_floats(items.shape[1]), device=items.device)
    return torch.cat([scores, model.score_update(items, candidates, none)])


def cloud_position_scores(model, items, candidates, context) -> torch.Tensor:
    """Every-position training scores [B, L, C] of a cloud model. Positions before the last real click score with
    the device alone (no update): the cloud's history at the row's time holds the very clicks those positions
    predict, so an update there would leak them. The last real position scores with the row's fresh update. The
    device part thus also learns to rank well offline, with the backbone's own loss."""
    from toolkit.models.common import last_real_onehot

    scores = model.device.position_scores(items, candidates)
    last = model(items, candidates, context=context)  # [B, C], update dropout applies
    sel = last_real_onehot(items).to(scores.dtype)[..., None]  # [B, L, 1]
    return scores * (1 - sel) + last[:, None, :] * sel


def is_cloud_model(model) -> bool:
    return all(hasattr(model, a) for a in ("context_len", "cloud_update", "score_update", "device_encode"))


__all__ = ["HistoryEncoder", "UpdateWindowEntry", "cloud_position_scores", "update_window_entry", "is_cloud_model",
           "drop_updates", "param_split", "two_pass_offline_scores"]
