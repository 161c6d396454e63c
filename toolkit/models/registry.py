"""Model names -> (config class, model class): the one place that knows every trainable recommender."""

from __future__ import annotations

import dataclasses
import importlib

from toolkit.errors import ToolkitError

# name -> (module, config class, model class); imported lazily so `toolkit --help` stays fast
_MODELS = {
    "scn": ("toolkit.models.scn", "SCNConfig", "SCN"),
    "cocorrrec": ("toolkit.models.scn", "CoCorrRecConfig", "CoCorrRec"),
    "duet": ("toolkit.models.duet", "DuetConfig", "Duet"),
    "gru4rec": ("toolkit.models.baselines.gru4rec", "GRU4RecConfig", "GRU4Rec"),
    "sasrec": ("toolkit.models.baselines.sasrec", "SASRecConfig", "SASRec"),
    "din": ("toolkit.models.baselines.din", "DINConfig", "DIN"),
}
MODEL_NAMES = tuple(_MODELS)


def check_name(name: str) -> str:
    if name not in _MODELS:
        raise ToolkitError(f"unknown model '{name}' (valid: {', '.join(MODEL_NAMES)})")
    return name


def classes(name: str):
    mod, cfg_cls, model_cls = _MODELS[check_name(name)]
    m = importlib.import_module(mod)
    return getattr(m, cfg_cls), getattr(m, model_cls)


def build(name: str, n_items: int, **overrides):
    """A freshly initialised model; unknown config keys are rejected by name."""
    cfg_cls, model_cls = classes(name)
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ToolkitError(f"unknown config key(s) for {name}: {', '.join(unknown)} (valid: {', '.join(sorted(fields))})")
    return model_cls(cfg_cls(n_items=n_items, **overrides))


def check_duet_config(config: dict) -> None:
    """Cheap validation of `--config` for duet (backbone name, sizes) before the data is loaded."""
    from toolkit.models.duet import check_config

    check_config(config)


def from_config(name: str, config: dict):
    cfg = dict(config)
    return build(name, cfg.pop("n_items"), **cfg)
