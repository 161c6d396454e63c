"""The cloud-model interface (docs/models.md §4-§5): DUET parameter generation and CoCorrRec's history correction.

Pinned here: "no update" is exactly the device model, an update computed from an earlier history is what the gate's
stale scores use (checked against a hand-built history, not Dataset.windows), the bytes on the wire, and the CLI's
refusals for models, backbones, patience and seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_helpers import cli, run_inprocess

from toolkit.errors import ToolkitError
from toolkit.gate.dataset import expand_lags, score_pairs, subsample
from toolkit.models.registry import build

CLOUD_MODELS = [("duet", {"backbone": b, "context_len": 20}) for b in ("sasrec", "gru4rec", "din", "scn")] + [
    ("duet", {"backbone": "gru4rec", "rank": 4, "context_len": 20}),
    ("cocorrrec", {"cloud": "history", "context_len": 20}),
    ("cocorrrec", {"cloud": "history", "context_len": 20, "cloud_table": True}),
    ("cocorrrec", {"cloud": "paper"}),
]


def _randomise_update_heads(model):
    """Training starts with zero update heads; give them weights so updates differ between users."""
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("head.", "state_head.")):
                p.normal_(0, 0.05)
        if hasattr(model, "scn"):
            model.scn.ttt.corr_p.fill_(0.7)


@pytest.mark.parametrize("name,cfg", CLOUD_MODELS, ids=lambda v: str(v))
def test_zero_update_is_the_device_model_and_updates_are_per_user(name, cfg):
    torch.manual_seed(0)
    m = build(name, 50, **cfg).eval()
    _randomise_update_heads(m)
    items = torch.randint(1, 51, (4, 10))
    items[1, 6:] = 0
    cands = torch.randint(1, 51, (4, 7))
    ctx = items if cfg.get("cloud") == "paper" else torch.randint(0, 51, (4, 20))
    with torch.no_grad():
        upd = m.cloud_update(ctx)
        assert upd.shape == (4, m.update_floats())
        plain = m.device(items, cands)
        # exact, except the paper's corrected path, which is another (unfused) computation of the same maths
        tol = 1e-6 if cfg.get("cloud") == "paper" else 0.0
        torch.testing.assert_close(m.score_update(items, cands, torch.zeros_like(upd)), plain, rtol=0, atol=tol)
        fresh = m.score_update(items, cands, upd)
        assert (fresh - plain).abs().max() > 1e-4  # an update changes the scores ...
        other = m.score_update(items, cands, upd.roll(1, dims=0))
        assert (fresh - other).abs().max() > 1e-4  # ... and another user's update changes them differently
        kwargs = {} if cfg.get("cloud") == "paper" else {"context": ctx}
        torch.testing.assert_close(m(items, cands, **kwargs), fresh)


def test_update_starts_at_zero_so_training_starts_at_the_device_model():
    torch.manual_seed(0)
    for name, cfg in CLOUD_MODELS[:-1]:
        m = build(name, 50, **cfg).eval()
        ctx = torch.randint(1, 51, (3, cfg["context_len"]))
        assert torch.count_nonzero(m.cloud_update(ctx)) == 0, (name, cfg)


def test_bytes_on_the_wire():
    assert build("duet", 50).payload(10)["download_bytes"] == 4 * 2 * (64 * 64 + 64)  # 33,280 B: full DUET
    assert build("duet", 50, rank=8).payload(10)["download_bytes"] == 4 * 2 * (8 + 64)  # APG low rank
    hist = build("cocorrrec", 50, cloud="history").payload(10)
    assert hist["download_bytes"] == 4 * 4 * (16 * 16 + 16) and hist["upload_bytes"] == 80
    paper = build("cocorrrec", 50).payload(10)
    assert (paper["upload_bytes"], paper["download_bytes"]) == (2560, 4160)  # the paper's 2.56 KB / 4.16 KB
    assert paper["cloud_macs_per_update"] > 0 and hist["cloud_macs_per_update"] > 0


def test_unknown_backbone_or_cloud_kind_is_one_line():
    with pytest.raises(ToolkitError, match="unknown duet backbone 'bert4rec'.*sasrec, gru4rec, din, scn"):
        build("duet", 50, backbone="bert4rec")
    with pytest.raises(ToolkitError, match="unknown cocorrrec cloud 'edge'"):
        build("cocorrrec", 50, cloud="edge")


@pytest.mark.parametrize("name,cfg", [CLOUD_MODELS[0], CLOUD_MODELS[5]], ids=["duet", "cocorrrec-history"])
def test_stale_scores_use_the_update_from_the_earlier_history(synth_dataset, name, cfg):
    ds = synth_dataset
    torch.manual_seed(0)
    m = build(name, ds.n_items, **cfg).eval()
    _randomise_update_heads(m)
    n_ctx = cfg["context_len"]
    targets = subsample(expand_lags(ds, "valid", 1, 50, "all"), 30, seed=2)
    pairs = score_pairs(m, ds, targets)

    def padded(seq, n):
        return torch.nn.functional.pad(torch.tensor(seq, dtype=torch.int64).view(1, -1), (0, n - len(seq)))

    with torch.no_grad():
        for i in range(0, 30, 5):
            u, T, lag = int(targets.user[i]), int(targets.time[i]), int(targets.lag[i])
            h = ds.history(u)
            now = padded(h[max(0, T - 10):T], 10)
            old_ctx = padded(h[max(0, T - lag - n_ctx):T - lag], n_ctx)
            new_ctx = padded(h[max(0, T - n_ctx):T], n_ctx)
            cands = torch.tensor(targets.cands[i:i + 1])
            np.testing.assert_allclose(pairs.scores["stale"][i],
                                       m.score_update(now, cands, m.cloud_update(old_ctx))[0].numpy(), atol=1e-5)
            np.testing.assert_allclose(pairs.scores["fresh"][i],
                                       m.score_update(now, cands, m.cloud_update(new_ctx))[0].numpy(), atol=1e-5)
            np.testing.assert_allclose(pairs.scores["none"][i], m.device(now, cands)[0].numpy(), atol=1e-5)
    assert not np.allclose(pairs.scores["stale"], pairs.scores["fresh"])


def test_train_refusals_are_one_line_and_write_nothing(synth_dataset_dir, tmp_path):
    cases = [
        (["train", "duet", "--config", "backbone=bert4rec"], "unknown duet backbone 'bert4rec'"),
        (["train", "scn", "--patience", "0"], "--patience must be >= 1"),
        (["train", "scn", "--patience", "-2"], "--patience must be >= 1"),
        (["train", "scn", "--seeds", "0,x"], "--seeds expects comma-separated"),
        (["train", "scn", "--seeds", "1,1"], "lists a seed twice"),
    ]
    for args, msg in cases:
        out = tmp_path / "run"
        code, stdout, stderr = run_inprocess(*args, "--data", synth_dataset_dir, "--out", out)
        err = (stdout + stderr).strip()
        assert code == 2, err
        assert msg in err and "Traceback" not in err and len(err.splitlines()) == 1, err
        assert not out.exists()


def test_gate_refuses_a_model_without_cloud_updates(synth_dataset, synth_dataset_dir, tmp_path):
    from toolkit.train import TrainSettings, train

    run = tmp_path / "scn"
    train("scn", synth_dataset, run, TrainSettings(epochs=1, batch_size=512, threads=1))
    code, stdout, stderr = run_inprocess("train", "gate", "--model", run, "--data", synth_dataset_dir, "--out",
                                         tmp_path / "g")
    err = (stdout + stderr).strip()
    assert code == 2, err
    assert "'scn' run, which has none (usable: cocorrrec, duet)" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "g").exists()


@pytest.mark.slow  # two trainings of three epochs in a real process
def test_seeds_and_patience_end_to_end(synth_dataset_dir, tmp_path):
    out = tmp_path / "seeds"
    cli("train", "duet", "--config", "backbone=gru4rec", "--config", "context_len=20", "--data", synth_dataset_dir,
        "--out", out, "--seeds", "0,1", "--epochs", 3, "--patience", 1, "--batch-size", 512, "--threads", 1)
    summary = json.loads((out / "seeds.json").read_text())
    per = [json.loads((out / f"seed-{s}" / "metrics.json").read_text()) for s in (0, 1)]
    for k in ("ndcg@10", "uauc"):
        vals = np.array([p["test"][k] for p in per])
        assert summary["test_mean"][k] == pytest.approx(vals.mean(), abs=1e-6)
        assert summary["test_std"][k] == pytest.approx(vals.std(ddof=1), abs=1e-6)
    for p in per:  # patience 1: at most one epoch past the best
        assert p["epochs_run"] <= p["best_epoch"] + 1 and len(p["history"]) == p["epochs_run"]
    desc = json.loads((out / "seed-1" / "model.json").read_text())
    assert desc["train"]["seed"] == 1 and desc["config"]["backbone"] == "gru4rec"


def test_streaming_equals_one_long_window_and_short_histories_equal_the_window(synth_dataset):
    """Streaming carries (W, b) across mini-batches: for T <= 2K it is the dual form over the whole history (one
    window of 2K clicks from click 0); for T <= K it is the protocol's own window."""
    from toolkit.train.loop import score_split
    from toolkit.train.streaming import stream_scores

    ds = synth_dataset
    torch.manual_seed(0)
    scn = build("scn", ds.n_items).eval()
    got = stream_scores(scn, ds, "valid")
    users, times = ds.targets("valid")
    seqs, cands = ds.split("valid")
    window = score_split(scn, seqs, cands)
    short = times <= 10
    assert short.any() and (~short).any()
    np.testing.assert_allclose(got[short], window[short], atol=1e-5)
    mid = (times > 10) & (times <= 20)
    assert mid.any()
    hist = np.zeros((int(mid.sum()), 20), np.int64)
    for row, (u, T) in enumerate(zip(users[mid], times[mid])):
        hist[row, :T] = ds.history(int(u))[:T]
    np.testing.assert_allclose(got[mid], score_split(scn, hist, cands[mid]), atol=1e-5)
    long = times > 20
    if long.any():  # past the training window the regimes differ
        assert not np.allclose(got[long], window[long], atol=1e-4)


