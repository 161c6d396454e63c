"""Shared fixtures: a small synthetic dataset (fast, built once per session) and the real Beauty file."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

# A shell starts a background job (`pytest ... &`, nohup) with SIGINT ignored, and an ignored signal stays ignored
# across exec: every toolkit process the tests start would then shrug off the SIGINT they send (the interrupt tests
# saw exit 0 or hung). Python's own handler in this process is reset to the default in each child at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# ../shared beside the checkout (as in CI), unless TOOLKIT_BEAUTY points elsewhere
_SHARED_BEAUTY = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon_beauty_5core_s3rec.txt"
BEAUTY_FILE = Path(os.environ.get("TOOLKIT_BEAUTY", str(_SHARED_BEAUTY)))
TINY_SYNTH = dict(users=300, items=200, domains=20, seq_len=10, seed=0)  # ~4.3k interactions, ~3.4k train rows


@pytest.fixture(scope="session")
def synth_dataset_dir(tmp_path_factory) -> Path:
    """Dir of a tiny synthetic dataset (TINY_SYNTH params); do not write into it."""
    from toolkit.data import synthesize  # imported lazily: other areas' tests must not depend on this import

    out = tmp_path_factory.mktemp("data") / "synth"
    synthesize(out, **TINY_SYNTH)
    return out


@pytest.fixture(scope="session")
def synth_dataset(synth_dataset_dir):
    """The tiny synthetic dataset as a toolkit.data.Dataset, shared by the session: never modify its arrays."""
    from toolkit.data import load_dataset

    return load_dataset(synth_dataset_dir)


@pytest.fixture(scope="session")
def beauty_file() -> Path:
    """The shared Amazon Beauty seqfile; tests using it are skipped where it is absent."""
    if not BEAUTY_FILE.is_file():
        pytest.skip(f"Beauty data not found at {BEAUTY_FILE} (set TOOLKIT_BEAUTY)")
    return BEAUTY_FILE


@pytest.fixture(scope="session")
def beauty_dataset_dir(beauty_file, tmp_path_factory) -> Path:
    """Beauty prepared with the defaults (seq_len 10, seed 0), once per session (a few seconds)."""
    from toolkit.data import prepare

    out = tmp_path_factory.mktemp("data") / "beauty"
    prepare(beauty_file, out, format="seqfile")
    return out


@pytest.fixture(scope="session")
def beauty_dataset(beauty_dataset_dir):
    """Beauty as a toolkit.data.Dataset, shared by the session: never modify its arrays."""
    from toolkit.data import load_dataset

    return load_dataset(beauty_dataset_dir)
