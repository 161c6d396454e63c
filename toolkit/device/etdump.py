"""The ETDump a phone's executor_runner writes (built with EXECUTORCH_ENABLE_EVENT_TRACER=ON): kept and summarised.

The file is ExecuTorch's own size-prefixed flatbuffer (devtools/etdump/etdump_schema_flatcc.fbs); we never parse it
ourselves. `summarise` asks ExecuTorch's Inspector (offline, no ETRecord: operator names come from the dump, delegate
calls show as their debug ids) for per-event timings; when the Inspector cannot read it the summary says why and the
file is still kept for `executorch.devtools.Inspector(etdump_path=..., etrecord=...)` by hand.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from toolkit.io import atomic_write_bytes, sha256_path

TOP_EVENTS = 8


def _stats(raw: list[float]) -> dict:
    xs = sorted(float(x) for x in raw)
    n = len(xs)
    return {"n": n, "p50_ms": round(xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2, 6),
            "min_ms": round(xs[0], 6), "max_ms": round(xs[-1], 6)} if n else {"n": 0}


def summarise(path: Path) -> dict:
    """{"parsed": True, "blocks", "execute_ms", "load_method_ms", "top_events"} or {"parsed": False, "note"}."""
    try:
        with warnings.catch_warnings():  # "Output Buffer not found": no debug buffer is pulled, timings only
            warnings.simplefilter("ignore")
            logging.getLogger("executorch").setLevel(logging.ERROR)
            from executorch.devtools import Inspector

            ins = Inspector(etdump_path=str(path))
    except Exception as e:  # a truncated or foreign file makes flatc / the Inspector raise many kinds
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return {"parsed": False, "note": f"retrieved, but ExecuTorch's Inspector could not read it offline "
                                         f"({type(e).__name__}: {first})"}
    blocks, execute, load, events = [], None, None, []
    for eb in ins.event_blocks:
        blocks.append({"name": eb.name, "events": len(eb.events)})
        for ev in eb.events:
            raw = list(ev.perf_data.raw) if ev.perf_data is not None else []
            if not raw:
                continue
            if ev.name == "Method::execute":
                execute = _stats(raw)
            elif ev.name == "Program::load_method":
                load = _stats(raw)
            else:
                events.append({"name": str(ev.name), "delegated": bool(ev.is_delegated_op), **_stats(raw)})
    events.sort(key=lambda e: -e.get("p50_ms", 0.0))
    return {"parsed": True, "blocks": blocks, "execute_ms": execute, "load_method_ms": load,
            "top_events": events[:TOP_EVENTS], "events": len(events)}


def keep(src: Path, dest_dir: Path, name: str, source: str) -> dict:
    """Move a pulled ETDump to dest_dir/name and describe it for the row (path, bytes, sha256, Inspector summary)."""
    data = src.read_bytes()
    dest = atomic_write_bytes(dest_dir / name, data)
    return {"retrieved": True, "file": str(dest.resolve()), "bytes": len(data), "sha256": sha256_path(dest),
            "source": source, **summarise(dest)}
