"""Trajectory parity: N sequential calls in eager PyTorch (the functional module, carrying state) and in the artifact
through its real runtime; outputs AND state compared at every step (a dropped state update shows at step 2).

Tolerance per output/state and step: max|artifact - eager| <= atol + rtol * max|eager| (atol/rtol from the recipe).
"""

from __future__ import annotations

import numpy as np
import torch

from toolkit.exporters.common import to_numpy
from toolkit.models.contract import EntryPoint

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
    """The same calls through a RuntimeSession (which carries the state itself)."""
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
