"""`toolkit verify`."""

from toolkit.errors import ToolkitError


def verify() -> None:
    """Not built yet."""
    raise ToolkitError("'toolkit verify' is not built yet")
