"""The export cache: a second identical bench re-measures without re-exporting; a damaged entry is rebuilt."""

import pytest
from bench_fixtures import build_tiny, tiny_source

from toolkit.bench import budgets, cache
from toolkit.bench.sweep import BenchRequest, run_bench
from toolkit.bench.targets import load_target
from toolkit.exporters.sources import weights_digest

pytestmark = pytest.mark.slow  # exports with the real ONNX exporter


def test_second_identical_bench_hits_the_cache(tmp_path):
    req = BenchRequest(sources=[tiny_source("tiny", dim=8, K=4)], seq_lens=[4], runtimes=["onnxruntime"],
                       entries=["window"], target=load_target("host-1t"), budgets=budgets.no_budgets(), runs=2,
                       warmup=1, candidates=5, cache_dir=tmp_path / "cache")
    first = run_bench(req)
    (row1,) = first["rows"]
    assert row1["status"] == "ok", row1["error"]
    assert row1["export_cache"] == "miss" and row1["artifact_bytes"] > 0
    assert row1["parity_max_abs_err"] is not None and row1["parity_max_abs_err"] < 1e-4
    assert row1["memory"]["weights_bytes"] > 0 and row1["memory"]["arena_peak_bytes"] > 0
    manifests = list((tmp_path / "cache").rglob("manifest.json"))
    assert len(manifests) == 1
    mtime = manifests[0].stat().st_mtime_ns

    second = run_bench(req)
    (row2,) = second["rows"]
    assert row2["status"] == "ok" and row2["export_cache"] == "hit"
    assert row2["artifact"] == row1["artifact"] and manifests[0].stat().st_mtime_ns == mtime
    assert row2["latency_ms"]["runs"] == 2  # re-measured, not copied


def test_damaged_cache_entry_is_rebuilt_and_keys_separate_shapes(tmp_path):
    model = build_tiny(dim=8).eval()
    entry = model.contract(4, 5)[0]
    material = cache.key_material("tiny", model.cfg.to_dict(), weights_digest(model), entry, "onnxruntime", "fp32",
                                  {"dtype": "fp32"})
    directory, rec, hit = cache.export_cached(tmp_path, material, entry, "tiny", "onnxruntime", "fp32", 2, None)
    assert not hit
    (directory / rec["file"]).write_bytes(b"not an onnx file")
    assert cache.lookup(directory, "window", "onnxruntime") is None  # sha256 no longer matches
    directory2, rec2, hit2 = cache.export_cached(tmp_path, material, entry, "tiny", "onnxruntime", "fp32", 2, None)
    assert not hit2 and directory2 == directory and cache.lookup(directory, "window", "onnxruntime") == rec2
    # another L is another artifact; the same model's step (no L in its shapes) keys the same at any L
    other = cache.key_material("tiny", model.cfg.to_dict(), weights_digest(model), model.contract(6, 5)[0],
                               "onnxruntime", "fp32", {"dtype": "fp32"})
    assert cache.cache_key(other) != cache.cache_key(material)
    steps = [cache.key_material("tiny", model.cfg.to_dict(), weights_digest(model), model.contract(L, 5)[1],
                                "onnxruntime", "fp32", {"dtype": "fp32"}) for L in (4, 40)]
    assert cache.cache_key(steps[0]) == cache.cache_key(steps[1])


def test_cache_key_changes_with_the_graph_code(monkeypatch, tmp_path):
    """An artifact exported by other model/exporter code is another artifact, whatever the package version says."""
    model = build_tiny(dim=8).eval()
    entry = model.contract(4, 5)[0]
    args = ("tiny", model.cfg.to_dict(), weights_digest(model), entry, "onnxruntime", "fp32", {"dtype": "fp32"})
    key = cache.cache_key(cache.key_material(*args))
    assert cache.key_material(*args)["graph_code_sha256"] == cache.graph_code_sha256()
    monkeypatch.setattr(cache, "graph_code_sha256", lambda: "0" * 64)
    assert cache.cache_key(cache.key_material(*args)) != key
