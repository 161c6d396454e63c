"""Training recipes, fresh negatives, the count baselines, --sweep and `toolkit compare`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import cli, run_inprocess

from toolkit.data import load_dataset
from toolkit.data.store import save_dataset
from toolkit.models.counts import fit
from toolkit.train import TrainSettings, train
from toolkit.train.loop import evaluate
from toolkit.train.objective import NegativeSampler, PositionScorer, batch_loss_sum
from toolkit.train.recipes import RECIPES, Recipe, resolve_recipe


def test_fresh_negatives_are_deterministic_per_seed_epoch_step_and_never_touched(synth_dataset):
    ds = synth_dataset
    users = ds.train_user[:500]
    a = NegativeSampler(ds, seed=3).draw(users, 32, epoch=2, step=5)
    b = NegativeSampler(ds, seed=3).draw(users, 32, epoch=2, step=5)
    assert np.array_equal(a, b)
    for other in (NegativeSampler(ds, 4).draw(users, 32, 2, 5), NegativeSampler(ds, 3).draw(users, 32, 3, 5),
                  NegativeSampler(ds, 3).draw(users, 32, 2, 6)):
        assert not np.array_equal(a, other)
    for u, row in zip(users, a):
        assert len(set(row.tolist())) == 32  # distinct within a row
        assert not set(row.tolist()) & set(ds.history(int(u)).tolist())  # never an item the user touched
        assert row.min() >= 1 and row.max() <= ds.n_items


def test_paper_recipe_loss_is_the_papers_bce_over_the_fixed_rows(synth_dataset):
    torch.manual_seed(0)
    from toolkit.models import build

    model = build("gru4rec", synth_dataset.n_items)
    s = torch.from_numpy(synth_dataset.train_seqs[:64].astype(np.int64))
    c = torch.from_numpy(synth_dataset.train_cands[:64].astype(np.int64))
    total, per_row = batch_loss_sum(PositionScorer(model), s, c, None, RECIPES["paper"])
    labels = torch.zeros(c.shape)
    labels[:, 0] = 1
    ref = torch.nn.BCEWithLogitsLoss()(model(s, c), labels)
    assert per_row == 1 and torch.allclose(total / 64, ref, atol=1e-6)


def test_every_position_scores_match_the_window_scores_at_each_prefix(synth_dataset):
    """position t of position_scores = the model's own score of the window cut after t (causality, no leak)."""
    from toolkit.models import build

    s = torch.from_numpy(synth_dataset.train_seqs[:16].astype(np.int64))
    c = torch.from_numpy(synth_dataset.train_cands[:16].astype(np.int64))
    for name in ("scn", "sasrec", "gru4rec", "din"):
        torch.manual_seed(0)
        model = build(name, synth_dataset.n_items).eval()
        with torch.no_grad():
            pos = model.position_scores(s, c)  # [B, L, C]
            for t in (0, 3, s.shape[1] - 1):
                cut = s.clone()
                cut[:, t + 1:] = 0
                real = (s[:, t] != 0)
                assert torch.allclose(pos[real, t], model(cut, c)[real], atol=1e-4), (name, t)


def _ring_dataset(tmp_path: Path, n_items: int = 150, users: int = 300, length: int = 14) -> Path:
    """Every user walks a ring of items: the next click is always (previous + 1) mod n. A model that learns the
    sequence ranks the true next item first; a model that does not sits near 1/100."""
    rng = np.random.default_rng(0)
    hist = [((rng.integers(0, n_items) + np.arange(length)) % n_items + 1).astype(np.int64) for _ in range(users)]
    save_dataset(tmp_path / "ring", hist, {"format": "test-ring"}, seq_len=6, seed=0, n_items=n_items)
    return tmp_path / "ring"


@pytest.mark.parametrize("loss,positions,resample", [("bce", "last", False), ("bce", "all", True),
                                                     ("ce", "last", True), ("ce", "all", True)])
def test_every_loss_option_learns_a_known_ranking(loss, positions, resample, tmp_path):
    ds = load_dataset(_ring_dataset(tmp_path))
    over = {"loss": loss, "positions": positions, "resample": resample,
            "negatives": 16 if resample else 4}
    m = train("gru4rec", ds, tmp_path / "run", TrainSettings(epochs=12, batch_size=64, lr=1e-2, threads=1,
                                                              recipe="default", recipe_overrides=over))
    assert m["test"]["hr@5"] > 0.9, m["test"]  # the next item is ranked near the top for nearly every user
    assert m["recipe"] == {"name": "default", **over, "lr": 1e-2, "dropout": 0.5}


