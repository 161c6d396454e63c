"""CoCorrRec's on-device Self-Correction Network (SCN) and CoCorrRec = SCN + cloud GCN trained jointly.

SCN (models.md 1): Embedding -> RMSNorm -> TTT-Linear -> LayerNorm -> Linear (no residual, no FFN by default) ->
RMSNorm; the user state u is the output at the last real position; score = dot(u, tower(candidate)).
Two exported entry points: `window` (static [1, L], from the learned initial state) and `step` (the next K clicks
plus the carried TTT state (W, b) -> scores and the new state).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from toolkit.models.contract import EntryPoint, StateSpec, TensorSpec
from toolkit.models.common import BaseConfig, RMSNorm, Recommender, last_real
from toolkit.models.gcn import GCN
from toolkit.models.ttt import TTTLinear, state_floats


@dataclass
class SCNConfig(BaseConfig):
    heads: int = 4
    mini_batch: int = 10
    base_lr: float = 1.0
    rope_theta: float = 1e4
    residual: bool = False  # the authors' block has none; a switch for experiments


class SCN(Recommender):
    name = "scn"

    def __init__(self, cfg: SCNConfig):
        super().__init__(cfg)
        D = cfg.dim
        self.in_norm = RMSNorm(D)
        self.ttt = TTTLinear(D, cfg.heads, cfg.mini_batch, cfg.base_lr, cfg.rope_theta)
        self.post_ln = nn.LayerNorm(D)
        self.proj = nn.Linear(D, D, bias=False)
        self.out_norm = RMSNorm(D)

    @property
    def K(self) -> int:
        return self.cfg.mini_batch

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        """RMSNorm'd embeddings X [B, L, D]: what the device uploads to the cloud GCN."""
        return self.in_norm(self.item_emb(items))

    def _head(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        h = self.proj(self.post_ln(o))
        if self.cfg.residual:
            h = x + h
        return self.out_norm(h)

    def hidden(self, items, corr_attn=None, corr_bias=None, state=None, need_state: bool = True):
        """Per-token outputs h [B, L, D] and the TTT state after the window."""
        x = self.embed(items)
        o, new_state = self.ttt(x, (items != 0), corr_attn, corr_bias, state, need_state)
        return self._head(x, o), new_state

    def encode(self, items, corr_attn=None, corr_bias=None):
        h, _ = self.hidden(items, corr_attn, corr_bias, need_state=False)
        return last_real(h, items)

    def forward(self, items, candidates, corr_attn=None, corr_bias=None):
        return self.score(self.encode(items, corr_attn, corr_bias), candidates)

    def initial_state(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        W, b = self.ttt.initial_state(batch)
        return W.clone(), b.clone()

    def step(self, items, state, corr_attn=None, corr_bias=None):
        """Streaming: the next K item ids [B, K] from state (W [B, H, d, d], b [B, H, d]) -> (u [B, D], state)."""
        x = self.embed(items)
        o, new_state = self.ttt.step(x, state, corr_attn, corr_bias)
        return self._head(x, o)[:, -1], new_state

    def analytic_macs(self, seq_len: int) -> int:
        """Per window, excluding the item lookup and the candidate tower: TTT layer + output projection."""
        return self.ttt.analytic_macs(seq_len) + seq_len * self.cfg.dim * self.cfg.dim

    def state_floats(self) -> int:
        return state_floats(self.cfg.heads, self.cfg.dim // self.cfg.heads)

    def contract(self, seq_len: int, candidates: int = 100, with_corrections: bool = False) -> list[EntryPoint]:
        """The exported entry points (export.md contract): `window` and `step`, static shapes."""
        n, H, K, d = self.cfg.n_items, self.cfg.heads, self.K, self.cfg.dim // self.cfg.heads
        M = -(-seq_len // K)

        def corr_specs(m: int) -> list[TensorSpec]:
            if not with_corrections:
                return []
            return [TensorSpec("corr_attn", (1, m, H, K, K), torch.float32),
                    TensorSpec("corr_bias", (1, m, H, K, d), torch.float32)]

        W0, b0 = self.initial_state(1)
        window = EntryPoint(
            name="window",
            module=_WindowEntry(self, with_corrections).eval(),
            inputs=[TensorSpec("items", (1, seq_len), torch.int64, high=n),
                    TensorSpec("candidates", (1, candidates), torch.int64, high=n), *corr_specs(M)],
            outputs=["scores"],
            description=f"scores of {candidates} candidates for a right-padded window of {seq_len} items, "
                        "from the learned initial TTT state",
        )
        step = EntryPoint(
            name="step",
            module=_StepEntry(self, with_corrections).eval(),
            inputs=[TensorSpec("items", (1, K), torch.int64, high=n),
                    TensorSpec("candidates", (1, candidates), torch.int64, high=n), *corr_specs(1)],
            outputs=["scores"],
            states=[StateSpec("ttt_W", W0.detach()), StateSpec("ttt_b", b0.detach())],
            description=f"the next {K} clicks + carried TTT state (W, b) -> scores and the new state",
        )
        return [window, step]


class _WindowEntry(nn.Module):
    def __init__(self, scn: SCN, with_corrections: bool):
        super().__init__()
        self.scn, self.with_corrections = scn, with_corrections

    def forward(self, items, candidates, *corr):
        ca, cb = (corr[0], corr[1]) if self.with_corrections else (None, None)
        return self.scn(items, candidates, ca, cb)


class _StepEntry(nn.Module):
    def __init__(self, scn: SCN, with_corrections: bool):
        super().__init__()
        self.scn, self.with_corrections = scn, with_corrections

    def forward(self, items, candidates, *rest):
        if self.with_corrections:
            ca, cb, W, b = rest
        else:
            (W, b), ca, cb = rest, None, None
        u, (W2, b2) = self.scn.step(items, (W, b), ca, cb)
        return self.scn.score(u, candidates), W2, b2


@dataclass
class CoCorrRecConfig(SCNConfig):
    # "paper": the GCN reads the device's window and corrects A and b_bar with re-standardised fusion (models.md 2,
    #          CoCorrRec as published; kept for comparison).
    # "history": the cloud reads the user's longer history (context_len clicks) and sends a per-user correction of
    #          the TTT initial state (delta W, b: H (d^2 + d) floats) that persists through the window; its head
    #          starts at zero, so training starts exactly at SCN and learns each user's own correction size.
    cloud: str = "paper"
    context_len: int = 20  # "history" only: clicks of history the cloud reads (GRU cost grows with it)
    cloud_hidden: int = 64  # "history" only: width of the cloud's GRU + MLP
    update_dropout: float = 0.0  # "history" only: share of training rows with no update (toolkit.models.cloud)


CLOUD_KINDS = ("paper", "history")


class CoCorrRec(nn.Module):
    """SCN on the device + a cloud correction trained jointly (models.md 2 and 7); see CoCorrRecConfig.cloud.

    Implements the cloud-model interface of toolkit.models.cloud. With cloud="paper" the update is the GCN's
    (corr_attn, corr_bias) of every mini-batch flattened, and the device artifact is the SCN with correction inputs.
    """

    name = "cocorrrec"

    def __init__(self, cfg: CoCorrRecConfig):
        super().__init__()
        if cfg.cloud not in CLOUD_KINDS:
            from toolkit.errors import ToolkitError

            raise ToolkitError(f"unknown cocorrrec cloud '{cfg.cloud}' (valid: {', '.join(CLOUD_KINDS)})")
        self.cfg = cfg
        self.scn = SCN(cfg)
        H, d = cfg.heads, cfg.dim // cfg.heads
        if cfg.cloud == "paper":
            self.gcn = GCN(cfg.dim, cfg.heads, cfg.mini_batch)
            self.context_len = 0  # the cloud sees the device's own window
        else:
            from toolkit.models.cloud import HistoryEncoder

            self.cloud = HistoryEncoder(cfg.dim, cfg.cloud_hidden, cfg.cloud_hidden)
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
        return self.state_head(self.cloud(self.scn.embed(context), context != 0))

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
        W0, b0 = self.scn.ttt.initial_state(items.shape[0])
        h, _ = self.scn.hidden(items, state=(W0 + dW, b0 + db), need_state=False)
        return self.scn.score(last_real(h, items), candidates)

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
        total = sum(p.numel() for p in self.parameters())
        table = self.scn.item_emb.weight.numel()
        cloud = total - sum(p.numel() for p in self.scn.parameters())
        return {"params": total, "params_excluding_item_table": total - table,
                "device_params_excluding_item_table": total - table - cloud, "cloud_params": cloud}

    def analytic_macs(self, seq_len: int) -> int:
        return self.scn.analytic_macs(seq_len)

    def contract(self, seq_len: int, candidates: int = 100, with_corrections: bool = True) -> list[EntryPoint]:
        if self.cfg.cloud == "paper":
            return self.scn.contract(seq_len, candidates, with_corrections)
        from toolkit.models.cloud import update_window_entry

        step = [e for e in self.scn.contract(seq_len, candidates, False) if e.name == "step"]
        return [update_window_entry(self, seq_len, candidates, "TTT state correction"), *step]
