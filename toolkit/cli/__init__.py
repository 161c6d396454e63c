"""The `toolkit` command: one Typer sub-app or command per file, registered here."""

from __future__ import annotations

import signal
import sys

import typer
from rich.console import Console
from rich.markup import escape

from toolkit.errors import Terminated, ToolkitError

from typer import Abort

try:  # Typer >= 0.25 vendors its own click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older Typer on stock click
    from click.exceptions import ClickException, NoArgsIsHelpError

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
    app.command("bench", help=bench.HELP)(bench.bench)
    app.command("pipeline", help="The main job: prepare -> train -> gate -> export -> verify -> bench.")(pipeline.pipeline)
    app.add_typer(device.app, name="device", help="Emulated ARM64 target and Android devices over adb.")


_register()


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    raise Terminated()


def _say(text: str) -> None:
    Console(stderr=True).print(text, highlight=False, soft_wrap=True)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main() -> None:
    """Entry point: user errors print one line and exit non-zero; `--debug` shows tracebacks.

    Ctrl-C: one line, exit 130. SIGTERM: temp files/dirs of atomic writes are removed (via Terminated), one line,
    exit 143. Usage errors (bad option, wrong type): one line, exit 2. OSError that escaped the readers/writers of
    toolkit.io (e.g. an unwritable --out): one line naming the path, exit 2.
    """
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    previous = None
    try:  # only the main thread may set handlers (an in-process test runner may call main from elsewhere)
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        pass
    try:
        _run(debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(debug: bool) -> None:
    try:
        rv = app(standalone_mode=False)
    except ToolkitError as e:
        if debug:
            raise
        msg = escape(_one_line(e))  # a message may hold '[...]' (paths, gloo errors): not rich markup
        _say(f"[bold red]error:[/] {msg}" if e.exit_code != 130 else f"[yellow]interrupted:[/] {msg}")
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, Abort):
        _say("[yellow]interrupted[/] (Ctrl-C): nothing partial was kept")
        sys.exit(130)
    except Terminated as e:
        _say("[yellow]terminated[/] (SIGTERM): temporary files removed")
        sys.exit(e.exit_code)
    except NoArgsIsHelpError as e:  # `toolkit data`: show the group's help, as Typer does
        from typer import rich_utils

        rich_utils.rich_format_error(e)
        sys.exit(e.exit_code)
    except ClickException as e:
        if debug:
            raise
        where = f" (see `{e.ctx.command_path} --help`)" if getattr(e, "ctx", None) is not None else ""
        _say(f"[bold red]error:[/] {_one_line(e.format_message())}{where}")
        sys.exit(e.exit_code)
    except OSError as e:
        if debug:
            raise
        what = f"{e.filename}: " if e.filename else ""
        _say(f"[bold red]error:[/] {what}{e.strerror or type(e).__name__}")
        sys.exit(2)
    if rv == 130:  # Typer turns KeyboardInterrupt into a silent Exit(130)
        _say("[yellow]interrupted[/] (Ctrl-C): nothing partial was kept")
    sys.exit(rv if isinstance(rv, int) else 0)
