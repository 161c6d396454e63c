"""`toolkit pipeline`: the main job. prepare -> train -> gate -> export -> verify -> bench.

The bench stage times the artifact dirs the verify stages proved (out/artifacts/*), as shipped: no second export,
and every row of out/bench/bench.json names the sha256 listed in out/artifacts/*/manifest.json.

Each stage is the real `toolkit` command run as its own process, chained only through the files the stage before it
wrote (architecture.md: data flows one way through files on disk). So every stage can be re-run alone, and the
pipeline proves the commands compose exactly as a user would chain them.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from toolkit.cli.common import console, parse_csv
from toolkit.errors import CheckFailed, Interrupted, ToolkitError
from toolkit.io import atomic_write_json, versions

BASELINES = ("gru4rec", "sasrec", "din")


@dataclass
class Stage:
    name: str
    argv: list[str]
    allowed_rc: tuple[int, ...] = (0,)


def _run_stage(argv: list[str], s: Stage) -> int:
    """Run one stage; on Ctrl-C (which reaches the stage too) or SIGTERM (forwarded), let it clean up first."""
    proc = subprocess.Popen(argv)
    try:
        return proc.wait()
    except BaseException as e:  # KeyboardInterrupt, Terminated
        if not isinstance(e, KeyboardInterrupt):
            proc.terminate()
        try:
            proc.wait(timeout=60)
        except BaseException:
            proc.kill()
        if isinstance(e, KeyboardInterrupt):
            raise Interrupted(f"pipeline stopped during stage '{s.name}'; re-run it alone with "
                              f"`toolkit {shlex.join(s.argv)}`") from None
        raise


def plan(out: Path, data: Optional[Path], epochs: int, seq_len: int, targets: str, runs: int, users: int,
         baselines: list[str], budget: Optional[Path], force: bool) -> list[Stage]:
    """The stage list, as argv of real `toolkit` commands."""
    data_dir = data if data is not None else out / "data"
    runs_dir, art, bench = out / "runs", out / "artifacts", out / "bench"
    f = ["--force"] if force else []
    stages: list[Stage] = []
    if data is None:
        stages.append(Stage("data: synthetic default", ["data", "synth", "--out", str(data_dir), "--users", str(users),
                                                        *f]))
    for model in ["cocorrrec", *baselines]:
        stages.append(Stage(f"train {model}", ["train", model, "--data", str(data_dir), "--out", str(runs_dir / model),
                                                "--epochs", str(epochs), "--force"]))
    gate = runs_dir / "gate"
    stages += [
        Stage("train gate", ["train", "gate", "--data", str(data_dir), "--model", str(runs_dir / "cocorrrec"),
                             "--out", str(gate), "--epochs", str(epochs), "--force"]),
        Stage("gate calibrate (10% budget)", ["gate", "calibrate", str(gate), "--data", str(data_dir),
                                              "--budget", "0.1"]),
        Stage("gate curve", ["gate", "curve", str(gate), "--data", str(data_dir), "--out", str(out / "gate_curve"),
                             "--force"]),
        Stage("export SCN (cocorrrec device part)", ["export", str(runs_dir / "cocorrrec"), "--format", targets,
                                                     "--seq-len", str(seq_len), "--out", str(art / "scn"), "--force"]),
        Stage("export gate", ["export", str(gate), "--format", targets, "--out", str(art / "gate"), "--force"]),
    ]
    stages += [Stage(f"export {b}", ["export", str(runs_dir / b), "--format", targets, "--seq-len", str(seq_len),
                                     "--out", str(art / b), "--force"]) for b in baselines]
    shipped = ["scn", "gate", *baselines]
    stages += [Stage(f"verify {a}", ["verify", str(art / a)]) for a in shipped]
    bench_cmd = ["bench", *(str(art / a) for a in shipped),
                 "--seq-len", str(seq_len), "--runs", str(runs), "--json", str(bench / "bench.json"),
                 "--junit", str(bench / "junit.xml"), "--plot", str(bench / "bench.png")]
    if budget is not None:
        bench_cmd += ["--budget", str(budget)]
    stages.append(Stage(f"bench at L={seq_len}", bench_cmd))
    return stages


def pipeline(
    out: Path = typer.Option(Path("out"), "--out", help="folder for everything the job writes"),
    data: Optional[Path] = typer.Option(None, "--data", help="a prepared dataset dir (default: synthetic data)"),
    epochs: int = typer.Option(3, help="training epochs per model (and per gate stage)"),
    seq_len: int = typer.Option(25, "--seq-len", help="static window length of the exported artifacts and bench"),
    targets: str = typer.Option("executorch,onnx,coreml", "--format", "--target",
                                help="export formats (--target: older spelling)"),
    runs: int = typer.Option(50, help="timed runs per bench cell"),
    users: int = typer.Option(2000, help="synthetic users when no --data is given"),
    baselines: str = typer.Option(",".join(BASELINES), help="baselines trained and benched beside CoCorrRec"),
    budget: Optional[Path] = typer.Option(None, help="budget file for the bench (default: benches/budgets.toml)"),
    force: bool = typer.Option(False, "--force", help="replace an existing synthetic dataset in OUT"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the stage commands and stop"),
) -> None:
    from toolkit.cli.common import check_number, check_out

    check_number(epochs, "--epochs", lo=1, hi=1_000_000)
    check_number(seq_len, "--seq-len", lo=1, hi=4096)
    check_number(runs, "--runs", lo=1, hi=1_000_000)
    check_number(users, "--users", lo=10, hi=10_000_000)
    check_out(out)
    if data is not None and not (data / "dataset.json").is_file():
        raise ToolkitError(f"--data {data} is not a prepared dataset dir (no dataset.json); "
                           "run `toolkit data prepare` first")
    base = parse_csv(baselines, "baseline", BASELINES) if baselines.strip() else []
    stages = plan(out, data, epochs, seq_len, targets, runs, users, base, budget, force)
    exe = [sys.executable, "-m", "toolkit"]
    if dry_run:
        for s in stages:
            console.print(f"[bold]{s.name}[/]: toolkit {shlex.join(s.argv)}")
        return
    out.mkdir(parents=True, exist_ok=True)
    results, t_all, failed = [], time.perf_counter(), None
    for i, s in enumerate(stages, 1):
        console.rule(f"[bold cyan]{i}/{len(stages)} {s.name}")
        console.print(f"[dim]$ toolkit {shlex.join(s.argv)}[/]")
        t0 = time.perf_counter()
        rc = _run_stage([*exe, *s.argv], s)
        secs = time.perf_counter() - t0
        results.append({"stage": s.name, "command": ["toolkit", *s.argv], "rc": rc, "seconds": round(secs, 2)})
        if rc not in s.allowed_rc:
            failed = s
            break
    summary = {"ok": failed is None, "stages": results, "seconds": round(time.perf_counter() - t_all, 2),
               "out": str(out), "versions": versions()}
    atomic_write_json(out / "pipeline.json", summary)
    table = Table(title=f"toolkit pipeline -> {out}")
    for col in ("stage", "exit", "seconds"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    for r in results:
        style = "green" if r["rc"] == 0 else "red"
        table.add_row(r["stage"], f"[{style}]{r['rc']}[/]", f"{r['seconds']:.1f}")
    console.print(table)
    console.print(f"summary: {out / 'pipeline.json'}")
    if failed is not None:
        rc = results[-1]["rc"]
        raise CheckFailed(f"stage '{failed.name}' failed with exit code {rc}: re-run it alone with "
                          f"`toolkit {shlex.join(failed.argv)}`")
