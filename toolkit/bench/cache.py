"""Export cache: one exported artifact per (model, config, weights, entry, shapes, runtime, dtype, versions).

A second identical bench finds every artifact here and only re-measures. The key hashes what changes the bytes of
the artifact: the model's name, config and weights digest, the entry's input/state specs (so `step`, whose shape
does not depend on the seq-len, is exported once for every history), the runtime, dtype, the target's export
settings (host targets share artifacts) and the library versions. Each entry is an ordinary artifact dir written by
toolkit.exporters.export; a hit is re-read with toolkit.exporters.manifest.verified (manifest digest + every file's
sha256), so a corrupted entry is rebuilt rather than measured.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.exporters.manifest import MANIFEST, verified
from toolkit.io import atomic_write_json, cache_dir, versions


def default_cache_dir() -> Path:
    """toolkit.io.cache_dir("bench"): $TOOLKIT_CACHE/bench, else ~/.cache/toolkit/bench (XDG_CACHE_HOME honoured)."""
    return cache_dir("bench")


_GRAPH_CODE = ("models", "exporters")  # the packages whose code decides what an exported artifact computes


@functools.lru_cache(maxsize=1)
def graph_code_sha256() -> str:
    """Digest of the toolkit source that builds and exports graphs: the package version alone does not change
    when that code does (a checkout, a local edit), and an artifact exported by other code must not be reused."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for sub in _GRAPH_CODE:
        for f in sorted((root / sub).rglob("*.py")):
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def key_material(model_name: str, config: dict, weights_sha: str, entry, runtime: str, dtype: str,
                 target_export: dict) -> dict:
    return {
        "graph_code_sha256": graph_code_sha256(),
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


def lookup(directory: Path, entry: str, runtime: str) -> dict | None:
    """A valid cached record, or None (missing, or the dir fails the manifest's checks: digest, hashes, names)."""
    if not (directory / MANIFEST).is_file():
        return None
    try:
        m = verified(directory)
    except ToolkitError:
        return None
    return next((r.raw for r in m.artifacts if r.entry == entry and r.runtime == runtime), None)


def key_file(directory: Path) -> Path:
    """The cache key beside (not inside) the artifact dir: the dir holds exactly what its manifest lists."""
    return directory.with_name(directory.name + ".key.json")


def export_cached(root: Path, material: dict, entry, model_name: str, runtime: str, dtype: str,
                  parity_steps: int, model_info: dict | None) -> tuple[Path, dict, bool]:
    """(artifact dir, manifest record, cache hit?) for one entry on one runtime; exports on a miss."""
    from toolkit.exporters.recipes import format_of_runtime

    export_format = format_of_runtime(runtime)
    key = cache_key(material)
    directory = root / model_name / f"{entry.name}-{shape_tag(entry)}-{runtime}-{key[:16]}"
    rec = lookup(directory, entry.name, runtime)
    if rec is not None:
        return directory, rec, True
    from toolkit.exporters import export_artifacts

    # export_artifacts builds the folder atomically itself (temp dir + rename), replacing a stale entry
    manifest = export_artifacts([entry], model_name, [export_format], directory, dtype=dtype,
                                parity_steps=parity_steps, model_info=model_info, force=True)
    if not any(r.get("entry") == entry.name and r.get("runtime") == runtime for r in manifest["artifacts"]):
        raise ToolkitError(f"exporter wrote no '{runtime}' artifact for entry '{entry.name}'")
    atomic_write_json(key_file(directory), {"key": key, **material})
    rec = lookup(directory, entry.name, runtime)
    if rec is None:
        raise ToolkitError(f"cached export in {directory} failed its own checksum right after export")
    return directory, rec, False
