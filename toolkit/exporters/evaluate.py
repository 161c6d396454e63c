"""Ranking accuracy of the files a phone ships: a split's users ranked THROUGH each artifact, in its own runtime.

`evaluate_artifacts(dir, ds, split)` reads an artifact dir (hash-checked, through toolkit.exporters.manifest) and, for
every record whose entry takes `items` + `candidates`:
- a stateless entry (`window`): one call per user at the artifact's static batch shape [1, L], the user's window and
  candidate row, exactly the rows `toolkit eval RUN` scores;
- a stateful entry (`step`): streaming, as a phone runs it: from the shipped initial state, the user's history[0:T] in
  mini-batches of K clicks (the last right-padded), the scores of the last call ranked (toolkit.train.streaming is the
  eager twin).
Each is compared per user with the eager model of the same run (the run the manifest names, its weights checked
against the manifest's hash; a fresh-initialised export is rebuilt from its seed): the paired difference of NDCG@10,
HR@10 and UAUC and its standard error over users. Core ML cannot run off macOS: reported as skipped, never passed.

`accuracy_verdicts(result, budget)` applies an accuracy budget (largest allowed NDCG@10 drop from eager);
`check_accuracy(dirs, ...)` is the accuracy budget of `toolkit verify` / `toolkit bench`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.exporters.manifest import MANIFEST, ArtifactRecord, Manifest, verified
from toolkit.reporter import Reporter

Progress = Callable[[str, int, int], None]
K_TOP = 10
REPORTED = ("ndcg@10", "hr@10", "uauc")
WINDOW_INPUTS = ("items", "candidates")
Z95 = 1.959963984540054


def is_artifact_dir(path: str | Path) -> bool:
    """An artifact dir (manifest.json) rather than a run dir (model.json)."""
    return (Path(path) / MANIFEST).is_file()


# ---- per-user metrics ------------------------------------------------------------------------------------------------

def per_user(scores: np.ndarray) -> dict[str, np.ndarray]:
    """NDCG@10, HR@10 and UAUC of each row (positive in column 0, pessimistic ties: toolkit.metrics' definitions, so
    their means are ranking_metrics' values)."""
    from toolkit.metrics import positive_rank

    scores = np.asarray(scores, dtype=np.float32)
    rank = positive_rank(scores, 0)
    c = scores.shape[1]
    return {"ndcg@10": np.where(rank < K_TOP, 1.0 / np.log2(rank + 2.0), 0.0),
            "hr@10": (rank < K_TOP).astype(np.float64),
            "uauc": (c - 1 - rank) / (c - 1),
            "rank": rank}


def summarise(per: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.mean(per[k])) for k in REPORTED}


