"""The flag checks every command shares: numbers, seeds, threads, output paths, key=value configs, lists.

Below every stage (imports only errors and io), so a library entry point that takes a request built from flags
(train.api, pipeline) checks it in the same order, with the same one-line messages, as the command always did."""

from __future__ import annotations

import json
import math
from pathlib import Path

from toolkit.errors import ToolkitError


def parse_csv(value: str, what: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ToolkitError(f"{what} is empty")
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise ToolkitError(f"unknown {what} '{bad[0]}' (valid: {', '.join(allowed)})")
    return items


INT64_MAX = 2**63 - 1
CONFIG_INT_MAX = 2**31 - 1  # sizes (dim, heads, n_items, ...) beyond this cannot be allocated anyway


def check_number(value, flag: str, *, lo=None, hi=None, lo_open: bool = False, integer: bool = False):
    """Refuse NaN/inf and values outside [lo, hi] (or (lo, hi] with lo_open) in one line naming the flag.

    Cheap on purpose: the CLI validates every numeric flag with it before importing torch or creating a dir."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolkitError(f"{flag} must be a finite number, got {value}")
    if integer and isinstance(value, float):
        if not value.is_integer():
            raise ToolkitError(f"{flag} must be an integer, got {value}")
        value = int(value)
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ToolkitError(f"{flag} must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None and value > hi:
        raise ToolkitError(f"{flag} must be <= {hi}, got {value}")
    return value


def positive_int(text: str, flag: str, hi: int = 2**31 - 1) -> int:
    """A flag typed as text: one-line errors for 0, negatives, non-integers and values above `hi` (Typer's own
    would print a box)."""
    try:
        v = int(str(text).strip())
    except ValueError:
        raise ToolkitError(f"{flag}: '{text}' is not an integer") from None
    if v <= 0:
        raise ToolkitError(f"{flag} must be a positive integer, got {v}")
    if v > hi:
        raise ToolkitError(f"{flag} must be <= {hi}, got {v}")
    return v


def check_seed(seed: int, flag: str = "--seed") -> int:
    return check_number(seed, flag, lo=0, hi=2**32 - 1, integer=True)


def check_threads(threads: int | None, flag: str = "--threads") -> int | None:
    return check_number(threads, flag, lo=1, hi=4096, integer=True)


def check_out(out: Path, flag: str = "--out", folder: bool = True) -> Path:
    """An output path that can be created: not '.', not a parent of the current dir, no file in its folder's way,
    writable; with folder=True (an output dir) an existing `out` must be a folder, with folder=False not a folder."""
    import tempfile

    from toolkit.io import check_output_path

    check_output_path(out, flag)
    if folder and Path(out).exists() and not Path(out).is_dir():
        raise ToolkitError(f"{flag} {out} is a file, not a folder")
    if not folder and Path(out).is_dir():
        raise ToolkitError(f"{flag} {out} is a folder, expected a file name")
    for parent in Path(out).absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ToolkitError(f"{flag} {out}: {parent} is a file, not a folder")
            try:  # an unnamed probe file: nothing is left behind, and root's os.access would say yes to /sys
                with tempfile.TemporaryFile(dir=parent):
                    pass
            except OSError as e:
                raise ToolkitError(f"{flag} {out}: cannot write in {parent} ({e.strerror or type(e).__name__})"
                                   ) from None
            break
    return out


def parse_config(pairs: list[str] | None) -> dict:
    """`--config dim=32 --config residual=true` -> {"dim": 32, "residual": True} (values parsed as JSON if possible).

    Values must be scalars; numbers finite, >= 0 and below 2**31 (model sizes, rates). Per-field types and ranges
    (e.g. dim >= 1) are checked by the model registry when the config is built."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ToolkitError(f"--config expects key=value, got '{pair}'")
        k, v = pair.split("=", 1)
        k = k.strip()
        if not k:
            raise ToolkitError(f"--config expects key=value, got '{pair}'")
        try:
            value = json.loads(v)
        except (json.JSONDecodeError, ValueError, RecursionError):
            value = v
        if isinstance(value, (dict, list)) or value is None:
            raise ToolkitError(f"--config {k}: expected a number, true/false or a word, got '{v}'")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            check_number(value, f"--config {k}", lo=0, hi=CONFIG_INT_MAX)
        if k == "n_items":
            raise ToolkitError("--config n_items: the vocabulary is not a config override (it comes from the dataset, "
                               "or --n-items for `export --model`)")
        out[k] = value
    return out
