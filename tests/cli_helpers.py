"""The one way tests call the `toolkit` CLI.

- `run_inprocess(*args)`: `toolkit.cli.main` in this process (argv set, stdout/stderr captured, exit code returned):
  fast, for error paths and small commands. Exactly what a user sees: main() turns errors into one line + exit code.
- `cli(*args)`: the real CLI in a subprocess (the same interpreter), as a user would run it: the end-to-end tests.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

TOOLKIT = [sys.executable, "-m", "toolkit"]


def cli(*args, check_rc: int | None = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([*TOOLKIT, *map(str, args)], capture_output=True, text=True)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stdout + proc.stderr
    return proc


def run_inprocess(*args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `toolkit ARGS...` run through toolkit.cli.main in this process."""
    from toolkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = ["toolkit", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved
    return code, out.getvalue(), err.getvalue()