def test_cooc_reads_nothing_of_validation_or_test_targets(synth_dataset_dir, tmp_path):
    """Replace every user's validation and test item by a fresh id seen nowhere in training: if cooc or pop read
    those targets, the new ids would get counts; they must not, and every other count must stay the same."""
    ds = load_dataset(synth_dataset_dir)
    hist = [ds.history(u).copy() for u in range(ds.n_users)]
    fresh = ds.n_items + 1
    for h in hist:
        h[-2:] = fresh
    save_dataset(tmp_path / "leak", hist, {"format": "test-leak"}, seq_len=ds.seq_len, seed=0,
                 n_items=ds.n_items + 1)
    leak = load_dataset(tmp_path / "leak")
    for name in ("pop", "cooc"):
        a, b = fit(name, ds), fit(name, leak)
        assert float(b.popularity[fresh]) == 0.0, name
        assert torch.equal(a.popularity, b.popularity[: ds.n_items + 1]), name
    a, b = fit("cooc", ds), fit("cooc", leak)
    assert not torch.any(b.keys % (leak.n_items + 1) == fresh)
    assert torch.equal(a.counts, b.counts)


def test_cooc_beats_pop_and_scores_its_counts(synth_dataset):
    pop, cooc = (evaluate(fit(n, synth_dataset), synth_dataset, "valid") for n in ("pop", "cooc"))
    assert cooc["ndcg@10"] > pop["ndcg@10"] > 0.1
    m = fit("cooc", synth_dataset)
    a, c = int(synth_dataset.train_seqs[0, 0]), int(synth_dataset.train_cands[0, 0])
    n = int(((synth_dataset.train_seqs == a).sum(1) * (synth_dataset.train_cands[:, 0] == c)).sum())
    score = m(torch.tensor([[a] + [0] * (synth_dataset.seq_len - 1)]), torch.tensor([[c]]))
    assert int(score.floor()) == n  # the count, plus a popularity tie-break below 1


@pytest.mark.slow
def test_train_pop_and_cooc_write_runs_that_eval_and_compare_read(synth_dataset_dir, tmp_path):
    for name in ("pop", "cooc"):
        cli("train", name, "--data", synth_dataset_dir, "--out", tmp_path / name)
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        out = json.loads(cli("eval", tmp_path / name, "--data", synth_dataset_dir, "--json").stdout)
        assert out["metrics"] == metrics["test"]
    proc = cli("compare", tmp_path / "pop", tmp_path / "cooc", "--out", tmp_path / "cmp")
    summary = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert summary["best_baseline"] == "cooc" and all(r["baseline"] for r in summary["rows"])
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert all(len(line) <= 100 for line in proc.stdout.splitlines())
    cli("export", tmp_path / "cooc", "--format", "onnx", "--out", tmp_path / "art", check_rc=2)


@pytest.mark.slow
def test_sweep_writes_one_run_per_point_and_picks_on_validation(synth_dataset_dir, tmp_path):
    out = tmp_path / "sw"
    cli("train", "gru4rec", "--data", synth_dataset_dir, "--out", out, "--epochs", 1, "--threads", 1,
        "--sweep", "lr=1e-3,3e-3", "--sweep", "loss=bce,ce")
    summary = json.loads((out / "sweep.json").read_text())
    assert len(summary["points"]) == 4
    best = max(summary["points"], key=lambda p: p["valid"]["ndcg@10"])
    assert summary["best"] == best["run"] and (out / best["run"] / "metrics.json").is_file()
    rec = json.loads((out / "lr-0.003_loss-ce" / "model.json").read_text())["train"]
    assert rec["lr"] == 0.003 and rec["recipe"]["loss"] == "ce"
    cmp = json.loads(cli("compare", out, "--data", synth_dataset_dir, "--out", tmp_path / "c").stdout and
                     (tmp_path / "c" / "compare.json").read_text())
    assert [r["model"] for r in cmp["rows"]] == ["pop", "cooc", "gru4rec"]
    assert cmp["rows"][2]["gain_over_best_baseline"] is not None


def _tree(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args,msg", [
    (["scn", "--recipe", "fancy"], "unknown --recipe 'fancy'"),
    (["scn", "--loss", "hinge"], "unknown loss 'hinge'"),
    (["scn", "--positions", "middle"], "unknown positions 'middle'"),
    (["scn", "--negatives", "0"], "negatives must be an integer in 1..1024"),
    (["scn", "--fixed-negatives", "--negatives", "32"], "needs resample=true"),
    (["scn", "--sweep", "lr"], "--sweep expects key=v1,v2"),
    (["scn", "--sweep", "lr=1e-3,,3e-3"], "an empty value"),
    (["scn", "--sweep", "lr=1e-3", "--sweep", "lr=3e-3"], "names 'lr' twice"),
    (["scn", "--sweep", "lr=-1"], "is negative"),
    (["scn", "--sweep", "lr=1e-3,2e-3", "--seeds", "0,1"], "--sweep trains one seed per point"),
    (["pop", "--nproc", "2"], "--nproc mean nothing to pop"),
    (["cooc", "--init", "somewhere"], "--init mean nothing to cooc"),
    (["cooc", "--recipe", "paper"], "--recipe mean nothing to cooc"),
    (["gate", "--loss", "ce"], "--loss mean nothing to gate"),
])
def test_recipe_bad_input_is_one_line_and_touches_nothing(args, msg, synth_dataset_dir, tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "f").write_text("x")
    before, data_before = _tree(tmp_path), _tree(synth_dataset_dir)
    code, out, err = run_inprocess("train", *args, "--data", synth_dataset_dir, "--out", keep, "--force")
    assert code == 2, (out, err)
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 1 and msg in lines[0] and "Traceback" not in err, lines
    assert _tree(tmp_path) == before and _tree(synth_dataset_dir) == data_before


