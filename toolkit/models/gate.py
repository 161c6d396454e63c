"""IntellectReq's request gate on the device: Distribution Mapper (conditional VAE) + Mis-Recommendation Detector.

Question it answers at each new window T (docs/models.md §6): is the correction the device holds, computed by the cloud
from the window at an earlier time t', still good for the window at T, or should it request a new one?

Inputs are the frozen SCN's user state *without* corrections, r = scn.encode(window) [D]:
  DM (paper 3.2.3): prior P(z | r) = N(mu_p, sigma_p^2); next-item net f(r, z) -> predicted next-item vector
      r_hat = r + W2 tanh(W1 [h(r), z])  (in the candidate tower's space, scored like a user state);
      posterior Q(z | r, next item) exists for training only. Uncertainty (paper eq. 17-18):
      u = sum over the D dimensions of the across-sample variance of f(r, z_i), z_i = mu_p + sigma_p * noise_i,
      with the n noise draws an explicit input so exported graphs are deterministic.
  MRD (paper 3.2.2): logit of "the stale correction still recommends correctly" from (r_T, r_t') and, unless
      `lag_input=false` (the paper's form), the lag: clicks since t', which the device counts.
  Joint head (paper A.3 step 4): logit = mrd_logit + g(mrd_logit, standardised log u); MRS = sigmoid(logit).
The request rule is MRS <= threshold (paper eq. 20; the threshold is the budget-quantile of MRS, A.3). The paper
writes MRS = 1 - f_MRD, which would request the *most* trustworthy corrections under that rule; we follow its
threshold rule and calibration (request the lowest-MRS decisions), i.e. MRS = P(stale correction still right).

Device part (counted in `param_counts()["device_params"]`): DM trunk + prior head + next-item net + MRD + joint
head, about 5.1k parameters with the defaults (the paper's gate: about 5.06k). The posterior is training-only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.errors import ToolkitError
from toolkit.models.contract import EntryPoint, TensorSpec

LOGVAR_MIN, LOGVAR_MAX = -8.0, 4.0
U_EPS = 1e-8  # log(u + eps): u is exactly 0 when every noise draw is equal


_GATE_BOUNDS = {"dim": (1, 16384), "z_dim": (1, 16384), "n_samples": (1, 100_000), "noise_seed": (0, 2**32 - 1),
                "lag_cap": (1, 1_000_000)}  # other sizes: 1..65536


@dataclass
class GateConfig:
    dim: int = 64  # D of the base SCN's user state
    z_dim: int = 16  # IntellectReq uses 32; 16 keeps the device part at the paper's ~5k parameters
    n_samples: int = 10  # n draws from the prior for the uncertainty
    dm_hidden: int = 16  # h(r): the DM trunk shared by the prior and the next-item net
    next_hidden: int = 16
    post_hidden: int = 32  # posterior (training only)
    mrd_hidden: int = 16
    joint_hidden: int = 8
    noise_seed: int = 0  # seeds the shipped default noise buffer
    lag_input: bool = True  # the MRD also reads the lag: clicks since the device last asked (known on the device)
    lag_cap: int = 50  # lags above it read as lag_cap (the MRD was trained on 1..lag_max; train sets it so)

    def to_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self) -> None:
        """Types and bounds of every field (a model.json read back gets the same bounds as --config flags): a
        crafted size must not reach the allocator."""
        for f in fields(self):
            v, default = getattr(self, f.name), f.default
            if isinstance(default, bool):
                if not isinstance(v, bool):
                    raise ToolkitError(f"gate config {f.name} must be true or false, got {v!r}")
                continue
            lo, hi = _GATE_BOUNDS.get(f.name, (1, 65536))
            if isinstance(v, bool) or not isinstance(v, int):
                raise ToolkitError(f"gate config {f.name} must be an integer, got {v!r}")
            if not lo <= v <= hi:
                raise ToolkitError(f"gate {f.name} must be {f'>= {lo}' if v < lo else f'<= {hi}'}, got {v}")

    @classmethod
    def from_dict(cls, d: dict) -> "GateConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ToolkitError(f"unknown gate config key(s): {', '.join(unknown)} (valid: {', '.join(sorted(known))})")
        return cls(**{"lag_input": False, **d})  # gates saved before the lag input existed read (r_T, r_t') only


def _count(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


class DistributionMapper(nn.Module):
    """Prior network + next-item network (the device part of the conditional VAE)."""

    def __init__(self, cfg: GateConfig):
        super().__init__()
        D, h, z = cfg.dim, cfg.dm_hidden, cfg.z_dim
        self.trunk = nn.Linear(D, h)
        self.prior_head = nn.Linear(h, 2 * z)  # -> mu_p, log sigma_p^2
        self.next_in = nn.Linear(h + z, cfg.next_hidden)
        self.next_out = nn.Linear(cfg.next_hidden, D)

    def features(self, r: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.trunk(r))  # [B, h]

    def prior(self, r: torch.Tensor):
        """r [B, D] -> (h [B, h], mu_p [B, z], logvar_p [B, z])."""
        h = self.features(r)
        mu, logvar = self.prior_head(h).chunk(2, dim=-1)
        return h, mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def next_item(self, r: torch.Tensor, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """f(r, z): r [..., D], h [..., h], z [..., z] -> predicted next-item vector r_hat [..., D] (residual on r)."""
        return r + self.next_out(torch.tanh(self.next_in(torch.cat([h, z], dim=-1))))

    def samples(self, r: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """r [B, D], noise [B or 1, n, z] -> r_hat_i [B, n, D] for z_i = mu_p + sigma_p * noise_i."""
        h, mu, logvar = self.prior(r)
        z = mu[:, None, :] + torch.exp(0.5 * logvar)[:, None, :] * noise  # [B, n, z]
        n = z.shape[1]
        return self.next_item(r[:, None, :].expand(-1, n, -1), h[:, None, :].expand(-1, n, -1), z)

    def uncertainty(self, r: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """u [B] = sum over dimensions of the across-sample (population) variance of f(r, z_i) (paper eq. 18)."""
        rh = self.samples(r, noise)  # [B, n, D]
        centred = rh - rh.mean(dim=1, keepdim=True)
        return centred.pow(2).mean(dim=1).sum(dim=-1)


class Posterior(nn.Module):
    """Q(z | r, next item): training only (removed at inference, paper 3.2.3)."""

    def __init__(self, cfg: GateConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * cfg.dim, cfg.post_hidden), nn.Tanh(),
                                 nn.Linear(cfg.post_hidden, 2 * cfg.z_dim))

    def forward(self, r: torch.Tensor, next_vec: torch.Tensor):
        mu, logvar = self.net(torch.cat([r, next_vec], dim=-1)).chunk(2, dim=-1)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


def gaussian_kl(mu_q, logvar_q, mu_p, logvar_p) -> torch.Tensor:
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) summed over the last axis -> [B]."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1.0).sum(-1)


def lag_feature(lag: torch.Tensor, cap: int) -> torch.Tensor:
    """log(min(max(lag, 1), cap)) / log(cap): the lag on a 0..1 scale (log: the first clicks after a request change
    the most; clamped: the device may wait longer than any lag the MRD saw in training)."""
    scale = 1.0 / math.log(cap) if cap > 1 else 0.0
    return torch.log(torch.clamp(lag, 1.0, float(max(cap, 1)))) * scale


class MisRecommendationDetector(nn.Module):
    """(r_T, r_t'[, lag]) -> logit that the update computed at t' still recommends correctly at T.

    The paper's MRD reads the two windows only. The lag (clicks since t') is known on the device and is the
    strongest single predictor of how much a fresh update adds (curve.json's per_lag), so by default it is an input
    too (`lag_input=false` restores the paper's form)."""

    def __init__(self, cfg: GateConfig):
        super().__init__()
        m = cfg.mrd_hidden
        self.lag_input, self.lag_cap = bool(cfg.lag_input), int(cfg.lag_cap)
        self.proj = nn.Linear(cfg.dim, m)  # shared by both windows
        self.hidden = nn.Linear(3 * m + 2 + self.lag_input, m)
        self.out = nn.Linear(m, 1)

    def forward(self, r_now: torch.Tensor, r_stale: torch.Tensor, lag: torch.Tensor | None = None) -> torch.Tensor:
        a, b = torch.tanh(self.proj(r_now)), torch.tanh(self.proj(r_stale))  # [B, m]
        dot = (r_now * r_stale).sum(-1, keepdim=True)
        cos = dot / (torch.sqrt((r_now * r_now).sum(-1, keepdim=True) * (r_stale * r_stale).sum(-1, keepdim=True))
                     + 1e-6)
        diff = r_now - r_stale
        dist = torch.sqrt((diff * diff).mean(-1, keepdim=True) + 1e-6)  # how far the window moved since t'
        feats = [a, b, a * b, cos, dist]
        if self.lag_input:
            if lag is None:
                raise ToolkitError("this gate's MRD reads the lag (clicks since the last request); none was given")
            feats.append(lag_feature(lag.to(r_now.dtype).reshape(-1, 1), self.lag_cap))
        return self.out(torch.tanh(self.hidden(torch.cat(feats, dim=-1)))).squeeze(-1)  # [B]


class JointHead(nn.Module):
    """(MRD logit, uncertainty) -> final logit; the zero-initialised residual starts it equal to the MRD."""

    def __init__(self, cfg: GateConfig):
        super().__init__()
        self.inp = nn.Linear(2, cfg.joint_hidden)
        self.out = nn.Linear(cfg.joint_hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, mrd_logit: torch.Tensor, u_std: torch.Tensor) -> torch.Tensor:
        x = torch.stack([mrd_logit, u_std], dim=-1)
        return mrd_logit + self.out(torch.tanh(self.inp(x))).squeeze(-1)


class Gate(nn.Module):
    """The device-side gate: forward(r_now [B, D], r_stale [B, D], noise [B|1, n, z], lag [B]) -> MRS [B] in (0, 1);
    lag (clicks since the stale update was computed) only when `cfg.lag_input`."""

    name = "gate"

    def __init__(self, cfg: GateConfig):
        super().__init__()
        self.cfg = cfg
        self.dm = DistributionMapper(cfg)
        self.posterior = Posterior(cfg)
        self.mrd = MisRecommendationDetector(cfg)
        self.joint = JointHead(cfg)
        g = torch.Generator().manual_seed(cfg.noise_seed)
        # shipped default draws: what calibrate/curve use, and what the device passes as `noise`
        self.register_buffer("default_noise", torch.randn(1, cfg.n_samples, cfg.z_dim, generator=g))
        # standardisation of log u, set from the training data after the DM stage
        self.register_buffer("u_log_mean", torch.zeros(()))
        self.register_buffer("u_log_std", torch.ones(()))
        self.run_dir: Path | None = None
        self.base_run: Path | None = None

    def standardise_u(self, u: torch.Tensor) -> torch.Tensor:
        return (torch.log(u + U_EPS) - self.u_log_mean) / self.u_log_std

    def parts(self, r_now, r_stale, noise=None, lag=None) -> dict[str, torch.Tensor]:
        """Every intermediate the policies and ablations use: mrd_logit, u, logit, mrs (all [B])."""
        noise = self.default_noise if noise is None else noise
        mrd_logit = self.mrd(r_now, r_stale, lag)
        u = self.dm.uncertainty(r_now, noise)
        logit = self.joint(mrd_logit, self.standardise_u(u))
        return {"mrd_logit": mrd_logit, "u": u, "logit": logit, "mrs": torch.sigmoid(logit)}

    def forward(self, r_now: torch.Tensor, r_stale: torch.Tensor, noise: torch.Tensor,
                lag: torch.Tensor | None = None) -> torch.Tensor:
        u = self.dm.uncertainty(r_now, noise)
        return torch.sigmoid(self.joint(self.mrd(r_now, r_stale, lag), self.standardise_u(u)))

    def param_counts(self) -> dict[str, int]:
        device = _count(self.dm, self.mrd, self.joint)
        return {
            "params": device,  # what ships: the exported graph holds the device part only
            "params_excluding_item_table": device,
            "device_params": device,
            "dm_prior_params": _count(self.dm.trunk, self.dm.prior_head),
            "dm_next_item_params": _count(self.dm.next_in, self.dm.next_out),
            "mrd_params": _count(self.mrd),
            "joint_params": _count(self.joint),
            "training_only_params": _count(self.posterior),
        }

    def input_specs(self) -> list[TensorSpec]:
        """What the device passes per decision: r_now [1, D], r_stale [1, D], noise [1, n, z][, lag [1]]."""
        D, n, z = self.cfg.dim, self.cfg.n_samples, self.cfg.z_dim
        lag = [TensorSpec("lag", (1,), torch.float32, high=self.cfg.lag_cap)] if self.cfg.lag_input else []
        return [TensorSpec("r_now", (1, D), torch.float32), TensorSpec("r_stale", (1, D), torch.float32),
                TensorSpec("noise", (1, n, z), torch.float32), *lag]

    def contract(self) -> list[EntryPoint]:
        """One stateless entry point: `input_specs()` -> mrs [1]."""
        n = self.cfg.n_samples
        return [EntryPoint(
            name="mrs",
            module=_MRSEntry(self).eval(),
            inputs=self.input_specs(),
            outputs=["mrs"],
            description=f"Mis-Recommendation Score of keeping the update from the stale window: inputs are the "
                        f"device's uncorrected user states now and at t', {n} standard-normal draws (the run ships "
                        f"them as the `default_noise` buffer)"
                        + (", and the lag: clicks since t', as a float" if self.cfg.lag_input else "")
                        + "; request a new update when mrs <= threshold",
        )]


class _MRSEntry(nn.Module):
    """The gate as exported: `Gate.forward` for a static batch of 1, written so XNNPACK takes the whole graph (the
    treatment of `scn_device.DeviceGraph`, docs/models.md §3.3). Constants are a snapshot of the weights when the entry
    is built.

    * Reductions are matmuls with constant rows (XNNPACK has no `sum` and delegates `mean.dim` only on 4-D inputs):
      sums and means over D with a [1, D] row, the mean over the n samples with a [1, n] row.
    * No split/stack/expand/squeeze: the prior head is two Linears (mu, log sigma^2); the next-item net's first layer
      is its h-columns (once) plus its z-columns (per sample), added by broadcasting; the MRD's hidden layer is its
      column blocks (a, b, a*b, cos, dist) summed; the joint head's Linear(2, .) is two broadcast products.
    * log u is standardised with the folded constants (log(u + eps) - mean) * (1 / std)."""

    def __init__(self, gate: Gate):
        super().__init__()
        cfg, dm, mrd, joint = gate.cfg, gate.dm, gate.mrd, gate.joint
        D, z, n, m = cfg.dim, cfg.z_dim, cfg.n_samples, cfg.mrd_hidden
        c = lambda t: t.detach().clone().float()  # noqa: E731
        reg = self.register_buffer
        with torch.no_grad():
            reg("trunk_w", c(dm.trunk.weight))
            reg("trunk_b", c(dm.trunk.bias))
            reg("mu_w", c(dm.prior_head.weight[:z]))
            reg("mu_b", c(dm.prior_head.bias[:z]))
            reg("lv_w", c(dm.prior_head.weight[z:]))
            reg("lv_b", c(dm.prior_head.bias[z:]))
            h = dm.trunk.out_features
            reg("nin_wh", c(dm.next_in.weight[:, :h]))
            reg("nin_wz", c(dm.next_in.weight[:, h:]))
            reg("nin_b", c(dm.next_in.bias))
            reg("nout_w", c(dm.next_out.weight))
            reg("nout_b", c(dm.next_out.bias))
            reg("mean_n", torch.full((1, n), 1.0 / n))  # torch.mm(mean_n, x [n, D]) = mean over the samples
            reg("ones_D", torch.ones(1, D))  # F.linear(x, ones_D) = sum over the last axis
            reg("mean_D", torch.full((1, D), 1.0 / D))
            reg("eps_cos", torch.full((1,), 1e-6))
            reg("eps_u", torch.full((1,), U_EPS))
            reg("u_mean", c(gate.u_log_mean).view(1))
            reg("u_inv_std", (1.0 / c(gate.u_log_std)).view(1))
            reg("proj_w", c(mrd.proj.weight))
            reg("proj_b", c(mrd.proj.bias))
            W = c(mrd.hidden.weight)  # columns: a (m), b (m), a*b (m), cos, dist
            reg("hid_a", W[:, :m].contiguous())
            reg("hid_b", W[:, m:2 * m].contiguous())
            reg("hid_ab", W[:, 2 * m:3 * m].contiguous())
            reg("hid_cos", W[:, 3 * m].view(1, m).contiguous())
            reg("hid_dist", W[:, 3 * m + 1].view(1, m).contiguous())
            if mrd.lag_input:  # lag_feature's clamp bounds and scale, and its hidden-layer column
                reg("lag_lo", torch.ones(1))
                reg("lag_hi", torch.full((1,), float(max(mrd.lag_cap, 1))))
                reg("lag_scale", torch.full((1,), 1.0 / math.log(mrd.lag_cap) if mrd.lag_cap > 1 else 0.0))
                reg("hid_lag", W[:, 3 * m + 2].view(1, m).contiguous())
            reg("hid_bias", c(mrd.hidden.bias))
            reg("mrd_out_w", c(mrd.out.weight))
            reg("mrd_out_b", c(mrd.out.bias))
            reg("j_w_logit", c(joint.inp.weight[:, 0]).view(1, -1))
            reg("j_w_u", c(joint.inp.weight[:, 1]).view(1, -1))
            reg("j_b", c(joint.inp.bias).view(1, -1))
            reg("j_out_w", c(joint.out.weight))
            reg("j_out_b", c(joint.out.bias))
        self.n, self.z, self.lag_input = n, z, mrd.lag_input

    def forward(self, r_now, r_stale, noise, lag=None):
        # distribution mapper: the across-sample variance of f(r, z_i), summed over D
        h = torch.tanh(F.linear(r_now, self.trunk_w, self.trunk_b))  # [1, h]
        mu = F.linear(h, self.mu_w, self.mu_b)  # [1, z]
        logvar = torch.clamp(F.linear(h, self.lv_w, self.lv_b), LOGVAR_MIN, LOGVAR_MAX)
        zs = mu + torch.exp(0.5 * logvar) * noise.view(self.n, self.z)  # [n, z]
        hid = torch.tanh(F.linear(h, self.nin_wh) + F.linear(zs, self.nin_wz, self.nin_b))  # [n, hidden]
        rh = r_now + F.linear(hid, self.nout_w, self.nout_b)  # [n, D]
        centred = rh - torch.mm(self.mean_n, rh)
        u = F.linear(torch.mm(self.mean_n, centred * centred), self.ones_D)  # [1, 1]
        u_std = (torch.log(u + self.eps_u) - self.u_mean) * self.u_inv_std
        # mis-recommendation detector
        a = torch.tanh(F.linear(r_now, self.proj_w, self.proj_b))
        b = torch.tanh(F.linear(r_stale, self.proj_w, self.proj_b))
        dot = F.linear(r_now * r_stale, self.ones_D)  # [1, 1]
        nn2 = F.linear(r_now * r_now, self.ones_D) * F.linear(r_stale * r_stale, self.ones_D)
        cos = dot / (torch.sqrt(nn2) + self.eps_cos)
        diff = r_now - r_stale
        dist = torch.sqrt(F.linear(diff * diff, self.mean_D, self.eps_cos))
        x = (F.linear(a, self.hid_a) + F.linear(b, self.hid_b) + F.linear(a * b, self.hid_ab) + cos * self.hid_cos
             + dist * self.hid_dist + self.hid_bias)
        if self.lag_input:
            lag_f = torch.log(torch.minimum(torch.maximum(lag, self.lag_lo), self.lag_hi)) * self.lag_scale  # [1]
            x = x + lag_f.view(1, 1) * self.hid_lag
        mrd_logit = F.linear(torch.tanh(x), self.mrd_out_w, self.mrd_out_b)  # [1, 1]
        # joint head
        j = torch.tanh(mrd_logit * self.j_w_logit + u_std * self.j_w_u + self.j_b)
        logit = mrd_logit + F.linear(j, self.j_out_w, self.j_out_b)
        return torch.sigmoid(logit).view(1)


def check_base(gate_desc: dict, base_desc: dict, base_run: Path) -> None:
    """A gate is only valid for the exact base weights it was trained on."""
    want, got = gate_desc.get("base_weights_sha256"), base_desc.get("weights_sha256")
    if want != got:
        raise ToolkitError(
            f"gate was trained for base run weights sha256 {str(want)[:12]}, but {base_run} holds "
            f"{str(got)[:12]}: retrain it with `toolkit train gate --model {base_run} ...`")


__all__ = ["Gate", "GateConfig", "DistributionMapper", "Posterior", "MisRecommendationDetector", "JointHead",
           "gaussian_kl", "lag_feature", "check_base"]
