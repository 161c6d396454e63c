"""Device run plan: manifest -> cases (inputs, states, vectors) -> runner -> rows; budgets on device rows.

The runner here is the real toolkit ort_runner.py under the host's Python (LocalPythonTransport), so the
staging / parsing / parity code the emulated target uses runs in every CI job, qemu or not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from artifact_dirs import N_ITEMS, D, make_artifact_dir, rewrite_manifest

from toolkit.device.budgets import apply_budgets
from toolkit.device.emulated import LocalPythonTransport, run_cases_emulated
from toolkit.device.plan import (
    Measurement,
    build_cases,
    host_reference,
    load_manifest,
    make_row,
    select_artifacts,
)
from toolkit.errors import CheckFailed, ToolkitError
from toolkit.exporters.manifest import load_test_vectors


def make_export(root: Path, seq_lens=(10,)) -> Path:
    """A folder as `toolkit export` writes it (manifest.json + manifest.sha256 + .onnx + initial state + vectors)."""
    return make_artifact_dir(root, seq_lens)


def test_cases_take_the_shipped_vectors_and_state_from_initial_file(tmp_path):
    manifest = load_manifest(make_export(tmp_path / "exp", (10, 25)))
    cases = build_cases(manifest, select_artifacts(manifest, ("onnxruntime",)))
    assert [c.seq_len for c in cases] == [10, 25]
    for c, rec in zip(cases, manifest.artifacts):
        assert list(c.feeds) == ["items", "state_in.W"]  # the model's input order
        items = c.feeds["items"]
        assert items.dtype == np.int64 and items.min() >= 1 and items.max() <= N_ITEMS  # Gather table has N+1 rows
        np.testing.assert_array_equal(c.feeds["state_in.W"], np.eye(D, dtype=np.float32))
        assert c.state_map == {"state_out.W": "state_in.W"}
        vec = load_test_vectors(manifest, rec)
        np.testing.assert_array_equal(items, vec["steps"][0]["inputs"][0])
        assert len(c.step_inputs) == len(c.expected) == 3 and set(c.expected[0]) == {"scores", "state_out.W"}
        assert c.inputs_source == f"test vectors {rec.test_vectors}"
        assert c.sha256 == rec.sha256 and c.manifest_sha256 == manifest.digest


def test_bad_manifests_name_the_problem(tmp_path):
    root = make_export(tmp_path / "exp")
    m = load_manifest(root)
    with pytest.raises(ToolkitError, match="model 'gru' is not in the manifest"):
        select_artifacts(m, ("onnxruntime",), models=["gru"])
    with pytest.raises(ToolkitError, match="no executorch artifact"):
        select_artifacts(m, ("executorch",))
    with pytest.raises(ToolkitError, match="artifact dir not found"):
        load_manifest(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ToolkitError, match="manifest not found"):
        load_manifest(tmp_path / "empty")
    (root / "scn_window_L10.onnx").unlink()
    with pytest.raises(CheckFailed, match="scn_window_L10.onnx: missing"):
        load_manifest(root)


def test_a_device_refuses_a_dir_that_fails_verify(tmp_path):
    root = make_export(tmp_path / "exp")
    f = root / "scn_window_L10.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(CheckFailed, match="scn_window_L10.onnx: sha256 differs"):
        load_manifest(root)


def test_manifest_missing_a_graph_input_is_an_error(tmp_path):
    root = make_export(tmp_path / "exp")
    rewrite_manifest(root, lambda man: man["artifacts"][0].update(states=[]))  # the graph still wants state_in.W
    m = load_manifest(root)
    with pytest.raises(ToolkitError, match="state_in.W"):
        build_cases(m, m.artifacts)


def test_python_runner_matches_host_reference_and_feeds_state_back(tmp_path):
    """The real runner script, staged and parsed by the shared orchestrator, under the host Python."""
    manifest = load_manifest(make_export(tmp_path / "exp", (10,)))
    cases = build_cases(manifest, manifest.artifacts)
    rows, _ = run_cases_emulated(manifest.raw, cases, transport=LocalPythonTransport(), warmup=1, runs=3,
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
    manifest = load_manifest(make_export(tmp_path / "exp", (10,)))
    cases = build_cases(manifest, manifest.artifacts)
    cases[0].feeds["items"] = cases[0].feeds["items"][:, :5]  # wrong shape: onnxruntime rejects it in the runner
    cases[0].step_inputs = []
    rows, _ = run_cases_emulated(manifest.raw, cases, transport=LocalPythonTransport(), warmup=0, runs=1,
                                 parity_steps=1, parity_atol=1e-6)
    assert rows[0]["status"] == "failed" and "items" in rows[0]["error"]


def _row(**kw):
    row = {"model": "scn", "entry": "window", "runtime": "onnxruntime", "seq_len": 25, "target": "arm64-a76",
           "status": "ok", "error": None, "memory": {}}
    row.update(kw)
    return row


def _budget_file(path: Path, target: str, limits: str) -> Path:
    path.write_text(f'[[budget]]\nmodel = "scn"\ntarget = "{target}"\n{limits}\n')
    return path


def test_apply_budgets_instructions_and_latency(tmp_path):
    """The function `toolkit device run` applies (plan.run_document), on the rows of each target kind."""
    instr = _budget_file(tmp_path / "instr.toml", "arm64-a76", "instructions = 1e6")
    ok = _row(instructions_per_inference=900_000)
    over = _row(instructions_per_inference=2_000_000)
    failed = _row(status="failed", error="boom", instructions_per_inference=None)
    assert apply_budgets([ok, over, failed], instr) == str(instr)
    assert ok["budget"]["pass"] is True and ok["budget"]["instructions"] == 1e6
    assert over["budget"]["pass"] is False and "instructions" in over["budget"]["broken"][0]
    assert failed["budget"]["pass"] is False
    latency = {"p50": 3.0, "p90": 6.0, "p99": 9.0, "mean": 4.0, "runs": 10}
    p50 = _row(target="android:X", latency_ms=latency)
    apply_budgets([p50], _budget_file(tmp_path / "p50.toml", "android:X", "latency_ms = 5.0"))
    assert p50["budget"]["pass"] is True  # p50 by default
    p90 = _row(target="android:X", latency_ms=latency)
    apply_budgets([p90], _budget_file(tmp_path / "p90.toml", "android:X", 'latency_ms = 5.0\nlatency_stat = "p90"'))
    assert p90["budget"]["pass"] is False
    elsewhere = _row(target="android:Y", latency_ms=latency)
    apply_budgets([elsewhere], _budget_file(tmp_path / "p50b.toml", "android:X", "latency_ms = 5.0"))
    assert "budget" not in elsewhere  # no rule for this target: the row is left without a verdict


def test_make_row_failed_measurement_keeps_schema(tmp_path):
    manifest = load_manifest(make_export(tmp_path / "exp", (10,)))
    (case,) = build_cases(manifest, manifest.artifacts)
    row = make_row(case, Measurement(error="device fell asleep"), target="android:X", measured_on="android device",
                   manifest=manifest.raw, parity_err=None, parity_tol=None, parity_note="n/a")
    for key in ("model", "entry", "runtime", "seq_len", "target", "status", "error", "measured_on", "flops", "params",
                "params_excluding_item_table", "artifact_bytes", "memory", "parity_max_abs_err"):
        assert key in row
    assert row["status"] == "failed" and row["error"] == "device fell asleep"
