"""Recommenders: SCN / CoCorrRec (TTT-Linear + GCN), GRU4Rec, SASRec, DIN, and the request gate."""

from toolkit.models.registry import MODEL_NAMES, build, from_config
from toolkit.models.runs import load_run

__all__ = ["MODEL_NAMES", "build", "from_config", "load_run"]
