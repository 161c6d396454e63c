"""SCN through the real runtimes: window and step exported to ExecuTorch, ONNX Runtime (and Core ML structure);
streaming equals windowed on each runtime; ExecuTorch and ONNX Runtime agree with eager and with each other."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit.exporters import export_artifacts, open_runner, verify_dir
from toolkit.exporters.parity import eager_trajectory, runtime_trajectory, trajectory_inputs

N_ITEMS, C = 200, 20


@pytest.fixture(scope="session")
def scn():
    from toolkit.exporters.sources import fresh

    model, name, info = fresh("scn", N_ITEMS)
    return model, info


@pytest.fixture(scope="session")
def scn_entries(scn):
    model, _ = scn
    K = model.K
    return {e.name: e for e in model.contract(seq_len=3 * K, candidates=C)}


@pytest.fixture(scope="session")
def scn_dir(scn, scn_entries, tmp_path_factory) -> Path:
    _, info = scn
    out = tmp_path_factory.mktemp("scn") / "artifacts"
    export_artifacts(list(scn_entries.values()), "scn", ["executorch", "onnx", "coreml"], out, parity_steps=5,
                     model_info=info)
    return out


@pytest.fixture(scope="session")
def scn_manifest(scn_dir):
    return json.loads((scn_dir / "manifest.json").read_text())


def _rec(manifest, entry, runtime):
    return next(r for r in manifest["artifacts"] if r["entry"] == entry and r["runtime"] == runtime)


@pytest.mark.slow
def test_scn_artifacts_pass_their_checks(scn, scn_manifest):
    model, _ = scn
    m = scn_manifest
    assert m["seq_len"] == 3 * model.K and m["candidates"] == C
    assert m["model_info"]["params"] == model.param_counts()["params"]
    assert len(m["artifacts"]) == 8  # window and step: .pte, .onnx, .ort, .mlpackage
    assert {r["runtime"] for r in m["artifacts"]} == {"executorch", "onnxruntime", "onnxruntime-ort", "coreml"}
    for r in m["artifacts"]:
        assert r["state_check"]["pass"], r["file"]
        if r["runtime"] == "coreml":  # Core ML prediction needs macOS 15+: skipped on Linux, never passed
            assert r["parity"]["status"] == "skipped" and r["parity"]["pass"] is None, r["file"]
        else:
            assert r["parity"]["status"] == "passed" and r["parity"]["pass"], r["file"]
    step = _rec(m, "step", "executorch")
    assert [s["name"] for s in step["states"]] == ["ttt_W", "ttt_b"]
    H, d = model.cfg.heads, model.cfg.dim // model.cfg.heads
    assert step["states"][0]["shape"] == [1, H, d, d] and step["states"][1]["shape"] == [1, H, d]
    assert _rec(m, "window", "executorch")["states"] == []
    # the TTT matmuls (k@W, q@k^T, E@G, ...) are bmm of runtime operands and stay on XNNPACK; with
    # force_non_static_weights_for_f32_linear (fp32 recipe) so does x @ lr_weight.t(): every matmul is delegated
    for entry in ("window", "step"):
        d_info = _rec(m, entry, "executorch")["delegation"]
        assert d_info["compute_fallback_ops"] == {}, d_info
        assert d_info["compute_ops_delegated"] == d_info["compute_ops_total"] > 0
        # one graph for XNNPACK (docs/models.md §3.3); outside it only the embedding gathers (the step's block spans
        # its whole window, and a full-range slice would lower to alias_copy outside XNNPACK and split it in two)
        assert set(d_info["fallback_ops"]) == {"aten_embedding_default"}, d_info["fallback_ops"]
        assert d_info["partitions"] == 1, d_info["partitions"]
    cm = _rec(m, "step", "coreml")
    assert cm["parity"]["fp16_state_drift_estimate"]["pass"] and cm["structure"]["op_histogram"]["write_state"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["executorch", "onnxruntime", "onnxruntime-ort"])
def test_streaming_equals_windowed(scn, scn_dir, scn_manifest, runtime):
    """L = 3K: three `step` calls over the 30 items give the scores of one `window` call on them."""
    model, _ = scn
    K = model.K
    g = torch.Generator().manual_seed(7)
    items = torch.randint(1, N_ITEMS + 1, (1, 3 * K), generator=g).numpy()
    cands = torch.randint(1, N_ITEMS + 1, (1, C), generator=g).numpy()
    window = open_runner(scn_dir, _rec(scn_manifest, "window", runtime))
    step = open_runner(scn_dir, _rec(scn_manifest, "step", runtime))
    windowed = window(items, cands)[0]
    for i in range(3):
        streamed = step(items[:, i * K:(i + 1) * K], cands)[0]
    np.testing.assert_allclose(streamed, windowed, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        eager = model(torch.from_numpy(items), torch.from_numpy(cands)).numpy()
    np.testing.assert_allclose(windowed, eager, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_runtimes_agree_with_eager_and_each_other_on_every_step(scn_dir, scn_manifest, scn_entries):
    for entry_name in ("window", "step"):
        entry = scn_entries[entry_name]
        inputs = trajectory_inputs(entry, 5, seed=500)
        ref = eager_trajectory(entry, inputs)
        got = {rt: runtime_trajectory(open_runner(scn_dir, _rec(scn_manifest, entry_name, rt)),
                                      [[x.numpy() for x in inp] for inp in inputs])
               for rt in ("executorch", "onnxruntime")}
        for i in range(5):
            scale = float(np.abs(ref[i]["outputs"][0]).max())
            for rt in got:
                np.testing.assert_allclose(got[rt][i]["outputs"][0], ref[i]["outputs"][0], atol=1e-5 * max(scale, 1))
                for a, b in zip(got[rt][i]["states"], ref[i]["states"]):
                    np.testing.assert_allclose(a, b, atol=1e-5)
            np.testing.assert_allclose(got["executorch"][i]["outputs"][0], got["onnxruntime"][i]["outputs"][0],
                                       atol=1e-5 * max(scale, 1))


@pytest.mark.slow
def test_scn_dir_verifies(scn_dir):
    report = verify_dir(scn_dir)
    assert report["pass"], [p for r in report["artifacts"] for p in r["problems"]]
