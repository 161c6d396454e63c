"""`toolkit verify DIR`: re-hash every artifact file, re-run trajectory parity; exit 1 naming what failed.

Flags in, one `toolkit.exporters.api.run_verify` call, the report out (a table, or JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from toolkit.cli.common import AccuracyUsers, MaxNdcgDrop

_Dir = Annotated[Path, typer.Argument(metavar="DIR", help="Artifact dir written by `toolkit export`.")]
_Threads = Annotated[str, typer.Option("--threads", help="Runtime threads.")]
_Json = Annotated[Optional[Path], typer.Option("--json", help="Write the JSON report here ('-' = stdout only).")]
_Expect = Annotated[Optional[str], typer.Option(
    "--expect", metavar="SHA", help="The manifest.json sha256 `toolkit export` printed (pins the manifest).")]
_AllowExtra = Annotated[bool, typer.Option(
    "--allow-extra", help="Files the manifest does not list are only a note.")]
_Data = Annotated[Optional[Path], typer.Option(
    "--data", help="Dataset dir: also rank its test users through each artifact and check the accuracy budget "
                   "(recipe [accuracy] or the flags).")]
_Seed = Annotated[int, typer.Option("--seed", help="With --users: the sample's seed.")]
_MaxDropRelative = Annotated[Optional[float], typer.Option(
    "--max-ndcg-drop-relative", help="With --data: largest allowed drop as a share of eager's NDCG@10.")]


def report_table(report: dict):
    from rich.table import Table

    t = Table(title=f"verify {report['dir']} ({report.get('model')})")
    t.add_column("artifact", overflow="fold")
    for col in ("status", "sha256", "parity", "bundled", "structure", "worst error"):
        t.add_column(col)
    for r in report["artifacts"]:
        c = r.get("checks", {})
        w = (r.get("parity") or {}).get("worst") or {}
        worst = f"{w.get('name')} {w.get('error', 0):.2e}" if w else "-"

        def show(v):
            if v is None:
                return "-"
            if str(v).startswith("skipped"):
                return "[yellow]skipped[/]"
            return {"pass": "[green]pass[/]", "fail": "[red]FAIL[/]"}.get(v, f"[yellow]{v}[/]")

        status = {"passed": "[green]passed[/]", "failed": "[red]FAILED[/]"}.get(
            r.get("status"), f"[yellow]{r.get('status')}[/]" + (f" ({r['reason'].split(';')[0]})" if r.get("reason")
                                                                else ""))
        t.add_row(r["file"], status, show(c.get("sha256")), show(c.get("parity")),
                  show(c.get("bundled_program")), show(c.get("structure")), worst)
    return t


def verify(
    artifact_dir: _Dir,
    threads: _Threads = "1",
    json_out: _Json = None,
    expect: _Expect = None,
    allow_extra: _AllowExtra = False,
    data: _Data = None,
    users: AccuracyUsers = None,
    seed: _Seed = 0,
    max_ndcg_drop: MaxNdcgDrop = None,
    max_ndcg_drop_relative: _MaxDropRelative = None,
) -> None:
    """Check manifest.json (its own sha256), re-hash every listed file, re-run trajectory parity in each runtime."""
    from rich.console import Console

    from toolkit.cli.artifact_eval import AccuracyConsole
    from toolkit.cli.quiet import terminal
    from toolkit.exporters.api import VerifyRequest, raise_if_unverified, run_verify

    to_stdout = json_out is not None and str(json_out) == "-"
    console = Console(file=terminal()) if to_stdout else Console()  # --json -: bar and notes stay off stdout
    report = run_verify(VerifyRequest(
        artifact_dir=artifact_dir, threads=threads, expect=expect, allow_extra=allow_extra, data=data, users=users,
        seed=seed, max_ndcg_drop=max_ndcg_drop, max_ndcg_drop_relative=max_ndcg_drop_relative),
        AccuracyConsole(console))
    _show(report, console, json_out, to_stdout)
    raise_if_unverified(report)
    if not to_stdout:
        n = report["counts"]
        what = (f"all {len(report['artifacts'])} artifacts verified" if not n["skipped"] else
                f"{n['passed']} artifacts verified, {n['skipped']} skipped (runtime not available on this host; "
                f"nothing failed)")
        console.print(f"[green]{what}[/] (manifest sha256 {report['manifest_sha256']})", highlight=False)


def _show(report: dict, console, json_out: Optional[Path], to_stdout: bool) -> None:
    """The report as a table (and --json FILE written) or as JSON on stdout; the notes on skips and extra files."""
    from toolkit.io import atomic_write_json

    if to_stdout:
        print(json.dumps(report, indent=2, default=str))
    else:
        console.print(report_table(report))
        if json_out is not None:
            atomic_write_json(json_out, report)
            console.print(f"wrote {json_out}")
    for r in report["artifacts"]:
        if r.get("status") == "skipped":
            console.print(f"[yellow]note:[/] {r['file']}: runtime parity skipped ({r['reason']}); what this host "
                          f"can check was checked: {', '.join(k for k, v in r['checks'].items() if v == 'pass')}"
                          + (f" ({', '.join(r['structure_checked'])})" if r.get("structure_checked") else ""),
                          highlight=False, soft_wrap=True)
    if report["unlisted_files"] and report["allow_extra"]:
        console.print(f"[yellow]note:[/] files not in the manifest: {', '.join(report['unlisted_files'])}")
