"""Before/after of the exported gate, SASRec, GRU4Rec and DIN graphs (issue 11, deliverable 5), side by side in one
process: the artifacts of a code revision exported by that revision's own code, timed interleaved with this tree's.

Usage (repository root):
  1. export with each revision's code (fresh models, same seed -> same weights):
     PYTHONPATH=<tree> python benches/graph_ab.py export <out_dir> [--models gate,sasrec,gru4rec,din]
  2. time all artifacts interleaved (1 thread):
     PYTHONPATH=. OMP_NUM_THREADS=1 python benches/graph_ab.py time before=<dir> after=<dir> [--runs 3000]
Prints one JSON object: p50/p90 ms per call through toolkit's runners (which include the Python call), the .pte's
XNNPACK partitions and non-delegated nodes (the export's own delegation report), and the load average.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

L, C, N_ITEMS = 25, 100, 12101


def export(out: Path, models: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    from toolkit.exporters import export_artifacts
    from toolkit.exporters.sources import fresh

    for name in models:
        model, _, info = fresh(name, N_ITEMS)
        kw = {} if name == "gate" else {"seq_len": L, "candidates": C}
        export_artifacts(model.contract(**kw), name, ["executorch", "onnx"], out / name, parity_steps=3,
                         model_info=info)


def _inputs(rec: dict, g) -> list[np.ndarray]:
    out = []
    for spec in rec["inputs"]:
        shape = tuple(spec["shape"])
        if spec["dtype"].startswith("int"):
            out.append(g.integers(1, N_ITEMS + 1, shape).astype(np.int64))
        else:
            out.append(g.standard_normal(shape).astype(np.float32))
    return out


def timing(dirs: dict[str, Path], runs: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from toolkit.exporters import open_runner

    runners, deleg, args = {}, {}, {}
    for tag, root in dirs.items():
        for mdir in sorted(p for p in root.iterdir() if (p / "manifest.json").is_file()):
            man = json.loads((mdir / "manifest.json").read_text())
            for rec in man["artifacts"]:
                key = f"{tag}/{mdir.name}/{rec['entry']}/{rec['runtime']}"
                runners[key] = open_runner(mdir, rec, threads=1)
                args[key] = _inputs(rec, np.random.default_rng(0))  # same draws for before and after
                if rec["runtime"] == "executorch":
                    d = rec["delegation"]
                    deleg[key] = {"partitions": d["partitions"], "non_delegated_nodes": d["non_delegated_nodes"],
                                  "fallback_ops": d["fallback_ops"]}
    for k, r in runners.items():
        for _ in range(300):
            r(*args[k])
    samples = {k: [] for k in runners}
    uptime0 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    load0 = os.getloadavg()
    for _ in range(runs):
        for k, r in runners.items():
            t = time.perf_counter()
            r(*args[k])
            samples[k].append(time.perf_counter() - t)
    load1 = os.getloadavg()
    uptime1 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    p = lambda v, q: round(float(np.percentile(v, q)) * 1e3, 4)  # noqa: E731
    lat = {k: {"p50": p(v, 50), "p90": p(v, 90)} for k, v in samples.items()}
    tags = list(dirs)
    speedup = {}
    if len(tags) == 2:
        a, b = tags
        for k in lat:
            if k.startswith(a + "/") and (b + k[len(a):]) in lat:
                speedup[k[len(a) + 1:]] = round(lat[k]["p50"] / lat[b + k[len(a):]]["p50"], 2)
    return {"what": f"p50/p90 ms per call: the gate's mrs (batch 1, 10 noise draws) and the SASRec, GRU4Rec and DIN "
                    f"windows (L={L}, {C} candidates), fresh models (Beauty vocabulary), 1 thread, all artifacts "
                    "interleaved in one process",
            "command": "PYTHONPATH=. OMP_NUM_THREADS=1 python " + " ".join(sys.argv),
            "latency_ms": lat, f"speedup_p50_{tags[0]}_over_{tags[-1]}": speedup, "delegation": deleg,
            "load_average_1_5_15": {"start": [round(x, 2) for x in load0], "end": [round(x, 2) for x in load1]},
            "uptime": {"start": uptime0, "end": uptime1},
            "machine": {"cores": os.cpu_count(), "note": "shared 2-core VM with other agents' jobs; compare ratios"}}


def main() -> None:
    args = sys.argv[2:]
    if sys.argv[1] == "export":
        models = ["gate", "sasrec", "gru4rec", "din"]
        if "--models" in args:
            models = args[args.index("--models") + 1].split(",")
        export(Path(args[0]), models)
    else:
        runs = 3000
        if "--runs" in args:
            runs = int(args[args.index("--runs") + 1])
        dirs = dict(a.split("=", 1) for a in args if "=" in a)
        print(json.dumps(timing({k: Path(v) for k, v in dirs.items()}, runs), indent=1))


if __name__ == "__main__":
    main()
