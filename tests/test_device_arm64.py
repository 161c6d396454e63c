"""The emulated ARM64 target for real: qemu-aarch64 + the instruction-count plugin + aarch64 onnxruntime.

These run when the target is set up (`toolkit device setup arm64`, cache in $TOOLKIT_CACHE/arm64 or
~/.cache/toolkit/arm64) and are skipped with the reason otherwise. The plugin build test only needs gcc.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from toolkit.device import arm64
from toolkit.device.emulated import bench_onnx, run_artifacts
from toolkit.device.arm64 import target as arm64_target
from toolkit.device.arm64.qemu import parse_icount
from toolkit.errors import ToolkitError

from test_device_plan import make_export  # noqa: E402 - same tests folder

STATUS = arm64.status()
needs_target = pytest.mark.skipif(not STATUS.ready, reason=f"emulated ARM64 target not set up: {STATUS.reason}")


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc not installed (the plugin is C)")
def test_plugin_source_builds_warning_free(tmp_path):
    out = tmp_path / "plugin.so"
    p = subprocess.run(["gcc", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-Wall", "-Wextra", "-Werror",
                        "-o", str(out), str(arm64.PLUGIN_SOURCE)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    syms = subprocess.run(["nm", "-D", "--defined-only", str(out)], capture_output=True, text=True).stdout
    assert "qemu_plugin_install" in syms and "qemu_plugin_version" in syms  # what qemu looks up


def test_missing_host_tools_and_root_are_explained(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool in ("qemu-aarch64", "debootstrap") else "/x")
    with pytest.raises(ToolkitError, match=r"host tools missing: debootstrap, qemu-user \(--no-apt given\).*"
                                           r"sudo apt-get install -y qemu-user debootstrap"):
        arm64.ensure_host_tools(apt=False)
    monkeypatch.setattr(shutil, "which", lambda tool: "/usr/sbin/debootstrap")
    monkeypatch.setattr(arm64_target, "_is_root", lambda: False)
    with pytest.raises(ToolkitError, match="needs root.*sudo toolkit device setup arm64"):
        arm64.build_sysroot(arm64.layout(tmp_path / "c"), arm64.DEFAULT_MIRROR)


def test_plugin_output_is_parsed(tmp_path):
    f = tmp_path / "icount.txt"
    f.write_text("toolkit-icount 1 aarch64\nrange 0 5500000000 5501000000\nregion 7 1000 1 0 1200 ranges=800\n"
                 "region 7 1010 2 0 1010 ranges=805\nerror end-without-begin 9\nend 99999 2\n")
    ic = parse_icount(f)
    assert ic.regions == {7: [1000, 1010]} and ic.all_threads == {7: [1200, 1010]}
    assert ic.ranges == {7: [[800], [805]]} and ic.threads == {7: 2}
    assert ic.errors == ["end-without-begin 9"] and ic.total == 99999
    f.write_text("something else\n")
    with pytest.raises(ToolkitError, match="not an instruction-count file"):
        parse_icount(f)


def test_status_names_the_missing_piece_and_the_fix(tmp_path):
    st = arm64.status(tmp_path / "empty-cache")
    assert not st.ready
    assert "toolkit device setup arm64 --cache" in st.reason
    assert set(st.pieces) >= {"sysroot", "cpuinfo", "wheels", "plugin"}


@pytest.mark.arm64
@pytest.mark.slow
@needs_target
def test_second_setup_only_checks():
    t0 = time.monotonic()
    st, results = arm64.setup(apt=False)
    assert st.ready
    assert {r.piece: r.action for r in results if r.piece != "host-tools"} == {
        "sysroot": "cached", "cpuinfo": "cached", "wheels": "cached", "plugin": "cached", "smoke": "cached"}
    assert time.monotonic() - t0 < 30


@pytest.mark.arm64
@pytest.mark.slow
@needs_target
def test_instruction_counts_repeat_exactly_and_outputs_match_host(tmp_path):
    export = make_export(tmp_path / "exp", (40,))
    result = run_artifacts(export, repeat=2, runs=3, warmup=1)
    rows = result["rows"]
    assert [r["seq_len"] for r in rows] == [40]
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["measured_on"] == "emulated ARM64 (neoverse-n1), instructions not time"
        assert r["latency_ms"] is None  # one row shape everywhere (toolkit.rows): an emulated row has no time
        assert r["instructions"]["identical_across_repeats"] is True
        assert r["instructions_per_inference"] > 0
        assert r["parity_max_abs_err"] <= 1e-4
        assert r["instructions"]["guest_threads_alive"] == 1  # onnxruntime's telemetry thread is off
        by_code = r["instructions"]["by_code"]
        assert by_code["onnxruntime"] > 0 and sum(by_code.values()) == r["instructions"]["raw_median"]


@pytest.mark.arm64
@pytest.mark.slow
@needs_target
def test_bench_api_one_artifact_with_history(tmp_path):
    """The call `toolkit bench --target arm64-a76` makes per cell (toolkit.bench.sweep._measure_emulated)."""
    from toolkit.exporters.manifest import verified

    m = verified(make_export(tmp_path / "exp", (10,)))
    res = bench_onnx(m, m.artifacts[0], target={"name": "arm64-a76", "kind": "emulated"}, runs=200,
                     steps_before=3)
    assert res["ok"], res["error"]
    assert res["latency_ms"] is None and res["instructions_per_inference"] > 0
    assert len(res["instructions"]["runs"]) == 5  # capped by the profile's max_runs
    # a longer window gathers and averages more rows: more instructions
    m40 = verified(make_export(tmp_path / "exp40", (40,)))
    res40 = bench_onnx(m40, m40.artifacts[0], runs=3)
    assert res40["instructions_per_inference"] > res["instructions_per_inference"]
