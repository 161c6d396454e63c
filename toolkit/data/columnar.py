"""The columnar prepare path: an interactions CSV/TSV parsed by pyarrow into a CSR history, no per-row Python.

It computes exactly what `loaders.load_interactions` + `protocol.clean_histories` compute (same user order, same
per-user time order with file order breaking ties, same raw-id ordering of items: canonical integers sort as
numbers, anything else as text, "007" != "7"), so both paths give byte-identical datasets. Anything unusual
(a short row, a bad or non-finite timestamp, an empty id, invalid UTF-8, whitespace-separated columns, a CSV
pyarrow will not read) is handed to the in-memory loader, which either reads it or names the offending line.

pyarrow over polars, by measurement on a 10.6M-row (262 MB) log, 2 threads, this machine (benches/README.md):
parse + id check 2.6-3.3 s vs 3.2-8.1 s, peak RSS 1.6 GB vs 1.8 GB; pyarrow also writes the synthetic log.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.data.loaders import INTEGER_TIME, _columns, _open_text, load_interactions  # one header rule for both paths
from toolkit.data.protocol import MIN_HISTORY, track_step
from toolkit.errors import ToolkitError


@dataclass
class RawCSR:
    """Per-user chronological raw item codes in CSR form; users in sorted-label order."""

    user_ptr: np.ndarray  # [U+1]
    items: np.ndarray  # [n_rows] raw item codes (rank of the raw item id)
    n_rows: int  # interactions kept (after dropping exact duplicates)
    labels: object = None  # the users' own ids in code order (a pyarrow array or a list); read only for messages
    duplicate_rows: int = 0  # exact duplicate (user, item, timestamp) rows dropped, first kept

    @property
    def n_users(self) -> int:
        return self.user_ptr.size - 1

    def user_ids(self, kept: np.ndarray) -> "_Labels":
        return _Labels(self.labels, kept)


class _Labels:
    """user_ids[i] = the source id of kept user i, converted only when a message needs it."""

    def __init__(self, labels, kept: np.ndarray):
        self.labels, self.kept = labels, kept

    def __len__(self) -> int:
        return 0 if self.labels is None else len(self.kept)

    def __getitem__(self, i: int) -> str:
        v = self.labels[int(self.kept[i])]
        return str(v.as_py() if hasattr(v, "as_py") else v)


class _Unusual(Exception):
    """Input the columnar reader does not handle: use the in-memory loader (exact messages, line numbers)."""


def from_histories(histories: list[np.ndarray], n_rows: int, user_ids=None, duplicate_rows: int = 0) -> RawCSR:
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    ptr = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=ptr[1:])
    items = np.concatenate(histories).astype(np.int64, copy=False) if histories else np.zeros(0, np.int64)
    return RawCSR(ptr, items, n_rows, user_ids, duplicate_rows)


def load_interactions_csr(path: str | Path, progress=None) -> RawCSR:
    """load_interactions, columnar; falls back to it for anything unusual."""
    path = Path(path)
    try:
        return _read(path, progress)
    except _Unusual:
        raw = load_interactions(path, progress)
        return from_histories(raw.histories, raw.n_rows, raw.user_ids, raw.duplicate_rows)


def _first_row(path: Path) -> tuple[str, list[str], int]:
    """(delimiter, first non-blank row, lines up to and including it)."""
    with _open_text(path) as f:
        try:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    delim = next((d for d in ("\t", ",", ";") if d in line), None)
                    if delim is None or n > 1:
                        raise _Unusual  # whitespace-separated, or blank lines first
                    row = next(csv.reader([line], delimiter=delim))
                    if all(not c.strip() for c in row):
                        raise _Unusual  # a row of empty cells, which the in-memory loader skips
                    return delim, row, n
        except (UnicodeDecodeError, csv.Error):
            raise _Unusual from None
    raise _Unusual  # only blank lines: the in-memory loader says so


def _read(path: Path, progress) -> RawCSR:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    delim, first, first_line = _first_row(path)
    ucol, icol, tcol, has_header = _columns(path, first)
    skip = first_line if has_header else first_line - 1
    names = [f"c{i}" for i in range(len(first))]
    with track_step(progress, f"reading {path.name} (columnar)", total=1):
        try:
            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(skip_rows=skip, column_names=names, block_size=1 << 24),
                parse_options=pacsv.ParseOptions(delimiter=delim),
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.string() for n in names},
                    include_columns=[names[ucol], names[icol], names[tcol]],
                    strings_can_be_null=False, quoted_strings_can_be_null=False,
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
            raise _Unusual from None
    n_rows = table.num_rows
    if n_rows == 0:
        raise _Unusual
    with track_step(progress, "user/item codes, time order", total=4) as advance:
        users = pc.utf8_trim_whitespace(table.column(names[ucol]))
        items = pc.utf8_trim_whitespace(table.column(names[icol]))
        times = pc.utf8_trim_whitespace(table.column(names[tcol]))
        del table
        for col in (users, items):
            if pc.any(pc.equal(pc.utf8_length(col), 0)).as_py():
                raise _Unusual  # an empty id (or a blank row): the in-memory loader skips or names it
        try:
            ts = pc.cast(times, pa.float64()).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise _Unusual from None
        if not np.isfinite(ts).all():
            raise _Unusual
        if pc.all(pc.match_substring_regex(times, INTEGER_TIME)).as_py():  # exactly, as loaders.exact_times
            try:
                ts = pc.cast(times, pa.int64()).to_numpy()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass  # beyond int64: float64, as the in-memory loader
        advance(1)
        n_users, user_code, labels = _codes(users)
        del users
        advance(1)
        _, item_code, _ = _codes(items)
        del items
        advance(1)
        # by time, file order on ties (a time-ordered log needs no sort) ...
        order = None if bool((ts[1:] >= ts[:-1]).all()) else np.argsort(ts, kind="stable")
        # ... then grouped by user, keeping that order
        order = _stable_argsort_codes(user_code) if order is None else order[_stable_argsort_codes(user_code[order])]
        user_sorted, codes, ts = user_code[order], item_code[order].astype(np.int64, copy=False), ts[order]
        del user_code, item_code
        keep = _first_of_duplicates(user_sorted, ts, codes, lambda rows: pc.take(times, pa.array(order[rows]))  # noqa: F821 - called before the del below
                                    .to_numpy(zero_copy_only=False))
        del ts, times, order
        duplicates = 0
        if keep is not None:
            duplicates = int(keep.size - keep.sum())
            user_sorted, codes = user_sorted[keep], codes[keep]
        counts = np.bincount(user_sorted, minlength=n_users)
        ptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        advance(1)
    return RawCSR(ptr, codes, n_rows - duplicates, labels, duplicates)


def _first_of_duplicates(user: np.ndarray, ts: np.ndarray, item: np.ndarray, written=None) -> np.ndarray | None:
    """Keep-mask dropping exact duplicate (user, item, timestamp) rows but the first in file order, as the in-memory
    loader does; None when there are none. Rows arrive sorted by (user, time) with file order on ties, so only rows
    sharing a (user, time) with a neighbour can be duplicates, and only those few are compared."""
    same = (user[1:] == user[:-1]) & (ts[1:] == ts[:-1])
    if not same.any():
        return None
    tied = np.zeros(user.size, dtype=bool)
    tied[1:] |= same
    tied[:-1] |= same
    rows = np.flatnonzero(tied)  # in file order within each (user, time) group
    # exact: integers, and the timestamp as written (written(rows) -> its strings) where given
    if written is not None:
        _, tcode = np.unique(np.asarray(written(rows)).astype(str), return_inverse=True)
    else:
        tcode = ts[rows]
    key = np.stack([user[rows].astype(np.int64), item[rows].astype(np.int64),
                    np.asarray(tcode).reshape(-1).astype(np.int64) if written is not None else tcode], axis=1)
    _, first = np.unique(key, axis=0, return_index=True)
    keep = np.ones(user.size, dtype=bool)
    keep[rows] = False
    keep[rows[first]] = True
    return None if keep.all() else keep


def _codes(col) -> tuple[int, np.ndarray, object]:
    """(number of distinct labels, code of each label) with loaders._codes' order: canonical integers as numbers
    when every label is one, else text (code-point order = UTF-8 byte order)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        numeric = pc.cast(col, pa.int64())
        canonical = pc.all(pc.equal(pc.cast(numeric, pa.string()), col)).as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        canonical = False
    values = numeric if canonical else col
    enc = pc.dictionary_encode(values.combine_chunks() if hasattr(values, "combine_chunks") else values)
    dictionary, indices = enc.dictionary, enc.indices.to_numpy(zero_copy_only=False)  # hashing, no sort of rows
    by_label = pc.sort_indices(dictionary)
    rank = np.empty(len(dictionary), dtype=np.int64)
    rank[by_label.to_numpy()] = np.arange(len(dictionary), dtype=np.int64)
    return len(dictionary), rank[indices], dictionary.take(by_label)  # labels in code order


