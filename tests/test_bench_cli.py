"""`toolkit bench` on the command line: bad input -> one line + exit 2; the budget gate -> exit 1 / 0; JSON + JUnit.

Timing values are never asserted (the machines are noisy); only that they exist and are well-formed.
"""

import json
import xml.etree.ElementTree as ET

import pytest
from cli_helpers import run_inprocess


def run_cli(args, capsys, monkeypatch):
    return run_inprocess("bench", *args)


@pytest.mark.parametrize("args,needle", [
    (["--seq-len", ""], "--seq-len: empty"),
    (["--seq-len", "0"], "--seq-len: 0 must be a positive integer"),
    (["--seq-len", "-5"], "--seq-len: -5 must be a positive integer"),
    (["--seq-len", "ten"], "--seq-len: 'ten' is not an integer"),
    (["--seq-len", "10,,20"], "--seq-len: empty item"),
    (["--models", "bert"], "--models: unknown name 'bert'"),
    (["--runtimes", "tflite"], "--runtimes: unknown name 'tflite'"),
    (["--target", "pixel9"], "--target: unknown target 'pixel9'"),
    (["--runs", "0"], "--runs must be >= 1"),
    (["--runs", "many"], "--runs: 'many' is not an integer"),
    (["--budget-ms", "-1"], "--budget-ms must be positive"),
    (["--suite", "nope"], "--suite: unknown suite 'nope'"),
    (["--budget", "/nonexistent/b.toml"], "--budget: file not found"),
    (["--budget-ms", "1", "--budget", "none"], "use either --budget FILE or --budget-ms"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, capsys, monkeypatch):
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 2, (out, err)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], err


def test_malformed_budget_file_names_the_key(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "budgets.toml"
    bad.write_text('[[budget]]\nmodel = "scn"\ntarget = "host-1t"\nlatency_msec = 2\n')
    code, _, err = run_cli(["--budget", str(bad)], capsys, monkeypatch)
    assert code == 2 and "unknown key 'latency_msec'" in err and "budget[0]" in err


SMALL = ["--models", "gru4rec", "--seq-len", "5", "--runtimes", "torch", "--entries", "window",
         "--runs", "3", "--warmup", "1", "--candidates", "8", "--n-items", "50"]


def test_budget_gate_fails_with_exit_1_and_junit_failure(tmp_path, capsys, monkeypatch):
    out_json, junit = tmp_path / "b.json", tmp_path / "b.xml"
    code, out, err = run_cli([*SMALL, "--budget-ms", "1e-6", "--json", str(out_json), "--junit", str(junit),
                              "--cache", str(tmp_path / "cache"), "--wide"], capsys, monkeypatch)
    assert code == 1, (out, err)
    assert "broke a budget" in err
    result = json.loads(out_json.read_text())
    (row,) = result["rows"]
    assert row["status"] == "ok" and row["budget"]["pass"] is False and row["budget"]["latency_ms"] == 1e-6
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "1" and suite.get("failures") == "1" and suite.get("errors") == "0"
    assert suite.find("testcase/failure") is not None
    assert "1 row: 0 within budget, 1 over budget, 0 failed, 0 without a budget" in out
    assert "load ms" in out and "1st ms" in out and "floor ms" in out and "BROKEN: latency p50" in out  # --wide
    assert "verdict: 1 of 1 row over budget: gru4rec window torch L=5 (latency p50" in out
    assert row["budget"]["latency_headroom_pct"] < 0 and row["budget"]["headroom_pct"] < 0


def test_generous_budget_passes_with_exit_0_and_json_schema(tmp_path, capsys, monkeypatch):
    out_json, png = tmp_path / "b.json", tmp_path / "b.png"
    code, out, err = run_cli([*SMALL, "--budget-ms", "1e6", "--budget-mb", "1e6", "--json", str(out_json),
                              "--plot", str(png), "--cache", str(tmp_path / "cache")], capsys, monkeypatch)
    assert code == 0, (out, err)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # one L: the bar chart
    assert "not device latency" in out.replace("\n", " ") or "NOT device latency" in out.replace("\n", " ")
    result = json.loads(out_json.read_text())
    env = result["environment"]
    for key in ("versions", "cpu_model", "cores", "threads", "target", "flops_counter", "command"):
        assert key in env, key
    assert env["target"]["name"] == "host-1t" and env["threads"] == 1
    assert env["versions"]["torch"] and env["versions"]["onnxruntime"]
    (row,) = result["rows"]
    assert_row_schema(row)
    assert row["model"] == "gru4rec" and row["entry"] == "window" and row["runtime"] == "torch"
    assert row["seq_len"] == 5 and row["history"] is None and row["status"] == "ok" and row["error"] is None
    assert row["measured_on"].startswith("host ") and "not device latency" in row["measured_on"]
    assert row["budget"]["pass"] is True and row["budget"]["memory_bytes"] == 1e12
    assert row["flops"] > 0 and row["flops_analytic"] > 0
    assert row["params"] > row["params_excluding_item_table"] > 0
    assert row["latency_ms"]["runs"] == 3
    assert row["budget"]["latency_headroom_pct"] > 0 and row["budget"]["tightest"] in ("latency", "memory")
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines[-2] == "1 row: 1 within budget, 0 over budget, 0 failed, 0 without a budget", out
    assert lines[-1].startswith("verdict: all 1 row within budget; tightest latency: gru4rec window torch L=5 at ")


ROW_KEYS = {"model", "entry", "runtime", "seq_len", "history", "target", "status", "error", "measured_on", "flops",
            "flops_analytic", "params", "params_excluding_item_table", "artifact_bytes", "memory", "latency_ms",
            "instructions_per_inference", "parity_max_abs_err", "budget", "cold_start_ms"}
MEMORY_KEYS = {"weights_bytes", "activations_bytes", "state_bytes", "arena_peak_bytes", "rss_peak_delta_bytes"}
LATENCY_KEYS = {"p50", "p90", "p99", "mean", "runs"}


def assert_row_schema(row):
    assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
    assert row["entry"] in ("window", "step", "mrs")
    assert row["runtime"] in ("onnxruntime", "executorch", "torch")
    assert row["status"] in ("ok", "failed")
    assert MEMORY_KEYS <= set(row["memory"])
    assert {"latency_ms", "memory_bytes", "pass"} <= set(row["budget"])
    if row["status"] == "ok" and row["latency_ms"] is not None:
        assert LATENCY_KEYS <= set(row["latency_ms"])
        lat = row["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        assert isinstance(row["memory"]["rss_peak_delta_bytes"], int)
        cold = row["cold_start_ms"]  # timed rows: cold start (load, first call) beside the warm percentiles
        assert cold["load"] > 0 and cold["first_inference"] > 0, cold


def test_bench_an_artifact_dir_measures_exactly_the_listed_files(tmp_path):
    """`toolkit bench ARTIFACT_DIR`: no export; every row names the file it timed by sha256 and manifest."""
    from artifact_dirs import make_artifact_dir

    from toolkit.exporters.manifest import read_manifest

    art = make_artifact_dir(tmp_path / "art", seq_lens=(10, 12))
    m = read_manifest(art)
    out_json = tmp_path / "b.json"
    code, out, err = run_inprocess("bench", art, "--runs", "3", "--warmup", "1", "--budget", "none",
                                   "--history", "20", "--json", out_json, "--cache", tmp_path / "cache")
    assert code == 0, (out, err)
    assert not (tmp_path / "cache").exists()  # nothing exported
    result = json.loads(out_json.read_text())
    by_file = {a.file: a.sha256 for a in m.artifacts}
    assert {r["artifact"]["file"] for r in result["rows"]} == set(by_file)
    for row in result["rows"]:
        assert_row_schema(row)
        assert row["status"] == "ok" and row["runtime"] == "onnxruntime" and row["export_cache"] == "artifact dir"
        assert row["cold_start_ms"]["load"] > 0 and row["cold_start_ms"]["first_inference"] > 0
        assert row["artifact"]["sha256"] == by_file[row["artifact"]["file"]]
        assert row["artifact"]["manifest"] == str((art / "manifest.json").resolve())
        assert row["artifact"]["manifest_sha256"] == m.digest
    assert sorted((r["artifact"]["file"], r["history"]) for r in result["rows"]) == [
        ("scn_window_L10.onnx", 10), ("scn_window_L10.onnx", 20), ("scn_window_L12.onnx", 12),
        ("scn_window_L12.onnx", 12)]  # K = 12: history 20 rounds down to one step of 12 clicks
    assert result["environment"]["artifact_dirs"] == [{"dir": str(art), "manifest_sha256": m.digest}]


def test_bench_refuses_an_artifact_dir_that_fails_verify(tmp_path):
    from artifact_dirs import make_artifact_dir

    art = make_artifact_dir(tmp_path / "art")
    victim = art / "scn_window_L10.onnx"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    code, out, err = run_inprocess("bench", art, "--json", tmp_path / "b.json")
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 1 and len(" ".join(lines).split("error:")) == 2 and "Traceback" not in err
    assert "scn_window_L10.onnx: sha256 differs from the manifest" in " ".join(lines)
    assert not (tmp_path / "b.json").exists()
