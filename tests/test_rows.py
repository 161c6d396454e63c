"""The one result row (toolkit.rows): the same statistics and fields for host, emulated and phone rows."""

from __future__ import annotations

import pytest

from toolkit.bench.latency import summarize
from toolkit.rows import MEMORY_KEYS, base_row, instruction_summary, latency_summary


def test_summaries():
    lat = latency_summary([5.0, 1.0, 2.0, 3.0, 4.0])  # linear interpolation: the toolkit's one percentile
    assert lat == pytest.approx({"p50": 3.0, "p90": 4.6, "p99": 4.96, "mean": 3.0, "min": 1.0, "runs": 5})
    ins = instruction_summary([1050, 1000, 1000], overhead=50)
    assert ins["per_inference"] == 950 and ins["min"] == 1000 and ins["max"] == 1050


def test_host_and_device_summaries_are_the_same_function():
    samples_s = [0.005, 0.001, 0.002, 0.003, 0.004]
    assert summarize(samples_s) == pytest.approx(latency_summary([x * 1e3 for x in samples_s]))


def test_every_row_has_every_field():
    row = base_row(model="scn", entry="step", runtime="onnxruntime", seq_len=25, target="arm64-a76",
                   measured_on="emulated", error="boom")
    assert row["status"] == "failed" and row["error"] == "boom" and set(row["memory"]) == set(MEMORY_KEYS)
    for key in ("history", "flops", "flops_analytic", "params", "params_excluding_item_table", "artifact_bytes",
                "artifact", "latency_ms", "instructions_per_inference", "parity_max_abs_err", "budget"):
        assert key in row
