"""Trajectory parity: N sequential calls in eager PyTorch (the functional module, carrying state) and in the artifact
through its real runtime; outputs AND state compared at every step (a dropped state update shows at step 2).

Tolerance per output/state and step: max|artifact - eager| <= atol + rtol * max|eager| (atol/rtol from the recipe).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from toolkit.exporters.common import to_numpy
from toolkit.exporters.contract import EntryPoint
from toolkit.io import read_npz

# a trajectory step: {"inputs": [np...], "outputs": [np...], "states": [np...] (state AFTER the step)}
Step = dict


def trajectory_inputs(entry: EntryPoint, steps: int, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """Deterministic valid inputs for each step (a different draw per step)."""
    return [entry.example_inputs(seed=seed + i) for i in range(steps)]


def _split(entry: EntryPoint, outs) -> tuple[list, list]:
    if not isinstance(outs, (tuple, list)):
        outs = (outs,)
    n = len(entry.outputs)
    if len(outs) != n + len(entry.states):
        raise ValueError(f"entry '{entry.name}' returned {len(outs)} tensors, declared "
                         f"{n} outputs + {len(entry.states)} states")
    return list(outs[:n]), list(outs[n:])


def eager_trajectory(entry: EntryPoint, inputs: list[tuple], state_dtype: torch.dtype | None = None) -> list[Step]:
    """Run the functional module step by step, feeding each step's new state into the next.

    `state_dtype` (e.g. float16) rounds the carried state after every step, as a runtime storing it so would.
    """
    states = list(entry.initial_states())
    if state_dtype is not None:
        states = [s.to(state_dtype).to(s.dtype) for s in states]
    steps = []
    with torch.no_grad():
        for inp in inputs:
            outs, new = _split(entry, entry.module(*inp, *states))
            if state_dtype is not None:
                new = [s.to(state_dtype).to(s.dtype) for s in new]
            states = new
            steps.append({"inputs": [to_numpy(x) for x in inp], "outputs": [to_numpy(o).copy() for o in outs],
                          "states": [to_numpy(s).copy() for s in new]})
    return steps


def runtime_trajectory(runner, inputs: list) -> list[Step]:
    """The same calls through a Runner (which carries the state itself)."""
    runner.reset()
    names = [s["name"] for s in runner.states]
    steps = []
    for inp in inputs:
        arrays = [to_numpy(x) for x in inp]
        outs = runner(*arrays)
        st = runner.state()
        steps.append({"inputs": arrays, "outputs": [np.asarray(o) for o in outs], "states": [st[n] for n in names]})
    return steps


def compare(ref: list[Step], got: list[Step], output_names: list[str], state_names: list[str],
            atol: float, rtol: float) -> dict:
    """Per-step max abs errors for every output and state, the allowance, and the verdict (NaN fails)."""
    keys = list(output_names) + [f"state.{n}" for n in state_names]
    errors = {k: [] for k in keys}
    allowed = {k: [] for k in keys}
    worst = None
    ok = True
    for i, (r, g) in enumerate(zip(ref, got)):
        for k, a, b in zip(keys, r["outputs"] + r["states"], g["outputs"] + g["states"]):
            a64 = np.asarray(a, dtype=np.float64)
            b64 = np.asarray(b, dtype=np.float64)
            if a64.shape != b64.shape:
                err = float("inf")
            else:
                diff = np.abs(a64 - b64)
                err = float(diff.max()) if diff.size else 0.0
                if not np.isfinite(b64).all():
                    err = float("inf")
            lim = atol + rtol * (float(np.abs(a64).max()) if a64.size else 0.0)
            errors[k].append(err)
            allowed[k].append(lim)
            if not err <= lim:
                ok = False
            if worst is None or err - lim > worst["error"] - worst["allowed"]:
                worst = {"name": k, "step": i, "error": err, "allowed": lim}
    if len(got) != len(ref):
        ok = False
    return {"steps": len(ref), "tolerance": {"atol": atol, "rtol": rtol}, "max_abs_error": errors,
            "allowed": allowed, "worst": worst, "pass": ok}


def failure_line(result: dict) -> str:
    w = result.get("worst") or {}
    return (f"'{w.get('name')}' at step {w.get('step')}: max abs error {w.get('error'):.3g} > allowed "
            f"{w.get('allowed'):.3g}") if w else "no steps compared"


# --- test vectors: the trajectory on disk, so a device (or `toolkit verify`) can check itself --------------------

def save_test_vectors(path: Path, steps: list[Step], input_names: list[str], output_names: list[str],
                      state_names: list[str], initial: list[np.ndarray]) -> None:
    """npz keys: initial/state/<s>, step<i>/in/<input>, step<i>/out/<output>, step<i>/state/<s> (after step i)."""
    arrays = {f"initial/state/{n}": v for n, v in zip(state_names, initial)}
    for i, st in enumerate(steps):
        arrays.update({f"step{i}/in/{n}": v for n, v in zip(input_names, st["inputs"])})
        arrays.update({f"step{i}/out/{n}": v for n, v in zip(output_names, st["outputs"])})
        arrays.update({f"step{i}/state/{n}": v for n, v in zip(state_names, st["states"])})
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_test_vectors(path: Path, input_names: list[str], output_names: list[str],
                      state_names: list[str]) -> list[Step]:
    z = read_npz(path, "test vectors")  # toolkit.io: allow_pickle=False, corrupt -> one line naming the file
    n = 0
    while f"step{n}/in/{input_names[0]}" in z:
        n += 1
    steps = []
    for i in range(n):
        steps.append({"inputs": [z[f"step{i}/in/{k}"] for k in input_names],
                      "outputs": [z[f"step{i}/out/{k}"] for k in output_names],
                      "states": [z[f"step{i}/state/{k}"] for k in state_names]})
    return steps
