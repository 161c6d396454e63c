"""`toolkit bench`: parse flags into a BenchRequest, run the matrix, print/write the results, gate on budgets."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from toolkit.errors import CheckFailed
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


def bench(
    run_dirs: Optional[List[str]] = typer.Argument(
        None, metavar="[ARTIFACT_DIR|RUN]...",
        help="Artifact dirs from `toolkit export` (benched as shipped, after their hashes check out) or trained run "
             "dirs (exported first, then benched); default: fresh models."),
    models: Optional[str] = typer.Option(None, "--models", help="Comma list: scn,gate,gru4rec,sasrec,din."),
    seq_len: Optional[str] = typer.Option(None, "--seq-len", help="One length (25) or a sweep (10,15,20,25)."),
    runtimes: Optional[str] = typer.Option(None, "--runtimes",
                                           help="Comma list: executorch,onnxruntime,torch; onnxruntime-ort (the "
                                                ".ort of an ONNX export) and executorch-cpp (the .pte through "
                                                "the ExecuTorch C++ runner, no Python) on request."),
    target: Optional[str] = typer.Option(None, "--target", help="Target profile (benches/targets), default host-1t."),
    budget: Optional[str] = typer.Option(None, "--budget", help="Budget TOML (default benches/budgets.toml; 'none')."),
    budget_ms: Optional[str] = typer.Option(None, "--budget-ms", help="One latency limit (ms, p50) for every row."),
    budget_mb: Optional[str] = typer.Option(None, "--budget-mb", help="One peak-RSS-delta limit (MB = 1e6 B)."),
    runs: Optional[str] = typer.Option(None, "--runs", help="Timed runs per cell (after warm-up)."),
    warmup: Optional[str] = typer.Option(None, "--warmup", help="Warm-up runs per cell."),
    entries: Optional[str] = typer.Option(None, "--entries", help="Comma list: window,step,mrs (default: all)."),
    history: Optional[str] = typer.Option(None, "--history", help="Extra step histories in clicks (e.g. 200)."),
    candidates: Optional[str] = typer.Option(None, "--candidates", help="Candidates scored per call (default 100)."),
    n_items: Optional[str] = typer.Option(None, "--n-items", help=f"Item vocabulary of fresh models (default {DEFAULT_N_ITEMS})."),
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
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset dir: also rank its test users through every "
                                        "benched artifact dir and check the accuracy budget (recipe [accuracy] or "
                                        "--max-ndcg-drop); exit 1 naming the artifact and its drop when broken."),
    users: Optional[int] = typer.Option(None, "--users", help="With --data: a seeded sample of N test users."),
    max_ndcg_drop: Optional[float] = typer.Option(None, "--max-ndcg-drop", help="With --data: largest allowed "
                                                  "NDCG@10 drop from eager (absolute), for every artifact."),
    rounds: Optional[str] = typer.Option(None, "--rounds", help="Interleaved rounds the --runs are split over "
                                         "(default 10)."),
    target_ci: Optional[str] = typer.Option(None, "--target-ci", help="Add rounds until every p50's 95% interval is "
                                            "within ± this share of it (default 0.03; 0 = no extra rounds)."),
    max_seconds: Optional[str] = typer.Option(None, "--max-seconds", help="Stop adding rounds after this many seconds "
                                              "of timing (default 30; the --runs minimum is always taken)."),
    compare: Optional[Path] = typer.Option(None, "--compare", help="A bench JSON to compare with: each row faster / "
                                           "slower / no change, with the p50 ratio and its 95% interval."),
    min_change: Optional[str] = typer.Option(None, "--min-change", help="--compare: smallest change reported "
                                             "(share of the p50, default 0.05)."),
    inconclusive: str = typer.Option("warn", "--inconclusive", help="A budget inside a p50's interval: warn (exit 0) "
                                     "or fail (exit 1)."),
) -> None:
    from toolkit.cli.artifact_eval import budget_override, check_flags
    from toolkit.cli.common import check_out
    from toolkit.errors import ToolkitError

    if inconclusive not in ("warn", "fail"):
        raise ToolkitError(f"--inconclusive: '{inconclusive}' is not one of warn, fail")
    change = None
    if min_change is not None:
        from toolkit.bench.request import parse_positive

        change = parse_positive(min_change, "--min-change", float, minimum=0)
        if not change < 1:
            raise ToolkitError(f"--min-change is a share of the p50 (0.05 = 5%), got {min_change}")
    baseline = None
    if compare is not None:  # missing / corrupt: one line before anything heavy
        from toolkit.bench import compare as compare_mod

        baseline = compare_mod.load_baseline(compare)

    override = budget_override(max_ndcg_drop, None)
    check_flags(users, 0, 1)

    for path, flag in ((json_out, "--json"), (junit, "--junit"), (plot, "--plot")):
        if path is not None:
            check_out(path, flag, folder=False)
            from toolkit.io import check_apart

            check_apart(path, {f"input {d}": d for d in run_dirs or []}, flag)  # never over what it benches
    from toolkit.bench.request import request_from_flags
    from toolkit.device.for_bench import measurers

    req = request_from_flags(
        run_dirs, models=models, seq_len=seq_len, runtimes=runtimes, target=target, budget=budget,
        budget_ms=budget_ms, budget_mb=budget_mb, runs=runs, warmup=warmup, entries=entries, history=history,
        candidates=candidates, n_items=n_items, suite=suite, cache=cache, profile=profile,
        rounds=rounds, target_ci=target_ci, max_seconds=max_seconds, devices=measurers(),
        command="toolkit bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 else None)
    if baseline is not None:
        import os

        from toolkit.bench import environment

        if req.target.emulated:
            raise ToolkitError(f"--compare: target {req.target.name} counts instructions (identical run to run); "
                               "compare latency on a host target")
        compare_mod.check_machine(baseline, {"cpu_model": environment.cpu_model(), "cores": os.cpu_count(),
                                             "target": req.target.name, "threads": req.target.threads})
        req.on_planned = lambda rows: compare_mod.check_rows(baseline, rows)  # before any export or timing
    from toolkit.bench import junit as junit_mod
    from toolkit.bench import plots, report
    from toolkit.bench.sweep import run_bench
    from toolkit.cli.bench_report import print_closing, print_result

    console = Console()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]bench[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console, transient=True) as bar:
        task = bar.add_task("planning", total=None)

        def on_progress(desc: str, done: int, total: int) -> None:
            bar.update(task, description=desc, completed=done, total=total)

        result = run_bench(req, on_progress)

    if baseline is not None:
        compare_mod.compare(result, baseline, compare_mod.MIN_CHANGE if change is None else change)
    print_result(result, console, wide=wide, closing=False)
    report.write_json(result, json_out)
    written = [str(json_out)]
    if junit is not None:
        junit_mod.write_junit(result, junit)
        written.append(str(junit))
    if plot is not None:
        plots.write_plot(result, plot)
        written.append(str(plot))
    print_closing(result, console, wrote=written)  # the last lines: the counts and the verdict
    summ = result["summary"]
    if data is not None or override:  # ranking accuracy of the files just timed, against their budgets
        from toolkit.cli.artifact_eval import check_accuracy

        dirs = [Path(d["dir"]) for d in result["environment"].get("artifact_dirs", [])]
        result["accuracy"] = check_accuracy(dirs, data, users, 0, override, console)
        if result["accuracy"].get("evaluations"):  # the same files' size, speed and ranking, side by side
            from toolkit.cli.artifact_eval import precision_rich
            from toolkit.exporters.evaluate import precision_table

            result["accuracy"]["precision_table"] = precision_table(result["accuracy"]["evaluations"])
            console.print(precision_rich(result["accuracy"]["precision_table"]))
        report.write_json(result, json_out)
        if result["accuracy"]["failed"]:
            bad = result["accuracy"]["failed"]
            more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
            raise CheckFailed(f"bench: accuracy budget broken: {bad[0]}{more}")
    if not summ["pass"]:
        raise CheckFailed(f"bench: {summ['over_budget']} of {summ['rows']} row(s) broke a budget, "
                          f"{summ['failed']} cell(s) failed")
    if inconclusive == "fail" and summ.get("inconclusive"):
        raise CheckFailed(f"bench: {summ['inconclusive']} of {summ['rows']} row(s) inconclusive against their budget "
                          "(--inconclusive fail)")
    slower = (result.get("compare") or {}).get("slower")
    if slower:
        raise CheckFailed(f"bench: {slower} of {summ['rows']} row(s) slower than {compare}")
