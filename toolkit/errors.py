"""User-facing errors: one line, names the offending thing, maps to an exit code."""


class ToolkitError(Exception):
    """A problem with the user's input or environment; printed as one line, exit code 2."""

    exit_code = 2


class CheckFailed(ToolkitError):
    """A check the user asked for did not pass (parity, budget, checksum); exit code 1."""

    exit_code = 1
