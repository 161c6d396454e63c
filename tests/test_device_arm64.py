"""The emulated ARM64 target for real: qemu-aarch64 + the instruction-count plugin + aarch64 onnxruntime.

These run when the target is set up (`toolkit device setup arm64`, cache in $TOOLKIT_CACHE/arm64 or
~/.cache/toolkit/arm64) and are skipped with the reason otherwise. The plugin build test only needs gcc.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
from test_device_plan import make_export  # noqa: E402 - same tests folder

from toolkit.device import arm64
from toolkit.device.arm64 import target as arm64_target
from toolkit.device.arm64.qemu import parse_icount
from toolkit.device.emulated import bench_onnx, run_artifacts
from toolkit.errors import ToolkitError

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


# ------------------------------------------------------------------------ ExecuTorch C++ runner (et_runner)

from toolkit.device import et_cpp  # noqa: E402

ET_READY = STATUS.ready and STATUS.executorch
needs_et = pytest.mark.skipif(not ET_READY, reason="ExecuTorch on emulated ARM64 not set up: "
                              f"{STATUS.executorch_reason or STATUS.reason} (toolkit device setup arm64 --with-executorch)")


@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("readelf")), reason="gcc/readelf not installed")
def test_python_stub_covers_exactly_the_symbols_bound_at_load(tmp_path):
    """Data objects and function addresses taken (GOT/absolute relocations) are bound at load and need a definition;
    a function only called through the PLT binds lazily and must not be stubbed (nothing calls it)."""
    src = tmp_path / "lib.c"
    src.write_text("extern char _Py_NoneStruct[]; extern char PyExc_ValueError[]; void PyObject_GenericGetDict(void);"
                   "void Py_CalledOnly(void);\n"
                   "void *table[] = {(void *)PyObject_GenericGetDict};\n"
                   "void *none(void) { return _Py_NoneStruct + (long)PyExc_ValueError; }\n"
                   "void call(void) { Py_CalledOnly(); }\n")
    lib = tmp_path / "libfake.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(lib), str(src)], check=True)
    code, names = et_cpp.python_stub_source(lib)
    assert names == ["PyExc_ValueError", "PyObject_GenericGetDict", "_Py_NoneStruct"]
    assert "unsigned char _Py_NoneStruct[512]" in code and "Py_CalledOnly" not in code
    stub = tmp_path / "libstub.so"
    (tmp_path / "stub.c").write_text(code)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(stub), str(tmp_path / "stub.c")], check=True)
    defined = subprocess.run(["nm", "-D", "--defined-only", str(stub)], capture_output=True, text=True).stdout
    assert all(n in defined for n in names)


def test_missing_cross_toolchain_is_one_line(tmp_path, monkeypatch):
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda t: None if t.startswith("aarch64-linux-gnu-") else real(t))
    with pytest.raises(ToolkitError) as e:
        et_cpp.build_aarch64(tmp_path, apt=False)
    msg = str(e.value)
    assert "\n" not in msg and "g++-aarch64-linux-gnu" in msg and "--no-apt given" in msg
    assert "apt-get install -y" in msg


def test_executorch_lane_not_built_is_explained(tmp_path):
    st = arm64.status(tmp_path / "empty-cache")
    assert st.executorch is False and "not built" in st.executorch_reason
    with pytest.raises(ToolkitError, match="emulated ARM64 target is not set up"):
        arm64.require_executorch(tmp_path / "empty-cache")


def test_runner_rows_fail_with_the_runners_message(tmp_path):
    """A .pte the runner cannot load is a failed measurement carrying the runner's error, never an exception."""
    from toolkit.device.orchestrator import ExecResult, Invocation

    (tmp_path / "results_c0.json").write_text(json.dumps({
        "format": "toolkit-runner-results/1", "overhead_region": 999999999, "ranges": [], "cases": [{
            "id": 0, "regions": [], "parity_regions": [], "wall_ms": [], "outputs": [],
            "error": "Program::load failed: error 0x23 (InvalidProgram)"}]}))

    class C:  # the two fields parse() reads from a case
        index = 0

        @staticmethod
        def output_names():
            return ["scores"]

    inv = Invocation(["et_runner"], [0], ["results_c0.json", "c0/out"])
    m = et_cpp.CppRunner().parse(inv, ExecResult(0, ""), tmp_path, [C])[0]
    assert m.error == "Program::load failed: error 0x23 (InvalidProgram)" and not m.instructions
    with pytest.raises(ToolkitError, match=r"et_runner exited -11 without results: .*Segmentation"):
        et_cpp.CppRunner().parse(Invocation(["et_runner"], [0], ["nope.json"]), ExecResult(-11, "Segmentation fault"),
                                 tmp_path, [C])


@pytest.fixture(scope="module")
def et_export_dir(tmp_path_factory):
    """A real ExecuTorch export (SCN at L=10: window and stateful step .pte with test vectors) through the CLI."""
    from cli_helpers import run_inprocess

    out = tmp_path_factory.mktemp("et") / "scn"
    code, _, err = run_inprocess("export", "--model", "scn", "--format", "executorch", "--seq-len", "10",
                                 "--steps", "3", "--out", str(out))
    assert code == 0, err
    return out


@pytest.mark.arm64
@pytest.mark.slow
@needs_et
def test_cpp_runner_under_qemu_matches_the_python_runtime(et_export_dir):
    """Window and stateful step .pte: the C++ runner's outputs under emulation match the host's Python runtime and
    the shipped test vectors, counts repeat exactly across two runs, the first call is counted apart."""
    result = run_artifacts(et_export_dir, with_executorch=True, runs=3, warmup=1, repeat=2)
    rows = [r for r in result["rows"] if r["runtime"] == "executorch"]
    assert {r["entry"] for r in rows} == {"window", "step"}
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["parity"]["vs_host_runtime"] <= 1e-5 and r["parity"]["vs_test_vectors"] <= 1e-4
        assert r["parity"]["steps"] >= 3  # the step's trajectory carries state through several calls
        ins = r["instructions"]
        assert ins["identical_across_repeats"] is True and r["instructions_per_inference"] > 0
        assert ins["first_call"] > ins["per_inference"] and ins["guest_threads_alive"] == 1
        assert ins["by_code"]["executorch"] > 0.5 * ins["raw_median"]
        assert r["artifact"]["sha256"] and r["target"] == "arm64-a76"


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("g++") and shutil.which("patchelf")), reason="g++ / patchelf not installed")
def test_host_cpp_runner_matches_the_python_runtime(et_export_dir):
    """`--runtimes executorch-cpp`: the host build of the runner gives the Python binding's outputs."""
    from toolkit.device.plan import build_cases, host_reference, max_abs_err
    from toolkit.exporters.manifest import verified

    m = verified(et_export_dir)
    for rec in [r for r in m.artifacts if r.runtime == "executorch"]:
        res = et_cpp.measure_host(m, rec, [None if not rec.states else 2], runs=5, warmup=1)
        assert res["ok"], res["error"]
        assert res["parity_cpp_vs_test_vectors"] <= 1e-4 and res["points"][0]["latency_ms"]["runs"] == 5
        case = build_cases(m, [rec])[0]
        lane = et_cpp.build_host()
        from toolkit.device.orchestrator import run_cases

        _, meas = run_cases(et_cpp.HostTransport(lane), et_cpp.CppRunner(markers=False), [case], warmup=0, runs=1,
                            parity_steps=3)
        got = meas[case.index]
        assert got.error is None
        assert max_abs_err(got.outputs, host_reference(case, len(got.outputs))) <= 1e-5
