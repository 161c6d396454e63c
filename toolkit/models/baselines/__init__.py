"""Baseline recommenders users compare against (docs/models.md §7): GRU4Rec, SASRec, DIN.

All share the item table and candidate tower of `toolkit.models.common.Recommender`, train with
`model(items, candidates) -> scores`, and export one stateless `window` entry point via `contract(seq_len)`.
"""

from toolkit.models.baselines.din import DIN, DINConfig
from toolkit.models.baselines.gru4rec import GRU4Rec, GRU4RecConfig
from toolkit.models.baselines.sasrec import SASRec, SASRecConfig

BASELINES = {GRU4Rec.name: (GRU4Rec, GRU4RecConfig), SASRec.name: (SASRec, SASRecConfig), DIN.name: (DIN, DINConfig)}

__all__ = ["GRU4Rec", "GRU4RecConfig", "SASRec", "SASRecConfig", "DIN", "DINConfig", "BASELINES"]
