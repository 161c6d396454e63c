"""User-facing errors: one line, names the offending thing, maps to an exit code."""


class ToolkitError(Exception):
    """A problem with the user's input or environment; printed as one line, exit code 2."""

    exit_code = 2


class CheckFailed(ToolkitError):
    """A check the user asked for did not pass (parity, budget, checksum); exit code 1."""

    exit_code = 1


class Interrupted(ToolkitError):
    """Ctrl-C with something useful to say (e.g. how to resume); printed as one line, exit code 130."""

    exit_code = 130


class Terminated(BaseException):
    """Raised by the CLI's SIGTERM handler: a BaseException, so every `except BaseException` clean-up (temp files and
    dirs of atomic writes) runs, and no `except Exception` swallows it. Exit code 143 (128 + SIGTERM). `kept`: what a
    command left on disk that is worth saying (e.g. the checkpoints of a training run), set on the way out."""

    exit_code = 143
    kept = ""


_TERMINATION: list[int] = []  # SIGTERMs the CLI's handler saw (see note_termination)


def note_termination(signum: int) -> None:
    """Recorded by the CLI's SIGTERM handler before it raises Terminated. That exception, raised inside Python code
    a C++ layer called (torch's tracing, a runtime callback), can come back out as another error that a library's
    own fallback catches: the command then ran on to a complete output and exit 0. toolkit.io.swap_in checks this
    record, so such a command still keeps nothing and ends with 143. Here, not in toolkit.io: the handler and the
    CLI's start must not import numpy for it."""
    _TERMINATION.append(signum)


def clear_termination() -> None:
    _TERMINATION.clear()


def raise_if_terminated() -> None:
    if _TERMINATION:
        raise Terminated()
