"""Bench output: a rich table on the terminal and the JSON (the JUnit XML for CI is toolkit.bench.junit, the PNG of
cost vs seq-len toolkit.bench.plots)."""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from toolkit.io import atomic_write_json


def _si(x, unit: str = "", digits: int = 3) -> str:
    if x is None:
        return "-"
    x = float(x)
    for div, pre in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.{digits}g}{pre}{unit}"
    return f"{x:.{digits}g}{unit}"


def _bytes(x) -> str:
    if x is None:
        return "-"
    x = float(x)
    for div, pre in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(x) >= div:
            return f"{x / div:.3g}{pre}"
    return f"{int(x)} B"


def _ms(x) -> str:
    return "-" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def row_name(r: dict) -> str:
    hist = f" h={r['history']}" if r.get("history") is not None else ""
    return f"{r['model']}/{r['entry']}/{r['runtime']}/L={r['seq_len']}{hist}@{r['target']}"


def _mib(x) -> str:
    """Bytes as MiB (the unit of every memory number the bench prints or draws)."""
    return "-" if x is None else f"{x / (1 << 20):.3g} MiB"


def _caption(result: dict) -> str:
    env = result["environment"]
    if env["target"].get("kind") == "emulated":
        return "instructions from the emulated ARM64 target, not time"
    return f"host-measured on {env['cpu_model']} - NOT device latency"


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


def _limit_kind(b: dict) -> str | None:
    """The limit the compact table shows: latency when there is one, else memory, else instructions."""
    for kind, key in (("latency", "latency_ms"), ("memory", "memory_bytes"), ("instructions", "instructions")):
        if b.get(key) is not None:
            return kind
    return None


def _limit_text(b: dict, kind: str | None) -> str:
    if kind == "latency":
        stat = b.get("latency_stat") or "p50"
        return f"{b['latency_ms']:.3g} ms" + ("" if stat == "p50" else f" {stat}")
    if kind == "memory":
        return _mib(b["memory_bytes"])
    if kind == "instructions":
        return _si(b["instructions"])
    return "-"


def _pct(x) -> str:
    return "-" if x is None else f"{x:+.0f}%"


def _ci(r: dict) -> str:
    """The p50's 95% interval as +-% of the p50 (its larger side), '-' where not timed in rounds."""
    hw = (r.get("noise") or {}).get("ci_halfwidth_pct")
    return "-" if hw is None else (f"{hw:.1f}%" if hw < 9.95 else f"{hw:.0f}%")


def _vs(r: dict) -> str:
    """--compare: the ratio to the baseline p50 and the verdict in a few characters (e.g. '1.12x slower')."""
    c = r.get("compare") or {}
    if c.get("ratio") is None:
        return "-"
    word = {"slower": " slower", "faster": " faster"}.get(c["verdict"], " =")
    return f"{c['ratio']:.2f}x{word}"


def compact_table(result: dict, width: int | None = None) -> Table:
    """The default table: one line per row that fits 100 columns; the numbers a verdict needs are never cut.

    Columns: model, entry, runtime, L (step rows: the history h), p50, +-95% (the p50's 95% interval, its larger
    side in % of the p50), p90, limit, headroom (% of the limit left, negative = over), verdict, load (cold-start:
    opening the artifact; left out below 90 columns or with --compare, the line under the table names the slowest
    load); with --compare, vs base (p50 / baseline p50 and its verdict) instead of p90. Name columns fold; number
    columns never wrap.
    """
    emulated = result["environment"]["target"].get("kind") == "emulated"
    compared = "compare" in result
    load_col = not emulated and not compared and (width is None or width >= 90)
    caption = (_caption(result) + "; ±95% = the p50's 95% interval (% of p50); headroom = share of the limit left "
               "(negative: over); h = a streaming step timed after h clicks of history; load = opening the artifact "
               "(cold start); --wide: every column")
    t = Table(title=f"toolkit bench - {result['environment']['target']['name']}", caption=caption,
              box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, collapse_padding=True)
    for col in ("model", "entry", "runtime"):
        t.add_column(col, overflow="fold", ratio=None)
    t.add_column("L", justify="right", no_wrap=True)
    if emulated:
        t.add_column("instr/inf", justify="right", no_wrap=True)
    else:
        t.add_column("p50 ms", justify="right", no_wrap=True)
        t.add_column("±95%", justify="right", no_wrap=True)
        if compared:
            t.add_column("vs base", justify="right", no_wrap=True)
        else:
            t.add_column("p90 ms", justify="right", no_wrap=True)
    t.add_column("limit", justify="right", no_wrap=True)
    t.add_column("headroom", justify="right", no_wrap=True)
    t.add_column("verdict", no_wrap=True)
    if load_col:
        t.add_column("load ms", justify="right", no_wrap=True)
    for r in result["rows"]:
        b = r.get("budget") or {}
        lat = r.get("latency_ms") or {}
        kind = _limit_kind(b)
        v = verdict(r)
        style = {"pass": "green", "FAILED": "red", "no budget": "dim", "inconclusive": "yellow"}.get(v, "red")
        L = f"h={r['history']}" if r.get("history") is not None else str(r["seq_len"])
        cells = [r["model"], r["entry"], r["runtime"], L]
        if emulated:
            cells.append(_si(r.get("instructions_per_inference")))
        else:
            cells += [_ms(lat.get("p50")), _ci(r), _vs(r) if compared else _ms(lat.get("p90"))]
        cells += [_limit_text(b, kind), _pct(b.get(f"{kind}_headroom_pct") if kind else None), f"[{style}]{v}[/]"]
        if load_col:
            cells.append(_ms((r.get("cold_start_ms") or {}).get("load")))
        t.add_row(*cells)
    return t


