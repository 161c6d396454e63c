"""Export layer on a tiny TTT-like stateful model, through the real runtimes (ExecuTorch, onnxruntime; Core ML
structure on Linux): state persists and resets, initial state is right, 5-step parity, the state check catches a
dropped or hidden state, verify catches corrupted files, bad ids are refused before the runtime."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from toolkit.errors import CheckFailed, ToolkitError
from toolkit.exporters import export_artifacts, open_runner, verify_dir
from toolkit.exporters.parity import eager_trajectory, runtime_trajectory, trajectory_inputs
from toolkit.models.contract import EntryPoint, StateSpec, TensorSpec

N_ITEMS, H, d, K, C = 50, 2, 4, 3, 7


class ToyTTT(nn.Module):
    """A TTT-like step: state W [1, H, d, d], b [1, H, d] moved by a gradient-like delta each call, with batched
    matmuls of runtime operands (k @ W, k^T @ g, q @ W) and an nn.Embedding id input."""

    def __init__(self, hidden_buffer: bool = False):
        super().__init__()
        D = H * d
        self.emb = nn.Embedding(N_ITEMS + 1, D, padding_idx=0)
        self.q, self.k, self.v = (nn.Linear(D, D, bias=False) for _ in range(3))
        self.out = nn.Linear(D, D)
        self.hidden_buffer = hidden_buffer
        if hidden_buffer:  # an undeclared in-place update: what the state check must refuse
            self.register_buffer("calls", torch.zeros(1))

    def heads(self, x):  # [1, K, D] -> [1, H, K, d]
        return x.view(1, -1, H, d).transpose(1, 2)

    def forward(self, items, candidates, W, b):
        x = self.emb(items)
        q, k, v = self.heads(self.q(x)), self.heads(self.k(x)), self.heads(self.v(x))
        g = torch.matmul(k, W) + b.unsqueeze(2) - v  # [1, H, K, d]
        W_new = W - 0.1 * torch.matmul(k.transpose(-1, -2), g) / items.shape[1]
        b_new = b - 0.1 * g.mean(2)
        z = torch.matmul(q, W_new) + b_new.unsqueeze(2)
        u = self.out(z.transpose(1, 2).reshape(1, -1, H * d).mean(1))  # [1, D]
        if self.hidden_buffer:
            self.calls.add_(1.0)
            u = u * self.calls
        return torch.einsum("bd,bcd->bc", u, self.emb(candidates)), W_new, b_new


def toy_entry(hidden_buffer: bool = False) -> EntryPoint:
    torch.manual_seed(0)
    module = ToyTTT(hidden_buffer).eval()
    return EntryPoint(
        name="step", module=module,
        inputs=[TensorSpec("items", (1, K), torch.int64, high=N_ITEMS),
                TensorSpec("candidates", (1, C), torch.int64, high=N_ITEMS)],
        outputs=["scores"],
        states=[StateSpec("W", torch.randn(1, H, d, d) * 0.3), StateSpec("b", torch.randn(1, H, d) * 0.1)],
    )


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy") / "artifacts"
    export_artifacts([toy_entry()], "toy", ["executorch", "onnx", "coreml"], out, parity_steps=5)
    return out


@pytest.fixture(scope="session")
def toy_manifest(toy_dir):
    import json

    return json.loads((toy_dir / "manifest.json").read_text())


def _record(manifest, runtime):
    return next(r for r in manifest["artifacts"] if r["runtime"] == runtime)


@pytest.mark.slow  # uses the exported toy dir (ExecuTorch + ONNX + Core ML export)
def test_manifest_describes_every_artifact(toy_dir, toy_manifest):
    from toolkit.io import sha256_path

    m = toy_manifest
    assert m["format"] == "toolkit-artifacts/1" and m["model"] == "toy" and m["dtype"] == "fp32"
    assert {r["runtime"] for r in m["artifacts"]} == {"executorch", "onnxruntime", "onnxruntime-ort", "coreml"}
    for r in m["artifacts"]:
        assert r["file"].startswith(f"toy.step.{r['recipe']}")
        assert sha256_path(toy_dir / r["file"]) == r["sha256"] and r["bytes"] > 0
        for f in r["extra_files"]:
            assert sha256_path(toy_dir / f["file"]) == f["sha256"]
        assert r["state_check"]["pass"] and set(r["state_check"]["kept_by_artifact"]) == {"state_W", "state_b"}
        if r["runtime"] == "coreml":  # no Core ML runtime on Linux: skipped, never passed (test below)
            assert r["parity"]["status"] == "skipped" and r["parity"]["pass"] is None and r["parity"]["steps"] == 5
        else:
            assert r["parity"]["status"] == "passed" and r["parity"]["pass"] and r["parity"]["steps"] == 5
        assert [s["name"] for s in r["states"]] == ["W", "b"]
        assert r["inputs"][0]["high"] == N_ITEMS
    et = _record(m, "executorch")
    assert et["planned_activation_bytes"] > 0
    assert et["delegation"]["partitions"] >= 1
    # the TTT matmuls of two runtime operands are shaped as bmm and delegated to XNNPACK
    assert et["delegation"]["compute_fallback_ops"] == {}
    assert et["bundled_program"]["check"]["pass"] and (toy_dir / et["bundled_program"]["file"]).is_file()
    cm = _record(m, "coreml")
    assert cm["deployment_target"] == "iOS18" and "skipped" in cm["parity"]["runtime_parity"]
    assert cm["parity"]["structure_pass"] and cm["structure"]["op_histogram"].get("write_state") == 2
    assert all(s["dtype"] == "float16" for s in cm["structure"]["states"])


@pytest.mark.slow  # uses the exported toy dir (ExecuTorch + ONNX + Core ML export)
def test_onnx_export_writes_the_ort_mobile_form_listed_hashed_and_verified(toy_dir, toy_manifest):
    """ORT's converter: <stem>.ort + <stem>.required_operators.config, in the manifest with their sha256, the .ort
    run through onnxruntime over the same stateful trajectory at export and again by verify."""
    from toolkit.io import sha256_path

    onnx, ort_rec = _record(toy_manifest, "onnxruntime"), _record(toy_manifest, "onnxruntime-ort")
    stem = onnx["file"][: -len(".onnx")]
    assert ort_rec["file"] == f"{stem}.ort" and (toy_dir / ort_rec["file"]).is_file()
    assert sha256_path(toy_dir / ort_rec["file"]) == ort_rec["sha256"] and ort_rec["bytes"] > 0
    assert (toy_dir / ort_rec["file"]).read_bytes()[4:8] == b"ORTM"  # the ORT format's flatbuffer identifier
    roles = {f["role"]: f for f in ort_rec["extra_files"]}
    config = roles["required_operators"]
    assert config["file"] == f"{stem}.required_operators.config"
    assert sha256_path(toy_dir / config["file"]) == config["sha256"]
    # the config is ORT's (domain;opset;ops), names the .ort by file name only, and lists the graph's MatMuls
    text = (toy_dir / config["file"]).read_text()
    assert f"# - {ort_rec['file']}\n" in text and str(toy_dir) not in text
    ops = ort_rec["ort_format"]["required_operators"]
    assert any("MatMul" in o or "FusedMatMul" in o for by in ops.values() for o in sum(by.values(), []))
    assert ort_rec["ort_format"]["converted_from"] == onnx["file"]
    assert ort_rec["ort_format"]["tool"] == "onnxruntime.tools.convert_onnx_models_to_ort"
    # same test vectors and initial state as the .onnx (one trajectory, two files checked against it)
    assert ort_rec["test_vectors"] == onnx["test_vectors"] and roles["test_vectors"]["file"] == onnx["test_vectors"]
    assert [s["input"] for s in ort_rec["states"]] == ["state_in.W", "state_in.b"]
    assert ort_rec["parity"]["status"] == "passed" and ort_rec["parity"]["pass"] is True
    assert ort_rec["parity"]["steps"] == 5
    assert "ran 5 sequential calls of the .ort" in ort_rec["parity"]["runtime_parity"]
    report = verify_dir(toy_dir)
    ort_res = next(a for a in report["artifacts"] if a["file"] == ort_rec["file"])
    assert ort_res["status"] == "passed"
    assert ort_res["checks"] == {"sha256": "pass", "parity": "pass", "required_operators": "pass"}
    assert max(max(v) for v in ort_res["parity"]["max_abs_error"].values()) < 1e-4


@pytest.mark.slow  # uses the exported toy dir (ExecuTorch + ONNX + Core ML export)
def test_ort_runner_loads_the_ort_file_and_carries_state(toy_dir, toy_manifest):
    rec = _record(toy_manifest, "onnxruntime-ort")
    runner = open_runner(toy_dir, rec)
    assert runner.path.suffix == ".ort" and type(runner).__name__ == "OrtFormatRunner"
    entry = toy_entry()
    items, cands = (x.numpy() for x in entry.example_inputs(seed=42))
    first = runner(items, cands)[0]
    second = runner(items, cands)[0]
    assert not np.allclose(first, second, atol=1e-6), "same input, same output: the state did not move"
    with torch.no_grad():
        ref, _, _ = entry.module(*entry.example_inputs(seed=42), *entry.initial_states())
    np.testing.assert_allclose(first, ref.numpy(), atol=1e-5)


@pytest.mark.slow  # uses the exported toy dir (ExecuTorch + ONNX + Core ML export)
def test_ort_mobile_usability_verdict_per_execution_provider(toy_dir, toy_manifest):
    """The manifest's verdict per EP is ORT's own: the same YES/MAYBE/NO the checker's CLI logs for the .onnx."""
    import logging

    from onnxruntime.tools.mobile_helpers import usability_checker

    u = _record(toy_manifest, "onnxruntime-ort")["mobile_usability"]
    onnx = _record(toy_manifest, "onnxruntime")
    assert u["analysed"] == onnx["file"] and "usability" in u["tool"]
    eps = {e["ep"]: e for e in u["execution_providers"]}
    assert list(eps) == ["NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram"]
    for e in eps.values():
        assert e["verdict"] in ("YES", "MAYBE", "NO")
        assert 0 <= e["supported_nodes"] <= e["nodes"] and e["nodes"] > 0
        assert e["partitions"] == len(e["partition_sizes"]) and sum(e["partition_sizes"]) == e["supported_nodes"]
        assert all(":" in op for op in e["unsupported_ops"])  # domain:op, as ORT's tables spell them
        # an op left out is either named or its nodes are counted as dynamic-shape / rank limited
        if e["supported_nodes"] < e["nodes"]:
            assert e["unsupported_ops"] or e["ops_with_unsupported_rank"] or e["nodes_unsupported_due_to_dynamic_shape"]
        if e["verdict"] == "YES":
            assert e["partitions"] == 1
    # ORT's checker, run as its CLI runs it, logs one verdict line per EP: they must match the manifest's
    lines = []

    class Grab(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    log = logging.getLogger("test_ort_usability")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(Grab())
    usability_checker.analyze_model(toy_dir / onnx["file"], skip_optimize=False, logger=log)
    logged = {ln.split("Model should perform well with ")[1].split(" as is: ")[0]: ln.rsplit(": ", 1)[1]
              for ln in lines if " as is: " in ln}
    assert logged == {name: e["verdict"] for name, e in eps.items()}


@pytest.mark.slow  # uses the exported toy dir (ExecuTorch + ONNX + Core ML export)
def test_coreml_parity_on_linux_is_skipped_not_passed(toy_dir, toy_manifest):
    """Core ML prediction needs macOS 15+: the manifest and verify say skipped (with why), never pass: true, while
    what Linux can check (structure: I/O, states, ops, spec version; hashes; fp16 drift) is checked and passed."""
    from toolkit.exporters.manifest import parity_status
    from toolkit.exporters.runners import coreml_can_run

    if coreml_can_run():
        pytest.skip("this host runs Core ML: parity really runs here")
    cm = _record(toy_manifest, "coreml")
    p = cm["parity"]
    assert p["status"] == "skipped" and p["pass"] is not True and "macOS 15+" in p["reason"]
    assert p["checks"] == {"structure": "passed", "fp16_drift_estimate": "passed",
                           "runtime": "skipped (needs macOS 15+)"}
    assert parity_status(cm) == ("skipped", p["reason"])
    report = verify_dir(toy_dir)
    res = next(a for a in report["artifacts"] if a["runtime"] == "coreml")
    assert res["status"] == "skipped" and res["pass"] is False and res["ok"] is True and "macOS 15+" in res["reason"]
    assert res["checks"]["sha256"] == "pass" and res["checks"]["structure"] == "pass"
    assert set(res["structure_checked"]) == {"inputs", "outputs", "states", "op_histogram", "specification_version"}
    assert res["checks"]["parity"].startswith("skipped")
    # skipped is not a failure: the dir verifies (exit 0), and the report says some were skipped
    assert report["pass"] is True and report["status"] == "passed with skips"
    assert report["counts"] == {"passed": 3, "skipped": 1, "failed": 0}


@pytest.mark.slow  # uses the exported toy dir (ExecuTorch + ONNX + Core ML export)
@pytest.mark.parametrize("runtime", ["executorch", "onnxruntime"])
def test_state_persists_across_calls_and_resets(toy_dir, toy_manifest, runtime):
    rec = _record(toy_manifest, runtime)
    runner = open_runner(toy_dir, rec)
    entry = toy_entry()
    initial = runner.state()
    for s, spec in zip(entry.states, rec["states"]):  # initial state is the declared one
        np.testing.assert_array_equal(initial[spec["name"]], s.initial.numpy())
    items, cands = (x.numpy() for x in entry.example_inputs(seed=42))
    first = runner(items, cands)[0]
    after_one = runner.state()
    second = runner(items, cands)[0]
    assert not np.allclose(first, second, atol=1e-6), "same input, same output: the state did not move"
    assert not np.allclose(after_one["W"], runner.state()["W"])
    # eager from the declared initial state gives the first call's output
    with torch.no_grad():
        ref, W1, b1 = entry.module(*entry.example_inputs(seed=42), *entry.initial_states())
    np.testing.assert_allclose(first, ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(after_one["W"], W1.numpy(), atol=1e-6)
    runner.reset()
    np.testing.assert_array_equal(runner.state()["W"], initial["W"])
    np.testing.assert_allclose(runner(items, cands)[0], first, atol=1e-6)


@pytest.mark.slow  # uses the exported toy dir (ExecuTorch + ONNX + Core ML export)
def test_fresh_five_step_trajectory_matches_eager_and_runtimes_agree(toy_dir, toy_manifest):
    entry = toy_entry()
    inputs = trajectory_inputs(entry, 5, seed=100)  # not the export's trajectory
    ref = eager_trajectory(entry, inputs)
    got = {}
    for runtime in ("executorch", "onnxruntime"):
        got[runtime] = runtime_trajectory(open_runner(toy_dir, _record(toy_manifest, runtime)),
                                          [[x.numpy() for x in inp] for inp in inputs])
    for i in range(5):
        for rt in got:
            np.testing.assert_allclose(got[rt][i]["outputs"][0], ref[i]["outputs"][0], atol=1e-5)
            for a, b in zip(got[rt][i]["states"], ref[i]["states"]):
                np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(got["executorch"][i]["outputs"][0], got["onnxruntime"][i]["outputs"][0], atol=1e-5)


@pytest.mark.slow  # uses the exported toy dir (ExecuTorch + ONNX + Core ML export)
def test_runner_refuses_bad_ids_before_the_runtime(toy_dir, toy_manifest):
    for runtime in ("executorch", "onnxruntime"):
        runner = open_runner(toy_dir, _record(toy_manifest, runtime))
        cands = np.ones((1, C), dtype=np.int64)
        too_big = rf"'items' holds id {N_ITEMS + 1}, outside the valid range 0\.\.{N_ITEMS}"
        with pytest.raises(ToolkitError, match=too_big):
            runner(np.array([[1, 2, N_ITEMS + 1]]), cands)
        with pytest.raises(ToolkitError, match="id -1"):
            runner(np.array([[1, -1, 2]]), cands)
        with pytest.raises(ToolkitError, match=r"shape \[1, 4\]"):
            runner(np.ones((1, 4), dtype=np.int64), cands)
        with pytest.raises(ToolkitError, match="integer ids"):
            runner(np.ones((1, K), dtype=np.float32), cands)
        assert np.array_equal(runner.state()["W"], toy_entry().states[0].initial.numpy())  # nothing ran


def test_state_check_refuses_an_undeclared_in_place_update(tmp_path):
    out = tmp_path / "hidden"
    with pytest.raises(CheckFailed, match=r"buffer 'inner\.calls' is updated in place but is not a declared state"):
        export_artifacts([toy_entry(hidden_buffer=True)], "toy", ["onnx"], out)
    assert not out.exists() and not list(tmp_path.glob(".hidden*"))


@pytest.mark.slow  # uses the exported toy dir (ExecuTorch + ONNX + Core ML export)
def test_state_check_catches_a_dropped_onnx_state_output(toy_dir, toy_manifest):
    import onnx

    from toolkit.exporters.statecheck import contract_check, onnx_state_check

    entry = toy_entry()
    model = onnx.load(str(toy_dir / _record(toy_manifest, "onnxruntime")["file"]))
    assert onnx_state_check(entry, contract_check(entry), model)["pass"]
    kept = [o for o in model.graph.output if o.name != "state_out.W"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    check = onnx_state_check(entry, contract_check(entry), model)
    assert not check["pass"] and "state_out.W" in check["problems"][0]
    assert "drops in-place buffer updates" in check["hints"][0]


@pytest.mark.slow  # uses the exported toy dir (ExecuTorch + ONNX + Core ML export)
def test_state_check_catches_wrong_initial_bytes_in_a_pte(toy_dir, toy_manifest):
    from toolkit.exporters.statecheck import contract_check, executorch_state_check

    entry = toy_entry()
    pte = (toy_dir / _record(toy_manifest, "executorch")["file"]).read_bytes()
    assert executorch_state_check(entry, contract_check(entry), pte, [])["pass"]
    entry.states[0] = StateSpec("W", entry.states[0].initial + 1.0)  # the artifact no longer holds this value
    check = executorch_state_check(entry, contract_check(entry), pte, [])
    assert not check["pass"] and "state_W" in check["problems"][0]


@pytest.mark.slow  # uses the exported toy dir (ExecuTorch + ONNX + Core ML export)
def test_state_check_catches_a_missing_coreml_state_update(toy_dir, toy_manifest):
    from toolkit.exporters.statecheck import contract_check, coreml_state_check
    from toolkit.exporters.to_coreml import _ct

    ct = _ct()
    entry = toy_entry()
    spec = ct.models.MLModel(str(toy_dir / _record(toy_manifest, "coreml")["file"]), skip_model_load=True).get_spec()
    assert coreml_state_check(entry, contract_check(entry), spec)["pass"]
    fn = spec.mlProgram.functions["main"]
    ops = fn.block_specializations[fn.opset].operations
    drop = next(i for i, op in enumerate(ops)
                if op.type == "write_state" and op.inputs["input"].arguments[0].name == "state_b")
    del ops[drop]
    check = coreml_state_check(entry, contract_check(entry), spec)
    assert not check["pass"] and "never writes state 'state_b'" in check["problems"][0]


@pytest.mark.slow  # uses the exported toy dir (ExecuTorch + ONNX + Core ML export)
def test_verify_passes_on_the_exported_dir(toy_dir):
    report = verify_dir(toy_dir)
    assert report["pass"], report
    assert report["unlisted_files"] == []
    by = {r["runtime"]: r for r in report["artifacts"]}
    assert by["executorch"]["checks"] == {"sha256": "pass", "parity": "pass", "bundled_program": "pass"}
    assert by["onnxruntime"]["checks"]["parity"] == "pass" and by["onnxruntime-ort"]["checks"]["parity"] == "pass"
    assert by["coreml"]["checks"]["structure"] == "pass" and by["coreml"]["checks"]["parity"].startswith("skipped")
    assert by["coreml"]["status"] == "skipped" and all(r["status"] == "passed" for k, r in by.items() if k != "coreml")


def _flip_byte(path: Path) -> None:
    if path.is_dir():  # an .mlpackage: damage its model spec
        path = next(p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in (".mlmodel",))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.slow  # uses the exported toy dir (ExecuTorch + ONNX + Core ML export)
@pytest.mark.parametrize("runtime", ["executorch", "onnxruntime", "onnxruntime-ort", "coreml"])
def test_verify_names_a_corrupted_artifact(toy_dir, toy_manifest, tmp_path, runtime):
    broken = tmp_path / "broken"
    shutil.copytree(toy_dir, broken)
    name = _record(toy_manifest, runtime)["file"]
    _flip_byte(broken / name)
    report = verify_dir(broken)
    assert not report["pass"]
    bad = [r for r in report["artifacts"] if r["status"] == "failed"]
    assert [r["file"] for r in bad] == [name] and not bad[0]["pass"] and not bad[0]["ok"]
    assert bad[0]["checks"]["sha256"] == "fail" and name in bad[0]["problems"][0]


@pytest.mark.slow  # uses the exported toy dir (ExecuTorch + ONNX + Core ML export)
def test_verify_names_a_truncated_test_vector_file(toy_dir, toy_manifest, tmp_path):
    broken = tmp_path / "trunc"
    shutil.copytree(toy_dir, broken)
    tv = broken / _record(toy_manifest, "onnxruntime")["test_vectors"]
    tv.write_bytes(tv.read_bytes()[:100])
    report = verify_dir(broken)
    assert not report["pass"] and any(tv.name in p for r in report["artifacts"] for p in r["problems"])


@pytest.mark.slow  # uses the exported toy dir (ExecuTorch + ONNX + Core ML export)
def test_verify_reruns_parity_not_only_hashes(toy_dir, toy_manifest, tmp_path):
    """A manifest whose expected outputs were re-hashed but are wrong still fails: parity runs again."""
    import json

    from toolkit.exporters.manifest import write_manifest
    from toolkit.io import sha256_path

    broken = tmp_path / "wrongvec"
    shutil.copytree(toy_dir, broken)
    rec = _record(toy_manifest, "onnxruntime")
    tv = broken / rec["test_vectors"]
    with np.load(tv) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["step2/out/scores"] = arrays["step2/out/scores"] + 0.5
    np.savez(tv, **arrays)
    m = json.loads((broken / "manifest.json").read_text())
    for r in m["artifacts"]:
        for f in r["extra_files"]:
            if f["file"] == tv.name:
                f["sha256"] = sha256_path(tv)
    write_manifest(broken, m)  # re-signed too (manifest.sha256): only the parity re-run can catch it
    report = verify_dir(broken)
    bad = next(r for r in report["artifacts"] if r["file"] == rec["file"])
    assert not report["pass"] and bad["checks"]["parity"] == "fail" and "step 2" in bad["problems"][0]


@pytest.mark.slow  # uses the exported toy dir (ExecuTorch + ONNX + Core ML export)
def test_verify_catches_a_required_operators_config_that_lies_about_the_ort(toy_dir, toy_manifest, tmp_path):
    """An op dropped from the minimal-build config and the manifest re-signed: the hashes agree, verify still fails
    because it re-reads the operators from the .ort itself."""
    import json

    from toolkit.exporters.manifest import write_manifest
    from toolkit.io import sha256_path

    broken = tmp_path / "ops"
    shutil.copytree(toy_dir, broken)
    rec = _record(toy_manifest, "onnxruntime-ort")
    cfg = broken / next(f["file"] for f in rec["extra_files"] if f["role"] == "required_operators")
    lines = cfg.read_text().splitlines()
    i = next(k for k, ln in enumerate(lines) if not ln.startswith("#") and "," in ln)
    lines[i] = lines[i].rsplit(",", 1)[0]  # one operator fewer
    cfg.write_text("\n".join(lines) + "\n")
    m = json.loads((broken / "manifest.json").read_text())
    for r in m["artifacts"]:
        for f in r["extra_files"]:
            if f["file"] == cfg.name:
                f["sha256"] = sha256_path(cfg)
    write_manifest(broken, m)
    report = verify_dir(broken)
    bad = next(r for r in report["artifacts"] if r["file"] == rec["file"])
    assert not report["pass"] and bad["status"] == "failed" and bad["checks"]["required_operators"] == "fail"
    assert bad["checks"]["parity"] == "pass" and cfg.name in bad["problems"][0]


def test_bad_export_requests_fail_before_any_work(tmp_path):
    entry = toy_entry()
    with pytest.raises(ToolkitError, match="unknown target 'tflite'"):
        export_artifacts([entry], "toy", ["tflite"], tmp_path / "a")
    with pytest.raises(ToolkitError, match="unknown dtype 'fp8'"):
        export_artifacts([entry], "toy", ["onnx"], tmp_path / "b", dtype="fp8")
    with pytest.raises(ToolkitError, match="parity steps must be a positive integer"):
        export_artifacts([entry], "toy", ["onnx"], tmp_path / "c", parity_steps=0)
    (tmp_path / "exists").mkdir()
    with pytest.raises(ToolkitError, match="output exists"):
        export_artifacts([entry], "toy", ["onnx"], tmp_path / "exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]


class _RuntimeWeightMatmul(nn.Module):
    """x @ w.t() with w a parameter transposed at runtime: XNNPACK sees a 2-D matmul with a non-static operand."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(N_ITEMS + 1, 8)
        self.w = nn.Parameter(torch.randn(8, 8))

    def forward(self, items, candidates):
        u = (self.emb(items).mean(1) @ self.w.t()) @ self.w  # [1, 8]
        return torch.einsum("bd,bcd->bc", u, self.emb(candidates))


@pytest.mark.slow
def test_require_delegated_fails_and_leaves_no_partial_dir(tmp_path):
    """ONNX is written first into the temp dir, then ExecuTorch fails --require-delegated: no DIR remains.

    fp16: the fp32 recipe sets force_non_static_weights_for_f32_linear, which delegates this mm; fp16 has no such
    option in XnnpackPartitioner, so the mm stays on portable kernels."""
    torch.manual_seed(0)
    entry = EntryPoint("window", _RuntimeWeightMatmul().eval(),
                       [TensorSpec("items", (1, 5), torch.int64, high=N_ITEMS),
                        TensorSpec("candidates", (1, C), torch.int64, high=N_ITEMS)], ["scores"])
    out = tmp_path / "deleg"
    with pytest.raises(CheckFailed, match=r"matmul-family ops fall back to portable kernels \(aten_mm_default x1\)"):
        export_artifacts([entry], "mm", ["onnx", "executorch"], out, dtype="fp16", require_delegated=True)
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_state_check_catches_an_uninitialised_executorch_buffer(tmp_path):
    """InitializedMutableBufferPass given a pattern that matches nothing: the .pte would start from garbage."""
    from toolkit.exporters.recipes import by_name
    from toolkit.exporters.statecheck import contract_check
    from toolkit.exporters.to_executorch import export_executorch

    entry = toy_entry()
    exp = export_executorch(entry, by_name("executorch-xnnpack-fp32"), tmp_path, "toy.bad", contract_check(entry),
                            [], init_patterns=["no_such_buffer"])
    check = exp.state_check
    assert not check["pass"]
    assert "state_W" in check["problems"][0] and "not serialised with its initial value" in check["problems"][0]
    assert "b_state_w" in check["hints"][0]
