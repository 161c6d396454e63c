"""`toolkit train` / `toolkit eval` end to end on tiny synthetic data, resume, and their bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import cli  # tests/ is on sys.path under pytest

from toolkit.models import build, load_run
from toolkit.train import TrainSettings, train


@pytest.fixture(scope="module")
def scn_run(synth_dataset_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "scn"
    cli("train", "scn", "--data", synth_dataset_dir, "--out", run, "--epochs", 4, "--batch-size", 256,
        "--lr", 3e-3, "--threads", 1)
    return run


def test_train_writes_run_dir_and_beats_random(scn_run):
    metrics = json.loads((scn_run / "metrics.json").read_text())
    desc = json.loads((scn_run / "model.json").read_text())
    assert set(metrics) >= {"valid", "test", "best_epoch", "train_seconds"}
    assert set(metrics["test"]) == {"uauc", "ndcg@5", "ndcg@10", "ndcg@20", "hr@5", "hr@10", "hr@20"}
    # a random ranker over 100 candidates has HR@10 = 0.10 and UAUC = 0.5
    assert metrics["test"]["hr@10"] > 0.2, metrics["test"]
    assert metrics["test"]["uauc"] > 0.6, metrics["test"]
    assert desc["model"] == "scn" and desc["params_excluding_item_table"] < desc["params"]
    assert desc["dataset_sha256"] and desc["versions"]["torch"].startswith("2.13.0")
    assert (scn_run / "weights.safetensors").is_file() and (scn_run / "checkpoint.pt").is_file()


def test_eval_reproduces_metrics_json(scn_run, synth_dataset_dir):
    metrics = json.loads((scn_run / "metrics.json").read_text())
    for split in ("valid", "test"):
        out = json.loads(cli("eval", scn_run, "--data", synth_dataset_dir, "--split", split, "--json").stdout)
        assert out["metrics"] == metrics[split]


def test_load_run_restores_the_model(scn_run, synth_dataset):
    model, desc = load_run(scn_run)
    seqs, cands = synth_dataset.split("test")
    with torch.no_grad():
        scores = model(torch.tensor(seqs[:8]), torch.tensor(cands[:8]))
    assert scores.shape == (8, 100) and torch.isfinite(scores).all()


def test_resume_reproduces_the_uninterrupted_run(synth_dataset, tmp_path):
    settings = dict(batch_size=512, lr=2e-3, seed=3, threads=1)
    full = train("gru4rec", synth_dataset, tmp_path / "full", TrainSettings(epochs=2, **settings))
    train("gru4rec", synth_dataset, tmp_path / "cut", TrainSettings(epochs=1, **settings))  # "interrupted" after 1
    resumed = train("gru4rec", synth_dataset, tmp_path / "cut", TrainSettings(epochs=2, **settings), resume=True)
    assert resumed["valid"] == full["valid"] and resumed["test"] == full["test"]
    assert resumed["best_epoch"] == full["best_epoch"]


@pytest.mark.parametrize("model", ["cocorrrec", "sasrec", "din"])
def test_every_model_trains_one_epoch(model, synth_dataset, tmp_path):
    metrics = train(model, synth_dataset, tmp_path / model, TrainSettings(epochs=1, batch_size=512, threads=1))
    assert 0.0 <= metrics["test"]["uauc"] <= 1.0
    desc = json.loads((tmp_path / model / "model.json").read_text())
    assert desc["model"] == model


def test_unknown_model_lists_valid_ones(synth_dataset_dir, tmp_path):
    proc = cli("train", "bert4rec", "--data", synth_dataset_dir, "--out", tmp_path / "x", check_rc=2)
    assert "unknown model 'bert4rec'" in proc.stderr and "scn" in proc.stderr and "sasrec" in proc.stderr


def test_eval_refuses_a_run_from_another_dataset(scn_run, tmp_path):
    from toolkit.data import synthesize

    other = tmp_path / "other"
    synthesize(other, users=120, items=150, domains=10, seed=7)
    proc = cli("eval", scn_run, "--data", other, check_rc=2)
    assert "another dataset" in proc.stderr


def test_existing_run_dir_is_not_overwritten(scn_run, synth_dataset_dir):
    proc = cli("train", "scn", "--data", synth_dataset_dir, "--out", scn_run, check_rc=2)
    assert "--resume" in proc.stderr and "--force" in proc.stderr


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(synth_dataset, tmp_path):
    """Diverged weights (a NaN in the checkpoint) make the next loss NaN: training stops, nothing is overwritten."""
    from toolkit.errors import CheckFailed

    run = tmp_path / "nan"
    settings = dict(batch_size=512, threads=1)
    train("gru4rec", synth_dataset, run, TrainSettings(epochs=1, **settings))
    ck = torch.load(run / "checkpoint.pt", weights_only=True)  # the checkpoint holds tensors and plain values only
    ck["model"]["item_emb.weight"][5, 0] = float("nan")
    torch.save(ck, run / "checkpoint.pt")
    diverged = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckFailed, match="loss became nan"):
        train("gru4rec", synth_dataset, run, TrainSettings(epochs=2, **settings), resume=True)
    assert (run / "checkpoint.pt").read_bytes() == diverged


def test_item_ids_beyond_the_vocabulary_are_named(synth_dataset):
    from toolkit.errors import ToolkitError
    from toolkit.train.loop import check_vocab

    with pytest.raises(ToolkitError, match=f"item id {synth_dataset.n_items + 5} is outside"):
        bad = type("DS", (), {k: getattr(synth_dataset, k) for k in
                              ("train_seqs", "train_cands", "valid_seqs", "valid_cands", "test_seqs")})()
        bad.test_cands = np.array(synth_dataset.test_cands)
        bad.test_cands[3, 7] = synth_dataset.n_items + 5
        check_vocab(bad, synth_dataset.n_items)


def test_param_counts_exclude_the_item_table():
    for name in ("scn", "cocorrrec", "gru4rec", "sasrec", "din"):
        counts = build(name, 500).param_counts()
        assert counts["params"] - counts["params_excluding_item_table"] == 501 * 64, name


def test_init_freeze_device_trains_only_the_cloud_side(scn_run, synth_dataset_dir, synth_dataset, tmp_path):
    """Two-stage cocorrrec: the device part starts as the scn run and, frozen, stays it bit for bit, so 'no update'
    scores exactly what the scn run scores; the cloud side did train; model.json records where it started."""
    from toolkit.train.updates import update_ablation

    run = tmp_path / "cc"
    cli("train", "cocorrrec", "--data", synth_dataset_dir, "--out", run, "--epochs", 2, "--batch-size", 256,
        "--lr", 3e-3, "--threads", 1, "--config", "cloud=history", "--init", scn_run, "--freeze-device")
    cc, desc = load_run(run)
    scn, scn_desc = load_run(scn_run)
    for k, v in scn.state_dict().items():
        assert torch.equal(cc.scn.state_dict()[k], v), k
    assert cc.state_head.weight.abs().sum() > 0  # the zero-initialised head moved: the cloud side trained
    init = desc["train"]["init"]
    assert init["model"] == "scn" and init["weights_sha256"] == scn_desc["weights_sha256"] and init["freeze_device"]
    assert 0 < init["trainable_params"] < desc["params"]
    abl = update_ablation(cc, synth_dataset, "test")
    scn_test = json.loads((scn_run / "metrics.json").read_text())["test"]
    assert abl["variants"]["none"]["ndcg@10"] == pytest.approx(scn_test["ndcg@10"], abs=1e-12)


def test_init_without_freeze_starts_at_the_device_run(scn_run, synth_dataset_dir, tmp_path):
    run = tmp_path / "duet"
    cli("train", "duet", "--data", synth_dataset_dir, "--out", run, "--epochs", 1, "--batch-size", 256,
        "--threads", 1, "--config", "backbone=scn", "--init", scn_run)
    desc = json.loads((run / "model.json").read_text())
    assert desc["train"]["init"]["model"] == "scn" and desc["train"]["init"]["freeze_device"] is False


@pytest.mark.parametrize("args,msg", [
    (["sasrec", "--init", "RUN"], "'sasrec' has no separate device part"),
    (["cocorrrec", "--freeze-device"], "give --init"),
    (["cocorrrec", "--init", "NOWHERE"], "not a run dir"),
    (["duet", "--config", "backbone=gru4rec", "--init", "RUN"], "a 'scn' run; the device part of this duet is "
                                                                 "'gru4rec'"),
    (["cocorrrec", "--init", "RUN", "--seeds", "0,1"], "one run per seed"),
])
def test_init_bad_input_is_one_line_and_writes_nothing(args, msg, scn_run, synth_dataset_dir, tmp_path):
    args = [str(scn_run) if a == "RUN" else str(tmp_path / "nowhere") if a == "NOWHERE" else a for a in args]
    out = tmp_path / "x"
    proc = cli("train", *args, "--data", synth_dataset_dir, "--out", out, "--epochs", 1, check_rc=2)
    assert msg in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()


def test_an_interrupted_seeds_run_keeps_finished_seeds_and_resumes(synth_dataset_dir, tmp_path, monkeypatch):
    """Ctrl-C during seed 1 keeps seed 0 (and says how to go on); `--seeds --resume` re-scores seed 0 from its
    checkpoint without retraining it and trains seed 1 fresh, to the same numbers as an uninterrupted run."""
    from cli_helpers import run_inprocess

    import toolkit.train.seeds as seeds_mod

    args = ["train", "gru4rec", "--data", synth_dataset_dir, "--seeds", "0,1", "--epochs", 2, "--config", "dim=16",
            "--threads", 1, "--batch-size", 512]
    whole = tmp_path / "whole"
    assert run_inprocess(*args, "--out", whole)[0] == 0
    real_train, calls = seeds_mod.train, []

    def stop_at_seed_1(name, ds, run, settings, resume=False, reporter=None):
        calls.append((settings.seed, resume))
        if settings.seed == 1:
            raise KeyboardInterrupt
        return real_train(name, ds, run, settings, resume=resume, reporter=reporter)

    monkeypatch.setattr(seeds_mod, "train", stop_at_seed_1)
    cut = tmp_path / "cut"
    code, _, err = run_inprocess(*args, "--out", cut)
    assert code == 130 and "checkpointed" in err and "--seeds 0,1 --resume" in err, err
    from toolkit.errors import Terminated

    def terminate_at_seed_1(name, ds, run, settings, resume=False, reporter=None):
        if settings.seed == 1:
            raise Terminated
        return real_train(name, ds, run, settings, resume=resume, reporter=reporter)

    monkeypatch.setattr(seeds_mod, "train", terminate_at_seed_1)  # SIGTERM: the same seeds kept, said beside it
    code, _, err = run_inprocess(*args, "--out", tmp_path / "term")
    assert code == 143 and "terminated (SIGTERM)" in err and "--seeds 0,1 --resume" in err, err
    assert (tmp_path / "term" / "seed-0" / "metrics.json").is_file()
    monkeypatch.setattr(seeds_mod, "train", stop_at_seed_1)
    assert (cut / "seed-0" / "metrics.json").is_file() and not (cut / "seeds.json").exists()
    seed0 = (cut / "seed-0" / "metrics.json").read_text()

    calls.clear()
    monkeypatch.setattr(seeds_mod, "train", lambda *a, **k: (calls.append((a[3].seed, k["resume"])),
                                                              real_train(*a, **k))[1])
    code, out, err = run_inprocess(*args, "--out", cut, "--resume")
    assert code == 0, out + err
    assert calls == [(0, True), (1, False)]
    got, want = (json.loads((d / "seeds.json").read_text()) for d in (cut, whole))
    assert got["test_mean"] == want["test_mean"] and got["seeds"] == [0, 1]
    m0 = json.loads((cut / "seed-0" / "metrics.json").read_text())
    assert m0["test"] == json.loads(seed0)["test"] and m0["history"] == json.loads(seed0)["history"]
