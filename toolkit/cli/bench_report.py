"""The bench result on the terminal: the compact verdict table (or every column with --wide), the notes under it,
and the closing lines (files written, counts, verdict); `BenchConsole` draws them as `toolkit bench` reports them.
The words themselves are toolkit.bench.report's."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from toolkit.bench.api import BenchReporter
from toolkit.bench.report import (
    closing_sentence,
    fmt_ms,
    fmt_si,
    limit_text,
    noise_lines,
    profile_lines,
    row_name,
    short_name,
    summary_line,
    verdict,
)
from toolkit.cli.artifact_eval import AccuracyConsole, precision_rich


def _bytes(x) -> str:
    if x is None:
        return "-"
    x = float(x)
    for div, pre in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(x) >= div:
            return f"{x / div:.3g}{pre}"
    return f"{int(x)} B"


def _caption(result: dict) -> str:
    env = result["environment"]
    if env["target"].get("kind") == "emulated":
        return "instructions from the emulated ARM64 target, not time"
    return f"host-measured on {env['cpu_model']} - NOT device latency"


def _limit_kind(b: dict) -> str | None:
    """The limit the compact table shows: latency when there is one, else memory, else instructions."""
    for kind, key in (("latency", "latency_ms"), ("memory", "memory_bytes"), ("instructions", "instructions")):
        if b.get(key) is not None:
            return kind
    return None


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
            cells.append(fmt_si(r.get("instructions_per_inference")))
        else:
            cells += [fmt_ms(lat.get("p50")), _ci(r), _vs(r) if compared else fmt_ms(lat.get("p90"))]
        cells += [limit_text(b, kind), _pct(b.get(f"{kind}_headroom_pct") if kind else None), f"[{style}]{v}[/]"]
        if load_col:
            cells.append(fmt_ms((r.get("cold_start_ms") or {}).get("load")))
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
        broken = r["status"] != "ok" or (r.get("budget") or {}).get("pass") is False
        t.add_row(*_wide_cells(r, emulated), style="red" if broken else None)
    return t


def _wide_cells(r: dict, emulated: bool) -> list[str]:
    """One row of the --wide table."""
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
             f"{fmt_si(r.get('flops'))}/{fmt_si(r.get('flops_analytic'))}",
             fmt_si(r.get("params_excluding_item_table")),
             _bytes(r.get("artifact_bytes")), _bytes(mem.get("weights_bytes")), _bytes(act),
             _bytes(mem.get("state_bytes")), _bytes(mem.get("rss_peak_delta_bytes"))]
    if emulated:
        cells.append(fmt_si(r.get("instructions_per_inference")))
    else:
        floor = r.get("floor") or {}
        xf = r.get("x_of_floor")
        cells += [fmt_ms(lat.get("p50")), _ci(r), fmt_ms(lat.get("p90")), fmt_ms(lat.get("p99")),
                  fmt_ms(cold.get("load")), fmt_ms(cold.get("first_inference")), fmt_ms(floor.get("ms")),
                  "-" if xf is None else f"{xf:.1f}x"]
    limits = [x for x in (None if b.get("latency_ms") is None else limit_text(b, "latency"),
                          None if b.get("memory_bytes") is None else limit_text(b, "memory"),
                          None if b.get("instructions") is None else limit_text(b, "instructions")) if x]
    tight = b.get("tightest")
    return cells + [" / ".join(limits) or "-",
                    "-" if tight is None else f"{_pct(b.get('headroom_pct'))} {tight[:3]}", budget]


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
        console.print(f"cold start: slowest load {fmt_ms(ms)} ms ({short_name(r)}), its first call "
                      f"{fmt_ms(first)} ms; load = opening the artifact in a fresh process", highlight=False,
                      soft_wrap=True)
    if closing:
        print_closing(result, console)


def print_closing(result: dict, console: Console, wrote: list[str] | None = None) -> None:
    """The files written, the counts (every row once: within / over / failed / no budget), the verdict sentence."""
    if wrote:
        console.print(f"wrote {', '.join(wrote)}", highlight=False, soft_wrap=True)
    ok = result["summary"]["pass"]
    console.print(summary_line(result), highlight=False, soft_wrap=True)
    console.print(f"{'[green]' if ok else '[red]'}verdict:[/] {escape(closing_sentence(result))}", highlight=False,
                  soft_wrap=True)


class BenchConsole(AccuracyConsole, BenchReporter):
    """`toolkit bench` on the terminal: its bar, the table and notes, the closing lines, the accuracy verdicts and
    the precision table, as they come."""

    def __init__(self, console: Console, wide: bool):
        super().__init__(console)
        self.wide = wide

    def measured(self, result: dict) -> None:
        print_result(result, self.console, wide=self.wide, closing=False)

    def wrote(self, result: dict, files: list[str]) -> None:
        print_closing(result, self.console, wrote=files)

    def precision(self, rows: list[dict]) -> None:
        self.console.print(precision_rich(rows))
