"""`toolkit train MODEL`: train a recommender (or, with MODEL=gate, the request gate) into a run dir.

Flags in, one `toolkit.train.api.run_training` call, tables out: what trains and which flag combinations are
refused is decided there. The flags are declared once, below, so the command reads as its list of parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from toolkit.cli.common import console, metrics_table

_Model = Annotated[str, typer.Argument(
    help="scn, cocorrrec, duet, gru4rec, sasrec, din, gate, or the non-learned baselines pop and cooc")]
_Data = Annotated[Path, typer.Option("--data", help="dataset dir from `toolkit data prepare|synth`")]
_Out = Annotated[Path, typer.Option("--out", help="run dir to write")]
_BaseRun = Annotated[Optional[Path], typer.Option("--model", help="gate only: the trained cocorrrec or duet run")]
_Epochs = Annotated[int, typer.Option(help="epoch ceiling (best one chosen on validation; see --patience)")]
_Patience = Annotated[Optional[int], typer.Option(
    help="stop after N epochs without a better validation NDCG@10 (0 is refused; --no-patience: run every "
         "epoch)")]
_NoPatience = Annotated[bool, typer.Option("--no-patience", help="train exactly --epochs epochs")]
_Seeds = Annotated[Optional[str], typer.Option(
    "--seeds", help="comma-separated seeds, e.g. 0,1,2: one run per seed in OUT/seed-S plus OUT/seeds.json with "
                    "mean and std")]
_BatchSize = Annotated[int, typer.Option(help="rows per optimisation step")]
_Lr = Annotated[Optional[float], typer.Option(
    help="Adam learning rate [default: the recipe's, 3e-3; paper 1e-3; the gate 1e-3]")]
_WeightDecay = Annotated[float, typer.Option(help="Adam weight decay")]
_Seed = Annotated[int, typer.Option(help="seed for init, shuffling and dropout")]
_Threads = Annotated[Optional[int], typer.Option(help="torch threads (default: torch's choice)")]
_Config = Annotated[Optional[list[str]], typer.Option("--config", help="model config override key=value (repeatable)")]
_Recipe = Annotated[Optional[str], typer.Option(
    "--recipe", help="default (chosen on validation: fresh negatives every step, sampled softmax, a loss at "
                     "every position) or paper (the dataset's fixed 1:4 negatives, BCE, last position)")]
_Negatives = Annotated[Optional[int], typer.Option("--negatives", help="negatives per positive (over the recipe)")]
_Loss = Annotated[Optional[str], typer.Option("--loss", help="bce or ce (sampled softmax), over the recipe")]
_Positions = Annotated[Optional[str], typer.Option(
    "--positions", help="last or all (every prefix predicts its next click), over the recipe")]
_Resample = Annotated[Optional[bool], typer.Option(
    "--resample/--fixed-negatives", help="fresh negatives every step, or the dataset's fixed ones (over the "
                                         "recipe)")]
_Sweep = Annotated[Optional[list[str]], typer.Option(
    "--sweep", help="key=v1,v2 (repeatable): one run per grid point in OUT/<point>, the best on validation named"
                    " in OUT/sweep.json; keys: lr, weight_decay, batch_size, negatives, loss, positions, "
                    "resample, or a model config key")]
_Init = Annotated[Optional[Path], typer.Option(
    "--init", help="cocorrrec/duet: start the device part from a trained run of the device model (scn, or duet's"
                   " backbone): two-stage training")]
_FreezeDevice = Annotated[bool, typer.Option(
    "--freeze-device", help="with --init: train only the cloud side, so 'no update' stays exactly the --init run")]
_Resume = Annotated[bool, typer.Option("--resume", help="continue an interrupted run from its last checkpoint "
                                        "(with --seeds: each seed from its own)")]
_Force = Annotated[bool, typer.Option("--force", help="replace an existing run dir")]
_Device = Annotated[str, typer.Option("--device", help="cpu (default), cuda, or auto (cuda when present)")]
_SparseEmbeddings = Annotated[bool, typer.Option(
    "--sparse-embeddings", help="sparse item-table gradients + row-wise Adam (pays off from ~100k items; changes"
                                " results: untouched rows keep their Adam moments)")]
_Nproc = Annotated[int, typer.Option(
    "--nproc", help="data-parallel workers on this machine (torchrun + DDP; the global batch stays --batch-size)")]
_Nnodes = Annotated[int, typer.Option("--nnodes", help="machines taking part (torchrun --nnodes)")]
_NodeRank = Annotated[int, typer.Option("--node-rank", help="this machine's rank, 0..nnodes-1 (torchrun --node-rank)")]
_MasterAddr = Annotated[str, typer.Option("--master-addr", help="address of node rank 0 (torchrun)")]
_MasterPort = Annotated[Optional[int], typer.Option(
    "--master-port", help="rendezvous port on node rank 0 (default: a free port on one machine, 29500 on "
                          "several)")]
_Oversubscribe = Annotated[bool, typer.Option("--oversubscribe", help="allow --nproc above the available cores")]
_ConnectTimeout = Annotated[float, typer.Option(
    "--connect-timeout", help="seconds to reach the rendezvous before giving up with one line")]


def train(
    model: _Model,
    data: _Data,
    out: _Out,
    base_run: _BaseRun = None,
    epochs: _Epochs = 100,
    patience: _Patience = 5,
    no_patience: _NoPatience = False,
    seeds: _Seeds = None,
    batch_size: _BatchSize = 1024,
    lr: _Lr = None,
    weight_decay: _WeightDecay = 0.0,
    seed: _Seed = 0,
    threads: _Threads = None,
    config: _Config = None,
    recipe: _Recipe = None,
    negatives: _Negatives = None,
    loss: _Loss = None,
    positions: _Positions = None,
    resample: _Resample = None,
    sweep: _Sweep = None,
    init: _Init = None,
    freeze_device: _FreezeDevice = False,
    resume: _Resume = False,
    force: _Force = False,
    device: _Device = "cpu",
    sparse_embeddings: _SparseEmbeddings = False,
    nproc: _Nproc = 1,
    nnodes: _Nnodes = 1,
    node_rank: _NodeRank = 0,
    master_addr: _MasterAddr = "127.0.0.1",
    master_port: _MasterPort = None,
    oversubscribe: _Oversubscribe = False,
    connect_timeout: _ConnectTimeout = 30.0,
) -> None:
    from toolkit.cli.reporter import ConsoleReporter
    from toolkit.train.api import TrainRequest, run_training

    request = TrainRequest(
        model=model, data=data, out=out, base_run=base_run, epochs=epochs, patience=patience,
        no_patience=no_patience, seeds=seeds, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
        threads=threads, config=config, recipe=recipe, negatives=negatives, loss=loss, positions=positions,
        resample=resample, sweep=sweep, init=init, freeze_device=freeze_device, resume=resume, force=force,
        device=device, sparse_embeddings=sparse_embeddings, nproc=nproc, nnodes=nnodes, node_rank=node_rank,
        master_addr=master_addr, master_port=master_port, oversubscribe=oversubscribe,
        connect_timeout=connect_timeout)
    run_training(request, ConsoleReporter(console), report=_report)


def _report(o) -> None:
    """Print a `TrainOutcome`: the metrics table, or the sweep / seeds summary, and where the runs are."""
    out = o.out
    if o.kind == "node":
        console.print(f"node {o.node_rank}: workers finished (node rank 0 holds the run dir)")
        return
    if o.kind == "gate":
        show_gate(o.result, out)
        return
    if o.kind == "sweep":
        console.print(sweep_table(o.model, o.result))
        console.print(f"runs written to {out}/<point>; picked on validation: {out / o.result['best']} "
                      f"({out / 'sweep.json'})")
        return
    if o.kind == "seeds":
        console.print(seeds_table(o.model, o.result))
        console.print(f"runs written to {out}/seed-*; mean and std in {out / 'seeds.json'}")
        return
    m = o.result
    title = (f"{o.model}: counted on the training rows ({m['train_seconds']:.1f}s)" if o.kind == "counted" else
             f"{o.model}: best epoch {m['best_epoch']} of {m['epochs_run']} ({m['train_seconds']:.1f}s training)")
    console.print(metrics_table(title, {"valid": m["valid"], "test": m["test"]}))
    console.print(f"run written to {out} (model.json, {out / 'weights.safetensors'}, metrics.json)")


def show_gate(trained, shown: Path) -> None:
    """A trained gate's summary table and the command that calibrates it; `shown`: the run dir as the user named
    it (the gate may have been written to a staging dir beside it)."""
    from rich.table import Table

    from toolkit.models.runs import WEIGHTS

    v, counts = trained.metrics["valid"], trained.params
    t = Table(title=f"gate: {counts['device_params']:,} device parameters "
                    f"(+{counts['training_only_params']:,} training-only posterior)")
    t.add_column("validation")
    t.add_column("MRD only", justify="right")
    t.add_column("MRD + DM (joint)", justify="right")
    t.add_row("cross-entropy (soft labels)", f"{v['bce_mrd_only']:.4f}", f"{v['bce_joint']:.4f}")
    auc = v["auc_all_rows_right"]
    fmt = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731
    t.add_row("AUC vs 'all 5 rows right'", fmt(auc["mrd_only"]), fmt(auc["joint"]))
    m = v["auc_stale_as_good_as_fresh"]
    t.add_row("AUC vs 'stale ranks as well as fresh'", fmt(m["mrd_only"]), fmt(m["joint"]))
    t.add_row("gain share at 10% requests (random 0.10)", "", fmt(v["gain_share_at_10pct"]))
    console.print(t)
    console.print(f"gate written to {shown} (model.json, {shown / WEIGHTS}, metrics.json); next: "
                  f"toolkit gate calibrate {shown} --data {trained.dataset} --budget 0.1")


def sweep_table(model: str, summary: dict):
    from rich.table import Table

    t = Table(title=f"{model}: sweep, picked on {summary['selected_on']}")
    for c in ("point", "valid ndcg@10", "test ndcg@10", "test hr@10", "best epoch"):
        t.add_column(c, justify="left" if c == "point" else "right")
    for p in summary["points"]:
        mark = " *" if p["run"] == summary["best"] else ""
        t.add_row(p["run"] + mark, f"{p['valid']['ndcg@10']:.4f}", f"{p['test']['ndcg@10']:.4f}",
                  f"{p['test']['hr@10']:.4f}", str(p["best_epoch"]))
    return t


def seeds_table(model: str, summary: dict):
    from rich.table import Table

    keys = ["uauc", "ndcg@5", "ndcg@10", "ndcg@20", "hr@5", "hr@10", "hr@20"]
    t = Table(title=f"{model}: test, mean ± std over seeds {summary['seeds']}")
    for k in keys:
        t.add_column(k, justify="right")
    t.add_row(*(f"{summary['test_mean'][k]:.4f}±{summary['test_std'][k]:.4f}" for k in keys))
    return t
