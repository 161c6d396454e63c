"""IntellectReq's edge-cloud setting: the cloud *generates* device parameters (DUET WWW'23 / APG NeurIPS'22).

Device: a static backbone (sasrec, gru4rec, din or scn) computes the user state u from the window; `gen_layers`
small residual layers whose parameters came from the cloud transform it before scoring:
    h <- h + tanh(h W_i + b_i),   score = dot(h, tower(candidate))
Cloud: a generator reads the user's history (`context_len` clicks, longer than the device window) with a GRU,
takes the last hidden state through a 2-layer MLP to a code z, and generates every W_i, b_i from z:
    full (DUET):      W_i = reshape(z A_i + a_i) [D, D],  b_i = z B_i + c_i        download gen_layers (D^2 + D)
    low rank (APG):   W_i = U_i diag(z S_i + s_i) V_i, U_i [D, r] and V_i [r, D] stay on the device
                                                                                 download gen_layers (r + D)
All-zero parameters make every layer the identity, so "no update" is exactly the backbone; the generator's output
projections start at zero, so training starts exactly at the backbone and learns how far each user moves from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from toolkit.errors import ToolkitError
from toolkit.models.cloud import HistoryEncoder, cloud_position_scores, drop_updates, param_split, update_window_entry
from toolkit.models.common import BaseConfig
from toolkit.models.registry import build, check_duet_config


@dataclass
class DuetConfig(BaseConfig):
    backbone: str = "sasrec"  # the static device model: sasrec, gru4rec, din or scn
    context_len: int = 20  # clicks of history the cloud reads (>= the device window; GRU cost grows with it)
    code_dim: int = 32  # generator code z
    gen_hidden: int = 64  # generator GRU/MLP width
    gen_layers: int = 2  # generated residual layers on the device
    rank: int = 0  # 0: full DUET weights; r > 0: APG low-rank U diag(s) V with U, V on the device
    update_dropout: float = 0.0  # training only: share of rows trained with no update (toolkit.models.cloud)
    offline_loss: bool = True  # training only: every row also scored with no update, with the backbone's own loss
    dropout: float = 0.0  # training only: the backbone's item-embedding dropout


class Duet(nn.Module):
    name = "duet"

    def __init__(self, cfg: DuetConfig):
        super().__init__()
        check_duet_config({"backbone": cfg.backbone, "context_len": cfg.context_len, "code_dim": cfg.code_dim,
                      "gen_hidden": cfg.gen_hidden, "gen_layers": cfg.gen_layers, "rank": cfg.rank,
                      "update_dropout": cfg.update_dropout})
        self.cfg = cfg
        self.context_len = cfg.context_len
        D, r = cfg.dim, cfg.rank
        self.backbone = build(cfg.backbone, cfg.n_items, dim=D, dropout=cfg.dropout)
        self.generator = HistoryEncoder(D, cfg.gen_hidden, cfg.code_dim)
        per_w = D * D if r == 0 else r
        self._sizes = [per_w, D] * cfg.gen_layers  # W_i (or s_i), b_i for each layer, in order
        self.head = nn.Linear(cfg.code_dim, sum(self._sizes))
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        if r:  # APG bases on the device
            self.U = nn.Parameter(torch.randn(cfg.gen_layers, D, r) / D ** 0.5)
            self.V = nn.Parameter(torch.randn(cfg.gen_layers, r, D) / r ** 0.5)

    @property
    def item_emb(self) -> nn.Embedding:
        return self.backbone.item_emb

    @property
    def device(self) -> nn.Module:
        """The static device model (its item table and candidate tower score every candidate)."""
        return self.backbone

    # ---- the cloud-model interface (toolkit.models.cloud) ----------------------------------------------------------
    def update_floats(self, seq_len: int | None = None) -> int:
        return sum(self._sizes)

    def device_encode(self, items: torch.Tensor) -> torch.Tensor:
        """The backbone's user state; DIN has none per window (target attention), so its masked mean history."""
        if self.cfg.backbone == "din":
            mask = (items != 0).to(torch.float32)[..., None]
            return (self.backbone.history(items) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.backbone.encode(items)

    def cloud_update(self, context: torch.Tensor) -> torch.Tensor:
        """context [B, N] item ids (right-padded) -> generated parameters [B, P]."""
        z = self.generator(self.backbone.item_emb(context), context != 0)
        return self.head(z)

    def apply_update(self, u: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """u [..., D] through the generated layers; update [..., P] broadcast against u (zeros: identity)."""
        D = u.shape[-1]
        parts = torch.split(update, self._sizes, dim=-1)
        h = u
        for i in range(self.cfg.gen_layers):
            w, b = parts[2 * i], parts[2 * i + 1]
            if self.cfg.rank:
                hw = ((h @ self.U[i]) * w) @ self.V[i]  # h U diag(s) V
            else:
                hw = (h.unsqueeze(-2) @ w.unflatten(-1, (D, D))).squeeze(-2)
            h = h + torch.tanh(hw + b)
        return h

    def _states(self, items, cand):
        """The backbone's user state [B, D], or DIN's one per candidate [B, C, D] (target attention)."""
        bb = self.backbone
        return bb.pooled(items, cand) if self.cfg.backbone == "din" else bb.encode(items)

    def _scores(self, u, cand, update):
        """Scores [B, C] of states u (see `_states`) through the generated layers (update None: no update, which
        is what an all-zero update computes)."""
        din = self.cfg.backbone == "din"
        if update is not None:
            u = self.apply_update(u, update[:, None, :] if din else update)
        return (u * cand).sum(-1) if din else torch.einsum("bd,bcd->bc", u, cand)

    def score_update(self, items, candidates, update):
        return self.score_update_vectors(items, self.backbone.candidate_vectors(candidates), update)

    def score_update_vectors(self, items, cand, update):
        """score_update from candidate vectors cand [B, C, D] that already went through the backbone's tower (rows
        of its `tower_table()`, export --tower precomputed)."""
        return self._scores(self._states(items, cand), cand, update)

    def forward(self, items, candidates, context=None):
        if context is None:
            raise ToolkitError("duet scores with a cloud update: pass the history context (or use score_update)")
        update = drop_updates(self.cloud_update(context), self.cfg.update_dropout, self.training)
        return self.score_update(items, candidates, update)

    def score_with_offline(self, items, candidates, context):
        """Training's forward with the offline loss (toolkit.train.objective.PositionScorer): the scores with the
        cloud update, then with none (all zeros), [2B, C]. The generated layers act on the backbone's output, so
        the backbone runs once for both (one dropout draw) instead of once per half: DUET's step is then about
        the cost of its backbone's."""
        update = drop_updates(self.cloud_update(context), self.cfg.update_dropout, self.training)
        cand = self.backbone.candidate_vectors(candidates)
        u = self._states(items, cand)
        return torch.cat([self._scores(u, cand, update), self._scores(u, cand, None)])

    def position_scores(self, items, candidates, context=None):
        """Training with a loss at every position (toolkit.models.cloud.cloud_position_scores)."""
        return cloud_position_scores(self, items, candidates, context)

    # ---- accounting ----------------------------------------------------------------------------------------------
    def payload(self, seq_len: int = 10) -> dict:
        """Bytes per update: up, the window's item ids (int64; the cloud keeps the click log), down, the
        generated parameters (fp32), beside the paper's 48.5 kB and 1.53 MFLOPs."""
        down = 4 * self.update_floats()
        return {"upload_bytes": 8 * seq_len, "download_bytes": down, "download_floats": self.update_floats(),
                "cloud_macs_per_update": self.cloud_macs(), "paper_download_bytes": 48_500,
                "paper_cloud_flops": 1_530_000}

    def cloud_macs(self) -> int:
        D = self.cfg.dim
        return self.generator.macs(self.cfg.context_len, D) + self.cfg.code_dim * self.update_floats()

    def param_counts(self) -> dict[str, int]:
        return param_split(self, (self.generator, self.head))

    def analytic_macs(self, seq_len: int) -> int:
        D = self.cfg.dim
        per_layer = D * D if not self.cfg.rank else 2 * D * self.cfg.rank + self.cfg.rank
        return self.backbone.analytic_macs(seq_len) + self.cfg.gen_layers * per_layer

    def contract(self, seq_len: int, candidates: int = 100, tower_table: bool = False):
        return [update_window_entry(self, seq_len, candidates, "generated parameters", tower_table=tower_table)]
