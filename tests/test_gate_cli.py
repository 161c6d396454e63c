"""End to end on tiny synthetic data: `toolkit train gate`, `toolkit gate calibrate`, `toolkit gate curve`,
calibration on held data, the curve's endpoints against direct evaluations, and the bad-input errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import cli, run_inprocess  # tests/ is on sys.path under pytest

from toolkit.errors import ToolkitError
from toolkit.metrics import ranking_metrics
from toolkit.models import load_run
from toolkit.models.gate import Gate
from toolkit.train import TrainSettings, evaluate, train


@pytest.fixture(scope="module")
def base_run(synth_dataset, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("gate") / "cocorrrec"
    train("cocorrrec", synth_dataset, run, TrainSettings(epochs=2, batch_size=256, lr=3e-3, threads=1))
    return run


@pytest.fixture(scope="module")
def gate_run(base_run, synth_dataset_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gate") / "gate"
    cli("train", "gate", "--model", base_run, "--data", synth_dataset_dir, "--out", out, "--epochs", 2,
        "--batch-size", 512, "--lr", 3e-3, "--threads", 1)
    return out


def test_train_gate_writes_a_run_dir_load_run_restores(gate_run, base_run):
    desc = json.loads((gate_run / "model.json").read_text())
    metrics = json.loads((gate_run / "metrics.json").read_text())
    base_desc = json.loads((base_run / "model.json").read_text())
    assert desc["model"] == "gate" and Path(desc["base_run"]) == base_run.resolve()
    assert desc["base_weights_sha256"] == base_desc["weights_sha256"]
    assert 4000 <= desc["device_params"] <= 6000 and desc["weights_sha256"]
    assert set(metrics["stages"]) == {"dm", "mrd", "joint"}
    bal = metrics["mrd_dataset"]["train"]
    assert 0.0 <= bal["soft_label_mean"] <= 1.0 and bal["samples"] > 1000
    gate, d = load_run(gate_run)
    assert isinstance(gate, Gate) and d["model"] == "gate"
    assert gate.param_counts()["device_params"] == desc["device_params"] and gate.cfg.dim == 64
    (entry,) = gate.contract()
    with torch.no_grad():
        assert 0.0 < float(entry.module(*entry.example_inputs())) < 1.0


def test_calibrate_cli_writes_threshold(gate_run, synth_dataset_dir):
    from toolkit.gate.calibrate import load_threshold

    proc = cli("gate", "calibrate", gate_run, "--data", synth_dataset_dir, "--budget", 0.2)
    assert "threshold" in proc.stdout and "warning" not in proc.stdout
    thr = load_threshold(gate_run)
    assert thr["budget"] == 0.2 and thr["split"] == "valid" and thr["n_users"] == 300
    assert thr["device_inputs"] == ["r_now", "r_stale", "noise", "lag"]
    # on its own data the weighted quantile overshoots by at most one user's weight
    assert 0.2 <= thr["achieved_request_rate"] <= 0.2 + 1 / thr["n_users"] + 1e-9


def test_calibration_hits_the_rate_on_held_data(gate_run, synth_dataset):
    from toolkit.gate.calibrate import decision_features, open_gate, quantile_threshold

    gate, model, desc = open_gate(gate_run)
    pairs, outs = decision_features(gate, model, synth_dataset, "train", (1, 5))
    users = np.unique(pairs.user)
    held = np.isin(pairs.user, np.random.default_rng(0).choice(users, users.size // 2, replace=False))
    n_held = np.unique(pairs.user[held]).size
    for budget in (0.1, 0.3, 0.5):
        thr, _ = quantile_threshold(outs["mrs"][~held], budget)
        rate = float((outs["mrs"][held] <= thr).mean())
        assert abs(rate - budget) <= 3 * np.sqrt(budget * (1 - budget) / n_held), (budget, rate)


def test_calibrate_warns_on_too_few_samples(gate_run, synth_dataset_dir):
    code, out, err = run_inprocess("gate", "calibrate", gate_run, "--data", synth_dataset_dir, "--budget", 0.03)
    assert code == 0, err
    assert "warning" in out and "300 users" in out


@pytest.mark.parametrize("budget", ["0", "1.5", "-0.1"])
def test_bad_budget_is_one_line_error(gate_run, synth_dataset_dir, budget):
    code, _, err = run_inprocess("gate", "calibrate", gate_run, "--data", synth_dataset_dir, "--budget", budget)
    assert code == 2 and "budget must be" in err and len(err.strip().splitlines()) == 1, err


def test_missing_threshold_is_a_clear_error(gate_run, tmp_path):
    from toolkit.gate.calibrate import load_threshold

    copy = tmp_path / "g"
    shutil.copytree(gate_run, copy)
    (copy / "threshold.json").unlink(missing_ok=True)
    with pytest.raises(ToolkitError, match="has no threshold"):
        load_threshold(copy)


def test_gate_for_another_base_run_is_refused(gate_run, base_run, synth_dataset_dir, tmp_path):
    from toolkit.io import write_descriptor_json
    from toolkit.models.runs import save_weights

    other = tmp_path / "other"
    shutil.copytree(base_run, other)
    model, desc = load_run(other)
    with torch.no_grad():
        model.scn.tower.fc1.bias.add_(0.01)
    desc["weights_sha256"] = save_weights(other / "weights.safetensors", model)
    write_descriptor_json(other / "model.json", desc)  # a genuinely re-trained base: a valid, sealed model.json
    code, _, err = run_inprocess("gate", "calibrate", gate_run, "--data", synth_dataset_dir, "--model", other)
    assert code == 2 and "trained for base run weights" in err and len(err.strip().splitlines()) == 1, err


def test_curve_endpoints_equal_direct_evaluations(gate_run, base_run, synth_dataset, synth_dataset_dir, tmp_path):
    from toolkit.gate.dataset import expand_lags

    out = tmp_path / "curve"
    cli("gate", "curve", gate_run, "--data", synth_dataset_dir, "--out", out, "--budgets", "0.1,0.5,1.0",
        "--policies", "gate,random,lag,lof,ocsvm,oracle", "--no-timing", "--fit-cap", 400)
    res = json.loads((out / "curve.json").read_text())
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model, _ = load_run(base_run)
    ds = synth_dataset
    # always = CoCorrRec's own evaluation (the correction computed from the current window)
    direct_always = evaluate(model, ds, "test")
    for k in ("uauc", "ndcg@10", "hr@10"):
        assert res["endpoints"]["always"][k] == pytest.approx(direct_always[k], abs=1e-6)
    # never = every user keeps the correction computed from the window `lag` clicks earlier
    lags = expand_lags(ds, "test", *res["lags"], "sample", seed=0).lag
    n = np.diff(ds.user_ptr)
    rows = []
    with torch.no_grad():
        for u in range(ds.n_users):
            h, t_old = ds.history(u), n[u] - 1 - lags[u]
            old = np.zeros((1, 10), np.int64)
            w = h[max(0, t_old - 10):t_old]
            old[0, :len(w)] = w
            ca, cb = model.corrections(torch.from_numpy(old))
            rows.append(model.scn(torch.from_numpy(ds.test_seqs[u:u + 1]), torch.from_numpy(ds.test_cands[u:u + 1]),
                                  ca, cb)[0].numpy())
        direct_never = ranking_metrics(np.stack(rows))
        direct_none = ranking_metrics(model.scn(torch.from_numpy(ds.test_seqs), torch.from_numpy(ds.test_cands)).numpy())
    for k in ("uauc", "ndcg@10", "hr@10"):
        assert res["endpoints"]["never"][k] == pytest.approx(direct_never[k], abs=1e-6)
        assert res["endpoints"]["none"][k] == pytest.approx(direct_none[k], abs=1e-6)
    # a 100% budget requests every time: the always endpoint, with its bytes
    for name in ("gate", "random", "lag", "lof", "ocsvm"):
        full = res["policies"][name]["points"][-1]
        assert full["request_rate"] == 1.0 and full["ndcg@10"] == pytest.approx(res["endpoints"]["always"]["ndcg@10"])
        assert full["bytes_sent_per_1000"] == 1000 * 2560 and full["bytes_received_per_1000"] == 1000 * 4160
    assert res["policies"]["oracle"]["points"][0]["ndcg@10"] >= res["endpoints"]["never"]["ndcg@10"] - 1e-9
    assert "native" in res["policies"]["lof"] and set(res["summary"]["recovered_share"]) >= {"gate", "random"}
    # the bands: paired s.e. of each point's gain over never; a 100% point is `always`, whose s.e. is the summary's
    for name in ("gate", "random"):
        for p in res["policies"][name]["points"]:
            assert p["se_vs_never_ndcg@10"] >= 0.0
        assert res["policies"][name]["points"][-1]["se_vs_never_ndcg@10"] == pytest.approx(
            res["summary"]["always_minus_never_se"]["ndcg@10"], abs=1e-6)
    assert res["update_kind"].startswith("cocorrrec (paper GCN)") and res["update_payload"]["download_bytes"] == 4160
    assert set(res["summary"]["gate_at_or_above"]) == {"random", "lag", "lof", "ocsvm"}


def test_lag_policy_requests_the_longest_waits_first(gate_run, synth_dataset):
    """`lag` is "request every k clicks": at any threshold every requested decision waited at least as long as every
    kept one, and the budget's quantile on recent decisions lands near the budget on new ones."""
    from toolkit.gate.calibrate import decision_features, open_gate, quantile_threshold
    from toolkit.gate.policies import make_policy

    gate, model, _ = open_gate(gate_run)
    recent, outs = decision_features(gate, model, synth_dataset, "valid", (1, 5))
    test, test_outs = decision_features(gate, model, synth_dataset, "test", (1, 5), mode="sample", seed=0)
    pol = make_policy("lag", gate).fit(recent, outs, seed=0)
    for budget in (0.1, 0.3, 0.6):
        thr, _ = quantile_threshold(pol.priority(recent, outs), budget, recent.user_weights())
        req = pol.priority(test, test_outs) <= thr
        assert req.any() and (~req).any()
        assert test.lag[req].min() >= test.lag[~req].max()
        assert abs(req.mean() - budget) < 0.1


def test_policy_decisions_are_timed_on_one_thread(gate_run, synth_dataset):
    from toolkit.gate.calibrate import decision_features, open_gate
    from toolkit.gate.policies import make_policy, time_decisions

    gate, model, _ = open_gate(gate_run)
    pairs, outs = decision_features(gate, model, synth_dataset, "valid", (1, 5))
    threads = torch.get_num_threads()
    for name in ("gate", "random", "lag", "ocsvm"):
        pol = make_policy(name, gate, fit_cap=300).fit(pairs, outs, seed=0)
        t = time_decisions(pol, pairs, 0.5, n=15, warmup=2)
        assert t["n"] == 15 and 0 < t["median_ms"] <= t["p90_ms"]
    assert torch.get_num_threads() == threads  # restored


def test_the_cli_default_policies_are_the_librarys():
    from toolkit.cli.gate import DEFAULT_POLICIES as CLI_DEFAULT
    from toolkit.gate.policies import DEFAULT_POLICIES, POLICIES

    assert tuple(CLI_DEFAULT.split(",")) == DEFAULT_POLICIES and set(DEFAULT_POLICIES) <= set(POLICIES)
