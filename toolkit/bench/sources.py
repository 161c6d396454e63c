"""Where a benched model comes from: a fresh initialisation (shape-only cost), a trained run dir, or a factory.

A source is plain JSON so the fresh measuring subprocess can rebuild the same model for the eager-torch runtime.
Fresh models are seeded, so their weights (and the cache key that hashes them) are reproducible.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from dataclasses import asdict, dataclass, field

import torch

from toolkit.errors import ToolkitError

DEFAULT_N_ITEMS = 12101  # Amazon Beauty 5-core (S3-Rec preprocessing): the vocabulary a real deployment would ship
FRESH_SEED = 0


@dataclass
class ModelSource:
    kind: str  # "fresh" | "run" | "factory" | "artifacts" (a verified artifact dir: measured as is, never built)
    name: str  # model name as reported in rows (scn, gate, gru4rec, ...)
    n_items: int | None = None  # fresh
    config: dict = field(default_factory=dict)  # fresh: config overrides
    seed: int = FRESH_SEED  # fresh
    run: str | None = None  # run: path to the run dir; artifacts: path to the artifact dir
    factory: str | None = None  # factory: "module:function" returning a model
    factory_path: str | None = None  # factory: folder to put on sys.path first (tests)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, {})}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSource":
        return cls(**d)

    def describe(self) -> str:
        if self.kind == "run":
            return f"trained run {self.run}"
        if self.kind == "factory":
            return f"factory {self.factory}"
        if self.kind == "artifacts":
            return f"artifact dir {self.run}"
        return f"fresh init (seed {self.seed}, n_items {self.n_items})"


def fresh(name: str, n_items: int = DEFAULT_N_ITEMS, **config) -> ModelSource:
    return ModelSource("fresh", name, n_items=n_items, config=config)


def from_run(run: str) -> ModelSource:
    from toolkit.models.runs import read_descriptor

    desc = read_descriptor(run)
    return ModelSource("run", desc.get("model", "?"), run=str(run))


def build(source: ModelSource):
    """The model in eval mode, rebuilt identically in any process."""
    if source.kind == "fresh":
        torch.manual_seed(source.seed)
        model = _build_fresh(source.name, source.n_items or DEFAULT_N_ITEMS, source.config)
    elif source.kind == "run":
        from toolkit.models.runs import load_run

        model, _ = load_run(source.run)
    elif source.kind == "factory":
        if source.factory_path and source.factory_path not in sys.path:
            sys.path.insert(0, source.factory_path)
        mod, _, fn = (source.factory or "").partition(":")
        torch.manual_seed(source.seed)
        model = getattr(importlib.import_module(mod), fn)(**source.config)
    else:
        raise ToolkitError(f"unknown model source kind '{source.kind}'")
    return model.eval()


def _build_fresh(name: str, n_items: int, config: dict):
    if name == "gate":  # the gate has no item table: its inputs are SCN user states (models.md 3)
        from toolkit.models import gate as gate_mod

        if hasattr(gate_mod, "build_fresh"):
            return gate_mod.build_fresh(n_items, **config)
        return gate_mod.Gate(gate_mod.GateConfig(**config))
    from toolkit.models.registry import build as registry_build

    return registry_build(name, n_items, **config)


def model_config(model) -> dict:
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        return {}
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))


def weights_digest(model) -> str:
    """sha256 over the state dict (names, shapes, bytes): what the exported artifacts are made of."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().contiguous().cpu()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def bench_model_names() -> tuple[str, ...]:
    """Names --models accepts: every registry model, plus the gate."""
    from toolkit.models.registry import MODEL_NAMES

    return tuple(MODEL_NAMES) + (("gate",) if "gate" not in MODEL_NAMES else ())
