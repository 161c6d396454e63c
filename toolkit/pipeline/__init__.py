"""`toolkit pipeline` as a library: the plan (flags -> checked job -> stage list), the scheduler that runs the
stages as separate `toolkit` processes, and the run that writes out/pipeline.json.

Above train/export/verify/bench (it runs them, as commands), below cli (which only parses and prints)."""
