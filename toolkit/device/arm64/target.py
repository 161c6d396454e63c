"""The emulated ARM64 target: build it once into a cache folder, then say whether it is ready (and why not).

Pieces, each checked on every `setup` and rebuilt only when missing or stale (so a second run takes seconds):
  host-tools  qemu-user (qemu-aarch64 with plugin support), debootstrap, gcc  (apt-get when root)
  sysroot     Debian bookworm arm64 minbase + python3.11 + libfaketime (`debootstrap --foreign`, then `dpkg -x`
              every deb: no chroot, no binfmt)
  cpuinfo     sysroot/proc/cpuinfo describing a Neoverse-N1; qemu -L redirects the guest's /proc/cpuinfo
              there; without it onnxruntime (cpuinfo) segfaults at import under qemu
  wheels      onnxruntime + numpy manylinux_2_28_aarch64 wheels, same versions as the host (parity is then
              about the CPU, not the library version)
  plugin      qemu_icount.c built with gcc into a TCG plugin (instruction count between markers)
  smoke       the guest Python imports numpy + onnxruntime under qemu with the plugin and counts one region
Optional (`--with-executorch`): the ExecuTorch C++ runner for aarch64 (toolkit.device.et_cpp: the runtime library
of the executorch aarch64 wheel + libtorch_cpu's CPU libraries, cross-compiled runner), checked under qemu.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from toolkit.device.arm64.layout import (
    APT_PACKAGES,
    CPU_MODEL,
    CPUINFO,
    DEFAULT_MIRROR,
    EXECUTORCH_NOTE,
    FAKE_EPOCH,
    FAKETIME_LIB,
    GUEST_PACKAGES,
    GUEST_PYTHON,
    PLUGIN_NAME,
    PLUGIN_SOURCE,
    SUITE,
    TARGET,
    WHEEL_PLATFORM,
    Layout,
    default_cache_dir,
    host_versions,
    layout,
    qemu_binary,
    qemu_version,
)
from toolkit.device.arm64.qemu import guest_env, parse_icount, qemu_argv
from toolkit.errors import ToolkitError
from toolkit.io import atomic_dir, atomic_write_json, atomic_write_text, read_json, sha256_file, size_path


def _read_stamp(lay: Layout, piece: str) -> dict | None:
    p = lay.stamp(piece)
    try:
        return read_json(p, "setup stamp")  # toolkit.io: binary / non-object / malformed -> ToolkitError
    except ToolkitError:
        return None


def _write_stamp(lay: Layout, piece: str, data: dict) -> None:
    atomic_write_json(lay.stamp(piece), data)


# --------------------------------------------------------------------------------------------- readiness


@dataclass
class Status:
    ready: bool
    reason: str  # why not (with the fix), or a one-line summary when ready
    cache: Path
    pieces: dict[str, str] = field(default_factory=dict)  # piece -> "ok" | reason
    executorch: bool = False
    executorch_reason: str = ""  # why the ExecuTorch lane is not usable ("" when it is)

    def to_dict(self) -> dict:
        return {"ready": self.ready, "reason": self.reason, "cache": str(self.cache), "pieces": self.pieces,
                "executorch": self.executorch, "executorch_reason": self.executorch_reason}


def _piece_problems(lay: Layout) -> dict[str, str]:
    """Cheap checks only (no qemu run): what is missing or stale, piece by piece."""
    probs: dict[str, str] = {}
    qemu = qemu_binary()
    if not qemu:
        probs["host-tools"] = "qemu-aarch64 not found (apt-get install qemu-user)"
    else:
        probs["host-tools"] = "ok"
    st = _read_stamp(lay, "sysroot") or {}
    if not lay.guest_python.is_file() or st.get("suite") != SUITE:
        probs["sysroot"] = f"no ARM64 sysroot in {lay.sysroot}"
    elif st.get("packages_included") != list(GUEST_PACKAGES) or not (lay.sysroot / FAKETIME_LIB.lstrip("/")).is_file():
        probs["sysroot"] = f"ARM64 sysroot in {lay.sysroot} lacks {', '.join(GUEST_PACKAGES)} (built by an older toolkit)"
    else:
        probs["sysroot"] = "ok"
    try:
        cpu_ok = lay.cpuinfo.read_text() == CPUINFO
    except OSError:
        cpu_ok = False
    probs["cpuinfo"] = "ok" if cpu_ok else f"no ARM /proc/cpuinfo file at {lay.cpuinfo}"
    st = _read_stamp(lay, "wheels") or {}
    try:
        want = host_versions()
    except ToolkitError as e:
        want = {}
        probs["wheels"] = str(e)
    if "wheels" not in probs:
        if not (lay.site / "onnxruntime").is_dir() or not (lay.site / "numpy").is_dir():
            probs["wheels"] = f"no aarch64 onnxruntime/numpy in {lay.site}"
        elif st.get("versions") != want:
            probs["wheels"] = f"aarch64 wheels {st.get('versions')} do not match host {want}"
        else:
            probs["wheels"] = "ok"
    st = _read_stamp(lay, "plugin") or {}
    if not lay.plugin.is_file():
        probs["plugin"] = f"instruction-count plugin not built ({lay.plugin})"
    elif st.get("source_sha256") != sha256_file(PLUGIN_SOURCE):
        probs["plugin"] = "plugin source changed since it was built"
    else:
        probs["plugin"] = "ok"
    smoke = _read_stamp(lay, "smoke") or {}
    if all(v == "ok" for v in probs.values()) and smoke.get("key") != _smoke_key(lay):
        probs["smoke"] = "not yet checked under qemu"
    else:
        probs["smoke"] = "ok" if smoke.get("key") == _smoke_key(lay) else "waiting for the pieces above"
    return probs


def status(cache: str | Path | None = None) -> Status:
    """Is the emulated target usable right now? `reason` names the missing piece and the command that fixes it."""
    lay = layout(cache)
    probs = _piece_problems(lay)
    bad = {k: v for k, v in probs.items() if v != "ok"}
    et_problem = executorch_problem(lay)
    et = et_problem is None
    if not bad:
        d = _read_stamp(lay, "smoke") or {}
        return Status(True, f"ready: {d.get('qemu', 'qemu')}, onnxruntime {d.get('onnxruntime')} (aarch64), "
                            f"-cpu {CPU_MODEL}" + (", ExecuTorch C++ runner" if et else ""), lay.root, probs, et,
                      et_problem or "")
    first = next(iter(bad))
    fix = "toolkit device setup arm64" + (f" --cache {lay.root}" if lay.root != default_cache_dir() else "")
    return Status(False, f"{first}: {bad[first]}; run `{fix}`", lay.root, probs, et, et_problem or "")


def require_ready(cache: str | Path | None = None) -> Layout:
    st = status(cache)
    if not st.ready:
        raise ToolkitError(f"emulated ARM64 target is not set up ({st.reason})")
    return layout(cache)


# --------------------------------------------------------------------------------------------------- setup

Report = Callable[[str, str], None]  # (piece, message)


@dataclass
class PieceResult:
    piece: str
    action: str  # "cached" | "built"
    seconds: float
    detail: str = ""


def _run(cmd: list[str], what: str, fix: str, timeout: float = 1800, env: dict | None = None,
         cwd: str | Path | None = None) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    except FileNotFoundError:
        raise ToolkitError(f"{what}: '{cmd[0]}' not found ({fix})") from None
    except subprocess.TimeoutExpired:
        raise ToolkitError(f"{what}: timed out after {timeout:.0f}s ({' '.join(cmd[:3])} ...)") from None
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr or p.stdout).strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith(("ERROR", "E:", "error", "Error"))]
        tail = (errors or lines)[-2:]
        raise ToolkitError(f"{what} failed (exit {p.returncode}): {' | '.join(tail)} ({fix})")
    return p.stdout


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def ensure_host_tools(apt: bool = True) -> str:
    need = {"qemu-aarch64": "qemu-user", "debootstrap": "debootstrap", "gcc": "gcc", "dpkg": "dpkg"}
    missing = sorted({pkg for tool, pkg in need.items() if not shutil.which(tool)})
    if missing:
        if not apt or not shutil.which("apt-get") or not _is_root():
            why = "--no-apt given" if not apt else ("apt-get not found" if not shutil.which("apt-get") else "not root")
            raise ToolkitError(
                f"host tools missing: {', '.join(missing)} ({why}); install them with "
                f"`sudo apt-get install -y qemu-user debootstrap gcc libc6-dev`, then re-run `toolkit device setup arm64`"
            )
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run(["apt-get", "update"], "apt-get update", "check network access to the Debian mirror", env=env)
        _run(["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES], "apt-get install",
             "check network access to the Debian mirror", env=env)
    qemu = qemu_binary()
    assert qemu
    helptext = subprocess.run([qemu, "-h"], capture_output=True, text=True, timeout=30).stdout
    if "-plugin" not in helptext:
        raise ToolkitError(f"{qemu} was built without TCG plugin support (no -plugin option); install Debian's "
                           f"qemu-user 7.2+ (not qemu-user-static, which cannot load plugins)")
    if CPU_MODEL not in subprocess.run([qemu, "-cpu", "help"], capture_output=True, text=True, timeout=30).stdout:
        raise ToolkitError(f"{qemu} does not know -cpu {CPU_MODEL}; install qemu-user 7.0 or newer")
    return qemu_version(qemu)


def build_sysroot(lay: Layout, mirror: str) -> str:
    if not shutil.which("debootstrap"):
        raise ToolkitError("debootstrap not found (apt-get install debootstrap)")
    if not _is_root():
        raise ToolkitError(
            "building the ARM64 sysroot needs root (debootstrap creates device nodes and root-owned files): "
            "run `sudo toolkit device setup arm64`, or point --cache / $TOOLKIT_CACHE at a folder built elsewhere"
        )
    with atomic_dir(lay.sysroot, force=True) as tmp:  # built beside the old one, swapped in whole
        _run(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase", f"--include={','.join(GUEST_PACKAGES)}", SUITE,
              str(tmp), mirror], "debootstrap (arm64 sysroot)",
             f"check that {mirror} is reachable; set --mirror or $TOOLKIT_DEBIAN_MIRROR to a closer Debian mirror")
        debs = sorted((tmp / "var" / "cache" / "apt" / "archives").glob("*.deb"))
        if not debs:
            raise ToolkitError(f"debootstrap downloaded no packages into {tmp}")
        for deb in debs:  # --foreign only unpacks the essential set; python3.11 and its libraries come from here
            _run(["dpkg", "-x", str(deb), str(tmp)], f"dpkg -x {deb.name}", "the download may be corrupt; re-run")
            deb.unlink()
        for junk in ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info", "var/lib/apt/lists"):
            shutil.rmtree(tmp / junk, ignore_errors=True)
        if not (tmp / "usr" / "bin" / GUEST_PYTHON).is_file():
            raise ToolkitError(f"the sysroot has no /usr/bin/{GUEST_PYTHON} after unpacking ({len(debs)} debs)")
        precompile(tmp / "usr" / "lib" / GUEST_PYTHON)
    _write_stamp(lay, "sysroot", {"suite": SUITE, "python": GUEST_PYTHON, "packages_included": list(GUEST_PACKAGES),
                                  "mirror": mirror, "packages": len(debs)})
    return f"{len(debs)} packages"


def precompile(folder: Path) -> None:
    """Byte-compile the guest's Python files with the host's Python 3.11 (.pyc is CPU independent).

    Debian's postinst would do this in a real install; without it every emulated run recompiles the stdlib,
    numpy and onnxruntime from source (seconds of emulated time per run).
    """
    if sys.version_info[:2] != (3, 11):
        return  # a different magic number: the guest would ignore the files
    import compileall
    import re

    skip = re.compile(r"[/\\](tests?|idlelib|tkinter|turtledemo|lib2to3|ensurepip)[/\\]")
    compileall.compile_dir(str(folder), quiet=2, workers=0, legacy=False, rx=skip)


def write_cpuinfo(lay: Layout) -> None:
    lay.cpuinfo.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(lay.cpuinfo, CPUINFO)


def install_wheels(lay: Layout) -> str:
    want = host_versions()
    with atomic_dir(lay.site, force=True) as tmp:  # built beside the old one, swapped in whole
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--target", str(tmp),
              "--platform", WHEEL_PLATFORM, "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
              "--only-binary=:all:", *(f"{k}=={v}" for k, v in want.items())],
             f"pip download of aarch64 wheels ({', '.join(f'{k}=={v}' for k, v in want.items())})",
             "pip needs access to PyPI (or an index that has the manylinux_2_28_aarch64 wheels)")
        precompile(tmp)
    _write_stamp(lay, "wheels", {"versions": want, "platform": WHEEL_PLATFORM})
    return ", ".join(f"{k} {v}" for k, v in want.items())


def build_plugin(lay: Layout) -> str:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        raise ToolkitError("gcc not found: the instruction-count plugin is built from C (apt-get install gcc libc6-dev)")
    lay.plugin.parent.mkdir(parents=True, exist_ok=True)
    tmp = lay.plugin.with_name(f".{PLUGIN_NAME}.{os.getpid()}.tmp")
    _run([gcc, "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-Wall", "-Wextra", "-Werror", "-o", str(tmp),
          str(PLUGIN_SOURCE)], "building the qemu plugin", "gcc and libc6-dev must be installed")
    os.replace(tmp, lay.plugin)
    _write_stamp(lay, "plugin", {"source_sha256": sha256_file(PLUGIN_SOURCE), "compiler": gcc})
    return str(lay.plugin)


def _smoke_key(lay: Layout) -> str:
    parts = [json.dumps(_read_stamp(lay, p), sort_keys=True) for p in ("sysroot", "wheels", "plugin")]
    return sha256_text("|".join(parts) + CPUINFO)


def sha256_text(s: str) -> str:
    import hashlib

    return hashlib.sha256(s.encode()).hexdigest()


SMOKE_SCRIPT = """
import ctypes, json, time, numpy, onnxruntime
libc = ctypes.CDLL(None)
for op in (1, 2):
    libc.syscall(ctypes.c_long(172), ctypes.c_ulong(0x746f6f6c6b6974), ctypes.c_long(op), ctypes.c_long(7))