def test_resolve_recipe_overrides_and_names():
    assert resolve_recipe("paper") == Recipe(4, False, "bce", "last", 1e-3, None)
    r = resolve_recipe("paper", {"resample": True, "negatives": 8, "loss": "ce"})
    assert (r.negatives, r.resample, r.loss, r.positions) == (8, True, "ce", "last")


@pytest.mark.parametrize("name,config", [("duet", {"backbone": "gru4rec"}), ("cocorrrec", {"cloud": "history"})])
def test_cloud_models_also_train_the_no_update_path(name, config, synth_dataset):
    """offline_loss (the default): each training row is scored twice, with its fresh update and with none, so the
    device keeps its backbone's own loss; positions=all scores earlier positions with no update at all."""
    from toolkit.models import build

    torch.manual_seed(0)
    model = build(name, synth_dataset.n_items, **config)
    for p in model.parameters():  # move the update heads off zero so "no update" differs from the update
        torch.nn.init.normal_(p, std=0.05) if p.dim() > 1 else None
    s = torch.from_numpy(synth_dataset.train_seqs[:8].astype(np.int64))
    c = torch.from_numpy(synth_dataset.train_cands[:8].astype(np.int64))
    ctx = torch.from_numpy(synth_dataset.windows(synth_dataset.train_user[:8].astype(np.int64),
                                                 synth_dataset.train_time[:8].astype(np.int64), model.context_len))
    scorer = PositionScorer(model).eval()  # eval: no dropout, same scores twice
    scorer.offline = True
    scorer.train(False)
    assert scorer(s, c, context=ctx).shape == (8, c.shape[1])  # offline rows only while training
    model.eval()
    scorer.training = True
    both = scorer(s, c, context=ctx)
    none = model.score_update(s, c, torch.zeros(8, model.update_floats(s.shape[1])))
    assert both.shape == (16, c.shape[1])
    assert torch.allclose(both[:8], model(s, c, context=ctx)) and torch.allclose(both[8:], none)
    assert not torch.allclose(both[:8], both[8:])
    pos = model.position_scores(s, c, context=ctx)  # [B, L, C]
    dev = model.device.position_scores(s, c)
    last = (s != 0).sum(1) - 1
    for b in range(8):
        t = int(last[b])
        assert torch.allclose(pos[b, :t], dev[b, :t]) and torch.allclose(pos[b, t], both[b], atol=1e-5)


def test_pipeline_refuses_a_window_longer_than_the_dataset_and_trains_on_its_own(synth_dataset_dir, tmp_path):
    before = _tree(synth_dataset_dir)
    code, out, err = run_inprocess("pipeline", "--data", synth_dataset_dir, "--seq-len", "50", "--out",
                                   tmp_path / "p")
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "longer than the 10-click windows" in lines[0], lines
    assert not (tmp_path / "p").exists() and _tree(synth_dataset_dir) == before
    code, out, _ = run_inprocess("pipeline", "--data", synth_dataset_dir, "--out", tmp_path / "p", "--dry-run")
    assert code == 0 and "--seq-len 10" in out and "--seq-len 25" not in out  # the dataset's own window
    code, out, _ = run_inprocess("pipeline", "--out", tmp_path / "p", "--dry-run")
    synth = " ".join(out.split()).split("data synth", 1)[1].split("data: ")[0].split(" train ")[0]
    assert code == 0 and "--seq-len 25" in synth, synth


@pytest.mark.slow
def test_seq_len_50_end_to_end(tmp_path):
    """prepare (synth) -> train -> eval -> export -> verify -> bench with 50-click windows, the literature's."""
    data, run, art = tmp_path / "d50", tmp_path / "sasrec", tmp_path / "art"
    cli("data", "synth", "--out", data, "--users", 150, "--items", 200, "--seq-len", 50)
    assert json.loads((data / "dataset.json").read_text())["seq_len"] == 50
    cli("train", "sasrec", "--data", data, "--out", run, "--epochs", 1, "--threads", 1, "--negatives", 16)
    metrics = json.loads((run / "metrics.json").read_text())
    out = json.loads(cli("eval", run, "--data", data, "--json").stdout)
    assert out["metrics"] == metrics["test"]
    cli("export", run, "--format", "onnx,executorch", "--seq-len", 50, "--out", art)
    m = json.loads((art / "manifest.json").read_text())
    assert all(r["parity"]["pass"] for r in m["artifacts"])
    assert {tuple(i["shape"]) for r in m["artifacts"] for i in r["inputs"] if i["name"] == "items"} == {(1, 50)}
    cli("verify", art)
    cli("bench", art, "--seq-len", 50, "--runs", 3, "--warmup", 1, "--budget", "none", "--json", tmp_path / "b.json")
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert rows and all(r["status"] == "ok" and r["seq_len"] == 50 for r in rows)
