"""Where the emulated ARM64 target lives (its cache folder layout) and the fixed facts it is built from.

The bottom of the arm64 sub-package: qemu.py (running the guest) and target.py (building and checking it) import
this module; it imports neither.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.io import cache_dir

TARGET = "arm64-a76"  # the emulated target's profile name (benches/targets/arm64-a76.toml)
SUITE = "bookworm"
GUEST_PYTHON = "python3.11"
# libfaketime gives the guest a virtual clock that advances a fixed step per call: onnxruntime's Run() takes
# time-based branches (telemetry intervals), which otherwise made a call now and then count ~200 more.
GUEST_PACKAGES = (GUEST_PYTHON, "libfaketime")
FAKETIME_LIB = "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"
CPU_MODEL = "neoverse-n1"
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
APT_PACKAGES = ("qemu-user", "debootstrap", "gcc", "libc6-dev")
PLUGIN_SOURCE = Path(__file__).with_name("qemu_icount.c")
PLUGIN_NAME = "libtoolkit_icount.so"
EXECUTORCH_NOTE = (
    "the ExecuTorch C++ runner for aarch64 is built from the executorch and torch aarch64 wheels (about 450 MB "
    "download, 330 MB on disk) with g++-aarch64-linux-gnu and patchelf"
)

# A Neoverse-N1 as Linux shows it (same Armv8.2 feature set as a phone's Cortex-A76 core, part 0xd0c).
CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

"""


FAKE_EPOCH = 1704067200  # 2024-01-01 00:00:00 UTC: where the guest's virtual clock starts


def default_cache_dir() -> Path:
    """toolkit.io.cache_dir("arm64"): $TOOLKIT_CACHE/arm64, else ~/.cache/toolkit/arm64 (XDG_CACHE_HOME honoured)."""
    return cache_dir("arm64")


@dataclass
class Layout:
    """Where each piece lives inside the cache folder."""

    root: Path

    @property
    def sysroot(self) -> Path:
        return self.root / "sysroot"

    @property
    def guest_python(self) -> Path:
        return self.sysroot / "usr" / "bin" / GUEST_PYTHON

    @property
    def site(self) -> Path:
        return self.root / "site"

    @property
    def site_executorch(self) -> Path:
        return self.root / "site-executorch"

    @property
    def executorch_cpp(self) -> Path:
        """The aarch64 ExecuTorch C++ runner and its libraries (toolkit.device.et_cpp)."""
        return self.root / "executorch-cpp"

    @property
    def plugin(self) -> Path:
        return self.root / "plugin" / PLUGIN_NAME

    @property
    def cpuinfo(self) -> Path:
        return self.sysroot / "proc" / "cpuinfo"

    def stamp(self, piece: str) -> Path:
        return self.root / "stamps" / f"{piece}.json"

    @property
    def descriptor(self) -> Path:
        return self.root / "target.json"


def layout(cache: str | Path | None = None) -> Layout:
    return Layout(Path(cache).expanduser().resolve() if cache else default_cache_dir())


def host_versions() -> dict[str, str]:
    """The library versions the guest must match (host onnxruntime and numpy)."""
    out = {}
    for dist in ("onnxruntime", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            raise ToolkitError(f"{dist} is not installed on the host (pip install {dist})") from None
    return out


def qemu_binary() -> str | None:
    return shutil.which("qemu-aarch64")


def qemu_version(qemu: str) -> str:
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30).stdout
    return out.splitlines()[0].strip() if out else "unknown"


