"""`toolkit train pop|cooc`: fit a count baseline and write a run dir that `toolkit eval` and `compare` read like
any other (model.json, weights.safetensors holding the count tables, metrics.json on the same candidates)."""

from __future__ import annotations

import time
from pathlib import Path

from toolkit.data import Dataset
from toolkit.io import atomic_write_json, write_descriptor_json
from toolkit.models.counts import fit
from toolkit.models.runs import WEIGHTS, model_descriptor, save_weights
from toolkit.train.loop import evaluate


def fit_run(name: str, ds: Dataset, run: Path) -> dict:
    """Count on the training part of `ds`, score valid and test, write the run dir; returns metrics.json."""
    t0 = time.perf_counter()
    model = fit(name, ds).eval()
    seconds = time.perf_counter() - t0
    metrics = {"valid": evaluate(model, ds, "valid"), "test": evaluate(model, ds, "test"), "best_epoch": 0,
               "epochs_run": 0, "train_seconds": round(seconds, 3), "selected_on": "nothing (no parameters)",
               "history": []}
    run.mkdir(parents=True, exist_ok=True)
    wsha = save_weights(run / WEIGHTS, model)
    desc = model_descriptor(name, model, ds.meta, wsha, {"train": {"kind": "counts", "counted_on": "training rows",
                                                                   "seconds": round(seconds, 3)},
                                                         "dataset_path": str(ds.path)})
    atomic_write_json(run / "metrics.json", metrics)
    write_descriptor_json(run / "model.json", desc)
    return metrics
