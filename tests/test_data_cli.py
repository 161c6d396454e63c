"""`toolkit data prepare|synth` end to end: the real Beauty file, synthetic data, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolkit.cli.data import app
from toolkit.data import load_dataset
from toolkit.errors import ToolkitError

TOOLKIT = Path(sys.executable).parent / "toolkit"
runner = CliRunner()


def _toolkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(TOOLKIT), *args], capture_output=True, text=True, timeout=300)


def test_synth_cli_writes_a_loadable_dataset_and_is_idempotent(tmp_path):
    out = tmp_path / "synth"
    args = ["synth", "--out", str(out), "--users", "150", "--items", "180", "--domains", "15", "--seq-len", "6"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert f"dataset.json: {out / 'dataset.json'}" in first.output
    ds = load_dataset(out)
    assert (ds.n_users, ds.n_items, ds.seq_len, ds.meta["format"]) == (150, 180, 6, "synthetic")
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "unchanged" in again.output
    other = runner.invoke(app, [*args[:-2], "--seq-len", "7"])
    assert other.exit_code != 0 and "already holds a different dataset" in str(other.exception)
    forced = runner.invoke(app, [*args[:-2], "--seq-len", "7", "--force"])
    assert forced.exit_code == 0, forced.output
    assert load_dataset(out).seq_len == 7


def test_prepare_cli_on_an_inter_file(tmp_path):
    src = tmp_path / "tiny.inter"
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(20):
        for t in range(6 + u % 4):
            lines.append(f"{u}\t{(u * 7 + t * 13) % 150}\t5.0\t{1000 + 10 * t}")
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ds"
    result = runner.invoke(app, ["prepare", str(src), "--out", str(out), "--seq-len", "4", "--seed", "2"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["format"] == "interactions" and meta["n_users"] == 20 and meta["seed"] == 2
    assert meta["n_interactions"] == len(lines) - 1
    assert meta["source_sha256"] and meta["arrays_sha256"] == load_dataset(out).sha256


@pytest.mark.parametrize(
    "content, args, message",
    [
        (None, [], "source file not found"),
        ("", [], "source file is empty"),
        ("1 1 2 3\n2 4 5 x\n", [], "src.txt:2: id 'x' is not an integer"),
        ("1 1 2 3\n", ["--seq-len", "0"], "--seq-len must be >= 1"),
        ("user,item,rating\n1,2,5\n", ["--format", "interactions"], "no timestamp column"),
    ],
)
def test_bad_input_is_a_toolkit_error_and_nothing_is_written(tmp_path, content, args, message):
    src = tmp_path / "src.txt"
    if content is not None:
        src.write_text(content)
    out = tmp_path / "out"
    result = runner.invoke(app, ["prepare", str(src), "--out", str(out), *args])
    assert isinstance(result.exception, ToolkitError), result.output
    assert message in str(result.exception) and "\n" not in str(result.exception)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["src.txt"] if content is not None else [])


def test_installed_command_prints_one_error_line_and_exits_2(tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("1 1 2 3\n2 4 5 x\n")
    proc = _toolkit("data", "prepare", str(src), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    error_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(error_lines) == 1 and "src.txt:2: id 'x' is not an integer" in error_lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_prepare_beauty_end_to_end(beauty_file, tmp_path):
    out = tmp_path / "beauty"
    proc = _toolkit("data", "prepare", str(beauty_file), "--format", "seqfile", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"dataset.json: {out / 'dataset.json'}" in proc.stdout
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["n_users"] == 22_363
    assert meta["n_items"] == 12_101
    assert meta["n_interactions"] == 198_502
    assert meta["n_train_rows"] == 198_502 - 3 * 22_363
    assert meta["n_valid_users"] == meta["n_test_users"] == 22_363
    assert meta["dropped_users"] == 0 and meta["history_length"]["min"] == 5 and meta["history_length"]["max"] == 204
    assert meta["source_sha256"] == "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8"
    ds = load_dataset(out)
    first = beauty_file.read_text().split("\n", 1)[0].split()  # user 1's history keeps its ids (1..12101 all used)
    assert ds.history(0).tolist() == [int(x) for x in first[1:]]
    n = ds.user_ptr[1:] - ds.user_ptr[:-1]
    assert (ds.train_time >= 1).all() and (ds.train_time <= n[ds.train_user] - 3).all()
    assert (ds.valid_cands[:, 0] == ds.user_items[ds.user_ptr[1:] - 2]).all()
    assert (ds.test_cands[:, 0] == ds.user_items[ds.user_ptr[1:] - 1]).all()
