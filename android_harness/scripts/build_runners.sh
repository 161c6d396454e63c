#!/bin/sh
# Build the two runners for an Android ABI (needs the Android NDK; not available in our CI).
# Usage: ANDROID_NDK=/path/to/ndk ANDROID_HOME=/path/to/sdk ./build_runners.sh ort|executorch SRC_DIR [ABI] [API]
#   ort        SRC_DIR = a checkout of microsoft/onnxruntime at the version the export used (v1.32.0)
#   executorch SRC_DIR = a checkout of pytorch/executorch at the version the export used (v1.4.1), with submodules
#                        (executor_runner with XNNPACK, bundled IO and the ETDump event tracer; set NO_DEVTOOLS=1 for
#                        a lean runner without them: `toolkit device run` then skips the .bpte check and the ETDump)
set -eu
[ $# -ge 2 ] || { sed -n 2,8p "$0"; exit 2; }
WHAT=$1; SRC=$2; ABI=${3:-arm64-v8a}; API=${4:-29}
: "${ANDROID_NDK:?set ANDROID_NDK to the NDK folder (it has build/cmake/android.toolchain.cmake)}"
cd "$SRC"
case "$WHAT" in
  ort)
    : "${ANDROID_HOME:?set ANDROID_HOME to the Android SDK folder}"
    ./build.sh --android --android_sdk_path "$ANDROID_HOME" --android_ndk_path "$ANDROID_NDK" \
      --android_abi "$ABI" --android_api "$API" --config Release --parallel --skip_tests --cmake_generator Ninja
    echo "runner: $SRC/build/Android/Release/onnxruntime_perf_test"
    ;;
  executorch)
    # ExecuTorch 1.4.x option names (tools/cmake/preset/default.cmake): EXECUTORCH_BUILD_DEVTOOLS builds etdump +
    # bundled_program; EXECUTORCH_ENABLE_BUNDLE_IO defines ET_BUNDLE_IO_ENABLED (executor_runner then accepts a .bpte
    # as --model_path and checks its outputs: --bundleio_atol/--bundleio_rtol); EXECUTORCH_ENABLE_EVENT_TRACER
    # defines ET_EVENT_TRACER_ENABLED (--etdump_path). Both ENABLE options require BUILD_DEVTOOLS.
    if [ "${NO_DEVTOOLS:-0}" = 1 ]; then
      DEVTOOLS="-DEXECUTORCH_BUILD_DEVTOOLS=OFF -DEXECUTORCH_ENABLE_BUNDLE_IO=OFF -DEXECUTORCH_ENABLE_EVENT_TRACER=OFF"
    else
      DEVTOOLS="-DEXECUTORCH_BUILD_DEVTOOLS=ON -DEXECUTORCH_ENABLE_BUNDLE_IO=ON -DEXECUTORCH_ENABLE_EVENT_TRACER=ON"
    fi
    # shellcheck disable=SC2086 # DEVTOOLS is a list of options
    cmake -B cmake-android-out -DCMAKE_TOOLCHAIN_FILE="$ANDROID_NDK/build/cmake/android.toolchain.cmake" \
      -DANDROID_ABI="$ABI" -DANDROID_PLATFORM="android-$API" -DCMAKE_BUILD_TYPE=Release \
      -DPYTHON_EXECUTABLE="$(command -v python3)" \
      -DEXECUTORCH_BUILD_XNNPACK=ON -DEXECUTORCH_BUILD_EXTENSION_DATA_LOADER=ON \
      -DEXECUTORCH_BUILD_EXTENSION_FLAT_TENSOR=ON -DEXECUTORCH_BUILD_EXTENSION_RUNNER_UTIL=ON \
      -DEXECUTORCH_BUILD_EXTENSION_EVALUE_UTIL=ON -DEXECUTORCH_BUILD_EXECUTOR_RUNNER=ON \
      -DEXECUTORCH_ENABLE_LOGGING=ON $DEVTOOLS
    cmake --build cmake-android-out -j --target executor_runner
    echo "runner: $SRC/cmake-android-out/executor_runner"
    echo "check:  strings <runner> | grep -c bundleio_atol   (1+: bundled IO built in; same for etdump_path)"
    ;;
  *) echo "first argument: ort or executorch" >&2; exit 2 ;;
esac
echo "check:  file <runner>   (must say ARM aarch64 for arm64-v8a)"