print(json.dumps({"numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__, "clock": time.time(),
                  "monotonic": time.monotonic(), "providers": onnxruntime.get_available_providers()}))
"""


def smoke_test(lay: Layout) -> str:
    with tempfile.TemporaryDirectory(prefix="toolkit-arm64-smoke-") as tmp:
        out = Path(tmp) / "icount.txt"
        argv = qemu_argv(lay, plugin_out=out) + ["-c", SMOKE_SCRIPT]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=guest_env(lay, Path(tmp)), cwd=tmp)
        if p.returncode != 0:
            tail = " | ".join((p.stderr or p.stdout).strip().splitlines()[-3:])
            hint = (" (a segfault at import usually means the ARM /proc/cpuinfo file is missing)"
                    if p.returncode in (-11, 139) or "Segmentation" in tail else "")
            raise ToolkitError(f"smoke test under qemu failed (exit {p.returncode}): {tail}{hint}")
        info = json.loads(p.stdout.strip().splitlines()[-1])
        clocks = (info.pop("clock"), info.pop("monotonic"))
        if not all(FAKE_EPOCH <= c < FAKE_EPOCH + 3600 for c in clocks):
            raise ToolkitError(f"the guest clock is not the virtual one (libfaketime not preloaded from {FAKETIME_LIB}?)")
        counts = parse_icount(out)
        if 7 not in counts.regions:
            raise ToolkitError(f"the instruction-count plugin recorded no marker region ({out}: {counts.raw[:200]!r})")
    qv = qemu_version(qemu_binary() or "qemu-aarch64")
    _write_stamp(lay, "smoke", {"key": _smoke_key(lay), "qemu": qv, **info})
    return f"onnxruntime {info['onnxruntime']} + numpy {info['numpy']} import under {qv.split(' (')[0]}"


def setup(
    cache: str | Path | None = None,
    *,
    apt: bool = True,
    mirror: str | None = None,
    force: bool = False,
    with_executorch: bool = False,
    report: Report | None = None,
) -> tuple[Status, list[PieceResult]]:
    """Build (or verify) every piece; returns the final status and what was done per piece."""
    report = report or (lambda piece, msg: None)
    lay = layout(cache)
    lay.root.mkdir(parents=True, exist_ok=True)
    mirror = mirror or os.environ.get("TOOLKIT_DEBIAN_MIRROR") or DEFAULT_MIRROR
    results: list[PieceResult] = []

    def step(piece: str, needed: bool, build: Callable[[], str], cached_detail: str = "") -> None:
        t0 = time.monotonic()
        if needed or force:
            report(piece, "building")
            detail = build()
            results.append(PieceResult(piece, "built", time.monotonic() - t0, detail))
        else:
            results.append(PieceResult(piece, "cached", time.monotonic() - t0, cached_detail))
        report(piece, "done")

    report("host-tools", "checking")
    t0 = time.monotonic()
    qv = ensure_host_tools(apt)
    results.append(PieceResult("host-tools", "checked", time.monotonic() - t0, qv))
    report("host-tools", "done")
    probs = _piece_problems(lay)
    step("sysroot", probs["sysroot"] != "ok", lambda: build_sysroot(lay, mirror), f"{SUITE} arm64 + {GUEST_PYTHON}")
    step("cpuinfo", _piece_problems(lay)["cpuinfo"] != "ok", lambda: (write_cpuinfo(lay), CPU_MODEL)[1], CPU_MODEL)
    step("wheels", probs["wheels"] != "ok", lambda: install_wheels(lay),
         ", ".join(f"{k} {v}" for k, v in host_versions().items()))
    step("plugin", probs["plugin"] != "ok", lambda: build_plugin(lay), str(lay.plugin))
    step("smoke", _piece_problems(lay)["smoke"] != "ok", lambda: smoke_test(lay), "checked before")
    et_error = None
    if with_executorch:
        try:
            step("executorch", executorch_problem(lay) is not None, lambda: install_executorch(lay, apt),
                 "built and checked before")
        except ToolkitError as e:  # the ONNX lane above stays usable; the refusal is reported after the descriptor
            et_error = e
            results.append(PieceResult("executorch", "failed", 0.0, str(e)))
            report("executorch", "failed")
    st = status(cache)
    atomic_write_json(lay.descriptor, {
        "target": TARGET,
        "cpu": CPU_MODEL,
        "ready": st.ready,
        "qemu": qv,
        "suite": SUITE,
        "guest_python": GUEST_PYTHON,
        "wheels": (_read_stamp(lay, "wheels") or {}).get("versions"),
        "plugin_source_sha256": sha256_file(PLUGIN_SOURCE),
        "executorch": st.executorch,
        "disk_bytes": size_path(lay.root),
        "setup_seconds": {r.piece: round(r.seconds, 1) for r in results},
    })
    if et_error is not None:
        raise ToolkitError(f"--with-executorch: {et_error} (the ONNX lane is {'ready' if st.ready else 'not ready'})")
    return st, results


def executorch_problem(lay: Layout) -> str | None:
    """None when the aarch64 ExecuTorch C++ runner is built, current and passed its check under qemu; else why not."""
    from toolkit.device import et_cpp

    st = _read_stamp(lay, "executorch") or {}
    lane = et_cpp.aarch64_lane(lay.root)
    problem = lane.problem()
    if problem is not None:
        return problem
    if not st.get("ok") or st.get("runner_build") != (lane.info() or {}).get("runner_source_sha256"):
        return "ExecuTorch C++ runner not yet checked under qemu"
    return None


def install_executorch(lay: Layout, apt: bool = True) -> str:
    """Opt-in ExecuTorch lane: build the aarch64 C++ runner (toolkit.device.et_cpp), then check it under qemu.

    The check loads the runtime (libtorch_cpu's static initialisers run: ~4 s of emulated time), resets the
    threadpool to one thread and records the plugin's marker region; a file that is not there must come back as
    the runner's own error line, not a crash.
    """
    from toolkit.device import et_cpp

    detail = et_cpp.build_aarch64(lay.root, apt=apt)
    lane = et_cpp.aarch64_lane(lay.root)
    with tempfile.TemporaryDirectory(prefix="toolkit-arm64-et-smoke-") as tmp:
        out = Path(tmp) / "icount.txt"
        argv = qemu_argv(lay, plugin_out=out, program=lane.runner) + [
            "--model", "missing.pte", "--step", "missing.bin", "--results", "r.json", "--markers"]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=guest_env(lay, Path(tmp)), cwd=tmp)
        res = Path(tmp) / "r.json"
        if p.returncode != 0 or not res.is_file():
            tail = " | ".join([ln for ln in (p.stderr or p.stdout).splitlines() if ln.strip()][-2:])
            raise ToolkitError(f"ExecuTorch C++ runner check under qemu failed (exit {p.returncode}): {tail}")
        data = et_cpp.runner_results(res)
        err = data["cases"][0]["error"] or ""
        if "cannot open missing.pte" not in err or data.get("threadpool_threads", [0, 0])[1] != 1:
            raise ToolkitError(f"ExecuTorch C++ runner check under qemu: unexpected result {err!r}, threadpool "
                               f"{data.get('threadpool_threads')}")
        if data["overhead_region"] not in parse_icount(out).regions:
            raise ToolkitError("ExecuTorch C++ runner check under qemu: the plugin recorded no marker region")
    _write_stamp(lay, "executorch", {"ok": True, "route": "cpp", "versions": (lane.info() or {}).get("versions"),
                                     "runner_build": (lane.info() or {}).get("runner_source_sha256")})
    return detail


def require_executorch(cache: str | Path | None = None) -> Layout:
    lay = require_ready(cache)
    problem = executorch_problem(lay)
    if problem is not None:
        raise ToolkitError(
            f"ExecuTorch on emulated ARM64 is not set up ({problem}): run `toolkit device setup arm64 "
            f"--with-executorch` ({EXECUTORCH_NOTE}); ONNX artifacts run without it"
        )
    return lay
