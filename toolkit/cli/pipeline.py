"""`toolkit pipeline`."""

from toolkit.errors import ToolkitError


def pipeline() -> None:
    """Not built yet."""
    raise ToolkitError("'toolkit pipeline' is not built yet")
