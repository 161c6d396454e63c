"""Request policies compared on one footing: each gives every decision a priority, lower = request first.

A budget b becomes a threshold the same way for every learned policy: the b-quantile of its priorities on recent
(validation) decisions, sent to the device; the device requests when its priority <= threshold.
- gate: the MRS of the full gate (MRD + DM).   mrd: the MRD logit alone (the paper's "w/o DM" ablation).
- dm: minus the uncertainty alone ("w/o MRD").   random: a uniform draw per decision (request iff draw < b).
- lag: request the decisions with the most clicks since the last request first (request every k clicks).
- lof / ocsvm: scikit-learn novelty detectors fitted on recent decisions' (r_T, r_t', log lag) -- the gate's inputs --
  priority = their normality score (unusual decisions request first). The paper notes these only run at their own
  native operating point; `native_rate` reports that point, the budget sweep calibrates their scores like the gate's.
- oracle (evaluation only, not deployable): requests where the fresh update lifts NDCG@10 most (an upper bound).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from toolkit.errors import ToolkitError
from toolkit.gate.dataset import PairSet
from toolkit.models.gate import Gate

POLICIES = ("gate", "mrd", "dm", "random", "lag", "lof", "ocsvm", "oracle")
DEFAULT_POLICIES = ("gate", "mrd", "random", "lag", "lof", "ocsvm", "oracle")


def feature_rows(r_now: np.ndarray, r_stale: np.ndarray, lag: np.ndarray) -> np.ndarray:
    """What LOF / OC-SVM see: the gate's inputs (r_T, r_t') and log(lag) side by side [N, 2D + 1]."""
    return np.concatenate([r_now, r_stale, np.log(np.maximum(lag, 1))[:, None]], axis=1)


def features(pairs: PairSet) -> np.ndarray:
    return feature_rows(pairs.r_now, pairs.r_stale, pairs.lag)


class Policy:
    name = "policy"
    deployable = True

    def fit(self, recent: PairSet, gate_out: dict, seed: int) -> "Policy":
        return self

    def priority(self, pairs: PairSet, gate_out: dict) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def decide_one(self, r_now: np.ndarray, r_stale: np.ndarray, lag: int, threshold: float) -> bool:
        """One device-side decision from one window pair and its lag (what the latency timing measures)."""
        raise NotImplementedError  # pragma: no cover - abstract


class GatePolicy(Policy):
    def __init__(self, gate: Gate, key: str = "mrs", name: str = "gate"):
        self.gate, self.key, self.name = gate, key, name

    def priority(self, pairs, gate_out):
        if self.key == "u":
            return -gate_out["u"]
        return gate_out[self.key]

    @torch.no_grad()
    def decide_one(self, r_now, r_stale, lag, threshold):
        rn, rs, lg = torch.from_numpy(r_now[None]), torch.from_numpy(r_stale[None]), torch.tensor([float(lag)])
        if self.key == "mrd_logit":
            return bool(self.gate.mrd(rn, rs, lg)[0] <= threshold)
        if self.key == "u":
            return bool(-self.gate.dm.uncertainty(rn, self.gate.default_noise)[0] <= threshold)
        return bool(self.gate(rn, rs, self.gate.default_noise, lg)[0] <= threshold)


class RandomPolicy(Policy):
    name = "random"

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def fit(self, recent, gate_out, seed):
        self.rng = np.random.default_rng(seed + 7)
        return self

    def priority(self, pairs, gate_out):
        return self.rng.random(len(pairs))  # uniform: the b-quantile is b, so a rate-b coin flip

    def decide_one(self, r_now, r_stale, lag, threshold):
        return bool(self.rng.random() <= threshold)


class LagPolicy(Policy):
    """Request every k clicks, the rule a team writes first: the longer since the last request (the lag), the
    sooner to request; ties (equal lags) broken at random. Needs no model, so it is the bar a learned gate must
    clear to be worth its parameters."""

    name = "lag"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, recent, gate_out, seed):
        self.seed = seed + 13
        return self

    def priority(self, pairs, gate_out):
        tie = np.random.default_rng(self.seed).random(len(pairs))  # in [0, 1): never reorders different lags
        return -(pairs.lag.astype(np.float64) + tie)

    def decide_one(self, r_now, r_stale, lag, threshold):
        return bool(-(float(lag) + 0.5) <= threshold)


class NoveltyPolicy(Policy):
    """LOF or one-class SVM on standardised (r_T, r_t', log lag)."""

    def __init__(self, kind: str, fit_cap: int = 5000):
        self.name, self.fit_cap = kind, fit_cap
        self.scaler = self.model = None
        self.native_rate_recent: float | None = None

    def fit(self, recent, gate_out, seed):
        from sklearn.neighbors import LocalOutlierFactor
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import OneClassSVM

        X = features(recent)
        if len(X) > self.fit_cap:
            X = X[np.sort(np.random.default_rng(seed).choice(len(X), self.fit_cap, replace=False))]
        if len(X) < 25:
            raise ToolkitError(f"{self.name} needs at least 25 recent decisions to fit, got {len(X)}")
        self.scaler = StandardScaler().fit(X)
        Xs = self.scaler.transform(X)
        if self.name == "lof":
            self.model = LocalOutlierFactor(n_neighbors=20, novelty=True).fit(Xs)
        else:
            self.model = OneClassSVM(kernel="rbf", gamma="scale", nu=0.1).fit(Xs)
        return self

    def priority(self, pairs, gate_out):
        return self.model.score_samples(self.scaler.transform(features(pairs)))

    def native_requests(self, pairs: PairSet) -> np.ndarray:
        """The detector's own operating point: request where it predicts an outlier."""
        return self.model.predict(self.scaler.transform(features(pairs))) == -1

    def decide_one(self, r_now, r_stale, lag, threshold):
        x = self.scaler.transform(feature_rows(r_now[None], r_stale[None], np.array([lag])))
        return bool(self.model.score_samples(x)[0] <= threshold)


class OraclePolicy(Policy):
    """Upper bound on NDCG@10 at any budget: knows the test labels and requests in order of the fresh update's own
    NDCG@10 gain for that decision (greedy by per-decision gain maximises the mean); ties broken by the gain in the
    positive's rank, then at random."""

    name = "oracle"
    deployable = False

    def priority(self, pairs, gate_out):
        from toolkit.metrics import positive_rank

        def ndcg10(rank):
            return np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0)

        stale, fresh = positive_rank(pairs.scores["stale"]), positive_rank(pairs.scores["fresh"])
        gain = ndcg10(fresh) - ndcg10(stale)  # > 0: fresh helps
        rank_gain = (stale - fresh) / max(pairs.scores["fresh"].shape[1], 1)
        tie = np.random.default_rng(11).random(len(pairs)) * 1e-9
        return -(gain + 1e-3 * rank_gain + tie)

    def decide_one(self, r_now, r_stale, lag, threshold):  # pragma: no cover - not deployable
        raise ToolkitError("the oracle policy cannot decide on a device")


