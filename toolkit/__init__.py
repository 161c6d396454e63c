"""toolkit: train, export and benchmark on-device sequential recommenders."""

__version__ = "0.1.0"
