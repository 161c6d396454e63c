"""`toolkit train gate`: the three training stages of IntellectReq's gate over a frozen cloud model (paper A.3).

The base run is any cloud model (toolkit.models.cloud): a cocorrrec run (the GCN's correction) or a duet run (the
cloud generates device parameters). "Update" below is whichever of the two the base model sends.

1. DM: conditional VAE on the training windows' uncorrected SCN states r; loss = BCE of the next-item prediction
   f(r, z ~ Q) scored by the frozen candidate tower on the row's 5 candidates + beta * KL(Q || P).
2. MRD: (r_T, r_t') -> the MRD label, cross-entropy. `label=gain` (default): sigmoid of minus the margin gain (how
   much better a fresh update separates the positive from the negatives than the stale one, over its training
   std) — what the request curve rewards, weighted by size; `label=margin`: its hard version (1 when the stale
   update separates the positive at least as well); `label=paper`: the fraction of the target's rows the stale
   update gets right (IntellectReq eq. 8). gain was chosen over margin on the held-out users' gain_share_at_10pct
   (Beauty duet 0.634 vs 0.595; synthetic duet 0.127 vs 0.125).
3. Joint: MRD + joint head on (MRD logit, uncertainty u of the frozen DM) -> the same label.
MRD samples come from rows the base model was never fitted on (`mrd_rows=valid`, default): the validation targets
(time n-2, all 100 candidates) of 80% of the users train the MRD, the other 20% select each stage's epoch. The base
model only *selected* its epoch on those rows; on its own training rows (`mrd_rows=train`)
stale and fresh updates both look right, because the model has fitted those very targets.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from toolkit.data import Dataset
from toolkit.errors import CheckFailed, ToolkitError
from toolkit.gate.dataset import PairSet, encode_plain, expand_lags, label_balance, score_pairs, subsample
from toolkit.io import atomic_write_json, write_descriptor_json
from toolkit.metrics import roc_auc
from toolkit.models.gate import Gate, GateConfig, gaussian_kl
from toolkit.models.registry import CLOUD_MODELS
from toolkit.models.runs import WEIGHTS, load_run, model_descriptor, save_weights
from toolkit.reporter import Reporter

VALID_CANDS = 5  # validation targets keep 1 positive + 4 negatives, like training rows


LABELS = ("margin", "gain", "paper")


@dataclass
class GateTrained:
    """What a finished gate shows its user: metrics.json's content, its parameter counts, the dataset it learned."""

    metrics: dict
    params: dict
    dataset: Path


