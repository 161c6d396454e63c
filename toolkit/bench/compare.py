"""`toolkit bench --compare BASELINE.json`: each row faster / slower / no change against a recorded bench JSON.

The regression check a CI job needs. A row is matched to the baseline row with the same model, entry, runtime, L,
history and target. Its `compare` field: the baseline's p50 and interval, the ratio p50 / baseline p50 with a 95%
interval from the two rows' p50 intervals (toolkit.bench.noise.ratio_ci) and the verdict:

- "slower" / "faster": the ratio's interval excludes 1 and the ratio moved by at least `min_change` (default 20%:
  the bench's own run-to-run reproducibility on an idle 2-core VM, where one row's p50 moved between two runs of
  the same command by 7% at the median, 18% at p90 and 21% at p95 over 240 row pairs; benches/baselines/
  bench_noise.json). Smaller effects are for `--min-change` on a quiet dedicated machine, or for one run that
  benches the old and the new artifact dirs side by side, where ratios between rows held within 4-6%;
- "no change": otherwise (also a row compared with itself: ratio 1);
- "not compared": the row failed in this run (the run fails for that anyway).

The run's own machine-speed probe (the floor probe's matmul throughput, measured before the rounds) is compared
with the baseline's: on a shared or virtual machine the whole machine can run some percent faster or slower for
minutes, moving every row alike. When it moved by at least 5%, the closing line says so beside the verdicts
(`machine_floor`): a verdict of that size may be the machine's, and ratios between rows of one run still hold.

Rows of one run also move together: between two runs of the same command on an idle VM every row's p50 moved by
a common factor (the median ratio 0.87, 1.02 and 1.09 in three recorded pairs) with each row within 6-6.5% of it,
where the raw ratios spread up to 17% (benches/baselines/bench_noise.json). So `common_shift` gives the median ratio
over the compared rows and each row's ratio to it (`ratio_to_shift`); when the median moved by at least 5% the
closing line says so and names the largest change against it. Verdicts stay on the raw ratios: a runtime upgrade
that slows every row alike is a regression too, and the common shift alone cannot tell it from the machine.

Refused with one line and exit 2 before any export or timing: a baseline that is missing, not JSON, not a bench
result, recorded on another machine (CPU model, cores, target or threads differ) or without a row (or without a
p50 interval: recorded before the bench measured them) for a row of this run; the line names those rows.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from toolkit.bench import noise
from toolkit.errors import ToolkitError
from toolkit.rows import SCHEMA

MIN_CHANGE = 0.20
MACHINE_NOTE = 0.05  # a machine floor that moved this much is said beside the verdicts


def _key(r: dict) -> tuple:
    return (r.get("model"), r.get("entry"), r.get("runtime"), r.get("seq_len"), r.get("history"), r.get("target"))


def _name(r: dict) -> str:
    where = f"h={r['history']}" if r.get("history") is not None else f"L={r.get('seq_len')}"
    return f"{r.get('model')} {r.get('entry')} {r.get('runtime')} {where}"


def _names(items: list[str], most: int = 4) -> str:
    return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")


def load_baseline(path: str | Path) -> dict:
    """The baseline bench JSON, or one line (exit 2) saying why no row can be compared."""
    path = Path(path)
    where = f"--compare {path}: cannot compare any row"
    if not path.is_file():
        raise ToolkitError(f"{where}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ToolkitError(f"{where}: not a text file") from None
    except json.JSONDecodeError as e:
        raise ToolkitError(f"{where}: not JSON ({e.msg}, line {e.lineno})") from None
    except OSError as e:
        raise ToolkitError(f"{where}: cannot read it ({e.strerror})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ToolkitError(f"{where}: not a toolkit bench result (schema {got!r}, expected {SCHEMA!r})")
    if not isinstance(data.get("rows"), list) or not all(isinstance(r, dict) for r in data["rows"]) \
            or not isinstance(data.get("environment"), dict):
        raise ToolkitError(f"{where}: malformed bench result (no 'rows' list or 'environment')")
    data["_path"] = str(path)
    return data


def machine_of(env: dict) -> dict:
    """What must match for two benches to be comparable: CPU model, core count, target and its threads."""
    tgt = env.get("target") or {}
    return {"cpu_model": env.get("cpu_model"), "cores": env.get("cores"), "target": tgt.get("name"),
            "threads": env.get("threads")}


def check_machine(baseline: dict, current: dict) -> None:
    """`current`: machine_of this run. Another machine: one line, exit 2."""
    base = machine_of(baseline["environment"])
    diff = [k for k in base if base[k] != current.get(k)]
    if diff:
        say = lambda m: ", ".join(f"{k} {m.get(k)!r}" for k in diff)  # noqa: E731
        raise ToolkitError(f"--compare {baseline['_path']}: cannot compare any row: recorded on another machine "
                           f"({say(base)}; this run: {say(current)})")


def _problem(base: dict | None) -> str | None:
    if base is None:
        return "not in the baseline"
    if base.get("status") != "ok" or not (base.get("latency_ms") or {}).get("p50"):
        return "failed or not timed in the baseline"
    ci = (base.get("noise") or {}).get("p50_ci95")
    if not ci or len(ci) != 2:
        return "no p50 interval in the baseline (recorded before the bench measured one: re-record it)"
    return None


def check_rows(baseline: dict, rows: list[dict]) -> None:
    """Every row to come must have a comparable baseline row; else one line naming those that cannot, exit 2."""
    by_key = {_key(r): r for r in baseline["rows"]}
    bad: dict[str, list[str]] = {}
    for r in rows:
        why = _problem(by_key.get(_key(r)))
        if why:
            bad.setdefault(why, []).append(_name(r))
    if bad:
        n = sum(len(v) for v in bad.values())
        parts = "; ".join(f"{_names(v)} ({why})" for why, v in bad.items())
        raise ToolkitError(f"--compare {baseline['_path']}: cannot compare {n} of {len(rows)} row"
                           f"{'' if len(rows) == 1 else 's'}: {parts}")


def compare_row(row: dict, base: dict, min_change: float = MIN_CHANGE) -> dict:
    """The row's `compare` field against its baseline row (module doc)."""
    out = {"baseline_p50": None, "baseline_p50_ci95": None, "ratio": None, "ratio_ci95": None,
           "verdict": "not compared", "min_change": min_change,
           "same_artifact": ((row.get("artifact") or {}).get("sha256") is not None
                             and (row.get("artifact") or {}).get("sha256") == (base.get("artifact") or {}).get("sha256"))}
    lat, blat = row.get("latency_ms") or {}, base.get("latency_ms") or {}
    ci, bci = (row.get("noise") or {}).get("p50_ci95"), (base.get("noise") or {}).get("p50_ci95")
    out["baseline_p50"], out["baseline_p50_ci95"] = blat.get("p50"), bci
    if row.get("status") != "ok" or not lat.get("p50") or not ci or not blat.get("p50") or not bci:
        return out
    ratio, lo, hi = noise.ratio_ci(lat["p50"], ci, blat["p50"], bci)
    out.update(ratio=ratio, ratio_ci95=[lo, hi], verdict=noise.change_verdict(ratio, lo, hi, min_change))
    return out


