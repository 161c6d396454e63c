"""The toolkit Python runner (toolkit/device/ort_runner.py) run under the target's Python: ARM64 under qemu, or any
aarch64 Linux. One of the runners of toolkit.device.orchestrator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from toolkit.device.orchestrator import DeviceRunner, Invocation, tail
from toolkit.device.plan import Measurement
from toolkit.errors import ToolkitError


class ToolkitPythonRunner(DeviceRunner):
    """toolkit/device/ort_runner.py under the target's Python (ARM64 under qemu, or any aarch64 Linux)."""

    name = "toolkit ort_runner.py"
    runtimes = ("onnxruntime", "executorch")
    script = Path(__file__).with_name("ort_runner.py")

    def __init__(self, threads: int = 1, isolate: bool = True):
        self.threads = threads
        # one process per artifact: a count then depends on the artifact and its inputs only, not on what ran
        # before it in the same process (allocator state shifts counts by ~0.1%)
        self.isolate = isolate

    def stage(self, cases, stage, warmup, runs, parity_steps):
        shutil.copy2(self.script, stage / "ort_runner.py")
        plan_cases = []
        for c in cases:
            d = stage / f"c{c.index}"
            d.mkdir()
            model = d / c.path.name
            shutil.copy2(c.path, model)
            for extra in c.path.parent.glob(f"{c.path.name}.data"):  # external weights beside the model
                shutil.copy2(extra, d / extra.name)
            feeds = {}
            for k, (name, value) in enumerate(c.feeds.items()):
                np.save(d / f"in{k}.npy", value)
                feeds[name] = f"c{c.index}/in{k}.npy"
            n_steps = c.n_parity_steps(parity_steps)
            steps = []
            for s, step in enumerate(c.step_inputs[:n_steps]):
                files = {}
                for k, (name, value) in enumerate(step.items()):
                    np.save(d / f"step{s}_in{k}.npy", value)
                    files[name] = f"c{c.index}/step{s}_in{k}.npy"
                steps.append(files)
            plan_cases.append({"id": c.index, "model": f"c{c.index}/{c.path.name}", "feeds": feeds, "steps": steps,
                               "state_map": c.state_map, "parity_steps": n_steps, "warmup": warmup,
                               "runs": runs, "outputs_dir": f"c{c.index}/out", "runtime": c.runtime,
                               "method": c.artifact.get("method", "forward"), "output_names": c.output_names()})
        if not self.isolate:
            return [self._invocation(stage, "plan.json", "results.json", plan_cases, cases, f"{len(cases)} artifacts")]
        return [self._invocation(stage, f"plan_c{c.index}.json", f"results_c{c.index}.json", [pc], [c], c.key)
                for pc, c in zip(plan_cases, cases)]

    def _invocation(self, stage, plan_name, results_name, plan_cases, cases, label) -> Invocation:
        (stage / plan_name).write_text(json.dumps({"cases": plan_cases, "threads": self.threads,
                                                   "results": results_name}, indent=1))
        pulls = [results_name] + [f"c{c.index}/out" for c in cases]
        return Invocation(["python3", "ort_runner.py", plan_name], [c.index for c in cases], pulls, label=label)

    def parse(self, inv, res, stage, cases):
        path = stage / inv.pulls[0]
        if not path.is_file():
            raise ToolkitError(f"runner exited {res.rc} without results: {tail(res.output)}")
        from toolkit.io import read_json

        data = read_json(path, "device runner results")  # written on the device: read through the guarded reader
        icount = res.extra.get("icount")
        overhead = None
        if icount is not None:
            oh = icount.regions.get(int(data.get("overhead_region", -1)), [])
            overhead = oh[-1] if oh else None
        out: dict[int, Measurement] = {}
        for r in data["cases"]:
            m = Measurement(error=r.get("error"))
            m.outputs = [{name: np.load(stage / f) for name, f in step.items()} for step in r.get("outputs", [])]
            if icount is not None:
                counts = [icount.regions.get(rid, [None])[-1] for rid in r.get("regions", [])]
                if m.error is None and (not counts or any(c is None for c in counts)):
                    m.error = "instruction counts missing for some calls (plugin not loaded?)"
                m.instructions = [c for c in counts if c is not None]
                m.marker_overhead = overhead
                names = data.get("ranges", [])
                per_call = [icount.ranges.get(rid, [None])[-1] for rid in r.get("regions", [])]
                if names and per_call and all(pc is not None and len(pc) == len(names) for pc in per_call):
                    m.by_code = {name: [pc[k] for pc in per_call] for k, name in enumerate(names)}
                m.threads_alive = max((icount.threads.get(rid, 0) for rid in r.get("regions", [])), default=None)
            else:
                m.latency_ms = list(r.get("wall_ms", []))
            out[int(r["id"])] = m
        return out
