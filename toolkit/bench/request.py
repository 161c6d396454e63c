"""`toolkit bench` flags -> a BenchRequest, every value checked before any work (one-line errors naming the flag).

The CLI (toolkit/cli/bench.py) only parses arguments, calls `request_from_flags`, runs the bench and prints.
Flags arrive as the strings the user typed (None = not given), so every refusal names the flag and its value.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.errors import ToolkitError

# onnxruntime-ort: the ORT-format (.ort) file of an ONNX export, what ORT Mobile loads; asked for by name only
# executorch-cpp: the same .pte through the ExecuTorch C++ runner (toolkit.device.et_cpp), the way an app calls it
RUNTIMES = ("executorch", "executorch-cpp", "onnxruntime", "onnxruntime-ort", "torch")
ENTRIES = ("window", "step", "mrs")


def parse_int_list(text: str | None, flag: str) -> list[int] | None:
    """'25' or '10,15,20' -> [ints > 0]; anything else is a one-line error naming the flag and the bad part."""
    if text is None:
        return None
    if not text.strip():
        raise ToolkitError(f"{flag}: empty value (give e.g. 25 or 10,15,20,25)")
    out = []
    for part in text.split(","):
        p = part.strip()
        if not p:
            raise ToolkitError(f"{flag}: empty item in '{text}'")
        try:
            v = int(p)
        except ValueError:
            raise ToolkitError(f"{flag}: '{p}' is not an integer") from None
        if v <= 0:
            raise ToolkitError(f"{flag}: {v} must be a positive integer")
        out.append(v)
    return sorted(set(out))


def parse_names(text: str | None, flag: str, valid: tuple[str, ...]) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ToolkitError(f"{flag}: empty value (valid: {', '.join(valid)})")
    for n in names:
        if n not in valid:
            raise ToolkitError(f"{flag}: unknown name '{n}' (valid: {', '.join(valid)})")
    return list(dict.fromkeys(names))


def parse_positive(text: str | None, flag: str, kind=float, minimum=None):
    if text is None:
        return None
    try:
        v = kind(text)
    except ValueError:
        raise ToolkitError(f"{flag}: '{text}' is not a{'n integer' if kind is int else ' number'}") from None
    lo = minimum if minimum is not None else 0
    if (minimum is None and not v > 0) or (minimum is not None and v < minimum) or v != v:
        raise ToolkitError(f"{flag} must be {'>= ' + str(lo) if minimum is not None else 'positive'}, got {text}")
    return v


def request_from_flags(paths: list[str] | None, *, models: str | None = None, seq_len: str | None = None,
                       runtimes: str | None = None, target: str | None = None, budget: str | None = None,
                       budget_ms: str | None = None, budget_mb: str | None = None, runs: str | None = None,
                       warmup: str | None = None, entries: str | None = None, history: str | None = None,
                       candidates: str | None = None, n_items: str | None = None, suite: str | None = None,
                       cache: Path | None = None, command: str | None = None, profile: bool = False,
                       rounds: str | None = None, target_ci: str | None = None, max_seconds: str | None = None,
                       devices=None):
    """The BenchRequest the flags describe. `paths`: artifact dirs (a manifest.json inside: benched as shipped,
    after their hashes check out) and run dirs (exported first).

    Rounds: the runs per row are timed in `rounds` interleaved rounds; with a target (`--target-ci`, else the
    suite's, 0.03) rounds continue until each p50's 95% interval is within +-target or `max_seconds`. An explicit
    `--runs N` without `--target-ci` keeps its old meaning: exactly N timed calls per row (still interleaved).
    `devices`: toolkit.device's measurers (toolkit.bench.measurers), needed for emulated targets and executorch-cpp."""
    # numbers first, before anything imports torch: a bad flag answers at once
    for text, flag in ((seq_len, "--seq-len"), (history, "--history")):
        parse_int_list(text, flag)
    for text, flag, kind, lo in ((runs, "--runs", int, 1), (warmup, "--warmup", int, 0),
                                 (candidates, "--candidates", int, 1), (n_items, "--n-items", int, 1),
                                 (budget_ms, "--budget-ms", float, None), (budget_mb, "--budget-mb", float, None),
                                 (rounds, "--rounds", int, 1), (target_ci, "--target-ci", float, 0),
                                 (max_seconds, "--max-seconds", float, None)):
        parse_positive(text, flag, kind, minimum=lo)
    if target_ci is not None and not float(target_ci) < 1:
        raise ToolkitError(f"--target-ci is a share of the p50 (0.03 = +-3%), got {target_ci}")
    from toolkit.bench import budgets as budgets_mod
    from toolkit.bench.suites import load_suite
    from toolkit.bench.sweep import BenchRequest
    from toolkit.bench.targets import load_target
    from toolkit.exporters.manifest import MANIFEST, verified
    from toolkit.exporters.sources import fresh_source, run_source
    from toolkit.exporters.sources import model_names as known_models

    run_dirs = paths
    # ---- validate everything before any work ----
    s = load_suite(suite or "default")
    model_names = parse_names(models, "--models", known_models())
    seq_lens = parse_int_list(seq_len, "--seq-len") or s.seq_lens
    runtime_names = parse_names(runtimes, "--runtimes", RUNTIMES)
    entry_names = parse_names(entries, "--entries", ENTRIES) or s.entries
    histories = parse_int_list(history, "--history")
    n_runs = parse_positive(runs, "--runs", int, minimum=1) or s.runs
    n_warm = parse_positive(warmup, "--warmup", int, minimum=0)
    n_warm = s.warmup if n_warm is None else n_warm
    n_cand = parse_positive(candidates, "--candidates", int, minimum=1) or s.candidates
    vocab = parse_positive(n_items, "--n-items", int, minimum=1) or s.n_items
    tgt = load_target(target or s.target)
    if runtime_names is None:
        runtime_names = [r for r in s.runtimes if tgt.runtimes is None or r in tgt.runtimes] or list(tgt.runtimes or [])
        if tgt.emulated and "executorch" in runtime_names:  # the opt-in ExecuTorch lane: only once it is built
            if devices is None or not devices.emulated_status().executorch:
                runtime_names = [r for r in runtime_names if r != "executorch"] or runtime_names
    elif tgt.runtimes is not None:
        bad = [r for r in runtime_names if r not in tgt.runtimes]
        if bad:
            raise ToolkitError(f"--runtimes: target {tgt.name} cannot measure {', '.join(bad)} "
                               f"(it measures: {', '.join(tgt.runtimes)})")
    if profile and tgt.emulated:
        raise ToolkitError(f"--profile: target {tgt.name} counts instructions under emulation and has no per-op "
                           "profiler; profile on a host target (e.g. --target host-1t)")
    tgt.resolve_cpus()  # fail now, not per cell, if the pinning cannot be honoured

    ms = parse_positive(budget_ms, "--budget-ms")
    mb = parse_positive(budget_mb, "--budget-mb")
    if (ms is not None or mb is not None) and budget is not None:
        raise ToolkitError("use either --budget FILE or --budget-ms/--budget-mb, not both")
    if ms is not None or mb is not None:
        budgets = budgets_mod.uniform(ms, mb)
    elif budget is not None and budget.lower() == "none":
        budgets = budgets_mod.no_budgets()
    elif budget is not None:
        budgets = budgets_mod.load(budget)
    else:
        default = budgets_mod.default_budget_file()
        budgets = budgets_mod.load(default) if default.is_file() else budgets_mod.no_budgets()

    artifact_dirs = [Path(r) for r in run_dirs or [] if (Path(r) / MANIFEST).is_file()]
    for d in artifact_dirs:
        verified(d)  # a dir whose files differ from its manifest is refused before any work, naming the file
    sources = [run_source(r) for r in (run_dirs or []) if Path(r) not in artifact_dirs]
    for m in s.models if model_names is None and not run_dirs else []:
        if m not in known_models():
            raise ToolkitError(f"suite {s.name}: unknown model '{m}' (valid: {', '.join(known_models())})")
    if model_names is not None or not (sources or artifact_dirs):
        sources += [fresh_source(m, vocab) for m in (model_names if model_names is not None else s.models)]

    n_rounds = parse_positive(rounds, "--rounds", int, minimum=1) or s.rounds
    ci = parse_positive(target_ci, "--target-ci", float, minimum=0)
    if ci is None:
        ci = None if runs is not None else s.target_ci  # an explicit --runs N: exactly N calls
    cap = parse_positive(max_seconds, "--max-seconds", float)
    cap = s.max_seconds if cap is None else cap
    if cap == float("inf"):
        raise ToolkitError("--max-seconds must be finite (it caps the rounds when the target is not reached)")

    return BenchRequest(
        rounds=n_rounds, target_ci=ci or None, max_seconds=cap or None,
        sources=sources, seq_lens=seq_lens, runtimes=runtime_names, target=tgt, budgets=budgets, runs=n_runs,
        warmup=n_warm, entries=entry_names, histories=histories if histories is not None else s.histories,
        candidates=n_cand, cache_dir=cache, suite=s.name, artifact_dirs=artifact_dirs,
        artifact_seq_lens=parse_int_list(seq_len, "--seq-len"),
        command=command, profile=profile, devices=devices,
    )
