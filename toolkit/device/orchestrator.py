"""One run loop for every device: preflight -> stage files -> push -> execute runner -> pull -> parse -> rows.

A *transport* moves files and runs commands (adb to an Android phone, or a local folder + qemu-aarch64 for the
emulated target); a *runner* knows one runner program (our Python runner, onnxruntime_perf_test, ExecuTorch's
executor_runner): which files it needs, its command line, and how to read its output. The emulated path and the
adb path both go through `run_cases`, so the plan / staging / parsing code is exercised for real by the
emulated target even where no phone is connected.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.device.plan import Case, Measurement
from toolkit.errors import ToolkitError

Progress = Callable[[str], None]


@dataclass
class Invocation:
    """One execution of the runner on the device."""

    argv: list[str]  # argv[0] is a file in the staged folder (or a program the transport resolves)
    cases: list[int]  # case indices this invocation measures
    pulls: list[str]  # files to bring back (relative to the device folder); missing ones are tolerated
    label: str = ""
    kind: str = "measure"  # "measure": timed calls (device state is read around it); "check": a correctness run


@dataclass
class ExecResult:
    rc: int
    output: str  # stdout + stderr
    extra: dict = field(default_factory=dict)  # transport-specific facts (e.g. qemu instruction counts)


class Transport(ABC):
    """Where the runner executes."""

    target: str  # the bench row `target`
    measured_on: str  # the bench row `measured_on`

    @abstractmethod
    def preflight(self, runner: "DeviceRunner") -> dict:
        """Check the device can run this runner (ABI, tools); raise ToolkitError naming the problem and the fix."""

    @abstractmethod
    def push(self, stage: Path) -> str:
        """Copy the staged folder to the device; return the device folder."""

    @abstractmethod
    def execute(self, inv: Invocation, remote: str, timeout: float) -> ExecResult: ...

    @abstractmethod
    def pull(self, remote: str, names: list[str], stage: Path) -> None: ...

    def cleanup(self, remote: str) -> None:  # noqa: B027 - optional
        pass

    def snapshot(self) -> dict | None:
        """The device's thermal / battery / governor state (phones), read before and after each timed invocation;
        None where it means nothing (the emulated target)."""
        return None


class DeviceRunner(ABC):
    """A runner program: staging, command line, output parsing."""

    name: str
    runtimes: tuple[str, ...]
    binary: Path | None = None  # a file pushed with the stage (None: provided by the transport)

    @abstractmethod
    def stage(self, cases: list[Case], stage: Path, warmup: int, runs: int, parity_steps: int) -> list[Invocation]: ...

    @abstractmethod
    def parse(self, inv: Invocation, res: ExecResult, stage: Path, cases: list[Case]) -> dict[int, Measurement]: ...


def run_cases(
    transport: Transport,
    runner: DeviceRunner,
    cases: list[Case],
    *,
    warmup: int,
    runs: int,
    parity_steps: int,
    timeout: float = 1800.0,
    keep: Path | None = None,
    progress: Progress | None = None,
) -> tuple[dict, dict[int, Measurement]]:
    """Run every case; a failing invocation becomes failed measurements, never a lost run."""
    progress = progress or (lambda msg: None)
    bad = [c for c in cases if c.runtime not in runner.runtimes]
    if bad:
        raise ToolkitError(f"runner {runner.name} runs {', '.join(runner.runtimes)} artifacts, not "
                           f"{bad[0].runtime} ({bad[0].path.name}); pick the matching runner")
    progress(f"preflight {transport.target}")
    info = transport.preflight(runner)
    results: dict[int, Measurement] = {}
    with tempfile.TemporaryDirectory(prefix="toolkit-device-") as tmp:
        stage = Path(tmp) / "stage"
        stage.mkdir()
        invocations = runner.stage(cases, stage, warmup, runs, parity_steps)
        progress(f"push {sum(1 for _ in stage.rglob('*') if _.is_file())} files")
        remote = transport.push(stage)
        try:
            for n, inv in enumerate(invocations):
                progress(f"{'check' if inv.kind == 'check' else 'run'} {inv.label or runner.name} "
                         f"({n + 1}/{len(invocations)})")
                before = transport.snapshot() if inv.kind == "measure" else None
                res = transport.execute(inv, remote, timeout)
                after = transport.snapshot() if inv.kind == "measure" else None
                transport.pull(remote, inv.pulls, stage)
                try:
                    parsed = runner.parse(inv, res, stage, cases)
                except ToolkitError as e:
                    parsed = {i: Measurement(error=str(e)) for i in inv.cases}
                if before is not None or after is not None:
                    for i in inv.cases:
                        parsed.setdefault(i, Measurement()).extra["device_state"] = {"before": before, "after": after}
                for i, m in parsed.items():  # several invocations may report on one case (check, then timing)
                    results[i] = results[i].merged(m) if i in results else m
        finally:
            transport.cleanup(remote)
            if keep is not None:
                shutil.copytree(stage, keep, dirs_exist_ok=True)
    for c in cases:
        results.setdefault(c.index, Measurement(error="runner produced no result for this artifact"))
    return info, results


def _tail(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


# ------------------------------------------------------------------------------- toolkit Python runner


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
            raise ToolkitError(f"runner exited {res.rc} without results: {_tail(res.output)}")
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


# --------------------------------------------------------------------------------- onnxruntime_perf_test


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
            raise ToolkitError(f"onnxruntime_perf_test exited {res.rc}: {_tail(res.output)}")
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
                                   f"'Average inference time cost' line): {_tail(res.output)}")
            m.latency_mean_only = float(avg[1])
        peak = re.search(r"Peak working set size:\s*(\d+)", res.output)
        if peak:
            m.extra["memory_peak_working_set_bytes"] = int(peak[1])
        return {i: m}


# ------------------------------------------------------------------------------------ executor_runner


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
            raise ToolkitError(f"executor_runner exited {res.rc}: {_tail(res.output)}")
        iters = [float(m[3]) for m in _ITER.finditer(res.output)]
        m = Measurement()
        if len(iters) > self.warmup:
            m.latency_ms = iters[self.warmup:]
        else:
            tot = _TOTAL.search(res.output)
            if not tot:
                raise ToolkitError(f"could not read times from executor_runner (no 'Iteration' or 'Model executed "
                                   f"successfully' line): {_tail(res.output)}")
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
            m.error = f"bundled program check did not run (executor_runner exited {res.rc}): {_tail(res.output)}"
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
