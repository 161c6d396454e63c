"""`toolkit gate curve`: ranking quality vs request frequency for every request policy (the paper's Figure 5).

Setting (one decision per test user): at the test time T = n-1 the device holds the correction the GCN computed
from the window at t' = T - lag (lag drawn uniformly from the gate's lag range, seeded; at most T - 1); a policy
either keeps it or requests a fresh one (computed from the window at T). Endpoints: always (request every time:
exactly CoCorrRec's own evaluation), never (keep the stale correction), none (no correction at all, plain SCN).
Each learned policy's threshold for a budget is calibrated on validation decisions (see calibrate.py), then its
achieved request rate, UAUC, NDCG@10 and HR@10 on the test split (100 candidates) are measured.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np

from toolkit.data import Dataset
from toolkit.errors import ToolkitError
from toolkit.gate.calibrate import check_budget, check_data, decision_features, gate_lags, open_gate, quantile_threshold
from toolkit.gate.dataset import PairSet
from toolkit.gate.policies import DEFAULT_POLICIES, NoveltyPolicy, make_policy, time_decisions, time_feature
from toolkit.io import atomic_dir, atomic_write_bytes, atomic_write_json, versions
from toolkit.metrics import ranking_metrics
from toolkit.reporter import Reporter

DEFAULT_BUDGETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
SHOWN = ("uauc", "ndcg@10", "hr@10")


def mixed_scores(pairs: PairSet, requests: np.ndarray) -> np.ndarray:
    """Scores when `requests` [N] bool users use the fresh update and the rest keep the stale one."""
    return np.where(requests[:, None], pairs.scores["fresh"], pairs.scores["stale"])


def mixed_metrics(pairs: PairSet, requests: np.ndarray) -> dict:
    """Ranking metrics when `requests` [N] bool users use the fresh update and the rest keep the stale one."""
    return ranking_metrics(mixed_scores(pairs, requests), pos_index=0)


def band_se(pairs: PairSet, requests: np.ndarray) -> dict:
    """Paired standard error (over users) of a policy's gain over `never`, per metric: the curve's band."""
    return {f"se_vs_never_{k}": round(v, 6)
            for k, v in paired_se(mixed_scores(pairs, requests), pairs.scores["stale"]).items()}


def per_user(scores: np.ndarray) -> dict[str, np.ndarray]:
    """Per-user uauc / ndcg@10 / hr@10 [N] (their means are ranking_metrics'), for paired standard errors."""
    from toolkit.metrics import positive_rank

    rank = positive_rank(scores, 0)
    return {"uauc": (scores.shape[1] - 1 - rank) / (scores.shape[1] - 1),
            "ndcg@10": np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0), "hr@10": (rank < 10).astype(np.float64)}


