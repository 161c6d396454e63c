#!/usr/bin/env bash
# The model table of benches/baselines/models_beauty.json: every model with the default recipe, 3 seeds, beside
# the count baselines, on the toolkit's own Beauty candidates. Two jobs at a time, one torch thread each (2 cores).
#   bash benches/models/beauty.sh OUT [SEQ_LEN]     e.g. bash benches/models/beauty.sh /tmp/models 10
# MODELS (default: all six), SEEDS (0,1,2) and TRAIN_FLAGS (e.g. "--epochs 20 --patience 3") narrow a run.
set -euo pipefail
out=${1:?usage: beauty.sh OUT [SEQ_LEN]}
L=${2:-10}
src="$(dirname "$0")/../../../shared/data/amazon_beauty_5core_s3rec.txt"
tk() { toolkit "$@"; }
data="$out/beauty$L"
[ -f "$data/dataset.json" ] || tk data prepare "$src" --format seqfile --seq-len "$L" --out "$data"
for base in pop cooc; do  # counted once per dataset (a second batch of models reuses them)
  [ -f "$out/L$L/$base/metrics.json" ] || tk train "$base" --data "$data" --out "$out/L$L/$base"
done
train() {  # MODEL NAME [flags...]
  local m=$1 name=$2; shift 2
  # shellcheck disable=SC2086  # TRAIN_FLAGS is a list of flags
  tk train "$m" --data "$data" --out "$out/L$L/$name" --seeds "${SEEDS:-0,1,2}" --threads 1 --force \
    ${TRAIN_FLAGS:-} "$@" \
    > "$out/L$L/$name.log" 2>&1
}
mkdir -p "$out/L$L"
models=${MODELS:-"scn sasrec gru4rec din duet_sasrec cocorrrec"}
pids=()
for name in $models; do
  case $name in
    duet_*) train duet "$name" --config "backbone=${name#duet_}" & ;;
    cocorrrec) train cocorrrec cocorrrec --config cloud=history & ;;
    *) train "$name" "$name" & ;;
  esac
  pids+=($!)
  if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
wait
runs=()
for name in pop cooc $models; do runs+=("$out/L$L/$name"); done
tk compare "${runs[@]}" --out "$out/L$L/compare-$(echo $models | tr ' ' '-')"
