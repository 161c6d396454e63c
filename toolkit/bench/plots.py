"""The bench as a PNG: cost (latency, memory, cold start) per row at one L, or against L for a sweep."""

from __future__ import annotations

from pathlib import Path

from toolkit.bench.report import closing_sentence, verdict

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
