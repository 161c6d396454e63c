"""Read interaction logs into raw per-user chronological histories (no filtering, no re-indexing here).

Two formats:
  seqfile       one user per line, `user item item ...`, integer ids, items already chronological;
  interactions  CSV/TSV rows of (user, item, timestamp): a header names the columns (RecBole `.inter`:
                `user_id:token item_id:token rating:float timestamp:float`), or there is no header and the
                columns are user,item,timestamp or user,item,rating,timestamp (Amazon ratings_*.csv).
                Exact duplicate (user, item, timestamp) rows are dropped (first kept) and counted: dataset.json
                records them as `duplicate_rows_dropped`. A seqfile has no timestamps, so a repeated item there is a
                re-consumption and is kept.
Both return raw item codes ordered by raw id, so the protocol's re-indexing keeps that order.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.data.protocol import track_step
from toolkit.errors import ToolkitError

FORMATS = ("seqfile", "interactions")
INT64_MAX = 2**63 - 1
_PROGRESS_EVERY = 65536  # lines between progress updates (per-line updates would dominate the parse time)

# Column names we recognise, after lower-casing, dropping a RecBole `:type` suffix and non-alphanumerics.
_USER_NAMES = ("user", "userid", "uid", "reviewerid", "customerid", "visitorid", "sessionid")
_ITEM_NAMES = ("item", "itemid", "iid", "asin", "productid", "movieid", "parentasin", "articleid")
_TIME_NAMES = ("timestamp", "time", "ts", "unixreviewtime", "datetime", "date", "eventtime")


@dataclass
class RawHistories:
    """Per-user chronological raw item codes; users in source order (seqfile) or sorted id order."""

    histories: list[np.ndarray]  # each [n_u] int64
    user_ids: list[str]
    n_rows: int  # interactions read (after dropping exact duplicates)
    duplicate_rows: int = 0  # exact duplicate (user, item, timestamp) rows dropped (interactions format only)


def detect_format(path: Path) -> str:
    """Guess the format from the file name: .csv/.tsv/.inter -> interactions, anything else -> seqfile."""
    return "interactions" if path.suffix.lower() in (".csv", ".tsv", ".inter") else "seqfile"


def _open_text(path: Path):
    if not path.exists():
        raise ToolkitError(f"source file not found: {path}")
    if not path.is_file():
        raise ToolkitError(f"source is not a file: {path}")
    if path.stat().st_size == 0:
        raise ToolkitError(f"source file is empty: {path}")
    return open(path, encoding="utf-8-sig", newline="")  # -sig: tolerate a BOM


def _decode_error(path: Path, e: UnicodeDecodeError) -> ToolkitError:
    return ToolkitError(f"{path}: not a UTF-8 text file ({e.reason}: byte {e.object[e.start:e.start + 1]!r})")


def load_seqfile(path: str | Path, progress=None) -> RawHistories:
    """`user item item ...` per line; blank lines skipped; a user may appear on one line only."""
    path = Path(path)
    histories: list[np.ndarray] = []
    user_ids: list[str] = []
    seen: dict[int, int] = {}
    n_rows = 0
    with _open_text(path) as f, track_step(progress, f"reading {path.name}", total=path.stat().st_size) as adv:
        try:
            for lineno, line in enumerate(_counted_lines(f, adv), start=1):
                tokens = line.split()
                if not tokens:
                    continue
                try:
                    ids = [int(t) for t in tokens]
                except ValueError:
                    bad = next(t for t in tokens if not _is_int(t))
                    raise ToolkitError(f"{path}:{lineno}: id '{_short(bad)}' is not an integer") from None
                big = next((t for t, v in zip(tokens, ids) if not -INT64_MAX <= v <= INT64_MAX), None)
                if big is not None:
                    raise ToolkitError(f"{path}:{lineno}: id '{_short(big)}' is out of range (ids must fit in 64 "
                                       "bits)")
                user = ids[0]
                if user in seen:
                    raise ToolkitError(f"{path}:{lineno}: user {user} already appeared on line {seen[user]}")
                seen[user] = lineno
                user_ids.append(str(user))
                histories.append(np.asarray(ids[1:], dtype=np.int64))
                n_rows += len(ids) - 1
        except UnicodeDecodeError as e:
            raise _decode_error(path, e) from None
    if not histories:
        raise ToolkitError(f"source file is empty: {path} (no data lines)")
    return RawHistories(histories, user_ids, n_rows)


def _is_int(token: str) -> bool:
    try:
        int(token)
        return True
    except ValueError:
        return False


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _normalise(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.split(":", 1)[0].strip().lower())


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def _columns(path: Path, first: list[str]) -> tuple[int, int, int, bool]:
    """(user col, item col, time col, has_header) from the first row."""
    names = [_normalise(c) for c in first]
    known = set(_USER_NAMES + _ITEM_NAMES + _TIME_NAMES)
    if any(n in known for n in names):

        def find(options: tuple[str, ...], role: str) -> int:
            for i, n in enumerate(names):
                if n in options:
                    return i
            raise ToolkitError(
                f"{path}: no {role} column in the header ({', '.join(first)}); expected one of {', '.join(options)}"
            )

        return find(_USER_NAMES, "user"), find(_ITEM_NAMES, "item"), find(_TIME_NAMES, "timestamp"), True
    if len(first) in (3, 4) and _is_number(first[-1]):  # user,item,timestamp / Amazon user,item,rating,timestamp
        return 0, 1, len(first) - 1, False
    raise ToolkitError(
        f"{path}: no timestamp column: the first row ({', '.join(_short(c, 20) for c in first)}) is neither a header "
        f"naming user/item/timestamp columns nor user,item[,rating],timestamp data"
    )


def _codes(labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique labels, code of each label); canonical integers sort as numbers, anything else as text.

    "007" and "7" stay two different ids: numeric order is used only when every label is a canonical integer.
    """
    arr = np.asarray(labels)
    try:
        numeric = arr.astype(np.int64)
    except (ValueError, OverflowError):
        numeric = None
    if numeric is not None and (numeric.astype(str) == arr).all():
        uniq, inv = np.unique(numeric, return_inverse=True)
        return uniq.astype(str), inv.reshape(-1)
    uniq, inv = np.unique(arr, return_inverse=True)
    return uniq, inv.reshape(-1)


