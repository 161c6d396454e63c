"""Run exported artifacts on the emulated ARM64 target: parity vs host onnxruntime + instructions per inference.

Public API (used by `toolkit device run --target arm64-a76` and by `toolkit bench --target arm64-a76`):
    run_artifacts(artifact_dir, ...) -> {"rows": [...], "info": {...}}   every selected artifact (one qemu process each)
    bench_onnx(manifest, record, target=..., runs=..., steps_before=...) -> dict   one artifact (bench cells)
Rows follow the bench JSON schema; `latency_ms` is absent, `instructions_per_inference` is the metric.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable

from toolkit.device import arm64
from toolkit.device.arm64.qemu import guest_env, parse_icount, qemu_argv
from toolkit.device.orchestrator import DeviceRunner, ExecResult, Invocation, Transport, run_cases
from toolkit.device.plan import (
    Case,
    Measurement,
    build_cases,
    host_reference,
    load_manifest,
    make_row,
    max_abs_err,
    select_artifacts,
)
from toolkit.device.python_runner import ToolkitPythonRunner
from toolkit.errors import ToolkitError
from toolkit.exporters.manifest import ArtifactRecord, Manifest

TARGET = arm64.TARGET
MEASURED_ON = "emulated ARM64 (neoverse-n1), instructions not time"


def target_profile(name: str = TARGET) -> dict:
    """benches/targets/<name>.toml through the one target loader (toolkit.bench.targets), flattened: the common keys
    plus the emulated target's own (cpu, warmup, max_runs, parity tolerance)."""
    from toolkit.bench.targets import load_target

    t = load_target(name)
    return {**{k: v for k, v in t.to_dict().items() if k != "extra"}, **t.extra}


class QemuTransport(Transport):
    """A local folder as the device; the runner's `python3` is the ARM64 Python under qemu with the plugin."""

    def __init__(self, cache: str | Path | None = None, profile: dict | None = None, executorch: bool = False):
        self.profile = profile or target_profile()
        self.target = str(self.profile.get("name", TARGET))
        self.measured_on = str(self.profile.get("measured_on", MEASURED_ON))
        self.cpu = str(self.profile.get("cpu", arm64.CPU_MODEL))
        self.cache = cache
        self.executorch = executorch
        self.lay: arm64.Layout | None = None
        self._lock = None

    def preflight(self, runner: DeviceRunner) -> dict:
        from toolkit.device.et_cpp import CppRunner

        et = self.executorch or isinstance(runner, CppRunner)
        self.lay = arm64.require_executorch(self.cache) if et else arm64.require_ready(self.cache)
        st = arm64.status(self.cache)
        return {"device": f"qemu-aarch64 -cpu {self.cpu}", "status": st.reason, "cache": str(self.lay.root)}

    def push(self, stage: Path) -> str:
        """Copy the staged files to the cache's fixed work folder (one run at a time per cache).

        The guest sees its working folder's path (cwd, sys.path); a fixed path keeps everything the guest can
        observe identical from run to run, so nothing but the artifact and its inputs can move a count.
        """
        import fcntl

        assert self.lay is not None, "preflight first"
        work = self.lay.root / "work"
        work.mkdir(parents=True, exist_ok=True)
        if self._lock is None:
            self._lock = open(work / "lock", "w")
            fcntl.flock(self._lock, fcntl.LOCK_EX)  # waits for another run on this cache to finish
        remote = work / "stage"
        shutil.rmtree(remote, ignore_errors=True)
        shutil.rmtree(work / "home", ignore_errors=True)
        shutil.copytree(stage, remote)
        return str(remote)

    def execute(self, inv: Invocation, remote: str, timeout: float) -> ExecResult:
        assert self.lay is not None, "preflight first"
        work = Path(remote)
        icount_path = work.parent / "icount.txt"
        icount_path.unlink(missing_ok=True)
        from toolkit.device import et_cpp

        if inv.argv[0] == "python3":
            argv = qemu_argv(self.lay, icount_path, cpu=self.cpu) + inv.argv[1:]
        elif inv.argv[0] == et_cpp.RUNNER_NAME:  # the ExecuTorch C++ runner, cross-compiled for aarch64
            program = et_cpp.aarch64_lane(self.lay.root).runner
            argv = qemu_argv(self.lay, icount_path, cpu=self.cpu, program=program) + inv.argv[1:]
        else:
            raise ToolkitError(f"the emulated target runs the toolkit runners only (python3 ort_runner.py, "
                               f"{et_cpp.RUNNER_NAME}), not {inv.argv[0]}")
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=work,
                               env=guest_env(self.lay, work.parent))
        except subprocess.TimeoutExpired:
            return ExecResult(124, f"qemu run timed out after {timeout:.0f}s")
        output = (p.stdout or "") + (p.stderr or "")
        extra = {}
        if icount_path.is_file():
            extra["icount"] = parse_icount(icount_path)
            shutil.copy2(icount_path, work / f"icount-{inv.label.replace('/', '_').replace(' ', '_') or 'run'}.txt")
        return ExecResult(p.returncode, output, extra)

    def pull(self, remote: str, names: list[str], stage: Path) -> None:
        for name in names + [p.name for p in Path(remote).glob("icount-*.txt")]:
            src, dest = Path(remote) / name, stage / name
            if src.is_dir():
                shutil.copytree(src, dest, dirs_exist_ok=True)
            elif src.is_file():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)

    def cleanup(self, remote: str) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None


