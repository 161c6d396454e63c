"""Printing for `toolkit eval ARTIFACT_DIR...` and the accuracy budget of `toolkit verify` / `toolkit bench`: flags
checked, the library (toolkit.exporters.evaluate) called, tables printed, JSON written. No evaluation logic here."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from toolkit.errors import ToolkitError


def check_flags(users: Optional[int], seed: int, threads: int) -> None:
    from toolkit.cli.common import check_seed, check_threads

    if users is not None and (isinstance(users, bool) or users < 1):
        raise ToolkitError(f"--users must be a positive integer, got {users}")
    check_seed(seed)
    check_threads(threads)


def _fmt_diff(a: dict, k: str) -> str:
    v = a.get("vs_eager", {}).get(k)
    if not v:
        return "-"
    return f"{v['diff']:+.5f}±{v['se']:.5f}"


def results_table(res: dict):
    from rich.table import Table

    u = res["users"]
    who = (f"{u['evaluated']} of {u['of']} users (seeded sample, seed {u['seed']})" if u["sampled"]
           else f"all {u['of']} users")
    t = Table(title=f"{res['dir']} on {res['split']}: {who}; eager = {res['eager']['source']}")
    for c in ("artifact", "regime", "NDCG@10", "HR@10", "UAUC", "ΔNDCG@10 ± s.e.", "same rank", "p50 ms", "s"):
        t.add_column(c, overflow="fold")
    for regime in ("window", "stream"):
        e = res["eager"].get(regime)
        if e:
            t.add_row(f"eager ({regime})", regime, f"{e['ndcg@10']:.4f}", f"{e['hr@10']:.4f}",
                      f"{e['uauc']:.4f}", "", "", "", f"{e['seconds']:.1f}")
    for a in res["artifacts"]:
        if a["status"] != "evaluated":
            t.add_row(a["file"], a["regime"], f"[yellow]skipped[/]: {a['reason']}", *[""] * 6)
            continue
        m = a["metrics"]
        same = a.get("vs_eager", {}).get("same_rank_share")
        t.add_row(a["file"], a["regime"], f"{m['ndcg@10']:.4f}", f"{m['hr@10']:.4f}", f"{m['uauc']:.4f}",
                  _fmt_diff(a, "ndcg@10"), "-" if same is None else f"{same:.2%}", f"{a['call_ms']['p50']:.3f}",
                  f"{a['seconds']:.1f}")
    return t


def precision_rich(rows: list[dict]):
    from rich.table import Table

    from toolkit.cli.common import human_bytes

    t = Table(title="precision table: size, per-call p50 and ranking accuracy per artifact (drop = eager - artifact)")
    for c in ("artifact", "dtype", "size", "vs fp32", "p50 ms", "NDCG@10", "HR@10", "UAUC", "NDCG drop ± s.e.",
              "rel. drop"):
        t.add_column(c, overflow="fold")
    for r in rows:
        if r["status"] != "evaluated":
            t.add_row(r["file"], str(r.get("dtype")), human_bytes(r.get("bytes")), "", "", "[yellow]skipped[/]",
                      "", "", r.get("reason") or "", "")
            continue
        drop = "-" if r["ndcg_drop"] is None else f"{r['ndcg_drop']:+.5f}±{r['ndcg_drop_se']:.5f}"
        rel = "-" if r["ndcg_drop_relative"] is None else f"{r['ndcg_drop_relative']:+.3%}"
        t.add_row(r["file"], f"{r['dtype']}" + (f" (emb {r['embedding']})" if r.get("embedding") not in (None, "none")
                                                  else ""),
                  human_bytes(r["bytes"]), "-" if r["size_vs_fp32"] is None else f"{r['size_vs_fp32']:.1%}",
                  f"{r['p50_ms']:.3f}", f"{r['ndcg@10']:.4f}", f"{r['hr@10']:.4f}", f"{r['uauc']:.4f}", drop, rel)
    return t


def evaluate_artifact_dirs(paths: list[Path], data: Path, split: str, users: Optional[int], seed: int,
                           run_dir: Optional[Path], out: Optional[Path], png: Optional[Path], threads: int,
                           as_json: bool, regime: Optional[str]) -> None:
    from toolkit.cli.common import check_out, console
    from toolkit.exporters.evaluate import is_artifact_dir

    check_flags(users, seed, threads)
    not_art = [str(p) for p in paths if not is_artifact_dir(p)]
    if not_art:
        raise ToolkitError(f"{not_art[0]} is not an artifact dir (no manifest.json); evaluate a run dir on its own")
    if out is not None:
        check_out(out, "--out", folder=False)
    if png is not None:
        check_out(png, "--png", folder=False)
    regimes = {"window": ("window",), "stream": ("stream",)}.get(regime or "both", ("window", "stream"))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from toolkit.data import load_dataset
    from toolkit.exporters.evaluate import evaluate_artifacts, plot_precision, precision_table
    from toolkit.io import atomic_write_json, dumps_json

    ds = load_dataset(data)
    results, eager_cache = [], {}
    with Progress(TextColumn("[bold]eval[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console, transient=True) as bar:
        task = bar.add_task("starting", total=None)
        for p in paths:
            results.append(evaluate_artifacts(
                p, ds, split, users, seed, run_dir, threads, regimes,
                progress=lambda w, d, t: bar.update(task, completed=d, total=t, description=w),
                eager_cache=eager_cache))
    table = precision_table(results)
    payload = {"schema": "toolkit.artifact_eval/1", "results": results, "precision_table": table}
    if out is not None:
        atomic_write_json(out, payload)
    if png is not None:
        plot_precision(table, png, f"{results[0].get('source_model')} on {split}")
    if as_json:
        typer.echo(dumps_json(payload), nl=False)
        return
    for res in results:
        console.print(results_table(res))
    if len(results) > 1:
        console.print(precision_rich(table))
    for f in (out, png):
        if f is not None:
            console.print(f"wrote {f}")


def budget_override(max_ndcg_drop: Optional[float], relative: Optional[float]) -> dict | None:
    """--max-ndcg-drop / --max-ndcg-drop-relative -> a budget that replaces the recipes' (checked before imports)."""
    from toolkit.cli.common import check_number

    out = {}
    if max_ndcg_drop is not None:
        out["max_ndcg_drop"] = float(check_number(max_ndcg_drop, "--max-ndcg-drop", lo=0))
    if relative is not None:
        out["max_ndcg_drop_relative"] = float(check_number(relative, "--max-ndcg-drop-relative", lo=0))
    return out or None


