"""The fresh measuring process: one artifact (or eager module), pinned, timed, with its peak RSS delta.

Run as `python -m toolkit.bench.worker SPEC.json OUT.json`. Each job gets a new process so the RSS delta is not
polluted by earlier cells and a runtime that crashes takes down only its own cell. Imports happen before the RSS
mark is reset, so the delta is what loading and running the artifact costs, not what importing the runtime costs.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np


def _load_inputs(spec: dict) -> list[list[np.ndarray]]:
    data = np.load(spec["inputs_npz"])
    names, n_sets = spec["input_names"], spec["n_sets"]
    return [[data[f"set{i}.{n}"] for n in names] for i in range(n_sets)]


class _TorchRunner:
    """Eager PyTorch with the same calling convention as exporters' runners: carries state, `reset()`."""

    def __init__(self, entry):
        import torch

        self.torch, self.entry = torch, entry
        self.reset()

    def reset(self) -> None:
        self.states = list(self.entry.initial_states())

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            outs = self.entry.module(*(torch.from_numpy(x) for x in inputs), *self.states)
        outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
        n = len(self.states)
        if n:
            self.states, outs = outs[-n:], outs[:-n]
        return [o.numpy() for o in outs]


def _timed_call(runner, sets: list[list[np.ndarray]]):
    """call(i) -> outputs for input set i, with the runner's input validation done once up front, not timed.

    The exporters' runners check shapes, dtypes and id ranges on every call (100+ us of Python, more than the
    runtime itself for these small models); a bench times the runtime, so validated arrays go straight to the
    runtime call, and state is carried exactly as RuntimeSession.__call__ carries it.
    """
    if hasattr(runner, "run_validated") and hasattr(runner, "check_inputs"):
        ready = [runner.check_inputs(s) for s in sets]
        return (lambda i: runner.run_validated(ready[i % len(ready)])), "runner.run_validated (inputs checked once)"
    return (lambda i: runner(*sets[i % len(sets)])), "runner.__call__"


def _preload(runtime: str) -> None:
    """Import the runtime's libraries before the RSS mark (their import is not the artifact's cost)."""
    if runtime == "torch":
        import torch  # noqa: F401

        from toolkit.exporters import sources  # noqa: F401
        return
    from toolkit.exporters import open_runner  # noqa: F401

    if runtime in ("onnxruntime", "onnxruntime-ort"):  # onnxruntime-ort: the .ort of the same export
        import onnxruntime  # noqa: F401
    elif runtime == "executorch":
        import torch  # noqa: F401 - the bindings need libtorch loaded

        try:  # what ExecuTorchRunner loads (not executorch.runtime, which drags in the exporter)
            from executorch.extension.pybindings import _portable_lib  # noqa: F401
        except ImportError:
            pass


def _make_runner(spec: dict):
    runtime, threads = spec["runtime"], spec["threads"]
    if runtime == "torch":
        import torch

        from toolkit.exporters.sources import ModelSource, build

        torch.set_num_threads(threads)
        model = build(ModelSource.from_dict(spec["source"]))
        entries = model.contract(**spec["contract_args"])
        entry = next(e for e in entries if e.name == spec["entry"])
        return _TorchRunner(entry)
    from toolkit.exporters import open_runner

    return open_runner(spec["artifact_dir"], spec["record"], threads=threads)


