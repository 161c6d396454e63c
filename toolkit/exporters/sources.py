"""Where a model to export or bench comes from: the one model source of the toolkit.

A `ModelSource` is plain JSON (so a fresh measuring process can rebuild the same model):
- fresh:     a registry model (or the gate) freshly initialised under a seed: shape-only cost, reproducible weights
- run:       a trained run dir (its files' checksums are verified by toolkit.models.runs.load_run)
- factory:   "module:function" returning a model (tests)
- artifacts: an artifact dir (`toolkit bench ARTIFACT_DIR`): measured as shipped, never built here

`build(source)` -> the model in eval mode; `load(source)` -> (model, name, info for the manifest / bench rows).
`fresh(...)` / `from_run(...)` are `load` of the matching source.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from toolkit.errors import ToolkitError
from toolkit.io import sha256_file
from toolkit.models.registry import DEFAULT_N_ITEMS

FRESH_SEED = 0


@dataclass
class ModelSource:
    kind: str  # "fresh" | "run" | "factory" | "artifacts"
    name: str  # model name as reported in manifests and rows (scn, gate, gru4rec, ...)
    n_items: int | None = None  # fresh
    config: dict = field(default_factory=dict)  # fresh / factory: config overrides
    seed: int = FRESH_SEED  # fresh / factory
    run: str | None = None  # run: the run dir; artifacts: the artifact dir
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


def model_names() -> tuple[str, ...]:
    """Every name a fresh source takes: the registry's models plus the gate."""
    from toolkit.models.registry import MODEL_NAMES

    return tuple(MODEL_NAMES) + (("gate",) if "gate" not in MODEL_NAMES else ())


def fresh_source(name: str, n_items: int = DEFAULT_N_ITEMS, config: dict | None = None,
                 seed: int = FRESH_SEED) -> ModelSource:
    if name not in model_names():
        raise ToolkitError(f"unknown model '{name}' (valid: {', '.join(model_names())})")
    return ModelSource("fresh", name, n_items=n_items, config=dict(config or {}), seed=seed)


def run_source(run: str | Path) -> ModelSource:
    """A trained run, named after the model its device artifact runs (a cocorrrec run: scn; see load)."""
    from toolkit.models.registry import device_name
    from toolkit.models.runs import read_descriptor

    desc = read_descriptor(run)
    return ModelSource("run", device_name(desc.get("model", "?")), run=str(run))


def _build_fresh(name: str, n_items: int, config: dict):
    if name == "gate":  # the gate has no item table: its inputs are SCN user states (docs/models.md §6.1)
        from toolkit.models import gate as gate_mod

        return gate_mod.Gate(gate_mod.GateConfig(**config))
    from toolkit.models.registry import build as registry_build

    return registry_build(name, n_items, **config)


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
        raise ToolkitError(f"a '{source.kind}' source has no model to build")
    return model.eval()


def load(source: ModelSource):
    """(model, name, info): info is what a manifest's model_info records (source, config, parameter counts; for a
    run its path and the hashes of model.json and the weights).

    `name` is the model the device runs, which names the artifacts and bench rows: a cocorrrec run or model exports
    its SCN, so name = "scn" and info["source_model"] = "cocorrrec" (toolkit.models.registry.device_name)."""
    from toolkit.models.registry import device_name

    if source.kind == "run":
        from toolkit.models.runs import load_run

        run = Path(source.run)
        model, desc = load_run(run)
        trained = desc.get("model", type(model).__name__.lower())
        if not hasattr(model, "contract"):
            raise ToolkitError(f"{run} is a {trained} run, a non-learned count baseline: it has nothing to export "
                               "(compare it with `toolkit compare`)")
        info = {"source": "run", "source_model": trained, "run": str(run.resolve()),
                "model_json_sha256": sha256_file(run / "model.json"),
                "weights_sha256": desc.get("weights_sha256"), "config": desc.get("config", model_config(model)),
                **param_counts(model)}
        for k in ("dataset_sha256", "dataset"):
            if k in desc:
                info[k] = desc[k]
        return model.eval(), device_name(trained), info
    model = build(source)
    info = {"source": source.kind, "source_model": source.name, "seed": source.seed, "config": model_config(model),
            **param_counts(model)}
    return model, device_name(source.name), info


