"""Atomic writes, hashing and version stamps: every on-disk product goes through here."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from toolkit.errors import ToolkitError


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temp file in the same directory, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, dumps_json(obj))


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    p = Path(path)
    if not p.is_file():
        raise ToolkitError(f"{what} not found: {p}")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ToolkitError(f"{what} is not valid JSON: {p} ({e.msg} at line {e.lineno})") from None


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Build a directory under a temp name beside `final`, rename it into place only on success.

    On any exception the temp dir is removed, so a failed command leaves no partial output.
    With force=True an existing `final` is replaced (after the new one is complete).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        if final.exists():
            if not force:
                raise ToolkitError(f"output exists: {final} (use --force to replace it)")
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
