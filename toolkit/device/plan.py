"""Run plan shared by every device path (emulated ARM64, Android over adb): manifest -> cases -> bench rows.

A *case* is one artifact of an export (one model / entry point / seq-len) with concrete inputs. The same cases
feed the qemu path and the adb path, and both end in `make_row`, so the two targets report identical fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.exporters.manifest import (
    STATE_IN,
    STATE_OUT,
    ArtifactRecord,
    Manifest,
    load_initial_state,
    load_test_vectors,
    np_dtype,
    verified,
)
from toolkit.rows import base_row, instruction_summary, latency_summary


@dataclass
class Case:
    """One artifact to run, with the inputs every runner gets (name -> array, in the model's input order)."""

    index: int
    artifact: dict  # the manifest entry
    path: Path  # the artifact file
    model: str
    entry: str
    runtime: str
    seq_len: int | None
    feeds: dict[str, np.ndarray]
    state_map: dict[str, str] = field(default_factory=dict)  # output name -> input name it feeds next step
    step_inputs: list[dict[str, np.ndarray]] = field(default_factory=list)  # per parity step, non-state inputs
    expected: list[dict[str, np.ndarray]] = field(default_factory=list)  # per step: outputs + state outs (vectors)
    inputs_source: str = "test vectors"
    sha256: str = ""  # the artifact's sha256 (checked against the file when the manifest was read)
    manifest_path: str = ""
    manifest_sha256: str = ""

    def output_names(self) -> list[str]:
        """Declared outputs, then (stateful ExecuTorch programs) the new states, in the program's order."""
        names = [o if isinstance(o, str) else o["name"] for o in self.artifact.get("outputs", [])]
        if self.runtime == "executorch":
            names += [st.get("output", f"{STATE_OUT}{st['name']}") for st in self.artifact.get("states", [])]
        return names

    def n_parity_steps(self, default: int) -> int:
        """The shipped trajectory's length when there are test vectors, else `default`."""
        return max(default, len(self.step_inputs)) if default > 0 else 0

    def step_feeds(self, step: int, carried: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs of parity step `step`: that step's inputs (vectors) or step 0's, plus the carried state."""
        feeds = dict(self.feeds)
        if step < len(self.step_inputs):
            feeds.update(self.step_inputs[step])
        feeds.update(carried)
        return feeds

    @property
    def key(self) -> str:
        return f"{self.model}/{self.entry}/L{self.seq_len}/{self.runtime}"


@dataclass
class Measurement:
    """What one runner reports for one case, before it becomes a row."""

    error: str | None = None
    instructions: list[int] = field(default_factory=list)  # per measured call (emulated target)
    marker_overhead: int | None = None
    threads_alive: int | None = None
    by_code: dict[str, list[int]] = field(default_factory=dict)  # library -> per measured call (emulated)
    latency_ms: list[float] = field(default_factory=list)  # per measured call (real device)
    latency_mean_only: float | None = None  # runners that only print a total
    outputs: list[dict[str, np.ndarray]] = field(default_factory=list)  # parity trajectory, step -> name -> value
    extra: dict[str, Any] = field(default_factory=dict)
    parity_err: float | None = None  # measured on the device itself (ExecuTorch bundled-program check)

    def merged(self, later: "Measurement") -> "Measurement":
        """This measurement with a later invocation's report on the same case folded in: the first error stays
        first, lists and values the later one has win, extras combine."""
        out = Measurement(**{k: getattr(later, k) or getattr(self, k) for k in
                             ("instructions", "by_code", "latency_ms", "outputs")})
        out.error = "; ".join(e for e in (self.error, later.error) if e) or None
        for k in ("marker_overhead", "threads_alive", "latency_mean_only", "parity_err"):
            v = getattr(later, k)
            setattr(out, k, v if v is not None else getattr(self, k))
        out.extra = {**self.extra, **later.extra}
        return out


# ----------------------------------------------------------------------------------------------- manifest


def load_manifest(artifact_dir: str | Path) -> Manifest:
    """The artifact dir's manifest once every listed file matches its sha256 (toolkit.exporters.manifest.verified):
    a device runs exactly the files `toolkit verify` proved, or nothing (one line naming the file)."""
    return verified(artifact_dir)


def select_artifacts(
    manifest: Manifest,
    runtimes: tuple[str, ...],
    models: list[str] | None = None,
    entries: list[str] | None = None,
    files: list[str] | None = None,
) -> list[ArtifactRecord]:
    """The manifest records to run; every named file/model/entry must exist (a typo is an error, not a skip)."""
    arts = manifest.artifacts
    for name, wanted, key in (("model", models, "model"), ("entry", entries, "entry"), ("file", files, "file")):
        for w in wanted or []:
            if not any(str(getattr(a, key)) == w for a in arts):
                have = sorted({str(getattr(a, key)) for a in arts})
                raise ToolkitError(f"{name} '{w}' is not in the manifest {manifest.path} (it has: {', '.join(have)})")
    chosen = [a for a in arts if a.runtime in runtimes and (not models or a.model in models)
              and (not entries or a.entry in entries) and (not files or a.file in files)]
    if not chosen:
        have = sorted({a.runtime for a in arts})
        raise ToolkitError(
            f"no {' or '.join(runtimes)} artifact to run in {manifest.path} (runtimes there: {', '.join(have)}); "
            f"export one with `toolkit export --format onnx`"
        )
    return chosen


# ------------------------------------------------------------------------------------------------- inputs


def _seq_len(rec: ArtifactRecord, manifest: Manifest) -> int | None:
    v = rec.raw.get("seq_len")
    if isinstance(v, int):
        return v
    if manifest.seq_len is not None:
        return manifest.seq_len
    for spec in rec.inputs:
        if spec.dtype in ("int64", "int32") and len(spec.shape) == 2:
            return int(spec.shape[1])
    return None


def _model_input_names(path: Path, runtime: str) -> list[str] | None:
    if runtime != "onnxruntime" or path.suffix != ".onnx":
        return None
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    return [i.name for i in g.input if i.name not in inits]


def build_cases(manifest: Manifest, recs: list[ArtifactRecord]) -> list[Case]:
    """Concrete inputs for each artifact: its shipped test vectors (the trajectory `toolkit verify` replays), the
    initial state from its initial file, and the expected outputs and states per step."""
    cases = []
    for index, rec in enumerate(recs):
        path = manifest.member(rec.file)
        vectors = load_test_vectors(manifest, rec)
        steps = vectors["steps"]
        step_inputs = [dict(zip(rec.input_names, st["inputs"])) for st in steps]
        expected = [dict(zip(rec.output_names, st["outputs"])) | {s.output: v for s, v in zip(rec.states, st["states"])}
                    for st in steps]
        feeds: dict[str, np.ndarray] = {}
        for spec, value in zip(rec.inputs, steps[0]["inputs"]):
            value = np.asarray(value).astype(np_dtype(spec.dtype), copy=False)
            if tuple(value.shape) != spec.shape:
                raise ToolkitError(f"test vector '{spec.name}' in {rec.test_vectors} has shape {value.shape}, "
                                   f"manifest says {spec.shape}")
            feeds[spec.name] = value
        state_map = {}
        if rec.runtime == "onnxruntime":  # ExecuTorch keeps state in buffers inside the program: only ONNX takes it
            initial = load_initial_state(manifest.root, rec.states)
            for st in rec.states:
                value = initial.get(st.name, vectors["initial"].get(st.name))
                if value is None:
                    raise ToolkitError(f"state '{st.name}' of {rec.file} has no initial value")
                if tuple(value.shape) != st.shape:
                    raise ToolkitError(f"state '{st.name}' initial value has shape {tuple(value.shape)}, "
                                       f"manifest says {st.shape}")
                feeds[st.input or STATE_IN + st.name] = value
                state_map[st.output] = st.input or STATE_IN + st.name
        graph_inputs = _model_input_names(path, rec.runtime)
        if graph_inputs is not None:
            missing = [n for n in graph_inputs if n not in feeds]
            if missing:
                raise ToolkitError(
                    f"{path.name} has inputs the manifest does not declare: {', '.join(missing)} (manifest and artifact "
                    f"disagree: re-run `toolkit export`)"
                )
            feeds = {n: feeds[n] for n in graph_inputs}
        step_inputs = [{k: np.asarray(v).astype(feeds[k].dtype, copy=False) for k, v in st.items() if k in feeds}
                       for st in step_inputs]
        cases.append(
            Case(
                index=index,
                artifact=rec.raw,
                path=path,
                model=rec.model,
                entry=rec.entry,
                runtime=rec.runtime,
                seq_len=_seq_len(rec, manifest),
                feeds=feeds,
                state_map=state_map,
                step_inputs=step_inputs,
                expected=expected,
                inputs_source=f"test vectors {rec.test_vectors}",
                sha256=rec.sha256,
                manifest_path=str(manifest.path.resolve()),
                manifest_sha256=manifest.digest,
            )
        )
    return cases


# --------------------------------------------------------------------------------------- host reference


def host_reference(case: Case, steps: int) -> list[dict[str, np.ndarray]]:
    """The same trajectory through the host's runtime (x86_64): what the device outputs must match."""
    if case.runtime == "executorch":
        return _host_reference_executorch(case, steps)
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(case.path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    carried: dict[str, np.ndarray] = {}
    traj = []
    for step in range(steps):
        outs = dict(zip(names, sess.run(names, case.step_feeds(step, carried))))
        traj.append(outs)
        carried = {in_name: outs[out_name] for out_name, in_name in case.state_map.items()}
    return traj


def _host_reference_executorch(case: Case, steps: int) -> list[dict[str, np.ndarray]]:
    import torch

    from toolkit.exporters.runners import load_executorch_method  # header checked, native crash contained

    program, method = load_executorch_method(case.path, case.artifact.get("method", "forward"))
    names = case.output_names()
    traj = []
    for step in range(steps):
        feeds = case.step_feeds(step, {})
        outs = method([torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()])
        traj.append({n: np.asarray(o.detach().numpy() if hasattr(o, "detach") else o) for n, o in zip(names, outs)})
    return traj


def max_abs_err(got: list[dict[str, np.ndarray]], ref: list[dict[str, np.ndarray]]) -> float:
    """Largest |device - reference| over every output of every step (inf when a step or output is missing)."""
    if len(got) < len(ref):
        return float("inf")
    worst = 0.0
    for g, r in zip(got, ref):
        for name, rv in r.items():
            if name not in g or np.size(g[name]) != np.size(rv):
                return float("inf")
            if rv.size:
                diff = np.asarray(g[name], np.float64).reshape(-1) - np.asarray(rv, np.float64).reshape(-1)
                worst = max(worst, float(np.max(np.abs(diff))))
    return worst


# --------------------------------------------------------------------------------------------------- rows


def make_row(
    case: Case,
    meas: Measurement,
    *,
    target: str,
    measured_on: str,
    manifest: dict,
    parity_err: float | None,
    parity_tol: float | None,
    parity_note: str,
    extra: dict | None = None,
) -> dict:
    """One bench JSON row: toolkit.rows.base_row, the shape `toolkit bench` rows have too."""
    art = case.artifact

    def pick(key: str) -> Any:
        for src in (art, art.get("costs") or {}, manifest.get("costs") or {}, manifest):
            if isinstance(src, dict) and key in src:
                return src[key]
        return None

    error = meas.error
    if error is None and parity_err is not None and parity_tol is not None and not parity_err <= parity_tol:
        error = f"parity: max abs err {parity_err:.3g} > tolerance {parity_tol:g} vs {parity_note}"
    state_bytes = int(sum(v.nbytes for k, v in case.feeds.items() if k.startswith(STATE_IN)))
    input_bytes = int(sum(v.nbytes for k, v in case.feeds.items() if not k.startswith(STATE_IN)))
    row: dict[str, Any] = base_row(model=case.model, entry=case.entry, runtime=case.runtime, seq_len=case.seq_len,
                                   target=target, measured_on=measured_on, error=error)
    row.update({
        "flops": pick("flops"),
        "flops_analytic": pick("flops_analytic"),
        "params": pick("params"),
        "params_excluding_item_table": pick("params_excluding_item_table"),
        "artifact_bytes": case.artifact.get("bytes"),
        "parity_max_abs_err": None if parity_err is None or parity_err == float("inf") else parity_err,
        "parity": {"reference": parity_note, "tolerance": parity_tol, "inputs": case.inputs_source},
        "artifact": {"file": case.artifact.get("file"), "sha256": case.sha256, "manifest": case.manifest_path,
                     "manifest_sha256": case.manifest_sha256},
    })
    row["memory"].update({"state_bytes": state_bytes, "input_bytes": input_bytes})
    if meas.instructions:
        row["instructions"] = instruction_summary(meas.instructions, meas.marker_overhead, meas.by_code)
        row["instructions_per_inference"] = row["instructions"]["per_inference"]
        if meas.threads_alive is not None:
            row["instructions"]["guest_threads_alive"] = meas.threads_alive
    if meas.latency_ms:
        row["latency_ms"] = latency_summary(meas.latency_ms)
    elif meas.latency_mean_only is not None:
        row["latency_ms"] = {"p50": None, "p90": None, "p99": None, "mean": meas.latency_mean_only, "min": None,
                             "runs": None}
    if meas.extra:
        row.update(meas.extra)
    if extra:
        row.update(extra)
    return row


def run_document(result: dict, artifact_dir: str | Path, budget: str | Path | None) -> dict:
    """The device JSON `toolkit device run` writes: the rows (budgets applied) plus where and what they ran."""
    import time

    from toolkit.device.budgets import apply_budgets
    from toolkit.io import versions
    from toolkit.rows import SCHEMA

    rows, info = result["rows"], result["info"]
    budget_source = apply_budgets(rows, budget)
    return {"schema": SCHEMA, "kind": "device-run", "target": info["target"],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "artifact_dir": str(Path(artifact_dir).resolve()),
            "versions": versions(), "device": {k: v for k, v in info.items() if k != "profile"},
            "budgets": budget_source, "rows": rows}
