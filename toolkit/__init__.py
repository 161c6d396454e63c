"""toolkit: train, export and benchmark on-device sequential recommenders."""

import sys as _sys

__version__ = "0.1.0"

REQUIRED_PYTHON = (3, 11)


def python_problem(version=None):
    """One line naming the fix when `version` (default: this interpreter) is not Python 3.11 (torch/executorch/
    coremltools wheels are pinned for 3.11), else None. The `toolkit` command checks it first thing; importing the
    library never exits the process."""
    major, minor = (int(v) for v in (version if version is not None else _sys.version_info)[:2])
    if (major, minor) == REQUIRED_PYTHON:
        return None
    return (f"toolkit needs Python 3.11 (this is {major}.{minor}): create the venv with "
            f"`python3.11 -m venv .venv` (install python3.11 first if it is missing, e.g. `uv python install 3.11`)")
