"""The columnar prepare path and the chunked ("npy") layout: same arrays as the in-memory path, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.data import columnar, load_dataset, prepare
from toolkit.data import protocol as protocol_mod
from toolkit.data.columnar import _stable_argsort_codes
from toolkit.data.protocol import N_CANDIDATES, N_TRAIN_NEGATIVES, build_protocol, build_protocol_csr, to_csr
from toolkit.data.store import ARRAY_NAMES, arrays_sha256, save_dataset_csr
from toolkit.data.synth import synth_log
from toolkit.errors import ToolkitError


def check_protocol(ds) -> None:
    """The protocol's guarantees on a loaded dataset: no leakage, negatives never in history, candidate counts."""
    lengths = np.diff(ds.user_ptr)
    assert ds.train_user.size == int(np.maximum(lengths - 3, 0).sum())
    assert ds.valid_cands.shape == ds.test_cands.shape == (ds.n_users, N_CANDIDATES)
    assert ds.train_cands.shape == (ds.train_user.size, 1 + N_TRAIN_NEGATIVES)
    for r in range(ds.train_user.size):
        u, t = int(ds.train_user[r]), int(ds.train_time[r])
        h = ds.history(u)
        assert 1 <= t <= h.size - 3  # never the validation or test position
        past = h[max(0, t - ds.seq_len) : t]
        assert ds.train_seqs[r, : past.size].tolist() == past.tolist() and not ds.train_seqs[r, past.size :].any()
        assert ds.train_cands[r, 0] == h[t]
    for name, offset in (("valid", 2), ("test", 1)):
        seqs, cands = ds.split(name)
        for u in range(ds.n_users):
            h = ds.history(u)
            t = h.size - offset
            past = h[max(0, t - ds.seq_len) : t]
            assert seqs[u, : past.size].tolist() == past.tolist() and not seqs[u, past.size :].any()
            assert cands[u, 0] == h[t]
    for cands, users in ((ds.train_cands, ds.train_user), (ds.valid_cands, ds.valid_user), (ds.test_cands, ds.test_user)):
        for row, u in zip(cands, users):
            touched = set(ds.history(int(u)).tolist())
            negatives = row[1:].tolist()
            assert len(set(negatives)) == len(negatives) and not touched & set(negatives)
            assert 1 <= row.min() and row.max() <= ds.n_items


