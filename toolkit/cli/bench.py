"""`toolkit bench`: parse flags into a BenchRequest, run the matrix, print/write the results, gate on budgets."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from toolkit.errors import CheckFailed, ToolkitError

RUNTIMES = ("executorch", "onnxruntime", "torch")
ENTRIES = ("window", "step", "mrs")


def parse_int_list(text: str | None, flag: str) -> list[int] | None:
    """'25' or '10,15,20' -> [ints > 0]; anything else is a one-line error naming the flag and the bad part."""
    if text is None:
        return None
    if not text.strip():
        raise ToolkitError(f"{flag}: empty value (give e.g. 25 or 10,15,20,25)")
    out = []
    for part in text.split(","):
        p = part.strip()
        if not p:
            raise ToolkitError(f"{flag}: empty item in '{text}'")
        try:
            v = int(p)
        except ValueError:
            raise ToolkitError(f"{flag}: '{p}' is not an integer") from None
        if v <= 0:
            raise ToolkitError(f"{flag}: {v} must be a positive integer")
        out.append(v)
    return sorted(set(out))


def parse_names(text: str | None, flag: str, valid: tuple[str, ...]) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ToolkitError(f"{flag}: empty value (valid: {', '.join(valid)})")
    for n in names:
        if n not in valid:
            raise ToolkitError(f"{flag}: unknown name '{n}' (valid: {', '.join(valid)})")
    return list(dict.fromkeys(names))


def parse_positive(text: str | None, flag: str, kind=float, minimum=None):
    if text is None:
        return None
    try:
        v = kind(text)
    except ValueError:
        raise ToolkitError(f"{flag}: '{text}' is not a{'n integer' if kind is int else ' number'}") from None
    lo = minimum if minimum is not None else 0
    if (minimum is None and not v > 0) or (minimum is not None and v < minimum) or v != v:
        raise ToolkitError(f"{flag} must be {'>= ' + str(lo) if minimum is not None else 'positive'}, got {text}")
    if v in (float("inf"), float("-inf")) or abs(v) > 2**31 - 1:
        raise ToolkitError(f"{flag} is out of range, got {text}")
    return v


def bench(
    run_dirs: Optional[List[str]] = typer.Argument(None, metavar="RUN",
                                                   help="Trained run dirs to bench (default: fresh models)."),
    models: Optional[str] = typer.Option(None, "--models", help="Comma list: scn,gate,gru4rec,sasrec,din."),
    seq_len: Optional[str] = typer.Option(None, "--seq-len", help="One length (25) or a sweep (10,15,20,25)."),
    runtimes: Optional[str] = typer.Option(None, "--runtimes", help="Comma list: executorch,onnxruntime,torch."),
    target: Optional[str] = typer.Option(None, "--target", help="Target profile (benches/targets), default host-1t."),
    budget: Optional[str] = typer.Option(None, "--budget", help="Budget TOML (default benches/budgets.toml; 'none')."),
    budget_ms: Optional[str] = typer.Option(None, "--budget-ms", help="One latency limit (ms, p50) for every row."),
    budget_mb: Optional[str] = typer.Option(None, "--budget-mb", help="One peak-RSS-delta limit (MB = 1e6 B)."),
    runs: Optional[str] = typer.Option(None, "--runs", help="Timed runs per cell (after warm-up)."),
    warmup: Optional[str] = typer.Option(None, "--warmup", help="Warm-up runs per cell."),
    entries: Optional[str] = typer.Option(None, "--entries", help="Comma list: window,step,mrs (default: all)."),
    history: Optional[str] = typer.Option(None, "--history", help="Extra step histories in clicks (e.g. 200)."),
    candidates: Optional[str] = typer.Option(None, "--candidates", help="Candidates scored per call (default 100)."),
    n_items: Optional[str] = typer.Option(None, "--n-items", help="Item vocabulary of fresh models (default 12101)."),
    json_out: Path = typer.Option(Path("bench.json"), "--json", help="Write the JSON results here."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write a JUnit XML (one testcase per row)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of latency/FLOPs/memory vs seq-len."),
    suite: Optional[str] = typer.Option(None, "--suite", help="Suite name (benches/suites) or TOML path."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Export cache dir (default ~/.cache/toolkit/bench)."),
) -> None:
    """FLOPs, memory and latency per (model, entry, runtime, seq-len, target); exit 1 if a budget breaks."""
    from toolkit.bench import budgets as budgets_mod
    from toolkit.bench.suites import load_suite
    from toolkit.bench.targets import load_target

    # ---- validate everything before any work (flags first: torch is imported only after them) ----
    for text, flag in ((seq_len, "--seq-len"), (history, "--history")):
        parse_int_list(text, flag)
    for text, flag, kind, lo in ((runs, "--runs", int, 1), (warmup, "--warmup", int, 0),
                                 (candidates, "--candidates", int, 1), (n_items, "--n-items", int, 1),
                                 (budget_ms, "--budget-ms", float, None), (budget_mb, "--budget-mb", float, None)):
        parse_positive(text, flag, kind, minimum=lo)
    from toolkit.cli.common import check_out

    for path, flag in ((json_out, "--json"), (junit, "--junit"), (plot, "--plot")):
        if path is not None:
            check_out(path, flag, folder=False)
    s = load_suite(suite or "default")
    from toolkit.bench.sources import bench_model_names, fresh, from_run
    from toolkit.bench import report
    from toolkit.bench.sweep import BenchRequest, run_bench

    model_names = parse_names(models, "--models", bench_model_names())
    seq_lens = parse_int_list(seq_len, "--seq-len") or s.seq_lens
    runtime_names = parse_names(runtimes, "--runtimes", RUNTIMES)
    entry_names = parse_names(entries, "--entries", ENTRIES) or s.entries
    histories = parse_int_list(history, "--history")
    n_runs = parse_positive(runs, "--runs", int, minimum=1) or s.runs
    n_warm = parse_positive(warmup, "--warmup", int, minimum=0)
    n_warm = s.warmup if n_warm is None else n_warm
    n_cand = parse_positive(candidates, "--candidates", int, minimum=1) or s.candidates
    vocab = parse_positive(n_items, "--n-items", int, minimum=1) or s.n_items
    tgt = load_target(target or s.target)
    if runtime_names is None:
        runtime_names = [r for r in s.runtimes if tgt.runtimes is None or r in tgt.runtimes] or list(tgt.runtimes or [])
    elif tgt.runtimes is not None:
        bad = [r for r in runtime_names if r not in tgt.runtimes]
        if bad:
            raise ToolkitError(f"--runtimes: target {tgt.name} cannot measure {', '.join(bad)} "
                               f"(it measures: {', '.join(tgt.runtimes)})")
    tgt.resolve_cpus()  # fail now, not per cell, if the pinning cannot be honoured

    ms = parse_positive(budget_ms, "--budget-ms")
    mb = parse_positive(budget_mb, "--budget-mb")
    if (ms is not None or mb is not None) and budget is not None:
        raise ToolkitError("use either --budget FILE or --budget-ms/--budget-mb, not both")
    if ms is not None or mb is not None:
        budgets = budgets_mod.uniform(ms, mb)
    elif budget is not None and budget.lower() == "none":
        budgets = budgets_mod.no_budgets()
    elif budget is not None:
        budgets = budgets_mod.load(budget)
    else:
        default = budgets_mod.default_budget_file()
        budgets = budgets_mod.load(default) if default.is_file() else budgets_mod.no_budgets()

    sources = [from_run(r) for r in (run_dirs or [])]
    if model_names is not None or not sources:
        sources += [fresh(m, vocab) for m in (model_names if model_names is not None else s.models)]
    for m in s.models if model_names is None and not run_dirs else []:
        if m not in bench_model_names():
            raise ToolkitError(f"suite {s.name}: unknown model '{m}' (valid: {', '.join(bench_model_names())})")

    req = BenchRequest(
        sources=sources, seq_lens=seq_lens, runtimes=runtime_names, target=tgt, budgets=budgets, runs=n_runs,
        warmup=n_warm, entries=entry_names, histories=histories if histories is not None else s.histories,
        candidates=n_cand, cache_dir=cache, suite=s.name,
        command="toolkit bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 else None,
    )

    console = Console()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]bench[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console, transient=True) as bar:
        task = bar.add_task("planning", total=None)

        def on_progress(desc: str, done: int, total: int) -> None:
            bar.update(task, description=desc, completed=done, total=total)

        result = run_bench(req, on_progress)

    report.print_result(result, console)
    report.write_json(result, json_out)
    written = [str(json_out)]
    if junit is not None:
        report.write_junit(result, junit)
        written.append(str(junit))
    if plot is not None:
        report.write_plot(result, plot)
        written.append(str(plot))
    console.print(f"wrote {', '.join(written)}", highlight=False)
    summ = result["summary"]
    if not summ["pass"]:
        raise CheckFailed(f"bench: {summ['budget_broken']} row(s) broke a budget, {summ['failed']} cell(s) failed")
