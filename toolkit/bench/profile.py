"""Where the time goes: a per-op profile of one bench cell, and the compute floor every bench row is compared to.

Runs inside the measuring worker (toolkit.bench.worker), after the cell's timing, never during it:

- ONNX Runtime: the runtime's own profiler (`SessionOptions.enable_profiling`) in a SEPARATE session over the same
  file and options, so profiling never slows the timed session (docs/export.md §7: profile and time apart). Node
  events of the measured runs (warm-up runs dropped) are summed per op type and per node, per run. The profiler
  costs several µs per node, so a profiled run is many times the timed p50 for graphs of ~300 small nodes: the
  row records that ratio (`profiled_run_over_timed_p50`); read shares and node counts, not absolute µs.
- ExecuTorch: per-op / per-partition time needs ETDump, which the executorch pip wheel is built without
  (EXECUTORCH_ENABLE_EVENT_TRACER); checked at run time, and said plainly in `missing`. What the .pte itself
  says is listed instead: its delegate calls (partitions, per backend) and every non-delegated kernel call.
- eager torch: the torch profiler (CPU), self time per aten op per run.

The floor (`floor_probe`): fp32 matmul throughput on one pinned thread (64x64 and 256x256 `torch.mm` loops; the
best is used) and each runtime's empty-call time (a trivial program in that runtime). A row's floor is
FLOPs / throughput + empty call; `x_of_floor` = p50 / floor.
"""

from __future__ import annotations

import collections
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

MATMUL_SIZES = (64, 256)
ET_MISSING = ("per-op / per-partition time: ExecuTorch records it only in an ETDump, and the installed executorch "
              "wheel is built without the event tracer (needs a source build with EXECUTORCH_ENABLE_EVENT_TRACER); "
              "listed instead: partitions and non-delegated nodes read from the .pte")
PROFILE_TOOLS = {
    "onnxruntime": "onnxruntime SessionOptions.enable_profiling, separate session from the timed one",
    "executorch": "the .pte's execution plan (delegate calls and kernel calls); no per-op time",
    "torch": "torch.profiler (CPU activities), self time per aten op",
}


