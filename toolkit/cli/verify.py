"""`toolkit verify DIR`: re-hash every artifact file, re-run trajectory parity; exit 1 naming what failed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from toolkit.errors import CheckFailed, ToolkitError


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
    artifact_dir: Path = typer.Argument(..., metavar="DIR", help="Artifact dir written by `toolkit export`."),
    threads: str = typer.Option("1", "--threads", help="Runtime threads."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the JSON report here ('-' = stdout only)."),
    expect: Optional[str] = typer.Option(None, "--expect", metavar="SHA",
                                         help="The manifest.json sha256 `toolkit export` printed (pins the manifest)."),
    allow_extra: bool = typer.Option(False, "--allow-extra", help="Files the manifest does not list are only a note."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset dir: also rank its test users through each "
                                        "artifact and check the accuracy budget (recipe [accuracy] or the flags)."),
    users: Optional[int] = typer.Option(None, "--users", help="With --data: a seeded sample of N test users."),
    seed: int = typer.Option(0, "--seed", help="With --users: the sample's seed."),
    max_ndcg_drop: Optional[float] = typer.Option(None, "--max-ndcg-drop", help="With --data: largest allowed "
                                                  "NDCG@10 drop from eager (absolute), for every artifact."),
    max_ndcg_drop_relative: Optional[float] = typer.Option(None, "--max-ndcg-drop-relative", help="With --data: "
                                                           "largest allowed drop as a share of eager's NDCG@10."),
) -> None:
    """Check manifest.json (its own sha256), re-hash every listed file, re-run trajectory parity in each runtime."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from toolkit.cli.export import positive_int

    n_threads = positive_int(threads, "--threads", hi=4096)  # before torch/executorch load: answers at once
    from toolkit.cli.artifact_eval import budget_override, check_flags

    override = budget_override(max_ndcg_drop, max_ndcg_drop_relative)
    check_flags(users, seed, n_threads)
    if data is not None and not (Path(data) / "dataset.json").is_file():
        raise ToolkitError(f"--data {data}: not a dataset dir (no dataset.json)")
    if expect is not None and (len(expect.strip()) != 64 or any(c not in "0123456789abcdef" for c in expect.strip().lower())):
        raise ToolkitError(f"--expect: '{expect}' is not a sha256 (64 hex digits)")
    from toolkit.exporters.common import quiet_libraries
    from toolkit.exporters.manifest import read_manifest
    from toolkit.exporters.verify import verify_dir
    from toolkit.io import atomic_write_json

    quiet_libraries()
    read_manifest(artifact_dir, expect)  # one line for a missing dir / untrustworthy manifest before any progress bar
    to_stdout = json_out is not None and str(json_out) == "-"
    from toolkit.cli.quiet import terminal

    console = Console(file=terminal()) if to_stdout else Console()  # --json -: the bar stays off stdout
    with Progress(TextColumn("[bold]verify[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console, transient=True) as bar:
        task = bar.add_task("starting", total=None)
        report = verify_dir(artifact_dir, threads=n_threads, expect=expect, allow_extra=allow_extra,
                            progress=lambda what, d, t: bar.update(task, completed=d, total=t, description=what))
    if report["pass"]:  # the accuracy budget: only files that verified are ranked
        from toolkit.cli.artifact_eval import check_accuracy

        report["accuracy"] = check_accuracy([artifact_dir], data, users, seed, override,
                                            Console(file=terminal()) if to_stdout else console, n_threads,
                                            expect=expect)
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
    if report["unlisted_files"] and allow_extra:
        console.print(f"[yellow]note:[/] files not in the manifest: {', '.join(report['unlisted_files'])}")
    if not report["pass"]:
        problems = [p for r in report["artifacts"] for p in r["problems"]]
        if report["unlisted_files"] and not allow_extra:
            problems.append(f"files not in the manifest: {', '.join(report['unlisted_files'])} "
                            f"(remove them, or pass --allow-extra)")
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckFailed(f"verify failed: {problems[0]}{more}")
    bad = report.get("accuracy", {}).get("failed") or []
    if bad:
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        raise CheckFailed(f"accuracy budget broken: {bad[0]}{more}")
    if not to_stdout:
        n = report["counts"]
        what = (f"all {len(report['artifacts'])} artifacts verified" if not n["skipped"] else
                f"{n['passed']} artifacts verified, {n['skipped']} skipped (runtime not available on this host; "
                f"nothing failed)")
        console.print(f"[green]{what}[/] (manifest sha256 {report['manifest_sha256']})", highlight=False)

