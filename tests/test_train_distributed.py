"""Data-parallel training through torchrun + DDP: real 2-process runs on tiny data, failures, bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import TOOLKIT, cli
from safetensors.torch import load_file

from toolkit.train.distributed import WORKER, Dist
from toolkit.train.optim import RowSparseAdam

# Tolerance of the 2-worker vs 1-worker comparison. The two runs do the same float32 arithmetic except the order
# in which a batch's per-row gradients are summed (each worker sums its half, then gloo adds the two halves), so
# they differ by float32 rounding (~1e-7 relative per step), which Adam carries into the weights over the steps.
# Measured here: weights within ~1e-6, metrics identical; asserted with margin: weights 1e-4, metrics 1e-3
# (a metric can move by one rank flip of 1/n_users only if two scores tie within float error).
WEIGHT_ATOL = 1e-4
METRIC_ATOL = 1e-3


def _train(data, out, *extra, check_rc=0):
    # the paper recipe: no dropout (its masks are drawn per worker); with the default recipe (CE over 64 fresh
    # negatives) 2 workers drifted 0.018 from 1 in weights after 2 epochs at lr 1e-3, not yet explained
    return cli("train", "scn", "--data", data, "--out", out, "--epochs", "2", "--batch-size", "96", "--seed", "3",
               "--threads", "1", "--recipe", "paper", *extra, check_rc=check_rc)


def test_local_slices_cover_the_global_batch():
    for n in (1, 2, 7, 96, 97):
        for world in (1, 2, 3):
            parts = [Dist(r, world, r).local_slice(n) for r in range(world)]
            got = np.concatenate([np.arange(n)[p] for p in parts])
            assert got.tolist() == list(range(n))
            sizes = [p.stop - p.start for p in parts]
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.slow  # real 2-process torchrun + a 1-process run
def test_two_workers_reproduce_one_worker(synth_dataset_dir, tmp_path):
    _train(synth_dataset_dir, tmp_path / "one")
    proc = _train(synth_dataset_dir, tmp_path / "two", "--nproc", "2")
    assert "best epoch" in proc.stdout
    one, two = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("one", "two"))
    for split in ("valid", "test"):
        for k, v in one[split].items():
            assert abs(two[split][k] - v) <= METRIC_ATOL, (split, k)
    assert one["best_epoch"] == two["best_epoch"]
    for h1, h2 in zip(one["history"], two["history"]):
        assert h1["loss"] == pytest.approx(h2["loss"], rel=1e-5)
    w1, w2 = (load_file(str(tmp_path / r / "weights.safetensors")) for r in ("one", "two"))
    assert w1.keys() == w2.keys()
    worst = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert worst <= WEIGHT_ATOL
    desc = json.loads((tmp_path / "two" / "model.json").read_text())
    assert desc["train"]["workers"] == 2 and desc["train"]["device"] == "cpu"
    assert sorted(p.name for p in (tmp_path / "two").iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in (tmp_path / "one").iterdir() if not p.name.startswith("."))


def _worker_pids(launcher_pid: int) -> dict[int, int]:
    """rank -> pid of the training workers below the launcher (read from /proc, as a user would find them)."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if WORKER.encode() not in cmd or "TORCHELASTIC_RUN_ID=toolkit-train".encode() not in env:
            continue
        ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        if ppid != launcher_pid:
            continue
        rank = next(int(e.split(b"=")[1]) for e in env if e.startswith(b"RANK="))
        found[rank] = int(d.name)
    return found


@pytest.mark.slow  # real 2-process torchrun runs
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers through /proc")
def test_a_killed_worker_fails_in_one_line_and_resume_finishes(synth_dataset_dir, tmp_path):
    run = tmp_path / "run"
    args = [*TOOLKIT, "train", "scn", "--data", str(synth_dataset_dir), "--out", str(run), "--epochs", "40",
            "--batch-size", "32", "--seed", "3", "--threads", "1", "--nproc", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoint.pt").exists():  # epoch 1 is done and checkpointed
            assert proc.poll() is None and time.monotonic() < deadline, "training ended before a checkpoint"
            time.sleep(0.1)
        pids = _worker_pids(proc.pid)
        assert sorted(pids) == [0, 1]
        os.kill(pids[1], signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "worker rank 1" in lines[0] and "SIGKILL" in lines[0] and "--resume" in lines[0]
    assert "Traceback" not in out + err
    assert not (run / "metrics.json").exists()
    finished = sum(line.startswith("scn epoch ") for line in out.splitlines())  # rank 0's per-epoch lines
    assert finished >= 1
    done = cli("train", "scn", "--data", synth_dataset_dir, "--out", run, "--epochs", finished + 1,
               "--batch-size", "32", "--seed", "3", "--threads", "1", "--nproc", "2", "--resume")
    assert "resuming scn" in done.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, finished + 2))


