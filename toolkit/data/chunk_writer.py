"""The forked chunk writer of a large dataset (layout "npy"): each protocol chunk computed and written in place
into preallocated .npy files, in this process or in forked workers that inherit the CSR (never pickled) and
write disjoint rows. toolkit.data.store owns the dataset dir; this module only fills its arrays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from toolkit.data.protocol import UserDataError, protocol_chunk, track_step


def create_npy(path: Path, shape: tuple[int, ...]) -> int:
    """An int64 .npy file of `shape`: the header, then the data area allocated (sparse) to be filled in place.
    Returns the header length (the data's offset)."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(f, {"descr": np.dtype(np.int64).str, "fortran_order": False,
                                                 "shape": shape})
        offset = f.tell()
        f.truncate(offset + int(np.prod(shape, dtype=np.int64)) * 8)
    return offset


def write_rows(path: Path, offset: int, row0: int, a: np.ndarray) -> None:
    """Rows row0.. of an array created by create_npy (several processes may fill disjoint rows at once)."""
    a = np.ascontiguousarray(a, dtype=np.int64)
    row_bytes = a.itemsize * int(np.prod(a.shape[1:], dtype=np.int64))
    fd = os.open(path, os.O_WRONLY)
    try:
        view, pos = memoryview(a).cast("B"), offset + row0 * row_bytes
        while view:
            n = os.pwrite(fd, view, pos)
            view, pos = view[n:], pos + n
    finally:
        os.close(fd)


_FORKED: dict = {}  # what a forked chunk worker reads: the CSR and the target files (inherited, never pickled)


class _ChunkUserError(Exception):
    """A UserDataError crossing the process boundary (plain args, so it pickles)."""

    def __init__(self, user: int, detail: str):
        super().__init__(user, detail)


def _fill_chunk(c: int, lo: int, hi: int) -> None:
    """Compute protocol chunk c (users lo..hi-1) and write its rows into the dataset's .npy files in place."""
    a = _FORKED
    try:
        out = protocol_chunk(a["user_ptr"], a["user_items"], a["n_items"], a["seq_len"], a["seed"], c, lo, hi)
    except UserDataError as e:
        raise _ChunkUserError(e.user, e.detail) from None
    for name, arr in out.items():
        row0 = a["train_start"][c] if name.startswith("train_") else lo
        write_rows(a["folder"] / f"{name}.npy", a["offsets"][name], row0, arr)


def fill_chunks(progress, workers: int, **forked) -> None:
    """Every protocol chunk into the .npy files, in this process or in `workers` forked ones (each writes its own
    disjoint rows). `forked`: user_ptr, user_items, n_items, seq_len, seed, folder, offsets, bounds, train_start."""
    _FORKED.update(forked)
    try:
        _run_chunks(forked["bounds"], progress, workers, "training windows + negatives, valid/test splits")
    except _ChunkUserError as e:
        raise UserDataError(*e.args) from None
    finally:
        _FORKED.clear()


def _run_chunks(bounds, progress, workers: int, label: str) -> None:
    if workers <= 1 or len(bounds) == 1:
        with track_step(progress, label, total=len(bounds)) as advance:
            for c, (lo, hi) in enumerate(bounds):
                _fill_chunk(c, lo, hi)
                advance(1)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool, track_step(
        progress, f"{label} ({workers} processes)", total=len(bounds)
    ) as advance:
        for future in [pool.submit(_fill_chunk, c, lo, hi) for c, (lo, hi) in enumerate(bounds)]:
            future.result()
            advance(1)
