"""Run an exported artifact through its real runtime, carrying state between calls (the bench uses these too).

`open_runner(artifact_dir, record)` -> RuntimeSession with `reset()`, `__call__(*inputs) -> visible outputs`, `state()`.
Inputs are checked against the manifest before they reach a runtime: count, shape, integer ids within 0..high.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import sys
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.exporters.common import first_line, quiet_native_stderr
from toolkit.exporters.manifest import STATE_IN, load_initial_state, np_dtype


class RuntimeSession:
    """Common input checks and state bookkeeping; subclasses implement `_load` and `_run`."""

    runtime = "?"

    def __init__(self, artifact_dir: Path, record: dict, threads: int = 1):
        self.dir = Path(artifact_dir)
        self.record = record
        self.path = self.dir / record["file"]
        self.threads = int(threads)
        if self.threads < 1:
            raise ToolkitError(f"threads must be >= 1, got {threads}")
        if not self.path.exists():
            raise ToolkitError(f"artifact not found: {self.path}")
        self.inputs = record["inputs"]
        self.output_names = [o["name"] for o in record["outputs"]]
        self.states = record.get("states", [])
        self._initial = self._read_initial_state()
        self._state = dict(self._initial)

    # -- state ------------------------------------------------------------------------------------------------
    def _read_initial_state(self) -> dict[str, np.ndarray]:
        return load_initial_state(self.dir, self.states)

    def state(self) -> dict[str, np.ndarray]:
        """The state after the last call (the initial state after reset)."""
        return {k: v.copy() for k, v in self._state.items()}

    def reset(self) -> None:
        self._state = dict(self._initial)

    # -- inputs -----------------------------------------------------------------------------------------------
    def check_inputs(self, arrays) -> list[np.ndarray]:
        """Shapes, dtypes and id ranges per the manifest; one clear line naming the offending input."""
        if len(arrays) != len(self.inputs):
            names = ", ".join(i["name"] for i in self.inputs)
            raise ToolkitError(f"{self.record['file']}: expected {len(self.inputs)} inputs ({names}), "
                               f"got {len(arrays)}")
        out = []
        for a, spec in zip(arrays, self.inputs):
            a = np.asarray(a)
            name = spec["name"]
            if list(a.shape) != list(spec["shape"]):
                raise ToolkitError(f"{self.record['file']}: input '{name}' has shape {list(a.shape)}, "
                                   f"the artifact takes {spec['shape']}")
            want = np_dtype(spec["dtype"])
            if np.issubdtype(want, np.integer):
                if not np.issubdtype(a.dtype, np.integer):
                    raise ToolkitError(f"{self.record['file']}: input '{name}' must hold integer ids, got {a.dtype}")
                high = spec.get("high")
                bad = (a < 0) | (a > high) if high is not None else (a < 0)
                if bad.any():
                    offending = int(a[bad].flat[0])
                    rng = f"0..{high}" if high is not None else ">= 0"
                    raise ToolkitError(f"{self.record['file']}: input '{name}' holds id {offending}, "
                                       f"outside the valid range {rng}")
            out.append(np.ascontiguousarray(a.astype(want, copy=False)))
        return out

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        return self.run_validated(self.check_inputs(inputs))

    def run_validated(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """One call with arrays already returned by `check_inputs` (timing loops check once, not per call)."""
        visible, new_state = self._run(arrays)
        if self.states:
            self._state = new_state
        return visible

    def _run(self, arrays: list[np.ndarray]) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        raise NotImplementedError

    def _split(self, outs: list[np.ndarray]) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        n = len(self.output_names)
        if len(outs) != n + len(self.states):
            raise ToolkitError(f"{self.record['file']}: runtime returned {len(outs)} outputs, "
                               f"manifest says {n} + {len(self.states)} states")
        return list(outs[:n]), {s["name"]: outs[n + i] for i, s in enumerate(self.states)}


class ExecuTorchRunner(RuntimeSession):
    """ExecuTorch's C++ runtime bindings, loaded from the path; reset = reload the method.

    Reloading is how state goes back to its serialised initial value: the Python runtime does not share mutable
    buffers across methods (executorch #17005), so there is no separate `reset` method to call.
    """

    runtime = "executorch"

    def __init__(self, artifact_dir: Path, record: dict, threads: int = 1):
        super().__init__(artifact_dir, record, threads)
        set_executorch_threads(self.threads)
        self._load()

    def _load(self) -> None:
        try:
            with quiet_native_stderr():
                self.program, self.method = load_executorch_method(self.path, self.record.get("method", "forward"))
        except Exception as e:  # the runtime raises RuntimeError/ValueError for damaged programs
            raise ToolkitError(f"ExecuTorch cannot load {self.path.name}: {first_line(e)}") from None

    def reset(self) -> None:
        super().reset()
        self._load()

    def _run(self, arrays):
        import torch

        outs = self.method([torch.from_numpy(a) for a in arrays])
        return self._split([o.detach().numpy().copy() for o in outs])


class OnnxRuntimeRunner(RuntimeSession):
    """onnxruntime CPU; state_out.* of one call is fed back as state_in.* of the next."""

    runtime = "onnxruntime"

    def __init__(self, artifact_dir: Path, record: dict, threads: int = 1):
        super().__init__(artifact_dir, record, threads)
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        level = record.get("ort_optimization_level", "all")
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ToolkitError(f"onnxruntime cannot load {self.path.name}: {first_line(e)}") from None
        self.session_options = so

    def _run(self, arrays):
        feed = {spec["name"]: a for spec, a in zip(self.inputs, arrays)}
        for s in self.states:
            feed[STATE_IN + s["name"]] = self._state[s["name"]]
        outs = self.session.run(None, feed)
        return self._split(outs)


class CoreMLRunner(RuntimeSession):
    """Core ML prediction with an MLState (macOS 15+ only)."""

    runtime = "coreml"

    def __init__(self, artifact_dir: Path, record: dict, threads: int = 1):
        if platform.system() != "Darwin":
            raise ToolkitError(f"Core ML prediction needs macOS 15+ ({record['file']} cannot run on "
                               f"{platform.system()}); structural checks and the fp16 drift estimate ran instead")
        super().__init__(artifact_dir, record, threads)
        with contextlib.redirect_stderr(io.StringIO()):
            import coremltools as ct
        units = getattr(ct.ComputeUnit, record.get("compute_units", "CPU_AND_NE"))
        self.model = ct.models.MLModel(str(self.path), compute_units=units)
        self._ml_state = self.model.make_state() if self.states else None
        self.all_outputs = self.output_names + [s["output"] for s in self.states]

    def reset(self) -> None:
        super().reset()
        self._ml_state = self.model.make_state() if self.states else None

    def _run(self, arrays):
        feed = {spec["name"]: a for spec, a in zip(self.inputs, arrays)}
        res = self.model.predict(feed, state=self._ml_state) if self._ml_state is not None else self.model.predict(feed)
        return self._split([np.asarray(res[name]) for name in self.all_outputs])


class OrtFormatRunner(OnnxRuntimeRunner):
    """The ORT format (.ort) of an ONNX export in onnxruntime CPU: the file ORT Mobile loads, same calling convention."""

    runtime = "onnxruntime-ort"


RUNNERS = {"executorch": ExecuTorchRunner, "onnxruntime": OnnxRuntimeRunner, "onnxruntime-ort": OrtFormatRunner,
           "coreml": CoreMLRunner}


PTE_IDENTIFIER = b"ET12"  # ExecuTorch program flatbuffer file_identifier (schema/program.fbs), bytes 4..8
BPTE_IDENTIFIER = b"BP08"  # bundled program (bundled_program_schema.fbs)
MAX_PROGRAM_BYTES = 4 << 30
PROBE_TIMEOUT_S = 120


def check_program_file(path, identifier: bytes = PTE_IDENTIFIER, what: str = "ExecuTorch program") -> None:
    """The flatbuffer identifier and size of a .pte/.bpte, read before the runtime sees the file: the runtime
    logs a foreign identifier's raw bytes, and its Python log hook aborts the process decoding them."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ToolkitError(f"cannot read {what} {p}: {e.strerror or type(e).__name__}") from None
    if size > MAX_PROGRAM_BYTES:
        raise ToolkitError(f"{what} {p.name} is {size:,} bytes, more than the {MAX_PROGRAM_BYTES:,} allowed")
    if len(head) < 8 or head[4:8] != identifier:
        raise ToolkitError(f"{p.name} is not an {what} (flatbuffer identifier {head[4:8]!r}, expected "
                           f"{identifier!r})")


def probe_load(load, what: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Run `load()` (a native loader) once in a forked child first: a native abort or crash there (a crafted
    program whose names the runtime logs, or that trips an assertion) kills the child, and this process refuses
    the file in one line instead of dying with it. The child shares the parent's imports (fork: no start-up)."""
    import signal
    import time

    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: load, report by exit code only, never return into the parent's code
        code = 3
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)  # stdout may carry a command's JSON: the child writes nothing there
            load()
            code = 0
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise ToolkitError(f"{what}: the runtime did not finish loading it within {timeout_s:g} s: refused")
        time.sleep(0.02)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        raise ToolkitError(f"{what}: the runtime crashed loading it ({name}; a malformed or crafted program): "
                           "refused")


def load_executorch_method(path, method: str = "forward"):
    """(program, method) from a .pte through ExecuTorch's C++ runtime bindings; call method([tensors]).

    The bindings module itself, not `executorch.runtime`: that wrapper imports executorch.exir (the whole export
    stack, ~6 s of CPU per process here) only to warn that the API is experimental. Every verify, bench worker and
    device reference pays the import, so the runtime's own load is what we load. The program object must outlive
    the method (it owns the loaded data), so both are returned."""
    import torch  # noqa: F401 - the bindings take and return torch tensors; libtorch must be loaded first
    from executorch.extension.pybindings import _portable_lib

    check_program_file(path)

    def load():
        program = _portable_lib._load_program(str(path), enable_etdump=False, debug_buffer_size=0,
                                              program_verification=_portable_lib.Verification.InternalConsistency)
        return program, program.load_method(method)

    key = _file_key(path)
    if key not in _PROBED:  # once per file version and process (a runner reloads the method to reset its state)
        probe_load(load, f"ExecuTorch program {Path(path).name}")
        _PROBED.add(key)
    return load()


_PROBED: set = set()


def _file_key(path) -> tuple:
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)


def set_executorch_threads(n: int) -> None:
    """Size ExecuTorch's shared threadpool (affects every loaded program in this process)."""
    from executorch.extension.pybindings import _portable_lib

    with quiet_native_stderr():
        if _portable_lib._threadpool_get_thread_count() != n:
            _portable_lib._unsafe_reset_threadpool(n)


def open_runner(artifact_dir: Path, record: dict, threads: int = 1) -> RuntimeSession:
    """A runner for one manifest["artifacts"] entry, in the artifact's own runtime."""
    runtime = record.get("runtime")
    if runtime not in RUNNERS:
        raise ToolkitError(f"unknown runtime '{runtime}' in manifest record for {record.get('file')}")
    return RUNNERS[runtime](Path(artifact_dir), record, threads)


def coreml_can_run() -> bool:
    if platform.system() != "Darwin":
        return False
    try:
        major = int(platform.mac_ver()[0].split(".")[0])
    except ValueError:
        return False
    return major >= 15
