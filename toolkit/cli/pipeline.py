"""`toolkit pipeline`: the main job. prepare -> train -> gate -> export -> verify -> bench.

The bench stage times the artifact dirs the verify stages proved (out/artifacts/*), as shipped: no second export,
and every row of out/bench/bench.json names the sha256 listed in out/artifacts/*/manifest.json.

Each stage is the real `toolkit` command run as its own process, chained only through the files the stage before it
wrote (ARCHITECTURE.md: data flows one way through files on disk). So every stage can be re-run alone, and the
pipeline proves the commands compose exactly as a user would chain them. Independent stages run side by side
(`--jobs`, default 2: see toolkit/cli/stages.py); the bench runs alone at the end.

Two sizes. The default is a first run in minutes: fewer synthetic users and epochs, fewer timed runs, every stage
real. `--full` is the heavier job (2,000 users, 5 epochs, every baseline, 50 timed runs per bench cell). On the
synthetic default the recommenders train with batch 256 and lr 3e-3, the settings that converged there
(benches/baselines/edge_cloud_synth.json); on --data the training defaults apply.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from toolkit.cli.common import console, parse_csv
from toolkit.cli.stages import Stage, log_tail, run_stages
from toolkit.errors import CheckFailed, Interrupted, ToolkitError
from toolkit.io import atomic_write_json, versions

BASELINES = ("gru4rec", "sasrec", "din")

# (users, epochs, timed runs per bench cell, baselines) of each size. The quick job keeps SASRec, the Transformer the
# SCN paper compares against; GRU4Rec's unrolled recurrence alone costs more export time than the whole SCN.
SIZES = {"quick": (1000, 4, 30, ("sasrec",)), "full": (2000, 5, 50, BASELINES)}
SYNTH_TRAINING = ["--batch-size", "256", "--lr", "3e-3"]  # small synthetic data: smaller batches, faster steps
# Wall seconds each size took with its default settings on an idle 2-core machine (benches/baselines/pipeline.json,
# measured 2026-12-02): printed up front so a user knows what to expect.
MEASURED_SECONDS = {"quick": 127, "full": 213}


def plan(out: Path, data: Optional[Path], epochs: int, seq_len: int, targets: str, runs: int, users: int,
         baselines: list[str], budget: Optional[Path], force: bool) -> list[Stage]:
    """The stage list, as argv of real `toolkit` commands, with the stages each one reads from (plan order is the
    priority when several could start: the critical path cocorrrec -> gate -> curve comes first)."""
    data_dir = data if data is not None else out / "data"
    runs_dir, art, bench = out / "runs", out / "artifacts", out / "bench"
    f = ["--force"] if force else []
    stages: list[Stage] = []
    data_dep: tuple[str, ...] = ()
    if data is None:
        stages.append(Stage("data: synthetic default", ["data", "synth", "--out", str(data_dir), "--users", str(users),
                                                        "--seq-len", str(seq_len), *f]))
        data_dep = ("data: synthetic default",)
    # CoCorrRec with the cloud correction that carries per-user signal (the TTT state correction from the cloud's
    # longer history): the gate then decides about an update worth asking for, and the device artifact is the SCN
    cloud = ["--config", "cloud=history"]
    gate = runs_dir / "gate"

    tuned = SYNTH_TRAINING if data is None else []

    def train(model: str) -> Stage:
        return Stage(f"train {model}", ["train", model, *(cloud if model == "cocorrrec" else []), "--data",
                                        str(data_dir), "--out", str(runs_dir / model), "--epochs", str(epochs),
                                        *tuned, "--force"], after=data_dep)

    def export(name: str, run: Path, after: str, window: bool = True) -> Stage:
        return Stage(f"export {name}", ["export", str(run), "--format", targets,
                                        *(["--seq-len", str(seq_len)] if window else []),
                                        "--out", str(art / name), "--force"], after=(after,))

    stages += [
        train("cocorrrec"),
        Stage("train gate", ["train", "gate", "--data", str(data_dir), "--model", str(runs_dir / "cocorrrec"),
                             "--out", str(gate), "--epochs", str(epochs), "--force"], after=("train cocorrrec",)),
        Stage("gate calibrate (10% budget)", ["gate", "calibrate", str(gate), "--data", str(data_dir),
                                              "--budget", "0.1"], after=("train gate",)),
        export("scn", runs_dir / "cocorrrec", "train cocorrrec"),
        *(train(b) for b in baselines),
        Stage("gate curve", ["gate", "curve", str(gate), "--data", str(data_dir), "--out", str(out / "gate_curve"),
                             "--force"], after=("gate calibrate (10% budget)",)),
        export("gate", gate, "train gate", window=False),
        *(export(b, runs_dir / b, f"train {b}") for b in baselines),
    ]
    shipped = ["scn", "gate", *baselines]
    stages += [Stage(f"verify {a}", ["verify", str(art / a)], after=(f"export {a}",)) for a in shipped]
    bench_cmd = ["bench", *(str(art / a) for a in shipped),
                 "--seq-len", str(seq_len), "--runs", str(runs), "--json", str(bench / "bench.json"),
                 "--junit", str(bench / "junit.xml"), "--plot", str(bench / "bench.png")]
    if budget is not None:
        bench_cmd += ["--budget", str(budget)]
    stages.append(Stage(f"bench at L={seq_len}", bench_cmd, after=tuple(f"verify {a}" for a in shipped),
                        alone=True))
    return stages


def _window(data: Optional[Path], prepared: Optional[int], seq_len: Optional[int]) -> int:
    """The job's window: --seq-len, or the dataset's (`prepared`, from its loaded descriptor); longer than the
    dataset's windows is refused (the models would be exported at positions they never trained on: prepare the
    dataset with that --seq-len instead)."""
    if data is None:
        return 25 if seq_len is None else seq_len
    if seq_len is not None and seq_len > prepared:
        raise ToolkitError(f"--seq-len {seq_len} is longer than the {prepared}-click windows {data} was prepared "
                           f"with: prepare it with `toolkit data prepare ... --seq-len {seq_len}`")
    return prepared if seq_len is None else seq_len


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
    from toolkit.cli.common import check_number, check_out

    size = "full" if full else "quick"
    d_users, d_epochs, d_runs, d_baselines = SIZES[size]
    custom = any(v is not None for v in (epochs, runs, users, baselines)) or data is not None
    baselines = ",".join(d_baselines) if baselines is None else baselines
    epochs = d_epochs if epochs is None else epochs
    runs = d_runs if runs is None else runs
    users = d_users if users is None else users
    check_number(epochs, "--epochs", lo=1, hi=1_000_000)
    check_number(seq_len, "--seq-len", lo=1, hi=4096)
    check_number(runs, "--runs", lo=1, hi=1_000_000)
    check_number(users, "--users", lo=10, hi=10_000_000)
    check_number(jobs, "--jobs", lo=1, hi=64)
    check_out(out)
    if data is not None and not (data / "dataset.json").is_file():
        raise ToolkitError(f"--data {data} is not a prepared dataset dir (no dataset.json); "
                           "run `toolkit data prepare` first")
    if data is not None:  # a dataset inside OUT (OUT/data of an earlier run) is fine; OUT in the dataset is not
        a, o = data.resolve(), out.resolve()
        if o == a or o.is_relative_to(a):
            raise ToolkitError(f"--out {out} {'is' if o == a else 'lies inside'} the dataset {data}: refusing to "
                               "write into an input")
        from toolkit.data import load_dataset

        prepared = load_dataset(data).seq_len  # a corrupt dataset is one line here, before any stage starts
    seq_len = _window(data, prepared if data is not None else None, seq_len)
    base = parse_csv(baselines, "baseline", BASELINES) if baselines.strip() else []
    stages = plan(out, data, epochs, seq_len, targets, runs, users, base, budget, force)
    exe = [sys.executable, "-m", "toolkit"]
    if dry_run:
        for s in stages:
            after = f" [dim](after {', '.join(s.after)})[/]" if s.after else ""
            console.print(f"[bold]{s.name}[/]: toolkit {shlex.join(s.argv)}{after}")
        return
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    expected = MEASURED_SECONDS[size]
    console.print(f"[bold]toolkit pipeline[/] ({size}{', custom settings' if custom else ''}): {len(stages)} stages, "
                  f"{jobs} at a time; expected about {_minutes(expected)} on an idle 2-core machine"
                  f"{' with the default settings' if custom else ''} (longer when the cores are busy). "
                  f"Stage logs: {logs}/")
    t_all = time.perf_counter()
    width = max(len(s.name) for s in stages)

    def clock() -> str:
        return f"[dim]{time.perf_counter() - t_all:6.0f}s[/]"

    status = console.status("", spinner="dots")
    live = {"on": False}

    def on_event(kind, stage, res, running) -> None:
        if kind == "start":
            if stage.alone:
                status.stop()
                live["on"] = False
                console.rule(f"[bold cyan]{stage.name}")
                console.print(f"[dim]$ toolkit {shlex.join(stage.argv)}[/]")
            else:
                console.print(f"{clock()} start  {stage.name}")
            return
        ok = res.rc == 0
        mark = "[green]done[/] " if ok else "[red]FAIL[/] "
        console.print(f"{clock()} {mark} {stage.name:<{width}}  {res.seconds:6.1f} s wall, {res.cpu_seconds:6.1f} s CPU"
                      + ("" if ok else f"  (exit {res.rc}; log: {res.log})"))
        if not ok:
            for line in log_tail(res.log):
                console.out(f"    {line}", highlight=False)

    def on_tick(running) -> None:
        text = ", ".join(f"{n} {t:.0f}s" for n, t in running)
        status.update(f"{time.perf_counter() - t_all:.0f}s  running: {text}")
        if not live["on"]:
            status.start()
            live["on"] = True

    from toolkit.io import dir_lock

    try:
        # a second pipeline into OUT is refused; each stage replaces its own output only once it is complete, so a
        # failed stage leaves the previous run's output of that stage as it was
        with dir_lock(out, "pipeline output"):
            results, failed = run_stages(stages, exe, jobs, logs, on_event, on_tick)
    except KeyboardInterrupt:
        status.stop()
        raise Interrupted("pipeline stopped; every finished stage's files are kept, re-run `toolkit pipeline` or a "
                          "stage alone (see --dry-run)") from None
    finally:
        status.stop()
    seconds = time.perf_counter() - t_all
    not_run = [s.name for s in stages if s.name not in {r.stage.name for r in results}]
    summary = {"ok": failed is None and not not_run, "size": size, "jobs": jobs,
               "settings": {"users": None if data is not None else users, "epochs": epochs, "runs": runs,
                            "seq_len": seq_len, "formats": targets, "baselines": base},
               "stages": [r.to_json() for r in results], "not_run": not_run, "seconds": round(seconds, 2),
               "cpu_seconds": round(sum(r.cpu_seconds for r in results), 2),
               "expected_seconds_idle_2core": expected, "out": str(out), "versions": versions()}
    atomic_write_json(out / "pipeline.json", summary)
    table = Table(title=f"toolkit pipeline -> {out}")
    for col in ("stage", "exit", "wall s", "CPU s"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    for r in sorted(results, key=lambda r: stages.index(r.stage)):
        style = "green" if r.rc == 0 else "red"
        table.add_row(r.stage.name, f"[{style}]{r.rc}[/]", f"{r.seconds:.1f}", f"{r.cpu_seconds:.1f}")
    console.print(table)
    console.print(f"{'done' if failed is None else 'stopped'} in {_minutes(seconds)} "
                  f"({summary['cpu_seconds']:.0f} s of CPU); summary: {out / 'pipeline.json'}")
    if failed is not None:
        rc = next(r.rc for r in results if r.stage is failed)
        err = {1: CheckFailed, 130: Interrupted}.get(rc, ToolkitError)
        raise err(f"stage '{failed.name}' failed with exit code {rc} (log: {logs}/): re-run it alone with "
                  f"`toolkit {shlex.join(failed.argv)}`")
