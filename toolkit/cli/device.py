"""`toolkit device` commands."""

import typer

from toolkit.errors import ToolkitError

app = typer.Typer(no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Sub-commands of `toolkit device`."""


@app.command("todo")
def todo() -> None:
    """Not built yet."""
    raise ToolkitError("'toolkit device' is not built yet")
