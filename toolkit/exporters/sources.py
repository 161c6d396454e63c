"""What to export: a trained run dir (checksums verified by runs.load_run) or a freshly initialised registry model.

Returns the model's entry points plus `model_info` (config, parameter counts, run path and hashes) for the manifest.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch

from toolkit.errors import ToolkitError
from toolkit.io import sha256_file


def contract_kwargs(model, seq_len: int, candidates: int, with_corrections: bool = False,
                    tower_table: bool = False) -> dict:
    """Only the arguments this model's contract() accepts (the gate's takes none)."""
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
        raise ToolkitError(f"{type(model).__name__} has no separable candidate tower to precompute "
                           "(a precomputed tower table is for scn/cocorrrec)")
    return kw


def _counts(model) -> dict:
    if hasattr(model, "param_counts"):
        return {k: int(v) for k, v in model.param_counts().items()}
    return {"params": int(sum(p.numel() for p in model.parameters()))}


def _config(model) -> dict:
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        return {}
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))


def from_run(run: Path):
    """(model, name, info) from a run dir; a run whose files fail their checksums is refused by load_run."""
    from toolkit.models.runs import load_run

    run = Path(run)
    model, desc = load_run(run)
    info = {"source": "run", "run": str(run.resolve()), "model_json_sha256": sha256_file(run / "model.json"),
            "weights_sha256": desc.get("weights_sha256"), "config": desc.get("config", _config(model)),
            **_counts(model)}
    for k in ("dataset_sha256", "dataset"):
        if k in desc:
            info[k] = desc[k]
    return model.eval(), desc.get("model", type(model).__name__.lower()), info


def fresh(name: str, n_items: int, config: dict | None = None, seed: int = 0):
    """(model, name, info) for a freshly initialised registry model (deterministic under `seed`)."""
    from toolkit.models.registry import build, check_name

    check_name(name)
    torch.manual_seed(seed)
    model = build(name, n_items, **(config or {}))
    info = {"source": "fresh", "seed": seed, "config": _config(model), **_counts(model)}
    return model.eval(), name, info


def entries_for(model, seq_len: int, candidates: int, with_corrections: bool, tower_table: bool = False):
    kw = contract_kwargs(model, seq_len, candidates, with_corrections, tower_table)
    return model.contract(**kw), kw
