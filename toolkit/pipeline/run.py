"""Run a planned pipeline job: its stages under a lock on OUT, then out/pipeline.json.

Each stage replaces its own output only once it is complete, so a failed stage leaves the previous run's output of
that stage as it was; the progress object handed in shows the stages (this module prints nothing)."""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from typing import Optional, Protocol

from toolkit.errors import CheckFailed, Interrupted, ToolkitError
from toolkit.io import atomic_write_json, dir_lock, versions
from toolkit.pipeline.plan import Job
from toolkit.pipeline.stages import Result, Stage, run_stages


class Progress(Protocol):
    def begin(self, job: Job) -> None: ...  # OUT exists; the first stage is about to start
    def on_event(self, kind: str, stage: Stage, res: Optional[Result], running: list[str]) -> None: ...
    def on_tick(self, running: list[tuple[str, float]]) -> None: ...


@dataclass
class Finished:
    """The stages run (in finishing order), the first that failed, and the summary written to pipeline.json."""

    job: Job
    results: list[Result]
    failed: Optional[Stage]
    seconds: float
    summary: dict

    def raise_if_failed(self) -> None:
        """A failed stage's exit code carries over: 1 a check failed, 130 Ctrl-C, else bad input (2)."""
        if self.failed is None:
            return
        rc = next(r.rc for r in self.results if r.stage is self.failed)
        err = {1: CheckFailed, 130: Interrupted}.get(rc, ToolkitError)
        raise err(f"stage '{self.failed.name}' failed with exit code {rc} (log: {self.job.logs}/): re-run it alone "
                  f"with `toolkit {shlex.join(self.failed.argv)}`")


def run_job(job: Job, progress: Progress) -> Finished:
    """Run every stage of `job` (a second pipeline into OUT is refused) and write OUT/pipeline.json."""
    out, stages = job.out, job.stages
    out.mkdir(parents=True, exist_ok=True)
    progress.begin(job)
    t_all = time.perf_counter()
    try:
        with dir_lock(out, "pipeline output"):
            results, failed = run_stages(stages, [sys.executable, "-m", "toolkit"], job.jobs, job.logs,
                                         progress.on_event, progress.on_tick)
    except KeyboardInterrupt:
        raise Interrupted("pipeline stopped; every finished stage's files are kept, re-run `toolkit pipeline` or a "
                          "stage alone (see --dry-run)") from None
    seconds = time.perf_counter() - t_all
    not_run = [s.name for s in stages if s.name not in {r.stage.name for r in results}]
    summary = {"ok": failed is None and not not_run, "size": job.size, "jobs": job.jobs,
               "settings": {"users": None if job.data is not None else job.users, "epochs": job.epochs,
                            "runs": job.runs, "seq_len": job.seq_len, "formats": job.targets,
                            "baselines": job.baselines},
               "stages": [r.to_json() for r in results], "not_run": not_run, "seconds": round(seconds, 2),
               "cpu_seconds": round(sum(r.cpu_seconds for r in results), 2),
               "expected_seconds_idle_2core": job.expected_seconds, "out": str(out), "versions": versions()}
    atomic_write_json(out / "pipeline.json", summary)
    return Finished(job, results, failed, seconds, summary)
