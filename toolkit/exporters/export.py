"""export_artifacts: every entry point x every target -> artifact + state check + trajectory parity + test vectors,
all written into a temp dir that becomes `out_dir` only when everything passed (a failed export leaves nothing)."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from toolkit.errors import CheckFailed, ToolkitError
from toolkit.exporters.common import (
    STATE_IN,
    Exported,
    artifact_stem,
    cast_entry,
    dtype_name,
    first_line,
    state_output_name,
    tensor_record,
    to_numpy,
)
from toolkit.exporters.manifest import COREML_SKIP_REASON, FORMAT, VECTORS_LAYOUT, save_test_vectors, write_manifest
from toolkit.exporters.parity import (
    compare,
    eager_trajectory,
    failure_line,
    runtime_trajectory,
    trajectory_inputs,
)
from toolkit.exporters.recipes import DTYPES, Recipe, find, parse_targets
from toolkit.exporters.runners import coreml_can_run, open_runner
from toolkit.exporters.statecheck import contract_check, mutated_buffers, raise_if_failed
from toolkit.io import atomic_dir, sha256_path, size_path, versions
from toolkit.models.contract import EntryPoint, buffer_name

Progress = Callable[[str, int, int], None]


def _exporter(target: str):
    if target == "executorch":
        from toolkit.exporters.to_executorch import export_executorch

        return export_executorch
    if target == "onnx":
        from toolkit.exporters.to_onnx import export_onnx

        return export_onnx
    from toolkit.exporters.to_coreml import export_coreml

    return export_coreml


def _validate(entries: list[EntryPoint], targets: list[str], dtype: str, parity_steps: int) -> None:
    if not entries:
        raise ToolkitError("nothing to export: the model declared no entry points")
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ToolkitError(f"duplicate entry point names: {names}")
    if dtype not in DTYPES:
        raise ToolkitError(f"unknown dtype '{dtype}' (valid: {', '.join(DTYPES)})")
    if not isinstance(parity_steps, int) or parity_steps < 1:
        raise ToolkitError(f"parity steps must be a positive integer, got {parity_steps!r}")
    for e in entries:
        for s in e.inputs:
            if any(int(d) <= 0 for d in s.shape):
                raise ToolkitError(f"entry '{e.name}': input '{s.name}' has a non-positive dimension {list(s.shape)}")


def _file_entry(root: Path, path: Path, role: str) -> dict:
    return {"role": role, "file": path.name, "sha256": sha256_path(path), "bytes": size_path(path)}


def _state_records(ent: EntryPoint, target: str, initial_file: str | None,
                   state_dtype: str | None = None) -> list[dict]:
    out = []
    for s in ent.states:
        rec = {"name": s.name, "shape": list(s.shape), "dtype": state_dtype or dtype_name(s.dtype),
               "initial_file": initial_file, "output": state_output_name(target, s.name)}
        if target == "onnx":
            rec["input"] = STATE_IN + s.name
        elif target == "executorch":
            rec["buffer"] = buffer_name(s.name)
        else:
            rec["coreml_state"] = buffer_name(s.name)
        out.append(rec)
    return out


def _coreml_linux_parity(entry: EntryPoint, recipe: Recipe, ref: list[dict], inputs: list, exp: Exported) -> dict:
    """No Core ML runtime here: structure checks + the drift the fp16 state (and fp16 compute) would cause."""
    if recipe.opt("compute_precision", "fp32") == "fp16":
        est_entry, how = cast_entry(entry, "fp16"), "eager PyTorch in fp16 (compute and state)"
    else:
        est_entry, how = entry, "eager PyTorch fp32 with the state rounded to fp16 after every step"
    est_inputs = [tuple(x.to(s.dtype) for x, s in zip(inp, est_entry.inputs)) for inp in inputs]
    est = eager_trajectory(est_entry, est_inputs, state_dtype=torch.float16)
    drift = compare(ref, est, entry.outputs, [s.name for s in entry.states], recipe.atol, recipe.rtol)
    drift["method"] = how + ("; int8 weight quantization not emulated" if recipe.opt("weight_quantization") == "int8"
                             else "")
    problems = exp.record.get("structure_problems", [])
    checked_ok = (not problems) and drift["pass"]
    return {
        # what Linux can check (spec, I/O, states, ops, fp16 drift) failing fails the export; the runtime run itself
        # is skipped, never reported as passed
        "status": "skipped" if checked_ok else "failed",
        "reason": f"{COREML_SKIP_REASON}; this host is {platform.system()}",
        "pass": None if checked_ok else False,
        "runtime_parity": "skipped: Core ML prediction needs macOS 15+; this host is "
                          f"{platform.system()} (structure checked, fp16 drift estimated instead)",
        "checks": {"structure": "passed" if not problems else "failed",
                   "fp16_drift_estimate": "passed" if drift["pass"] else "failed",
                   "runtime": f"skipped ({COREML_SKIP_REASON})"},
        "structure_pass": not problems,
        "structure_problems": problems,
        "fp16_state_drift_estimate": drift,
        "worst": drift["worst"],
        "tolerance": drift["tolerance"],
        "steps": drift["steps"],
    }


def export_artifacts(entries: list[EntryPoint], model_name: str, targets: list[str], out_dir: Path,
                     dtype: str = "fp32", parity_steps: int = 5, model_info: dict | None = None,
                     progress: Progress | None = None, require_delegated: bool = False, force: bool = False,
                     seed: int = 0) -> dict:
    """Export, check and describe every (entry, target); returns the manifest written to out_dir/manifest.json.

    Raises ToolkitError for bad requests (before any work) and CheckFailed when a state check, parity,
    delegation requirement or bundled-program check fails; in both cases out_dir is left untouched.
    """
    out_dir = Path(out_dir)
    targets = parse_targets(targets)
    _validate(entries, targets, dtype, parity_steps)
    recipes = {t: find(t, dtype) for t in targets}  # fail on a missing recipe before exporting anything
    if out_dir.exists() and not force:
        raise ToolkitError(f"output exists: {out_dir} (use --force to replace it)")
    total = len(entries) * len(targets)
    done = 0
    tell = progress or (lambda what, d, t: None)
    records: list[dict] = []
    with atomic_dir(out_dir, force=force) as tmp:
        for entry in entries:
            tell(f"{entry.name}: state contract", done, total)
            base = contract_check(entry, mutated_buffers(entry))
            if base["problems"]:
                raise CheckFailed(f"state check failed for entry '{entry.name}': {base['problems'][0]} "
                                  f"(fix: {base['hints'][0]})")
            inputs = trajectory_inputs(entry, parity_steps, seed)
            ref = eager_trajectory(entry, inputs)
            calib = inputs[: min(4, len(inputs))]
            for target in targets:
                recipe = recipes[target]
                stem = artifact_stem(model_name, entry.name, recipe.name)
                tell(f"{stem}: export", done, total)
                records.append(_export_one(entry, target, recipe, tmp, stem, base, inputs, ref, calib,
                                           require_delegated, model_name, dtype, tell, done, total))
                if target == "onnx" and recipe.opt("ort_format", True):
                    tell(f"{stem}: ORT format + mobile usability", done, total)
                    records.append(_ort_one(records[-1], entry, recipe, tmp, inputs, ref))
                done += 1
                tell(f"{stem}: done", done, total)
        info = dict(model_info or {})
        manifest = {
            "format": FORMAT,
            "model": model_name,  # the model the device runs (names the files); source_model: the one asked for
            "source_model": info.get("source_model", model_name),
            "model_info": info,
            "seq_len": info.get("seq_len", _dim_of(entries, "window", "items")),
            "candidates": info.get("candidates", _dim_of(entries, None, "candidates")),
            "dtype": dtype,
            "targets": targets,
            "versions": versions(),
            "artifacts": records,
            "test_vectors": {
                "steps": parity_steps,
                "seed": seed,
                "reference": "eager PyTorch fp32 (the functional entry point, state carried between steps)",
                "layout": VECTORS_LAYOUT,
                "files": list(dict.fromkeys(r["test_vectors"] for r in records)),
                "bundled_programs": [r["bundled_program"]["file"] for r in records if r.get("bundled_program")],
            },
        }
        write_manifest(tmp, manifest)
    return manifest


def _dim_of(entries: list[EntryPoint], entry_name: str | None, input_name: str):
    for e in entries:
        if entry_name is not None and e.name != entry_name:
            continue
        for s in e.inputs:
            if s.name == input_name and len(s.shape) >= 2:
                return int(s.shape[1])
    return None


def _export_one(entry, target, recipe, tmp, stem, base, inputs, ref, calib, require_delegated, model_name, dtype,
                tell, done, total) -> dict:
    t0 = time.perf_counter()
    export = _exporter(target)
    try:
        if target == "executorch":
            exp = export(entry, recipe, tmp, stem, base, calib, require_delegated=require_delegated)
        else:
            exp = export(entry, recipe, tmp, stem, base)
    except ToolkitError:
        raise
    except Exception as e:  # a converter/lowering failure: one line naming the artifact (traceback with --debug)
        raise CheckFailed(f"{target} export of {stem} failed: {type(e).__name__}: {first_line(e)[:300]}") from e
    raise_if_failed(exp.state_check, exp.model_file.name)
    export_seconds = time.perf_counter() - t0
    ent = exp.reference_entry or entry
    extra = dict(exp.extra_files)
    state_dtype = "float16" if target == "coreml" else None
    if entry.states and "initial_state" not in extra:
        p = tmp / f"{stem}.initial_state.npz"
        np_dt = np.float16 if target == "coreml" else None
        np.savez(p, **{s.name: (to_numpy(s.initial).astype(np_dt) if np_dt else to_numpy(s.initial))
                       for s in ent.states})
        extra["initial_state"] = p
    initial_file = extra["initial_state"].name if entry.states else None
    specific = dict(exp.record)
    record = {
        "file": exp.model_file.name,
        "sha256": "",
        "bytes": 0,
        "runtime": recipe.runtime,
        "recipe": recipe.name,
        "model": model_name,
        "entry": entry.name,
        "description": entry.description,
        "dtype": dtype,
        "inputs": specific.pop("inputs"),
        "outputs": [],
        "states": _state_records(ent, target, initial_file, state_dtype),
        "deployment_target": _deployment_target(target, recipe),
        "planned_activation_bytes": specific.pop("planned_activation_bytes", None),
        "delegation": specific.pop("delegation", None),
        "state_check": exp.state_check,
        **_flops(entry),
    }
    record.update(specific)
    if recipe.accuracy:  # the recipe's accuracy budget travels with the file (verify/bench --data check it)
        record["accuracy_budget"] = dict(recipe.accuracy)
    # trajectory parity through the real runtime
    tell(f"{stem}: parity ({len(inputs)} steps)", done, total)
    state_names = [s.name for s in entry.states]
    if target == "coreml" and not coreml_can_run():
        parity = _coreml_linux_parity(entry, recipe, ref, inputs, exp)
        outs = {o["name"]: o for o in record["structure"]["outputs"]}
        record["outputs"] = [tensor_record(n, r.shape, outs.get(n, {}).get("dtype", "float32"))
                             for n, r in zip(entry.outputs, ref[0]["outputs"])]
    else:
        record["outputs"] = [tensor_record(n, r.shape, r.dtype) for n, r in zip(entry.outputs, ref[0]["outputs"])]
        runner = open_runner(tmp, record)
        got = runtime_trajectory(runner, [[to_numpy(x) for x in inp] for inp in inputs])
        record["outputs"] = [tensor_record(n, g.shape, g.dtype) for n, g in zip(entry.outputs, got[0]["outputs"])]
        parity = _with_status(compare(ref, got, entry.outputs, state_names, recipe.atol, recipe.rtol))
        parity["runtime_parity"] = f"ran {len(inputs)} sequential calls in {recipe.runtime}"
    parity["reference"] = "eager PyTorch fp32"
    record["parity"] = parity
    if parity["status"] == "failed":
        what = "structure" if parity.get("structure_problems") else failure_line(parity)
        if parity.get("structure_problems"):
            what = parity["structure_problems"][0]
        raise CheckFailed(f"parity failed for {exp.model_file.name}: {what}")
    # test vectors (+ ExecuTorch bundled program), checked with ExecuTorch's own verifier
    tv = tmp / f"{stem}.test_vectors.npz"
    save_test_vectors(tv, ref, [s.name for s in entry.inputs], list(entry.outputs), state_names,
                      [to_numpy(s) for s in entry.initial_states()])
    extra["test_vectors"] = tv
    record["test_vectors"] = tv.name
    if target == "executorch" and recipe.opt("bundled_program", True):
        from toolkit.exporters.to_executorch import check_bundled_program, write_bundled_program

        bpte = tmp / f"{stem}.bpte"
        cast_steps = [{"inputs": [np.ascontiguousarray(x.astype(_np(spec["dtype"]))) for x, spec in
                                  zip(s["inputs"], record["inputs"])],
                       "outputs": [o.astype(_np(r["dtype"])) for o, r in zip(s["outputs"], record["outputs"])],
                       "states": [x.astype(_np(r["dtype"])) for x, r in zip(s["states"], record["states"])]}
                      for s in ref]
        write_bundled_program(exp.handle, cast_steps, bpte)
        tol = _bundled_tolerance(parity)
        bcheck = check_bundled_program(bpte, len(ref), tol, 0.0)
        if not bcheck["pass"]:
            raise CheckFailed(f"bundled program {bpte.name}: case {bcheck['failed_case']} fails ExecuTorch's own "
                              f"check ({bcheck['error']})")
        extra["bundled_program"] = bpte
        record["bundled_program"] = {"file": bpte.name, "cases": len(ref), "atol": tol, "rtol": 0.0,
                                     "check": bcheck,
                                     "usage": "load once, run the cases in order (a trajectory carrying state)"}
    record["sha256"] = sha256_path(exp.model_file)
    record["bytes"] = size_path(exp.model_file)
    record["extra_files"] = [_file_entry(tmp, p, role) for role, p in sorted(extra.items())]
    record["export_seconds"] = round(export_seconds, 3)
    return record


def _with_status(parity: dict) -> dict:
    """A parity run that happened: status passed / failed beside `pass` (see manifest.PARITY_STATUSES)."""
    return {"status": "passed" if parity["pass"] else "failed", **parity}


def _ort_one(onnx_rec: dict, entry, recipe: Recipe, tmp: Path, inputs, ref) -> dict:
    """The ORT format of an ONNX record (ORT's converter), checked over the same trajectory in onnxruntime, with
    ORT's mobile usability verdict per execution provider; shares the ONNX record's test vectors and initial state."""
    from toolkit.exporters.manifest import ORT_RUNTIME
    from toolkit.exporters.to_onnx import mobile_usability, write_ort_form

    t0 = time.perf_counter()
    onnx_path = tmp / onnx_rec["file"]
    try:
        ort_path, config, conversion = write_ort_form(onnx_path)
        usability = mobile_usability(onnx_path)
    except ToolkitError:
        raise
    except Exception as e:  # the converter or checker failing: one line naming the file (traceback with --debug)
        raise CheckFailed(f"ORT format of {onnx_path.name} failed: {type(e).__name__}: {first_line(e)[:300]}") from e
    skip = {"file", "sha256", "bytes", "runtime", "parity", "extra_files", "export_seconds", "op_histogram",
            "deployment_target"}
    record = {k: v for k, v in onnx_rec.items() if k not in skip}
    record.update({"file": ort_path.name, "runtime": ORT_RUNTIME,
                   "deployment_target": f"ORT format (onnxruntime {conversion['onnxruntime']}: ORT Mobile, minimal "
                                        f"builds), from {onnx_path.name}",
                   "ort_format": conversion, "mobile_usability": usability})
    runner = open_runner(tmp, record)
    got = runtime_trajectory(runner, [[to_numpy(x) for x in inp] for inp in inputs])
    parity = _with_status(compare(ref, got, entry.outputs, [s.name for s in entry.states], recipe.atol, recipe.rtol))
    parity["runtime_parity"] = f"ran {len(inputs)} sequential calls of the .ort in onnxruntime"
    parity["reference"] = "eager PyTorch fp32"
    record["parity"] = parity
    if parity["status"] == "failed":
        raise CheckFailed(f"parity failed for {ort_path.name}: {failure_line(parity)}")
    shared = [f for f in onnx_rec["extra_files"] if f["role"] in ("initial_state", "test_vectors")]
    record["sha256"] = sha256_path(ort_path)
    record["bytes"] = size_path(ort_path)
    record["extra_files"] = sorted([_file_entry(tmp, config, "required_operators"), *shared], key=lambda f: f["role"])
    record["export_seconds"] = round(time.perf_counter() - t0, 3)
    return record


def _np(name: str):
    from toolkit.exporters.manifest import np_dtype

    return np_dtype(name)


def _bundled_tolerance(parity: dict) -> float:
    """One absolute tolerance for ExecuTorch's elementwise check: the loosest per-output allowance of the run."""
    allowed = [a for v in parity["allowed"].values() for a in v]
    return float(max(allowed)) if allowed else 1e-5


def _deployment_target(target: str, recipe: Recipe) -> str:
    if target == "coreml":
        return recipe.opt("minimum_deployment_target", "iOS18")
    if target == "onnx":
        return f"onnx opset {recipe.opt('opset', 18)}"
    return f"executorch {recipe.opt('backend', 'xnnpack')}"


def _flops(entry) -> dict:
    """Counted FLOPs of one call (toolkit.models.flops), so a bench of the shipped dir can state its floor."""
    from toolkit.models.flops import count_flops

    try:
        total, by_op = count_flops(entry)
    except Exception:  # a model the counter cannot trace: the bench reports no FLOPs rather than failing the export
        return {"flops": None, "flops_by_op": None}
    return {"flops": total, "flops_by_op": by_op}