def fresh(name: str, n_items: int = DEFAULT_N_ITEMS, config: dict | None = None, seed: int = FRESH_SEED):
    """(model, name, info) for a freshly initialised model (deterministic under `seed`)."""
    return load(fresh_source(name, n_items, config, seed))


def from_run(run: str | Path):
    """(model, name, info) from a run dir; a run whose files fail their checksums is refused by load_run."""
    return load(ModelSource("run", "?", run=str(run)))


def param_counts(model) -> dict:
    if hasattr(model, "param_counts"):
        return {k: int(v) for k, v in model.param_counts().items()}
    return {"params": int(sum(p.numel() for p in model.parameters()))}


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


def contract_kwargs(model, seq_len: int, candidates: int, with_corrections: bool = False,
                    tower_table: bool = False) -> dict:
    """Only the arguments this model's contract() accepts (the gate's takes none): the exporter stays generic over
    `model.contract(...)`, whatever entry points, inputs, outputs and states a model declares."""
    params = inspect.signature(model.contract).parameters
    kw = {}
    if "seq_len" in params:
        kw["seq_len"] = seq_len
    if "candidates" in params:
        kw["candidates"] = candidates
    if "with_corrections" in params:
        kw["with_corrections"] = with_corrections
    elif with_corrections:
        raise ToolkitError(f"{type(model).__name__} has no correction inputs (--with-corrections is for scn/cocorrrec)")
    if "tower_table" in params:
        kw["tower_table"] = tower_table
    elif tower_table:
        raise ToolkitError(f"--tower precomputed: {type(model).__name__.lower()} has no separable candidate tower to "
                           f"precompute (offered for: {', '.join(TOWER_MODELS)})")
    return kw


TOWER_MODELS = ("scn", "cocorrrec", "duet", "gru4rec", "sasrec", "din")  # models whose contract takes tower_table


def tower_tables(entries) -> dict[str, list[int]]:
    """entry name -> shape of the precomputed tower table it ships (entries without one are left out)."""
    out = {}
    for e in entries:
        for name, buf in e.module.named_buffers():
            if name.split(".")[-1] == "tower_table":
                out[e.name] = list(buf.shape)
    return out


def tower_record(model, entries, kw: dict, steps: int, atol: float, rtol: float, seed: int = 0) -> dict:
    """What a manifest's model_info says about the candidate tower. For a precomputed table: its shape and bytes
    per entry, and the table entries' eager trajectory (same inputs, state carried) against the same entries with the
    tower in the graph, under the recipe tolerance (fp32: atol/rtol 1e-4), so the table is proved to be the tower's
    output, not only self-consistent with its own export."""
    if not kw.get("tower_table"):
        return {"kind": "graph"}
    from toolkit.exporters.parity import compare, eager_trajectory, trajectory_inputs

    tables = tower_tables(entries)
    plain = {e.name: e for e in model.contract(**{**kw, "tower_table": False})}
    checks = {}
    for e in entries:
        inputs = trajectory_inputs(e, steps, seed)
        res = compare(eager_trajectory(plain[e.name], inputs), eager_trajectory(e, inputs), list(e.outputs),
                      [s.name for s in e.states], atol, rtol)
        checks[e.name] = {"pass": res["pass"], "steps": res["steps"], "worst": res["worst"],
                          "tolerance": res["tolerance"]}
    return {"kind": "precomputed",
            "table_shape": next(iter(tables.values()), None), "table_dtype": "float32 (before a --dtype cast)",
            "table_bytes_per_entry": {k: int(4 * v[0] * v[1]) for k, v in tables.items()},
            "table_vs_tower": checks, "pass": all(c["pass"] for c in checks.values())}


def entries_for(model, seq_len: int, candidates: int, with_corrections: bool = False, tower_table: bool = False):
    kw = contract_kwargs(model, seq_len, candidates, with_corrections, tower_table)
    return model.contract(**kw), kw
