#!/bin/bash
# test_limits.sh: a training plan larger than the memory left is refused before anything is
# allocated (docs/reliability.md): the figure, the part that is too large and what to lower,
# with exit status 1, no run directory made, and at once.
# Environment: SSM_BIN (ssm-train), SSM_SRC (source tree).
set -u
BIN=${SSM_BIN:?}; SRC=${SSM_SRC:?}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
cd "$T"
fails=0
check() { if eval "$2"; then echo "ok   $1"; else fails=$((fails + 1)); echo "FAIL $1"; sed 's/^/     | /' err | head -5; fi; }
printf 'some text to train on, long enough for a window or two of it.\n%.0s' $(seq 50) > text.txt
recipe() { # model section, batch, length
    printf 'model: %s\ntask: {name: lm, valid_fraction: 0.1}\ndata: {train: [%s/text.txt]}\ntrain: {steps: 2, batch_size: %s, seq_len: %s, threads: 1}\noutput: {dir: run}\n' "$1" "$T" "$2" "$3"
}
recipe '{d_model: 16, n_layer: 1}' 1000000 1000000 > acts.yaml
"$BIN/ssm-train" acts.yaml --quiet 2> err; rc=$?
check "activations too large: refused with the figure and train.batch_size / seq_len" \
  '[ $rc -eq 1 ] && grep -qE "^ssm-train: acts.yaml: this training needs [0-9.]+ [KMGT]iB of memory .*activations of batch 1000000 x length 1000000 .* GiB are available; lower train.batch_size or train.seq_len" err && [ ! -e run ]'
recipe '{d_model: 16384, n_layer: 64}' 1 8 > model.yaml
"$BIN/ssm-train" model.yaml --quiet 2> err; rc=$?
check "parameters too large: refused with model.d_model / n_layer" \
  '[ $rc -eq 1 ] && grep -q "model.yaml: this training needs .* lower model.d_model or model.n_layer" err && [ ! -e run ]'
recipe '{d_model: 16, n_layer: 1}' 2 16 > fits.yaml
"$BIN/ssm-train" fits.yaml --quiet 2> err; rc=$?
check "a plan that fits trains" '[ $rc -eq 0 ] && [ -f run/model.safetensors ]'
[ $fails -eq 0 ]