def check_accuracy(dirs: list[Path], data: Optional[Path], users: Optional[int], seed: int,
                   override: dict | None, console, threads: int = 1, expect: str | None = None) -> dict:
    """The accuracy budget of `toolkit verify` / `toolkit bench`: each dir's artifacts ranked through their runtime on
    the test split of --data, each drop from eager checked against its budget. Prints one line per budgeted
    artifact; returns {"evaluations", "verdicts", "failed": [lines]}. Without --data: nothing evaluated, and an
    artifact whose recipe sets a budget is reported as not checked (never as passed)."""
    from toolkit.exporters.evaluate import accuracy_verdicts, evaluate_artifacts
    from toolkit.exporters.manifest import read_manifest

    if data is None:
        budgeted = [r.file for d in dirs for r in read_manifest(d, expect).artifacts if r.raw.get("accuracy_budget")]
        if budgeted or override:
            console.print(f"[yellow]note:[/] accuracy budget not checked ({len(budgeted)} artifact(s) carry one): "
                          "pass --data DATASET_DIR to rank the test users through them", highlight=False)
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
                console.print(f"[red]accuracy FAIL[/] {v['line']}", highlight=False, soft_wrap=True)
            elif v["status"] == "passed":
                console.print(f"[green]accuracy ok[/] {v['line']}", highlight=False, soft_wrap=True)
            elif v["status"] == "skipped":
                console.print(f"[yellow]accuracy skipped[/] {v['file']}: {v['reason']} (not passed)",
                              highlight=False, soft_wrap=True)
    return {"checked": True, "split": "test", "evaluations": evaluations, "verdicts": verdicts, "failed": failed}
