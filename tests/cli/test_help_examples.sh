#!/bin/bash
# test_help_examples.sh: every program has --version, and the examples its --help shows work
# when pasted: each line of the "Examples" section is run as it is, from a copy of the source
# tree's layout (recipes/ and data/ linked), the programs on PATH, in the order the programs
# depend on each other (train, then score, generate, embed).
# Environment: SSM_BIN (folder of the programs), SSM_SRC (source tree).
set -u
BIN=${SSM_BIN:?}; SRC=${SSM_SRC:?}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0 passes=0
ok() { passes=$((passes + 1)); echo "ok   $1"; }
bad() { fails=$((fails + 1)); echo "FAIL $1"; [ -f "$T/err" ] && sed 's/^/     | /' "$T/err" | tail -5; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }

cd "$T"
ln -s "$SRC/recipes" recipes
ln -s "$SRC/data" data
export PATH="$BIN:$PATH"
for prog in ssm-train ssm-score ssm-generate ssm-embed; do
    check "$prog --version" '[ "$($prog --version)" = "$prog $(sed -n "s/^#define SSM_VERSION \"\(.*\)\"/\1/p" "$SRC/libssm/include/ssm/ssm.h")" ]'
    mapfile -t examples < <("$prog" --help | sed -n '/^Examples/,/^$/p' | sed -n 's/^  \(ssm-.*\)$/\1/p')
    check "$prog --help shows examples" '[ ${#examples[@]} -ge 1 ]'
    for line in "${examples[@]}"; do
        bash -c "$line" > out 2> err
        check "pasted: $line" '[ $? -eq 0 ]'
    done
done
check "the examples left their files" '[ -s runs/try/report.html ] && [ -s scores.tsv ] && [ -s entropy.svg ] && [ -s emb.npy ] && [ -s emb.tsv ]'
check "the resumed run reached step 8" 'grep -q "\"step\":8," runs/try/metrics.jsonl'

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
