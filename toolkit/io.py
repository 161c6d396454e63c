"""Atomic writes, hashing, version stamps and safe reads: every on-disk product goes through here.

Reading is the one place where a user's file turns into a one-line error: `read_bytes`, `read_text`, `read_json`,
`read_toml`, `read_npz`, `load_safetensors` and `load_checkpoint` map OSError, UnicodeDecodeError, malformed
JSON/TOML of any shape, out-of-range numbers, safetensors errors and pickles into a ToolkitError naming the path.
Nothing read here can execute code: no pickle, numpy with allow_pickle=False, torch.load with weights_only=True.

Temp files and dirs are named `.NAME.<pid>.<random>.tmp` beside their target; the next write of NAME sweeps the
ones whose process is gone (a SIGKILL leaves them behind; SIGTERM is turned into an exception by the CLI so the
`except BaseException` clean-ups below run).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from toolkit.errors import ToolkitError, raise_if_terminated

INT64_MAX = 2**63 - 1


def _reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except IsADirectoryError:
        raise ToolkitError(f"expected a file, found a directory: {path}") from None
    except OSError as e:
        raise ToolkitError(f"cannot read {path}: {_reason(e)}") from None
    return h.hexdigest()


def sha256_tree(path: str | os.PathLike) -> str:
    """Hash of a directory (e.g. an .mlpackage): relative paths and file hashes, in sorted order."""
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def sha256_path(path: str | os.PathLike) -> str:
    return sha256_tree(path) if Path(path).is_dir() else sha256_file(path)


def size_path(path: str | os.PathLike) -> int:
    p = Path(path)
    if p.is_dir():
        return sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
    return p.stat().st_size


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_PID_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
_OLD_DIR = re.compile(r"^\.(?P<name>.+)\.old-(?P<pid>\d+)$")
LEGACY_TMP_AGE_S = 3600  # temp names without a pid (older toolkits) are swept once this old


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's live process (or a number that is not a pid: leave it alone)
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


def sweep_stale_temps(final: str | os.PathLike) -> list[Path]:
    """Remove leftovers of interrupted writes of `final` (`.NAME.<pid>.*.tmp`, `.NAME.old-<pid>`) whose process is
    gone; returns what was removed. Live writers (another process, same name) are left alone."""
    final = Path(final)
    parent, name = final.parent, final.name
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    prefix = f".{name}."
    for p in entries:
        if not p.name.startswith(prefix):
            continue
        m = _PID_TMP.match(p.name) or _OLD_DIR.match(p.name)
        if m:
            if m.group("name") != name:  # another target whose name starts like ours (`run` vs `run.5`)
                continue
            stale = not _pid_alive(int(m.group("pid")))
        elif p.name.endswith(".tmp") and re.fullmatch(r"[A-Za-z0-9_]+", p.name[len(prefix):-4]):  # legacy, no pid
            try:
                stale = time.time() - p.lstat().st_mtime > LEGACY_TMP_AGE_S
            except OSError:
                continue
        else:
            continue
        if stale:
            _remove(p)
            removed.append(p)
    return removed


def _tmp_prefix(final: Path) -> str:
    return f".{final.name}.{os.getpid()}."


def check_output_path(final: str | os.PathLike, flag: str = "output") -> Path:
    """An output path must name something inside a directory: not '.', '..', '/' or the current dir's ancestors."""
    absolute = Path(os.path.abspath(final))
    if not absolute.name or Path(os.path.abspath(os.curdir)).is_relative_to(absolute):
        raise ToolkitError(f"refusing to write {flag} {final}: it is the current directory or one of its parents")
    return absolute


