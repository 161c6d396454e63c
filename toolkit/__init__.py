"""toolkit: train, export and benchmark on-device sequential recommenders."""

import sys as _sys

__version__ = "0.1.0"

REQUIRED_PYTHON = (3, 11)


def python_problem(version=tuple(_sys.version_info[:2])):
    """One line naming the fix when `version` is not Python 3.11 (torch/executorch/coremltools wheels are pinned for
    3.11), else None."""
    major, minor = int(version[0]), int(version[1])
    if (major, minor) == REQUIRED_PYTHON:
        return None
    return (f"toolkit needs Python 3.11 (this is {major}.{minor}): create the venv with "
            f"`python3.11 -m venv .venv` (install python3.11 first if it is missing, e.g. `uv python install 3.11`)")


# plain syntax above this line (no 3.10+ features), so an older interpreter reaches the message too
_problem = python_problem()
if _problem is not None:  # fail at import, before a late and generic pip/torch error
    raise SystemExit("error: " + _problem)
