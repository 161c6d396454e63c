"""Training speed of one SCN step (forward + backward + Adam) on 1024 rows, single thread, before vs after.

Usage (from the repository root, PYTHONPATH=.):
    python benches/train_speed.py [--before REV] [--rows 1024] [--seq-len 10] [--steps 20] [--model scn|cocorrrec]

"before" is the model code (toolkit/models/ttt.py + scn.py) at git revision REV (default: 5086e0f, the last commit
before the fast training path), loaded from `git show` into its own modules and given the same weights; "after" is the
working tree. Both run interleaved in one process (A B A B ...) so machine load hits both alike; CPU time
(time.process_time) per step is reported with the load average. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _git_show(rev: str, path: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True, capture_output=True,
                          text=True).stdout


def load_before(rev: str):
    """toolkit/models/ttt.py and scn.py at `rev` as modules `ttt_before` / `scn_before` (scn_before uses
    ttt_before; everything else it imports is the working tree's)."""
    tmp = Path(tempfile.mkdtemp())
    mods = {}
    for name, path, fix in (("ttt_before", "toolkit/models/ttt.py", None),
                            ("scn_before", "toolkit/models/scn.py", (
                                ("from toolkit.models.ttt import", "from ttt_before import", True),
                                ("toolkit.exporters.contract", "toolkit.models.contract", False)))):  # since moved
        src = _git_show(rev, path)
        for old, new, required in fix or ():
            assert old in src or not required, old
            src = src.replace(old, new)
        (tmp / f"{name}.py").write_text(src)
        spec = importlib.util.spec_from_file_location(name, tmp / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        mods[name] = mod
    return mods["scn_before"]


def build(model_name: str, n_items: int, scn_mod=None):
    """The working tree's model, or (scn_mod given) the same model class from `scn_mod`, with identical weights."""
    from toolkit.models.registry import build as build_model

    torch.manual_seed(0)
    model = build_model(model_name, n_items)
    if scn_mod is not None:
        cls = {"scn": scn_mod.SCN, "cocorrrec": scn_mod.CoCorrRec}[model_name]
        old = cls(model.cfg)
        old.load_state_dict(model.state_dict())
        model = old
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default="5086e0f")
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--seq-len", type=int, default=10)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--model", default="scn")
    ap.add_argument("--n-items", type=int, default=12101)
    ap.add_argument("--compiled", action="store_true", help="also time the working tree with compile_train=true")
    ap.add_argument("--note", default="ratios (interleaved in one process) are the meaningful number")
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    items = torch.randint(1, args.n_items + 1, (args.rows, args.seq_len), generator=g)
    items[::3, args.seq_len * 2 // 3:] = 0  # some right-padded rows, as in real data
    cands = torch.randint(1, args.n_items + 1, (args.rows, 5), generator=g)
    labels = torch.zeros(args.rows, 5)
    labels[:, 0] = 1
    loss_fn = torch.nn.BCEWithLogitsLoss()
    variants = {"before": build(args.model, args.n_items, load_before(args.before)),
                "after": build(args.model, args.n_items)}
    compile_s = None
    if args.compiled:
        variants["after_compiled"] = build(args.model, args.n_items)
        scn = getattr(variants["after_compiled"], "scn", variants["after_compiled"])
        scn.cfg.compile_train = True
    from toolkit.train.optim import make_optimizer

    # before: the Adam training used then; after: the training loop's own optimizer (fused Adam)
    opts = {k: torch.optim.Adam(m.parameters(), 1e-3) if k == "before" else make_optimizer(m, 1e-3, 0.0, False)
            for k, m in variants.items()}

    def step(k):
        m, opt = variants[k], opts[k]
        loss = loss_fn(m(items, cands), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    first = {}
    for k in variants:  # same weights, same batch: the same loss
        t = time.perf_counter()
        first[k] = step(k)
        if k == "after_compiled":
            compile_s = round(time.perf_counter() - t, 1)
    for _ in range(2):
        for k in variants:
            step(k)
    cpu = {k: [] for k in variants}
    load0 = os.getloadavg()
    for _ in range(args.steps):
        for k in variants:
            t = time.process_time()
            step(k)
            cpu[k].append(time.process_time() - t)
    load1 = os.getloadavg()
    med = {k: sorted(v)[len(v) // 2] for k, v in cpu.items()}
    print(json.dumps({
        "what": f"one {args.model} training step (forward + backward + Adam), {args.rows} rows, L = {args.seq_len}, "
                "1 thread, CPU seconds per step (median), before/after interleaved in one process",
        "command": "PYTHONPATH=. OMP_NUM_THREADS=1 python " + " ".join(sys.argv),
        "before_rev": args.before,
        "first_loss": first,
        "cpu_s_per_step_median": {k: round(v, 4) for k, v in med.items()},
        "cpu_s_per_step_min": {k: round(min(v), 4) for k, v in cpu.items()},
        "speedup_median": {k: round(med["before"] / med[k], 2) for k in med if k != "before"},
        "compile_first_step_s": compile_s,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__},
        "load_average_1_5_15": {"start": [round(x, 2) for x in load0], "end": [round(x, 2) for x in load1]},
        "note": args.note,
    }, indent=1))


if __name__ == "__main__":
    main()
