"""The papers' evaluation protocol: clean histories, sliding windows, sampled negatives, valid/test splits.

Per user (chronological history h[0..n-1], n >= 3):
  training targets   h[t], t = 1..n-3, window = the L items before t, with 4 negatives;
  validation target  h[n-2], window = items before n-2, ranked among 100 candidates (1 + 99 negatives);
  test target        h[n-1], window = items before n-1 (includes the validation item), 100 candidates.
Negatives are uniform over the items the user never touched anywhere in the history, distinct within a row.
Everything is a pure function of (histories, n_items, seq_len, seed): same inputs, same arrays.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np

from toolkit.errors import ToolkitError

MIN_HISTORY = 3  # one training-free user still needs a validation and a test item with context
N_TRAIN_NEGATIVES = 4
N_CANDIDATES = 100  # 1 positive + 99 negatives for validation and test
_MAX_REJECTION_ROUNDS = 64
CHUNK_USERS = 1 << 17  # users per protocol chunk (memory bound of prepare); datasets up to this size: one chunk


class UserDataError(ToolkitError):
    """A problem with one user's history. `user` is the internal index; the dataset store re-raises it naming the
    user's own id from the source file (`named`)."""

    def __init__(self, user: int, detail: str):
        self.user, self.detail = int(user), detail
        super().__init__(f"user {self.user} (index) {detail}")

    def named(self, user_ids) -> ToolkitError:
        if user_ids is None or not 0 <= self.user < len(user_ids):
            return ToolkitError(str(self))
        return ToolkitError(f"user '{user_ids[self.user]}' {self.detail}")


@contextlib.contextmanager
def track_step(progress, description: str, total: float | None = None) -> Iterator[Callable[[float], None]]:
    """A progress task (toolkit.reporter.Bars: the CLI's bars) for one long step (no-op when progress is None);
    yields advance(n)."""
    if progress is None:
        yield lambda n=1: None
        return
    task = progress.add_task(description, total=total)
    try:
        yield lambda n=1: progress.advance(task, n)
    finally:
        done = total if total is not None else 1
        progress.update(task, total=done, completed=done)


def clean_histories(
    raw: list[np.ndarray], min_user_count: int
) -> tuple[list[np.ndarray], int, dict[str, int], np.ndarray]:
    """Drop short users, re-index the items that remain to 1..N in ascending raw-id order.

    Returns (histories, n_items, dropped counts, kept user positions in `raw`). Users with fewer than 3 items
    cannot be split (counted as fewer_than_3_items); users below min_user_count are counted separately.
    """
    if min_user_count < 1:
        raise ToolkitError(f"--min-user-count must be >= 1, got {min_user_count}")
    lengths = np.fromiter((len(h) for h in raw), dtype=np.int64, count=len(raw))
    too_short = lengths < MIN_HISTORY
    below_min = ~too_short & (lengths < min_user_count)
    kept = np.flatnonzero(~(too_short | below_min))
    dropped = {"fewer_than_3_items": int(too_short.sum()), "below_min_user_count": int(below_min.sum())}
    if kept.size == 0:
        raise ToolkitError(
            f"no user left after filtering: {len(raw)} users, {dropped['fewer_than_3_items']} with fewer than "
            f"3 items, {dropped['below_min_user_count']} below --min-user-count {min_user_count}"
        )
    flat = np.concatenate([raw[i] for i in kept]).astype(np.int64, copy=False)
    used, dense = np.unique(flat, return_inverse=True)  # sorted raw ids -> 0..N-1
    dense = dense.reshape(-1).astype(np.int64) + 1
    bounds = np.cumsum(lengths[kept])[:-1]
    return list(np.split(dense, bounds)), int(used.size), dropped, kept


def gather_windows(items: np.ndarray, base: np.ndarray, times: np.ndarray, seq_len: int) -> np.ndarray:
    """Rows of the L items before position `times` of the history starting at `base` in `items`.

    Left-aligned, right-padded with 0: a target at position t < L gets its t items then zeros.
    """
    start = np.maximum(times - seq_len, 0)  # [R]
    length = times - start  # [R]
    j = np.arange(seq_len)  # [L]
    if items.size == 0:
        return np.zeros((times.size, seq_len), dtype=np.int64)
    idx = (base + start)[:, None] + j  # [R, L]
    mask = j < length[:, None]  # [R, L]
    return np.where(mask, items[np.minimum(idx, items.size - 1)], 0).astype(np.int64)


