"""Quiet by default: third-party chatter goes to the run's log file, not the terminal.

What counts as chatter: everything a library writes to standard error while a command runs — Python warnings
(FutureWarning, UserWarning ...), library `logging` records (torchao's `Failed to load ..._C_mxfp8.so`, torch.onnx's
`torchvision is not installed`, torch's `W... _pytree.py` lines) and C/C++ lines written straight to file descriptor 2
(ExecuTorch's cpuinfo `midr` lines, XNNPACK, coremltools). They are not errors of ours, and a new user reads them
as such.

How: for the duration of the command, fd 2 points at a private temporary file (`os.dup2`), so Python-level and native
writes land there alike; our own messages (one-line errors, progress on stderr) go to `terminal()`, a stream on a copy
of the original fd 2. At the end the captured text, if any, is appended to the log with a header naming the command;
nothing captured, no log file. Tracebacks (`--debug`, or a bug) print after fd 2 is restored, on the terminal.

Where the log lives (also in `toolkit --help`): `--log-file FILE`, else `$TOOLKIT_LOG`, else `<out>/toolkit.log` for
`toolkit pipeline --out <out>` (its stages inherit $TOOLKIT_LOG and append to the same file), else `toolkit.log`
beside the command's `--out` (in its parent folder: an artifact dir holds only what its manifest lists), else
`toolkit.log` in the current directory. `--verbose` turns all of this off: the libraries write to the terminal as
they always did.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator

LOG_ENV = "TOOLKIT_LOG"
VERBOSE_ENV = "TOOLKIT_VERBOSE"  # "1": a child toolkit process of a --verbose run stays verbose
CAPTURED_ENV = "TOOLKIT_STDERR_CAPTURED"  # "<dev>:<inode>" of the capture file while fd 2 goes there (library code
# then need not silence native lines itself: toolkit.exporters.common.stderr_captured)
DEFAULT_NAME = "toolkit.log"

_terminal: IO[str] | None = None


def terminal() -> IO[str]:
    """Where our own stderr messages go: the real terminal while chatter is captured, else sys.stderr."""
    return _terminal if _terminal is not None else sys.stderr


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def log_path(argv: list[str], explicit: str | None) -> Path:
    """The log file of this command (see the module doc)."""
    if explicit:
        return Path(explicit)
    if os.environ.get(LOG_ENV):
        return Path(os.environ[LOG_ENV])
    out = None
    for i, a in enumerate(argv):
        if a == "--out" and i + 1 < len(argv):
            out = argv[i + 1]
        elif a.startswith("--out="):
            out = a.split("=", 1)[1]
    if out:
        # a pipeline owns its --out folder; any other command's --out may be an artifact dir whose files are all
        # listed in its manifest, so the log goes beside it
        return Path(out) / DEFAULT_NAME if argv[:1] == ["pipeline"] else Path(out).parent / DEFAULT_NAME
    return Path(DEFAULT_NAME)


def pop_global_options(argv: list[str]) -> tuple[list[str], bool, str | None]:
    """argv without `--verbose` and `--log-file FILE` (accepted anywhere on the line), and their values."""
    out, is_verbose, log = [], False, None
    it = iter(range(len(argv)))
    for i in it:
        a = argv[i]
        if a == "--verbose":
            is_verbose = True
        elif a == "--log-file" and i + 1 < len(argv):
            log = argv[i + 1]
            next(it, None)
        elif a.startswith("--log-file="):
            log = a.split("=", 1)[1]
        else:
            out.append(a)
    return out, is_verbose, log


def _append(log: Path, header: str, text: bytes) -> bool:
    try:
        if log.parent != Path("") and not log.parent.is_dir():
            log.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: the stages of a pipeline append whole blocks to one file, each at its own exit
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(fd, header.encode() + text + (b"" if text.endswith(b"\n") else b"\n"))
        finally:
            os.close(fd)
        return True
    except OSError:
        return False


@contextlib.contextmanager
def captured(argv: list[str], log: Path, enabled: bool = True) -> Iterator[Path | None]:
    """fd 2 -> a temporary file for the block; its text is appended to `log` afterwards (see the module doc).

    A no-op (yields None) when disabled, or when stderr is not a real file descriptor (an in-process test that
    captured sys.stderr into a StringIO: there is nothing to redirect)."""
    global _terminal
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        fd = -1
    # `python -X importtime` / `-X dev`: interpreter diagnostics the user asked for on stderr, left there
    asked = "importtime" in getattr(sys, "_xoptions", {}) or sys.flags.dev_mode
    if not enabled or fd != 2 or _terminal is not None or asked:
        yield None
        return
    sys.stderr.flush()
    tmp_fd, tmp = tempfile.mkstemp(prefix="toolkit-stderr-", suffix=".log")
    saved = os.dup(2)
    term = os.fdopen(os.dup(saved), "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                     errors="replace")
    st = os.fstat(tmp_fd)
    os.dup2(tmp_fd, 2)
    os.close(tmp_fd)
    _terminal = term
    previous = {k: os.environ.get(k) for k in (LOG_ENV, CAPTURED_ENV)}
    os.environ[LOG_ENV] = str(log.resolve())  # child toolkit processes append to the same file
    os.environ[CAPTURED_ENV] = f"{st.st_dev}:{st.st_ino}"
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        yield log
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        _terminal = None
        with contextlib.suppress(Exception):
            term.flush()
        term.close()
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        try:
            text = Path(tmp).read_bytes()
            if text.strip():
                header = f"==== {started} pid {os.getpid()}: toolkit {shlex.join(argv)}\n"
                if not _append(log, header, text):
                    # the log is unwritable: keep the capture where it is rather than lose it
                    tmp = None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
