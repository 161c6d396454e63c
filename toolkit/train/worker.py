"""`python -m toolkit.train.worker SPEC_JSON`: one data-parallel training worker, started by torchrun's launcher.

Not a user command: `toolkit train ... --nproc N` builds the spec (model, dataset, run dir, settings) and launches
N of these; see toolkit.train.distributed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console

from toolkit.errors import ToolkitError


def main(argv: list[str]) -> int:
    from toolkit.train.distributed import close_worker, init_worker, write_worker_error

    spec = json.loads(argv[0])
    rank = 0
    try:
        dist = init_worker(spec["device"])
        rank = dist.rank
        from toolkit.data import load_dataset
        from toolkit.train.loop import TrainSettings, train

        ds = load_dataset(spec["data"], verify=False)  # the launching CLI on this node verified it just before
        if not dist.same_as_rank0(int(ds.sha256[:15], 16)):  # every node reads its own copy: the same one?
            raise ToolkitError(f"dataset {spec['data']} (arrays sha256 {ds.sha256[:12]}…) is not rank 0's dataset; "
                               "give every node the same prepared dataset")
        console = Console() if dist.is_main else Console(quiet=True)
        if spec["model"] == "gate":  # the gate's three stages, data-parallel (toolkit.gate.train._stage)
            from toolkit.gate.train import train_gate

            train_gate(ds, Path(spec["base_run"]), Path(spec["out"]), console=console, dist=dist, **spec["gate"])
        else:
            train(spec["model"], ds, Path(spec["out"]), TrainSettings(**spec["settings"]), resume=spec["resume"],
                  console=console, dist=dist)
        dist.barrier()
    except ToolkitError as e:
        write_worker_error(rank, str(e))
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - often a consequence (a peer died mid-collective): one line upstream
        if spec.get("debug"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        write_worker_error(rank, f"{type(e).__name__}: {first[:200]}", kind="unexpected")
        return 1
    finally:
        close_worker()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
