"""Shared fixtures: a small synthetic dataset (fast, built once per session) and the real Beauty file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from toolkit.data import Dataset, load_dataset, prepare, synthesize

BEAUTY_FILE = Path(os.environ.get("TOOLKIT_BEAUTY", "/work/shared/data/amazon_beauty_5core_s3rec.txt"))
TINY_SYNTH = dict(users=300, items=200, domains=20, seq_len=10, seed=0)  # ~4.3k interactions, ~3.4k train rows


def _freeze(ds: Dataset) -> Dataset:
    """Session fixtures are shared across tests: make their arrays read-only so no test can corrupt them."""
    for arr in list(ds.arrays().values()) + list(ds.extras.values()):
        arr.setflags(write=False)
    return ds


@pytest.fixture(scope="session")
def synth_dataset_dir(tmp_path_factory) -> Path:
    """Dir of a tiny synthetic dataset (TINY_SYNTH params); do not write into it."""
    out = tmp_path_factory.mktemp("data") / "synth"
    synthesize(out, **TINY_SYNTH)
    return out


@pytest.fixture(scope="session")
def synth_dataset(synth_dataset_dir) -> Dataset:
    """The tiny synthetic dataset, loaded (arrays read-only)."""
    return _freeze(load_dataset(synth_dataset_dir))


@pytest.fixture(scope="session")
def beauty_file() -> Path:
    """The shared Amazon Beauty seqfile; tests using it are skipped where it is absent."""
    if not BEAUTY_FILE.is_file():
        pytest.skip(f"Beauty data not found at {BEAUTY_FILE} (set TOOLKIT_BEAUTY)")
    return BEAUTY_FILE


@pytest.fixture(scope="session")
def beauty_dataset_dir(beauty_file, tmp_path_factory) -> Path:
    """Beauty prepared with the defaults (seq_len 10, seed 0), once per session (a few seconds)."""
    out = tmp_path_factory.mktemp("data") / "beauty"
    prepare(beauty_file, out, format="seqfile")
    return out


@pytest.fixture(scope="session")
def beauty_dataset(beauty_dataset_dir) -> Dataset:
    return _freeze(load_dataset(beauty_dataset_dir))
