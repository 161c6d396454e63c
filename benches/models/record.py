"""Assemble benches/baselines/models_beauty.json from finished run dirs (no training here).

    python benches/models/record.py OUT.json --machine "..." --table L10=DIR/compare-*/compare.json ...
        --choice NAME=RUN_DIR ...      (the recipe choices: single-seed runs, their valid/test and settings)
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path


def run_summary(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    d = json.loads((run / "model.json").read_text())
    return {"run": run.name, "model": d["model"], "config": d["config"], "train": d.get("train"),
            "valid_ndcg@10": round(m["valid"]["ndcg@10"], 4), "test": {k: round(v, 4) for k, v in m["test"].items()},
            "best_epoch": m["best_epoch"], "epochs_run": m["epochs_run"],
            "epoch_seconds": [h["epoch_seconds"] for h in m.get("history", [])]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--machine", default="")
    ap.add_argument("--table", action="append", default=[])
    ap.add_argument("--choice", action="append", default=[])
    ap.add_argument("--note", action="append", default=[])
    a = ap.parse_args()
    rec = {"what": "toolkit's own Beauty candidates (1 positive + 99 never-touched negatives), best epoch on "
                   "validation NDCG@10, test metrics; tables: mean and std (ddof=1) over seeds",
           "machine": {"platform": platform.platform(), "note": a.machine},
           "notes": a.note, "tables": {}, "recipe_choices": {}}
    for t in a.table:
        name, path = t.split("=", 1)
        rec["tables"][name] = json.loads(Path(path).read_text())
    for c in a.choice:
        name, path = c.split("=", 1)
        rec["recipe_choices"][name] = run_summary(Path(path))
    Path(a.out).write_text(json.dumps(rec, indent=1) + "\n")


if __name__ == "__main__":
    main()
