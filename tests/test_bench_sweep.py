"""The bench matrix through the Python API on a tiny model: sweep rows, streaming history, failure isolation,
the report files. Eager-torch runtime only (no export): the export cache is covered in test_bench_cache.py."""

import xml.etree.ElementTree as ET

import pytest
from bench_fixtures import hand_flops_window, tiny_source
from test_bench_cli import assert_row_schema

from toolkit.bench import budgets, plots, report
from toolkit.bench.junit import write_junit
from toolkit.bench.sweep import BenchRequest, run_bench
from toolkit.bench.targets import load_target


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    req = BenchRequest(
        sources=[tiny_source("tiny", dim=8, K=4, fail_len=6)],
        seq_lens=[4, 6, 8], histories=[12], entries=["window", "step"], runtimes=["torch"], target=load_target("host-1t"),
        budgets=budgets.uniform(1e6, None), runs=3, warmup=1, candidates=5, cache_dir=tmp_path_factory.mktemp("cache"))
    seen = []
    res = run_bench(req, lambda desc, done, total: seen.append((desc, done, total)))
    res["_progress"] = seen
    return res


def _rows(result, model, entry):
    return sorted((r for r in result["rows"] if r["model"] == model and r["entry"] == entry),
                  key=lambda r: r["seq_len"])


def test_every_row_follows_the_schema(result):
    assert result["schema"] == "toolkit.bench/1"
    assert result["rows"]
    for row in result["rows"]:
        assert_row_schema(row)


def test_window_flops_follow_the_hand_count_and_grow_with_L(result):
    rows = [r for r in _rows(result, "tiny", "window") if r["seq_len"] != 6]
    assert [r["seq_len"] for r in rows] == [4, 8]
    assert [r["flops"] for r in rows] == [hand_flops_window(L, 5, 8) for L in (4, 8)]
    assert rows[0]["flops"] < rows[1]["flops"]
    assert all(r["status"] == "ok" and r["history"] is None and r["memory"]["state_bytes"] == 0 for r in rows)


def test_step_is_timed_at_each_history_with_flat_cost(result):
    rows = _rows(result, "tiny", "step")
    # step points = the seq-lens plus the extra history; history = whole steps of K = 4 replayed before timing
    assert [(r["seq_len"], r["history"]) for r in rows] == [(4, 4), (6, 4), (8, 8), (12, 12)]
    assert len({r["flops"] for r in rows}) == 1 and rows[0]["flops"] == hand_flops_window(4, 5, 8)
    assert all(r["status"] == "ok" and r["memory"]["state_bytes"] == 8 * 4 for r in rows)
    assert all(r["latency_ms"]["runs"] == 3 for r in rows)


def test_a_failing_cell_fails_alone(result):
    (bad,) = [r for r in result["rows"] if r["status"] != "ok"]
    assert (bad["entry"], bad["seq_len"]) == ("window", 6)
    assert bad["status"] == "failed" and "told to break at length 6" in bad["error"]
    assert bad["budget"]["pass"] is False and bad["latency_ms"] is None and bad["cold_start_ms"] is None
    others = [r for r in result["rows"] if r is not bad]
    assert len(others) == 6 and all(r["status"] == "ok" and r["budget"]["pass"] is True for r in others)
    s = result["summary"]
    assert s["failed"] == 1 and s["pass"] is False
    assert (s["rows"], s["within_budget"], s["over_budget"], s["no_budget"]) == (7, 6, 0, 0)


def test_progress_reaches_the_end(result):
    desc, done, total = result["_progress"][-1]
    assert done == total and total > 0


def test_report_files(result, tmp_path):
    assert plots.plot_kind(result) == "sweep"
    png = plots.write_plot(result, tmp_path / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    junit = ET.parse(write_junit(result, tmp_path / "b.xml")).getroot()
    n_broken = sum(1 for r in result["rows"] if r["status"] != "ok")
    assert junit.get("errors") == str(n_broken) and junit.get("tests") == str(len(result["rows"]))
    report.write_json(result, tmp_path / "b.json")
    assert (tmp_path / "b.json").stat().st_size > 0
