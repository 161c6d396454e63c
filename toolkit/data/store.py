"""The on-disk dataset: DIR/dataset.json (descriptor) + DIR/arrays.npz (int64 arrays, no pickles).

arrays.npz (U users, R training rows, L = seq_len, items 1..n_items, 0 = padding):
  user_ptr [U+1], user_items [n_interactions]   chronological histories in CSR form
  train_seqs [R, L]    the L items before the target, left-aligned, right-padded with 0
  train_cands [R, 5]   col 0 = target, cols 1..4 = negatives
  train_user [R], train_time [R]   user index, target position in that user's history
  valid_seqs [U, L], valid_cands [U, 100], valid_user [U]   target = history[n-2]
  test_seqs [U, L], test_cands [U, 100], test_user [U]      target = history[n-1]
Optional DIR/extras.npz: generator-side labels (the synthetic data's item/interaction domains).
Large datasets (more users than one protocol chunk, `layout: "npy"` in dataset.json) keep the same arrays as
uncompressed DIR/arrays/NAME.npy instead, written chunk by chunk (bounded memory) and opened memory-mapped, so a
training worker pages in only the rows it reads and workers on one machine share one copy in the page cache.
arrays_sha256 hashes the arrays' names, dtypes, shapes and bytes (zip bytes carry timestamps, so not the file).
descriptor_sha256 hashes dataset.json's own content (toolkit.io.seal_descriptor): an edited number (n_items, seq_len)
or a removed checksum key is refused on load, and the counts are cross-checked against the arrays.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import toolkit.data.protocol as protocol  # by full name: `from toolkit.data import` would re-enter toolkit/data/__init__
from toolkit.data.chunk_writer import create_npy, fill_chunks, write_rows
from toolkit.data.protocol import (
    N_CANDIDATES,
    N_TRAIN_NEGATIVES,
    UserDataError,
    build_protocol_csr,
    check_csr,
    chunk_bounds,
    to_csr,
    track_step,
)
from toolkit.errors import ToolkitError
from toolkit.io import (
    atomic_dir,
    check_descriptor,
    check_npy,
    read_json,
    read_npz,
    seal_descriptor,
    versions,
    write_descriptor_json,
)

SCHEMA = "toolkit.dataset/1"
DESCRIPTOR = "dataset.json"
ARRAYS = "arrays.npz"
ARRAYS_DIR = "arrays"  # layout "npy"
EXTRAS = "extras.npz"
ARRAY_NAMES = (
    "user_ptr", "user_items",
    "train_seqs", "train_cands", "train_user", "train_time",
    "valid_seqs", "valid_cands", "valid_user",
    "test_seqs", "test_cands", "test_user",
)  # fmt: skip
_REQUIRED_META = ("schema", "format", "n_users", "n_items", "n_interactions", "seq_len", "seed", "arrays_sha256")


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """Content hash: name, dtype, shape and bytes of every array, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape};".encode())
        h.update(a.view(np.uint8).reshape(-1) if a.size else b"")
    return h.hexdigest()