@dataclass
class GateTrainConfig:
    lag_min: int = 1  # clicks between the stale moment t' and now T
    lag_max: int = 50  # every earlier moment t' = T-50..T-1 with a non-empty window (docs/models.md §6.5)
    mrd_rows: str = "valid"  # "valid": rows the base model never fitted (80/20 users); "train": its training rows
    mrd_valid_share: float = 0.2  # share of users whose decisions select the epochs when mrd_rows=valid
    max_samples: int = 250_000  # cap on MRD training samples (uniform subsample, seeded)
    max_valid_samples: int = 50_000  # cap on validation decision samples (selection only)
    beta: float = 0.01  # weight of KL(Q || P); >= 0.1 collapses the posterior onto the prior on Beauty (KL ~0.01)
    label: str = "gain"  # MRD target: gain | margin | paper (see the module docstring; gain chosen on validation)
    dm_epochs: int | None = None  # per-stage epochs (default: --epochs)
    mrd_epochs: int | None = None
    joint_epochs: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def split_config(config: dict, dim: int) -> tuple[GateConfig, GateTrainConfig]:
    """`--config key=value` pairs -> (architecture, training) configs; unknown keys are named."""
    arch_keys = {f.name for f in fields(GateConfig)}
    train_keys = {f.name for f in fields(GateTrainConfig)}
    unknown = sorted(set(config) - arch_keys - train_keys)
    if unknown:
        raise ToolkitError(f"unknown gate config key(s): {', '.join(unknown)} "
                           f"(valid: {', '.join(sorted(arch_keys | train_keys))})")
    if "dim" in config and int(config["dim"]) != dim:
        raise ToolkitError(f"gate dim must equal the base model's dim ({dim}), got {config['dim']}")
    tcfg = GateTrainConfig(**{k: v for k, v in config.items() if k in train_keys})
    # the lag the MRD reads is capped at the largest lag it trains on (unless set explicitly)
    arch = GateConfig(**{"lag_cap": tcfg.lag_max, **{k: v for k, v in config.items() if k in arch_keys}, "dim": dim})
    if not isinstance(arch.lag_input, bool):
        raise ToolkitError(f"lag_input must be true or false, got {arch.lag_input!r}")
    if tcfg.label not in LABELS:
        raise ToolkitError(f"unknown MRD label '{tcfg.label}' (expected {', '.join(LABELS)})")
    if tcfg.mrd_rows not in ("valid", "train"):
        raise ToolkitError(f"unknown mrd_rows '{tcfg.mrd_rows}' (expected valid or train)")
    if not 0.0 < tcfg.mrd_valid_share < 1.0:
        raise ToolkitError(f"mrd_valid_share must lie in (0, 1), got {tcfg.mrd_valid_share}")
    if not 1 <= tcfg.lag_min <= tcfg.lag_max:
        raise ToolkitError(f"lag_min/lag_max must satisfy 1 <= lag_min <= lag_max, got {tcfg.lag_min}..{tcfg.lag_max}")
    if tcfg.beta < 0 or min(tcfg.max_samples, tcfg.max_valid_samples) < 1:
        raise ToolkitError("beta must be >= 0, max_samples and max_valid_samples >= 1")
    small = [k for k in ("z_dim", "n_samples", "dm_hidden", "next_hidden", "mrd_hidden", "joint_hidden", "lag_cap")
             if getattr(arch, k) < 1]
    if small:
        raise ToolkitError(f"gate {', '.join(small)} must be >= 1 (widths, z_dim, n_samples and lag_cap)")
    return arch, tcfg




def load_base(base_run: Path):
    """The frozen cloud model the gate sits on: (model, model.json)."""
    from toolkit.models.runs import read_descriptor

    kind = read_descriptor(base_run).get("model")
    if kind not in CLOUD_MODELS:
        raise ToolkitError(f"the gate decides when to ask the cloud for an update; {base_run} is a '{kind}' run, "
                           f"which has none (usable: {', '.join(CLOUD_MODELS)})")
    model, desc = load_run(base_run)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, desc


def _stage(name: str, gate: Gate, params, n: int, epochs: int, batch_size: int, lr: float, seed: int,
           batch_loss, valid_loss, reporter: Reporter, keep_initial: bool = False, dist=None) -> dict:
    """Adam over `params`; the gate's whole state at the best validation epoch is restored at the end.

    dist (a toolkit.train.distributed.Dist): data-parallel, the recommenders' scheme: every worker draws the same
    permutation, batch_loss(idx, part) trains on idx[part] (its `local_slice` of the global batch idx) and scales its
    mean by the part's share of the batch, and the gradients (plus the loss) are summed over workers in one
    all_reduce, so every worker applies the 1-worker batch-mean gradient. Rank 0 validates and selects; the others
    follow its decision (broadcast), so all workers keep the same weights.
    """
    params = list(params)
    opt = torch.optim.Adam(params, lr=lr)
    steps = math.ceil(n / batch_size)
    main = dist is None or dist.is_main
    best, best_epoch, best_state, history = math.inf, 0, None, []
    if keep_initial:  # the stage's starting point competes too (joint starts equal to the MRD)
        best, best_state = valid_loss() if main else math.inf, {k: v.clone() for k, v in gate.state_dict().items()}
        history.append({"epoch": 0, "valid_loss": round(best, 6)})
    t_start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        torch.manual_seed(seed * 100_003 + epoch)
        gate.train()
        total, seen, t0 = 0.0, 0, time.perf_counter()
        with reporter.bars("loss {loss:.4f}") as bar:
            task = bar.add_task(f"gate {name} epoch {epoch + 1}/{epochs}", total=steps, loss=0.0)
            for i in range(steps):
                idx = order[i * batch_size:(i + 1) * batch_size]
                opt.zero_grad(set_to_none=True)
                if dist is None:
                    loss = batch_loss(idx)
                else:  # backward + all_reduce here: the summed loss, so every worker stops together below
                    loss = _all_reduce_step(dist, params, batch_loss(idx, dist.local_slice(len(idx))))
                if not torch.isfinite(loss):
                    raise CheckFailed(f"gate {name} loss became {loss.item()} at epoch {epoch + 1}: try a lower --lr")
                if dist is None:
                    loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                seen += len(idx)
                bar.update(task, advance=1, loss=total / seen)
        gate.eval()
        v = valid_loss() if main else math.inf
        improved = v < best if dist is None else dist.broadcast_flag(v < best)
        if improved:
            best, best_epoch = v, epoch + 1
            best_state = {k: t.clone() for k, t in gate.state_dict().items()}
        history.append({"epoch": epoch + 1, "loss": round(total / max(seen, 1), 6), "valid_loss": round(v, 6),
                        "seconds": round(time.perf_counter() - t0, 3)})
        reporter.epoch(f"gate {name} epoch {epoch + 1}: loss {total / max(seen, 1):.4f}  valid {v:.4f}", improved)
    gate.load_state_dict(best_state)
    gate.eval()
    return {"best_epoch": best_epoch, "best_valid_loss": round(best, 6), "history": history,
            "seconds": round(time.perf_counter() - t_start, 3)}


