"""Android orchestrator over a *fake adb* (a transport test: no phone, no runtime is mocked).

The fake is a script put first on PATH. It records every argv it gets and answers from a scenario: regex on the
command -> stdout / exit code / file to write (for `adb pull`). Answers reproduce the formats of the real tools:
`adb devices -l` and adb's error lines (captured from Debian's adb 29), onnxruntime_perf_test's result file
(PerformanceResult::DumpToFile: `model,seconds,peak_ws,cpu,run`) and executor_runner's log lines.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from cli_helpers import run_inprocess
from toolkit.device.adb import choose_cpu, list_devices, run_on_device
from toolkit.device.elf import elf_abi
from toolkit.device.orchestrator import parse_gflags_help
from toolkit.device.targets import list_targets
from toolkit.errors import ToolkitError

from artifact_dirs import rewrite_manifest  # noqa: E402 - same tests folder
from test_device_plan import make_export  # noqa: E402
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
