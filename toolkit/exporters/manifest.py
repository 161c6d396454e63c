"""The artifact directory: the one module that knows its format (manifest.json + manifest.sha256 + listed files).

Layout written by `toolkit export` (toolkit.exporters.export):

    DIR/manifest.json     format "toolkit-artifacts/1": model facts + one record per artifact (see ArtifactRecord)
    DIR/manifest.sha256   "<sha256 of manifest.json>  manifest.json" (sha256sum format): the manifest's own checksum
    DIR/<listed files>    every artifact and every extra file (test vectors, initial state, bundled program),
                          each with its sha256 in the manifest; nothing else belongs in DIR

Everything that reads an artifact dir (verify, bench, device) goes through `read_manifest` / `verified`, which trust
nothing unchecked: the manifest's own digest (manifest.sha256, or a digest the caller pins with `expect`), a non-empty
artifact list, every file name inside DIR (no absolute paths, no `..`, no symlink resolving outside), every listed
file's sha256, and no unlisted files (unless allowed). Test vectors (the trajectory on disk) and the initial state
files are read here too, with numpy's pickle loading off.

Light on purpose (numpy only): the device orchestrator and `toolkit verify --help` import it without torch.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.errors import CheckFailed, ToolkitError
from toolkit.io import (
    MAX_TEXT_BYTES,
    atomic_write_json,
    atomic_write_text,
    check_npz,
    parse_json,
    read_bytes,
    sha256_path,
)

FORMAT = "toolkit-artifacts/1"
MANIFEST = "manifest.json"
DIGEST = "manifest.sha256"

# Every runtime exposes the updated state after the visible outputs under `state_out.<name>`; ONNX also takes the
# state as `state_in.<name>` inputs (Core ML spells the output `state_out_<name>`: see state_output_name).
STATE_IN = "state_in."
STATE_OUT = "state_out."

# onnxruntime-ort: the ORT format (.ort) of an ONNX export, run by onnxruntime (what ORT Mobile / a minimal build
# loads); written beside every .onnx by toolkit.exporters.to_onnx.write_ort_form
ORT_RUNTIME = "onnxruntime-ort"
RUNTIMES = ("executorch", "onnxruntime", ORT_RUNTIME, "coreml")
ONNX_RUNTIMES = ("onnxruntime", ORT_RUNTIME)  # take the state as state_in.* inputs

# parity["status"] of a record: passed / failed / skipped (with parity["reason"]); pass is true only when passed
PARITY_STATUSES = ("passed", "failed", "skipped")
COREML_SKIP_REASON = "needs macOS 15+"  # Core ML prediction with an MLState runs on macOS 15+ only


def state_output_name(export_format: str, state: str) -> str:
    """`state_out.<name>`; Core ML feature names must match [a-zA-Z_][a-zA-Z0-9_]*, so there `state_out_<name>`."""
    name = STATE_OUT + state
    return name.replace(".", "_") if export_format == "coreml" else name


# ---------------------------------------------------------------------------------------------- typed records

@dataclass(frozen=True)
class TensorRecord:
    name: str
    shape: tuple[int, ...]
    dtype: str
    high: int | None = None  # integer id inputs: valid values 0..high; a float count (the gate's lag): its cap


@dataclass(frozen=True)
class StateRecord:
    name: str
    shape: tuple[int, ...]
    dtype: str
    output: str  # the output carrying the updated state
    input: str | None = None  # ONNX: the input taking it
    initial_file: str | None = None


@dataclass(frozen=True)
class FileRecord:
    role: str  # model | test_vectors | initial_state | bundled_program
    file: str
    sha256: str


@dataclass(frozen=True)
class ArtifactRecord:
    file: str
    sha256: str
    runtime: str
    model: str
    entry: str
    inputs: tuple[TensorRecord, ...]
    outputs: tuple[TensorRecord, ...]
    states: tuple[StateRecord, ...]
    test_vectors: str
    files: tuple[FileRecord, ...]  # the model file first, then its extra files
    raw: dict = field(repr=False, hash=False, compare=False)  # the record as written (runners take this)

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    @property
    def state_names(self) -> list[str]:
        return [s.name for s in self.states]


@dataclass(frozen=True)
class Manifest:
    root: Path
    digest: str  # sha256 of manifest.json as read
    artifacts: tuple[ArtifactRecord, ...]
    raw: dict = field(repr=False, hash=False, compare=False)

    @property
    def path(self) -> Path:
        return self.root / MANIFEST

    @property
    def model(self) -> str | None:
        return self.raw.get("model")

    @property
    def seq_len(self) -> int | None:
        v = self.raw.get("seq_len")
        return v if isinstance(v, int) else None

    def member(self, name: str) -> Path:
        return member(self.root, name)

    def listed(self) -> set[str]:
        return {MANIFEST, DIGEST} | {f.file for a in self.artifacts for f in a.files}


# ------------------------------------------------------------------------------------------------- writing

def write_manifest(root: str | os.PathLike, manifest: dict) -> str:
    """manifest.json, then manifest.sha256 beside it; returns the manifest's sha256 (what `verify --expect` takes)."""
    root = Path(root)
    path = atomic_write_json(root / MANIFEST, manifest)
    digest = sha256_path(path)
    atomic_write_text(root / DIGEST, f"{digest}  {MANIFEST}\n")
    return digest


