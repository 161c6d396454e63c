"""The emulated ARM64 target, a small sub-package with one-way imports: layout <- qemu <- target.

- layout.py  the cache folder layout and the fixed facts (cpu model, guest python, plugin source)
- qemu.py    running the guest Python under qemu-aarch64 with the instruction-count plugin; reading the counts
- target.py  building the target piece by piece (`toolkit device setup arm64`), status, require_ready

`from toolkit.device import arm64` gives the public names below.
"""

from toolkit.device.arm64.layout import CPU_MODEL, DEFAULT_MIRROR, PLUGIN_SOURCE, TARGET, Layout, layout
from toolkit.device.arm64.target import (
    PieceResult,
    Status,
    build_sysroot,
    ensure_host_tools,
    require_executorch,
    require_ready,
    setup,
    status,
)

__all__ = ["CPU_MODEL", "DEFAULT_MIRROR", "PLUGIN_SOURCE", "TARGET", "Layout", "layout", "PieceResult", "Status",
           "build_sysroot", "ensure_host_tools", "require_executorch", "require_ready", "setup", "status"]
