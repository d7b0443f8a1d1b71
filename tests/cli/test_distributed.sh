#!/bin/bash
# test_distributed.sh: data-parallel ssm-train over MPI ranks (docs/distributed.md): 2 ranks of
# batch 2 follow 1 rank of batch 4 (the same rows, within fp32 reduction rounding), the summary
# shows the global batch, rank 0 alone writes, a failing rank ends the job with its message, a
# 2-rank checkpoint resumes on 1 rank (and a 1-rank one on 2), ranks with different recipes are
# refused, a killed rank ends the job within seconds naming the rank and leaves the last
# checkpoint intact.
# Environment: SSM_BIN (folder of ssm-train), SSM_SRC (source tree), MPIRUN.
set -u
BIN=${SSM_BIN:?}; SRC=${SSM_SRC:?}; MPIRUN=${MPIRUN:-mpirun}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0 passes=0
ok() { passes=$((passes + 1)); echo "ok   $1"; }
bad() { fails=$((fails + 1)); echo "FAIL $1"; [ -f "$T/err" ] && sed 's/^/     | /' "$T/err" | head -8; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }

# CI runs as root; two ranks on a machine of two (shared) cores, one thread each, not pinned
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
# every rank on this machine: no ssh needed (a fresh CI image has none)
export OMPI_MCA_plm=isolated
# Under ASan, the ranks that mpirun starts check memory errors but not leaks: OpenMPI's own
# allocations outlive MPI_Finalize, from components it has dlclose'd by then, so LeakSanitizer
# can neither name nor suppress them. The single-process runs below keep the leak check.
MPI_ASAN=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
mpi() { local n=$1; shift; ASAN_OPTIONS=$MPI_ASAN "$MPIRUN" --oversubscribe --bind-to none -np "$n" "$@"; }

cd "$T"
cp "$SRC/data/ecoli/held_out_50kb.fa" genome.fa # htslib indexes it beside itself: not in the source tree
cat > tiny.yaml <<YAML
model: {d_model: 16, n_layer: 2, d_state: 4}
task: {name: dna, rc_prob: 0.5}
data: {train: [genome.fa], valid_fraction: 0.1}
train: {steps: 12, batch_size: 2, seq_len: 64, lr: 3e-3, warmup_steps: 3, eval_every: 6,
        eval_batches: 2, save_every: 4, log_every: 1, threads: 1}
output: {dir: run1}
YAML
losses() { grep '"loss"' "$1/metrics.jsonl" | sed -E 's/.*"step":([0-9]+),"loss":([^,]+),.*/\1 \2/'; }
valid() { grep '"valid_loss"' "$1/metrics.jsonl" | sed -E 's/.*"step":([0-9]+),"valid_loss":([^,]+),.*/\1 \2/'; }
# two "step value" lists agree to a relative 1e-5 (the sums of 2 ranks round unlike 1 rank's)
close() { paste <($1 "$2") <($1 "$3") | awk 'BEGIN { n = 0 } { n++; d = $2 - $4; if ($1 != $3 || d * d > 1e-10 * $2 * $2) exit 1 }
                                        END { exit n == 0 }'; }

# --- 2 ranks of batch 2 = 1 rank of batch 4 -------------------------------------------------
"$BIN/ssm-train" tiny.yaml --set train.batch_size=4 --quiet 2> err
check "1 rank, batch 4" '[ $? -eq 0 ] && [ "$(losses run1 | wc -l)" -eq 12 ]'
mpi 2 "$BIN/ssm-train" tiny.yaml --output run2 > out 2> err
check "2 ranks, batch 2 each" '[ $? -eq 0 ] && [ "$(losses run2 | wc -l)" -eq 12 ]'
check "the summary shows the global batch" 'grep -q "256 tokens per step (2 ranks x batch 2 x length 64)" err'
check "rank 0 alone reports" '! grep -q "(rank 1)" err && [ "$(grep -c "done:" err)" -eq 1 ]'
check "2 ranks follow the 1-rank loss curve at the doubled batch" 'close losses run1 run2'
check "and its validation losses" '[ "$(valid run2 | wc -l)" -eq 2 ] && close valid run1 run2'

# --- a rank that fails ends the job: rank 0 refuses to overwrite run2, rank 1 waits for it --
timeout 60 bash -c "$(declare -f mpi); MPIRUN=$MPIRUN MPI_ASAN=$MPI_ASAN mpi 2 $BIN/ssm-train tiny.yaml --output run2" > out 2> err; rc=$?
check "a failing rank ends the whole job with its message" '[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "(rank 0): run2: a run is already there" err && grep -q "(rank 0): stopping every rank" err'

# --- resume on another number of ranks ------------------------------------------------------
mpi 2 "$BIN/ssm-train" tiny.yaml --output runR --stop-after 6 --quiet 2> err; rcA=$?
"$BIN/ssm-train" --resume runR --set train.batch_size=4 --quiet 2>> err; rcB=$?
check "a 2-rank checkpoint resumes on 1 rank" '[ $rcA -eq 0 ] && [ $rcB -eq 0 ] && [ "$(losses runR | wc -l)" -eq 12 ]'
check "and continues the 2-rank curve" 'close losses run2 runR'
"$BIN/ssm-train" tiny.yaml --set train.batch_size=4 --output runS --stop-after 6 --quiet 2> err; rcA=$?
mpi 2 "$BIN/ssm-train" --resume runS --quiet 2>> err; rcB=$?
check "a 1-rank checkpoint resumes on 2 ranks and continues its curve" '[ $rcA -eq 0 ] && [ $rcB -eq 0 ] && close losses run1 runS'

# --- refused: ranks with different recipes --------------------------------------------------
sed 's/lr: 3e-3/lr: 2e-3/' tiny.yaml > other.yaml
ASAN_OPTIONS=$MPI_ASAN "$MPIRUN" --oversubscribe --bind-to none -np 1 "$BIN/ssm-train" tiny.yaml --output runX : \
    -np 1 "$BIN/ssm-train" other.yaml --output runX > out 2> err; rc=$?
check "ranks with different recipes are refused" '[ $rc -ne 0 ] && grep -q "rank 1): this rank.s recipe differs" err && grep -q "refused" err && [ ! -f runX/model.safetensors ]'

# --- a rank killed mid-run ends the job, naming it ------------------------------------------
sed 's/steps: 12/steps: 1000000/' tiny.yaml > long.yaml
ASAN_OPTIONS=$MPI_ASAN "$MPIRUN" --oversubscribe --bind-to none -np 2 "$BIN/ssm-train" long.yaml --output runK --quiet > err 2>&1 &
job=$!
for _ in $(seq 300); do [ -f runK/train_state.safetensors ] && break; sleep 0.1; done
# the rank-1 process: a child of mpirun whose environment says so
victim=
for p in $(pgrep -P $job); do
    tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && victim=$p
done
t0=$(date +%s.%N)
[ -n "$victim" ] && kill -9 "$victim"
for _ in $(seq 300); do kill -0 $job 2>/dev/null || break; sleep 0.1; done
t1=$(date +%s.%N)
kill -0 $job 2>/dev/null && { kill $job; sleep 1; }
wait $job; rc=$?
check "a killed rank ends the whole job within 10 s" '[ -n "$victim" ] && [ $rc -ne 0 ] && awk -v a=$t0 -v b=$t1 "BEGIN { exit !(b - a < 10) }"'
check "with a message naming the rank" 'grep -q "rank 1" err'
"$BIN/ssm-train" --resume runK --set train.batch_size=4 --stop-after 1 --quiet 2> err
check "the last checkpoint is intact (resumes)" '[ $? -eq 0 ]'

echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
