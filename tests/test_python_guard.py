"""The Python 3.11 guard: one line naming the fix when the `toolkit` command starts, before any heavy import;
`import toolkit` itself never exits the process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import toolkit

ROOT = Path(__file__).resolve().parents[1]


def test_guard_names_the_version_and_the_fix():
    assert toolkit.python_problem((3, 11)) is None
    for version, shown in (((3, 12), "3.12"), ((3, 10), "3.10"), ((3, 13, 1), "3.13"), ((2, 7), "2.7")):
        msg = toolkit.python_problem(version)
        assert msg.startswith(f"toolkit needs Python 3.11 (this is {shown})")
        assert "python3.11 -m venv .venv" in msg and "\n" not in msg


def test_this_interpreter_passes():
    assert sys.version_info[:2] == (3, 11) and toolkit.python_problem() is None


MESSAGE = ("error: toolkit needs Python 3.11 (this is 3.12): create the venv with "
           "`python3.11 -m venv .venv` (install python3.11 first if it is missing, e.g. `uv python install 3.11`)")


def _fake_312(before: str, code: str) -> subprocess.CompletedProcess:
    """`before`, then `code` in the same fresh process with sys.version_info saying 3.12 (set after `before`: the
    real third-party imports, e.g. typing_extensions, branch on it)."""
    code = f"import sys; {before}; sys.version_info = (3, 12, 4, 'final', 0); {code}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_import_under_another_version_does_not_exit():
    """A library import never ends the process: the check belongs to the command."""
    p = _fake_312("pass", "import toolkit; print('imported', toolkit.python_problem() is not None)")
    assert p.returncode == 0 and p.stdout.strip() == "imported True", p.stderr


def test_command_under_another_version_stops_with_one_line():
    """The console script's entry in a process that says 3.12: exit 2, one line, no traceback."""
    p = _fake_312("import toolkit.cli", "sys.argv = ['toolkit', 'data', '--help']; toolkit.cli.entry()")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip() == MESSAGE


def test_main_checks_the_version_first(monkeypatch, capsys):
    """In process: main() stops before parsing anything (a bogus command would otherwise be a usage error)."""
    import pytest

    from toolkit import cli

    monkeypatch.setattr(sys, "version_info", (3, 12, 4, "final", 0))
    monkeypatch.setattr(sys, "argv", ["toolkit", "no-such-command"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == MESSAGE


def test_pyproject_refuses_other_versions_at_install():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11,<3.12"' in text
