"""Bench output as words and the JSON: each row's verdict, the closing sentence and counts, the notes on noise and
profiles (the terminal tables are toolkit/cli/bench_report.py's, the JUnit XML for CI toolkit.bench.junit's, the PNG
of cost vs seq-len toolkit.bench.plots')."""

from __future__ import annotations

from pathlib import Path

from toolkit.io import atomic_write_json


def fmt_si(x, unit: str = "", digits: int = 3) -> str:
    """A count in SI prefixes, 3 significant digits ('1.23M'); '-' for None."""
    if x is None:
        return "-"
    x = float(x)
    for div, pre in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.{digits}g}{pre}{unit}"
    return f"{x:.{digits}g}{unit}"


def fmt_ms(x) -> str:
    """Milliseconds as the bench prints them: 3 decimals below 10 ms, 1 above; '-' for None."""
    return "-" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def row_name(r: dict) -> str:
    hist = f" h={r['history']}" if r.get("history") is not None else ""
    return f"{r['model']}/{r['entry']}/{r['runtime']}/L={r['seq_len']}{hist}@{r['target']}"


def _mib(x) -> str:
    """Bytes as MiB (the unit of every memory number the bench prints or draws)."""
    return "-" if x is None else f"{x / (1 << 20):.3g} MiB"


def short_name(r: dict) -> str:
    """A row as a reader says it: `scn window executorch L=25` (a step row: `h=200`, the history it was timed at)."""
    where = f"h={r['history']}" if r.get("history") is not None else f"L={r['seq_len']}"
    return f"{r['model']} {r['entry']} {r['runtime']} {where}"


def verdict(r: dict) -> str:
    """One word per row: pass, OVER (which limit), FAILED (not measured), inconclusive (the limit lies inside the
    p50's 95% interval), or 'no budget'."""
    if r["status"] != "ok":
        return "FAILED"
    b = r.get("budget") or {}
    if b.get("verdict") == "inconclusive":
        return "inconclusive"
    if b.get("pass") is True:
        return "pass"
    if b.get("pass") is False:
        kinds = [k for k in ("latency", "memory", "instructions") if (b.get(f"{k}_headroom_pct") or 0) < 0]
        short = {"latency": "lat", "memory": "mem", "instructions": "instr"}
        return "OVER " + "+".join(short[k] for k in kinds) if kinds else "OVER"
    return "no budget"


def limit_text(b: dict, kind: str | None) -> str:
    """A row budget's `kind` limit in its unit ('3 ms', '12 MiB', '1.2M'); '-' without one."""
    if kind == "latency":
        stat = b.get("latency_stat") or "p50"
        return f"{b['latency_ms']:.3g} ms" + ("" if stat == "p50" else f" {stat}")
    if kind == "memory":
        return _mib(b["memory_bytes"])
    if kind == "instructions":
        return fmt_si(b["instructions"])
    return "-"


def _used(r: dict, kind: str) -> tuple[float, str] | None:
    """(share of the row's `kind` limit used, 'at 71% of 3 ms') for a row checked against such a limit."""
    b = r.get("budget") or {}
    if b.get(f"{kind}_headroom_pct") is None:
        return None
    used = 1.0 - b[f"{kind}_headroom_pct"] / 100.0
    stat = b.get("latency_stat") or "p50"
    what = {"latency": f" ({stat})", "memory": " (peak RSS delta)", "instructions": " instructions"}[kind]
    return used, f"at {100 * used:.0f}% of {limit_text(b, kind)}{what}"


def _tightest(rows: list[dict]) -> list[str]:
    """Per kind of limit: the row closest to it, e.g. 'tightest latency: scn window executorch L=25 at 71% of 3 ms'."""
    out = []
    for kind in ("latency", "memory", "instructions"):
        used = [(u, r) for r in rows if (u := _used(r, kind)) is not None]
        if used:
            (_, text), r = max(used, key=lambda x: x[0][0])
            out.append(f"tightest {kind}: {short_name(r)} {text}")
    return out


def _names(rows: list[dict], most: int = 3, why=None) -> str:
    parts = [short_name(r) + (f" ({why(r)})" if why else "") for r in rows[:most]]
    if len(rows) > most:
        parts.append(f"and {len(rows) - most} more")
    return ", ".join(parts)


def closing_sentence(result: dict) -> str:
    """One sentence that answers 'does it fit?': e.g. 'all 9 rows within budget; tightest: scn window executorch
    L=25 at 71% of 3.0 ms (p50)', or which rows are over, failed, or were not judged (no budget)."""
    rows = result["rows"]
    n = len(rows)
    if not n:
        return "no rows were benched"
    within = [r for r in rows if verdict(r) == "pass"]
    over = [r for r in rows if verdict(r).startswith("OVER")]
    failed = [r for r in rows if r["status"] != "ok"]
    unsure = [r for r in rows if verdict(r) == "inconclusive"]
    unjudged = [r for r in rows if verdict(r) == "no budget"]
    tightest = ", ".join(_tightest(within))
    rows_word = "row" if n == 1 else "rows"
    if len(within) == n:
        return f"all {n} {rows_word} within budget" + (f"; {tightest}" if tightest else "")
    parts = []  # (count, what): the first reads 'k of n rows ...', the others 'k ...'
    if over:
        over = sorted(over, key=lambda r: (r.get("budget") or {}).get("headroom_pct") or 0.0)
        parts.append((len(over), "over budget: "
                      + _names(over, why=lambda r: "; ".join((r.get("budget") or {}).get("broken") or []))))
    if failed:
        parts.append((len(failed), f"failed, not measured: {_names(failed)}"))
    if unsure:
        parts.append((len(unsure), "inconclusive (the limit is inside the p50's 95% interval): " + _names(unsure)))
    if within:
        parts.append((len(within), "within budget" + (f" ({tightest})" if tightest else "")))
    if unjudged:
        if len(unjudged) == n:
            source = (result["environment"].get("budgets") or {}).get("source", "?")
            return f"none of the {n} {rows_word} has a budget, so none is judged (budgets: {source})"
        parts.append((len(unjudged), f"without a budget, not judged: {_names(unjudged)}"))
    parts = [f"{k} of {n} {rows_word} {what}" if i == 0 else f"{k} {what}" for i, (k, what) in enumerate(parts)]
    return "; ".join(parts)


