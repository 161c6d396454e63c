"""`toolkit train MODEL --seeds 0,1,2`: one run per seed and the mean / std of their metrics (seeds.json).

Reporting one seed hides how much of a difference between models is initialisation noise; the tables we publish
are means over seeds with their standard deviation (sample std, ddof=1).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from toolkit.data import Dataset
from toolkit.io import atomic_write_json
from toolkit.reporter import Reporter
from toolkit.rundir import SEED_RUN
from toolkit.train.loop import CHECKPOINT, TrainSettings, train


def summarise_seeds(per_seed: dict[int, dict]) -> dict:
    """metrics.json of each seed -> mean and std (ddof=1; 0 for one seed) of every valid/test metric."""
    seeds = sorted(per_seed)
    out: dict = {"seeds": seeds}
    for split in ("valid", "test"):
        keys = per_seed[seeds[0]][split].keys()
        vals = {k: np.array([per_seed[s][split][k] for s in seeds], dtype=np.float64) for k in keys}
        out[f"{split}_mean"] = {k: round(float(v.mean()), 6) for k, v in vals.items()}
        out[f"{split}_std"] = {k: round(float(v.std(ddof=1)) if v.size > 1 else 0.0, 6) for k, v in vals.items()}
    out["best_epoch"] = {str(s): per_seed[s]["best_epoch"] for s in seeds}
    out["epochs_run"] = {str(s): per_seed[s].get("epochs_run") for s in seeds}
    out["train_seconds"] = {str(s): per_seed[s]["train_seconds"] for s in seeds}
    return out


def train_seeds(name: str, ds: Dataset, out: Path, settings: TrainSettings, seeds: list[int],
                reporter: Reporter | None = None, resume: bool = False) -> dict:
    """Train `name` once per seed into out/seed-S; write out/seeds.json; return it.

    resume: a seed whose run dir holds a checkpoint continues from it (a finished seed only re-reads its best
    epoch and re-scores it, deterministically), the others start fresh: an interrupted multi-seed run loses at
    most the epoch that was running."""
    reporter = reporter or Reporter()
    out.mkdir(parents=True, exist_ok=True)
    per_seed = {}
    for s in seeds:
        run = out / SEED_RUN.format(s)
        again = resume and (run / CHECKPOINT).is_file()
        reporter.heading(f"{name}: seed {s} ({seeds.index(s) + 1}/{len(seeds)})" + (", resumed" if again else ""))
        per_seed[s] = train(name, ds, run, dataclasses.replace(settings, seed=s), resume=again, reporter=reporter)
    summary = {"model": name, "config": settings.config, **summarise_seeds(per_seed),
               "runs": [SEED_RUN.format(s) for s in seeds]}
    atomic_write_json(out / "seeds.json", summary)
    return summary
