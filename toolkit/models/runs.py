"""Run directories: model.json + weights.safetensors (state dict only) + metrics.json; save and restore."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from toolkit.errors import ToolkitError
from toolkit.io import atomic_write_bytes, read_json, sha256_file, versions

WEIGHTS = "weights.safetensors"


def save_weights(path: Path, model: torch.nn.Module) -> str:
    """Atomic safetensors write of the state dict; returns its sha256."""
    from safetensors.torch import save as save_bytes

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save_bytes(state))
    return sha256_file(path)


def model_descriptor(name: str, model, dataset_meta: dict, weights_sha256: str, extra: dict | None = None) -> dict:
    counts = model.param_counts()
    return {
        "model": name,
        "config": model.cfg.to_dict() if hasattr(model.cfg, "to_dict") else dict(vars(model.cfg)),
        **counts,
        "dataset_sha256": dataset_meta.get("arrays_sha256"),
        "dataset": {k: dataset_meta.get(k) for k in ("format", "source", "n_users", "n_items", "seq_len", "seed")},
        "weights": WEIGHTS,
        "weights_sha256": weights_sha256,
        "versions": versions(),
        **(extra or {}),
    }


def read_descriptor(run: str | Path) -> dict:
    run = Path(run)
    if not run.is_dir():
        raise ToolkitError(f"run dir not found: {run}")
    return read_json(run / "model.json", "run descriptor model.json")


def load_run(run: str | Path):
    """Restore a saved run -> (model in eval mode, model.json). Weights are checked against their sha256 first."""
    from toolkit.models.registry import from_config

    run = Path(run)
    desc = read_descriptor(run)
    wpath = run / desc.get("weights", WEIGHTS)
    if not wpath.is_file():
        raise ToolkitError(f"weights missing from run: {wpath}")
    if desc.get("weights_sha256") and sha256_file(wpath) != desc["weights_sha256"]:
        raise ToolkitError(f"checksum mismatch: {wpath} does not match model.json (corrupted or replaced)")
    if desc["model"] == "gate":
        from toolkit.models.gate import load_gate_run

        return load_gate_run(run, desc), desc
    model = from_config(desc["model"], desc["config"])
    try:
        model.load_state_dict(load_file(str(wpath)))
    except RuntimeError as e:
        raise ToolkitError(f"weights in {wpath} do not fit model '{desc['model']}': {str(e).splitlines()[0]}") from None
    return model.eval(), desc


__all__ = ["save_weights", "model_descriptor", "read_descriptor", "load_run", "WEIGHTS"]
