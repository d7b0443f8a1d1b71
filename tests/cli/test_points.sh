#!/bin/bash
# test_points.sh: the point-cloud task through the programs: a few training steps on a small
# copy of data/points (classify head, the accuracy metric), ssm-score on a folder (TSV of the
# class and the probabilities, the accuracy) and on a list of files, points-nn, and bad input
# refused naming the file; the same with the PointNet patch encoder (model.patch).
# Environment: SSM_BIN (folder of the programs), SSM_SRC (source tree), SSM_POINTS_NN.
set -u
BIN=${SSM_BIN:?}; SRC=${SSM_SRC:?}; NN=${SSM_POINTS_NN:?}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0 passes=0
ok() { passes=$((passes + 1)); echo "ok   $1"; }
bad() { fails=$((fails + 1)); echo "FAIL $1"; [ -f "$T/err" ] && sed 's/^/     | /' "$T/err" | head -5; }
check() { if eval "$2" && ! grep -q "Sanitizer" err 2>/dev/null; then ok "$1"; else bad "$1"; fi; }

cd "$T"
for split in train test; do # 3 classes, a few fonts each
  for c in 1 4 8; do
    mkdir -p $split/$c
    ls "$SRC/data/points/$split/$c" | head -4 | while read f; do cp "$SRC/data/points/$split/$c/$f" $split/$c/; done
  done
done
cat > tiny.yaml <<YAML
model: {d_model: 16, pattern: "*M", d_state: 4, n_heads: 2}
task: {name: points, points: 128, groups: 8, neighbours: 8, rotate_degrees: 10}
data: {train: train, valid: test}
train: {steps: 4, batch_size: 4, lr: 3e-3, warmup_steps: 1, eval_every: 2, eval_batches: 2,
        save_every: 2, log_every: 1, threads: 2, device: cpu}
output: {dir: run}
YAML

"$BIN/ssm-train" tiny.yaml 2> err; check "train on point folders" '[ $? -eq 0 ] && [ -f run/model.safetensors ]'
check "validation prints the accuracy" 'grep -q "validation loss .* (cross-entropy), accuracy " err'
check "metrics.jsonl logs it" 'grep -q "\"valid_accuracy\"" run/metrics.jsonl'

"$BIN/ssm-score" run test > score.tsv 2> err
check "score a folder: a header and a row per file" '[ $? -eq 0 ] && [ "$(wc -l < score.tsv)" -eq 13 ] && head -1 score.tsv | grep -q "^file	predicted	p_1	p_4	p_8$"'
check "score a folder: the accuracy" 'grep -q "points: test: accuracy [0-9.]* (.* of the 12 files in class folders)" err'
check "probabilities sum to 1" 'awk -F"\t" "NR > 1 { s = \$3 + \$4 + \$5; if (s < 0.999 || s > 1.001) exit 1 }" score.tsv'
ls test/4/* > list.txt
"$BIN/ssm-score" run --files-from list.txt > list.tsv 2> err
check "score a list of files" '[ $? -eq 0 ] && [ "$(wc -l < list.tsv)" -eq 5 ]'
check "a file scores the same alone as in its folder" '[ "$(grep "^test/4/" score.tsv)" = "$(tail -n +2 list.tsv)" ]'

"$NN" --points 128 train test > nn.txt 2> err
check "points-nn: the descriptor baseline" '[ $? -eq 0 ] && grep -q "accuracy [0-9.]* (.* of 12 test shapes; 12 training shapes)" nn.txt'

# the PointNet patch encoder and its learned order (model.patch), trained, saved and scored
"$BIN/ssm-train" tiny.yaml --force --output pn --set model.patch=pointnet --set 'model.patch_widths=[8,16,8]' 2> err
check "train with model.patch: pointnet" '[ $? -eq 0 ] && grep -q "validation loss .* accuracy" err'
"$BIN/ssm-score" pn test > pn.tsv 2> err
check "score the patch encoder's run" '[ $? -eq 0 ] && [ "$(wc -l < pn.tsv)" -eq 13 ] && grep -q "accuracy" err'
"$BIN/ssm-train" tiny.yaml --force --output pn2 --set model.patch=pointnet --set task.reading=both 2> err
check "task.reading: both with the patch encoder refused" '[ $? -ne 0 ] && grep -q "task.reading: both with model.patch: pointnet" err'

# bad input: one line naming the file (and the byte or line)
f=$(ls test/1/* | head -1)
head -c 2000 "$f" > cut.ply
"$BIN/ssm-score" run cut.ply > /dev/null 2> err
check "truncated binary PLY" '[ $? -ne 0 ] && grep -q "cut.ply: byte [0-9]*: the file ends in element .vertex." err'
printf '1 2 3\n4 nan 6\n' > nan.xyz
"$BIN/ssm-score" run nan.xyz > /dev/null 2> err
check "NaN coordinate" '[ $? -ne 0 ] && grep -q "nan.xyz:2: vertex 1 has a coordinate that is not a finite number" err'
for i in $(seq 1 40); do echo "$i $((i * i % 7)) 0"; done > few.xyz
"$BIN/ssm-score" run few.xyz > /dev/null 2> err
check "fewer points than G k" '[ $? -ne 0 ] && grep -q "few.xyz: 40 points, fewer than G k = 64" err'
mkdir -p train/x && cp few.xyz train/x/
"$BIN/ssm-train" tiny.yaml --force --output r2 --set task.classes=[1,4,8] 2> err
check "a folder that names no class" '[ $? -ne 0 ] && grep -q "train: the folder .x. names no class of task.classes" err'

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
