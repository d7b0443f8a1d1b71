#!/bin/bash
# pack.sh BUILD DEST: copy the GPU tests, benchmarks and programs of a CUDA-enabled build
# (meson setup BUILD -Dnative=false -Dgpu_arch=80,90) with the shared libraries they need that
# a bare CUDA machine lacks (libyaml, htslib, OpenBLAS, ...) into DEST, for
# `BIN=DEST bash tests/gpu/run-on-device.sh ...` on the GPU machine (the device tool, carry
# [DEST]): no device time goes to compiling.
# Meson 1.0's nvcc rules record no header dependencies ("ninja -t deps" shows 0 for the .cu
# objects): after editing a header under libssm/, touch libssm/cuda/*.cu bench/*.cu first.
set -euo pipefail
build=${1:?usage: pack.sh BUILD DEST}
dest=${2:?usage: pack.sh BUILD DEST}
mkdir -p "$dest"
progs=(tests/gpu/test_gpu_scan $( [ -f tests/gpu/test_gpu_ops.c ] && echo tests/gpu/test_gpu_ops) tests/gpu/test_gpu_model bench/bench_scan_gpu
       bench/bench_gpu_model bin/ssm-train bin/ssm-score bin/ssm-generate)
ninja -C "$build" "${progs[@]}" libssm/libssm.so >/dev/null
for p in "${progs[@]}"; do [ -f "$build/$p" ] && cp "$build/$p" "$dest/"; done
cp -L "$build/libssm/libssm.so" "$dest/"
# every library the programs resolve, except the C runtime and CUDA's own (present there)
for p in "${progs[@]}"; do ldd "$build/$p"; done | awk '$3 ~ /^\// {print $3}' | sort -u |
  grep -Ev '/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas[^/]*)\.so' |
  while read -r lib; do cp -L "$lib" "$dest/"; done
strip --strip-unneeded "$dest"/* 2>/dev/null || true # under the 64 MiB the device tool carries
du -sh "$dest"
