"""`toolkit train MODEL`: train a recommender (or, with MODEL=gate, the request gate) into a run dir."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer

from toolkit.cli.common import check_number, check_out, check_seed, check_threads, console, metrics_table, parse_config
from toolkit.errors import Interrupted, ToolkitError

TRAINABLE = ("scn", "cocorrrec", "duet", "gru4rec", "sasrec", "din", "gate", "pop", "cooc")
COUNTS = ("pop", "cooc")  # non-learned baselines: counted, not trained


def train(
    model: str = typer.Argument(..., help="scn, cocorrrec, duet, gru4rec, sasrec, din, gate, or the non-learned "
                                "baselines pop and cooc"),
    data: Path = typer.Option(..., "--data", help="dataset dir from `toolkit data prepare|synth`"),
    out: Path = typer.Option(..., "--out", help="run dir to write"),
    base_run: Optional[Path] = typer.Option(None, "--model", help="gate only: the trained cocorrrec or duet run"),
    epochs: int = typer.Option(100, help="epoch ceiling (best one chosen on validation; see --patience)"),
    patience: Optional[int] = typer.Option(
        5, help="stop after N epochs without a better validation NDCG@10 (0 is refused; --no-patience: run "
                "every epoch)"),
    no_patience: bool = typer.Option(False, "--no-patience", help="train exactly --epochs epochs"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="comma-separated seeds, e.g. 0,1,2: one run per "
                                        "seed in OUT/seed-S plus OUT/seeds.json with mean and std"),
    batch_size: int = typer.Option(1024, help="rows per optimisation step"),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate [default: the recipe's, 3e-3; paper 1e-3; "
                                       "the gate 1e-3]"),
    weight_decay: float = typer.Option(0.0, help="Adam weight decay"),
    seed: int = typer.Option(0, help="seed for init, shuffling and dropout"),
    threads: Optional[int] = typer.Option(None, help="torch threads (default: torch's choice)"),
    config: Optional[list[str]] = typer.Option(None, "--config", help="model config override key=value (repeatable)"),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="default (chosen on validation: fresh negatives "
                                         "every step, sampled softmax, a loss at every position) or paper (the "
                                         "dataset's fixed 1:4 negatives, BCE, last position)"),
    negatives: Optional[int] = typer.Option(None, "--negatives", help="negatives per positive (over the recipe)"),
    loss: Optional[str] = typer.Option(None, "--loss", help="bce or ce (sampled softmax), over the recipe"),
    positions: Optional[str] = typer.Option(None, "--positions", help="last or all (every prefix predicts its "
                                            "next click), over the recipe"),
    resample: Optional[bool] = typer.Option(None, "--resample/--fixed-negatives", help="fresh negatives every "
                                            "step, or the dataset's fixed ones (over the recipe)"),
    sweep: Optional[list[str]] = typer.Option(None, "--sweep", help="key=v1,v2 (repeatable): one run per grid "
                                              "point in OUT/<point>, the best on validation named in "
                                              "OUT/sweep.json; keys: lr, weight_decay, batch_size, negatives, "
                                              "loss, positions, resample, or a model config key"),
    init: Optional[Path] = typer.Option(None, "--init", help="cocorrrec/duet: start the device part from a trained "
                                        "run of the device model (scn, or duet's backbone): two-stage training"),
    freeze_device: bool = typer.Option(False, "--freeze-device", help="with --init: train only the cloud side, so "
                                       "'no update' stays exactly the --init run"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run from its last checkpoint"),
    force: bool = typer.Option(False, "--force", help="replace an existing run dir"),
    device: str = typer.Option("cpu", "--device", help="cpu (default), cuda, or auto (cuda when present)"),
    sparse_embeddings: bool = typer.Option(
        False, "--sparse-embeddings", help="sparse item-table gradients + row-wise Adam (pays off from ~100k items; "
        "changes results: untouched rows keep their Adam moments)"),
    nproc: int = typer.Option(1, "--nproc", help="data-parallel workers on this machine (torchrun + DDP; the "
                              "global batch stays --batch-size)"),
    nnodes: int = typer.Option(1, "--nnodes", help="machines taking part (torchrun --nnodes)"),
    node_rank: int = typer.Option(0, "--node-rank", help="this machine's rank, 0..nnodes-1 (torchrun --node-rank)"),
    master_addr: str = typer.Option("127.0.0.1", "--master-addr", help="address of node rank 0 (torchrun)"),
    master_port: Optional[int] = typer.Option(None, "--master-port", help="rendezvous port on node rank 0 "
                                              "(default: a free port on one machine, 29500 on several)"),
    oversubscribe: bool = typer.Option(False, "--oversubscribe", help="allow --nproc above the available cores"),
    connect_timeout: float = typer.Option(30.0, "--connect-timeout", help="seconds to reach the rendezvous "
                                          "before giving up with one line"),
) -> None:
    if model not in TRAINABLE:
        raise ToolkitError(f"unknown model '{model}' (valid: {', '.join(TRAINABLE)})")
    # ---- every flag checked before torch is imported or a dir is touched ----
    check_number(epochs, "--epochs", lo=1, hi=1_000_000)
    check_number(batch_size, "--batch-size", lo=1, hi=2**31 - 1)
    check_number(lr, "--lr", lo=0, lo_open=True, hi=1e6)
    check_number(weight_decay, "--weight-decay", lo=0, hi=1e6)
    check_seed(seed)
    check_threads(threads)
    check_out(out)
    recipe_over = {"negatives": negatives, "loss": loss, "positions": positions, "resample": resample}
    if model in COUNTS or model == "gate":
        _refuse_for_counts(model, recipe=recipe, recipe_over=recipe_over, sweep=sweep, seeds=seeds, init=init,
                           freeze_device=freeze_device, resume=resume, nproc=nproc, nnodes=nnodes, config=config)
    from toolkit.train.recipes import resolve_recipe

    resolve_recipe(recipe or "default", recipe_over)  # one line before any heavy import
    grid = None
    if sweep:
        from toolkit.train.sweep import parse_sweep

        grid = parse_sweep(sweep)
        if seeds is not None or resume or init is not None or nproc != 1 or nnodes != 1:
            raise ToolkitError("--sweep trains one seed per point in this process; pick a setting, then train it "
                               "with --seeds (no --resume, --init or --nproc with --sweep)")
    if patience is not None and patience < 1:
        raise ToolkitError(f"--patience must be >= 1 epoch, got {patience} (use --no-patience to run every epoch)")
    seed_list = parse_seeds(seeds) if seeds is not None else None
    if seed_list is not None and (model == "gate" or resume):
        raise ToolkitError("--seeds trains recommenders from scratch; it does not combine with gate or --resume")
    cfg = parse_config(config)
    from toolkit.train.warm_start import check_init_flags

    check_init_flags(model, init, freeze_device)
    if init is not None:
        if seed_list is not None:
            raise ToolkitError("--init names one device run; train one run per seed (each --init its own seed's run)")
        if not (init / "model.json").is_file():
            raise ToolkitError(f"--init {init}: not a run dir (no model.json)")
    if model == "duet":
        from toolkit.models.registry import check_duet_config

        check_duet_config(cfg)
    from toolkit.rundir import check_inputs, check_run_dir, writing
    from toolkit.train.distributed import LaunchRequest, check_flags, check_request

    req = LaunchRequest(nproc, nnodes, node_rank, master_addr, master_port, oversubscribe, connect_timeout)
    check_flags(req)  # every distributed flag, whatever --nproc is
    if device not in ("cpu", "cuda", "auto"):
        raise ToolkitError(f"unknown --device '{device}' (valid: cpu, cuda, auto)")
    if req.distributed and seed_list is not None:
        raise ToolkitError("--nproc/--nnodes train one run; --seeds runs its seeds in one process")
    if model == "gate":
        if base_run is None:
            raise ToolkitError("`toolkit train gate` needs --model RUN (a trained cocorrrec or duet run)")
        if resume:
            raise ToolkitError("--resume applies to recommenders; the gate trains in one go (re-run it with --force)")
    # ---- every input checked before the run dir is touched (and before torch): nothing is lost on bad input ----
    inputs = {"dataset": data, "base run (--model)": base_run, "--init run": init}
    if req.node_rank == 0:  # node rank 0 owns the run dir (the others may share its filesystem)
        check_run_dir(out, resume, force, inputs)
    check_inputs(model, data, base_run, init, cfg)
    from toolkit.data import load_dataset

    ds = load_dataset(data)
    from toolkit.train.loop import resolve_device

    device = resolve_device(device)
    if req.distributed:
        req = check_request(req, device)
        if batch_size < req.nproc * req.nnodes:
            raise ToolkitError(f"--batch-size {batch_size} is smaller than the {req.nproc * req.nnodes} workers")
    from toolkit.rundir import RunDir

    rd = RunDir(out, "remote", out)
    try:
        with (writing(out, resume, force, inputs) if req.node_rank == 0 else contextlib.nullcontext(rd)) as rd:
            metrics = _train_into(rd.path, model, ds, out, base_run, req, epochs, no_patience, patience, batch_size,
                                  lr, weight_decay, seed, threads, cfg, device, sparse_embeddings, init,
                                  freeze_device, seed_list, resume, recipe, recipe_over, grid)
    except KeyboardInterrupt:
        raise Interrupted(rd.interrupted_line(f"toolkit train {model} --data {data} --out {out} --resume")
                          ) from None
    if metrics is None:
        return
    if seed_list is not None:
        console.print(seeds_table(model, metrics))
        console.print(f"runs written to {out}/seed-*; mean and std in {out / 'seeds.json'}")
        return
    console.print(metrics_table(f"{model}: best epoch {metrics['best_epoch']} of {metrics['epochs_run']} "
                                f"({metrics['train_seconds']:.1f}s training)",
                                {"valid": metrics["valid"], "test": metrics["test"]}))
    console.print(f"run written to {out} (model.json, {out / 'weights.safetensors'}, metrics.json)")


def _train_into(run: Path, model, ds, out, base_run, req, epochs, no_patience, patience, batch_size, lr,
                weight_decay, seed, threads, cfg, device, sparse_embeddings, init, freeze_device, seed_list,
                resume, recipe, recipe_over, grid) -> dict | None:
    """Train into `run` (the run dir, or the staging dir of a forced rewrite of `out`); the metrics to print, or
    None when this command has printed all it prints."""
    if model in COUNTS:
        from toolkit.train.counts import fit_run

        metrics = fit_run(model, ds, run)
        console.print(metrics_table(f"{model}: counted on the training rows ({metrics['train_seconds']:.1f}s)",
                                    {"valid": metrics["valid"], "test": metrics["test"]}))
        console.print(f"run written to {out} (model.json, {out / 'weights.safetensors'}, metrics.json)")
        return None
    if model == "gate":
        from toolkit.gate.train import train_gate

        gate_args = dict(epochs=epochs, batch_size=batch_size, lr=1e-3 if lr is None else lr, seed=seed,
                         threads=threads, config=cfg)
        if req.distributed:
            from toolkit.train.distributed import available_cores, launch

            if threads is None:  # share this machine's cores between the workers
                gate_args["threads"] = max(1, available_cores() // req.nproc)
            launch(req, {"model": "gate", "data": str(ds.path.resolve()), "out": str(run.resolve()),
                         "base_run": str(Path(base_run).resolve()), "device": "cpu", "gate": gate_args}, run)  # gloo
            if req.node_rank != 0:
                console.print(f"node {req.node_rank}: workers finished (node rank 0 holds the run dir)")
            return None
        train_gate(ds, base_run, run, console=console, shown_as=out, **gate_args)
        return None
    from toolkit.train import TrainSettings
    from toolkit.train import train as run_training

    settings = TrainSettings(epochs=epochs, patience=None if no_patience else patience, batch_size=batch_size,
                             lr=lr, weight_decay=weight_decay, seed=seed, threads=threads, config=cfg,
                             device=device, sparse_embeddings=sparse_embeddings,
                             init_run=None if init is None else str(init.resolve()), freeze_device=freeze_device,
                             recipe=recipe or "default", recipe_overrides={k: v for k, v in recipe_over.items()
                                                                           if v is not None})
    if grid is not None:
        from toolkit.train.sweep import check_points, run_sweep

        summary = run_sweep(model, ds, run, check_points(model, ds.n_items, settings, grid), grid, console=console)
        console.print(sweep_table(model, summary))
        console.print(f"runs written to {out}/<point>; picked on validation: {out / summary['best']} "
                      f"({out / 'sweep.json'})")
        return None
    if seed_list is not None:
        from toolkit.train.seeds import train_seeds

        return train_seeds(model, ds, run, settings, seed_list, console=console)
    if req.distributed:
        metrics = _train_distributed(req, model, ds, run, settings, resume)
        if metrics is None:
            console.print(f"node {req.node_rank}: workers finished (node rank 0 holds the run dir)")
        return metrics
    return run_training(model, ds, run, settings, resume=resume, console=console)


def _train_distributed(req, model: str, ds, out: Path, settings, resume: bool) -> dict | None:
    """Launch the workers; metrics.json of the finished run (None on nodes other than rank 0)."""
    from dataclasses import asdict

    from toolkit.io import read_json
    from toolkit.train.distributed import available_cores, launch

    if settings.threads is None:  # share this machine's cores between the workers
        settings.threads = max(1, available_cores() // req.nproc)
    spec = {"model": model, "data": str(ds.path.resolve()), "out": str(out.resolve()), "resume": resume,
            "device": settings.device, "settings": asdict(settings)}
    launch(req, spec, out)
    if req.node_rank != 0:
        return None
    return read_json(out / "metrics.json", "metrics")


def _refuse_for_counts(model: str, **given) -> None:
    """Flags that mean nothing to a count baseline (or, for the recipe ones, to the gate): one line naming them."""
    meaningless = {"--recipe": given["recipe"] is not None, "--sweep": bool(given["sweep"]),
                   **{f"--{k}": v is not None for k, v in given["recipe_over"].items()}}
    if model in COUNTS:
        meaningless.update({"--seeds": given["seeds"] is not None, "--init": given["init"] is not None,
                            "--freeze-device": given["freeze_device"], "--resume": given["resume"],
                            "--nproc": given["nproc"] != 1, "--nnodes": given["nnodes"] != 1,
                            "--config": bool(given["config"])})
    named = [flag for flag, on in meaningless.items() if on]
    if named:
        what = "a count baseline: nothing is trained" if model in COUNTS else "the gate (it has its own loss)"
        raise ToolkitError(f"{', '.join(named)} mean nothing to {model}, {what}")


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


def parse_seeds(value: str) -> list[int]:
    """`0,1,2` -> [0, 1, 2]: distinct non-negative integers, at least one."""
    parts = [p.strip() for p in value.split(",")]
    if not parts or any(not p.isdigit() for p in parts):
        raise ToolkitError(f"--seeds expects comma-separated non-negative integers like 0,1,2, got '{value}'")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        raise ToolkitError(f"--seeds lists a seed twice: '{value}'")
    return seeds


def seeds_table(model: str, summary: dict):
    from rich.table import Table

    keys = ["uauc", "ndcg@5", "ndcg@10", "ndcg@20", "hr@5", "hr@10", "hr@20"]
    t = Table(title=f"{model}: test, mean ± std over seeds {summary['seeds']}")
    for k in keys:
        t.add_column(k, justify="right")
    t.add_row(*(f"{summary['test_mean'][k]:.4f}±{summary['test_std'][k]:.4f}" for k in keys))
    return t
