#!/bin/bash
# test_seqclass.sh: the dna-classify task through the programs: a tiny classifier trained a
# few steps (validation accuracy, MCC, AUROC), ssm-score writing class probabilities that sum
# to 1 (TSV and FASTA inputs), fine-tuning from a masked-LM run (train.init_from, a frozen
# backbone), and bad input refused with file:line:col.
# Environment: SSM_BIN (folder of the programs), SSM_SRC (source tree).
set -u
BIN=${SSM_BIN:?}; SRC=${SSM_SRC:?}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0 passes=0
ok() { passes=$((passes + 1)); echo "ok   $1"; }
bad() { fails=$((fails + 1)); echo "FAIL $1"; [ -f "$T/err" ] && sed 's/^/     | /' "$T/err" | head -5; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }

cd "$T"
tsv=$SRC/data/promoters/promoters.tsv
model='model: {d_model: 16, n_layer: 1, d_state: 4}'
cat > cls.yaml <<YAML
$model
task: {name: dna-classify, folds: 5, fold: 2}
data: {train: $tsv}
train: {steps: 6, batch_size: 8, lr: 3e-3, warmup_steps: 2, eval_every: 3, eval_batches: 2,
        save_every: 6, log_every: 1, threads: 2, device: cpu}
output: {dir: cls}
YAML

"$BIN/ssm-train" cls.yaml 2> err; check "train a classifier" '[ $? -eq 0 ] && [ -f cls/model.safetensors ]'
check "validation prints accuracy, MCC and AUROC" 'grep -q "validation loss .* (cross-entropy), accuracy .*, mcc .*, auroc" err'
check "metrics.jsonl logs them" 'grep -q "\"valid_auroc\"" cls/metrics.jsonl'
check "the classes and the length are recorded in the run's recipe" 'grep -q "length: 57" cls/recipe.yaml && grep -A2 "classes:" cls/recipe.yaml | grep -q "\"-\""'

"$BIN/ssm-score" cls "$tsv" > p.tsv 2> err
check "score: a header and a row per sequence" '[ $? -eq 0 ] && [ "$(wc -l < p.tsv)" -eq 107 ] && head -1 p.tsv | grep -q "^id	label	p_+	p_-	predicted$"'
check "score: probabilities sum to 1" 'awk -F"\t" "NR > 1 { s = \$3 + \$4; if (s < 0.99999 || s > 1.00001 || \$3 < 0 || \$4 < 0) bad = 1 } END { exit bad }" p.tsv'
check "score: the metrics of a labelled file" 'grep -q "106 sequences: accuracy .*, MCC .*, AUROC" err'
printf ">p1 label=+\nTACTAGCAATACGCTTGCGTTCGGTGGTTAAGTATGTATAATGCGCGGGCTTGTCGT\n>q2\nACGT\n" > s.fa
"$BIN/ssm-score" cls s.fa > p2.tsv 2> err
check "score a FASTA file, with and without labels" '[ $? -eq 0 ] && sed -n 2p p2.tsv | grep -q "^p1	+	" && sed -n 3p p2.tsv | grep -q "^q2	\.	"'
printf ">long\n%s\n" "$(printf 'A%.0s' $(seq 60))" > long.fa
"$BIN/ssm-score" cls long.fa > /dev/null 2> err
check "score: longer than the model is refused" '[ $? -eq 1 ] && grep -q "long.fa:1: a sequence of 60 bases, longer than the model.s 57" err'

# fine-tuning: a masked-LM backbone, then a classifier from it with the backbone frozen
cp "$SRC/data/ecoli/held_out_50kb.fa" genome.fa # (its index is written beside it)
cat > mlm.yaml <<YAML
$model
task: {name: dna, objective: mlm}
data: {train: [genome.fa], valid_fraction: 0.1}
train: {steps: 3, batch_size: 2, seq_len: 64, eval_every: 3, eval_batches: 1, save_every: 3,
        log_every: 1, threads: 2, device: cpu}
output: {dir: mlm}
YAML
"$BIN/ssm-train" mlm.yaml 2> err; check "masked-LM pretraining" '[ $? -eq 0 ] && grep -q "baseline skipped: the Markov baseline predicts the next base" err'
"$BIN/ssm-score" mlm genome.fa > /dev/null 2> err
check "ssm-score refuses a masked LM" '[ $? -eq 1 ] && grep -q "trained as a masked LM" err'
"$BIN/ssm-train" cls.yaml --output ft --set train.init_from=mlm --set train.freeze_backbone=true 2> err
check "fine-tune from the masked LM" '[ $? -eq 0 ] && grep -q "train.init_from: [0-9]* tensors of the backbone from mlm/model.safetensors" err'
"$BIN/ssm-train" cls.yaml --output ft2 --set train.init_from=mlm --set model.d_model=32 2> err
check "init_from another shape is refused" '[ $? -eq 1 ] && grep -q "backbone.embeddings.weight is (16, 16) there, (16, 32) here: pretrain with the same model section" err'
"$BIN/ssm-train" mlm.yaml --output mlm2 --set train.lr_backbone=1e-4 2> err
check "lr_backbone needs a head of the task's own" '[ $? -eq 1 ] && grep -q "need a task with a head of its own" err'

printf "sequence\tlabel\nACGT\t+\nACJT\t-\n" > badbase.tsv
"$BIN/ssm-train" cls.yaml --output x --set data.train=badbase.tsv 2> err
check "a bad base: file:line:col" '[ $? -eq 1 ] && grep -q "badbase.tsv:3:3: .J. is not a nucleotide code" err'
printf ">a\nACGT\n" > nolabel.fa
"$BIN/ssm-train" cls.yaml --output x --set data.train=nolabel.fa 2> err
check "a FASTA header without a label" '[ $? -eq 1 ] && grep -q "nolabel.fa:1:3: no label in the header" err'

# the k-mer baseline on the same folds (bench/kmer_baseline), and the fold files it writes
mkdir folds
"$BIN/../bench/kmer_baseline" "$tsv" --write-folds folds > base.tsv 2> err
check "k-mer baseline: 5 folds, better than chance" '[ $? -eq 0 ] && [ "$(grep -c "^[0-4]	2[12]	" base.tsv)" -eq 5 ] && awk -F"\t" "/^mean/ { split(\$3, a, \" \"); exit !(a[1] > 0.8) }" base.tsv'
check "its fold files partition the set" '[ "$(cat folds/fold*.tsv | grep -vc "^sequence")" -eq 106 ] && [ "$(cat folds/fold*.tsv | grep -v "^sequence" | sort -u | wc -l)" -eq "$(grep -v "^sequence" "$tsv" | sort -u | wc -l)" ]'

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