def table(result: dict, wide: bool = False, width: int | None = None) -> Table:
    """`wide=False`: the compact default (compact_table, for a console `width` columns wide); `wide=True`: every
    measured column, cold start included."""
    if not wide:
        return compact_table(result, width)
    env = result["environment"]
    emulated = env["target"].get("kind") == "emulated"
    t = Table(title=f"toolkit bench - target {env['target']['name']} ({env['target'].get('description', '')})",
              caption=("instructions from the emulated ARM64 target, not time"
                       if emulated else f"host-measured on {env['cpu_model']} - NOT device latency; "
                                        f"FLOPs = matmul-family ops (FlopCounterMode) / analytic"),
              header_style="bold", show_lines=False)
    for col, just in (("model", "left"), ("entry", "left"), ("runtime", "left"), ("L", "right"), ("hist", "right"),
                      ("FLOPs cnt/ana", "right"), ("params¬tbl", "right"), ("artifact", "right"),
                      ("weights", "right"), ("act/arena", "right"), ("state", "right"), ("RSS Δ", "right")):
        t.add_column(col, justify=just, no_wrap=col in ("model", "entry", "runtime"))
    if emulated:
        t.add_column("instr/inf", justify="right")
    else:
        for col in ("p50 ms", "±95%", "p90 ms", "p99 ms", "load ms", "1st ms", "floor ms", "x floor"):
            t.add_column(col, justify="right")
    t.add_column("limit", justify="right")
    t.add_column("headroom", justify="right")
    t.add_column("budget", justify="left")
    for r in result["rows"]:
        mem = r.get("memory") or {}
        lat = r.get("latency_ms") or {}
        b = r.get("budget") or {}
        cold = r.get("cold_start_ms") or {}
        act = mem.get("activations_bytes") if mem.get("activations_bytes") is not None else mem.get("arena_peak_bytes")
        if r["status"] != "ok":
            budget = "[red]FAILED[/]"
        elif b.get("verdict") == "inconclusive":
            budget = "[yellow]inconclusive[/]"
        elif b.get("pass") is True:
            budget = "[green]pass[/]"
        elif b.get("pass") is False:
            budget = "[red]BROKEN: " + "; ".join(b.get("broken", [])) + "[/]"
        else:
            budget = "[dim]no budget[/]"
        cells = [r["model"], r["entry"], r["runtime"], str(r["seq_len"]),
                 "-" if r.get("history") is None else str(r["history"]),
                 f"{_si(r.get('flops'))}/{_si(r.get('flops_analytic'))}", _si(r.get("params_excluding_item_table")),
                 _bytes(r.get("artifact_bytes")), _bytes(mem.get("weights_bytes")), _bytes(act),
                 _bytes(mem.get("state_bytes")), _bytes(mem.get("rss_peak_delta_bytes"))]
        if emulated:
            cells.append(_si(r.get("instructions_per_inference")))
        else:
            floor = r.get("floor") or {}
            xf = r.get("x_of_floor")
            cells += [_ms(lat.get("p50")), _ci(r), _ms(lat.get("p90")), _ms(lat.get("p99")), _ms(cold.get("load")),
                      _ms(cold.get("first_inference")), _ms(floor.get("ms")), "-" if xf is None else f"{xf:.1f}x"]
        limits = [x for x in (None if b.get("latency_ms") is None else _limit_text(b, "latency"),
                              None if b.get("memory_bytes") is None else _limit_text(b, "memory"),
                              None if b.get("instructions") is None else _limit_text(b, "instructions")) if x]
        tight = b.get("tightest")
        cells += [" / ".join(limits) or "-",
                  "-" if tight is None else f"{_pct(b.get('headroom_pct'))} {tight[:3]}", budget]
        broken = r["status"] != "ok" or b.get("pass") is False
        t.add_row(*cells, style="red" if broken else None)
    return t


