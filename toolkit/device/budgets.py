"""Budgets for device rows: the same rules and the same TOML file as `toolkit bench` (toolkit.bench.budgets).

Row fields a budget reads (agreed with the bench): `instructions_per_inference` (emulated ARM64),
`latency_ms.<stat>` (Android devices; stat p50 unless the budget says `latency_stat`), `memory` (see
toolkit.bench.budgets.memory_value), `status` (a failed row fails its budget).
"""

from __future__ import annotations

from pathlib import Path


def apply_budgets(rows: list[dict], path: str | Path | None) -> str | None:
    """Check every row against a budgets TOML (default benches/budgets.toml when it exists); returns its source."""
    from toolkit.bench import budgets as bench_budgets

    if path is None:
        default = bench_budgets.default_budget_file()
        if not default.is_file():
            return None
        path = default
    budgets = bench_budgets.load(path)
    for row in rows:
        out = bench_budgets.check(row, budgets)
        if out.get("pass") is not None:
            row["budget"] = out
    return budgets.source


def failed_budgets(rows: list[dict]) -> list[str]:
    return [f"{r['model']}/{r['entry']} L={r['seq_len']} on {r['target']}: {'; '.join(r['budget']['broken'])}"
            for r in rows if (r.get("budget") or {}).get("pass") is False]

