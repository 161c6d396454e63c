"""Memory split of a cell: weights, planned activations, state, runtime arena peak, process peak RSS delta.

What each number is (they are not additive; each answers its own question):
- weights_bytes: constant data the artifact carries (ONNX initializers; ExecuTorch constant buffer + delegate
  named data; eager: the entry module's parameters and non-state buffers).
- activations_bytes: ExecuTorch's memory plan (`non_const_buffer_sizes`, excludes weights). ONNX Runtime and eager
  have no static plan: None.
- state_bytes: the carried per-user state (e.g. SCN's W, b), 0 for stateless entries.
- arena_peak_bytes: ONNX Runtime allocator peak in use during a run (`mem_in_use_peak` from a separate profiling
  session, never the timed one); ExecuTorch: the planned buffers it allocates up front; eager: None.
- rss_peak_delta_bytes: in a fresh measuring process, peak RSS (VmHWM, reset after imports) minus RSS before the
  runtime loaded the artifact and ran it: what loading + running costs the process.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

import numpy as np

# ---- process RSS (used inside the fresh measuring subprocess) ---------------------------------------------------

def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    return _status_kb("VmRSS")


def reset_peak_rss() -> tuple[int | None, str]:
    """Reset the kernel's peak-RSS mark to the current RSS; returns (current RSS, method used for the peak)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return rss_bytes(), "VmHWM after clear_refs=5"
    except OSError:
        return rss_bytes(), "ru_maxrss (peak since process start; includes imports)"


def peak_rss(method: str) -> int | None:
    if method.startswith("VmHWM"):
        return _status_kb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


# ---- static split -----------------------------------------------------------------------------------------------

def state_bytes(states: list) -> int:
    """Bytes of the carried state: StateSpec objects or manifest dicts with shape + dtype."""
    total = 0
    for s in states:
        if isinstance(s, dict):
            total += int(np.prod(s["shape"])) * np.dtype(_np_dtype(s["dtype"])).itemsize
        else:
            total += s.initial.numel() * s.initial.element_size()
    return total


def _np_dtype(name: str) -> str:
    return {"float32": "float32", "float16": "float16", "int64": "int64", "int32": "int32", "bool": "bool",
            "bfloat16": "uint16"}.get(name, name)


def module_weights_bytes(module, state_names: set[str] = frozenset()) -> int:
    """Parameters + buffers of an eager module, deduplicated (shared item table counted once), minus state."""
    seen, total = set(), 0
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if id(t) in seen or name.split(".")[-1] in state_names:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def onnx_weights_bytes(path: str | os.PathLike) -> int | None:
    """Sum of initializer bytes (external data included) of an .onnx file."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=True)
    except Exception:
        return None
    total = 0
    for init in model.graph.initializer:
        total += int(np.prod(init.dims)) * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    return total


def pte_weights_bytes(path: str | os.PathLike) -> int | None:
    """ExecuTorch constant data: the program's constant buffer plus named data (where XNNPACK keeps weights)."""
    try:
        from executorch.exir._serialize._program import deserialize_pte_binary

        pte = deserialize_pte_binary(Path(path).read_bytes())
    except Exception:
        return None
    program = getattr(pte, "program", pte)
    total = sum(len(b.storage) for b in program.constant_buffer)
    named = getattr(pte, "named_data", None)
    if named is not None and getattr(named, "buffers", None):
        total += sum(len(getattr(b, "buffer", b)) for b in named.buffers)
    return total


def pte_planned_bytes(path: str | os.PathLike, method: str = "forward") -> int | None:
    """Planned activation bytes of one method of a .pte (used when the manifest does not record them)."""
    try:
        from executorch.exir._serialize._program import deserialize_pte_binary

        program = deserialize_pte_binary(Path(path).read_bytes())
        program = getattr(program, "program", program)
    except Exception:
        return None
    plans = [p for p in program.execution_plan if p.name == method] or list(program.execution_plan[:1])
    return int(sum(plans[0].non_const_buffer_sizes)) if plans else None


# ---- ONNX Runtime allocator peak (separate profiling session) ------------------------------------------------------

def ort_allocator_peak(onnx_path: str, feeds_list: list[dict], threads: int, profile_dir: str) -> dict:
    """Run a profiling session (never the timed one: profiling slows runs 8-10x) and read allocator stats.

    Returns {"arena_peak_bytes": max mem_in_use_peak, "arena_held_bytes": max mem_arena_held} over node events.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(profile_dir, "ort_profile")
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    for feeds in feeds_list:
        sess.run(None, feeds)
    prof = sess.end_profiling()
    try:
        from toolkit.io import read_json

        events = read_json(prof, "onnxruntime profile", expect=None)
    finally:
        Path(prof).unlink(missing_ok=True)
    peak = held = None
    for e in events:
        args = e.get("args") or {}
        if "mem_in_use_peak" in args:
            peak = max(peak or 0, int(args["mem_in_use_peak"]))
        if "mem_arena_held" in args:
            held = max(held or 0, int(args["mem_arena_held"]))
    return {"arena_peak_bytes": peak, "arena_held_bytes": held}
