"""Budgets: limits per (model, target, seq-len[, entry, runtime]) from a TOML file, or one uniform limit.

File format (benches/budgets.toml):

    [[budget]]
    model = "scn"            # required
    target = "host-1t"       # required
    seq_len = [10, 25]       # an int, a list, or omitted = every seq-len
    entry = "window"         # optional: window | step | mrs
    runtime = "onnxruntime"  # optional
    latency_ms = 2.0         # limit on the latency statistic `latency_stat` (default p50)
    memory_bytes = 64e6      # limit on the peak RSS delta (see memory_value)
    instructions = 3e6       # emulated targets only: instructions per inference

Every matching rule applies (the tightest limit wins). A failed cell under a budget fails the budget. A p50 limit
that lies inside the row's 95% interval of the p50 (host rows timed in rounds, toolkit.bench.noise) is
"inconclusive": `pass` is None and `verdict` says so (the run then neither passes nor fails on that row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.io import read_toml, resource_dir

LATENCY_STATS = ("p50", "p90", "p99", "mean")
_MATCH_KEYS = ("model", "target", "seq_len", "entry", "runtime")
_LIMIT_KEYS = ("latency_ms", "memory_bytes", "instructions")
_RUNS_IN = {"onnxruntime-ort": "onnxruntime",  # the .ort of an ONNX export runs in onnxruntime: its budgets apply
            "executorch-cpp": "executorch"}  # the same .pte through the C++ runner: the ExecuTorch budgets apply
_KEYS = set(_MATCH_KEYS) | set(_LIMIT_KEYS) | {"latency_stat", "note"}


@dataclass
class Rule:
    model: str | None
    target: str | None
    seq_lens: list[int] | None
    entry: str | None = None
    runtime: str | None = None
    latency_ms: float | None = None
    memory_bytes: float | None = None
    instructions: float | None = None
    latency_stat: str = "p50"
    note: str = ""

    def matches(self, row: dict) -> bool:
        return ((self.model is None or self.model == device_model(row["model"]))
                and (self.target is None or self.target == row["target"])
                and (self.seq_lens is None or row["seq_len"] in self.seq_lens)
                and (self.entry is None or self.entry == row["entry"])
                and (self.runtime is None or self.runtime in (row["runtime"], _RUNS_IN.get(row["runtime"]))))


@dataclass
class Budgets:
    rules: list[Rule]
    source: str  # file path, "--budget-ms/--budget-mb", or "none"

    def describe(self) -> dict:
        return {"source": self.source, "rules": len(self.rules)}


def default_budget_file() -> Path:
    return resource_dir("benches") / "budgets.toml"


def no_budgets() -> Budgets:
    return Budgets([], "none")


def uniform(latency_ms: float | None, memory_mb: float | None) -> Budgets:
    """`--budget-ms X --budget-mb Y`: one limit for every row (MB = 10^6 bytes)."""
    for flag, v in (("--budget-ms", latency_ms), ("--budget-mb", memory_mb)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ToolkitError(f"{flag} must be a positive number, got {v}")
    rule = Rule(None, None, None, latency_ms=latency_ms,
                memory_bytes=None if memory_mb is None else memory_mb * 1e6)
    return Budgets([rule], "--budget-ms/--budget-mb")


def load(path: str | Path) -> Budgets:
    """Parse a budgets TOML; any malformed entry is reported as one line naming the file, entry and key."""
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"--budget: file not found: {path}")
    data = read_toml(path, "budget file")  # toolkit.io: binary, malformed, inf/nan -> one line naming the file
    unknown_top = sorted(set(data) - {"budget", "description"})
    if unknown_top:
        raise ToolkitError(f"budget file {path}: unknown top-level key '{unknown_top[0]}' (expected [[budget]] tables)")
    entries = data.get("budget", [])
    if not isinstance(entries, list):
        raise ToolkitError(f"budget file {path}: 'budget' must be an array of tables ([[budget]])")
    return Budgets([rule(e, f"budget file {path}: budget[{i}]") for i, e in enumerate(entries)], str(path))


def device_model(model: str) -> str:
    """The model that runs on the device: a trained cocorrrec ships its SCN (with correction inputs), so SCN's
    budgets apply to it."""
    from toolkit.models.registry import device_name

    return device_name(model)


def rule(e: dict, where: str) -> Rule:
    if not isinstance(e, dict):
        raise ToolkitError(f"{where} must be a table")
    for k in e:
        if k not in _KEYS:
            raise ToolkitError(f"{where}: unknown key '{k}' (valid: {', '.join(sorted(_KEYS))})")
    for k in ("model", "target"):
        if not isinstance(e.get(k), str) or not e[k]:
            raise ToolkitError(f"{where}: '{k}' is required and must be a string")
    for k in ("entry", "runtime", "note"):
        if k in e and not isinstance(e[k], str):
            raise ToolkitError(f"{where}: '{k}' must be a string, got {e[k]!r}")
    seq = e.get("seq_len")
    if seq is not None:
        seq = [seq] if isinstance(seq, int) and not isinstance(seq, bool) else seq
        if not (isinstance(seq, list) and seq and all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                                       for s in seq)):
            raise ToolkitError(f"{where}: 'seq_len' must be a positive integer or a list of them, got {e['seq_len']!r}")
    limits = {}
    for k in _LIMIT_KEYS:
        if k in e:
            v = e[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ToolkitError(f"{where}: '{k}' must be a positive number, got {v!r}")
            limits[k] = float(v)
    if not limits:
        raise ToolkitError(f"{where}: no limit given (set at least one of {', '.join(_LIMIT_KEYS)})")
    stat = e.get("latency_stat", "p50")
    if stat not in LATENCY_STATS:
        raise ToolkitError(f"{where}: 'latency_stat' must be one of {', '.join(LATENCY_STATS)}, got {stat!r}")
    return Rule(e["model"], e["target"], seq, e.get("entry"), e.get("runtime"), latency_stat=stat,
                note=e.get("note", ""), **limits)


def memory_value(row: dict) -> float | None:
    """The memory number a budget is checked against: the fresh-process peak RSS delta, else the static split."""
    mem = row.get("memory") or {}
    if mem.get("rss_peak_delta_bytes") is not None:
        return mem["rss_peak_delta_bytes"]
    parts = [mem.get(k) for k in ("weights_bytes", "activations_bytes", "state_bytes")]
    return sum(p for p in parts if p) if any(p is not None for p in parts) else None


def check(row: dict, budgets: Budgets) -> dict:
    """The row's `budget` field: the tightest matching limits and whether the row meets them (None = no budget);
    for a measured row also each checked value and its headroom (see `headroom`). Overruns are worded in ms / MiB."""
    rules = [r for r in budgets.rules if r.matches(row)]
    out = {"latency_ms": None, "latency_stat": None, "memory_bytes": None, "instructions": None, "pass": None,
           "broken": []}
    if not rules:
        return out
    ok = row.get("status") == "ok"
    broken = [] if ok else ["cell failed"]
    for r in rules:
        if r.latency_ms is not None and (out["latency_ms"] is None or r.latency_ms < out["latency_ms"]):
            out["latency_ms"], out["latency_stat"] = r.latency_ms, r.latency_stat
        if r.memory_bytes is not None and (out["memory_bytes"] is None or r.memory_bytes < out["memory_bytes"]):
            out["memory_bytes"] = r.memory_bytes
        if r.instructions is not None and (out["instructions"] is None or r.instructions < out["instructions"]):
            out["instructions"] = r.instructions
    inconclusive = []
    if ok:
        lat = (row.get("latency_ms") or {}).get(out["latency_stat"] or "p50")
        ci = latency_interval(row, out["latency_stat"] or "p50")
        if out["latency_ms"] is not None and lat is not None and ci is not None and ci[0] < out["latency_ms"] < ci[1]:
            inconclusive.append(f"latency {out['latency_stat']} {lat:.4g} ms, 95% interval {ci[0]:.4g}-{ci[1]:.4g} "
                                f"ms, straddles {out['latency_ms']:.4g} ms")
        elif out["latency_ms"] is not None and lat is not None and lat > out["latency_ms"]:
            broken.append(f"latency {out['latency_stat']} {lat:.4g} ms > {out['latency_ms']:.4g} ms")
        mem = memory_value(row)
        if out["memory_bytes"] is not None and mem is not None and mem > out["memory_bytes"]:
            broken.append(f"memory {mem / 2**20:.4g} MiB > {out['memory_bytes'] / 2**20:.4g} MiB")
        ins = row.get("instructions_per_inference")
        if out["instructions"] is not None and ins is not None and ins > out["instructions"]:
            broken.append(f"instructions {ins:.4g} > {out['instructions']:.4g}")
    # a limit inside the p50's interval is neither met nor broken: pass = None, verdict "inconclusive" (the bench
    # exits 0 with a warning for it unless --inconclusive fail); a broken limit still fails the row
    out["pass"] = False if broken else (None if inconclusive else True)
    out["broken"] = broken
    out["inconclusive"] = inconclusive
    out["verdict"] = ("failed" if not ok else "over") if broken else ("inconclusive" if inconclusive else "pass")
    if ok:
        out.update(headroom(row, out))
    return out


def latency_interval(row: dict, stat: str) -> tuple[float, float] | None:
    """The 95% interval of the row's latency statistic where the bench measured one (the p50's, from the
    interleaved rounds: toolkit.bench.noise); None for other statistics and for rows without one."""
    ci = (row.get("noise") or {}).get("p50_ci95") if stat == "p50" else None
    return (float(ci[0]), float(ci[1])) if ci and len(ci) == 2 else None


def headroom(row: dict, limits: dict) -> dict:
    """Per limit: the measured value and its headroom in percent of the limit (100 * (limit - value) / limit;
    negative = over by that much); `headroom_pct` and `tightest` name the limit with the least headroom."""
    out = {}
    lat = (row.get("latency_ms") or {}).get(limits.get("latency_stat") or "p50")
    for kind, value, limit in (("latency", lat, limits.get("latency_ms")),
                               ("memory", memory_value(row), limits.get("memory_bytes")),
                               ("instructions", row.get("instructions_per_inference"), limits.get("instructions"))):
        if limit is None or value is None:
            continue
        out[f"{kind}_value"] = value
        out[f"{kind}_headroom_pct"] = 100.0 * (limit - value) / limit
    pcts = {k[:-len("_headroom_pct")]: v for k, v in out.items() if k.endswith("_headroom_pct")}
    if pcts:
        out["tightest"] = min(pcts, key=pcts.get)
        out["headroom_pct"] = pcts[out["tightest"]]
    return out
