"""How sure a bench is of its numbers: the p50's confidence interval, the spread between rounds, ratios of two p50s.

Pure numpy, no runtime imports (the CLI and the tests use it without torch).

The timed calls of one bench run are taken in interleaved *rounds* (toolkit.bench.rounds): in every round each row
gets a slice of `k` consecutive calls, so a burst of load lands on every row alike instead of on whichever row ran
at that moment. Calls inside one slice are not independent (a preemption or a frequency change hits several calls
in a row), rounds are: the unit of resampling is the round.

- `median_ci_rounds`: the reported p50 is the median of all samples of the row (the toolkit's one percentile definition,
  toolkit.rows.latency_summary). Its 95% interval is a quantile bootstrap *over rounds* (a cluster
  bootstrap): draw R rounds with replacement out of the row's R rounds, take the median of their pooled samples,
  B = 1000 times with a fixed seed; the 2.5th and 97.5th quantiles of those medians, each side's distance from
  the p50 widened by sqrt(R / (R - 1)) * t(R - 1) / z (the bootstrap's variance is short by (R - 1) / R, and R
  rounds give a Student t, not a normal, interval: 1.22x at R = 10, 1.07x at R = 30). It needs no distributional
  assumption and carries between-round variation (what load does) into the interval, which an interval assuming
  independent calls would not. On synthetic samples (tests/test_bench_noise.py) it covers the true median ~95% of
  the time with and without round-to-round shifts; the plain quantile interval covered 87-92% at R = 10 and the
  order-statistic one 81-84% once rounds shift. With fewer than MIN_BOOTSTRAP_ROUNDS rounds `median_ci` falls
  back to the order-statistic interval (below) and says so.
- `median_ci_order`: the distribution-free interval for the median of independent samples: the j-th and
  (n-j+1)-th order statistics, j the largest with P(Binomial(n, 1/2) < j) <= alpha/2 (coverage >= 1 - alpha).
- `ratio_ci`: the ratio of two p50s with an interval, from the two rows' intervals on the log scale (each
  half-width -> a standard error, se = (ln hi - ln lo) / (2 * 1.96); the two are independent runs, so the ratio's
  se is their root sum of squares). Used by `toolkit bench --compare`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20251207
MIN_BOOTSTRAP_ROUNDS = 5
Z95 = 1.959963984540054
METHOD_ROUNDS = (f"bootstrap over rounds (B = {BOOTSTRAP_RESAMPLES}, rounds resampled with replacement, median of "
                 "their pooled calls; quantile interval widened by sqrt(R/(R-1)) t(R-1)/z)")
METHOD_ORDER = "order statistics of the median (binomial, assumes independent calls; too few rounds to bootstrap)"


def median_ci_order(samples: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Distribution-free interval for the median of independent samples (order statistics, binomial coverage).

    Returns (lo, hi); with too few samples for the requested coverage (n < 6 at 95%) the whole range."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = x.size
    if n == 0:
        raise ValueError("no samples")
    alpha = 1.0 - confidence
    k = np.arange(n + 1)
    logpmf = (np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in k])
              - n * math.log(2.0))
    cdf = np.cumsum(np.exp(logpmf))  # cdf[i] = P(B <= i)
    # the largest j (1-based) with P(B <= j - 1) <= alpha / 2: [x_(j), x_(n - j + 1)] covers the median
    ok = np.nonzero(cdf[: n] <= alpha / 2)[0]
    if ok.size == 0:
        return float(x[0]), float(x[-1])
    j = int(ok[-1]) + 1
    return float(x[j - 1]), float(x[n - j])


def t_quantile(p: float, df: float) -> float:
    """Student t quantile from the normal one (Abramowitz & Stegun 26.7.5; < 1e-3 off for df >= 4)."""
    z = _z(2 * p - 1)
    terms = (z, (z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96,
             (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
             (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160)
    return sum(t / df**i for i, t in enumerate(terms))


def median_ci_rounds(rounds: Sequence[Sequence[float]], confidence: float = CONFIDENCE,
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                     widen: bool = True) -> tuple[float, float]:
    """Bootstrap over rounds of the pooled median (see the module doc). `rounds`: one sequence of samples per
    round (rounds may differ in size: each resample pools whole rounds). `widen=False`: the plain quantile
    interval, without the small-sample correction."""
    blocks = [np.sort(np.asarray(r, dtype=np.float64)) for r in rounds if len(r)]
    if not blocks:
        raise ValueError("no samples")
    rng = np.random.default_rng(seed)
    R = len(blocks)
    draws = rng.integers(0, R, size=(resamples, R))
    flat = (np.arange(resamples)[:, None] * R + draws).ravel()
    weights = np.bincount(flat, minlength=resamples * R).reshape(resamples, R).astype(np.float64)  # draws per round
    meds = resampled_medians(blocks, weights)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(meds, [alpha / 2, 1 - alpha / 2])
    if widen and R > 1:
        p50 = float(np.median(np.concatenate(blocks)))
        f = math.sqrt(R / (R - 1)) * t_quantile(1 - alpha / 2, R - 1) / _z(confidence)
        lo, hi = p50 - f * max(p50 - lo, 0.0), p50 + f * max(hi - p50, 0.0)
    return float(lo), float(hi)


GRID = 1000


def resampled_medians(blocks: list[np.ndarray], weights: np.ndarray, grid_size: int = GRID) -> np.ndarray:
    """`blocks`: sorted samples per round. The pooled median (numpy's, as np.median) of each resample, a resample = every sorted block `j` taken
    `weights[b, j]` times, without materialising the resamples: with c(g) = how many of a resample's values are
    <= g, its m-th smallest value is the least g with c(g) >= m, and c over a grid of candidate values is one
    matrix product (weights @ per-block counts). A pooled median lies between the smallest and largest block
    medians, so the candidates are the pooled values in that window (exact: every one of them; with more than
    `grid_size`, an even subset by rank, and the m-th value interpolated between neighbours, off by a fraction
    of the gap between neighbouring candidates, < 0.1% of the p50 for latency-like samples)."""
    pooled = np.sort(np.concatenate(blocks))
    meds = [0.5 * (blk[(blk.size - 1) // 2] + blk[blk.size // 2]) for blk in blocks]  # blocks are sorted
    lo_med, hi_med = min(meds), max(meds)
    a = max(int(np.searchsorted(pooled, lo_med, side="left")) - 1, 0)
    b = min(int(np.searchsorted(pooled, hi_med, side="right")), pooled.size - 1)
    cand = np.unique(pooled[a:b + 1])
    exact = cand.size <= grid_size
    if not exact:
        cand = cand[np.unique(np.linspace(0, cand.size - 1, grid_size).round().astype(int))]
    below = np.array([np.searchsorted(blk, cand[0], side="left") for blk in blocks], dtype=np.float64)
    counts = np.stack([np.searchsorted(blk, cand, side="right") for blk in blocks]).astype(np.float32)
    c = weights.astype(np.float32) @ counts  # (resamples, candidates): values <= each candidate (exact < 2**24)
    c_below = weights @ below  # values < the first candidate
    n = weights @ np.array([blk.size for blk in blocks], dtype=np.float64)

    def kth(m: np.ndarray) -> np.ndarray:  # the m-th smallest value (1-based) of each resample
        i = np.minimum((c < m[:, None]).sum(axis=1), cand.size - 1)
        if exact:
            return cand[i]
        rows = np.arange(len(m))
        c_hi = c[rows, i]
        c_lo = np.where(i > 0, c[rows, np.maximum(i - 1, 0)], c_below)
        v_lo = np.where(i > 0, cand[np.maximum(i - 1, 0)], cand[0])
        frac = np.clip((m - c_lo) / np.maximum(c_hi - c_lo, 1.0), 0.0, 1.0)
        return v_lo + frac * (cand[i] - v_lo)

    return 0.5 * (kth(np.floor((n + 1) / 2)) + kth(np.ceil((n + 1) / 2)))


def median_ci(rounds: Sequence[Sequence[float]], confidence: float = CONFIDENCE) -> tuple[float, float, str]:
    """(lo, hi, method): the bootstrap over rounds, or with fewer than MIN_BOOTSTRAP_ROUNDS rounds the
    order-statistic interval of all samples."""
    if sum(1 for r in rounds if len(r)) >= MIN_BOOTSTRAP_ROUNDS:
        return (*median_ci_rounds(rounds, confidence), METHOD_ROUNDS)
    return (*median_ci_order([x for r in rounds for x in r], confidence), METHOD_ORDER)


def halfwidth(p50: float, lo: float, hi: float) -> float:
    """The interval's larger side as a share of the p50 (0.03 = the interval lies within +-3% of the p50)."""
    if not p50 > 0:
        return math.inf
    return max(p50 - lo, hi - p50, 0.0) / p50


def summarize_rounds(rounds_ms: Sequence[Sequence[float]], target_ci: float | None = None) -> dict:
    """A row's noise fields from its samples per round (milliseconds): the p50 with its 95% interval, how wide
    that is, and the spread between rounds (the median of each round)."""
    rounds_ms = [list(r) for r in rounds_ms if len(r)]
    pooled = np.concatenate([np.asarray(r, dtype=np.float64) for r in rounds_ms])
    from toolkit.rows import latency_summary  # the one p50 definition rows use

    p50 = latency_summary(pooled)["p50"]
    lo, hi, method = median_ci(rounds_ms)
    round_p50s = [float(np.median(r)) for r in rounds_ms]
    hw = halfwidth(p50, lo, hi)
    out = {
        "p50_ci95": [lo, hi],
        "ci_halfwidth_pct": 100.0 * hw,
        "ci_method": method,
        "rounds": len(rounds_ms),
        "calls_per_round": sorted({len(r) for r in rounds_ms}),
        "round_p50s": [float(f"{x:.5g}") for x in round_p50s],
        "round_p50_min": min(round_p50s),
        "round_p50_max": max(round_p50s),
        "round_spread_pct": 100.0 * (max(round_p50s) - min(round_p50s)) / p50 if p50 > 0 else None,
    }
    if target_ci is not None:
        out["target_ci_pct"] = 100.0 * target_ci
        out["within_target"] = bool(hw <= target_ci)
    return out


def ratio_ci(p50_a: float, ci_a: Sequence[float], p50_b: float, ci_b: Sequence[float],
             confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(ratio, lo, hi) of p50_a / p50_b from the two (independent) intervals, on the log scale (module doc)."""
    z = Z95 if abs(confidence - 0.95) < 1e-12 else _z(confidence)

    def se(p50, ci):
        lo, hi = ci
        lo, hi = min(lo, p50), max(hi, p50)
        if not (lo > 0 and hi > 0):
            raise ValueError("an interval must be positive to take its logarithm")
        return (math.log(hi) - math.log(lo)) / (2 * z)

    r = p50_a / p50_b
    s = math.hypot(se(p50_a, ci_a), se(p50_b, ci_b))
    return r, r * math.exp(-z * s), r * math.exp(z * s)


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def change_verdict(ratio: float, lo: float, hi: float, min_change: float) -> str:
    """'slower' / 'faster' when the ratio's interval excludes 1 and the ratio moved by at least `min_change`
    (a change smaller than the bench's run-to-run reproducibility is not reported), else 'no change'."""
    if lo > 1.0 and ratio >= 1.0 + min_change:
        return "slower"
    if hi < 1.0 and ratio <= 1.0 - min_change:
        return "faster"
    return "no change"
