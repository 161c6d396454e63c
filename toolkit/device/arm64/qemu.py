"""Running the guest Python under qemu-aarch64 with the instruction-count plugin, and reading what it counted.

Everything the guest can observe is fixed, so per-region counts are identical from one process to the next
(the whole point of counting instructions). Each item below removed a difference we measured:
  - environment: hash seed, one thread everywhere, onnxruntime's telemetry thread off, a fixed work folder;
  - address space: `-R` reserves the guest's address range up front, so where its mmaps land no longer
    depends on the host process's own (randomised) mappings (it moved the C library's share by ~0.1%);
  - time: libfaketime preloaded in the guest, a virtual clock advancing 1 ms per call, so time-based branches
    (onnxruntime's Run() checks telemetry intervals) are taken at the same call every run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.device.arm64.layout import CPU_MODEL, FAKE_EPOCH, FAKETIME_LIB, Layout, qemu_binary
from toolkit.errors import ToolkitError

RESERVED_VA = "0x1000000000"  # 64 GiB of guest address space, reserved at start (qemu -R)


def qemu_argv(lay: Layout, plugin_out: Path | None, cpu: str = CPU_MODEL, program: Path | None = None) -> list[str]:
    """qemu-aarch64 ... python3.11 (the caller appends the script and its arguments), or ... `program` (an aarch64
    executable, e.g. the ExecuTorch C++ runner) in the same fixed guest setting, minus libfaketime: the runner
    segfaults under its advancing clock (libtorch_cpu's start-up), and nothing it counts takes time-based branches
    (its clock reads are outside the marked regions)."""
    qemu = qemu_binary()
    if not qemu:
        raise ToolkitError("qemu-aarch64 not found (apt-get install qemu-user, or `toolkit device setup arm64`)")
    import time

    start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(FAKE_EPOCH))
    guest_only = {  # -E: set in the guest's environment only (the host-side qemu must not preload an ARM library)
        "LD_PRELOAD": FAKETIME_LIB,
        "FAKETIME": f"@{start} i0.001",
        "FAKETIME_DONT_FAKE_MONOTONIC": "0",
        "FAKETIME_CACHE_DURATION": "1000000000",
        "NO_FAKE_STAT": "1",
        "TZ": "UTC",
    }
    argv = [qemu, "-R", RESERVED_VA, "-cpu", cpu, "-L", str(lay.sysroot)]
    for k, v in guest_only.items() if program is None else {"TZ": "UTC"}.items():
        argv += ["-E", f"{k}={v}"]
    if plugin_out is not None:
        argv += ["-plugin", f"{lay.plugin},out={plugin_out}"]
    return argv + ([str(program)] if program is not None else [str(lay.guest_python), "-B", "-s"])


def guest_env(lay: Layout, workdir: Path, extra_site: list[Path] | None = None) -> dict[str, str]:
    """A clean, fixed environment: nothing from the host leaks in (counts must not depend on who runs them)."""
    (workdir / "home").mkdir(parents=True, exist_ok=True)
    paths = [str(p) for p in (extra_site or [])] + [str(lay.site)]
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(workdir / "home"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": ":".join(paths),
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        # onnxruntime >= 1.2x starts a OneDS telemetry thread at import whose wake-ups (timers, upload retries)
        # depend on host timing; it made counts differ between runs. No network in the guest anyway.
        "ORT_DISABLE_TELEMETRY": "1",
    }


@dataclass
class Icount:
    """What the plugin wrote: region id -> instruction count per occurrence, plus guest thread counts."""

    regions: dict[int, list[int]] = field(default_factory=dict)
    threads: dict[int, int] = field(default_factory=dict)  # region id -> most guest threads alive during it
    all_threads: dict[int, list[int]] = field(default_factory=dict)  # region id -> instructions of every thread
    ranges: dict[int, list[list[int]]] = field(default_factory=dict)  # region id -> per occurrence, per code range
    errors: list[str] = field(default_factory=list)
    total: int | None = None
    raw: str = ""


_REGION = re.compile(r"^region (\d+) (\d+) (\d+) (\d+)(?: (\d+))?(?: ranges=([\d,]+))?$")


def parse_icount(path: Path) -> Icount:
    """Read the plugin's output file (format in qemu_icount.c)."""
    if not path.is_file():
        raise ToolkitError(f"the instruction-count plugin wrote nothing ({path}): did qemu load it?")
    text = path.read_text()
    out = Icount(raw=text)
    lines = text.splitlines()
    if not lines or not lines[0].startswith("toolkit-icount 1"):
        raise ToolkitError(f"{path} is not an instruction-count file (first line {lines[:1]!r})")
    for line in lines[1:]:
        m = _REGION.match(line)
        if m:
            rid, count, threads = int(m[1]), int(m[2]), int(m[3])
            out.regions.setdefault(rid, []).append(count)
            out.threads[rid] = max(out.threads.get(rid, 0), threads)
            if m[5] is not None:
                out.all_threads.setdefault(rid, []).append(int(m[5]))
            if m[6] is not None:
                out.ranges.setdefault(rid, []).append([int(x) for x in m[6].split(",")])
        elif line.startswith("end "):
            out.total = int(line.split()[1])
        elif line.startswith("error "):
            out.errors.append(line[6:])
    return out