def measure(spec: dict) -> dict:
    from toolkit.bench import latency, memory

    cpus = latency.pin(spec.get("cpus"))
    runtime = spec["runtime"]
    if runtime == "torch":
        import torch

        torch.set_num_threads(spec["threads"])
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
    _preload(runtime)
    sets = _load_inputs(spec)
    base, rss_method = memory.reset_peak_rss()

    # Cold start, in this process, after the runtime's imports: `load` = opening the artifact (ORT session creation,
    # ExecuTorch load_program + load_method, eager: building the module from its source) until it can be called;
    # `first_inference` = the first call afterwards, through the same path the timed calls take.
    t0 = time.perf_counter()
    runner = _make_runner(spec)
    load_ms = (time.perf_counter() - t0) * 1e3
    call, timed = _timed_call(runner, sets)  # checks every input set up front: a wrong input fails loudly here
    t0 = time.perf_counter()
    first = call(0)
    first_ms = (time.perf_counter() - t0) * 1e3
    finite = all(np.isfinite(np.asarray(o, dtype=np.float64)).all() for o in first if np.asarray(o).dtype.kind == "f")
    points = []
    for p in spec["points"]:
        if p["steps_before"] is None:  # stateless entry: time the call itself
            lat = latency.time_window(call, spec["warmup"], spec["runs"])
        else:
            if not hasattr(runner, "reset"):
                raise RuntimeError("runner has no reset(): cannot time a step at a fixed history")
            lat = latency.time_step(runner.reset, call, p["steps_before"], min(spec["warmup"], 10), spec["runs"])
        points.append({"latency_ms": lat})
    peak = memory.peak_rss(rss_method)
    mem = {"rss_peak_delta_bytes": None if (peak is None or base is None) else max(0, peak - base),
           "rss_method": rss_method}
    if runtime == "onnxruntime" and spec.get("onnx_file"):
        try:  # informative only: a profiling problem must not throw away the timing just measured
            with tempfile.TemporaryDirectory() as d:
                feeds = _ort_feeds(spec["onnx_file"], spec["input_names"], sets[:3])
                mem |= memory.ort_allocator_peak(spec["onnx_file"], feeds, spec["threads"], d)
        except Exception as e:
            mem["arena_error"] = f"{type(e).__name__}: {e}"[:300]
    out = {"ok": True, "points": points, "memory": mem, "cpus": cpus, "outputs_finite": bool(finite),
           "timed_call": timed, "pid": os.getpid(),
           "cold_start_ms": {"load": load_ms, "first_inference": first_ms}}
    if spec.get("profile"):  # after the timing, in sessions of its own: profiling never slows the timed calls
        from toolkit.bench import profile

        try:
            out["profile"] = profile.profile_cell(spec, runner, sets)
        except Exception as e:
            out["profile"] = {"error": f"{type(e).__name__}: {e}".strip().splitlines()[0][:300]}
    return out


def floor(spec: dict) -> dict:
    """The bench run's floor probe (matmul throughput, empty calls) in this fresh pinned process."""
    from toolkit.bench import latency, profile

    cpus = latency.pin(spec.get("cpus"))
    return {"ok": True, "cpus": cpus, **profile.floor_probe(spec["runtimes"], spec["threads"])}


def _ort_feeds(onnx_file: str, names: list[str], sets: list[list[np.ndarray]]) -> list[dict]:
    """Feeds for the profiling session: our inputs by name, zeros for state inputs (values do not change sizes)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
             "tensor(float16)": np.float16, "tensor(bool)": np.bool_, "tensor(double)": np.float64}
    feeds_list = []
    for s in sets:
        by_name = dict(zip(names, s))
        feeds = {}
        for i, inp in enumerate(sess.get_inputs()):
            if inp.name in by_name:
                feeds[inp.name] = by_name[inp.name]
            elif i < len(s) and not inp.name.startswith("state"):
                feeds[inp.name] = s[i]
            else:
                shape = [d if isinstance(d, int) else 1 for d in inp.shape]
                feeds[inp.name] = np.zeros(shape, dtype=types.get(inp.type, np.float32))
        feeds_list.append(feeds)
    return feeds_list


def main(argv: list[str]) -> int:
    spec_path, out_path = argv[1], argv[2]
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = floor(spec) if spec.get("kind") == "floor" else measure(spec)
    except BaseException as e:  # the parent marks the cell failed with this text
        result = {"ok": False, "error": f"{type(e).__name__}: {e}".strip().splitlines()[0][:500],
                  "traceback": traceback.format_exc()[-4000:]}
    Path(out_path).write_text(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