def summary_line(result: dict) -> str:
    """The counts: every row is exactly one of within budget, over budget, failed, without a budget."""
    s = result["summary"]
    total = s["rows"]
    within = s.get("within_budget", 0)
    unsure = f", {s['inconclusive']} inconclusive" if s.get("inconclusive") else ""
    return (f"{total} row{'' if total == 1 else 's'}: {within} within budget, {s.get('over_budget', 0)} over budget, "
            f"{s['failed']} failed, {s.get('no_budget', 0)} without a budget{unsure}")


def noise_lines(result: dict) -> list[str]:
    """How the rows were timed and how sure the numbers are: the rounds, rows that hit the time cap, the spread
    between rounds, --compare's changes, and a warning when the machine was busy."""
    env = result["environment"]
    out = []
    timed = [r for r in result["rows"] if r.get("noise")]
    rnd = env.get("rounds") or {}
    if timed:
        cap = [r for r in timed if r["noise"].get("stopped") == "time cap"]
        stops = {g["stop"] for g in rnd.get("groups") or []}
        groups = rnd.get("groups") or []
        how = (f"timed in {'/'.join(str(g['rounds']) for g in groups)} interleaved rounds of "
               f"{rnd.get('calls_per_round')} calls per row ({sum(g['seconds'] for g in groups):.0f} s)"
               if groups else "timed in rounds")
        if rnd.get("target_ci"):
            tgt = f"±{100 * rnd['target_ci']:g}%"
            if cap:
                how += (f"; {len(timed) - len(cap)} of {len(timed)} rows within {tgt} (95% interval), time cap "
                        f"{rnd.get('max_seconds'):g} s reached first for: {_names(cap)}")
            else:
                how += f"; every row's 95% interval within {tgt} of its p50"
        elif stops == {"fixed"}:
            how += " (fixed: no --target-ci)"
        spread = max(timed, key=lambda r: r["noise"].get("round_spread_pct") or 0)
        how += (f"; widest spread between rounds: {short_name(spread)}, round p50s "
                f"{fmt_ms(spread['noise']['round_p50_min'])}-{fmt_ms(spread['noise']['round_p50_max'])} ms")
        out.append(how)
    cmp_ = result.get("compare")
    if cmp_:
        from toolkit.bench.compare import sentence

        out.append(sentence(cmp_))
        for r in result["rows"]:
            c = r.get("compare") or {}
            if c.get("verdict") in ("slower", "faster"):
                lo, hi = c["ratio_ci95"]
                out.append(f"  {c['verdict']}: {short_name(r)} {c['ratio']:.3f}x the baseline p50 (95% interval "
                           f"{lo:.3f}-{hi:.3f}x; {fmt_ms(c['baseline_p50'])} -> {fmt_ms(r['latency_ms']['p50'])} ms)")
    for w in env.get("warnings") or []:
        out.append(f"warning: {w}")
    return out


def profile_lines(r: dict, top: int = 8) -> list[str]:
    """A row's profile as text: the top ops (µs per call, share), partitions and fallback nodes, what is missing."""
    p = r.get("profile") or {}
    head = f"profile {row_name(r)}"
    if p.get("error"):
        return [f"{head}: profiling failed: {p['error']}"]
    lines = [f"{head} ({p.get('tool')})"]
    if p.get("kernel_us_per_run") is not None:
        run = f", whole run {p['run_us']:.1f} us" if p.get("run_us") is not None else ""
        if p.get("profiled_run_over_timed_p50"):
            run += f" = {p['profiled_run_over_timed_p50']:.1f}x the timed p50 (profiler overhead: read shares, not us)"
        lines.append(f"  kernels {p['kernel_us_per_run']:.1f} us per call{run}")
    for o in (p.get("ops") or [])[:top]:
        share = "" if o.get("share") is None else f" {100 * o['share']:.0f}%"
        lines.append(f"  {o['op']:<40} {o['us_per_run']:9.1f} us{share:>5} x{o['calls_per_run']:g}")
    if p.get("partitions") is not None:
        lines.append(f"  partitions {p['partitions']} {p.get('partitions_by_backend')}, "
                     f"non-delegated nodes {p.get('non_delegated_nodes')}: "
                     + ", ".join(f"{k} x{v}" for k, v in (p.get("non_delegated") or {}).items()))
    if p.get("missing"):
        lines.append(f"  cannot: {p['missing']}")
    return lines


def write_json(result: dict, path: str | Path) -> Path:
    return atomic_write_json(path, result)
