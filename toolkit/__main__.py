"""`python -m toolkit` runs the CLI (the pipeline uses it to run each stage with this interpreter)."""

from toolkit.cli import entry

entry()
