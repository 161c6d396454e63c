"""`toolkit eval ARTIFACT_DIR`: ranking through the exported files agrees with eager; a damaged artifact breaks the
accuracy budget (exit 1, naming it and its drop); an artifact made for another dataset is one line, exit 2; the int8
tables are a plain decomposition that is exact to its per-row rounding."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import cli, run_inprocess


@pytest.fixture(scope="module")
def scn_run(synth_dataset_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "scn"
    cli("train", "scn", "--data", synth_dataset_dir, "--out", run, "--epochs", 2, "--batch-size", 256,
        "--lr", 3e-3, "--threads", 1)
    return run


@pytest.fixture(scope="module")
def fp32_art(scn_run, synth_dataset, tmp_path_factory):
    """The fp32 ExecuTorch and ONNX files of the run, both entries: eval's subject and the int8 test's reference.

    Exported by the CLI's main() in this process: a fresh process would pay again for the imports and for XNNPACK's
    pattern graphs (~12 s), which this test worker builds once."""
    out = tmp_path_factory.mktemp("art") / "fp32"
    code, _, err = run_inprocess("export", scn_run, "--format", "executorch,onnx", "--dtype", "fp32", "--seq-len",
                                 synth_dataset.seq_len, "--candidates", synth_dataset.test_cands.shape[1], "--out", out)
    assert code == 0, err
    return out


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_quantize_rows_is_exact_to_half_a_step():
    from toolkit.exporters.quant_tables import quantize_rows

    w = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    w[0] = 0  # the padding row stays exactly zero
    q, s = quantize_rows(w)
    assert q.dtype == np.int8 and s.shape == (300, 1)
    assert np.all(np.abs(q.astype(np.float32) * s - w) <= s / 2 + 1e-7)
    assert np.all(q[0] == 0) and s[0, 0] == 0


def test_per_user_metrics_average_to_ranking_metrics():
    from toolkit.exporters.evaluate import per_user, summarise
    from toolkit.metrics import ranking_metrics

    scores = np.random.default_rng(1).normal(size=(500, 20)).astype(np.float32)
    scores[:7] = 0.0  # ties: pessimistic in both
    got, want = summarise(per_user(scores)), ranking_metrics(scores)
    for k in ("ndcg@10", "hr@10", "uauc"):
        assert got[k] == pytest.approx(want[k], abs=1e-12)


def test_fp32_artifacts_rank_as_eager(scn_run, fp32_art, synth_dataset_dir):
    out = json.loads(cli("eval", fp32_art, "--data", synth_dataset_dir, "--json").stdout)
    res = out["results"][0]
    assert res["users"]["sampled"] is False and res["eager"]["source"].startswith("run ")
    want = json.loads((scn_run / "metrics.json").read_text())["test"]
    for k in ("ndcg@10", "hr@10", "uauc"):
        assert res["eager"]["window"][k] == pytest.approx(want[k], abs=1e-12)  # eager = the run's metrics.json
    rows = {a["file"]: a for a in res["artifacts"]}
    assert {a["regime"] for a in rows.values()} == {"window", "stream"}
    assert {f.rsplit(".", 1)[1] for f in rows} >= {"pte", "onnx"}  # ExecuTorch and ONNX Runtime both ranked
    for a in rows.values():
        assert a["status"] == "evaluated", a
        for k in ("ndcg@10", "hr@10", "uauc"):
            assert abs(a["vs_eager"][k]["diff"]) <= 1e-4, (a["file"], k, a["vs_eager"][k])
        assert a["max_abs_score_diff"] < 1e-4
    win = [a for a in rows.values() if a["regime"] == "window"]
    for a in win:
        assert a["metrics"]["ndcg@10"] == pytest.approx(want["ndcg@10"], abs=1e-4)


@pytest.mark.slow
def test_users_sample_is_seeded_and_said(fp32_art, synth_dataset_dir):
    a = json.loads(cli("eval", fp32_art, "--data", synth_dataset_dir, "--users", 50, "--seed", 3, "--json",
                       "--regime", "window").stdout)
    b = json.loads(cli("eval", fp32_art, "--data", synth_dataset_dir, "--users", 50, "--seed", 3, "--json",
                       "--regime", "window").stdout)
    u = a["results"][0]["users"]
    assert u["evaluated"] == 50 and u["sampled"] and u["seed"] == 3
    assert a["results"][0]["eager"]["window"] == {**b["results"][0]["eager"]["window"],
                                                  "seconds": a["results"][0]["eager"]["window"]["seconds"]}
    text = cli("eval", fp32_art, "--data", synth_dataset_dir, "--users", 50, "--regime", "window").stdout
    assert "seeded sample" in text


def _window_onnx(model, name, info, seq_len, candidates, out):
    """The window entry alone to ONNX, in this process: what eval's dataset checks read, without the step graph."""
    from toolkit.exporters.export import export_artifacts
    from toolkit.exporters.sources import entries_for

    entries, _ = entries_for(model, seq_len, candidates)
    export_artifacts([e for e in entries if e.name == "window"], name, ["onnx"], out, parity_steps=2, model_info=info)
    return out


