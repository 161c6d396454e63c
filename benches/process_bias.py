"""Per-process bias (bench_noise.json, per_process_bias_experiment): does a fresh process's luck (memory layout,
cache placement) move a row's p50? The same .onnx in 4 fresh processes each, pinned to CPU 0, timed interleaved in
60 rounds of 2 warm + 20 timed calls, as the bench's rounds do. Needs a filled bench cache (run bench_noise.py
first). Run alone on an idle machine; prints JSON."""

from __future__ import annotations

import glob
import json
import os
import statistics
import time
from multiprocessing import Pipe, Process

CACHE = os.path.expanduser("~/.cache/toolkit/bench")
ARTIFACTS = ("scn/window-1x50-onnxruntime-*", "sasrec/window-1x50-onnxruntime-*")
PROCESSES, ROUNDS, CALLS = 4, 60, 20


def child(conn, pattern: str) -> None:
    os.sched_setaffinity(0, {0})
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(glob.glob(f"{CACHE}/{pattern}/*.onnx")[0], opts, providers=["CPUExecutionProvider"])
    rng, feeds = np.random.default_rng(0), {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = (rng.integers(1, 1000, size=shape).astype(np.int64) if "int" in i.type
                         else np.zeros(shape, np.float32))
    for _ in range(50):
        sess.run(None, feeds)
    conn.send("ready")
    while (n := conn.recv()) is not None:
        for _ in range(2):
            sess.run(None, feeds)
        xs = []
        for _ in range(n):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            xs.append(time.perf_counter() - t0)
        conn.send(statistics.median(xs))


def main() -> None:
    kids = []
    for pattern in ARTIFACTS:
        for k in range(PROCESSES):
            parent, end = Pipe()
            proc = Process(target=child, args=(end, pattern))
            proc.start()
            parent.recv()
            kids.append((f"{pattern.split('/')[0]}{k}", parent, proc))
    medians = {name: [] for name, _, _ in kids}
    for _ in range(ROUNDS):
        for name, conn, _ in kids:
            conn.send(CALLS)
            medians[name].append(conn.recv())
    for _, conn, proc in kids:
        conn.send(None)
        proc.join()
    print(json.dumps({"median_us_per_process": {n: round(statistics.median(v) * 1e6, 1) for n, v in medians.items()},
                      "load_average": os.getloadavg()}))


if __name__ == "__main__":
    main()