def save_test_vectors(path: Path, steps: list[dict], input_names: list[str], output_names: list[str],
                      state_names: list[str], initial: list[np.ndarray]) -> None:
    """npz keys: initial/state/<s>, step<i>/in/<input>, step<i>/out/<output>, step<i>/state/<s> (after step i).

    `steps`: [{"inputs": [...], "outputs": [...], "states": [...]}] in the order of the names."""
    arrays = {f"initial/state/{n}": v for n, v in zip(state_names, initial)}
    for i, st in enumerate(steps):
        arrays.update({f"step{i}/in/{n}": v for n, v in zip(input_names, st["inputs"])})
        arrays.update({f"step{i}/out/{n}": v for n, v in zip(output_names, st["outputs"])})
        arrays.update({f"step{i}/state/{n}": v for n, v in zip(state_names, st["states"])})
    with open(path, "wb") as f:
        np.savez(f, **arrays)


VECTORS_LAYOUT = ("npz keys: initial/state/<state>, step<i>/in/<input>, step<i>/out/<output>, "
                  "step<i>/state/<state> (state after step i); run the steps in order from the initial state")


# ------------------------------------------------------------------------------------------------- reading

def member(root: Path, name) -> Path:
    """`root/name` for a file the manifest names, refused unless it stays inside root (absolute, `..`, symlinks)."""
    if not isinstance(name, str) or not name.strip():
        raise CheckFailed(f"{root / MANIFEST}: a file name is empty or not a string ({name!r})")
    p = Path(name)
    if p.is_absolute() or name.startswith(("/", "\\")) or ".." in p.parts or "\\" in name:
        raise CheckFailed(f"{root / MANIFEST}: file '{name}' is outside the artifact dir (absolute or '..')")
    path = root / p
    base = root.resolve()
    targets = [path]
    if path.is_dir() and not path.is_symlink():  # an .mlpackage: every file inside must stay inside too
        targets += sorted(path.rglob("*"))
    for t in targets:
        if not t.resolve().is_relative_to(base):
            raise CheckFailed(f"{root / MANIFEST}: file '{name}' resolves outside the artifact dir "
                              f"({t.relative_to(root)} -> {t.resolve()})")
    return path


def _bad(root: Path, where: str, why: str) -> CheckFailed:
    return CheckFailed(f"{root / MANIFEST}: {where} is malformed ({why})")


def _shape(root, where, v) -> tuple[int, ...]:
    if not isinstance(v, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in v):
        raise _bad(root, where, f"shape {v!r} is not a list of non-negative integers")
    return tuple(v)


def _str(root, where, d: dict, key: str, optional: bool = False):
    v = d.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v:
        raise _bad(root, where, f"'{key}' missing or not a string")
    return v


def _tensor(root, where, d) -> TensorRecord:
    if not isinstance(d, dict):
        raise _bad(root, where, "not an object")
    high = d.get("high")
    if high is not None and (not isinstance(high, int) or isinstance(high, bool) or high < 0):
        raise _bad(root, where, f"'high' {high!r} is not a non-negative integer")
    return TensorRecord(_str(root, where, d, "name"), _shape(root, where, d.get("shape")),
                        _str(root, where, d, "dtype"), high)


