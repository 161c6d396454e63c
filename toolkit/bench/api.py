"""`toolkit bench` as one library call: `BenchFlags` (the command's flags, unparsed) -> `run_bench_command`.

Here so that the command only parses and prints: the flags become a checked `BenchRequest` (toolkit.bench.request),
the matrix is exported and timed (toolkit.bench.sweep), compared with a baseline, written (JSON, JUnit, PNG), the
ranking accuracy of the very files timed checked against its budget, and the exit code decided. What the user sees
on the way arrives at the `BenchReporter` in the order it is shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from toolkit.errors import CheckFailed, ToolkitError
from toolkit.exporters.evaluate import AccuracyReporter


class BenchReporter(AccuracyReporter):
    """What `toolkit bench` shows besides its progress and accuracy verdicts, in order; silent here."""

    def measured(self, result: dict) -> None:
        """The timed rows (the table and its notes), before any file is written."""

    def wrote(self, result: dict, files: list[str]) -> None:
        """The files written, then the counts and the verdict: the closing lines of the timing."""

    def precision(self, rows: list[dict]) -> None:
        """Size, speed and ranking accuracy of the files just timed, side by side (exporters.evaluate)."""


@dataclass
class BenchFlags:
    """The flags of `toolkit bench`, as given: mostly the strings typed, so each refusal names the flag and its
    value (`BenchRequest` is the checked matrix they become). `command`: the command line, recorded in the JSON."""

    paths: Optional[list[str]] = None
    models: Optional[str] = None
    seq_len: Optional[str] = None
    runtimes: Optional[str] = None
    target: Optional[str] = None
    budget: Optional[str] = None
    budget_ms: Optional[str] = None
    budget_mb: Optional[str] = None
    runs: Optional[str] = None
    warmup: Optional[str] = None
    entries: Optional[str] = None
    history: Optional[str] = None
    candidates: Optional[str] = None
    n_items: Optional[str] = None
    json_out: Path = Path("bench.json")
    junit: Optional[Path] = None
    plot: Optional[Path] = None
    suite: Optional[str] = None
    cache: Optional[Path] = None
    profile: bool = False
    data: Optional[Path] = None
    users: Optional[int] = None
    max_ndcg_drop: Optional[float] = None
    rounds: Optional[str] = None
    target_ci: Optional[str] = None
    max_seconds: Optional[str] = None
    compare: Optional[Path] = None
    min_change: Optional[str] = None
    inconclusive: str = "warn"
    command: Optional[str] = None


def run_bench_command(f: BenchFlags, devices, reporter: BenchReporter) -> dict:
    """Check every flag, bench the matrix, write its files and check the accuracy budget; returns the result, or
    raises CheckFailed (exit 1) for a broken budget, a failed cell, an inconclusive row under --inconclusive fail or
    a row slower than the --compare baseline. `devices`: toolkit.device's measurers (bench does not import device)."""
    change, baseline, override = _check_flags(f)
    from toolkit.bench.request import request_from_flags

    req = request_from_flags(
        f.paths, models=f.models, seq_len=f.seq_len, runtimes=f.runtimes, target=f.target, budget=f.budget,
        budget_ms=f.budget_ms, budget_mb=f.budget_mb, runs=f.runs, warmup=f.warmup, entries=f.entries,
        history=f.history, candidates=f.candidates, n_items=f.n_items, suite=f.suite, cache=f.cache,
        profile=f.profile, rounds=f.rounds, target_ci=f.target_ci, max_seconds=f.max_seconds, devices=devices,
        command=f.command)
    from toolkit.bench import compare as compare_mod

    if baseline is not None:
        _check_comparable(req, baseline)
        req.on_planned = lambda rows: compare_mod.check_rows(baseline, rows)  # before any export or timing
    from toolkit.bench.sweep import run_bench

    with reporter.step("bench", first="planning") as tell:
        result = run_bench(req, tell)
    if baseline is not None:
        compare_mod.compare(result, baseline, compare_mod.MIN_CHANGE if change is None else change)
    reporter.measured(result)
    reporter.wrote(result, _write(result, f))  # the last lines of the timing: the counts and the verdict
    if f.data is not None or override:  # ranking accuracy of the files just timed, against their budgets
        _check_accuracy(result, f, override, reporter)
    _raise_if_failed(result, f)
    return result


