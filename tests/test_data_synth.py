"""The synthetic generator: deterministic, drifting between pool domains, and learnable."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.data.synth import SynthParams, generate
from toolkit.errors import ToolkitError
from toolkit.metrics import ranking_metrics

SMALL = SynthParams(users=120, items=200, domains=20, seed=5)


def test_deterministic_for_params_and_seed():
    a, b = generate(SMALL), generate(SMALL)
    assert all(np.array_equal(x, y) for x, y in zip(a.histories, b.histories))
    assert np.array_equal(a.current_domain, b.current_domain)
    c = generate(SynthParams(users=120, items=200, domains=20, seed=6))
    assert any(not np.array_equal(x, y) for x, y in zip(a.histories, c.histories))
    assert SMALL.sha256() == SynthParams(users=120, items=200, domains=20, seed=5).sha256()
    assert SMALL.sha256() != SynthParams(users=120, items=200, domains=20, seed=6).sha256()


def test_world_structure():
    p = SynthParams(users=400, items=1000, domains=50, seed=0)
    w = generate(p)
    lengths = np.array([len(h) for h in w.histories])
    assert lengths.min() >= p.min_len and lengths.max() <= p.max_len
    assert np.median(lengths) < (p.min_len + p.max_len) / 2  # skewed towards short histories, like real logs
    items = np.concatenate(w.histories)
    assert items.min() >= 1 and items.max() <= p.items
    assert all(np.unique(h).size == h.size for h in w.histories)  # a user never clicks an item twice
    # domains partition the items, about items/domains each
    sizes = np.bincount(w.item_domain[1:], minlength=p.domains)
    assert sizes.min() >= p.items // p.domains and sizes.max() <= p.items // p.domains + 1
    # every non-noise click is in the user's current domain, which moves only at flagged shifts
    item_dom = w.item_domain[items]
    assert np.array_equal(item_dom[w.noise == 0], w.current_domain[w.noise == 0])
    ptr = np.concatenate(([0], np.cumsum(lengths)))
    for u in range(p.users):
        cur, sh = w.current_domain[ptr[u] : ptr[u + 1]], w.shift[ptr[u] : ptr[u + 1]]
        assert np.array_equal(cur[1:] != cur[:-1], sh[1:].astype(bool))
        assert np.unique(cur).size <= p.pool_max  # stays inside a personal pool
    assert 0.10 < w.shift.mean() < 0.25 and 0.02 < w.noise.mean() < 0.09  # sticky, with drift


def test_bad_params_are_clear_errors():
    with pytest.raises(ToolkitError, match="--items must be >= 139"):
        generate(SynthParams(items=100, domains=10))
    with pytest.raises(ToolkitError, match="--users must be >= 1"):
        generate(SynthParams(users=0))
    with pytest.raises(ToolkitError, match=r"--items \(200\) must be >= --domains \(300\)"):
        generate(SynthParams(items=200, domains=300))


def test_fixture_dataset_descriptor(synth_dataset):
    m = synth_dataset.meta
    assert m["format"] == "synthetic"
    assert m["n_users"] == 300 and m["n_items"] == 200 and m["seq_len"] == 10
    assert m["source_sha256"] == SynthParams(users=300, items=200, domains=20, seed=0).sha256()
    assert m["synthetic"]["generator"] == "toolkit.synth/1"
    assert set(synth_dataset.extras) == {"item_domain", "current_domain", "shift", "noise"}
    assert synth_dataset.extras["shift"].size == m["n_interactions"]


def _cooccurrence_scores(ds, split):
    """A model-free sequential scorer: recency-weighted counts of 'window item -> next item' in training."""
    n, L = ds.n_items + 1, ds.seq_len
    co = np.zeros((n, n))
    last = (ds.train_seqs > 0).sum(1) - 1
    for j in range(L):
        m = ds.train_seqs[:, j] > 0
        np.add.at(co, (ds.train_seqs[m, j], ds.train_cands[m, 0]), 1.0 / (1 + last[m] - j))
    seqs, cands = ds.split(split)
    last = (seqs > 0).sum(1) - 1
    scores = np.zeros(cands.shape)
    for j in range(L):
        w = np.where(seqs[:, j] > 0, 1.0 / np.maximum(1 + last - j, 1), 0.0)
        scores += w[:, None] * co[seqs[:, j][:, None], cands]
    return scores


def test_learnable_a_sequential_scorer_clearly_beats_random(synth_dataset):
    ds = synth_dataset
    rng = np.random.default_rng(0)
    for split in ("valid", "test"):
        _, cands = ds.split(split)
        random = ranking_metrics(rng.random(cands.shape))
        learned = ranking_metrics(_cooccurrence_scores(ds, split))
        assert random["hr@10"] < 0.2
        assert learned["hr@10"] > 0.5 and learned["uauc"] > 0.8, learned
