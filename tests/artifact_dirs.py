"""A small but real artifact dir without running an exporter: a hand-built stateful ONNX graph, its initial state,
a trajectory of test vectors computed by onnxruntime, and a manifest written by toolkit.exporters.manifest.

Fast (well under a second), so the manifest, verify, bench and device tests that need a valid dir do not export.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from toolkit.exporters.manifest import FORMAT, save_test_vectors, write_manifest
from toolkit.io import sha256_path, size_path

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


def _trajectory(path: Path, seq_len: int, steps: int, w0: np.ndarray) -> list[dict]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    w, out = w0, []
    for _ in range(steps):
        items = rng.integers(1, N_ITEMS + 1, size=(1, seq_len), dtype=np.int64)
        scores, w = sess.run(["scores", "state_out.W"], {"items": items, "state_in.W": w})
        out.append({"inputs": [items], "outputs": [scores], "states": [w]})
    return out


def make_artifact_dir(root: Path, seq_lens=(10,), steps: int = 3, model: str = "scn") -> Path:
    """root/: manifest.json + manifest.sha256 + one stateful `window` ONNX artifact per seq-len with its files."""
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for L in seq_lens:
        stem = f"{model}_window_L{L}"
        f = root / f"{stem}.onnx"
        tiny_stateful_onnx(f, L)
        w0 = np.eye(D, dtype=np.float32)
        init = root / f"{stem}.initial_state.npz"
        np.savez(init, W=w0)
        tv = root / f"{stem}.test_vectors.npz"
        save_test_vectors(tv, _trajectory(f, L, steps, w0), ["items"], ["scores"], ["W"], [w0])
        records.append({
            "file": f.name, "sha256": sha256_path(f), "bytes": size_path(f), "runtime": "onnxruntime",
            "recipe": "onnx-ort-fp32", "model": model, "entry": "window", "dtype": "fp32", "seq_len": L,
            "inputs": [{"name": "items", "shape": [1, L], "dtype": "int64", "high": N_ITEMS}],
            "outputs": [{"name": "scores", "shape": [1, D], "dtype": "float32"}],
            "states": [{"name": "W", "shape": [D, D], "dtype": "float32", "initial_file": init.name,
                        "output": "state_out.W", "input": "state_in.W"}],
            "parity": {"tolerance": {"atol": 1e-5, "rtol": 1e-5}, "pass": True, "steps": steps},
            "test_vectors": tv.name, "flops": 1234, "params": 999,
            "extra_files": [{"role": role, "file": p.name, "sha256": sha256_path(p), "bytes": size_path(p)}
                            for role, p in (("initial_state", init), ("test_vectors", tv))],
        })
    write_manifest(root, {"format": FORMAT, "model": model, "model_info": {"source": "hand-built test graph"},
                          "seq_len": seq_lens[0], "dtype": "fp32", "targets": ["onnx"], "artifacts": records})
    return root


def rewrite_manifest(root: Path, edit) -> None:
    """Apply edit(manifest_dict) and re-sign it (a consistent manifest.sha256): tests of what the checks see beyond
    the digest."""
    import json

    m = json.loads((root / "manifest.json").read_text())
    edit(m)
    write_manifest(root, m)
