"""`toolkit eval RUN --data DIR`: re-score a saved run; reproduces metrics.json exactly.

`toolkit eval ARTIFACT_DIR... --data DIR`: rank the split through the exported files themselves
(toolkit.exporters.evaluate), each against the eager model of its run; several dirs (one per recipe) -> one precision
table (+ JSON, PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from toolkit.cli.common import console, metrics_table
from toolkit.errors import ToolkitError
from toolkit.io import dumps_json


def evaluate(
    paths: list[Path] = typer.Argument(..., metavar="RUN_OR_ARTIFACT_DIR...",
                                       help="run dir from `toolkit train`, or artifact dir(s) from `toolkit export`"),
    data: Path = typer.Option(..., "--data", help="the dataset dir the run was trained on"),
    split: str = typer.Option("test", help="valid or test"),
    regime: Optional[str] = typer.Option(None, help="window (the last L clicks from the initial state, as trained), "
                               "stream (the TTT state carried through the whole history, as `step` runs on a "
                               "phone; scn/cocorrrec) or both (default: window for a run; both for artifact dirs: "
                               "the window entry windowed, the step entry streamed)"),
    updates: bool = typer.Option(False, "--updates", help="cloud models (cocorrrec, duet): score the split with each "
                                 "user's own update, one mean update for everyone, another user's update, and none, "
                                 "with paired standard errors: is the update specific to the user?"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    device: str = typer.Option("cpu", "--device", help="cpu (default), cuda, or auto (cuda when present)"),
    users: Optional[int] = typer.Option(None, "--users", help="artifact dirs: evaluate a seeded sample of N users"),
    seed: int = typer.Option(0, "--seed", help="artifact dirs: seed of the --users sample"),
    run_dir: Optional[Path] = typer.Option(None, "--run", help="artifact dirs: the run they were exported from, "
                                           "when it moved (default: the run the manifest names)"),
    out: Optional[Path] = typer.Option(None, "--out", help="artifact dirs: write the JSON report here "
                                       "(default: the table only; --json prints it)"),
    png: Optional[Path] = typer.Option(None, "--png", help="artifact dirs: plot size vs NDCG@10 drop here"),
    threads: int = typer.Option(1, "--threads", help="artifact dirs: runtime threads"),
) -> None:
    if split not in ("valid", "test"):
        raise ToolkitError(f"unknown split '{split}' (valid: valid, test)")
    if regime is not None and regime not in ("window", "stream", "both"):
        raise ToolkitError(f"unknown regime '{regime}' (valid: window, stream, both)")
    from toolkit.exporters.evaluate import is_artifact_dir

    if any(is_artifact_dir(p) for p in paths):
        from toolkit.cli.artifact_eval import evaluate_artifact_dirs

        evaluate_artifact_dirs(paths, data, split, users, seed, run_dir, out, png, threads, as_json, regime)
        return
    if len(paths) != 1:
        raise ToolkitError(f"one run dir at a time ({len(paths)} given; several paths are for artifact dirs)")
    run = paths[0]
    regime = regime or "window"
    from toolkit.data import load_dataset
    from toolkit.models.runs import load_run, read_descriptor
    from toolkit.train.loop import check_vocab, resolve_device
    from toolkit.train.loop import evaluate as evaluate_split

    device = resolve_device(device)

    desc = read_descriptor(run)
    ds = load_dataset(data)
    if desc.get("dataset_sha256") != ds.sha256:
        raise ToolkitError(f"run {run} was trained on another dataset (sha256 {str(desc.get('dataset_sha256'))[:12]}…"
                           f", {data} is {ds.sha256[:12]}…)")
    model, desc = load_run(run)
    if desc["model"] == "gate":
        raise ToolkitError("`toolkit eval` scores recommenders; for a gate use `toolkit gate curve`")
    check_vocab(ds, model.cfg.n_items)
    if updates:
        from toolkit.models.cloud import is_cloud_model

        if not is_cloud_model(model):
            raise ToolkitError(f"--updates needs a model with a cloud update (cocorrrec, duet); {run} is a "
                               f"{desc['model']} run")
        if regime != "window":
            raise ToolkitError("--updates scores the window regime (the update is applied to the window)")
        from toolkit.train.updates import update_ablation

        res = update_ablation(model, ds, split)
        if as_json:
            typer.echo(dumps_json({"run": str(run), **res}), nl=False)
            return
        console.print(metrics_table(f"{desc['model']} on {split}: which update the device applies",
                                    res["variants"]))
        for k, v in res["own_minus"].items():
            console.print(f"own - {k:<8} NDCG@10 {v['ndcg@10']:+.4f} (paired s.e. {v['se']:.4f}, "
                          f"{v['ndcg@10'] / v['se'] if v['se'] > 0 else float('inf'):+.1f} s.e.)")
        for k, what in (("cloud_sees_more", "older clicks in cloud"), ("same_clicks", "no older clicks")):
            g = res["by_history"][k]  # does the update carry what the device lacks, or only capacity?
            if g["rows"]:
                a, b = g["own_minus_none"], g["own_minus_mean"]
                console.print(f"{g['rows'] / res['rows']:6.1%} rows, {what:<21}: own-none {a['ndcg@10']:+.4f}"
                              f"±{a['se']:.4f}, own-mean {b['ndcg@10']:+.4f}±{b['se']:.4f}", soft_wrap=True)
        return
    rows = {}
    if regime in ("window", "both"):
        rows["window"] = evaluate_split(model.to(device), ds, split)
    if regime in ("stream", "both"):
        from toolkit.train.streaming import evaluate_streaming

        rows["stream"] = evaluate_streaming(model.cpu(), ds, split)  # the phone's regime: step by step, on CPU
    if as_json:
        payload = {"run": str(run), "split": split, "metrics": rows.get("window", rows.get("stream"))}
        if regime != "window":
            payload["regimes"] = rows
        typer.echo(dumps_json(payload), nl=False)
    else:
        console.print(metrics_table(f"{desc['model']} on {split}", rows if regime == "both" else {split: next(
            iter(rows.values()))}))
