"""Training recipes: which negatives, which loss, which positions (toolkit.train.objective runs them).

Pure Python (no torch), so the CLI checks a recipe before any heavy import.
  negatives   K negatives per positive;
  resample    fresh negatives at every step (see objective.NegativeSampler) instead of the dataset's fixed 1:4 rows
              drawn once at `data prepare`, which a model memorises within a few epochs;
  loss        "bce": binary cross-entropy on every candidate (the papers'); "ce": sampled softmax, the
              cross-entropy of the positive among its K negatives;
  positions   "last": the window's last real click predicts the target; "all": every prefix of the window predicts
              its next click as well (as SASRec trains; the TTT dual form computes every position anyway).
`paper` is the papers' recipe (fixed 1:4, BCE, last position); `default` is what measured best on validation
(benches/baselines/recipes_beauty.json).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from toolkit.errors import ToolkitError

LOSSES = ("bce", "ce")
POSITIONS = ("last", "all")
MAX_NEGATIVES = 1024


@dataclass(frozen=True)
class Recipe:
    negatives: int = 4
    resample: bool = False
    loss: str = "bce"
    positions: str = "last"
    lr: float = 1e-3  # Adam's learning rate unless --lr is given
    dropout: float | None = None  # item-embedding dropout of models that have one (None: the model's own default)

    def to_dict(self) -> dict:
        return asdict(self)


RECIPES = {
    "paper": Recipe(negatives=4, resample=False, loss="bce", positions="last", lr=1e-3, dropout=None),
    "default": Recipe(negatives=64, resample=True, loss="ce", positions="last", lr=3e-3, dropout=0.5),
}
RECIPE_KEYS = ("negatives", "resample", "loss", "positions")  # the knobs --negatives ... override


def check_recipe(r: Recipe) -> Recipe:
    """One line naming the knob that is out of range."""
    if r.loss not in LOSSES:
        raise ToolkitError(f"unknown loss '{r.loss}' (valid: {', '.join(LOSSES)})")
    if r.positions not in POSITIONS:
        raise ToolkitError(f"unknown positions '{r.positions}' (valid: {', '.join(POSITIONS)})")
    if isinstance(r.negatives, bool) or not isinstance(r.negatives, int) or not 1 <= r.negatives <= MAX_NEGATIVES:
        raise ToolkitError(f"negatives must be an integer in 1..{MAX_NEGATIVES}, got {r.negatives!r}")
    if not isinstance(r.resample, bool):
        raise ToolkitError(f"resample must be true or false, got {r.resample!r}")
    if not r.resample and r.negatives != 4:
        raise ToolkitError(f"negatives={r.negatives} needs resample=true: the dataset's fixed rows hold 4 negatives")
    return r


def resolve_recipe(name: str, overrides: dict | None = None) -> Recipe:
    """A named recipe with knob overrides (e.g. from --negatives / --loss), checked."""
    if name not in RECIPES:
        raise ToolkitError(f"unknown --recipe '{name}' (valid: {', '.join(RECIPES)})")
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(over) - set(RECIPE_KEYS))
    if unknown:
        raise ToolkitError(f"unknown recipe key(s): {', '.join(unknown)} (valid: {', '.join(RECIPE_KEYS)})")
    return check_recipe(replace(RECIPES[name], **over))
