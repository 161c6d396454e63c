"""ONNX Runtime's onnxruntime_perf_test (built for Android) as a runner of toolkit.device.orchestrator."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

from toolkit.device.orchestrator import DeviceRunner, Invocation, tail
from toolkit.device.plan import Measurement
from toolkit.errors import ToolkitError


class OrtPerfTestRunner(DeviceRunner):
    """ONNX Runtime's onnxruntime_perf_test (built for Android): per-run times from its result file.

    Inputs go in the ONNX test-data layout it reads (model dir/test_data_set_0/input_<i>.pb). It runs one
    warm-up call of its own; we ask for warmup + runs more and drop the first `warmup` times. It prints no
    outputs, so rows from it carry no parity (the emulated target covers ARM64 numerics).
    """

    name = "onnxruntime_perf_test"
    runtimes = ("onnxruntime",)

    def __init__(self, binary: Path, threads: int = 1, extra_args: list[str] | None = None):
        self.binary = binary
        self.threads = threads
        self.extra_args = extra_args or []
        self.warmup = 0

    def stage(self, cases, stage, warmup, runs, parity_steps):
        from onnx import numpy_helper

        self.warmup = warmup
        invs = []
        for c in cases:
            d = stage / f"c{c.index}"
            (d / "test_data_set_0").mkdir(parents=True)
            shutil.copy2(c.path, d / c.path.name)
            for k, (name, value) in enumerate(c.feeds.items()):
                (d / "test_data_set_0" / f"input_{k}.pb").write_bytes(
                    numpy_helper.from_array(np.ascontiguousarray(value), name).SerializeToString())
            argv = ["./" + self.binary.name, "-e", "cpu", "-m", "times", "-r", str(warmup + runs),
                    "-x", str(self.threads), "-y", "1", "-s", *self.extra_args,
                    f"c{c.index}/{c.path.name}", f"c{c.index}/result.csv"]
            invs.append(Invocation(argv, [c.index], [f"c{c.index}/result.csv"], label=c.key))
        return invs

    def parse(self, inv, res, stage, cases):
        (i,) = inv.cases
        if res.rc != 0:
            raise ToolkitError(f"onnxruntime_perf_test exited {res.rc}: {tail(res.output)}")
        times_ms = []
        csv = stage / f"c{i}" / "result.csv"
        if csv.is_file():
            for line in csv.read_text().splitlines():
                parts = line.split(",")
                if len(parts) == 5:
                    try:
                        times_ms.append(float(parts[1]) * 1000.0)
                    except ValueError:
                        continue
        m = Measurement()
        if len(times_ms) > self.warmup:
            m.latency_ms = times_ms[self.warmup:]
        else:
            avg = re.search(r"Average inference time cost:\s*([0-9.eE+-]+)\s*ms", res.output)
            if not avg:
                raise ToolkitError(f"could not read times from onnxruntime_perf_test (no result file, no "
                                   f"'Average inference time cost' line): {tail(res.output)}")
            m.latency_mean_only = float(avg[1])
        peak = re.search(r"Peak working set size:\s*(\d+)", res.output)
        if peak:
            m.extra["memory_peak_working_set_bytes"] = int(peak[1])
        return {i: m}
