"""Issue 23: nothing lost, whatever the input. One table per failure class of the issue's probes.

Every row runs the real CLI entry point (in-process where no real process is needed, else a subprocess) and asserts
the exit code, exactly one `error:` line, no traceback, and that every file that existed before is byte-identical
after (a sha256 of every file of the workspace, hidden ones included, before and after: nothing added, removed or
changed). Rows that need a training process to run or be interrupted are marked slow.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from cli_helpers import TOOLKIT  # tests/ is on sys.path under pytest

from toolkit.cli import main
from toolkit.errors import ToolkitError

# ---------------------------------------------------------------- workspace and assertions


@pytest.fixture(scope="module")
def pristine(synth_dataset_dir, tmp_path_factory) -> Path:
    """ws/data (tiny dataset), ws/sub/d (another copy), ws/run (gru4rec, 1 epoch), ws/keep/f (a user's file),
    ws/s/log.csv (a source log)."""
    from toolkit.data import load_dataset
    from toolkit.train import TrainSettings, train

    ws = tmp_path_factory.mktemp("reliability") / "ws"
    shutil.copytree(synth_dataset_dir, ws / "data")
    shutil.copytree(synth_dataset_dir, ws / "sub" / "d")
    train("gru4rec", load_dataset(ws / "data"), ws / "run",
          TrainSettings(epochs=1, batch_size=512, threads=1, config={"dim": 16}))
    (ws / "keep").mkdir()
    (ws / "keep" / "f").write_text("the user's work\n")
    (ws / "s").mkdir()
    (ws / "s" / "log.csv").write_text("user,item,timestamp\n" + "".join(
        f"u{u},i{(u * 7 + k) % 150},{1000 + k}\n" for u in range(40) for k in range(8)))
    return ws


@pytest.fixture
def ws(pristine, tmp_path, monkeypatch) -> Path:
    w = tmp_path / "ws"
    shutil.copytree(pristine, w, symlinks=True)
    monkeypatch.chdir(w)
    return w


def hashes(root: Path) -> dict[str, str]:
    """Every path under root -> sha256 of its bytes (dirs: 'dir', symlinks: their target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            out[os.path.relpath(p, root)] = "link:" + os.readlink(p) if os.path.islink(p) else "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = "link:" + os.readlink(p)
            else:
                with open(p, "rb") as fh:
                    out[rel] = hashlib.sha256(fh.read()).hexdigest()
    return out


def changed(before: dict, after: dict) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def run_main(monkeypatch, capsys, args: list[str]) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["toolkit", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    code = e.value.code if isinstance(e.value.code, int) else (0 if e.value.code is None else 1)
    return code, out, err


def one_error_line(out: str, err: str) -> str:
    assert "Traceback" not in out + err, out + err
    lines = [ln for ln in err.splitlines() if ln.strip() and "━" not in ln]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


@dataclass
class Row:
    id: str
    args: list[str]
    code: int
    needle: str
    plant: Callable[[Path], None] | None = None
    absent: list[str] = field(default_factory=list)


def symlink(name: str, to: str):
    def plant(ws: Path) -> None:
        (ws / name).symlink_to(to)
    return plant


# ---------------------------------------------------------------- 1. data loss, with and without --force

G = ["--epochs", "1", "--config", "dim=16"]
LOSS_ROWS = [
    Row("train-missing-data-force", ["train", "scn", "--data", "nowhere", "--out", "keep", "--force"], 2,
        "dataset dir not found"),
    Row("train-missing-data", ["train", "scn", "--data", "nowhere", "--out", "keep"], 2, "is not empty"),
    Row("train-fresh-missing-data", ["train", "scn", "--data", "nowhere", "--out", "new"], 2,
        "dataset dir not found", absent=["new"]),
    Row("gate-missing-model-force", ["train", "gate", "--data", "data", "--model", "nowhere", "--out", "keep",
                                     "--force"], 2, "--model nowhere: run dir not found"),
    Row("unknown-config-key-force", ["train", "scn", "--data", "data", "--out", "keep", "--force", "--config",
                                     "bogus=1"], 2, "unknown config key(s) for scn: bogus"),
    Row("dim-0-force", ["train", "scn", "--data", "data", "--out", "keep", "--force", "--config", "dim=0"], 2,
        "config dim of scn must be"),
    Row("dim-huge-force", ["train", "scn", "--data", "data", "--out", "keep", "--force", "--config",
                           f"dim={2**30}"], 2, "config dim of scn must be at most"),
    Row("gate-given-a-gru4rec-run", ["train", "gate", "--data", "data", "--model", "run", "--out", "keep", "--force"],
        2, "is a 'gru4rec' run, which has none"),
    Row("out-is-the-dataset", ["train", "scn", "--data", "data", "--out", "data", "--force"], 2,
        "is the dataset data itself"),
    Row("out-contains-the-dataset", ["train", "scn", "--data", "sub/d", "--out", "sub", "--force"], 2,
        "contains the dataset sub/d"),
    Row("out-inside-the-dataset", ["train", "scn", "--data", "data", "--out", "data/r", "--force"], 2,
        "lies inside the dataset data", absent=["data/r"]),
    Row("gate-out-is-the-base-run", ["train", "gate", "--data", "data", "--model", "run", "--out", "run", "--force"],
        2, "is the base run (--model) run itself"),
    Row("init-out-is-the-init-run", ["train", "cocorrrec", "--data", "data", "--init", "run", "--out", "run",
                                     "--force"], 2, "is the --init run run itself"),
    Row("prepare-out-holds-the-source", ["data", "prepare", "s/log.csv", "--out", "s", "--force"], 2,
        "contains the source file s/log.csv"),
    Row("prepare-missing-source-force", ["data", "prepare", "nowhere.csv", "--out", "keep", "--force"], 2,
        "source file not found"),
    Row("export-out-is-the-run", ["export", "run", "--out", "run", "--force", "--format", "onnx"], 2,
        "is the run being exported run itself"),
    Row("gate-curve-out-is-the-gate", ["gate", "curve", "run", "--data", "data", "--out", "run", "--force"], 2,
        "is the gate run run itself"),
    Row("bench-json-inside-the-input", ["bench", "run", "--json", "run/metrics.json"], 2,
        "lies inside the input run"),
    Row("pipeline-out-is-the-dataset", ["pipeline", "--data", "data", "--out", "data"], 2,
        "is the dataset data"),
    Row("symlinked-out-force", ["train", "scn", "--data", "data", "--out", "link", "--force", *G], 2,
        "is a symbolic link", plant=symlink("link", "keep")),
    Row("symlinked-export-out-force", ["export", "run", "--out", "link", "--force", "--format", "onnx"], 2,
        "is a symbolic link", plant=symlink("link", "keep")),
    Row("resume-and-force", ["train", "scn", "--data", "data", "--out", "keep", "--force", "--resume"], 2,
        "contradict"),
]


@pytest.mark.parametrize("row", LOSS_ROWS, ids=[r.id for r in LOSS_ROWS])
def test_bad_input_never_destroys(row: Row, ws: Path, monkeypatch, capsys):
    if row.plant is not None:
        row.plant(ws)
    before = hashes(ws)
    code, out, err = run_main(monkeypatch, capsys, row.args)
    line = one_error_line(out, err)
    assert code == row.code, (code, line)
    assert row.needle in line, line
    assert changed(before, hashes(ws)) == []
    for rel in row.absent:
        assert not (ws / rel).exists(), rel


def test_a_failure_inside_a_forced_retrain_keeps_the_old_run(ws, monkeypatch, capsys):
    """--init names a gru4rec run, which is refused only once training builds the model (torch): the run was
    already being staged beside KEEP, and KEEP is untouched; no staging dir is left behind."""
    before = hashes(ws)
    code, out, err = run_main(monkeypatch, capsys, ["train", "cocorrrec", "--data", "data", "--init", "run",
                                                    "--out", "keep", "--force", *G])
    line = one_error_line(out, err)
    assert code == 2 and "a 'gru4rec' run; the device part of this cocorrrec" in line, line
    assert changed(before, hashes(ws)) == []


def test_a_corrupt_dataset_stops_the_pipeline_before_any_stage(ws, monkeypatch, capsys):
    (ws / "P" / "runs" / "cocorrrec").mkdir(parents=True)
    (ws / "P" / "runs" / "cocorrrec" / "model.json").write_text("{}\n")
    (ws / "data" / "arrays.npz").write_bytes(b"PK\x03\x04 not a zip")
    before = hashes(ws)
    code, out, err = run_main(monkeypatch, capsys, ["pipeline", "--out", "P", "--data", "data"])
    line = one_error_line(out, err)
    assert code == 2 and "dataset arrays is corrupt" in line, line
    assert changed(before, hashes(ws)) == []


def test_forced_retrain_replaces_the_run_and_leaves_no_temp(ws, monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, ["train", "gru4rec", "--data", "data", "--out", "keep",
                                                    "--force", *G, "--batch-size", "512"])
    assert code == 0, err
    assert sorted(p.name for p in (ws / "keep").iterdir()) == ["checkpoint.pt", "metrics.json", "model.json",
                                                               "weights.safetensors"]
    assert not [p for p in os.listdir(ws) if p.startswith(".")], os.listdir(ws)


# ---------------------------------------------------------------- 2. locks: a second writer is refused


def test_a_second_writer_is_refused_naming_the_holder(ws, monkeypatch, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (ws / ".keep.lock").write_text(f"{holder.pid}\n")
        before = hashes(ws)
        code, out, err = run_main(monkeypatch, capsys, ["train", "scn", "--data", "data", "--out", "keep",
                                                        "--force", *G])
        line = one_error_line(out, err)
        assert code == 2 and f"pid {holder.pid}" in line, line
        assert changed(before, hashes(ws)) == []
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_of_a_dead_writer_is_taken_over(tmp_path):
    from toolkit.io import dir_lock, lock_path

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(tmp_path / "out").write_text(f"{dead.pid}\n")
    with dir_lock(tmp_path / "out") as lock:
        assert lock.read_text().strip() == str(os.getpid())
    assert not lock.exists()


def test_the_swap_puts_the_old_dir_back_when_the_second_rename_fails(tmp_path, monkeypatch):
    from toolkit import io as tio

    final = tmp_path / "out"
    final.mkdir()
    (final / "f").write_text("old\n")
    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    with pytest.raises(ToolkitError, match="No space left"):
        with tio.atomic_dir(final, force=True) as tmp:
            (tmp / "f").write_text("new\n")
            monkeypatch.setattr(tio.os, "replace", flaky)
    monkeypatch.setattr(tio.os, "replace", real)
    assert (final / "f").read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["out"]


@pytest.mark.slow  # two real training processes
def test_two_concurrent_writers(pristine, tmp_path):
    shutil.copytree(pristine / "data", tmp_path / "data")
    first = subprocess.Popen([*TOOLKIT, "train", "gru4rec", "--data", "data", "--out", "r", "--epochs", "200",
                              "--no-patience", "--config", "dim=16", "--threads", "1", "--batch-size", "64"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: (tmp_path / ".r.lock").is_file(), 120), "the first writer never started"
        second = subprocess.run([*TOOLKIT, "train", "gru4rec", "--data", "data", "--out", "r", "--force", *G],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        line = one_error_line(second.stdout, second.stderr)
        assert f"pid {first.pid}" in line, line
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)


# ---------------------------------------------------------------- 3. signals during a forced rewrite


def _wait_for(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow  # a real training process, interrupted while it writes the staging dir
@pytest.mark.parametrize("sig, code, needle", [(signal.SIGINT, 130, "interrupted: the run in keep is unchanged"),
                                               (signal.SIGTERM, 143, "terminated (SIGTERM): temporary files "
                                                "removed; the run in keep is unchanged")])
def test_a_signal_during_a_forced_retrain_keeps_the_old_run(sig, code, needle, ws):
    before = hashes(ws)
    proc = subprocess.Popen([*TOOLKIT, "train", "gru4rec", "--data", "data", "--out", "keep", "--force", "--epochs",
                             "200", "--no-patience", "--config", "dim=16", "--threads", "1", "--batch-size", "64"],
                            cwd=ws, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    staged = lambda: [p for p in os.listdir(ws) if p.startswith(".keep.") and p.endswith(".tmp")]  # noqa: E731
    assert _wait_for(lambda: any((ws / s / "checkpoint.pt").is_file() for s in staged()), 180), "no epoch finished"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    lines = [ln for ln in err.splitlines() if ln.strip() and "━" not in ln]
    assert len(lines) == 1 and lines[0].startswith(needle) and "Traceback" not in out + err, err
    after = hashes(ws)
    after.pop("toolkit.log", None)  # the run's log of library warnings, beside --out (append-only)
    assert changed(before, after) == []


@pytest.mark.slow  # a real training process, interrupted before its first epoch ends
def test_ctrl_c_before_any_checkpoint_claims_none(pristine, tmp_path):
    shutil.copytree(pristine / "data", tmp_path / "data")
    proc = subprocess.Popen([*TOOLKIT, "train", "gru4rec", "--data", "data", "--out", "r", "--epochs", "5",
                             "--config", "dim=16", "--threads", "1", "--batch-size", "1"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: (tmp_path / "r").is_dir(), 120), "training never started"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip() and "━" not in ln]
    assert len(lines) == 1 and "no epoch had finished" in lines[0] and "checkpointed" not in lines[0], err
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- 4. distributed flags, whatever --nproc


DIST_ROWS = [
    (["--connect-timeout", "nan"], "--connect-timeout must be"),
    (["--connect-timeout", "-5"], "--connect-timeout must be"),
    (["--master-port", "99999999"], "--master-port must lie in 1..65535"),
    (["--master-port", "0", "--nproc", "2"], "--master-port must lie in 1..65535"),
    (["--nproc", "-1"], "--nproc must be >= 1"),
    (["--nproc", "0"], "--nproc must be >= 1"),
    (["--nproc", "100000"], "--nproc must lie in"),
    (["--nnodes", "0"], "--nnodes must lie in"),
    (["--node-rank", "3"], "--node-rank must lie in"),
]


@pytest.mark.parametrize("extra, needle", DIST_ROWS, ids=[" ".join(r[0]) for r in DIST_ROWS])
def test_distributed_flags_are_checked_whatever_nproc(extra, needle, ws, monkeypatch, capsys):
    before = hashes(ws)
    code, out, err = run_main(monkeypatch, capsys, ["train", "scn", "--data", "data", "--out", "keep", "--force",
                                                    *G, *extra])
    line = one_error_line(out, err)
    assert code == 2 and needle in line, line
    assert changed(before, hashes(ws)) == []


# ---------------------------------------------------------------- 5. refusals answer before torch, in < 1.5 s

REFUSALS = [
    ["train", "scn", "--data", "nowhere", "--out", "o"],
    ["train", "gate", "--data", "data", "--model", "nowhere", "--out", "o"],
    ["train", "scn", "--data", "data", "--out", "o", "--config", "bogus=1"],
    ["train", "scn", "--data", "data", "--out", "o", "--nproc", "0"],
    ["train", "scn", "--data", "data", "--out", "o", "--connect-timeout", "nan"],
    ["train", "scn", "--data", "data", "--out", "data", "--force"],
    ["export", "nowhere", "--out", "o"],
]


@pytest.mark.parametrize("args", REFUSALS, ids=[" ".join(a[1:4]) for a in REFUSALS])
def test_input_refusals_answer_before_torch(args, pristine, tmp_path):
    shutil.copytree(pristine / "data", tmp_path / "data")
    t0 = time.perf_counter()
    subprocess.run([*TOOLKIT, "--help"], capture_output=True, cwd=tmp_path)
    help_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "toolkit", *args], capture_output=True,
                          text=True, cwd=tmp_path)
    took = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr[-2000:]
    imported = {ln.split("|")[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")}
    assert not imported & {"torch", "executorch", "coremltools", "onnxruntime"}
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert took < max(1.5, 2 * help_s), (took, help_s)
    assert sorted(os.listdir(tmp_path)) == ["data"]


# ---------------------------------------------------------------- 6. crafted files: manifests, descriptors, arrays


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def artifact_dir(root: Path, runtime: str = "onnxruntime", model_bytes: bytes = b"not a model", **extra) -> Path:
    """A hand-made artifact dir whose manifest and self-checksums are consistent (what a crafted one looks like)."""
    root.mkdir(parents=True)
    name = {"executorch": "m.pte", "onnxruntime": "m.onnx"}[runtime]
    (root / name).write_bytes(model_bytes)
    np.savez(root / "tv.npz", **{"step0/in/x": np.zeros((1, 4), np.float32),
                                 "step0/out/y": np.zeros((1, 2), np.float32)})
    record = {"file": name, "sha256": _sha(root / name), "runtime": runtime, "model": "toy", "entry": "forward",
              "inputs": [{"name": "x", "shape": [1, 4], "dtype": "float32"}],
              "outputs": [{"name": "y", "shape": [1, 2], "dtype": "float32"}], "states": [],
              "test_vectors": "tv.npz",
              "extra_files": [{"role": "test_vectors", "file": "tv.npz", "sha256": _sha(root / "tv.npz")}],
              **extra}
    write_manifest_text(root, json.dumps({"format": "toolkit-artifacts/1", "model": "toy", "artifacts": [record]}))
    return root


def write_manifest_text(root: Path, text: str) -> None:
    (root / "manifest.json").write_text(text)
    (root / "manifest.sha256").write_text(f"{_sha(root / 'manifest.json')}  manifest.json\n")


def deep_manifest(ws: Path) -> None:
    d = artifact_dir(ws / "art")
    write_manifest_text(d, "[" * 200_000 + "]" * 200_000)


MANIFEST_ROWS = [
    ("deep-manifest", deep_manifest, "nested deeper than 64 levels"),
    ("ort-level-bogus", lambda ws: artifact_dir(ws / "art", ort_optimization_level="bogus"),
     "'ort_optimization_level' 'bogus' is not one of"),
    ("parity-not-an-object", lambda ws: artifact_dir(ws / "art", parity=[1, 2]), "artifacts[0].parity is malformed"),
    ("tolerance-without-atol", lambda ws: artifact_dir(ws / "art", parity={"tolerance": {"rtol": 0.1}}),
     "'atol' None is not a finite number"),
    ("tolerance-negative", lambda ws: artifact_dir(ws / "art", parity={"tolerance": {"atol": -1, "rtol": 0}}),
     "'atol' -1 is not a finite number"),
    ("bundled-cases-huge", lambda ws: artifact_dir(ws / "art", bundled_program={"file": "tv.npz", "cases": 10**12,
                                                                                 "atol": 1e-4}),
     "'cases' 1000000000000 is not an integer"),
]


@pytest.mark.parametrize("plant, needle", [r[1:] for r in MANIFEST_ROWS], ids=[r[0] for r in MANIFEST_ROWS])
def test_crafted_manifest_is_one_line(plant, needle, ws, monkeypatch, capsys):
    plant(ws)
    before = hashes(ws)
    code, out, err = run_main(monkeypatch, capsys, ["verify", "art"])
    line = one_error_line(out, err)
    assert code == 1 and needle in line, line  # exit 1: the dir is there but cannot be trusted (a failed check)
    assert changed(before, hashes(ws)) == []


def zip_bomb(path: Path, mib: int = 64) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("train_seqs.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False,
                                                     "shape": (mib << 17,)})
            block = bytes(1 << 20)
            for _ in range(mib):
                f.write(block)


def npy_header_lie(path: Path) -> None:
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": "<i8", "fortran_order": False, "shape": (10**12,)})
    b.write(bytes(64))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train_seqs.npy", b.getvalue())


def reseal_model_json(ws: Path, **config) -> None:
    from toolkit.io import read_json, write_descriptor_json

    desc = read_json(ws / "run" / "model.json")
    desc["config"].update(config)
    write_descriptor_json(ws / "run" / "model.json", desc)


def deep_dataset_json(ws: Path) -> None:
    (ws / "data" / "dataset.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000)


def replace_by_symlink(ws: Path) -> None:
    shutil.copy(ws / "data" / "arrays.npz", ws / "elsewhere.npz")
    (ws / "data" / "arrays.npz").unlink()
    (ws / "data" / "arrays.npz").symlink_to(ws / "elsewhere.npz")


TRAIN_NEW = ["train", "gru4rec", "--data", "data", "--out", "new", *G]
CRAFTED_ROWS = [
    Row("npz-bomb", TRAIN_NEW, 2, "refused as a zip bomb", lambda ws: zip_bomb(ws / "data" / "arrays.npz"),
        absent=["new"]),
    Row("npy-header-lie", TRAIN_NEW, 2, "declares an array of 8,000,000,000,000 bytes",
        lambda ws: npy_header_lie(ws / "data" / "arrays.npz"), absent=["new"]),
    Row("deep-dataset-json", TRAIN_NEW, 2, "nested deeper than 64 levels", deep_dataset_json, absent=["new"]),
    Row("symlink-in-dataset", TRAIN_NEW, 2, "holds a symbolic link (arrays.npz", replace_by_symlink,
        absent=["new"]),
    Row("model-json-dim-huge", ["eval", "run", "--data", "data"], 2, "config dim of gru4rec must be at most",
        lambda ws: reseal_model_json(ws, dim=2**30)),
    Row("model-json-dim-string", ["eval", "run", "--data", "data"], 2, "config dim of gru4rec must be an integer",
        lambda ws: reseal_model_json(ws, dim="64")),
]


@pytest.mark.parametrize("row", CRAFTED_ROWS, ids=[r.id for r in CRAFTED_ROWS])
def test_crafted_file_is_one_line(row: Row, ws: Path, monkeypatch, capsys):
    row.plant(ws)
    before = hashes(ws)
    code, out, err = run_main(monkeypatch, capsys, row.args)
    line = one_error_line(out, err)
    assert code == row.code and row.needle in line, line
    assert changed(before, hashes(ws)) == []
    for rel in row.absent:
        assert not (ws / rel).exists(), rel


def test_toml_nested_too_deep_is_one_line(tmp_path):
    from toolkit.io import read_toml

    (tmp_path / "deep.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ToolkitError, match="nested deeper than 64 levels"):
        read_toml(tmp_path / "deep.toml")


# ---------------------------------------------------------------- 7. a crafted .pte never kills the process


@pytest.mark.parametrize("head", [b"", b"abcdET12"], ids=["random", "ET12-then-random"])
def test_random_pte_is_a_failed_check_not_an_abort(head, tmp_path):
    """A random .pte listed with its sha256: `verify` reports a failed check (exit 1), never exit 134. Random bytes
    made ExecuTorch log the foreign identifier; decoding that log line in its Python hook aborted the process."""
    rnd = np.random.default_rng(0).bytes(4096)
    artifact_dir(tmp_path / "art", runtime="executorch", model_bytes=head + rnd[len(head):])
    before = hashes(tmp_path)
    proc = subprocess.run([*TOOLKIT, "verify", "art"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "FAILED" in proc.stdout, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: verify failed:"), proc.stderr
    assert ("is not an ExecuTorch program" if not head else "ExecuTorch cannot load m.pte") in lines[0], lines[0]
    after = hashes(tmp_path)
    after.pop("toolkit.log", None)
    assert changed(before, after) == []


def test_a_native_abort_while_loading_is_contained():
    from toolkit.exporters.runners import probe_load

    with pytest.raises(ToolkitError, match="crashed loading it \\(SIGABRT"):
        probe_load(os.abort, "program x.pte")
    probe_load(lambda: None, "program ok.pte")  # a clean load passes


def test_pte_identifier_and_size_are_checked_first(tmp_path):
    from toolkit.exporters.runners import check_program_file

    (tmp_path / "a.pte").write_bytes(b"\x00\x00\x00\x00ET12" + bytes(16))
    check_program_file(tmp_path / "a.pte")
    (tmp_path / "b.pte").write_bytes(b"\x00\x00\x00\x00\xed\xa0ZZ" + bytes(16))
    with pytest.raises(ToolkitError, match="not an ExecuTorch program"):
        check_program_file(tmp_path / "b.pte")
    (tmp_path / "c.pte").write_bytes(b"ET")
    with pytest.raises(ToolkitError, match="not an ExecuTorch program"):
        check_program_file(tmp_path / "c.pte")


# ---------------------------------------------------------------- 8. exact timestamps


@pytest.mark.parametrize("engine", ["memory", "columnar"])
def test_nanosecond_timestamps_are_not_duplicates(engine, tmp_path, monkeypatch, capsys):
    """836-row probe of the issue: distinct nanosecond timestamps collapse as float64; only the one planted exact
    duplicate (same user, item and timestamp as written) may be dropped."""
    rows = ["user_id,item_id,timestamp"]
    base = 1_700_000_000_000_000_000
    for u in range(60):
        for k in range(14):
            rows.append(f"u{u},i{(u * 31 + k * 17) % 400},{base + u * 10**12 + k}")
    rows.append(rows[5])
    (tmp_path / "ns.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, ["data", "prepare", "ns.csv", "--out", "ds", "--engine", engine,
                                                    "--min-user-count", "3"])
    assert code == 0, err
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["duplicate_rows_dropped"] == 1
    assert meta["n_interactions"] == 60 * 14


def test_both_engines_agree_on_exact_timestamps(tmp_path):
    from toolkit.data import prepare

    rows = ["user_id,item_id,timestamp"]
    for u in range(50):
        for k in range(12):
            rows.append(f"u{u},i{(u * 13 + k * 7) % 300},{9_007_199_254_740_993 + (k * 5 + u) % 12}")
    rows += [rows[3], rows[40]]
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    a = prepare(tmp_path / "log.csv", tmp_path / "m", engine="memory", min_user_count=3)
    b = prepare(tmp_path / "log.csv", tmp_path / "c", engine="columnar", min_user_count=3)
    assert a.meta["arrays_sha256"] == b.meta["arrays_sha256"]
    assert a.meta["duplicate_rows_dropped"] == b.meta["duplicate_rows_dropped"] == 2


def test_a_sigterm_whose_exception_a_library_swallowed_still_keeps_nothing(tmp_path):
    """The CLI's SIGTERM handler records the signal before raising Terminated; if a library's own fallback catches
    the error that exception became (raised inside code C++ called), the finished dir is still not swapped in."""
    from toolkit.errors import Terminated, clear_termination, note_termination
    from toolkit.io import atomic_dir

    final = tmp_path / "out"
    try:
        with pytest.raises(Terminated):
            with atomic_dir(final) as tmp:
                (tmp / "f").write_text("x")
                try:
                    note_termination(15)
                    raise RuntimeError("the handler's Terminated, converted by a C++ layer")
                except RuntimeError:
                    pass  # a library's fallback swallows it and carries on
    finally:
        clear_termination()
    assert not final.exists() and os.listdir(tmp_path) == []


def test_config_keys_read_from_source_match_the_dataclasses():
    """`--config` is checked before torch is imported, from the config classes' source; a config that extends one
    defined in another module (CoCorrRecConfig extends SCNConfig) must still list the inherited keys."""
    import dataclasses
    import subprocess
    import sys

    from toolkit.models.registry import _MODELS, classes

    code = ("import json, sys; from toolkit.models.registry import _MODELS, config_defaults; "
            "print(json.dumps({m: sorted(config_defaults(m)) for m in _MODELS})); assert 'torch' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    from_source = json.loads(out)
    for m in _MODELS:
        assert from_source[m] == sorted(f.name for f in dataclasses.fields(classes(m)[0])), m
