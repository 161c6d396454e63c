"""One data-parallel training worker's share of `toolkit train ... --nproc N`, inside the process torchrun's
launcher started.

The process entry is toolkit/cli/train_worker.py: it hands in the reporter rank 0 shows its progress on and prints
the gate's summary; see toolkit.train.distributed for the launch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from toolkit.errors import ToolkitError
from toolkit.reporter import Reporter


def run_worker(spec: dict, reporter_for: Callable[[bool], Reporter]) -> tuple[int, Any]:
    """Train `spec` on this worker; (exit status, what rank 0's gate training returned, else None).

    reporter_for(is_main): where this rank reports. A ToolkitError (or any other failure) is written for the
    launching CLI to turn into one line, and becomes the exit status."""
    from toolkit.train.distributed import close_worker, init_worker, write_worker_error

    rank, trained = 0, None
    try:
        dist = init_worker(spec["device"])
        rank = dist.rank
        from toolkit.data import load_dataset
        from toolkit.train.loop import TrainSettings, train

        ds = load_dataset(spec["data"], verify=False)  # the launching CLI on this node verified it just before
        if not dist.same_as_rank0(int(ds.sha256[:15], 16)):  # every node reads its own copy: the same one?
            raise ToolkitError(f"dataset {spec['data']} (arrays sha256 {ds.sha256[:12]}…) is not rank 0's dataset; "
                               "give every node the same prepared dataset")
        reporter = reporter_for(dist.is_main)
        if spec["model"] == "gate":  # the gate's three stages, data-parallel (toolkit.gate.train._stage)
            from toolkit.gate.train import train_gate

            trained = train_gate(ds, Path(spec["base_run"]), Path(spec["out"]), reporter=reporter, dist=dist,
                                 **spec["gate"])
        else:
            train(spec["model"], ds, Path(spec["out"]), TrainSettings(**spec["settings"]), resume=spec["resume"],
                  reporter=reporter, dist=dist)
        dist.barrier()
    except ToolkitError as e:
        write_worker_error(rank, str(e))
        return e.exit_code, None
    except Exception as e:  # noqa: BLE001 - often a consequence (a peer died mid-collective): one line upstream
        if spec.get("debug"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        write_worker_error(rank, f"{type(e).__name__}: {first[:200]}", kind="unexpected")
        return 1, None
    finally:
        close_worker()
    return 0, trained