INTEGER_TIME = r"^-?[0-9]+$"  # timestamps written as integers are ordered as int64, exactly (both engines)


def exact_times(times: np.ndarray, as_float: np.ndarray) -> np.ndarray:
    """The sort key of the timestamps as written: int64 when every one is an integer that fits (nanosecond epochs
    differ in digits float64 cannot hold), else their float64 values."""
    import re

    pattern = re.compile(INTEGER_TIME)
    if not all(pattern.match(t) for t in times.tolist()):
        return as_float
    try:
        return np.array([int(t) for t in times.tolist()], dtype=np.int64)
    except OverflowError:
        return as_float


def _counted_lines(f, advance):
    """Yield the file's lines, advancing the progress bar by characters read every so often."""
    pending = 0
    for n, line in enumerate(f, start=1):
        pending += len(line)
        if n % _PROGRESS_EVERY == 0:
            advance(pending)
            pending = 0
        yield line
    advance(pending)


class _WhitespaceReader:
    """csv.reader look-alike for whitespace-separated files (keeps line_num for error messages)."""

    def __init__(self, lines):
        self._lines = lines
        self.line_num = 0

    def __iter__(self):
        for line in self._lines:
            self.line_num += 1
            yield line.split()


def load_interactions(path: str | Path, progress=None) -> RawHistories:
    """CSV/TSV of (user, item, timestamp) rows, sorted per user by timestamp (stable: file order breaks ties)."""
    path = Path(path)
    users: list[str] = []
    items: list[str] = []
    times: list[str] = []
    lines_of: list[int] = []
    with _open_text(path) as f, track_step(progress, f"reading {path.name}", total=path.stat().st_size) as adv:
        try:
            first_line = f.readline()
            while first_line and not first_line.strip():
                first_line = f.readline()
            if not first_line.strip():
                raise ToolkitError(f"source file is empty: {path} (no data lines)")
            f.seek(0)
            delim = next((d for d in ("\t", ",", ";") if d in first_line), None)
            lines = _counted_lines(f, adv)
            reader = csv.reader(lines, delimiter=delim) if delim else _WhitespaceReader(lines)
            need = 0
            cols: tuple[int, int, int] | None = None
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                if cols is None:
                    ucol, icol, tcol, has_header = _columns(path, row)
                    cols = (ucol, icol, tcol)
                    need = max(cols) + 1
                    if has_header:
                        continue
                if len(row) < need:
                    raise ToolkitError(f"{path}:{reader.line_num}: expected at least {need} fields, got {len(row)}")
                users.append(row[ucol].strip())
                items.append(row[icol].strip())
                times.append(row[tcol].strip())
                lines_of.append(reader.line_num)
        except UnicodeDecodeError as e:
            raise _decode_error(path, e) from None
        except csv.Error as e:
            raise ToolkitError(f"{path}: malformed CSV ({e})") from None
    if not users:
        raise ToolkitError(f"source file has a header but no data rows: {path}")
    try:
        ts = np.asarray(times).astype(np.float64)
    except ValueError:
        bad = next(i for i, t in enumerate(times) if not _is_number(t))
        raise ToolkitError(f"{path}:{lines_of[bad]}: timestamp '{_short(times[bad])}' is not a number") from None
    if not np.isfinite(ts).all():
        bad = int(np.flatnonzero(~np.isfinite(ts))[0])
        raise ToolkitError(f"{path}:{lines_of[bad]}: timestamp '{_short(times[bad])}' is not finite")
    for labels, role in ((users, "user"), (items, "item")):
        empty = next((i for i, v in enumerate(labels) if not v), None)
        if empty is not None:
            raise ToolkitError(f"{path}:{lines_of[empty]}: empty {role} id")
    user_labels, user_code = _codes(users)
    _, item_code = _codes(items)
    ts = exact_times(np.asarray(times), ts)
    # Exact duplicate rows (same user, item and timestamp as written) are logging artefacts: keep the first, count
    # the rest. Integers, not float64: distinct nanosecond timestamps are distinct rows.
    _, time_code = np.unique(np.asarray(times), return_inverse=True)
    key = np.stack([user_code.astype(np.int64), item_code.astype(np.int64), time_code.reshape(-1).astype(np.int64)],
                   axis=1)
    _, first = np.unique(key, axis=0, return_index=True)
    duplicates = len(users) - first.size
    if duplicates:
        keep = np.sort(first)
        user_code, item_code, ts = user_code[keep], item_code[keep], ts[keep]
    order = np.argsort(ts, kind="stable")  # by time, file order on ties ...
    order = order[np.argsort(user_code[order], kind="stable")]  # ... then grouped by user, keeping that order
    counts = np.bincount(user_code, minlength=user_labels.size)
    histories = np.split(item_code[order].astype(np.int64), np.cumsum(counts)[:-1])
    return RawHistories(list(histories), [str(u) for u in user_labels], len(users) - duplicates, duplicates)


def load_source(path: str | Path, format: str, progress=None) -> RawHistories:
    if format == "seqfile":
        return load_seqfile(path, progress)
    if format == "interactions":
        return load_interactions(path, progress)
    raise ToolkitError(f"unknown source format '{format}' (expected one of {', '.join(FORMATS)})")
