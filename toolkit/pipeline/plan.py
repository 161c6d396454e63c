"""The pipeline's plan: its flags checked (`prepare`), the settings of each size, and the stage list (`plan`).

Two sizes. The default is a first run in minutes: fewer synthetic users and epochs, fewer timed runs, every stage
real. `--full` is the heavier job (2,000 users, 5 epochs, every baseline, 50 timed runs per bench cell). On the
synthetic default the recommenders train with batch 256 and lr 3e-3, the settings that converged there
(benches/baselines/edge_cloud_synth.json); on --data the training defaults apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from toolkit.checks import check_number, check_out, parse_csv
from toolkit.errors import ToolkitError
from toolkit.pipeline.stages import Stage

BASELINES = ("gru4rec", "sasrec", "din")

# (users, epochs, timed runs per bench cell, baselines) of each size. The quick job keeps SASRec, the Transformer the
# SCN paper compares against; GRU4Rec's unrolled recurrence alone costs more export time than the whole SCN.
SIZES = {"quick": (1000, 4, 30, ("sasrec",)), "full": (2000, 5, 50, BASELINES)}
SYNTH_TRAINING = ["--batch-size", "256", "--lr", "3e-3"]  # small synthetic data: smaller batches, faster steps
# Wall seconds each size took with its default settings on an idle 2-core machine (benches/baselines/pipeline.json,
# measured 2026-12-02): printed up front so a user knows what to expect.
MEASURED_SECONDS = {"quick": 127, "full": 213}


@dataclass
class PipelineRequest:
    """The flags of `toolkit pipeline`, as given (None: the size's default)."""

    out: Path = Path("out")
    data: Optional[Path] = None
    full: bool = False
    epochs: Optional[int] = None
    seq_len: Optional[int] = None
    targets: str = "executorch,onnx,coreml"
    runs: Optional[int] = None
    users: Optional[int] = None
    baselines: Optional[str] = None
    budget: Optional[Path] = None
    jobs: int = 2
    force: bool = False


@dataclass
class Job:
    """A checked request: the size, the settings in force, and the stages to run."""

    out: Path
    data: Optional[Path]
    size: str
    custom: bool  # a setting other than the size's defaults (the expected time is then only a guide)
    epochs: int
    seq_len: int
    targets: str
    runs: int
    users: int
    baselines: list[str]
    jobs: int
    stages: list[Stage]

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    @property
    def expected_seconds(self) -> int:
        return MEASURED_SECONDS[self.size]


def prepare(r: PipelineRequest) -> Job:
    """Check every flag and the dataset (one line each, before any stage starts), and plan the stages."""
    size = "full" if r.full else "quick"
    d_users, d_epochs, d_runs, d_baselines = SIZES[size]
    custom = any(v is not None for v in (r.epochs, r.runs, r.users, r.baselines)) or r.data is not None
    baselines = ",".join(d_baselines) if r.baselines is None else r.baselines
    epochs = d_epochs if r.epochs is None else r.epochs
    runs = d_runs if r.runs is None else r.runs
    users = d_users if r.users is None else r.users
    check_number(epochs, "--epochs", lo=1, hi=1_000_000)
    check_number(r.seq_len, "--seq-len", lo=1, hi=4096)
    check_number(runs, "--runs", lo=1, hi=1_000_000)
    check_number(users, "--users", lo=10, hi=10_000_000)
    check_number(r.jobs, "--jobs", lo=1, hi=64)
    check_out(r.out)
    data, out = r.data, r.out
    if data is not None and not (data / "dataset.json").is_file():
        raise ToolkitError(f"--data {data} is not a prepared dataset dir (no dataset.json); "
                           "run `toolkit data prepare` first")
    prepared = None
    if data is not None:  # a dataset inside OUT (OUT/data of an earlier run) is fine; OUT in the dataset is not
        a, o = data.resolve(), out.resolve()
        if o == a or o.is_relative_to(a):
            raise ToolkitError(f"--out {out} {'is' if o == a else 'lies inside'} the dataset {data}: refusing to "
                               "write into an input")
        from toolkit.data import load_dataset

        prepared = load_dataset(data).seq_len  # a corrupt dataset is one line here, before any stage starts
    seq_len = _window(data, prepared, r.seq_len)
    base = parse_csv(baselines, "baseline", BASELINES) if baselines.strip() else []
    stages = plan(out, data, epochs, seq_len, r.targets, runs, users, base, r.budget, r.force)
    return Job(out, data, size, custom, epochs, seq_len, r.targets, runs, users, base, r.jobs, stages)


def plan(out: Path, data: Optional[Path], epochs: int, seq_len: int, targets: str, runs: int, users: int,
         baselines: list[str], budget: Optional[Path], force: bool) -> list[Stage]:
    """The stage list, as argv of real `toolkit` commands, with the stages each one reads from (plan order is the
    priority when several could start: the critical path cocorrrec -> gate -> curve comes first)."""
    data_dir = data if data is not None else out / "data"
    runs_dir, art, bench = out / "runs", out / "artifacts", out / "bench"
    f = ["--force"] if force else []
    stages: list[Stage] = []
    data_dep: tuple[str, ...] = ()
    if data is None:
        stages.append(Stage("data: synthetic default", ["data", "synth", "--out", str(data_dir), "--users", str(users),
                                                        "--seq-len", str(seq_len), *f]))
        data_dep = ("data: synthetic default",)
    # CoCorrRec with the cloud correction that carries per-user signal (the TTT state correction from the cloud's
    # longer history): the gate then decides about an update worth asking for, and the device artifact is the SCN
    cloud = ["--config", "cloud=history"]
    gate = runs_dir / "gate"

    tuned = SYNTH_TRAINING if data is None else []

    def train(model: str) -> Stage:
        return Stage(f"train {model}", ["train", model, *(cloud if model == "cocorrrec" else []), "--data",
                                        str(data_dir), "--out", str(runs_dir / model), "--epochs", str(epochs),
                                        *tuned, "--force"], after=data_dep)

    def export(name: str, run: Path, after: str, window: bool = True) -> Stage:
        return Stage(f"export {name}", ["export", str(run), "--format", targets,
                                        *(["--seq-len", str(seq_len)] if window else []),
                                        "--out", str(art / name), "--force"], after=(after,))

    stages += [
        train("cocorrrec"),
        Stage("train gate", ["train", "gate", "--data", str(data_dir), "--model", str(runs_dir / "cocorrrec"),
                             "--out", str(gate), "--epochs", str(epochs), "--force"], after=("train cocorrrec",)),
        Stage("gate calibrate (10% budget)", ["gate", "calibrate", str(gate), "--data", str(data_dir),
                                              "--budget", "0.1"], after=("train gate",)),
        export("scn", runs_dir / "cocorrrec", "train cocorrrec"),
        *(train(b) for b in baselines),
        Stage("gate curve", ["gate", "curve", str(gate), "--data", str(data_dir), "--out", str(out / "gate_curve"),
                             "--force"], after=("gate calibrate (10% budget)",)),
        export("gate", gate, "train gate", window=False),
        *(export(b, runs_dir / b, f"train {b}") for b in baselines),
    ]
    shipped = ["scn", "gate", *baselines]
    stages += [Stage(f"verify {a}", ["verify", str(art / a)], after=(f"export {a}",)) for a in shipped]
    bench_cmd = ["bench", *(str(art / a) for a in shipped),
                 "--seq-len", str(seq_len), "--runs", str(runs), "--json", str(bench / "bench.json"),
                 "--junit", str(bench / "junit.xml"), "--plot", str(bench / "bench.png"),
                 "--data", str(data_dir)]  # the verdict also ranks the test users through the shipped files
    if budget is not None:
        bench_cmd += ["--budget", str(budget)]
    stages.append(Stage(f"bench at L={seq_len}", bench_cmd, after=tuple(f"verify {a}" for a in shipped),
                        alone=True))
    return stages


def _window(data: Optional[Path], prepared: Optional[int], seq_len: Optional[int]) -> int:
    """The job's window: --seq-len, or the dataset's (`prepared`, from its loaded descriptor); longer than the
    dataset's windows is refused (the models would be exported at positions they never trained on: prepare the
    dataset with that --seq-len instead)."""
    if data is None:
        return 25 if seq_len is None else seq_len
    if seq_len is not None and seq_len > prepared:
        raise ToolkitError(f"--seq-len {seq_len} is longer than the {prepared}-click windows {data} was prepared "
                           f"with: prepare it with `toolkit data prepare ... --seq-len {seq_len}`")
    return prepared if seq_len is None else seq_len
