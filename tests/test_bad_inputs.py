"""Every bad input the CLI must refuse with one line, one table row each (ROWS, GATE_ROWS).

Each row plants its bad input in a fresh copy of a small workspace (a tiny dataset + a 2-epoch gru4rec run with its
checkpoint), runs the real CLI entry point (`toolkit.cli.main`) in-process and asserts: the exit code, exactly one
`error:` line naming the offending thing, no traceback, and no new files anywhere in the workspace (cwd included).
Rows that plant a pickle check that its payload (which would create a marker file) never ran.

The in-process runner calls `main()` rather than typer.testing.CliRunner because main() is where errors become one
line (CliRunner would bypass it). Timing, Ctrl-C and SIGTERM rows need a real process and use subprocess.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from cli_helpers import TOOLKIT  # tests/ is on sys.path under pytest

from toolkit.cli import main
from toolkit.io import read_json, write_descriptor_json

# ---------------------------------------------------------------- workspace


@pytest.fixture(scope="module")
def pristine(synth_dataset_dir, tmp_path_factory) -> Path:
    """ws/data (tiny synthetic dataset) + ws/run (gru4rec, 2 epochs, with checkpoint.pt). Copied per row."""
    from toolkit.data import load_dataset
    from toolkit.train import TrainSettings, train

    ws = tmp_path_factory.mktemp("bad_inputs") / "ws"
    shutil.copytree(synth_dataset_dir, ws / "data")
    train("gru4rec", load_dataset(ws / "data"), ws / "run",
          TrainSettings(epochs=2, batch_size=512, threads=1, config={"dim": 16}))
    (ws / "afile").write_text("a file, not a folder\n")
    return ws


@pytest.fixture
def ws(pristine, tmp_path, monkeypatch) -> Path:
    w = tmp_path / "ws"
    shutil.copytree(pristine, w)
    monkeypatch.chdir(w)  # anything written to the cwd lands here and is caught by the no-new-files check
    return w


def tree(root: Path) -> dict[str, int]:
    """Every path under root (hidden ones included) -> size (dirs: -1)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = -1
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = os.lstat(p).st_size
    return out


