"""Size/latency trade-off of the precomputed candidate tower (`toolkit export --tower precomputed`, the contract's
tower_table=True) on ExecuTorch + XNNPACK and ONNX Runtime, window at L = 25 with 100 candidates, fresh model with
the Beauty vocabulary (12,101 items).

Usage (repository root): PYTHONPATH=. OMP_NUM_THREADS=1 python benches/tower_table.py [--seq-len 25] [--runs 2000]
Both variants are exported, then timed in one process (1 thread, after warm-up): all four artifacts interleaved, then
each runtime's two variants interleaved; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq-len", type=int, default=25)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--n-items", type=int, default=12101)
    ap.add_argument("--runs", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from toolkit.exporters import export_artifacts, open_runner
    from toolkit.exporters.sources import entries_for, fresh, tower_record

    model, name, info = fresh("scn", args.n_items)
    out = Path(tempfile.mkdtemp())
    runners, sizes, towers = {}, {}, {}
    for variant, table in (("tower", False), ("table", True)):  # as `toolkit export --tower graph|precomputed`
        entries, kw = entries_for(model, args.seq_len, args.candidates, tower_table=table)
        towers[variant] = tower_record(model, entries, kw, 3, 1e-4, 1e-4)
        entries = [e for e in entries if e.name == "window"]
        d = out / variant
        man = export_artifacts(entries, name, ["executorch", "onnx"], d, parity_steps=3, model_info=info)
        for rec in man["artifacts"]:
            key = f"{variant}/{rec['runtime']}"
            runners[key] = open_runner(d, rec, threads=1)
            deleg = rec.get("delegation") or {}
            sizes[key] = {"artifact_bytes": (d / rec["file"]).stat().st_size,
                          "parity_pass": bool(rec["parity"]["pass"]),
                          "parity_max_abs_error": rec["parity"].get("max_abs_error"),
                          "flops": rec.get("flops"),
                          **({"partitions": deleg.get("partitions"),
                              "non_delegated_nodes": deleg.get("non_delegated_nodes"),
                              "fallback_ops": deleg.get("fallback_ops")} if deleg else {})}
    g = np.random.default_rng(0)
    items = g.integers(1, args.n_items + 1, (1, args.seq_len)).astype(np.int64)
    cands = g.integers(1, args.n_items + 1, (1, args.candidates)).astype(np.int64)
    ref = {k: r(items, cands)[0] for k, r in runners.items()}
    diff = float(np.abs(ref["table/executorch"] - ref["tower/executorch"]).max())
    for r in runners.values():
        for _ in range(200):
            r(items, cands)

    def interleaved(keys):
        samples = {k: [] for k in keys}
        for _ in range(args.runs):
            for k in keys:
                t = time.perf_counter()
                runners[k](items, cands)
                samples[k].append(time.perf_counter() - t)
        return {k: round(float(np.median(v)) * 1e3, 4) for k, v in samples.items()}

    uptime0 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    load0 = os.getloadavg()
    # (a) all four artifacts interleaved: each call finds the caches holding another model's tables (cold-ish, as
    #     a recommender called between other app work would); (b) the two variants of one runtime interleaved
    p50 = interleaved(list(runners))
    pairs = {}
    for rt in ("executorch", "onnxruntime"):
        pairs.update(interleaved([f"tower/{rt}", f"table/{rt}"]))
    load1 = os.getloadavg()
    uptime1 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(json.dumps({
        "what": f"SCN window L={args.seq_len}, {args.candidates} candidates: candidate tower in the graph vs a "
                "precomputed tower table gathered by id; p50 ms per call through toolkit's runners (includes the "
                "Python call), 1 thread, interleaved",
        "command": "PYTHONPATH=. OMP_NUM_THREADS=1 python " + " ".join(sys.argv),
        "p50_ms_all_four_interleaved": p50,
        "speedup_table_over_tower_all_four_interleaved": {rt: round(p50[f"tower/{rt}"] / p50[f"table/{rt}"], 2)
                                                          for rt in ("executorch", "onnxruntime")},
        "p50_ms_pairs_per_runtime": pairs,
        "speedup_table_over_tower_pairs_per_runtime": {rt: round(pairs[f"tower/{rt}"] / pairs[f"table/{rt}"], 2)
                                                       for rt in ("executorch", "onnxruntime")},
        "sizes": sizes,
        "table_bytes": (args.n_items + 1) * model.cfg.dim * 4,
        "table_vs_tower_eager": {k: v for k, v in towers["table"].items() if k != "kind"},
        "max_abs_score_diff_table_vs_tower_executorch": diff,
        "load_average_1_5_15": {"start": [round(x, 2) for x in load0], "end": [round(x, 2) for x in load1]},
        "uptime": {"start": uptime0, "end": uptime1},
        "machine": {"cores": os.cpu_count(), "note": "shared 2-core VM, other jobs running; compare ratios"},
    }, indent=1))


if __name__ == "__main__":
    main()
