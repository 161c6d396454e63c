"""A bench that knows its noise: the interval math on synthetic samples, --compare's verdicts on known inputs, the
inconclusive budget verdict, bad baselines as one line + exit 2. Correctness only: no timing is asserted here."""

import copy
import json
import math

import numpy as np
import pytest
from cli_helpers import run_inprocess

from toolkit.bench import budgets, compare, environment, noise, report
from toolkit.bench.sweep import summarize
from toolkit.errors import ToolkitError
from toolkit.rows import base_row

# ---- the interval math -------------------------------------------------------------------------------------------


def test_order_statistic_interval_known_cases():
    # n = 10: P(Bin(10, 1/2) <= 1) = 11/1024 <= 2.5% < P(<= 2) = 56/1024 -> [x_(2), x_(9)]
    assert noise.median_ci_order(list(range(1, 11))) == (2.0, 9.0)
    # n = 6 is the least n with a 95% order-statistic interval: [min, max] (P(Bin(6,1/2) = 0) = 1/64 < 2.5%)
    assert noise.median_ci_order([6, 1, 5, 2, 4, 3]) == (1.0, 6.0)
    assert noise.median_ci_order([3.0]) == (3.0, 3.0)  # too few samples: the whole range


def test_t_quantile_matches_the_table():
    for df, t in ((4, 2.7764), (9, 2.2622), (29, 2.0452), (1000, 1.9623)):
        assert noise.t_quantile(0.975, df) == pytest.approx(t, abs=2e-3)


def test_resampled_medians_are_numpy_medians_of_the_resamples():
    rng = np.random.default_rng(0)
    for sizes in ([20] * 10, [3, 5, 8, 2, 9, 4]):  # equal rounds and ragged ones (a round cut short)
        blocks = [np.sort(rng.lognormal(0, 0.3, n)) for n in sizes]
        w = rng.multinomial(len(blocks), [1 / len(blocks)] * len(blocks), size=200).astype(float)
        brute = [np.median(np.concatenate([np.tile(b, int(k)) for b, k in zip(blocks, row) if k])) for row in w]
        assert np.array_equal(noise.resampled_medians(blocks, w), np.array(brute))
    blocks = [np.sort(b) for b in rng.lognormal(0, 0.3, (400, 20))]  # more candidates than the grid: interpolated
    w = rng.multinomial(400, [1 / 400] * 400, size=100).astype(float)
    brute = np.array([np.median(np.concatenate([np.tile(b, int(k)) for b, k in zip(blocks, row) if k])) for row in w])
    assert np.max(np.abs(noise.resampled_medians(blocks, w) - brute) / brute) < 1e-3


@pytest.mark.parametrize("round_shift", [0.0, 0.1])
def test_interval_covers_the_true_median_about_95_percent(round_shift):
    """Lognormal calls (true median known), 10 rounds of 20, with and without a per-round multiplicative shift
    (load that changes between rounds): the interval covers the true median ~95% of the time, and the order-
    statistic interval that assumes independent calls does not once rounds shift."""
    rng = np.random.default_rng(7)
    if round_shift:
        big = (rng.lognormal(0, round_shift, (20000, 1)) * rng.lognormal(0, 0.3, (20000, 50))).ravel()
        truth = float(np.median(big))
    else:
        truth = 1.0
    trials, hit, hit_iid = 150, 0, 0
    for _ in range(trials):
        x = rng.lognormal(0, 0.3, (10, 20)) * (rng.lognormal(0, round_shift, (10, 1)) if round_shift else 1.0)
        lo, hi, method = noise.median_ci(x)
        assert method == noise.METHOD_ROUNDS and lo < np.median(x) < hi
        hit += lo <= truth <= hi
        lo, hi = noise.median_ci_order(x.ravel())
        hit_iid += lo <= truth <= hi
    assert 0.89 <= hit / trials <= 0.995, hit / trials
    if round_shift:
        assert hit_iid / trials < hit / trials


