#!/bin/bash
# test_paper_recipes.sh: every recipe under recipes/paper/ parses and trains a few steps, the
# selective-copying ablation (model.selective=false) too, and ssm-accuracy reads the runs back:
# the induction-heads model at several lengths with small windows (carried state) gives the
# counts of one pass. Environment: SSM_BIN, SSM_SRC, SSM_SELECTIVE_COPY_SO, SSM_INDUCTION_HEADS_SO.
set -u
BIN=${SSM_BIN:?}; SRC=${SSM_SRC:?}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0 passes=0
ok() { passes=$((passes + 1)); echo "ok   $1"; }
bad() { fails=$((fails + 1)); echo "FAIL $1"; [ -f "$T/err" ] && sed 's/^/     | /' "$T/err" | head -5; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }
# a few steps of a recipe, run from the source tree (the recipes name data/ by relative path)
short() { # NAME RECIPE EXTRA...
    local name=$1 recipe=$2; shift 2
    (cd "$SRC" && "$BIN/ssm-train" "recipes/paper/$recipe.yaml" --output "$T/$name" --force --quiet \
        --set train.steps=3 --set train.eval_every=3 --set train.eval_batches=1 \
        --set train.save_every=3 --set train.log_every=1 --set train.threads=2 "$@") 2> "$T/err"
}
steps() { grep -c '"loss"' "$T/$1/metrics.jsonl"; }

for n in 1k 4k 16k; do
    short dna_$n dna_$n; check "dna_$n trains 3 steps" '[ $? -eq 0 ] && [ "$(steps dna_$n)" -eq 3 ]'
done
short copy selective_copy --set task.name="$SSM_SELECTIVE_COPY_SO"
check "selective_copy trains 3 steps" '[ $? -eq 0 ] && [ "$(steps copy)" -eq 3 ]'
short copy_lti selective_copy --set task.name="$SSM_SELECTIVE_COPY_SO" --set model.selective=false
check "selective_copy without selection trains 3 steps" '[ $? -eq 0 ] && [ "$(steps copy_lti)" -eq 3 ]'
check "the ablation is recorded in the checkpoint" 'grep -aq "ssm.selective" "$T/copy_lti/model.safetensors" && ! grep -aq "ssm.selective" "$T/copy/model.safetensors"'
short induction induction_heads --set task.name="$SSM_INDUCTION_HEADS_SO"
check "induction_heads trains 3 steps" '[ $? -eq 0 ] && [ "$(steps induction)" -eq 3 ]'

"$BIN/ssm-accuracy" "$T/copy_lti" --batches 2 --batch-size 1 --quiet > "$T/acc" 2> "$T/err"
check "ssm-accuracy on the ablation: one line at the training length" '[ $? -eq 0 ] && grep -Eq "^ +128 +[0-9.]+% +[0-9]+/8 " "$T/acc"'
"$BIN/ssm-accuracy" "$T/induction" --lengths 2^6..2^8,1000 --batches 2 --batch-size 3 --json "$T/one.jsonl" --quiet > "$T/one" 2> "$T/err"
check "ssm-accuracy at 2^6..2^8 and 1000: four lengths, 6 scored each" '[ $? -eq 0 ] && [ "$(grep -c "\"scored\":6," "$T/one.jsonl")" -eq 4 ]'
"$BIN/ssm-accuracy" "$T/induction" --lengths 2^6..2^8,1000 --batches 2 --batch-size 3 --window 37 --json "$T/win.jsonl" --quiet > /dev/null 2> "$T/err"
check "windows of 37 with carried state count as one pass" 'diff <(cut -d, -f1-4 "$T/one.jsonl") <(cut -d, -f1-4 "$T/win.jsonl") > /dev/null'
"$BIN/ssm-accuracy" "$T/induction" --lengths 2^5..2^x --quiet 2> "$T/err"
check "a malformed --lengths is a usage error" '[ $? -eq 2 ] && grep -q "lengths" "$T/err"'

echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
