"""The result row: one shape for every measurement the toolkit reports (host bench, emulated ARM64, phone).

Below both `toolkit.bench` and `toolkit.device` (it imports neither), so the two build rows with the same fields,
the same memory keys and the same statistics:

- `latency_summary(samples_ms)`: p50/p90/p99 by linear interpolation between order statistics (numpy's default
  percentile, the one definition in the toolkit), mean, min, runs.
- `instruction_summary(counts, overhead, by_code)`: median-low of the measured calls minus the markers' own cost.
- `artifact_fields(manifest, record)`: which file was measured (sha256, manifest path, manifest sha256).

Row fields (`base_row` fills every one, None where a target does not measure it): model, entry, runtime, seq_len,
history, target, status ("ok" | "failed"), error, measured_on, flops, flops_analytic, params,
params_excluding_item_table, artifact_bytes, artifact {file, sha256, manifest, manifest_sha256}, memory
{weights_bytes, activations_bytes, state_bytes, arena_peak_bytes, rss_peak_delta_bytes}, latency_ms {p50, p90, p99,
mean, min, runs}, instructions_per_inference, parity_max_abs_err, budget {latency_ms, memory_bytes, pass}.
Host bench rows add floor {ms, compute_ms, empty_call_ms, matmul_gflops, flops} and x_of_floor (None where not
timed), and with `--profile` a profile (toolkit.bench.profile). `noise` (None where not timed in rounds): the p50's
95% interval and the spread between rounds (toolkit.bench.noise / rounds); with `--compare`, `compare`.
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence

import numpy as np

SCHEMA = "toolkit.bench/1"
MEMORY_KEYS = ("weights_bytes", "activations_bytes", "state_bytes", "arena_peak_bytes", "rss_peak_delta_bytes")


def empty_memory() -> dict:
    return {k: None for k in MEMORY_KEYS}


def base_row(*, model: str, entry: str, runtime: str, seq_len: int | None, target: str, measured_on: str,
             history: int | None = None, error: str | None = None, **extra: Any) -> dict:
    """A row with every field present (None = not measured here); `extra` adds target-specific fields."""
    row = {
        "model": model, "entry": entry, "runtime": runtime, "seq_len": seq_len, "history": history,
        "target": target, "status": "failed" if error else "ok", "error": error, "measured_on": measured_on,
        "flops": None, "flops_analytic": None, "params": None, "params_excluding_item_table": None,
        "artifact_bytes": None, "artifact": None, "memory": empty_memory(), "latency_ms": None,
        "instructions_per_inference": None, "parity_max_abs_err": None,
        "budget": {"latency_ms": None, "memory_bytes": None, "pass": None},
        "noise": None,
    }
    row.update(extra)
    return row


def artifact_fields(manifest, rec) -> dict:
    """What a row says about the file it measured (a toolkit.exporters.manifest Manifest and ArtifactRecord)."""
    return {"file": rec.file, "sha256": rec.sha256, "manifest": str(manifest.path.resolve()),
            "manifest_sha256": manifest.digest}


def latency_summary(samples_ms: Sequence[float]) -> dict:
    """Milliseconds per call -> {p50, p90, p99, mean, min, runs} (linear-interpolation percentiles)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no latency samples")
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "min": float(a.min()), "runs": int(a.size)}


def instruction_summary(counts: list[int], overhead: int | None, by_code: dict[str, list[int]] | None = None) -> dict:
    """Median of the measured calls, minus the markers' own cost; the spread shows whether calls repeat exactly.

    `by_code` splits the median call by the library the instructions ran in (the inference library's own code is
    the steadiest part: the C library's share moves with allocator state and buffer alignment).
    """
    med = int(statistics.median_low(counts))
    out = {
        "per_inference": med - (overhead or 0),
        "raw_median": med,
        "min": min(counts),
        "max": max(counts),
        "runs": list(counts),
        "marker_overhead": overhead,
    }
    if by_code:
        split = {lib: int(statistics.median_low(v)) for lib, v in by_code.items() if v}
        split["other (python, binding, markers)"] = med - sum(split.values())
        out["by_code"] = split
    return out
