"""Before/after of SCN's exported graph, side by side in one process: the window (L = 25) and step artifacts of a
code revision exported by that revision's own code, timed interleaved with this tree's, plus SASRec as a reference.

Usage (repository root):
  1. export with each revision's code (fresh models, same seed -> same weights):
     PYTHONPATH=<tree> python benches/scn_graph_ab.py export <tree> <out_dir>
  2. time all artifacts interleaved (1 thread):
     PYTHONPATH=. OMP_NUM_THREADS=1 python benches/scn_graph_ab.py time before=<dir> after=<dir> [--runs 3000]
Prints one JSON object (p50/p90 ms per call through toolkit's runners, which include the Python call).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

L, C, N_ITEMS = 25, 100, 12101


def export(out: Path) -> None:
    import torch

    torch.set_num_threads(1)
    from toolkit.exporters import export_artifacts
    from toolkit.exporters.sources import fresh

    for name in ("scn", "sasrec"):
        model, _, info = fresh(name, N_ITEMS)
        entries = model.contract(seq_len=L, candidates=C)
        export_artifacts(entries, name, ["executorch", "onnx"], out / name, parity_steps=3, model_info=info)


def timing(dirs: dict[str, Path], runs: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from toolkit.exporters import open_runner

    runners, deleg = {}, {}
    for tag, root in dirs.items():
        for name in ("scn", "sasrec"):
            man = json.loads((root / name / "manifest.json").read_text())
            for rec in man["artifacts"]:
                key = f"{tag}/{name}/{rec['entry']}/{rec['runtime']}"
                runners[key] = (open_runner(root / name, rec, threads=1), rec)
                if rec["runtime"] == "executorch":
                    d = rec["delegation"]
                    deleg[key] = {"partitions": d["partitions"], "non_delegated_nodes": d["non_delegated_nodes"]}
    g = np.random.default_rng(0)
    items = g.integers(1, N_ITEMS + 1, (1, L)).astype(np.int64)
    cands = g.integers(1, N_ITEMS + 1, (1, C)).astype(np.int64)
    step_items = items[:, :10]

    def call(key):
        r, rec = runners[key]
        return r(step_items, cands) if rec["entry"] == "step" else r(items, cands)

    for k in runners:  # first call of each outside the warm-up loop
        call(k)
    for k in runners:
        for _ in range(300):
            call(k)
    samples = {k: [] for k in runners}
    load0 = os.getloadavg()
    for _ in range(runs):
        for k in runners:
            t = time.perf_counter()
            call(k)
            samples[k].append(time.perf_counter() - t)
    load1 = os.getloadavg()
    p = lambda v, q: round(float(np.percentile(v, q)) * 1e3, 4)  # noqa: E731
    lat = {k: {"p50": p(v, 50), "p90": p(v, 90)} for k, v in samples.items()}
    ratios = {}
    for tag in dirs:
        s_et, s_ort = lat[f"{tag}/scn/window/executorch"]["p50"], lat[f"{tag}/scn/window/onnxruntime"]["p50"]
        ratios[tag] = {"scn_window_et_over_sasrec_et": round(s_et / lat[f"{tag}/sasrec/window/executorch"]["p50"], 2),
                       "scn_window_ort_over_et": round(s_ort / s_et, 2)}
    return {"what": f"p50/p90 ms per call, window L={L} / step (K=10 clicks, state carried), {C} candidates, "
                    "fresh models (Beauty vocabulary), 1 thread, all artifacts interleaved in one process",
            "command": "PYTHONPATH=. OMP_NUM_THREADS=1 python " + " ".join(sys.argv),
            "latency_ms": lat, "ratios": ratios, "delegation": deleg,
            "state_note": "step is timed as repeated calls from the carried state (no reset)",
            "load_average_1_5_15": {"start": [round(x, 2) for x in load0], "end": [round(x, 2) for x in load1]},
            "machine": {"cores": os.cpu_count(), "note": "shared 2-core VM with other agents' jobs; compare ratios"}}


def main() -> None:
    if sys.argv[1] == "export":
        sys.path.insert(0, sys.argv[2])
        export(Path(sys.argv[3]))
    else:
        runs = 3000
        args = sys.argv[2:]
        if "--runs" in args:
            runs = int(args[args.index("--runs") + 1])
        dirs = dict(a.split("=", 1) for a in args if "=" in a)
        print(json.dumps(timing({k: Path(v) for k, v in dirs.items()}, runs), indent=1))


if __name__ == "__main__":
    main()
