"""When does the dense Adam update of the item table dominate a training step? (issue 14, item 2)

For SCN (dim 64, L 10, batch 1024 rows x 5 candidates) and growing item tables, times one step split into
forward+backward and optimizer step, for dense Adam over all parameters vs row-wise Adam on the item table
(nn.Embedding(sparse=True): only the rows in the batch are read/written; toolkit.train.optim.RowSparseAdam,
i.e. `toolkit train --sparse-embeddings`).
Run: OMP_NUM_THREADS=1 python benches/scale/embedding_step.py [n_items ...]   (prints one JSON line per size)
"""

import json
import os
import sys
import time

import torch

from toolkit.models.registry import build
from toolkit.train.optim import make_optimizer


def step_times(n_items: int, sparse: bool, steps: int = 6, batch: int = 1024, seq_len: int = 10):
    torch.manual_seed(0)
    model = build("scn", n_items)
    opts = [make_optimizer(model, lr=1e-3, weight_decay=0.0, sparse_embeddings=sparse)]  # what `toolkit train` uses
    g = torch.Generator().manual_seed(1)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    labels = torch.zeros(batch, 5)
    labels[:, 0] = 1
    fb, op = [], []
    for i in range(steps):
        seqs = torch.randint(1, n_items + 1, (batch, seq_len), generator=g)
        cands = torch.randint(1, n_items + 1, (batch, 5), generator=g)
        t0 = time.perf_counter()
        loss = loss_fn(model(seqs, cands), labels)
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        t1 = time.perf_counter()
        for o in opts:
            o.step()
        t2 = time.perf_counter()
        if i >= 2:  # first steps allocate the optimizer state
            fb.append(t1 - t0)
            op.append(t2 - t1)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return med(fb), med(op)


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    for n in [int(a) for a in sys.argv[1:]] or [12_101, 100_000, 500_000, 2_000_000]:
        dense_fb, dense_opt = step_times(n, sparse=False)
        sparse_fb, sparse_opt = step_times(n, sparse=True)
        print(json.dumps({
            "n_items": n, "dense": {"fwd_bwd_ms": round(dense_fb * 1e3, 1), "opt_ms": round(dense_opt * 1e3, 1),
                                    "opt_share": round(dense_opt / (dense_fb + dense_opt), 3)},
            "sparse": {"fwd_bwd_ms": round(sparse_fb * 1e3, 1), "opt_ms": round(sparse_opt * 1e3, 1)},
            "speedup": round((dense_fb + dense_opt) / (sparse_fb + sparse_opt), 2),
            "load": os.getloadavg()}), flush=True)
