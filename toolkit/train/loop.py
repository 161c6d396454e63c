"""One training loop for every recommender: Adam on a recipe's loss (toolkit.train.objective), validation-based
selection, checkpoints, resume.

Determinism: the shuffle (and dropout) of epoch e is seeded from (seed, e), so a run resumed after epoch e reproduces
the uninterrupted run exactly. The best epoch is chosen on validation NDCG@10, never on test.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from toolkit.data import Dataset
from toolkit.errors import CheckFailed, ToolkitError
from toolkit.io import atomic_write_bytes, atomic_write_json, load_checkpoint, write_descriptor_json
from toolkit.metrics import ranking_metrics
from toolkit.models.common import check_item_ids
from toolkit.models.registry import build
from toolkit.models.runs import WEIGHTS, model_descriptor, save_weights
from toolkit.reporter import Reporter
from toolkit.train.objective import NegativeSampler, PositionScorer, batch_loss_sum, step_candidates
from toolkit.train.optim import make_optimizer
from toolkit.train.recipes import resolve_recipe

SELECT_METRIC = "ndcg@10"
EVAL_BATCH = 1024  # fixed, so `toolkit eval` reproduces metrics.json bit for bit
CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainSettings:
    epochs: int = 10  # ceiling; with `patience` training stops earlier
    patience: int | None = None  # stop after this many epochs without a better validation NDCG@10
    batch_size: int = 1024
    lr: float | None = None  # None: the recipe's (toolkit.train.recipes)
    weight_decay: float = 0.0
    seed: int = 0
    threads: int | None = None
    config: dict = field(default_factory=dict)
    device: str = "cpu"  # cpu | cuda | auto (resolved by resolve_device)
    sparse_embeddings: bool = False  # row-wise Adam on a sparse item table (toolkit.train.optim)
    init_run: str | None = None  # cloud models: start the device part from this run (toolkit.train.warm_start)
    freeze_device: bool = False  # with init_run: train only the cloud side
    recipe: str = "default"  # toolkit.train.objective.RECIPES: negatives, loss, positions
    recipe_overrides: dict = field(default_factory=dict)  # knobs over the named recipe (negatives=64, loss=ce, ...)


def resolve_device(device: str) -> str:
    """cpu | cuda | auto -> the torch device to use; one line when CUDA is asked for and absent."""
    if device not in ("cpu", "cuda", "auto"):
        raise ToolkitError(f"unknown --device '{device}' (valid: cpu, cuda, auto)")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ToolkitError("--device cuda: no CUDA device is available to torch here (use --device cpu or auto)")
    return device


def context_rows(model, ds: Dataset, split: str) -> np.ndarray | None:
    """The history the cloud reads for each row of a split ([N, context_len]), for models with a cloud side
    (`model.context_len`); None for device-only models."""
    n = getattr(model, "context_len", 0)
    return ds.windows(*ds.targets(split), n) if n else None


def forward_rows(model, seqs: torch.Tensor, cands: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
    return model(seqs, cands) if ctx is None else model(seqs, cands, context=ctx)


@torch.no_grad()
def score_split(model, seqs: np.ndarray, cands: np.ndarray, ctx: np.ndarray | None = None) -> np.ndarray:
    """Scores [n, C] of every candidate row, in eval mode, fixed batch size (on the model's device)."""
    model.eval()
    device = next(iter(model.state_dict().values())).device  # count baselines hold buffers, no parameters
    out = []
    for i in range(0, len(seqs), EVAL_BATCH):
        s = torch.tensor(seqs[i:i + EVAL_BATCH], device=device)
        c = torch.tensor(cands[i:i + EVAL_BATCH], device=device)
        x = None if ctx is None else torch.tensor(ctx[i:i + EVAL_BATCH], device=device)
        out.append(forward_rows(model, s, c, x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, cands.shape[1]), np.float32)


def evaluate(model, ds: Dataset, split: str) -> dict:
    seqs, cands = ds.split(split)
    return ranking_metrics(score_split(model, seqs, cands, context_rows(model, ds, split)), pos_index=0)


def with_recipe_dropout(name: str, config: dict, recipe) -> dict:
    """The model config with the recipe's dropout where the model has a `dropout` field and the config sets none."""
    import dataclasses

    from toolkit.models.registry import classes

    if recipe.dropout is None or "dropout" in config:
        return config
    fields = {f.name for f in dataclasses.fields(classes(name)[0])}
    return {**config, "dropout": recipe.dropout} if "dropout" in fields else config


def check_vocab(ds: Dataset, n_items: int) -> None:
    """Every id the model will see must be inside its table: name the first offender otherwise."""
    for what in ("train_seqs", "train_cands", "valid_seqs", "valid_cands", "test_seqs", "test_cands"):
        check_item_ids(getattr(ds, what), n_items, f"dataset {what}")


_CHECKPOINT_KEYS = ("model", "optimizer", "epoch", "best", "best_epoch", "history", "train_seconds", "best_state",
                    "model_name", "dataset_sha256")


def _load_checkpoint(path: Path) -> dict:
    """checkpoint.pt -> dict; tensors and plain values only (weights_only=True), every key present and typed."""
    ck = load_checkpoint(path, "checkpoint")
    if not isinstance(ck, dict) or any(k not in ck for k in _CHECKPOINT_KEYS):
        raise ToolkitError(f"checkpoint {path} is not a toolkit training checkpoint (missing keys); start a fresh "
                           "run dir")
    if not isinstance(ck["epoch"], int) or ck["epoch"] < 0 or not isinstance(ck["history"], list):
        raise ToolkitError(f"checkpoint {path} is malformed (epoch {ck['epoch']!r}); start a fresh run dir")
    return ck


def _save_checkpoint(run: Path, model, opt, epoch: int, state: dict) -> None:
    """Tensors and plain values only, so resuming can load it with weights_only=True."""
    import io

    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, **state}, buf)
    atomic_write_bytes(run / CHECKPOINT, buf.getvalue())


