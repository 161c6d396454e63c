"""Bench output: a rich table on the terminal, the JSON, a JUnit XML for CI, and a PNG of cost vs seq-len."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from toolkit.io import atomic_write_bytes, atomic_write_json


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


def write_junit(result: dict, path: str | Path) -> Path:
    """One testcase per row: failure = budget broken, error = the cell failed, skipped = no budget applies."""
    rows = result["rows"]
    suite = ET.Element("testsuite", {
        "name": f"toolkit bench ({result['environment']['target']['name']})",
        "tests": str(len(rows)),
        "failures": str(sum(1 for r in rows if r["status"] == "ok" and r["budget"].get("pass") is False)),
        "errors": str(sum(1 for r in rows if r["status"] != "ok")),
        "skipped": str(sum(1 for r in rows if r["status"] == "ok" and r["budget"].get("pass") is None)),
        "timestamp": result["environment"].get("created", ""),
        "hostname": result["environment"].get("hostname", ""),
    })
    props = ET.SubElement(suite, "properties")
    for k in ("cpu_model", "cores", "threads", "suite"):
        ET.SubElement(props, "property", {"name": k, "value": str(result["environment"].get(k))})
    for r in rows:
        lat = r.get("latency_ms") or {}
        case = ET.SubElement(suite, "testcase", {"classname": f"bench.{r['model']}.{r['entry']}.{r['runtime']}",
                                                 "name": row_name(r),
                                                 "time": f"{(lat.get('p50') or 0) / 1e3:.6f}"})
        b = r.get("budget") or {}
        if r["status"] != "ok":
            ET.SubElement(case, "error", {"message": str(r.get("error"))[:500], "type": "CellFailed"})
        elif b.get("pass") is False:
            ET.SubElement(case, "failure", {"message": "; ".join(b.get("broken", [])), "type": "BudgetBroken"})
        elif b.get("verdict") == "inconclusive":
            ET.SubElement(case, "skipped", {"message": "inconclusive: " + "; ".join(b.get("inconclusive") or [])})
        elif b.get("pass") is None:
            ET.SubElement(case, "skipped", {"message": "no budget for this cell"})
        out = ET.SubElement(case, "system-out")
        cold = r.get("cold_start_ms") or {}
        out.text = (f"p50={lat.get('p50')} ms p90={lat.get('p90')} ms flops={r.get('flops')} "
                    f"rss_delta={(r.get('memory') or {}).get('rss_peak_delta_bytes')} "
                    f"load={cold.get('load')} ms first_inference={cold.get('first_inference')} ms "
                    f"headroom={b.get('headroom_pct')}% ({b.get('tightest')}) measured_on={r['measured_on']}")
    tree = ET.ElementTree(suite)
    ET.indent(tree)
    return atomic_write_bytes(path, ET.tostring(suite, encoding="utf-8", xml_declaration=True))


RUNTIME_COLORS = {"executorch": "tab:blue", "onnxruntime": "tab:orange", "torch": "tab:green",
                  "coreml": "tab:purple", "onnxruntime-ort": "tab:red"}
_SPARE_COLORS = ("tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def _runtime_colors(rows: list[dict]) -> dict[str, str]:
    colors, spare = {}, iter(_SPARE_COLORS * 4)
    for rt in dict.fromkeys(r["runtime"] for r in rows):
        colors[rt] = RUNTIME_COLORS.get(rt) or next(spare)
    return colors


def plot_kind(result: dict) -> str:
    """'sweep' when the stateless rows were measured at more than one L (the plot draws cost vs L), else 'single'
    (one horizontal bar per row; a step row timed at several histories is one bar per history)."""
    ls = {r["seq_len"] for r in result["rows"] if r.get("history") is None and r["status"] == "ok"}
    return "sweep" if len(ls) > 1 else "single"


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def _title(result: dict, what: str, width: int = 130) -> str:
    env = result["environment"]
    import textwrap

    return (f"{what} - {env['target']['name']} on {env.get('cpu_model', '?')}, {env.get('threads', '?')} thread(s); "
            f"host-measured, not device latency\n" + textwrap.fill(f"verdict: {closing_sentence(result)}", width))


def write_plot(result: dict, path: str | Path) -> Path:
    """The bench as a picture that answers 'does it fit the budget?' (units as in the table: ms, MiB).

    One L (plot_kind 'single'): a horizontal bar per row (model x entry x runtime): p50 latency with a p50-p90
    whisker and the row's latency limit as a black tick; memory (peak RSS delta) with its limit; cold start (load,
    then first inference). Several L ('sweep'): per (model, entry), latency p50 vs L with the p50-p90 band, and
    memory vs L, a colour per runtime, the budget as a dashed line in the runtime's colour.
    """
    import matplotlib

    matplotlib.use("Agg")
    if plot_kind(result) == "sweep":
        return _save(_sweep_figure(result), path)
    return _save(_single_figure(result), path)


def _single_figure(result: dict):
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    rows = result["rows"]
    colors = _runtime_colors(rows)
    n = max(1, len(rows))
    fig, axes = plt.subplots(1, 3, figsize=(15, 1.6 + 0.34 * n), sharey=True,
                             gridspec_kw={"width_ratios": [1.5, 1, 1]})
    ys = list(range(len(rows)))[::-1]  # first row on top
    labels = [f"{r['model']} {r['entry']} "
              + (f"h={r['history']}" if r.get("history") is not None else f"L={r['seq_len']}")
              + f"  {r['runtime']}" for r in rows]
    lat_ax, mem_ax, cold_ax = axes
    p50s = [(r.get("latency_ms") or {}).get("p50") for r in rows]
    p90s = [(r.get("latency_ms") or {}).get("p90") for r in rows]
    lims = [(r.get("budget") or {}).get("latency_ms") for r in rows]
    known = [v for v in p50s + p90s + lims if v]
    lo = min(known) / 2 if known else 0.01
    for y, r, p50, p90, lim in zip(ys, rows, p50s, p90s, lims):
        c = colors[r["runtime"]]
        if p50 is None:
            lat_ax.text(lo * 1.1, y, "failed: not measured" if r["status"] != "ok" else "not timed",
                        va="center", fontsize=8, color="red")
        else:
            lat_ax.barh(y, p50 - lo, left=lo, color=c, height=0.7)
            if p90 is not None:
                lat_ax.errorbar(p50, y, xerr=[[0], [max(0.0, p90 - p50)]], fmt="none", ecolor="0.3", capsize=2.5,
                                elinewidth=0.9)
        if lim is not None:
            lat_ax.plot([lim], [y], marker="|", markersize=14, markeredgewidth=2.2, color="black")
    lat_ax.set_xscale("log")
    lat_ax.set_xlim(left=lo)
    lat_ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    lat_ax.set_xlabel("latency p50 per call (ms, log); whisker to p90")
    lat_ax.set_title("warm latency vs limit")
    mems = [(r.get("memory") or {}).get("rss_peak_delta_bytes") for r in rows]
    mlims = [(r.get("budget") or {}).get("memory_bytes") for r in rows]
    for y, r, m, lim in zip(ys, rows, mems, mlims):
        if m is not None:
            mem_ax.barh(y, m / 2**20, color=colors[r["runtime"]], height=0.7)
        if lim is not None:
            mem_ax.plot([lim / 2**20], [y], marker="|", markersize=14, markeredgewidth=2.2, color="black")
    mem_ax.set_xlim(left=0)
    mem_ax.set_xlabel("peak RSS delta of the measuring process (MiB)")
    mem_ax.set_title("memory vs limit")
    for y, r in zip(ys, rows):
        cold = r.get("cold_start_ms") or {}
        load, first = cold.get("load"), cold.get("first_inference")
        if load is not None:
            cold_ax.barh(y, load, color=colors[r["runtime"]], height=0.7)
            if first is not None:
                cold_ax.barh(y, first, left=load, color=colors[r["runtime"]], height=0.7, alpha=0.45,
                             hatch="///", edgecolor="white")
    cold_ax.set_xlim(left=0)
    if not any((r.get("cold_start_ms") or {}).get("load") is not None for r in rows):
        cold_ax.text(0.5, 0.5, "no cold-start times in this result", transform=cold_ax.transAxes, ha="center",
                     fontsize=9, color="0.4")
    cold_ax.set_xlabel("cold start (ms): load, then first call (hatched)")
    cold_ax.set_title("cold start")
    lat_ax.set_yticks(ys)
    lat_ax.set_yticklabels(labels, fontsize=8)
    for tick, r in zip(lat_ax.get_yticklabels(), rows):
        v = verdict(r)
        if v == "FAILED" or v.startswith("OVER"):
            tick.set_color("red")
    for ax in axes:
        ax.grid(True, axis="x", alpha=0.3, which="both")
        ax.set_ylim(-0.7, len(rows) - 0.3)
    handles = [Patch(color=c, label=rt) for rt, c in colors.items()]
    handles.append(Line2D([], [], marker="|", markersize=12, markeredgewidth=2.2, color="black", linestyle="none",
                          label="budget limit"))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles), frameon=False)
    fig.suptitle(_title(result, "toolkit bench"), fontsize=9)
    fig.tight_layout()
    return fig


def _sweep_figure(result: dict):
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    rows = [r for r in result["rows"] if r["status"] == "ok"]
    colors = _runtime_colors(result["rows"])
    pairs = list(dict.fromkeys((r["model"], r["entry"]) for r in result["rows"]))
    fig, axes = plt.subplots(max(1, len(pairs)), 2, figsize=(12, 1.2 + 2.6 * max(1, len(pairs))), squeeze=False)
    for (model, entry), (lat_ax, mem_ax) in zip(pairs, axes):
        step = any(r.get("history") is not None for r in rows if (r["model"], r["entry"]) == (model, entry))
        for rt, c in colors.items():
            rs = sorted((r for r in rows if (r["model"], r["entry"], r["runtime"]) == (model, entry, rt)),
                        key=lambda r: r["seq_len"])
            xs = [r["history"] if r.get("history") is not None else r["seq_len"] for r in rs]
            if not rs:
                continue
            lat = [(r.get("latency_ms") or {}) for r in rs]
            pts = [(x, d.get("p50"), d.get("p90")) for x, d in zip(xs, lat) if d.get("p50") is not None]
            if pts:
                px, p50, p90 = zip(*pts)
                lat_ax.plot(px, p50, color=c, marker="o", markersize=3.5)
                if all(v is not None for v in p90):
                    lat_ax.fill_between(px, p50, p90, color=c, alpha=0.15, linewidth=0)
            lim = [(x, (r.get("budget") or {}).get("latency_ms")) for x, r in zip(xs, rs)]
            lim = [(x, v) for x, v in lim if v is not None]
            if lim:
                lat_ax.plot(*zip(*lim), color=c, linestyle="--", linewidth=1.2)
            mem = [(x, (r.get("memory") or {}).get("rss_peak_delta_bytes")) for x, r in zip(xs, rs)]
            mem = [(x, v / 2**20) for x, v in mem if v is not None]
            if mem:
                mem_ax.plot(*zip(*mem), color=c, marker="o", markersize=3.5)
            mlim = [(x, (r.get("budget") or {}).get("memory_bytes")) for x, r in zip(xs, rs)]
            mlim = [(x, v / 2**20) for x, v in mlim if v is not None]
            if mlim:
                mem_ax.plot(*zip(*mlim), color=c, linestyle="--", linewidth=1.2)
        failed = [r for r in result["rows"] if r["status"] != "ok" and (r["model"], r["entry"]) == (model, entry)]
        if failed:
            lat_ax.text(0.01, 0.02, "failed: " + ", ".join(f"{r['runtime']} L={r['seq_len']}" for r in failed),
                        transform=lat_ax.transAxes, fontsize=7, color="red", va="bottom")
        xlabel = "history before the timed step (clicks)" if step else "sequence length L"
        lat_ax.set_title(f"{model} {entry}: latency p50 (band to p90)", fontsize=9)
        lat_ax.set_ylabel("ms (log)")
        lat_ax.set_yscale("log")
        lat_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        mem_ax.set_title(f"{model} {entry}: peak RSS delta", fontsize=9)
        mem_ax.set_ylabel("MiB")
        mem_ax.set_ylim(bottom=0)
        for ax in (lat_ax, mem_ax):
            ax.set_xlabel(xlabel, fontsize=8)
            ax.grid(True, alpha=0.3, which="both")
    handles = [Line2D([], [], color=c, marker="o", markersize=4, label=rt) for rt, c in colors.items()]
    handles.append(Line2D([], [], color="black", linestyle="--", label="budget limit (dashed, runtime's colour)"))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles), frameon=False)
    fig.suptitle(_title(result, "toolkit bench sweep", 110), fontsize=9)
    fig.tight_layout()
    return fig