def machine_floor(result: dict, baseline: dict) -> dict | None:
    """Matmul throughput of this run's floor probe over the baseline's (>1: the machine ran faster now), or None
    where either run has no probe."""
    now = ((result.get("environment") or {}).get("floor") or {}).get("gflops_used")
    then = ((baseline.get("environment") or {}).get("floor") or {}).get("gflops_used")
    if not now or not then:
        return None
    return {"matmul_gflops": now, "baseline_matmul_gflops": then, "ratio": now / then}


def shift_of(ratios: list[float]) -> tuple[float, float] | None:
    """(median ratio, largest |ratio / median - 1|) of at least 3 ratios; None for fewer (a median of two is no
    shift). Also benches/bench_noise.py's measure of how far rows moved apart."""
    if len(ratios) < 3:
        return None
    median = statistics.median(ratios)
    return median, max(abs(r / median - 1) for r in ratios)


def common_shift(rows: list[dict]) -> dict | None:
    """The median p50 ratio over the compared rows and the largest change of a row against it (module doc); sets
    each row's `compare.ratio_to_shift`. None with fewer than 3 compared rows."""
    timed = [r["compare"] for r in rows if (r.get("compare") or {}).get("ratio")]
    shift = shift_of([c["ratio"] for c in timed])
    if shift is None:
        return None
    for c in timed:
        c["ratio_to_shift"] = c["ratio"] / shift[0]
    return {"median_ratio": shift[0], "rows": len(timed), "worst_change_vs_shift": shift[1]}


def compare(result: dict, baseline: dict, min_change: float = MIN_CHANGE) -> dict:
    """Set `compare` on every row of `result`; returns the run's `compare` summary (also stored in the result)."""
    by_key = {_key(r): r for r in baseline["rows"]}
    counts = {"faster": 0, "slower": 0, "no change": 0, "not compared": 0}
    for r in result["rows"]:
        base = by_key.get(_key(r))
        r["compare"] = compare_row(r, base, min_change) if base is not None else {"verdict": "not compared"}
        counts[r["compare"]["verdict"]] += 1
    summary = {"baseline": baseline["_path"], "baseline_created": baseline["environment"].get("created"),
               "baseline_command": baseline["environment"].get("command"), "min_change": min_change, **counts,
               "machine_floor": machine_floor(result, baseline), "common_shift": common_shift(result["rows"]),
               "how": "ratio = p50 / baseline p50; 95% interval from both rows' p50 intervals on the log scale; "
                      "slower/faster when it excludes 1 and the ratio moved by at least min_change"}
    result["compare"] = summary
    return summary


def sentence(summary: dict) -> str:
    parts = [f"{summary[k]} {k}" for k in ("slower", "faster", "no change", "not compared") if summary[k]]
    text = (f"compared with {summary['baseline']} (changes under {100 * summary['min_change']:g}% are not "
            f"reported): " + ", ".join(parts))
    floor = summary.get("machine_floor")
    if floor and abs(floor["ratio"] - 1) >= MACHINE_NOTE:
        text += (f"; the machine itself ran {abs(floor['ratio'] - 1):.0%} {'faster' if floor['ratio'] > 1 else 'slower'}"
                 f" than for the baseline (matmul floor {floor['matmul_gflops']:.1f} vs "
                 f"{floor['baseline_matmul_gflops']:.1f} GFLOP/s): changes of that size may be the machine's")
    shift = summary.get("common_shift")
    if shift and abs(shift["median_ratio"] - 1) >= MACHINE_NOTE:
        text += (f"; the rows moved together (median ratio {shift['median_ratio']:.2f}), and against that common "
                 f"shift no row changed by more than {shift['worst_change_vs_shift']:.0%}: the whole machine or "
                 "runtime moved, not one artifact")
    return text
