"""Model names -> (config class, model class): the one place that knows every trainable recommender."""

from __future__ import annotations

import dataclasses
import importlib

from toolkit.errors import ToolkitError

DEFAULT_N_ITEMS = 12101  # Amazon Beauty 5-core (S3-Rec preprocessing): the vocabulary a real deployment ships

# name -> (module, config class, model class); imported lazily so `toolkit --help` stays fast
_MODELS = {
    "scn": ("toolkit.models.scn", "SCNConfig", "SCN"),
    "cocorrrec": ("toolkit.models.cocorrrec", "CoCorrRecConfig", "CoCorrRec"),
    "duet": ("toolkit.models.duet", "DuetConfig", "Duet"),
    "gru4rec": ("toolkit.models.baselines.gru4rec", "GRU4RecConfig", "GRU4Rec"),
    "sasrec": ("toolkit.models.baselines.sasrec", "SASRecConfig", "SASRec"),
    "din": ("toolkit.models.baselines.din", "DINConfig", "DIN"),
}
MODEL_NAMES = tuple(_MODELS)
# the model whose graph runs on the device, where it is another registered model: a cocorrrec run ships its SCN
# (the cloud correction arrives as an input), so its artifacts, bench rows and budgets are SCN's
_DEVICE_PART = {"cocorrrec": "scn"}
# models with a device part and a cloud update (toolkit.models.cloud): what the gate decides about, and what
# `--init` can start from a trained device run
CLOUD_MODELS = ("cocorrrec", "duet")


def device_name(name: str) -> str:
    """The name an exported device artifact of model `name` carries (itself unless another model runs there)."""
    return _DEVICE_PART.get(name, name)


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
    if "n_items" in overrides:
        raise ToolkitError(f"n_items of {name} comes from the dataset (or --n-items), not from the config")
    check_config_values(name, cfg_cls, {"n_items": n_items, **overrides})
    return model_cls(cfg_cls(n_items=n_items, **overrides))


_SIZE_MAX = 2**31 - 1
_AT_LEAST_ONE = {"n_items", "dim", "heads", "mini_batch", "n_blocks", "ffn_mult", "max_len", "att_hidden"}


# Upper bounds of sizes, the same for --config flags and for a model.json read back: a crafted config must not
# reach the allocator (dim=2**30 would ask for terabytes). Generous: 16x the largest setting the papers use.
_SIZE_CAPS = {"dim": 16384, "att_hidden": 65536, "gen_hidden": 65536, "code_dim": 16384, "heads": 1024,
              "n_blocks": 256, "gen_layers": 256, "ffn_mult": 64, "mini_batch": 65536, "max_len": 1 << 20,
              "context_len": 1 << 20}
_TABLE_ELEMENTS_MAX = 2**32  # n_items x dim floats of the item table (16 GiB in float32)


def config_defaults(name: str, cfg_cls=None) -> dict:
    """field -> default of `name`'s config class (n_items -> 0). Read from the model module's source when the
    module is not imported yet, so flags and model.json configs are checked before torch is imported."""
    import sys

    mod = _MODELS[check_name(name)][0]
    if cfg_cls is None and mod not in sys.modules:
        return _source_defaults(mod, _MODELS[name][1])
    cfg_cls = cfg_cls or classes(name)[0]
    return {f.name: (0 if f.name == "n_items" else f.default) for f in dataclasses.fields(cfg_cls)}


def _source_defaults(module: str, cls_name: str) -> dict:
    """Dataclass fields of `cls_name` (and its bases, in this module or toolkit.models.common) from the source."""
    import ast
    from pathlib import Path

    # the file beside this one (not importlib.util.find_spec: that imports toolkit.models, which imports torch)
    source = Path(__file__).resolve().parent.parent.joinpath(*module.split(".")[1:]).with_suffix(".py")
    tree = ast.parse(source.read_text(encoding="utf-8"))
    classes_ = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    # names this module imports from other toolkit.models modules (a config may extend one defined there)
    imported = {a.asname or a.name: n.module for n in tree.body if isinstance(n, ast.ImportFrom)
                and (n.module or "").startswith("toolkit.models") for a in n.names}
    node = classes_.get(cls_name)
    if node is None:
        return _source_defaults("toolkit.models.common", cls_name) if module != "toolkit.models.common" else {}
    out: dict = {}
    for base in node.bases:
        if isinstance(base, ast.Name):
            home = module if base.id in classes_ else imported.get(base.id, "toolkit.models.common")
            out.update(_source_defaults(home, base.id))
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            try:
                out[stmt.target.id] = 0 if stmt.value is None else ast.literal_eval(stmt.value)
            except ValueError:
                out[stmt.target.id] = None  # a default that is an expression: type not checked here
    return out


