"""The machine a bench ran on: recorded with every result so baselines say where they came from."""

from __future__ import annotations

import datetime as dt
import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def memory_total_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:
        return None


def host_label() -> str:
    """The `measured_on` label of host rows: never a device claim."""
    return f"host {platform.machine()} ({cpu_model()}), not device latency"


def load_average() -> list[float] | None:
    """1/5/15-minute load averages: how busy the machine was (latency on a loaded machine is noisy)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def describe(target, extra: dict | None = None) -> dict:
    from toolkit.io import versions

    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cpus_allowed": allowed,
        "memory_total_bytes": memory_total_bytes(),
        "load_average_end": load_average(),
        "threads": target.threads,
        "target": target.to_dict(),
        "versions": versions(),
        **(extra or {}),
    }
