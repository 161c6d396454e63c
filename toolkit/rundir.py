"""The run dir of `toolkit train`: checked before any work, locked while written, replaced only when complete.

Three ways a run dir is written (`RunDir.mode`):
  resume   --resume: the existing run continues in place (its checkpoint is the point of the run dir);
  fresh    OUT missing or empty: training writes OUT in place, so Ctrl-C keeps the last epoch's checkpoint for
           --resume (with --seeds: every finished seed and the running seed's last epoch); a run stopped before
           any checkpoint leaves OUT as it was (absent or empty);
  replace  --force over a non-empty OUT: training writes a staging dir beside OUT (`.OUT.<pid>.<rand>.tmp`) and
           the finished run is swapped in (toolkit.io.swap_in); an error, Ctrl-C or SIGTERM at any moment removes
           the staging dir and leaves OUT byte for byte as it was.
In every mode OUT is locked (toolkit.io.dir_lock): a second writer is refused with the holder's pid.

Light on purpose (no numpy, no torch): the CLI calls `check_run_dir` before anything heavy is imported.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from toolkit.errors import ToolkitError

CHECKPOINT = "checkpoint.pt"  # toolkit.train.loop.CHECKPOINT (not imported: that module imports torch)
SEED_RUN = "seed-{}"  # `--seeds`: the run dir of each seed inside OUT (toolkit.train.seeds)


def check_run_dir(out: Path, resume: bool, force: bool, inputs: dict[str, Path | None] | None = None) -> str:
    """Every refusal about --out, before any work and without touching it; returns the mode (see above)."""
    from toolkit.io import check_apart, check_not_symlink

    if resume and force:
        raise ToolkitError("--resume and --force contradict each other")
    check_apart(out, inputs or {})
    if resume:
        if not out.is_dir():
            raise ToolkitError(f"nothing to resume: run dir {out} not found")
        return "resume"
    if out.is_symlink() and not out.exists():
        raise ToolkitError(f"--out {out} is a symbolic link to nothing ({os.readlink(out)}): give a folder")
    if out.exists() and not out.is_dir():
        raise ToolkitError(f"--out {out} is a file, not a run dir")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ToolkitError(f"run dir {out} is not empty (use --resume to continue it or --force to replace it)")
        check_not_symlink(out)
        return "replace"
    return "fresh"


@dataclass
class RunDir:
    out: Path
    mode: str
    path: Path = field(default=None)  # where training writes: `out`, or the staging dir in mode "replace"

    def checkpointed(self) -> bool:
        """A checkpoint in OUT, or in a seed's run OUT/seed-S (`--seeds`): finished seeds are kept too."""
        return self.mode != "replace" and ((self.path / CHECKPOINT).is_file()
                                           or any(self.path.glob(f"{SEED_RUN.format('*')}/{CHECKPOINT}")))

    def interrupted_line(self, resume_cmd: str) -> str:
        """What a Ctrl-C left, in one line (nothing is claimed that is not on disk)."""
        if self.mode == "replace":
            return f"the run in {self.out} is unchanged (the new run was not kept)"
        if self.checkpointed():
            return f"the last finished epoch is checkpointed in {self.out}; continue with {resume_cmd}"
        if self.mode == "resume":
            return f"the run in {self.out} is as it was; continue with {resume_cmd}"
        return f"no epoch had finished, nothing was kept in {self.out}"


@contextlib.contextmanager
def writing(out: Path, resume: bool, force: bool, inputs: dict[str, Path | None] | None = None) -> Iterator[RunDir]:
    """Lock OUT and yield the RunDir training writes; see the module doc for what each mode leaves on failure."""
    from toolkit.io import dir_lock, staging_dir, swap_in

    out = Path(out)
    with dir_lock(out, "run dir"):
        mode = check_run_dir(out, resume, force, inputs)  # again under the lock: another writer may have been first
        if mode == "resume":
            yield RunDir(out, mode, out)
            return
        if mode == "fresh":
            existed = out.is_dir()
            rd = RunDir(out, mode, out)
            try:
                yield rd
            except BaseException:
                if not rd.checkpointed():  # nothing to resume: leave OUT as it was (absent or empty)
                    if existed:
                        for p in list(out.iterdir()) if out.is_dir() else []:
                            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else \
                                p.unlink(missing_ok=True)
                    else:
                        shutil.rmtree(out, ignore_errors=True)
                raise
            return
        tmp = staging_dir(out)
        try:
            yield RunDir(out, mode, tmp)
            swap_in(tmp, out, force=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def check_inputs(model: str, data: Path, base_run: Path | None, init: Path | None, cfg: dict) -> None:
    """What `toolkit train` reads, checked with light code (no torch) before anything is written: the dataset dir,
    the gate's base run (a cloud model's run), the --init run, and the config keys and values of the model."""
    from toolkit.io import read_json
    from toolkit.models.registry import CLOUD_MODELS, check_config

    if not data.exists():
        raise ToolkitError(f"dataset dir not found: {data} (create one with `toolkit data prepare` or "
                           "`toolkit data synth`)")
    if not data.is_dir() and data.name != "dataset.json":
        raise ToolkitError(f"dataset path is not a directory: {data}")
    for flag, run in (("--model", base_run), ("--init", init)):
        if run is None:
            continue
        if not run.is_dir():
            raise ToolkitError(f"{flag} {run}: run dir not found")
        if not (run / "model.json").is_file():
            raise ToolkitError(f"{flag} {run}: not a run dir (no model.json)")
    if base_run is not None:
        desc = read_json(base_run / "model.json", "run descriptor")
        if desc.get("model") not in CLOUD_MODELS:
            raise ToolkitError(f"the gate decides when to ask the cloud for an update; {base_run} is a "
                               f"'{desc.get('model')}' run, which has none (usable: {', '.join(CLOUD_MODELS)})")
    if model not in ("gate", "pop", "cooc"):  # the count baselines take no config (the CLI refuses --config)
        check_config(model, cfg)
