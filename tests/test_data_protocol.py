"""The papers' protocol: windows, targets, held-out items, negatives, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.data.protocol import (
    N_CANDIDATES,
    build_protocol,
    clean_histories,
    sample_negatives,
    windows_at,
)
from toolkit.data.store import arrays_sha256
from toolkit.errors import ToolkitError


def _histories(n_users=60, n_items=300, seed=3, lo=3, hi=30, repeats=False):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_users):
        n = int(rng.integers(lo, hi + 1))
        out.append(rng.integers(1, n_items + 1, size=n) if repeats else rng.choice(n_items, n, replace=False) + 1)
    return [h.astype(np.int64) for h in out]


def test_windows_at_left_aligned_right_padded():
    h = np.array([11, 12, 13, 14, 15])
    got = windows_at(h, np.array([0, 1, 3, 5]), 3)
    assert got.tolist() == [[0, 0, 0], [11, 0, 0], [11, 12, 13], [13, 14, 15]]
    assert got.dtype == np.int64
    with pytest.raises(ToolkitError, match="times must lie"):
        windows_at(h, np.array([6]), 3)


def test_user_with_three_items_is_held_out_only():
    arrays = build_protocol([np.array([7, 8, 9]), np.array([1, 2, 3, 4, 5])], n_items=200, seq_len=4, seed=0)
    assert arrays["train_user"].tolist() == [1, 1]  # only the 5-item user trains, on positions 1 and 2
    assert arrays["train_time"].tolist() == [1, 2]
    assert arrays["train_seqs"].tolist() == [[1, 0, 0, 0], [1, 2, 0, 0]]
    assert arrays["train_cands"][:, 0].tolist() == [2, 3]
    assert arrays["valid_seqs"].tolist() == [[7, 0, 0, 0], [1, 2, 3, 0]]
    assert arrays["valid_cands"][:, 0].tolist() == [8, 4]
    assert arrays["test_seqs"].tolist() == [[7, 8, 0, 0], [1, 2, 3, 4]]
    assert arrays["test_cands"][:, 0].tolist() == [9, 5]
    assert arrays["user_ptr"].tolist() == [0, 3, 8]


@pytest.mark.parametrize("seq_len", [1, 4, 10])
def test_training_rows_use_only_the_past_and_never_held_out_positions(seq_len):
    hist = _histories(repeats=True)
    a = build_protocol(hist, n_items=300, seq_len=seq_len, seed=1)
    lengths = np.array([len(h) for h in hist])
    assert a["train_user"].size == int(np.maximum(lengths - 3, 0).sum())
    for r in range(a["train_user"].size):
        u, t = int(a["train_user"][r]), int(a["train_time"][r])
        h = hist[u]
        assert 1 <= t <= len(h) - 3  # never the validation (n-2) or test (n-1) position
        assert a["train_cands"][r, 0] == h[t]
        past = h[max(0, t - seq_len) : t]  # exactly the most recent items before the target
        assert a["train_seqs"][r, : past.size].tolist() == past.tolist()
        assert not a["train_seqs"][r, past.size :].any()
    for name, offset in (("valid", 2), ("test", 1)):
        for u, h in enumerate(hist):
            t = len(h) - offset
            past = h[max(0, t - seq_len) : t]
            assert a[f"{name}_cands"][u, 0] == h[t]
            assert a[f"{name}_seqs"][u, : past.size].tolist() == past.tolist()
            assert not a[f"{name}_seqs"][u, past.size :].any()


def test_no_held_out_item_is_a_training_target_without_repeats(synth_dataset):
    ds = synth_dataset  # synthetic histories never repeat an item within a user
    n = np.diff(ds.user_ptr)
    held = {(u, int(ds.user_items[ds.user_ptr[u] + n[u] - k])) for u in range(ds.n_users) for k in (1, 2)}
    train = set(zip(ds.train_user.tolist(), ds.train_cands[:, 0].tolist()))
    assert not held & train
    assert ds.valid_user.tolist() == list(range(ds.n_users)) == ds.test_user.tolist()


def test_negatives_untouched_distinct_and_counted(synth_dataset):
    ds = synth_dataset
    for cands, users, width in (
        (ds.train_cands, ds.train_user, 5),
        (ds.valid_cands, ds.valid_user, N_CANDIDATES),
        (ds.test_cands, ds.test_user, N_CANDIDATES),
    ):
        assert cands.shape == (users.size, width)
        assert cands.min() >= 1 and cands.max() <= ds.n_items
        for row, u in zip(cands, users):
            touched = set(ds.history(int(u)).tolist())
            negatives = row[1:].tolist()
            assert len(set(negatives)) == width - 1
            assert not touched & set(negatives)
            assert row[0] in touched


def test_deterministic_for_a_seed_and_seed_moves_only_negatives():
    hist = _histories()
    a = build_protocol(hist, n_items=300, seq_len=5, seed=7)
    b = build_protocol([h.copy() for h in hist], n_items=300, seq_len=5, seed=7)
    c = build_protocol(hist, n_items=300, seq_len=5, seed=8)
    assert arrays_sha256(a) == arrays_sha256(b)
    assert arrays_sha256(a) != arrays_sha256(c)
    for name in ("train_seqs", "valid_seqs", "test_seqs", "user_items", "train_time"):
        assert np.array_equal(a[name], c[name])
    assert not np.array_equal(a["test_cands"][:, 1:], c["test_cands"][:, 1:])
    assert np.array_equal(a["test_cands"][:, 0], c["test_cands"][:, 0])


def test_negatives_do_not_depend_on_seq_len():
    hist = _histories()
    a = build_protocol(hist, n_items=300, seq_len=5, seed=0)
    b = build_protocol(hist, n_items=300, seq_len=12, seed=0)
    for name in ("train_cands", "valid_cands", "test_cands"):
        assert np.array_equal(a[name], b[name])


def test_negatives_are_uniform_over_untouched_items():
    n_items, k, rows = 30, 5, 6000
    user_items = np.array([1, 2, 3, 4, 5], dtype=np.int64)
    user_ptr = np.array([0, 5], dtype=np.int64)
    neg = sample_negatives(np.random.default_rng(0), np.zeros(rows, dtype=np.int64), k, n_items, user_ptr, user_items)
    counts = np.bincount(neg.ravel(), minlength=n_items + 1)
    assert counts[:6].sum() == 0
    expected = rows * k / 25
    assert np.abs(counts[6:] - expected).max() < 5 * np.sqrt(expected)  # ~5 sigma


def test_near_exhausted_catalogue_falls_back_to_exact_sampling():
    n_items = 104  # user touched 5, leaving exactly 99 untouched: every candidate list is the full complement
    user_items = np.arange(1, 6, dtype=np.int64)
    neg = sample_negatives(
        np.random.default_rng(0), np.zeros(3, dtype=np.int64), 99, n_items, np.array([0, 5]), user_items
    )
    for row in neg:
        assert sorted(row.tolist()) == list(range(6, 105))


def test_too_few_untouched_items_is_a_clear_error():
    with pytest.raises(ToolkitError, match="fewer than 99 untouched items"):
        build_protocol([np.arange(1, 11)], n_items=100, seq_len=3, seed=0)


def test_clean_histories_drops_counts_and_reindexes_in_raw_order():
    raw = [np.array([50, 70, 90, 10]), np.array([5, 6]), np.array([70, 71, 72]), np.array([90, 50, 30, 20, 10])]
    hist, n_items, dropped, kept = clean_histories(raw, min_user_count=4)
    assert dropped == {"fewer_than_3_items": 1, "below_min_user_count": 1}
    assert kept.tolist() == [0, 3]
    # surviving raw ids 10,20,30,50,70,90 -> 1..6 in ascending order; 5, 6, 71, 72 vanish with their users
    assert n_items == 6
    assert [h.tolist() for h in hist] == [[4, 5, 6, 1], [6, 4, 3, 2, 1]]
    with pytest.raises(ToolkitError, match="no user left"):
        clean_histories([np.array([1, 2])], min_user_count=5)


def test_protocol_rejects_bad_histories():
    with pytest.raises(ToolkitError, match="at least 3"):
        build_protocol([np.array([1, 2])], n_items=200, seq_len=3, seed=0)
    with pytest.raises(ToolkitError, match=r"item ids must lie in 1\.\.200"):
        build_protocol([np.array([1, 2, 201])], n_items=200, seq_len=3, seed=0)
    with pytest.raises(ToolkitError, match="seq-len"):
        build_protocol([np.array([1, 2, 3])], n_items=200, seq_len=0, seed=0)
