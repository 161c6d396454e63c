"""The fresh measuring process: one artifact (or eager module), pinned, timed, with its peak RSS delta.

Run as `python -m toolkit.bench.worker --serve SPEC.json` (the bench's interleaved rounds: the artifact stays
loaded and is timed slice by slice on command, see `serve`) or `python -m toolkit.bench.worker SPEC.json OUT.json`
(one shot: the floor probe, or every point timed in one go). Each job gets a new process so the RSS delta is not
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


class Session:
    """One artifact loaded in this process and kept loaded: set up once (pin, imports, RSS mark, load = cold start,
    first call, warm-up), then timed in slices (`time`) as often as the parent asks, then `finish` (peak RSS,
    arena profile, per-op profile). The interleaved rounds (toolkit.bench.rounds) drive one Session per artifact."""

    def __init__(self, spec: dict):
        from toolkit.bench import latency, memory

        self.spec, self.latency, self.memory = spec, latency, memory
        self.cpus = latency.pin(spec.get("cpus"))
        runtime = spec["runtime"]
        if runtime == "torch":
            import torch

            torch.set_num_threads(spec["threads"])
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:
                pass
        _preload(runtime)
        self.sets = _load_inputs(spec)
        self.base, self.rss_method = memory.reset_peak_rss()

        # Cold start, in this process, after the runtime's imports: `load` = opening the artifact (ORT session
        # creation, ExecuTorch load_program + load_method, eager: building the module from its source) until it can
        # be called; `first_inference` = the first call afterwards, through the same path the timed calls take.
        t0 = time.perf_counter()
        self.runner = _make_runner(spec)
        self.load_ms = (time.perf_counter() - t0) * 1e3
        self.call, self.timed = _timed_call(self.runner, self.sets)  # checks every input set: a wrong input fails here
        t0 = time.perf_counter()
        first = self.call(0)
        self.first_ms = (time.perf_counter() - t0) * 1e3
        self.finite = all(np.isfinite(np.asarray(o, dtype=np.float64)).all() for o in first
                          if np.asarray(o).dtype.kind == "f")
        self.points = spec["points"]
        self.next_input = [0] * len(self.points)
        for i, p in enumerate(self.points):  # warm-up per point, as the one-row-after-another bench did
            if p["steps_before"] is not None and not hasattr(self.runner, "reset"):
                raise RuntimeError("runner has no reset(): cannot time a step at a fixed history")
            self.samples(i, spec["warmup"] if p["steps_before"] is None else min(spec["warmup"], 10))

    def samples(self, point: int, n: int) -> list[float]:
        """Seconds per timed call of `n` calls at point `point` (a step point: n reset + replay + step samples)."""
        p = self.points[point]
        if n <= 0:
            return []
        if p["steps_before"] is None:
            start = self.next_input[point]
            self.next_input[point] += n
            return self.latency.window_samples(self.call, n, start)
        return self.latency.step_samples(self.runner.reset, self.call, p["steps_before"], n)

    def info(self) -> dict:
        return {"ok": True, "cpus": self.cpus, "outputs_finite": bool(self.finite), "timed_call": self.timed,
                "pid": os.getpid(), "cold_start_ms": {"load": self.load_ms, "first_inference": self.first_ms}}

    def finish(self) -> dict:
        """Peak RSS delta since the mark, then (informative, after all timing) the ORT arena and the profile."""
        spec, memory = self.spec, self.memory
        peak = memory.peak_rss(self.rss_method)
        mem = {"rss_peak_delta_bytes": None if (peak is None or self.base is None) else max(0, peak - self.base),
               "rss_method": self.rss_method}
        if spec["runtime"] == "onnxruntime" and spec.get("onnx_file"):
            try:  # informative only: a profiling problem must not throw away the timing just measured
                with tempfile.TemporaryDirectory() as d:
                    feeds = _ort_feeds(spec["onnx_file"], spec["input_names"], self.sets[:3])
                    mem |= memory.ort_allocator_peak(spec["onnx_file"], feeds, spec["threads"], d)
            except Exception as e:
                mem["arena_error"] = f"{type(e).__name__}: {e}"[:300]
        out = self.info() | {"memory": mem}
        if spec.get("profile"):  # after the timing, in sessions of its own: profiling never slows the timed calls
            from toolkit.bench import profile

            try:
                out["profile"] = profile.profile_cell(spec, self.runner, self.sets)
            except Exception as e:
                out["profile"] = {"error": f"{type(e).__name__}: {e}".strip().splitlines()[0][:300]}
        return out


def measure(spec: dict) -> dict:
    """One-shot: set up, time `runs` calls per point one point after another, finish (no interleaving)."""
    from toolkit.bench import latency

    sess = Session(spec)
    points = [{"latency_ms": latency.summarize(sess.samples(i, spec["runs"]))} for i in range(len(sess.points))]
    return sess.finish() | {"points": points}


def serve(spec: dict, commands, replies) -> int:
    """The interleaved protocol, one JSON object per line: after set-up this process answers `{"ok", cpus,
    cold_start_ms, ...}` (or `{"ok": false, "error"}`), then per command line `{"cmd": "time", "point": i, "n": k,
    "warm": w}` -> `{"ok": true, "samples": [seconds...]}` (w untimed calls first: the other rows' slices ran in
    between and evicted this one's caches), `{"cmd": "finish"}` -> the memory/profile record, and exits."""
    def send(obj: dict) -> None:
        replies.write(json.dumps(obj) + "\n")
        replies.flush()

    try:
        sess = Session(spec)
    except BaseException as e:
        send(_failure(e))
        return 1
    send(sess.info())
    for line in commands:
        try:
            cmd = json.loads(line)
            if cmd["cmd"] == "time":
                sess.samples(cmd["point"], int(cmd.get("warm", 0)))
                send({"ok": True, "samples": sess.samples(cmd["point"], int(cmd["n"]))})
            elif cmd["cmd"] == "finish":
                send(sess.finish())
                return 0
            else:
                send({"ok": False, "error": f"unknown command {cmd['cmd']!r}"})
        except BaseException as e:
            send(_failure(e))
            return 1
    return 0


def _failure(e: BaseException) -> dict:
    return {"ok": False, "error": f"{type(e).__name__}: {e}".strip().splitlines()[0][:500],
            "traceback": traceback.format_exc()[-4000:]}


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
    if argv[1] == "--serve":  # python -m toolkit.bench.worker --serve SPEC.json: commands on stdin, replies on stdout
        spec = json.loads(Path(argv[2]).read_text())
        replies = os.fdopen(os.dup(1), "w")  # the protocol's own fd: a runtime printing to stdout cannot corrupt it
        os.dup2(2, 1)
        return serve(spec, sys.stdin, replies)
    spec_path, out_path = argv[1], argv[2]
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = floor(spec) if spec.get("kind") == "floor" else measure(spec)
    except BaseException as e:  # the parent marks the cell failed with this text
        result = _failure(e)
    Path(out_path).write_text(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
