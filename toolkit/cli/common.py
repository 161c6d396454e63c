"""Small helpers shared by the CLI files: the console, metric tables, sizes, options several commands declare alike
(the flag checks live in toolkit.checks)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from toolkit.checks import (  # noqa: F401 - re-exported: the cli files import them from here
    CONFIG_INT_MAX,
    INT64_MAX,
    check_number,
    check_out,
    check_seed,
    check_threads,
    parse_config,
    parse_csv,
)

console = Console()

# The accuracy-budget options `verify` and `bench` share with --data (one wording for both commands).
AccuracyUsers = Annotated[Optional[int], typer.Option("--users", help="With --data: a seeded sample of N test users.")]
MaxNdcgDrop = Annotated[Optional[float], typer.Option(
    "--max-ndcg-drop", help="With --data: largest allowed NDCG@10 drop from eager (absolute), for every artifact.")]


def metrics_table(title: str, rows: dict[str, dict]) -> Table:
    """rows: label -> metrics dict (ranking_metrics keys)."""
    keys = ["uauc", "ndcg@5", "ndcg@10", "ndcg@20", "hr@5", "hr@10", "hr@20"]
    t = Table(title=title)
    t.add_column("")
    for k in keys:
        t.add_column(k, justify="right")
    for label, m in rows.items():
        t.add_row(label, *(f"{m[k]:.4f}" for k in keys))
    return t


def human_bytes(n: float | None) -> str:
    """File and disk sizes on the terminal, decimal units (1 KB = 1000 B); the bench's memory columns use binary
    units (KiB, MiB) on purpose, as RSS is counted in pages."""
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