def test_eval_cli_reports_both_regimes(synth_dataset, synth_dataset_dir, tmp_path):
    from toolkit.train import TrainSettings, train

    run = tmp_path / "scn"
    metrics = train("scn", synth_dataset, run, TrainSettings(epochs=1, batch_size=512, threads=1))
    out = json.loads(cli("eval", run, "--data", synth_dataset_dir, "--regime", "both", "--json").stdout)
    assert out["regimes"]["window"] == metrics["test"]
    assert set(out["regimes"]["stream"]) == set(metrics["test"]) and out["regimes"]["stream"] != metrics["test"]
    code, stdout, stderr = run_inprocess("eval", tmp_path / "scn", "--data", synth_dataset_dir, "--regime",
                                         "streaming")
    assert code == 2 and "unknown regime 'streaming'" in stdout + stderr


@pytest.mark.slow
@pytest.mark.parametrize("name,cfg", [("duet", ["backbone=gru4rec", "context_len=20"]),
                                      ("cocorrrec", ["cloud=history", "context_len=20"])])
def test_cloud_model_device_artifact_takes_the_update_as_input(synth_dataset_dir, tmp_path, name, cfg):
    """export -> onnxruntime: the device part with the update as an explicit static input, parity over 5 calls."""
    run, art = tmp_path / "run", tmp_path / "art"
    config = [a for c in cfg for a in ("--config", c)]
    cli("train", name, *config, "--data", synth_dataset_dir, "--out", run, "--epochs", 1, "--batch-size", 512,
        "--threads", 1)
    cli("export", run, "--target", "onnx", "--seq-len", 10, "--out", art)
    manifest = json.loads((art / "manifest.json").read_text())
    window = next(a for a in manifest["artifacts"] if a["entry"] == "window")
    update = next(i for i in window["inputs"] if i["name"] == "update")
    expected = 2 * (64 * 64 + 64) if name == "duet" else 4 * (16 * 16 + 16)
    assert update["shape"] == [1, expected] and window["parity"]["pass"]
    assert max(max(v) for v in window["parity"]["max_abs_error"].values()) < 1e-4
    cli("verify", art)


