"""verify_dir: check an artifact dir against its manifest and re-run trajectory parity from the stored test vectors
through each real runtime (and the ExecuTorch bundled program through ExecuTorch's own check).

Reads only the artifact dir (no model, no run dir), through toolkit.exporters.manifest: the manifest's own digest,
safe file names, every file's sha256, no unlisted files; then parity.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Callable

from toolkit.errors import ToolkitError
from toolkit.exporters.common import first_line
from toolkit.exporters.manifest import (
    COREML_SKIP_REASON,
    ArtifactRecord,
    Manifest,
    check_files,
    load_test_vectors,
    read_manifest,
    unlisted_files,
)
from toolkit.exporters.parity import compare, failure_line, runtime_trajectory
from toolkit.exporters.runners import coreml_can_run, open_runner

Progress = Callable[[str, int, int], None]


def verify_artifact(manifest: Manifest, rec: ArtifactRecord, hash_problems: list[str], threads: int = 1) -> dict:
    """Checks for one manifest record: hashes (already computed), then parity (or structure without its runtime)."""
    root, raw = manifest.root, rec.raw
    result = {"file": rec.file, "sha256": rec.sha256, "runtime": rec.runtime, "entry": rec.entry,
              "recipe": raw.get("recipe"), "checks": {}, "problems": []}
    result["checks"]["sha256"] = "fail" if hash_problems else "pass"
    result["problems"] += hash_problems
    if hash_problems:
        result["checks"]["parity"] = "not run (files differ from the manifest)"
        return _finish(result)
    tol = (raw.get("parity") or {}).get("tolerance") or {"atol": 1e-4, "rtol": 1e-4}  # typed by read_manifest
    try:
        ref = load_test_vectors(manifest, rec)["steps"]
    except ToolkitError as e:
        result["problems"].append(str(e))
        result["checks"]["parity"] = "fail"
        return _finish(result)
    if rec.runtime == "coreml" and not coreml_can_run():
        from toolkit.exporters.to_coreml import read_structure

        try:
            st = read_structure(root / rec.file)
        except ToolkitError as e:
            result["problems"].append(f"{rec.file}: {e}")
            result["checks"]["structure"] = "fail"
            return _finish(result)
        want = raw.get("structure", {})
        compared = ("inputs", "outputs", "states", "op_histogram", "specification_version")
        diffs = [k for k in compared if st.get(k) != want.get(k)]
        result["structure_checked"] = list(compared)  # what Linux can check without the Core ML runtime
        if diffs:
            result["problems"].append(f"{rec.file}: Core ML structure differs from the manifest ({', '.join(diffs)})")
        result["checks"]["structure"] = "fail" if diffs else "pass"
        result["checks"]["parity"] = f"skipped: Core ML prediction needs macOS 15+ (host: {platform.system()})"
        return _finish(result, skipped=f"{COREML_SKIP_REASON}; this host is {platform.system()}")
    try:
        runner = open_runner(root, raw, threads)
        got = runtime_trajectory(runner, [s["inputs"] for s in ref])
    except ToolkitError as e:
        result["problems"].append(f"{rec.file}: {e}" if rec.file not in str(e) else str(e))
        result["checks"]["parity"] = "fail"
        return _finish(result)
    parity = compare(ref, got, rec.output_names, rec.state_names, tol["atol"], tol["rtol"])
    result["parity"] = {"max_abs_error": parity["max_abs_error"], "worst": parity["worst"], "pass": parity["pass"]}
    result["checks"]["parity"] = "pass" if parity["pass"] else "fail"
    if not parity["pass"]:
        result["problems"].append(f"{rec.file}: parity {failure_line(parity)}")
    ops_file = next((f.file for f in rec.files if f.role == "required_operators"), None)
    if ops_file:  # the .ort's minimal-build config must list exactly what the .ort needs (ORT reads both)
        from toolkit.exporters.to_onnx import parse_required_operators, required_operators_of

        try:
            same = (parse_required_operators(manifest.member(ops_file).read_text())
                    == required_operators_of(root / rec.file))
        except Exception as e:  # a damaged .ort or config
            same, why = False, first_line(e)
        else:
            why = "differs from the operators the .ort needs"
        result["checks"]["required_operators"] = "pass" if same else "fail"
        if not same:
            result["problems"].append(f"{ops_file}: {why}")
    bp = raw.get("bundled_program")
    if bp:
        from toolkit.exporters.to_executorch import check_bundled_program

        try:
            b = check_bundled_program(manifest.member(bp["file"]), bp["cases"], bp["atol"], bp.get("rtol", 0.0))
        except Exception as e:  # a damaged .bpte makes the loader raise
            b = {"pass": False, "error": first_line(e), "failed_case": None}
        result["checks"]["bundled_program"] = "pass" if b["pass"] else "fail"
        if not b["pass"]:
            result["problems"].append(f"{bp['file']}: bundled program check failed "
                                      f"(case {b.get('failed_case')}: {b.get('error')})")
    return _finish(result)


def _finish(result: dict, skipped: str | None = None) -> dict:
    """status: failed (any problem), skipped (nothing failed but the runtime could not run here: `reason`), else
    passed. `pass` is true only when passed; `ok` (nothing failed) is what the exit code follows."""
    if result["problems"]:
        result.update(status="failed", ok=False)
    elif skipped:
        result.update(status="skipped", reason=skipped, ok=True)
    else:
        result.update(status="passed", ok=True)
    result["pass"] = result["status"] == "passed"
    return result


def verify_dir(artifact_dir: Path, threads: int = 1, progress: Progress | None = None, expect: str | None = None,
               allow_extra: bool = False) -> dict:
    """Every artifact in the dir; returns a report (the CLI exits non-zero when report['pass'] is False).

    The manifest itself must check out first (read_manifest raises one line otherwise): its digest against
    manifest.sha256 and/or `expect`, a non-empty list, file names inside the dir. Files the manifest does not list
    fail the report unless `allow_extra`."""
    manifest = read_manifest(artifact_dir, expect)
    tell = progress or (lambda what, d, t: None)
    recs = manifest.artifacts
    hashes = check_files(manifest)
    results = []
    for i, rec in enumerate(recs):
        tell(rec.file, i, len(recs))
        results.append(verify_artifact(manifest, rec, hashes[rec.file], threads))
        tell(rec.file, i + 1, len(recs))
    unlisted = unlisted_files(manifest)
    extra_ok = allow_extra or not unlisted
    counts = {st: sum(1 for r in results if r["status"] == st) for st in ("passed", "skipped", "failed")}
    ok = all(r["ok"] for r in results) and extra_ok
    return {"dir": str(manifest.root), "model": manifest.model, "manifest_sha256": manifest.digest,
            # pass: nothing failed (the exit code); a runtime that cannot run on this host is counted as skipped
            "pass": ok, "status": ("failed" if not ok else "passed" if not counts["skipped"] else "passed with skips"),
            "counts": counts, "artifacts": results, "unlisted_files": unlisted, "allow_extra": allow_extra}
