#!/bin/bash
# test_lock.sh: one writer per run directory (docs/reliability.md). While an ssm-train runs on a
# directory, a second one (--resume, or a new run with --force) is refused with the first one's
# pid and nothing of the directory changes; once the first is killed (SIGKILL: the kernel drops
# its flock), --resume works.
# Environment: SSM_BIN (ssm-train), SSM_SRC (source tree), SSM_KEEP=1 keeps the folder.
set -u
BIN=${SSM_BIN:?}; SRC=${SSM_SRC:?}
T=$(mktemp -d); [ -n "${SSM_KEEP:-}" ] && echo "kept: $T" || trap 'kill -KILL $pid 2>/dev/null; rm -rf "$T"' EXIT
cd "$T"
fails=0
check() { if eval "$2"; then echo "ok   $1"; else fails=$((fails + 1)); echo "FAIL $1"; sed 's/^/     | /' err | head -5; fi; }

gzip -dc "$SRC/data/text/web.txt.gz" | head -c 30000 > text.txt
cat > tiny.yaml <<YAML
model: {d_model: 16, n_layer: 1, d_state: 4}
task: {name: lm, valid_fraction: 0.1}
data: {train: [$T/text.txt]}
train: {steps: 1000000, batch_size: 2, seq_len: 32, eval_every: 1000000, eval_batches: 1,
        save_every: 5, log_every: 100, threads: 1}
output: {dir: run}
YAML
"$BIN/ssm-train" tiny.yaml --quiet 2> err1 &
pid=$!
for _ in $(seq 300); do [ -f run/train_state.safetensors ] && break; sleep 0.05; done
check "the first run writes its checkpoint" '[ -f run/train_state.safetensors ] && grep -qx "$pid" run/.lock'
cp run/recipe.yaml recipe.before
"$BIN/ssm-train" --resume run --quiet 2> err; rc=$?
check "a second ssm-train --resume is refused, naming the first one's pid" \
  '[ $rc -eq 1 ] && grep -q "run: another ssm-train (pid $pid) is writing to this run directory" err'
"$BIN/ssm-train" tiny.yaml --force --quiet --stop-after 1 2> err; rc=$?
check "a new run with --force is refused too, and leaves the recipe alone" \
  '[ $rc -eq 1 ] && grep -q "another ssm-train" err && cmp -s recipe.before run/recipe.yaml'
kill -KILL $pid; wait $pid 2>/dev/null
"$BIN/ssm-train" --resume run --quiet --stop-after 1 2> err; rc=$?
check "after a SIGKILL of the first, --resume takes the directory" '[ $rc -eq 0 ]'
[ $fails -eq 0 ]
