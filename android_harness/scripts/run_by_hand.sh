#!/bin/sh
# Push a runner and one model, run it pinned to one core, print its output: the same steps as
# `toolkit device run`, without the toolkit (for debugging a runner build).
# Usage: ./run_by_hand.sh SERIAL RUNNER MODEL CPU [RUNNER ARGS...]
#   ./run_by_hand.sh R58M40ABCDE ./onnxruntime_perf_test scn.window.onnx 7 -e cpu -m times -r 50 -x 1 -y 1
#   ./run_by_hand.sh R58M40ABCDE ./executor_runner scn.window.pte 7 --num_executions=50
#   ./run_by_hand.sh R58M40ABCDE ./executor_runner scn.window.bpte 7 --num_executions=1 --bundleio_atol=1e-4 \
#       --bundleio_rtol=0 --etdump_path=/data/local/tmp/toolkit/by-hand/run.etdump
#     (bundled check: needs a runner built with bundled IO; prints `TEST: BundleIO index[0] Test_result: PASS|FAIL`;
#      fetch the ETDump with `adb pull /data/local/tmp/toolkit/by-hand/run.etdump`)
# (onnxruntime_perf_test needs test_data_set_0/ beside the model or -I for generated inputs.)
set -eu
[ $# -ge 4 ] || { sed -n 2,11p "$0"; exit 2; }
ADB=${ADB:-adb}
SERIAL=$1; RUNNER=$2; MODEL=$3; CPU=$4; shift 4
DIR=/data/local/tmp/toolkit/by-hand
MASK=$(printf '%x' $((1 << CPU)))
"$ADB" -s "$SERIAL" shell "mkdir -p $DIR"
"$ADB" -s "$SERIAL" push "$RUNNER" "$DIR/" >/dev/null
"$ADB" -s "$SERIAL" push "$MODEL" "$DIR/" >/dev/null
MODEL_DIR=$(dirname "$MODEL")
[ -d "$MODEL_DIR/test_data_set_0" ] && "$ADB" -s "$SERIAL" push "$MODEL_DIR/test_data_set_0" "$DIR/" >/dev/null
R=$(basename "$RUNNER"); M=$(basename "$MODEL")
case "$R" in
  *perf_test*) ARGS="$* $DIR/$M $DIR/result.csv" ;;
  *) ARGS="--model_path=$DIR/$M $*" ;;
esac
"$ADB" -s "$SERIAL" shell "chmod 755 $DIR/$R && cd $DIR && LD_LIBRARY_PATH=$DIR taskset $MASK ./$R $ARGS; echo exit=\$?"
case "$R" in *perf_test*) "$ADB" -s "$SERIAL" shell "cat $DIR/result.csv" ;; esac
