#!/usr/bin/env bash
# Prepare time and peak RSS at ~1M and ~10M interactions (synthetic logs from `toolkit data synth --log`).
# Usage: benches/scale/prepare.sh WORKDIR   (prints one JSON line per run; copy them into baselines/scale.json)
# Peak RSS is GNU time's "Maximum resident set size" of the toolkit process; the --workers 2 protocol processes
# are forked children whose peak is reported separately by the prepare itself (not included here).
set -euo pipefail
W=${1:?workdir}
mkdir -p "$W"
T=${TOOLKIT:-toolkit}
for users in 100000 1000000; do
  [ -f "$W/log_$users.csv" ] || $T data synth --log "$W/log_$users.csv" --users $users >/dev/null
  rows=$(($(wc -l < "$W/log_$users.csv") - 1))
  for spec in "columnar 2" "columnar 1" "memory 1"; do
    set -- $spec
    [ "$1" = memory ] && [ $users -gt 100000 ] && continue   # the row-by-row path needs minutes and ~6 GB here
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    cmd="toolkit data prepare $W/log_$users.csv --out $W/ds_${users}_$1_$2 --engine $1 --workers $2 --force"
    /usr/bin/time -f "%e %M" -o "$W/time.txt" $T data prepare "$W/log_$users.csv" --out "$W/ds_${users}_$1_$2" \
      --engine $1 --workers $2 --force >/dev/null 2>&1
    read secs kb < "$W/time.txt"
    sha=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['arrays_sha256'][:16])" "$W/ds_${users}_$1_$2/dataset.json")
    echo "{\"interactions\": $rows, \"engine\": \"$1\", \"workers\": $2, \"seconds\": $secs, \"peak_rss_mb\": $((kb / 1024)), \"arrays_sha256\": \"$sha\", \"load_before\": \"$load\", \"load_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"command\": \"$cmd\"}"
  done
done