class LocalPythonTransport(Transport):
    """The same runner under this host's Python (no qemu): wall time only. For tests and as a sanity check."""

    target = "host-python"
    measured_on = "host python runner (wall time, not device latency)"

    def preflight(self, runner: DeviceRunner) -> dict:
        return {"device": "host python"}

    def push(self, stage: Path) -> str:
        return str(stage)

    def execute(self, inv: Invocation, remote: str, timeout: float) -> ExecResult:
        import os
        import sys

        env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   ORT_DISABLE_TELEMETRY="1")
        p = subprocess.run([sys.executable, *inv.argv[1:]], capture_output=True, text=True, timeout=timeout,
                           cwd=remote, env=env)
        return ExecResult(p.returncode, (p.stdout or "") + (p.stderr or ""))

    def pull(self, remote: str, names: list[str], stage: Path) -> None:
        pass


def _advance_states(case: Case, steps: int) -> None:
    """Feed the state reached after `steps` host calls (a user with that much history) into the case."""
    if steps <= 0 or not case.state_map:
        return
    ref = host_reference(case, steps)
    for out_name, in_name in case.state_map.items():
        case.feeds[in_name] = ref[-1][out_name]
    case.expected = []  # the shipped test vectors start from the initial state, not from this history point


def run_cases_emulated(
    manifest: dict,
    cases: list[Case],
    *,
    transport: Transport,
    warmup: int,
    runs: int,
    parity_steps: int,
    parity_atol: float,
    repeat: int = 1,
    progress: Callable[[str], None] | None = None,
    keep: Path | None = None,
    history: int | None = None,
) -> tuple[list[dict], dict]:
    """Run `cases` `repeat` times (ONNX artifacts through the toolkit Python runner, ExecuTorch ones through the C++
    runner); rows carry parity and the repeat check. `history`: ExecuTorch step artifacts are measured after that
    many calls from a fresh load (the ONNX path feeds the state instead, see _advance_states)."""
    from toolkit.device.et_cpp import CppRunner

    progress = progress or (lambda m: None)
    threads = int(getattr(transport, "profile", {}).get("threads", 1))
    groups = [(ToolkitPythonRunner(threads=threads), [c for c in cases if c.runtime != "executorch"]),
              (CppRunner(threads=threads, history=history), [c for c in cases if c.runtime == "executorch"])]
    attempts = []
    info: dict = {}
    for r in range(max(1, repeat)):
        meas: dict = {}
        for runner, group in groups:
            if not group:
                continue
            try:
                info, got = run_cases(transport, runner, group, warmup=warmup, runs=runs, parity_steps=parity_steps,
                                      progress=lambda m, r=r: progress(f"[{r + 1}/{repeat}] {m}" if repeat > 1 else m),
                                      keep=keep if r == 0 else None)
            except ToolkitError as e:  # e.g. the ExecuTorch lane not set up: its rows fail, the others still report
                if runner is groups[0][0]:
                    raise
                got = {c.index: Measurement(error=str(e)) for c in group}
            meas.update(got)
        attempts.append(meas)
    rows = []
    for c in cases:
        progress(f"host reference {c.key}")
        m = attempts[0][c.index]
        err = vec_err = note = None
        steps = c.n_parity_steps(parity_steps)
        try:
            ref = host_reference(c, steps)
            err = max_abs_err(m.outputs, ref) if m.error is None else None
            note = (f"host onnxruntime ({_ort_version()}, x86_64)" if c.runtime == "onnxruntime"
                    else "host executorch runtime (x86_64)") + f", {steps} chained calls"
            if c.expected and m.outputs and m.error is None:
                n = min(len(c.expected), len(m.outputs))
                vec_err = max_abs_err(m.outputs[:n], [{k: v for k, v in e.items() if k in m.outputs[0]}
                                                      for e in c.expected[:n]])
                note += " + shipped test vectors (eager PyTorch)"
        except Exception as e:  # the host reference itself failing is reported, not raised
            m.error = m.error or f"host reference failed: {e}"
        extra = {"instructions_per_inference": None} if not m.instructions else {}
        worst = None if err is None else max(err, vec_err or 0.0)
        row = make_row(c, m, target=transport.target, measured_on=transport.measured_on, manifest=manifest,
                       parity_err=worst, parity_tol=parity_atol, parity_note=note or "host onnxruntime", extra=extra)
        row["parity"].update({"vs_host_runtime": err, "vs_test_vectors": vec_err, "steps": steps})
        first = row.pop("first_call_instructions", None)
        if first is not None and row.get("instructions"):  # the first call after load_method vs a steady one
            row["instructions"]["first_call"] = first
            steady = row["instructions"].get("per_inference")
            row["instructions"]["first_call_over_steady"] = round(first / steady, 3) if steady else None
        if m.instructions and len(attempts) > 1:
            per = [a[c.index].instructions for a in attempts]
            same = all(p == per[0] for p in per)
            row["instructions"]["repeats"] = len(per)
            row["instructions"]["identical_across_repeats"] = same
            if not same and row["status"] == "ok":
                row["status"], row["error"] = "failed", f"instruction counts differ between runs: {per}"
        row["memory"]["weights_bytes"] = _weights_bytes(c.path)
        rows.append(row)
    return rows, info


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _weights_bytes(path: Path) -> int | None:
    if path.suffix != ".onnx":
        return None
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception:
        return None
    return int(sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer))


