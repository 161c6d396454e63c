"""`toolkit export` / `toolkit verify` / `toolkit bench DIR` as a user runs them: one-line errors with the right exit
code, an end-to-end export -> verify -> bench of exactly those files, and verify and bench refusing (exit 1) a
flipped byte, naming the file."""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_inprocess


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    return run_inprocess(*args)


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    return " ".join(lines)  # rich may wrap one long line


@pytest.mark.parametrize("value, needle", [("0", "--seq-len must be a positive integer, got 0"),
                                           ("-3", "--seq-len must be a positive integer, got -3"),
                                           ("abc", "--seq-len: 'abc' is not an integer"),
                                           ("2.5", "--seq-len: '2.5' is not an integer")])
def test_export_rejects_bad_seq_len(monkeypatch, capsys, tmp_path, value, needle):
    code, _, err = run_cli(monkeypatch, capsys, "export", "--model", "scn", "--seq-len", value, "--out", tmp_path / "o")
    assert code == 2 and needle in _one_line_error(err)
    assert not (tmp_path / "o").exists()


def test_export_rejects_unknown_target_and_bad_sources(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "export", "--model", "scn", "--target", "onnx,tflite", "--out",
                           tmp_path / "o")
    assert code == 2 and "unknown target 'tflite'" in _one_line_error(err)
    code, _, err = run_cli(monkeypatch, capsys, "export", "--target", "onnx", "--out", tmp_path / "o")
    assert code == 2 and "give either a RUN dir or --model NAME" in _one_line_error(err)
    code, _, err = run_cli(monkeypatch, capsys, "export", "--model", "nosuchmodel", "--target", "onnx", "--out",
                           tmp_path / "o")
    assert code == 2 and "unknown model 'nosuchmodel'" in _one_line_error(err)
    code, _, err = run_cli(monkeypatch, capsys, "export", "--model", "scn", "--dtype", "fp64", "--out", tmp_path / "o")
    assert code == 2 and "--dtype: unknown 'fp64'" in _one_line_error(err)
    (tmp_path / "taken").mkdir()
    code, _, err = run_cli(monkeypatch, capsys, "export", "--model", "scn", "--target", "onnx", "--out",
                           tmp_path / "taken")
    assert code == 2 and "output exists" in _one_line_error(err)


def test_export_refuses_a_run_whose_weights_fail_their_checksum(monkeypatch, capsys, tmp_path):
    from toolkit.exporters.sources import fresh
    from toolkit.io import write_descriptor_json
    from toolkit.models.runs import WEIGHTS, model_descriptor, save_weights

    model, _, _ = fresh("scn", 30, {"dim": 16, "heads": 2})
    run = tmp_path / "run"
    sha = save_weights(run / WEIGHTS, model)
    write_descriptor_json(run / "model.json", model_descriptor("scn", model, {}, sha))
    data = bytearray((run / WEIGHTS).read_bytes())
    data[-10] ^= 0x55
    (run / WEIGHTS).write_bytes(bytes(data))
    code, _, err = run_cli(monkeypatch, capsys, "export", run, "--target", "onnx", "--out", tmp_path / "o")
    assert code == 2 and "checksum mismatch" in _one_line_error(err)
    assert not (tmp_path / "o").exists()


def test_export_refuses_config_with_a_run_dir(monkeypatch, capsys, tmp_path):
    """--config with a RUN is refused, never ignored silently (the run's model.json fixes the config)."""
    code, _, err = run_cli(monkeypatch, capsys, "export", tmp_path / "run", "--config", "dim=3", "--target", "onnx",
                           "--out", tmp_path / "o")
    assert code == 2 and "--config applies to --model only" in _one_line_error(err)
    assert not (tmp_path / "o").exists()


def test_verify_rejects_a_missing_dir(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "verify", tmp_path / "nothing")
    assert code == 2 and "artifact dir not found" in _one_line_error(err)