def _stable_argsort_codes(codes: np.ndarray) -> np.ndarray:
    """np.argsort(codes, kind="stable") for codes in 0..2^32-1, as two 16-bit radix passes (numpy sorts 16-bit
    keys by radix, O(n), instead of timsort)."""
    low = (codes & 0xFFFF).astype(np.uint16)
    if codes.size == 0 or codes.max() < 1 << 16:
        return np.argsort(low, kind="stable")
    if codes.max() >= 1 << 32:
        return np.argsort(codes, kind="stable")
    first = np.argsort(low, kind="stable")
    del low
    return first[np.argsort((codes[first] >> 16).astype(np.uint16), kind="stable")]


def clean_csr(raw: RawCSR, min_user_count: int) -> tuple[np.ndarray, np.ndarray, int, dict[str, int], np.ndarray]:
    """protocol.clean_histories on a CSR: (user_ptr, items re-indexed 1..N in raw order, N, dropped counts, kept
    user positions in `raw`)."""
    if min_user_count < 1:
        raise ToolkitError(f"--min-user-count must be >= 1, got {min_user_count}")
    lengths = np.diff(raw.user_ptr)
    too_short = lengths < MIN_HISTORY
    below_min = ~too_short & (lengths < min_user_count)
    keep = ~(too_short | below_min)
    dropped = {"fewer_than_3_items": int(too_short.sum()), "below_min_user_count": int(below_min.sum())}
    if not keep.any():
        raise ToolkitError(
            f"no user left after filtering: {lengths.size} users, {dropped['fewer_than_3_items']} with fewer than "
            f"3 items, {dropped['below_min_user_count']} below --min-user-count {min_user_count}"
        )
    flat = raw.items[np.repeat(keep, lengths)]
    used = np.bincount(flat) > 0  # raw codes are dense ranks: np.unique's sorted ids without a sort
    dense = np.cumsum(used)[flat]  # code -> 1..N in raw order
    del flat
    kept_lengths = lengths[keep]
    ptr = np.zeros(kept_lengths.size + 1, dtype=np.int64)
    np.cumsum(kept_lengths, out=ptr[1:])
    return ptr, dense.astype(np.int64, copy=False), int(used.sum()), dropped, np.flatnonzero(keep)