def test_update_dropout_trains_some_rows_without_an_update():
    torch.manual_seed(0)
    for name, cfg in [("duet", {"backbone": "gru4rec"}), ("cocorrrec", {"cloud": "history"})]:
        m = build(name, 50, context_len=12, update_dropout=0.999999, **cfg)
        _randomise_update_heads(m)
        items, cands, ctx = torch.randint(1, 51, (4, 10)), torch.randint(1, 51, (4, 5)), torch.randint(1, 51, (4, 12))
        m.train()
        torch.testing.assert_close(m(items, cands, context=ctx), m.device(items, cands))  # every row dropped
        m.eval()  # never at inference
        assert (m(items, cands, context=ctx) - m.device(items, cands)).abs().max() > 1e-4
    with pytest.raises(ToolkitError, match="update_dropout must lie in"):
        build("duet", 50, update_dropout=1.5)


def test_exported_state_corrected_window_equals_eager():
    """cocorrrec(cloud=history)'s device artifact is SCN's device graph from W0 + delta W: same scores as eager."""
    torch.manual_seed(0)
    m = build("cocorrrec", 60, cloud="history", context_len=12).eval()
    _randomise_update_heads(m)
    (window, step) = m.contract(25, 7)
    assert [i.name for i in window.inputs] == ["items", "candidates", "update"] and step.name == "step"
    for seed in range(3):
        items, cands, _ = window.example_inputs(seed)
        items[0, 5 + seed * 7:] = 0  # right-padded
        update = m.cloud_update(torch.randint(1, 61, (1, 12)))
        with torch.no_grad():
            torch.testing.assert_close(window.module(items, cands, update), m.score_update(items, cands, update),
                                       atol=2e-5, rtol=1e-5)
            zero = torch.zeros_like(update)
            torch.testing.assert_close(window.module(items, cands, zero), m.device(items, cands), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("cloud", ["history", "paper"])
def test_eval_updates_compares_own_mean_shuffled_and_no_update(synth_dataset, synth_dataset_dir, tmp_path, cloud):
    """`eval --updates`: 'own' is the run's own test metrics; 'mean' / 'none' are rebuilt here by hand from
    cloud_update and score_update, and the paired s.e. is the s.e. of the per-row NDCG@10 difference."""
    from toolkit.metrics import positive_rank, ranking_metrics
    from toolkit.models.runs import load_run
    from toolkit.train import TrainSettings, train

    run = tmp_path / "cc"
    config = {"cloud": "history", "context_len": 20} if cloud == "history" else {"cloud": "paper"}
    metrics = train("cocorrrec", synth_dataset, run, TrainSettings(epochs=1, batch_size=512, threads=1,
                                                                   config=config))
    out = json.loads(cli("eval", run, "--data", synth_dataset_dir, "--updates", "--json").stdout)
    assert out["variants"]["own"] == pytest.approx(metrics["test"], abs=1e-6)
    model, _ = load_run(run)
    model.eval()
    seqs, cands = synth_dataset.split("test")
    users, times = synth_dataset.targets("test")
    ctx = np.zeros((len(users), 20), np.int64)  # the cloud's history, built by hand (not Dataset.windows)
    for row, (u, T) in enumerate(zip(users, times)):
        h = synth_dataset.history(int(u))[:T][-20:]
        ctx[row, :len(h)] = h
    if cloud == "paper":  # the paper's GCN reads the device's own window
        ctx = seqs
    with torch.no_grad():
        own = model.cloud_update(torch.tensor(ctx))
        mean = own.mean(0, keepdim=True).expand_as(own)
        s_mean = model.score_update(torch.tensor(seqs), torch.tensor(cands), mean).numpy()
        s_none = model.score_update(torch.tensor(seqs), torch.tensor(cands), torch.zeros_like(own)).numpy()
        s_own = model.score_update(torch.tensor(seqs), torch.tensor(cands), own).numpy()
    assert out["variants"]["mean"] == pytest.approx(ranking_metrics(s_mean), abs=1e-5)
    assert out["variants"]["none"] == pytest.approx(ranking_metrics(s_none), abs=1e-5)
    ndcg = lambda s: np.where(positive_rank(s) < 10, 1 / np.log2(positive_rank(s) + 2.0), 0.0)  # noqa: E731
    diff = ndcg(s_own) - ndcg(s_mean)
    assert out["own_minus"]["mean"]["ndcg@10"] == pytest.approx(diff.mean(), abs=1e-5)
    assert out["own_minus"]["mean"]["se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(len(diff)), abs=1e-5)
    assert out["update_floats"] == own.shape[1] and out["rows"] == len(seqs)
    assert set(out["variants"]["shuffled"]) == set(metrics["test"])
    # split by whether the cloud's history holds clicks the window lacks (never, when the cloud reads the window)
    more = (ctx != 0).sum(1) > (seqs != 0).sum(1)
    by = out["by_history"]
    assert by["cloud_sees_more"]["rows"] == int(more.sum()) and by["same_clicks"]["rows"] == int((~more).sum())
    assert (cloud == "paper") == (by["cloud_sees_more"]["rows"] == 0)
    d_none = ndcg(s_own) - ndcg(s_none)
    for k, rows in (("cloud_sees_more", more), ("same_clicks", ~more)):
        if rows.any():
            assert by[k]["own_minus_none"]["ndcg@10"] == pytest.approx(d_none[rows].mean(), abs=1e-5)
    code, stdout, stderr = run_inprocess("eval", run, "--data", synth_dataset_dir, "--updates", "--regime", "both")
    assert code == 2 and "window regime" in stdout + stderr


def test_eval_updates_refuses_a_device_only_run(synth_dataset, synth_dataset_dir, tmp_path):
    from toolkit.train import TrainSettings, train

    train("scn", synth_dataset, tmp_path / "scn", TrainSettings(epochs=1, batch_size=512, threads=1))
    code, stdout, stderr = run_inprocess("eval", tmp_path / "scn", "--data", synth_dataset_dir, "--updates")
    err = (stdout + stderr).strip()
    assert code == 2 and "needs a model with a cloud update" in err and len(err.splitlines()) == 1


def test_cloud_table_is_the_clouds_own_and_not_shipped():
    """cloud_table=true: the cloud embeds the history with its own table (counted as cloud parameters); the device
    part, what is exported, is the same SCN as without it."""
    torch.manual_seed(0)
    with_table = build("cocorrrec", 50, cloud="history", cloud_table=True)
    torch.manual_seed(0)
    without = build("cocorrrec", 50, cloud="history")
    table = with_table.cloud_emb.weight.numel()
    assert with_table.param_counts()["cloud_params"] == without.param_counts()["cloud_params"] + table
    assert with_table.param_counts()["device_params_excluding_item_table"] == \
        without.param_counts()["device_params_excluding_item_table"]
    ctx = torch.randint(1, 51, (3, 20))
    _randomise_update_heads(with_table)
    with torch.no_grad():
        a = with_table.cloud_update(ctx)
        with_table.scn.item_emb.weight.normal_()  # the device's table does not move the cloud's update ...
        assert torch.equal(with_table.cloud_update(ctx), a) and a.abs().max() > 0
        with_table.cloud_emb.weight.normal_()  # ... its own does
        assert not torch.equal(with_table.cloud_update(ctx), a)


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec", "din"])
def test_duet_one_pass_offline_scores_equal_the_two_passes(backbone):
    """Training's offline loss scores every row with the cloud update and with none; DUET does both from one pass
    of its backbone. Without dropout that is exactly the two separate passes, and gradients reach both halves."""
    from toolkit.train.objective import PositionScorer

    torch.manual_seed(0)
    model = build("duet", 50, backbone=backbone, context_len=20)
    items, cands = torch.randint(1, 51, (4, 10)), torch.randint(1, 51, (4, 7))
    ctx = torch.randint(0, 51, (4, 20))
    model.eval()
    with torch.no_grad():
        one = model.score_with_offline(items, cands, ctx)
        two = torch.cat([model(items, cands, context=ctx),
                         model.score_update(items, cands, torch.zeros(4, model.update_floats()))])
    torch.testing.assert_close(one, two, rtol=1e-6, atol=1e-6)
    scorer = PositionScorer(model).train()
    out = scorer(items, cands, context=ctx)
    assert out.shape == (8, 7)
    out[4:].sum().backward()  # the no-update half alone trains the backbone, not the generator's head
    assert model.backbone.item_emb.weight.grad.abs().sum() > 0
    assert model.head.weight.grad is None or model.head.weight.grad.abs().sum() == 0
