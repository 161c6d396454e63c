"""Which Android ABI an executable is built for, read from its ELF header (no tools needed)."""

from __future__ import annotations

import struct
from pathlib import Path

from toolkit.errors import ToolkitError

# e_machine -> (Android ABI, human name) for each ELF class
_ABI = {
    (2, 183): ("arm64-v8a", "AArch64"),
    (1, 40): ("armeabi-v7a", "32-bit ARM"),
    (2, 62): ("x86_64", "x86-64"),
    (1, 3): ("x86", "32-bit x86"),
    (2, 243): ("riscv64", "RISC-V 64"),
}


def elf_abi(path: str | Path) -> tuple[str, str]:
    """(Android ABI, machine name) of an ELF file; ToolkitError when it is not an ELF executable."""
    p = Path(path)
    if not p.is_file():
        raise ToolkitError(f"runner binary not found: {p}")
    head = p.read_bytes()[:20]
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise ToolkitError(f"runner {p} is not an ELF executable (a script or the wrong file?); pass the binary built "
                           f"with the Android NDK (see android_harness/README.md)")
    ei_class, ei_data = head[4], head[5]
    endian = "<" if ei_data == 1 else ">"
    (machine,) = struct.unpack(endian + "H", head[18:20])
    if (ei_class, machine) not in _ABI:
        return f"unknown(e_machine={machine}, class={ei_class})", f"ELF machine {machine}"
    return _ABI[(ei_class, machine)]
