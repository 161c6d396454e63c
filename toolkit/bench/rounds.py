"""Interleaved rounds: every row of a bench run is timed a slice at a time, round after round, until each row's p50
is known well enough (or a time cap is reached).

Why: timed one row after another, a burst of load (another job, the hypervisor) lands on whichever row is running,
and two runs of the same command disagree by more than the effects users ask about. In rounds, each row gets `k`
calls in every round, rows in a fresh shuffled order each round (seeded: the same order for the same run), so a
burst hits all rows alike and ratios between rows measured in one run hold.

Each artifact keeps its own measuring process (toolkit.bench.worker --serve), loaded once before the first round
and kept loaded across rounds (its RSS delta and cold start are measured as before; a crash still takes down only
its cell). One slice = `warm` untimed calls (the slices of the other rows evicted this one's caches), then `k`
timed calls. Only one process runs at a time: the parent waits for each slice.

Stopping (`run_rounds`): at least `min_rounds` rounds (together the requested --runs). With a target (e.g. 0.03),
more rounds follow until every row's 95% interval of the p50 (toolkit.bench.noise) lies within +-target of its
p50 - "converged" - or the rounds have taken `max_seconds` - "time cap"; each row says which.
"""

from __future__ import annotations

import json
import math
import random
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from toolkit.bench import environment, noise

SEED = 20251207


class WorkerSession:
    """The parent's handle on one `toolkit.bench.worker --serve` process: JSON lines in, JSON lines out."""

    def __init__(self, spec: dict, workdir: Path, n: int, env: dict, timeout: float):
        spec_path = workdir / f"job{n}.json"
        spec_path.write_text(json.dumps(spec, default=str))
        self.stderr_path = workdir / f"job{n}.stderr"
        self._err = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "toolkit.bench.worker", "--serve", str(spec_path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, env=env)
        self.error: str | None = None
        self.ready = self._reply(timeout)
        if not self.ready.get("ok"):
            self.error = self.ready.get("error", "unknown error")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _dead(self, why: str) -> dict:
        self.close()
        self.error = why
        return {"ok": False, "error": why}

    def _reply(self, timeout: float) -> dict:
        try:
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        except (OSError, ValueError):
            ready = []
        if not ready:
            return self._dead(f"measuring process timed out after {timeout:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            rc = self.proc.wait()
            why = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with {rc}"
            tail = [ln for ln in self._stderr().splitlines() if ln.strip()][-1:] or [""]
            return self._dead(f"measuring process {why}: {tail[0][:300]}".rstrip(": "))
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            return self._dead(f"measuring process answered garbage: {line[:100]!r}")

    def _stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def request(self, obj: dict, timeout: float) -> dict:
        if self.error is not None:
            return {"ok": False, "error": self.error}
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            return self._reply(0.5) if self.proc.poll() is None else self._reply(0.0)
        rep = self._reply(timeout)
        if not rep.get("ok") and self.error is None:
            self.error = rep.get("error", "unknown error")
        return rep

    def finish(self, timeout: float) -> dict:
        rep = self.request({"cmd": "finish"}, timeout)
        self.close()
        return rep

    def close(self, wait: bool = True) -> None:
        """Let the process end (stdin closed: it exits at its next command); `wait=False` (an error or a signal
        in the parent): kill it at once. Either way it is reaped."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                if not wait:
                    raise subprocess.TimeoutExpired(self.proc.args, 0)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # our own child, by its handle
                self.proc.wait()
        if not self._err.closed:
            self._err.close()


@dataclass
class Slot:
    """One timed row: a point (L or history) of a session, with its samples per round (milliseconds)."""
    session: WorkerSession
    point: int
    per_round: int
    warm: int
    label: str = ""
    rounds: list[list[float]] = field(default_factory=list)
    converged_round: int | None = None

    @property
    def failed(self) -> bool:
        return self.session.error is not None

    def halfwidth(self) -> float:
        pooled = [x for r in self.rounds for x in r]
        if not pooled:
            return math.inf
        from toolkit.rows import latency_summary  # the one p50 definition rows use

        p50 = latency_summary(pooled)["p50"]
        lo, hi, _ = noise.median_ci(self.rounds)
        return noise.halfwidth(p50, lo, hi)


RoundProgress = Callable[[int, int, int, float], None]  # (round, rows within target, live rows, seconds)


def run_rounds(slots: list[Slot], *, min_rounds: int, target_ci: float | None, max_seconds: float | None,
               timeout: float, seed: int = SEED, progress: RoundProgress | None = None) -> dict:
    """Time `slots` in interleaved rounds (module doc); fills each slot's `rounds`; returns what happened:
    rounds, seconds, stop ("converged" | "time cap" | "fixed" | "no rows"), seed, and how busy the machine was."""
    rng = random.Random(seed)
    pids = sorted({s.session.pid for s in slots})
    start = environment.snapshot(pids)
    t0 = time.perf_counter()
    r, last_check, stop = 0, 0, None
    n_within = 0
    while True:
        live = [s for s in slots if not s.failed]
        if not live:
            stop = "no rows"
            break
        order = live[:]
        rng.shuffle(order)
        for s in order:
            if s.failed:  # its process died in this round (another point of the same artifact)
                continue
            rep = s.session.request({"cmd": "time", "point": s.point, "n": s.per_round, "warm": s.warm}, timeout)
            if rep.get("ok"):
                s.rounds.append([x * 1e3 for x in rep["samples"]])
        r += 1
        elapsed = time.perf_counter() - t0
        live = [s for s in slots if not s.failed]
        if r >= min_rounds and not target_ci:
            stop = "fixed"
            break
        if r >= min_rounds and (r == min_rounds or r - last_check >= max(1, last_check // 4)):
            last_check = r
            within = [s for s in live if s.halfwidth() <= target_ci]
            for s in within:
                if s.converged_round is None:
                    s.converged_round = r
            n_within = len(within)
            if len(within) == len(live):
                stop = "converged"
                break
        if progress:
            progress(r, n_within, len(live), elapsed)
        if r >= min_rounds and max_seconds is not None and elapsed >= max_seconds:
            stop = "time cap"
            break
    end = environment.snapshot(pids)
    return {"rounds": r, "seconds": round(time.perf_counter() - t0, 3), "stop": stop, "seed": seed,
            "min_rounds": min_rounds, "target_ci": target_ci, "max_seconds": max_seconds,
            "machine": environment.busy(start, end)}


def slot_noise(slot: Slot, run: dict) -> dict:
    """A row's `noise` field: its p50 interval and spread between rounds (toolkit.bench.noise), and why its rounds
    stopped: "converged" (interval within the target), "time cap" (not, when the cap stopped the rounds), "fixed"
    (no target: the requested runs in `min_rounds` rounds)."""
    out = noise.summarize_rounds(slot.rounds, run.get("target_ci") or None)
    if not run.get("target_ci"):
        out["stopped"] = "fixed"
    elif out.get("within_target"):
        out["stopped"] = "converged"
    else:
        out["stopped"] = "time cap" if run["stop"] == "time cap" else str(run["stop"])
    out["converged_round"] = slot.converged_round
    out["warm_calls_per_slice"] = slot.warm
    return out


def groups(items: list, size: int) -> list[list]:
    """Consecutive groups of at most `size` (each group's sessions are loaded together and interleaved)."""
    size = max(1, size)
    return [items[i:i + size] for i in range(0, len(items), size)]

