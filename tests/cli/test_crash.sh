#!/bin/bash
# test_crash.sh [KILLS]: crash safety of ssm-train (docs/reliability.md). A tiny text model is
# trained once without interruption; then the same run is started (first checkpoint at step 1)
# and killed with SIGKILL at KILLS random moments (default $SSM_CRASH_KILLS, else 50), each
# time resumed with --resume: after every kill the run directory must hold a checkpoint that
# loads (the next --resume loads it, the last one runs to the end), and the final
# model.safetensors and train_state.safetensors must be byte for byte those of the
# uninterrupted run (CPU training here is deterministic for a fixed thread count). A checkpoint
# is saved every step, so that many kills land inside a save; the count is printed.
# Environment: SSM_BIN (ssm-train), SSM_SRC (source tree), SSM_KEEP=1 keeps the folder.
set -u
BIN=${SSM_BIN:?}; SRC=${SSM_SRC:?}
kills=${1:-${SSM_CRASH_KILLS:-50}}
T=$(mktemp -d); [ -n "${SSM_KEEP:-}" ] && echo "kept: $T" || trap 'rm -rf "$T"' EXIT
cd "$T"
fail() { echo "FAIL $*"; [ -f err ] && sed 's/^/     | /' err | tail -5; exit 1; }

gzip -dc "$SRC/data/text/web.txt.gz" | head -c 60000 > text.txt
cat > tiny.yaml <<YAML
model: {d_model: 16, n_layer: 2, d_state: 4}
task: {name: lm, valid_fraction: 0.1}
data: {train: [$T/text.txt]}
train: {steps: 60, batch_size: 2, seq_len: 32, lr: 3e-3, warmup_steps: 5, eval_every: 30,
        eval_batches: 1, save_every: 1, log_every: 10, threads: 1, seed: 3}
output: {dir: run}
YAML
# the same output.dir (the recipe is in the checkpoint's metadata) in two folders
mkdir a b && cd a
t0=$(date +%s.%N)
"$BIN/ssm-train" ../tiny.yaml --quiet 2> err || fail "the uninterrupted run"
t1=$(date +%s.%N)
cd ../b

start_chain() { # the interrupted run from scratch: its first checkpoint at step 1
    rm -rf run
    "$BIN/ssm-train" ../tiny.yaml --quiet --stop-after 1 2> err || fail "the first step"
}
same_as_reference() {
    cmp -s ../a/run/model.safetensors run/model.safetensors || fail "$1: model.safetensors differs from the uninterrupted run's"
    cmp -s ../a/run/train_state.safetensors run/train_state.safetensors || fail "$1: train_state.safetensors differs"
}
start_chain
t2=$(date +%s.%N)
# each kill lands uniformly in [0, D], D = start-up + twice the run's share of one kill, so
# that the kills spread over the whole run, start-up and saves included; a run that reaches its
# end before its kill is compared with the reference, and a new chain starts with D * 0.7
span_ms=$(awk -v a="$t0" -v b="$t1" -v c="$t2" -v k="$kills" \
  'BEGIN {u = c - b; r = (b - a) - u; if (r < 0) r = 0; printf "%d", 1000 * (u + 2 * r / k) + 5}')
RANDOM=${SSM_CRASH_SEED:-1}
mid_save=0 chains=0
for ((k = 1; k <= kills; k++)); do
    "$BIN/ssm-train" --resume run --quiet 2> err &
    pid=$!
    sleep "$(awk -v r=$RANDOM -v s="$span_ms" 'BEGIN {printf "%.3f", (r % s) / 1000}')"
    if kill -KILL "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null
        ls run | grep -qE '\.tmp$|\.next\.' && mid_save=$((mid_save + 1))
        [ -f run/model.safetensors ] || fail "after kill $k: no model.safetensors"
    else
        wait "$pid" || fail "resume after kill $((k - 1)) ended with status $? (its checkpoint did not load?)"
        same_as_reference "chain $((chains + 1))"
        chains=$((chains + 1)) k=$((k - 1)) span_ms=$((span_ms * 7 / 10 + 1))
        start_chain
    fi
done
"$BIN/ssm-train" --resume run --quiet 2> err || fail "the last resume (status $?)"
same_as_reference "chain $((chains + 1))"
echo "ok   $kills SIGKILLs ($mid_save inside a save) over $((chains + 1)) interrupted runs, each ending with the final model and optimizer state of the uninterrupted run, byte for byte"
