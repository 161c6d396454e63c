"""`toolkit device run` as one library call: a `DeviceRunRequest` (the command's flags, unparsed) -> `run_device`.

Here so that the command only parses and prints: whether the export runs on the emulated ARM64 target or on a phone
over adb, which flag combinations are refused, where the device JSON goes and what fails the run are decided in
one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from toolkit.errors import CheckFailed, ToolkitError
from toolkit.reporter import Reporter


@dataclass
class DeviceRunRequest:
    """The flags of `toolkit device run`, as given."""

    artifact_dir: Path
    target: Optional[str] = None
    serial: Optional[str] = None
    runner: Optional[Path] = None
    runner_kind: Optional[str] = None
    model: Optional[list[str]] = None
    entry: Optional[list[str]] = None
    file: Optional[list[str]] = None
    warmup: Optional[int] = None
    runs: Optional[int] = None
    repeat: int = 1
    with_executorch: bool = False
    cpu: Optional[int] = None
    no_pin: bool = False
    lib: Optional[list[Path]] = None
    runner_arg: Optional[list[str]] = None
    budget: Optional[Path] = None
    out: Optional[Path] = None
    cache: Optional[Path] = None
    keep: Optional[Path] = None

    @property
    def android(self) -> bool:
        """A phone over adb (--serial / --runner), else the emulated target."""
        return self.serial is not None or self.runner is not None


@dataclass
class DeviceRun:
    """A finished `toolkit device run`: the device JSON (`doc`, written to `out`) and the measurer's info."""

    doc: dict
    info: dict
    out: Path
    emulated: bool


def run_device(r: DeviceRunRequest, reporter: Reporter) -> DeviceRun:
    """Check the flags, run the export's artifacts on the emulated target (instructions + parity) or the phone
    (latency), apply the budgets and write the device JSON; `raise_if_failed` turns failed rows into the exit code."""
    from toolkit.checks import check_number
    from toolkit.device.plan import run_document
    from toolkit.io import atomic_write_json

    if r.android and r.target is not None:
        raise ToolkitError("pass either --target (emulated) or --serial/--runner (Android device), not both")
    if r.android and r.runner is None:
        raise ToolkitError("an Android run needs --runner PATH (onnxruntime_perf_test or executor_runner built for the "
                           "phone; see android_harness/README.md)")
    check_number(r.repeat, "--repeat", lo=1, hi=1000)
    check_number(r.warmup, "--warmup", lo=0, hi=1_000_000)
    check_number(r.runs, "--runs", lo=1, hi=1_000_000)
    check_number(r.cpu, "--cpu", lo=0, hi=4095)
    with reporter.status() as progress:
        result = _on_phone(r, progress) if r.android else _emulated(r, progress)
    doc = run_document(result, r.artifact_dir, r.budget)
    out = r.out or Path(f"device-{doc['target'].replace(':', '-')}.json")
    atomic_write_json(out, doc)
    return DeviceRun(doc, result["info"], out, emulated=not r.android)


def _on_phone(r: DeviceRunRequest, progress) -> dict:
    from toolkit.device.adb import run_on_device

    return run_on_device(r.artifact_dir, runner=r.runner, serial=r.serial, runner_kind=r.runner_kind,
                         models=r.model or None, entries=r.entry or None, files=r.file or None,
                         warmup=20 if r.warmup is None else r.warmup, runs=100 if r.runs is None else r.runs,
                         cpu=r.cpu, pin=not r.no_pin, libs=r.lib or [], runner_args=r.runner_arg or [], progress=progress,
                         etdump_dir=None if r.out is None else r.out.parent / f"{r.out.stem}-etdump")


def _emulated(r: DeviceRunRequest, progress) -> dict:
    from toolkit.device.arm64.layout import TARGET
    from toolkit.device.emulated import run_artifacts

    return run_artifacts(r.artifact_dir, target=r.target or TARGET, models=r.model or None, entries=r.entry or None,
                         files=r.file or None, warmup=r.warmup, runs=r.runs, with_executorch=r.with_executorch,
                         repeat=r.repeat, cache=r.cache, progress=progress, keep=r.keep)


def raise_if_failed(run: DeviceRun) -> None:
    """Exit 1 naming the first artifact that failed, else the first budget broken."""
    from toolkit.device.budgets import failed_budgets

    rows, tgt = run.doc["rows"], run.doc["target"]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        raise CheckFailed(f"{len(failed)} of {len(rows)} artifacts failed on {tgt}: "
                          f"{failed[0]['model']}/{failed[0]['entry']}: {failed[0]['error']}")
    broken = failed_budgets(rows)
    if broken:
        raise CheckFailed(f"{len(broken)} budget(s) broken: {broken[0]}")
