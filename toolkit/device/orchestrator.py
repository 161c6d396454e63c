"""One run loop for every device: preflight -> stage files -> push -> execute runner -> pull -> parse -> rows.

A *transport* moves files and runs commands (adb to an Android phone, or a local folder + qemu-aarch64 for the
emulated target); a *runner* knows one runner program (our Python runner, onnxruntime_perf_test, ExecuTorch's
executor_runner): which files it needs, its command line, and how to read its output. The emulated path and the
adb path both go through `run_cases`, so the plan / staging / parsing code is exercised for real by the
emulated target even where no phone is connected. The runners: python_runner.py, ort_perf_test.py,
executor_runner.py (and et_cpp.py's C++ runner).
"""

from __future__ import annotations

import shutil
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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


def tail(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"
