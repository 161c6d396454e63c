#!/usr/bin/env bash
# One Beauty epoch of every model's default recipe at 2 torch threads: the "< 30 s on 2 cores" goal.
# Run it alone on an idle machine (anything else on the 2 cores lands in the figure).
#   bash benches/models/epoch_time.sh BEAUTY_DATA_DIR OUT      (BEAUTY_DATA_DIR from `toolkit data prepare`)
set -euo pipefail
data=${1:?usage: epoch_time.sh BEAUTY_DATA_DIR OUT}
out=${2:?usage: epoch_time.sh BEAUTY_DATA_DIR OUT}
echo "load before: $(cat /proc/loadavg)"
for spec in "scn" "sasrec" "gru4rec" "cocorrrec --config cloud=history" "duet --config backbone=sasrec" "din"; do
  read -r -a args <<< "$spec"
  toolkit train "${args[@]:0:1}" --data "$data" --epochs 1 --threads 2 --out "$out/${args[0]}" --force \
    "${args[@]:1}" > "$out/${args[0]}.log" 2>&1
  python -c "import json,sys; m=json.load(open(sys.argv[1])); print(sys.argv[2], m['history'][0]['epoch_seconds'], 's')" \
    "$out/${args[0]}/metrics.json" "${args[0]}"
done
echo "load after: $(cat /proc/loadavg)"
