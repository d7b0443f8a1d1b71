#!/bin/bash
# libfuzzer.sh [BUILD_DIR]: build the fuzz targets as libFuzzer targets with Debian's clang
# (packages clang, libomp-dev), with AddressSanitizer and UndefinedBehaviorSanitizer, the
# library and readers instrumented for coverage (-fsanitize=fuzzer-no-link). The targets land
# in BUILD_DIR/tests/fuzz/fuzz_NAME (default BUILD_DIR: build-fuzz); campaign.sh runs them.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-build-fuzz}
command -v clang >/dev/null || { echo "libfuzzer.sh: clang is not installed (apt-get install clang libomp-dev)" >&2; exit 1; }
if [ ! -f "$dir/build.ninja" ]; then
  CC=clang meson setup "$dir" -Dcuda=disabled -Dlibfuzzer=true -Dnative=false \
    -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false \
    -Dc_args='-fsanitize=fuzzer-no-link -fno-sanitize-recover=undefined' >/dev/null
fi
# the fuzz targets this build has (a reader whose library is missing has none)
targets=$(ninja -C "$dir" -t targets all | sed -nE 's|^(tests/fuzz/fuzz_[a-z_]+): .*|\1|p' | sort -u)
ninja -C "$dir" -j"${JOBS:-2}" $targets