def make_policy(name: str, gate: Gate, fit_cap: int = 5000) -> Policy:
    if name == "gate":
        return GatePolicy(gate, "mrs", "gate")
    if name == "mrd":
        return GatePolicy(gate, "mrd_logit", "mrd")
    if name == "dm":
        return GatePolicy(gate, "u", "dm")
    if name == "random":
        return RandomPolicy()
    if name == "lag":
        return LagPolicy()
    if name in ("lof", "ocsvm"):
        return NoveltyPolicy(name, fit_cap)
    if name == "oracle":
        return OraclePolicy()
    raise ToolkitError(f"unknown policy '{name}' (valid: {', '.join(POLICIES)})")


def time_decisions(policy: Policy, pairs: PairSet, threshold: float, n: int = 300, warmup: int = 20,
                   seed: int = 0) -> dict:
    """Per-decision latency on one thread (torch and BLAS), batch of one: median / p90 in milliseconds."""
    from threadpoolctl import threadpool_limits

    idx = np.random.default_rng(seed).choice(len(pairs), size=min(n + warmup, len(pairs)), replace=True)
    if len(idx) <= warmup:
        idx = np.resize(idx, n + warmup)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times = []
    try:
        with threadpool_limits(limits=1):
            for k, i in enumerate(idx):
                rn, rs, lag = pairs.r_now[i], pairs.r_stale[i], int(pairs.lag[i])
                t0 = time.perf_counter()
                policy.decide_one(rn, rs, lag, threshold)
                if k >= warmup:
                    times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    ms = np.asarray(times) * 1e3
    return {"median_ms": round(float(np.median(ms)), 4), "p90_ms": round(float(np.percentile(ms, 90)), 4),
            "n": int(ms.size)}


@torch.no_grad()
def time_feature(model, window: np.ndarray, n: int = 200, warmup: int = 20) -> dict:
    """The shared input of every learned policy: the device's own state of one window, no update (one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x = torch.from_numpy(window[None])
    times = []
    try:
        for k in range(n + warmup):
            t0 = time.perf_counter()
            model.device_encode(x)
            if k >= warmup:
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    ms = np.asarray(times) * 1e3
    return {"median_ms": round(float(np.median(ms)), 4), "p90_ms": round(float(np.percentile(ms, 90)), 4), "n": n}


__all__ = ["POLICIES", "DEFAULT_POLICIES", "Policy", "make_policy", "time_decisions", "time_feature", "features"]
