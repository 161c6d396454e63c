"""`toolkit pipeline`: the stage scheduler on real processes, and the whole main job end to end at a tiny size."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cli_helpers import cli, run_inprocess

from toolkit.pipeline.stages import Stage, check_plan, run_stages

PY = [sys.executable, "-c"]


def _sleeper(name: str, seconds: float, stamp_dir: Path, rc: int = 0) -> list[str]:
    """A stage that records when it started and ended (wall clock), sleeps, and exits rc."""
    return [f"import time,sys,pathlib; p=pathlib.Path({str(stamp_dir)!r}); "
            f"(p/'{name}.start').write_text(repr(time.time())); time.sleep({seconds}); "
            f"(p/'{name}.end').write_text(repr(time.time())); sys.exit({rc})"]


def _span(stamps: Path, name: str) -> tuple[float, float]:
    return float((stamps / f"{name}.start").read_text()), float((stamps / f"{name}.end").read_text())


def _run(stages, tmp_path, jobs):
    events = []
    results, failed = run_stages(stages, PY, jobs, tmp_path / "logs",
                                 lambda kind, s, r, running: events.append((kind, s.name, list(running))))
    return results, failed, events


def test_scheduler_runs_independent_stages_side_by_side_and_respects_dependencies(tmp_path):
    st = tmp_path / "stamps"
    st.mkdir()
    stages = [Stage("a", _sleeper("a", 1.0, st)), Stage("b", _sleeper("b", 1.0, st)),
              Stage("c", _sleeper("c", 0.1, st), after=("a",)),
              Stage("alone", _sleeper("alone", 0.1, st), after=("c",), alone=True)]
    results, failed, events = _run(stages, tmp_path, jobs=2)
    assert failed is None and [r.rc for r in results] == [0, 0, 0, 0]
    a, b, c, alone = (_span(st, n) for n in ("a", "b", "c", "alone"))
    assert a[0] < b[1] and b[0] < a[1], "a and b should overlap with 2 jobs"
    assert c[0] >= a[1], "c reads a's files: it must start after a ended"
    assert alone[0] >= max(a[1], b[1], c[1]), "the alone stage runs with nothing beside it"
    starts = [e for e in events if e[0] == "start"]
    assert next(e for e in starts if e[1] == "alone")[2] == ["alone"]
    for r in results:
        assert r.seconds > 0 and r.cpu_seconds >= 0
        if not r.stage.alone:
            assert r.log is not None and r.log.is_file() and r.log.read_text().startswith("$ toolkit")


def test_scheduler_one_job_runs_stages_one_after_another(tmp_path):
    st = tmp_path / "stamps"
    st.mkdir()
    stages = [Stage("a", _sleeper("a", 0.3, st)), Stage("b", _sleeper("b", 0.3, st))]
    _, failed, _ = _run(stages, tmp_path, jobs=1)
    assert failed is None
    assert _span(st, "b")[0] >= _span(st, "a")[1]


def test_scheduler_stops_starting_stages_after_a_failure(tmp_path):
    st = tmp_path / "stamps"
    st.mkdir()
    stages = [Stage("bad", _sleeper("bad", 0.1, st, rc=3)), Stage("slow", _sleeper("slow", 1.0, st)),
              Stage("after_bad", _sleeper("after_bad", 0.1, st), after=("bad",)),
              Stage("later", _sleeper("later", 0.1, st))]
    results, failed, _ = _run(stages, tmp_path, jobs=2)
    assert failed is not None and failed.name == "bad"
    names = {r.stage.name: r.rc for r in results}
    assert names["bad"] == 3 and names["slow"] == 0, "a running stage finishes; its files stay usable"
    assert "after_bad" not in names and "later" not in names
    assert not (st / "after_bad.start").exists()


def test_plan_order_must_list_dependencies_first():
    with pytest.raises(ValueError, match="later stage"):
        check_plan([Stage("b", ["x"], after=("a",)), Stage("a", ["x"])])


@pytest.mark.parametrize("flag,value,needle", [("--jobs", "0", "--jobs must be >= 1"),
                                               ("--users", "3", "--users must be >= 10"),
                                               ("--baselines", "bert", "unknown baseline 'bert'")])
def test_pipeline_bad_flags_are_one_line(flag, value, needle, tmp_path):
    rc, out, err = run_inprocess("pipeline", "--out", tmp_path / "o", flag, value)
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_pipeline_dry_run_lists_the_quick_plan(tmp_path):
    rc, out, err = run_inprocess("pipeline", "--out", tmp_path / "o", "--dry-run")
    assert rc == 0, err
    text = " ".join(out.split())
    assert "train cocorrrec" in text and "train sasrec" in text and "train gru4rec" not in text
    assert "--users 1000" in text and "--epochs 4" in text and "--runs 30" in text
    assert "--batch-size 256 --lr 3e-3" in text
    rc, out, _ = run_inprocess("pipeline", "--out", tmp_path / "o", "--dry-run", "--full")
    text = " ".join(out.split())
    assert rc == 0 and "train gru4rec" in text and "train din" in text and "--users 2000" in text


@pytest.mark.slow
def test_pipeline_end_to_end_tiny(tmp_path):
    """The real main job at a tiny size: every stage runs, the bench times exactly the verified files."""
    out = tmp_path / "out"
    proc = cli("pipeline", "--out", out, "--users", "80", "--epochs", "1", "--runs", "3", "--format", "onnx",
               "--baselines", "sasrec", "--budget", "none")
    summary = json.loads((out / "pipeline.json").read_text())
    assert summary["ok"] is True and summary["not_run"] == [] and summary["jobs"] == 2
    names = [s["stage"] for s in summary["stages"]]
    assert len(names) == 13 and names[-1].startswith("bench"), names
    assert all(s["rc"] == 0 and s["cpu_seconds"] > 0 for s in summary["stages"])
    for s in summary["stages"][:-1]:
        assert Path(s["log"]).is_file()
    said = " ".join(proc.stdout.split())
    assert "expected about" in said and "done in" in said
    bench = json.loads((out / "bench" / "bench.json").read_text())
    shipped = {}
    for m in (out / "artifacts").glob("*/manifest.json"):
        for a in json.loads(m.read_text())["artifacts"]:
            shipped[a["sha256"]] = a["file"]
    assert bench["rows"] and all(r["artifact"]["sha256"] in shipped for r in bench["rows"]
                                 if r["runtime"] != "torch")
    assert {r["model"] for r in bench["rows"]} == {"scn", "gate", "sasrec"}
    acc = bench["accuracy"]  # the verdict also ranked the synthetic test users through the shipped files
    assert acc["checked"] is True and acc["failed"] == []
    ranked = {r["file"]: r for r in acc["precision_table"] if r["status"] == "evaluated"}
    assert any(f.startswith("scn.step") for f in ranked) and any(f.startswith("sasrec.window") for f in ranked)
    assert all(abs(r["ndcg_drop"]) <= 1e-4 for r in ranked.values()), "fp32 files rank as eager"
    assert "precision table" in said
