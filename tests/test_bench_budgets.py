"""Budgets, targets and suites as data: parsing, bad files named precisely, and the pass/fail decision."""

import pytest

from toolkit.bench import budgets
from toolkit.bench.suites import load_suite
from toolkit.bench.targets import load_target
from toolkit.errors import ToolkitError


def _row(**kw):
    row = {"model": "scn", "entry": "window", "runtime": "onnxruntime", "seq_len": 25, "target": "host-1t",
           "status": "ok", "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "mean": 1.2, "runs": 10},
           "memory": {"rss_peak_delta_bytes": 5_000_000}, "instructions_per_inference": None}
    row.update(kw)
    return row


def _write(tmp_path, text):
    p = tmp_path / "b.toml"
    p.write_text(text)
    return p


def test_rules_match_and_tightest_limit_wins(tmp_path):
    b = budgets.load(_write(tmp_path, """
[[budget]]
model = "scn"
target = "host-1t"
seq_len = [10, 25]
latency_ms = 5.0
memory_bytes = 10e6
[[budget]]
model = "scn"
target = "host-1t"
entry = "window"
runtime = "onnxruntime"
latency_ms = 1.5
"""))
    res = budgets.check(_row(), b)
    assert res["latency_ms"] == 1.5 and res["memory_bytes"] == 10e6 and res["pass"] is True
    assert budgets.check(_row(latency_ms={"p50": 1.6}), b)["pass"] is False
    assert budgets.check(_row(memory={"rss_peak_delta_bytes": 11e6}), b)["pass"] is False
    assert budgets.check(_row(seq_len=50, runtime="torch"), b)["pass"] is None  # no rule for L = 50 on torch
    assert budgets.check(_row(seq_len=50), b)["latency_ms"] == 1.5  # the second rule has no seq_len: any L
    assert budgets.check(_row(model="sasrec"), b)["pass"] is None


def test_failed_cell_under_a_budget_fails_it():
    b = budgets.uniform(1e6, None)
    res = budgets.check(_row(status="failed", latency_ms=None), b)
    assert res["pass"] is False and res["broken"] == ["cell failed"]


def test_uniform_budget_and_latency_stat(tmp_path):
    assert budgets.check(_row(), budgets.uniform(1e-6, None))["pass"] is False
    assert budgets.check(_row(), budgets.uniform(1e6, 1e3))["pass"] is True
    b = budgets.load(_write(tmp_path, 'budget = [{model = "scn", target = "host-1t", latency_ms = 2.5, '
                                      'latency_stat = "p99"}]'))
    assert budgets.check(_row(), b)["pass"] is False  # p99 = 3.0 > 2.5 while p50 would pass


def test_instruction_budget_for_emulated_rows(tmp_path):
    b = budgets.load(_write(tmp_path, 'budget = [{model = "scn", target = "arm64-a76", instructions = 1e6}]'))
    row = _row(target="arm64-a76", latency_ms=None, memory={}, instructions_per_inference=2e6)
    assert budgets.check(row, b)["pass"] is False
    assert budgets.check(dict(row, instructions_per_inference=5e5), b)["pass"] is True


@pytest.mark.parametrize("text,needle", [
    ('[[budget]]\nmodel = "scn"\ntarget = "host-1t"\nlatency = 2\n', "unknown key 'latency'"),
    ('[[budget]]\nmodel = "scn"\ntarget = "host-1t"\nlatency_ms = -1\n', "budget[0]: 'latency_ms'"),
    ('[[budget]]\nmodel = "scn"\ntarget = "host-1t"\nlatency_ms = "fast"\n', "'latency_ms' must be a positive"),
    ('[[budget]]\ntarget = "host-1t"\nlatency_ms = 1\n', "'model' is required"),
    ('[[budget]]\nmodel = "scn"\ntarget = "host-1t"\nseq_len = 0\nlatency_ms = 1\n', "'seq_len'"),
    ('[[budget]]\nmodel = "scn"\ntarget = "host-1t"\n', "no limit given"),
    ('[[budget]\nmodel = "scn"', "not valid TOML"),
    ('limits = 3\n', "unknown top-level key 'limits'"),
])
def test_malformed_budget_file_names_the_offending_key(tmp_path, text, needle):
    with pytest.raises(ToolkitError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        budgets.load(_write(tmp_path, text))


def test_shipped_budgets_targets_and_suites_parse():
    shipped = budgets.load(budgets.default_budget_file())
    assert shipped.rules and all(r.target for r in shipped.rules)
    t = load_target("host-1t")
    assert t.threads == 1 and t.pin and t.resolve_cpus() and len(t.resolve_cpus()) == 1
    for name in ("default", "compare", "sweep", "quick"):
        s = load_suite(name)
        assert s.models and s.seq_lens and s.runtimes
    assert load_suite("sweep").seq_lens == [10, 15, 20, 25, 50, 100]
    with pytest.raises(ToolkitError, match="unknown target 'nope'"):
        load_target("nope")


def test_scn_budgets_apply_to_a_trained_cocorrrec_device_artifact():
    from toolkit.bench.budgets import Rule

    rule = Rule("scn", "host-1t", [25], latency_ms=1.0)
    row = {"model": "cocorrrec", "target": "host-1t", "seq_len": 25, "entry": "window", "runtime": "executorch"}
    assert rule.matches(row)
    assert not rule.matches({**row, "model": "sasrec"})


def test_onnxruntime_budgets_apply_to_the_ort_format_of_the_same_export():
    """The .ort runs in onnxruntime: a rule for runtime onnxruntime covers onnxruntime-ort rows, not the reverse."""
    from toolkit.bench.budgets import Rule

    ort_rule = Rule("scn", "host-1t", [25], runtime="onnxruntime", latency_ms=1.0)
    row = {"model": "scn", "target": "host-1t", "seq_len": 25, "entry": "window", "runtime": "onnxruntime-ort"}
    assert ort_rule.matches(row)
    assert not ort_rule.matches({**row, "runtime": "executorch"})
    assert not Rule("scn", "host-1t", [25], runtime="onnxruntime-ort", latency_ms=1.0).matches(
        {**row, "runtime": "onnxruntime"})
    assert budgets.check(_row(runtime="onnxruntime-ort", latency_ms={"p50": 1.6}),
                         budgets.Budgets([ort_rule], "test"))["pass"] is False