def run_artifacts(
    artifact_dir: str | Path,
    *,
    target: str = TARGET,
    models: list[str] | None = None,
    entries: list[str] | None = None,
    files: list[str] | None = None,
    warmup: int | None = None,
    runs: int | None = None,
    parity_steps: int | None = None,
    with_executorch: bool = False,
    repeat: int = 1,
    cache: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    keep: Path | None = None,
) -> dict:
    """Every selected ONNX (and, opted in, ExecuTorch) artifact of an export on the emulated ARM64 CPU."""
    profile = target_profile(target)
    if profile.get("kind") != "emulated":
        raise ToolkitError(f"target {target} is not an emulated target (kind = {profile.get('kind')!r})")
    manifest = load_manifest(artifact_dir)
    runtimes = ("onnxruntime", "executorch") if with_executorch else ("onnxruntime",)
    arts = select_artifacts(manifest, runtimes, models, entries, files)
    if with_executorch:
        arm64.require_executorch(cache)  # one line saying how to build the C++ runner when it is not there
    cases = build_cases(manifest, arts)
    transport = QemuTransport(cache, profile, executorch=with_executorch)
    rows, info = run_cases_emulated(
        manifest.raw, cases, transport=transport,
        warmup=int(warmup if warmup is not None else profile.get("warmup", 2)),
        runs=int(runs if runs is not None else profile.get("max_runs", 5)),
        parity_steps=int(parity_steps if parity_steps is not None else profile.get("parity_steps", 3)),
        parity_atol=float(profile.get("parity_atol", 1e-4)), repeat=repeat, progress=progress, keep=keep)
    info.update({"target": target, "artifact_dir": str(manifest.root), "profile": profile})
    return {"rows": rows, "info": info}


