"""ExecuTorch on the emulated ARM64 target: instructions per inference of SCN, SASRec, GRU4Rec and the gate .pte at
L = 25, 50, 100, measured twice, into benches/baselines/arm64_executorch.json.

    python benches/arm64_executorch.py                      # runs the bench twice (needs the lane:
                                                            #   toolkit device setup arm64 --with-executorch)
    python benches/arm64_executorch.py --from A.json B.json # combine two runs of the same command made before

Each run is `toolkit bench --models scn,sasrec,gru4rec,gate --seq-len 25,50,100 --target arm64-a76
--runtimes executorch`: every .pte goes through toolkit's ExecuTorch C++ runner (et_runner) under qemu-aarch64
-cpu neoverse-n1 with the instruction-count plugin. The record keeps both runs' per-row counts, whether they are
identical, the first-call / steady ratio and SCN / SASRec per L.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS, SEQ_LENS = "scn,sasrec,gru4rec,gate", "25,50,100"
COMMAND = ["toolkit", "bench", "--models", MODELS, "--seq-len", SEQ_LENS, "--target", "arm64-a76",
           "--runtimes", "executorch"]
OUT = Path(__file__).resolve().parent / "baselines" / "arm64_executorch.json"


def key(r: dict) -> str:
    h = f" h={r['history']}" if r.get("history") is not None else ""
    return f"{r['model']}/{r['entry']}/L{r['seq_len']}{h}"


def run_once(path: Path) -> None:
    subprocess.run([sys.executable, "-m", "toolkit", *COMMAND[1:], "--json", str(path)], check=False)


def combine(a: dict, b: dict, loads: list) -> dict:
    rows_a, rows_b = {key(r): r for r in a["rows"]}, {key(r): r for r in b["rows"]}
    table, first = {}, {}
    same = True
    for k, r in rows_a.items():
        ra, rb = r.get("instructions_per_inference"), (rows_b.get(k) or {}).get("instructions_per_inference")
        runs_a = (r.get("instructions") or {}).get("runs")
        runs_b = ((rows_b.get(k) or {}).get("instructions") or {}).get("runs")
        table[k] = {"run1": ra, "run2": rb, "identical": ra is not None and ra == rb and runs_a == runs_b,
                    "status": r["status"], "error": r.get("error"),
                    "artifact_sha256": (r.get("artifact") or {}).get("sha256"),
                    "parity_max_abs_err": r.get("parity_max_abs_err")}
        same &= table[k]["identical"]
        ins = r.get("instructions") or {}
        if ins.get("first_call") is not None:
            first[k] = {"first_call": ins["first_call"], "steady": ins.get("per_inference"),
                        "ratio": ins.get("first_call_over_steady")}
    ratio = {}
    for L in (25, 50, 100):
        s, q = table.get(f"scn/window/L{L}", {}).get("run1"), table.get(f"sasrec/window/L{L}", {}).get("run1")
        if s and q:
            ratio[f"L{L}"] = round(s / q, 3)
    return {"what": "ExecuTorch .pte on the emulated ARM64 target (qemu-aarch64 -cpu neoverse-n1), guest instructions "
                    "per inference (median of the measured calls minus the marker cost), two runs of the same command",
            "command": " ".join(COMMAND), "runner": "toolkit et_runner (ExecuTorch C++ runtime from the executorch "
                                                    "1.4.1 aarch64 wheel), one thread",
            "machine": {"host": platform.node(), "cpus": os.cpu_count(), "host_cpu": platform.processor() or
                        platform.machine()},
            "load_average": loads, "environment_run1": a.get("environment", {}).get("load_average_start"),
            "identical_across_runs": same, "scn_over_sasrec_window": ratio, "rows": table, "first_call": first,
            "versions": a.get("environment", {}).get("versions")}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--from"]:
        a, b = (json.loads(Path(p).read_text()) for p in argv[1:3])
        loads = [x.get("environment", {}).get("load_average_start") for x in (a, b)]
    else:
        with tempfile.TemporaryDirectory() as d:
            loads = []
            for n in (1, 2):
                loads.append(os.getloadavg())
                run_once(Path(d) / f"run{n}.json")
            loads.append(os.getloadavg())
            a, b = (json.loads((Path(d) / f"run{n}.json").read_text()) for n in (1, 2))
    rec = combine(a, b, loads)
    rec["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    OUT.write_text(json.dumps(rec, indent=1) + "\n")
    print(f"wrote {OUT}: identical across runs: {rec['identical_across_runs']}, SCN/SASRec {rec['scn_over_sasrec_window']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
