"""Stand-alone ONNX Runtime (and, opted in, ExecuTorch) runner executed by the *target* Python (ARM64 under qemu, or any aarch64 Linux).

Why stand-alone: it runs inside the emulated sysroot, where only numpy and onnxruntime exist (no toolkit, no
torch). It is copied next to a plan and run as `python3 ort_runner.py plan.json`; everything it reads and
writes is relative to the plan's folder (paths seen by the guest stay identical between runs, which keeps the
instruction counts repeatable).

What it does per case (see android_harness/FORMATS.md, "toolkit runner"):
  1. parity trajectory: `parity_steps` chained calls from the given inputs (state_out.* fed back into
     state_in.*), every output saved as .npy for the host to compare with its reference;
  2. `warmup` calls, then `runs` measured calls on the step-0 inputs, each wrapped in region markers:
     getpid() with magic arguments, which the qemu instruction-count plugin turns into per-region counts
     (and which a real kernel ignores). Wall time per call is recorded too (meaningless under emulation).
Results: `results.json` in the plan folder, plus one `toolkit-run {...}` JSON line per event on stdout.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import sys
import time

import numpy as np
import onnxruntime as ort

MAGIC = 0x746F6F6C6B6974  # "toolkit"; must match qemu_icount.c
SYS_GETPID = {"aarch64": 172, "arm64": 172, "x86_64": 39}.get(platform.machine(), -1)
OP_BEGIN, OP_END, OP_RANGE = 1, 2, 3
OVERHEAD_REGION = 999_999_999  # an empty region: the cost of the markers themselves

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long, ctypes.c_ulong, ctypes.c_long, ctypes.c_long, ctypes.c_ulong, ctypes.c_ulong]

# Code counted apart (marking thread only): the inference library itself, then the C/C++ runtime it calls.
RANGE_LIBS = {"onnxruntime_pybind11_state": "onnxruntime", "libonnxruntime.so": "libonnxruntime.so",
              "libc.so": "libc", "libm.so": "libm", "libstdc++.so": "libstdc++"}


def mark(op: int, region: int, lo: int = 0, hi: int = 0) -> None:
    if SYS_GETPID >= 0:
        _syscall(SYS_GETPID, MAGIC, op, region, lo, hi)


def register_ranges() -> list:
    """Tell the plugin where each library's executable code is mapped (from /proc/self/maps)."""
    found = {}
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 6 or "x" not in parts[1]:
                    continue
                name = os.path.basename(parts[5])
                for lib in RANGE_LIBS:
                    if name.startswith(lib) and lib not in found:
                        lo, hi = (int(x, 16) for x in parts[0].split("-"))
                        found[lib] = (lo, hi, RANGE_LIBS[lib])
    except OSError:
        return []
    names = []
    for lib in RANGE_LIBS:
        if lib in found:
            lo, hi, name = found[lib]
            mark(OP_RANGE, len(names), lo, hi)
            names.append(name)
    return names


def emit(event: dict) -> None:
    sys.stdout.write("toolkit-run " + json.dumps(event, sort_keys=True) + "\n")
    sys.stdout.flush()


