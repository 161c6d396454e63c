"""`toolkit data prepare` (real logs -> dataset dir) and `toolkit data synth` (the synthetic default)."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from toolkit.cli.common import check_number, check_out, check_seed
from toolkit.cli.quiet import terminal

app = typer.Typer(no_args_is_help=True)
MAX_SEQ_LEN = 4096


@app.callback()
def _group() -> None:
    """Sub-commands of `toolkit data`."""


class SourceFormat(str, Enum):
    seqfile = "seqfile"
    interactions = "interactions"


class Engine(str, Enum):
    auto = "auto"
    memory = "memory"
    columnar = "columnar"


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=Console(file=terminal()),
        transient=False,
    )


def _dropped(meta: dict) -> str:
    detail = meta.get("dropped_users_detail", {})
    short, below = detail.get("fewer_than_3_items", 0), detail.get("below_min_user_count", 0)
    return f"{meta.get('dropped_users', 0):,} ({short:,} / {below:,})"


def _report(ds, seconds: float) -> None:
    """Stats table, then where the descriptor is (stdout)."""
    m = ds.meta
    table = Table(title=f"dataset {ds.path}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", justify="right")
    hl = m["history_length"]
    rows = [
        ("format", str(m.get("format", "-"))),
        ("users", f"{m['n_users']:,}"),
        ("items", f"{m['n_items']:,}"),
        ("interactions", f"{m['n_interactions']:,}"),
        ("history length min/median/mean/max", f"{hl['min']} / {hl['median']:g} / {hl['mean']:.2f} / {hl['max']}"),
        ("training rows (1 + 4 negatives)", f"{m['n_train_rows']:,}"),
        ("validation users (100 candidates)", f"{m['n_valid_users']:,}"),
        ("test users (100 candidates)", f"{m['n_test_users']:,}"),
        ("seq len", str(m["seq_len"])),
        ("seed", str(m["seed"])),
        ("min user count", str(m.get("min_user_count", "-"))),
        ("dropped users (< 3 items / < min count)", _dropped(m)),
        ("duplicate rows dropped (same user, item, time)", f"{m.get('duplicate_rows_dropped', 0):,}"),
        ("source sha256", str(m.get("source_sha256", "-"))[:16] + "…"),
        ("arrays sha256", m["arrays_sha256"][:16] + "…"),
        ("status", "unchanged (identical dataset already there)" if ds.unchanged else f"written in {seconds:.2f} s"),
    ]
    if "synthetic_stats" in m:
        s = m["synthetic_stats"]
        rows.insert(5, ("domain shift / noise rate", f"{s['shift_rate']:.3f} / {s['noise_rate']:.3f}"))
    for k, v in rows:
        table.add_row(k, v)
    out = Console()
    out.print(table)
    out.print(f"dataset.json: {ds.descriptor_path}", highlight=False, soft_wrap=True)


@app.command("prepare")
def prepare(
    source: Path = typer.Argument(..., help="Interaction log: a seqfile (`user item item ...`) or a CSV/TSV/.inter."),
    format: SourceFormat = typer.Option(
        None, "--format", help="seqfile | interactions (default: from the extension; .csv/.tsv/.inter = interactions)."
    ),
    out: Path = typer.Option(..., "--out", help="Dataset dir to write (dataset.json + arrays.npz)."),
    seq_len: int = typer.Option(10, "--seq-len", help="Window length L of the stored sequences."),
    min_user_count: int = typer.Option(5, "--min-user-count", help="Drop users with fewer interactions."),
    seed: int = typer.Option(0, "--seed", help="Seed of the negative sampling."),
    force: bool = typer.Option(False, "--force", help="Replace a different dataset already at --out."),
    engine: Engine = typer.Option(
        Engine.auto, "--engine",
        help="memory (row by row) | columnar (pyarrow, chunked, bounded memory) | auto (columnar from 32 MB); "
        "both give the same arrays.",
    ),
    workers: int = typer.Option(1, "--workers", help="Processes for the protocol chunks of a large dataset "
                                "(columnar engine; the result does not depend on it)."),
) -> None:
    """Turn a real interaction log into a dataset dir (windows, negatives, valid/test splits)."""
    check_number(seq_len, "--seq-len", lo=1, hi=MAX_SEQ_LEN)
    check_number(min_user_count, "--min-user-count", lo=1, hi=2**31 - 1)
    check_seed(seed)
    check_out(out)
    from toolkit.io import check_apart

    check_apart(out, {"source file": source})  # --force must never replace the log it reads
    if not source.exists():
        from toolkit.errors import ToolkitError

        raise ToolkitError(f"source file not found: {source}")
    from toolkit.data import prepare as prepare_dataset

    start = time.perf_counter()
    with _progress() as progress:
        ds = prepare_dataset(
            source, out, format=format.value if format else None, seq_len=seq_len,
            min_user_count=min_user_count, seed=seed, force=force, progress=progress, engine=engine.value,
            workers=workers,
        )  # fmt: skip
    _report(ds, time.perf_counter() - start)


@app.command("synth")
def synth(
    out: Optional[Path] = typer.Option(None, "--out", help="Dataset dir to write (dataset.json + arrays.npz + extras.npz)."),
    log: Optional[Path] = typer.Option(
        None, "--log", help="Instead of a dataset dir, write a raw interaction log (user_id,item_id,timestamp CSV, "
        "~10.5 interactions per user) to feed `toolkit data prepare` at scale, e.g. --users 1000000 for ~10M rows."
    ),
    users: int = typer.Option(2000, "--users", help="Number of users."),
    items: Optional[int] = typer.Option(None, "--items", help="Number of items (default 1000; with --log users/10)."),
    domains: Optional[int] = typer.Option(None, "--domains", help="Number of item domains (default 50; with --log "
                                          "items/200)."),
    seq_len: int = typer.Option(10, "--seq-len", help="Window length L of the stored sequences."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generator and the negative sampling."),
    force: bool = typer.Option(False, "--force", help="Replace a different dataset already at --out."),
) -> None:
    """Generate the deterministic synthetic dataset (domain drift), in the same on-disk form."""
    from toolkit.errors import ToolkitError

    if (out is None) == (log is None):
        raise ToolkitError("`toolkit data synth` needs exactly one of --out DIR (a dataset) or --log FILE (a raw log)")
    check_number(users, "--users", lo=1, hi=10_000_000)
    if items is not None:
        check_number(items, "--items", lo=1, hi=2**31 - 1)
    if domains is not None:
        check_number(domains, "--domains", lo=1, hi=2**31 - 1)
    check_number(seq_len, "--seq-len", lo=1, hi=MAX_SEQ_LEN)
    check_seed(seed)
    if out is not None:
        check_out(out)
    else:
        check_out(log, "--log", folder=False)
    start = time.perf_counter()
    if log is not None:
        from toolkit.data.synth import synth_log

        if log.exists() and not force:
            raise ToolkitError(f"log file {log} exists (use --force to replace it)")
        with _progress() as progress:
            stats = synth_log(log, users=users, items=items, domains=domains, seed=seed, progress=progress)
        Console().print(f"wrote {stats['interactions']:,} interactions of {users:,} users over {stats['items']:,} "
                        f"items to {log} in {time.perf_counter() - start:.1f} s", highlight=False, soft_wrap=True)
        return
    from toolkit.data import synthesize

    with _progress() as progress:
        ds = synthesize(
            out, users=users, items=1000 if items is None else items, domains=50 if domains is None else domains,
            seq_len=seq_len, seed=seed, force=force, progress=progress,
        )  # fmt: skip
    _report(ds, time.perf_counter() - start)
