"""Decision samples for the gate: (window now at T, stale window at t' = T - lag) with stale/fresh/no-correction scores.

Time is measured in clicks: the window at time t is the L items before position t of the user's history (exactly
the protocol's windows: training rows are t = 1..n-3, validation t = n-2, test t = n-1), so "lag" is how many new
clicks arrived since the device last asked the cloud. Every stale window t' >= 1 is non-empty.

MRD labels (paper 3.2.2, eq. 8, no manual labels): score the C candidate rows of the target at T (training: 1
positive + 4 negatives) with the SCN using the correction the GCN computed from the window at t'; a row is right
when sigmoid(score) >= 0.5 agrees with its label. The paper's samples are single (user, item, label) rows and the
MRD sees only (s_T, s_t'), so the C rows of one target share their input; summing the paper's per-row cross-entropy
over them equals one cross-entropy against the *soft* label = fraction of the C rows predicted right. That soft
label is the training target here; `label_balance` also reports the hard views (all rows right, positive right).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from toolkit.data import Dataset
from toolkit.errors import ToolkitError

CHUNK = 2048  # decision samples scored per batch (bounded memory: an update is 1-9k floats per window)


@dataclass
class Targets:
    """Which decisions to score: user, T, lag and the candidate rows of the target at T."""

    user: np.ndarray  # [N]
    time: np.ndarray  # [N] T
    lag: np.ndarray  # [N] T - t'
    cands: np.ndarray  # [N, C] col 0 = positive

    def __len__(self) -> int:
        return int(self.user.size)

    def subset(self, idx: np.ndarray) -> "Targets":
        return Targets(self.user[idx], self.time[idx], self.lag[idx], self.cands[idx])


def _margin(scores: np.ndarray) -> np.ndarray:
    """Positive (column 0) minus the mean negative score, per row [N]."""
    return scores[:, 0] - scores[:, 1:].mean(axis=1)


@dataclass
class PairSet:
    """Scored decision samples. r_* are the SCN's uncorrected user states (the gate's inputs)."""

    user: np.ndarray  # [N]
    time: np.ndarray  # [N]
    lag: np.ndarray  # [N]
    r_now: np.ndarray  # [N, D] float32
    r_stale: np.ndarray  # [N, D] float32
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # "stale" | "fresh" | "none" -> [N, C]

    def __len__(self) -> int:
        return int(self.user.size)

    def correct(self, which: str = "stale") -> np.ndarray:
        """[N, C] bool: sigmoid(score) >= 0.5 agrees with the label (col 0 positive, the rest negatives)."""
        s = self.scores[which]
        labels = np.zeros(s.shape, dtype=bool)
        labels[:, 0] = True
        return (s >= 0.0) == labels  # sigmoid(x) >= 0.5  <=>  x >= 0

    def soft_label(self) -> np.ndarray:
        """The MRD target: fraction of the C rows the stale correction gets right [N] float32."""
        return self.correct("stale").mean(axis=1).astype(np.float32)

    def margin_label(self) -> np.ndarray:
        """Alternative target (not the paper's): 1 when the stale correction separates the positive from the
        negatives at least as well as a fresh one would (positive minus mean negative score), else 0 [N]."""
        return (self.margin_gain() <= 0).astype(np.float32)

    def margin_gain(self) -> np.ndarray:
        """How much better a fresh update separates the positive than the stale one [N] (margin difference)."""
        return (_margin(self.scores["fresh"]) - _margin(self.scores["stale"])).astype(np.float32)

    def gain_label(self, scale: float | None = None) -> np.ndarray:
        """Soft target sigmoid(-gain / scale) [N]: near 0 where a fresh update would help most, 0.5 where it
        changes nothing, near 1 where the stale one is better; scale = the std of the gain (or the given one)."""
        g = self.margin_gain()
        s = float(scale) if scale else float(g.std()) or 1.0
        return (1.0 / (1.0 + np.exp(np.clip(g / s, -30, 30)))).astype(np.float32)

    def label(self, kind: str = "paper", scale: float | None = None) -> np.ndarray:
        if kind == "paper":
            return self.soft_label()
        if kind == "margin":
            return self.margin_label()
        if kind == "gain":
            return self.gain_label(scale)
        raise ToolkitError(f"unknown MRD label '{kind}' (expected paper, margin or gain)")

    def user_weights(self) -> np.ndarray:
        """1 / (samples of that user): every user counts once when several lags are expanded."""
        _, inv, counts = np.unique(self.user, return_inverse=True, return_counts=True)
        return (1.0 / counts[inv]).astype(np.float64)


def label_balance(pairs: PairSet) -> dict:
    """How often the stale correction is right, and how often asking again would change that."""
    c = pairs.correct("stale")
    out = {
        "samples": len(pairs),
        "candidates_per_sample": int(c.shape[1]),
        "soft_label_mean": round(float(c.mean()), 4),
        "all_rows_right": round(float(c.all(axis=1).mean()), 4),
        "positive_row_right": round(float(c[:, 0].mean()), 4),
        "negative_rows_right": round(float(c[:, 1:].mean()), 4),
    }
    if "fresh" in pairs.scores:
        f = pairs.correct("fresh")
        out["fresh_fixes_a_stale_error"] = round(float((f & ~c).any(axis=1).mean()), 4)
        out["fresh_breaks_a_stale_hit"] = round(float((~f & c).any(axis=1).mean()), 4)
        out["soft_label_mean_if_fresh"] = round(float(f.mean()), 4)
    lags, counts = np.unique(pairs.lag, return_counts=True)
    out["lag_counts"] = {int(k): int(v) for k, v in zip(lags, counts)}
    return out


def history_lengths(ds: Dataset) -> np.ndarray:
    return np.diff(ds.user_ptr)


def split_targets(ds: Dataset, split: str, n_cands: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user [N], T [N], cands [N, C]) of a split's targets; n_cands keeps the first C columns (positive first)."""
    user, time = ds.targets(split)
    cands = ds.train_cands if split == "train" else getattr(ds, f"{split}_cands")
    if n_cands is not None:
        cands = cands[:, :n_cands]
    return user, time, cands


def expand_lags(ds: Dataset, split: str, lag_min: int, lag_max: int, mode: str = "all", seed: int = 0,
                n_cands: int | None = None) -> Targets:
    """Decision samples of a split: every allowed lag per target ("all"), or one drawn uniformly ("sample").

    A lag is allowed when the stale window is non-empty (T - lag >= 1); targets with no allowed lag are dropped.
    """
    if not 1 <= lag_min <= lag_max:
        raise ToolkitError(f"lags must satisfy 1 <= lag_min <= lag_max, got {lag_min}..{lag_max}")
    user, time, cands = split_targets(ds, split, n_cands)
    hi = np.minimum(time - 1, lag_max)  # largest allowed lag per target
    ok = hi >= lag_min
    user, time, cands, hi = user[ok], time[ok], cands[ok], hi[ok]
    if mode == "sample":
        rng = np.random.default_rng(seed)
        lag = lag_min + (rng.random(user.size) * (hi - lag_min + 1)).astype(np.int64)
        return Targets(user, time, lag, cands)
    if mode != "all":
        raise ToolkitError(f"unknown lag mode '{mode}'")
    n_lags = hi - lag_min + 1  # [N]
    rep = np.repeat(np.arange(user.size), n_lags)
    lag = lag_min + np.arange(rep.size) - np.repeat(np.cumsum(n_lags) - n_lags, n_lags)
    return Targets(user[rep], time[rep], lag, cands[rep])


def subsample(targets: Targets, cap: int | None, seed: int) -> Targets:
    """At most `cap` samples, uniformly without replacement (kept in their original order)."""
    if cap is None or len(targets) <= cap:
        return targets
    idx = np.sort(np.random.default_rng(seed).choice(len(targets), size=cap, replace=False))
    return targets.subset(idx)


@torch.no_grad()
def encode_plain(model, seqs: np.ndarray, batch: int = 4096) -> np.ndarray:
    """The device's own user state, no cloud update [N, D] (the gate's r)."""
    model.eval()
    out = [model.device_encode(torch.from_numpy(seqs[i:i + batch])).float().numpy()
           for i in range(0, len(seqs), batch)]
    return np.concatenate(out) if out else np.zeros((0, model.cfg.dim), np.float32)


def context_len(model, ds: Dataset) -> int:
    """Clicks of history the cloud reads for an update (0 in a model means: the device window itself)."""
    return int(getattr(model, "context_len", 0) or ds.seq_len)


@torch.no_grad()
def score_pairs(model, ds: Dataset, targets: Targets, which=("stale", "fresh", "none"), progress=None,
                description: str = "scoring decisions") -> PairSet:
    """Score every decision sample with the stale update (computed from the history up to t'), the fresh one (up
    to T) and none, through the cloud-model interface (toolkit.models.cloud). Distinct moments are deduplicated per
    chunk, so each window is encoded, and each update computed, once."""
    model.eval()
    N, D = len(targets), model.cfg.dim
    r_now = np.zeros((N, D), np.float32)
    r_stale = np.zeros((N, D), np.float32)
    scores = {w: np.zeros(targets.cands.shape, np.float32) for w in which}
    task = progress.add_task(description, total=N) if progress is not None else None
    stride = int(history_lengths(ds).max()) + 1
    n_ctx = context_len(model, ds)
    for a in range(0, N, CHUNK):
        b = min(a + CHUNK, N)
        u, T, lag = targets.user[a:b], targets.time[a:b], targets.lag[a:b]
        cands = torch.from_numpy(targets.cands[a:b])
        keys = np.concatenate([u * stride + T, u * stride + (T - lag)])
        uniq, inv = np.unique(keys, return_inverse=True)
        inv_now, inv_stale = inv[: b - a], inv[b - a:]
        users, times = uniq // stride, uniq % stride
        wins = torch.from_numpy(ds.windows(users, times))  # [W, L]
        r = model.device_encode(wins)  # [W, D] no update
        r_now[a:b] = r[inv_now].numpy()
        r_stale[a:b] = r[inv_stale].numpy()
        # one pass per distinct target for what does not depend on the lag (fresh, none)
        _, first, back = np.unique(inv_now, return_index=True, return_inverse=True)
        w_idx = inv_now[first]
        if which:
            ctx = wins if n_ctx == ds.seq_len else torch.from_numpy(ds.windows(users, times, n_ctx))
            upd = model.cloud_update(ctx)  # [W, P]
        if "none" in which:
            scores["none"][a:b] = model.score_update(wins[w_idx], cands[first],
                                                     torch.zeros_like(upd[w_idx]))[back].numpy()
        if "stale" in which:  # one device pass per decision: every (T, t') pair has its own update
            scores["stale"][a:b] = model.score_update(wins[inv_now], cands, upd[inv_stale]).numpy()
        if "fresh" in which:
            scores["fresh"][a:b] = model.score_update(wins[w_idx], cands[first], upd[w_idx])[back].numpy()
        if task is not None:
            progress.update(task, advance=b - a)
    return PairSet(targets.user, targets.time, targets.lag, r_now, r_stale, scores)


__all__ = ["Targets", "PairSet", "label_balance", "split_targets", "expand_lags", "subsample",
           "encode_plain", "score_pairs", "context_len"]