def test_few_rounds_fall_back_to_order_statistics_and_say_so():
    lo, hi, method = noise.median_ci([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert method == noise.METHOD_ORDER and (lo, hi) == (1.0, 6.0)


def test_summary_of_rounds_has_p50_interval_spread_and_target():
    rounds = [[1.0, 1.0, 1.0, 1.0]] * 6 + [[2.0, 2.0, 2.0, 2.0]]  # one slow round
    s = noise.summarize_rounds(rounds, target_ci=0.03)
    assert s["rounds"] == 7 and s["calls_per_round"] == [4]
    assert s["round_p50s"] == [1.0] * 6 + [2.0] and s["round_spread_pct"] == pytest.approx(100.0)
    assert s["p50_ci95"][0] <= 1.0 <= s["p50_ci95"][1]
    steady = noise.summarize_rounds([[1.0, 1.0, 1.001]] * 10, target_ci=0.03)
    assert steady["within_target"] and steady["ci_halfwidth_pct"] < 3
    assert not s["within_target"] or s["ci_halfwidth_pct"] <= 3


def test_ratio_interval_and_change_verdicts():
    r, lo, hi = noise.ratio_ci(1.0, (0.97, 1.03), 1.0, (0.97, 1.03))
    assert r == 1.0 and lo < 1 < hi and lo * hi == pytest.approx(1.0)  # symmetric on the log scale
    assert noise.change_verdict(r, lo, hi, 0.05) == "no change"
    r, lo, hi = noise.ratio_ci(2.0, (1.96, 2.04), 1.0, (0.98, 1.02))
    assert r == 2.0 and 1.9 < lo < 2 < hi < 2.1 and noise.change_verdict(r, lo, hi, 0.05) == "slower"
    r, lo, hi = noise.ratio_ci(0.5, (0.49, 0.51), 1.0, (0.98, 1.02))
    assert noise.change_verdict(r, lo, hi, 0.05) == "faster"
    # significant but smaller than the smallest change reported: no change
    r, lo, hi = noise.ratio_ci(1.02, (1.019, 1.021), 1.0, (0.999, 1.001))
    assert lo > 1 and noise.change_verdict(r, lo, hi, 0.05) == "no change"
    assert noise.change_verdict(r, lo, hi, 0.01) == "slower"


# ---- rows, budgets, compare on known inputs ------------------------------------------------------------------------

def _row(model="scn", runtime="executorch", L=25, p50=1.0, ci=(0.98, 1.02), sha="a" * 64):
    r = base_row(model=model, entry="window", runtime=runtime, seq_len=L, target="host-1t", measured_on="host test",
                 cold_start_ms={"load": 5.0, "first_inference": 1.0})
    r["latency_ms"] = {"p50": p50, "p90": p50 * 1.2, "p99": p50 * 1.5, "mean": p50, "min": p50 * 0.9, "runs": 200}
    r["noise"] = {"p50_ci95": list(ci), "ci_halfwidth_pct": 100 * noise.halfwidth(p50, *ci), "rounds": 10,
                  "round_p50_min": ci[0], "round_p50_max": ci[1], "round_spread_pct": 4.0, "stopped": "converged"}
    r["artifact"] = {"file": "x.pte", "sha256": sha}
    return r


def _result(rows, cpu="Test CPU", rules=None):
    b = budgets.Budgets(rules or [], "test")
    for r in rows:
        r["budget"] = budgets.check(r, b)
    env = {"target": {"name": "host-1t", "kind": "host"}, "cpu_model": cpu, "cores": 2, "threads": 1,
           "budgets": b.describe(), "created": "2026-12-07T00:00:00+00:00", "command": "toolkit bench"}
    return {"schema": "toolkit.bench/1", "environment": env, "rows": rows, "summary": summarize(rows)}


def _baseline(result, path):
    path.write_text(json.dumps(result))
    return compare.load_baseline(path)


def test_compare_with_itself_is_no_change_on_every_row(tmp_path):
    res = _result([_row(), _row(runtime="onnxruntime", p50=0.5, ci=(0.45, 0.56)), _row(L=50, p50=2.0, ci=(1.9, 2.2))])
    base = _baseline(res, tmp_path / "b.json")
    s = compare.compare(res, base)
    assert (s["no change"], s["slower"], s["faster"]) == (3, 0, 0)
    for r in res["rows"]:
        c = r["compare"]
        assert c["verdict"] == "no change" and c["ratio"] == 1.0 and c["ratio_ci95"][0] < 1 < c["ratio_ci95"][1]
        assert c["same_artifact"] is True


def test_compare_gets_the_direction_right(tmp_path):
    base = _baseline(_result([_row(p50=1.0), _row(runtime="onnxruntime", p50=1.0), _row(L=50, p50=1.0)]),
                     tmp_path / "b.json")
    now = _result([_row(p50=1.3, ci=(1.27, 1.33), sha="b" * 64),  # a slower artifact
                   _row(runtime="onnxruntime", p50=0.7, ci=(0.68, 0.72)),  # a faster one
                   _row(L=50, p50=1.01, ci=(0.99, 1.03))])  # within the noise
    s = compare.compare(now, base)
    verdicts = [r["compare"]["verdict"] for r in now["rows"]]
    assert verdicts == ["slower", "faster", "no change"] and (s["slower"], s["faster"], s["no change"]) == (1, 1, 1)
    assert now["rows"][0]["compare"]["ratio"] == pytest.approx(1.3) and not now["rows"][0]["compare"]["same_artifact"]
    text = "\n".join(report.noise_lines(now))
    assert "1 slower, 1 faster, 1 no change" in text and "slower: scn window executorch L=25 1.300x" in text


def test_compare_names_a_machine_that_moved_and_stays_quiet_when_it_did_not(tmp_path):
    """The floor probe's matmul throughput of both runs: a whole machine 13% faster is said beside the verdicts;
    a probe within 5%, or a run without one, adds nothing."""
    then = _result([_row(p50=1.0)])
    then["environment"]["floor"] = {"gflops_used": 20.0}
    base = _baseline(then, tmp_path / "b.json")
    now = _result([_row(p50=0.87, ci=(0.86, 0.88))])
    now["environment"]["floor"] = {"gflops_used": 23.0}
    s = compare.compare(now, base)
    assert s["machine_floor"]["ratio"] == pytest.approx(1.15) and now["rows"][0]["compare"]["verdict"] == "no change"
    assert "the machine itself ran 15% faster than for the baseline (matmul floor 23.0 vs 20.0" in compare.sentence(s)
    now["environment"]["floor"] = {"gflops_used": 20.5}
    assert "machine itself" not in compare.sentence(compare.compare(now, base))
    del now["environment"]["floor"]
    s = compare.compare(now, base)
    assert s["machine_floor"] is None and "machine itself" not in compare.sentence(s)


def test_common_shift_is_the_median_ratio_and_names_the_largest_change_against_it(tmp_path):
    """Every row 13% faster, one of them 18%: the median ratio is the common shift, each row's ratio to it is
    recorded, the sentence names the shift and the 6% outlier; verdicts stay on the raw ratios."""
    base = _baseline(_result([_row(L=L, p50=1.0) for L in (10, 25, 50, 100)]), tmp_path / "b.json")
    now = _result([_row(L=10, p50=0.87, ci=(0.86, 0.88)), _row(L=25, p50=0.87, ci=(0.86, 0.88)),
                   _row(L=50, p50=0.87, ci=(0.86, 0.88)), _row(L=100, p50=0.8178, ci=(0.81, 0.825))])
    s = compare.compare(now, base, min_change=0.05)
    shift = s["common_shift"]
    assert shift["median_ratio"] == pytest.approx(0.87) and shift["rows"] == 4
    assert shift["worst_change_vs_shift"] == pytest.approx(0.06, abs=1e-4)
    assert now["rows"][3]["compare"]["ratio_to_shift"] == pytest.approx(0.94, abs=1e-4)
    assert [r["compare"]["verdict"] for r in now["rows"]] == ["faster"] * 4  # a uniform change is still a change
    assert "the rows moved together (median ratio 0.87), and against that common shift no row changed by more " \
           "than 6%" in compare.sentence(s)
    same = _result([_row(L=L, p50=1.0) for L in (10, 25, 50, 100)])
    s = compare.compare(same, base)
    assert s["common_shift"]["median_ratio"] == 1.0 and "moved together" not in compare.sentence(s)
    two = _result([_row(L=10, p50=0.87, ci=(0.86, 0.88)), _row(L=25, p50=0.87, ci=(0.86, 0.88))])
    assert compare.compare(two, base)["common_shift"] is None  # two rows make no median


def test_bad_baselines_are_one_line_naming_what_cannot_be_compared(tmp_path):
    with pytest.raises(ToolkitError, match="cannot compare any row: file not found"):
        compare.load_baseline(tmp_path / "missing.json")
    (tmp_path / "c.json").write_text('{"schema": "toolkit.bench/1", "rows": [')
    with pytest.raises(ToolkitError, match=r"cannot compare any row: not JSON"):
        compare.load_baseline(tmp_path / "c.json")
    (tmp_path / "o.json").write_text('{"schema": "toolkit.device/1", "rows": []}')
    with pytest.raises(ToolkitError, match="not a toolkit bench result"):
        compare.load_baseline(tmp_path / "o.json")
    base = _baseline(_result([_row()], cpu="Other CPU"), tmp_path / "b.json")
    with pytest.raises(ToolkitError, match=r"cannot compare any row: recorded on another machine \(cpu_model "
                                           r"'Other CPU'; this run: cpu_model 'Test CPU'\)"):
        compare.check_machine(base, {"cpu_model": "Test CPU", "cores": 2, "target": "host-1t", "threads": 1})
    old = _row(model="sasrec")
    old["noise"] = None  # recorded before the bench measured intervals
    base = _baseline(_result([_row(), old]), tmp_path / "b2.json")
    wanted = [_row(), _row(model="sasrec"), _row(model="gru4rec"), _row(model="gru4rec", L=50)]
    with pytest.raises(ToolkitError) as e:
        compare.check_rows(base, wanted)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"--compare {tmp_path / 'b2.json'}: cannot compare 3 of 4 rows: ")
    assert "gru4rec window executorch L=25, gru4rec window executorch L=50 (not in the baseline)" in msg
    assert "sasrec window executorch L=25 (no p50 interval in the baseline" in msg
    compare.check_rows(base, [_row()])  # the comparable row alone is fine


@pytest.mark.parametrize("content,needle", [
    (None, "cannot compare any row: file not found"),
    ("not json at all", "cannot compare any row: not JSON"),
    ('{"schema": "toolkit.bench/1", "rows": {}}', "cannot compare any row: malformed bench result"),
])
def test_cli_refuses_a_bad_baseline_in_one_line_with_exit_2(tmp_path, content, needle):
    path = tmp_path / "base.json"
    if content is not None:
        path.write_text(content)
    code, out, err = run_inprocess("bench", "--models", "gru4rec", "--compare", str(path), "--json",
                                   str(tmp_path / "o.json"))
    assert code == 2, (out, err)
    assert needle in err and len([ln for ln in err.splitlines() if ln.strip()]) == 1, err
    assert not (tmp_path / "o.json").exists()


SMALL = ["--models", "gru4rec", "--seq-len", "5", "--runtimes", "torch", "--entries", "window", "--warmup", "1",
         "--candidates", "8", "--n-items", "50", "--budget", "none"]


def test_cli_refuses_another_machine_or_other_models_before_benching(tmp_path):
    here = environment.cpu_model()
    other = _result([_row(model="gru4rec", runtime="torch", L=5)], cpu="Some Other CPU")
    (tmp_path / "m.json").write_text(json.dumps(other))
    code, out, err = run_inprocess("bench", *SMALL, "--compare", str(tmp_path / "m.json"), "--json",
                                   str(tmp_path / "o.json"), "--cache", str(tmp_path / "cache"))
    assert code == 2 and "recorded on another machine" in err and "Some Other CPU" in err, err
    models = _result([_row(model="scn", runtime="torch", L=5)], cpu=here)
    models["environment"]["cores"] = __import__("os").cpu_count()
    (tmp_path / "s.json").write_text(json.dumps(models))
    code, out, err = run_inprocess("bench", *SMALL, "--compare", str(tmp_path / "s.json"), "--json",
                                   str(tmp_path / "o.json"), "--cache", str(tmp_path / "cache"))
    assert code == 2, (out, err)
    assert "cannot compare 1 of 1 row: gru4rec window torch L=5 (not in the baseline)" in err, err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1 and not (tmp_path / "o.json").exists()


def test_inconclusive_budget_is_neither_pass_nor_fail():
    rule = [budgets.Rule(None, None, None, latency_ms=1.0)]
    res = _result([_row(p50=0.99, ci=(0.95, 1.04)),  # the limit inside the interval
                   _row(runtime="onnxruntime", p50=0.9, ci=(0.88, 0.93)),  # clearly within
                   _row(L=50, p50=1.2, ci=(1.1, 1.3))], rules=rule)  # clearly over
    b = [r["budget"] for r in res["rows"]]
    assert [x["verdict"] for x in b] == ["inconclusive", "pass", "over"]
    assert [x["pass"] for x in b] == [None, True, False]
    assert "95% interval 0.95-1.04 ms, straddles 1 ms" in b[0]["inconclusive"][0] and not b[0]["broken"]
    s = res["summary"]
    assert (s["within_budget"], s["over_budget"], s["inconclusive"], s["no_budget"], s["failed"]) == (1, 1, 1, 0, 0)
    assert s["budget_checked"] == 3 and s["pass"] is False  # the over-budget row fails the run, not the inconclusive
    assert report.verdict(res["rows"][0]) == "inconclusive"
    assert "1 inconclusive (the limit is inside the p50's 95% interval): scn window executorch L=25" in \
        report.closing_sentence(res)
    assert report.summary_line(res).endswith(", 1 inconclusive")
    alone = _result([_row(p50=1.01, ci=(0.97, 1.05))], rules=rule)
    assert alone["summary"]["pass"] is True and alone["summary"]["inconclusive"] == 1  # exit 0 (with a warning)
    # a memory overrun still fails a row whose latency is inconclusive; a p90 limit has no interval: judged as before
    mem = _result([_row(p50=0.99, ci=(0.95, 1.04))], rules=[budgets.Rule(None, None, None, latency_ms=1.0,
                                                                         memory_bytes=1.0)])
    mem["rows"][0]["memory"]["rss_peak_delta_bytes"] = 10
    assert budgets.check(mem["rows"][0], budgets.Budgets([budgets.Rule(None, None, None, latency_ms=1.0,
                                                                       memory_bytes=1.0)], "t"))["pass"] is False
    p90 = budgets.check(_row(p50=0.99, ci=(0.95, 1.04)),
                        budgets.Budgets([budgets.Rule(None, None, None, latency_ms=1.0, latency_stat="p90")], "t"))
    assert p90["verdict"] == "over" and p90["pass"] is False


def test_machine_busy_is_recorded_and_warned():
    start = {"t": 0.0, "load_average": [1.7, 1.0, 0.5], "cpu": {"busy_s": 100.0, "idle_s": 100.0, "steal_s": 1.0},
             "own_cpu_s": 10.0}
    end = {"t": 10.0, "load_average": [2.0, 1.2, 0.6], "cpu": {"busy_s": 115.0, "idle_s": 105.0, "steal_s": 2.0},
           "own_cpu_s": 19.0}
    b = environment.busy(start, end, cores=2)
    assert b["steal_pct"] == pytest.approx(5.0) and b["other_cpu_cores"] == pytest.approx(0.6)
    assert b["busy"] and len(b["busy_reasons"]) == 2 and b["steal_s_start"] == 1.0 and b["steal_s_end"] == 2.0
    assert not any(r.startswith("load average") for r in b["busy_reasons"])  # measured CPU decides, not the average
    idle = environment.busy({**start, "load_average": [0.1, 0.1, 0.1]},
                            {**end, "cpu": {"busy_s": 109.1, "idle_s": 110.9, "steal_s": 1.0}}, cores=2)
    assert not idle["busy"] and idle["busy_reasons"] == []
    # a high load average left by work that has ended (the previous bench, a build) is recorded, not a warning
    after = environment.busy(start, {**end, "cpu": {"busy_s": 109.1, "idle_s": 110.9, "steal_s": 1.0}}, cores=2)
    assert not after["busy"] and after["load_average_start"] == [1.7, 1.0, 0.5]
    # without /proc/stat the load average is all there is to go by
    blind = environment.busy({**start, "cpu": None}, {**end, "cpu": None}, cores=2)
    assert blind["busy"] and blind["busy_reasons"] == ["load average 1.70 at the start (2 cores)"]
    snap = environment.snapshot()
    assert snap["cpu"] is None or snap["cpu"]["busy_s"] > 0


@pytest.mark.slow
def test_real_bench_in_rounds_then_compare_against_slower_and_faster_baselines(tmp_path):
    """End to end through the CLI: a tiny eager model timed in 10 rounds; its JSON as a baseline scaled 3x (a
    deliberately slower / faster synthetic baseline) gives the right direction and exit code."""
    out = tmp_path / "run.json"
    code, text, err = run_inprocess("bench", *SMALL, "--runs", "40", "--json", str(out),
                                    "--cache", str(tmp_path / "cache"))
    assert code == 0, (text, err)
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    nz = row["noise"]
    assert nz["rounds"] == 10 and nz["calls_per_round"] == [4] and row["latency_ms"]["runs"] == 40
    assert nz["p50_ci95"][0] <= row["latency_ms"]["p50"] <= nz["p50_ci95"][1] and nz["stopped"] == "fixed"
    assert res["environment"]["rounds"]["groups"][0]["stop"] == "fixed"
    assert {"load_average_start", "load_average_end", "steal_pct", "busy"} <= set(res["environment"]["machine_load"])
    assert "interleaved rounds" in text
    for scale, verdict, rc in ((1 / 3, "slower", 1), (3.0, "faster", 0)):
        base = copy.deepcopy(res)
        b = base["rows"][0]
        b["latency_ms"]["p50"] *= scale
        b["noise"]["p50_ci95"] = [x * scale for x in b["noise"]["p50_ci95"]]
        (tmp_path / "base.json").write_text(json.dumps(base))
        code, text, err = run_inprocess("bench", *SMALL, "--runs", "40", "--json", str(tmp_path / "again.json"),
                                        "--cache", str(tmp_path / "cache"), "--compare", str(tmp_path / "base.json"))
        assert code == rc, (text, err)
        again = json.loads((tmp_path / "again.json").read_text())
        c = again["rows"][0]["compare"]
        assert c["verdict"] == verdict and again["compare"][verdict] == 1, c
        assert math.isclose(c["ratio"], again["rows"][0]["latency_ms"]["p50"] / b["latency_ms"]["p50"])
        assert "vs base" in text
