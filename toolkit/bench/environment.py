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


# ---- how busy the machine was while the bench timed (load average, steal, other processes' CPU) ------------------

BUSY_LOAD_PER_CORE = 0.25  # 1-min load average at the start, per core: busy above it where /proc/stat is missing
BUSY_OTHER_CORES = 0.25  # CPU used by processes other than the bench during the timed rounds (cores)
BUSY_STEAL_PCT = 2.0  # CPU time stolen by the hypervisor during the timed rounds (% of all CPU time)


def _ticks() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100.0


def cpu_stat() -> dict | None:
    """The machine's CPU time since boot from /proc/stat's `cpu` line, in seconds: busy (user, nice, system, irq,
    softirq, steal), idle (idle, iowait), steal; None where /proc/stat is not there."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    v = [float(x) / _ticks() for x in fields[1:]] + [0.0] * 8
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]  # guest time is already inside user / nice
    return {"busy_s": user + nice + system + irq + softirq + steal, "idle_s": idle + iowait, "steal_s": steal}


def process_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of this process, its waited-for children, and of `pids` (live processes, from their
    /proc/PID/stat; gone ones count 0)."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += (float(rest[11]) + float(rest[12])) / _ticks()  # fields 14, 15: utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def snapshot(pids: list[int] | None = None) -> dict:
    """Load average, /proc/stat and the bench's own CPU time at one moment (see `busy`)."""
    return {"t": __import__("time").monotonic(), "load_average": load_average(), "cpu": cpu_stat(),
            "own_cpu_s": process_cpu_seconds(pids or [])}


def busy(start: dict, end: dict, cores: int | None = None) -> dict:
    """How busy the machine was between two snapshots: steal share, other processes' CPU (all busy CPU time minus
    the bench's own, in cores), load averages; `busy` with the reasons when a threshold above is crossed."""
    cores = cores or os.cpu_count() or 1
    out = {"load_average_start": start.get("load_average"), "load_average_end": end.get("load_average"),
           "steal_s_start": None, "steal_s_end": None, "steal_pct": None, "other_cpu_cores": None,
           "seconds": round(end["t"] - start["t"], 3)}
    a, b = start.get("cpu"), end.get("cpu")
    if a and b:
        out["steal_s_start"], out["steal_s_end"] = round(a["steal_s"], 2), round(b["steal_s"], 2)
        total = (b["busy_s"] + b["idle_s"]) - (a["busy_s"] + a["idle_s"])
        wall = end["t"] - start["t"]
        if total > 0:
            out["steal_pct"] = 100.0 * (b["steal_s"] - a["steal_s"]) / total
        if wall > 0:
            other = (b["busy_s"] - a["busy_s"]) - (end["own_cpu_s"] - start["own_cpu_s"])
            out["other_cpu_cores"] = max(0.0, other / wall)
    reasons = []
    la = (start.get("load_average") or [None])[0]
    # The 1-minute load average decays over minutes: right after a build, a test run or the previous bench it is
    # high while nothing runs any more. Where /proc/stat says what other processes used *while timing*, that
    # measurement decides and the load average is only recorded; it decides alone where there is no /proc/stat.
    if la is not None and la > BUSY_LOAD_PER_CORE * cores and out["other_cpu_cores"] is None:
        reasons.append(f"load average {la:.2f} at the start ({cores} cores)")
    if out["other_cpu_cores"] is not None and out["other_cpu_cores"] > BUSY_OTHER_CORES:
        reasons.append(f"other processes used {out['other_cpu_cores']:.2f} cores while timing")
    if out["steal_pct"] is not None and out["steal_pct"] > BUSY_STEAL_PCT:
        reasons.append(f"{out['steal_pct']:.1f}% of CPU time stolen by the hypervisor while timing")
    out["busy"] = bool(reasons)
    out["busy_reasons"] = reasons
    return out