def _data_digest(*parts) -> int:
    """A 60-bit digest of the arrays the stages train and select on (tensors and PairSets)."""
    import hashlib

    h = hashlib.sha256()
    for p in parts:
        arrays = [p.numpy()] if isinstance(p, torch.Tensor) else [p.user, p.time, p.lag, p.r_now, p.r_stale,
                                                                    *(p.scores[k] for k in sorted(p.scores))]
        for a in arrays:
            h.update(np.ascontiguousarray(a).tobytes())
    return int(h.hexdigest()[:15], 16)


def _all_reduce_step(dist, params, loss: torch.Tensor) -> torch.Tensor:
    """Backward of this worker's share, then one all_reduce (sum) of [grads..., loss]: the global batch's mean
    gradient and loss on every worker. (DDP needs the forward to run through its wrapper; the stages call the
    gate's parts directly, so the averaging DDP does after backward is done here, in one flat buffer.)"""
    import torch.distributed as tdist

    loss.backward()
    used = [p for p in params if p.grad is not None]  # the same on every worker (the same graph)
    flat = torch.cat([p.grad.reshape(-1) for p in used] + [loss.detach().reshape(1)])
    tdist.all_reduce(flat)
    at = 0
    for p in used:
        p.grad = flat[at:at + p.numel()].view_as(p).clone()
        at += p.numel()
    return flat[-1]


class _Frozen:
    """What the stages read from the frozen base model, as tensors."""

    def __init__(self, model):
        self.model = model

    @torch.no_grad()
    def cand_vecs(self, cands: torch.Tensor) -> torch.Tensor:
        dev = self.model.device
        return dev.tower(dev.item_emb(cands))  # [B, C, D]


def _dm_loss(gate: Gate, r, cand_vecs, beta: float, eps=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, bce, kl) of the conditional VAE on a batch; cand_vecs[:, 0] is the next item's vector."""
    h, mu_p, logvar_p = gate.dm.prior(r)
    mu_q, logvar_q = gate.posterior(r, cand_vecs[:, 0])
    eps = torch.randn_like(mu_q) if eps is None else eps
    z = mu_q + torch.exp(0.5 * logvar_q) * eps
    r_hat = gate.dm.next_item(r, h, z)
    logits = torch.einsum("bd,bcd->bc", r_hat, cand_vecs)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    kl = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p).mean()
    return bce + beta * kl, bce, kl


