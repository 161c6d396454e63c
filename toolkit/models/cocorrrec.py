"""CoCorrRec = SCN on the device + a cloud correction (the GCN, or a per-user TTT state correction from the
history) trained jointly (docs/models.md §4)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from toolkit.models.contract import EntryPoint
from toolkit.models.gcn import GCN
from toolkit.models.scn import SCN, SCNConfig
from toolkit.models.scn_device import DeviceGraph


@dataclass
class CoCorrRecConfig(SCNConfig):
    # "paper": the GCN reads the device's window and corrects A and b_bar with re-standardised fusion
    #          (docs/models.md §4.2, CoCorrRec as published; kept for comparison).
    # "history": the cloud reads the user's longer history (context_len clicks) and sends a per-user correction of
    #          the TTT initial state (delta W, b: H (d^2 + d) floats) that persists through the window; its head
    #          starts at zero, so training starts exactly at SCN and learns each user's own correction size.
    cloud: str = "paper"
    context_len: int = 20  # "history" only: clicks of history the cloud reads (GRU cost grows with it)
    cloud_hidden: int = 64  # "history" only: width of the cloud's GRU + MLP
    update_dropout: float = 0.0  # "history" only: share of training rows with no update (toolkit.models.cloud)
    cloud_table: bool = False  # "history" only: the cloud embeds the history with its own item table (not shipped)
    offline_loss: bool = True  # training only: every row also scored with no update, with SCN's own loss


CLOUD_KINDS = ("paper", "history")


class CoCorrRec(nn.Module):
    """SCN on the device + a cloud correction trained jointly (docs/models.md §4); see CoCorrRecConfig.cloud.

    Implements the cloud-model interface of toolkit.models.cloud. With cloud="paper" the update is the GCN's
    (corr_attn, corr_bias) of every mini-batch flattened, and the device artifact is the SCN with correction inputs.
    """

    name = "cocorrrec"

    def __init__(self, cfg: CoCorrRecConfig):
        super().__init__()
        if cfg.cloud not in CLOUD_KINDS:
            from toolkit.errors import ToolkitError

            raise ToolkitError(f"unknown cocorrrec cloud '{cfg.cloud}' (valid: {', '.join(CLOUD_KINDS)})")
        if cfg.cloud_table and cfg.cloud != "history":
            from toolkit.errors import ToolkitError

            raise ToolkitError("cocorrrec cloud_table=true is a cloud=history option (the paper's GCN reads the "
                               "device's own embeddings)")
        self.cfg = cfg
        self.scn = SCN(cfg)
        H, d = cfg.heads, cfg.dim // cfg.heads
        if cfg.cloud == "paper":
            self.gcn = GCN(cfg.dim, cfg.heads, cfg.mini_batch)
            self.context_len = 0  # the cloud sees the device's own window
        else:
            from toolkit.models.cloud import HistoryEncoder

            self.cloud = HistoryEncoder(cfg.dim, cfg.cloud_hidden, cfg.cloud_hidden)
            # the cloud's own item table: the device's table is shaped by what the device needs, the cloud's by
            # what the correction needs (it stays in the cloud: nothing of it is downloaded)
            self.cloud_emb = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=0) if cfg.cloud_table else None
            self.state_head = nn.Linear(cfg.cloud_hidden, H * (d * d + d))
            nn.init.zeros_(self.state_head.weight)
            nn.init.zeros_(self.state_head.bias)
            self.context_len = cfg.context_len

    @property
    def item_emb(self) -> nn.Embedding:
        return self.scn.item_emb

    @property
    def device(self) -> nn.Module:
        """The on-device SCN (its item table and candidate tower score every candidate)."""
        return self.scn

    def corrections(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the paper's GCN sends back for a window: GCN over the uploaded X of every mini-batch."""
        return self.gcn(self.scn.embed(items), items != 0)

    # ---- the cloud-model interface (toolkit.models.cloud) ----------------------------------------------------------
    def update_floats(self, seq_len: int | None = None) -> int:
        H, K, d = self.cfg.heads, self.cfg.mini_batch, self.cfg.dim // self.cfg.heads
        if self.cfg.cloud == "history":
            return H * (d * d + d)
        M = -(-(seq_len or K) // K)
        return M * H * K * (K + d)

    def device_encode(self, items: torch.Tensor) -> torch.Tensor:
        return self.scn.encode(items)

    def cloud_update(self, context: torch.Tensor) -> torch.Tensor:
        """context [B, N] (paper: the device window itself) -> flat update [B, P]."""
        if self.cfg.cloud == "paper":
            ca, cb = self.corrections(context)
            return torch.cat([ca.flatten(1), cb.flatten(1)], dim=1)
        x = self.scn.embed(context) if self.cloud_emb is None else self.scn.in_norm(self.cloud_emb(context))
        return self.state_head(self.cloud(x, context != 0))

    def _split(self, items: torch.Tensor, update: torch.Tensor):
        B, L = items.shape
        H, K, d = self.cfg.heads, self.cfg.mini_batch, self.cfg.dim // self.cfg.heads
        if self.cfg.cloud == "paper":
            M = -(-L // K)
            ca, cb = torch.split(update, [M * H * K * K, M * H * K * d], dim=1)
            return ca.reshape(B, M, H, K, K), cb.reshape(B, M, H, K, d)
        dW, db = torch.split(update, [H * d * d, H * d], dim=1)
        return dW.reshape(B, H, d, d), db.reshape(B, H, d)

    def score_update(self, items, candidates, update):
        if self.cfg.cloud == "paper":
            ca, cb = self._split(items, update)
            return self.scn(items, candidates, ca, cb)
        dW, db = self._split(items, update)
        ttt = self.scn.ttt
        return self.scn.score(self.scn._encode_last(items, (ttt.W0 + dW, ttt.b0 + db)), candidates)

    def encode(self, items, corr_attn=None, corr_bias=None):
        if self.cfg.cloud != "paper":
            raise NotImplementedError("cocorrrec(cloud=history) scores through score_update")
        if corr_attn is None:
            corr_attn, corr_bias = self.corrections(items)
        return self.scn.encode(items, corr_attn, corr_bias)

    def forward(self, items, candidates, corr_attn=None, corr_bias=None, context=None):
        if self.cfg.cloud == "paper":
            return self.scn.score(self.encode(items, corr_attn, corr_bias), candidates)
        from toolkit.models.cloud import drop_updates

        update = self.cloud_update(items if context is None else context)
        return self.score_update(items, candidates, drop_updates(update, self.cfg.update_dropout, self.training))

    def score_with_offline(self, items, candidates, context=None):
        """Training's offline loss (toolkit.train.objective.PositionScorer): the update changes SCN's TTT weights,
        so SCN runs once with it and once without."""
        from toolkit.models.cloud import two_pass_offline_scores

        return two_pass_offline_scores(self, items, candidates, context)

    def position_scores(self, items, candidates, context=None):
        """Training with a loss at every position (toolkit.models.cloud.cloud_position_scores)."""
        from toolkit.models.cloud import cloud_position_scores

        return cloud_position_scores(self, items, candidates, context)

    def payload(self, seq_len: int = 10) -> dict:
        """Bytes on the wire per update, beside the paper's 2.56 KB up / 4.16 KB down."""
        if self.cfg.cloud == "paper":
            up, down = 4 * -(-seq_len // self.cfg.mini_batch) * self.cfg.mini_batch * self.cfg.dim, \
                4 * self.update_floats(seq_len)
        else:  # the cloud keeps the click log: the device sends only its window's ids (int64)
            up, down = 8 * seq_len, 4 * self.update_floats()
        return {"upload_bytes": up, "download_bytes": down, "download_floats": down // 4,
                "paper_upload_bytes": 2_560, "paper_download_bytes": 4_160, "cloud_macs_per_update": self.cloud_macs()}

    def cloud_macs(self, seq_len: int = 10) -> int:
        if self.cfg.cloud == "paper":
            D, K = self.cfg.dim, self.cfg.mini_batch
            M = -(-seq_len // K)
            return M * (K * 3 * 2 * D * D + 2 * D * D + D * self.update_floats(K))
        return self.cloud.macs(self.cfg.context_len, self.cfg.dim) + self.cfg.cloud_hidden * self.update_floats()

    def param_counts(self) -> dict[str, int]:
        from toolkit.models.cloud import param_split

        return param_split(self, [m for name, m in self.named_children() if name != "scn"])

    def analytic_macs(self, seq_len: int) -> int:
        return self.scn.analytic_macs(seq_len)

    def entry_analytic_macs(self, entry_name: str, seq_len: int, candidates: int = 100,
                            tower_table: bool = False, with_corrections: bool = False) -> int | None:
        return self.scn.entry_analytic_macs(entry_name, seq_len, candidates, tower_table, with_corrections)

    def contract(self, seq_len: int, candidates: int = 100, with_corrections: bool = True,
                 tower_table: bool = False) -> list[EntryPoint]:
        if self.cfg.cloud == "paper":
            return self.scn.contract(seq_len, candidates, with_corrections, tower_table)
        from toolkit.models.cloud import update_window_entry

        step = [e for e in self.scn.contract(seq_len, candidates, False, tower_table) if e.name == "step"]
        window = _StateCorrectedWindow(self.scn, seq_len, tower_table)
        return [update_window_entry(self, seq_len, candidates, "TTT state correction", module=window), *step]


class _StateCorrectedWindow(nn.Module):
    """The exported window of cocorrrec(cloud=history): SCN's device graph started from the corrected initial state
    W0 + delta W, b0 + delta b, the correction being the `update` input [1, H (d^2 + d)] (zeros = plain SCN)."""

    def __init__(self, scn: SCN, seq_len: int, tower_table: bool = False):
        super().__init__()
        H, d = scn.cfg.heads, scn.cfg.dim // scn.cfg.heads
        self.H, self.d = H, d
        # not "graph": fx modules have a .graph
        self.scn_graph = DeviceGraph(scn, seq_len, step=False, tower_table=tower_table)
        self.register_buffer("W0", scn.ttt.W0.detach().clone().float())  # [H, d, d]
        self.register_buffer("b0", scn.ttt.b0.detach().clone().float().view(H, 1, d))

    def forward(self, items, candidates, update):
        H, d = self.H, self.d
        dW = update[:, : H * d * d].view(H, d, d)
        db = update[:, H * d * d:].view(H, 1, d)
        return self.scn_graph(items, candidates, self.W0 + dW, self.b0 + db)
