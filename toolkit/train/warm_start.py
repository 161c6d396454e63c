"""Two-stage training of a cloud model: start its device part from a trained run of the device model.

Why: trained jointly, the device model and its cloud side share one early stop, and the device part (SCN above
all) overfits within a few epochs, long before the cloud's history encoder has learnt anything per user. Starting
from a converged device run and, with `freeze_device`, training only the cloud side keeps "no update" exactly
that run (the update heads start at zero), so whatever the cloud adds is measured against the device model the
user would otherwise ship.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.models.registry import CLOUD_MODELS


def check_init_flags(name: str, init_run, freeze_device: bool) -> None:
    """One line for a combination of --init / --freeze-device that cannot be trained (before anything is built)."""
    if freeze_device and init_run is None:
        raise ToolkitError("--freeze-device keeps the device part of --init RUN fixed; give --init")
    if init_run is not None and name not in CLOUD_MODELS:
        raise ToolkitError(f"--init starts the device part of a cloud model ({', '.join(CLOUD_MODELS)}) from a "
                           f"trained run; '{name}' has no separate device part")


def device_model_name(model) -> str:
    """The registered model a cloud model runs on the device (cocorrrec -> scn, duet -> its backbone)."""
    from toolkit.models.registry import device_name

    return model.cfg.backbone if model.name == "duet" else device_name(model.name)


def init_device_part(name: str, model, init_run: Path, dataset_sha256: str) -> dict:
    """Load `init_run`'s weights into `model.device` (exact keys and shapes); returns what model.json records."""
    from toolkit.models.runs import load_run

    want = device_model_name(model)
    init, desc = load_run(init_run)
    if desc["model"] != want:
        raise ToolkitError(f"--init {init_run}: a '{desc['model']}' run; the device part of this {name} is "
                           f"'{want}' (train that first)")
    if desc.get("dataset_sha256") != dataset_sha256:
        raise ToolkitError(f"--init {init_run} was trained on another dataset (arrays sha256 "
                           f"{str(desc.get('dataset_sha256'))[:12]}…, this one {dataset_sha256[:12]}…)")
    try:
        model.device.load_state_dict(init.state_dict())
    except RuntimeError as e:
        raise ToolkitError(f"--init {init_run}: its {want} does not fit this {name}'s device part (config differs: "
                           f"{str(e).splitlines()[0][:160]})") from None
    return {"run": str(init_run), "model": want, "weights_sha256": desc["weights_sha256"]}


def freeze_device_part(model) -> int:
    """Stop gradients into the device part; returns how many parameters stay trainable (the cloud side's)."""
    for p in model.device.parameters():
        p.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["init_device_part", "freeze_device_part", "check_init_flags", "device_model_name"]
