"""How a long library call tells its user what it is doing without printing: it reports to the `Reporter` it is
handed, and only toolkit/cli/ turns the reports into terminal output (lines, warnings, progress bars).

The base class is silent: a library call nobody watches, or a data-parallel worker other than rank 0, reports to it.
Progress comes in three shapes: `bars` (several tasks, rich's task interface `Bars`, which the data and gate steps
that track their own tasks already use), `step` (one bar fed `(what, done, total)`, the callback the exporters and
the bench take) and `status` (a line saying what happens now)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Protocol

Progress = Callable[[str, int, int], None]  # (what, done, total)


class Bars(Protocol):
    """Progress tasks shown together while one step runs (rich.progress.Progress is one)."""

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> Any: ...

    def advance(self, task: Any, advance: float = 1) -> None: ...

    def update(self, task: Any, **changes: Any) -> None: ...


class NoBars:
    """Bars nobody sees."""

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        return 0

    def advance(self, task: Any, advance: float = 1) -> None:
        pass

    def update(self, task: Any, **changes: Any) -> None:
        pass


class Reporter:
    """What a long call reports; every report is dropped here, and toolkit/cli/ renders them."""

    def line(self, text: str) -> None:
        """A line for the user: what happened, what comes next."""

    def heading(self, text: str) -> None:
        """A line that opens one part of a longer run (a seed, a sweep point)."""

    def warning(self, text: str) -> None:
        """Something the user must hear although the run goes on."""

    def epoch(self, text: str, best: bool) -> None:
        """An epoch's line; `best`: its validation score is the best so far."""

    @contextlib.contextmanager
    def bars(self, fields: str = "") -> Iterator[Bars]:
        """Progress bars for one step, gone when it ends. `fields`: how a task's numbers read, a str.format over
        the fields its add_task/update name (e.g. 'loss {loss:.4f}'); '' shows none."""
        yield NoBars()

    @contextlib.contextmanager
    def step(self, label: str, first: str = "starting", total: int | None = None) -> Iterator[Progress]:
        """One step's bar, named `label`, while the block runs: yields tell(what, done, total); `first` and
        `total` show until the first tell."""
        yield lambda what, done, total: None

    @contextlib.contextmanager
    def status(self, first: str = "starting") -> Iterator[Callable[[str], None]]:
        """A line saying what happens now, while the block runs: yields say(what)."""
        yield lambda what: None
