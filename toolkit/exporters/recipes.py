"""Export recipes are data: one TOML per (target, dtype) in export/ (shipped in the wheel); adding a target = a file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.io import read_toml, resource_dir

TARGETS = ("executorch", "onnx", "coreml")
DTYPES = ("fp32", "fp16", "int8")
TOWERS = ("graph", "precomputed")  # export --tower: run the candidate tower in the graph | ship its output table
RUNTIME_OF_TARGET = {"executorch": "executorch", "onnx": "onnxruntime", "coreml": "coreml"}  # format -> runtime
# runtimes of a second form an export writes beside the main one: the ORT format (.ort) of every ONNX export
ALSO_WRITTEN = {"onnxruntime-ort": "onnx"}


def format_of_runtime(runtime: str) -> str:
    """The export format whose artifacts run in `runtime` (the inverse of RUNTIME_OF_TARGET, the one such map)."""
    for fmt, rt in RUNTIME_OF_TARGET.items():
        if rt == runtime:
            return fmt
    if runtime in ALSO_WRITTEN:
        return ALSO_WRITTEN[runtime]
    valid = [*RUNTIME_OF_TARGET.values(), *ALSO_WRITTEN]
    raise ToolkitError(f"runtime '{runtime}' has no exported artifact (valid: {', '.join(valid)})")


@dataclass(frozen=True)
class Recipe:
    name: str
    target: str  # executorch | onnx | coreml
    dtype: str  # fp32 | fp16 | int8
    description: str
    options: dict  # the [<target>] table
    atol: float
    rtol: float
    path: str = ""
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def runtime(self) -> str:
        return RUNTIME_OF_TARGET[self.target]

    def opt(self, key: str, default=None):
        return self.options.get(key, default)

    @property
    def accuracy(self) -> dict | None:
        """The [accuracy] budget (largest allowed NDCG@10 drop from eager), None when the recipe sets none."""
        return self.raw.get("accuracy") or None

    def to_dict(self) -> dict:
        return {"name": self.name, "target": self.target, "dtype": self.dtype, "options": dict(self.options),
                "parity": {"atol": self.atol, "rtol": self.rtol}}


def _parse(path: Path) -> Recipe:
    raw = read_toml(path, "recipe")  # toolkit.io: binary, malformed, inf/nan -> one line naming the file
    missing = [k for k in ("name", "target", "dtype") if k not in raw]
    if missing:
        raise ToolkitError(f"recipe {path.name} lacks key(s): {', '.join(missing)}")
    if raw["target"] not in TARGETS:
        raise ToolkitError(f"recipe {path.name}: unknown target '{raw['target']}' (valid: {', '.join(TARGETS)})")
    if raw["dtype"] not in DTYPES:
        raise ToolkitError(f"recipe {path.name}: unknown dtype '{raw['dtype']}' (valid: {', '.join(DTYPES)})")
    parity = raw.get("parity", {})
    if "accuracy" in raw:  # [accuracy] max_ndcg_drop / max_ndcg_drop_relative: checked by verify/bench --data
        from toolkit.exporters.evaluate import check_budget

        raw = {**raw, "accuracy": check_budget(raw["accuracy"], f"recipe {path.name} [accuracy]")}
    return Recipe(name=raw["name"], target=raw["target"], dtype=raw["dtype"], description=raw.get("description", ""),
                  options=dict(raw.get(raw["target"], {})), atol=float(parity.get("atol", 1e-4)),
                  rtol=float(parity.get("rtol", 1e-4)), path=str(path), raw=raw)


def recipe_dir() -> Path:
    return resource_dir("export")


def all_recipes(folder: Path | None = None) -> list[Recipe]:
    folder = folder or recipe_dir()
    return [_parse(p) for p in sorted(folder.glob("*.toml"))]


def by_name(name: str, folder: Path | None = None) -> Recipe:
    recipes = all_recipes(folder)
    for r in recipes:
        if r.name == name:
            return r
    raise ToolkitError(f"unknown recipe '{name}' (available: {', '.join(r.name for r in recipes)})")


def find(target: str, dtype: str, folder: Path | None = None) -> Recipe:
    """The recipe for (target, dtype); a clear error naming what exists otherwise."""
    if target not in TARGETS:
        raise ToolkitError(f"unknown target '{target}' (valid: {', '.join(TARGETS)})")
    if dtype not in DTYPES:
        raise ToolkitError(f"unknown dtype '{dtype}' (valid: {', '.join(DTYPES)})")
    recipes = all_recipes(folder)
    hits = [r for r in recipes if r.target == target and r.dtype == dtype]
    if not hits:
        have = sorted(r.dtype for r in recipes if r.target == target)
        raise ToolkitError(f"no export recipe for target '{target}' with dtype '{dtype}' "
                           f"(recipes for {target}: {', '.join(have) or 'none'}; add a TOML to export/)")
    if len(hits) > 1:
        defaults = [r for r in hits if r.raw.get("default")]
        if len(defaults) != 1:
            raise ToolkitError(f"several recipes for {target}/{dtype} ({', '.join(r.name for r in hits)}): "
                               "mark one with default = true")
        return defaults[0]
    return hits[0]


def parse_targets(spec: str | list[str]) -> list[str]:
    """'executorch,onnx' -> ['executorch', 'onnx'] with a one-line error for unknown names."""
    items = spec if isinstance(spec, list) else spec.split(",")
    out: list[str] = []
    for t in (s.strip().lower() for s in items):
        if not t:
            continue
        if t not in TARGETS:
            raise ToolkitError(f"unknown target '{t}' (valid: {', '.join(TARGETS)})")
        if t not in out:
            out.append(t)
    if not out:
        raise ToolkitError(f"no target given (valid: {', '.join(TARGETS)})")
    return out


def check_tower(tower: str) -> bool:
    """export --tower value -> the contract's tower_table flag; a one-line error for anything else."""
    if tower not in TOWERS:
        raise ToolkitError(f"--tower: unknown '{tower}' (valid: {', '.join(TOWERS)})")
    return tower == "precomputed"
