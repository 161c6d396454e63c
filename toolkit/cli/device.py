"""`toolkit device`: build the emulated ARM64 target, list targets, run an export on a target or a phone."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from toolkit.cli.common import human_bytes
from toolkit.device.arm64.layout import TARGET as EMULATED_TARGET
from toolkit.errors import ToolkitError
from toolkit.io import read_json

app = typer.Typer(no_args_is_help=True)
console = Console()

PIECES = ("host-tools", "sysroot", "cpuinfo", "wheels", "plugin", "smoke", "executorch")


@app.callback()
def _group() -> None:
    """Emulated ARM64 target (qemu-user + instruction counting) and Android devices over adb."""


@app.command("setup")
def setup(
    what: str = typer.Argument("arm64", help="what to set up: arm64 (the emulated ARM64 target)"),
    cache: Optional[Path] = typer.Option(None, "--cache", help="cache folder (default $TOOLKIT_CACHE/arm64 or ~/.cache/toolkit/arm64)"),
    force: bool = typer.Option(False, "--force", help="rebuild every piece even when it checks out"),
    no_apt: bool = typer.Option(False, "--no-apt", help="never call apt-get; fail with the command to run instead"),
    mirror: Optional[str] = typer.Option(None, "--mirror", help="Debian mirror for the arm64 sysroot (default deb.debian.org or $TOOLKIT_DEBIAN_MIRROR)"),
    with_executorch: bool = typer.Option(False, "--with-executorch", help="also build the ExecuTorch C++ runner for aarch64 (~450 MB download from PyPI, needs g++-aarch64-linux-gnu + patchelf)"),
    json_out: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Build the emulated ARM64 target into a cache folder (idempotent: a second run only checks)."""
    from toolkit.device import arm64

    if what != "arm64":
        raise ToolkitError(f"unknown setup target '{what}' (valid: arm64; Android devices need no setup here, see "
                           f"android_harness/README.md)")
    t0 = time.monotonic()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True, disable=json_out) as prog:
        tasks = {p: prog.add_task(f"[dim]{p}: waiting", total=None, start=False)
                 for p in PIECES if p != "executorch" or with_executorch}

        def report(piece: str, msg: str) -> None:
            if piece in tasks:
                prog.start_task(tasks[piece])
                prog.update(tasks[piece], description=f"{piece}: {msg}")
                if msg == "done":
                    prog.stop_task(tasks[piece])

        st, results = arm64.setup(cache, apt=not no_apt, mirror=mirror, force=force, with_executorch=with_executorch,
                                  report=report)
    total = time.monotonic() - t0
    lay = arm64.layout(cache)
    disk = read_json(lay.descriptor, "target descriptor").get("disk_bytes") if lay.descriptor.is_file() else None
    if json_out:
        print(json.dumps({"status": st.to_dict(), "seconds": round(total, 1), "disk_bytes": disk,
                          "pieces": [r.__dict__ for r in results]}, indent=2))
    else:
        table = Table(title=f"emulated ARM64 target in {lay.root}")
        for col in ("piece", "action", "seconds", "detail"):
            table.add_column(col)
        for r in results:
            table.add_row(r.piece, r.action, f"{r.seconds:.1f}", r.detail)
        console.print(table)
        console.print(f"[{'green' if st.ready else 'red'}]{st.reason}[/]  total {total:.1f}s, disk {human_bytes(disk or 0)}",
                      highlight=False)
    if not st.ready:
        raise ToolkitError(f"emulated ARM64 target not ready: {st.reason}")


@app.command("list")
def list_targets(
    cache: Optional[Path] = typer.Option(None, "--cache", help="the emulated target's cache folder"),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    no_adb: bool = typer.Option(False, "--no-adb", help="do not query adb for devices"),
) -> None:
    """Show where models can run: this host, the emulated ARM64 target (ready or why not), adb devices."""
    from toolkit.device.targets import list_targets as _list

    rows = _list(cache, adb=not no_adb)
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="targets")
    for col in ("name", "kind", "status", "detail"):
        table.add_column(col, overflow="fold")
    colours = {"ready": "green", "not ready": "red", "unavailable": "yellow"}
    for r in rows:
        table.add_row(r["name"], r["kind"], f"[{colours.get(r['status'], 'yellow')}]{r['status']}[/]", r["detail"])
    console.print(table)