def _one_line_error(proc, *needles):
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.slow  # launches real processes (rendezvous, ports)
def test_bad_launch_requests_are_one_line_and_leave_no_run_dir(synth_dataset_dir, tmp_path):
    run = tmp_path / "run"
    _one_line_error(_train(synth_dataset_dir, run, "--nproc", "0", check_rc=2), "--nproc must be >= 1")
    too_many = str(len(os.sched_getaffinity(0)) + 1)
    _one_line_error(_train(synth_dataset_dir, run, "--nproc", too_many, check_rc=2), "--oversubscribe")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        _one_line_error(_train(synth_dataset_dir, run, "--nproc", "2", "--master-port", port, check_rc=2),
                        f"--master-port {port} is in use")
    start = time.monotonic()
    closed = _free_port()
    _one_line_error(
        _train(synth_dataset_dir, run, "--nproc", "2", "--nnodes", "2", "--node-rank", "1", "--master-port", closed,
               "--connect-timeout", "2", check_rc=2),
        "cannot reach the rendezvous", "within 2 s")
    assert time.monotonic() - start < 60  # bounded, not a hang
    _one_line_error(_train(synth_dataset_dir, run, "--nproc", "2", "--master-addr", "192.0.2.1", check_rc=2),
                    "not an address of this machine")
    _one_line_error(_train(synth_dataset_dir, run, "--nproc", "2", "--master-addr", "no-such-host.invalid",
                           check_rc=2), "cannot resolve")
    _one_line_error(_train(synth_dataset_dir, run, "--device", "tpu", check_rc=2), "unknown --device 'tpu'")
    if not torch.cuda.is_available():
        _one_line_error(_train(synth_dataset_dir, run, "--device", "cuda", check_rc=2), "no CUDA device")
    assert not run.exists()


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_row_sparse_adam_is_adam_on_touched_rows():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 4, sparse=True)
    dense = torch.nn.Embedding(50, 4)
    dense.weight.data.copy_(emb.weight.data)
    extra = torch.nn.Parameter(torch.randn(4))
    extra2 = torch.nn.Parameter(extra.detach().clone())
    sparse_opt = RowSparseAdam([emb.weight, extra], lr=1e-2)
    dense_opt = torch.optim.Adam([dense.weight, extra2], lr=1e-2)
    rows = torch.tensor([3, 7, 7, 11])
    for _ in range(3):  # the same rows every step: row-wise Adam = Adam on them, the others stay put
        for opt, table, e in ((sparse_opt, emb, extra), (dense_opt, dense, extra2)):
            opt.zero_grad()
            (table(rows) * e).sum().backward()
            opt.step()
    assert torch.allclose(emb.weight[rows], dense.weight[rows], atol=1e-6)
    assert torch.allclose(extra, extra2, atol=1e-6)
    untouched = torch.ones(50, dtype=torch.bool)
    untouched[rows] = False
    before = dense.weight.detach()[untouched]  # dense Adam leaves zero-grad rows unchanged too (moments 0)
    assert torch.equal(emb.weight.detach()[untouched], before)
    assert set(sparse_opt.state_dict()["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}


@pytest.mark.slow  # a real 2-epoch training process
def test_sparse_embeddings_train_and_refuse_weight_decay(synth_dataset_dir, tmp_path):
    proc = _train(synth_dataset_dir, tmp_path / "sparse", "--sparse-embeddings")
    assert "best epoch" in proc.stdout
    desc = json.loads((tmp_path / "sparse" / "model.json").read_text())
    assert desc["train"]["sparse_embeddings"] is True
    _one_line_error(_train(synth_dataset_dir, tmp_path / "wd", "--sparse-embeddings", "--weight-decay", "0.1",
                           check_rc=2), "--weight-decay")


def test_training_reads_the_memory_mapped_layout_like_the_npz_one(tmp_path):
    """The same dataset in both layouts trains to the same weights (rows are gathered per step from a memmap)."""
    from toolkit.data import load_dataset
    from toolkit.data.protocol import to_csr
    from toolkit.data.store import save_dataset_csr
    from toolkit.train import TrainSettings, train

    rng = np.random.default_rng(5)
    ptr, items = to_csr([rng.choice(200, int(rng.integers(4, 14)), replace=False) + 1 for _ in range(80)])
    for layout in ("npz", "npy"):
        save_dataset_csr(tmp_path / layout, ptr, items, {"format": "test"}, 5, 0, n_items=200, layout=layout)
    npy = load_dataset(tmp_path / "npy")
    assert isinstance(npy.train_seqs, np.memmap)
    settings = TrainSettings(epochs=1, batch_size=64, threads=1)
    a = train("gru4rec", load_dataset(tmp_path / "npz"), tmp_path / "ra", settings)
    b = train("gru4rec", npy, tmp_path / "rb", settings)
    assert a["test"] == b["test"] and a["history"][0]["loss"] == b["history"][0]["loss"]
    e = cli("eval", tmp_path / "rb", "--data", tmp_path / "npy", "--device", "auto", "--json")
    assert json.loads(e.stdout)["metrics"] == b["test"]


@pytest.mark.slow  # real 2-node launch + a 1-process run
def test_two_nodes_on_one_machine_match_one_worker(synth_dataset_dir, tmp_path):
    """The multi-node command of the README, with both 'nodes' on this machine (static rendezvous over TCP)."""
    port = _free_port()
    common = ["train", "scn", "--data", str(synth_dataset_dir), "--out", str(tmp_path / "two"), "--epochs", "2",
              "--batch-size", "96", "--seed", "3", "--threads", "1", "--recipe", "paper", "--nproc", "1", "--nnodes", "2",
              "--master-addr", "127.0.0.1", "--master-port", port]
    node0 = subprocess.Popen([*TOOLKIT, *common, "--node-rank", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        node1 = cli(*common, "--node-rank", "1", "--connect-timeout", "60")
        out0, err0 = node0.communicate(timeout=300)
    finally:
        if node0.poll() is None:
            node0.kill()
    assert node0.returncode == 0, err0
    assert "node 1: workers finished" in node1.stdout
    _train(synth_dataset_dir, tmp_path / "one")
    one, two = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("one", "two"))
    for split in ("valid", "test"):
        for k, v in one[split].items():
            assert abs(two[split][k] - v) <= METRIC_ATOL, (split, k)
    assert json.loads((tmp_path / "two" / "model.json").read_text())["train"]["workers"] == 2


@pytest.mark.slow  # real 2-node launch
def test_a_node_with_another_dataset_is_refused(synth_dataset_dir, tmp_path):
    other = tmp_path / "other"
    cli("data", "synth", "--out", other, "--users", "150", "--items", "180", "--domains", "15", "--seq-len", "6",
        "--seed", "9")
    port = _free_port()
    common = ["train", "scn", "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "96", "--threads", "1",
              "--nproc", "1", "--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", port]
    node0 = subprocess.Popen([*TOOLKIT, *common, "--data", str(synth_dataset_dir), "--node-rank", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        node1 = cli(*common, "--data", other, "--node-rank", "1", "--connect-timeout", "60", check_rc=2)
        node0.communicate(timeout=300)
    finally:
        if node0.poll() is None:
            node0.kill()
    _one_line_error(node1, "worker rank 1", "is not rank 0's dataset")
    assert node0.returncode != 0


# ---------------------------------------------------------------------------------------------------------- the gate
def _train_gate(base, data, out, *extra, check_rc=0):
    return cli("train", "gate", "--model", base, "--data", data, "--out", out, "--epochs", "2", "--batch-size", "97",
               "--lr", "3e-3", "--seed", "3", "--threads", "1", "--config", "max_samples=1500", *extra,
               check_rc=check_rc)


@pytest.mark.slow
def test_two_worker_gate_reproduces_one_worker(synth_dataset, synth_dataset_dir, tmp_path):
    """DM, MRD and joint stages data-parallel: same weights (WEIGHT_ATOL), same selected epochs and metrics
    (METRIC_ATOL), for the reasons given at the top (only the per-batch gradient summation order differs; the DM's
    noise is drawn for the global batch on every worker and sliced)."""
    from toolkit.train import TrainSettings, train

    base = tmp_path / "base"
    train("cocorrrec", synth_dataset, base, TrainSettings(epochs=1, batch_size=256, lr=3e-3, threads=1,
                                                          config={"dim": 16}))
    _train_gate(base, synth_dataset_dir, tmp_path / "one")
    proc = _train_gate(base, synth_dataset_dir, tmp_path / "two", "--nproc", "2")
    assert "gate written to" in proc.stdout
    one, two = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("one", "two"))
    for stage in ("dm", "mrd", "joint"):
        s1, s2 = one["stages"][stage], two["stages"][stage]
        assert s1["best_epoch"] == s2["best_epoch"], stage
        assert s1["best_valid_loss"] == pytest.approx(s2["best_valid_loss"], abs=METRIC_ATOL), stage
        assert len(s1["history"]) == len(s2["history"]) == (3 if stage == "joint" else 2)
        for h1, h2 in zip(s1["history"], s2["history"]):
            assert h1.get("loss", 0.0) == pytest.approx(h2.get("loss", 0.0), rel=1e-5), stage
            assert h1["valid_loss"] == pytest.approx(h2["valid_loss"], abs=METRIC_ATOL), stage
    flat = lambda d, p="": {f"{p}{k}": v for k0, v0 in d.items() for k, v in (  # noqa: E731
        flat(v0, f"{k0}.").items() if isinstance(v0, dict) else [(k0, v0)])}
    v1, v2 = flat(one["valid"]), flat(two["valid"])
    assert v1.keys() == v2.keys() and any(v is not None for v in v1.values())
    for k, v in v1.items():
        assert (v is None and v2[k] is None) or abs(v2[k] - v) <= METRIC_ATOL, k
    assert one["mrd_dataset"] == two["mrd_dataset"]  # every worker built the same MRD dataset as one process
    d1, d2 = (json.loads((tmp_path / r / "model.json").read_text())["train"] for r in ("one", "two"))
    assert "workers" not in d1 and d2["workers"] == 2
    w1, w2 = (load_file(str(tmp_path / r / "weights.safetensors")) for r in ("one", "two"))
    assert w1.keys() == w2.keys()
    worst = max(float((w1[k].double() - w2[k].double()).abs().max()) for k in w1)
    assert worst <= WEIGHT_ATOL
    assert any(float((w1[k].double() - torch.zeros_like(w1[k], dtype=torch.float64)).abs().max()) > 0 for k in w1)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


@pytest.mark.slow
def test_two_worker_gate_failure_is_one_line_and_leaves_no_run_dir(synth_dataset_dir, tmp_path):
    out = tmp_path / "gate"
    _one_line_error(_train_gate(tmp_path / "no-such-run", synth_dataset_dir, out, "--nproc", "2", check_rc=2),
                    "no-such-run")  # a missing run is refused before any worker starts
    broken = tmp_path / "broken-run"  # passes the launcher's light checks, fails inside every worker
    broken.mkdir()
    (broken / "model.json").write_text(json.dumps({"model": "cocorrrec"}))
    proc = _train_gate(broken, synth_dataset_dir, out, "--nproc", "2", check_rc=2)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "worker rank" in lines[0] and "broken-run" in lines[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not out.exists()
    for extra, needle in (((), "needs --model RUN"), (("--model", "x", "--resume"), "--resume applies to")):
        _one_line_error(cli("train", "gate", "--data", synth_dataset_dir, "--out", out, "--nproc", "2", *extra,
                            check_rc=2), needle)  # refused before any worker starts
        assert not out.exists()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers through /proc")
def test_a_killed_gate_worker_fails_in_one_line_and_leaves_no_run_dir(synth_dataset, synth_dataset_dir, tmp_path):
    from toolkit.train import TrainSettings, train

    base, out = tmp_path / "base", tmp_path / "gate"
    train("cocorrrec", synth_dataset, base, TrainSettings(epochs=1, batch_size=256, lr=3e-3, threads=1,
                                                          config={"dim": 16}))
    args = [*TOOLKIT, "train", "gate", "--model", str(base), "--data", str(synth_dataset_dir), "--out", str(out),
            "--epochs", "500", "--batch-size", "16", "--threads", "1", "--nproc", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # rank 0's lines: the DM stage has finished an epoch
            if line.startswith("gate DM epoch 1"):
                break
        else:
            pytest.fail("the gate ended before its first DM epoch: " + proc.stderr.read())
        pids = _worker_pids(proc.pid)
        assert sorted(pids) == [0, 1]
        os.kill(pids[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "worker rank 1" in lines[0] and "SIGKILL" in lines[0] and "run it again" in lines[0], err
    assert "--resume" not in err and "Traceback" not in err
    assert not out.exists()
