"""`toolkit export`, `toolkit verify` and `toolkit eval` as one library call each: a request (the command's flags,
unparsed) -> `run_export`, `run_verify`, `run_eval`.

Here so that the commands only parse and print: which source is exported, which flag combinations are refused, when
trajectory parity is re-run and the accuracy budget checked, whether a path is a run dir or an artifact dir, are
decided in one place. Every flag is checked before torch, ExecuTorch or a runtime is imported (those imports stay
inside the functions for that reason), in the order the messages have always come in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from toolkit.checks import check_out, parse_config, positive_int
from toolkit.errors import CheckFailed, ToolkitError
from toolkit.exporters.evaluate import AccuracyReporter, budget_override, check_sample_flags
from toolkit.models.registry import DEFAULT_N_ITEMS
from toolkit.reporter import Reporter

MAX_SEQ_LEN = 4096  # beyond any on-device window; keeps a typo from allocating terabytes
MAX_CANDIDATES = 1_000_000
MAX_STEPS = 10_000


# ---- toolkit export ---------------------------------------------------------------------------------------------


@dataclass
class ExportRequest:
    """The flags of `toolkit export`, as given (numbers as the strings typed: their errors name the flag)."""

    out: Path
    run: Optional[Path] = None
    model: Optional[str] = None
    formats: str = "executorch,onnx,coreml"
    seq_len: str = "25"
    candidates: str = "100"
    dtype: str = "fp32"
    with_corrections: bool = False
    tower: str = "graph"
    steps: str = "5"
    require_delegated: bool = False
    force: bool = False
    n_items: str = str(DEFAULT_N_ITEMS)
    config: Optional[list[str]] = None


def run_export(r: ExportRequest, reporter: Reporter) -> dict:
    """Check every flag, build the model (a trained run or a fresh one), export every (entry, format) with its
    state check and trajectory parity into the artifact dir; returns the manifest written there."""
    from toolkit.exporters.recipes import DTYPES, check_tower, find, parse_targets  # light: TOML recipes only

    L = positive_int(r.seq_len, "--seq-len", hi=MAX_SEQ_LEN)
    C = positive_int(r.candidates, "--candidates", hi=MAX_CANDIDATES)
    n_steps = positive_int(r.steps, "--steps", hi=MAX_STEPS)
    tower_table = check_tower(r.tower)
    targets = parse_targets(r.formats)
    if r.dtype not in DTYPES:
        raise ToolkitError(f"--dtype: unknown '{r.dtype}' (valid: {', '.join(DTYPES)})")
    for t in targets:
        find(t, r.dtype)
    if (r.run is None) == (r.model is None):
        raise ToolkitError("give either a RUN dir or --model NAME (exactly one)")
    if r.config and r.model is None:
        raise ToolkitError("--config applies to --model only")
    vocab = positive_int(r.n_items, "--n-items", hi=2**31 - 1) if r.model is not None else None
    overrides = parse_config(r.config)
    _check_export_out(r)

    from toolkit.exporters import sources
    from toolkit.exporters.common import quiet_libraries

    quiet_libraries()
    m, name, info = sources.from_run(r.run) if r.run is not None else sources.fresh(r.model, vocab, overrides)
    entries, kw = sources.entries_for(m, L, C, r.with_corrections, tower_table)
    info.update({"seq_len": L, "candidates": C, "with_corrections": r.with_corrections, "contract_args": kw})
    strict = [find(t, "fp32") for t in targets]
    info["tower"] = sources.tower_record(m, entries, kw, n_steps, min(x.atol for x in strict),
                                         min(x.rtol for x in strict))
    if not info["tower"].get("pass", True):
        from toolkit.exporters.parity import failure_line

        bad = next(k for k, v in info["tower"]["table_vs_tower"].items() if not v["pass"])
        raise CheckFailed(f"precomputed tower table of '{bad}' differs from the tower: "
                          f"{failure_line(info['tower']['table_vs_tower'][bad])}")

    from toolkit.exporters.export import export_artifacts

    with reporter.step("export", total=len(entries) * len(targets)) as tell:
        return export_artifacts(entries, name, targets, r.out, dtype=r.dtype, parity_steps=n_steps, model_info=info,
                                progress=tell, require_delegated=r.require_delegated, force=r.force)


def _check_export_out(r: ExportRequest) -> None:
    """--out can be written, is not the run it reads, and is new unless --force; the run dir exists."""
    from toolkit.io import check_apart, check_not_symlink

    check_out(r.out)
    check_apart(r.out, {"run being exported": r.run})  # --force must never replace the run it reads
    if r.out.exists() and not r.force:
        raise ToolkitError(f"output exists: {r.out} (use --force to replace it)")
    if r.force:
        check_not_symlink(r.out)
    if r.run is not None and not r.run.is_dir():
        raise ToolkitError(f"run dir not found: {r.run}")


# ---- toolkit verify ---------------------------------------------------------------------------------------------


@dataclass
class VerifyRequest:
    """The flags of `toolkit verify`, as given."""

    artifact_dir: Path
    threads: str = "1"
    expect: Optional[str] = None
    allow_extra: bool = False
    data: Optional[Path] = None
    users: Optional[int] = None
    seed: int = 0
    max_ndcg_drop: Optional[float] = None
    max_ndcg_drop_relative: Optional[float] = None


def run_verify(r: VerifyRequest, reporter: AccuracyReporter) -> dict:
    """Check the manifest (its own sha256, `--expect`), re-hash every listed file, re-run trajectory parity in each
    runtime and, when all that passed, the accuracy budget; returns the report (`raise_if_unverified` turns it into
    the exit code)."""
    n_threads = positive_int(r.threads, "--threads", hi=4096)  # before torch/executorch load: answers at once
    override = budget_override(r.max_ndcg_drop, r.max_ndcg_drop_relative)
    check_sample_flags(r.users, r.seed, n_threads)
    if r.data is not None and not (Path(r.data) / "dataset.json").is_file():
        raise ToolkitError(f"--data {r.data}: not a dataset dir (no dataset.json)")
    expect = r.expect
    if expect is not None and (len(expect.strip()) != 64
                               or any(c not in "0123456789abcdef" for c in expect.strip().lower())):
        raise ToolkitError(f"--expect: '{expect}' is not a sha256 (64 hex digits)")
    from toolkit.exporters.common import quiet_libraries
    from toolkit.exporters.evaluate import check_accuracy
    from toolkit.exporters.manifest import read_manifest
    from toolkit.exporters.verify import verify_dir

    quiet_libraries()
    read_manifest(r.artifact_dir, expect)  # one line for a missing dir / untrustworthy manifest before any bar
    with reporter.step("verify") as tell:
        report = verify_dir(r.artifact_dir, threads=n_threads, expect=expect, allow_extra=r.allow_extra,
                            progress=tell)
    if report["pass"]:  # the accuracy budget: only files that verified are ranked
        report["accuracy"] = check_accuracy([r.artifact_dir], r.data, r.users, r.seed, override, reporter, n_threads,
                                            expect=expect)
    return report


def raise_if_unverified(report: dict) -> None:
    """Exit 1 naming the first problem: a file, a parity run, files the manifest does not list, a broken accuracy
    budget."""
    if not report["pass"]:
        problems = [p for r in report["artifacts"] for p in r["problems"]]
        if report["unlisted_files"] and not report["allow_extra"]:
            problems.append(f"files not in the manifest: {', '.join(report['unlisted_files'])} "
                            f"(remove them, or pass --allow-extra)")
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckFailed(f"verify failed: {problems[0]}{more}")
    bad = report.get("accuracy", {}).get("failed") or []
    if bad:
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        raise CheckFailed(f"accuracy budget broken: {bad[0]}{more}")


# ---- toolkit eval -----------------------------------------------------------------------------------------------


@dataclass
class EvalRequest:
    """The flags of `toolkit eval`, as given (users, seed, run, out, png, threads: artifact dirs only; updates and
    device: a run dir only)."""

    paths: list[Path]
    data: Path
    split: str = "test"
    regime: Optional[str] = None
    updates: bool = False
    device: str = "cpu"
    users: Optional[int] = None
    seed: int = 0
    run_dir: Optional[Path] = None
    out: Optional[Path] = None
    png: Optional[Path] = None
    threads: int = 1


@dataclass
class Evaluated:
    """What `toolkit eval` shows. kind: "artifacts" (the dirs' report), "updates" (a cloud model's update ablation)
    or "run" (a run re-scored: `rows`, regime -> metrics); `payload` is what --json prints."""

    kind: str
    payload: dict
    model: Optional[str] = None
    split: str = "test"
    regime: str = "window"
    rows: Any = None


def run_eval(r: EvalRequest, reporter: Reporter) -> Evaluated:
    """Artifact dirs (any path with a manifest.json): rank the split through their files, each against the eager
    model of its run, and write --out / --png; a run dir: re-score it (metrics.json exactly), or with --updates
    score which update the device applies."""
    if r.split not in ("valid", "test"):
        raise ToolkitError(f"unknown split '{r.split}' (valid: valid, test)")
    if r.regime is not None and r.regime not in ("window", "stream", "both"):
        raise ToolkitError(f"unknown regime '{r.regime}' (valid: window, stream, both)")
    from toolkit.exporters.evaluate import is_artifact_dir

    if any(is_artifact_dir(p) for p in r.paths):
        return _eval_artifact_dirs(r, reporter)
    if len(r.paths) != 1:
        raise ToolkitError(f"one run dir at a time ({len(r.paths)} given; several paths are for artifact dirs)")
    return _eval_run(r, r.paths[0], r.regime or "window")


def _eval_artifact_dirs(r: EvalRequest, reporter: Reporter) -> Evaluated:
    from toolkit.exporters.evaluate import is_artifact_dir

    check_sample_flags(r.users, r.seed, r.threads)
    not_art = [str(p) for p in r.paths if not is_artifact_dir(p)]
    if not_art:
        raise ToolkitError(f"{not_art[0]} is not an artifact dir (no manifest.json); evaluate a run dir on its own")
    if r.out is not None:
        check_out(r.out, "--out", folder=False)
    if r.png is not None:
        check_out(r.png, "--png", folder=False)
    regimes = {"window": ("window",), "stream": ("stream",)}.get(r.regime or "both", ("window", "stream"))
    from toolkit.data import load_dataset
    from toolkit.exporters.evaluate import evaluate_artifacts, plot_precision, precision_table
    from toolkit.io import atomic_write_json

    ds = load_dataset(r.data)
    results, eager_cache = [], {}
    with reporter.step("eval") as tell:
        for p in r.paths:
            results.append(evaluate_artifacts(p, ds, r.split, r.users, r.seed, r.run_dir, r.threads, regimes,
                                              progress=tell, eager_cache=eager_cache))
    table = precision_table(results)
    payload = {"schema": "toolkit.artifact_eval/1", "results": results, "precision_table": table}
    if r.out is not None:
        atomic_write_json(r.out, payload)
    if r.png is not None:
        plot_precision(table, r.png, f"{results[0].get('source_model')} on {r.split}")
    return Evaluated("artifacts", payload, split=r.split)


def _eval_run(r: EvalRequest, run: Path, regime: str) -> Evaluated:
    from toolkit.data import load_dataset
    from toolkit.models.runs import load_run, read_descriptor
    from toolkit.train.loop import check_vocab, resolve_device
    from toolkit.train.loop import evaluate as evaluate_split

    device = resolve_device(r.device)
    desc = read_descriptor(run)
    ds = load_dataset(r.data)
    if desc.get("dataset_sha256") != ds.sha256:
        raise ToolkitError(f"run {run} was trained on another dataset (sha256 {str(desc.get('dataset_sha256'))[:12]}…"
                           f", {r.data} is {ds.sha256[:12]}…)")
    model, desc = load_run(run)
    if desc["model"] == "gate":
        raise ToolkitError("`toolkit eval` scores recommenders; for a gate use `toolkit gate curve`")
    check_vocab(ds, model.cfg.n_items)
    if r.updates:
        from toolkit.models.cloud import is_cloud_model

        if not is_cloud_model(model):
            raise ToolkitError(f"--updates needs a model with a cloud update (cocorrrec, duet); {run} is a "
                               f"{desc['model']} run")
        if regime != "window":
            raise ToolkitError("--updates scores the window regime (the update is applied to the window)")
        from toolkit.train.updates import update_ablation

        return Evaluated("updates", {"run": str(run), **update_ablation(model, ds, r.split)}, desc["model"], r.split)
    rows = {}
    if regime in ("window", "both"):
        rows["window"] = evaluate_split(model.to(device), ds, r.split)
    if regime in ("stream", "both"):
        from toolkit.train.streaming import evaluate_streaming

        rows["stream"] = evaluate_streaming(model.cpu(), ds, r.split)  # the phone's regime: step by step, on CPU
    payload = {"run": str(run), "split": r.split, "metrics": rows.get("window", rows.get("stream"))}
    if regime != "window":
        payload["regimes"] = rows
    return Evaluated("run", payload, desc["model"], r.split, regime, rows)
