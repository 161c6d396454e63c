"""toolkit.device's measurers for `toolkit bench` (toolkit.bench.measurers): the CLI hands them to the bench, which
sits below device and may not import it. Each imports its module lazily: only an emulated target or the C++
runtime needs them."""

from __future__ import annotations

from toolkit.bench.measurers import DeviceMeasurers


def _emulated_status():
    from toolkit.device import arm64

    return arm64.status()


def _emulated(runtime: str, manifest, record, **kw) -> dict:
    from toolkit.device import emulated

    bench = emulated.bench_executorch if runtime == "executorch" else emulated.bench_onnx
    return bench(manifest, record, **kw)


def _cpp(*args, **kw) -> dict:
    from toolkit.device import et_cpp

    return et_cpp.measure_host(*args, **kw)


def measurers() -> DeviceMeasurers:
    return DeviceMeasurers(emulated_status=_emulated_status, emulated=_emulated, cpp=_cpp)
