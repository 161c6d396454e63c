"""Device run plan: manifest -> cases (inputs, states, vectors) -> runner -> rows; budgets on device rows.

The runner here is the real toolkit ort_runner.py under the host's Python (LocalPythonTransport), so the
staging / parsing / parity code the emulated target uses runs in every CI job, qemu or not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from toolkit.device.budgets import check_budget
from toolkit.device.emulated import LocalPythonTransport, run_cases_emulated
from toolkit.device.plan import (
    build_cases,
    host_reference,
    instruction_summary,
    latency_summary,
    load_manifest,
    make_row,
    Measurement,
    select_artifacts,
)
from toolkit.errors import ToolkitError

N_ITEMS, D = 50, 8


def tiny_stateful_onnx(path: Path, seq_len: int, seed: int = 0) -> None:
    """items[1, L] -> scores[1, D]; state W[D, D] -> W + 0.01 * scores^T scores (a TTT-like carried state)."""
    rng = np.random.default_rng(seed)
    emb = numpy_helper.from_array(rng.standard_normal((N_ITEMS + 1, D)).astype(np.float32), "emb")
    scale = numpy_helper.from_array(np.array(0.01, np.float32), "scale")
    nodes = [
        helper.make_node("Gather", ["emb", "items"], ["h"]),
        helper.make_node("ReduceMean", ["h"], ["m"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["m", "state_in.W"], ["u"]),
        helper.make_node("Tanh", ["u"], ["scores"]),
        helper.make_node("Transpose", ["scores"], ["sT"]),
        helper.make_node("MatMul", ["sT", "scores"], ["outer"]),
        helper.make_node("Mul", ["outer", "scale"], ["delta"]),
        helper.make_node("Add", ["state_in.W", "delta"], ["state_out.W"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("items", TensorProto.INT64, [1, seq_len]),
         helper.make_tensor_value_info("state_in.W", TensorProto.FLOAT, [D, D])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, D]),
         helper.make_tensor_value_info("state_out.W", TensorProto.FLOAT, [D, D])],
        [emb, scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_export(root: Path, seq_lens=(10,), vectors: bool = False) -> Path:
    """A folder shaped like `toolkit export` output: manifest.json + .onnx + state initial files."""
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "W0.npy", np.eye(D, dtype=np.float32))
    arts = []
    for L in seq_lens:
        f = root / f"scn_window_L{L}.onnx"
        tiny_stateful_onnx(f, L)
        art = {"file": f.name, "sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "runtime": "onnxruntime",
               "model": "scn", "entry": "window", "seq_len": L, "flops": 1234, "params": 999,
               "inputs": [{"name": "items", "shape": [1, L], "dtype": "int64"}], "outputs": ["scores"],
               "states": [{"name": "W", "shape": [D, D], "dtype": "float32", "initial_file": "W0.npy"}]}
        if vectors:
            items = np.arange(1, L + 1, dtype=np.int64)[None, :]
            np.savez(root / f"scn_window_L{L}.vectors.npz", items=items)
            art["test_vectors"] = f"scn_window_L{L}.vectors.npz"
        arts.append(art)
    (root / "manifest.json").write_text(json.dumps({"artifacts": arts}))
    return root


def test_cases_take_ids_in_range_and_state_from_initial_file(tmp_path):
    root, manifest = load_manifest(make_export(tmp_path / "exp", (10, 25)))
    cases = build_cases(root, manifest, select_artifacts(root, manifest, ("onnxruntime",)))
    assert [c.seq_len for c in cases] == [10, 25]
    for c in cases:
        assert list(c.feeds) == ["items", "state_in.W"]  # the model's input order
        items = c.feeds["items"]
        assert items.dtype == np.int64 and items.min() >= 1 and items.max() <= N_ITEMS  # Gather table has N+1 rows
        np.testing.assert_array_equal(c.feeds["state_in.W"], np.eye(D, dtype=np.float32))
        assert c.state_map == {"state_out.W": "state_in.W"}
        assert c.inputs_source.startswith("synthetic")


def test_shipped_test_vectors_are_used(tmp_path):
    root, manifest = load_manifest(make_export(tmp_path / "exp", (10,), vectors=True))
    (case,) = build_cases(root, manifest, manifest["artifacts"])
    np.testing.assert_array_equal(case.feeds["items"], np.arange(1, 11)[None, :])
    assert "vectors" in case.inputs_source


def test_bad_manifests_name_the_problem(tmp_path):
    root = make_export(tmp_path / "exp")
    (root / "scn_window_L10.onnx").unlink()
    r, m = load_manifest(root)
    with pytest.raises(ToolkitError, match="missing.*scn_window_L10.onnx"):
        select_artifacts(r, m, ("onnxruntime",))
    with pytest.raises(ToolkitError, match="model 'gru' is not in the manifest"):
        select_artifacts(r, m, ("onnxruntime",), models=["gru"])
    with pytest.raises(ToolkitError, match="no executorch artifact"):
        select_artifacts(r, m, ("executorch",))
    with pytest.raises(ToolkitError, match="artifact dir not found"):
        load_manifest(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ToolkitError, match="manifest not found"):
        load_manifest(tmp_path / "empty")


def test_manifest_missing_a_graph_input_is_an_error(tmp_path):
    root = make_export(tmp_path / "exp")
    man = json.loads((root / "manifest.json").read_text())
    man["artifacts"][0]["states"] = []  # the graph still wants state_in.W
    (root / "manifest.json").write_text(json.dumps(man))
    r, m = load_manifest(root)
    with pytest.raises(ToolkitError, match="state_in.W"):
        build_cases(r, m, m["artifacts"])


def test_python_runner_matches_host_reference_and_feeds_state_back(tmp_path):
    """The real runner script, staged and parsed by the shared orchestrator, under the host Python."""
    root, manifest = load_manifest(make_export(tmp_path / "exp", (10,)))
    cases = build_cases(root, manifest, manifest["artifacts"])
    rows, _ = run_cases_emulated(root, manifest, cases, transport=LocalPythonTransport(), warmup=1, runs=3,
                                 parity_steps=3, parity_atol=1e-6)
    (row,) = rows
    assert row["status"] == "ok", row["error"]
    assert row["parity_max_abs_err"] is not None and row["parity_max_abs_err"] <= 1e-6
    assert row["latency_ms"]["runs"] == 3 and row["latency_ms"]["p50"] > 0
    assert row["flops"] == 1234 and row["params"] == 999 and row["seq_len"] == 10
    # the state really advances along the reference trajectory (so parity covers state, not a constant)
    ref = host_reference(cases[0], 3)
    assert not np.allclose(ref[0]["state_out.W"], ref[2]["state_out.W"])


def test_runner_failure_becomes_a_failed_row(tmp_path):
    root, manifest = load_manifest(make_export(tmp_path / "exp", (10,)))
    cases = build_cases(root, manifest, manifest["artifacts"])
    cases[0].feeds["items"] = cases[0].feeds["items"][:, :5]  # wrong shape: onnxruntime rejects it in the runner
    rows, _ = run_cases_emulated(root, manifest, cases, transport=LocalPythonTransport(), warmup=0, runs=1,
                                 parity_steps=1, parity_atol=1e-6)
    assert rows[0]["status"] == "failed" and "items" in rows[0]["error"]


def test_summaries():
    lat = latency_summary([5.0, 1.0, 2.0, 3.0, 4.0])
    assert lat == {"p50": 3.0, "p90": 5.0, "p99": 5.0, "mean": 3.0, "runs": 5}
    ins = instruction_summary([1050, 1000, 1000], overhead=50)
    assert ins["per_inference"] == 950 and ins["min"] == 1000 and ins["max"] == 1050


def _row(**kw):
    row = {"model": "scn", "entry": "window", "runtime": "onnxruntime", "seq_len": 25, "target": "arm64-a76",
           "status": "ok", "error": None, "memory": {}}
    row.update(kw)
    return row


def test_check_budget_instructions_and_latency():
    ok = _row(instructions_per_inference=900_000)
    assert check_budget(ok, {"instructions": 1e6})["pass"] is True and ok["budget"]["instructions"] == 1e6
    over = _row(instructions_per_inference=2_000_000)
    res = check_budget(over, {"instructions": 1e6})
    assert res["pass"] is False and "instructions" in res["broken"][0]
    phone = _row(target="android:X", latency_ms={"p50": 3.0, "p90": 6.0, "p99": 9.0, "mean": 4.0, "runs": 10})
    assert check_budget(phone, {"latency_ms": 5.0})["pass"] is True  # p50 by default
    assert check_budget(phone, {"latency_ms": 5.0, "latency_stat": "p90"})["pass"] is False
    failed = _row(status="failed", error="boom", instructions_per_inference=None)
    assert check_budget(failed, {"instructions": 1e6})["pass"] is False


def test_make_row_failed_measurement_keeps_schema(tmp_path):
    root, manifest = load_manifest(make_export(tmp_path / "exp", (10,)))
    (case,) = build_cases(root, manifest, manifest["artifacts"])
    row = make_row(case, Measurement(error="device fell asleep"), target="android:X", measured_on="android device",
                   manifest=manifest, parity_err=None, parity_tol=None, parity_note="n/a")
    for key in ("model", "entry", "runtime", "seq_len", "target", "status", "error", "measured_on", "flops", "params",
                "params_excluding_item_table", "artifact_bytes", "memory", "parity_max_abs_err"):
        assert key in row
    assert row["status"] == "failed" and row["error"] == "device fell asleep"
