"""Bench targets: device profiles as data (benches/targets/*.toml) -> threads, CPU pinning, host or emulated.

A target says where and how a cell is measured. Host targets run the runtime on this machine and their numbers
are labelled host-measured; an emulated target (e.g. arm64-a76) hands ONNX artifacts to `toolkit.device`, which
counts instructions, not time. Nothing here claims device latency.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.io import read_toml, resource_dir

KINDS = ("host", "emulated")
_KNOWN = {"name", "description", "kind", "threads", "pin", "cpus", "emulation", "runtimes"}


@dataclass
class Target:
    name: str
    description: str = ""
    kind: str = "host"  # host | emulated
    threads: int = 1
    pin: bool = True
    cpus: str | list[int] = "auto"
    emulation: str | None = None  # e.g. "arm64" for kind = "emulated"
    runtimes: list[str] | None = None  # runtimes the target can measure (None = all host runtimes)
    extra: dict = field(default_factory=dict)  # keys this module does not interpret (passed on to toolkit.device)
    path: str | None = None

    @property
    def emulated(self) -> bool:
        return self.kind == "emulated"

    def resolve_cpus(self) -> list[int] | None:
        """The CPU set to pin the measuring process to, or None when the target does not pin."""
        if not self.pin:
            return None
        allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
        if self.cpus == "auto":
            if self.threads > len(allowed):
                raise ToolkitError(f"target {self.name}: wants {self.threads} pinned threads but only "
                                   f"{len(allowed)} CPUs are available here")
            return allowed[: self.threads]
        missing = [c for c in self.cpus if c not in allowed]
        if missing:
            raise ToolkitError(f"target {self.name}: cpus {missing} are not available here (allowed: {allowed})")
        return list(self.cpus)

    def to_dict(self) -> dict:
        d = {"name": self.name, "description": self.description, "kind": self.kind, "threads": self.threads,
             "pin": self.pin, "cpus": self.cpus}
        if self.emulation:
            d["emulation"] = self.emulation
        if self.runtimes:
            d["runtimes"] = self.runtimes
        if self.extra:
            d["extra"] = self.extra
        return d


def targets_dir() -> Path:
    return resource_dir("benches") / "targets"


def available_targets() -> list[str]:
    d = targets_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def load_target(name_or_path: str) -> Target:
    """A shipped target by name (`host-1t`) or a TOML file path; bad keys are named in a one-line error."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or os.sep in name_or_path:
        if not p.is_file():
            raise ToolkitError(f"--target: file not found: {p}")
        path = p
    else:
        path = targets_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            raise ToolkitError(f"--target: unknown target '{name_or_path}' (valid: {', '.join(available_targets())})")
    data = read_toml(path, "target file")  # toolkit.io: binary, malformed, inf/nan -> one line naming the file
    return _parse(data, path)


def _parse(data: dict, path: Path) -> Target:
    where = f"target file {path}"
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise ToolkitError(f"{where}: 'name' must be a non-empty string")
    kind = data.get("kind", "emulated" if data.get("emulation") else "host")
    if kind not in KINDS:
        raise ToolkitError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    threads = data.get("threads", 1)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ToolkitError(f"{where}: 'threads' must be an integer >= 1, got {threads!r}")
    pin = data.get("pin", True)
    if not isinstance(pin, bool):
        raise ToolkitError(f"{where}: 'pin' must be true or false, got {pin!r}")
    cpus = data.get("cpus", "auto")
    if cpus != "auto" and not (isinstance(cpus, list) and cpus and all(isinstance(c, int) and c >= 0 for c in cpus)):
        raise ToolkitError(f"{where}: 'cpus' must be \"auto\" or a list of CPU ids, got {cpus!r}")
    emulation = data.get("emulation")
    if kind == "emulated" and not isinstance(emulation, str):
        raise ToolkitError(f"{where}: an emulated target needs 'emulation' (e.g. \"arm64\")")
    runtimes = data.get("runtimes")
    if runtimes is not None and not (isinstance(runtimes, list) and all(isinstance(r, str) for r in runtimes)):
        raise ToolkitError(f"{where}: 'runtimes' must be a list of runtime names, got {runtimes!r}")
    extra = {k: v for k, v in data.items() if k not in _KNOWN}
    return Target(name=name, description=str(data.get("description", "")), kind=kind, threads=threads, pin=pin,
                  cpus=cpus, emulation=emulation, runtimes=runtimes, extra=extra, path=str(path))
