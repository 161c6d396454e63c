"""verify_dir: re-hash every file of an artifact dir against its manifest and re-run trajectory parity from the
stored test vectors through each real runtime (and the ExecuTorch bundled program through ExecuTorch's own check).

Reads only the artifact dir (no model, no run dir): what a device or a later stage would have.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Callable

from toolkit.errors import ToolkitError
from toolkit.exporters.common import first_line
from toolkit.exporters.parity import compare, failure_line, load_test_vectors, runtime_trajectory
from toolkit.exporters.pipeline import FORMAT, MANIFEST
from toolkit.exporters.runners import coreml_can_run, open_runner
from toolkit.io import read_json, sha256_path

Progress = Callable[[str, int, int], None]


def read_manifest(artifact_dir: Path) -> dict:
    artifact_dir = Path(artifact_dir)
    if not artifact_dir.is_dir():
        raise ToolkitError(f"artifact dir not found: {artifact_dir}")
    manifest = read_json(artifact_dir / MANIFEST, "artifact manifest")
    if manifest.get("format") != FORMAT:
        raise ToolkitError(f"{artifact_dir / MANIFEST}: format '{manifest.get('format')}' is not {FORMAT}")
    if not isinstance(manifest.get("artifacts"), list):
        raise ToolkitError(f"{artifact_dir / MANIFEST}: no 'artifacts' list")
    return manifest


def _hash_files(root: Path, rec: dict) -> list[str]:
    problems = []
    files = [{"file": rec["file"], "sha256": rec["sha256"], "role": "model"}] + list(rec.get("extra_files", []))
    for f in files:
        p = root / f["file"]
        if not p.exists():
            problems.append(f"{f['file']}: missing")
            continue
        if sha256_path(p) != f["sha256"]:
            problems.append(f"{f['file']}: sha256 differs from the manifest (corrupted or replaced)")
    return problems


def verify_artifact(root: Path, rec: dict, threads: int = 1) -> dict:
    """Checks for one manifest record: hashes, then parity (or structure on a host without its runtime)."""
    result = {"file": rec["file"], "runtime": rec["runtime"], "entry": rec.get("entry"), "recipe": rec.get("recipe"),
              "checks": {}, "problems": []}
    hash_problems = _hash_files(root, rec)
    result["checks"]["sha256"] = "fail" if hash_problems else "pass"
    result["problems"] += hash_problems
    if hash_problems:
        result["checks"]["parity"] = "not run (files differ from the manifest)"
        result["pass"] = False
        return result
    tol = rec.get("parity", {}).get("tolerance", {"atol": 1e-4, "rtol": 1e-4})
    in_names = [i["name"] for i in rec["inputs"]]
    out_names = [o["name"] for o in rec["outputs"]]
    state_names = [s["name"] for s in rec.get("states", [])]
    ref = load_test_vectors(root / rec["test_vectors"], in_names, out_names, state_names)
    if rec["runtime"] == "coreml" and not coreml_can_run():
        from toolkit.exporters.to_coreml import read_structure

        try:
            st = read_structure(root / rec["file"])
        except ToolkitError as e:
            result["problems"].append(f"{rec['file']}: {e}")
            result["checks"]["structure"] = "fail"
            result["pass"] = False
            return result
        want = rec.get("structure", {})
        diffs = [k for k in ("inputs", "outputs", "states", "op_histogram", "specification_version")
                 if st.get(k) != want.get(k)]
        if diffs:
            result["problems"].append(f"{rec['file']}: Core ML structure differs from the manifest "
                                      f"({', '.join(diffs)})")
        result["checks"]["structure"] = "fail" if diffs else "pass"
        result["checks"]["parity"] = (f"skipped: Core ML prediction needs macOS 15+ (host: {platform.system()})")
        result["pass"] = not result["problems"]
        return result
    try:
        runner = open_runner(root, rec, threads)
        got = runtime_trajectory(runner, [s["inputs"] for s in ref])
    except ToolkitError as e:
        result["problems"].append(f"{rec['file']}: {e}" if rec["file"] not in str(e) else str(e))
        result["checks"]["parity"] = "fail"
        result["pass"] = False
        return result
    parity = compare(ref, got, out_names, state_names, tol["atol"], tol["rtol"])
    result["parity"] = {"max_abs_error": parity["max_abs_error"], "worst": parity["worst"], "pass": parity["pass"]}
    result["checks"]["parity"] = "pass" if parity["pass"] else "fail"
    if not parity["pass"]:
        result["problems"].append(f"{rec['file']}: parity {failure_line(parity)}")
    bp = rec.get("bundled_program")
    if bp:
        from toolkit.exporters.to_executorch import check_bundled_program

        try:
            b = check_bundled_program(root / bp["file"], bp["cases"], bp["atol"], bp.get("rtol", 0.0))
        except Exception as e:  # a damaged .bpte makes the loader raise
            b = {"pass": False, "error": first_line(e), "failed_case": None}
        result["checks"]["bundled_program"] = "pass" if b["pass"] else "fail"
        if not b["pass"]:
            result["problems"].append(f"{bp['file']}: bundled program check failed "
                                      f"(case {b.get('failed_case')}: {b.get('error')})")
    result["pass"] = not result["problems"]
    return result


def verify_dir(artifact_dir: Path, threads: int = 1, progress: Progress | None = None) -> dict:
    """Every artifact in the dir; returns a report (the CLI exits non-zero when report['pass'] is False)."""
    root = Path(artifact_dir)
    manifest = read_manifest(root)
    tell = progress or (lambda what, d, t: None)
    recs = manifest["artifacts"]
    results = []
    for i, rec in enumerate(recs):
        tell(rec["file"], i, len(recs))
        try:
            results.append(verify_artifact(root, rec, threads))
        except (KeyError, TypeError) as e:
            results.append({"file": rec.get("file", "?"), "runtime": rec.get("runtime"), "checks": {},
                            "problems": [f"{rec.get('file', '?')}: manifest record is malformed ({first_line(e)})"],
                            "pass": False})
        tell(rec["file"], i + 1, len(recs))
    listed = {MANIFEST}
    for rec in recs:
        listed.add(rec.get("file"))
        listed.update(f["file"] for f in rec.get("extra_files", []))
    unlisted = sorted(p.name for p in root.iterdir() if p.name not in listed)
    return {"dir": str(root), "model": manifest.get("model"), "pass": all(r["pass"] for r in results),
            "artifacts": results, "unlisted_files": unlisted}