def windows_at(history: np.ndarray, times: np.ndarray, seq_len: int) -> np.ndarray:
    """Window of the `seq_len` items before each position in `times`: [len(times), seq_len], right-padded.

    times are positions in `history` (0..len(history)); time t sees history[max(0, t-L):t].
    """
    history = np.asarray(history, dtype=np.int64)
    times = np.asarray(times, dtype=np.int64).reshape(-1)
    if history.ndim != 1:
        raise ToolkitError(f"history must be 1-D, got shape {history.shape}")
    if seq_len < 1:
        raise ToolkitError(f"seq_len must be >= 1, got {seq_len}")
    if times.size and (times.min() < 0 or times.max() > history.size):
        raise ToolkitError(f"times must lie in 0..{history.size}, got {times.min()}..{times.max()}")
    return gather_windows(history, np.zeros_like(times), times, seq_len)


class KeySet(np.ndarray):
    """Sorted unique keys user*(n_items+1)+item plus a hashed bitmap of them: a query that misses the bitmap is
    certainly absent, so only the few that hit it are binary-searched (exact either way, several times faster)."""

    bits: np.ndarray


def _with_filter(keys: np.ndarray) -> KeySet:
    ks = keys.view(KeySet)
    size = 1 << max(16, int(keys.size * 16).bit_length())  # ~16-32 slots per key: few false hits
    ks.bits = np.zeros(size, dtype=bool)
    ks.bits[keys & (size - 1)] = True
    return ks


def _touched(keys: np.ndarray, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Whether each (user, item) pair is in the sorted key set user*(n_items+1)+item. users [R,1], items [R,K]."""
    query = users * (n_items + 1) + items
    bits = getattr(keys, "bits", None)
    if bits is not None and keys.size:
        maybe = bits[query & (bits.size - 1)]
        out = np.zeros(query.shape, dtype=bool)
        q = query[maybe]
        keys = keys.view(np.ndarray)
        out[maybe] = keys[np.minimum(np.searchsorted(keys, q), keys.size - 1)] == q
        return out
    keys = keys.view(np.ndarray)
    if keys.size == 0:
        return np.zeros(query.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    return keys[pos] == query


def _duplicates(rows: np.ndarray) -> np.ndarray:
    """Mask of entries equal to an earlier entry of the same row (the first occurrence stays valid)."""
    if rows.shape[1] > 8 and rows.shape[0] > 1024:  # most rows have no repeat: find the few that do first
        ranked = np.sort(rows, axis=1)
        some = np.flatnonzero((ranked[:, 1:] == ranked[:, :-1]).any(axis=1))
        mask = np.zeros(rows.shape, dtype=bool)
        if some.size:
            mask[some] = _duplicates_sorted(rows[some])
        return mask
    return _duplicates_sorted(rows)


def _duplicates_sorted(rows: np.ndarray) -> np.ndarray:
    order = np.argsort(rows, axis=1, kind="stable")
    ranked = np.take_along_axis(rows, order, axis=1)
    dup_sorted = np.zeros_like(rows, dtype=bool)
    dup_sorted[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
    mask = np.zeros_like(dup_sorted)
    np.put_along_axis(mask, order, dup_sorted, axis=1)
    return mask


def touched_keys(user_ptr: np.ndarray, user_items: np.ndarray, n_items: int) -> np.ndarray:
    """Sorted unique user*(n_items+1)+item over every (user, item) interaction."""
    hist_users = np.repeat(np.arange(user_ptr.size - 1, dtype=np.int64), np.diff(user_ptr))
    keys = np.sort(hist_users * (n_items + 1) + user_items)
    return keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if keys.size else keys


def touched_key_set(user_ptr: np.ndarray, user_items: np.ndarray, n_items: int) -> KeySet:
    """Every (user, item) pair of the histories, for fast `sample_negatives` calls over many batches."""
    return _with_filter(touched_keys(user_ptr, user_items, n_items))


def sample_negatives(
    rng: np.random.Generator,
    users: np.ndarray,
    k: int,
    n_items: int,
    user_ptr: np.ndarray,
    user_items: np.ndarray,
    keys: np.ndarray | None = None,
) -> np.ndarray:
    """[len(users), k] items in 1..n_items, never touched by that user, distinct within each row.

    Rejection sampling: draw iid, redraw only entries that are touched or repeat an earlier entry. The rule is
    symmetric in the untouched items, so each row is a uniform k-subset of them.
    """
    users = np.asarray(users, dtype=np.int64)
    if users.size == 0:
        return np.zeros((0, k), dtype=np.int64)
    if keys is None:
        keys = touched_keys(user_ptr, user_items, n_items)  # sorted (user, item) pairs
    n_touched = np.bincount(keys // (n_items + 1), minlength=user_ptr.size - 1)
    free = n_items - n_touched[users]
    if free.min() < k:
        u = int(users[np.argmin(free)])
        raise UserDataError(
            u, f"touched {int(n_touched[u])} of {n_items} items: fewer than {k} untouched items left to "
            f"sample negatives from (use a dataset with more items)"
        )
    out = rng.integers(1, n_items + 1, size=(users.size, k), dtype=np.int64)
    bad = _touched(keys, users[:, None], out, n_items) | _duplicates(out)
    rows = np.flatnonzero(bad.any(axis=1))
    bad = bad[rows]
    for _ in range(_MAX_REJECTION_ROUNDS):
        if rows.size == 0:
            return out
        sub = out[rows]  # [r, k] rows holding at least one bad entry
        sub[bad] = rng.integers(1, n_items + 1, size=int(bad.sum()), dtype=np.int64)
        out[rows] = sub
        redrawn_touched = np.zeros_like(bad)
        redrawn_touched[bad] = _touched(keys, np.broadcast_to(users[rows, None], bad.shape)[bad], sub[bad], n_items)
        bad = redrawn_touched | _duplicates(sub)
        hit = bad.any(axis=1)
        rows, bad = rows[hit], bad[hit]
    for r in rows:  # users who touched most of the catalogue: exact draw from their complement
        u = users[r]
        complement = np.setdiff1d(np.arange(1, n_items + 1), user_items[user_ptr[u] : user_ptr[u + 1]])
        out[r] = rng.choice(complement, size=k, replace=False)
    return out


def build_protocol(
    histories: list[np.ndarray], n_items: int, seq_len: int, seed: int, progress=None
) -> dict[str, np.ndarray]:
    """All arrays of the on-disk dataset (int64), from cleaned histories with items in 1..n_items."""
    if not histories:
        raise ToolkitError("no users to build a dataset from")
    user_ptr, user_items = to_csr(histories)
    return build_protocol_csr(user_ptr, user_items, n_items, seq_len, seed, progress)


def to_csr(histories: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(user_ptr [U+1], user_items [sum n_u]) of per-user arrays."""
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    user_ptr = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=user_ptr[1:])
    user_items = np.concatenate(histories).astype(np.int64, copy=False) if histories else np.zeros(0, np.int64)
    return user_ptr, user_items


