"""Android orchestrator over a *fake adb* (a transport test: no phone, no runtime is mocked).

The fake is a script put first on PATH. It records every argv it gets and answers from a scenario: regex on the
command -> stdout / exit code / file to write (for `adb pull`). Answers reproduce the formats of the real tools:
`adb devices -l` and adb's error lines (captured from Debian's adb 29), onnxruntime_perf_test's result file
(PerformanceResult::DumpToFile: `model,seconds,peak_ws,cpu,run`), executor_runner's log lines (ExecuTorch 1.4.1
examples/portable/executor_runner, incl. its bundled-IO verdict), `dumpsys thermalservice` / `dumpsys battery`
(AOSP ThermalManagerService / BatteryService dump formats) and cpufreq sysfs lines. The ETDump a phone sends back
is written by ExecuTorch's own ETDump serializer (the flatcc schema the runtime's ETDumpGen writes, size-prefixed).
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path

import pytest
from artifact_dirs import rewrite_manifest  # noqa: E402 - same tests folder
from cli_helpers import run_inprocess
from test_device_plan import make_export  # noqa: E402

from toolkit.device.adb import choose_cpu, list_devices, run_on_device
from toolkit.device.elf import elf_abi
from toolkit.device.executor_runner import parse_gflags_help
from toolkit.device.targets import list_targets
from toolkit.errors import ToolkitError
from toolkit.io import sha256_path  # noqa: E402

FAKE_ADB = r'''#!{python}
import json, os, re, sys
args = sys.argv[1:]
serial = None
if args[:1] == ["-s"]:
    serial, args = args[1], args[2:]
with open(os.environ["FAKE_ADB_LOG"], "a") as f:
    f.write(json.dumps({{"serial": serial, "args": args}}) + "\n")
cmd = " ".join(args)
for rule in json.load(open(os.environ["FAKE_ADB_SCENARIO"])):
    m = re.search(rule["match"], cmd, re.S)
    if m:
        if "write" in rule:  # adb pull REMOTE LOCAL: create LOCAL with the recorded content
            open(args[-1], "w").write(rule["write"])
        if "copy" in rule:  # adb pull REMOTE LOCAL of a binary file: LOCAL gets the bytes of a recorded file
            open(args[-1], "wb").write(open(rule["copy"], "rb").read())
        sys.stdout.write(rule.get("stdout", ""))
        sys.stderr.write(rule.get("stderr", ""))
        sys.exit(rule.get("rc", 0))
sys.stderr.write("fake adb: no recording for: " + cmd + "\n")
sys.exit(1)
'''

DEVICES = "List of devices attached\nR58M40ABCDE            device usb:1-1 product:a52qnsxx model:SM_A525F device:a52q transport_id:3\n\n"
FREQS = "0 1804800\n1 1804800\n2 1804800\n3 1804800\n4 1804800\n5 1804800\n6 2208000\n7 2304000\n"
PERF_CSV = "".join(f"scn_window_L10,{t},18432000,0,{i}\n" for i, t in
                   enumerate([0.00400, 0.00300, 0.00110, 0.00100, 0.00120, 0.00105, 0.00130]))
PERF_OUT = ("Session creation time cost: 0.0113 s\nFirst inference time cost: 2 ms\nTotal inference time cost: 0.01265 s\n"
            "Total inference requests: 7\nAverage inference time cost: 1.807 ms\nPeak working set size: 18432000 bytes\n")
ET_HELP = ("executor_runner: Flags from executor_runner.cpp:\n    -model_path (Model serialized in flatbuffer format.) "
           "type: string default: \"model.pte\"\n    -num_executions (Number of times to run the model.) type: uint32 "
           "default: 1\n    -inputs (Comma-separated list of input files) type: string default: \"\"\n"
           "    -cpu_threads (Number of CPU threads for inference.) type: int32 default: -1\n")
ET_LOG = "".join(f"I 00:00:00.{i:06d} executorch:executor_runner.cpp:523] Iteration {i + 1} of 7: {ms} ms\n"
                 for i, ms in enumerate([3.1, 2.9, 1.20, 1.10, 1.30, 1.15, 1.25]))


def run_cli(args, capsys, monkeypatch):
    """`toolkit device ...` through the real entry point: (exit code, stdout, stderr)."""
    return run_inprocess("device", *args)


def fake_elf(path: Path, machine: int = 183, elf_class: int = 2) -> Path:
    """A file with a real ELF header (class, little endian, e_machine): what elf_abi reads."""
    head = b"\x7fELF" + bytes([elf_class, 1, 1, 0]) + bytes(8) + (2).to_bytes(2, "little") + machine.to_bytes(2, "little")
    path.write_bytes(head + bytes(64))
    path.chmod(0o755)
    return path


def base_rules(abi: str = "arm64-v8a", taskset: str = "/system/bin/taskset\n", devices: str = DEVICES) -> list[dict]:
    return [
        {"match": r"^devices -l$", "stdout": devices},
        {"match": r"^shell getprop ro\.product\.cpu\.abi$", "stdout": abi + "\n"},
        {"match": r"^shell getprop ro\.product\.cpu\.abilist$", "stdout": f"{abi},armeabi-v7a,armeabi\n"},
        {"match": r"^shell getprop ro\.product\.model$", "stdout": "SM-A525F\n"},
        {"match": r"^shell command -v taskset", "stdout": taskset},
        {"match": r"^shell for c in /sys/devices/system/cpu", "stdout": FREQS},
        {"match": r"^shell (mkdir|chmod|rm) ", "stdout": ""},
        {"match": r"^push ", "stdout": "1 file pushed, 0 skipped.\n"},
    ]


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """Install the fake adb first on PATH; returns (set_rules, read_log)."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    adb = bindir / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable))
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    scenario, log = tmp_path / "scenario.json", tmp_path / "adb-log.jsonl"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("ADB", raising=False)
    monkeypatch.setenv("FAKE_ADB_SCENARIO", str(scenario))
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))

    def set_rules(rules: list[dict]) -> None:
        scenario.write_text(json.dumps(rules))

    def read_log() -> list[dict]:
        return [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []

    return set_rules, read_log


def test_perf_test_run_pins_big_core_and_parses_times(tmp_path, fake_adb):
    set_rules, read_log = fake_adb
    export = make_export(tmp_path / "exp", (10,))
    runner = fake_elf(tmp_path / "onnxruntime_perf_test")
    set_rules(base_rules() + [
        {"match": r"^shell cd /data/local/tmp/toolkit/run-.* taskset 80 .*onnxruntime_perf_test .*-r 7 ",
         "stdout": PERF_OUT + "__toolkit_rc=0\n"},
        {"match": r"^pull .*/c0/result\.csv ", "write": PERF_CSV, "stdout": "1 file pulled.\n"},
    ])
    result = run_on_device(export, runner=runner, warmup=2, runs=5)
    (row,) = result["rows"]
    assert row["status"] == "ok", row["error"]
    assert row["target"] == "android:R58M40ABCDE"
    assert "SM-A525F" in row["measured_on"] and "cpu7 pinned" in row["measured_on"]
    lat = row["latency_ms"]
    assert lat["runs"] == 5 and lat["p50"] == pytest.approx(1.10) and lat["mean"] == pytest.approx(1.13)
    assert row["memory_peak_working_set_bytes"] == 18432000
    assert row["instructions_per_inference"] is None and row["parity_max_abs_err"] is None
    cmds = [" ".join(e["args"]) for e in read_log()]
    assert all(e["serial"] == "R58M40ABCDE" for e in read_log() if e["args"][:1] != ["devices"])
    pushed = [c.split()[-1] for c in cmds if c.startswith("push ")]
    assert any(p.endswith("/bin/onnxruntime_perf_test") for p in pushed)
    assert any(p.endswith("/c0/scn_window_L10.onnx") for p in pushed)
    assert any(p.endswith("/c0/test_data_set_0/input_0.pb") for p in pushed)
    assert any(p.endswith("/c0/test_data_set_0/input_1.pb") for p in pushed)  # the state input
    assert any(c.startswith("shell rm -rf /data/local/tmp/toolkit/run-") for c in cmds)  # cleaned up


def test_executor_runner_uses_the_flags_its_help_lists(tmp_path, fake_adb):
    set_rules, read_log = fake_adb
    export = make_export(tmp_path / "exp", (10,))
    (export / "scn.pte").write_bytes(b"PTE-bytes")
    rewrite_manifest(export, lambda man: man["artifacts"].append(
        {**man["artifacts"][0], "file": "scn.pte", "runtime": "executorch", "states": [],
         "sha256": sha256_path(export / "scn.pte")}))
    runner = fake_elf(tmp_path / "executor_runner")
    set_rules(base_rules() + [
        {"match": r"--help", "stdout": ET_HELP},
        {"match": r"^shell cd .* taskset 80 .*executor_runner --model_path=c0/scn\.pte --num_executions=7 "
                  r"--inputs=c0/input_0\.bin --cpu_threads=1", "stdout": ET_LOG + "__toolkit_rc=0\n"},
    ])
    (row,) = run_on_device(export, runner=runner, warmup=2, runs=5)["rows"]
    assert row["status"] == "ok", row["error"]
    assert row["runtime"] == "executorch"
    assert row["latency_ms"]["p50"] == pytest.approx(1.20) and row["latency_ms"]["runs"] == 5
    assert any(" ".join(e["args"]).startswith("push") and e["args"][-1].endswith("c0/input_0.bin") for e in read_log())


def test_runner_crash_on_device_is_a_failed_row(tmp_path, fake_adb):
    set_rules, _ = fake_adb
    export = make_export(tmp_path / "exp", (10,))
    set_rules(base_rules() + [
        {"match": r"^shell cd .*onnxruntime_perf_test", "stdout": "CANNOT LINK EXECUTABLE: library "
                                                                   "\"libonnxruntime.so\" not found\n__toolkit_rc=1\n"},
        {"match": r"^pull ", "stderr": "adb: error: remote object does not exist\n", "rc": 1},
    ])
    (row,) = run_on_device(export, runner=fake_elf(tmp_path / "onnxruntime_perf_test"), warmup=0, runs=3)["rows"]
    assert row["status"] == "failed" and "libonnxruntime.so" in row["error"]


@pytest.mark.parametrize(
    "rules, runner_machine, expect",
    [
        (base_rules(devices="List of devices attached\n\n"), 183, "no Android device connected"),
        (base_rules(), 40, r"built for armeabi-v7a \(32-bit ARM\) but device R58M40ABCDE .* is arm64-v8a"),
        (base_rules(abi="x86_64"), 183, "built for arm64-v8a .* is x86_64"),
        (base_rules(taskset=""), 183, "has no taskset.*--no-pin"),
        (base_rules(devices="List of devices attached\nR58M40ABCDE\tunauthorized usb:1-1 transport_id:4\n\n"), 183,
         "unauthorized: unlock it and accept"),
        (base_rules(devices="List of devices attached\nA\tdevice model:X\nB\tdevice model:Y\n\n"), 183,
         r"several devices connected \(A \(device\), B \(device\)\): pass --serial"),
    ],
    ids=["no-device", "wrong-abi-arm32", "x86-device", "no-taskset", "unauthorized", "two-devices"],
)
def test_preflight_errors_name_problem_and_fix(tmp_path, fake_adb, rules, runner_machine, expect):
    set_rules, read_log = fake_adb
    export = make_export(tmp_path / "exp", (10,))
    set_rules(rules)
    runner = fake_elf(tmp_path / "onnxruntime_perf_test", machine=runner_machine,
                      elf_class=1 if runner_machine == 40 else 2)
    with pytest.raises(ToolkitError, match=expect):
        run_on_device(export, runner=runner)
    assert not any(e["args"][:1] == ["push"] for e in read_log())  # nothing pushed before the checks pass


def test_unknown_serial_and_missing_adb(tmp_path, fake_adb, monkeypatch):
    set_rules, _ = fake_adb
    export = make_export(tmp_path / "exp", (10,))
    set_rules(base_rules())
    with pytest.raises(ToolkitError, match=r"device ZZZ is not connected \(adb devices lists: R58M40ABCDE \(device\)\)"):
        run_on_device(export, runner=fake_elf(tmp_path / "onnxruntime_perf_test"), serial="ZZZ")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setitem(sys.modules, "adbutils", None)  # not installed either
    with pytest.raises(ToolkitError, match=r"adb not found: install it \(`apt-get install adb`"):
        run_on_device(export, runner=fake_elf(tmp_path / "onnxruntime_perf_test"))


def test_runner_file_checks(tmp_path, fake_adb):
    set_rules, _ = fake_adb
    export = make_export(tmp_path / "exp", (10,))
    set_rules(base_rules())
    script = tmp_path / "onnxruntime_perf_test"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(ToolkitError, match="not an ELF executable"):
        run_on_device(export, runner=script)
    with pytest.raises(ToolkitError, match="runner binary not found"):
        run_on_device(export, runner=tmp_path / "nope")
    with pytest.raises(ToolkitError, match="--runner-kind"):
        run_on_device(export, runner=fake_elf(tmp_path / "my_runner"))
    with pytest.raises(ToolkitError, match="scn_window_L10.onnx: missing"):
        (export / "scn_window_L10.onnx").unlink()
        run_on_device(export, runner=fake_elf(tmp_path / "onnxruntime_perf_test"))


def test_device_list_shows_adb_devices(fake_adb):
    set_rules, _ = fake_adb
    set_rules(base_rules(devices="List of devices attached\nR58M40ABCDE device usb:1-1 product:a52q model:SM_A525F "
                                 "device:a52q transport_id:3\nemulator-5554\toffline\n\n"))
    rows = {r["name"]: r for r in list_targets(cache="/nonexistent-cache")}
    assert rows["android:R58M40ABCDE"]["status"] == "ready" and "SM A525F" in rows["android:R58M40ABCDE"]["detail"]
    assert rows["android:emulator-5554"]["status"] == "offline"
    assert rows["arm64-a76"]["status"] == "not ready" and "toolkit device setup arm64" in rows["arm64-a76"]["detail"]
    assert [d.serial for d in list_devices()] == ["R58M40ABCDE", "emulator-5554"]


def test_cli_run_on_fake_device_writes_bench_json(tmp_path, fake_adb, capsys, monkeypatch):
    set_rules, _ = fake_adb
    export = make_export(tmp_path / "exp", (10,))
    set_rules(base_rules() + [
        {"match": r"^shell cd .*onnxruntime_perf_test", "stdout": PERF_OUT + "__toolkit_rc=0\n"},
        {"match": r"^pull .*/c0/result\.csv ", "write": PERF_CSV},
    ])
    out = tmp_path / "phone.json"
    code, stdout, err = run_cli(["run", str(export), "--serial", "R58M40ABCDE", "--runner",
                                 str(fake_elf(tmp_path / "onnxruntime_perf_test")), "--warmup", "2", "--runs", "5",
                                 "--out", str(out)], capsys, monkeypatch)
    assert code == 0, err
    assert "wrote" in stdout
    doc = json.loads(out.read_text())
    assert doc["target"] == "android:R58M40ABCDE" and doc["rows"][0]["latency_ms"]["runs"] == 5
    assert "versions" in doc and doc["device"]["abi"] == "arm64-v8a"


@pytest.mark.parametrize("args, needle", [
    (["run", "{tmp}", "--serial", "X"], "an Android run needs --runner PATH"),
    (["run", "{tmp}", "--target", "arm64-a76", "--serial", "X"], "pass either --target"),
    (["run", "{tmp}/nope"], "artifact dir not found"),
    (["run", "{tmp}", "--repeat", "0"], "--repeat must be >= 1"),
    (["setup", "ios"], "unknown setup target 'ios'"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch, args, needle):
    code, _, err = run_cli([a.format(tmp=tmp_path) for a in args], capsys, monkeypatch)
    assert code == 2 and needle in err
    assert len(err.strip().splitlines()) <= 2  # one message (rich may wrap a long line once)


def test_small_parsers():
    assert choose_cpu(FREQS) == 7
    assert choose_cpu("0 1800000\n1 1800000\n") == 1 and choose_cpu("garbage") is None
    assert {"model_path", "num_executions", "inputs", "cpu_threads"} <= parse_gflags_help(ET_HELP)


def test_elf_abi_reads_machine(tmp_path):
    assert elf_abi(fake_elf(tmp_path / "a", 183, 2)) == ("arm64-v8a", "AArch64")
    assert elf_abi(fake_elf(tmp_path / "b", 40, 1))[0] == "armeabi-v7a"
    assert elf_abi(sys.executable if Path(sys.executable).resolve().read_bytes()[:4] == b"\x7fELF"
                   else fake_elf(tmp_path / "c", 62, 2))[0] in ("x86_64", "arm64-v8a")


def test_cli_emulated_run_without_setup_says_how_to_fix(tmp_path, capsys, monkeypatch):
    export = make_export(tmp_path / "exp", (10,))
    code, _, err = run_cli(["run", str(export), "--cache", str(tmp_path / "no-cache")], capsys, monkeypatch)
    assert code == 2 and "emulated ARM64 target is not set up" in err and "toolkit device setup arm64" in err


# ------------------------------------------------------------------ bundled program, ETDump, phone state

from toolkit.device.phone_state import (  # noqa: E402
    parse_battery,
    parse_governors,
    parse_thermal_zones,
    parse_thermalservice,
)

ET_HELP_DEVTOOLS = ET_HELP + (
    "    -print_output (Output printing mode) type: string default: \"summary\"\n"
    "    -etdump_path (Write ETDump data to this path.) type: string default: \"model.etdump\"\n"
    "    -bundleio_rtol (Relative tolerance for bundled IO.) type: double default: 0.01\n"
    "    -bundleio_atol (Absolute tolerance for bundled IO.) type: double default: 0.01\n")
_I = "I 00:00:00.001000 executorch:executor_runner.cpp:{}] "
ET_CHECK_PASS = "".join(_I.format(n) + x + "\n" for n, x in [
    (781, "Iteration 1 of 1: 1.310000 ms"), (789, "Model executed successfully 1 time(s) in 1.310000 ms."),
    (882, "=== Error stats for testset 0 ==="), (883, " mean_absolute_error: 0.000001"),
    (884, " max_absolute_error:  0.000004"), (885, " mean_relative_error: 0.000002"),
    (886, " max_relative_error:  0.000031"), (899, "Model output match expected BundleIO bpte ref data."),
    (900, "TEST: BundleIO index[0] Test_result: PASS")])
ET_CHECK_FAIL = ET_CHECK_PASS.split("Model output match")[0].replace("max_absolute_error:  0.000004",
                                                                       "max_absolute_error:  0.012300")
ET_CHECK_FAIL = ET_CHECK_FAIL[: ET_CHECK_FAIL.rindex("\n", 0, -1) + 1] + "".join(
    "E 00:00:00.001000 executorch:executor_runner.cpp:905] " + x + "\n" for x in [
        "Model output don't match expected BundleIO bpte ref data. rtol=0.000000 atol=0.000100",
        "TEST: BundleIO index[0] Test_result: FAIL", "Bundle verification failed with status 0x12"])
THERMALSERVICE = """IsStatusOverride: false
ThermalEventListeners:
\tcallbacks: 1
\tkilled: false
\tbroadcasts count: -1
Thermal Status: 2
Cached temperatures:
\tTemperature{mValue=36.5, mType=0, mName=CPU0, mStatus=0}
HAL Ready: true
HAL connection:
\tThermalHAL 2.0 connected: yes
Current temperatures from HAL:
\tTemperature{mValue=41.2, mType=0, mName=cpu-1-2-usr, mStatus=0}
\tTemperature{mValue=39.8, mType=0, mName=cpu-0-0-usr, mStatus=0}
\tTemperature{mValue=30.1, mType=2, mName=battery, mStatus=0}
\tTemperature{mValue=33.4, mType=3, mName=skin-therm, mStatus=2}
Current cooling devices from HAL:
\tCoolingDevice{mValue=0, mType=2, mName=cpu-cluster0}
"""
BATTERY = """Current Battery Service state:
  AC powered: false
  USB powered: true
  Wireless powered: false
  Dock powered: false
  Max charging current: 500000
  Charge counter: 3652000
  status: 2
  health: 2
  present: true
  level: 87
  scale: 100
  voltage: 4253
  temperature: 301
  technology: Li-ion
"""
GOVERNORS = "".join(f"{c} {'schedutil' if c < 6 else 'performance'} {1804800 if c < 6 else 2304000}\n" for c in range(8))
ZONES = "soc_thermal 38000\ncpu-1-2-usr 42100\nbattery 30\nbogus \n"


def state_rules() -> list[dict]:
    """Recorded answers of a phone that reports all three (placed before base_rules: first match wins)."""
    return [{"match": r"^shell dumpsys thermalservice", "stdout": THERMALSERVICE},
            {"match": r"^shell dumpsys battery", "stdout": BATTERY},
            {"match": r"^shell for c in /sys/devices/system/cpu/cpu\[0-9\]\*; do echo \"\$\{c##\*/cpu\} \$\(cat "
                      r"\$c/cpufreq/scaling_governor", "stdout": GOVERNORS}]


@pytest.fixture(scope="module")
def real_etdump(tmp_path_factory) -> Path:
    """An ETDump as executor_runner's ETDumpGen writes it: a load_method block, then one `Execute` block per call
    (7 calls: Method::execute, the XNNPACK delegate call and one portable operator), serialised by ExecuTorch's own
    ETDump serializer and size-prefixed like the runtime's file."""
    import struct

    from executorch.devtools.etdump.schema_flatcc import ETDumpFlatCC, Event, ProfileEvent, RunData
    from executorch.devtools.etdump.serialize import serialize_to_etdump_flatcc

    def ev(name, start, end, did=-1, chain=-1, instr=-1):
        return Event(profile_event=ProfileEvent(name=name, chain_index=chain, instruction_id=instr,
                                                delegate_debug_id_int=did, delegate_debug_id_str="",
                                                delegate_debug_metadata=b"", start_time=start, end_time=end),
                     allocation_event=None, debug_event=None)

    runs = [RunData(name="Default", bundled_input_index=-1, allocators=[],
                    events=[ev("Program::load_method", 0, 2_500_000)])]
    t = 10_000_000
    for k in range(7):
        runs.append(RunData(name="Execute", bundled_input_index=-1, allocators=[], events=[
            ev("Method::execute", t, t + 1_100_000 + 10_000 * k),
            ev("DELEGATE_CALL", t + 1_000, t + 900_000, chain=0, instr=0),
            ev("native_call_index_put.out", t + 901_000, t + 1_000_000, chain=0, instr=1)]))
        t += 2_000_000
    data = serialize_to_etdump_flatcc(ETDumpFlatCC(version=0, run_data=runs))
    path = tmp_path_factory.mktemp("etdump") / "recorded.etdump"
    path.write_bytes(struct.pack("<I", len(data)) + data)
    return path


def et_export(tmp_path: Path, bundled: bool = True) -> Path:
    """make_export's dir plus an ExecuTorch record: scn.pte and (bundled) its scn.bpte listed with sha256."""
    export = make_export(tmp_path / "exp", (10,))
    (export / "scn.pte").write_bytes(b"PTE-bytes")
    (export / "scn.bpte").write_bytes(b"BPTE-bytes")

    def edit(man):
        rec = {**man["artifacts"][0], "file": "scn.pte", "runtime": "executorch", "states": [],
               "sha256": sha256_path(export / "scn.pte")}
        if bundled:
            rec["extra_files"] = rec["extra_files"] + [{"role": "bundled_program", "file": "scn.bpte",
                                                        "sha256": sha256_path(export / "scn.bpte")}]
            rec["bundled_program"] = {"file": "scn.bpte", "cases": 3, "atol": 1e-4, "rtol": 0.0}
        man["artifacts"].append(rec)

    rewrite_manifest(export, edit)
    if not bundled:
        (export / "scn.bpte").unlink()
    return export


CHECK_CMD = (r"^shell cd .* taskset 80 .*executor_runner --model_path=c0/scn\.bpte --num_executions=1 "
             r"--bundleio_atol=0\.0001 --bundleio_rtol=0 --cpu_threads=1 --print_output=none "
             r"--etdump_path=c0/check\.etdump")
TIMING_CMD = (r"^shell cd .* taskset 80 .*executor_runner --model_path=c0/scn\.pte --num_executions=7 "
              r"--inputs=c0/input_0\.bin --cpu_threads=1 --print_output=none --etdump_path=c0/run\.etdump")


def test_bpte_checked_on_phone_etdump_pulled_and_state_recorded(tmp_path, fake_adb, real_etdump):
    set_rules, read_log = fake_adb
    export = et_export(tmp_path)
    set_rules(state_rules() + base_rules() + [
        {"match": r"--help", "stdout": ET_HELP_DEVTOOLS},
        {"match": CHECK_CMD, "stdout": ET_CHECK_PASS + "__toolkit_rc=0\n"},
        {"match": TIMING_CMD, "stdout": ET_LOG + "__toolkit_rc=0\n"},
        {"match": r"^pull .*/c0/run\.etdump ", "copy": str(real_etdump)},
    ])
    result = run_on_device(export, runner=fake_elf(tmp_path / "executor_runner"), warmup=2, runs=5,
                           etdump_dir=tmp_path / "dumps")
    (row,) = result["rows"]
    assert row["status"] == "ok", row["error"]
    # the .bpte went to the phone and the runner checked it there, under the export's tolerance
    cmds = [" ".join(e["args"]) for e in read_log()]
    assert any(c.startswith("push ") and c.endswith("/c0/scn.bpte") for c in cmds)
    assert row["bundled_check"]["pass"] is True and row["bundled_check"]["atol"] == 1e-4
    assert row["bundled_check"]["max_absolute_error"] == pytest.approx(4e-6)
    assert row["parity_max_abs_err"] == pytest.approx(4e-6) and "checked on the device" in row["parity"]["reference"]
    assert row["latency_ms"]["runs"] == 5 and row["latency_ms"]["p50"] == pytest.approx(1.20)  # the timing run
    # the ETDump came back, is kept, and ExecuTorch's Inspector read it offline
    et = row["etdump"]
    kept = Path(et["file"])
    assert et["retrieved"] and kept.parent == (tmp_path / "dumps").resolve()
    assert kept.read_bytes() == real_etdump.read_bytes() and et["bytes"] == real_etdump.stat().st_size
    assert et["sha256"] == sha256_path(real_etdump)
    assert et["parsed"] is True and et["execute_ms"]["n"] == 7 and et["execute_ms"]["p50_ms"] == pytest.approx(1.13)
    assert et["load_method_ms"]["p50_ms"] == pytest.approx(2.5)
    assert [e["name"] for e in et["top_events"]] == ["DELEGATE_CALL", "native_call_index_put.out"]
    # thermal / battery / governor around the timed calls (before and after), and at the start
    for when in ("before", "after"):
        st = row["device_state"][when]
        assert st["missing"] == []
        assert st["thermal"]["status"] == 2 and st["thermal"]["status_name"] == "moderate"
        assert st["thermal"]["hottest_cpu_c"] == 41.2 and st["thermal"]["temperatures_c"]["skin-therm"] == 33.4
        assert "CPU0" not in st["thermal"]["temperatures_c"]  # the HAL's current values, not the cached ones
        assert st["battery"] == {"level_pct": 87.0, "status": "charging", "plugged": "usb", "temperature_c": 30.1}
        assert st["governor"]["pinned_cpu"] == 7 and st["governor"]["pinned_cpu_governor"] == "performance"
        assert st["governor"]["distinct"] == ["performance", "schedutil"]
    assert result["info"]["state_at_start"]["battery"]["level_pct"] == 87.0
    assert result["info"]["runner_build"] == {"bundled_io": True, "event_tracer": True}
    # the check ran before the timed calls, and the state reads bracket the timed calls only
    order = [i for i, c in enumerate(cmds) if re.search(CHECK_CMD, c) or re.search(TIMING_CMD, c)
             or c.startswith("shell dumpsys battery")]
    kinds = ["check" if re.search(CHECK_CMD, cmds[i]) else "timing" if re.search(TIMING_CMD, cmds[i]) else "state"
             for i in order]
    assert kinds == ["state", "check", "state", "timing", "state"]


def test_bundled_check_fails_on_phone_etdump_absent_state_missing(tmp_path, fake_adb):
    set_rules, _ = fake_adb
    export = et_export(tmp_path)
    set_rules(base_rules() + [
        {"match": r"--help", "stdout": ET_HELP_DEVTOOLS},
        {"match": CHECK_CMD, "stdout": ET_CHECK_FAIL + "__toolkit_rc=1\n"},
        {"match": TIMING_CMD, "stdout": ET_LOG + "__toolkit_rc=0\n"},
        {"match": r"^pull ", "stderr": "adb: error: failed to stat remote object: No such file or directory\n",
         "rc": 1},
    ])
    (row,) = run_on_device(export, runner=fake_elf(tmp_path / "executor_runner"), warmup=2, runs=5,
                           etdump_dir=tmp_path / "dumps")["rows"]
    assert row["status"] == "failed"
    assert row["error"] == ("bundled program check failed on the device: max abs error 0.0123 exceeds atol 0.0001 / "
                            "rtol 0 (case 0 of scn.bpte)")
    assert row["bundled_check"]["pass"] is False and row["parity_max_abs_err"] == pytest.approx(0.0123)
    assert row["latency_ms"]["runs"] == 5  # the timed calls still ran and are reported
    assert row["etdump"] == {"retrieved": False, "note": "the runner wrote no ETDump at c0/run.etdump"}
    assert not (tmp_path / "dumps").exists()
    st = row["device_state"]["after"]  # a phone that answers none of the state commands
    assert st["thermal"] is None and st["battery"] is None and st["governor"] is None
    assert [m.split(" ")[0] for m in st["missing"]] == ["thermal", "battery", "governor"]


def test_runner_without_devtools_and_export_without_bpte_say_so(tmp_path, fake_adb):
    set_rules, read_log = fake_adb
    timing = (r"^shell cd .* taskset 80 .*executor_runner --model_path=c0/scn\.pte --num_executions=7 "
              r"--inputs=c0/input_0\.bin --cpu_threads=1$|__toolkit_rc")
    for bundled, help_text, why in ((True, ET_HELP, "runner built without bundled IO"),
                                    (False, ET_HELP_DEVTOOLS, "the export has no .bpte")):
        export = et_export(tmp_path / f"b{bundled}", bundled=bundled)
        set_rules(base_rules() + [
            {"match": r"--help", "stdout": help_text},
            {"match": r"--num_executions=1 ", "stdout": "unexpected bundled check\n__toolkit_rc=1\n"},
            {"match": timing if not bundled or help_text == ET_HELP else TIMING_CMD,
             "stdout": ET_LOG + "__toolkit_rc=0\n"},
            {"match": r"^pull .*run\.etdump ", "write": "not an etdump"},
        ])
        (row,) = run_on_device(export, runner=fake_elf(tmp_path / "executor_runner"), warmup=2, runs=5,
                               etdump_dir=tmp_path / "dumps")["rows"]
        assert row["status"] == "ok", row["error"]
        assert row["bundled_check"]["pass"] is None and row["bundled_check"]["note"].startswith(why)
        assert row["parity_max_abs_err"] is None and "not checked on the device" in row["parity"]["reference"]
        if help_text == ET_HELP:  # no event tracer in this build either
            assert row["etdump"]["retrieved"] is False and "without the event tracer" in row["etdump"]["note"]
            assert "android_harness/scripts/build_runners.sh executorch" in row["etdump"]["note"]
        else:  # the runner sent back something the Inspector cannot read: kept, and the row says why
            assert row["etdump"]["retrieved"] is True and row["etdump"]["parsed"] is False
            assert row["etdump"]["note"].startswith("retrieved, but ExecuTorch's Inspector could not read it offline")
            assert Path(row["etdump"]["file"]).read_text() == "not an etdump"
    assert not any("scn.bpte" in " ".join(e["args"]) for e in read_log())  # nothing to check: not pushed


def test_phone_state_parsers_on_recorded_output():
    th = parse_thermalservice(THERMALSERVICE)
    assert th["status"] == 2 and th["source"] == "dumpsys thermalservice" and len(th["temperatures_c"]) == 4
    assert parse_thermalservice("") is None and parse_thermalservice("Can't find service: thermalservice") is None
    zones = parse_thermal_zones(ZONES)  # the sysfs fallback: millidegrees, some zones in degrees, junk skipped
    assert zones["temperatures_c"] == {"soc_thermal": 38.0, "cpu-1-2-usr": 42.1, "battery": 30.0}
    assert zones["status"] is None and zones["hottest_cpu_c"] == 42.1 and parse_thermal_zones("") is None
    assert parse_battery(BATTERY.replace("USB powered: true", "USB powered: false").replace("status: 2", "status: 3")) \
        == {"level_pct": 87.0, "status": "discharging", "plugged": "unplugged", "temperature_c": 30.1}
    assert parse_battery("Can't find service: battery") is None
    gov = parse_governors(GOVERNORS, cpu=0)
    assert gov["pinned_cpu_governor"] == "schedutil" and gov["cur_khz"]["cpu7"] == 2304000
    assert parse_governors(FREQS) is None  # max-freq lines carry no governor


def test_thermal_falls_back_to_sysfs_zones(tmp_path, fake_adb):
    set_rules, _ = fake_adb
    export = make_export(tmp_path / "exp", (10,))
    set_rules([{"match": r"^shell dumpsys thermalservice", "stdout": "Can't find service: thermalservice\n"},
               {"match": r"^shell for z in /sys/class/thermal", "stdout": ZONES}] + base_rules() + [
        {"match": r"^shell cd .*onnxruntime_perf_test", "stdout": PERF_OUT + "__toolkit_rc=0\n"},
        {"match": r"^pull .*/c0/result\.csv ", "write": PERF_CSV},
    ])
    (row,) = run_on_device(export, runner=fake_elf(tmp_path / "onnxruntime_perf_test"), warmup=2, runs=5)["rows"]
    th = row["device_state"]["before"]["thermal"]
    assert th["source"] == "/sys/class/thermal" and th["hottest_cpu_c"] == 42.1
    assert row["device_state"]["before"]["missing"] == ["battery (dumpsys battery gave no level)",
                                                        "governor (cpufreq/scaling_governor unreadable)"]


def test_cli_phone_run_keeps_etdumps_beside_out(tmp_path, fake_adb, real_etdump, capsys, monkeypatch):
    set_rules, _ = fake_adb
    export = et_export(tmp_path)
    set_rules(state_rules() + base_rules() + [
        {"match": r"--help", "stdout": ET_HELP_DEVTOOLS},
        {"match": CHECK_CMD, "stdout": ET_CHECK_PASS + "__toolkit_rc=0\n"},
        {"match": TIMING_CMD, "stdout": ET_LOG + "__toolkit_rc=0\n"},
        {"match": r"^pull .*/c0/run\.etdump ", "copy": str(real_etdump)},
    ])
    out = tmp_path / "phone.json"
    code, stdout, err = run_cli(["run", str(export), "--serial", "R58M40ABCDE", "--runner",
                                 str(fake_elf(tmp_path / "executor_runner")), "--warmup", "2", "--runs", "5",
                                 "--out", str(out)], capsys, monkeypatch)
    assert code == 0, err
    (row,) = json.loads(out.read_text())["rows"]
    assert Path(row["etdump"]["file"]).parent == (tmp_path / "phone-etdump").resolve()
    assert row["bundled_check"]["pass"] is True and row["device_state"]["after"]["battery"]["level_pct"] == 87.0
    assert "pass" in stdout
    assert "scn/window L10: thermal moderate 41C, battery 87% usb, performance; ETDump " in stdout
    from toolkit.cli.device import _state_cell

    assert _state_cell(row["device_state"]["after"]) == "thermal moderate 41C, battery 87% usb, performance"
    assert _state_cell(None) == "-"
