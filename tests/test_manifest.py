"""The artifact dir's one reader (toolkit.exporters.manifest) and `toolkit verify`'s distrust of it: the
manifest's own checksum, empty lists, paths outside DIR, unlisted files. Fast: a hand-built ONNX dir."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from artifact_dirs import make_artifact_dir, rewrite_manifest
from cli_helpers import run_inprocess

from toolkit.errors import CheckFailed, ToolkitError
from toolkit.exporters.manifest import (
    DIGEST,
    MANIFEST,
    load_test_vectors,
    manifest_digest,
    read_manifest,
    verified,
)
from toolkit.exporters.verify import verify_dir


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_artifact_dir(tmp_path_factory.mktemp("art") / "a", seq_lens=(10, 12))


@pytest.fixture
def copy(good, tmp_path):
    dst = tmp_path / "a"
    shutil.copytree(good, dst)
    return dst


def _verify_line(root, *flags):
    code, out, err = run_inprocess("verify", root, *flags)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err
    return code, " ".join(lines), out


def test_a_good_dir_reads_verifies_and_pins(good):
    m = read_manifest(good)
    assert [a.file for a in m.artifacts] == sorted(a.file for a in m.artifacts)
    assert m.digest == manifest_digest(good) == (good / DIGEST).read_text().split()[0]
    rec = m.artifacts[0]
    assert rec.input_names == ["items"] and rec.state_names == ["W"] and rec.states[0].input == "state_in.W"
    tv = load_test_vectors(m, rec)
    assert len(tv["steps"]) == 3 and tv["initial"]["W"].shape == (8, 8)
    report = verify_dir(good)
    assert report["pass"] and report["unlisted_files"] == [] and report["manifest_sha256"] == m.digest
    assert all(r["checks"] == {"sha256": "pass", "parity": "pass"} for r in report["artifacts"])
    code, _, out = _verify_line(good, "--expect", m.digest)
    assert code == 0 and "2 artifacts verified" in out and m.digest in out.replace("\n", "")


def test_a_flipped_manifest_byte_fails(copy):
    data = bytearray((copy / MANIFEST).read_bytes())
    i = data.index(b"0.0001") if b"0.0001" in data else data.index(b"1e-05")
    data[i] ^= 0x01  # a tolerance digit: still valid JSON
    (copy / MANIFEST).write_bytes(bytes(data))
    with pytest.raises(CheckFailed, match="differs from manifest.sha256"):
        read_manifest(copy)
    code, line, _ = _verify_line(copy)
    assert code == 1 and "manifest.json" in line and "differs from manifest.sha256" in line


def test_expect_pins_the_manifest_and_a_missing_digest_file_is_an_error(copy):
    digest = manifest_digest(copy)
    code, line, _ = _verify_line(copy, "--expect", "0" * 64)
    assert code == 1 and f"sha256 {digest} differs from the expected {'0' * 64}" in line
    code, line, _ = _verify_line(copy, "--expect", "xyz")
    assert code == 2 and "--expect: 'xyz' is not a sha256" in line
    (copy / DIGEST).unlink()
    code, line, _ = _verify_line(copy)
    assert code == 1 and "manifest.sha256 is missing" in line
    code, _, _ = _verify_line(copy, "--expect", digest)  # a pinned digest stands in for the file
    assert code == 0


def test_an_empty_artifact_list_is_refused(copy):
    rewrite_manifest(copy, lambda m: m.update(artifacts=[]))
    code, line, _ = _verify_line(copy, "--allow-extra")
    assert code == 1 and "artifact list is empty" in line


@pytest.mark.parametrize("name", ["../outside.onnx", "../../../../etc/passwd", "/etc/passwd", "sub/../../x.onnx"])
def test_paths_outside_the_dir_are_refused(copy, name):
    outside = copy.parent / "outside.onnx"
    shutil.copy(copy / read_manifest(copy).artifacts[0].file, outside)

    def edit(m):
        m["artifacts"][0]["file"] = name
    rewrite_manifest(copy, edit)
    code, line, _ = _verify_line(copy, "--allow-extra")
    assert code == 1 and name in line and "outside the artifact dir" in line


def test_test_vectors_outside_the_dir_are_refused(copy):
    def edit(m):
        m["artifacts"][0]["test_vectors"] = "../elsewhere.npz"
    rewrite_manifest(copy, edit)
    with pytest.raises(CheckFailed, match=r"'\.\./elsewhere\.npz' is outside the artifact dir"):
        read_manifest(copy)


def test_a_symlink_out_of_the_dir_is_refused(copy):
    rec = read_manifest(copy).artifacts[0]
    target = copy.parent / "real.onnx"
    shutil.move(copy / rec.file, target)
    os.symlink(target, copy / rec.file)  # same bytes, same sha256: only the location gives it away
    code, line, _ = _verify_line(copy)
    assert code == 1 and rec.file in line and "resolves outside the artifact dir" in line
    with pytest.raises(CheckFailed, match="resolves outside"):
        verified(copy)


def test_unlisted_files_fail_unless_allowed(copy):
    (copy / "notes.txt").write_text("not part of the export")
    code, line, _ = _verify_line(copy)
    assert code == 1 and "files not in the manifest: notes.txt" in line and "--allow-extra" in line
    code, _, out = _verify_line(copy, "--allow-extra")
    assert code == 0 and "notes.txt" in out
    with pytest.raises(CheckFailed, match="notes.txt"):
        verified(copy)
    assert verified(copy, allow_extra=True).digest


def test_a_flipped_artifact_byte_names_the_file(copy):
    rec = read_manifest(copy).artifacts[1]
    data = bytearray((copy / rec.file).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / rec.file).write_bytes(bytes(data))
    with pytest.raises(CheckFailed, match=f"{rec.file}: sha256 differs"):
        verified(copy)
    code, line, _ = _verify_line(copy)
    assert code == 1 and rec.file in line and "sha256 differs" in line


def test_a_file_that_is_read_must_be_hashed(copy):
    def edit(m):
        m["artifacts"][0]["extra_files"] = [f for f in m["artifacts"][0]["extra_files"] if f["role"] != "test_vectors"]
    rewrite_manifest(copy, edit)
    with pytest.raises(CheckFailed, match="read but not listed with a sha256"):
        read_manifest(copy)


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m.update(format="other/1"), "format 'other/1'"),
    (lambda m: m.pop("artifacts"), "no 'artifacts' list"),
    (lambda m: m["artifacts"][0].pop("sha256"), "sha256 None is not 64"),
    (lambda m: m["artifacts"][0].update(runtime="tflite"), "unknown runtime 'tflite'"),
    (lambda m: m["artifacts"][0].update(inputs="x"), "'inputs' is not a list"),
])
def test_malformed_records_are_one_line(copy, edit, needle):
    rewrite_manifest(copy, edit)
    with pytest.raises(CheckFailed, match=needle.replace("(", r"\(").replace("'", "'")):
        read_manifest(copy)


def test_missing_dir_and_manifest_are_user_errors(tmp_path):
    with pytest.raises(ToolkitError, match="artifact dir not found"):
        read_manifest(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ToolkitError, match="artifact manifest not found"):
        read_manifest(tmp_path / "empty")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / MANIFEST).write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "bin" / DIGEST).write_text(manifest_digest(tmp_path / "bin") + "  manifest.json\n")
    with pytest.raises(CheckFailed, match="not valid JSON"):
        read_manifest(tmp_path / "bin")
    assert json  # (json used by helpers)


def test_parity_status_reads_statuses_and_older_manifests():
    """passed / failed / skipped (with why); a manifest from before statuses said `pass` only, and a skipped Core ML
    run in runtime_parity: that reads as skipped, never as passed."""
    from toolkit.exporters.manifest import parity_status

    assert parity_status({"parity": {"status": "passed", "pass": True}}) == ("passed", None)
    assert parity_status({"parity": {"status": "skipped", "pass": None, "reason": "needs macOS 15+"}}) == (
        "skipped", "needs macOS 15+")
    assert parity_status({"parity": {"pass": True}}) == ("passed", None)
    assert parity_status({"parity": {"pass": False}}) == ("failed", None)
    old_coreml = {"parity": {"pass": True, "runtime_parity": "skipped: Core ML prediction needs macOS 15+"}}
    assert parity_status(old_coreml)[0] == "skipped"
    assert parity_status({}) == ("failed", None)
