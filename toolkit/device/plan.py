"""Run plan shared by every device path (emulated ARM64, Android over adb): manifest -> cases -> bench rows.

A *case* is one artifact of an export (one model / entry point / seq-len) with concrete inputs. The same cases
feed the qemu path and the adb path, and both end in `make_row`, so the two targets report identical fields.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.io import read_json, sha256_file

STATE_IN = "state_in."
STATE_OUT = "state_out."
RUNTIME_EXT = {"onnxruntime": (".onnx", ".ort"), "executorch": (".pte", ".bpte")}


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
    inputs_source: str = "synthetic"

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


# ----------------------------------------------------------------------------------------------- manifest


def load_manifest(artifact_dir: str | Path) -> tuple[Path, dict]:
    root = Path(artifact_dir)
    if not root.is_dir():
        raise ToolkitError(f"artifact dir not found: {root} (make one with `toolkit export ... --out {root}`)")
    manifest = read_json(root / "manifest.json", "manifest")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), list):
        raise ToolkitError(f"manifest has no 'artifacts' list: {root / 'manifest.json'}")
    return root, manifest


def select_artifacts(
    root: Path,
    manifest: dict,
    runtimes: tuple[str, ...],
    models: list[str] | None = None,
    entries: list[str] | None = None,
    files: list[str] | None = None,
) -> list[dict]:
    """The manifest entries to run; every named file/model/entry must exist (a typo is an error, not a skip)."""
    arts = manifest["artifacts"]
    for name, wanted, key in (("model", models, "model"), ("entry", entries, "entry"), ("file", files, "file")):
        for w in wanted or []:
            if not any(str(a.get(key)) == w for a in arts):
                have = sorted({str(a.get(key)) for a in arts})
                raise ToolkitError(f"{name} '{w}' is not in the manifest {root / 'manifest.json'} (it has: {', '.join(have)})")
    chosen = [
        a
        for a in arts
        if a.get("runtime") in runtimes
        and (not models or a.get("model") in models)
        and (not entries or a.get("entry") in entries)
        and (not files or a.get("file") in files)
    ]
    if not chosen:
        have = sorted({str(a.get("runtime")) for a in arts})
        raise ToolkitError(
            f"no {' or '.join(runtimes)} artifact to run in {root / 'manifest.json'} (runtimes there: {', '.join(have)}); "
            f"export one with `toolkit export --target onnx`"
        )
    for a in chosen:
        if "file" not in a:
            raise ToolkitError(f"manifest entry without 'file' in {root / 'manifest.json'}: {a}")
        p = root / a["file"]
        if not p.exists():
            raise ToolkitError(f"artifact listed in the manifest is missing: {p} (re-run `toolkit export`)")
    return chosen


# ------------------------------------------------------------------------------------------------- inputs


def _np_dtype(name: str) -> np.dtype:
    try:
        return np.dtype({"float32": "float32", "float": "float32", "int64": "int64", "long": "int64", "int32": "int32",
                         "float16": "float16", "bool": "bool", "float64": "float64"}[str(name)])
    except KeyError:
        raise ToolkitError(f"unsupported dtype in manifest: {name}") from None


def _id_high_from_onnx(path: Path) -> dict[str, int]:
    """For int inputs that index an embedding (Gather on an initializer), the largest valid id."""
    if path.suffix != ".onnx":
        return {}
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    rows = {i.name: i.dims[0] for i in g.initializer if len(i.dims) >= 1}
    inputs = {i.name for i in g.input}
    aliases = {name: name for name in inputs}  # follow Cast/Identity from a graph input
    for n in g.node:
        if n.op_type in ("Cast", "Identity", "Reshape", "Flatten", "Unsqueeze", "Squeeze") and n.input and n.input[0] in aliases:
            aliases[n.output[0]] = aliases[n.input[0]]
    high: dict[str, int] = {}
    for n in g.node:
        if n.op_type == "Gather" and len(n.input) == 2 and n.input[0] in rows and n.input[1] in aliases:
            src = aliases[n.input[1]]
            high[src] = min(high.get(src, 1 << 62), int(rows[n.input[0]]) - 1)
    return high


def _vector_file(root: Path, art: dict) -> Path | None:
    for key in ("test_vectors", "vectors", "example_inputs"):
        v = art.get(key)
        if isinstance(v, str) and (root / v).is_file():
            return root / v
        if isinstance(v, dict) and isinstance(v.get("file"), str) and (root / v["file"]).is_file():
            return root / v["file"]
    stem = Path(art["file"]).stem
    for suffix in (".vectors.npz", ".test_vectors.npz", ".inputs.npz"):
        p = root / Path(art["file"]).parent / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def _read_vectors(path: Path | None, art: dict) -> tuple[dict, list[dict], list[dict], dict]:
    """Test vectors -> (step-0 inputs incl. initial state, per-step inputs, per-step expected outputs, raw).

    Two layouts: the exporter's trajectory (`initial/state/<s>`, `step<i>/in/<x>`, `step<i>/out/<y>`,
    `step<i>/state/<s>`; toolkit.exporters.parity.save_test_vectors) or a flat npz keyed by input name.
    """
    if path is None:
        return {}, [], [], {}
    with np.load(path) as z:
        raw = {k: z[k] for k in z.files}
    if not any(k.startswith("step0/") for k in raw):
        return raw, [], [], raw
    state_in = {st["name"]: st.get("input", f"{STATE_IN}{st['name']}") for st in art.get("states", [])}
    state_out = {st["name"]: st.get("output", f"{STATE_OUT}{st['name']}") for st in art.get("states", [])}
    first = {state_in.get(k.split("/", 2)[2], k): v for k, v in raw.items() if k.startswith("initial/state/")}
    steps_in, steps_out = [], []
    i = 0
    while any(k.startswith(f"step{i}/") for k in raw):
        pre = f"step{i}/"
        steps_in.append({k[len(pre) + 3:]: v for k, v in raw.items() if k.startswith(pre + "in/")})
        out = {k[len(pre) + 4:]: v for k, v in raw.items() if k.startswith(pre + "out/")}
        out.update({state_out.get(k[len(pre) + 6:], k): v for k, v in raw.items() if k.startswith(pre + "state/")})
        steps_out.append(out)
        i += 1
    first.update(steps_in[0] if steps_in else {})
    return first, steps_in, steps_out, raw


def _seq_len(art: dict, manifest: dict) -> int | None:
    for src in (art, manifest):
        v = src.get("seq_len")
        if isinstance(v, int):
            return v
    for spec in art.get("inputs", []):
        if str(spec.get("dtype")) in ("int64", "int32") and len(spec.get("shape", [])) == 2:
            return int(spec["shape"][1])
    return None


def _model_input_names(path: Path, runtime: str) -> list[str] | None:
    if runtime != "onnxruntime" or path.suffix != ".onnx":
        return None
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    return [i.name for i in g.input if i.name not in inits]


def build_cases(root: Path, manifest: dict, arts: list[dict], seed: int = 0) -> list[Case]:
    """Concrete inputs for each artifact: shipped test vectors when present, else deterministic valid ones."""
    cases = []
    for index, art in enumerate(arts):
        path = root / art["file"]
        runtime = str(art.get("runtime"))
        rng = np.random.default_rng(seed + index)
        vec_path = _vector_file(root, art)
        vectors, step_inputs, expected, _ = _read_vectors(vec_path, art)
        highs = _id_high_from_onnx(path) if runtime == "onnxruntime" else {}
        feeds: dict[str, np.ndarray] = {}
        for spec in art.get("inputs", []):
            name, shape, dtype = spec["name"], tuple(spec["shape"]), _np_dtype(spec["dtype"])
            if name in vectors:
                value = np.asarray(vectors[name]).astype(dtype, copy=False)
                if value.shape != shape:
                    raise ToolkitError(f"test vector '{name}' in {vec_path} has shape {value.shape}, manifest says {shape}")
            elif dtype.kind in "iu":
                high = spec.get("high") or highs.get(name) or 1
                value = rng.integers(1, int(high) + 1, size=shape, dtype=dtype)
            elif dtype.kind == "b":
                value = np.ones(shape, dtype)
            else:
                value = rng.standard_normal(shape).astype(dtype)
            feeds[name] = value
        state_map = {}
        # ExecuTorch keeps state in buffers inside the program: only ONNX takes it as inputs
        for st in art.get("states", []) if runtime == "onnxruntime" else []:
            name, shape, dtype = st["name"], tuple(st["shape"]), _np_dtype(st["dtype"])
            in_name = st.get("input", f"{STATE_IN}{name}")
            for cand in (in_name, name):
                if cand in vectors:
                    value = np.asarray(vectors[cand]).astype(dtype, copy=False)
                    break
            else:
                init = st.get("initial_file")
                if init:
                    ip = root / init
                    if not ip.is_file():
                        raise ToolkitError(f"state '{name}' initial_file missing: {ip} (re-run `toolkit export`)")
                    value = _load_array(ip, name).astype(dtype, copy=False)
                else:
                    value = np.zeros(shape, dtype)
            if tuple(value.shape) != shape:
                raise ToolkitError(f"state '{name}' initial value has shape {tuple(value.shape)}, manifest says {shape}")
            feeds[in_name] = value
            state_map[st.get("output", f"{STATE_OUT}{name}")] = in_name
        graph_inputs = _model_input_names(path, runtime)
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
                artifact=art,
                path=path,
                model=str(art.get("model", path.stem)),
                entry=str(art.get("entry", "forward")),
                runtime=runtime,
                seq_len=_seq_len(art, manifest),
                feeds=feeds,
                state_map=state_map,
                step_inputs=step_inputs,
                expected=expected,
                inputs_source=f"test vectors {vec_path.name}" if vec_path else "synthetic (seeded)",
            )
        )
    return cases


def _load_array(path: Path, name: str) -> np.ndarray:
    if path.suffix == ".npz":
        data = np.load(path)
        for key in (name, f"{STATE_IN}{name}", *data.files[:1]):
            if key in data.files:
                return data[key]
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        data = load_file(str(path))
        return data[name] if name in data else next(iter(data.values()))
    raise ToolkitError(f"cannot read state file {path} (expected .npy, .npz or .safetensors)")


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
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(case.path)).load_method(case.artifact.get("method", "forward"))
    names = case.output_names()
    traj = []
    for step in range(steps):
        feeds = case.step_feeds(step, {})
        outs = method.execute([torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()])
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


def latency_summary(times_ms: list[float]) -> dict:
    xs = sorted(times_ms)
    n = len(xs)

    def pct(q: float) -> float:
        return float(xs[min(n - 1, int(round(q * (n - 1))))])

    return {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "mean": float(statistics.fmean(xs)), "runs": n}


def instruction_summary(counts: list[int], overhead: int | None, by_code: dict[str, list[int]] | None = None) -> dict:
    """Median of the measured calls, minus the markers' own cost; the spread shows whether calls repeat exactly.

    `by_code` splits the median call by the library the instructions ran in (the inference library's own code is
    the steadiest part: the C library's share moves with allocator state and buffer alignment).
    """
    med = int(statistics.median_low(counts))
    net = med - (overhead or 0)
    out = {
        "per_inference": net,
        "raw_median": med,
        "min": min(counts),
        "max": max(counts),
        "runs": list(counts),
        "marker_overhead": overhead,
    }
    if by_code:
        split = {lib: int(statistics.median_low(v)) for lib, v in by_code.items() if v}
        split["other (python, binding, markers)"] = med - sum(split.values())
        out["by_code"] = split
    return out


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
    """One bench JSON row (schema shared with `toolkit bench`)."""
    art = case.artifact

    def pick(key: str) -> Any:
        for src in (art, art.get("costs") or {}, manifest.get("costs") or {}, manifest):
            if isinstance(src, dict) and key in src:
                return src[key]
        return None

    status, error = "ok", meas.error
    if error is None and parity_err is not None and parity_tol is not None and not parity_err <= parity_tol:
        error = f"parity: max abs err {parity_err:.3g} > tolerance {parity_tol:g} vs {parity_note}"
    if error is not None:
        status = "failed"
    state_bytes = int(sum(v.nbytes for k, v in case.feeds.items() if k.startswith(STATE_IN)))
    input_bytes = int(sum(v.nbytes for k, v in case.feeds.items() if not k.startswith(STATE_IN)))
    row: dict[str, Any] = {
        "model": case.model,
        "entry": case.entry,
        "runtime": case.runtime,
        "seq_len": case.seq_len,
        "target": target,
        "status": status,
        "error": error,
        "measured_on": measured_on,
        "flops": pick("flops"),
        "params": pick("params"),
        "params_excluding_item_table": pick("params_excluding_item_table"),
        "artifact_bytes": case.path.stat().st_size if case.path.is_file() else None,
        "memory": {"state_bytes": state_bytes, "input_bytes": input_bytes},
        "parity_max_abs_err": None if parity_err is None or parity_err == float("inf") else parity_err,
        "parity": {"reference": parity_note, "tolerance": parity_tol, "inputs": case.inputs_source},
        "artifact": {"file": case.artifact.get("file"), "sha256": art.get("sha256") or sha256_file(case.path)},
    }
    if meas.instructions:
        row["instructions"] = instruction_summary(meas.instructions, meas.marker_overhead, meas.by_code)
        row["instructions_per_inference"] = row["instructions"]["per_inference"]
        if meas.threads_alive is not None:
            row["instructions"]["guest_threads_alive"] = meas.threads_alive
    if meas.latency_ms:
        row["latency_ms"] = latency_summary(meas.latency_ms)
    elif meas.latency_mean_only is not None:
        row["latency_ms"] = {"p50": None, "p90": None, "p99": None, "mean": meas.latency_mean_only, "runs": None}
    if meas.extra:
        row.update(meas.extra)
    if extra:
        row.update(extra)
    return row
