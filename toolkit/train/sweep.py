"""`toolkit train MODEL --sweep lr=1e-3,3e-3 --sweep dropout=0.2,0.5`: one run per grid point, picked on validation.

A key is a training setting (lr, weight_decay, batch_size), a recipe knob (negatives, loss, positions, resample) or
a model config key (dropout, dim, ...). Every point trains with the same seed into OUT/<point>; OUT/sweep.json lists
each point's validation and test metrics and names the point with the best validation NDCG@10 (never test).
Parsing is pure Python so the CLI refuses a malformed sweep before any heavy import.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.reporter import Reporter
from toolkit.train.recipes import RECIPE_KEYS

SETTING_KEYS = {"lr": float, "weight_decay": float, "batch_size": int}
MAX_POINTS = 64
SELECT = "ndcg@10"


def parse_sweep(pairs: list[str]) -> dict[str, list]:
    """['lr=1e-3,3e-3', 'loss=bce,ce'] -> {'lr': [0.001, 0.003], 'loss': ['bce', 'ce']}; one line on bad input."""
    grid: dict[str, list] = {}
    for pair in pairs:
        key, sep, values = pair.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[a-z_][a-z0-9_]*", key) or not values.strip():
            raise ToolkitError(f"--sweep expects key=v1,v2,... (e.g. lr=1e-3,3e-3), got '{pair}'")
        if key in grid:
            raise ToolkitError(f"--sweep names '{key}' twice; give all its values once: {key}=a,b")
        parsed = [_value(v.strip(), key) for v in values.split(",")]
        if any(v == "" for v in parsed):
            raise ToolkitError(f"--sweep {key}: an empty value in '{values}'")
        if len(set(map(repr, parsed))) != len(parsed):
            raise ToolkitError(f"--sweep {key}: a value is listed twice in '{values}'")
        grid[key] = parsed
    n = 1
    for v in grid.values():
        n *= len(v)
    if n > MAX_POINTS:
        raise ToolkitError(f"--sweep spans {n} points, more than {MAX_POINTS}; sweep fewer values at a time")
    return grid


def _value(text: str, key: str):
    try:
        v = json.loads(text)
    except (json.JSONDecodeError, ValueError, RecursionError):
        return text
    if isinstance(v, (dict, list)) or v is None:
        raise ToolkitError(f"--sweep {key}: expected numbers, true/false or words, got '{text}'")
    if isinstance(v, float) and not (v == v and abs(v) != float("inf")):
        raise ToolkitError(f"--sweep {key}: {text} is not a finite number")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
        raise ToolkitError(f"--sweep {key}: {text} is negative")
    if key in SETTING_KEYS:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ToolkitError(f"--sweep {key}: expected a number, got '{text}'")
        if SETTING_KEYS[key] is int and (not float(v).is_integer() or v < 1):
            raise ToolkitError(f"--sweep {key}: expected a whole number >= 1, got '{text}'")
        if key == "lr" and v <= 0:
            raise ToolkitError("--sweep lr: a learning rate must be > 0")
        return SETTING_KEYS[key](v)
    return v


def points(grid: dict[str, list]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def label(point: dict) -> str:
    """A point's run-dir name, e.g. lr=0.003,loss=ce -> 'lr-0.003_loss-ce' (safe on every filesystem)."""
    return "_".join(f"{k}-{re.sub(r'[^A-Za-z0-9.+-]', '', str(v).lower())}" for k, v in point.items())


def apply_point(settings, point: dict):
    """TrainSettings with a grid point applied: settings fields, recipe knobs, or model config keys."""
    fields = {k: v for k, v in point.items() if k in SETTING_KEYS}
    recipe = {**settings.recipe_overrides, **{k: v for k, v in point.items() if k in RECIPE_KEYS}}
    config = {**settings.config, **{k: v for k, v in point.items() if k not in SETTING_KEYS and k not in RECIPE_KEYS}}
    return dataclasses.replace(settings, **fields, recipe_overrides=recipe, config=config)


def check_points(name: str, n_items: int, settings, grid: dict[str, list]) -> list[tuple[str, dict, object]]:
    """(label, point, settings) of every point, each model config and recipe checked before the first run trains."""
    from toolkit.models.registry import build
    from toolkit.train.recipes import resolve_recipe

    out = []
    for p in points(grid):
        s = apply_point(settings, p)
        resolve_recipe(s.recipe, s.recipe_overrides)
        build(name, n_items, **s.config)  # unknown keys and bad values: one line naming the key
        out.append((label(p), p, s))
    return out


def summarise(results: dict[str, dict], grid: dict[str, list]) -> dict:
    """sweep.json: every point's valid/test metrics and the point picked on validation NDCG@10."""
    best = max(results, key=lambda k: results[k]["valid"][SELECT])
    return {"grid": grid, "selected_on": f"valid {SELECT}", "best": best,
            "points": [{"run": k, "point": r["point"], "valid": r["valid"], "test": r["test"],
                        "best_epoch": r["best_epoch"], "epochs_run": r["epochs_run"],
                        "train_seconds": r["train_seconds"]} for k, r in results.items()]}


def run_sweep(name: str, ds, out: Path, runs: list[tuple[str, dict, object]], grid: dict[str, list],
              reporter: Reporter | None = None) -> dict:
    """Train every point into out/<label>; write and return sweep.json's content."""
    from toolkit.io import atomic_write_json
    from toolkit.train.loop import train

    reporter = reporter or Reporter()
    results = {}
    for i, (lab, point, s) in enumerate(runs):
        reporter.heading(f"{name}: sweep point {i + 1}/{len(runs)}: {lab}")
        results[lab] = {**train(name, ds, out / lab, s, reporter=reporter), "point": point}
    summary = summarise(results, grid)
    atomic_write_json(out / "sweep.json", summary)
    return summary


__all__ = ["parse_sweep", "points", "label", "apply_point", "check_points", "summarise", "run_sweep"]