def _print_rows(rows: list[dict], title: str, caption: str, emulated: bool) -> None:
    table = Table(title=title, caption=caption)
    cols = ["model", "entry", "L", "status"]
    cols += (["instructions / inference", "spread", "parity err"] if emulated
             else ["p50 ms", "p90 ms", "p99 ms", "runs", "bpte check"])
    cols += ["budget"]
    for c in cols:
        table.add_column(c, overflow="fold")
    for r in rows:
        b = r.get("budget") or {}
        budget = "-" if b.get("pass") is None else ("[green]pass[/]" if b["pass"] else "[red]FAIL[/]")
        status = "[green]ok[/]" if r["status"] == "ok" else f"[red]failed[/]: {r['error']}"
        cells = [r["model"], r["entry"], "-" if r["seq_len"] is None else str(r["seq_len"]), status]
        if emulated:
            ins = r.get("instructions") or {}
            cells += [f"{r['instructions_per_inference']:,}" if r.get("instructions_per_inference") is not None else "-",
                      f"{ins['min']:,}..{ins['max']:,}" if ins else "-",
                      f"{r['parity_max_abs_err']:.2e}" if r.get("parity_max_abs_err") is not None else "-"]
        else:
            lat = r.get("latency_ms") or {}
            cells += [f"{lat[k]:.3f}" if lat.get(k) is not None else "-" for k in ("p50", "p90", "p99")]
            cells += [str(lat.get("runs") or "-")]
            chk = r.get("bundled_check") or {}
            cells += ["-" if chk.get("pass") is None else ("[green]pass[/]" if chk["pass"] else "[red]FAIL[/]")]
        table.add_row(*cells, budget)
    console.print(table)
    for r in rows if not emulated else []:  # one line per phone row: its state after the timed calls, its ETDump
        et = r.get("etdump") or {}
        dump = f"; ETDump {et['file']} ({human_bytes(et['bytes'])})" if et.get("retrieved") else ""
        console.print(f"{r['model']}/{r['entry']} L{r['seq_len']}: "
                      f"{_state_cell((r.get('device_state') or {}).get('after'))}{dump}", highlight=False, soft_wrap=True)


def _state_cell(st: dict | None) -> str:
    """`thermal none 41.2C, battery 87% usb, schedutil` from a phone_state snapshot ('-' parts it could not read)."""
    if not st:
        return "-"
    th, bat, gov = st.get("thermal") or {}, st.get("battery") or {}, st.get("governor") or {}
    temp = f" {th['hottest_cpu_c']:.0f}C" if th.get("hottest_cpu_c") is not None else ""
    parts = [f"thermal {th.get('status_name') or '?'}{temp}" if th else "thermal -",
             f"battery {bat['level_pct']:.0f}% {bat.get('plugged', '')}".rstrip() if bat.get("level_pct") is not None
             else "battery -",
             gov.get("pinned_cpu_governor") or ",".join(gov.get("distinct", [])) or "governor -"]
    return ", ".join(parts)


_ArtifactDir = Annotated[Path, typer.Argument(help="an export folder with manifest.json (from `toolkit export`)")]
_Target = Annotated[Optional[str], typer.Option(
    "--target", help=f"emulated target profile ({EMULATED_TARGET}); default when no --serial/--runner")]
_Serial = Annotated[Optional[str], typer.Option("--serial", help="Android device serial (adb devices); needs --runner")]
_Runner = Annotated[Optional[Path], typer.Option(
    "--runner", help="runner binary for the phone: onnxruntime_perf_test or executor_runner")]
_RunnerKind = Annotated[Optional[str], typer.Option(
    "--runner-kind", help="onnxruntime_perf_test | executor_runner (default: from the file name)")]