def _mkdir_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ToolkitError(f"cannot write {path}: a file is in the way of its folder {path.parent}") from None
    except OSError as e:
        raise ToolkitError(f"cannot create folder {path.parent}: {_reason(e)}") from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temp file in the same directory, fsync, then rename: readers never see half a file."""
    path = Path(path)
    check_output_path(path)
    _mkdir_parent(path)
    sweep_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise ToolkitError(f"cannot write {path}: {_reason(e)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise ToolkitError(f"cannot write {path}: {_reason(e)}") from None
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, dumps_json(obj))


MAX_TEXT_BYTES = 256 << 20  # a JSON/TOML file the toolkit reads (descriptors, manifests, suites) is far smaller
MAX_DEPTH = 64  # nesting of a JSON/TOML value: the toolkit's own files stay under 10


def read_bytes(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None) -> bytes:
    p = Path(path)
    try:
        if max_bytes is not None and p.is_file() and p.stat().st_size > max_bytes:
            raise ToolkitError(f"{what} {p} is {p.stat().st_size:,} bytes, more than the {max_bytes:,} allowed")
        return p.read_bytes()
    except FileNotFoundError:
        raise ToolkitError(f"{what} not found: {p}") from None
    except IsADirectoryError:
        raise ToolkitError(f"{what} is a directory, expected a file: {p}") from None
    except OSError as e:
        raise ToolkitError(f"cannot read {what} {p}: {_reason(e)}") from None


def read_text(path: str | os.PathLike, what: str = "file", max_bytes: int | None = MAX_TEXT_BYTES) -> str:
    data = read_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ToolkitError(f"{what} is not UTF-8 text: {path} (byte {data[e.start:e.start + 1]!r} at offset "
                           f"{e.start})") from None


class _BadNumber(ValueError):
    pass


def _parse_int(text: str) -> int:
    v = int(text)
    if abs(v) > INT64_MAX:
        raise _BadNumber(f"integer {text[:24]}{'...' if len(text) > 24 else ''} is out of range (|n| <= 2**63-1)")
    return v


def _parse_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise _BadNumber(f"number {text[:24]} is out of range (overflows a float)")
    return v


def _parse_constant(text: str):
    raise _BadNumber(f"{text} is not allowed (numbers must be finite)")


def _no_duplicate_keys(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _BadNumber(f"key '{k}' appears twice")
        out[k] = v
    return out


_SHAPES = {dict: "a JSON object", list: "a JSON array", str: "a string", int: "a number", float: "a number",
           bool: "true/false", type(None): "null"}


def parse_json(text: str, where: str, what: str = "file", expect: type | None = dict) -> Any:
    """JSON text -> value; malformed text, NaN/Infinity, numbers out of range, duplicate keys and a top-level value
    of the wrong shape are one-line errors naming `where`."""
    if len(text) > MAX_TEXT_BYTES:
        raise ToolkitError(f"{what} is too large: {where} ({len(text):,} characters, at most {MAX_TEXT_BYTES:,})")
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant,
                           object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise ToolkitError(f"{what} is not valid JSON: {where} ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise ToolkitError(f"{what} is not valid JSON: {where} (nested deeper than {MAX_DEPTH} levels)") from None
    except (_BadNumber, ValueError) as e:  # ValueError: int() beyond the digit limit
        raise ToolkitError(f"{what} is not valid JSON: {where} ({str(e).splitlines()[0][:120]})") from None
    check_depth(value, where, what)
    if expect is not None and not isinstance(value, expect):
        raise ToolkitError(f"{what} must hold {_SHAPES.get(expect, expect.__name__)}, found "
                           f"{_SHAPES.get(type(value), type(value).__name__)}: {where}")
    return value


def check_depth(value: Any, where: str, what: str = "file", limit: int = MAX_DEPTH) -> None:
    """Refuse a value nested deeper than `limit` (iteratively: a crafted file cannot exhaust the stack here, and
    the recursive checks that follow stay far from Python's recursion limit)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            if d > limit:
                raise ToolkitError(f"{what} {where} is nested deeper than {limit} levels: refused")
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))


def read_json(path: str | os.PathLike, what: str = "file", expect: type | None = dict) -> Any:
    """A JSON file -> value (by default it must be an object); every problem is a one-line ToolkitError."""
    return parse_json(read_text(path, what), str(path), what, expect)


