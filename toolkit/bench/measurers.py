"""What a bench needs from toolkit.device (the emulated ARM64 target, the ExecuTorch C++ runner). Device sits above
bench and imports it, so bench never imports device: the caller (`toolkit bench`) hands these in
(toolkit.device.for_bench.measurers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class DeviceMeasurers:
    emulated_status: Callable[[], Any]  # () -> toolkit.device.arm64 Status (.ready, .reason, .executorch)
    emulated: Callable[..., dict]  # (runtime, manifest, record, *, target, runs, steps_before) -> result dict
    cpp: Callable[..., dict]  # toolkit.device.et_cpp.measure_host: (manifest, record, histories, *, runs, ...)
