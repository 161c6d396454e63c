"""The on-disk dataset: DIR/dataset.json (descriptor) + DIR/arrays.npz (int64 arrays, no pickles).

arrays.npz (U users, R training rows, L = seq_len, items 1..n_items, 0 = padding):
  user_ptr [U+1], user_items [n_interactions]   chronological histories in CSR form
  train_seqs [R, L]    the L items before the target, left-aligned, right-padded with 0
  train_cands [R, 5]   col 0 = target, cols 1..4 = negatives
  train_user [R], train_time [R]   user index, target position in that user's history
  valid_seqs [U, L], valid_cands [U, 100], valid_user [U]   target = history[n-2]
  test_seqs [U, L], test_cands [U, 100], test_user [U]      target = history[n-1]
Optional DIR/extras.npz: generator-side labels (the synthetic data's item/interaction domains).
arrays_sha256 hashes the arrays' names, dtypes, shapes and bytes (zip bytes carry timestamps, so not the file).
descriptor_sha256 hashes dataset.json's own content (toolkit.io.seal_descriptor): an edited number (n_items, seq_len)
or a removed checksum key is refused on load, and the counts are cross-checked against the arrays.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.data.protocol import N_CANDIDATES, N_TRAIN_NEGATIVES, UserDataError, build_protocol, track_step
from toolkit.errors import ToolkitError
from toolkit.io import (atomic_dir, check_descriptor, read_json, read_npz, seal_descriptor,
                        versions, write_descriptor_json)

SCHEMA = "toolkit.dataset/1"
DESCRIPTOR = "dataset.json"
ARRAYS = "arrays.npz"
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
        f.chmod(0o644)


def load_dataset(path: str | Path, verify: bool = True) -> Dataset:
    """Load DIR (or DIR/dataset.json); with verify, re-hash the arrays against the descriptor."""
    path = Path(path)
    if path.name == DESCRIPTOR and path.is_file():
        path = path.parent
    if not path.exists():
        raise ToolkitError(
            f"dataset dir not found: {path} (create one with `toolkit data prepare` or `toolkit data synth`)"
        )
    if not path.is_dir():
        raise ToolkitError(f"dataset path is not a directory: {path}")
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
    arrays = _read_npz(path / ARRAYS, "dataset arrays")
    absent = [n for n in ARRAY_NAMES if n not in arrays]
    if absent:
        raise ToolkitError(f"dataset arrays {path / ARRAYS} lack {', '.join(absent)}")
    arrays = {n: arrays[n] for n in ARRAY_NAMES}
    wrong = [f"{n} ({a.dtype})" for n, a in arrays.items() if a.dtype != np.int64]
    if wrong:
        raise ToolkitError(f"dataset arrays {path / ARRAYS} are not int64: {', '.join(wrong)}")
    if verify:
        got = arrays_sha256(arrays)
        if got != meta["arrays_sha256"]:
            raise ToolkitError(
                f"dataset arrays {path / ARRAYS} do not match their descriptor (sha256 {got[:12]} != "
                f"{str(meta['arrays_sha256'])[:12]}); re-prepare with --force"
            )
    extras = _read_npz(path / EXTRAS, "dataset extras") if (path / EXTRAS).is_file() else {}
    if verify and extras and arrays_sha256(extras) != meta.get("extras_sha256"):
        raise ToolkitError(f"dataset extras {path / EXTRAS} do not match their descriptor; re-prepare with --force")
    ds = Dataset(path=path, meta=meta, extras=extras, **arrays)
    _check_shapes(ds)
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
    out_dir = Path(out_dir)
    check_output(out_dir, force)
    if n_items is None:
        n_items = int(max(int(h.max()) for h in histories if len(h))) if histories else 0
    try:
        arrays = build_protocol(histories, n_items, seq_len, seed, progress=progress)
    except UserDataError as e:
        raise e.named(user_ids) from None  # the user's own id from the source, not our internal index
    sha = arrays_sha256(arrays)
    lengths = np.diff(arrays["user_ptr"])
    meta = {
        "schema": SCHEMA,
        "n_users": int(lengths.size),
        "n_items": int(n_items),
        "n_interactions": int(lengths.sum()),
        "n_train_rows": int(arrays["train_user"].size),
        "n_valid_users": int(arrays["valid_user"].size),
        "n_test_users": int(arrays["test_user"].size),
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
        "arrays": {n: list(arrays[n].shape) for n in ARRAY_NAMES},
        "arrays_sha256": sha,
    }
    if extras:
        meta["extras_sha256"] = arrays_sha256(extras)
    meta["versions"] = versions()
    meta = seal_descriptor(meta)  # also fails on a non-serialisable meta_extra before touching the disk

    existing = _existing_dataset_sha(out_dir)
    if existing == sha and not force:
        ds = load_dataset(out_dir)
        ds.unchanged = True
        return ds
    if existing and existing != sha and not force:
        raise ToolkitError(
            f"output dir {out_dir} already holds a different dataset (arrays sha256 {existing[:12]}, "
            f"new {sha[:12]}); use --force to replace it"
        )
    with track_step(progress, f"writing {out_dir.name}/", total=1), atomic_dir(out_dir, force=True) as tmp:
        _write_npz(tmp / ARRAYS, arrays)
        if extras:
            _write_npz(tmp / EXTRAS, extras)
        write_descriptor_json(tmp / DESCRIPTOR, meta)
        _make_readable(tmp)
    return Dataset(path=out_dir, meta=meta, extras=dict(extras or {}), **arrays)



def prepare(
    source: str | Path,
    out: str | Path,
    format: str | None = None,
    seq_len: int = 10,
    min_user_count: int = 5,
    seed: int = 0,
    force: bool = False,
    progress=None,
) -> Dataset:
    """Source file -> dataset dir: load, drop short users, re-index items to 1..N, run the protocol, write."""
    from toolkit.data.loaders import FORMATS, detect_format, load_source
    from toolkit.data.protocol import clean_histories
    from toolkit.io import sha256_file

    source = Path(source)
    fmt = format or detect_format(source)
    if fmt not in FORMATS:
        raise ToolkitError(f"unknown source format '{fmt}' (expected one of {', '.join(FORMATS)})")
    if seq_len < 1:
        raise ToolkitError(f"--seq-len must be >= 1, got {seq_len}")
    check_output(out, force)
    raw = load_source(source, fmt, progress)
    histories, n_items, dropped, kept = clean_histories(raw.histories, min_user_count)
    with track_step(progress, "hashing source", total=1):
        source_sha = sha256_file(source)
    meta_extra = {
        "format": fmt,
        "source": str(source.resolve()),
        "source_sha256": source_sha,
        "source_rows": raw.n_rows,
        "source_users": len(raw.histories),
        "min_user_count": int(min_user_count),
        "dropped_users": int(sum(dropped.values())),
        "dropped_users_detail": dropped,
        "duplicate_rows_dropped": int(raw.duplicate_rows),
    }
    return save_dataset(out, histories, meta_extra, seq_len, seed, force, n_items=n_items, progress=progress,
                        user_ids=[raw.user_ids[i] for i in kept])
