"""`toolkit compare RUN...`: one table across runs, mean ± std over seeds, the non-learned baselines beside them.

A RUN is a run dir (metrics.json), a seeds dir (`train --seeds`: seeds.json + seed-*/) or a sweep dir
(`train --sweep`: the point picked on validation). All must score the same dataset. With `dataset` given, pop and
cooc are counted on it when no run of theirs is listed, so a model figure never stands without its baselines.
The gain of each model is relative to the best baseline's mean on the chosen metric.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.io import read_json
from toolkit.models.counts import COUNT_MODELS

METRICS = ("ndcg@10", "hr@10", "uauc", "ndcg@20", "hr@20")


def _seed_runs(path: Path) -> list[Path]:
    if (path / "seeds.json").is_file():
        runs = sorted(p for p in path.glob("seed-*") if (p / "metrics.json").is_file())
        if not runs:
            raise ToolkitError(f"{path}: seeds.json lists no finished seed-* run")
        return runs
    if (path / "sweep.json").is_file():
        best = read_json(path / "sweep.json", "sweep summary").get("best")
        if not isinstance(best, str) or "/" in best or best.startswith("."):
            raise ToolkitError(f"{path / 'sweep.json'}: 'best' must name a point's run dir")
        return [path / best]
    if (path / "metrics.json").is_file():
        return [path]
    raise ToolkitError(f"{path}: not a run dir (no metrics.json, seeds.json or sweep.json)")


def load_entry(path: Path, split: str) -> dict:
    """One table row's inputs: model name, dataset sha256, per-seed metrics of `split`, the recipe."""
    from toolkit.models.runs import read_descriptor

    path = Path(path)
    if not path.is_dir():
        raise ToolkitError(f"run dir not found: {path}")
    per_seed, model, sha, recipe = [], None, None, None
    for run in _seed_runs(path):
        desc = read_descriptor(run)
        metrics = read_json(run / "metrics.json", "run metrics")
        if not isinstance(metrics.get(split), dict) or not all(
                isinstance(metrics[split].get(k), (int, float)) for k in METRICS):
            raise ToolkitError(f"{run / 'metrics.json'}: no '{split}' metrics ({', '.join(METRICS)})")
        if model not in (None, desc["model"]) or sha not in (None, desc.get("dataset_sha256")):
            raise ToolkitError(f"{path}: its seed runs are of different models or datasets")
        model, sha = desc["model"], desc.get("dataset_sha256")
        recipe = (desc.get("train") or {}).get("recipe", {}).get("name", recipe)
        per_seed.append({k: float(metrics[split][k]) for k in METRICS})
    return {"label": path.name, "path": str(path), "model": model, "dataset_sha256": sha, "recipe": recipe,
            "per_seed": per_seed}


def counted_baselines(dataset, present: set[str], split: str) -> list[dict]:
    """pop and cooc counted on `dataset` (never written to disk) for those not among the runs."""
    from toolkit.models.counts import fit
    from toolkit.train.loop import evaluate

    out = []
    for name in COUNT_MODELS:
        if name not in present:
            m = evaluate(fit(name, dataset).eval(), dataset, split)
            out.append({"label": f"{name} (counted)", "path": None, "model": name, "recipe": None,
                        "dataset_sha256": dataset.sha256, "per_seed": [{k: float(m[k]) for k in METRICS}]})
    return out


def table(entries: list[dict], metric: str = "ndcg@10") -> dict:
    """compare.json: per row mean and std (ddof=1) over seeds of every metric, and the gain over the best baseline."""
    if metric not in METRICS:
        raise ToolkitError(f"unknown --metric '{metric}' (valid: {', '.join(METRICS)})")
    shas = {e["dataset_sha256"] for e in entries}
    if len(shas) > 1:
        raise ToolkitError("the runs score different datasets: "
                           + ", ".join(f"{e['label']} ({str(e['dataset_sha256'])[:12]}…)" for e in entries))
    rows = []
    for e in entries:
        vals = {k: np.array([s[k] for s in e["per_seed"]]) for k in METRICS}
        rows.append({"label": e["label"], "model": e["model"], "recipe": e["recipe"], "path": e["path"],
                     "baseline": e["model"] in COUNT_MODELS, "seeds": len(e["per_seed"]),
                     "mean": {k: float(v.mean()) for k, v in vals.items()},
                     "std": {k: float(v.std(ddof=1)) if v.size > 1 else 0.0 for k, v in vals.items()}})
    base = [r for r in rows if r["baseline"]]
    best = max(base, key=lambda r: r["mean"][metric]) if base else None
    for r in rows:
        r["gain_over_best_baseline"] = (None if best is None or r["baseline"] else
                                        r["mean"][metric] / best["mean"][metric] - 1.0)
    return {"metric": metric, "dataset_sha256": shas.pop() if shas else None,
            "best_baseline": best["label"] if best else None, "rows": rows}


def plot(summary: dict, path: Path) -> None:
    """A bar per row (mean ± std over seeds) of the chosen metric, baselines grey, the best baseline as a line."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from toolkit.io import atomic_write_bytes

    metric, rows = summary["metric"], summary["rows"]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(rows) + 2), 3.8))
    x = np.arange(len(rows))
    ax.bar(x, [r["mean"][metric] for r in rows], yerr=[r["std"][metric] for r in rows], capsize=4,
           color=["#9e9e9e" if r["baseline"] else "#1f77b4" for r in rows])
    best = next((r for r in rows if r["label"] == summary["best_baseline"]), None)
    if best is not None:
        ax.axhline(best["mean"][metric], color="#d62728", ls="--", lw=1, label=f"best baseline ({best['label']})")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(x, [r["label"] for r in rows], rotation=30, ha="right", fontsize=8)
    lo = min(r["mean"][metric] - r["std"][metric] for r in rows)
    ax.set_ylim(max(0.0, math.floor(lo * 20) / 20 - 0.05), None)
    ax.set_ylabel(f"test {metric} (mean ± std over seeds)")
    ax.set_title("Which model is worth shipping? (grey: non-learned baselines)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


__all__ = ["load_entry", "counted_baselines", "table", "plot", "METRICS"]