_Model = Annotated[Optional[list[str]], typer.Option("--model", help="only this model (repeatable)")]
_Entry = Annotated[Optional[list[str]], typer.Option("--entry", help="only this entry point: window | step | mrs (repeatable)")]
_File = Annotated[Optional[list[str]], typer.Option("--file", help="only this manifest file (repeatable)")]
_Warmup = Annotated[Optional[int], typer.Option(
    "--warmup", help="calls before measuring (default: target profile / 20 on a phone)")]
_Runs = Annotated[Optional[int], typer.Option(
    "--runs", help="measured calls (default: target profile / 100 on a phone)")]
_Repeat = Annotated[int, typer.Option("--repeat", help="emulated: run everything N times and require identical counts")]
_WithExecutorch = Annotated[bool, typer.Option(
    "--with-executorch", help="emulated: also ExecuTorch artifacts (C++ runner; `toolkit device setup arm64 "
                              "--with-executorch`)")]
_Cpu = Annotated[Optional[int], typer.Option(
    "--cpu", help="phone: core to pin to (default: the highest max frequency)")]
_NoPin = Annotated[bool, typer.Option("--no-pin", help="phone: do not pin with taskset")]
_Lib = Annotated[Optional[list[Path]], typer.Option(
    "--lib", help="phone: shared library the runner needs (pushed beside it; repeatable)")]
_RunnerArg = Annotated[Optional[list[str]], typer.Option(
    "--runner-arg", help="phone: extra argument for the runner (repeatable)")]
_Budget = Annotated[Optional[Path], typer.Option(
    "--budget", help="budgets TOML (default benches/budgets.toml when present)")]
_Out = Annotated[Optional[Path], typer.Option(
    "--out", help="bench JSON to write (default ./device-<target>.json); a phone's ETDumps go beside it into "
                  "<out stem>-etdump/")]
_Cache = Annotated[Optional[Path], typer.Option("--cache", help="emulated target's cache folder")]
_Keep = Annotated[Optional[Path], typer.Option(
    "--keep", help="emulated: copy the staged run folder (inputs, outputs) here")]
_Json = Annotated[bool, typer.Option("--json", help="print the rows as JSON instead of a table")]


@app.command("run")
def run(
    artifact_dir: _ArtifactDir,
    target: _Target = None,
    serial: _Serial = None,
    runner: _Runner = None,
    runner_kind: _RunnerKind = None,
    model: _Model = None,
    entry: _Entry = None,
    file: _File = None,
    warmup: _Warmup = None,
    runs: _Runs = None,
    repeat: _Repeat = 1,
    with_executorch: _WithExecutorch = False,
    cpu: _Cpu = None,
    no_pin: _NoPin = False,
    lib: _Lib = None,
    runner_arg: _RunnerArg = None,
    budget: _Budget = None,
    out: _Out = None,
    cache: _Cache = None,
    keep: _Keep = None,
    json_out: _Json = False,
) -> None:
    """Run an export's artifacts on the emulated ARM64 CPU (instructions + parity) or on a phone (latency).

    On a phone, executor_runner also checks each .bpte there and returns its ETDump (built with bundled IO + tracer).

    Every phone row records thermal state, battery level and CPU governor before and after its timed calls.
    """
    from toolkit.cli.reporter import ConsoleReporter
    from toolkit.device.api import DeviceRunRequest, raise_if_failed, run_device
    from toolkit.reporter import Reporter

    done = run_device(DeviceRunRequest(
        artifact_dir=artifact_dir, target=target, serial=serial, runner=runner, runner_kind=runner_kind, model=model,
        entry=entry, file=file, warmup=warmup, runs=runs, repeat=repeat, with_executorch=with_executorch, cpu=cpu,
        no_pin=no_pin, lib=lib, runner_arg=runner_arg, budget=budget, out=out, cache=cache, keep=keep),
        Reporter() if json_out else ConsoleReporter(console))  # --json: nothing but the rows on stdout
    rows, tgt = done.doc["rows"], done.doc["target"]
    if json_out:
        print(json.dumps(rows, indent=2, default=str))
    else:
        measured = rows[0]["measured_on"] if rows else tgt
        _print_rows(rows, f"{tgt}: {done.info.get('artifact_dir')}", measured, emulated=done.emulated)
        console.print(f"wrote {done.out}", highlight=False)
    raise_if_failed(done)
