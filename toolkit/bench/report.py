"""Bench output: a rich table on the terminal, the JSON, a JUnit XML for CI, and a PNG of cost vs seq-len."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from rich.console import Console
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


def table(result: dict) -> Table:
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
        for col in ("p50 ms", "p90 ms", "p99 ms", "floor ms", "x floor"):
            t.add_column(col, justify="right")
    t.add_column("budget", justify="left")
    for r in result["rows"]:
        mem = r.get("memory") or {}
        lat = r.get("latency_ms") or {}
        b = r.get("budget") or {}
        act = mem.get("activations_bytes") if mem.get("activations_bytes") is not None else mem.get("arena_peak_bytes")
        if r["status"] != "ok":
            budget = "[red]FAILED[/]"
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
            cells += [_ms(lat.get("p50")), _ms(lat.get("p90")), _ms(lat.get("p99")), _ms(floor.get("ms")),
                      "-" if xf is None else f"{xf:.1f}x"]
        cells.append(budget)
        broken = r["status"] != "ok" or b.get("pass") is False
        t.add_row(*cells, style="red" if broken else None)
    return t


def print_result(result: dict, console: Console | None = None) -> None:
    console = console or Console()
    wide = console if console.is_terminal else Console(file=console.file, width=max(console.width, 170))
    wide.print(table(result))
    for r in result["rows"]:
        if r["status"] != "ok":
            console.print(f"[red]failed[/] {row_name(r)}: {r['error']}", highlight=False, soft_wrap=True)
    probe = result["environment"].get("floor") or {}
    if probe.get("ok"):
        empties = ", ".join(f"{k} {v * 1e3:.1f} us" for k, v in sorted(probe.get("empty_call_ms", {}).items()))
        gf = ", ".join(f"{k}x{k} {v:.1f}" for k, v in probe.get("matmul_gflops", {}).items())
        console.print(f"floor = FLOPs / {probe['gflops_used']:.1f} GFLOP/s (fp32 matmul, 1 thread: {gf}) + empty "
                      f"call ({empties})", highlight=False, soft_wrap=True)
    for r in result["rows"]:
        if "profile" in r:
            for line in profile_lines(r):
                console.print(line, highlight=False, soft_wrap=True, markup=False)
    s = result["summary"]
    verdict = "[green]all budgets pass[/]" if s["pass"] else "[red]budget broken or cell failed[/]"
    console.print(f"{s['rows']} rows, {s['failed']} failed, {s['budget_checked']} under budget, "
                  f"{s['budget_broken']} broken: {verdict}", highlight=False)


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
        elif b.get("pass") is None:
            ET.SubElement(case, "skipped", {"message": "no budget for this cell"})
        out = ET.SubElement(case, "system-out")
        out.text = (f"p50={lat.get('p50')} ms p90={lat.get('p90')} ms flops={r.get('flops')} "
                    f"rss_delta={(r.get('memory') or {}).get('rss_peak_delta_bytes')} measured_on={r['measured_on']}")
    tree = ET.ElementTree(suite)
    ET.indent(tree)
    return atomic_write_bytes(path, ET.tostring(suite, encoding="utf-8", xml_declaration=True))


def write_plot(result: dict, path: str | Path) -> Path:
    """Latency p50, FLOPs and memory vs seq-len (step rows: vs history), one line per (model, entry, runtime).

    Colour = (model, entry), the same in every panel; line style = runtime; marker = entry.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["status"] == "ok"]
    series: dict[tuple, list] = {}
    for r in rows:
        series.setdefault((r["model"], r["entry"], r["runtime"]), []).append(r)
    pairs = sorted({(m, e) for m, e, _ in series})
    palette = plt.get_cmap("tab10")
    color = {p: palette(i % 10) for i, p in enumerate(pairs)}
    style = {"executorch": "-", "onnxruntime": "--", "torch": ":"}
    marker = {"window": "o", "step": "s", "mrs": "^"}
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.6))
    panels = (("latency p50 (ms, host, log)", lambda r: (r.get("latency_ms") or {}).get("p50"), True),
              ("FLOPs per call (counter, log)", lambda r: r.get("flops"), False),
              ("memory: peak RSS delta (MB)", lambda r: None if (r.get("memory") or {}).get("rss_peak_delta_bytes")
               is None else r["memory"]["rss_peak_delta_bytes"] / 1e6, True))
    for ax, (title, get, per_runtime) in zip(axes, panels):
        drawn = set()
        for (model, entry, runtime), rs in sorted(series.items()):
            if not per_runtime:  # FLOPs do not depend on the runtime: one line per (model, entry)
                if (model, entry) in drawn:
                    continue
                drawn.add((model, entry))
            pts = sorted((r["seq_len"], get(r)) for r in rs if get(r) is not None)
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(xs, ys, color=color[(model, entry)], linestyle=style.get(runtime, "-.") if per_runtime else "-",
                    marker=marker.get(entry, "x"), markersize=4,
                    label=f"{model}/{entry}/{runtime}" if per_runtime else f"{model}/{entry}")
        ax.set_title(title)
        ax.set_xlabel("sequence length L (step: history in clicks)")
        ax.grid(True, alpha=0.3, which="both")
        if "log" in title:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    env = result["environment"]
    fig.suptitle(f"toolkit bench on {env['cpu_model']} ({env['target']['name']}, {env['threads']} thread) - "
                 "host-measured, not device latency; line style: executorch solid, onnxruntime dashed, torch dotted",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
