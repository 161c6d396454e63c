"""`toolkit eval RUN --data DIR`: re-score a saved run; reproduces metrics.json exactly.

`toolkit eval ARTIFACT_DIR... --data DIR`: rank the split through the exported files themselves
(toolkit.exporters.evaluate), each against the eager model of its run; several dirs (one per recipe) -> one precision
table (+ JSON, PNG). Flags in, one `toolkit.exporters.api.run_eval` call, tables (or JSON) out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from toolkit.cli.common import console, metrics_table
from toolkit.io import dumps_json

_Paths = Annotated[list[Path], typer.Argument(
    metavar="RUN_OR_ARTIFACT_DIR...", help="run dir from `toolkit train`, or artifact dir(s) from `toolkit export`")]
_Data = Annotated[Path, typer.Option("--data", help="the dataset dir the run was trained on")]
_Split = Annotated[str, typer.Option(help="valid or test")]
_Regime = Annotated[Optional[str], typer.Option(
    help="window (the last L clicks from the initial state, as trained), stream (the TTT state carried through the "
         "whole history, as `step` runs on a phone; scn/cocorrrec) or both (default: window for a run; both for "
         "artifact dirs: the window entry windowed, the step entry streamed)")]
_Updates = Annotated[bool, typer.Option(
    "--updates", help="cloud models (cocorrrec, duet): score the split with each user's own update, one mean update "
                      "for everyone, another user's update, and none, with paired standard errors: is the update "
                      "specific to the user?")]
_Json = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
_Device = Annotated[str, typer.Option("--device", help="cpu (default), cuda, or auto (cuda when present)")]
_Users = Annotated[Optional[int], typer.Option("--users", help="artifact dirs: evaluate a seeded sample of N users")]
_Seed = Annotated[int, typer.Option("--seed", help="artifact dirs: seed of the --users sample")]
_RunDir = Annotated[Optional[Path], typer.Option(
    "--run", help="artifact dirs: the run they were exported from, when it moved (default: the run the manifest "
                  "names)")]
_Out = Annotated[Optional[Path], typer.Option(
    "--out", help="artifact dirs: write the JSON report here (default: the table only; --json prints it)")]
_Png = Annotated[Optional[Path], typer.Option("--png", help="artifact dirs: plot size vs NDCG@10 drop here")]
_Threads = Annotated[int, typer.Option("--threads", help="artifact dirs: runtime threads")]


def evaluate(
    paths: _Paths,
    data: _Data = ...,  # required (Typer's marker), kept in place for the order of --help
    split: _Split = "test",
    regime: _Regime = None,
    updates: _Updates = False,
    as_json: _Json = False,
    device: _Device = "cpu",
    users: _Users = None,
    seed: _Seed = 0,
    run_dir: _RunDir = None,
    out: _Out = None,
    png: _Png = None,
    threads: _Threads = 1,
) -> None:
    from toolkit.cli.reporter import ConsoleReporter
    from toolkit.exporters.api import EvalRequest, run_eval

    ev = run_eval(EvalRequest(paths=paths, data=data, split=split, regime=regime, updates=updates, device=device,
                              users=users, seed=seed, run_dir=run_dir, out=out, png=png, threads=threads),
                  ConsoleReporter(console))
    if as_json:
        typer.echo(dumps_json(ev.payload), nl=False)
    elif ev.kind == "artifacts":
        from toolkit.cli.artifact_eval import show_artifact_eval

        show_artifact_eval(console, ev.payload, [out, png])
    elif ev.kind == "updates":
        _show_updates(ev.model, ev.split, ev.payload)
    else:
        console.print(metrics_table(f"{ev.model} on {ev.split}", ev.rows if ev.regime == "both" else {ev.split: next(
            iter(ev.rows.values()))}))


def _show_updates(model: str, split: str, res: dict) -> None:
    """Which update the device applies: the metrics per variant, own minus each, and by how much history the cloud
    sees beyond the device."""
    console.print(metrics_table(f"{model} on {split}: which update the device applies", res["variants"]))
    for k, v in res["own_minus"].items():
        console.print(f"own - {k:<8} NDCG@10 {v['ndcg@10']:+.4f} (paired s.e. {v['se']:.4f}, "
                      f"{v['ndcg@10'] / v['se'] if v['se'] > 0 else float('inf'):+.1f} s.e.)")
    for k, what in (("cloud_sees_more", "older clicks in cloud"), ("same_clicks", "no older clicks")):
        g = res["by_history"][k]  # does the update carry what the device lacks, or only capacity?
        if g["rows"]:
            a, b = g["own_minus_none"], g["own_minus_mean"]
            console.print(f"{g['rows'] / res['rows']:6.1%} rows, {what:<21}: own-none {a['ndcg@10']:+.4f}"
                          f"±{a['se']:.4f}, own-mean {b['ndcg@10']:+.4f}±{b['se']:.4f}", soft_wrap=True)
