"""The on-disk dataset: round trip, integrity checks, idempotence, refusal, atomicity."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from toolkit.data import Dataset, load_dataset, prepare, save_dataset
from toolkit.data.store import ARRAY_NAMES, arrays_sha256
from toolkit.errors import ToolkitError


def _histories(n_users=40, n_items=250, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.choice(n_items, int(rng.integers(3, 25)), replace=False).astype(np.int64) + 1 for _ in range(n_users)]


def _save(out, seed=0, force=False, **kw):
    return save_dataset(out, _histories(), {"format": "test"}, seq_len=6, seed=seed, force=force, n_items=250, **kw)


def test_round_trip_and_api(tmp_path):
    saved = _save(tmp_path / "ds")
    loaded = load_dataset(tmp_path / "ds")
    assert isinstance(loaded, Dataset)
    for name in ARRAY_NAMES:
        a = getattr(loaded, name)
        assert a.dtype == np.int64
        assert np.array_equal(a, getattr(saved, name))
    assert loaded.sha256 == saved.sha256 == loaded.meta["arrays_sha256"] == arrays_sha256(loaded.arrays())
    assert (loaded.n_items, loaded.n_users, loaded.seq_len) == (250, 40, 6)
    assert loaded.history(3).tolist() == _histories()[3].tolist()
    seqs, cands = loaded.split("test")
    assert seqs.shape == (40, 6) and cands.shape == (40, 100)
    with pytest.raises(ToolkitError, match="unknown split"):
        loaded.split("train")
    with pytest.raises(ToolkitError, match="out of range"):
        loaded.history(40)
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    for key in ("n_users", "n_items", "n_interactions", "n_train_rows", "n_valid_users", "n_test_users",
                "n_candidates", "n_train_negatives", "seq_len", "seed", "arrays_sha256", "versions"):  # fmt: skip
        assert key in meta
    with np.load(tmp_path / "ds" / "arrays.npz", allow_pickle=False) as z:  # plain arrays, no pickles
        assert sorted(z.files) == sorted(ARRAY_NAMES)
    assert load_dataset(tmp_path / "ds" / "dataset.json").sha256 == saved.sha256
    for p in (tmp_path / "ds", tmp_path / "ds" / "dataset.json", tmp_path / "ds" / "arrays.npz"):
        assert p.stat().st_mode & 0o044 == 0o044  # shareable, not the temp files' private mode


def test_same_dataset_again_is_idempotent_different_is_refused(tmp_path):
    out = tmp_path / "ds"
    first = _save(out)
    before = (out / "arrays.npz").stat().st_mtime_ns
    again = _save(out)
    assert again.unchanged and again.sha256 == first.sha256
    assert (out / "arrays.npz").stat().st_mtime_ns == before
    with pytest.raises(ToolkitError, match="already holds a different dataset"):
        _save(out, seed=1)
    assert load_dataset(out).sha256 == first.sha256  # untouched by the refusal
    replaced = _save(out, seed=1, force=True)
    assert load_dataset(out).sha256 == replaced.sha256 != first.sha256


def test_refuses_a_dir_that_is_not_a_dataset(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ToolkitError, match="does not hold a dataset"):
        _save(out)
    assert (out / "notes.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    assert _save(tmp_path / "empty").n_users == 40  # an empty dir is fine to fill


def test_failed_prepare_leaves_nothing_behind(tmp_path):
    src = tmp_path / "bad.txt"
    src.write_text("1 1 2 3 4\n2 5 six 7\n")
    with pytest.raises(ToolkitError, match=":2: id 'six'"):
        prepare(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.txt"]  # no temp dirs either


@pytest.mark.parametrize("damage", ["missing_dir", "missing_json", "bad_json", "missing_arrays", "garbage_arrays",
                                    "changed_arrays", "missing_array", "float_array"])  # fmt: skip
def test_load_reports_missing_or_corrupt_parts(tmp_path, damage):
    out = tmp_path / "ds"
    ds = _save(out)
    arrays = ds.arrays()
    messages = {
        "missing_dir": "dataset dir not found",
        "missing_json": "dataset descriptor not found",
        "bad_json": "dataset descriptor is not valid JSON",
        "missing_arrays": "dataset arrays not found",
        "garbage_arrays": "dataset arrays is corrupt",
        "changed_arrays": "do not match their descriptor",
        "missing_array": "lack test_cands",
        "float_array": "not int64",
    }
    if damage == "missing_dir":
        out = tmp_path / "nowhere"
    elif damage == "missing_json":
        (out / "dataset.json").unlink()
    elif damage == "bad_json":
        (out / "dataset.json").write_text("{not json")
    elif damage == "missing_arrays":
        (out / "arrays.npz").unlink()
    elif damage == "garbage_arrays":
        (out / "arrays.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    else:
        arrays = dict(arrays)
        if damage == "changed_arrays":
            arrays["test_cands"] = arrays["test_cands"].copy()
            arrays["test_cands"][0, 1] += 1
        elif damage == "missing_array":
            del arrays["test_cands"]
        elif damage == "float_array":
            arrays["test_user"] = arrays["test_user"].astype(np.float64)
        np.savez(out / "arrays.npz", **arrays)
    with pytest.raises(ToolkitError, match=messages[damage]):
        load_dataset(out)


def test_truncated_zip_is_reported(tmp_path):
    out = tmp_path / "ds"
    _save(out)
    data = (out / "arrays.npz").read_bytes()
    (out / "arrays.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ToolkitError, match="corrupt"):
        load_dataset(out)
    assert zipfile.is_zipfile(out / "arrays.npz") is False


def test_prepare_counts_dropped_users(tmp_path):
    src = tmp_path / "log.csv"
    rows = ["user,item,timestamp"]
    rng = np.random.default_rng(0)
    for u, n in enumerate([2, 1, 3, 4, 6] + [15] * 10):  # 2 users < 3 items, 2 users below min 5
        for t, item in enumerate(rng.choice(1000, n, replace=False)):
            rows.append(f"user{u},item{item},{1000 + t}")
    src.write_text("\n".join(rows) + "\n")
    ds = prepare(src, tmp_path / "out", min_user_count=5, seq_len=4, seed=3)
    m = ds.meta
    assert m["dropped_users"] == 4
    assert m["dropped_users_detail"] == {"fewer_than_3_items": 2, "below_min_user_count": 2}
    assert m["n_users"] == 11 and m["n_interactions"] == 6 + 150
    assert m["format"] == "interactions" and m["min_user_count"] == 5 and m["seed"] == 3
    assert m["n_items"] == np.unique(ds.user_items).size  # dense re-indexing over surviving users
    assert ds.user_items.min() == 1 and ds.user_items.max() == m["n_items"]
