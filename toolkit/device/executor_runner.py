"""ExecuTorch's executor_runner (built for Android) as a runner of toolkit.device.orchestrator: timings from its log,
the bundled program checked on the device, the ETDump brought back."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

from toolkit.device.orchestrator import DeviceRunner, Invocation, tail
from toolkit.device.plan import Measurement
from toolkit.errors import ToolkitError

_ITER = re.compile(r"Iteration (\d+) of (\d+):\s*([0-9.eE+-]+)\s*ms")
_TOTAL = re.compile(r"Model executed successfully (\d+) time\(s\) in ([0-9.eE+-]+)\s*ms")
_BUNDLE_RESULT = re.compile(r"TEST: BundleIO index\[(\d+)\] Test_result: (PASS|FAIL)")
_BUNDLE_STAT = re.compile(r"(mean_absolute_error|max_absolute_error|mean_relative_error|max_relative_error):"
                          r"\s*([-0-9.eE+]+|nan|inf)")

# flags an executor_runner lists only when built with them (examples/portable/executor_runner, ExecuTorch 1.4)
BUNDLE_IO_FLAGS = {"bundleio_atol", "bundleio_rtol"}  # -DEXECUTORCH_BUILD_DEVTOOLS=ON (ET_BUNDLE_IO_ENABLED)
ETDUMP_FLAG = "etdump_path"  # -DEXECUTORCH_ENABLE_EVENT_TRACER=ON (ET_EVENT_TRACER_ENABLED)
REBUILD = "rebuild it with android_harness/scripts/build_runners.sh executorch"


class ExecutorRunner(DeviceRunner):
    """ExecuTorch's executor_runner (built for Android): per-iteration times from its log, the export's bundled
    program checked on the device, and the ETDump brought back.

    Flags differ between ExecuTorch versions and builds, so the runner's --help is read first (`flags`) and only the
    flags it knows are passed. Per artifact, up to two invocations:

    1. *check* (when the export has a `.bpte` and the runner was built with bundled IO): `--model_path=<.bpte>
       --num_executions=1`: the runner feeds bundled test case 0 to a freshly loaded method and compares every output
       (the visible ones and the new states) with the expected values under the export's tolerance
       (`--bundleio_atol/--bundleio_rtol`); it prints `TEST: BundleIO index[0] Test_result: PASS|FAIL` and error
       stats, and exits 1 on FAIL. One execution only: the cases form a trajectory, and a stateful program's second
       call would no longer match case 0.
    2. *measure*: `--model_path=<.pte> --num_executions=<warmup+runs>` with the test-vector inputs (`--inputs`),
       writing the ETDump (`--etdump_path`) when the runner was built with the event tracer; the ETDump is pulled
       and kept in `etdump_dir`.
    Without --inputs it feeds ones (fine for latency: id 1 is a valid item).
    """

    name = "executor_runner"
    runtimes = ("executorch",)

    def __init__(self, binary: Path, threads: int = 1, extra_args: list[str] | None = None,
                 etdump_dir: Path | None = None):
        self.binary = binary
        self.threads = threads
        self.extra_args = extra_args or []
        self.flags: set[str] = {"model_path", "num_executions"}
        self.warmup = 0
        self.etdump_dir = etdump_dir  # where pulled ETDumps are kept (set before staging)
        self.etdumps: dict[int, str] = {}  # case index -> the ETDump's path on the device (relative)

    @property
    def bundle_io(self) -> bool:
        return BUNDLE_IO_FLAGS <= self.flags

    def _common(self) -> list[str]:
        args = []
        if "cpu_threads" in self.flags:
            args.append(f"--cpu_threads={self.threads}")
        if "print_output" in self.flags:
            args.append("--print_output=none")
        return args

    def stage(self, cases, stage, warmup, runs, parity_steps):
        self.warmup = warmup
        invs = []
        for c in cases:
            d = stage / f"c{c.index}"
            d.mkdir()
            bp = c.artifact.get("bundled_program")
            if isinstance(bp, dict) and self.bundle_io:
                bpte = c.path.parent / bp["file"]
                shutil.copy2(bpte, d / bpte.name)
                argv = ["./" + self.binary.name, f"--model_path=c{c.index}/{bpte.name}", "--num_executions=1",
                        f"--bundleio_atol={float(bp.get('atol', 1e-4)):g}",
                        f"--bundleio_rtol={float(bp.get('rtol', 0.0)):g}", *self._common()]
                if ETDUMP_FLAG in self.flags:  # else the runner writes model.etdump into the run folder
                    argv.append(f"--etdump_path=c{c.index}/check.etdump")
                invs.append(Invocation(argv + self.extra_args, [c.index], [], label=f"{c.key} bundled check",
                                       kind="check"))
            shutil.copy2(c.path, d / c.path.name)
            argv = ["./" + self.binary.name, f"--model_path=c{c.index}/{c.path.name}",
                    f"--num_executions={warmup + runs}"]
            if "inputs" in self.flags:
                files = []
                for k, value in enumerate(c.feeds.values()):
                    (d / f"input_{k}.bin").write_bytes(np.ascontiguousarray(value).tobytes())
                    files.append(f"c{c.index}/input_{k}.bin")
                if files:
                    argv.append("--inputs=" + ",".join(files))
            argv += self._common()
            pulls = []
            if ETDUMP_FLAG in self.flags:
                self.etdumps[c.index] = f"c{c.index}/run.etdump"
                argv.append(f"--etdump_path={self.etdumps[c.index]}")
                pulls.append(self.etdumps[c.index])
            invs.append(Invocation(argv + self.extra_args, [c.index], pulls, label=c.key))
        return invs

    def parse(self, inv, res, stage, cases):
        (i,) = inv.cases
        case = {c.index: c for c in cases}[i]
        if inv.kind == "check":
            return {i: self._parse_check(inv, res)}
        if res.rc != 0:
            raise ToolkitError(f"executor_runner exited {res.rc}: {tail(res.output)}")
        iters = [float(m[3]) for m in _ITER.finditer(res.output)]
        m = Measurement()
        if len(iters) > self.warmup:
            m.latency_ms = iters[self.warmup:]
        else:
            tot = _TOTAL.search(res.output)
            if not tot:
                raise ToolkitError(f"could not read times from executor_runner (no 'Iteration' or 'Model executed "
                                   f"successfully' line): {tail(res.output)}")
            m.latency_mean_only = float(tot[2]) / max(1, int(tot[1]))
            m.extra["latency_note"] = "mean over all executions incl. warm-up (this executor_runner prints no per-run times)"
        m.extra["etdump"] = self._keep_etdump(case, stage)
        if not (isinstance(case.artifact.get("bundled_program"), dict) and self.bundle_io):
            m.extra["bundled_check"] = self._no_check_reason(case)
        return {i: m}

    def _parse_check(self, inv, res) -> Measurement:
        """The runner's own verdict on bundled test case 0 (its exit status and `Test_result` line)."""
        (i,) = inv.cases
        atol = next((float(a.split("=", 1)[1]) for a in inv.argv if a.startswith("--bundleio_atol=")), None)
        rtol = next((float(a.split("=", 1)[1]) for a in inv.argv if a.startswith("--bundleio_rtol=")), None)
        verdict = _BUNDLE_RESULT.search(res.output)
        stats = {k: float(v) for k, v in _BUNDLE_STAT.findall(res.output)}
        check = {"pass": None, "testset": 0, "atol": atol, "rtol": rtol, "file": inv.argv[1].split("/", 1)[-1],
                 "where": "on the device (executor_runner, verify_method_outputs)", **stats}
        m = Measurement()
        if verdict is not None and verdict[2] == "PASS" and res.rc == 0:
            check["pass"] = True
        elif verdict is not None and verdict[2] == "FAIL":
            check["pass"] = False
            worst = f"max abs error {stats['max_absolute_error']:g}" if "max_absolute_error" in stats else "outputs"
            m.error = (f"bundled program check failed on the device: {worst} exceeds atol {atol:g} / rtol {rtol:g} "
                       f"(case 0 of {check['file']})")
        else:
            check["pass"] = False
            m.error = f"bundled program check did not run (executor_runner exited {res.rc}): {tail(res.output)}"
        if "max_absolute_error" in stats:
            m.parity_err = stats["max_absolute_error"]
        m.extra["bundled_check"] = check
        return m

    def _no_check_reason(self, case) -> dict:
        if not isinstance(case.artifact.get("bundled_program"), dict):
            return {"pass": None, "note": "the export has no .bpte for this artifact (recipe bundled_program = false)"}
        return {"pass": None, "note": f"runner built without bundled IO (no --bundleio_atol in its --help): {REBUILD}"}

    def _keep_etdump(self, c, stage: Path) -> dict:
        if ETDUMP_FLAG not in self.flags:
            return {"retrieved": False,
                    "note": f"runner built without the event tracer (no --etdump_path in its --help): {REBUILD}"}
        pulled = stage / self.etdumps[c.index]
        if not pulled.is_file() or pulled.stat().st_size == 0:
            return {"retrieved": False, "note": f"the runner wrote no ETDump at {self.etdumps[c.index]}"}
        from toolkit.device.etdump import keep

        name = f"{c.model}_{c.entry}_L{c.seq_len}_{Path(c.path).stem}.etdump"
        return keep(pulled, self.etdump_dir or Path.cwd(), name,
                    source=f"{self.warmup} warm-up + measured executions of {c.path.name} (profiling on while timed)")


def parse_gflags_help(text: str) -> set[str]:
    """Flag names listed by a gflags --help (`-name (description) type: ...`)."""
    return set(re.findall(r"^\s*-{1,2}([a-z_][a-z0-9_]*)\s", text, flags=re.M))