def session(model: str, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


class ExecuTorchProgram:
    """The same calls through ExecuTorch's Python runtime (opt-in lane: needs torch in the guest)."""

    def __init__(self, path: str, method: str, names: list, threads: int):
        import torch  # noqa: F401 - executorch's pybindings need it loaded

        # the bindings themselves: `executorch.runtime` would import the whole export stack (executorch.exir)
        from executorch.extension.pybindings import _portable_lib

        try:
            _portable_lib._unsafe_reset_threadpool(threads)
        except Exception:
            pass
        self.program = _portable_lib._load_program(path, enable_etdump=False, debug_buffer_size=0,
                                                   program_verification=_portable_lib.Verification.InternalConsistency)
        self.method = self.program.load_method(method)
        self.names = names

    def run(self, names, feeds):
        import torch

        outs = self.method([torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()])
        return [np.asarray(o.detach().numpy() if hasattr(o, "detach") else o) for o in outs]


def run_case(case: dict, threads: int) -> dict:
    cid = int(case["id"])
    out_dir = case["outputs_dir"]
    os.makedirs(out_dir, exist_ok=True)
    feeds0 = {name: np.load(path) for name, path in case["feeds"].items()}
    steps = [{name: np.load(path) for name, path in step.items()} for step in case.get("steps", [])]
    state_map = case.get("state_map", {})  # state_out.X -> state_in.X
    if case.get("runtime", "onnxruntime") == "executorch":
        return run_executorch_case(case, cid, out_dir, feeds0, steps, threads)
    sess = session(case["model"], threads)
    names = [o.name for o in sess.get_outputs()]

    # 1. parity trajectory: step k uses its own inputs when the plan has them, and the state carried so far
    saved = []
    carried = {}
    for step in range(int(case.get("parity_steps", 1))):
        feeds = dict(feeds0)
        feeds.update(steps[step] if step < len(steps) else {})
        feeds.update(carried)
        outs = sess.run(names, feeds)
        files = {}
        for name, value in zip(names, outs):
            path = f"{out_dir}/step{step}_{len(files)}.npy"
            np.save(path, value)
            files[name] = path
        saved.append(files)
        carried = {in_name: outs[names.index(out_name)] for out_name, in_name in state_map.items()}

    # 2. warm-up, then measured calls on step-0 inputs (bound once, so the region holds only the call)
    binding = sess.io_binding()
    for name, value in feeds0.items():
        binding.bind_cpu_input(name, value)
    for name in names:
        binding.bind_output(name)
    for _ in range(int(case.get("warmup", 1))):
        sess.run_with_iobinding(binding)
    regions, wall_ns = [], []
    gc.disable()
    try:
        for k in range(int(case["runs"])):
            region = cid * 100_000 + k
            t0 = time.perf_counter_ns()
            mark(OP_BEGIN, region)
            sess.run_with_iobinding(binding)
            mark(OP_END, region)
            wall_ns.append(time.perf_counter_ns() - t0)
            regions.append(region)
    finally:
        gc.enable()
    return {"id": cid, "regions": regions, "wall_ms": [t / 1e6 for t in wall_ns], "outputs": saved, "error": None}


def run_executorch_case(case, cid, out_dir, feeds0, steps, threads) -> dict:
    prog = ExecuTorchProgram(case["model"], case.get("method", "forward"), case["output_names"], threads)
    names = case["output_names"]
    saved = []
    for step in range(int(case.get("parity_steps", 1))):  # state lives in the program's buffers
        feeds = dict(feeds0)
        feeds.update(steps[step] if step < len(steps) else {})
        outs = prog.run(names, feeds)
        files = {}
        for name, value in zip(names, outs):
            path = f"{out_dir}/step{step}_{len(files)}.npy"
            np.save(path, value)
            files[name] = path
        saved.append(files)
    for _ in range(int(case.get("warmup", 1))):
        prog.run(names, feeds0)
    regions, wall_ns = [], []
    gc.disable()
    try:
        for k in range(int(case["runs"])):
            region = cid * 100_000 + k
            t0 = time.perf_counter_ns()
            mark(OP_BEGIN, region)
            prog.run(names, feeds0)
            mark(OP_END, region)
            wall_ns.append(time.perf_counter_ns() - t0)
            regions.append(region)
    finally:
        gc.enable()
    return {"id": cid, "regions": regions, "wall_ms": [t / 1e6 for t in wall_ns], "outputs": saved, "error": None}


def main(plan_path: str) -> int:
    with open(plan_path) as f:
        plan = json.load(f)
    threads = int(plan.get("threads", 1))
    if any(c.get("runtime") == "executorch" for c in plan["cases"]):
        import executorch.runtime  # noqa: F401
        import torch  # noqa: F401 - load the ExecuTorch stack before mapping code ranges
    ranges = register_ranges()
    # The markers' own cost, measured the same way as a call (ends up subtracted on the host).
    gc.disable()
    for _ in range(3):
        mark(OP_BEGIN, OVERHEAD_REGION)
        mark(OP_END, OVERHEAD_REGION)
    gc.enable()
    results = {
        "format": "toolkit-runner-results/1",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "threads": threads,
        "overhead_region": OVERHEAD_REGION,
        "ranges": ranges,
        "cases": [],
    }
    for case in plan["cases"]:
        try:
            res = run_case(case, threads)
        except Exception as e:  # one bad artifact must not hide the others' numbers
            res = {"id": case["id"], "regions": [], "wall_ms": [], "outputs": [], "error": f"{type(e).__name__}: {e}"}
        results["cases"].append(res)
        emit({"case": res["id"], "runs": len(res["regions"]), "error": res["error"]})
    tmp = plan.get("results", "results.json") + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, plan.get("results", "results.json"))
    emit({"done": True, "cases": len(results["cases"])})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "plan.json"))
