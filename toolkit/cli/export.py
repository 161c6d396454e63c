"""`toolkit export (RUN | --model NAME) --target ... --seq-len L --out DIR`: artifacts + manifest, checked.

Flags in, one `toolkit.exporters.api.run_export` call, the manifest's summary out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from toolkit.cli.common import console, human_bytes
from toolkit.models.registry import DEFAULT_N_ITEMS

_Run = Annotated[Optional[Path], typer.Argument(metavar="[RUN]", help="Trained run dir (or use --model).")]
_Model = Annotated[Optional[str], typer.Option("--model", help="Export a freshly initialised model by name.")]
_Formats = Annotated[str, typer.Option(
    "--format", "--target", help="Export formats, comma list: executorch,onnx,coreml (--target: older spelling; "
                                 "a bench/device --target is a device profile).")]
_SeqLen = Annotated[str, typer.Option("--seq-len", help="Window length L of the exported `window` entry.")]
_Candidates = Annotated[str, typer.Option("--candidates", help="Candidates scored per call.")]
_Dtype = Annotated[str, typer.Option("--dtype", help="fp32 | fp16 | int8 (a recipe per target in export/).")]
_WithCorrections = Annotated[bool, typer.Option("--with-corrections", help="SCN: add the GCN correction inputs.")]
_Tower = Annotated[str, typer.Option(
    "--tower", help="Candidate tower: graph (Linear-tanh-Linear run on every candidate) | precomputed "
                    "(ship its output for every item, [n_items + 1, D], and gather rows).")]
_Steps = Annotated[str, typer.Option("--steps", help="Trajectory length for parity and test vectors.")]
_RequireDelegated = Annotated[bool, typer.Option(
    "--require-delegated", help="Fail when matmul-family ops fall back off XNNPACK.")]
_Force = Annotated[bool, typer.Option("--force", help="Replace an existing --out dir.")]
_Out = Annotated[Path, typer.Option("--out", help="Artifact dir to create (atomically).")]
_NItems = Annotated[str, typer.Option(
    "--n-items", help="Vocabulary of a --model export (Amazon Beauty 5-core).")]
_Config = Annotated[Optional[List[str]], typer.Option("--config", help="--model config override key=value.")]


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
    run: _Run = None,
    model: _Model = None,
    target: _Formats = "executorch,onnx,coreml",
    seq_len: _SeqLen = "25",
    candidates: _Candidates = "100",
    dtype: _Dtype = "fp32",
    with_corrections: _WithCorrections = False,
    tower: _Tower = "graph",
    steps: _Steps = "5",
    require_delegated: _RequireDelegated = False,
    force: _Force = False,
    out: _Out = ...,  # required (Typer's marker), kept in place for the order of --help
    n_items: _NItems = str(DEFAULT_N_ITEMS),
    config: _Config = None,
) -> None:
    """Export SCN / the gate / baselines to ExecuTorch, ONNX and Core ML, with state check and trajectory parity.

    ONNX also writes its ORT mobile form (.ort + required_operators.config, by ORT's converter, parity-checked) and
    ORT's mobile usability verdict per execution provider (NNAPI, Core ML) into the manifest. A cocorrrec run
    exports its device model: files and manifest are named scn (source_model: cocorrrec)."""
    from toolkit.cli.reporter import ConsoleReporter
    from toolkit.exporters.api import ExportRequest, run_export

    manifest = run_export(ExportRequest(
        out=out, run=run, model=model, formats=target, seq_len=seq_len, candidates=candidates, dtype=dtype,
        with_corrections=with_corrections, tower=tower, steps=steps, require_delegated=require_delegated,
        force=force, n_items=n_items, config=config), ConsoleReporter(console))
    _show(manifest, out)


def _show(manifest: dict, out: Path) -> None:
    """The artifacts table, ORT's mobile verdicts, the tower and parity notes, and the digest to pin."""
    from toolkit.exporters.manifest import manifest_digest, parity_status

    console.print(summary_table(manifest))
    for line in mobile_lines(manifest):
        console.print(line, highlight=False, soft_wrap=True)
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
    console.print(f"wrote {out}/manifest.json (sha256 {manifest_digest(out)}; pin it with "
                  f"`toolkit verify {out} --expect SHA`)", highlight=False, soft_wrap=True)
