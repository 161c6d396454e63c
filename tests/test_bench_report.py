"""The bench report without running a bench: the compact table at 100 columns, the closing sentence, the counts
(every row is exactly one of within / over / failed / no budget), and both plots (single L and sweep).

Rows are built with the same helpers the bench uses (toolkit.rows.base_row, budgets.check, sweep.summarize), with
latencies chosen by hand so the expected verdicts are known.
"""

import io
import re

import pytest
from rich.console import Console

from toolkit.bench import budgets, plots, report
from toolkit.bench.sweep import summarize
from toolkit.cli.bench_report import print_result
from toolkit.rows import base_row

LONG = "cocorrrec_beauty_seed3_distilled_extra_long_model_name"


def _row(model="scn", entry="window", runtime="executorch", L=25, p50=1.0, p90=None, rss=12_000_000, history=None,
         error=None, load=8.0, first=2.0):
    r = base_row(model=model, entry=entry, runtime=runtime, seq_len=L, history=history, target="host-1t",
                 measured_on="host test", error=error, cold_start_ms=None)
    if error is None:
        r["latency_ms"] = {"p50": p50, "p90": p90 or p50 * 1.3, "p99": (p90 or p50 * 1.3) * 1.2, "mean": p50,
                           "min": p50 * 0.9, "runs": 20}
        r["memory"]["rss_peak_delta_bytes"] = rss
        r["cold_start_ms"] = {"load": load, "first_inference": first}
    return r


def _result(rows, rules=None, source="test budgets"):
    b = budgets.Budgets(rules if rules is not None else [budgets.Rule(None, None, None, latency_ms=3.0,
                                                                      memory_bytes=40e6)], source)
    for r in rows:
        r["budget"] = budgets.check(r, b)
    env = {"target": {"name": "host-1t", "kind": "host", "description": "test"}, "cpu_model": "Test CPU",
           "threads": 1, "budgets": b.describe()}
    return {"schema": "toolkit.bench/1", "environment": env, "rows": rows, "summary": summarize(rows)}


def _render(result, width=100, wide=False) -> str:
    buf = io.StringIO()
    print_result(result, Console(file=buf, width=width, color_system=None, force_terminal=False), wide=wide)
    return buf.getvalue()


def _table_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_compact_table_fits_100_columns_and_never_cuts_the_verdict_numbers():
    rows = [_row(model=LONG, runtime="onnxruntime-ort-mobile-form", p50=2.13, p90=2.71),
            _row(model="scn", entry="step", runtime="executorch", L=200, history=200, p50=0.2567),
            _row(model="gru4rec", runtime="torch", p50=41.7, p90=55.5),  # over the 3 ms limit
            _row(model="din", error="measure: runtime crashed")]
    res = _result(rows)
    text = _render(res)
    table_part = text.split("host-measured")[0]
    assert max(len(ln) for ln in table_part.splitlines()) <= 100, table_part
    assert "…" not in text
    # every row's p50, limit, headroom and verdict appear whole
    for p50, head, verdict in (("2.130", "+29%", "pass"), ("0.257", "+91%", "pass"), ("41.7", "-1290%", "OVER lat")):
        line = next(ln for ln in table_part.splitlines() if f" {p50} " in ln)
        assert "3 ms" in line and head in line and verdict in line, line
    assert re.search(r"din\s+window\s+executorch\s+25\s+-\s+-\s+-\s+3 ms\s+-\s+FAILED", table_part), table_part
    # the long name folds over lines instead of being cut
    assert LONG not in table_part and "cocorrrec" in table_part
    assert "h=200" in table_part  # a step row says the history it was timed at
    # the header has every column the verdict needs
    header = next(ln for ln in table_part.splitlines() if "model" in ln)
    for col in ("model", "entry", "runtime", "L", "p50 ms", "p90 ms", "limit", "headroom", "verdict", "load ms"):
        assert col in header, header


def test_wide_table_shows_every_column_with_cold_start():
    res = _result([_row(p50=1.0, load=12.5, first=3.25)])
    text = _render(res, width=100, wide=True)
    header = " ".join(ln for ln in text.splitlines() if "┃" in ln)
    for col in ("FLOPs", "weights", "RSS Δ", "p99 ms", "load ms", "1st ms", "floor ms", "budget"):
        assert col in header, header
    assert " 12.5 " in text and " 3.250 " in text


def test_closing_sentence_all_within_names_the_tightest_row():
    res = _result([_row(model="scn", p50=2.13), _row(model="sasrec", p50=0.5), _row(model="din", p50=1.0)])
    s = report.closing_sentence(res)
    assert s.startswith("all 3 rows within budget; tightest latency: scn window executorch L=25 at 71% of 3 ms"), s
    assert "tightest memory:" in s and "MiB" in s
    assert _render(res).rstrip().splitlines()[-1] == f"verdict: {s}"


def test_closing_sentence_names_rows_over_budget_failed_and_unjudged():
    rules = [budgets.Rule("scn", None, None, latency_ms=3.0)]
    res = _result([_row(model="scn", p50=4.5), _row(model="scn", runtime="onnxruntime", p50=1.5),
                   _row(model="sasrec", p50=9.0), _row(model="scn", runtime="torch", error="export: boom")], rules)
    s = report.closing_sentence(res)
    assert s.startswith("1 of 4 rows over budget: scn window executorch L=25 (latency p50 4.5 ms > 3 ms)"), s
    assert "1 failed, not measured: scn window torch L=25" in s
    assert "1 within budget (tightest latency: scn window onnxruntime L=25 at 50% of 3 ms" in s
    assert "1 without a budget, not judged: sasrec window executorch L=25" in s