def _check_flags(f: BenchFlags):
    """The flags `request_from_flags` does not see, before anything heavy: (--min-change, the --compare baseline,
    the accuracy budget override)."""
    from toolkit.checks import check_out
    from toolkit.exporters.evaluate import budget_override, check_sample_flags

    if f.inconclusive not in ("warn", "fail"):
        raise ToolkitError(f"--inconclusive: '{f.inconclusive}' is not one of warn, fail")
    change = None
    if f.min_change is not None:
        from toolkit.bench.request import parse_positive

        change = parse_positive(f.min_change, "--min-change", float, minimum=0)
        if not change < 1:
            raise ToolkitError(f"--min-change is a share of the p50 (0.05 = 5%), got {f.min_change}")
    baseline = None
    if f.compare is not None:  # missing / corrupt: one line before anything heavy
        from toolkit.bench import compare as compare_mod

        baseline = compare_mod.load_baseline(f.compare)
    override = budget_override(f.max_ndcg_drop, None)
    check_sample_flags(f.users, 0, 1)
    for path, flag in ((f.json_out, "--json"), (f.junit, "--junit"), (f.plot, "--plot")):
        if path is not None:
            check_out(path, flag, folder=False)
            from toolkit.io import check_apart

            check_apart(path, {f"input {d}": d for d in f.paths or []}, flag)  # never over what it benches
    return change, baseline, override


def _check_comparable(req, baseline: dict) -> None:
    """--compare: a host target, and the baseline's machine (CPU, cores, target, threads)."""
    import os

    from toolkit.bench import compare as compare_mod
    from toolkit.bench import environment

    if req.target.emulated:
        raise ToolkitError(f"--compare: target {req.target.name} counts instructions (identical run to run); "
                           "compare latency on a host target")
    compare_mod.check_machine(baseline, {"cpu_model": environment.cpu_model(), "cores": os.cpu_count(),
                                         "target": req.target.name, "threads": req.target.threads})


def _write(result: dict, f: BenchFlags) -> list[str]:
    """The JSON, and the JUnit XML and the PNG when asked for; the paths written."""
    from toolkit.bench import junit as junit_mod
    from toolkit.bench import plots, report

    report.write_json(result, f.json_out)
    written = [str(f.json_out)]
    if f.junit is not None:
        junit_mod.write_junit(result, f.junit)
        written.append(str(f.junit))
    if f.plot is not None:
        plots.write_plot(result, f.plot)
        written.append(str(f.plot))
    return written


def _check_accuracy(result: dict, f: BenchFlags, override: dict | None, reporter: BenchReporter) -> None:
    """The timed artifact dirs ranked on --data's test users; result["accuracy"], the JSON written again."""
    from toolkit.bench import report
    from toolkit.exporters.evaluate import check_accuracy, precision_table

    dirs = [Path(d["dir"]) for d in result["environment"].get("artifact_dirs", [])]
    result["accuracy"] = check_accuracy(dirs, f.data, f.users, 0, override, reporter)
    if result["accuracy"].get("evaluations"):  # the same files' size, speed and ranking, side by side
        result["accuracy"]["precision_table"] = precision_table(result["accuracy"]["evaluations"])
        reporter.precision(result["accuracy"]["precision_table"])
    report.write_json(result, f.json_out)


def _raise_if_failed(result: dict, f: BenchFlags) -> None:
    bad = (result.get("accuracy") or {}).get("failed")
    if bad:
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        raise CheckFailed(f"bench: accuracy budget broken: {bad[0]}{more}")
    summ = result["summary"]
    if not summ["pass"]:
        raise CheckFailed(f"bench: {summ['over_budget']} of {summ['rows']} row(s) broke a budget, "
                          f"{summ['failed']} cell(s) failed")
    if f.inconclusive == "fail" and summ.get("inconclusive"):
        raise CheckFailed(f"bench: {summ['inconclusive']} of {summ['rows']} row(s) inconclusive against their budget "
                          "(--inconclusive fail)")
    slower = (result.get("compare") or {}).get("slower")
    if slower:
        raise CheckFailed(f"bench: {slower} of {summ['rows']} row(s) slower than {f.compare}")
