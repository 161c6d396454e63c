"""`toolkit compare RUN... [--data DIR]`: one table across runs (mean ± std over seeds) with the non-learned
baselines beside the models, the gain over the best baseline, JSON and a PNG bar chart."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from toolkit.cli.common import check_out, console
from toolkit.errors import ToolkitError


def compare(
    runs: list[Path] = typer.Argument(..., help="run dirs, `train --seeds` dirs or `train --sweep` dirs"),
    data: Optional[Path] = typer.Option(None, "--data", help="the runs' dataset: pop and cooc are counted on it "
                                        "when no run of theirs is listed"),
    split: str = typer.Option("test", help="valid or test"),
    metric: str = typer.Option("ndcg@10", help="the metric the gain and the chart use"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for compare.json and compare.png"),
) -> None:
    from toolkit.train.compare import METRICS

    if split not in ("valid", "test"):
        raise ToolkitError(f"unknown split '{split}' (valid: valid, test)")
    if metric not in METRICS:
        raise ToolkitError(f"unknown --metric '{metric}' (valid: {', '.join(METRICS)})")
    if out is not None:
        check_out(out)
    for r in runs:
        if not r.is_dir():
            raise ToolkitError(f"run dir not found: {r}")
    if data is not None and not (data / "dataset.json").is_file():
        raise ToolkitError(f"--data {data}: not a dataset dir (no dataset.json)")
    from toolkit.train.compare import counted_baselines, load_entry, plot, table

    entries = [load_entry(r, split) for r in runs]
    if data is not None:
        from toolkit.data import load_dataset

        ds = load_dataset(data)
        other = [e["label"] for e in entries if e["dataset_sha256"] != ds.sha256]
        if other:
            raise ToolkitError(f"--data {data} is not the dataset of {', '.join(other)}")
        entries = counted_baselines(ds, {e["model"] for e in entries}, split) + entries
    summary = {"split": split, **table(entries, metric)}
    console.print(render(summary))
    if summary["best_baseline"] is None:
        console.print("[yellow]no non-learned baseline among the runs: pass --data to count pop and cooc[/]")
    if out is not None:
        from toolkit.io import atomic_write_json

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "compare.json", summary)
        plot(summary, out / "compare.png")
        console.print(f"written: {out / 'compare.json'}, {out / 'compare.png'}")


def render(summary: dict):
    """One row per run, fitting 100 columns: metric means ± std over seeds and the gain over the best baseline."""
    from rich.table import Table

    m = summary["metric"]
    t = Table(title=f"{summary['split']}: mean ± std over seeds; gain on {m} over the best baseline "
                    f"({summary['best_baseline'] or 'none'})")
    for c, j in (("run", "left"), ("model", "left"), ("seeds", "right"), ("ndcg@10", "right"), ("hr@10", "right"),
                 ("uauc", "right"), ("gain", "right")):
        t.add_column(c, justify=j, no_wrap=True)
    for r in summary["rows"]:
        gain = r["gain_over_best_baseline"]
        t.add_row(r["label"][:24], (r["model"] + (f" ({r['recipe']})" if r["recipe"] else ""))[:18], str(r["seeds"]),
                  *(f"{r['mean'][k]:.4f}±{r['std'][k]:.4f}" for k in ("ndcg@10", "hr@10")), f"{r['mean']['uauc']:.4f}",
                  "baseline" if r["baseline"] else (f"{gain:+.1%}" if gain is not None else "-"))
    return t