def _used(r: dict, kind: str) -> tuple[float, str] | None:
    """(share of the row's `kind` limit used, 'at 71% of 3 ms') for a row checked against such a limit."""
    b = r.get("budget") or {}
    if b.get(f"{kind}_headroom_pct") is None:
        return None
    used = 1.0 - b[f"{kind}_headroom_pct"] / 100.0
    stat = b.get("latency_stat") or "p50"
    what = {"latency": f" ({stat})", "memory": " (peak RSS delta)", "instructions": " instructions"}[kind]
    return used, f"at {100 * used:.0f}% of {_limit_text(b, kind)}{what}"


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


def print_result(result: dict, console: Console | None = None, wide: bool = False, closing: bool = True) -> None:
    """The table (compact by default, fits 100 columns; `wide`: every column), notes, then (`closing`) the counts and
    the verdict sentence as the last two lines (print_closing)."""
    console = console or Console()
    if wide:
        out = console if console.is_terminal else Console(file=console.file, width=max(console.width, 256))
    else:
        out = console if console.is_terminal else Console(file=console.file, width=max(console.width, 100))
    out.print(table(result, wide=wide, width=out.width))
    for r in result["rows"]:
        if r["status"] != "ok":
            console.print(f"[red]failed[/] {escape(row_name(r))}: {escape(str(r['error']))}", highlight=False, soft_wrap=True)
        elif (r.get("budget") or {}).get("pass") is False:
            console.print(f"[red]over budget[/] {escape(row_name(r))}: {escape('; '.join(r['budget'].get('broken') or []))}",
                          highlight=False, soft_wrap=True)
        elif (r.get("budget") or {}).get("verdict") == "inconclusive":
            console.print(f"[yellow]inconclusive[/] {escape(row_name(r))}: "
                          f"{escape('; '.join(r['budget'].get('inconclusive') or []))}", highlight=False, soft_wrap=True)
    for line in noise_lines(result):
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    probe = result["environment"].get("floor") or {}
    if probe.get("ok") and (wide or any("profile" in r for r in result["rows"])):  # the floor: --wide, --profile
        empties = ", ".join(f"{k} {v * 1e3:.1f} us" for k, v in sorted(probe.get("empty_call_ms", {}).items()))
        gf = ", ".join(f"{k}x{k} {v:.1f}" for k, v in probe.get("matmul_gflops", {}).items())
        console.print(f"floor = FLOPs / {probe['gflops_used']:.1f} GFLOP/s (fp32 matmul, 1 thread: {gf}) + empty "
                      f"call ({empties})", highlight=False, soft_wrap=True)
    for r in result["rows"]:
        if "profile" in r:
            for line in profile_lines(r):
                console.print(line, highlight=False, soft_wrap=True, markup=False)
    loads = [(r["cold_start_ms"]["load"], r) for r in result["rows"]
             if (r.get("cold_start_ms") or {}).get("load") is not None]
    if loads:
        ms, r = max(loads, key=lambda x: x[0])
        first = r["cold_start_ms"].get("first_inference")
        console.print(f"cold start: slowest load {_ms(ms)} ms ({short_name(r)}), its first call "
                      f"{_ms(first)} ms; load = opening the artifact in a fresh process", highlight=False,
                      soft_wrap=True)
    if closing:
        print_closing(result, console)


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
                f"{_ms(spread['noise']['round_p50_min'])}-{_ms(spread['noise']['round_p50_max'])} ms")
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
                           f"{lo:.3f}-{hi:.3f}x; {_ms(c['baseline_p50'])} -> {_ms(r['latency_ms']['p50'])} ms)")
    for w in env.get("warnings") or []:
        out.append(f"warning: {w}")
    return out


def print_closing(result: dict, console: Console, wrote: list[str] | None = None) -> None:
    """The files written, the counts (every row once: within / over / failed / no budget), the verdict sentence."""
    if wrote:
        console.print(f"wrote {', '.join(wrote)}", highlight=False, soft_wrap=True)
    ok = result["summary"]["pass"]
    console.print(summary_line(result), highlight=False, soft_wrap=True)
    console.print(f"{'[green]' if ok else '[red]'}verdict:[/] {escape(closing_sentence(result))}", highlight=False,
                  soft_wrap=True)


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
