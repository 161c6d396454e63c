"""Data-parallel training on PyTorch's own engine: torchrun (torch.distributed.run's launcher API) + DDP.

The CLI process checks the request (worker count, addresses, port) before anything is written, then launches
N workers through `torch.distributed.launcher.api.elastic_launch` (what `torchrun` runs) with the static
rendezvous at --master-addr:--master-port (node 0 hosts it). Each worker runs `python -m toolkit.cli.train_worker`
(WORKER: the process entry lives with the commands, as rank 0 prints; its work is toolkit.train.worker's),
joins the process group (gloo on CPU, nccl on CUDA) and calls the one training loop with a `Dist` handle:

  global batch   the user's --batch-size whatever N: step i of an epoch takes rows order[i*B:(i+1)*B] of the
                 same seeded permutation on every worker, and worker r trains on the r-th of N near-equal slices
                 (`local_slice`); its loss is sum over its rows / (rows in the global batch) * N, so DDP's gradient
                 average is the 1-worker batch-mean gradient (float32 summation order aside);
  reading        a worker touches only its rows: with the memory-mapped "npy" dataset layout it pages in only them
                 (the page cache is shared by the workers of one machine);
  rank 0         validation, selection, checkpoints (atomic, the 1-worker format, so --resume works with any N)
                 and the run descriptor; the other ranks wait at a barrier and receive rank 0's stop decision.

A worker that dies makes the launcher stop the others; the CLI prints one line naming the rank and how to
--resume. A ToolkitError inside a worker is written to a per-rank file and becomes that one line.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import ToolkitError

DEFAULT_PORT = 29500
CONNECT_TIMEOUT_S = 30
ERRORS_ENV = "TOOLKIT_WORKER_ERRORS"
WORKER = "toolkit.cli.train_worker"  # the module each worker process runs (python -m)


@dataclass(frozen=True)
class LaunchRequest:
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None  # None: a free port (one node) or 29500 (several)
    oversubscribe: bool = False
    connect_timeout: float = CONNECT_TIMEOUT_S

    @property
    def distributed(self) -> bool:
        return self.nproc > 1 or self.nnodes > 1


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


MAX_NPROC = 1024  # workers on one machine
MAX_NNODES = 65536
MAX_CONNECT_TIMEOUT_S = 7 * 24 * 3600


def check_flags(req: LaunchRequest) -> None:
    """The distributed flags' ranges, whatever --nproc is (no torch, no network): one line naming the flag."""
    if req.nproc < 1:
        raise ToolkitError(f"--nproc must be >= 1, got {req.nproc}")
    if req.nproc > MAX_NPROC:
        raise ToolkitError(f"--nproc must lie in 1..{MAX_NPROC}, got {req.nproc}")
    if req.nnodes < 1 or req.nnodes > MAX_NNODES:
        raise ToolkitError(f"--nnodes must lie in 1..{MAX_NNODES}, got {req.nnodes}")
    if not 0 <= req.node_rank < req.nnodes:
        raise ToolkitError(f"--node-rank must lie in 0..{req.nnodes - 1}, got {req.node_rank}")
    t = req.connect_timeout
    if not isinstance(t, (int, float)) or t != t or not 0 < t <= MAX_CONNECT_TIMEOUT_S:
        raise ToolkitError(f"--connect-timeout must be a number of seconds in (0, {MAX_CONNECT_TIMEOUT_S}], got {t}")
    if req.master_port is not None and not 1 <= req.master_port <= 65535:
        raise ToolkitError(f"--master-port must lie in 1..65535, got {req.master_port}")
    if not req.master_addr or len(req.master_addr) > 253 or any(c.isspace() for c in req.master_addr):
        raise ToolkitError(f"--master-addr must be a host name or address, got '{req.master_addr}'")
    cores = available_cores()
    if req.nproc > cores and not req.oversubscribe:
        raise ToolkitError(f"--nproc {req.nproc} is more than the {cores} cores available to this process "
                           "(add --oversubscribe to run anyway)")


