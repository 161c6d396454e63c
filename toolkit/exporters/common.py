"""Small pieces every exporter shares: file naming, dtype casts of an entry point, the result of one export."""

from __future__ import annotations

import contextlib
import copy
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

# the state names and the dtype table belong to the artifact dir's format: toolkit.exporters.manifest
from toolkit.exporters.manifest import STATE_IN, STATE_OUT, np_dtype, state_output_name  # noqa: F401
from toolkit.models.contract import EntryPoint, StateSpec, TensorSpec

COMPUTE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}



def artifact_stem(model: str, entry: str, recipe: str) -> str:
    """`<model>.<entry>.<recipe>`: e.g. scn.step.executorch-xnnpack-fp32 (see export/README.md, file naming)."""
    return f"{model}.{entry}.{recipe}"


def dtype_name(dt: torch.dtype | np.dtype | str) -> str:
    if isinstance(dt, torch.dtype):
        return str(dt).replace("torch.", "")
    return np.dtype(dt).name


def cast_entry(entry: EntryPoint, compute: str) -> EntryPoint:
    """A copy of `entry` whose module, float inputs and states are in `compute` dtype (fp32: the entry itself)."""
    dt = COMPUTE_DTYPES[compute]
    if dt == torch.float32:
        return entry
    module = copy.deepcopy(entry.module).to(dt).eval()
    inputs = [TensorSpec(s.name, s.shape, dt if s.dtype.is_floating_point else s.dtype, s.high) for s in entry.inputs]
    states = [StateSpec(s.name, s.initial.detach().to(dt)) for s in entry.states]
    return EntryPoint(entry.name, module, inputs, list(entry.outputs), states, entry.description)


def first_line(e: BaseException) -> str:
    """The first line of an exception message (the type name when it has none): one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def to_numpy(t) -> np.ndarray:
    if isinstance(t, np.ndarray):
        return t
    return t.detach().cpu().numpy()


def tensor_record(name: str, shape, dtype, high: int | None = None) -> dict:
    rec = {"name": name, "shape": [int(x) for x in shape], "dtype": dtype_name(dtype)}
    if high is not None:
        rec["high"] = int(high)
    return rec


@dataclass
class Exported:
    """What one target exporter wrote (paths inside the artifact dir) and what it learned along the way."""

    model_file: Path
    extra_files: dict[str, Path] = field(default_factory=dict)  # role -> path (bundled_program, initial_state)
    record: dict = field(default_factory=dict)  # target-specific manifest fields
    state_check: dict = field(default_factory=dict)
    reference_entry: EntryPoint | None = None  # the entry actually exported (cast to the recipe's dtype)
    handle: object = None  # in-memory product a later stage needs (ExecuTorch program manager for the .bpte)


def stderr_captured() -> bool:
    """True while fd 2 is the `toolkit` CLI's capture file (toolkit.cli.quiet puts its device:inode in
    $TOOLKIT_STDERR_CAPTURED): what reaches fd 2 then ends in the run's log. A child whose fd 2 is something else
    (a bench worker's pipe) inherits the variable but not the file, and is not captured."""
    want = os.environ.get("TOOLKIT_STDERR_CAPTURED")
    if not want:
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence C++ log lines written straight to fd 2 (ExecuTorch's cpuinfo/threadpool chatter) for a moment.

    Not under the CLI: there fd 2 already goes to the run's log (toolkit.cli.quiet), or to the terminal with
    --verbose, and the lines are kept rather than thrown away."""
    if stderr_captured() or os.environ.get("TOOLKIT_VERBOSE") == "1":
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # captured stderr without a real fd (pytest capsys)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def quiet_libraries() -> None:
    """Outside the CLI's capture: hide the converters' deprecation chatter and torch's W-level log lines (errors still
    show). Under the CLI they go to the run's log, or with --verbose to the terminal."""
    import logging

    if os.environ.get("TOOLKIT_VERBOSE") == "1" or stderr_captured():
        return  # shown (--verbose), or kept in the run's log (toolkit.cli.quiet) rather than dropped
    import warnings

    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    for name in ("torch", "torch.onnx", "torch.utils._pytree", "torch._export", "executorch", "coremltools",
                 "torchao", "onnxruntime", "onnxscript", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
