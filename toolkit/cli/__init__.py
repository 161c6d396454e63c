"""The `toolkit` command: one Typer sub-app or command per file, registered here."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from typer import Abort

from toolkit.errors import Terminated, ToolkitError, clear_termination, note_termination, raise_if_terminated

try:  # Typer >= 0.25 vendors its own click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older Typer on stock click
    from click.exceptions import ClickException, NoArgsIsHelpError

app = typer.Typer(
    name="toolkit",
    help="Train, export, verify and benchmark on-device sequential recommenders.\n\n"
         "Quiet by default: warnings and log lines of the libraries (torch, torchao, ExecuTorch, coremltools, "
         "onnxruntime; Python warnings and native C++ lines alike) go to a log file, not the terminal: "
         "<out>/toolkit.log for `toolkit pipeline --out <out>` (its stages append there too), toolkit.log beside "
         "any other command's --out (in its parent folder), else toolkit.log in the current directory; "
         "--log-file FILE or $TOOLKIT_LOG to choose. Nothing to log, no file. --verbose prints them on the "
         "terminal instead; --debug also shows tracebacks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _global_options(
    verbose: bool = typer.Option(False, "--verbose", help="Show the libraries' warnings and native log lines on the "
                                                          "terminal (default: they go to the log file)."),
    log_file: str = typer.Option("toolkit.log", "--log-file", metavar="FILE",
                                 help="Where library warnings and native log lines go ($TOOLKIT_LOG; default "
                                      "toolkit.log beside --out, inside it for a pipeline, else here)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks (and the library messages, as --verbose)."),
) -> None:
    """(--verbose, --log-file and --debug are taken off the command line by main(), anywhere on it; declared here so
    that --help lists them.)"""


def _register() -> None:
    from toolkit.cli import bench, compare, data, device, evaluate, export, gate, pipeline, train, verify

    app.add_typer(data.app, name="data", help="Prepare real datasets or generate the synthetic default.")
    app.command("train", help="Train a model (scn, cocorrrec, gru4rec, sasrec, din) or the request gate.")(train.train)
    app.command("eval", help="Re-score a saved run on a dataset split.")(evaluate.evaluate)
    app.command("compare", help="One table across runs, mean ± std over seeds, baselines beside.")(compare.compare)
    app.add_typer(gate.app, name="gate", help="Calibrate the request gate and draw its request-frequency curve.")
    app.command("export", help="Export SCN / the gate / baselines to ExecuTorch, ONNX and Core ML.")(export.export)
    app.command("verify", help="Re-hash an artifact dir and re-run trajectory parity.")(verify.verify)
    app.command("bench", help=bench.HELP)(bench.bench)
    app.command("pipeline", help="The main job: prepare -> train -> gate -> export -> verify -> bench.")(pipeline.pipeline)
    app.add_typer(device.app, name="device", help="Emulated ARM64 target and Android devices over adb.")


_register()


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    note_termination(signum)  # in case a library swallows the exception below (toolkit.errors.note_termination)
    raise Terminated()


def _say(text: str) -> None:
    from toolkit.cli.quiet import terminal

    Console(file=terminal()).print(text, highlight=False, soft_wrap=True)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def entry() -> None:
    """The process entry (`toolkit`, `python -m toolkit`): `main`, and on Ctrl-C a hard exit with status 130.

    CPython exits by re-raising SIGINT (status -2) instead of 130 when the interrupt landed inside an `eval` of a
    string (typing annotations, torch's inspection) even if the KeyboardInterrupt was then caught: that eval marks
    it "unhandled" (measured: 1 interrupted export in 20). Everything `main` cleans up is done by then; only
    interpreter finalisation is skipped."""
    try:
        main()
    except SystemExit as e:
        if e.code == 130:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(130)
        raise


def main() -> None:
    """Entry point: user errors print one line and exit non-zero; `--debug` shows tracebacks.

    Not Python 3.11: one line naming the fix, exit 2. Ctrl-C: one line, exit 130. SIGTERM: temp files/dirs of atomic writes are removed (via Terminated), one line,
    exit 143. Usage errors (bad option, wrong type): one line, exit 2. OSError that escaped the readers/writers of
    toolkit.io (e.g. an unwritable --out): one line naming the path, exit 2.
    """
    from toolkit import python_problem
    from toolkit.cli import quiet

    problem = python_problem()
    if problem is not None:  # before any heavy import, so a wrong interpreter gets the fix, not a late pip/torch error
        _say(f"[bold red]error:[/] {escape(problem)}")
        sys.exit(2)
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    rest, verbose, log_file = quiet.pop_global_options(sys.argv[1:])
    sys.argv[1:] = rest
    env_before = {k: os.environ.get(k) for k in (quiet.VERBOSE_ENV, quiet.LOG_ENV)}
    if verbose or debug:
        os.environ[quiet.VERBOSE_ENV] = "1"  # stages a pipeline starts stay verbose too
    clear_termination()  # an in-process caller (tests) may run several commands in one process
    previous = None
    try:  # only the main thread may set handlers (an in-process test runner may call main from elsewhere)
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        pass
    try:
        _run(debug, quiet.log_path(rest, log_file), capture=not quiet.verbose())
    finally:
        for k, v in env_before.items():  # an in-process caller (tests) gets its environment back
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(debug: bool, log: Path, capture: bool) -> None:
    from toolkit.cli import quiet

    args = sys.argv[1:]
    # a pipeline runs its stages as child processes that inherit fd 2: it captures nothing itself (their one-line
    # errors must reach the terminal) and hands its log to them through $TOOLKIT_LOG
    spawns = args[:1] == ["pipeline"]
    if spawns and capture:
        os.environ[quiet.LOG_ENV] = str(log.resolve())
    try:
        with quiet.captured(args, log, enabled=capture and not spawns):
            rv = app(standalone_mode=False)
        raise_if_terminated()  # SIGTERM arrived but its exception was swallowed on the way: still 143
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
        kept = f"; {escape(e.kept)}" if e.kept else ""
        _say(f"[yellow]terminated[/] (SIGTERM): temporary files removed{kept}")
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
