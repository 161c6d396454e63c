"""Android phones over adb: push artifacts + a user-built runner, pin it to the big core, run, pull, parse -> rows.

The runner is the user's (see android_harness/README.md): ONNX Runtime's `onnxruntime_perf_test` or ExecuTorch's
`executor_runner`, built with the NDK for the phone's ABI. Before anything is pushed we check: adb exists, the
device is connected and authorised, the runner's ELF machine matches `ro.product.cpu.abi`, and `taskset` exists.
The run loop itself (stage -> push -> execute -> pull -> parse -> rows) is shared with the emulated target
(toolkit.device.orchestrator), which exercises it for real where no phone is connected.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from toolkit.device.arm64.layout import TARGET
from toolkit.device.elf import elf_abi
from toolkit.device.executor_runner import ExecutorRunner, parse_gflags_help
from toolkit.device.orchestrator import DeviceRunner, ExecResult, Invocation, Transport, run_cases
from toolkit.device.ort_perf_test import OrtPerfTestRunner
from toolkit.device.phone_state import snapshot
from toolkit.device.plan import build_cases, load_manifest, make_row, select_artifacts
from toolkit.errors import ToolkitError

REMOTE_ROOT = "/data/local/tmp/toolkit"
_RC = "__toolkit_rc="
ADB_FIX = "install it (`apt-get install adb`, or `pip install adbutils`, which bundles it) or set $ADB to its path"


def find_adb() -> str:
    """$ADB, then `adb` on PATH, then the binary bundled with the adbutils wheel."""
    env = os.environ.get("ADB")
    if env:
        if not Path(env).is_file():
            raise ToolkitError(f"$ADB points to a missing file: {env}")
        return env
    found = shutil.which("adb")
    if found:
        return found
    try:
        import adbutils  # type: ignore[import-not-found]

        path = adbutils.adb_path()
        if path and Path(path).is_file():
            return str(path)
    except Exception:
        pass
    raise ToolkitError(f"adb not found: {ADB_FIX}")


@dataclass
class AdbDevice:
    serial: str
    state: str  # device | unauthorized | offline | ...
    props: dict[str, str] = field(default_factory=dict)  # product/model/device/transport_id from `adb devices -l`

    @property
    def model(self) -> str:
        return self.props.get("model", "unknown").replace("_", " ")


def _adb(adb: str, args: list[str], timeout: float = 120, serial: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = [adb, *(["-s", serial] if serial else []), *args]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ToolkitError(f"adb not found at {adb}: {ADB_FIX}") from None
    except subprocess.TimeoutExpired:
        raise ToolkitError(f"adb {' '.join(args[:2])} timed out after {timeout:.0f}s (device asleep or USB link bad? "
                           f"try `adb kill-server` and reconnect)") from None
    if check and p.returncode != 0:
        msg = (p.stderr or p.stdout).strip()
        low = msg.lower()
        if serial and ("not found" in low and "device" in low):
            raise ToolkitError(f"device {serial} is not connected (adb: {msg}); check `adb devices`, the USB cable and "
                               f"that USB debugging is on")
        if "unauthorized" in low:
            raise ToolkitError(f"device {serial or ''} is unauthorized: unlock it and accept the 'Allow USB debugging' "
                               f"prompt, then retry")
        if "offline" in low:
            raise ToolkitError(f"device {serial or ''} is offline: replug it or run `adb kill-server`")
        if "no devices" in low:
            raise ToolkitError("no Android device connected (adb sees none): connect one with USB debugging on, or use "
                               f"the emulated target (--target {TARGET})")
        raise ToolkitError(f"adb {' '.join(args[:3])} failed (exit {p.returncode}): {msg.splitlines()[-1] if msg else ''}")
    return p


def list_devices(adb: str | None = None) -> list[AdbDevice]:
    """`adb devices -l`, parsed (every state, so callers can explain unauthorized/offline devices)."""
    adb = adb or find_adb()
    out = _adb(adb, ["devices", "-l"], timeout=60).stdout
    devices = []
    for line in out.splitlines():
        line = line.strip()
        if not line or line.startswith("List of devices") or line.startswith("*"):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        props = dict(p.split(":", 1) for p in parts[2:] if ":" in p)
        devices.append(AdbDevice(parts[0], parts[1], props))
    return devices


def pick_device(devices: list[AdbDevice], serial: str | None) -> AdbDevice:
    listed = ", ".join(f"{d.serial} ({d.state})" for d in devices) or "none"
    if serial is None:
        ready = [d for d in devices if d.state == "device"]
        if not devices:
            raise ToolkitError("no Android device connected (adb devices lists none): connect one with USB debugging "
                               f"on, or use the emulated target (--target {TARGET})")
        if len(ready) > 1:
            raise ToolkitError(f"several devices connected ({listed}): pass --serial with one of them")
        if not ready:
            serial = devices[0].serial
        else:
            return ready[0]
    for d in devices:
        if d.serial == serial:
            if d.state == "unauthorized":
                raise ToolkitError(f"device {serial} is unauthorized: unlock it and accept the 'Allow USB debugging' "
                                   f"prompt, then retry")
            if d.state != "device":
                raise ToolkitError(f"device {serial} is {d.state}: replug it or run `adb kill-server`, then retry")
            return d
    raise ToolkitError(f"device {serial} is not connected (adb devices lists: {listed})")


def choose_cpu(freq_lines: str) -> int | None:
    """The core with the highest max frequency (ties: the higher index, where phones put big cores)."""
    best = None
    for line in freq_lines.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            cpu, freq = int(parts[0]), int(parts[1])
            if best is None or (freq, cpu) >= best:
                best = (freq, cpu)
    return None if best is None else best[1]


class AdbTransport(Transport):
    """A phone over adb. Files go to /data/local/tmp/toolkit/<run>/, the runner to .../bin/."""

    def __init__(self, serial: str | None, adb: str | None = None, cpu: int | None = None, pin: bool = True,
                 libs: list[Path] | None = None, remote_root: str = REMOTE_ROOT, keep_remote: bool = False):
        self.serial_arg = serial
        self.adb_arg = adb
        self.cpu = cpu
        self.pin = pin
        self.libs = libs or []
        self.remote_root = remote_root
        self.keep_remote = keep_remote
        self.serial = serial or "?"
        self.target = f"android:{self.serial}"
        self.measured_on = "android device"
        self.adb = ""
        self.mask: str | None = None
        self.bin_dir = f"{remote_root}/bin"

    # -- helpers
    def shell(self, cmd: str, timeout: float = 120, check: bool = True) -> str:
        return _adb(self.adb, ["shell", cmd], timeout=timeout, serial=self.serial, check=check).stdout

    def getprop(self, name: str) -> str:
        return self.shell(f"getprop {name}").strip()

    # -- Transport
    def preflight(self, runner: DeviceRunner) -> dict:
        self.adb = self.adb_arg or find_adb()
        dev = pick_device(list_devices(self.adb), self.serial_arg)
        self.serial = dev.serial
        self.target = f"android:{dev.serial}"
        abi = self.getprop("ro.product.cpu.abi")
        abilist = [a for a in self.getprop("ro.product.cpu.abilist").split(",") if a] or [abi]
        model = self.getprop("ro.product.model") or dev.model
        if runner.binary is None:
            raise ToolkitError("an Android run needs a runner binary (--runner PATH)")
        r_abi, r_machine = elf_abi(runner.binary)
        if r_abi != abi:
            also = f" (the device also runs {', '.join(a for a in abilist if a != abi)})" if len(abilist) > 1 else ""
            hint = "" if r_abi not in abilist else "; it may run, but numbers from a non-primary ABI are not representative"
            raise ToolkitError(
                f"runner {runner.binary.name} is built for {r_abi} ({r_machine}) but device {dev.serial} ({model}) is "
                f"{abi}{also}{hint}: rebuild it with the NDK for {abi} (e.g. -DANDROID_ABI={abi})"
            )
        for lib in self.libs:
            l_abi, _ = elf_abi(lib)
            if l_abi != abi:
                raise ToolkitError(f"library {lib.name} is built for {l_abi} but device {dev.serial} is {abi}")
        cpu = self.cpu
        if self.pin:
            found = self.shell("command -v taskset || which taskset || ls /system/bin/taskset 2>/dev/null; true").strip()
            if not found:
                raise ToolkitError(
                    f"device {dev.serial} ({model}) has no taskset, so the runner cannot be pinned to one core: use a "
                    f"device with Android 7+ toybox, push a static busybox with taskset onto PATH, or pass --no-pin "
                    f"(numbers get noisier)"
                )
            if cpu is None:
                freqs = self.shell('for c in /sys/devices/system/cpu/cpu[0-9]*; do '
                                   'echo "${c##*/cpu} $(cat $c/cpufreq/cpuinfo_max_freq 2>/dev/null)"; done')
                cpu = choose_cpu(freqs)
                if cpu is None:
                    cpu = 0
            self.mask = format(1 << cpu, "x")
        self.cpu = cpu
        # the runner binary (and its shared libraries) go once into bin/
        self.shell(f"mkdir -p {shlex.quote(self.bin_dir)}")
        for f in [runner.binary, *self.libs]:
            _adb(self.adb, ["push", str(f), f"{self.bin_dir}/{f.name}"], timeout=600, serial=self.serial)
        self.shell(f"chmod 755 {shlex.quote(self.bin_dir + '/' + runner.binary.name)}")
        if isinstance(runner, ExecutorRunner):
            helptext = self.shell(f"cd {self.bin_dir} && ./{runner.binary.name} --help 2>&1; true", check=False)
            flags = parse_gflags_help(helptext)
            if flags:
                runner.flags = flags
            if runner.etdump_dir is None:
                runner.etdump_dir = Path(f"device-android-{dev.serial}-etdump")
        pinned = f"cpu{cpu} pinned" if self.pin else "not pinned"
        self.measured_on = f"android device {model} ({abi}), {pinned}, {runner.name}"
        info = {"device": f"{model} ({dev.serial})", "abi": abi, "abilist": abilist, "cpu": cpu, "pinned": self.pin,
                "runner": str(runner.binary), "runner_abi": r_abi, "state_at_start": self.snapshot()}
        if isinstance(runner, ExecutorRunner):
            info["runner_build"] = {"bundled_io": runner.bundle_io, "event_tracer": "etdump_path" in runner.flags}
        return info

    def snapshot(self) -> dict:
        """Thermal status + temperatures, battery level / charging, cpufreq governors (toolkit.device.phone_state)."""
        return snapshot(lambda cmd: self.shell(cmd, timeout=60, check=False), self.cpu if self.pin else None)

    def push(self, stage: Path) -> str:
        remote = f"{self.remote_root}/run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        self.shell(f"mkdir -p {shlex.quote(remote)}")
        dirs = sorted({str(p.parent.relative_to(stage)) for p in stage.rglob("*") if p.is_file()} - {"."})
        if dirs:
            self.shell("mkdir -p " + " ".join(shlex.quote(f"{remote}/{d}") for d in dirs))
        for p in sorted(q for q in stage.rglob("*") if q.is_file()):
            _adb(self.adb, ["push", str(p), f"{remote}/{p.relative_to(stage).as_posix()}"], timeout=600,
                 serial=self.serial)
        return remote

    def execute(self, inv: Invocation, remote: str, timeout: float) -> ExecResult:
        argv = list(inv.argv)
        if argv[0].startswith("./"):
            argv[0] = f"{self.bin_dir}/{argv[0][2:]}"
        pin = f"taskset {self.mask} " if self.pin and self.mask else ""
        cmd = (f"cd {shlex.quote(remote)} && LD_LIBRARY_PATH={shlex.quote(self.bin_dir)}:$LD_LIBRARY_PATH "
               f"{pin}{' '.join(shlex.quote(a) for a in argv)} 2>&1; echo {_RC}$?")
        p = _adb(self.adb, ["shell", cmd], timeout=timeout, serial=self.serial, check=False)
        out = (p.stdout or "") + (p.stderr or "")
        m = re.search(re.escape(_RC) + r"(\d+)", out)
        rc = int(m[1]) if m else (p.returncode or 255)
        return ExecResult(rc, out.replace(m[0], "") if m else out)

    def pull(self, remote: str, names: list[str], stage: Path) -> None:
        for n in names:
            dest = stage / n
            dest.parent.mkdir(parents=True, exist_ok=True)
            _adb(self.adb, ["pull", f"{remote}/{n}", str(dest)], timeout=600, serial=self.serial, check=False)

    def cleanup(self, remote: str) -> None:
        if not self.keep_remote and self.adb:
            _adb(self.adb, ["shell", f"rm -rf {shlex.quote(remote)}"], timeout=120, serial=self.serial, check=False)


RUNNER_KINDS = ("onnxruntime_perf_test", "executor_runner")


def make_runner(path: str | Path, kind: str | None, threads: int = 1, extra_args: list[str] | None = None,
                etdump_dir: Path | None = None) -> DeviceRunner:
    p = Path(path)
    if not p.is_file():
        raise ToolkitError(f"runner binary not found: {p} (build or download one: see android_harness/README.md)")
    if kind is None:
        name = p.name.lower()
        if "perf_test" in name:
            kind = "onnxruntime_perf_test"
        elif "executor_runner" in name:
            kind = "executor_runner"
        else:
            raise ToolkitError(f"cannot tell which runner {p.name} is: pass --runner-kind "
                               f"({' or '.join(RUNNER_KINDS)})")
    if kind == "onnxruntime_perf_test":
        return OrtPerfTestRunner(p, threads, extra_args)
    if kind == "executor_runner":
        return ExecutorRunner(p, threads, extra_args, etdump_dir=etdump_dir)
    raise ToolkitError(f"--runner-kind must be one of {', '.join(RUNNER_KINDS)}, got {kind!r}")


def run_on_device(
    artifact_dir: str | Path,
    *,
    runner: str | Path,
    serial: str | None = None,
    runner_kind: str | None = None,
    models: list[str] | None = None,
    entries: list[str] | None = None,
    files: list[str] | None = None,
    warmup: int = 20,
    runs: int = 100,
    cpu: int | None = None,
    pin: bool = True,
    libs: list[str | Path] | None = None,
    runner_args: list[str] | None = None,
    adb: str | None = None,
    keep_remote: bool = False,
    etdump_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Latency rows for every artifact of the runner's runtime in `artifact_dir`, measured on the phone.

    ExecuTorch runners also check the export's bundled program on the phone and bring back the ETDump into
    `etdump_dir` (default ./device-android-<serial>-etdump) when their build supports it; every row carries the
    phone's thermal / battery / governor state read just before and after its timed calls (`device_state`)."""
    if warmup < 0 or runs < 1:
        raise ToolkitError(f"--warmup must be >= 0 and --runs >= 1 (got {warmup}, {runs})")
    run = make_runner(runner, runner_kind, extra_args=runner_args,
                      etdump_dir=Path(etdump_dir) if etdump_dir is not None else None)
    manifest = load_manifest(artifact_dir)
    arts = select_artifacts(manifest, run.runtimes, models, entries, files)
    cases = build_cases(manifest, arts)
    transport = AdbTransport(serial, adb=adb, cpu=cpu, pin=pin, libs=[Path(x) for x in libs or []],
                             keep_remote=keep_remote)
    info, meas = run_cases(transport, run, cases, warmup=warmup, runs=runs, parity_steps=0, progress=progress)
    rows = []
    for c in cases:
        m = meas[c.index]
        check = m.extra.get("bundled_check") or {}
        note = ("bundled program case 0, checked on the device by executor_runner (max abs error of every output and "
                "state)" if check.get("pass") is not None else
                "not checked on the device (the runner prints no outputs); ARM64 numerics are checked on the "
                f"{TARGET} target")
        rows.append(make_row(c, m, target=transport.target, measured_on=transport.measured_on, manifest=manifest.raw,
                             parity_err=m.parity_err, parity_tol=None, parity_note=note,
                             extra={"latency_ms": None} if not (m.latency_ms or m.latency_mean_only) else None))
    info.update({"target": transport.target, "artifact_dir": str(manifest.root), "warmup": warmup, "runs": runs})
    return {"rows": rows, "info": info}
