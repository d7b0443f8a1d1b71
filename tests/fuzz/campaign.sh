#!/bin/bash
# campaign.sh [-t SECONDS] [-j PARALLEL] [-o WORKDIR] [-b BUILD_DIR] [TARGET...]: a libFuzzer
# campaign per target (default: every target, 3600 s each, one at a time, niced).
# Builds the targets first (libfuzzer.sh BUILD_DIR, default build-fuzz). Each target's corpus
# grows in WORKDIR/NAME/corpus (default WORKDIR: fuzz-campaign), seeded from
# tests/fuzz/NAME_corpus (and tests/data/fasta for fasta; the generated checkpoint seeds for
# checkpoint, from the standalone build in build/ when present); crashes are written as
# WORKDIR/NAME/crash-*; the log is WORKDIR/NAME/log. Ends with a table, one line a target:
# seconds, executions, coverage (edges), features, corpus size, crashes. A crash's input goes into
# tests/fuzz/NAME_corpus as a regression case once fixed (the standalone test runs it).
# FUZZ_TIMEOUT (seconds, default 30): libFuzzer's per-input timeout; raise it on a loaded
# machine, where a niced target can be kept off the cores past 30 s (docs/reliability.md, round 6).
set -uo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
secs=3600 par=1 work=fuzz-campaign build=build-fuzz
while getopts "t:j:o:b:" o; do
  case $o in t) secs=$OPTARG;; j) par=$OPTARG;; o) work=$OPTARG;; b) build=$OPTARG;; *) exit 2;; esac
done
shift $((OPTIND - 1))
targets=("$@")
# default: every target, one per seed corpus (tests/fuzz/NAME_corpus)
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cd "$src/tests/fuzz" && ls -d *_corpus | sed 's/_corpus$//')
"$src/tests/fuzz/libfuzzer.sh" "$build" >/dev/null || exit 1
[[ $build = /* ]] || build="$src/$build"
mkdir -p "$work" && work=$(cd "$work" && pwd)

run_one() {
  local name=$1 exe="$build/tests/fuzz/fuzz_$1" dir="$work/$1"
  [ -x "$exe" ] || { echo "$name: not built (its reader is disabled in this build)" > "$dir.skipped"; return; }
  mkdir -p "$dir/corpus"
  cp -n "$src/tests/fuzz/${name}_corpus"/* "$dir/corpus/" 2>/dev/null
  [ "$name" = fasta ] && cp -n "$src/tests/data/fasta"/* "$dir/corpus/" 2>/dev/null
  if [ "$name" = checkpoint ] && [ -x "$src/build/tests/fuzz/fuzz_checkpoint" ]; then
    SSM_FUZZ_WRITE_SEEDS="$dir/corpus" SSM_FUZZ_MUTATIONS=0 "$src/build/tests/fuzz/fuzz_checkpoint" \
      "$src/tests/fuzz/checkpoint_corpus" >/dev/null 2>&1
  fi
  (cd "$dir" && UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
    nice -n 15 "$exe" -max_total_time="$secs" -print_final_stats=1 -max_len=65536 \
      -rss_limit_mb=2048 -timeout="${FUZZ_TIMEOUT:-30}" -artifact_prefix="$dir/" corpus > log 2>&1)
  echo "$?" > "$dir/rc"
}

running=0
for t in "${targets[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$par" ]; then wait -n; running=$((running - 1)); fi
done
wait

printf '%-11s %8s %12s %8s %8s %7s %8s\n' target seconds executions cov ft corpus crashes
for t in "${targets[@]}"; do
  d="$work/$t"
  [ -f "$d.skipped" ] && { cat "$d.skipped"; continue; }
  last=$(grep -E '^#[0-9]+' "$d/log" | tail -1)
  execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$d/log")
  tsecs=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$d/log" | awk '{print $5}')
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
  corp=$(sed -nE 's/.* corp: ([0-9]+).*/\1/p' <<<"$last")
  crashes=$(ls "$d" | grep -cE '^(crash|leak|timeout|oom)-')
  printf '%-11s %8s %12s %8s %8s %7s %8s\n' "$t" "${tsecs:-?}" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes"
done