def run_main(monkeypatch, capsys, args: list[str]) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["toolkit", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    code = e.value.code if isinstance(e.value.code, int) else (0 if e.value.code is None else 1)
    return code, out, err


def one_error_line(out: str, err: str) -> str:
    """The single `error:` line; rich progress bars (data prepare prints them to stderr) are not messages."""
    assert "Traceback" not in out + err, out + err
    lines = [ln for ln in err.splitlines() if ln.strip() and "━" not in ln]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


# ---------------------------------------------------------------- planting helpers


class Payload:
    """Unpickling this creates `marker` (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickle_bytes(marker: Path) -> bytes:
    return pickle.dumps({"model": Payload(marker)})


def reseal(path: Path, edit: Callable[[dict], None]) -> None:
    """Edit a descriptor the way an attacker who knows the format would: change it, then recompute its digest."""
    desc = read_json(path)
    edit(desc)
    write_descriptor_json(path, desc)


def edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    """Edit a descriptor by hand (digest left as it was)."""
    desc = json.loads(path.read_text())
    edit(desc)
    path.write_text(json.dumps(desc, indent=2))


def plant_checkpoint_pickle(w: Path) -> None:
    torch.save({"model": Payload(w / "MARKER")}, w / "run" / "checkpoint.pt")


def plant_weights_pickle(w: Path) -> None:
    from toolkit.io import sha256_file

    wpath = w / "run" / "weights.safetensors"
    wpath.write_bytes(pickle_bytes(w / "MARKER"))
    reseal(w / "run" / "model.json", lambda d: d.update(weights_sha256=sha256_file(wpath)))


def plant_arrays_pickle(w: Path) -> None:
    with np.load(w / "data" / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["user_items"] = np.array([Payload(w / "MARKER")] * 3, dtype=object)
    np.savez(w / "data" / "arrays.npz", **arrays)  # np.savez pickles object arrays


def plant_extras_pickle(w: Path) -> None:
    np.savez(w / "data" / "extras.npz", x=np.array([Payload(w / "MARKER")], dtype=object))


def write(rel: str, data: bytes | str) -> Callable[[Path], None]:
    def plant(w: Path) -> None:
        p = w / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return plant


def truncate(rel: str, keep: float = 0.5) -> Callable[[Path], None]:
    def plant(w: Path) -> None:
        p = w / rel
        p.write_bytes(p.read_bytes()[: int(p.stat().st_size * keep)])
    return plant


def truncate_weights_resealed(w: Path) -> None:
    from toolkit.io import sha256_file

    truncate("run/weights.safetensors")(w)
    reseal(w / "run" / "model.json",
           lambda d: d.update(weights_sha256=sha256_file(w / "run" / "weights.safetensors")))


BINARY = bytes(range(256)) * 4
PICKLE = pickle.dumps({"a": 1})

TRAIN = ["train", "gru4rec", "--data", "data", "--out", "newrun", "--config", "dim=16", "--threads", "1"]
RESUME = ["train", "gru4rec", "--data", "data", "--out", "run", "--resume", "--config", "dim=16", "--threads", "1"]
EVAL = ["eval", "run", "--data", "data"]


@dataclass
class Row:
    id: str
    args: list[str]
    code: int
    needle: str
    plant: Callable[[Path], None] | None = None
    marker: bool = False  # a pickle payload was planted: MARKER must not exist afterwards
    absent: list[str] = field(default_factory=list)  # paths that must not exist afterwards


ROWS = [
    # ---- code execution: pickles in every file kind the toolkit reads
    Row("resume-checkpoint-pickle", [*RESUME, "--epochs", "3"], 2, "holds more than tensors and plain values",
        plant_checkpoint_pickle, marker=True),
    Row("weights-pickle-resealed", EVAL, 2, "run weights is corrupt", plant_weights_pickle, marker=True),
    Row("arrays-npz-pickle", TRAIN, 2, "holds pickled objects, refused", plant_arrays_pickle, marker=True,
        absent=["newrun"]),
    Row("extras-npz-pickle", TRAIN, 2, "dataset extras is corrupt", plant_extras_pickle, marker=True,
        absent=["newrun"]),
    Row("model-json-pickle", EVAL, 2, "run descriptor is not UTF-8 text", write("run/model.json", PICKLE)),
    Row("dataset-json-pickle", TRAIN, 2, "dataset descriptor is not UTF-8 text", write("data/dataset.json", PICKLE),
        absent=["newrun"]),
    Row("budget-toml-pickle", ["bench", "--budget", "b.toml", "--models", "gru4rec", "--runtimes", "torch"], 2,
        "budget file is not UTF-8 text", write("b.toml", PICKLE)),
    Row("suite-toml-pickle", ["bench", "--suite", "s.toml"], 2, "suite file is not UTF-8 text",
        lambda w: (w / "s.toml").write_bytes(pickle_bytes(w / "MARKER")), marker=True),
    Row("target-toml-pickle", ["bench", "--target", "t.toml"], 2, "target file is not UTF-8 text",
        lambda w: (w / "t.toml").write_bytes(pickle_bytes(w / "MARKER")), marker=True),
    Row("seqfile-pickle", ["data", "prepare", "p.txt", "--out", "ds"], 2, "not a UTF-8 text file",
        lambda w: (w / "p.txt").write_bytes(pickle_bytes(w / "MARKER")), marker=True, absent=["ds"]),
    # ---- integrity cannot be switched off
    Row("dataset-n_items-edited", TRAIN, 2, "does not match its descriptor_sha256",
        lambda w: edit_json(w / "data/dataset.json", lambda d: d.update(n_items=5000)), absent=["newrun"]),
    Row("dataset-digest-removed", TRAIN, 2, "has no descriptor_sha256",
        lambda w: edit_json(w / "data/dataset.json", lambda d: d.pop("descriptor_sha256")), absent=["newrun"]),
    Row("dataset-n_items-resealed", TRAIN, 2, "do not fit n_items 150",
        lambda w: reseal(w / "data/dataset.json", lambda d: d.update(n_items=150)), absent=["newrun"]),
    Row("prepared-n_items-resealed", TRAIN, 2, "n_items 5000 of dataset.json is not the histories' vocabulary",
        lambda w: reseal(w / "data/dataset.json", lambda d: d.update(n_items=5000, format="seqfile")),
        absent=["newrun"]),
    Row("model-json-edited", EVAL, 2, "does not match its descriptor_sha256",
        lambda w: edit_json(w / "run/model.json", lambda d: d["config"].update(dim=32))),
    Row("weights-sha-removed", EVAL, 2, "has no descriptor_sha256",
        lambda w: edit_json(w / "run/model.json", lambda d: (d.pop("weights_sha256"), d.pop("descriptor_sha256")))),
    Row("weights-sha-removed-resealed", EVAL, 2, "lacks 'weights_sha256'",
        lambda w: reseal(w / "run/model.json", lambda d: d.pop("weights_sha256"))),
    Row("weights-path-dotdot", EVAL, 2, "points outside",
        lambda w: reseal(w / "run/model.json", lambda d: d.update(weights="../data/dataset.json"))),
    Row("weights-path-absolute", EVAL, 2, "must be a relative path",
        lambda w: reseal(w / "run/model.json", lambda d: d.update(weights="/etc/passwd"))),
    Row("weights-path-symlink-out", EVAL, 2, "points outside",
        lambda w: (os.symlink("/etc/passwd", w / "run/link"),
                   reseal(w / "run/model.json", lambda d: d.update(weights="link")))),
    Row("weights-flipped-byte", EVAL, 2, "checksum mismatch",
        lambda w: (w / "run/weights.safetensors").write_bytes(
            (lambda b: b[:-10] + bytes([b[-10] ^ 0x55]) + b[-9:])((w / "run/weights.safetensors").read_bytes()))),
    # ---- would-be tracebacks: one line each
    Row("out-under-a-file", [*TRAIN[:4], "--out", "afile/run"], 2, "afile is a file, not a folder"),
    Row("out-in-proc", [*TRAIN[:4], "--out", "/proc/toolkit-x/run"], 2, "cannot write in /proc"),
    Row("out-unwritable", ["data", "synth", "--out", "/sys/toolkit-x"], 2, "cannot write in /sys"),
    Row("bench-json-unwritable", ["bench", "--json", "/proc/toolkit-x/b.json"], 2, "cannot write in /proc"),
    Row("train-gate-resume", ["train", "gate", "--data", "data", "--model", "run", "--out", "run", "--resume"], 2,
        "--resume applies to recommenders"),
    Row("export-out-is-a-file", ["export", "--model", "scn", "--target", "onnx", "--out", "afile", "--force"], 2,
        "--out afile is a file, not a folder"),
    Row("curve-out-is-a-file", ["gate", "curve", "run", "--data", "data", "--out", "afile"], 2,
        "--out afile is a file, not a folder"),
    Row("bench-json-is-a-folder", ["bench", "--json", "data"], 2, "--json data is a folder, expected a file name"),
    Row("synth-out-dot-force", ["data", "synth", "--out", ".", "--force"], 2, "it is the current directory"),
    Row("seqfile-id-above-int64", ["data", "prepare", "big.txt", "--out", "ds"], 2, "id '99999999999999999999' is out of range",
        write("big.txt", "1 5 6 7 8\n2 5 6 99999999999999999999 8\n"), absent=["ds"]),
    Row("dataset-json-binary", TRAIN, 2, "dataset descriptor is not UTF-8 text", write("data/dataset.json", BINARY)),
    Row("dataset-json-list", TRAIN, 2, "must hold a JSON object, found a JSON array", write("data/dataset.json", "[1, 2]")),
    Row("dataset-json-string", TRAIN, 2, "must hold a JSON object, found a string", write("data/dataset.json", '"x"')),
    Row("dataset-json-nan", TRAIN, 2, "NaN is not allowed", write("data/dataset.json", '{"n_items": NaN}')),
    Row("dataset-json-huge-number", TRAIN, 2, "out of range", write("data/dataset.json", '{"n_items": 1e999}')),
    Row("dataset-json-deep", TRAIN, 2, "dataset descriptor is not valid JSON", write("data/dataset.json", "[" * 100000)),
    Row("model-json-binary", EVAL, 2, "run descriptor is not UTF-8 text", write("run/model.json", BINARY)),
    Row("model-json-list", EVAL, 2, "must hold a JSON object, found a JSON array", write("run/model.json", "[]")),
    Row("model-json-is-dir", EVAL, 2, "run descriptor is a directory",
        lambda w: ((w / "run/model.json").unlink(), (w / "run/model.json").mkdir())),
    Row("budget-toml-binary", ["bench", "--budget", "b.toml"], 2, "budget file is not UTF-8 text",
        write("b.toml", BINARY)),
    Row("budget-toml-malformed", ["bench", "--budget", "b.toml"], 2, "budget file is not valid TOML",
        write("b.toml", "[[budget]\n")),
    Row("budget-toml-inf", ["bench", "--budget", "b.toml"], 2, "numbers must be finite",
        write("b.toml", "[[budget]]\nmodel = 'scn'\nlatency_ms = inf\n")),
    Row("suite-toml-binary", ["bench", "--suite", "s.toml"], 2, "suite file is not UTF-8 text", write("s.toml", BINARY)),
    Row("resume-truncated-checkpoint", [*RESUME, "--epochs", "3"], 2, "checkpoint is corrupt or truncated",
        truncate("run/checkpoint.pt")),
    Row("safetensors-truncated-resealed", EVAL, 2, "run weights is corrupt", truncate_weights_resealed),
    Row("lr-nan", [*TRAIN, "--lr", "nan"], 2, "--lr must be a finite number", absent=["newrun"]),
    Row("lr-inf", [*TRAIN, "--lr", "inf"], 2, "--lr must be a finite number", absent=["newrun"]),
    Row("lr-zero", [*TRAIN, "--lr", "0"], 2, "--lr must be > 0", absent=["newrun"]),
    Row("weight-decay-negative", [*TRAIN, "--weight-decay", "-5"], 2, "--weight-decay must be >= 0",
        absent=["newrun"]),
    Row("threads-negative", [*TRAIN[:-2], "--threads", "-2"], 2, "--threads must be >= 1", absent=["newrun"]),
    Row("config-dim-negative", [*TRAIN[:-4], "--config", "dim=-3"], 2, "--config dim must be >= 0",
        absent=["newrun"]),
    Row("config-dim-zero", [*TRAIN[:-4], "--config", "dim=0"], 2, "config dim of gru4rec must be an integer in 1..",
        absent=["newrun"]),
    Row("config-n_items-1e11", ["export", "--model", "scn", "--config", "n_items=1e11", "--out", "o"], 2,
        "--config n_items must be <= 2147483647", absent=["o"]),
    Row("config-n_items-in-range", ["export", "--model", "scn", "--config", "n_items=5", "--target", "onnx",
                                    "--out", "o"], 2, "--config n_items: the vocabulary is not a config override", absent=["o"]),
    Row("seed-above-int64", [*TRAIN, "--seed", str(2**70)], 2, "--seed must be <= 4294967295", absent=["newrun"]),
    Row("export-n-items-above-int64", ["export", "--model", "scn", "--n-items", str(2**70), "--out", "o"], 2,
        "--n-items must be <= 2147483647", absent=["o"]),
    Row("export-seq-len-zero", ["export", "--model", "scn", "--seq-len", "0", "--out", "o"], 2,
        "--seq-len must be a positive integer, got 0", absent=["o"]),
    Row("export-tower-on-gate", ["export", "--model", "gate", "--tower", "precomputed", "--target", "onnx", "--out",
                                 "o"], 2, "--tower precomputed: gate has no separable candidate tower to precompute",
        absent=["o"]),
    Row("gate-budget-zero", ["gate", "calibrate", "run", "--data", "data", "--budget", "0"], 2,
        "--budget must be > 0"),
    Row("gate-curve-fit-cap", ["gate", "curve", "run", "--data", "data", "--out", "c", "--fit-cap", "3"], 2,
        "--fit-cap must be >= 25", absent=["c"]),
    Row("gate-curve-lags-huge", ["gate", "curve", "run", "--data", "data", "--out", "c", "--lags", f"1-{2**70}"], 2,
        "--lags expects N or MIN-MAX with 1 <= MIN <= MAX <= 1000000", absent=["c"]),
    Row("bench-runs-zero", ["bench", "--runs", "0"], 2, "--runs must be >= 1"),
    Row("bench-budget-ms-inf", ["bench", "--budget-ms", "inf"], 2, "--budget-ms must be a positive number, got inf"),
    Row("verify-threads-zero", ["verify", "nowhere", "--threads", "0"], 2, "--threads must be a positive integer"),
    Row("synth-users-negative", ["data", "synth", "--out", "ds", "--users", "-4"], 2, "--users must be >= 1",
        absent=["ds"]),
    Row("lr-not-a-number", [*TRAIN, "--lr", "abc"], 2, "Invalid value for '--lr'", absent=["newrun"]),
    Row("unknown-option", [*TRAIN, "--bogus"], 2, "No such option: --bogus", absent=["newrun"]),
    # ---- leftovers and resume
    Row("resume-missing-dir", ["train", "gru4rec", "--data", "data", "--out", "nothere", "--resume", "--epochs", "3"], 2,
        "nothing to resume: run dir nothere not found", absent=["nothere"]),
    Row("resume-fewer-epochs", [*RESUME, "--epochs", "1"], 2, "has 2 epochs done, more than --epochs 1"),
    # ---- user ids from the source
    Row("negatives-impossible-names-user-id", ["data", "prepare", "log.csv", "--out", "ds", "--min-user-count", "3"],
        2, "user 'alice' touched", write("log.csv", "user,item,timestamp\n"
                                         + "".join(f"alice,i{k},{k}\nbob,i{k},{k}\n" for k in range(6))),
        absent=["ds"]),
    # ---- missing or conflicting inputs
    Row("dataset-dir-missing", [*TRAIN[:3], "nowhere", *TRAIN[4:]], 2, "dataset dir not found", absent=["newrun"]),
    Row("run-dir-exists", [*TRAIN[:4], "--out", "run"], 2, "is not empty (use --resume"),
    Row("arrays-garbage", TRAIN, 2, "dataset arrays is corrupt", write("data/arrays.npz", b"PK\x03\x04 junk"),
        absent=["newrun"]),
    Row("seqfile-binary", ["data", "prepare", "bin.txt", "--out", "ds"], 2, "not a UTF-8 text file",
        write("bin.txt", BINARY), absent=["ds"]),
    Row("seqfile-empty", ["data", "prepare", "empty.txt", "--out", "ds"], 2, "source file is empty",
        write("empty.txt", ""), absent=["ds"]),
    Row("unknown-model", ["train", "bert", "--data", "data", "--out", "x"], 2, "unknown model 'bert'", absent=["x"]),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_one_line(row: Row, ws: Path, monkeypatch, capsys):
    if row.plant is not None:
        row.plant(ws)
    before = tree(ws)
    code, out, err = run_main(monkeypatch, capsys, row.args)
    line = one_error_line(out, err)
    assert code == row.code, (code, line)
    assert row.needle in line, line
    assert tree(ws) == before, "new or changed files: " + str(set(tree(ws).items()) ^ set(before.items()))
    for rel in row.absent:
        assert not (ws / rel).exists(), rel
    if row.marker:
        assert not (ws / "MARKER").exists(), "the planted pickle payload ran"


def test_pickled_test_vectors_and_state_files_are_refused(tmp_path):
    """The .npz files an artifact dir ships (test vectors, initial states) are read by the manifest owner without
    unpickling: a planted object array is refused and its payload never runs."""
    from artifact_dirs import make_artifact_dir

    from toolkit.errors import ToolkitError
    from toolkit.exporters.manifest import load_initial_state, load_test_vectors, read_manifest

    root = make_artifact_dir(tmp_path / "art")
    m = read_manifest(root)
    rec = m.artifacts[0]
    with np.load(root / rec.test_vectors) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["step0/in/items"] = np.array([Payload(tmp_path / "MARKER")], dtype=object)
    np.savez(root / rec.test_vectors, **arrays)
    with pytest.raises(ToolkitError, match="unreadable test vectors"):
        load_test_vectors(m, rec)
    state_file = root / rec.states[0].initial_file
    np.savez(state_file, W=np.array([Payload(tmp_path / "MARKER")], dtype=object))
    with pytest.raises(ToolkitError):
        load_initial_state(root, rec.states)
    assert not (tmp_path / "MARKER").exists()


def _calls_open_on(stream: bytes, marker: Path) -> bool:
    """Whether a pickle stream, unpickled, would call open() (io.open is builtins.open) on `marker`: read statically
    (pickletools walks the opcodes and executes nothing), so no test ever runs a planted payload."""
    import pickletools

    ops = list(pickletools.genops(stream))
    strings = [arg for _, arg, _ in ops if isinstance(arg, str)]
    opens = {f"{m} open" for m in ("io", "builtins")}
    imports_open = bool(opens & set(strings)) or any(f"{a} {b}" in opens for a, b in zip(strings, strings[1:]))
    return imports_open and str(marker) in strings and any(op.name == "REDUCE" for op, _, _ in ops)


def test_the_planted_payloads_are_live(tmp_path):
    """The pickle rows prove something only if their payloads would run under a plain unpickler: each planted file
    holds a stream that calls open(marker) when unpickled (checked on its opcodes, never by unpickling it)."""
    import zipfile

    torch.save({"model": Payload(tmp_path / "m1")}, tmp_path / "ck.pt")
    with zipfile.ZipFile(tmp_path / "ck.pt") as z:
        (data_pkl,) = [n for n in z.namelist() if n.endswith("/data.pkl")]
        assert _calls_open_on(z.read(data_pkl), tmp_path / "m1")
    assert _calls_open_on(pickle_bytes(tmp_path / "m2"), tmp_path / "m2")
    np.savez(tmp_path / "a.npz", x=np.array([Payload(tmp_path / "m3")], dtype=object))
    with zipfile.ZipFile(tmp_path / "a.npz") as z, z.open("x.npy") as f:
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        _, _, dtype = read_header[np.lib.format.read_magic(f)](f)  # a literal dict: nothing executes
        assert dtype == np.dtype(object)
        assert _calls_open_on(f.read(), tmp_path / "m3")
    assert not any((tmp_path / m).exists() for m in ("m1", "m2", "m3"))


# ---------------------------------------------------------------- behaviour that is not an error


def test_exact_duplicate_rows_are_dropped_and_counted(tmp_path):
    from toolkit.data import load_dataset, prepare

    rows = "".join(f"u{u},i{100 * u + k},{k}\n" for u in range(3) for k in range(110))  # 310 items in all
    dupes = "u0,i5,5\nu0,i5,5\nu2,i207,7\nu2,i207,8\n"  # three exact repeats; the last differs in time: kept
    (tmp_path / "log.csv").write_text("user,item,timestamp\n" + rows + dupes)
    ds = prepare(tmp_path / "log.csv", tmp_path / "ds", min_user_count=3)
    assert ds.meta["duplicate_rows_dropped"] == 3 and ds.meta["source_rows"] == 331
    assert ds.meta["n_interactions"] == 331
    assert load_dataset(tmp_path / "ds").meta["duplicate_rows_dropped"] == 3


def test_a_stale_temp_of_a_killed_run_is_swept(ws, monkeypatch, capsys):
    from toolkit.io import atomic_write_bytes

    dead = 2**22 + 12345  # above Linux's pid_max: no such process
    (ws / f".file.bin.{dead}.abcd.tmp").write_bytes(b"half")
    (ws / f".ds.{dead}.abcd.tmp").mkdir()
    (ws / f".ds.{os.getpid()}.live.tmp").mkdir()  # a live writer's temp is left alone
    atomic_write_bytes(ws / "file.bin", b"x")
    assert not (ws / f".file.bin.{dead}.abcd.tmp").exists()
    code, _, _ = run_main(monkeypatch, capsys, ["data", "synth", "--out", "ds", "--users", "120", "--items", "150",
                                                "--domains", "10"])
    assert code == 0 and not (ws / f".ds.{dead}.abcd.tmp").exists() and (ws / f".ds.{os.getpid()}.live.tmp").is_dir()


# ---------------------------------------------------------------- real processes: timing, Ctrl-C, SIGTERM

FAST_REFUSALS = [
    ["export", "--model", "scn", "--seq-len", "0", "--out", "o"],
    ["gate", "calibrate", "run", "--data", "data", "--budget", "0"],
    ["train", "gru4rec", "--data", "data", "--out", "o", "--lr", "nan"],
    ["bench", "--runs", "0"],
    ["verify", "o", "--threads", "0"],
]


@pytest.mark.parametrize("args", FAST_REFUSALS, ids=[" ".join(a[:2]) for a in FAST_REFUSALS])
def test_flag_errors_answer_before_heavy_imports(args, tmp_path):
    """The refusal happens before torch / executorch / coremltools are imported (what made it take 6-11 s), and
    takes < 1.5 s, or < 2x a plain `toolkit --help` measured side by side when the machine is loaded."""
    t0 = time.perf_counter()
    subprocess.run([*TOOLKIT, "--help"], capture_output=True, cwd=tmp_path)
    help_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "toolkit", *args], capture_output=True,
                          text=True, cwd=tmp_path)
    took = time.perf_counter() - t0
    assert proc.returncode == 2
    imported = {ln.split("|")[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")}
    assert not imported & {"torch", "executorch", "coremltools", "onnxruntime"}
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert took < max(1.5, 2 * help_s), (took, help_s)
    assert sorted(os.listdir(tmp_path)) == []


def _wait_for(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow  # a real export process, interrupted
@pytest.mark.parametrize("sig, code, needle", [
    (signal.SIGINT, 130, "interrupted"),
    (signal.SIGTERM, 143, "terminated")])
def test_export_interrupted_prints_one_line_and_leaves_nothing(sig, code, needle, tmp_path):
    proc = subprocess.Popen([*TOOLKIT, "export", "--model", "scn", "--target", "onnx", "--n-items", "100", "--out",
                             "o"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: any(p.startswith(".o.") for p in os.listdir(tmp_path)), 120), "export never started"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(needle) and "Traceback" not in out + err, err
    assert os.listdir(tmp_path) == []


@pytest.mark.slow  # a real training process, interrupted after its first epoch
def test_train_ctrl_c_is_one_line_with_the_resume_command(pristine, tmp_path):
    shutil.copytree(pristine / "data", tmp_path / "data")
    proc = subprocess.Popen([*TOOLKIT, "train", "gru4rec", "--data", "data", "--out", "r", "--epochs", "50",
                             "--config", "dim=16", "--threads", "1", "--batch-size", "64"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: (tmp_path / "r" / "checkpoint.pt").is_file(), 180), "no epoch finished"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted:") and "--resume" in lines[0], err
    assert "Traceback" not in out + err
    assert not [p for p in os.listdir(tmp_path / "r") if p.endswith(".tmp")]


@pytest.mark.slow  # real processes, interrupted after 3 s and 8 s
@pytest.mark.parametrize("args, wait_s", [
    (["data", "synth", "--out", "ds", "--users", "400000"], 3),
    (["bench", "--models", "gru4rec", "--runtimes", "torch", "--seq-len", "10", "--runs", "1000000", "--cache", "c"], 8),
], ids=["data synth", "bench"])
def test_ctrl_c_is_one_line_and_130(args, wait_s, tmp_path):
    """Typer turns KeyboardInterrupt into a silent exit 130; the CLI says so in one line, in every command."""
    proc = subprocess.Popen([*TOOLKIT, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(wait_s)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip() and "━" not in ln]
    assert len(lines) == 1 and lines[0].startswith("interrupted") and "Traceback" not in out + err, err
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp leftovers


# ---------------------------------------------------------------- the gate's run dir (its own, costlier workspace)


@pytest.fixture(scope="module")
def pristine_gate(synth_dataset_dir, tmp_path_factory) -> Path:
    """gws/data, gws/base (cocorrrec, 1 epoch, dim 16), gws/gate (1 epoch); trained silently (no reporter)."""
    from toolkit.data import load_dataset
    from toolkit.gate.train import train_gate
    from toolkit.train import TrainSettings, train

    ws = tmp_path_factory.mktemp("bad_gate") / "gws"
    shutil.copytree(synth_dataset_dir, ws / "data")
    ds = load_dataset(ws / "data")
    train("cocorrrec", ds, ws / "base", TrainSettings(epochs=1, batch_size=512, threads=1, config={"dim": 16}))
    train_gate(ds, ws / "base", ws / "gate", epochs=1, batch_size=512, lr=3e-3, seed=0, threads=1, config={})
    return ws


CALIBRATE = ["gate", "calibrate", "gate", "--data", "data", "--budget", "0.1", "--threads", "1"]
GATE_ROWS = [
    Row("gate-model-json-binary", CALIBRATE, 2, "run descriptor is not UTF-8 text", write("gate/model.json", BINARY)),
    Row("gate-model-json-edited", CALIBRATE, 2, "does not match its descriptor_sha256",
        lambda w: edit_json(w / "gate/model.json", lambda d: d["config"].update(z_dim=3))),
    Row("gate-weights-outside", CALIBRATE, 2, "points outside",
        lambda w: reseal(w / "gate/model.json", lambda d: d.update(weights="../base/weights.safetensors"))),
    Row("gate-weights-pickle", CALIBRATE, 2, "checksum mismatch",
        lambda w: (w / "gate/weights.safetensors").write_bytes(pickle_bytes(w / "MARKER")), marker=True),
    Row("gate-base-model-json-edited", CALIBRATE, 2, "does not match its descriptor_sha256",
        lambda w: edit_json(w / "base/model.json", lambda d: d["config"].update(dim=32))),
    Row("gate-config-negative", ["train", "gate", "--data", "data", "--model", "base", "--out", "g2", "--config",
                                 "z_dim=-1"], 2, "--config z_dim must be >= 0", absent=["g2"]),
    Row("gate-config-lag-input-not-bool", ["train", "gate", "--data", "data", "--model", "base", "--out", "g2",
                                           "--config", "lag_input=3"], 2, "lag_input must be true or false",
        absent=["g2"]),
    Row("gate-config-lag-cap-zero", ["train", "gate", "--data", "data", "--model", "base", "--out", "g2", "--config",
                                     "lag_cap=0"], 2, "gate lag_cap must be >= 1", absent=["g2"]),
]


@pytest.mark.parametrize("row", GATE_ROWS, ids=[r.id for r in GATE_ROWS])
def test_bad_gate_input_is_one_line(row: Row, pristine_gate, tmp_path, monkeypatch, capsys):
    w = tmp_path / "gws"
    shutil.copytree(pristine_gate, w)
    monkeypatch.chdir(w)
    # the gate's model.json records its base run by absolute path: point it at this copy, as a user moving both would
    reseal(w / "gate/model.json", lambda d: d.update(base_run=str(w / "base")))
    test_bad_input_is_one_line(row, w, monkeypatch, capsys)


def test_untouched_workspaces_work(ws, pristine_gate, tmp_path, monkeypatch, capsys):
    """Positive controls: without a planted problem, the same commands succeed (so each row fails for its plant)."""
    code, out, err = run_main(monkeypatch, capsys, EVAL)
    assert code == 0, err
    code, out, err = run_main(monkeypatch, capsys, [*RESUME, "--epochs", "2"])  # nothing left to train: rewrites
    assert code == 0, err
    w = tmp_path / "gws"
    shutil.copytree(pristine_gate, w)
    monkeypatch.chdir(w)
    reseal(w / "gate/model.json", lambda d: d.update(base_run=str(w / "base")))
    code, out, err = run_main(monkeypatch, capsys, CALIBRATE)
    assert code == 0 and (w / "gate" / "threshold.json").is_file(), err


def test_sweep_leaves_live_writers_and_other_targets_alone(tmp_path):
    from toolkit.io import LEGACY_TMP_AGE_S, sweep_stale_temps

    dead = 2**22 + 5
    names = [f".run.{dead}.abc.tmp", f".run.5.{dead}.abc.tmp", f".run.{os.getpid()}.live.tmp", ".run.legacy1.tmp",
             f".run.old-{dead}", ".checkpoint.pt.zz.tmp", ".run.fresh.tmp"]
    old = time.time() - LEGACY_TMP_AGE_S - 60
    for n in names:
        (tmp_path / n).write_text("x")
        if n != ".run.fresh.tmp":
            os.utime(tmp_path / n, (old, old))
    swept = sorted(p.name for p in sweep_stale_temps(tmp_path / "run"))
    assert swept == sorted([f".run.{dead}.abc.tmp", ".run.legacy1.tmp", f".run.old-{dead}"])
    assert sorted(os.listdir(tmp_path)) == sorted([f".run.5.{dead}.abc.tmp", f".run.{os.getpid()}.live.tmp",
                                                   ".checkpoint.pt.zz.tmp", ".run.fresh.tmp"])
