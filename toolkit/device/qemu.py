"""Running the guest Python under qemu-aarch64 with the instruction-count plugin, and reading what it counted.

The guest environment is fixed (hash seed, thread counts, relative paths): with it the per-region counts are
identical from one process to the next, which is the whole point of counting instructions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.device.arm64 import CPU_MODEL, Layout
from toolkit.errors import ToolkitError


def qemu_argv(lay: Layout, plugin_out: Path | None, cpu: str = CPU_MODEL, extra_site: list[Path] | None = None) -> list[str]:
    """qemu-aarch64 ... python3.11 (the caller appends the script and its arguments)."""
    from toolkit.device.arm64 import qemu_binary

    qemu = qemu_binary()
    if not qemu:
        raise ToolkitError("qemu-aarch64 not found (apt-get install qemu-user, or `toolkit device setup arm64`)")
    argv = [qemu, "-cpu", cpu, "-L", str(lay.sysroot)]
    if plugin_out is not None:
        argv += ["-plugin", f"{lay.plugin},out={plugin_out}"]
    return argv + [str(lay.guest_python), "-B", "-s"]


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
    errors: list[str] = field(default_factory=list)
    total: int | None = None
    raw: str = ""


_REGION = re.compile(r"^region (\d+) (\d+) (\d+) (\d+)(?: (\d+))?$")


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
        elif line.startswith("end "):
            out.total = int(line.split()[1])
        elif line.startswith("error "):
            out.errors.append(line[6:])
    return out
