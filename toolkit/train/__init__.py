"""The generic training loop shared by every recommender."""

from toolkit.train.loop import TrainSettings, evaluate, score_split, train

__all__ = ["TrainSettings", "evaluate", "score_split", "train"]