def paired_se(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Standard error of mean(a) - mean(b) over the same users, per metric: how big a gain is noise."""
    pa, pb = per_user(a), per_user(b)
    return {k: float(np.std(pa[k] - pb[k], ddof=1) / np.sqrt(len(a))) for k in SHOWN}


def update_kind(model) -> str:
    """What the cloud sends, in words, for titles and JSON."""
    cfg = model.cfg
    if model.name == "duet":
        form = "full DUET weights" if not cfg.rank else f"APG rank-{cfg.rank} parameters"
        return f"duet ({cfg.backbone} backbone): generated {form}"
    return ("cocorrrec (paper GCN): attention + bias corrections" if cfg.cloud == "paper"
            else "cocorrrec (history): TTT state correction")


def payload_bytes(model, seq_len: int) -> tuple[int, int]:
    """(upload, download) bytes of one request for a window of seq_len items (the cloud model's own account)."""
    p = model.payload(seq_len)
    return int(p.get("upload_bytes", p.get("upload_bytes_ids", 0))), int(p["download_bytes"])


def _point(metrics: dict, rate: float, up: int, down: int, **extra) -> dict:
    return {"request_rate": round(float(rate), 6), **{k: round(float(metrics[k]), 6) for k in metrics},
            "bytes_sent_per_1000": round(rate * 1000 * up), "bytes_received_per_1000": round(rate * 1000 * down),
            **extra}


def parse_budgets(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ToolkitError(f"--budgets must be comma-separated numbers, got '{text}'") from None
    if not vals:
        raise ToolkitError("--budgets is empty")
    return [check_budget(v) for v in vals]


def run_curve(gate_dir: Path, ds: Dataset, out: Path, budgets=DEFAULT_BUDGETS, policies=DEFAULT_POLICIES,
              base: Path | None = None, lags: tuple[int, int] | None = None, seed: int = 0, fit_cap: int = 5000,
              force: bool = False, timing: bool = True, reporter: Reporter | None = None) -> dict:
    """Measure every policy at every budget on the test decisions; write out/curve.json and curve.png, return
    curve.json's content."""
    reporter = reporter or Reporter()
    budgets = sorted({check_budget(b) for b in budgets})
    gate, model, desc = open_gate(gate_dir, base)
    check_data(model, ds)
    lags = tuple(lags) if lags is not None else gate_lags(desc)
    t_start = time.perf_counter()
    with reporter.bars() as progress:
        recent, recent_out = decision_features(gate, model, ds, "valid", lags, progress)
        test, test_out = decision_features(gate, model, ds, "test", lags, progress, mode="sample", seed=seed,
                                           which=("stale", "fresh", "none"), n_cands=None)
    weights = recent.user_weights()
    up, down = payload_bytes(model, ds.seq_len)
    endpoints = {
        "always": _point(mixed_metrics(test, np.ones(len(test), bool)), 1.0, up, down),
        "never": _point(mixed_metrics(test, np.zeros(len(test), bool)), 0.0, up, down),
        "none": _point(ranking_metrics(test.scores["none"]), 0.0, up, down),
    }

    gain_se = {k: round(v, 6) for k, v in paired_se(test.scores["fresh"], test.scores["stale"]).items()}
    none_se = {k: round(v, 6) for k, v in paired_se(test.scores["fresh"], test.scores["none"]).items()}
    results: dict[str, dict] = {}
    fitted = {}
    with reporter.bars() as progress:
        task = progress.add_task("policies x budgets", total=len(policies) * len(budgets))
        for name in policies:
            t0 = time.perf_counter()
            pol = make_policy(name, gate, fit_cap).fit(recent, recent_out, seed)
            fit_seconds = time.perf_counter() - t0
            prio_recent = pol.priority(recent, recent_out) if pol.deployable and name != "random" else None
            prio_test = pol.priority(test, test_out)
            points = []
            for b in budgets:
                if name == "random":
                    thr = b
                elif prio_recent is None:  # oracle: the exact budget on the test users themselves
                    thr, _ = quantile_threshold(prio_test, b)
                else:
                    thr, _ = quantile_threshold(prio_recent, b, weights)
                if b >= 1.0:  # a 100% budget requests every time, also above the largest recent priority
                    thr = max(thr, float(prio_test.max()))
                req = prio_test <= thr
                points.append(_point(mixed_metrics(test, req), req.mean(), up, down, budget=b, threshold=float(thr),
                                     **band_se(test, req)))
                progress.advance(task)
            entry = {"deployable": pol.deployable, "fit_seconds": round(fit_seconds, 3), "points": points}
            if isinstance(pol, NoveltyPolicy):
                native = pol.native_requests(test)
                entry["native"] = _point(mixed_metrics(test, native), native.mean(), up, down)
            results[name] = entry
            fitted[name] = (pol, points)

    latency = {}
    if timing:
        latency["feature_device_encode"] = time_feature(model, ds.test_seqs[0])
        for name, (pol, points) in fitted.items():
            if pol.deployable:
                latency[name] = time_decisions(pol, test, points[0]["threshold"], seed=seed)

    per_lag = {}
    for lag in np.unique(test.lag):
        sel = test.lag == lag
        sub = PairSet(test.user[sel], test.time[sel], test.lag[sel], test.r_now[sel], test.r_stale[sel],
                      {k: v[sel] for k, v in test.scores.items()})
        per_lag[int(lag)] = {"users": int(sel.sum()),
                             **{f"{w}_ndcg@10": round(mixed_metrics(sub, np.full(len(sub), w == "always"))["ndcg@10"], 6)
                                for w in ("always", "never")},
                             "none_ndcg@10": round(ranking_metrics(sub.scores["none"])["ndcg@10"], 6)}

    result = {
        "gate": str(Path(gate_dir)), "base_run": desc.get("base_run"), "dataset": str(ds.path),
        "dataset_sha256": ds.sha256, "split": "test", "candidates": int(test.scores["fresh"].shape[1]),
        "decisions": len(test), "lags": list(lags), "lag_counts": {int(k): int(v) for k, v in
                                                                    zip(*np.unique(test.lag, return_counts=True))},
        "calibrated_on": {"split": "valid", "samples": len(recent), "users": int(np.unique(recent.user).size)},
        "update_kind": update_kind(model), "request_bytes": {"sent": up, "received": down},
        "update_payload": model.payload(ds.seq_len),
        "endpoints": endpoints, "policies": results, "per_lag": per_lag,
        "latency_ms_single_thread": latency, "gate_params": gate.param_counts(),
        "summary": summarise(endpoints, results, gain_se, none_se), "seconds": round(time.perf_counter() - t_start, 3),
        "versions": versions(),
    }
    out = Path(out)
    with atomic_dir(out, force=force) as tmp:
        atomic_write_json(tmp / "curve.json", result)
        atomic_write_bytes(tmp / "curve.png", plot(result))
    return result


def at_rate(entry: dict, endpoints: dict, rate: float, metric: str) -> float:
    """A policy's metric at exactly `rate` requests: linear between its measured points, with never at rate 0 and
    always at rate 1. Calibration on validation lands a policy near its budget, not on it (a policy that requests
    more buys more), so policies are compared at the same achieved rate."""
    pts = sorted([(0.0, endpoints["never"][metric]), (1.0, endpoints["always"][metric])]
                 + [(p["request_rate"], p[metric]) for p in entry["points"]])
    rates, vals = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    return float(np.interp(rate, rates, vals))


def summarise(endpoints: dict, results: dict, gain_se: dict | None = None, none_se: dict | None = None,
              at: float = 0.1) -> dict:
    """Share of the always-over-never gain each policy recovers at budget `at`, and gate-vs-random wins."""
    out: dict = {"budget": at, "always_minus_never": {}, "recovered_share": {}}
    se = gain_se or {}
    out["always_minus_never_se"] = se
    # what corrections are worth at all (fresh vs plain SCN), for context
    out["always_minus_none"] = {k: round(endpoints["always"][k] - endpoints["none"][k], 6) for k in SHOWN}
    out["always_minus_none_se"] = none_se or {}
    for k in SHOWN:
        out["always_minus_never"][k] = round(endpoints["always"][k] - endpoints["never"][k], 6)
    # a gain within 2 standard errors of zero is noise: shares of it mean nothing
    out["gain_is_significant"] = {k: bool(se.get(k) is not None and abs(out["always_minus_never"][k]) > 2 * se[k])
                                  for k in SHOWN}
    for name, entry in results.items():
        pt = next((p for p in entry["points"] if abs(p["budget"] - at) < 1e-9), None)
        if pt is None:
            continue
        out["recovered_share"][name] = {
            k: (round((pt[k] - endpoints["never"][k]) / d, 4) if abs(d := endpoints["always"][k] -
                                                                      endpoints["never"][k]) > 1e-12 else None)
            for k in SHOWN}
    if "gate" in results and "random" in results:
        wins = {}
        for k in SHOWN:
            pairs = [(g[k], r[k]) for g, r in zip(results["gate"]["points"], results["random"]["points"])
                     if g["budget"] < 1.0]
            wins[k] = f"{sum(g > r for g, r in pairs)}/{len(pairs)}"
        out["gate_beats_random"] = wins
    if "gate" in results:  # at or above every deployable baseline, at the gate's own request rate (< 100%)
        gp = [p for p in results["gate"]["points"] if p["budget"] < 1.0]
        out["gate_at_or_above"] = {}
        for name in ("random", "lag", "lof", "ocsvm"):
            if name in results:
                wins = {k: sum(p[k] >= at_rate(results[name], endpoints, p["request_rate"], k) - 1e-12 for p in gp)
                        for k in SHOWN}
                out["gate_at_or_above"][name] = {k: f"{v}/{len(gp)}" for k, v in wins.items()}
    # the share at exactly the budget's request rate (calibration lands each policy near, not on, the budget)
    never, gain = endpoints["never"]["ndcg@10"], endpoints["always"]["ndcg@10"] - endpoints["never"]["ndcg@10"]
    out["recovered_share_at_exact_rate"] = {
        name: round((at_rate(entry, endpoints, at, "ndcg@10") - never) / gain, 4) if abs(gain) > 1e-12 else None
        for name, entry in results.items()}
    return out


LABELS = {"uauc": "UAUC", "ndcg@10": "NDCG@10", "hr@10": "HR@10"}
STYLES = {"gate": ("C3", "o", "-"), "mrd": ("C1", "s", "--"), "dm": ("C5", "v", "--"), "random": ("C0", "^", "-"),
          "lag": ("C7", "<", "-."), "lof": ("C2", "D", "-"), "ocsvm": ("C4", "P", "-"), "oracle": ("0.45", "x", ":")}


def y_limits(values: list[float], bands: list[float], level: float) -> tuple[float, float]:
    """A y-range holding every value +- its band, padded 10%, and never narrower than 4 standard errors or 1% of
    the metric's level: a curve whose differences are noise must look flat inside its band, not fill the panel."""
    lo, hi = min(values), max(values)
    span = max(hi - lo, 4 * max(bands, default=0.0), 0.01 * abs(level), 1e-6)
    mid = (lo + hi) / 2
    lo, hi = min(lo, mid - span / 2), max(hi, mid + span / 2)
    pad = 0.1 * (hi - lo)
    return lo - pad, hi + pad


def plot(result: dict) -> bytes:
    """curve.png: `figure(result)` as PNG bytes."""
    import matplotlib.pyplot as plt

    fig = figure(result)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def figure(result: dict):
    """Each metric vs request frequency, one panel per metric (a matplotlib Figure).

    Policies are lines with a band of +-1 paired standard error (over users) of their difference from `never`; the
    `always` (request every time) and `never` (keep the stale update) levels are labelled horizontal lines, the
    always line with the same band. `none` (no correction at all) is drawn when it fits the range, else named in
    the panel with its value. One legend under the panels, off the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, len(SHOWN), figsize=(5.2 * len(SHOWN), 4.6))
    ends, summary = result["endpoints"], result.get("summary", {})
    gain_se = summary.get("always_minus_never_se", {})
    significant = summary.get("gain_is_significant", {})
    handles: dict[str, object] = {}
    for ax, k in zip(axes, SHOWN):
        never, always, none = ends["never"][k], ends["always"][k], ends["none"][k]
        a_se = float(gain_se.get(k) or 0.0)
        values, bands = [never, always - a_se, always + a_se], [a_se]
        for name, entry in result["policies"].items():
            color, marker, ls = STYLES.get(name, ("k", ".", "-"))
            pts = entry["points"]
            xs = np.array([0.0] + [p["request_rate"] for p in pts])
            ys = np.array([never] + [p[k] for p in pts])
            se = np.array([0.0] + [float(p.get(f"se_vs_never_{k}") or 0.0) for p in pts])
            label = name if entry.get("deployable", True) else f"{name} (knows test labels: upper bound)"
            (line,) = ax.plot(xs, ys, marker=marker, ls=ls, color=color, ms=4, lw=1.3, label=label)
            ax.fill_between(xs, ys - se, ys + se, color=color, alpha=0.13, lw=0)
            handles.setdefault(label, line)
            values += list(ys - se) + list(ys + se)
            bands += list(se)
            if "native" in entry:
                ax.plot([entry["native"]["request_rate"]], [entry["native"][k]], marker=marker, color=color, ms=9,
                        mfc="none", ls="none")
                values.append(entry["native"][k])
        lo, hi = y_limits(values, bands, never)
        show_none = lo - (hi - lo) * 0.5 <= none <= hi + (hi - lo) * 0.5
        if show_none:
            lo, hi = y_limits(values + [none], bands, never)
        ax.axhspan(always - a_se, always + a_se, color="k", alpha=0.07, lw=0)
        handles.setdefault("always: every decision requests a fresh update (band +-1 s.e.)",
                           ax.axhline(always, color="k", ls="-", lw=1.1))
        handles.setdefault("never: keep the stale update", ax.axhline(never, color="k", ls="--", lw=1.1))
        # the two levels' names at the left edge, pushed apart when the lines nearly coincide
        gap = (hi - lo) * 0.06
        a_off, n_off = (gap / 2, -gap / 2) if abs(always - never) < gap and always >= never else \
            ((-gap / 2, gap / 2) if abs(always - never) < gap else (0.0, 0.0))
        for name, y, off, va in (("always", always, a_off, "bottom"), ("never", never, n_off, "top")):
            ax.text(0.01, y + off, f" {name} {y:.4f}", transform=ax.get_yaxis_transform(), ha="left", va=va,
                    fontsize=7.5, bbox=dict(fc="white", ec="none", alpha=0.7, pad=0.5))
        if show_none:
            handles.setdefault("none: no correction at all (plain SCN)", ax.axhline(none, color="k", ls=":", lw=1))
        else:
            ax.text(0.99, 0.02 if none < lo else 0.98, f"none (no correction) = {none:.4f}, off the range",
                    transform=ax.transAxes, ha="right", va="bottom" if none < lo else "top", fontsize=7.5,
                    color="0.3")
        if significant and not significant.get(k, True):
            ax.text(0.99, 0.98 if none < lo or show_none else 0.9, "always - never within 2 s.e.: noise",
                    transform=ax.transAxes, ha="right", va="top", fontsize=7.5, color="C1")
        ax.set_ylim(lo, hi)
        ax.set_xlim(-0.02, 1.02)
        ax.set_title(LABELS.get(k, k), fontsize=10)
        ax.set_ylabel(f"{LABELS.get(k, k)} on the test split")
        ax.set_xlabel("request rate (share of decisions that ask the cloud)")
        ax.grid(alpha=0.3)
    handles["native operating point (novelty detectors)"] = Line2D([], [], marker="o", color="0.3", mfc="none",
                                                                   ms=8, ls="none")
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=4, fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 0.0))
    cands = result.get("candidates")
    fig.suptitle(f"{result.get('update_kind', 'cloud update')}: keep a stale update (lag {result['lags'][0]}.."
                 f"{result['lags'][1]} clicks) or request a fresh one; {result.get('decisions', 0):,} test decisions"
                 + (f", {cands} candidates" if cands else "")
                 + "\nbands: +-1 paired standard error over users of the difference from never", fontsize=10)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


__all__ = ["run_curve", "parse_budgets", "mixed_metrics", "payload_bytes", "summarise", "DEFAULT_BUDGETS"]
