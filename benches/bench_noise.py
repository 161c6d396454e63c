"""Does the bench agree with itself? (issue 25, deliverable 3) -> benches/baselines/bench_noise.json

Runs, one after another, each a separate `toolkit` process (run from the repository root, PYTHONPATH=.):
  W:    (with --warm) the same command once first, so A starts from a filled export cache and a settled machine;
  A, B: `toolkit bench --models scn,sasrec --seq-len 25,50,100 --runtimes executorch,onnxruntime` twice in a row;
  C:    the same with one extra process spinning on one core throughout (`python -c 'while True: pass'`, stopped by
        its pid afterwards);
  then B --compare A (the regression check on an unchanged tree), and optionally (--wall TREE) the default suite's
  wall time from a cold export cache with TREE's code (before) and this tree's (after).
Prints and writes one JSON object: per row the p50s, their ratio B/A, SCN/SASRec per runtime and L in A, B, C,
whether the issue's targets hold (every p50 within 5% of the other run's, SCN/SASRec within 5%, and within 10%
with the spinner), the load average before/after each run and what the bench itself recorded about the machine.
A measurement, not a test: nothing fails on a number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CMD = ["bench", "--models", "scn,sasrec", "--seq-len", "25,50,100", "--runtimes", "executorch,onnxruntime"]


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def toolkit(args: list[str], pythonpath: str, out: Path | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    before, t0 = load(), time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "toolkit", *args], env=env, capture_output=True, text=True)
    rec = {"command": "toolkit " + " ".join(args), "rc": proc.returncode, "wall_s": round(time.monotonic() - t0, 1),
           "load_average_before": before, "load_average_after": load(),
           "tail": [ln for ln in proc.stdout.splitlines() if ln.strip()][-4:] + proc.stderr.splitlines()[-2:]}
    if out is not None and out.is_file():
        res = json.loads(out.read_text())
        rec["rows"] = {key(r): {"p50": (r.get("latency_ms") or {}).get("p50"),
                                "ci95": (r.get("noise") or {}).get("p50_ci95"),
                                "ci_halfwidth_pct": (r.get("noise") or {}).get("ci_halfwidth_pct"),
                                "rounds": (r.get("noise") or {}).get("rounds"),
                                "stopped": (r.get("noise") or {}).get("stopped"),
                                "round_spread_pct": (r.get("noise") or {}).get("round_spread_pct"),
                                "compare": (r.get("compare") or {}).get("verdict"),
                                "ratio_to_baseline": (r.get("compare") or {}).get("ratio")}
                       for r in res["rows"]}
        rec["machine_load"] = res["environment"].get("machine_load")
        rec["rounds"] = {k: v for k, v in (res["environment"].get("rounds") or {}).items() if k != "how"}
        rec["warnings"] = res["environment"].get("warnings")
        floor = res["environment"].get("floor") or {}  # the run's own machine-speed probe, before its rounds
        rec["floor"] = {"matmul_gflops": floor.get("gflops_used"), "empty_call_ms": floor.get("empty_call_ms")}
        rec["compare"] = res.get("compare")
    return rec


def key(r: dict) -> str:
    where = f"h={r['history']}" if r.get("history") is not None else f"L={r['seq_len']}"
    return f"{r['model']} {r['entry']} {r['runtime']} {where}"


def scn_over_sasrec(rows: dict) -> dict:
    out = {}
    for k, v in rows.items():
        if k.startswith("scn window "):
            other = rows.get(k.replace("scn window ", "sasrec window ", 1))
            if other and v["p50"] and other["p50"]:
                out[k.replace("scn window ", "")] = round(v["p50"] / other["p50"], 4)
    return out


def vs_shift(ratios: dict) -> float | None:
    """Largest |ratio / median ratio - 1| in %: how far rows moved apart, the shift they share taken out."""
    from toolkit.bench.compare import shift_of  # run from the repository root, PYTHONPATH=.

    shift = shift_of(list(ratios.values()))
    return None if shift is None else round(100 * shift[1], 2)


def main() -> int:
    tree = str(Path(__file__).resolve().parents[1])
    wall_tree = sys.argv[sys.argv.index("--wall") + 1] if "--wall" in sys.argv else None
    warm = "--warm" in sys.argv
    record: dict = {"what": __doc__.strip().splitlines()[0], "machine": {"cpus": os.cpu_count(),
                    "cpu_model": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                                       if ln.startswith("model name")), "?"),
                    "nice": os.nice(0)}, "load_average_start": load(), "runs": {}}
    with tempfile.TemporaryDirectory(prefix="bench-noise-") as d:
        d = Path(d)
        for name in ("W", "A", "B") if warm else ("A", "B"):
            record["runs"][name] = toolkit([*CMD, "--json", str(d / f"{name}.json")], tree, d / f"{name}.json")
        spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            record["runs"]["C_spinner"] = toolkit([*CMD, "--json", str(d / "C.json")], tree, d / "C.json")
        finally:
            spin.kill()  # our own spinner, by its handle
            spin.wait()
        record["runs"]["B_compare_A"] = toolkit([*CMD, "--json", str(d / "D.json"), "--compare", str(d / "A.json")],
                                                tree, d / "D.json")
        if wall_tree:
            for name, path in (("default_suite_before", wall_tree), ("default_suite_after", tree)):
                record["runs"][name] = toolkit(["bench", "--json", str(d / f"{name}.json"), "--cache",
                                                str(d / f"cache-{name}")], path)
    runs = record["runs"]
    a, b, c = (runs[n].get("rows") or {} for n in ("A", "B", "C_spinner"))
    p50_ratio = {k: round(b[k]["p50"] / a[k]["p50"], 4) for k in a if k in b and a[k]["p50"] and b[k]["p50"]}
    ra, rb, rc = scn_over_sasrec(a), scn_over_sasrec(b), scn_over_sasrec(c)
    record["p50_B_over_A"] = p50_ratio
    record["floor_gflops"] = {n: (r.get("floor") or {}).get("matmul_gflops") for n, r in runs.items()}
    if warm:
        w = runs["W"].get("rows") or {}
        record["p50_A_over_W"] = {k: round(a[k]["p50"] / w[k]["p50"], 4) for k in w
                                  if k in a and a[k]["p50"] and w[k]["p50"]}
    record["scn_over_sasrec"] = {"A": ra, "B": rb, "C_spinner": rc}
    idle = {n: runs[n].get("rows") or {} for n in ("W", "A", "B", "B_compare_A") if n in runs}
    record["pairwise_worst_p50_change_pct"] = {  # every idle run against every other: is one run the outlier?
        f"{x}~{y}": round(100 * max(abs(idle[y][k]["p50"] / idle[x][k]["p50"] - 1) for k in idle[x] if k in idle[y]), 2)
        for i, x in enumerate(idle) for y in list(idle)[i + 1:] if idle[x] and idle[y]}
    record["targets"] = {
        "every_p50_within_5pct": all(abs(v - 1) <= 0.05 for v in p50_ratio.values()) if p50_ratio else None,
        "worst_p50_change_pct": round(100 * max(abs(v - 1) for v in p50_ratio.values()), 2) if p50_ratio else None,
        # the same against the rows' common shift (the median ratio; toolkit.bench.compare.common_shift)
        "worst_p50_change_vs_common_shift_pct": vs_shift(p50_ratio),
        "scn_over_sasrec_within_5pct": all(abs(rb[k] / ra[k] - 1) <= 0.05 for k in ra if k in rb),
        "worst_ratio_change_pct": round(100 * max((abs(rb[k] / ra[k] - 1) for k in ra if k in rb), default=0), 2),
        "spinner_ratio_within_10pct": all(abs(rc[k] / ra[k] - 1) <= 0.10 for k in ra if k in rc),
        "worst_spinner_ratio_change_pct": round(100 * max((abs(rc[k] / ra[k] - 1) for k in ra if k in rc),
                                                          default=0), 2),
    }
    if wall_tree:
        before, after = runs["default_suite_before"]["wall_s"], runs["default_suite_after"]["wall_s"]
        record["targets"]["default_suite_wall_after_over_before"] = round(after / before, 3)
    record["load_average_end"] = load()
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
