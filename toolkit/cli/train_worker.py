"""`python -m toolkit.cli.train_worker SPEC_JSON`: the process of one data-parallel training worker, started by
torchrun's launcher for `toolkit train ... --nproc N` (not a user command).

Rank 0 shows its progress and, for the gate, the summary on this process's terminal; the other ranks stay silent.
The work itself is toolkit.train.worker's."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from toolkit.cli.common import console
    from toolkit.cli.reporter import ConsoleReporter
    from toolkit.reporter import Reporter
    from toolkit.train.worker import run_worker

    spec = json.loads(argv[0])
    code, trained = run_worker(spec, lambda is_main: ConsoleReporter(console) if is_main else Reporter())
    if trained is not None:  # rank 0 of a gate: its summary, naming the dir it wrote
        from toolkit.cli.train import show_gate

        show_gate(trained, Path(spec["out"]))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
