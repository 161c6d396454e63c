"""Data: loaders (seqfile, interactions), the papers' protocol, the synthetic generator, the dataset store."""

from toolkit.data.prepare import prepare
from toolkit.data.protocol import windows_at
from toolkit.data.store import Dataset, load_dataset, save_dataset
from toolkit.data.synth import SynthParams, synthesize

__all__ = ["Dataset", "SynthParams", "load_dataset", "prepare", "save_dataset", "synthesize", "windows_at"]