def train(name: str, ds: Dataset, run: Path, settings: TrainSettings, resume: bool = False,
          reporter: Reporter | None = None, dist=None) -> dict | None:
    """Train `name` on `ds` into run dir `run`; returns metrics.json's content (None on ranks other than 0).

    dist: a toolkit.train.distributed.Dist inside a data-parallel worker (None: this process trains alone).
    """
    reporter = reporter or Reporter()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = dist.device if dist is not None else resolve_device(settings.device)
    main = dist is None or dist.is_main
    torch.manual_seed(settings.seed)
    recipe = resolve_recipe(settings.recipe, settings.recipe_overrides)
    lr = recipe.lr if settings.lr is None else settings.lr
    model = build(name, ds.n_items, **with_recipe_dropout(name, settings.config, recipe))
    applied = {"name": settings.recipe, **recipe.to_dict(), "lr": lr,  # what this run trained with
               "dropout": getattr(getattr(model, "cfg", None), "dropout", None)}
    init = None
    if settings.init_run is not None or settings.freeze_device:  # two-stage: the device part from a trained run
        from toolkit.train.warm_start import check_init_flags, freeze_device_part, init_device_part

        check_init_flags(name, settings.init_run, settings.freeze_device)
        init = init_device_part(name, model, Path(settings.init_run), ds.sha256)
        if settings.freeze_device:
            init["trainable_params"] = freeze_device_part(model)
    model = model.to(device)
    if main:
        check_vocab(ds, ds.n_items)
    opt = make_optimizer(model, lr, settings.weight_decay, settings.sparse_embeddings)
    if main and not resume:
        run.mkdir(parents=True, exist_ok=True)

    start_epoch, best, best_epoch, history, spent = 0, -math.inf, -1, [], 0.0
    best_state = None
    if resume:
        ck_path = run / CHECKPOINT
        if not ck_path.is_file():
            raise ToolkitError(f"nothing to resume: {ck_path} not found")
        ck = _load_checkpoint(ck_path)
        if ck.get("model_name") != name or ck.get("dataset_sha256") != ds.sha256:
            raise ToolkitError(f"checkpoint in {run} is for model '{ck.get('model_name')}' on another dataset "
                               "or model; start a fresh run dir")
        if ck.get("recipe", recipe.to_dict()) != recipe.to_dict():
            raise ToolkitError(f"checkpoint in {run} was trained with recipe {ck['recipe']}, not "
                               f"{recipe.to_dict()}: resume with the same --recipe and knobs")
        if ck["epoch"] + 1 > settings.epochs:
            raise ToolkitError(f"checkpoint in {run} has {ck['epoch'] + 1} epochs done, more than --epochs "
                               f"{settings.epochs}: refused (model.json would misstate the training); resume with "
                               f"--epochs {ck['epoch'] + 1} or more")
        try:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise ToolkitError(f"checkpoint {ck_path} does not fit model '{name}' with this config: "
                               f"{(str(e).splitlines() or [type(e).__name__])[0][:160]}") from None
        start_epoch, best, best_epoch = ck["epoch"] + 1, ck["best"], ck["best_epoch"]
        history, spent, best_state = ck["history"], ck["train_seconds"], ck["best_state"]
        reporter.line(f"resuming {name} at epoch {start_epoch + 1} (best so far: epoch {best_epoch + 1})")

    scorer = PositionScorer(model)  # one module call per step, so DDP sees the forward of every recipe
    net = dist.wrap(scorer) if dist is not None else scorer  # DDP averages the workers' gradients
    ctx_len = getattr(model, "context_len", 0)  # the cloud's history rows, gathered per step like the rest
    n = len(ds.train_seqs)
    steps = math.ceil(n / settings.batch_size)
    sampler = NegativeSampler(ds, settings.seed) if recipe.resample else None

    for epoch in range(start_epoch, settings.epochs):
        stop = settings.patience is not None and epoch - best_epoch > settings.patience
        if dist is not None:
            stop = dist.broadcast_flag(stop)  # rank 0 selects, so rank 0 decides
        if stop:
            reporter.line(f"{name}: no better validation {SELECT_METRIC} for {settings.patience} epochs; "
                          f"stopped early (best epoch {best_epoch + 1})")
            break
        gen = torch.Generator().manual_seed(settings.seed * 100_003 + epoch)
        torch.manual_seed(settings.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=gen).numpy()
        scorer.train()  # and the model inside it
        t0 = time.perf_counter()
        total, seen = 0.0, 0
        with reporter.bars("loss {loss:.4f}  {rate:,.0f} rows/s") as bar:
            task = bar.add_task(f"{name} epoch {epoch + 1}/{settings.epochs}", total=steps, loss=0.0, rate=0.0)
            for i in range(steps):
                idx = order[i * settings.batch_size:(i + 1) * settings.batch_size]
                batch_rows = len(idx)
                cands = step_candidates(recipe, ds, idx, sampler, epoch, i)  # drawn for the global batch
                if dist is not None:
                    local = dist.local_slice(batch_rows)  # this worker's slice of the global batch
                    idx, cands = idx[local], cands[local]
                # rows are gathered per step (not the whole table up front): a memory-mapped dataset pages in
                # only the rows this process trains on
                s_rows = torch.from_numpy(np.ascontiguousarray(ds.train_seqs[idx])).to(device)
                c_rows = torch.from_numpy(np.ascontiguousarray(cands)).to(device)
                x_rows = None if not ctx_len else torch.from_numpy(
                    ds.windows(ds.train_user[idx].astype(np.int64), ds.train_time[idx].astype(np.int64), ctx_len)
                ).to(device)
                loss_sum, per_row = batch_loss_sum(net, s_rows, c_rows, x_rows, recipe)
                if dist is None:
                    loss = loss_sum / (len(idx) * per_row)
                else:  # sum / global count x N: DDP's average of the N gradients = the global batch mean
                    loss = loss_sum * (dist.world / per_row / batch_rows)
                if not torch.isfinite(loss):
                    kept = (f"the last good checkpoint is {run / CHECKPOINT}" if (run / CHECKPOINT).is_file()
                            else "no epoch had finished, nothing was checkpointed")
                    raise CheckFailed(f"loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}: stopped; {kept} "
                                      "(try a lower --lr)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * (len(idx) if dist is None else batch_rows / dist.world)
                seen += len(idx)
                bar.update(task, advance=1, loss=total / seen, rate=seen / (time.perf_counter() - t0 + 1e-9))
        epoch_seconds = time.perf_counter() - t0
        if dist is not None:  # loss over all workers' rows; wall time of the slowest worker
            total, seen = dist.all_sum([total, seen])
            epoch_seconds = dist.all_max(epoch_seconds)
        spent += epoch_seconds
        if not main:  # validation, selection and checkpoints are rank 0's
            dist.barrier()
            continue
        valid = evaluate(model, ds, "valid")
        improved = valid[SELECT_METRIC] > best
        if improved:
            best, best_epoch = valid[SELECT_METRIC], epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append({"epoch": epoch + 1, "loss": total / max(seen, 1), "epoch_seconds": round(epoch_seconds, 3),
                        "rows_per_second": round(seen / epoch_seconds, 1), **{f"valid_{k}": v for k, v in valid.items()}})
        reporter.epoch(f"{name} epoch {epoch + 1}: loss {total / max(seen, 1):.4f}  valid {SELECT_METRIC} "
                       f"{valid[SELECT_METRIC]:.4f}  uauc {valid['uauc']:.4f}  {epoch_seconds:.1f}s", improved)
        _save_checkpoint(run, model, opt, epoch, {
            "best": best, "best_epoch": best_epoch, "history": history, "train_seconds": spent,
            "best_state": best_state, "model_name": name, "dataset_sha256": ds.sha256, "recipe": recipe.to_dict()})
        if dist is not None:
            dist.barrier()  # the others wait here while rank 0 validates and checkpoints

    if not main:
        return None
    if best_state is None:
        raise ToolkitError("no epoch was trained (check --epochs)")
    model.load_state_dict(best_state)
    metrics = {"valid": evaluate(model, ds, "valid"), "test": evaluate(model, ds, "test"),
               "best_epoch": best_epoch + 1, "epochs_run": len(history), "train_seconds": round(spent, 3),
               "selected_on": f"valid {SELECT_METRIC}", "recipe": applied,
               "history": history}
    wsha = save_weights(run / WEIGHTS, model)
    desc = model_descriptor(name, model, ds.meta, wsha, {
        "train": {"epochs": settings.epochs, "patience": settings.patience, "batch_size": settings.batch_size,
                  "lr": lr, "weight_decay": settings.weight_decay, "seed": settings.seed,
                  "threads": torch.get_num_threads(), "device": device,
                  "workers": dist.world if dist is not None else 1, "sparse_embeddings": settings.sparse_embeddings,
                  "recipe": applied,
                  **({"init": {**init, "freeze_device": settings.freeze_device}} if init else {})},
        "dataset_path": str(ds.path)})
    atomic_write_json(run / "metrics.json", metrics)
    write_descriptor_json(run / "model.json", desc)  # sealed: load_run refuses an edited model.json
    return metrics