def _soft_bce(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.binary_cross_entropy_with_logits(logit, target)


def _auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    if labels.min() == labels.max():
        return None
    return round(roc_auc(scores, labels.astype(np.int64)), 4)


def _gain_share(mrs: np.ndarray, gain: np.ndarray, budget: float) -> float | None:
    total = float(gain.sum())
    if len(gain) == 0 or total == 0.0:
        return None
    k = max(1, int(round(budget * len(gain))))
    return round(float(gain[np.argsort(mrs, kind="stable")[:k]].sum()) / total, 4)


@torch.no_grad()
def _uncertainty(gate: Gate, r: np.ndarray, batch: int = 8192) -> torch.Tensor:
    """u [N] with the shipped default noise, in batches (the n samples make [B, n, D] intermediates)."""
    return torch.cat([gate.dm.uncertainty(torch.from_numpy(r[a:a + batch]), gate.default_noise)
                      for a in range(0, len(r), batch)])


@torch.no_grad()
def gate_outputs(gate: Gate, pairs: PairSet, batch: int = 8192) -> dict[str, np.ndarray]:
    """mrd_logit, u, logit, mrs [N] for every decision sample, with the shipped default noise."""
    gate.eval()
    out: dict[str, list] = {}
    for a in range(0, len(pairs), batch):
        p = gate.parts(torch.from_numpy(pairs.r_now[a:a + batch]), torch.from_numpy(pairs.r_stale[a:a + batch]),
                       lag=torch.from_numpy(pairs.lag[a:a + batch]).float())
        for k, v in p.items():
            out.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in out.items()} if out else {}


def mrd_targets(ds: Dataset, tcfg: GateTrainConfig, seed: int):
    """(train, valid) decision targets for the MRD; see the module docstring (mrd_rows)."""
    if tcfg.mrd_rows == "train":
        return (expand_lags(ds, "train", tcfg.lag_min, tcfg.lag_max, "all"),
                expand_lags(ds, "valid", tcfg.lag_min, tcfg.lag_max, "all", n_cands=VALID_CANDS))
    allv = expand_lags(ds, "valid", tcfg.lag_min, tcfg.lag_max, "all")
    users = np.unique(allv.user)
    held = np.random.default_rng(seed + 7).permutation(users)[: max(1, int(round(tcfg.mrd_valid_share * users.size)))]
    is_held = np.isin(allv.user, held)
    return allv.subset(np.flatnonzero(~is_held)), allv.subset(np.flatnonzero(is_held))


