"""Streaming accuracy (docs/models.md §3.4): score targets the way the exported `step` runs on a phone.

Windowed inference (what training and `toolkit eval` use) re-reads the last L clicks from the learned initial TTT
state. Streaming starts at the user's first click and carries the TTT state (W, b) through every mini-batch of K
clicks, as repeated `step` calls do; the target at T is scored from the state after history[0:T], with the last,
possibly partial, mini-batch right-padded (padding never updates the state). Past the training window this is a
different regime, so its accuracy is measured, not assumed.
"""

from __future__ import annotations

import numpy as np
import torch

from toolkit.data import Dataset
from toolkit.errors import ToolkitError
from toolkit.metrics import ranking_metrics
from toolkit.models.common import last_real

BATCH = 1024


def streaming_scn(model):
    """The SCN that streams: an scn run, or the device part of a cocorrrec run (scored without cloud updates)."""
    scn = getattr(model, "scn", model)
    if not hasattr(scn, "ttt"):
        raise ToolkitError(f"streaming applies to SCN-family runs (scn, cocorrrec); '{model.name}' keeps no "
                           "TTT state to carry")
    return scn


def streamed_histories(ds: Dataset, users: np.ndarray, times: np.ndarray, K: int) -> np.ndarray:
    """[N, M*K]: history[0:T] of each target, laid out so mini-batch boundaries fall at the user's clicks 0, K, 2K…
    and every row ends in the same mini-batch: whole all-padding mini-batches in front (they leave the state
    unchanged), the last mini-batch right-padded."""
    chunks = -(-times // K)  # mini-batches per target (T >= 1)
    M = int(chunks.max()) if times.size else 1
    out = np.zeros((times.size, M * K), np.int64)
    for i, (u, T, m) in enumerate(zip(users, times, chunks)):
        start = (M - int(m)) * K
        out[i, start:start + int(T)] = ds.user_items[ds.user_ptr[u]:ds.user_ptr[u] + int(T)]
    return out


@torch.no_grad()
def stream_scores(model, ds: Dataset, split: str) -> np.ndarray:
    """Scores [N, C] of a split's targets in the streaming regime."""
    scn = streaming_scn(model).eval()
    K = scn.K
    users, times = ds.targets(split)
    _, cands = ds.split(split)
    out = np.zeros(cands.shape, np.float32)
    order = np.argsort(times, kind="stable")  # similar lengths together: fewer all-padding mini-batches
    for a in range(0, order.size, BATCH):
        idx = order[a:a + BATCH]
        hist = torch.from_numpy(streamed_histories(ds, users[idx], times[idx], K))
        state = scn.initial_state(len(idx))
        for start in range(0, hist.shape[1], K):
            chunk = hist[:, start:start + K]
            h, state = scn.hidden(chunk, state=state)
        out[idx] = scn.score(last_real(h, chunk), torch.from_numpy(cands[idx])).numpy()
    return out


def evaluate_streaming(model, ds: Dataset, split: str) -> dict:
    return ranking_metrics(stream_scores(model, ds, split), pos_index=0)


__all__ = ["stream_scores", "evaluate_streaming", "streamed_histories", "streaming_scn"]
