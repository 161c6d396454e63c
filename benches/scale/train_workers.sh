#!/usr/bin/env bash
# Training rows/s with 1 vs 2 data-parallel workers (same global batch), one epoch of SCN on DATASET.
# Usage: benches/scale/train_workers.sh DATASET WORKDIR   (prints one JSON line per run)
set -euo pipefail
D=${1:?dataset dir}; W=${2:?workdir}
T=${TOOLKIT:-toolkit}
mkdir -p "$W"
for n in 1 2; do
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  cmd="toolkit train scn --data $D --out $W/scn_nproc$n --epochs 1 --batch-size 1024 --threads 1 --nproc $n --force"
  $T train scn --data "$D" --out "$W/scn_nproc$n" --epochs 1 --batch-size 1024 --threads 1 --nproc $n --force >/dev/null
  python3 - "$W/scn_nproc$n/metrics.json" "$n" "$load" "$(cut -d' ' -f1-3 /proc/loadavg)" "$cmd" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
h = m["history"][0]
print(json.dumps({"workers": int(sys.argv[2]), "rows_per_second": h["rows_per_second"], "epoch_seconds": h["epoch_seconds"],
                  "loss": h["loss"], "valid_ndcg@10": h["valid_ndcg@10"], "load_before": sys.argv[3], "load_after": sys.argv[4],
                  "command": sys.argv[5]}))
PY
done
