#!/bin/sh
# Build the two runners for an Android ABI (needs the Android NDK; not available in our CI).
# Usage: ANDROID_NDK=/path/to/ndk ANDROID_HOME=/path/to/sdk ./build_runners.sh ort|executorch SRC_DIR [ABI] [API]
#   ort        SRC_DIR = a checkout of microsoft/onnxruntime at the version the export used (v1.32.0)
#   executorch SRC_DIR = a checkout of pytorch/executorch at the version the export used (v1.4.1)
set -eu
[ $# -ge 2 ] || { sed -n 2,6p "$0"; exit 2; }
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
    cmake -B cmake-android-out -DCMAKE_TOOLCHAIN_FILE="$ANDROID_NDK/build/cmake/android.toolchain.cmake" \
      -DANDROID_ABI="$ABI" -DANDROID_PLATFORM="android-$API" -DCMAKE_BUILD_TYPE=Release \
      -DEXECUTORCH_BUILD_XNNPACK=ON -DEXECUTORCH_BUILD_EXTENSION_DATA_LOADER=ON \
      -DEXECUTORCH_BUILD_EXTENSION_FLAT_TENSOR=ON -DEXECUTORCH_BUILD_EXTENSION_RUNNER_UTIL=ON \
      -DEXECUTORCH_ENABLE_LOGGING=ON
    cmake --build cmake-android-out -j --target executor_runner
    echo "runner: $SRC/cmake-android-out/executor_runner"
    ;;
  *) echo "first argument: ort or executorch" >&2; exit 2 ;;
esac
echo "check:  file <runner>   (must say ARM aarch64 for arm64-v8a)"
