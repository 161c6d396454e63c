"""`toolkit bench --profile` and the floor every row is compared to.

Timing values are never asserted against targets (the machines are noisy); the tests check that the profile names
exactly the graph's ops, that per-run accounting is consistent, and that floor / x_of_floor are computed from the
recorded probe and FLOPs.
"""

import json

import numpy as np
import pytest
from cli_helpers import run_inprocess


def test_floor_fields_are_flops_over_throughput_plus_empty_call():
    from toolkit.bench.profile import floor_fields

    probe = {"gflops_used": 50.0, "empty_call_ms": {"onnxruntime": 0.004}}
    row = {"runtime": "onnxruntime", "flops": 2_000_000, "flops_analytic": 1, "latency_ms": {"p50": 0.2}}
    f = floor_fields(row, probe)
    assert f["floor"]["compute_ms"] == pytest.approx(2e6 / 50e9 * 1e3)
    assert f["floor"]["ms"] == pytest.approx(0.04 + 0.004)
    assert f["x_of_floor"] == pytest.approx(0.2 / 0.044)
    # analytic FLOPs stand in when the counter has none; no empty call for the runtime -> no floor
    assert floor_fields(row | {"flops": None}, probe)["floor"]["flops"] == 1
    assert floor_fields(row | {"runtime": "executorch"}, probe) == {"floor": None, "x_of_floor": None}
    assert floor_fields(row, None) == {"floor": None, "x_of_floor": None}


def test_bench_profile_on_an_onnx_dir_lists_the_graph_ops_and_the_floor(tmp_path):
    from artifact_dirs import make_artifact_dir

    art = make_artifact_dir(tmp_path / "art", seq_lens=(10,))
    out_json = tmp_path / "b.json"
    code, out, err = run_inprocess("bench", art, "--runs", "6", "--warmup", "2", "--budget", "none", "--profile",
                                   "--json", out_json)
    assert code == 0, (out, err)
    result = json.loads(out_json.read_text())
    probe = result["environment"]["floor"]
    assert probe["ok"] and probe["gflops_used"] == max(probe["matmul_gflops"].values()) > 0
    assert set(probe["matmul_gflops"]) == {"64", "256"}
    assert probe["empty_call_ms"]["onnxruntime"] > 0
    graph_ops = {"Gather", "ReduceMean", "MatMul", "Tanh", "Transpose", "Mul", "Add"}
    for row in result["rows"]:
        assert row["status"] == "ok"
        p = row["profile"]
        assert p["missing"] is None and p["runs"] == 6  # warm-up runs are not counted
        ops = {o["op"] for o in p["ops"]}
        # ORT may fuse (Transpose+MatMul -> FusedMatMul, Mul folded in); everything it runs comes from the graph
        assert ops <= graph_ops | {"FusedMatMul"} and {"Gather", "ReduceMean", "Tanh"} <= ops
        assert sum(o["us_per_run"] for o in p["ops"]) == pytest.approx(p["kernel_us_per_run"])
        assert sum(o["share"] for o in p["ops"]) == pytest.approx(1.0)
        assert all(o["calls_per_run"] == 1 for o in p["ops"])
        assert p["run_us"] > 0 and all(o["mean_us_per_run"] > 0 for o in p["ops"])
        assert p["profiled_run_over_timed_p50"] == pytest.approx(p["run_us"] / (row["latency_ms"]["p50"] * 1e3))
        assert p["providers"] == {"CPUExecutionProvider": p["node_count"]}
        f = row["floor"]
        assert f["flops"] == 1234 and f["empty_call_ms"] == probe["empty_call_ms"]["onnxruntime"]
        assert f["ms"] == pytest.approx(1234 / (probe["gflops_used"] * 1e9) * 1e3 + f["empty_call_ms"])
        assert row["x_of_floor"] == pytest.approx(row["latency_ms"]["p50"] / f["ms"])
    assert "profile scn/window/onnxruntime/L=10" in out and "floor = FLOPs /" in out


def test_bench_without_profile_has_floor_but_no_profile(tmp_path):
    from artifact_dirs import make_artifact_dir

    art = make_artifact_dir(tmp_path / "art", seq_lens=(10,))
    out_json = tmp_path / "b.json"
    code, out, err = run_inprocess("bench", art, "--runs", "3", "--warmup", "1", "--budget", "none",
                                   "--json", out_json)
    assert code == 0, (out, err)
    rows = json.loads(out_json.read_text())["rows"]
    assert rows and all("profile" not in r and r["x_of_floor"] > 0 for r in rows)


def test_profile_on_an_emulated_target_is_one_line(capsys):
    code, out, err = run_inprocess("bench", "--profile", "--target", "arm64-a76", "--models", "scn")
    assert code == 2, (out, err)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "--profile: target arm64-a76" in lines[0] and "no per-op profiler" in lines[0], err


@pytest.mark.slow
def test_bench_profile_end_to_end_executorch_onnx_torch(tmp_path):
    """A real tiny SCN export: ORT ops, ExecuTorch partitions + non-delegated nodes (matching the exporter's own
    delegation report) and what the wheel cannot do, eager aten ops from the torch profiler."""
    out_json = tmp_path / "b.json"
    code, out, err = run_inprocess("bench", "--models", "scn", "--seq-len", "10", "--entries", "window",
                                   "--n-items", "300", "--candidates", "20", "--runs", "5", "--warmup", "1",
                                   "--budget", "none", "--profile", "--json", out_json, "--cache", tmp_path / "c")
    assert code == 0, (out, err)
    result = json.loads(out_json.read_text())
    rows = {r["runtime"]: r for r in result["rows"]}
    assert set(rows) == {"executorch", "onnxruntime", "torch"}
    for r in rows.values():
        assert r["status"] == "ok" and r["floor"]["ms"] > r["floor"]["compute_ms"] > 0 and r["x_of_floor"] > 0
    ort = rows["onnxruntime"]["profile"]
    assert any(o["op"] in ("MatMul", "FusedMatMul", "Gemm") for o in ort["ops"]) and ort["missing"] is None
    et = rows["executorch"]["profile"]
    assert et["partitions"] >= 1 and set(et["partitions_by_backend"]) == {"XnnpackBackend"}
    assert et["non_delegated_nodes"] == sum(et["non_delegated"].values())
    assert any(k.startswith("aten::embedding") for k in et["non_delegated"])
    exp = et["exporter_delegation"]
    assert exp["partitions"] == et["partitions"]
    assert "ETDump" in et["missing"] and et["ops"] is None
    tp = rows["torch"]["profile"]
    assert tp["missing"] is None and any(o["op"] in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul",
                                                     "aten::linear") for o in tp["ops"])
    assert np.isfinite([o["us_per_run"] for o in tp["ops"]]).all()
    assert "cannot: per-op / per-partition time" in out
