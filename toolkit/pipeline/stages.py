"""Run the pipeline's stages, each a real `toolkit` process, up to `jobs` at once in dependency order.

Why concurrent: most stages are single-threaded PyTorch (small batches, short exports), so on a 2-core machine two
of them side by side take about the time of one. Each concurrent stage gets one torch thread (OMP_NUM_THREADS=1) so
two stages never oversubscribe the cores, and writes its output to its own log file (two progress bars interleaved
are unreadable). A stage marked `alone` (the bench: it measures time) waits until nothing else runs and streams to
the terminal. Per-stage CPU seconds come from the child's own rusage (os.wait4), so a loaded machine's wall time can
be told apart from the work itself.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional


@dataclass
class Stage:
    name: str
    argv: list[str]
    after: tuple[str, ...] = ()  # names of the stages whose files this one reads
    alone: bool = False  # run with no other stage beside it, output on the terminal (timings)


@dataclass
class Result:
    stage: Stage
    rc: int
    seconds: float
    cpu_seconds: float
    log: Optional[Path]
    started: float  # seconds since the pipeline started

    def to_json(self) -> dict:
        return {"stage": self.stage.name, "command": ["toolkit", *self.stage.argv], "rc": self.rc,
                "seconds": round(self.seconds, 2), "cpu_seconds": round(self.cpu_seconds, 2),
                "started_at_s": round(self.started, 2), "log": str(self.log) if self.log else None}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60] or "stage"


def check_plan(stages: list[Stage]) -> None:
    """Every dependency names an earlier stage (so the plan order is a valid run order)."""
    seen: set[str] = set()
    for s in stages:
        missing = [a for a in s.after if a not in seen]
        if missing:
            raise ValueError(f"stage '{s.name}' runs after unknown or later stage(s) {missing}")
        if s.name in seen:
            raise ValueError(f"two stages are named '{s.name}'")
        seen.add(s.name)


class _Running:
    def __init__(self, stage: Stage, proc: subprocess.Popen, log: Optional[Path], t0: float, started: float, fh):
        self.stage, self.proc, self.log, self.t0, self.started, self.fh = stage, proc, log, t0, started, fh


def _reap(r: _Running, block: bool) -> Optional[tuple[int, float]]:
    """(exit code, CPU seconds of the child) once it has exited, else None."""
    pid, status, usage = os.wait4(r.proc.pid, 0 if block else os.WNOHANG)
    if pid == 0:
        return None
    rc = os.waitstatus_to_exitcode(status)
    r.proc.returncode = rc  # wait4 reaped it: tell Popen, so it never waits on a recycled pid
    if rc < 0:  # killed by a signal: the shell's convention
        rc = 128 - rc
    return rc, usage.ru_utime + usage.ru_stime


def run_stages(stages: list[Stage], exe: list[str], jobs: int, logs: Path,
               on_event: Callable[[str, Stage, Optional[Result], list[str]], None],
               on_tick: Optional[Callable[[list[tuple[str, float]]], None]] = None,
               ) -> tuple[list[Result], Optional[Stage]]:
    """Run `stages` (plan order = priority) with at most `jobs` at once. Returns the results in finishing order and
    the first stage that failed (None when all passed). After a failure no new stage starts; running ones finish.

    on_event(kind, stage, result, running_names) is called with kind 'start' or 'done'; on_tick([(name, seconds
    running)]) every quarter second while stages run in the background.
    """
    check_plan(stages)
    t_all = time.perf_counter()
    pending = list(stages)
    done: set[str] = set()
    running: list[_Running] = []
    results: list[Result] = []
    failed: Optional[Stage] = None
    try:
        while pending or running:
            if failed is None:
                for s in list(pending):
                    if len(running) >= jobs or not all(a in done for a in s.after):
                        continue
                    if s.alone and (running or pending.index(s) > 0):
                        continue  # an alone stage waits for everything planned before it
                    if any(r.stage.alone for r in running):
                        break
                    pending.remove(s)
                    running.append(_start(s, exe, logs, jobs, t_all))
                    on_event("start", s, None, [r.stage.name for r in running])
                    if s.alone:
                        break
            if not running:  # all done, or nothing more may start (a stage failed)
                break
            finished = None
            while finished is None:
                for r in running:
                    got = _reap(r, block=len(running) == 1 and r.stage.alone)
                    if got is not None:
                        finished = (r, got)
                        break
                else:
                    time.sleep(0.25)
                    if on_tick is not None:
                        on_tick([(x.stage.name, time.perf_counter() - x.t0) for x in running])
            r, (rc, cpu) = finished
            running.remove(r)
            if r.fh is not None:
                r.fh.close()
            res = Result(r.stage, rc, time.perf_counter() - r.t0, cpu, r.log, r.started)
            results.append(res)
            on_event("done", r.stage, res, [x.stage.name for x in running])
            if rc == 0:
                done.add(r.stage.name)
            elif failed is None:
                failed = r.stage
    except BaseException:  # Ctrl-C / SIGTERM: let every running stage clean up its temp files first
        for r in running:
            try:
                r.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 60
        for r in running:
            try:
                r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except BaseException:
                r.proc.kill()
            if r.fh is not None:
                r.fh.close()
        raise
    return results, failed


def _start(s: Stage, exe: list[str], logs: Path, jobs: int, t_all: float) -> _Running:
    env = dict(os.environ)
    fh, log = None, None
    if not s.alone and jobs > 1 and not env.get("OMP_NUM_THREADS", "").strip():
        env["OMP_NUM_THREADS"] = "1"
    if not s.alone:
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{slug(s.name)}.log"
        fh = open(log, "w", encoding="utf-8")
        fh.write(f"$ toolkit {' '.join(s.argv)}\n")
        fh.flush()
        env.setdefault("COLUMNS", "100")
    now = time.perf_counter()
    proc = subprocess.Popen([*exe, *s.argv], env=env, stdout=fh, stderr=subprocess.STDOUT if fh else None,
                            stdin=subprocess.DEVNULL)
    return _Running(s, proc, log, now, now - t_all, fh)


def log_tail(log: Optional[Path], n: int = 15) -> list[str]:
    if log is None or not log.is_file():
        return []
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    return [ln for ln in lines if ln.strip()][-n:]