def test_closing_sentence_without_any_budget_says_so():
    res = _result([_row(), _row(model="din")], rules=[], source="none")
    assert report.closing_sentence(res) == "none of the 2 rows has a budget, so none is judged (budgets: none)"
    assert report.closing_sentence(_result([])) == "no rows were benched"


def test_summary_counts_every_row_once_when_all_break():
    res = _result([_row(p50=5.0), _row(runtime="onnxruntime", p50=7.0)])
    s = res["summary"]
    assert (s["rows"], s["within_budget"], s["over_budget"], s["failed"], s["no_budget"]) == (2, 0, 2, 0, 0)
    assert s["budget_checked"] == 2 and s["budget_broken"] == 2 and s["pass"] is False
    text = _render(res)
    assert "2 rows: 0 within budget, 2 over budget, 0 failed, 0 without a budget" in text
    assert report.closing_sentence(res).startswith("2 of 2 rows over budget: scn window onnxruntime L=25 (latency")


def test_summary_counts_failed_cells_once_and_passing_rows_as_within():
    res = _result([_row(error="measure: crashed"), _row(error="export: boom"), _row(p50=1.0),
                   _row(model="x", p50=50.0)], rules=[budgets.Rule("scn", None, None, latency_ms=3.0)])
    s = res["summary"]
    assert (s["rows"], s["within_budget"], s["over_budget"], s["failed"], s["no_budget"]) == (4, 1, 0, 2, 1)
    assert s["budget_broken"] == 2 and s["pass"] is False  # failed under a budget: the budget check fails
    assert sum(s[k] for k in ("within_budget", "over_budget", "failed", "no_budget")) == s["rows"]
    assert "4 rows: 1 within budget, 0 over budget, 2 failed, 1 without a budget" in _render(res)


def test_budget_fields_carry_limit_value_and_headroom():
    res = _result([_row(p50=2.4, rss=30_000_000), _row(p50=4.5, rss=50_000_000)])
    ok, over = (r["budget"] for r in res["rows"])
    assert ok["latency_ms"] == 3.0 and ok["latency_value"] == 2.4
    assert ok["latency_headroom_pct"] == pytest.approx(20.0)
    assert ok["memory_value"] == 30_000_000 and ok["memory_headroom_pct"] == pytest.approx(25.0)
    assert ok["tightest"] == "latency" and ok["headroom_pct"] == pytest.approx(20.0)
    assert over["latency_headroom_pct"] == pytest.approx(-50.0) and over["memory_headroom_pct"] == pytest.approx(-25.0)
    assert over["tightest"] == "latency" and over["pass"] is False
    assert any("MiB" in b for b in over["broken"])
    assert report.verdict(res["rows"][1]) == "OVER lat+mem"


def _png_ok(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_plot_single_L_and_sweep_write_pngs(tmp_path):
    single = _result([_row(model=m, runtime=rt, p50=p, p90=p * 1.5) for m, p in (("scn", 0.4), ("din", 1.1))
                      for rt in ("executorch", "onnxruntime", "torch")]
                     + [_row(model="scn", entry="step", history=200, L=200, p50=0.3, runtime="executorch"),
                        _row(model="gate", entry="mrs", error="measure: crashed")])
    assert plots.plot_kind(single) == "single"
    assert _png_ok(plots.write_plot(single, tmp_path / "single.png"))
    sweep = _result([_row(model=m, runtime=rt, L=L, p50=p * L / 25, rss=10_000_000 + L * 50_000)
                     for m, p in (("scn", 0.4), ("sasrec", 0.2)) for rt in ("executorch", "onnxruntime")
                     for L in (10, 25, 50)]
                    + [_row(model="scn", entry="step", runtime="executorch", L=L, history=L, p50=0.3)
                       for L in (10, 25, 50, 200)])
    assert plots.plot_kind(sweep) == "sweep"
    assert _png_ok(plots.write_plot(sweep, tmp_path / "sweep.png"))
    empty = _result([_row(error="export: boom")])
    assert _png_ok(plots.write_plot(empty, tmp_path / "empty.png"))


def test_emulated_rows_show_instructions_against_their_limit():
    rows = [_row(), _row(runtime="onnxruntime")]
    for r, ins in zip(rows, (8e5, 1.5e6)):
        r.update(target="arm64-a76", latency_ms=None, instructions_per_inference=ins, cold_start_ms=None)
    res = _result(rows, rules=[budgets.Rule(None, None, None, instructions=1e6)])
    res["environment"]["target"].update(name="arm64-a76", kind="emulated")
    text = _render(res)
    header = next(ln for ln in text.splitlines() if "model" in ln)
    assert "instr/inf" in header and "p50" not in header
    assert re.search(r"executorch\s+25\s+800k\s+1M\s+\+20%\s+pass", text), text
    assert re.search(r"onnxruntime\s+25\s+1\.5M\s+1M\s+-50%\s+OVER instr", text), text
    assert "1 of 2 rows over budget: scn window onnxruntime L=25 (instructions" in report.closing_sentence(res)