def check_csr(user_ptr: np.ndarray, user_items: np.ndarray, n_items: int, seq_len: int) -> None:
    """The protocol's preconditions, one line each."""
    if seq_len < 1:
        raise ToolkitError(f"--seq-len must be >= 1, got {seq_len}")
    if user_ptr.size < 2:
        raise ToolkitError("no users to build a dataset from")
    lengths = np.diff(user_ptr)
    if lengths.min() < MIN_HISTORY:
        u = int(np.argmin(lengths))
        raise UserDataError(u, f"has {int(lengths[u])} items; every user needs at least {MIN_HISTORY}")
    if user_items.min() < 1 or user_items.max() > n_items:
        raise ToolkitError(f"item ids must lie in 1..{n_items}, got {user_items.min()}..{user_items.max()}")


def build_protocol_csr(
    user_ptr: np.ndarray, user_items: np.ndarray, n_items: int, seq_len: int, seed: int, progress=None,
    chunk_users: int | None = None,
) -> dict[str, np.ndarray]:
    """build_protocol on a CSR history: the chunks of `protocol_chunks`, concatenated."""
    check_csr(user_ptr, user_items, n_items, seq_len)
    parts = list(protocol_chunks(user_ptr, user_items, n_items, seq_len, seed, progress, chunk_users))
    arrays = {"user_ptr": user_ptr, "user_items": user_items}
    for name in CHUNK_ARRAYS:
        arrays[name] = parts[0][name] if len(parts) == 1 else np.concatenate([p[name] for p in parts])
    return {k: arrays[k] for k in ("user_ptr", "user_items", *CHUNK_ARRAYS)}


