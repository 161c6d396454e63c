"""`toolkit bench`: parse flags into a BenchRequest, run the matrix, print/write the results, gate on budgets."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from toolkit.errors import CheckFailed

HELP = "\n".join((  # rich help keeps line breaks: one paragraph per line, one exit code per line
    "FLOPs, memory, latency and cold start vs sequence length, checked against budgets.",
    "",
    "The default table fits 100 columns (model, entry, runtime, L, p50, p90, limit, headroom, verdict, load) and "
    "ends with one sentence: all rows within budget or not, the tightest, the rows over. --wide prints every column. "
    "The JSON (--json) holds every number: per row its limits and headroom (budget.*) and cold start (cold_start_ms).",
    "",
    "Exit codes:",
    "  0    every row measured and within its budget (rows without a budget do not fail the run)",
    "  1    a row broke a budget or a cell failed to export or run (JSON, JUnit and plot are still written), "
    "or an artifact dir did not verify",
    "  2    bad input: an option, a budget / suite / target file, an unwritable output path",
    "  130  interrupted (Ctrl-C); 143 terminated (SIGTERM)",
))


def bench(
    run_dirs: Optional[List[str]] = typer.Argument(
        None, metavar="[ARTIFACT_DIR|RUN]...",
        help="Artifact dirs from `toolkit export` (benched as shipped, after their hashes check out) or trained run "
             "dirs (exported first, then benched); default: fresh models."),
    models: Optional[str] = typer.Option(None, "--models", help="Comma list: scn,gate,gru4rec,sasrec,din."),
    seq_len: Optional[str] = typer.Option(None, "--seq-len", help="One length (25) or a sweep (10,15,20,25)."),
    runtimes: Optional[str] = typer.Option(None, "--runtimes",
                                           help="Comma list: executorch,onnxruntime,torch; onnxruntime-ort (the "
                                                ".ort of an ONNX export) on request."),
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
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG: one L: a bar per row (p50 to p90, limit), memory, cold "
                                   "start; several L: latency and memory vs L per runtime, with the budget."),
    suite: Optional[str] = typer.Option(None, "--suite", help="Suite name (benches/suites) or TOML path."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Export cache dir (default ~/.cache/toolkit/bench)."),
    profile: bool = typer.Option(False, "--profile", help="Per-op profile of every cell after its timing: ONNX Runtime's "
                                 "profiler, the torch profiler, ExecuTorch partitions + non-delegated nodes."),
    wide: bool = typer.Option(False, "--wide", help="Print every column (FLOPs, params, memory split, p99, cold start, "
                              "floor, budget details) instead of the 100-column verdict table."),
) -> None:
    from toolkit.cli.common import check_out

    for path, flag in ((json_out, "--json"), (junit, "--junit"), (plot, "--plot")):
        if path is not None:
            check_out(path, flag, folder=False)
            from toolkit.io import check_apart

            check_apart(path, {f"input {d}": d for d in run_dirs or []}, flag)  # never over what it benches
    from toolkit.bench.request import request_from_flags

    req = request_from_flags(
        run_dirs, models=models, seq_len=seq_len, runtimes=runtimes, target=target, budget=budget,
        budget_ms=budget_ms, budget_mb=budget_mb, runs=runs, warmup=warmup, entries=entries, history=history,
        candidates=candidates, n_items=n_items, suite=suite, cache=cache, profile=profile,
        command="toolkit bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 else None)
    from toolkit.bench import report
    from toolkit.bench.sweep import run_bench

    console = Console()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]bench[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console, transient=True) as bar:
        task = bar.add_task("planning", total=None)

        def on_progress(desc: str, done: int, total: int) -> None:
            bar.update(task, description=desc, completed=done, total=total)

        result = run_bench(req, on_progress)

    report.print_result(result, console, wide=wide, closing=False)
    report.write_json(result, json_out)
    written = [str(json_out)]
    if junit is not None:
        report.write_junit(result, junit)
        written.append(str(junit))
    if plot is not None:
        report.write_plot(result, plot)
        written.append(str(plot))
    report.print_closing(result, console, wrote=written)  # the last lines: the counts and the verdict
    summ = result["summary"]
    if not summ["pass"]:
        raise CheckFailed(f"bench: {summ['over_budget']} of {summ['rows']} row(s) broke a budget, "
                          f"{summ['failed']} cell(s) failed")
