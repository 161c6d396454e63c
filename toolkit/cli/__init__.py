"""The `toolkit` command: one Typer sub-app or command per file, registered here."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from toolkit.errors import ToolkitError

app = typer.Typer(
    name="toolkit",
    help="Train, export, verify and benchmark on-device sequential recommenders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from toolkit.cli import bench, data, device, evaluate, export, gate, pipeline, train, verify

    app.add_typer(data.app, name="data", help="Prepare real datasets or generate the synthetic default.")
    app.command("train", help="Train a model (scn, cocorrrec, gru4rec, sasrec, din) or the request gate.")(train.train)
    app.command("eval", help="Re-score a saved run on a dataset split.")(evaluate.evaluate)
    app.add_typer(gate.app, name="gate", help="Calibrate the request gate and draw its request-frequency curve.")
    app.command("export", help="Export SCN / the gate / baselines to ExecuTorch, ONNX and Core ML.")(export.export)
    app.command("verify", help="Re-hash an artifact dir and re-run trajectory parity.")(verify.verify)
    app.command("bench", help="FLOPs, memory and latency vs sequence length, checked against budgets.")(bench.bench)
    app.command("pipeline", help="The main job: prepare -> train -> gate -> export -> verify -> bench.")(pipeline.pipeline)
    app.add_typer(device.app, name="device", help="Emulated ARM64 target and Android devices over adb.")


_register()


def main() -> None:
    """Entry point: user errors print one line and exit non-zero; `--debug` shows tracebacks."""
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    try:
        app()
    except ToolkitError as e:
        if debug:
            raise
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/]")
        sys.exit(130)