def _log(tmp_path, name, text, encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


def _rows(n_users=40, seed=0, ids=lambda u: str(u), items=lambda i: str(i), sep=",", header="user_id,item_id,timestamp"):
    rng = np.random.default_rng(seed)
    lines = [header] if header else []
    for u in rng.permutation(n_users):
        for _ in range(int(rng.integers(1, 12))):
            lines.append(sep.join([ids(int(u)), items(int(rng.integers(0, 300))), str(int(rng.integers(0, 50)))]))
    order = rng.permutation(len(lines) - (1 if header else 0)) + (1 if header else 0)  # not time-ordered, ties kept
    return "\n".join(([lines[0]] if header else []) + [lines[i] for i in order]) + "\n"


def _with_duplicates(text: str) -> str:
    """Repeat some rows verbatim (logging artefacts the loaders drop) and add same-time, other-item rows."""
    head, *body = text.strip().split("\n")
    rng = np.random.default_rng(9)
    extra = [body[i] for i in rng.integers(0, len(body), 25)]
    ties = [",".join([r.split(",")[0], str(int(r.split(",")[1]) + 1), r.split(",")[2]]) for r in body[:10]]
    rows = body + extra + ties
    return "\n".join([head] + [rows[i] for i in rng.permutation(len(rows))]) + "\n"


CASES = {
    "numeric": lambda: _rows(),
    "text_ids": lambda: _rows(ids=lambda u: f"A{u * 7919 % 1000:03d}X", items=lambda i: f"B{i:05d}"),
    "leading_zeros_are_distinct": lambda: _rows(items=lambda i: f"{i % 150:03d}" if i % 3 else str(i % 150)),
    "tsv_recbole": lambda: _rows(sep="\t", header="user_id:token\titem_id:token\ttimestamp:float"),
    "amazon_no_header": lambda: "\n".join(
        f"{line.split(',')[0]},{line.split(',')[1]},5.0,{line.split(',')[2]}" for line in _rows(header="").split()
    ) + "\n",
    "exact_duplicates_and_time_ties": lambda: _with_duplicates(_rows(seed=4)),
    "bom_and_quotes": lambda: "\ufeff" + _rows(ids=lambda u: f'"u {u}"', header='"user_id","item_id","timestamp"'),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_columnar_and_memory_paths_agree_exactly(tmp_path, case, monkeypatch):
    text = CASES[case]()
    src = _log(tmp_path, "log.csv", text)
    mem = prepare(src, tmp_path / "mem", engine="memory", min_user_count=4, seq_len=4, seed=3)
    monkeypatch.setattr(columnar, "load_interactions", None)  # the columnar reader itself, no fallback
    col = prepare(src, tmp_path / "col", engine="columnar", min_user_count=4, seq_len=4, seed=3)
    assert col.sha256 == mem.sha256
    for name in ARRAY_NAMES:
        assert np.array_equal(getattr(col, name), getattr(mem, name)), name
    for key in ("n_users", "n_items", "source_rows", "source_users", "dropped_users_detail", "n_train_rows",
                "duplicate_rows_dropped"):
        assert col.meta[key] == mem.meta[key], key
    if case == "exact_duplicates_and_time_ties":
        assert mem.meta["duplicate_rows_dropped"] > 0
    check_protocol(load_dataset(tmp_path / "mem"))
    check_protocol(load_dataset(tmp_path / "col"))


def test_unusual_input_falls_back_to_the_exact_in_memory_messages(tmp_path):
    ws = _log(tmp_path, "ws.csv", _rows(sep=" ", header="user item timestamp"))
    assert prepare(ws, tmp_path / "a", engine="columnar", min_user_count=4).sha256 == \
        prepare(ws, tmp_path / "b", engine="memory", min_user_count=4).sha256
    for name, text, message in (
        ("bad_ts.csv", "user,item,timestamp\n1,2,3\n1,3,later\n", r"bad_ts.csv:3: timestamp 'later' is not a number"),
        ("short.csv", "user,item,timestamp\n1,2,3\n1,3\n", r"short.csv:3: expected at least 3 fields, got 2"),
        ("empty_id.csv", "user,item,timestamp\n1,2,3\n,3,4\n", r"empty_id.csv:3: empty user id"),
        ("inf.csv", "user,item,timestamp\n1,2,3\n1,3,inf\n", r"inf.csv:3: timestamp 'inf' is not finite"),
    ):
        src = _log(tmp_path, name, text)
        for engine in ("columnar", "memory"):
            with pytest.raises(ToolkitError, match=message):
                prepare(src, tmp_path / f"out_{engine}", engine=engine)
            assert not (tmp_path / f"out_{engine}").exists()
    latin = tmp_path / "latin.csv"
    latin.write_bytes("user,item,timestamp\n1,caf\xe9,3\n".encode("latin-1"))
    with pytest.raises(ToolkitError, match="not a UTF-8 text file"):
        prepare(latin, tmp_path / "x", engine="columnar")
    with pytest.raises(ToolkitError, match="unknown --engine"):
        prepare(ws, tmp_path / "x", engine="gpu")


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(protocol_mod, "CHUNK_USERS", 7)
    return 7


def test_chunked_protocol_keeps_chunk_zero_and_concatenates(small_chunks):
    rng = np.random.default_rng(1)
    hist = [rng.choice(200, int(rng.integers(3, 15)), replace=False).astype(np.int64) + 1 for _ in range(30)]
    ptr, items = to_csr(hist)
    whole = build_protocol_csr(ptr, items, 200, 5, seed=4, chunk_users=1000)  # one chunk: the single-pass protocol
    first = build_protocol(hist[:7], 200, 5, seed=4)  # chunk 0 alone = the old protocol on those users
    chunked = build_protocol_csr(ptr, items, 200, 5, seed=4)
    n0 = int(np.maximum(np.diff(ptr[:8]) - 3, 0).sum())
    for name in ("train_seqs", "train_cands"):
        assert np.array_equal(chunked[name][:n0], first[name])
        assert np.array_equal(chunked[name][:, 0] if name == "train_cands" else chunked[name],
                              whole[name][:, 0] if name == "train_cands" else whole[name])  # windows/targets never move
    for name in ("valid_cands", "test_cands"):
        assert np.array_equal(chunked[name][:7], first[name])
        assert np.array_equal(chunked[name][:, 0], whole[name][:, 0])
    assert not np.array_equal(chunked["valid_cands"], whole["valid_cands"])  # later chunks draw from their own streams


def test_npy_layout_is_the_same_dataset_and_memory_maps(tmp_path, small_chunks):
    rng = np.random.default_rng(2)
    hist = [rng.choice(150, int(rng.integers(3, 20)), replace=False).astype(np.int64) + 1 for _ in range(40)]
    ptr, items = to_csr(hist)
    npz = save_dataset_csr(tmp_path / "npz", ptr, items, {"format": "test"}, 6, 1, n_items=150, layout="npz")
    one = save_dataset_csr(tmp_path / "npy1", ptr, items, {"format": "test"}, 6, 1, n_items=150)
    two = save_dataset_csr(tmp_path / "npy2", ptr, items, {"format": "test"}, 6, 1, n_items=150, workers=2)
    assert one.meta["layout"] == "npy" and not (tmp_path / "npy1" / "arrays.npz").exists()
    assert npz.sha256 == one.sha256 == two.sha256  # layout and worker count do not change a byte
    loaded = load_dataset(tmp_path / "npy2")
    assert isinstance(loaded.train_seqs, np.memmap) and not loaded.train_seqs.flags.writeable
    for name in ARRAY_NAMES:
        assert np.array_equal(getattr(loaded, name), getattr(npz, name))
    assert arrays_sha256(loaded.arrays()) == loaded.sha256
    check_protocol(loaded)
    for p in (tmp_path / "npy2" / "arrays", tmp_path / "npy2" / "arrays" / "train_seqs.npy"):
        assert p.stat().st_mode & 0o044 == 0o044
    again = save_dataset_csr(tmp_path / "npy2", ptr, items, {"format": "test"}, 6, 1, n_items=150)
    assert again.unchanged
    with pytest.raises(ToolkitError, match="already holds a different dataset"):
        save_dataset_csr(tmp_path / "npy2", ptr, items, {"format": "test"}, 6, 2, n_items=150)
    assert load_dataset(tmp_path / "npy2").sha256 == one.sha256
    f = tmp_path / "npy2" / "arrays" / "test_cands.npy"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(ToolkitError, match="do not match their descriptor"):
        load_dataset(tmp_path / "npy2")


def test_large_prepare_paths_agree_on_the_synthetic_log(tmp_path, small_chunks):
    src = tmp_path / "log.csv"
    stats = synth_log(src, users=60, items=400, seed=3)
    assert stats == synth_log(tmp_path / "again.csv", users=60, items=400, seed=3)
    assert src.read_bytes() == (tmp_path / "again.csv").read_bytes()  # deterministic
    mem = prepare(src, tmp_path / "mem", engine="memory", seq_len=5)
    col = prepare(src, tmp_path / "col", engine="columnar", seq_len=5, workers=2)
    assert mem.meta["dropped_users"] > 0 and col.meta.get("layout") == mem.meta.get("layout") == "npy"
    assert col.sha256 == mem.sha256
    check_protocol(load_dataset(tmp_path / "col"))


def test_stable_radix_argsort_matches_numpy():
    rng = np.random.default_rng(0)
    for high in (50, 70_000, 5_000_000):
        codes = rng.integers(0, high, 20_000)
        assert np.array_equal(_stable_argsort_codes(codes), np.argsort(codes, kind="stable"))


def test_cli_synth_log_then_prepare_columnar(tmp_path):
    from typer.testing import CliRunner

    from toolkit.cli.data import app

    runner = CliRunner()
    log = tmp_path / "log.csv"
    r = runner.invoke(app, ["synth", "--log", str(log), "--users", "300", "--items", "500"])
    assert r.exit_code == 0, r.output
    assert "interactions of 300 users" in r.output and log.read_text().startswith('"user_id","item_id","timestamp"')
    r = runner.invoke(app, ["synth", "--log", str(log), "--users", "300"])
    assert r.exit_code != 0 and "exists" in str(r.exception)
    r = runner.invoke(app, ["synth", "--users", "300"])
    assert r.exit_code != 0 and "exactly one of --out DIR" in str(r.exception)
    outs = {}
    for engine in ("memory", "columnar"):
        r = runner.invoke(app, ["prepare", str(log), "--out", str(tmp_path / engine), "--engine", engine])
        assert r.exit_code == 0, r.output
        outs[engine] = load_dataset(tmp_path / engine).sha256
    assert outs["memory"] == outs["columnar"]
    r = runner.invoke(app, ["prepare", str(log), "--out", str(tmp_path / "w"), "--workers", "0"])
    assert r.exit_code != 0 and "--workers must be >= 1" in str(r.exception)


def test_a_user_error_in_a_chunk_process_names_the_source_id(tmp_path, small_chunks):
    """A user who touched nearly every item (no room for 99 negatives) is named by the id in the file, also when
    the chunk ran in a forked process."""
    lines = ["user_id,item_id,timestamp"]
    for u in range(20):
        items = range(1, 121) if u == 13 else range(1 + u, 6 + u)  # user 13 touches all 120 items
        lines += [f"U{u:02d},{i},{t}" for t, i in enumerate(items)]
    src = _log(tmp_path, "greedy.csv", "\n".join(lines) + "\n")
    for engine, workers in (("memory", 1), ("columnar", 1), ("columnar", 2)):
        with pytest.raises(ToolkitError, match=r"user 'U13' touched 120 of 120 items"):
            prepare(src, tmp_path / f"o_{engine}_{workers}", engine=engine, workers=workers)
        assert not (tmp_path / f"o_{engine}_{workers}").exists()
