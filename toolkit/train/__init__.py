"""The generic training loop shared by every recommender."""

__all__ = ["TrainSettings", "evaluate", "score_split", "train"]


def __getattr__(name: str):
    # lazy, so that `toolkit.train.distributed` / `warm_start` (flag checks) import without torch
    if name in __all__:
        from toolkit.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'toolkit.train' has no attribute {name!r}")
