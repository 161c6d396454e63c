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
    dirs of atomic writes) runs, and no `except Exception` swallows it. Exit code 143 (128 + SIGTERM)."""

    exit_code = 143