@dataclass
class Dataset:
    """A prepared dataset in memory. Arrays as described in the module docstring."""

    path: Path
    meta: dict
    user_ptr: np.ndarray = field(repr=False)
    user_items: np.ndarray = field(repr=False)
    train_seqs: np.ndarray = field(repr=False)
    train_cands: np.ndarray = field(repr=False)
    train_user: np.ndarray = field(repr=False)
    train_time: np.ndarray = field(repr=False)
    valid_seqs: np.ndarray = field(repr=False)
    valid_cands: np.ndarray = field(repr=False)
    valid_user: np.ndarray = field(repr=False)
    test_seqs: np.ndarray = field(repr=False)
    test_cands: np.ndarray = field(repr=False)
    test_user: np.ndarray = field(repr=False)
    extras: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    unchanged: bool = False  # save_dataset found this exact dataset already on disk and left it alone

    @property
    def n_items(self) -> int:
        return int(self.meta["n_items"])

    @property
    def n_users(self) -> int:
        return int(self.meta["n_users"])

    @property
    def seq_len(self) -> int:
        return int(self.meta["seq_len"])

    @property
    def sha256(self) -> str:
        return str(self.meta["arrays_sha256"])

    @property
    def descriptor_path(self) -> Path:
        return self.path / DESCRIPTOR

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ARRAY_NAMES}

    def history(self, u: int) -> np.ndarray:
        """User u's chronological items [n_u] (a view, do not modify)."""
        if not 0 <= u < self.n_users:
            raise ToolkitError(f"user index {u} out of range 0..{self.n_users - 1}")
        return self.user_items[self.user_ptr[u] : self.user_ptr[u + 1]]

    def targets(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(user [N], time [N]) of every target of a split: its window is the history before position `time`."""
        if split == "train":
            return self.train_user.astype(np.int64), self.train_time.astype(np.int64)
        if split not in ("valid", "test"):
            raise ToolkitError(f"unknown split '{split}' (expected train, valid or test)")
        user = getattr(self, f"{split}_user").astype(np.int64)
        return user, np.diff(self.user_ptr)[user] - (2 if split == "valid" else 1)

    def windows(self, users: np.ndarray, times: np.ndarray, length: int | None = None) -> np.ndarray:
        """[N, length] the `length` (default seq_len) items before position `times` of each user's history,
        right-padded: the protocol's windows, or the longer history the cloud keeps for the same moment."""
        from toolkit.data.protocol import gather_windows

        return gather_windows(self.user_items, self.user_ptr[users], times, length or self.seq_len)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(seqs [U, L], cands [U, 100]) of the 'valid' or 'test' split; the positive is column 0."""
        if name not in ("valid", "test"):
            raise ToolkitError(f"unknown split '{name}' (expected 'valid' or 'test')")
        return getattr(self, f"{name}_seqs"), getattr(self, f"{name}_cands")


def _read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    return read_npz(path, what)  # allow_pickle=False; every failure a one-line error naming the path


def _read_npy_dir(folder: Path) -> dict[str, np.ndarray]:
    """The layout-"npy" arrays, memory-mapped read-only (no pickles: allow_pickle=False)."""
    out = {}
    for name in ARRAY_NAMES:
        f = folder / f"{name}.npy"
        if not f.is_file():
            continue
        check_npy(f, "dataset arrays")
        try:
            out[name] = np.load(f, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ToolkitError(f"dataset arrays are corrupt: {f} ({type(e).__name__}: {e})") from None
    return out


def _npy_dir_sha256(folder: Path, block: int = 1 << 24) -> str:
    """arrays_sha256 of a layout-"npy" folder, read in blocks (resident memory stays one block, not the file)."""
    h = hashlib.sha256()
    for name in sorted(ARRAY_NAMES):
        f = folder / f"{name}.npy"
        with open(f, "rb") as fh:
            try:
                version = np.lib.format.read_magic(fh)
                read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                shape, fortran, dtype = read[version](fh)
            except (ValueError, KeyError, EOFError) as e:
                raise ToolkitError(f"dataset arrays are corrupt: {f} ({type(e).__name__}: {e})") from None
            if fortran:
                raise ToolkitError(f"dataset arrays are corrupt: {f} (Fortran order)")
            h.update(f"{name}|{dtype.str}|{tuple(shape)};".encode())
            while chunk := fh.read(block):
                h.update(chunk)
    return h.hexdigest()


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A standard .npz (np.load reads it) deflated at level 1: 4x faster than savez_compressed, ~same size."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, a in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(a), allow_pickle=False)


def _make_readable(folder: Path) -> None:
    """Temp files/dirs are created private (0600/0700); a dataset is meant to be shared: rwxr-xr-x / rw-r--r--."""
    folder.chmod(0o755)
    for f in folder.iterdir():
        if f.is_dir():
            _make_readable(f)
        else:
            f.chmod(0o644)


def _refuse_symlinks(path: Path) -> None:
    """A dataset dir holds its own files: a symlink inside (to another dataset's arrays, to /dev/zero, outside
    the dir) is refused, as in run and artifact dirs."""
    for sub in (path, path / ARRAYS_DIR):
        try:
            entries = list(sub.iterdir()) if sub.is_dir() and not sub.is_symlink() else []
        except OSError:
            continue
        for p in entries:
            if p.is_symlink():
                raise ToolkitError(f"dataset dir {path} holds a symbolic link ({p.relative_to(path)} -> "
                                   f"{os.readlink(p)}): refused, a dataset dir holds its own files")


def load_dataset(path: str | Path, verify: bool = True) -> Dataset:
    """Load DIR (or DIR/dataset.json); with verify, re-hash the arrays against the descriptor and check their ids."""
    path = Path(path)
    if path.name == DESCRIPTOR and path.is_file():
        path = path.parent
    if not path.exists():
        raise ToolkitError(
            f"dataset dir not found: {path} (create one with `toolkit data prepare` or `toolkit data synth`)"
        )
    if not path.is_dir():
        raise ToolkitError(f"dataset path is not a directory: {path}")
    _refuse_symlinks(path)
    meta = read_json(path / DESCRIPTOR, "dataset descriptor")
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise ToolkitError(f"dataset descriptor {path / DESCRIPTOR} lacks {', '.join(missing)}")
    if meta["schema"] != SCHEMA:
        raise ToolkitError(f"dataset {path} has schema '{meta['schema']}', this toolkit reads '{SCHEMA}'")
    check_descriptor(meta, path / DESCRIPTOR, "dataset descriptor")
    bad = [k for k in ("n_users", "n_items", "n_interactions", "seq_len") if type(meta[k]) is not int or meta[k] < 1]
    if bad or not isinstance(meta["arrays_sha256"], str):
        raise ToolkitError(f"dataset descriptor {path / DESCRIPTOR}: {', '.join(bad) or 'arrays_sha256'} must be "
                           f"{'positive integers' if bad else 'a string'}")
    large = meta.get("layout", "npz") == "npy"
    where = path / (ARRAYS_DIR if large else ARRAYS)
    arrays = _read_npy_dir(where) if large else _read_npz(where, "dataset arrays")
    absent = [n for n in ARRAY_NAMES if n not in arrays]
    if absent:
        raise ToolkitError(f"dataset arrays {where} lack {', '.join(absent)}")
    arrays = {n: arrays[n] for n in ARRAY_NAMES}
    wrong = [f"{n} ({a.dtype})" for n, a in arrays.items() if a.dtype != np.int64]
    if wrong:
        raise ToolkitError(f"dataset arrays {where} are not int64: {', '.join(wrong)}")
    if verify:
        got = _npy_dir_sha256(where) if large else arrays_sha256(arrays)
        if got != meta["arrays_sha256"]:
            raise ToolkitError(
                f"dataset arrays {where} do not match their descriptor (sha256 {got[:12]} != "
                f"{str(meta['arrays_sha256'])[:12]}); re-prepare with --force"
            )
    extras = _read_npz(path / EXTRAS, "dataset extras") if (path / EXTRAS).is_file() else {}
    if verify and extras and arrays_sha256(extras) != meta.get("extras_sha256"):
        raise ToolkitError(f"dataset extras {path / EXTRAS} do not match their descriptor; re-prepare with --force")
    ds = Dataset(path=path, meta=meta, extras=extras, **arrays)
    _check_shapes(ds)
    if verify:  # reads every id; verify=False is for a reader whose caller just verified (or wrote) the arrays
        _check_ids(ds)
    return ds


def _check_ids(ds: Dataset) -> None:
    """The descriptor's n_items must be the arrays' vocabulary: every stored item id lies in 1..n_items."""
    hi = max((int(getattr(ds, n).max()) for n in ("user_items", "train_cands", "valid_cands", "test_cands")
              if getattr(ds, n).size), default=0)
    lo = int(ds.user_items.min()) if ds.user_items.size else 1
    if hi > ds.n_items or lo < 1:
        raise ToolkitError(f"dataset {ds.path}: item ids {lo}..{hi} do not fit n_items {ds.n_items} of "
                           f"{DESCRIPTOR}")
    # `data prepare` re-indexes the items it keeps to 1..N, so every id up to n_items occurs in the histories
    if ds.meta.get("format") in ("seqfile", "interactions") and ds.user_items.size and \
            int(ds.user_items.max()) != ds.n_items:
        raise ToolkitError(f"dataset {ds.path}: n_items {ds.n_items} of {DESCRIPTOR} is not the histories' "
                           f"vocabulary ({int(ds.user_items.max())} items)")


def _check_shapes(ds: Dataset) -> None:
    U, L = ds.n_users, ds.seq_len
    expect = {
        "user_ptr": (U + 1,),
        "user_items": (int(ds.meta["n_interactions"]),),
        "valid_seqs": (U, L), "valid_cands": (U, N_CANDIDATES), "valid_user": (U,),
        "test_seqs": (U, L), "test_cands": (U, N_CANDIDATES), "test_user": (U,),
    }  # fmt: skip
    R = ds.train_user.shape[0]
    expect.update(train_seqs=(R, L), train_cands=(R, 1 + N_TRAIN_NEGATIVES), train_time=(R,))
    bad = [f"{n} {getattr(ds, n).shape} != {s}" for n, s in expect.items() if getattr(ds, n).shape != s]
    if bad:
        raise ToolkitError(f"dataset {ds.path} has inconsistent arrays: {'; '.join(bad)}")


def _existing_dataset_sha(out_dir: Path) -> str | None:
    """arrays_sha256 of the dataset at out_dir: None when absent or an empty dir, "" when something else is there."""
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise ToolkitError(f"output path exists and is not a directory: {out_dir}")
    if not any(out_dir.iterdir()):
        return None
    try:
        meta = read_json(out_dir / DESCRIPTOR, "dataset descriptor")
        check_descriptor(meta, out_dir / DESCRIPTOR, "dataset descriptor")
        return str(meta["arrays_sha256"])
    except (ToolkitError, KeyError, TypeError):
        return ""  # something else lives there


def check_output(out_dir: str | Path, force: bool) -> None:
    """Fail early (before any work) when out_dir holds something that is not a dataset and force is off."""
    out_dir = Path(out_dir)
    if _existing_dataset_sha(out_dir) == "" and not force:
        raise ToolkitError(f"output dir {out_dir} exists and does not hold a dataset (use --force to replace it)")


def save_dataset(
    out_dir: str | Path,
    histories: list[np.ndarray],
    meta_extra: dict,
    seq_len: int,
    seed: int,
    force: bool = False,
    *,
    n_items: int | None = None,
    extras: dict[str, np.ndarray] | None = None,
    progress=None,
    user_ids: list[str] | None = None,
) -> Dataset:
    """Run the protocol on cleaned histories (items 1..n_items) and write the dataset atomically.

    An out_dir that already holds the identical dataset (same arrays_sha256) is left untouched (idempotent);
    a different dataset or anything else there is refused unless force.
    """
    if n_items is None:
        n_items = int(max(int(h.max()) for h in histories if len(h))) if histories else 0
    if not histories:
        check_output(out_dir, force)
        build_protocol_csr(*to_csr([]), n_items, seq_len, seed)  # raises the protocol's own message
    user_ptr, user_items = to_csr(histories)
    return save_dataset_csr(out_dir, user_ptr, user_items, meta_extra, seq_len, seed, force, n_items=n_items,
                            extras=extras, progress=progress, user_ids=user_ids)


class _Unchanged(Exception):
    """The identical dataset is already at the output: abandon the new copy."""


def _descriptor(lengths, n_items, seq_len, seed, meta_extra, shapes, sha, n_train, extras, layout=None) -> dict:
    meta = {
        "schema": SCHEMA,
        "n_users": int(lengths.size),
        "n_items": int(n_items),
        "n_interactions": int(lengths.sum()),
        "n_train_rows": int(n_train),
        "n_valid_users": int(lengths.size),
        "n_test_users": int(lengths.size),
        "n_candidates": N_CANDIDATES,
        "n_train_negatives": N_TRAIN_NEGATIVES,
        "seq_len": int(seq_len),
        "seed": int(seed),
        "history_length": {
            "min": int(lengths.min()),
            "median": float(np.median(lengths)),
            "mean": round(float(lengths.mean()), 4),
            "max": int(lengths.max()),
        },
        **meta_extra,
        "arrays": {n: list(shapes[n]) for n in ARRAY_NAMES},
        **({"layout": layout, "chunk_users": protocol.CHUNK_USERS} if layout else {}),
        "arrays_sha256": sha,
    }
    if extras:
        meta["extras_sha256"] = arrays_sha256(extras)
    meta["versions"] = versions()
    return seal_descriptor(meta)  # also fails on a non-serialisable meta_extra before touching the disk


def save_dataset_csr(
    out_dir: str | Path,
    user_ptr: np.ndarray,
    user_items: np.ndarray,
    meta_extra: dict,
    seq_len: int,
    seed: int,
    force: bool = False,
    *,
    n_items: int,
    extras: dict[str, np.ndarray] | None = None,
    progress=None,
    layout: str | None = None,
    workers: int = 1,
    user_ids=None,
) -> Dataset:
    """save_dataset on a CSR history. layout: "npz" (one arrays.npz, built in memory) up to protocol.CHUNK_USERS users,
    "npy" (memory-mappable arrays/, written one protocol chunk at a time) above; the arrays are the same."""
    out_dir = Path(out_dir)
    check_output(out_dir, force)
    try:
        check_csr(user_ptr, user_items, n_items, seq_len)
    except UserDataError as e:
        raise e.named(user_ids) from None  # the user's own id from the source, not our internal index
    layout = layout or ("npz" if user_ptr.size - 1 <= protocol.CHUNK_USERS else "npy")
    if layout == "npy":
        try:
            return _save_npy(out_dir, user_ptr, user_items, meta_extra, seq_len, seed, force, n_items, extras,
                             progress, workers)
        except UserDataError as e:
            raise e.named(user_ids) from None
    try:
        arrays = build_protocol_csr(user_ptr, user_items, n_items, seq_len, seed, progress=progress)
    except UserDataError as e:
        raise e.named(user_ids) from None
    sha = arrays_sha256(arrays)
    lengths = np.diff(arrays["user_ptr"])
    meta = _descriptor(lengths, n_items, seq_len, seed, meta_extra, {n: a.shape for n, a in arrays.items()}, sha,
                       arrays["train_user"].size, extras)

    existing = _existing_dataset_sha(out_dir)
    if existing == sha and not force:
        ds = load_dataset(out_dir)
        ds.unchanged = True
        return ds
    if existing and existing != sha and not force:
        raise _different(out_dir, existing, sha)
    with track_step(progress, f"writing {out_dir.name}/", total=1), atomic_dir(out_dir, force=True) as tmp:
        _write_npz(tmp / ARRAYS, arrays)
        if extras:
            _write_npz(tmp / EXTRAS, extras)
        write_descriptor_json(tmp / DESCRIPTOR, meta)
        _make_readable(tmp)
    return Dataset(path=out_dir, meta=meta, extras=dict(extras or {}), **arrays)


def _different(out_dir: Path, existing: str, sha: str) -> ToolkitError:
    return ToolkitError(
        f"output dir {out_dir} already holds a different dataset (arrays sha256 {existing[:12]}, "
        f"new {sha[:12]}); use --force to replace it"
    )


def _save_npy(out_dir, user_ptr, user_items, meta_extra, seq_len, seed, force, n_items, extras, progress,
              workers: int = 1) -> Dataset:
    """Layout "npy": the protocol chunk by chunk straight into arrays/NAME.npy; memory ~ one chunk + the CSR."""
    lengths = np.diff(user_ptr)
    n_users, n_train = lengths.size, int(np.maximum(lengths - 3, 0).sum())
    L, C = int(seq_len), N_CANDIDATES
    shapes = {
        "user_ptr": (n_users + 1,), "user_items": (user_items.size,),
        "train_seqs": (n_train, L), "train_cands": (n_train, 1 + N_TRAIN_NEGATIVES),
        "train_user": (n_train,), "train_time": (n_train,),
        "valid_seqs": (n_users, L), "valid_cands": (n_users, C), "valid_user": (n_users,),
        "test_seqs": (n_users, L), "test_cands": (n_users, C), "test_user": (n_users,),
    }  # fmt: skip
    existing = _existing_dataset_sha(out_dir)
    try:
        with atomic_dir(out_dir, force=True) as tmp:
            folder = tmp / ARRAYS_DIR
            folder.mkdir()
            offsets = {n: create_npy(folder / f"{n}.npy", shapes[n]) for n in ARRAY_NAMES}
            write_rows(folder / "user_ptr.npy", offsets["user_ptr"], 0, user_ptr)
            write_rows(folder / "user_items.npy", offsets["user_items"], 0, user_items)
            bounds = chunk_bounds(n_users)
            train_start = np.concatenate(([0], np.cumsum(np.maximum(lengths - 3, 0))))
            fill_chunks(progress, workers, user_ptr=user_ptr, user_items=user_items, n_items=n_items,
                        seq_len=seq_len, seed=seed, folder=folder, offsets=offsets, bounds=bounds,
                        train_start=[int(train_start[lo]) for lo, _ in bounds])
            for n in ARRAY_NAMES:  # durable before the rename into place
                fd = os.open(folder / f"{n}.npy", os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            with track_step(progress, "hashing arrays", total=1):
                sha = _npy_dir_sha256(folder)
            if existing == sha and not force:
                raise _Unchanged
            if existing and existing != sha and not force:
                raise _different(out_dir, existing, sha)
            meta = _descriptor(lengths, n_items, seq_len, seed, meta_extra, shapes, sha, n_train, extras, "npy")
            if extras:
                _write_npz(tmp / EXTRAS, extras)
            write_descriptor_json(tmp / DESCRIPTOR, meta)
            _make_readable(tmp)
    except _Unchanged:
        ds = load_dataset(out_dir)
        ds.unchanged = True
        return ds
    return load_dataset(out_dir, verify=False)
