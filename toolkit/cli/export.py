"""`toolkit export`."""

from toolkit.errors import ToolkitError


def export() -> None:
    """Not built yet."""
    raise ToolkitError("'toolkit export' is not built yet")
