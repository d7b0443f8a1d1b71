#!/bin/bash
# test_diskfull.sh: a full filesystem (docs/reliability.md). On a small tmpfs, a run saves its
# checkpoint at step 2; the filesystem is then filled, and a resumed ssm-train (its next save)
# and an ssm-score --output must fail with exit status 1 and a message naming the file and
# "No space left on device", leaving the step-2 checkpoint byte for byte as it was and no
# temporary file behind; once space is freed, --resume continues from step 2.
# Needs root (mount); skipped (exit 77) otherwise, or where tmpfs cannot be mounted.
# Environment: SSM_BIN (ssm-train, ssm-score), SSM_SRC (source tree).
set -u
BIN=${SSM_BIN:?}; SRC=${SSM_SRC:?}
[ "$(id -u)" -eq 0 ] || { echo "SKIP: not root, cannot mount a size-limited tmpfs"; exit 77; }
T=$(mktemp -d)
trap 'umount "$T/fs" 2>/dev/null; rm -rf "$T"' EXIT
mkdir "$T/fs"
mount -t tmpfs -o size=1m tmpfs "$T/fs" 2>/dev/null || { echo "SKIP: cannot mount tmpfs here"; exit 77; }
cd "$T"
fails=0
check() { if eval "$2"; then echo "ok   $1"; else fails=$((fails + 1)); echo "FAIL $1"; sed 's/^/     | /' err | head -5; fi; }

gzip -dc "$SRC/data/text/web.txt.gz" | head -c 30000 > text.txt
cat > tiny.yaml <<YAML
model: {d_model: 16, n_layer: 2, d_state: 4}
task: {name: lm, valid_fraction: 0.1}
data: {train: [$T/text.txt]}
train: {steps: 10, batch_size: 2, seq_len: 32, eval_every: 10, eval_batches: 1, save_every: 2,
        log_every: 1, threads: 1}
output: {dir: fs/run}
YAML
"$BIN/ssm-train" tiny.yaml --quiet --stop-after 2 2> err
check "a run saves its step-2 checkpoint on the tmpfs" '[ $? -eq 0 ] && [ -f fs/run/train_state.safetensors ]'
cp fs/run/model.safetensors fs/run/train_state.safetensors fs/run/config.json .
printf 'a line of text to score\n' > score.txt
dd if=/dev/zero of=fs/fill bs=4k 2>/dev/null # until the filesystem is full

"$BIN/ssm-train" --resume fs/run --quiet 2> err; rc=$?
check "the next save fails with status 1: the file and 'No space left on device'" \
  '[ $rc -eq 1 ] && grep -qE "fs/run/[a-z_.]+\.tmp: cannot write: No space left on device" err'
check "... says the last complete checkpoint is kept" 'grep -q "keeps its last complete checkpoint" err'
check "... leaves the step-2 checkpoint byte for byte" \
  'cmp -s model.safetensors fs/run/model.safetensors && cmp -s train_state.safetensors fs/run/train_state.safetensors && cmp -s config.json fs/run/config.json'
check "... and no temporary file" '! ls fs/run | grep -qE "\.tmp$|\.next\."'

"$BIN/ssm-score" fs/run score.txt -o fs/scores.tsv 2> err; rc=$?
check "ssm-score --output on the full filesystem fails: the file and 'No space left on device'" \
  '[ $rc -eq 1 ] && grep -q "fs/scores.tsv.tmp: cannot write: No space left on device" err && [ ! -e fs/scores.tsv ] && [ ! -e fs/scores.tsv.tmp ]'

rm fs/fill
"$BIN/ssm-train" --resume fs/run --stop-after 1 2> err; rc=$?
check "with space again, --resume continues from step 2" '[ $rc -eq 0 ] && grep -q "resuming fs/run at step 2" err'
[ $fails -eq 0 ]
