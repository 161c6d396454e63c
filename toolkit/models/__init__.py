"""Recommenders: SCN / CoCorrRec (TTT-Linear + GCN), GRU4Rec, SASRec, DIN, and the request gate."""

__all__ = ["MODEL_NAMES", "build", "from_config", "load_run"]


def __getattr__(name: str):
    # lazy: `toolkit.models.registry` (names, config checks) must be importable without torch, so that the CLI
    # checks flags and model configs before torch is imported
    if name in ("MODEL_NAMES", "build", "from_config"):
        from toolkit.models import registry

        return getattr(registry, name)
    if name == "load_run":
        from toolkit.models.runs import load_run

        return load_run
    raise AttributeError(f"module 'toolkit.models' has no attribute {name!r}")
