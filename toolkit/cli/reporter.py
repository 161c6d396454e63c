"""The library's reports (toolkit.reporter) on a rich console: the commands' lines, warnings and progress bars."""

from __future__ import annotations

import contextlib

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from toolkit.reporter import Reporter


class _Fields(TextColumn):
    """A task's numbers through a plain str.format over its fields ('loss {loss:.4f}')."""

    def render(self, task) -> Text:
        return Text.from_markup(self.text_format.format(**task.fields), style=self.style, justify=self.justify)


class ConsoleReporter(Reporter):
    """Reports printed on `console`: bold headings, yellow warnings, the best epoch marked green, transient bars."""

    def __init__(self, console: Console):
        self.console = console

    def line(self, text: str) -> None:
        self.console.print(text)

    def heading(self, text: str) -> None:
        self.console.print(f"[bold]{text}")

    def warning(self, text: str) -> None:
        self.console.print(f"[yellow]warning:[/] {text}")

    def epoch(self, text: str, best: bool) -> None:
        self.console.print(text + ("  [green]best[/]" if best else ""))

    def bars(self, fields: str = "") -> Progress:
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   *([_Fields(fields)] if fields else []), TimeElapsedColumn(), TimeRemainingColumn()]
        return Progress(*columns, console=self.console, transient=True)

    @contextlib.contextmanager
    def step(self, label: str, first: str = "starting", total: int | None = None):
        with Progress(TextColumn(f"[bold]{label}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), console=self.console, transient=True) as bar:
            task = bar.add_task(first, total=total)
            yield lambda what, done, total: bar.update(task, completed=done, total=total, description=what)

    @contextlib.contextmanager
    def status(self, first: str = "starting"):
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=self.console,
                      transient=True) as spinner:
            task = spinner.add_task(first, total=None)
            yield lambda what: spinner.update(task, description=what)