def _state(root, where, d, runtime) -> StateRecord:
    if not isinstance(d, dict):
        raise _bad(root, where, "not an object")
    name = _str(root, where, d, "name")
    return StateRecord(name, _shape(root, where, d.get("shape")), _str(root, where, d, "dtype"),
                       _str(root, where, d, "output", optional=True) or STATE_OUT + name,
                       _str(root, where, d, "input", optional=True)
                       or (STATE_IN + name if runtime in ONNX_RUNTIMES else None),
                       _str(root, where, d, "initial_file", optional=True))


def _sha(root, where, v) -> str:
    if not isinstance(v, str) or len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise _bad(root, where, f"sha256 {v!r} is not 64 lowercase hex digits")
    return v


ORT_LEVELS = ("disable", "basic", "extended", "all")  # ort_optimization_level (toolkit.exporters.runners)
MAX_CASES = 100_000  # bundled-program cases


def _number(root, where, d: dict, key: str, optional: bool = False, lo: float = 0.0):
    """A finite number >= lo at d[key] (a crafted manifest passes its self-checksum: the types are checked here)."""
    import math

    v = d.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo:
        raise _bad(root, where, f"'{key}' {v!r} is not a finite number >= {lo:g}")
    return v


def _schema(root: Path, where: str, d: dict) -> None:
    """The fields readers use beyond the typed record: enums, objects, numbers (one line naming the field)."""
    level = d.get("ort_optimization_level")
    if level is not None and level not in ORT_LEVELS:
        raise _bad(root, where, f"'ort_optimization_level' {level!r} is not one of {', '.join(ORT_LEVELS)}")
    parity = d.get("parity")
    if parity is not None:
        if not isinstance(parity, dict):
            raise _bad(root, f"{where}.parity", "not an object")
        status = parity.get("status")
        if status is not None and status not in PARITY_STATUSES:
            raise _bad(root, f"{where}.parity", f"'status' {status!r} is not one of {', '.join(PARITY_STATUSES)}")
        tol = parity.get("tolerance")
        if tol is not None:
            if not isinstance(tol, dict):
                raise _bad(root, f"{where}.parity.tolerance", "not an object")
            _number(root, f"{where}.parity.tolerance", tol, "atol")
            _number(root, f"{where}.parity.tolerance", tol, "rtol")
    for key in ("structure", "model_info"):
        if d.get(key) is not None and not isinstance(d[key], dict):
            raise _bad(root, f"{where}.{key}", "not an object")
    bp = d.get("bundled_program")
    if isinstance(bp, dict):
        w = f"{where}.bundled_program"
        cases = bp.get("cases")
        if isinstance(cases, bool) or not isinstance(cases, int) or not 0 <= cases <= MAX_CASES:
            raise _bad(root, w, f"'cases' {cases!r} is not an integer in 0..{MAX_CASES}")
        _number(root, w, bp, "atol")
        _number(root, w, bp, "rtol", optional=True)


def _record(root: Path, i: int, d) -> ArtifactRecord:
    where = f"artifacts[{i}]"
    if not isinstance(d, dict):
        raise _bad(root, where, "not an object")
    file = _str(root, where, d, "file")
    runtime = _str(root, where, d, "runtime")
    if runtime not in RUNTIMES:
        raise _bad(root, where, f"unknown runtime '{runtime}' (valid: {', '.join(RUNTIMES)})")
    _schema(root, where, d)
    for key in ("inputs", "outputs"):
        if not isinstance(d.get(key), list):
            raise _bad(root, where, f"'{key}' is not a list")
    states = d.get("states", [])
    extra = d.get("extra_files", [])
    if not isinstance(states, list) or not isinstance(extra, list):
        raise _bad(root, where, "'states' or 'extra_files' is not a list")
    files = [FileRecord("model", file, _sha(root, where, d.get("sha256")))]
    for j, f in enumerate(extra):
        w = f"{where}.extra_files[{j}]"
        if not isinstance(f, dict):
            raise _bad(root, w, "not an object")
        files.append(FileRecord(str(f.get("role", "?")), _str(root, w, f, "file"), _sha(root, w, f.get("sha256"))))
    for f in files:
        member(root, f.file)
    hashed = {f.file for f in files}
    rec = ArtifactRecord(
        file=file, sha256=files[0].sha256, runtime=runtime, model=str(d.get("model", "?")),
        entry=str(d.get("entry", "?")),
        inputs=tuple(_tensor(root, f"{where}.inputs[{k}]", x) for k, x in enumerate(d["inputs"])),
        outputs=tuple(_tensor(root, f"{where}.outputs[{k}]", x) for k, x in enumerate(d["outputs"])),
        states=tuple(_state(root, f"{where}.states[{k}]", x, runtime) for k, x in enumerate(states)),
        test_vectors=_str(root, where, d, "test_vectors"), files=tuple(files), raw=d)
    if not rec.inputs:
        raise _bad(root, where, "no inputs")
    # every file a reader opens must be one whose sha256 is checked
    opened = [rec.test_vectors] + [s.initial_file for s in rec.states if s.initial_file]
    bp = d.get("bundled_program")
    if bp is not None:
        if not isinstance(bp, dict):
            raise _bad(root, where, "'bundled_program' is not an object")
        opened.append(_str(root, f"{where}.bundled_program", bp, "file"))
    for name in opened:
        member(root, name)
        if name not in hashed:
            raise _bad(root, where, f"'{name}' is read but not listed with a sha256 in extra_files")
    return rec


