"""Latency: pin the process, warm up, time many calls with profiling off, summarise as percentiles.

Streaming cells (`step`) are timed at an exact history: every timed sample starts from a reset runner, replays
`steps_before` steps untimed (history = steps_before * K clicks), then times one step.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Callable, Sequence

from toolkit.rows import latency_summary


def pin(cpus: list[int] | None) -> list[int] | None:
    """Pin this process to `cpus` (before runtimes create thread pools); returns the CPU set now in force."""
    if cpus is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def thread_env(threads: int) -> dict[str, str]:
    """Environment for a measuring subprocess so OpenMP/MKL pools match the target's thread count."""
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}


def summarize(samples_s: Sequence[float]) -> dict:
    """Seconds per call -> toolkit.rows.latency_summary (milliseconds; the toolkit's one percentile definition)."""
    return latency_summary([x * 1e3 for x in samples_s])


def window_samples(call: Callable[[int], object], runs: int, start: int = 0) -> list[float]:
    """Seconds per call of `runs` calls of `call(i)` (input sets start, start + 1, ...), gc off while timing."""
    samples = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for i in range(start, start + runs):
            t0 = time.perf_counter()
            call(i)
            samples.append(time.perf_counter() - t0)
    finally:
        if gc_was:
            gc.enable()
    return samples


def step_samples(reset: Callable[[], None], call: Callable[[int], object], steps_before: int,
                 runs: int) -> list[float]:
    """Seconds of one streaming step at history steps_before * K, `runs` times: reset, replay untimed, time the next
    step."""
    def one() -> float:
        reset()
        for j in range(steps_before):
            call(j)
        t0 = time.perf_counter()
        call(steps_before)
        return time.perf_counter() - t0

    gc_was = gc.isenabled()
    gc.disable()
    try:
        return [one() for _ in range(runs)]
    finally:
        if gc_was:
            gc.enable()


def time_window(call: Callable[[int], object], warmup: int, runs: int) -> dict:
    """`call(i)` runs inference on input set i; warm-up calls are discarded."""
    for i in range(warmup):
        call(i)
    return summarize(window_samples(call, runs))


def time_step(reset: Callable[[], None], call: Callable[[int], object], steps_before: int, warmup: int,
              runs: int) -> dict:
    """Time one streaming step at history steps_before * K: reset, replay untimed, then time the next step."""
    step_samples(reset, call, steps_before, warmup)
    return summarize(step_samples(reset, call, steps_before, runs))
