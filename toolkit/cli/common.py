"""Small helpers shared by the CLI files: parsing lists and key=value options, printing metric tables."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from toolkit.errors import ToolkitError

console = Console()


def parse_csv(value: str, what: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ToolkitError(f"{what} is empty")
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise ToolkitError(f"unknown {what} '{bad[0]}' (valid: {', '.join(allowed)})")
    return items


def parse_config(pairs: list[str] | None) -> dict:
    """`--config dim=32 --config residual=true` -> {"dim": 32, "residual": True} (values parsed as JSON if possible)."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ToolkitError(f"--config expects key=value, got '{pair}'")
        k, v = pair.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


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
