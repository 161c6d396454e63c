"""The bench matrix: plan (model x entry x runtime x seq-len) cells, export through the cache, measure, make rows.

What is measured is always a file listed in a verified artifact dir (toolkit.exporters.manifest.verified): either a
dir the user gives (`toolkit bench ARTIFACT_DIR`: the shipped files themselves, nothing re-exported) or, for models
(`toolkit bench RUN` / `--models`), the dir the export cache wrote through the same export code (toolkit.exporters
.export). Every row names the artifact's sha256, its manifest's path and the manifest's sha256.

Planning dedupes by what is actually exported: an entry whose shapes do not change with L (SCN's `step`) is
exported and loaded once, then timed at every history point; `window` gets one artifact per L. Each job runs in
a fresh subprocess (toolkit.bench.worker). A cell that fails (export, load, run, crash) becomes a row with
status "failed" and its error; the other cells still report.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.bench import budgets as budgets_mod
from toolkit.bench import environment, memory
from toolkit.bench import profile as profile_mod
from toolkit.bench import rounds as rounds_mod
from toolkit.bench.budgets import Budgets
from toolkit.bench.cache import default_cache_dir, export_cached, key_material
from toolkit.bench.latency import thread_env
from toolkit.bench.measurers import DeviceMeasurers
from toolkit.bench.targets import Target
from toolkit.errors import ToolkitError
from toolkit.exporters.manifest import ArtifactRecord, Manifest, load_test_vectors, verified
from toolkit.exporters.sources import ModelSource, build, contract_kwargs, model_config, weights_digest
from toolkit.models import flops
from toolkit.models.registry import device_name
from toolkit.rows import SCHEMA, artifact_fields, base_row, empty_memory, latency_summary

N_INPUT_SETS = 4
EMULATED_LABEL = "emulated ARM64 (neoverse-n1), instructions not time"

Progress = Callable[[str, int, int], None]  # (description, done, total)


@dataclass
class BenchRequest:
    sources: list[ModelSource]
    seq_lens: list[int] | None
    runtimes: list[str]
    target: Target
    budgets: Budgets
    runs: int = 200
    warmup: int = 20
    entries: list[str] | None = None  # None = every entry of each model's contract
    histories: list[int] = field(default_factory=list)  # extra `step` history points beyond the seq-lens
    candidates: int = 100
    dtype: str = "fp32"
    cache_dir: Path | None = None
    parity_steps: int = 3
    suite: str | None = None
    timeout_s: float = 900.0
    command: str | None = None
    artifact_dirs: list[Path] = field(default_factory=list)  # verified artifact dirs benched as they are
    artifact_seq_lens: list[int] | None = None  # histories for their stateful entries (default: each dir's L)
    profile: bool = False  # per-op profile of every cell (toolkit.bench.profile), after its timing
    rounds: int = 10  # the `runs` timed calls per row are taken in this many interleaved rounds (toolkit.bench.rounds)
    target_ci: float | None = None  # keep adding rounds until every row's 95% p50 interval is within +-this share
    max_seconds: float | None = None  # ... or the rounds have taken this long (the `runs` minimum is always taken)
    slice_warmup: int = 2  # untimed calls at the start of each row's slice of a round
    max_sessions: int = 16  # artifacts loaded (and interleaved) together; more are benched in consecutive groups
    on_planned: Callable[[list[dict]], None] | None = None  # called with the rows to come before any export/timing
    devices: DeviceMeasurers | None = None  # toolkit.device's measurers (emulated target, C++ runner), from the CLI


@dataclass
class Point:
    seq_len: int
    history: int | None = None  # clicks before the timed step (stateful entries only)
    steps_before: int | None = None


@dataclass
class Job:
    source: ModelSource
    model: object
    entry: object  # EntryPoint (None for a job from an artifact dir: the manifest record says everything)
    contract_args: dict
    runtime: str
    points: list[Point]
    info: dict  # per-model facts shared by its rows (params, flops, ...)
    manifest: Manifest | None = None  # set once the artifact to measure is known (verified)
    record: ArtifactRecord | None = None

    @property
    def entry_name(self) -> str:
        return self.record.entry if self.entry is None else self.entry.name

    def input_shapes(self) -> dict[str, list[int]]:
        if self.entry is None:
            return {i.name: list(i.shape) for i in self.record.inputs}
        return {s.name: list(s.shape) for s in self.entry.inputs}


# ---- planning ---------------------------------------------------------------------------------------------------

def artifact_runtime(runtime: str) -> str:
    """The manifest runtime a bench runtime measures: executorch-cpp times the ExecuTorch .pte through the C++
    runner (toolkit.device.et_cpp) instead of the Python binding."""
    return "executorch" if runtime == "executorch-cpp" else runtime


def fit_fresh_source(source: ModelSource, longest: int) -> ModelSource:
    """A fresh model whose config caps the window length (SASRec's learned positions, `max_len`) is built long
    enough for the longest requested L: shape-only cost at L = 100 needs 100 positions. Trained runs are not
    changed (they can only take what they were trained for), and the raised value is in the rows' config."""
    if source.kind != "fresh" or "max_len" in source.config:
        return source
    try:
        from toolkit.models.registry import classes

        cfg_cls, _ = classes(source.name)
        default = {f.name: f.default for f in dataclasses.fields(cfg_cls)}.get("max_len")
    except Exception:
        return source
    if isinstance(default, int) and default < longest:
        return dataclasses.replace(source, config={**source.config, "max_len": longest})
    return source


def _signature(entry) -> tuple:
    return (entry.name, tuple(tuple(s.shape) for s in entry.inputs), tuple(tuple(s.shape) for s in entry.states))


def _step_k(entry) -> int:
    names = [s.name for s in entry.inputs]
    spec = entry.inputs[names.index("items")] if "items" in names else entry.inputs[0]
    return int(spec.shape[-1])


def _record_step_k(rec: ArtifactRecord) -> int:
    spec = next((i for i in rec.inputs if i.name == "items"), rec.inputs[0])
    return int(spec.shape[-1])


def _record_seq_len(manifest: Manifest, rec: ArtifactRecord) -> int | None:
    v = rec.raw.get("seq_len", manifest.seq_len)
    return v if isinstance(v, int) else None


def plan_artifacts(req: BenchRequest) -> list[Job]:
    """One job per benchable record of each verified dir: exactly the files the manifests list, nothing exported.

    A stateless record is one row at the dir's seq-len; a stateful one (a streaming `step`) is timed at each history
    in --seq-len (default: the dir's seq-len) and --history."""
    jobs = []
    for d in req.artifact_dirs:
        m = verified(d)
        wanted = {artifact_runtime(rt) for rt in req.runtimes}
        recs = [r for r in m.artifacts if r.runtime in wanted
                and (req.entries is None or r.entry in req.entries)]
        if not recs:
            have = sorted({f"{r.entry}/{r.runtime}" for r in m.artifacts})
            raise ToolkitError(f"{m.path}: no artifact for runtimes {', '.join(req.runtimes)}"
                               f"{' and entries ' + ', '.join(req.entries) if req.entries else ''} "
                               f"(it has: {', '.join(have)})")
        for rec in recs:
            L = _record_seq_len(m, rec)
            if rec.states:
                K = _record_step_k(rec)
                hs = sorted(set(req.artifact_seq_lens or ([L] if L else [K])) | set(req.histories))
                pts = [Point(h, history=(h // K) * K, steps_before=h // K) for h in hs]
            else:
                pts = [Point(L)]
            src = ModelSource("artifacts", rec.model, run=str(m.root))
            info = {"params": rec.raw.get("params", (m.raw.get("model_info") or {}).get("params")),
                    "params_excluding_item_table": rec.raw.get(
                        "params_excluding_item_table",
                        (m.raw.get("model_info") or {}).get("params_excluding_item_table")),
                    "flops": rec.raw.get("flops"), "flops_analytic": rec.raw.get("flops_analytic"),
                    "flops_by_op": rec.raw.get("flops_by_op"), "config": (m.raw.get("model_info") or {}).get("config", {}),
                    "source": f"artifact dir {m.root} (manifest sha256 {m.digest[:12]}...)"}
            for rt in [rt for rt in req.runtimes if artifact_runtime(rt) == rec.runtime]:
                jobs.append(Job(src, None, None, {}, rt, pts, info, manifest=m, record=rec))
    return jobs


def plan(req: BenchRequest, failed_rows: list[dict]) -> list[Job]:
    """Build each model once, call its contract at every L, and group entries into export+measure jobs."""
    jobs: list[Job] = []
    if not req.sources:
        return jobs
    step_points = sorted(set(req.seq_lens) | set(req.histories))
    for source in req.sources:
        source = fit_fresh_source(source, max(req.seq_lens))
        try:
            model = build(source)
        except Exception as e:  # a model that cannot be built fails only its own cells
            for L in req.seq_lens:
                for rt in req.runtimes:
                    failed_rows.append(_bare_row(req, source.name, "window", rt, L, None, f"model: {_err(e)}"))
            continue
        entries_by_l = {}
        for L in req.seq_lens:  # a length the model cannot take fails only that length's cells
            try:
                entries_by_l[L] = model.contract(**contract_kwargs(model, L, req.candidates))
            except Exception as e:
                for rt in req.runtimes:
                    failed_rows.append(_bare_row(req, source.name, "window", rt, L, None, f"contract: {_err(e)}"))
        counts = model.param_counts()
        info = {"params": counts.get("params"), "params_excluding_item_table": counts.get("params_excluding_item_table"),
                "config": model_config(model), "weights_sha256": weights_digest(model), "source": source.describe()}
        seen: dict[tuple, Job] = {}
        flop_cache: dict[tuple, tuple] = {}
        for L, entries in entries_by_l.items():
            for entry in entries:
                if req.entries is not None and entry.name not in req.entries:
                    continue
                sig = _signature(entry)
                if sig not in flop_cache:
                    try:
                        total, by_op = flops.count_flops(entry)
                    except Exception as e:  # FLOPs are informative; a counter failure does not fail the cell
                        total, by_op = None, {"error": _err(e)}
                    try:
                        analytic = flops.analytic_flops(model, entry, L)
                    except Exception:
                        analytic = None
                    flop_cache[sig] = (total, by_op, analytic)
                for rt in req.runtimes:
                    key = (sig, rt)
                    stateful = bool(entry.states)
                    if key in seen:
                        if not stateful:  # L-independent stateless entry: one measurement, a row per L
                            seen[key].points.append(Point(L))
                        continue
                    if stateful:
                        K = _step_k(entry)
                        pts = [Point(h, history=(h // K) * K, steps_before=h // K) for h in step_points]
                    else:
                        pts = [Point(L)]
                    job = Job(source, model, entry, contract_kwargs(model, L, req.candidates), rt, pts,
                              info | {"flops": flop_cache[sig][0], "flops_by_op": flop_cache[sig][1],
                                      "flops_analytic": flop_cache[sig][2]})
                    seen[key] = job
                    jobs.append(job)
    return jobs


# ---- rows -------------------------------------------------------------------------------------------------------

def _err(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:500]


def _bare_row(req: BenchRequest, model: str, entry: str, runtime: str, seq_len: int, history, error: str | None):
    return base_row(model=device_name(model), entry=entry, runtime=runtime, seq_len=seq_len, history=history,
                    target=req.target.name, error=error,
                    measured_on=EMULATED_LABEL if req.target.emulated else environment.host_label(),
                    threads=req.target.threads, candidates=req.candidates, cold_start_ms=None)


def parity_error(record: dict) -> float | None:
    """Largest max-abs error anywhere in the record's parity report (format-tolerant)."""
    found: list[float] = []

    def walk(x, inside: bool = False):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, inside or "max_abs" in str(k))
        elif isinstance(x, list):
            for v in x:
                walk(v, inside)
        elif inside and isinstance(x, (int, float)) and not isinstance(x, bool):
            found.append(float(x))

    walk(record.get("parity"))
    if "parity_max_abs_err" in record and isinstance(record["parity_max_abs_err"], (int, float)):
        found.append(float(record["parity_max_abs_err"]))
    return max(found) if found else None


def _static_memory(job: Job) -> dict:
    mem = empty_memory()
    if job.runtime == "torch":
        mem["state_bytes"] = memory.state_bytes(job.entry.states)
        mem["weights_bytes"] = memory.module_weights_bytes(job.entry.module, {s.name for s in job.entry.states})
        return mem
    rec = job.record.raw
    mem["state_bytes"] = memory.state_bytes([{"shape": list(s.shape), "dtype": s.dtype} for s in job.record.states])
    path = job.manifest.member(job.record.file)
    if job.runtime == "onnxruntime":
        mem["weights_bytes"] = memory.onnx_weights_bytes(path)
    elif job.runtime in ("executorch", "executorch-cpp"):
        mem["weights_bytes"] = memory.pte_weights_bytes(path)
        planned = rec.get("planned_activation_bytes")
        if planned is None:
            planned = memory.pte_planned_bytes(path, rec.get("method", "forward"))
        mem["activations_bytes"] = planned
        mem["arena_peak_bytes"] = planned  # ExecuTorch allocates exactly its planned buffers up front
    return mem


def _rows_for_job(req: BenchRequest, job: Job, cache_hit, result: dict | None, error: str | None):
    rows = []
    static = None
    rec = job.record.raw if job.record is not None else None
    if rec is not None or job.runtime == "torch":
        try:
            static = _static_memory(job)
        except Exception:  # the static split is informative; never lose measured rows over it
            static = None
    for i, p in enumerate(job.points):
        row = _bare_row(req, job.source.name, job.entry_name, job.runtime, p.seq_len, p.history, error)
        row.update({k: job.info[k] for k in ("flops", "flops_analytic", "params", "params_excluding_item_table")})
        row["flops_by_op"] = job.info["flops_by_op"]
        row["source"] = job.info["source"]
        row["config"] = job.info["config"]
        row["input_shapes"] = job.input_shapes()
        if rec is not None:
            row["artifact_bytes"] = rec.get("bytes")
            row["parity_max_abs_err"] = parity_error(rec)
            row["artifact"] = artifact_fields(job.manifest, job.record)
            row["export_cache"] = "artifact dir" if cache_hit is None else ("hit" if cache_hit else "miss")
        if static is not None:
            row["memory"] = dict(static)
        if result is not None and result.get("ok"):
            pt = result["points"][i]
            row["latency_ms"] = pt.get("latency_ms")
            row["noise"] = pt.get("noise")
            row["memory"].update({k: v for k, v in result["memory"].items() if k in row["memory"] or k.startswith("arena")
                                  or k == "rss_method"})
            if pt.get("instructions_per_inference") is not None:
                row["instructions_per_inference"] = pt["instructions_per_inference"]
                row["instructions"] = pt.get("instructions")
            if result.get("parity_cpp_vs_test_vectors") is not None:  # executorch-cpp: the runner's own outputs
                row["parity_cpp_vs_test_vectors"] = result["parity_cpp_vs_test_vectors"]
                row["parity_max_abs_err"] = max(row["parity_max_abs_err"] or 0.0, result["parity_cpp_vs_test_vectors"])
            if pt.get("parity_arm64_vs_host") is not None:
                row["parity_arm64_vs_host"] = pt["parity_arm64_vs_host"]
                row["parity_max_abs_err"] = max(row["parity_max_abs_err"] or 0.0, pt["parity_arm64_vs_host"])
            row["cpus"] = result.get("cpus")
            if "profile" in result:
                prof = dict(result["profile"])  # one profile per artifact, a copy per row
                p50 = (row.get("latency_ms") or {}).get("p50")
                if prof.get("run_us") and p50:  # what the profiler itself adds: its run vs the timed p50
                    prof["profiled_run_over_timed_p50"] = prof["run_us"] / (p50 * 1e3)
                row["profile"] = prof
            row["timed_call"] = result.get("timed_call")
            if result.get("cold_start_ms") is not None:  # one load per artifact: the same numbers on each of its rows
                row["cold_start_ms"] = dict(result["cold_start_ms"])
            if result.get("outputs_finite") is False:
                row["warning"] = "non-finite outputs"
        rows.append(row)
    return rows


# ---- measuring --------------------------------------------------------------------------------------------------

def _write_inputs(job: Job, path: Path) -> tuple[list[str], int]:
    """Input sets for the timed calls: the artifact's shipped test-vector inputs (valid ids, the real trajectory),
    or for eager torch the entry's deterministic example inputs."""
    arrays = {}
    if job.record is not None:
        names = job.record.input_names
        steps = load_test_vectors(job.manifest, job.record)["steps"]
        for i, st in enumerate(steps):
            for name, a in zip(names, st["inputs"]):
                arrays[f"set{i}.{name}"] = a
        n_sets = len(steps)
    else:
        names = [s.name for s in job.entry.inputs]
        for i in range(N_INPUT_SETS):
            for name, t in zip(names, job.entry.example_inputs(seed=i)):
                arrays[f"set{i}.{name}"] = t.numpy()
        n_sets = N_INPUT_SETS
    np.savez(path, **arrays)
    return names, n_sets


def _run_worker(spec: dict, workdir: Path, n: int, timeout: float, threads: int) -> dict:
    spec_path, out_path = workdir / f"job{n}.json", workdir / f"job{n}.out.json"
    spec_path.write_text(json.dumps(spec, default=str))
    env = dict(os.environ) | thread_env(threads)
    try:
        proc = subprocess.run([sys.executable, "-m", "toolkit.bench.worker", str(spec_path), str(out_path)],
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"measuring process timed out after {timeout:.0f} s"}
    if out_path.is_file():
        from toolkit.io import read_json

        try:
            return read_json(out_path, "bench worker result")
        except ToolkitError:
            pass
    rc = proc.returncode
    why = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with {rc}"
    tail = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()][-1:] or [""]
    return {"ok": False, "error": f"measuring process {why}: {tail[0][:300]}".rstrip(": ")}


def _measure_cpp(req: BenchRequest, job: Job) -> dict:
    """A .pte through the C++ runner (toolkit.device.et_cpp), no Python in the timed path: the runner times its own
    calls in one process, so it is not interleaved with the rounds of the other rows. Handed in as req.devices."""
    if req.devices is None:
        return {"ok": False, "error": "the ExecuTorch C++ runner is toolkit.device's: none was handed to the bench"}
    return req.devices.cpp(job.manifest, job.record, [p.steps_before for p in job.points], runs=req.runs,
                               warmup=req.warmup, threads=req.target.threads, cpus=req.target.resolve_cpus())


def _host_spec(req: BenchRequest, job: Job, workdir: Path, n: int) -> dict:
    npz = workdir / f"job{n}.inputs.npz"
    names, n_sets = _write_inputs(job, npz)
    spec = {
        "runtime": job.runtime, "threads": req.target.threads, "cpus": req.target.resolve_cpus(),
        "warmup": req.warmup, "runs": req.runs, "inputs_npz": str(npz), "input_names": names,
        "n_sets": n_sets, "entry": job.entry_name,
        "points": [{"seq_len": p.seq_len, "steps_before": p.steps_before} for p in job.points],
        "profile": req.profile,
    }
    if job.runtime == "torch":
        spec |= {"source": job.source.to_dict(), "contract_args": job.contract_args}
    else:
        spec |= {"artifact_dir": str(job.manifest.root), "record": job.record.raw}
        if job.runtime == "onnxruntime":
            spec["onnx_file"] = str(job.manifest.member(job.record.file))
    return spec


def _start_session(req: BenchRequest, job: Job, workdir: Path, n: int) -> rounds_mod.WorkerSession:
    """The job's measuring process, set up (loaded, first call, warm-up) and waiting for its slices."""
    env = dict(os.environ) | thread_env(req.target.threads)
    return rounds_mod.WorkerSession(_host_spec(req, job, workdir, n), workdir, n, env, req.timeout_s)


def _round_plan(req: BenchRequest) -> tuple[int, int]:
    """(minimum rounds, calls per row per round): the requested runs split over `rounds` rounds."""
    n_rounds = max(1, min(req.rounds, req.runs))
    return n_rounds, math.ceil(req.runs / n_rounds)


def _time_in_rounds(req: BenchRequest, live: list, progress: Progress, done: int, total: int,
                    runs_log: list[dict]) -> list[dict]:
    """Time the loaded sessions' points in interleaved rounds (toolkit.bench.rounds), then finish each session
    (peak RSS, arena, profile) and make its rows."""
    n_rounds, per_round = _round_plan(req)
    slots, by_job = [], []
    for job, hit, sess in live:
        mine = [rounds_mod.Slot(sess, i, per_round, req.slice_warmup if p.steps_before is None else 1,
                                label=f"{job.source.name}/{job.entry_name}/{job.runtime}")
                for i, p in enumerate(job.points)]
        slots.extend(mine)
        by_job.append((job, hit, sess, mine))
    target = f" to +-{100 * req.target_ci:g}%" if req.target_ci else ""

    def on_round(r: int, within: int, n_live: int, seconds: float) -> None:
        cap = f"/{req.max_seconds:g}" if req.target_ci and req.max_seconds else ""
        progress(f"round {r}: {len(slots)} rows interleaved{target}, {within}/{n_live} there, {seconds:.0f}{cap} s",
                 done, total)

    progress(f"round 1: {len(slots)} rows interleaved{target}", done, total)
    run = rounds_mod.run_rounds(slots, min_rounds=n_rounds, target_ci=req.target_ci, max_seconds=req.max_seconds,
                                timeout=req.timeout_s, progress=on_round)
    runs_log.append(run)
    rows = []
    for job, hit, sess, mine in by_job:
        error, result = None, None
        fin = sess.finish(req.timeout_s) if sess.error is None else {"ok": False, "error": sess.error}
        if not fin.get("ok") or any(not s.rounds for s in mine):
            error = f"measure: {fin.get('error') or sess.error or 'no samples'}"
        else:
            result = fin | {"points": [{"latency_ms": latency_summary([x for r in s.rounds for x in r]),
                                        "noise": rounds_mod.slot_noise(s, run)} for s in mine]}
        rows.extend(_rows_for_job(req, job, hit, result, error))
    return rows


def planned_rows(req: BenchRequest, jobs: list[Job]) -> list[dict]:
    """The identity of every row the jobs will make (model, entry, runtime, seq_len, history, target)."""
    return [{"model": device_name(j.source.name), "entry": j.entry_name, "runtime": j.runtime, "seq_len": p.seq_len,
             "history": p.history, "target": req.target.name} for j in jobs for p in j.points]


def _rounds_env(req: BenchRequest, runs: list[dict]) -> dict | None:
    if req.target.emulated:
        return None
    n_rounds, per_round = _round_plan(req)
    return {"min_rounds": n_rounds, "calls_per_round": per_round, "target_ci": req.target_ci,
            "max_seconds": req.max_seconds, "slice_warmup": req.slice_warmup, "max_sessions": req.max_sessions,
            "groups": [{k: r[k] for k in ("rounds", "seconds", "stop", "seed")} for r in runs],
            "how": "each row gets calls_per_round timed calls per round (after slice_warmup untimed ones), rows in "
                   "a seeded shuffled order each round, every artifact kept loaded in its own process across "
                   "rounds; rounds continue past min_rounds until each row's 95% p50 interval is within "
                   "+-target_ci of its p50 or max_seconds of rounds (toolkit.bench.rounds, toolkit.bench.noise)"}


def emulated_preflight(target: Target, devices: DeviceMeasurers | None) -> None:
    """Before any export: an emulated target must be set up, or the bench stops with one line saying how."""
    if target.emulation != "arm64":
        raise ToolkitError(f"target {target.name}: unknown emulation '{target.emulation}' (this toolkit knows arm64)")
    if devices is None:
        raise ToolkitError(f"target {target.name} needs toolkit.device (emulated ARM64): none was handed to the bench")
    try:
        st = devices.emulated_status()
    except ImportError as e:
        raise ToolkitError(f"target {target.name} needs toolkit.device (emulated ARM64), not importable: {e}") from None
    if not st.ready:
        raise ToolkitError(f"target {target.name} is not set up: {st.reason}")


def _measure_emulated(req: BenchRequest, job: Job) -> dict:
    """Hand the artifact to toolkit.device's emulated target: instruction counts, not time (ONNX through the guest's
    onnxruntime, .pte through the ExecuTorch C++ runner)."""
    if job.runtime not in ("onnxruntime", "executorch"):
        return {"ok": False, "error": f"target {req.target.name} measures ONNX and ExecuTorch artifacts only "
                                      f"(runtime '{job.runtime}' is not emulated there)"}
    points = []
    for p in job.points:  # req.devices is set: emulated_preflight checked it
        res = req.devices.emulated(job.runtime, job.manifest, job.record, target=req.target.to_dict(), runs=req.runs,
                                   steps_before=p.steps_before)
        if not res.get("ok"):
            return {"ok": False, "error": f"emulated arm64: {res.get('error') or 'no result'}"}
        points.append({"latency_ms": None, "instructions_per_inference": res.get("instructions_per_inference"),
                       "instructions": res.get("instructions"),
                       "parity_arm64_vs_host": res.get("parity_max_abs_err")})
    return {"ok": True, "points": points, "memory": {}}


def _export_job(req: BenchRequest, job: Job, cache_root: Path) -> tuple[Manifest, ArtifactRecord, bool]:
    """Export the job's entry through the export cache (toolkit.exporters.export), then read the dir back like any
    other artifact dir (verified): the bench measures the file a user would get from `toolkit export`."""
    runtime = artifact_runtime(job.runtime)  # executorch-cpp measures the same cached .pte as executorch
    material = key_material(job.source.name, job.info["config"], job.info["weights_sha256"], job.entry,
                            runtime, req.dtype, {"dtype": req.dtype})
    directory, _, hit = export_cached(cache_root, material, job.entry, device_name(job.source.name), runtime,
                                      req.dtype,
                                   req.parity_steps, {"source": job.info["source"], "config": job.info["config"]})
    m = verified(directory)
    rec = next((r for r in m.artifacts if r.entry == job.entry.name and r.runtime == runtime), None)
    if rec is None:
        raise ToolkitError(f"{m.path}: no '{runtime}' artifact for entry '{job.entry.name}'")
    return m, rec, hit


def run_bench(req: BenchRequest, progress: Progress | None = None) -> dict:
    """Plan, export models (cached) into artifact dirs, measure the verified files; returns {"schema",
    "environment", "rows", "summary"} with budgets checked."""
    progress = progress or (lambda desc, done, total: None)
    cache_root = Path(req.cache_dir) if req.cache_dir else default_cache_dir()
    rows: list[dict] = []
    if req.target.emulated:
        emulated_preflight(req.target, req.devices)
    load_start = environment.load_average()
    start_snap = environment.snapshot()
    round_runs: list[dict] = []
    progress("building models", 0, 1)
    jobs = plan_artifacts(req) + plan(req, rows)
    if req.on_planned is not None:  # e.g. --compare: refuse rows its baseline cannot compare before any work
        req.on_planned(planned_rows(req, jobs) + [dict(r) for r in rows])
    total = sum(2 if j.runtime != "torch" and j.record is None else 1 for j in jobs)
    done = 0
    probe = None
    with tempfile.TemporaryDirectory(prefix="toolkit-bench-") as tmp:
        workdir = Path(tmp)
        if not req.target.emulated and jobs:
            progress("floor probe (matmul throughput, empty calls)", done, total)
            probe = _run_worker({"kind": "floor", "runtimes": sorted({j.runtime for j in jobs}),
                                 "threads": req.target.threads, "cpus": req.target.resolve_cpus()},
                                workdir, -1, req.timeout_s, req.target.threads)
        indexed = list(enumerate(jobs))
        opened: list[rounds_mod.WorkerSession] = []
        try:
            for group in (rounds_mod.groups(indexed, req.max_sessions) if not req.target.emulated else [indexed]):
                live: list[tuple[Job, object, rounds_mod.WorkerSession]] = []
                for n, job in group:
                    label = f"{job.source.name}/{job.entry_name}/{job.runtime}"
                    label += f" L={job.points[0].seq_len}" if job.points[0].history is None else " (streaming)"
                    hit = None  # None: benched from a given artifact dir, no export
                    error = None
                    if job.runtime != "torch" and job.record is None:
                        progress(f"export {label}", done, total)
                        try:
                            job.manifest, job.record, hit = _export_job(req, job, cache_root)
                        except Exception as e:
                            error = f"export: {_err(e)}"
                        done += 1
                    result = None
                    if error is None and (req.target.emulated or job.runtime == "executorch-cpp"):
                        progress(f"measure {label}", done, total)
                        try:
                            result = _measure_emulated(req, job) if req.target.emulated else _measure_cpp(req, job)
                        except ToolkitError:
                            raise
                        except Exception as e:
                            result = {"ok": False, "error": _err(e)}
                        if not result.get("ok"):
                            error = f"measure: {result.get('error', 'unknown error')}"
                    elif error is None:  # host: load it in its own process, kept loaded for the rounds
                        progress(f"load {label}", done, total)
                        try:
                            sess = _start_session(req, job, workdir, n)
                            opened.append(sess)
                        except ToolkitError:
                            raise
                        except Exception as e:
                            sess, error = None, f"measure: {_err(e)}"
                        if sess is not None and sess.error is not None:
                            error = f"measure: {sess.error}"
                        elif sess is not None:
                            live.append((job, hit, sess))
                            done += 1
                            continue
                    done += 1
                    rows.extend(_rows_for_job(req, job, hit, result, error))
                if live:
                    rows.extend(_time_in_rounds(req, live, progress, done, total, round_runs))
        finally:  # an error or a signal mid-run: no measuring process outlives the bench
            for sess in opened:
                sess.close(wait=False)
    machine = environment.busy(start_snap, environment.snapshot())
    if round_runs:  # the timed rounds are what matters for noise: their own steal / other-process CPU
        machine["rounds"] = [r["machine"] for r in round_runs]
        for key in ("steal_pct", "other_cpu_cores"):
            vals = [r["machine"][key] for r in round_runs if r["machine"].get(key) is not None]
            machine[key] = max(vals) if vals else machine[key]
        reasons = [x for r in round_runs for x in r["machine"]["busy_reasons"] if not x.startswith("load average")]
        machine["busy_reasons"] = [x for x in machine["busy_reasons"] if x.startswith("load average")] + reasons
        machine["busy"] = bool(machine["busy_reasons"])
        progress("done", total, total)
    for row in rows:
        row["budget"] = budgets_mod.check(row, req.budgets)
        if row["status"] == "ok" and row.get("latency_ms") is not None:
            row.update(profile_mod.floor_fields(row, probe if (probe or {}).get("ok") else None))
        else:
            row.update({"floor": None, "x_of_floor": None})
    order = {name: i for i, name in enumerate(dict.fromkeys([device_name(j.source.name) for j in jobs]
                                                             + [device_name(s.name) for s in req.sources]))}
    rows.sort(key=lambda r: (order.get(r["model"], 99), r["entry"], r["runtime"], r["seq_len"]))
    env = environment.describe(req.target, {
        "suite": req.suite, "runs": req.runs, "warmup": req.warmup, "candidates": req.candidates,
        "dtype": req.dtype, "budgets": req.budgets.describe(), "cache_dir": str(cache_root),
        "load_average_start": load_start,
        "machine_load": machine,
        "warnings": ([f"machine busy while benching: {'; '.join(machine['busy_reasons'])}: timings are noisier "
                      "than on an idle machine"] if machine.get("busy") else []),
        "rounds": _rounds_env(req, round_runs),
        "floor": probe,
        "command": req.command,
        "flops_counter": {"tool": flops.COUNTER, "covers": flops.COVERS, "ops": flops.counted_ops()},
        "latency": "host wall-clock per call after warm-up, profiling off, process pinned per target; "
                   "step rows: reset, replay `history` clicks untimed, time the next step",
        "cold_start": "cold_start_ms.load: opening the artifact in the measuring process (onnxruntime: "
                      "InferenceSession creation; executorch: load_program + load_method; torch: building the eager "
                      "module from its source), after the runtime's imports, file already in the OS page cache; "
                      "cold_start_ms.first_inference: the first call after that load, before warm-up",
        "sources": {s.name: s.describe() for s in req.sources},
        "artifact_dirs": [{"dir": str(j.manifest.root), "manifest_sha256": j.manifest.digest}
                          for j in {id(j.manifest): j for j in jobs if j.manifest is not None}.values()],
    })
    return {"schema": SCHEMA, "environment": env, "rows": rows, "summary": summarize(rows)}


def summarize(rows: list[dict]) -> dict:
    """Counts over rows, each row in exactly one of: within budget, over budget, failed (not measured), no budget,
    inconclusive (a p50 limit inside the p50's 95% interval; `pass` does not count it as a failure).

    `budget_checked` (rows a budget applies to, failed cells included) and `budget_broken` (rows whose budget check
    did not pass: over budget or failed under a budget) keep their meaning for readers of older results."""
    def verdict(r: dict) -> str:
        if r["status"] != "ok":
            return "failed"
        if (r.get("budget") or {}).get("verdict") == "inconclusive":
            return "inconclusive"
        p = (r.get("budget") or {}).get("pass")
        return "no_budget" if p is None else ("within_budget" if p else "over_budget")

    counts = {k: 0 for k in ("within_budget", "over_budget", "failed", "no_budget", "inconclusive")}
    for r in rows:
        counts[verdict(r)] += 1
    checked = [r for r in rows if (r.get("budget") or {}).get("pass") is not None
               or (r.get("budget") or {}).get("verdict") == "inconclusive"]
    broken = [r for r in rows if (r.get("budget") or {}).get("pass") is False]
    return {"rows": len(rows), **counts, "budget_checked": len(checked), "budget_broken": len(broken),
            "pass": counts["failed"] == 0 and counts["over_budget"] == 0}
