"""Run directories: model.json + weights.safetensors (state dict only) + metrics.json; save and restore."""

from __future__ import annotations

from pathlib import Path

import torch

from toolkit.errors import ToolkitError
from toolkit.io import atomic_write_bytes, contained, load_safetensors, read_descriptor_json, sha256_file, versions
from toolkit.models.counts import COUNT_MODELS

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
    """RUN/model.json, refused when edited (its descriptor_sha256 must match) or missing required keys."""
    run = Path(run)
    if not run.is_dir():
        raise ToolkitError(f"run dir not found: {run}")
    path = run / "model.json"
    desc = read_descriptor_json(path, "run descriptor")
    for key, kind in (("model", str), ("config", dict), ("weights", str), ("weights_sha256", str)):
        if not isinstance(desc.get(key), kind):
            raise ToolkitError(f"run descriptor {path} lacks '{key}' (or it is not a {kind.__name__}); re-train")
    return desc


def weights_path(run: str | Path, desc: dict) -> Path:
    """The weights file named by model.json: a file inside the run dir (no absolute path, `..` or symlink out)."""
    return contained(run, desc["weights"], f"'weights' in {Path(run) / 'model.json'}")


def load_gate_run(run: Path, desc: dict):
    """Restore a gate run dir (load_run has already checked the weights' sha256). Here, not in models.gate, so
    the model module does not import the run reader that imports it.

    When the base run recorded in model.json is still present, its weights must be the ones the gate was trained on;
    an absent base run is allowed here (exporting the gate needs only the gate's own weights).
    """
    from toolkit.models.gate import Gate, GateConfig, check_base

    run = Path(run)
    try:
        gate = Gate(GateConfig.from_dict(desc["config"]))
    except (TypeError, ValueError, KeyError) as e:
        raise ToolkitError(f"gate config in {run / 'model.json'} is invalid: {e}") from None
    try:
        gate.load_state_dict(load_safetensors(weights_path(run, desc), "gate weights"))
    except RuntimeError as e:
        raise ToolkitError(f"weights in {run} do not fit the gate config: {str(e).splitlines()[0]}") from None
    base = Path(str(desc.get("base_run", "")))
    if desc.get("base_run") and (base / "model.json").is_file():
        check_base(desc, read_descriptor(base), base)
    gate.run_dir, gate.base_run = run, (base if desc.get("base_run") else None)
    return gate.eval()


def load_run(run: str | Path):
    """Restore a saved run -> (model in eval mode, model.json). Weights are checked against their sha256 first."""
    from toolkit.models.registry import from_config

    run = Path(run)
    desc = read_descriptor(run)
    wpath = weights_path(run, desc)
    if not wpath.is_file():
        raise ToolkitError(f"weights missing from run: {wpath}")
    if sha256_file(wpath) != desc["weights_sha256"]:
        raise ToolkitError(f"checksum mismatch: {wpath} does not match model.json (corrupted or replaced)")
    if desc["model"] == "gate":
        return load_gate_run(run, desc), desc
    if not isinstance(desc["config"].get("n_items"), int):
        raise ToolkitError(f"run descriptor {run / 'model.json'}: config lacks an integer n_items")
    if desc["model"] in COUNT_MODELS:
        from toolkit.models.counts import from_config as count_model

        model = count_model(desc["model"], desc["config"])
    else:
        model = from_config(desc["model"], desc["config"])
    try:
        model.load_state_dict(load_safetensors(wpath, "run weights"))
    except RuntimeError as e:
        raise ToolkitError(f"weights in {wpath} do not fit model '{desc['model']}': {str(e).splitlines()[0]}") from None
    return model.eval(), desc


__all__ = ["save_weights", "model_descriptor", "read_descriptor", "load_run", "load_gate_run", "weights_path", "WEIGHTS"]
