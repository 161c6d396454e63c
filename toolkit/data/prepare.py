"""`toolkit data prepare`: a source file (seqfile, interactions) -> a dataset dir, through the in-memory or the
columnar engine; toolkit.data.store writes the dir."""

from __future__ import annotations

from pathlib import Path

from toolkit.data.protocol import track_step
from toolkit.data.store import Dataset, check_output, save_dataset, save_dataset_csr
from toolkit.errors import ToolkitError

ENGINES = ("auto", "memory", "columnar")
COLUMNAR_FROM_BYTES = 32 << 20  # engine auto: sources this large take the columnar path


def prepare(
    source: str | Path,
    out: str | Path,
    format: str | None = None,
    seq_len: int = 10,
    min_user_count: int = 5,
    seed: int = 0,
    force: bool = False,
    progress=None,
    engine: str = "auto",
    workers: int = 1,
) -> Dataset:
    """Source file -> dataset dir: load, drop short users, re-index items to 1..N, run the protocol, write.

    engine "memory" reads the log row by row into per-user arrays; "columnar" parses interactions files with
    pyarrow into a CSR history and writes large datasets chunk by chunk (bounded memory). Both give the same
    arrays (same arrays_sha256) on the same input; "auto" picks columnar for sources of 32 MB and more.
    """
    from toolkit.data.loaders import FORMATS, detect_format, load_source
    from toolkit.data.protocol import clean_histories
    from toolkit.io import sha256_file

    source = Path(source)
    fmt = format or detect_format(source)
    if fmt not in FORMATS:
        raise ToolkitError(f"unknown source format '{fmt}' (expected one of {', '.join(FORMATS)})")
    if engine not in ENGINES:
        raise ToolkitError(f"unknown --engine '{engine}' (expected one of {', '.join(ENGINES)})")
    if seq_len < 1:
        raise ToolkitError(f"--seq-len must be >= 1, got {seq_len}")
    if workers < 1:
        raise ToolkitError(f"--workers must be >= 1, got {workers}")
    if min_user_count < 1:
        raise ToolkitError(f"--min-user-count must be >= 1, got {min_user_count}")
    from toolkit.io import check_apart

    check_apart(out, {"source file": source})
    check_output(out, force)
    if engine == "auto":
        big = source.is_file() and source.stat().st_size >= COLUMNAR_FROM_BYTES
        engine = "columnar" if big else "memory"
    if engine == "columnar":
        from toolkit.data.columnar import clean_csr, from_histories, load_interactions_csr

        if fmt == "interactions":
            raw = load_interactions_csr(source, progress)
        else:
            loaded = load_source(source, fmt, progress)
            raw = from_histories(loaded.histories, loaded.n_rows, loaded.user_ids, loaded.duplicate_rows)
            del loaded
        user_ptr, user_items, n_items, dropped, kept = clean_csr(raw, min_user_count)
        n_rows, n_source_users, duplicates = raw.n_rows, raw.n_users, raw.duplicate_rows
        user_ids = raw.user_ids(kept)
        del raw
    else:
        loaded = load_source(source, fmt, progress)
        histories, n_items, dropped, kept = clean_histories(loaded.histories, min_user_count)
        n_rows, n_source_users, duplicates = loaded.n_rows, len(loaded.histories), loaded.duplicate_rows
        user_ids = [loaded.user_ids[i] for i in kept]
        del loaded
    with track_step(progress, "hashing source", total=1):
        source_sha = sha256_file(source)
    meta_extra = {
        "format": fmt,
        "source": str(source.resolve()),
        "source_sha256": source_sha,
        "source_rows": n_rows,
        "source_users": n_source_users,
        "min_user_count": int(min_user_count),
        "dropped_users": int(sum(dropped.values())),
        "dropped_users_detail": dropped,
        "duplicate_rows_dropped": int(duplicates),
    }
    if engine == "columnar":
        return save_dataset_csr(out, user_ptr, user_items, meta_extra, seq_len, seed, force, n_items=n_items,
                                progress=progress, workers=workers, user_ids=user_ids)
    return save_dataset(out, histories, meta_extra, seq_len, seed, force, n_items=n_items, progress=progress,
                        user_ids=user_ids)