CHUNK_ARRAYS = (
    "train_seqs", "train_cands", "train_user", "train_time",
    "valid_seqs", "valid_cands", "valid_user",
    "test_seqs", "test_cands", "test_user",
)  # fmt: skip


def chunk_bounds(n_users: int, chunk_users: int | None = None) -> list[tuple[int, int]]:
    chunk_users = chunk_users or CHUNK_USERS
    return [(lo, min(lo + chunk_users, n_users)) for lo in range(0, n_users, chunk_users)]


def protocol_chunks(
    user_ptr: np.ndarray, user_items: np.ndarray, n_items: int, seq_len: int, seed: int, progress=None,
    chunk_users: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """The protocol's per-user arrays for users [lo, hi) of each chunk, in user order (memory: one chunk).

    Chunk c draws its negatives from the streams SeedSequence(seed, spawn_key=(3c + j,)), j = train/valid/test;
    chunk 0 is exactly SeedSequence(seed).spawn(3), so a dataset of at most `chunk_users` users has the arrays
    the single-pass protocol always produced. Row arrays of chunk c concatenate in order to the whole dataset's.
    """
    bounds = chunk_bounds(user_ptr.size - 1, chunk_users)
    with track_step(progress, "training windows + negatives, valid/test splits", total=len(bounds)) as advance:
        for c, (lo, hi) in enumerate(bounds):
            yield protocol_chunk(user_ptr, user_items, n_items, seq_len, seed, c, lo, hi)
            advance(1)


def protocol_chunk(
    user_ptr: np.ndarray, user_items: np.ndarray, n_items: int, seq_len: int, seed: int, c: int, lo: int, hi: int
) -> dict[str, np.ndarray]:
    """Chunk c (users lo..hi-1) of `protocol_chunks`; independent of every other chunk (parallel-safe)."""
    ptr = user_ptr[lo:hi + 1] - user_ptr[lo]
    items = user_items[user_ptr[lo]:user_ptr[hi]]
    streams = [np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3 * c + j,))) for j in range(3)]
    try:
        out = _protocol_users(ptr, items, n_items, seq_len, streams)
    except UserDataError as e:
        raise UserDataError(e.user + lo, e.detail) from None  # the chunk's local index -> the dataset's
    for name in ("train_user", "valid_user", "test_user"):
        out[name] += lo
    return out


def _protocol_users(
    user_ptr: np.ndarray, user_items: np.ndarray, n_items: int, seq_len: int, streams: list[np.random.Generator]
) -> dict[str, np.ndarray]:
    """The arrays for one CSR block of users (local user ids 0..U-1)."""
    lengths = np.diff(user_ptr)
    n_users = lengths.size
    keys = _with_filter(touched_keys(user_ptr, user_items, n_items))
    train_rng, valid_rng, test_rng = streams

    # Training rows: targets at positions 1..n-3 of every user.
    counts = np.maximum(lengths - 3, 0)  # [U]
    train_user = np.repeat(np.arange(n_users, dtype=np.int64), counts)  # [R]
    row_start = np.repeat(np.cumsum(counts) - counts, counts)
    train_time = np.arange(train_user.size, dtype=np.int64) - row_start + 1  # [R]
    base = user_ptr[train_user]
    train_seqs = gather_windows(user_items, base, train_time, seq_len)  # [R, L]
    negatives = sample_negatives(train_rng, train_user, N_TRAIN_NEGATIVES, n_items, user_ptr, user_items, keys)
    train_cands = np.concatenate([user_items[base + train_time][:, None], negatives], axis=1)  # [R, 5]
    del negatives, base, row_start

    arrays = {"train_seqs": train_seqs, "train_cands": train_cands, "train_user": train_user, "train_time": train_time}
    all_users = np.arange(n_users, dtype=np.int64)
    for name, rng, offset in (("valid", valid_rng, 2), ("test", test_rng, 1)):
        times = lengths - offset  # [U]
        seqs = gather_windows(user_items, user_ptr[:-1], times, seq_len)  # [U, L]
        negs = sample_negatives(rng, all_users, N_CANDIDATES - 1, n_items, user_ptr, user_items, keys)
        arrays[f"{name}_seqs"] = seqs
        arrays[f"{name}_cands"] = np.concatenate([user_items[user_ptr[:-1] + times][:, None], negs], axis=1)
        arrays[f"{name}_user"] = all_users.copy()
    return arrays
