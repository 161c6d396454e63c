"""The Python 3.11 guard: one line naming the fix, at `import toolkit`, before any heavy import."""

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


def test_import_under_another_version_stops_with_one_line():
    """A real `import toolkit` in a fresh process whose sys.version_info says 3.12: exit 1, one line, no traceback."""
    code = "import sys; sys.version_info = (3, 12, 4, 'final', 0); import toolkit; print('imported')"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 1 and "imported" not in p.stdout
    assert p.stderr.strip() == ("error: toolkit needs Python 3.11 (this is 3.12): create the venv with "
                                "`python3.11 -m venv .venv` (install python3.11 first if it is missing, e.g. "
                                "`uv python install 3.11`)")


def test_pyproject_refuses_other_versions_at_install():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11,<3.12"' in text
