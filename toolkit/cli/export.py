"""`toolkit export (RUN | --model NAME) --target ... --seq-len L --out DIR`: artifacts + manifest, checked."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from toolkit.cli.common import human_bytes
from toolkit.errors import ToolkitError
from toolkit.models.registry import DEFAULT_N_ITEMS

MAX_SEQ_LEN = 4096  # beyond any on-device window; keeps a typo from allocating terabytes
MAX_CANDIDATES = 1_000_000
MAX_STEPS = 10_000


def positive_int(text: str, flag: str, hi: int = 2**31 - 1) -> int:
    """One-line errors for 0, negatives, non-integers and values above `hi` (Typer's own would print a box)."""
    try:
        v = int(str(text).strip())
    except ValueError:
        raise ToolkitError(f"{flag}: '{text}' is not an integer") from None
    if v <= 0:
        raise ToolkitError(f"{flag} must be a positive integer, got {v}")
    if v > hi:
        raise ToolkitError(f"{flag} must be <= {hi}, got {v}")
    return v


def summary_table(manifest: dict):
    from rich.table import Table

    t = Table(title=f"{manifest['model']} -> {len(manifest['artifacts'])} artifacts ({manifest['dtype']})")
    t.add_column("artifact", overflow="fold")
    for col, just in (("size", "right"), ("export s", "right"), ("worst err", "right"), ("allowed", "right"),
                      ("state", "left"), ("delegated matmuls", "left")):
        t.add_column(col, justify=just)
    from toolkit.exporters.manifest import parity_status

    for r in manifest["artifacts"]:
        p = r["parity"]
        w = p.get("worst") or {}
        err = f"{w.get('error', 0):.1e}" + ("*" if parity_status(r)[0] == "skipped" else "")
        d = r.get("delegation")
        deleg = f"{d['compute_ops_delegated']}/{d['compute_ops_total']} ({d['partitions']} part.)" if d else "-"
        t.add_row(r["file"], human_bytes(r["bytes"]), f"{r['export_seconds']:.1f}", err,
                  f"{w.get('allowed', 0):.1e}", "ok" if r["state_check"]["pass"] else "FAIL", deleg)
    t.caption = "worst err: largest max-abs error over steps, outputs and states; * = Core ML fp16 drift estimate"
    return t


def mobile_lines(manifest: dict) -> list[str]:
    """ORT's mobile usability verdict, one short line per (ONNX artifact, execution provider)."""
    from toolkit.exporters.to_onnx import usability_line

    out = []
    for r in manifest["artifacts"]:
        u = r.get("mobile_usability")
        if not u:
            continue
        out.append(f"ORT mobile usability of {u['analysed']} (ORT's checker; .ort: {r['file']}):")
        out += [f"  {usability_line(ep)}" for ep in u["execution_providers"]]
    return out


def export(
    run: Optional[Path] = typer.Argument(None, metavar="[RUN]", help="Trained run dir (or use --model)."),
    model: Optional[str] = typer.Option(None, "--model", help="Export a freshly initialised model by name."),
    target: str = typer.Option("executorch,onnx,coreml", "--format", "--target",
                               help="Export formats, comma list: executorch,onnx,coreml (--target: older spelling; "
                                    "a bench/device --target is a device profile)."),
    seq_len: str = typer.Option("25", "--seq-len", help="Window length L of the exported `window` entry."),
    candidates: str = typer.Option("100", "--candidates", help="Candidates scored per call."),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32 | fp16 | int8 (a recipe per target in export/)."),
    with_corrections: bool = typer.Option(False, "--with-corrections", help="SCN: add the GCN correction inputs."),
    tower: str = typer.Option("graph", "--tower",
                              help="Candidate tower: graph (Linear-tanh-Linear run on every candidate) | precomputed "
                                   "(ship its output for every item, [n_items + 1, D], and gather rows)."),
    steps: str = typer.Option("5", "--steps", help="Trajectory length for parity and test vectors."),
    require_delegated: bool = typer.Option(False, "--require-delegated",
                                           help="Fail when matmul-family ops fall back off XNNPACK."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out dir."),
    out: Path = typer.Option(..., "--out", help="Artifact dir to create (atomically)."),
    n_items: str = typer.Option(str(DEFAULT_N_ITEMS), "--n-items", help="Vocabulary of a --model export (Amazon Beauty 5-core)."),
    config: Optional[List[str]] = typer.Option(None, "--config", help="--model config override key=value."),
) -> None:
    """Export SCN / the gate / baselines to ExecuTorch, ONNX and Core ML, with state check and trajectory parity.

    ONNX also writes its ORT mobile form (.ort + required_operators.config, by ORT's converter, parity-checked) and
    ORT's mobile usability verdict per execution provider (NNAPI, Core ML) into the manifest. A cocorrrec run
    exports its device model: files and manifest are named scn (source_model: cocorrrec)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from toolkit.cli.common import check_out, parse_config
    from toolkit.exporters.recipes import DTYPES, check_tower, find, parse_targets  # light: TOML recipes only

    # ---- validate everything before any work (and before torch/executorch/coremltools are imported) ----
    L = positive_int(seq_len, "--seq-len", hi=MAX_SEQ_LEN)
    C = positive_int(candidates, "--candidates", hi=MAX_CANDIDATES)
    n_steps = positive_int(steps, "--steps", hi=MAX_STEPS)
    tower_table = check_tower(tower)
    targets = parse_targets(target)
    if dtype not in DTYPES:
        raise ToolkitError(f"--dtype: unknown '{dtype}' (valid: {', '.join(DTYPES)})")
    for t in targets:
        find(t, dtype)
    if (run is None) == (model is None):
        raise ToolkitError("give either a RUN dir or --model NAME (exactly one)")
    if config and model is None:
        raise ToolkitError("--config applies to --model only")
    vocab = positive_int(n_items, "--n-items", hi=2**31 - 1) if model is not None else None
    overrides = parse_config(config)
    check_out(out)
    from toolkit.io import check_apart, check_not_symlink

    check_apart(out, {"run being exported": run})  # --force must never replace the run it reads
    if out.exists() and not force:
        raise ToolkitError(f"output exists: {out} (use --force to replace it)")
    if force:
        check_not_symlink(out)
    if run is not None and not run.is_dir():
        raise ToolkitError(f"run dir not found: {run}")

    from toolkit.exporters import sources
    from toolkit.exporters.common import quiet_libraries

    quiet_libraries()
    if run is not None:
        m, name, info = sources.from_run(run)
    else:
        m, name, info = sources.fresh(model, vocab, overrides)
    entries, kw = sources.entries_for(m, L, C, with_corrections, tower_table)
    info.update({"seq_len": L, "candidates": C, "with_corrections": with_corrections, "contract_args": kw})
    strict = [find(t, "fp32") for t in targets]
    info["tower"] = sources.tower_record(m, entries, kw, n_steps, min(r.atol for r in strict),
                                         min(r.rtol for r in strict))
    if not info["tower"].get("pass", True):
        from toolkit.errors import CheckFailed
        from toolkit.exporters.parity import failure_line

        bad = next(k for k, v in info["tower"]["table_vs_tower"].items() if not v["pass"])
        raise CheckFailed(f"precomputed tower table of '{bad}' differs from the tower: "
                          f"{failure_line(info['tower']['table_vs_tower'][bad])}")

    from toolkit.exporters.export import export_artifacts

    console = Console()
    with Progress(TextColumn("[bold]export[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console, transient=True) as bar:
        task = bar.add_task("starting", total=len(entries) * len(targets))

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=what)

        manifest = export_artifacts(entries, name, targets, out, dtype=dtype, parity_steps=n_steps, model_info=info,
                                    progress=progress, require_delegated=require_delegated, force=force)
    console.print(summary_table(manifest))
    for line in mobile_lines(manifest):
        console.print(line, highlight=False, soft_wrap=True)
    from toolkit.exporters.manifest import parity_status

    tower = manifest["model_info"].get("tower") or {}
    if tower.get("kind") == "precomputed":
        worst = max(c["worst"]["error"] for c in tower["table_vs_tower"].values())
        per = ", ".join(f"{k} {human_bytes(v)}" for k, v in tower["table_bytes_per_entry"].items())
        console.print(f"tower: precomputed table {tower['table_shape']} shipped per entry ({per}); equals the tower "
                      f"over {manifest['test_vectors']['steps']} steps (max abs error {worst:.1e})", highlight=False,
                      soft_wrap=True)
    for r in manifest["artifacts"]:
        status, reason = parity_status(r)
        if status == "skipped":
            console.print(f"[yellow]note:[/] {r['file']}: runtime parity skipped ({reason}); structure checked "
                          "and fp16 drift estimated instead (*)", highlight=False, soft_wrap=True)
            break
    from toolkit.exporters.manifest import manifest_digest

    console.print(f"wrote {out}/manifest.json (sha256 {manifest_digest(out)}; pin it with "
                  f"`toolkit verify {out} --expect SHA`)", highlight=False, soft_wrap=True)