@pytest.mark.slow
def test_export_then_verify_end_to_end(monkeypatch, capsys, tmp_path):
    out = tmp_path / "art"
    code, stdout, err = run_cli(monkeypatch, capsys, "export", "--model", "scn", "--n-items", "40", "--config",
                                "dim=16", "--config", "heads=2", "--seq-len", "10", "--candidates", "5",
                                "--with-corrections", "--target", "onnx", "--steps", "3", "--out", out)
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert m["model_info"]["with_corrections"] and m["model_info"]["source"] == "fresh"
    step = next(r for r in m["artifacts"] if r["entry"] == "step" and r["runtime"] == "onnxruntime")
    assert [i["name"] for i in step["inputs"]] == ["items", "candidates", "corr_attn", "corr_bias"]
    assert all(r["parity"]["pass"] and r["parity"]["steps"] == 3 for r in m["artifacts"])
    report_path = tmp_path / "verify.json"
    code, stdout, err = run_cli(monkeypatch, capsys, "verify", out, "--json", report_path)
    assert code == 0, err
    assert json.loads(report_path.read_text())["pass"] and "artifacts verified" in stdout
    # bench what verify proved: every row names the manifest's sha256 for the file it timed
    bench_json = tmp_path / "b.json"
    code, stdout, err = run_cli(monkeypatch, capsys, "bench", out, "--json", bench_json, "--runs", "3", "--warmup",
                                "1", "--budget", "none", "--entries", "window")
    assert code == 0, err
    want = {r["file"]: r["sha256"] for r in m["artifacts"]}
    rows = json.loads(bench_json.read_text())["rows"]
    assert rows and all(r["status"] == "ok" and r["artifact"]["sha256"] == want[r["artifact"]["file"]] for r in rows)
    victim = next(r["file"] for r in m["artifacts"] if r["entry"] == "window")
    data = bytearray((out / victim).read_bytes())
    data[len(data) // 3] ^= 0x01
    (out / victim).write_bytes(bytes(data))
    code, _, err = run_cli(monkeypatch, capsys, "verify", out)
    line = _one_line_error(err)
    assert code == 1 and victim in line and "sha256 differs" in line
    code, _, err = run_cli(monkeypatch, capsys, "bench", out, "--json", tmp_path / "b2.json")
    line = _one_line_error(err)
    assert code == 1 and victim in line and "sha256 differs" in line and not (tmp_path / "b2.json").exists()


@pytest.mark.slow
def test_a_cocorrrec_run_exports_and_benches_as_scn_including_the_ort(monkeypatch, capsys, tmp_path):
    """A cocorrrec run's device part is SCN: its artifacts are named scn.*, the manifest says model scn from source
    model cocorrrec, and bench rows (of the artifact dir, .ort included, and of the run itself) read model scn."""
    from toolkit.exporters.sources import fresh
    from toolkit.io import write_descriptor_json
    from toolkit.models.runs import WEIGHTS, model_descriptor, save_weights

    model, name, info = fresh("cocorrrec", 30, {"dim": 16, "heads": 2, "cloud": "history", "context_len": 8})
    assert name == "scn" and info["source_model"] == "cocorrrec"
    run = tmp_path / "runs" / "cocorrrec"
    sha = save_weights(run / WEIGHTS, model)
    write_descriptor_json(run / "model.json", model_descriptor("cocorrrec", model, {}, sha))
    out = tmp_path / "artifacts" / "scn"
    code, stdout, err = run_cli(monkeypatch, capsys, "export", run, "--format", "onnx", "--seq-len", "8",
                                "--candidates", "5", "--steps", "2", "--out", out)
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"] == "scn" and m["source_model"] == "cocorrrec" and m["model_info"]["source_model"] == "cocorrrec"
    assert {r["model"] for r in m["artifacts"]} == {"scn"}
    files = sorted(p.name for p in out.iterdir())
    assert not any("cocorrrec" in f for f in files), files
    assert {f.split(".")[0] for f in files} == {"scn", "manifest"}
    assert {"scn.window.onnx-ort-fp32.ort", "scn.window.onnx-ort-fp32.required_operators.config"} <= set(files)
    # export prints ORT's usability verdict, one line per execution provider
    for ep in ("NNAPI: ", "CoreML NeuralNetwork: ", "CoreML MLProgram: "):
        assert ep in stdout, stdout
    # bench the shipped .ort (a runtime asked for by name): rows read scn and name the .ort and its sha256
    want = {r["file"]: r["sha256"] for r in m["artifacts"]}
    bench_json = tmp_path / "b.json"
    code, stdout, err = run_cli(monkeypatch, capsys, "bench", out, "--runtimes", "onnxruntime-ort", "--entries",
                                "window", "--runs", "3", "--warmup", "1", "--budget", "none", "--json", bench_json)
    assert code == 0, err
    rows = json.loads(bench_json.read_text())["rows"]
    assert rows and all(r["status"] == "ok" and r["model"] == "scn" and r["runtime"] == "onnxruntime-ort"
                        and r["artifact"]["file"].endswith(".ort")
                        and r["artifact"]["sha256"] == want[r["artifact"]["file"]] for r in rows)
    # bench the run dir itself (exported through the bench's cache): rows read scn too
    bench_json = tmp_path / "b2.json"
    code, stdout, err = run_cli(monkeypatch, capsys, "bench", run, "--runtimes", "onnxruntime", "--entries", "window",
                                "--seq-len", "8", "--candidates", "5", "--runs", "3", "--warmup", "1", "--budget",
                                "none", "--json", bench_json, "--cache", tmp_path / "cache")
    assert code == 0, err
    rows = json.loads(bench_json.read_text())["rows"]
    assert rows and all(r["status"] == "ok" and r["model"] == "scn" for r in rows), rows
    assert all(p.name.startswith("scn.") for p in (tmp_path / "cache").rglob("*.onnx"))


@pytest.mark.slow
def test_export_precomputed_tower_then_verify(monkeypatch, capsys, tmp_path):
    """--tower precomputed: ExecuTorch, ONNX and Core ML artifacts gather rows of the shipped table; the manifest
    records the choice, the table's size and its check against the tower; trajectory parity (3 stateful steps) and
    verify hold with the fp32 recipe tolerance, as for the tower in the graph."""
    out = tmp_path / "art"
    code, stdout, err = run_cli(monkeypatch, capsys, "export", "--model", "scn", "--n-items", "40", "--config",
                                "dim=16", "--config", "heads=2", "--seq-len", "10", "--candidates", "5", "--tower",
                                "precomputed", "--target", "executorch,onnx,coreml", "--steps", "3", "--out", out)
    assert code == 0, err
    assert "tower: precomputed table [41, 16] shipped per entry" in " ".join(stdout.split())  # rich may wrap
    m = json.loads((out / "manifest.json").read_text())
    tower = m["model_info"]["tower"]
    assert tower["kind"] == "precomputed" and tower["pass"] and tower["table_shape"] == [41, 16]
    assert tower["table_bytes_per_entry"] == {"window": 41 * 16 * 4, "step": 41 * 16 * 4}
    assert all(c["pass"] and c["steps"] == 3 for c in tower["table_vs_tower"].values())
    assert m["model_info"]["contract_args"]["tower_table"] is True
    assert {(r["entry"], r["runtime"]) for r in m["artifacts"]} == {
        (e, rt) for e in ("window", "step") for rt in ("executorch", "onnxruntime", "onnxruntime-ort", "coreml")}
    for r in m["artifacts"]:
        assert r["parity"]["steps"] == 3
        if r["runtime"] == "coreml":  # converted; no Core ML runtime off macOS: structure + fp16-state drift
            assert r["parity"]["structure_pass"] and r["parity"]["status"] == "skipped"
        else:
            assert r["parity"]["pass"] and r["parity"]["status"] == "passed"
            assert r["parity"]["tolerance"] == {"atol": 1e-4, "rtol": 1e-4}
    code, stdout, err = run_cli(monkeypatch, capsys, "verify", out, "--json", tmp_path / "v.json")
    assert code == 0, err
    assert json.loads((tmp_path / "v.json").read_text())["pass"]


@pytest.mark.parametrize("args, needle", [
    (["--model", "gate", "--tower", "precomputed"], "gate has no separable candidate tower to precompute"),
    (["--model", "scn", "--tower", "table"], "--tower: unknown 'table' (valid: graph, precomputed)"),
])
def test_export_rejects_a_tower_it_cannot_build(monkeypatch, capsys, tmp_path, args, needle):
    code, _, err = run_cli(monkeypatch, capsys, "export", *args, "--target", "onnx", "--out", tmp_path / "o")
    assert code == 2 and needle in _one_line_error(err)
    assert not (tmp_path / "o").exists() and list(tmp_path.iterdir()) == []
