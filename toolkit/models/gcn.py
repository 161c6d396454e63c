"""CoCorrRec's cloud Global Correction Network: GRU over the uploaded mini-batch, 3-layer MLP, two heads.

Input: the device's RMSNorm'd embeddings X of each mini-batch ([K, D], 2.56 KB fp32 uploaded).
Output per mini-batch: a correction for the attention matrix A ([H, K, K], 400 floats) and for the bias trajectory
b_bar ([H, K, d], 640 floats): 1,040 floats, 4.16 KB downloaded (docs/models.md §4.2).
"""

from __future__ import annotations

import torch
from torch import nn


class GCN(nn.Module):
    def __init__(self, dim: int, heads: int, mini_batch: int):
        super().__init__()
        self.dim, self.heads, self.K, self.d = dim, heads, mini_batch, dim // heads
        self.gru = nn.GRU(dim, dim, batch_first=True)
        # three bias-free layers D -> D -> D -> out with LeakyReLU; the last layer is one per head
        self.trunk = nn.Sequential(
            nn.Linear(dim, dim, bias=False), nn.LeakyReLU(), nn.Linear(dim, dim, bias=False), nn.LeakyReLU()
        )
        self.head_attn = nn.Linear(dim, heads * mini_batch * mini_batch, bias=False)
        self.head_bias = nn.Linear(dim, heads * mini_batch * self.d, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, L, D] (RMSNorm'd embeddings), mask [B, L] -> attn [B, M, H, K, K], bias [B, M, H, K, d]."""
        B, L, D = x.shape
        K = self.K
        M = -(-L // K)
        pad = M * K - L
        if pad:
            x = torch.cat([x, x.new_zeros(B, pad, D)], dim=1)
            mask = torch.cat([mask, mask.new_zeros(B, pad)], dim=1)
        xm = x.reshape(B * M, K, D)
        mm = mask.reshape(B * M, K).to(x.dtype)
        out, _ = self.gru(xm)  # [B*M, K, D]
        count = mm.sum(-1)  # real tokens per mini-batch
        idx = (count - 1).clamp(min=0).long()
        last = out.gather(1, idx.view(-1, 1, 1).expand(-1, 1, D)).squeeze(1)  # GRU state at the last real token
        h = self.trunk(last) * (count > 0).to(x.dtype)[:, None]  # an empty mini-batch gets no correction
        attn = self.head_attn(h).view(B, M, self.heads, K, K)
        bias = self.head_bias(h).view(B, M, self.heads, K, self.d)
        return attn, bias

    def payload_floats(self) -> dict[str, int]:
        """Bytes on the wire per mini-batch: upload X [K, D], download both corrections (fp32)."""
        up = self.K * self.dim
        down = self.heads * self.K * self.K + self.heads * self.K * self.d
        return {"upload_floats": up, "download_floats": down, "upload_bytes": 4 * up, "download_bytes": 4 * down}
