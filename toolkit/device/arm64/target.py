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
Optional (`--with-executorch`): the aarch64 executorch wheel, which pulls the CUDA build of aarch64 torch (~4 GB).
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
from importlib import metadata
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
from toolkit.io import atomic_write_json, atomic_write_text, sha256_file, size_path
from toolkit.io import read_json

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

    def to_dict(self) -> dict:
        return {"ready": self.ready, "reason": self.reason, "cache": str(self.cache), "pieces": self.pieces,
                "executorch": self.executorch}


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
    et = (_read_stamp(lay, "executorch") or {}).get("ok", False)
    if not bad:
        d = _read_stamp(lay, "smoke") or {}
        return Status(True, f"ready: {d.get('qemu', 'qemu')}, onnxruntime {d.get('onnxruntime')} (aarch64), "
                            f"-cpu {CPU_MODEL}", lay.root, probs, et)
    first = next(iter(bad))
    fix = "toolkit device setup arm64" + (f" --cache {lay.root}" if lay.root != default_cache_dir() else "")
    return Status(False, f"{first}: {bad[first]}; run `{fix}`", lay.root, probs, et)


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
    lay.root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".sysroot.", dir=lay.root))
    try:
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
        if lay.sysroot.exists():
            shutil.rmtree(lay.sysroot)
        os.replace(tmp, lay.sysroot)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
    lay.root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".site.", dir=lay.root))
    try:
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--target", str(tmp),
              "--platform", WHEEL_PLATFORM, "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
              "--only-binary=:all:", *(f"{k}=={v}" for k, v in want.items())],
             f"pip download of aarch64 wheels ({', '.join(f'{k}=={v}' for k, v in want.items())})",
             "pip needs access to PyPI (or an index that has the manylinux_2_28_aarch64 wheels)")
        precompile(tmp)
        if lay.site.exists():
            shutil.rmtree(lay.site)
        os.replace(tmp, lay.site)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
    if with_executorch:
        step("executorch", not (_read_stamp(lay, "executorch") or {}).get("ok"), lambda: install_executorch(lay),
             "installed before")
    st = status(cache)
    atomic_write_json(lay.descriptor, {
        "target": "arm64-a76",
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
    return st, results


# Pure-Python (or aarch64-wheel) packages `import torch` + `executorch.runtime` need; the full dependency sets
# of both wheels pull in training / export tools we do not run in the guest.
EXECUTORCH_GUEST_DEPS = ("typing_extensions", "sympy", "mpmath==1.3.0", "networkx", "jinja2", "MarkupSafe",
                         "filelock", "fsspec", "packaging", "flatbuffers", "pyyaml", "ruamel.yaml", "tabulate")
AARCH64_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64",
                     "manylinux2014_aarch64")


def install_executorch(lay: Layout) -> str:
    """Opt-in ExecuTorch lane: executorch + aarch64 torch + the CUDA runtime wheels that torch preloads.

    PyPI's aarch64 torch is the CUDA build: `import torch` refuses to start without its CUDA libraries, which
    is where the ~4 GB goes. The CUDA requirements are read from the torch wheel's own metadata.
    """
    try:
        versions = {d: metadata.version(d) for d in ("executorch", "torch")}
    except metadata.PackageNotFoundError as e:
        raise ToolkitError(f"{e.name} is not installed on the host; the guest copies the host's version") from None
    torch_ver = versions["torch"].split("+")[0]
    free = shutil.disk_usage(lay.root).free
    if free < 12e9:
        raise ToolkitError(f"--with-executorch: {EXECUTORCH_NOTE}; only {free / 1e9:.1f} GB free in {lay.root}")
    plat = [x for p in AARCH64_PLATFORMS for x in ("--platform", p)]
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", *plat, "--python-version", "3.11",
           "--implementation", "cp", "--abi", "cp311", "--only-binary=:all:"]
    tmp = Path(tempfile.mkdtemp(prefix=".site-et.", dir=lay.root))
    try:
        _run([*pip, "--no-deps", "--target", str(tmp), f"executorch=={versions['executorch']}",
              f"torch=={torch_ver}", *EXECUTORCH_GUEST_DEPS],
             "pip download of aarch64 torch + executorch", f"{EXECUTORCH_NOTE}; pip needs access to PyPI",
             timeout=7200)
        meta = next(tmp.glob("torch-*.dist-info")) / "METADATA"
        cuda = [line.split(":", 1)[1].split(";")[0].strip() for line in meta.read_text().splitlines()
                if line.startswith("Requires-Dist:") and ("cuda" in line or "nvidia" in line) and "extra ==" not in line]
        if cuda:
            _run([*pip, "--target", str(tmp / "_cuda"), *cuda], "pip download of the CUDA runtime wheels aarch64 "
                 "torch preloads", f"{EXECUTORCH_NOTE}; these must exist as aarch64 wheels for torch=={torch_ver}",
                 timeout=7200)
        if lay.site_executorch.exists():
            shutil.rmtree(lay.site_executorch)
        os.replace(tmp, lay.site_executorch)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_stamp(lay, "executorch", {"ok": True, "versions": versions})
    return f"executorch {versions['executorch']}, torch {torch_ver} (aarch64, CUDA build)"


def require_executorch(cache: str | Path | None = None) -> Layout:
    lay = require_ready(cache)
    if not (_read_stamp(lay, "executorch") or {}).get("ok") or not lay.site_executorch.is_dir():
        raise ToolkitError(
            f"ExecuTorch on emulated ARM64 is not set up: {EXECUTORCH_NOTE}. If you want it, run "
            f"`toolkit device setup arm64 --with-executorch`; otherwise drop --with-executorch (ONNX artifacts run "
            f"without it)"
        )
    return lay