def parity_status(record: dict) -> tuple[str, str | None]:
    """(status, reason) of a record's parity: "passed" / "failed" / "skipped" (reason: why it could not run here).

    Manifests written before statuses existed said `pass` only, and a skipped runtime run in `runtime_parity`."""
    p = record.get("parity") if isinstance(record.get("parity"), dict) else {}
    status = p.get("status")
    if status in PARITY_STATUSES:
        return status, p.get("reason")
    if "skipped" in str(p.get("runtime_parity", "")):
        return "skipped", str(p["runtime_parity"])
    return ("passed" if p.get("pass") is True else "failed"), None


def manifest_digest(root: str | os.PathLike) -> str:
    """sha256 of DIR/manifest.json (the value `toolkit verify DIR --expect` takes)."""
    return sha256_path(Path(root) / MANIFEST)


def read_manifest(artifact_dir: str | os.PathLike, expect: str | None = None) -> Manifest:
    """The checked manifest: its digest (manifest.sha256 and/or `expect`), format, records, file names.

    Does not hash the listed files (see `check_files` / `verified`). Raises ToolkitError (exit 2) when there is no
    artifact dir at all, CheckFailed (exit 1) when the dir is there but cannot be trusted; one line each."""
    root = Path(artifact_dir)
    if not root.is_dir():
        raise ToolkitError(f"artifact dir not found: {root} (make one with `toolkit export ... --out {root}`)")
    path = root / MANIFEST
    if not path.is_file():
        raise ToolkitError(f"artifact manifest not found: {path}")
    data = read_bytes(path, "artifact manifest", MAX_TEXT_BYTES)
    digest = hashlib.sha256(data).hexdigest()
    if expect is not None:
        want = expect.strip().lower()
        if want != digest:
            raise CheckFailed(f"{path}: sha256 {digest} differs from the expected {want}")
    dpath = root / DIGEST
    if dpath.is_file() or expect is None:
        if not dpath.is_file():
            raise CheckFailed(f"{dpath} is missing: the manifest's own checksum (re-export, or pin the manifest "
                              f"with --expect SHA)")
        try:  # one line of sha256sum format: never more than a few hundred bytes are read
            with open(dpath, "rb") as f:
                text = f.read(4096).decode("utf-8")
            recorded = text.split()[0].strip().lower() if text.strip() else ""
        except (OSError, UnicodeDecodeError):
            recorded = ""
        if recorded != digest:
            raise CheckFailed(f"{path}: sha256 differs from {DIGEST} (the manifest was edited or corrupted)")
    try:  # the one guarded JSON reader: size, depth, numbers, duplicate keys
        raw = parse_json(data.decode("utf-8"), str(path), "artifact manifest", expect=None)
    except UnicodeDecodeError as e:
        raise CheckFailed(f"{path}: not valid JSON ({type(e).__name__})") from None
    except ToolkitError as e:
        raise CheckFailed(str(e)) from None
    if not isinstance(raw, dict):
        raise CheckFailed(f"{path}: not a JSON object")
    if raw.get("format") != FORMAT:
        raise CheckFailed(f"{path}: format '{raw.get('format')}' is not {FORMAT}")
    arts = raw.get("artifacts")
    if not isinstance(arts, list):
        raise CheckFailed(f"{path}: no 'artifacts' list")
    if not arts:
        raise CheckFailed(f"{path}: the artifact list is empty (nothing to verify)")
    records = tuple(_record(root, i, d) for i, d in enumerate(arts))
    names = [r.file for r in records]
    if len(set(names)) != len(names):
        raise _bad(root, "artifacts", "a file is listed twice")
    return Manifest(root, digest, records, raw)