def train_gate(ds: Dataset, base_run: Path, out: Path, epochs: int, batch_size: int, lr: float, seed: int,
               threads: int | None, config: dict, reporter: Reporter | None = None,
               dist=None) -> GateTrained | None:
    """Train the gate for `base_run` on `ds` into run dir `out`; returns what its summary shows.

    dist: a toolkit.train.distributed.Dist inside a data-parallel worker (see _stage); rank 0 writes the run dir
    and returns the summary, the other ranks return None. Every rank builds the MRD dataset itself (see below)."""
    reporter = reporter or Reporter()
    t_all = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    base_run = Path(base_run).resolve()
    model, base_desc = load_base(base_run)
    if model.cfg.n_items != ds.n_items:
        raise ToolkitError(f"{base_run} was trained on {model.cfg.n_items} items, the dataset has {ds.n_items}")
    if base_desc.get("dataset_sha256") and base_desc["dataset_sha256"] != ds.sha256:
        reporter.warning(f"{base_run} was trained on another dataset "
                         f"({str(base_desc['dataset_sha256'])[:12]}) than {ds.path} ({ds.sha256[:12]})")
    arch, tcfg = split_config(config, model.cfg.dim)
    torch.manual_seed(seed)
    gate = Gate(arch)
    frozen = _Frozen(model)

    # ---- data: windows' states, MRD decision samples ----------------------------------------------------------
    t0 = time.perf_counter()
    with reporter.bars() as progress:
        task = progress.add_task("encoding windows (device state, no update)", total=2)
        r_train = torch.from_numpy(encode_plain(model, ds.train_seqs))
        progress.advance(task)
        r_valid = torch.from_numpy(encode_plain(model, ds.valid_seqs))
        progress.advance(task)
        all_train, valid_t = mrd_targets(ds, tcfg, seed)
        train_t = subsample(all_train, tcfg.max_samples, seed)
        valid_t = subsample(valid_t, tcfg.max_valid_samples, seed + 1)
        if len(train_t) == 0 or len(valid_t) == 0:
            raise ToolkitError(f"no decision samples with lags {tcfg.lag_min}..{tcfg.lag_max}: histories are too short")
        train_p = score_pairs(model, ds, train_t, ("stale", "fresh"), progress, "MRD samples (train)")
        valid_p = score_pairs(model, ds, valid_t, ("stale", "fresh"), progress, "MRD samples (valid)")
    data_seconds = time.perf_counter() - t0
    balance = {"train": label_balance(train_p), "valid": label_balance(valid_p)}
    balance["train"]["available_before_cap"] = len(all_train)
    reporter.line(f"MRD dataset: {len(train_p):,} train samples (of {len(all_train):,}; cap {tcfg.max_samples:,}), "
                  f"{len(valid_p):,} valid, built in {data_seconds:.1f}s; label balance (train): stale update "
                  f"right on {balance['train']['soft_label_mean']:.1%} of rows, all 5 rows right on "
                  f"{balance['train']['all_rows_right']:.1%} of samples")
    # Data-parallel, every rank builds it rather than receive rank 0's: the build is deterministic (seeded integer
    # subsample, eval-mode forwards of the frozen model), every worker needs all rows (its slice of each step moves
    # with the permutation), the workers build at the same time (the wall time of one build), and it needs no wire
    # format for PairSet. The digest check turns any difference (other files on another node, a CPU that rounds
    # differently) into one line instead of a silently different run.
    if dist is not None and not dist.same_as_rank0(_data_digest(r_train, r_valid, train_p, valid_p)):
        raise ToolkitError("this worker's MRD dataset differs from rank 0's (the base run or the dataset differ "
                           "between nodes, or the CPUs round differently); give every node the same files")

    # ---- stage 1: DM ----------------------------------------------------------------------------------------------
    train_cands = torch.from_numpy(ds.train_cands)
    valid_cands = torch.from_numpy(ds.valid_cands[:, :VALID_CANDS])
    valid_vecs = frozen.cand_vecs(valid_cands)
    valid_eps = torch.randn(len(r_valid), arch.z_dim, generator=torch.Generator().manual_seed(seed + 1))

    def dm_batch(idx, part=None):
        if part is None:
            return _dm_loss(gate, r_train[idx], frozen.cand_vecs(train_cands[idx]), tcfg.beta)[0]
        n, eps = len(idx), torch.randn(len(idx), arch.z_dim)[part]  # the 1-worker draw for the global batch
        idx = idx[part]
        return _dm_loss(gate, r_train[idx], frozen.cand_vecs(train_cands[idx]), tcfg.beta, eps)[0] * (len(idx) / n)

    @torch.no_grad()
    def dm_valid():
        return float(_dm_loss(gate, r_valid, valid_vecs, tcfg.beta, valid_eps)[0])

    dm_params = list(gate.dm.parameters()) + list(gate.posterior.parameters())
    stages = {"dm": _stage("DM", gate, dm_params, len(r_train), tcfg.dm_epochs or epochs, batch_size, lr, seed,
                           dm_batch, dm_valid, reporter, dist=dist)}
    with torch.no_grad():
        _, bce, kl = _dm_loss(gate, r_valid, valid_vecs, tcfg.beta, valid_eps)
        stages["dm"]["valid_bce"], stages["dm"]["valid_kl"] = round(float(bce), 6), round(float(kl), 6)
        u_train = _uncertainty(gate, train_p.r_now)
        logu = torch.log(u_train + 1e-8)
        gate.u_log_mean.fill_(float(logu.mean()))
        gate.u_log_std.fill_(max(float(logu.std()), 1e-6))
        u_train_std = gate.standardise_u(u_train)
        u_valid_std = gate.standardise_u(_uncertainty(gate, valid_p.r_now))
    stages["dm"]["uncertainty_train"] = {"mean": round(float(u_train.mean()), 6), "median": round(float(u_train.median()), 6)}

    # ---- stage 2: MRD; stage 3: joint ------------------------------------------------------------------------------
    gain_scale = float(train_p.margin_gain().std()) or 1.0  # one scale for train and valid (label=gain)
    tr = {"now": torch.from_numpy(train_p.r_now), "stale": torch.from_numpy(train_p.r_stale),
          "lag": torch.from_numpy(train_p.lag).float(),
          "y": torch.from_numpy(train_p.label(tcfg.label, gain_scale)), "u": u_train_std}
    va = {"now": torch.from_numpy(valid_p.r_now), "stale": torch.from_numpy(valid_p.r_stale),
          "lag": torch.from_numpy(valid_p.lag).float(),
          "y": torch.from_numpy(valid_p.label(tcfg.label, gain_scale)), "u": u_valid_std}

    def mrd_of(d, idx=slice(None)):
        return gate.mrd(d["now"][idx], d["stale"][idx], d["lag"][idx])

    def mrd_batch(idx, part=None):
        n, idx = len(idx), idx if part is None else idx[part]
        return _soft_bce(mrd_of(tr, idx), tr["y"][idx]) * (len(idx) / n)

    @torch.no_grad()
    def mrd_valid():
        return float(_soft_bce(mrd_of(va), va["y"]))

    stages["mrd"] = _stage("MRD", gate, list(gate.mrd.parameters()), len(train_p), tcfg.mrd_epochs or epochs,
                           batch_size, lr, seed + 1, mrd_batch, mrd_valid, reporter, dist=dist)

    def joint_batch(idx, part=None):
        n, idx = len(idx), idx if part is None else idx[part]
        return _soft_bce(gate.joint(mrd_of(tr, idx), tr["u"][idx]), tr["y"][idx]) * (len(idx) / n)

    @torch.no_grad()
    def joint_valid():
        return float(_soft_bce(gate.joint(mrd_of(va), va["u"]), va["y"]))

    with torch.no_grad():
        mrd_only_valid = mrd_of(va).numpy()
    stages["joint"] = _stage("joint", gate, list(gate.mrd.parameters()) + list(gate.joint.parameters()),
                             len(train_p), tcfg.joint_epochs or epochs, batch_size, lr, seed + 2, joint_batch,
                             joint_valid, reporter, keep_initial=True, dist=dist)
    if dist is not None and not dist.is_main:
        return None  # rank 0 summarises and writes the run dir

    # ---- summary, run dir ---------------------------------------------------------------------------------------------
    outs = gate_outputs(gate, valid_p)
    hard = valid_p.correct("stale").all(axis=1)
    valid_summary = {
        "bce_mrd_only": stages["mrd"]["best_valid_loss"], "bce_joint": stages["joint"]["best_valid_loss"],
        "auc_all_rows_right": {"mrd_only": _auc(mrd_only_valid, hard), "joint": _auc(outs["logit"], hard),
                               "uncertainty_only": _auc(-outs["u"], hard)},
        # does the score find the decisions where a fresh correction would rank the positive better?
        "auc_stale_as_good_as_fresh": {"mrd_only": _auc(mrd_only_valid, valid_p.margin_label()),
                                       "joint": _auc(outs["logit"], valid_p.margin_label())},
        # what the request curve will reward: the share of the fresh-over-stale margin gain that requesting the 10%
        # lowest-MRS decisions recovers (random recovers 0.10 in expectation)
        "gain_share_at_10pct": _gain_share(outs["mrs"], valid_p.margin_gain(), 0.1),
        "label_gain_scale": round(gain_scale, 6),
        "mrs_mean": round(float(outs["mrs"].mean()), 4), "soft_label_mean": round(float(valid_p.soft_label().mean()), 4),
    }
    metrics = {"valid": valid_summary, "stages": stages, "mrd_dataset": balance,
               "data_seconds": round(data_seconds, 3), "train_seconds": round(time.perf_counter() - t_all, 3),
               "selected_on": "validation loss, per stage"}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wsha = save_weights(out / WEIGHTS, gate)
    desc = model_descriptor("gate", gate, ds.meta, wsha, {
        "base_run": str(base_run), "base_model": base_desc["model"], "base_weights_sha256": base_desc["weights_sha256"],
        "train": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                  "threads": torch.get_num_threads(), **tcfg.to_dict(),
                  **({"workers": dist.world} if dist is not None else {})},  # data-parallel runs only
        "dataset_path": str(ds.path)})
    atomic_write_json(out / "metrics.json", metrics)
    write_descriptor_json(out / "model.json", desc)  # last: its presence marks a complete run; sealed
    return GateTrained(metrics, gate.param_counts(), ds.path)


__all__ = ["GateTrainConfig", "GateTrained", "train_gate", "split_config", "load_base", "mrd_targets",
           "gate_outputs"]