def _check_numbers(value: Any, where: str, what: str, key: str = "") -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _check_numbers(v, where, what, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_numbers(v, where, what, f"{key}[{i}]")
    elif isinstance(value, bool):
        return
    elif isinstance(value, int) and abs(value) > INT64_MAX:
        raise ToolkitError(f"{what} {where}: '{key}' is out of range (|n| <= 2**63-1)")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ToolkitError(f"{what} {where}: '{key}' is {value} (numbers must be finite)")


def read_toml(path: str | os.PathLike, what: str = "TOML file") -> dict:
    """A TOML file -> dict; binary, malformed, inf/nan and out-of-range integers are one-line errors."""
    import tomllib

    text = read_text(path, what)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ToolkitError(f"{what} is not valid TOML: {path} ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise ToolkitError(f"{what} is not valid TOML: {path} (nested deeper than {MAX_DEPTH} levels)") from None
    check_depth(data, str(path), what)
    _check_numbers(data, str(path), what)
    return data


MAX_ARRAYS_BYTES = 4 << 30  # uncompressed bytes of one .npz the toolkit reads whole
# members above BOMB_FLOOR bytes packed tighter than this are refused (a zip bomb): deflate reaches ~1030 on zeros
# at levels 6-9, while the toolkit writes its .npz at level 1, which stays under ~230 even on all-zero arrays
MAX_DEFLATE_RATIO = 300
BOMB_FLOOR = 16 << 20


def check_npz(path: str | os.PathLike, what: str = "arrays", max_bytes: int = MAX_ARRAYS_BYTES) -> None:
    """Before an .npz is read: the members' declared sizes (zip headers) and the arrays' declared sizes (.npy
    headers) against caps, so a crafted file cannot make the reader allocate gigabytes. zipfile stops reading a
    member at its declared size, so the declared size bounds what is inflated."""
    import zipfile

    p = Path(path)
    try:
        with zipfile.ZipFile(p) as zf:
            infos = zf.infolist()
            total = sum(i.file_size for i in infos)
            if total > max_bytes:
                raise ToolkitError(f"{what} {p} declares {total:,} bytes uncompressed, more than the {max_bytes:,} "
                                   "allowed: refused")
            for i in infos:
                if i.file_size > BOMB_FLOOR and i.file_size > MAX_DEFLATE_RATIO * max(i.compress_size, 1):
                    raise ToolkitError(f"{what} {p}: member {i.filename} inflates {i.compress_size:,} bytes to "
                                       f"{i.file_size:,} (ratio above {MAX_DEFLATE_RATIO}): refused as a zip bomb")
                if not i.filename.endswith(".npy"):
                    continue
                with zf.open(i) as f:
                    shape, dtype = _npy_header(f)
                need = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if need > i.file_size:
                    raise ToolkitError(f"{what} {p}: member {i.filename} declares an array of {need:,} bytes "
                                       f"{tuple(shape)} in {i.file_size:,} bytes: refused")
    except ToolkitError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, KeyError, TypeError,
            UnicodeDecodeError, SyntaxError, NotImplementedError, RuntimeError, OverflowError) as e:
        msg = (str(e).splitlines() or [type(e).__name__])[0]
        raise ToolkitError(f"{what} is corrupt: {p} ({msg[:160]})") from None


def _npy_header(f) -> tuple[tuple, np.dtype]:
    fmt = np.lib.format
    version = fmt.read_magic(f)
    read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
    if read is None:
        raise ValueError(f"unsupported .npy version {version}")
    shape, _, dtype = read(f)
    if dtype.hasobject:
        raise ValueError("holds pickled objects, refused")
    return shape, dtype


def check_npy(path: str | os.PathLike, what: str = "array") -> tuple[tuple, np.dtype]:
    """An .npy's header against its file size (before it is loaded or memory-mapped); returns (shape, dtype)."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            shape, dtype = _npy_header(f)
            offset = f.tell()
        need = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if offset + need > p.stat().st_size:
            raise ToolkitError(f"{what} {p} declares {need:,} bytes {tuple(shape)}, the file holds "
                               f"{p.stat().st_size - offset:,}: refused")
    except ToolkitError:
        raise
    except (ValueError, OSError, EOFError, TypeError, SyntaxError, OverflowError) as e:
        msg = (str(e).splitlines() or [type(e).__name__])[0]
        raise ToolkitError(f"{what} is corrupt: {p} ({msg[:160]})") from None
    return shape, dtype


def read_npz(path: str | os.PathLike, what: str = "arrays") -> dict:
    """An .npz -> {name: array}; object arrays (pickles) are refused, never unpickled; declared sizes are
    checked against caps before anything is inflated (check_npz)."""
    import zipfile

    p = Path(path)
    if not p.exists():
        raise ToolkitError(f"{what} not found: {p}")
    check_npz(p, what)
    try:
        with np.load(p, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("not an .npz archive")
            return {name: z[name] for name in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, UnicodeDecodeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "allow_pickle" in msg:
            msg = "holds pickled objects, refused"
        raise ToolkitError(f"{what} is corrupt: {p} ({msg[:160]})") from None
    except Exception as e:  # numpy raises assorted errors on hostile headers
        raise ToolkitError(f"{what} is corrupt: {p} ({type(e).__name__})") from None


def load_safetensors(path: str | os.PathLike, what: str = "weights") -> dict:
    """A .safetensors file -> {name: torch tensor} (safetensors holds raw tensors only: nothing executes)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise ToolkitError(f"{what} not found: {p}")
    try:
        return load_file(str(p))
    except (SafetensorError, OSError, ValueError, RuntimeError, UnicodeDecodeError) as e:
        raise ToolkitError(f"{what} is corrupt: {p} ({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})"
                           ) from None


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """torch.load with weights_only=True: tensors and plain values only; a pickle of anything else is refused
    before it runs (torch's restricted unpickler)."""
    import pickle

    import torch

    p = Path(path)
    if not p.is_file():
        raise ToolkitError(f"{what} not found: {p}")
    try:
        return torch.load(p, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        raise ToolkitError(f"{what} {p} holds more than tensors and plain values (a pickled object): refused, "
                           "nothing was loaded") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            UnicodeDecodeError, OverflowError, MemoryError) as e:
        raise ToolkitError(f"{what} is corrupt or truncated: {p} ({(str(e).splitlines() or [type(e).__name__])[0][:160]})"
                           ) from None


# ---- descriptors: a digest of their own content, so an edited or truncated descriptor is refused ----
DESCRIPTOR_KEY = "descriptor_sha256"


def descriptor_digest(desc: dict) -> str:
    """sha256 of the descriptor's canonical JSON without its own digest key."""
    body = {k: v for k, v in desc.items() if k != DESCRIPTOR_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def seal_descriptor(desc: dict) -> dict:
    """desc with `descriptor_sha256` set (always the last key)."""
    body = {k: v for k, v in desc.items() if k != DESCRIPTOR_KEY}
    body = json.loads(dumps_json(body))  # canonicalise numpy scalars / paths as they will be read back
    _check_numbers(body, "being written", "descriptor")  # NaN/inf would make it unreadable by read_json
    return {**body, DESCRIPTOR_KEY: descriptor_digest(body)}


def check_descriptor(desc: dict, where: str | os.PathLike, what: str = "descriptor") -> dict:
    """Refuse a descriptor whose digest is missing or does not match its content (edited, tampered, truncated)."""
    want = desc.get(DESCRIPTOR_KEY)
    if not isinstance(want, str):
        raise ToolkitError(f"{what} {where} has no {DESCRIPTOR_KEY}: it was edited or written by an older toolkit; "
                           "re-create it")
    if descriptor_digest(desc) != want:
        raise ToolkitError(f"{what} {where} does not match its {DESCRIPTOR_KEY} (edited or corrupted); re-create it")
    return desc


def read_descriptor_json(path: str | os.PathLike, what: str = "descriptor") -> dict:
    return check_descriptor(read_json(path, what), path, what)


def write_descriptor_json(path: str | os.PathLike, desc: dict) -> dict:
    sealed = seal_descriptor(desc)
    atomic_write_json(path, sealed)
    return sealed


def contained(root: str | os.PathLike, name: str, what: str) -> Path:
    """root/name, refusing a name that resolves outside root (absolute, `..`, symlinks)."""
    root_r = Path(root).resolve()
    if not isinstance(name, str) or not name or os.path.isabs(name):
        raise ToolkitError(f"{what} '{name}' must be a relative path inside {root}")
    target = (root_r / name).resolve()
    if not target.is_relative_to(root_r) or target == root_r:
        raise ToolkitError(f"{what} '{name}' points outside {root}: refused")
    return Path(root) / name


# ---- directories: locked, built beside the old one, swapped in whole ----
_HELD_LOCKS: set[Path] = set()  # lock files this process holds (dir_lock is re-entrant within a process)
LOCK_FRESH_S = 5.0  # a lock file without a readable pid younger than this is a writer that is just starting


def lock_path(final: str | os.PathLike) -> Path:
    final = Path(os.path.abspath(final))
    return final.with_name(f".{final.name}.lock")


def _lock_holder(lock: Path) -> int | None:
    try:
        text = lock.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@contextlib.contextmanager
def dir_lock(final: str | os.PathLike, what: str = "output") -> Iterator[Path]:
    """Hold `.NAME.lock` (O_EXCL, holding this pid) beside `final` while it is written: a second writer of the same
    dir is refused naming the holder's pid. A lock whose process is gone is taken over (a SIGKILLed writer)."""
    final = Path(os.path.abspath(final))
    lock = lock_path(final)
    if lock in _HELD_LOCKS:
        yield lock
        return
    _mkdir_parent(final)
    for _ in range(5):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _lock_holder(lock)
            if pid is None:
                try:
                    young = time.time() - lock.lstat().st_mtime < LOCK_FRESH_S
                except OSError:
                    continue  # released meanwhile: try again
                if young:
                    raise ToolkitError(f"{what} {final} is being written by another toolkit process (lock {lock} "
                                       "was just taken); wait for it to finish") from None
            elif _pid_alive(pid) and pid != os.getpid():
                raise ToolkitError(f"{what} {final} is being written by another toolkit process (pid {pid}; lock "
                                   f"{lock}): wait for it to finish or stop it") from None
            with contextlib.suppress(OSError):  # stale: its writer is gone
                lock.unlink()
            continue
        except OSError as e:
            raise ToolkitError(f"cannot lock {what} {final} ({lock}): {_reason(e)}") from None
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
        break
    else:
        raise ToolkitError(f"cannot lock {what} {final}: {lock} keeps changing (another writer?)")
    _HELD_LOCKS.add(lock)
    try:
        yield lock
    finally:
        _HELD_LOCKS.discard(lock)
        if _lock_holder(lock) == os.getpid():
            with contextlib.suppress(OSError):
                lock.unlink()


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT/SIGTERM arriving inside the block are held and re-raised after it: for a few renames that must not
    be split (the swap of a finished dir). Only the main thread can hold signals; elsewhere this does nothing."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    sigs = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in sigs}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for s in dict.fromkeys(got):
            signal.raise_signal(s)


def check_not_symlink(final: str | os.PathLike, flag: str = "--out") -> None:
    if Path(final).is_symlink():
        raise ToolkitError(f"{flag} {final} is a symbolic link (to {os.readlink(final)}): refusing to replace it; "
                           "give the folder it points to, or remove the link")


def swap_in(tmp: Path, final: Path, force: bool) -> None:
    """Move the finished dir `tmp` to `final`; an existing `final` (force) is moved aside first and removed only
    once the new one is in place. Signals are held during the renames, and a failed second rename puts the old
    dir back: at every moment `final` is the old dir or the new one, whole."""
    raise_if_terminated()  # a SIGTERM whose exception a library swallowed still keeps the new dir out
    try:
        with signals_deferred():
            if final.exists() or final.is_symlink():
                if not force:
                    raise ToolkitError(f"output exists: {final} (use --force to replace it)")
                check_not_symlink(final, "output")
                old = final.with_name(f".{final.name}.old-{os.getpid()}")
                os.replace(final, old)
                try:
                    os.replace(tmp, final)
                except BaseException:
                    os.replace(old, final)
                    raise
            else:
                old = None
                os.replace(tmp, final)
    except OSError as e:
        raise ToolkitError(f"cannot write {final}: {_reason(e)}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)  # interrupted here: swept as a stale `.NAME.old-PID` later


def staging_dir(final: str | os.PathLike) -> Path:
    """A new empty dir `.NAME.<pid>.<random>.tmp` beside `final` (stale ones of dead writers swept first), to be
    built and then swapped in with swap_in."""
    final = Path(final)
    _mkdir_parent(final)
    sweep_stale_temps(final)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(final), suffix=".tmp", dir=final.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    except OSError as e:
        raise ToolkitError(f"cannot write {final}: {_reason(e)}") from None
    return tmp


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Build a directory under a temp name beside `final`, rename it into place only on success.

    On any exception (SIGTERM included, see toolkit.cli) the temp dir is removed, so a failed command leaves no
    partial output and an existing `final` exactly as it was; leftovers of a SIGKILLed run are swept here on the
    next run. `final` is locked (dir_lock) while it is written: a second writer is refused.
    With force=True an existing `final` is replaced (after the new one is complete); a symlink is not replaced.
    """
    final = Path(final)
    check_output_path(final)
    if force:
        check_not_symlink(final, "output")
    if final.exists() and not final.is_dir() and force:
        raise ToolkitError(f"output {final} is a file, not a directory: refusing to replace it")
    with dir_lock(final):
        tmp = staging_dir(final)
        try:
            yield tmp
            swap_in(tmp, final, force)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def check_apart(out: str | os.PathLike, inputs: dict[str, Any], flag: str = "--out") -> None:
    """Refuse an output that is, contains or lies inside one of the command's inputs ({flag: path}): writing it
    (or replacing it with --force) would destroy or change what the command reads."""
    o = Path(os.path.abspath(out)).resolve()
    for name, p in inputs.items():
        if p is None:
            continue
        r = Path(os.path.abspath(p)).resolve()
        if r == o:
            raise ToolkitError(f"{flag} {out} is the {name} {p} itself: refusing to write over an input")
        if r.is_relative_to(o):
            raise ToolkitError(f"{flag} {out} contains the {name} {p}: refusing to write over an input")
        if o.is_relative_to(r):
            raise ToolkitError(f"{flag} {out} lies inside the {name} {p}: refusing to write into an input")


def versions() -> dict[str, str]:
    """Versions of everything that changes numbers or artifacts; recorded in every descriptor."""
    from importlib import metadata

    out = {"python": platform.python_version(), "toolkit": _toolkit_version()}
    for dist in ("torch", "numpy", "executorch", "onnx", "onnxruntime", "onnxscript", "coremltools", "scikit-learn"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def _toolkit_version() -> str:
    from toolkit import __version__

    return __version__


def resource_dir(name: str) -> Path:
    """Folder of shipped data (`export` recipes, `benches`): the repo copy in a checkout, else the wheel copy."""
    repo = Path(__file__).resolve().parent.parent / name
    if repo.is_dir():
        return repo
    packaged = Path(__file__).resolve().parent / "_data" / name
    if packaged.is_dir():
        return packaged
    raise ToolkitError(f"shipped folder '{name}' not found (looked in {repo} and {packaged})")


def cache_dir(name: str) -> Path:
    """The toolkit's cache folder for `name` (bench exports, the arm64 target): $TOOLKIT_CACHE/<name> when set, else
    $XDG_CACHE_HOME/toolkit/<name>, else ~/.cache/toolkit/<name>. One convention for every cache."""
    env = os.environ.get("TOOLKIT_CACHE")
    if env:
        return Path(env).expanduser() / name
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "toolkit" / name