def check_request(req: LaunchRequest, device: str = "cpu") -> LaunchRequest:
    """Everything that can be checked before a worker starts; returns the request with its port fixed."""
    check_flags(req)
    if device == "cuda":
        import torch

        if req.nproc > torch.cuda.device_count():
            raise ToolkitError(f"--nproc {req.nproc} with --device cuda needs {req.nproc} GPUs, this machine has "
                               f"{torch.cuda.device_count()}")
    cores = available_cores()
    if req.nproc > cores and not req.oversubscribe:
        raise ToolkitError(f"--nproc {req.nproc} is more than the {cores} cores available to this process "
                           "(add --oversubscribe to run anyway)")
    if req.master_port is not None and not 1 <= req.master_port <= 65535:
        raise ToolkitError(f"--master-port must lie in 1..65535, got {req.master_port}")
    try:
        infos = socket.getaddrinfo(req.master_addr, None, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ToolkitError(f"--master-addr {req.master_addr}: cannot resolve it ({e.strerror})") from None
    family, _, _, _, sockaddr = infos[0]
    host = sockaddr[0]
    port = req.master_port
    if req.node_rank == 0:
        if port is None:
            port = _free_port(family, host) if req.nnodes == 1 else DEFAULT_PORT
        _check_bindable(family, host, port, req.master_addr)
    else:
        port = port or DEFAULT_PORT
        _check_reachable(req.master_addr, port, req.connect_timeout)
    return LaunchRequest(req.nproc, req.nnodes, req.node_rank, req.master_addr, port, req.oversubscribe,
                         req.connect_timeout)


def _free_port(family, host: str) -> int:
    with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as s:
        try:
            s.bind((host, 0))
        except OSError as e:
            raise _bind_error(e, host, 0, host) from None
        return int(s.getsockname()[1])


def _bind_error(e: OSError, host: str, port: int, addr: str) -> ToolkitError:
    if e.errno == errno.EADDRINUSE:
        return ToolkitError(f"--master-port {port} is in use on {addr} (pick another port, or leave --master-port "
                            "out on one machine for a free one)")
    if e.errno == errno.EADDRNOTAVAIL:
        return ToolkitError(f"--master-addr {addr} is not an address of this machine (node rank 0 hosts the "
                            "rendezvous there; give this machine's address)")
    return ToolkitError(f"cannot listen on {addr}:{port} ({e.strerror})")


def _check_bindable(family, host: str, port: int, addr: str) -> None:
    with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise _bind_error(e, host, port, addr) from None


def _check_reachable(addr: str, port: int, timeout: float) -> None:
    """Node rank > 0: node 0 may start a little later, so retry until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ToolkitError(f"cannot reach the rendezvous at {addr}:{port} within {timeout:g} s ({last}); is "
                               "node rank 0 running with the same --master-addr/--master-port?")
        try:
            with socket.create_connection((addr, port), timeout=min(left, 5.0)):
                return
        except OSError as e:
            last = e.strerror or type(e).__name__
            time.sleep(min(0.5, max(deadline - time.monotonic(), 0)))


def launch(req: LaunchRequest, spec: dict, run: Path) -> None:
    """Run the training spec on req.nproc local workers (this node's share); raise one-line ToolkitErrors."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in ("torch.distributed.elastic", "torch.distributed.launcher", "torch.distributed.run"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the CLI says what happened, in one line
    existed = run.exists()
    config = LaunchConfig(
        min_nodes=req.nnodes, max_nodes=req.nnodes, nproc_per_node=req.nproc, run_id="toolkit-train",
        rdzv_backend="static", rdzv_endpoint=f"{req.master_addr}:{req.master_port}",
        rdzv_configs={"rank": req.node_rank, "timeout": int(max(req.connect_timeout, 1))},
        max_restarts=0, monitor_interval=0.2, start_method="spawn",
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="toolkit-workers-") as errors:
        os.environ[ERRORS_ENV] = errors
        try:
            elastic_launch(config, sys.executable)("-m", WORKER, json.dumps(spec))
        except ChildFailedError as e:
            rank, failure, message = _root_cause(e.failures, Path(errors))
            _drop_if_empty(run, existed)
            if message is not None and message["kind"] == "toolkit":
                raise ToolkitError(f"worker rank {rank}: {message['message']}") from None
            what = f" ({message['message']}; --nproc 1 shows its traceback)" if message is not None else ""
            after = ("the gate writes its run dir only when it finishes; run it again" if spec["model"] == "gate"
                     else "the last finished epoch is checkpointed, continue with --resume")
            raise ToolkitError(f"worker rank {rank} (pid {failure.pid}) {_how(failure.exitcode)}{what}: the run "
                               f"stopped; {after}") from None
        except Exception as e:  # the launcher itself: rendezvous timeout, store errors
            _drop_if_empty(run, existed)
            raise ToolkitError(f"distributed launch failed at {req.master_addr}:{req.master_port}: "
                               f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        finally:
            os.environ.pop(ERRORS_ENV, None)


def _how(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


def _worker_message(folder: Path, rank: int) -> dict | None:
    f = folder / f"rank{rank}.json"
    from toolkit.io import read_json

    try:
        return read_json(f, "worker message") if f.is_file() else None
    except ToolkitError:
        return None


def _root_cause(failures: dict, folder: Path):
    """(rank, failure, message) of the worker that broke the run, not of those that failed because of it: a
    worker killed by a signal before it noticed anything (no message of its own) first, then one that raised a
    ToolkitError, then the lowest rank (peers of a dead worker fail in a collective, then get SIGTERM)."""
    def order(item):
        rank, failure = item
        message = _worker_message(folder, rank)
        if failure.exitcode < 0 and message is None:
            return (0, rank)
        if message is not None and message["kind"] == "toolkit":
            return (1, rank)
        return (2, rank)

    rank, failure = min(failures.items(), key=order)
    return rank, failure, _worker_message(folder, rank)


def _drop_if_empty(run: Path, existed: bool) -> None:
    """No partial run dir: a fresh run dir that never got a checkpoint goes away with the failed launch."""
    if existed or not run.is_dir():
        return
    if not any(p.name.endswith(".pt") or p.name.endswith(".json") for p in run.iterdir()):
        import shutil

        shutil.rmtree(run, ignore_errors=True)


def write_worker_error(rank: int, message: str, kind: str = "toolkit") -> None:
    """kind "toolkit": a user-facing ToolkitError; "unexpected": anything else (its traceback goes to the file
    beside it, rank{R}.traceback, and is printed only with --debug)."""
    folder = os.environ.get(ERRORS_ENV)
    if folder:
        Path(folder, f"rank{rank}.json").write_text(json.dumps({"kind": kind, "message": message}))
        if kind != "toolkit":
            import traceback

            Path(folder, f"rank{rank}.traceback").write_text(traceback.format_exc())


# ---------------------------------------------------------------------------------------------------------------
# Inside a worker


@dataclass
class Dist:
    """The process group as the training loop sees it."""

    rank: int
    world: int
    local_rank: int
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_slice(self, n: int) -> slice:
        """This worker's part of a global batch of n rows: N near-equal consecutive slices, the first n % N one
        row longer (every worker gets >= 1 row when n >= N)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def wrap(self, model):
        """DDP around the model (gradients averaged across workers after backward)."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        # some configs leave parameters out of the forward (e.g. SCN without its optional parts)
        if self.device.startswith("cuda"):
            return DDP(model, device_ids=[self.local_rank], find_unused_parameters=True)
        return DDP(model, find_unused_parameters=True)

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's decision (e.g. stop now) on every rank."""
        import torch
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], dtype=torch.int64,
                         device=self.device if self.device.startswith("cuda") else "cpu")
        dist.broadcast(t, src=0)
        return bool(t.item())

    def same_as_rank0(self, value: int) -> bool:
        """Whether rank 0 holds the same integer (e.g. a dataset hash prefix)."""
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.int64,
                         device=self.device if self.device.startswith("cuda") else "cpu")
        dist.broadcast(t, src=0)
        return int(t.item()) == value

    def all_max(self, value: float) -> float:
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64,
                         device=self.device if self.device.startswith("cuda") else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def all_sum(self, values: list[float]) -> list[float]:
        """Sum of per-worker floats (loss totals, row counts) over all workers, in float64."""
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64,
                         device=self.device if self.device.startswith("cuda") else "cpu")
        dist.all_reduce(t)
        return t.tolist()


def init_worker(device: str, timeout_s: float = 1800) -> Dist:
    """Join the process group torchrun set up in the environment (RANK, WORLD_SIZE, MASTER_ADDR, ...)."""
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device)


def close_worker() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