def check_files(manifest: Manifest) -> dict[str, list[str]]:
    """Artifact file -> problems with its files ('<file>: missing' / '<file>: sha256 differs ...'); [] when fine."""
    out = {}
    for rec in manifest.artifacts:
        problems = []
        for f in rec.files:
            p = manifest.member(f.file)
            if not p.exists():
                problems.append(f"{f.file}: missing")
            elif sha256_path(p) != f.sha256:
                problems.append(f"{f.file}: sha256 differs from the manifest (corrupted or replaced)")
        out[rec.file] = problems
    return out


def unlisted_files(manifest: Manifest) -> list[str]:
    listed = manifest.listed()
    return sorted(p.name for p in manifest.root.iterdir() if p.name not in listed)


def verified(artifact_dir: str | os.PathLike, expect: str | None = None, allow_extra: bool = False) -> Manifest:
    """The manifest of a dir whose every listed file matches its sha256 (what bench and device run); else one line."""
    m = read_manifest(artifact_dir, expect)
    for problems in check_files(m).values():
        if problems:
            raise CheckFailed(f"{m.root}: {problems[0]} (run `toolkit verify {m.root}`)")
    extra = unlisted_files(m)
    if extra and not allow_extra:
        raise CheckFailed(f"{m.root}: files not in the manifest: {', '.join(extra)}")
    return m


def load_test_vectors(manifest: Manifest, rec: ArtifactRecord) -> dict:
    """The shipped trajectory: {"initial": {state: arr}, "steps": [{"inputs": [...], "outputs": [...],
    "states": [...]}]} with lists in the record's input/output/state order."""
    path = manifest.member(rec.test_vectors)
    try:
        check_npz(path, "test vectors")
    except ToolkitError as e:
        raise CheckFailed(f"{rec.test_vectors}: unreadable test vectors ({e})") from None
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            first = rec.inputs[0].name
            n = 0
            while f"step{n}/in/{first}" in keys:
                n += 1
            if n == 0:
                raise CheckFailed(f"{rec.test_vectors}: no step0/in/{first} (not a toolkit test-vector file)")
            initial = {s: z[f"initial/state/{s}"] for s in rec.state_names}
            steps = [{"inputs": [z[f"step{i}/in/{k}"] for k in rec.input_names],
                      "outputs": [z[f"step{i}/out/{k}"] for k in rec.output_names],
                      "states": [z[f"step{i}/state/{k}"] for k in rec.state_names]} for i in range(n)]
    except CheckFailed:
        raise
    except KeyError as e:
        raise CheckFailed(f"{rec.test_vectors}: lacks {e}") from None
    except Exception as e:  # a truncated or foreign file: zipfile / numpy raise many kinds
        raise CheckFailed(f"{rec.test_vectors}: unreadable test vectors ({type(e).__name__})") from None
    return {"initial": initial, "steps": steps}


def np_dtype(name: str) -> np.dtype:
    return np.dtype({"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32,
                     "bfloat16": np.float32}.get(name, name))


def load_initial_state(root: Path, states) -> dict[str, np.ndarray]:
    """State name -> its shipped initial value (states: StateRecords or the raw record dicts)."""
    out = {}
    for s in states:
        get = (lambda k: s.get(k)) if isinstance(s, dict) else (lambda k: getattr(s, k))  # noqa: B023 - used now
        f, name, dtype = get("initial_file"), get("name"), get("dtype")
        if not f:
            continue
        p = member(Path(root), f)
        if not p.is_file():
            raise ToolkitError(f"initial state file missing: {p}")
        check_npz(p, "initial state")
        try:
            with np.load(p, allow_pickle=False) as z:
                if name not in z.files:
                    raise ToolkitError(f"{p.name} lacks state '{name}'")
                out[name] = z[name].astype(np_dtype(dtype))
        except ToolkitError:
            raise
        except Exception as e:
            raise ToolkitError(f"{p.name}: unreadable initial state ({type(e).__name__})") from None
    return out
