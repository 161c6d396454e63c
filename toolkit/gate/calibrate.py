"""Budget calibration (paper 3.2.4 and A.3): the cloud sorts the MRS of recent decisions and sends the
budget-quantile as the threshold; a device requests a new correction when its MRS <= threshold.

"Recent data" is a split's decision samples (default: validation, time n-2) with every allowed lag in the gate's
training range; each user has total weight 1, so users with longer histories (more allowed lags) do not dominate
and the rate matches one decision per user, which is how the curve evaluates.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from toolkit.data import Dataset
from toolkit.errors import ToolkitError
from toolkit.gate.dataset import PairSet, expand_lags, score_pairs
from toolkit.gate.train import gate_outputs, load_base
from toolkit.io import read_descriptor_json, sha256_file, versions, write_descriptor_json
from toolkit.models.gate import Gate, check_base
from toolkit.models.runs import WEIGHTS, load_run
from toolkit.reporter import Reporter

THRESHOLD = "threshold.json"
MIN_CALIBRATION_REQUESTS = 20  # fewer expected requests than this -> the achieved rate is too noisy: warn
MIN_CALIBRATION_USERS = 200


def check_budget(budget: float) -> float:
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and 0 < budget <= 1):
        raise ToolkitError(f"budget must be a request rate in (0, 1], got {budget}")
    return float(budget)


def quantile_threshold(scores: np.ndarray, budget: float, weights: np.ndarray | None = None) -> tuple[float, float]:
    """Smallest score t with weighted share(score <= t) >= budget -> (t, achieved weighted request rate)."""
    check_budget(budget)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise ToolkitError("no decision samples to calibrate on")
    w = np.ones_like(scores) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(scores, kind="stable")
    cum = np.cumsum(w[order]) / w.sum()
    k = min(int(np.searchsorted(cum, budget - 1e-12, side="left")), scores.size - 1)
    thr = float(scores[order][k])
    return thr, float(w[scores <= thr].sum() / w.sum())


def open_gate(gate_dir: Path, base: Path | None = None):
    """(gate, frozen base model, gate model.json): the base must hold exactly the weights the gate was trained on."""
    gate_dir = Path(gate_dir)
    gate, desc = load_run(gate_dir)
    if desc.get("model") != "gate":
        raise ToolkitError(f"{gate_dir} is a '{desc.get('model')}' run, not a gate (train one: toolkit train gate)")
    base = Path(base) if base is not None else Path(desc.get("base_run", ""))
    if not (base / "model.json").is_file():
        raise ToolkitError(f"base run {base} of gate {gate_dir} not found (pass --model RUN to point at it)")
    model, base_desc = load_base(base)
    check_base(desc, base_desc, base)
    return gate, model, desc


def check_data(model, ds: Dataset) -> None:
    if model.cfg.n_items != ds.n_items:
        raise ToolkitError(f"the base model has {model.cfg.n_items} items, dataset {ds.path} has {ds.n_items}")


def gate_lags(desc: dict) -> tuple[int, int]:
    t = desc.get("train", {})
    return int(t.get("lag_min", 1)), int(t.get("lag_max", 5))


def decision_features(gate: Gate, model, ds: Dataset, split: str, lags: tuple[int, int], progress=None,
                      mode: str = "all", seed: int = 0, which=(), n_cands: int | None = 1) -> tuple[PairSet, dict]:
    """Decision samples of a split and the gate's outputs on them (mrs, mrd_logit, u, logit)."""
    targets = expand_lags(ds, split, lags[0], lags[1], mode, seed, n_cands=n_cands)
    if len(targets) == 0:
        raise ToolkitError(f"no {split} decision has an allowed lag in {lags[0]}..{lags[1]} (histories too short)")
    pairs = score_pairs(model, ds, targets, which, progress, f"{split} decisions")
    return pairs, gate_outputs(gate, pairs)


def calibrate(gate_dir: Path, ds: Dataset, budget: float, split: str = "valid", base: Path | None = None,
              reporter: Reporter | None = None) -> dict:
    """Write GATE/threshold.json for `budget`; returns its content."""
    reporter = reporter or Reporter()
    budget = check_budget(budget)
    if split not in ("train", "valid", "test"):
        raise ToolkitError(f"unknown split '{split}' (expected train, valid or test)")
    gate, model, desc = open_gate(gate_dir, base)
    check_data(model, ds)
    lags = gate_lags(desc)
    with reporter.bars() as progress:
        pairs, outs = decision_features(gate, model, ds, split, lags, progress)
    weights = pairs.user_weights()
    thr, achieved = quantile_threshold(outs["mrs"], budget, weights)
    n_users = int(np.unique(pairs.user).size)
    expected = n_users * min(budget, 1 - budget) if budget < 1 else math.inf
    if n_users < MIN_CALIBRATION_USERS or expected < MIN_CALIBRATION_REQUESTS:
        se = math.sqrt(budget * (1 - budget) / n_users)
        reporter.warning(f"calibrating on only {n_users} users ({len(pairs)} decision samples): "
                         f"the request rate on new data will be {budget:.3f} +- {2 * se:.3f} (2 standard errors)")
    result = {
        "budget": budget,
        "threshold": thr,
        "rule": "request a new correction when mrs <= threshold",
        "achieved_request_rate": round(achieved, 6),
        "n_samples": len(pairs),
        "n_users": n_users,
        "split": split,
        "lags": list(lags),
        "noise": "the gate's default_noise buffer",
        "device_inputs": [spec.name for spec in gate.input_specs()],  # what the device passes per decision
        "dataset_sha256": ds.sha256,
        "gate_weights_sha256": desc["weights_sha256"],
        "versions": versions(),
    }
    result = write_descriptor_json(Path(gate_dir) / THRESHOLD, result)  # sealed: an edited threshold is refused
    return result


def load_threshold(gate_dir: Path) -> dict:
    """GATE/threshold.json, checked against the gate's current weights."""
    gate_dir = Path(gate_dir)
    path = gate_dir / THRESHOLD
    if not path.is_file():
        raise ToolkitError(f"gate {gate_dir} has no threshold: run `toolkit gate calibrate {gate_dir} --data DIR "
                           f"--budget B` first")
    thr = read_descriptor_json(path, "gate threshold")
    wsha = sha256_file(gate_dir / WEIGHTS) if (gate_dir / WEIGHTS).is_file() else None
    if thr.get("gate_weights_sha256") != wsha:
        raise ToolkitError(f"{path} was calibrated for other gate weights: re-run `toolkit gate calibrate`")
    return thr


__all__ = ["calibrate", "load_threshold", "quantile_threshold", "check_budget", "open_gate", "decision_features",
           "gate_lags", "THRESHOLD"]