def bench_onnx(
    manifest: Manifest,
    rec: ArtifactRecord,
    *,
    target: dict | None = None,
    runs: int = 5,
    steps_before: int | None = None,
    cache: str | Path | None = None,
    repeat: int = 1,
) -> dict:
    """One ONNX artifact of a verified manifest on the emulated target, for `toolkit bench` cells.

    Returns {"ok", "error", "instructions_per_inference", "instructions", "parity_max_abs_err", "latency_ms": None,
    "row"}. `steps_before` = calls made before the measured one (the stateful `step` entry at a history point):
    the state after that many host calls is fed in. Runs are capped by the profile's max_runs (counts repeat).
    """
    profile = target_profile((target or {}).get("name", TARGET))
    profile.update({k: v for k, v in (target or {}).items() if k != "extra"})
    profile.update((target or {}).get("extra") or {})
    runs = max(1, min(int(runs), int(profile.get("max_runs", 5))))
    try:
        cases = build_cases(manifest, [rec])
        for c in cases:
            _advance_states(c, int(steps_before or 0))
        rows, _ = run_cases_emulated(
            manifest.raw, cases, transport=QemuTransport(cache, profile),
            warmup=int(profile.get("warmup", 2)), runs=runs,
            parity_steps=int(profile.get("parity_steps", 3)), parity_atol=float(profile.get("parity_atol", 1e-4)),
            repeat=repeat)
    except ToolkitError as e:
        return {"ok": False, "error": str(e), "instructions_per_inference": None, "latency_ms": None}
    row = rows[0]
    return {
        "ok": row["status"] == "ok",
        "error": row["error"],
        "instructions_per_inference": row.get("instructions_per_inference"),
        "instructions": row.get("instructions"),
        "parity_max_abs_err": row.get("parity_max_abs_err"),
        "latency_ms": None,
        "row": row,
    }


def bench_executorch(
    manifest: Manifest,
    rec: ArtifactRecord,
    *,
    target: dict | None = None,
    runs: int = 5,
    steps_before: int | None = None,
    cache: str | Path | None = None,
    repeat: int = 1,
) -> dict:
    """One .pte of a verified manifest through the ExecuTorch C++ runner under qemu, for `toolkit bench` cells.

    Same return shape as bench_onnx. A stateful program keeps its state inside: `steps_before` calls are made from a
    fresh load before each measured call (a user with that much history). A runner or lane failure comes back as
    {"ok": False, "error": <one line>}, never as an exception.
    """
    profile = target_profile((target or {}).get("name", TARGET))
    profile.update({k: v for k, v in (target or {}).items() if k != "extra"})
    profile.update((target or {}).get("extra") or {})
    runs = max(1, min(int(runs), int(profile.get("max_runs", 5))))
    try:
        cases = build_cases(manifest, [rec])
        rows, _ = run_cases_emulated(
            manifest.raw, cases, transport=QemuTransport(cache, profile, executorch=True),
            warmup=int(profile.get("warmup", 2)), runs=runs,
            parity_steps=int(profile.get("parity_steps", 3)), parity_atol=float(profile.get("parity_atol", 1e-4)),
            repeat=repeat, history=int(steps_before) if rec.states and steps_before is not None else None)
    except ToolkitError as e:
        return {"ok": False, "error": str(e), "instructions_per_inference": None, "latency_ms": None}
    row = rows[0]
    return {
        "ok": row["status"] == "ok",
        "error": row["error"],
        "instructions_per_inference": row.get("instructions_per_inference"),
        "instructions": row.get("instructions"),
        "parity_max_abs_err": row.get("parity_max_abs_err"),
        "latency_ms": None,
        "row": row,
    }