def check_config(name: str, overrides: dict) -> None:
    """Unknown keys and bad values of `name`'s config overrides (no torch import): the flag check of --config."""
    defaults = config_defaults(name)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ToolkitError(f"unknown config key(s) for {name}: {', '.join(unknown)} (valid: "
                           f"{', '.join(sorted(defaults))})")
    check_config_values(name, None, overrides, defaults=defaults)


def check_config_values(name: str, cfg_cls, values: dict, defaults: dict | None = None) -> None:
    """Each value has its field's type (taken from the default; n_items is an int); ints are counts (0..2**31-1;
    sizes such as dim and heads >= 1 and below their cap), floats finite and >= 0. One line naming the key
    otherwise."""
    import math

    if defaults is None:
        defaults = {f.name: f.default for f in dataclasses.fields(cfg_cls)}
    for k, v in values.items():
        d = defaults.get(k, 0 if k == "n_items" else dataclasses.MISSING)
        if d is dataclasses.MISSING:
            continue
        what = f"config {k} of {name}"
        if isinstance(d, bool):
            if not isinstance(v, bool):
                raise ToolkitError(f"{what} must be true or false, got {v!r}")
        elif isinstance(d, int):
            lo = 1 if k in _AT_LEAST_ONE else 0
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= _SIZE_MAX:
                raise ToolkitError(f"{what} must be an integer in {lo}..{_SIZE_MAX}, got {v!r}")
        elif isinstance(d, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ToolkitError(f"{what} must be a finite number >= 0, got {v!r}")
            if k == "dropout" and v >= 1:
                raise ToolkitError(f"{what} is a probability: it must lie in [0, 1), got {v!r}")
        elif isinstance(d, str) and not isinstance(v, str):
            raise ToolkitError(f"{what} must be a word, got {v!r}")
        if k in _SIZE_CAPS and isinstance(v, int) and not isinstance(v, bool) and v > _SIZE_CAPS[k]:
            raise ToolkitError(f"{what} must be at most {_SIZE_CAPS[k]}, got {v}")
    n, dim = values.get("n_items"), values.get("dim", defaults.get("dim"))
    if isinstance(n, int) and isinstance(dim, int) and n * dim > _TABLE_ELEMENTS_MAX:
        raise ToolkitError(f"config of {name}: an item table of {n} x {dim} floats is too large (at most "
                           f"{_TABLE_ELEMENTS_MAX} elements)")


DUET_BACKBONES = ("sasrec", "gru4rec", "din", "scn")  # the static device models duet can wrap


def check_duet_config(cfg: dict) -> None:
    """Refuse a bad duet config (backbone name, sizes) before any work: one line, no torch import."""
    bb = cfg.get("backbone", "sasrec")
    if bb not in DUET_BACKBONES:
        raise ToolkitError(f"unknown duet backbone '{bb}' (valid: {', '.join(DUET_BACKBONES)})")
    for key in ("context_len", "code_dim", "gen_hidden", "gen_layers"):
        if key in cfg and (not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1):
            raise ToolkitError(f"duet config {key} must be an integer >= 1, got {cfg[key]!r}")
    if "update_dropout" in cfg and not (isinstance(cfg["update_dropout"], (int, float))
                                        and 0.0 <= cfg["update_dropout"] < 1.0):
        raise ToolkitError(f"duet config update_dropout must lie in [0, 1), got {cfg['update_dropout']!r}")
    if "rank" in cfg and (not isinstance(cfg["rank"], int) or isinstance(cfg["rank"], bool) or cfg["rank"] < 0):
        raise ToolkitError(f"duet config rank must be an integer >= 0 (0 = full weights), got {cfg['rank']!r}")


def from_config(name: str, config: dict):
    cfg = dict(config)
    return build(name, cfg.pop("n_items"), **cfg)