def test_a_damaged_artifact_breaks_the_accuracy_budget(scn_run, synth_dataset, synth_dataset_dir, tmp_path):
    import torch

    from toolkit.exporters.sources import from_run

    model, name, info = from_run(scn_run)
    with torch.no_grad():  # weights scaled: every item row by its own factor in [0, 2)
        w = model.item_emb.weight
        w.mul_(2 * torch.rand(w.shape[0], 1, generator=torch.Generator().manual_seed(0)))
    damaged = _window_onnx(model, name, info, synth_dataset.seq_len, synth_dataset.test_cands.shape[1],
                           tmp_path / "damaged")
    proc = cli("verify", damaged, "--data", synth_dataset_dir, "--max-ndcg-drop", 0.01, check_rc=1)
    line = _one_line(proc.stderr)
    assert "scn.window.onnx-ort-fp32.onnx" in line and "NDCG@10 drop" in line and "95% CI" in line, line
    assert "max_ndcg_drop 0.01" in line


def test_undamaged_artifact_passes_the_budget(fp32_art, synth_dataset_dir, tmp_path):
    report = tmp_path / "v.json"
    proc = cli("verify", fp32_art, "--data", synth_dataset_dir, "--max-ndcg-drop", 1e-4, "--json", report)
    assert "accuracy ok" in proc.stdout
    acc = json.loads(report.read_text())["accuracy"]
    assert acc["checked"] and not acc["failed"]
    assert {v["status"] for v in acc["verdicts"]} == {"passed"}


@pytest.mark.slow
def test_artifact_for_another_window_length_or_vocabulary_is_one_line(scn_run, synth_dataset, synth_dataset_dir,
                                                                     tmp_path):
    from toolkit.exporters.sources import fresh, from_run

    L, C = synth_dataset.seq_len, synth_dataset.test_cands.shape[1]
    longer = _window_onnx(*from_run(scn_run), L + 2, C, tmp_path / "L")
    code, _, err = run_inprocess("eval", longer, "--data", synth_dataset_dir)
    line = _one_line(err)
    assert code == 2 and f"windows of {L + 2} items" in line and f"windows of {L}" in line and str(longer) in line
    fresh_dir = _window_onnx(*fresh("scn", n_items=synth_dataset.n_items - 20), L, C, tmp_path / "fresh")
    code, _, err = run_inprocess("eval", fresh_dir, "--data", synth_dataset_dir)
    line = _one_line(err)
    assert code == 2 and f"{synth_dataset.n_items - 20} items" in line and f"{synth_dataset.n_items} items" in line


def test_eval_flags_are_checked_first(fp32_art, synth_dataset_dir):
    code, _, err = run_inprocess("eval", fp32_art, "--data", synth_dataset_dir, "--users", 0)
    assert code == 2 and "--users" in _one_line(err)
    code, _, err = run_inprocess("verify", fp32_art, "--data", synth_dataset_dir, "--max-ndcg-drop", -1)
    assert code == 2 and "--max-ndcg-drop" in _one_line(err)


@pytest.mark.slow
def test_int8_tables_shrink_executorch_and_onnx_and_keep_the_ranking(scn_run, fp32_art, synth_dataset,
                                                                      synth_dataset_dir, tmp_path):
    L, C = synth_dataset.seq_len, synth_dataset.test_cands.shape[1]
    fp32, int8 = fp32_art, tmp_path / "int8"
    code, _, err = run_inprocess("export", scn_run, "--format", "executorch,onnx", "--dtype", "int8", "--seq-len", L,
                                 "--candidates", C, "--out", int8)
    assert code == 0, err
    m8 = json.loads((int8 / "manifest.json").read_text())
    m32 = json.loads((fp32 / "manifest.json").read_text())
    size32 = {(a["runtime"], a["entry"]): a["bytes"] for a in m32["artifacts"]}
    for a in m8["artifacts"]:
        assert a["embedding_quantization"] == "int8" and a["quantized_tables"], a["file"]
        assert a["parity"]["status"] == "passed"
    res = json.loads(cli("eval", fp32, int8, "--data", synth_dataset_dir, "--json").stdout)
    for r in res["precision_table"]:
        assert r["status"] == "evaluated"
        if r["dtype"] == "int8":
            assert r["bytes"] < size32[(r["runtime"], r["entry"])]
