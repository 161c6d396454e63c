"""Export cache: one exported artifact per (model, config, weights, entry, shapes, runtime, dtype, versions).

A second identical bench finds every artifact here and only re-measures. The key hashes what changes the bytes of
the artifact: the model's name, config and weights digest, the entry's input/state specs (so `step`, whose shape
does not depend on the seq-len, is exported once for every history), the runtime, dtype, the target's export
settings (host targets share artifacts) and the library versions. A hit is re-checked against the manifest's
sha256, so a corrupted entry is rebuilt rather than measured.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.io import atomic_write_json, sha256_path, versions
from toolkit.io import read_json

# bench runtime name -> exporter target name
EXPORT_TARGET = {"executorch": "executorch", "onnxruntime": "onnx"}
KEY_FILE = "bench_key.json"


def default_cache_dir() -> Path:
    env = os.environ.get("TOOLKIT_BENCH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "toolkit" / "bench"


def key_material(model_name: str, config: dict, weights_sha: str, entry, runtime: str, dtype: str,
                 target_export: dict) -> dict:
    return {
        "model": model_name,
        "config": config,
        "weights_sha256": weights_sha,
        "entry": entry.name,
        "inputs": [s.to_dict() for s in entry.inputs],
        "states": [s.to_dict() for s in entry.states],
        "runtime": runtime,
        "dtype": dtype,
        "target_export": target_export,
        "versions": {k: v for k, v in versions().items() if k != "python"} | {"python": versions()["python"]},
    }


def cache_key(material: dict) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def shape_tag(entry) -> str:
    first = entry.inputs[0].shape if entry.inputs else ()
    return "x".join(str(s) for s in first) or "scalar"


def find_record(manifest: dict, entry: str, runtime: str) -> dict | None:
    """The manifest's artifact record for (entry, runtime); manifests list records under `artifacts`."""
    recs = manifest.get("artifacts", [])
    if isinstance(recs, dict):
        recs = list(recs.values())
    for r in recs:
        if r.get("entry") == entry and r.get("runtime") == runtime:
            return r
    return None


def lookup(directory: Path, entry: str, runtime: str) -> dict | None:
    """A valid cached record, or None (missing, unreadable, or its file no longer matches its sha256)."""
    mpath = directory / "manifest.json"
    if not mpath.is_file():
        return None
    try:
        manifest = read_json(mpath, "cached manifest")  # toolkit.io: binary / non-object / malformed -> ToolkitError
    except ToolkitError:
        return None
    rec = find_record(manifest, entry, runtime)
    if rec is None:
        return None
    f = directory / rec.get("file", "")
    if not rec.get("file") or not f.exists():
        return None
    if rec.get("sha256") and sha256_path(f) != rec["sha256"]:
        return None
    return rec


def export_cached(root: Path, material: dict, entry, model_name: str, runtime: str, dtype: str,
                  parity_steps: int, model_info: dict | None) -> tuple[Path, dict, bool]:
    """(artifact dir, manifest record, cache hit?) for one entry on one runtime; exports on a miss."""
    if runtime not in EXPORT_TARGET:
        raise ToolkitError(f"runtime '{runtime}' has no exported artifact")
    key = cache_key(material)
    directory = root / model_name / f"{entry.name}-{shape_tag(entry)}-{runtime}-{key[:16]}"
    rec = lookup(directory, entry.name, runtime)
    if rec is not None:
        return directory, rec, True
    from toolkit.exporters import export_artifacts

    # export_artifacts builds the folder atomically itself (temp dir + rename), replacing a stale entry
    manifest = export_artifacts([entry], model_name, [EXPORT_TARGET[runtime]], directory, dtype=dtype,
                                parity_steps=parity_steps, model_info=model_info, force=True)
    if find_record(manifest, entry.name, runtime) is None:
        raise ToolkitError(f"exporter wrote no '{runtime}' artifact for entry '{entry.name}'")
    atomic_write_json(directory / KEY_FILE, {"key": key, **material})
    rec = lookup(directory, entry.name, runtime)
    if rec is None:
        raise ToolkitError(f"cached export in {directory} failed its own checksum right after export")
    return directory, rec, False
