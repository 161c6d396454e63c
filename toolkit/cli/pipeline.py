"""`toolkit pipeline`: the main job. prepare -> train -> gate -> export -> verify -> bench.

The bench stage times the artifact dirs the verify stages proved (out/artifacts/*), as shipped: no second export,
and every row of out/bench/bench.json names the sha256 listed in out/artifacts/*/manifest.json.

Each stage is the real `toolkit` command run as its own process, chained only through the files the stage before it
wrote (ARCHITECTURE.md: data flows one way through files on disk). So every stage can be re-run alone, and the
pipeline proves the commands compose exactly as a user would chain them. Independent stages run side by side
(`--jobs`, default 2: see toolkit/pipeline/stages.py); the bench runs alone at the end. The plan and the sizes are
in toolkit/pipeline/plan.py; this file parses the flags, runs the job and shows its progress.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from toolkit.cli.common import console


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def pipeline(
    out: Path = typer.Option(Path("out"), "--out", help="folder for everything the job writes"),
    data: Optional[Path] = typer.Option(None, "--data", help="a prepared dataset dir (default: synthetic data)"),
    full: bool = typer.Option(False, "--full", help="the heavier job: 2,000 synthetic users, 5 epochs, 50 timed "
                              "runs, all three baselines (about 3.6 min on an idle 2-core machine; the default "
                              "about 2.1)"),
    epochs: Optional[int] = typer.Option(None, help="training epochs per model and gate stage [default: 4; --full 5]"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="window length the models train on and the "
                                          "artifacts are exported and benched at [default: 25 on synthetic data; "
                                          "with --data, the dataset's window, and never longer]"),
    targets: str = typer.Option("executorch,onnx,coreml", "--format", "--target",
                                help="export formats (--target: older spelling)"),
    runs: Optional[int] = typer.Option(None, help="timed runs per bench cell [default: 30; --full 50]"),
    users: Optional[int] = typer.Option(None, help="synthetic users when no --data is given "
                                        "[default: 1000; --full 2000]"),
    baselines: Optional[str] = typer.Option(None, help="baselines trained and benched beside CoCorrRec, comma list "
                                            "of gru4rec,sasrec,din ('' for none) [default: sasrec; --full all three]"),
    budget: Optional[Path] = typer.Option(None, help="budget file for the bench (default: benches/budgets.toml)"),
    jobs: int = typer.Option(2, "--jobs", help="stages run side by side, one torch thread each (the bench always "
                             "runs alone); 1 runs them one after another"),
    force: bool = typer.Option(False, "--force", help="replace an existing synthetic dataset in OUT"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the stage commands and stop"),
) -> None:
    """Each stage's output goes to OUT/logs/STAGE.log; the bench prints its verdict here. Exit codes: 0 every stage
    passed; 1 a check failed (parity, budget: the stage's own exit code 1); 2 bad input or a stage that could not
    run; 130 Ctrl-C."""
    from toolkit.pipeline.plan import PipelineRequest, prepare
    from toolkit.pipeline.run import run_job

    job = prepare(PipelineRequest(out=out, data=data, full=full, epochs=epochs, seq_len=seq_len, targets=targets,
                                  runs=runs, users=users, baselines=baselines, budget=budget, jobs=jobs, force=force))
    if dry_run:
        for s in job.stages:
            after = f" [dim](after {', '.join(s.after)})[/]" if s.after else ""
            console.print(f"[bold]{s.name}[/]: toolkit {shlex.join(s.argv)}{after}")
        return
    progress = _Progress()
    try:
        finished = run_job(job, progress)
    finally:
        progress.stop()
    _print_summary(finished)
    finished.raise_if_failed()


class _Progress:
    """The terminal while stages run: a line per start and finish, a spinner naming the running stages, the tail
    of a failed stage's log; an `alone` stage (the bench) streams to the terminal under its own rule."""

    def __init__(self) -> None:
        self.status = console.status("", spinner="dots")
        self.live = False
        self.t_all = time.perf_counter()
        self.width = 0

    def begin(self, job) -> None:
        size, custom = job.size, job.custom
        console.print(f"[bold]toolkit pipeline[/] ({size}{', custom settings' if custom else ''}): "
                      f"{len(job.stages)} stages, {job.jobs} at a time; expected about "
                      f"{_minutes(job.expected_seconds)} on an idle 2-core machine"
                      f"{' with the default settings' if custom else ''} (longer when the cores are busy). "
                      f"Stage logs: {job.logs}/")
        self.t_all = time.perf_counter()
        self.width = max(len(s.name) for s in job.stages)

    def clock(self) -> str:
        return f"[dim]{time.perf_counter() - self.t_all:6.0f}s[/]"

    def on_event(self, kind, stage, res, running) -> None:
        from toolkit.pipeline.stages import log_tail

        if kind == "start":
            if stage.alone:
                self.stop()
                console.rule(f"[bold cyan]{stage.name}")
                console.print(f"[dim]$ toolkit {shlex.join(stage.argv)}[/]")
            else:
                console.print(f"{self.clock()} start  {stage.name}")
            return
        ok = res.rc == 0
        mark = "[green]done[/] " if ok else "[red]FAIL[/] "
        console.print(f"{self.clock()} {mark} {stage.name:<{self.width}}  {res.seconds:6.1f} s wall, "
                      f"{res.cpu_seconds:6.1f} s CPU" + ("" if ok else f"  (exit {res.rc}; log: {res.log})"))
        if not ok:
            for line in log_tail(res.log):
                console.out(f"    {line}", highlight=False)

    def on_tick(self, running) -> None:
        text = ", ".join(f"{n} {t:.0f}s" for n, t in running)
        self.status.update(f"{time.perf_counter() - self.t_all:.0f}s  running: {text}")
        if not self.live:
            self.status.start()
            self.live = True

    def stop(self) -> None:
        self.status.stop()
        self.live = False


def _print_summary(finished) -> None:
    """The stage table in plan order, and where pipeline.json is."""
    stages, out = finished.job.stages, finished.job.out
    table = Table(title=f"toolkit pipeline -> {out}")
    for col in ("stage", "exit", "wall s", "CPU s"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    for r in sorted(finished.results, key=lambda r: stages.index(r.stage)):
        style = "green" if r.rc == 0 else "red"
        table.add_row(r.stage.name, f"[{style}]{r.rc}[/]", f"{r.seconds:.1f}", f"{r.cpu_seconds:.1f}")
    console.print(table)
    console.print(f"{'done' if finished.failed is None else 'stopped'} in {_minutes(finished.seconds)} "
                  f"({finished.summary['cpu_seconds']:.0f} s of CPU); summary: {out / 'pipeline.json'}")