# ---------------------------------------------------------------- floor
def _best_time(fn: Callable[[], object], inner: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def matmul_gflops(sizes=MATMUL_SIZES, budget_s: float = 0.3) -> dict[str, float]:
    """fp32 `torch.mm` of n x n by n x n in this process's threads (the worker sets 1) -> GFLOP/s per size."""
    import torch

    out = {}
    for n in sizes:
        g = torch.Generator().manual_seed(n)
        a, b, c = (torch.randn(n, n, generator=g), torch.randn(n, n, generator=g), torch.empty(n, n))
        flops = 2.0 * n ** 3
        repeats = 30  # many short chunks: on a shared core, the best chunk is the one nobody preempted
        inner = max(1, int(budget_s / repeats / max(flops / 50e9, 1e-7)))
        torch.mm(a, b, out=c)
        out[str(n)] = flops / _best_time(lambda: torch.mm(a, b, out=c), inner, repeats) / 1e9  # noqa: B023
    return out


def _median_call_ms(fn: Callable[[], object], calls: int = 2000) -> float:
    for _ in range(50):
        fn()
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return float(np.median(samples) * 1e3)


def _trivial_onnx(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "empty",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def empty_call_ms(runtime: str, threads: int = 1) -> tuple[float, str]:
    """Median wall time of the runtime's minimal call -> (ms, what was called)."""
    import torch

    x = np.zeros(1, np.float32)
    if runtime in ("onnxruntime", "onnxruntime-ort"):  # the same runtime either way (.onnx or .ort file)
        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "empty.onnx"
            _trivial_onnx(p)
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            sess = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
            return _median_call_ms(lambda: sess.run(None, {"x": x})), "InferenceSession.run of a 1-float Identity graph"
    if runtime == "executorch":
        from executorch.exir import to_edge
        from executorch.extension.pybindings._portable_lib import _load_for_executorch_from_buffer

        class AddOne(torch.nn.Module):
            def forward(self, t):
                return t + 1.0

        t = torch.zeros(1)
        prog = to_edge(torch.export.export(AddOne(), (t,))).to_executorch()
        mod = _load_for_executorch_from_buffer(prog.buffer)
        return _median_call_ms(lambda: mod.forward((t,))), "Module.forward of a 1-float add program (portable kernel)"
    if runtime == "torch":
        m = torch.nn.Identity()

        def call():
            with torch.inference_mode():
                return m(torch.from_numpy(x))

        return _median_call_ms(call), "nn.Identity call under inference_mode"
    raise ValueError(f"no empty call for runtime '{runtime}'")


def floor_probe(runtimes: list[str], threads: int = 1) -> dict:
    """Once per bench run, in its own pinned worker: matmul throughput and each runtime's empty-call time."""
    import torch

    torch.set_num_threads(threads)
    out = {"matmul_gflops": matmul_gflops(), "empty_call_ms": {}, "empty_call": {}, "errors": {}}
    out["gflops_used"] = max(out["matmul_gflops"].values())
    for rt in runtimes:
        try:
            ms, what = empty_call_ms(rt, threads)
            out["empty_call_ms"][rt], out["empty_call"][rt] = ms, what
        except Exception as e:  # the floor is informative: a runtime without an empty call gets none
            out["errors"][rt] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    out["method"] = (f"best of fp32 torch.mm {'/'.join(f'{n}x{n}' for n in MATMUL_SIZES)} loops on {threads} "
                     "pinned thread(s); empty call = median of 2000 minimal calls")
    return out


def floor_fields(row: dict, probe: dict | None) -> dict:
    """{"floor": {...}, "x_of_floor": p50 / floor ms} for one row (None where FLOPs, time or the probe are missing)."""
    if not probe or not probe.get("gflops_used"):
        return {"floor": None, "x_of_floor": None}
    flops = row.get("flops") if row.get("flops") is not None else row.get("flops_analytic")
    empty = (probe.get("empty_call_ms") or {}).get(row.get("runtime"))
    if flops is None or empty is None:
        return {"floor": None, "x_of_floor": None}
    compute_ms = float(flops) / (probe["gflops_used"] * 1e9) * 1e3
    floor = {"ms": compute_ms + empty, "compute_ms": compute_ms, "empty_call_ms": empty,
             "matmul_gflops": probe["gflops_used"], "flops": flops}
    p50 = (row.get("latency_ms") or {}).get("p50")
    return {"floor": floor, "x_of_floor": None if p50 is None else p50 / floor["ms"]}


# ---------------------------------------------------------------- per-op profiles
def _per_run(events_by_run: list[dict[str, list[float]]], top: int) -> dict:
    """Per measured run {op: [µs of each call]} -> ops by median µs per run (robust to a preempted run on a busy
    machine), with the mean beside it; shares are of the sum of the medians."""
    n = len(events_by_run)
    names = sorted({op for run in events_by_run for op in run})
    rows = []
    for op in names:
        per = [sum(run.get(op, [])) for run in events_by_run]
        calls = [len(run.get(op, [])) for run in events_by_run]
        rows.append({"op": op, "us_per_run": float(np.median(per)), "mean_us_per_run": float(np.mean(per)),
                     "calls_per_run": float(np.median(calls))})
    total = sum(r["us_per_run"] for r in rows)
    for r in rows:
        r["share"] = r["us_per_run"] / total if total else None
    rows.sort(key=lambda r: -r["us_per_run"])
    return {"runs": n, "kernel_us_per_run": total, "ops": rows[:top], "op_count": len(rows)}


def parse_ort_profile(trace: list[dict], warmup: int, top: int = 15) -> dict:
    """An onnxruntime profile trace -> per op type and per node µs per measured run (median over runs; the first
    `warmup` runs out). A node event belongs to the model_run whose time span holds it."""
    runs = sorted((e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    measured = runs[warmup:]
    if not measured:
        raise ValueError("the onnxruntime profile holds no measured model_run")
    starts = [float(e["ts"]) for e in measured]
    by_run: list[dict[str, list[float]]] = [collections.defaultdict(list) for _ in measured]
    node_run: list[dict[str, list[float]]] = [collections.defaultdict(list) for _ in measured]
    node_op: dict[str, str] = {}
    providers: collections.Counter = collections.Counter()
    for e in trace:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        i = int(np.searchsorted(starts, float(e["ts"]), side="right")) - 1
        if i < 0 or float(e["ts"]) > starts[i] + float(measured[i]["dur"]):
            continue  # a warm-up run's node
        args = e.get("args") or {}
        op, node = str(args.get("op_name", "?")), e["name"].removesuffix("_kernel_time")
        by_run[i][op].append(float(e["dur"]))
        node_run[i][node].append(float(e["dur"]))
        node_op[node] = op
        if i == 0:
            providers[str(args.get("provider", "?"))] += 1
    out = _per_run(by_run, top)
    nodes = _per_run(node_run, top)
    out["nodes"] = [{"node": r["op"], "op": node_op[r["op"]], "us_per_run": r["us_per_run"]} for r in nodes["ops"]]
    out["node_count"] = nodes["op_count"]
    out["run_us"] = float(np.median([float(e["dur"]) for e in measured]))
    out["providers"] = dict(providers)
    return out


def profile_onnxruntime(runner, sets: list[list[np.ndarray]], warmup: int, runs: int, top: int = 15) -> dict:
    """A new session with profiling on, same file and options as `runner` (an OnnxRuntimeRunner)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        so = runner.session_options
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(d) / "ort")
        runner.session = ort.InferenceSession(str(runner.path), so, providers=["CPUExecutionProvider"])
        if hasattr(runner, "reset"):
            runner.reset()
        for i in range(warmup + runs):
            runner(*sets[i % len(sets)])
        from toolkit.io import read_json

        trace = read_json(runner.session.end_profiling(), "onnxruntime profile", expect=None)
    out = parse_ort_profile(trace, warmup, top)
    out |= {"tool": PROFILE_TOOLS["onnxruntime"], "missing": None}
    return out


def pte_plan(path: Path) -> dict:
    """Delegate calls (partitions) and non-delegated kernel calls of every method in a .pte, read from the file."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    prog = deserialize_pte_binary(Path(path).read_bytes())
    prog = getattr(prog, "program", prog)
    methods = {}
    for plan in prog.execution_plan:
        ops = [o.name + (f".{o.overload}" if o.overload else "") for o in plan.operators]
        kernels: collections.Counter = collections.Counter()
        backends: collections.Counter = collections.Counter()
        other: collections.Counter = collections.Counter()
        for chain in plan.chains:
            for ins in chain.instructions:
                a = ins.instr_args
                kind = type(a).__name__
                if kind == "KernelCall":
                    kernels[ops[a.op_index]] += 1
                elif kind == "DelegateCall":
                    backends[plan.delegates[a.delegate_index].id] += 1
                else:
                    other[kind] += 1
        methods[plan.name] = {"partitions": sum(backends.values()), "partitions_by_backend": dict(backends),
                              "non_delegated_nodes": sum(kernels.values()),
                              "non_delegated": dict(kernels.most_common()), "other_instructions": dict(other)}
    return methods


def etdump_available(pte: Path) -> bool:
    """Whether this executorch build writes an ETDump (the pip wheel answers no: it has no event tracer)."""
    import contextlib
    import os

    from executorch.extension.pybindings import _portable_lib as portable_lib  # the wrapper imports all of exir

    from toolkit.errors import ToolkitError
    from toolkit.exporters.common import quiet_native_stderr
    from toolkit.exporters.runners import check_program_file, probe_load

    try:
        check_program_file(pte)
        probe_load(lambda: portable_lib._load_for_executorch(str(pte), enable_etdump=True), f"ExecuTorch program {pte}")
    except ToolkitError:
        return False
    with tempfile.TemporaryDirectory() as d, quiet_native_stderr(), contextlib.redirect_stderr(open(os.devnull, "w")):
        try:
            m = portable_lib._load_for_executorch(str(pte), enable_etdump=True)
            if not m.has_etdump():
                return False
            out = Path(d) / "x.etdp"
            m.write_etdump_result_to_file(str(out), None)  # nothing ran: a tracer build still writes a header
            return out.is_file() and out.stat().st_size > 0
        except Exception:
            return False


def profile_executorch(pte: Path, method: str = "forward", manifest_delegation: dict | None = None) -> dict:
    plan = pte_plan(pte)
    m = plan.get(method) or next(iter(plan.values()))
    out = {"tool": PROFILE_TOOLS["executorch"], "ops": None, "nodes": None, **m,
           "missing": None if etdump_available(pte) else ET_MISSING}
    if out["missing"] is None:
        out["missing"] = ("this executorch build writes an ETDump, but toolkit does not parse it yet; listed: "
                          "partitions and non-delegated nodes read from the .pte")
    if manifest_delegation:
        out["exporter_delegation"] = {k: manifest_delegation.get(k) for k in
                                      ("partitions", "delegated_nodes", "non_delegated_nodes", "fallback_ops")}
    return out


def profile_torch(runner, sets: list[list[np.ndarray]], warmup: int, runs: int, top: int = 15) -> dict:
    """torch.profiler around `runs` eager calls (after `warmup`), each in its own record_function span: self CPU
    time per aten op, median over runs."""
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    runner.reset()
    for i in range(warmup):
        runner(*sets[i % len(sets)])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(runs):
            with record_function(f"toolkit_run_{i}"):
                runner(*sets[i % len(sets)])
    events = list(prof.events())
    spans = sorted((ev.time_range.start, ev.time_range.end) for ev in events if ev.name.startswith("toolkit_run_"))
    starts = [a for a, _ in spans]
    by_run: list[dict[str, list[float]]] = [collections.defaultdict(list) for _ in spans]
    for ev in events:
        if not (ev.name.startswith("aten::") or ev.name.startswith("prim::")):
            continue
        i = int(np.searchsorted(starts, ev.time_range.start, side="right")) - 1
        if 0 <= i and ev.time_range.start <= spans[i][1]:
            by_run[i][ev.name].append(float(ev.self_cpu_time_total))
    out = _per_run(by_run, top)
    out["run_us"] = float(np.median([b - a for a, b in spans]))
    return out | {"tool": PROFILE_TOOLS["torch"], "nodes": None, "missing": None}


def profile_cell(spec: dict, runner, sets: list[list[np.ndarray]]) -> dict:
    """The worker's profile of its cell (after timing). Runs: the spec's own, at most 200."""
    runtime = spec["runtime"]
    runs, warmup = min(int(spec["runs"]), 200), min(int(spec["warmup"]), 10)
    if runtime in ("onnxruntime", "onnxruntime-ort"):
        from toolkit.exporters import open_runner

        fresh = open_runner(spec["artifact_dir"], spec["record"], threads=spec["threads"])
        return profile_onnxruntime(fresh, sets, warmup, runs)
    if runtime == "executorch":
        from toolkit.exporters.manifest import member

        rec = spec["record"]
        return profile_executorch(member(Path(spec["artifact_dir"]), rec["file"]), rec.get("method", "forward"),
                                  rec.get("delegation"))
    if runtime == "torch":
        return profile_torch(runner, sets, warmup, runs)
    raise ValueError(f"runtime '{runtime}' has no profiler in toolkit")
