"""Run the real `toolkit` CLI in a subprocess (the same interpreter), as a user would."""

from __future__ import annotations

import subprocess
import sys

TOOLKIT = [sys.executable, "-m", "toolkit"]


def cli(*args, check_rc: int | None = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([*TOOLKIT, *map(str, args)], capture_output=True, text=True)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stdout + proc.stderr
    return proc
