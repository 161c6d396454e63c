"""`toolkit bench`: flags in, one `toolkit.bench.api.run_bench_command` call (handed toolkit.device's measurers),
the result drawn as it comes (toolkit/cli/bench_report.py); the exit code is the library's."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from toolkit.cli.common import AccuracyUsers, MaxNdcgDrop
from toolkit.models.registry import DEFAULT_N_ITEMS

HELP = "\n".join((  # rich help keeps line breaks: one paragraph per line, one exit code per line
    "FLOPs, memory, latency and cold start vs sequence length, checked against budgets.",
    "",
    "The default table fits 100 columns (model, entry, runtime, L, p50, p90, limit, headroom, verdict, load) and "
    "ends with one sentence: all rows within budget or not, the tightest, the rows over. --wide prints every column. "
    "The JSON (--json) holds every number: per row its limits and headroom (budget.*) and cold start (cold_start_ms).",
    "",
    "Noise: rows are timed in interleaved rounds (every row gets --runs / --rounds calls per round, rows shuffled "
    "each round, every artifact kept loaded); rounds continue until each row's p50 has a 95% interval within "
    "± the --target-ci share of it (default 3%; an explicit --runs alone: exactly that many calls) or --max-seconds of rounds. "
    "±95% in the table is that interval. A p50 budget inside it is 'inconclusive'. Load average, steal time and other "
    "processes' CPU are recorded; a busy machine is warned about.",
    "",
    "Exit codes:",
    "  0    every row measured and within its budget (rows without a budget do not fail the run); inconclusive rows "
    "only warn (--inconclusive fail: exit 1)",
    "  1    a row broke a budget or a cell failed to export or run (JSON, JUnit and plot are still written), "
    "or an artifact dir did not verify, or (--compare) a row is slower than the baseline",
    "  2    bad input: an option, a budget / suite / target file, an unwritable output path, a --compare baseline "
    "that is missing, corrupt or from another machine or lacks rows of this run",
    "  130  interrupted (Ctrl-C); 143 terminated (SIGTERM)",
))

_Paths = Annotated[Optional[List[str]], typer.Argument(
    metavar="[ARTIFACT_DIR|RUN]...",
    help="Artifact dirs from `toolkit export` (benched as shipped, after their hashes check out) or trained run "
         "dirs (exported first, then benched); default: fresh models.")]
_Models = Annotated[Optional[str], typer.Option("--models", help="Comma list: scn,gate,gru4rec,sasrec,din.")]
_SeqLen = Annotated[Optional[str], typer.Option("--seq-len", help="One length (25) or a sweep (10,15,20,25).")]
_Runtimes = Annotated[Optional[str], typer.Option(
    "--runtimes", help="Comma list: executorch,onnxruntime,torch; onnxruntime-ort (the .ort of an ONNX export) and "
                       "executorch-cpp (the .pte through the ExecuTorch C++ runner, no Python) on request.")]
_Target = Annotated[Optional[str], typer.Option("--target", help="Target profile (benches/targets), default host-1t.")]
_Budget = Annotated[Optional[str], typer.Option(
    "--budget", help="Budget TOML (default benches/budgets.toml; 'none').")]
_BudgetMs = Annotated[Optional[str], typer.Option(
    "--budget-ms", help="One latency limit (ms, p50) for every row.")]
_BudgetMb = Annotated[Optional[str], typer.Option("--budget-mb", help="One peak-RSS-delta limit (MB = 1e6 B).")]
_Runs = Annotated[Optional[str], typer.Option("--runs", help="Timed runs per cell (after warm-up).")]
_Warmup = Annotated[Optional[str], typer.Option("--warmup", help="Warm-up runs per cell.")]
_Entries = Annotated[Optional[str], typer.Option("--entries", help="Comma list: window,step,mrs (default: all).")]
_History = Annotated[Optional[str], typer.Option("--history", help="Extra step histories in clicks (e.g. 200).")]
_Candidates = Annotated[Optional[str], typer.Option(
    "--candidates", help="Candidates scored per call (default 100).")]
_NItems = Annotated[Optional[str], typer.Option(
    "--n-items", help=f"Item vocabulary of fresh models (default {DEFAULT_N_ITEMS}).")]
_Json = Annotated[Path, typer.Option("--json", help="Write the JSON results here.")]
_Junit = Annotated[Optional[Path], typer.Option("--junit", help="Write a JUnit XML (one testcase per row).")]
_Plot = Annotated[Optional[Path], typer.Option(
    "--plot", help="Write a PNG: one L: a bar per row (p50 to p90, limit), memory, cold start; several L: latency "
                   "and memory vs L per runtime, with the budget.")]
_Suite = Annotated[Optional[str], typer.Option("--suite", help="Suite name (benches/suites) or TOML path.")]
_Cache = Annotated[Optional[Path], typer.Option("--cache", help="Export cache dir (default ~/.cache/toolkit/bench).")]
_Profile = Annotated[bool, typer.Option(
    "--profile", help="Per-op profile of every cell after its timing: ONNX Runtime's profiler, the torch profiler, "
                      "ExecuTorch partitions + non-delegated nodes.")]
_Wide = Annotated[bool, typer.Option(
    "--wide", help="Print every column (FLOPs, params, memory split, p99, cold start, floor, budget details) instead "
                   "of the 100-column verdict table.")]
_Data = Annotated[Optional[Path], typer.Option(
    "--data", help="Dataset dir: also rank its test users through every benched artifact dir and check the accuracy "
                   "budget (recipe [accuracy] or --max-ndcg-drop); exit 1 naming the artifact and its drop when "
                   "broken.")]
_Rounds = Annotated[Optional[str], typer.Option(
    "--rounds", help="Interleaved rounds the --runs are split over (default 10).")]
_TargetCi = Annotated[Optional[str], typer.Option(
    "--target-ci", help="Add rounds until every p50's 95% interval is within ± this share of it (default 0.03; 0 = "
                        "no extra rounds).")]
_MaxSeconds = Annotated[Optional[str], typer.Option(
    "--max-seconds", help="Stop adding rounds after this many seconds of timing (default 30; the --runs minimum is "
                          "always taken).")]
_Compare = Annotated[Optional[Path], typer.Option(
    "--compare", help="A bench JSON to compare with: each row faster / slower / no change, with the p50 ratio and "
                      "its 95% interval.")]
_MinChange = Annotated[Optional[str], typer.Option(
    "--min-change", help="--compare: smallest change reported (share of the p50, default 0.2).")]
_Inconclusive = Annotated[str, typer.Option(
    "--inconclusive", help="A budget inside a p50's interval: warn (exit 0) or fail (exit 1).")]


def bench(
    run_dirs: _Paths = None,
    models: _Models = None,
    seq_len: _SeqLen = None,
    runtimes: _Runtimes = None,
    target: _Target = None,
    budget: _Budget = None,
    budget_ms: _BudgetMs = None,
    budget_mb: _BudgetMb = None,
    runs: _Runs = None,
    warmup: _Warmup = None,
    entries: _Entries = None,
    history: _History = None,
    candidates: _Candidates = None,
    n_items: _NItems = None,
    json_out: _Json = Path("bench.json"),
    junit: _Junit = None,
    plot: _Plot = None,
    suite: _Suite = None,
    cache: _Cache = None,
    profile: _Profile = False,
    wide: _Wide = False,
    data: _Data = None,
    users: AccuracyUsers = None,
    max_ndcg_drop: MaxNdcgDrop = None,
    rounds: _Rounds = None,
    target_ci: _TargetCi = None,
    max_seconds: _MaxSeconds = None,
    compare: _Compare = None,
    min_change: _MinChange = None,
    inconclusive: _Inconclusive = "warn",
) -> None:
    from rich.console import Console

    from toolkit.bench.api import BenchFlags, run_bench_command
    from toolkit.cli.bench_report import BenchConsole
    from toolkit.device.for_bench import measurers

    command = "toolkit bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 else None
    run_bench_command(BenchFlags(
        paths=run_dirs, models=models, seq_len=seq_len, runtimes=runtimes, target=target, budget=budget,
        budget_ms=budget_ms, budget_mb=budget_mb, runs=runs, warmup=warmup, entries=entries, history=history,
        candidates=candidates, n_items=n_items, json_out=json_out, junit=junit, plot=plot, suite=suite, cache=cache,
        profile=profile, data=data, users=users, max_ndcg_drop=max_ndcg_drop, rounds=rounds, target_ci=target_ci,
        max_seconds=max_seconds, compare=compare, min_change=min_change, inconclusive=inconclusive,
        command=command), measurers(), BenchConsole(Console(), wide))

