"""`toolkit train` as one library call: a `TrainRequest` (the command's flags, unparsed) -> `run_training`.

Here so that the command only parses and prints: which stack trains (a recommender, the gate, a count baseline,
a sweep, several seeds, distributed workers) and which flag combinations are refused is decided in one place.
Every flag and input is checked before torch is imported or the run dir is touched, in the order the messages
have always come in; the heavy imports stay inside the functions for that reason.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from toolkit.checks import check_number, check_out, check_seed, check_threads, parse_config
from toolkit.errors import Interrupted, Terminated, ToolkitError
from toolkit.reporter import Reporter

TRAINABLE = ("scn", "cocorrrec", "duet", "gru4rec", "sasrec", "din", "gate", "pop", "cooc")
COUNTS = ("pop", "cooc")  # non-learned baselines: counted, not trained


@dataclass
class TrainRequest:
    """The flags of `toolkit train`, as given (names and defaults are the command's)."""

    model: str
    data: Path
    out: Path
    base_run: Optional[Path] = None
    epochs: int = 100
    patience: Optional[int] = 5
    no_patience: bool = False
    seeds: Optional[str] = None
    batch_size: int = 1024
    lr: Optional[float] = None
    weight_decay: float = 0.0
    seed: int = 0
    threads: Optional[int] = None
    config: Optional[list[str]] = None
    recipe: Optional[str] = None
    negatives: Optional[int] = None
    loss: Optional[str] = None
    positions: Optional[str] = None
    resample: Optional[bool] = None
    sweep: Optional[list[str]] = None
    init: Optional[Path] = None
    freeze_device: bool = False
    resume: bool = False
    force: bool = False
    device: str = "cpu"
    sparse_embeddings: bool = False
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: Optional[int] = None
    oversubscribe: bool = False
    connect_timeout: float = 30.0


@dataclass
class TrainOutcome:
    """What a finished command reports. kind: "counted" (a count baseline), "sweep", "seeds", "trained" (one run),
    "gate", or "node" (a worker node other than rank 0: the run dir is rank 0's)."""

    kind: str
    model: str
    out: Path
    result: Any = None  # metrics.json, the sweep / seeds summary, or the gate's GateTrained
    node_rank: int = 0


@dataclass
class _Checked:
    """What the checks derived from the request, handed on to the trainer."""

    recipe_over: dict
    grid: Any
    seed_list: Optional[list[int]]
    cfg: dict
    launch: Any  # train.distributed.LaunchRequest
    inputs: dict
    device: Any = None
    ds: Any = None


def run_training(r: TrainRequest, reporter: Reporter, report: Callable[[TrainOutcome], None]) -> None:
    """Check `r`, train into its run dir (progress to `reporter`), and hand the outcome to `report` once it is
    final (count baselines, sweeps, the gate and worker nodes report while the run dir is still being written)."""
    c = _check_flags(r)
    _check_inputs(r, c)
    from toolkit.rundir import RunDir, writing

    rd = RunDir(r.out, "remote", r.out)
    try:
        own = writing(r.out, r.resume, r.force, c.inputs) if c.launch.node_rank == 0 else contextlib.nullcontext(rd)
        with own as rd:
            outcome = _train_into(rd.path, r, c, reporter, report)
    except (KeyboardInterrupt, Terminated) as e:
        seeds = "" if r.seeds is None else f" --seeds {r.seeds}"
        line = rd.interrupted_line(f"toolkit train {r.model} --data {r.data} --out {r.out}{seeds} --resume")
        if isinstance(e, Terminated):
            e.kept = line  # the CLI says it beside "terminated"
            raise
        raise Interrupted(line) from None
    if outcome is not None:
        report(outcome)


def _check_flags(r: TrainRequest) -> _Checked:
    """Every flag, before torch is imported or a dir is touched."""
    if r.model not in TRAINABLE:
        raise ToolkitError(f"unknown model '{r.model}' (valid: {', '.join(TRAINABLE)})")
    check_number(r.epochs, "--epochs", lo=1, hi=1_000_000)
    check_number(r.batch_size, "--batch-size", lo=1, hi=2**31 - 1)
    check_number(r.lr, "--lr", lo=0, lo_open=True, hi=1e6)
    check_number(r.weight_decay, "--weight-decay", lo=0, hi=1e6)
    check_seed(r.seed)
    check_threads(r.threads)
    check_out(r.out)
    recipe_over = {"negatives": r.negatives, "loss": r.loss, "positions": r.positions, "resample": r.resample}
    if r.model in COUNTS or r.model == "gate":
        _refuse_for_counts(r, recipe_over)
    from toolkit.train.recipes import resolve_recipe

    resolve_recipe(r.recipe or "default", recipe_over)  # one line before any heavy import
    grid = None
    if r.sweep:
        from toolkit.train.sweep import parse_sweep

        grid = parse_sweep(r.sweep)
        if r.seeds is not None or r.resume or r.init is not None or r.nproc != 1 or r.nnodes != 1:
            raise ToolkitError("--sweep trains one seed per point in this process; pick a setting, then train it "
                               "with --seeds (no --resume, --init or --nproc with --sweep)")
    if r.patience is not None and r.patience < 1:
        raise ToolkitError(f"--patience must be >= 1 epoch, got {r.patience} (use --no-patience to run every epoch)")
    seed_list = parse_seeds(r.seeds) if r.seeds is not None else None
    if seed_list is not None and r.model == "gate":
        raise ToolkitError("--seeds trains recommenders; the gate takes one --seed")
    cfg = parse_config(r.config)
    from toolkit.train.warm_start import check_init_flags

    check_init_flags(r.model, r.init, r.freeze_device)
    if r.init is not None:
        if seed_list is not None:
            raise ToolkitError("--init names one device run; train one run per seed (each --init its own seed's run)")
        if not (r.init / "model.json").is_file():
            raise ToolkitError(f"--init {r.init}: not a run dir (no model.json)")
    if r.model == "duet":
        from toolkit.models.registry import check_duet_config

        check_duet_config(cfg)
    from toolkit.train.distributed import LaunchRequest, check_flags

    launch = LaunchRequest(r.nproc, r.nnodes, r.node_rank, r.master_addr, r.master_port, r.oversubscribe,
                           r.connect_timeout)
    check_flags(launch)  # every distributed flag, whatever --nproc is
    if r.device not in ("cpu", "cuda", "auto"):
        raise ToolkitError(f"unknown --device '{r.device}' (valid: cpu, cuda, auto)")
    if launch.distributed and seed_list is not None:
        raise ToolkitError("--nproc/--nnodes train one run; --seeds runs its seeds in one process")
    if r.model == "gate":
        if r.base_run is None:
            raise ToolkitError("`toolkit train gate` needs --model RUN (a trained cocorrrec or duet run)")
        if r.resume:
            raise ToolkitError("--resume applies to recommenders; the gate trains in one go (re-run it with --force)")
    inputs = {"dataset": r.data, "base run (--model)": r.base_run, "--init run": r.init}
    return _Checked(recipe_over, grid, seed_list, cfg, launch, inputs)


def _check_inputs(r: TrainRequest, c: _Checked) -> None:
    """Every input, before the run dir is touched (nothing is lost on bad input); loads the dataset."""
    from toolkit.rundir import check_inputs, check_run_dir

    if c.launch.node_rank == 0:  # node rank 0 owns the run dir (the others may share its filesystem)
        check_run_dir(r.out, r.resume, r.force, c.inputs)
    check_inputs(r.model, r.data, r.base_run, r.init, c.cfg)
    from toolkit.data import load_dataset

    c.ds = load_dataset(r.data)
    from toolkit.train.loop import resolve_device

    c.device = resolve_device(r.device)
    if c.launch.distributed:
        from toolkit.train.distributed import check_request

        c.launch = check_request(c.launch, c.device)
        if r.batch_size < c.launch.nproc * c.launch.nnodes:
            raise ToolkitError(f"--batch-size {r.batch_size} is smaller than the {c.launch.nproc * c.launch.nnodes} "
                               "workers")


def _train_into(run: Path, r: TrainRequest, c: _Checked, reporter: Reporter, report) -> Optional[TrainOutcome]:
    """Train into `run` (the run dir, or the staging dir of a forced rewrite of `r.out`); the outcome to report
    once the run dir is in place, or None when it has been reported already (or rank 0's worker showed it)."""
    model, ds, req = r.model, c.ds, c.launch
    if model in COUNTS:
        from toolkit.train.counts import fit_run

        report(TrainOutcome("counted", model, r.out, fit_run(model, ds, run)))
        return None
    if model == "gate":
        return _train_gate(run, r, c, reporter, report)
    from toolkit.train import TrainSettings
    from toolkit.train import train as train_run

    settings = TrainSettings(epochs=r.epochs, patience=None if r.no_patience else r.patience,
                             batch_size=r.batch_size, lr=r.lr, weight_decay=r.weight_decay, seed=r.seed,
                             threads=r.threads, config=c.cfg, device=c.device, sparse_embeddings=r.sparse_embeddings,
                             init_run=None if r.init is None else str(r.init.resolve()),
                             freeze_device=r.freeze_device, recipe=r.recipe or "default",
                             recipe_overrides={k: v for k, v in c.recipe_over.items() if v is not None})
    if c.grid is not None:
        from toolkit.train.sweep import check_points, run_sweep

        summary = run_sweep(model, ds, run, check_points(model, ds.n_items, settings, c.grid), c.grid,
                            reporter=reporter)
        report(TrainOutcome("sweep", model, r.out, summary))
        return None
    if c.seed_list is not None:
        from toolkit.train.seeds import train_seeds

        return TrainOutcome("seeds", model, r.out, train_seeds(model, ds, run, settings, c.seed_list,
                                                                reporter=reporter, resume=r.resume))
    if req.distributed:
        metrics = _train_distributed(req, model, ds, run, settings, r.resume)
        if metrics is None:
            report(TrainOutcome("node", model, r.out, node_rank=req.node_rank))
            return None
        return TrainOutcome("trained", model, r.out, metrics)
    return TrainOutcome("trained", model, r.out, train_run(model, ds, run, settings, resume=r.resume,
                                                             reporter=reporter))


def _train_gate(run: Path, r: TrainRequest, c: _Checked, reporter: Reporter, report) -> None:
    """The gate: in this process, or on distributed workers (rank 0's worker shows its summary)."""
    from toolkit.gate.train import train_gate

    req = c.launch
    gate_args = dict(epochs=r.epochs, batch_size=r.batch_size, lr=1e-3 if r.lr is None else r.lr, seed=r.seed,
                     threads=r.threads, config=c.cfg)
    if req.distributed:
        from toolkit.train.distributed import available_cores, launch

        if r.threads is None:  # share this machine's cores between the workers
            gate_args["threads"] = max(1, available_cores() // req.nproc)
        launch(req, {"model": "gate", "data": str(c.ds.path.resolve()), "out": str(run.resolve()),
                     "base_run": str(Path(r.base_run).resolve()), "device": "cpu", "gate": gate_args}, run)  # gloo
        if req.node_rank != 0:
            report(TrainOutcome("node", "gate", r.out, node_rank=req.node_rank))
        return None
    report(TrainOutcome("gate", "gate", r.out, train_gate(c.ds, r.base_run, run, reporter=reporter, **gate_args)))
    return None


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


def _refuse_for_counts(r: TrainRequest, recipe_over: dict) -> None:
    """Flags that mean nothing to a count baseline (or, for the recipe ones, to the gate): one line naming them."""
    meaningless = {"--recipe": r.recipe is not None, "--sweep": bool(r.sweep),
                   **{f"--{k}": v is not None for k, v in recipe_over.items()}}
    if r.model in COUNTS:
        meaningless.update({"--seeds": r.seeds is not None, "--init": r.init is not None,
                            "--freeze-device": r.freeze_device, "--resume": r.resume,
                            "--nproc": r.nproc != 1, "--nnodes": r.nnodes != 1, "--config": bool(r.config)})
    named = [flag for flag, on in meaningless.items() if on]
    if named:
        what = "a count baseline: nothing is trained" if r.model in COUNTS else "the gate (it has its own loss)"
        raise ToolkitError(f"{', '.join(named)} mean nothing to {r.model}, {what}")


def parse_seeds(value: str) -> list[int]:
    """`0,1,2` -> [0, 1, 2]: distinct non-negative integers, at least one."""
    parts = [p.strip() for p in value.split(",")]
    if not parts or any(not p.isdigit() for p in parts):
        raise ToolkitError(f"--seeds expects comma-separated non-negative integers like 0,1,2, got '{value}'")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        raise ToolkitError(f"--seeds lists a seed twice: '{value}'")
    return seeds
