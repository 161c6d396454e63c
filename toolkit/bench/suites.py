"""Bench suites: named sweep definitions as data (benches/suites/*.toml); CLI flags override their fields."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.io import read_toml, resource_dir
from toolkit.models.registry import DEFAULT_N_ITEMS

RUNTIMES = ("executorch", "onnxruntime", "torch")
ENTRIES = ("window", "step", "mrs")
_KEYS = {"description", "models", "seq_lens", "runtimes", "entries", "histories", "runs", "warmup", "candidates",
         "n_items", "target", "rounds", "target_ci", "max_seconds"}


@dataclass
class Suite:
    name: str
    description: str = ""
    models: list[str] = field(default_factory=lambda: ["scn", "gru4rec", "sasrec", "din"])
    seq_lens: list[int] = field(default_factory=lambda: [25])
    runtimes: list[str] = field(default_factory=lambda: list(RUNTIMES))
    entries: list[str] | None = None  # None = every entry the model's contract has
    histories: list[int] = field(default_factory=lambda: [200])  # extra step points beyond the seq-lens
    runs: int = 200
    warmup: int = 20
    candidates: int = 100
    n_items: int = DEFAULT_N_ITEMS
    target: str = "host-1t"
    rounds: int = 10  # the runs are taken in this many interleaved rounds (toolkit.bench.rounds)
    target_ci: float = 0.03  # then rounds continue until each p50's 95% interval is within +-3% (0 = never)...
    max_seconds: float = 30.0  # ... or the rounds took this long
    path: str | None = None


def suites_dir() -> Path:
    return resource_dir("benches") / "suites"


def available_suites() -> list[str]:
    d = suites_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def load_suite(name_or_path: str) -> Suite:
    p = Path(name_or_path)
    if p.suffix == ".toml" or os.sep in name_or_path:
        if not p.is_file():
            raise ToolkitError(f"--suite: file not found: {p}")
        path = p
    else:
        path = suites_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            raise ToolkitError(f"--suite: unknown suite '{name_or_path}' (valid: {', '.join(available_suites())})")
    data = read_toml(path, "suite file")  # toolkit.io: binary, malformed, inf/nan -> one line naming the file
    where = f"suite file {path}"
    for k in data:
        if k not in _KEYS:
            raise ToolkitError(f"{where}: unknown key '{k}' (valid: {', '.join(sorted(_KEYS))})")
    s = Suite(name=path.stem, path=str(path))
    for k in ("models", "runtimes", "entries"):
        if k in data:
            v = data[k]
            if not (isinstance(v, list) and v and all(isinstance(x, str) for x in v)):
                raise ToolkitError(f"{where}: '{k}' must be a non-empty list of names, got {v!r}")
            setattr(s, k, v)
    for k in ("seq_lens", "histories"):
        if k in data:
            v = data[k]
            if not (isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)):
                raise ToolkitError(f"{where}: '{k}' must be a list of positive integers, got {v!r}")
            setattr(s, k, v)
    for k in ("target_ci", "max_seconds"):
        if k in data:
            v = data[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0) or v == float("inf"):
                raise ToolkitError(f"{where}: '{k}' must be a number >= 0, got {v!r}")
            setattr(s, k, float(v))
    for k in ("runs", "warmup", "candidates", "n_items", "rounds"):
        if k in data:
            v = data[k]
            lo = 0 if k == "warmup" else 1
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= lo):
                raise ToolkitError(f"{where}: '{k}' must be an integer >= {lo}, got {v!r}")
            setattr(s, k, v)
    for k in ("description", "target"):
        if k in data:
            if not isinstance(data[k], str):
                raise ToolkitError(f"{where}: '{k}' must be a string")
            setattr(s, k, data[k])
    if not s.seq_lens:
        raise ToolkitError(f"{where}: 'seq_lens' is empty")
    return s
