#!/bin/bash
# run-on-device.sh: what one call of the GPU machine runs: the GPU tests, the benchmarks, the
# 200-step DNA training on the GPU against the CPU, an Nsight Compute look at the scan kernels
# and the quick tests under compute-sanitizer. Logs go to $OUT (or ./gpu-out).
# The binaries come prebuilt in $BIN (default .gpubin), made here by
#   bash tests/gpu/pack.sh build-cuda .gpubin
# (.gpubin is in .git/info/exclude), then the device tool's run with carry [".gpubin"] and
#   BIN=.gpubin bash tests/gpu/run-on-device.sh [test|bench|model|train|ncu|sass|memcheck ...]
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
BIN=${BIN:-.gpubin}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/$BIN:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(test bench ncu memcheck)
if ldd "$BIN"/* 2>/dev/null | grep "not found"; then echo "missing libraries in $BIN"; exit 1; fi
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv; } >"$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
rc=0
for s in "${steps[@]}"; do
  case $s in
  test)
    for t in test_gpu_scan test_gpu_ops test_gpu_model; do
      OMP_NUM_THREADS=16 timeout 240 "$BIN/$t" >"$OUT/$t.log" 2>&1; e=$?
      echo "$t: exit $e"; grep -E "FAIL|checks|device|->" "$OUT/$t.log" | head -40
      [ $e -eq 0 ] || rc=1
    done ;;
  bench)
    timeout 200 "$BIN/bench_scan_gpu" 2>&1 | tee "$OUT/bench.log" || rc=1 ;;
  model)
    timeout 300 "$BIN/bench_gpu_model" 2>&1 | tee "$OUT/bench_model.log" || rc=1 ;;
  train)
    OMP_NUM_THREADS=16 timeout 400 bash tests/gpu/test_gpu_train.sh "$BIN" "$OUT/train" 2>&1 | tee "$OUT/train.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1 ;;
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
    for t in "test_gpu_scan --quick" test_gpu_ops test_gpu_model; do
      OMP_NUM_THREADS=16 timeout 300 compute-sanitizer --tool memcheck --error-exitcode 9 \
        $BIN/$t >"$OUT/memcheck-${t%% *}.log" 2>&1
      echo "memcheck $t: exit $? (0 clean, 9 errors, 124 timeout)"
      grep -E "ERROR SUMMARY|checks" "$OUT/memcheck-${t%% *}.log"
    done ;;
  esac
done
exit $rc
