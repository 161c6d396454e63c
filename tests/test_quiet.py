"""Quiet by default: library warnings and native log lines go to the run's log file; --verbose shows them.

The end-to-end case is a real `toolkit verify` of a real ExecuTorch export in a subprocess: loading the program makes
ExecuTorch's cpuinfo write `midr` lines straight to fd 2 (C++), and importing its quantizer makes torchao log
`Failed to load ..._C_mxfp8...` and torch log a `W... _pytree.py` line (Python logging)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from toolkit.cli.quiet import log_path, pop_global_options

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("midr", "cpuinfo_utils", "Failed to load", "_C_mxfp8", "_pytree.py", "FutureWarning",
         "torchvision is not installed")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLKIT_")}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def toolkit(cwd: Path, *args, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolkit", *map(str, args)], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def et_dir(tmp_path_factory) -> Path:
    from test_export_toy import toy_entry

    from toolkit.exporters import export_artifacts

    out = tmp_path_factory.mktemp("quiet") / "artifacts"
    export_artifacts([toy_entry()], "toy", ["executorch"], out, parity_steps=3)
    return out


@pytest.mark.slow
def test_verify_is_quiet_and_the_log_has_the_lines_verbose_shows_them(et_dir, tmp_path):
    quiet_cwd, loud_cwd = tmp_path / "quiet", tmp_path / "loud"
    quiet_cwd.mkdir(), loud_cwd.mkdir()
    p = toolkit(quiet_cwd, "verify", et_dir)
    assert p.returncode == 0, p.stderr
    assert not any(n in p.stderr for n in NOISE), p.stderr
    assert "pass" in p.stdout  # our own output is untouched
    log = (quiet_cwd / "toolkit.log").read_text()
    assert log.startswith("==== ") and f"toolkit verify {et_dir}\n" in log.splitlines(keepends=True)[0]
    assert "Failed to open midr file" in log  # C++ (cpuinfo, fd 2)
    # verify loads ExecuTorch's runtime bindings only, not the exporter (executorch.exir -> torchao), so
    # torchao's Python-logging lines no longer happen here (their routing: test_capture_routes_python_and_native_...)
    assert "_C_mxfp8" not in log

    v = toolkit(loud_cwd, "verify", et_dir, "--verbose")
    assert v.returncode == 0, v.stderr
    assert "Failed to open midr file" in v.stderr
    assert not (loud_cwd / "toolkit.log").exists()

    elsewhere = tmp_path / "logs" / "run.log"  # --log-file (anywhere on the line) and $TOOLKIT_LOG move it
    f = toolkit(quiet_cwd, "--log-file", elsewhere, "verify", et_dir)
    assert f.returncode == 0 and "midr" in elsewhere.read_text() and "midr" not in f.stderr
    e = toolkit(loud_cwd, "verify", et_dir, TOOLKIT_LOG=str(tmp_path / "env.log"))
    assert e.returncode == 0 and "midr" in (tmp_path / "env.log").read_text()
    assert (quiet_cwd / "toolkit.log").read_text() == log  # those runs did not touch the default log


def test_errors_stay_one_line_on_the_terminal_and_nothing_is_logged(tmp_path):
    p = toolkit(tmp_path, "verify", tmp_path / "nope")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [f"error: artifact dir not found: {tmp_path / 'nope'} (make one with "
                                             f"`toolkit export ... --out {tmp_path / 'nope'}`)"]
    assert not (tmp_path / "toolkit.log").exists()  # nothing captured: no file


def test_capture_routes_python_and_native_writes_but_not_ours(tmp_path):
    """Every kind of write at once, in a fresh process: a FutureWarning, a library logging record, a C-level write
    to fd 2, a print to sys.stderr — all to the log; terminal() (our one-line errors, stderr progress) stays."""
    code = textwrap.dedent("""
        import logging, os, sys, warnings
        from pathlib import Path
        from toolkit.cli import quiet
        with quiet.captured(["demo"], Path("demo.log")):
            warnings.warn("old api", FutureWarning)
            logging.getLogger("torchao").warning("Failed to load _C_mxfp8.so")
            os.write(2, b"[cpuinfo_utils.cpp:87] Failed to open midr file\\n")
            print("stray print", file=sys.stderr)
            print("error: ours", file=quiet.terminal())
            from toolkit.exporters.common import stderr_captured
            assert stderr_captured()  # fd 2 is the capture file: library code leaves native lines to it
            import subprocess
            child = subprocess.run([sys.executable, "-c", "from toolkit.exporters.common import stderr_captured; "
                                    "print(stderr_captured())"], capture_output=True, text=True)
            assert child.stdout.strip() == "False"  # a worker on a pipe inherits the variable, not the file
        print("after", file=sys.stderr)
        assert "TOOLKIT_STDERR_CAPTURED" not in os.environ and not stderr_captured()
    """)
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines() == ["error: ours", "after"]
    log = (tmp_path / "demo.log").read_text()
    for line in ("FutureWarning: old api", "Failed to load _C_mxfp8.so", "Failed to open midr file", "stray print"):
        assert line in log
    assert "error: ours" not in log and log.startswith("==== ") and "toolkit demo" in log.splitlines()[0]


def test_global_options_anywhere_and_log_location():
    assert pop_global_options(["bench", "--verbose", "--runs", "3"]) == (["bench", "--runs", "3"], True, None)
    assert pop_global_options(["--log-file", "x.log", "verify", "d"]) == (["verify", "d"], False, "x.log")
    assert pop_global_options(["verify", "d", "--log-file=y.log"]) == (["verify", "d"], False, "y.log")
    assert pop_global_options(["data", "synth", "--log", "raw.csv"])[0] == ["data", "synth", "--log", "raw.csv"]
    os.environ.pop("TOOLKIT_LOG", None)
    assert log_path(["verify", "d"], None) == Path("toolkit.log")
    assert log_path(["pipeline", "--out", "out"], None) == Path("out/toolkit.log")
    assert log_path(["pipeline", "--out=o2"], None) == Path("o2/toolkit.log")
    assert log_path(["pipeline", "--out", "out"], "mine.log") == Path("mine.log")
    assert log_path(["export", "--model", "scn", "--out", "exports/scn_L25"], None) == Path("exports/toolkit.log")
    assert log_path(["device", "run", "d", "--out=res/phone.json"], None) == Path("res/toolkit.log")


def test_a_pipeline_hands_its_log_to_its_stages_and_captures_nothing_itself(tmp_path):
    """The pipeline's stages are child processes inheriting fd 2: the parent leaves fd 2 on the terminal (their
    one-line errors must show) and passes <out>/toolkit.log down through $TOOLKIT_LOG; any other command captures."""
    code = textwrap.dedent("""
        import json, os, sys
        import toolkit.cli as cli
        seen = {}
        def fake_app(standalone_mode=False):
            st = os.fstat(2)
            seen[sys.argv[1]] = {"log": os.environ.get("TOOLKIT_LOG"), "fd2": [st.st_dev, st.st_ino]}
            return 0
        cli.app = fake_app
        before = os.fstat(2)
        for argv in (["toolkit", "pipeline", "--out", "out"], ["toolkit", "export", "--out", "arts/scn"]):
            sys.argv = argv
            try:
                cli.main()
            except SystemExit:
                pass
        seen["before"] = [before.st_dev, before.st_ino]
        seen["env_after"] = os.environ.get("TOOLKIT_LOG")
        print(json.dumps(seen))
    """)
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    seen = __import__("json").loads(p.stdout.strip().splitlines()[-1])
    assert seen["pipeline"] == {"log": str(tmp_path / "out" / "toolkit.log"), "fd2": seen["before"]}
    assert seen["export"]["log"] == str(tmp_path / "arts" / "toolkit.log") and seen["export"]["fd2"] != seen["before"]
    assert seen["env_after"] is None  # restored for whoever called main()