def paired(art: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict:
    """artifact - eager per user: mean, its standard error (sample s.d. / sqrt n), the 95% interval, and the share of
    users whose positive lands at the same rank."""
    out = {}
    n = len(art["rank"])
    for k in REPORTED:
        d = art[k] - ref[k]
        se = float(np.std(d, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        mean = float(np.mean(d))
        base = float(np.mean(ref[k]))
        out[k] = {"diff": mean, "se": se, "ci95": [mean - Z95 * se, mean + Z95 * se],
                  "relative": mean / base if base else None}
    out["same_rank_share"] = float(np.mean(art["rank"] == ref["rank"]))
    return out


# ---- the dataset the artifact is asked to rank -----------------------------------------------------------------------

def _dims(rec: ArtifactRecord) -> dict:
    return {i.name: i for i in rec.inputs}


def evaluable(rec: ArtifactRecord) -> str | None:
    """None when the record can be ranked here, else why not (a reason for 'skipped')."""
    names = [i.name for i in rec.inputs]
    if names[:2] != list(WINDOW_INPUTS):
        return f"entry '{rec.entry}' takes {', '.join(names)}, not a user's items and candidates"
    if len(names) > 2:
        return (f"entry '{rec.entry}' also takes {', '.join(names[2:])} (cloud inputs this evaluation does not "
                "compute)")
    if rec.runtime == "coreml":
        from toolkit.exporters.runners import coreml_can_run

        if not coreml_can_run():
            import platform

            return f"Core ML prediction needs macOS 15+; this host is {platform.system()}"
    return None


def check_matches(manifest: Manifest, ds, split: str) -> None:
    """One line naming both sides when the artifacts were not made for this dataset (vocabulary, window length,
    candidates per user, or the dataset the run was trained on)."""
    seqs, cands = ds.split(split)
    info = manifest.raw.get("model_info") or {}
    where = manifest.root
    for rec in manifest.artifacts:
        d = _dims(rec)
        if "items" not in d or "candidates" not in d:
            continue
        high = d["items"].high
        if high is not None and int(high) != ds.n_items:
            raise ToolkitError(f"{where}/{rec.file} was exported for {high} items; dataset {ds.path} has "
                               f"{ds.n_items} items")
        if not rec.states and int(d["items"].shape[1]) != seqs.shape[1]:
            raise ToolkitError(f"{where}/{rec.file} takes windows of {d['items'].shape[1]} items; dataset {ds.path} "
                               f"has windows of {seqs.shape[1]} (export with --seq-len {seqs.shape[1]})")
        if int(d["candidates"].shape[1]) != cands.shape[1]:
            raise ToolkitError(f"{where}/{rec.file} scores {d['candidates'].shape[1]} candidates; dataset {ds.path} "
                               f"has {cands.shape[1]} per user (export with --candidates {cands.shape[1]})")
    sha = info.get("dataset_sha256")
    if sha and sha != ds.sha256:
        raise ToolkitError(f"{where} was exported from a run trained on another dataset (sha256 {sha[:12]}…); "
                           f"dataset {ds.path} is {ds.sha256[:12]}…")


def sample_users(n: int, users: int | None, seed: int) -> np.ndarray:
    """Row indices of the split to evaluate: all, or a seeded sample of `users` rows (sorted)."""
    if users is None or users >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=users, replace=False))


# ---- the eager model of the same run ---------------------------------------------------------------------------------

def eager_model(manifest: Manifest, run: str | Path | None = None):
    """(model, description) of the eager model the artifacts were exported from: the run dir the manifest names
    (or `run`), its weights hash checked against the manifest; a fresh export rebuilt from its seed and config.
    (None, why) when it cannot be had."""
    info = manifest.raw.get("model_info") or {}
    src = info.get("source")
    if run is not None or src == "run":
        from toolkit.models.runs import load_run, read_descriptor

        path = Path(run) if run is not None else Path(str(info.get("run")))
        if not (path / "model.json").is_file():
            return None, f"run dir {path} not found (pass --run RUN_DIR)"
        desc = read_descriptor(path)
        want = info.get("weights_sha256")
        if want and desc.get("weights_sha256") != want:
            raise ToolkitError(f"run {path} holds other weights (sha256 {str(desc.get('weights_sha256'))[:12]}…) "
                               f"than {manifest.root} was exported from ({want[:12]}…)")
        model, _ = load_run(path)
        return model.eval(), f"run {path}"
    if src == "fresh":
        from toolkit.exporters.sources import build, fresh_source

        n_items = None
        for rec in manifest.artifacts:
            d = _dims(rec)
            if "items" in d and d["items"].high is not None:
                n_items = int(d["items"].high)
        cfg = dict(info.get("config") or {})
        cfg.pop("n_items", None)
        model = build(fresh_source(info.get("source_model", manifest.model), n_items, cfg, int(info.get("seed", 0))))
        return model, f"fresh {info.get('source_model')} (seed {info.get('seed', 0)})"
    return None, f"the manifest names no run or seed to rebuild the eager model from (source {src!r})"


def eager_scores(model, ds, split: str, regime: str, rows: np.ndarray) -> np.ndarray:
    """The eager twin of an artifact regime on the chosen rows: `window` as `toolkit eval` scores it (the device part
    of a cloud model: its SCN), `stream` as toolkit.train.streaming."""
    import torch

    torch.set_num_threads(1)
    if regime == "stream":
        from toolkit.train.streaming import stream_scores

        return stream_scores(model, ds, split)[rows]
    from toolkit.train.loop import context_rows, score_split

    seqs, cands = ds.split(split)
    ctx = context_rows(model, ds, split)
    return score_split(model, np.asarray(seqs[rows]), np.asarray(cands[rows]), None if ctx is None else ctx[rows])


# ---- ranking through the artifact ------------------------------------------------------------------------------------

def _int_rows(a: np.ndarray, spec, file: str) -> np.ndarray:
    a = np.ascontiguousarray(np.asarray(a, dtype=np.int64))
    high = spec.high
    bad = (a < 0) | (a > high) if high is not None else (a < 0)
    if bad.any():
        raise ToolkitError(f"{file}: input '{spec.name}' would receive id {int(a[bad].flat[0])}, outside 0..{high}")
    return a


def window_scores(runner, rec: ArtifactRecord, seqs: np.ndarray, cands: np.ndarray,
                  tell: Progress | None = None, calls: list | None = None) -> np.ndarray:
    """Scores [n, C] through a stateless artifact: ids checked once, then one call per row at the static batch shape
    (the batch dimension the artifact declares; rows are grouped by it)."""
    d = _dims(rec)
    b = int(d["items"].shape[0])
    s = _int_rows(seqs, d["items"], rec.file)
    c = _int_rows(cands, d["candidates"], rec.file)
    n = len(s)
    out = np.zeros((n, c.shape[1]), np.float32)
    pad = (-n) % b
    if pad:  # fill the last group with copies of the last row; their scores are dropped
        s = np.concatenate([s, np.repeat(s[-1:], pad, 0)])
        c = np.concatenate([c, np.repeat(c[-1:], pad, 0)])
    run = runner.run_validated
    every = max(1, n // 50)
    clock = time.perf_counter
    for i in range(0, n, b):
        t0 = clock()
        got = run([s[i:i + b], c[i:i + b]])[0]
        if calls is not None:
            calls.append(clock() - t0)
        out[i:i + b] = got.reshape(b, -1)[:min(b, n - i)]
        if tell and i % every < b:
            tell(rec.file, i, n)
    return out


def stream_artifact_scores(runner, rec: ArtifactRecord, ds, split: str, rows: np.ndarray,
                           tell: Progress | None = None, calls: list | None = None) -> np.ndarray:
    """Scores [n, C] through a stateful step artifact, streamed per user from the shipped initial state."""
    d = _dims(rec)
    if int(d["items"].shape[0]) != 1:
        raise ToolkitError(f"{rec.file}: streaming evaluates batch-1 step entries (this one takes "
                           f"{d['items'].shape[0]} rows)")
    K = int(d["items"].shape[1])
    users, times = ds.targets(split)
    _, cands = ds.split(split)
    c_all = _int_rows(np.asarray(cands[rows]), d["candidates"], rec.file)
    out = np.zeros(c_all.shape, np.float32)
    run = runner.run_validated
    every = max(1, len(rows) // 50)
    for j, r in enumerate(rows):
        u, T = int(users[r]), int(times[r])
        hist = np.asarray(ds.user_items[ds.user_ptr[u]:ds.user_ptr[u] + T], dtype=np.int64)
        m = max(1, -(-T // K))
        buf = np.zeros(m * K, np.int64)
        buf[:T] = hist
        buf = _int_rows(buf, d["items"], rec.file).reshape(m, 1, K)
        runner.reset()
        c = c_all[j:j + 1]
        for k in range(m):
            t0 = time.perf_counter()
            got = run([buf[k], c])[0]
            if calls is not None:
                calls.append(time.perf_counter() - t0)
        out[j] = got.reshape(-1)
        if tell and j % every == 0:
            tell(rec.file, j, len(rows))
    return out


def evaluate_artifacts(artifact_dir: str | Path, ds, split: str = "test", users: int | None = None, seed: int = 0,
                       run: str | Path | None = None, threads: int = 1, regimes=("window", "stream"),
                       progress: Progress | None = None, allow_extra: bool = False,
                       eager_cache: dict | None = None, expect: str | None = None) -> dict:
    """Rank a split's users through every evaluable artifact of the dir; compare each with eager, paired per user.

    eager_cache: a dict shared by calls over dirs exported from the same run (the eager scores are computed once).
    Returns a JSON-able dict: the dir, split, users (evaluated / of / sampled, seed), the eager source and metrics
    per regime, and one row per artifact record (evaluated or skipped with its reason)."""
    from toolkit.exporters.common import quiet_libraries
    from toolkit.exporters.runners import open_runner
    from toolkit.rows import latency_summary

    if split not in ("valid", "test"):
        raise ToolkitError(f"unknown split '{split}' (valid: valid, test)")
    tell = progress or (lambda what, d, t: None)
    manifest = verified(artifact_dir, expect=expect, allow_extra=allow_extra)
    check_matches(manifest, ds, split)
    quiet_libraries()
    seqs, cands = ds.split(split)
    n_all = len(seqs)
    rows = sample_users(n_all, users, seed)
    seqs_r, cands_r = np.asarray(seqs[rows]), np.asarray(cands[rows])
    model, eager_src = eager_model(manifest, run)
    eager: dict[str, dict] = {}
    eager_per: dict[str, dict] = {}
    eager_raw: dict[str, np.ndarray] = {}

    cache = eager_cache if eager_cache is not None else {}
    info = manifest.raw.get("model_info") or {}
    ident = (eager_src, info.get("weights_sha256"), info.get("seed"), ds.sha256, split, users, seed)

    def eager_for(regime: str):
        if model is None:
            return None
        if regime not in eager_per:
            tell(f"eager {regime}", 0, 1)
            t0 = time.perf_counter()
            if (ident, regime) not in cache:
                cache[(ident, regime)] = eager_scores(model, ds, split, regime, rows)
            eager_raw[regime] = cache[(ident, regime)]
            eager_per[regime] = per_user(eager_raw[regime])
            eager[regime] = {**summarise(eager_per[regime]), "seconds": round(time.perf_counter() - t0, 3)}
        return eager_per[regime]

    results = []
    for rec in manifest.artifacts:
        row = {"file": rec.file, "runtime": rec.runtime, "entry": rec.entry, "recipe": rec.raw.get("recipe"),
               "dtype": rec.raw.get("dtype"), "embedding": rec.raw.get("embedding_quantization", "none"),
               "bytes": rec.raw.get("bytes"), "sha256": rec.sha256,
               "accuracy_budget": rec.raw.get("accuracy_budget")}
        regime = "stream" if rec.states else "window"
        row["regime"] = regime
        why = evaluable(rec)
        if why is None and regime not in regimes:
            why = f"the {regime} regime was not asked for"
        if why is not None:
            results.append({**row, "status": "skipped", "reason": why})
            continue
        runner = open_runner(manifest.root, rec.raw, threads)
        t0 = time.perf_counter()
        calls: list[float] = []
        if regime == "window":
            scores = window_scores(runner, rec, seqs_r, cands_r, tell, calls)
        else:
            scores = stream_artifact_scores(runner, rec, ds, split, rows, tell, calls)
        secs = time.perf_counter() - t0
        per = per_user(scores)
        row.update({"status": "evaluated", "metrics": summarise(per), "seconds": round(secs, 3),
                    "users_per_second": round(len(rows) / secs, 1) if secs > 0 else None,
                    "threads": threads,
                    # every call of the evaluation timed in passing (runner call, numpy in and out): not a bench
                    "call_ms": latency_summary([1e3 * x for x in calls])})
        ref = eager_for(regime)
        if ref is not None:
            row["vs_eager"] = paired(per, ref)
            row["max_abs_score_diff"] = float(np.max(np.abs(scores - eager_raw[regime])))
        results.append(row)
        tell(rec.file, len(rows), len(rows))
    return {"dir": str(manifest.root), "manifest_sha256": manifest.digest, "model": manifest.model,
            "source_model": manifest.raw.get("source_model"), "split": split, "dataset": str(ds.path),
            "users": {"evaluated": int(len(rows)), "of": int(n_all), "sampled": bool(len(rows) < n_all),
                      "seed": seed if len(rows) < n_all else None},
            "eager": {"source": eager_src, **eager}, "artifacts": results}


# ---- the accuracy budget ---------------------------------------------------------------------------------------------

BUDGET_KEYS = ("max_ndcg_drop", "max_ndcg_drop_relative")


def check_budget(budget: dict, where: str) -> dict:
    """An [accuracy] table (recipe) or the CLI's override: known keys, finite non-negative numbers."""
    if not isinstance(budget, dict):
        raise ToolkitError(f"{where}: the accuracy budget must be a table, got {type(budget).__name__}")
    bad = [k for k in budget if k not in BUDGET_KEYS]
    if bad:
        raise ToolkitError(f"{where}: unknown accuracy budget key '{bad[0]}' (valid: {', '.join(BUDGET_KEYS)})")
    for k, v in budget.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ToolkitError(f"{where}: {k} must be a finite number >= 0, got {v!r}")
    return {k: float(v) for k, v in budget.items()}


def accuracy_verdicts(result: dict, override: dict | None = None) -> list[dict]:
    """Per artifact row: passed / failed / skipped against its accuracy budget: the recipe's (recorded in the
    manifest as `accuracy_budget`) or `override` (the CLI's). The drop is eager minus artifact NDCG@10, the point
    estimate of the per-user paired difference (absolute; `max_ndcg_drop_relative` divides it by eager's NDCG@10),
    reported with its 95% interval. An artifact that cannot be evaluated here is skipped, never passed."""
    out = []
    for row in result["artifacts"]:
        budget = dict(override) if override else dict(row.get("accuracy_budget") or {})
        v = {"file": row["file"], "runtime": row["runtime"], "entry": row["entry"], "budget": budget or None}
        if not budget:
            v.update(status="no budget")
        elif row["status"] != "evaluated":
            v.update(status="skipped", reason=row.get("reason"))
        elif "vs_eager" not in row:
            v.update(status="skipped", reason=f"no eager model to compare with ({result['eager']['source']})")
        else:
            p = row["vs_eager"]["ndcg@10"]
            eager = result["eager"][row["regime"]]["ndcg@10"]
            drop, lo, hi = -p["diff"], -p["ci95"][1], -p["ci95"][0]
            rel = drop / eager if eager else 0.0
            broken = []
            if "max_ndcg_drop" in budget and drop > budget["max_ndcg_drop"]:
                broken.append(f"max_ndcg_drop {budget['max_ndcg_drop']:g}")
            if "max_ndcg_drop_relative" in budget and rel > budget["max_ndcg_drop_relative"]:
                broken.append(f"max_ndcg_drop_relative {budget['max_ndcg_drop_relative']:g}")
            limits = ", ".join(f"{k} {x:g}" for k, x in budget.items())
            v.update(drop=drop, relative_drop=rel, se=p["se"], ci95=[lo, hi],
                     status="failed" if broken else "passed",
                     line=(f"{row['file']}: NDCG@10 drop {drop:+.5f} ({rel:+.3%} of eager {eager:.4f}; 95% CI "
                           f"{lo:+.5f}..{hi:+.5f}, {result['users']['evaluated']} users) "
                           + (f"breaks {', '.join(broken)}" if broken else f"within {limits}")))
        out.append(v)
    return out


class AccuracyReporter(Reporter):
    """A Reporter that also hears each accuracy verdict as it is reached (check_accuracy)."""

    def accuracy(self, verdict: dict) -> None:
        """A budgeted artifact's verdict (accuracy_verdicts: passed / failed / skipped), or, when nothing was
        ranked, {"status": "not checked", "budgeted": n}."""


def check_sample_flags(users: int | None, seed: int, threads: int) -> None:
    """--users (a positive sample size), --seed and --threads of the commands that rank users through artifacts."""
    from toolkit.checks import check_seed, check_threads

    if users is not None and (isinstance(users, bool) or users < 1):
        raise ToolkitError(f"--users must be a positive integer, got {users}")
    check_seed(seed)
    check_threads(threads)


def budget_override(max_ndcg_drop: float | None, relative: float | None) -> dict | None:
    """--max-ndcg-drop / --max-ndcg-drop-relative -> a budget that replaces the recipes' (checked before imports)."""
    from toolkit.checks import check_number

    out = {}
    if max_ndcg_drop is not None:
        out["max_ndcg_drop"] = float(check_number(max_ndcg_drop, "--max-ndcg-drop", lo=0))
    if relative is not None:
        out["max_ndcg_drop_relative"] = float(check_number(relative, "--max-ndcg-drop-relative", lo=0))
    return out or None


def check_accuracy(dirs: list[Path], data: Path | None, users: int | None, seed: int, override: dict | None,
                   reporter: AccuracyReporter, threads: int = 1, expect: str | None = None) -> dict:
    """The accuracy budget of `toolkit verify` / `toolkit bench`: each dir's artifacts ranked through their runtime on
    the test split of `data`, each drop from eager checked against its budget, every verdict reported as reached.
    Returns {"evaluations", "verdicts", "failed": [lines]}. Without `data`: nothing evaluated, and an artifact whose
    recipe sets a budget is reported as not checked (never as passed)."""
    from toolkit.exporters.manifest import read_manifest

    if data is None:
        budgeted = [r.file for d in dirs for r in read_manifest(d, expect).artifacts if r.raw.get("accuracy_budget")]
        if budgeted or override:
            reporter.accuracy({"status": "not checked", "budgeted": len(budgeted)})
        return {"checked": False, "reason": "no --data", "budgeted": budgeted, "failed": []}
    from toolkit.data import load_dataset

    ds = load_dataset(data)
    evaluations, verdicts, failed = [], [], []
    for d in dirs:
        res = evaluate_artifacts(d, ds, "test", users, seed, threads=threads, expect=expect)
        evaluations.append(res)
        for v in accuracy_verdicts(res, override):
            v["dir"] = res["dir"]
            verdicts.append(v)
            if v["status"] == "failed":
                failed.append(v["line"])
            if v["status"] in ("failed", "passed", "skipped"):
                reporter.accuracy(v)
    return {"checked": True, "split": "test", "evaluations": evaluations, "verdicts": verdicts, "failed": failed}


# ---- the precision table ---------------------------------------------------------------------------------------------

def precision_table(results: list[dict]) -> list[dict]:
    """One row per evaluated artifact of several artifact dirs (a run exported with several recipes): size (and its
    share of the fp32 file of the same runtime and entry, when one is in the set), per-call p50 measured while
    ranking, the ranking metrics and the paired drop from eager (NDCG@10: absolute and relative, with its s.e.)."""
    rows = []
    for res in results:
        for a in res["artifacts"]:
            if a["status"] != "evaluated":
                rows.append({"dir": res["dir"], "file": a["file"], "runtime": a["runtime"], "entry": a["entry"],
                             "recipe": a.get("recipe"), "dtype": a.get("dtype"), "bytes": a.get("bytes"),
                             "status": "skipped", "reason": a.get("reason")})
                continue
            v = a.get("vs_eager", {}).get("ndcg@10", {})
            rows.append({"dir": res["dir"], "file": a["file"], "runtime": a["runtime"], "entry": a["entry"],
                         "regime": a["regime"], "recipe": a.get("recipe"), "dtype": a.get("dtype"),
                         "embedding": a.get("embedding"), "bytes": a.get("bytes"), "status": "evaluated",
                         "p50_ms": a["call_ms"]["p50"], **{k: a["metrics"][k] for k in REPORTED},
                         "ndcg_drop": -v["diff"] if v else None, "ndcg_drop_se": v.get("se"),
                         "ndcg_drop_relative": -v["relative"] if v.get("relative") is not None else None,
                         "users": res["users"]["evaluated"]})
    fp32 = {(r["runtime"], r["entry"]): r["bytes"] for r in rows if r.get("dtype") == "fp32" and r.get("bytes")}
    for r in rows:
        base = fp32.get((r["runtime"], r["entry"]))
        r["size_vs_fp32"] = (r["bytes"] / base) if base and r.get("bytes") else None
    return rows


def plot_precision(rows: list[dict], path: Path, title: str = "") -> None:
    """Size against the NDCG@10 drop from eager (error bar: 1.96 s.e.), one point per evaluated artifact."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from toolkit.io import atomic_write_bytes

    pts = [r for r in rows if r["status"] == "evaluated" and r.get("ndcg_drop") is not None and r.get("bytes")]
    fig, ax = plt.subplots(figsize=(8, 5))
    markers = {"executorch": "o", "onnxruntime": "s", "onnxruntime-ort": "^", "coreml": "D"}
    for r in pts:
        ax.errorbar(r["bytes"] / 1e6, r["ndcg_drop"], yerr=Z95 * (r["ndcg_drop_se"] or 0), fmt=markers.get(
            r["runtime"], "o"), capsize=3, label=f"{r['file']}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("artifact size (MB)")
    ax.set_ylabel("NDCG@10 drop from eager (eager - artifact)")
    ax.set_title(title or "precision: size vs ranking accuracy")
    if pts:
        ax.legend(fontsize=7, loc="best")
    import io as _io

    buf = _io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
