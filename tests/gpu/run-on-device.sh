#!/bin/bash
# run-on-device.sh: what one call of the GPU machine runs: the GPU tests, the scan benchmark,
# an Nsight Compute look at the scan kernels and the quick tests under compute-sanitizer.
# Logs go to $OUT (or ./gpu-out). The binaries come prebuilt in $BIN (default .gpubin: the two
# programs, libssm.so and the libraries it needs that a bare CUDA machine may lack, copied there
# by the caller) so that no device time goes to compiling; without them the
# script builds with meson into build-cuda first (needs the staged .deps for libyaml etc.).
#
# Preparing .gpubin here (x86-64, after ninja -C build-cuda tests/gpu/test_gpu_scan
# bench/bench_scan_gpu; .gpubin is listed in .git/info/exclude):
#   mkdir -p .gpubin && cp build-cuda/tests/gpu/test_gpu_scan build-cuda/bench/bench_scan_gpu \
#     build-cuda/libssm/libssm.so .gpubin/
#   for l in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0 libjansson.so.4 libyaml-0.so.2 \
#     libgomp.so.1; do cp -L "$(ldd build-cuda/libssm/libssm.so | awk -v l=$l '$1 == l {print $3}')" .gpubin/; done
# then the device tool's run with carry [".gpubin"] and the command
#   BIN=.gpubin bash tests/gpu/run-on-device.sh [test|bench|ncu|sass|memcheck ...]
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
BIN=${BIN:-.gpubin}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/$BIN:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(test bench ncu memcheck)
if [ ! -x "$BIN/test_gpu_scan" ] || ldd "$BIN/test_gpu_scan" | grep -q "not found"; then
  ldd "$BIN/test_gpu_scan" 2>&1 | grep "not found"
  eval "$(bash .deps/unpack /tmp/deps)"
  meson setup build-cuda -Dnative=false -Dgpu_arch=90 -Dcuda=enabled >"$OUT/setup.log" 2>&1 &&
    ninja -C build-cuda tests/gpu/test_gpu_scan bench/bench_scan_gpu >"$OUT/build.log" 2>&1 ||
    { tail -30 "$OUT/setup.log" "$OUT/build.log"; exit 1; }
  BIN=$OUT/bin; mkdir -p "$BIN"
  cp build-cuda/tests/gpu/test_gpu_scan build-cuda/bench/bench_scan_gpu "$BIN/"
fi
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv; } >"$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
rc=0
for s in "${steps[@]}"; do
  case $s in
  test)
    OMP_NUM_THREADS=16 timeout 200 "$BIN/test_gpu_scan" 2>&1 | tee "$OUT/test.log" | grep -E "FAIL|checks|device" ;
    [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1 ;;
  bench)
    timeout 200 "$BIN/bench_scan_gpu" 2>&1 | tee "$OUT/bench.log" || rc=1 ;;
  ncu)
    timeout 120 ncu --kernel-name regex:'scan_(fwd|bwd)_kernel' --launch-skip 3 --launch-count 3 \
      --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats \
      --section Occupancy --section LaunchStats --section InstructionStats --section SourceCounters \
      "$BIN/bench_scan_gpu" --quick --reps 1 >"$OUT/ncu.txt" 2>&1
    grep -E "scan_|Duration|Throughput|Pipe|Issue Slots|Registers|Achieved Occ|Stall|No Eligible" "$OUT/ncu.txt" | head -60 ;;
  sass)
    cuobjdump -sass "$BIN/libssm.so" 2>/dev/null | awk '/Function : /{f = ($0 ~ /scan_(fwd|bwd)_kernelI13__nv_bfloat16Li16E/)} f' \
      | gzip >"$OUT/sass.txt.gz"; ls -la "$OUT/sass.txt.gz" ;;
  memcheck)
    OMP_NUM_THREADS=16 timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 \
      "$BIN/test_gpu_scan" --quick >"$OUT/memcheck.log" 2>&1
    echo "memcheck exit $? (0 clean, 9 errors, 124 timeout)"; grep -E "ERROR SUMMARY|checks" "$OUT/memcheck.log" ;;
  esac
done
exit $rc
