#!/bin/bash
# test_cli.sh: the programs end to end on the DNA task: training, exact resume (bit-identical
# losses), Ctrl-C, refusing to overwrite, recipe and input errors (one clear line, exit 1),
# scoring (window, batch and thread invariance; bedGraph; both strands), generation; audio;
# --device (cpu, and cuda refused on a machine without a GPU).
# Environment: SSM_BIN (folder of ssm-train/-score/-generate), SSM_SRC (source tree),
# SSM_BAD_ABI_SO (a plugin built for another ABI version).
set -u
BIN=${SSM_BIN:?}; SRC=${SSM_SRC:?}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0 passes=0
ok() { passes=$((passes + 1)); echo "ok   $1"; }
bad() { fails=$((fails + 1)); echo "FAIL $1"; [ -f "$T/err" ] && sed 's/^/     | /' "$T/err" | head -5; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }

cd "$T"
cat > tiny.yaml <<YAML
model: {d_model: 16, n_layer: 2, d_state: 4}
task: {name: dna, rc_prob: 0.5}
data: {train: [$SRC/data/ecoli/NC_008253.fna.gz], valid_fraction: 0.05}
train: {steps: 12, batch_size: 2, seq_len: 64, lr: 3e-3, warmup_steps: 3, eval_every: 6,
        eval_batches: 2, save_every: 4, log_every: 1, threads: 2}
output: {dir: runA}
YAML
losses() { grep '"loss"' "$1/metrics.jsonl" | sed -E 's/.*"step":([0-9]+),"loss":([^,]+),.*/\1 \2/'; }

# --- training and exact resume -------------------------------------------------------------
"$BIN/ssm-train" tiny.yaml --quiet 2> err; check "train 12 steps" '[ $? -eq 0 ] && [ -f runA/model.safetensors ] && [ -f runA/config.json ] && [ -f runA/train_state.safetensors ] && [ -f runA/recipe.yaml ]'
check "metrics.jsonl has 12 loss lines and a baseline" '[ "$(losses runA | wc -l)" -eq 12 ] && grep -q baseline_bits runA/metrics.jsonl'
"$BIN/ssm-train" tiny.yaml --quiet --output runB --stop-after 5 2> err; rcB=$?
"$BIN/ssm-train" --resume runB --quiet 2> err; rcR=$?
check "stop after 5 steps, then resume" '[ $rcB -eq 0 ] && [ $rcR -eq 0 ]'
check "losses after resuming are bit-identical" 'diff <(losses runA) <(losses runB) > diff.txt'
"$BIN/ssm-score" runA "$SRC/tests/data/fasta/ok.fa" --quiet > sa.tsv; "$BIN/ssm-score" runB "$SRC/tests/data/fasta/ok.fa" --quiet > sb.tsv
check "the resumed model scores exactly like the uninterrupted one" 'cmp -s sa.tsv sb.tsv && [ -s sa.tsv ]'

"$BIN/ssm-train" tiny.yaml --quiet 2> err; rc=$?
check "an existing run is not overwritten" '[ $rc -eq 1 ] && grep -q -- "--resume" err && [ "$(wc -l < err)" -eq 1 ]'
sed 's/valid_fraction: 0.05/valid_fraction: 0.1/' tiny.yaml > other.yaml
"$BIN/ssm-train" other.yaml --resume runA --quiet 2> err; rc=$?
check "resume with another recipe is refused" '[ $rc -eq 1 ] && grep -q "another recipe" err'

# --- devices: without a GPU (or without CUDA in the build) --device cuda is one clear error -----
"$BIN/ssm-train" tiny.yaml --quiet --output runGPU --device cuda --set train.steps=2 > /dev/null 2> err; rc=$?
if [ $rc -eq 0 ]; then
    ok "--device cuda (skipped: this machine has a GPU, the run used it)"
else
    check "--device cuda without a GPU: one line, exit 1, nothing written" '[ $rc -eq 1 ] && [ "$(wc -l < err)" -eq 1 ] && grep -qE "device .cuda.: (this build has no CUDA support|no CUDA device is present)" err && [ ! -e runGPU ]'
fi

# --- Ctrl-C saves and resumes ----------------------------------------------------------------
"$BIN/ssm-train" tiny.yaml --quiet --output runC --set train.steps=100000 --set train.save_every=100000 2> err &
pid=$!
for i in $(seq 50); do grep -q '"step":3,' runC/metrics.jsonl 2>/dev/null && break; sleep 0.2; done
kill -INT $pid; wait $pid; rc=$?
check "Ctrl-C saves a checkpoint and exits 130" '[ $rc -eq 130 ] && [ -f runC/train_state.safetensors ] && grep -q "resume" err'
"$BIN/ssm-train" --resume runC --quiet --stop-after 2 2> err
check "the interrupted run resumes" '[ $? -eq 0 ]'

# --- bad recipes and inputs: one line naming the file, exit 1 --------------------------------
one_error() { # name, expected pattern, command...
    local name=$1 pat=$2; shift 2
    "$@" > /dev/null 2> err; local rc=$?
    if [ $rc -eq 1 ] && [ "$(wc -l < err)" -eq 1 ] && grep -qE "$pat" err; then ok "$name"; else bad "$name (rc $rc)"; fi
}
printf 'model: [1, 2\n' > notyaml.yaml
one_error "recipe that is not YAML" 'notyaml.yaml:[0-9]+:[0-9]+' "$BIN/ssm-train" notyaml.yaml
sed 's/lr: 3e-3/lr: fast/' tiny.yaml > badtype.yaml
one_error "wrong type" "badtype.yaml:[0-9]+:[0-9]+: .*lr" "$BIN/ssm-train" badtype.yaml --output r1
sed 's/lr: 3e-3/lr: 7/' tiny.yaml > range.yaml
one_error "out of range" "range.yaml:[0-9]+:[0-9]+: .*lr" "$BIN/ssm-train" range.yaml --output r2
sed 's/warmup_steps:/warmup_stesp:/' tiny.yaml > typo.yaml
one_error "unknown key with a suggestion" "did you mean 'warmup_steps'" "$BIN/ssm-train" typo.yaml --output r3
one_error "missing recipe file" "nothere.yaml" "$BIN/ssm-train" nothere.yaml
sed "s#$SRC/data/ecoli/NC_008253.fna.gz#missing.fa#" tiny.yaml > missing.yaml
one_error "missing data file" "missing.fa" "$BIN/ssm-train" missing.yaml --output r4
sed "s#$SRC/data/ecoli/NC_008253.fna.gz#$SRC/tests/data/fasta/bad_not_fasta.txt#" tiny.yaml > notfasta.yaml
one_error "data that is not FASTA" "bad_not_fasta.txt" "$BIN/ssm-train" notfasta.yaml --output r5
sed 's/name: dna/name: nosuchtask/' tiny.yaml > notask.yaml
one_error "unknown task" "unknown task 'nosuchtask'" "$BIN/ssm-train" notask.yaml --output r6
if [ -n "${SSM_BAD_ABI_SO:-}" ]; then
    sed "s#name: dna#name: $SSM_BAD_ABI_SO#" tiny.yaml > badabi.yaml
    one_error "plugin with another ABI version" "ABI version" "$BIN/ssm-train" badabi.yaml --output r7
fi
one_error "score a file that is not FASTA" "bad_not_fasta.txt" "$BIN/ssm-score" runA "$SRC/tests/data/fasta/bad_not_fasta.txt"
one_error "score with a missing model" "nomodel" "$BIN/ssm-score" nomodel "$SRC/tests/data/fasta/ok.fa"
"$BIN/ssm-score" runA "$SRC/tests/data/fasta/bad_truncated.fa.gz" --output partial.tsv > /dev/null 2> err
check "a failed score leaves no output file" '[ $? -eq 1 ] && [ ! -e partial.tsv ] && [ ! -e partial.tsv.tmp ]'

# --- scoring -------------------------------------------------------------------------------------
FA=$SRC/data/ecoli/held_out_50kb.fa
head -n 50 "$FA" > small.fa; printf '>second\nACGTNNACGTTGCAacgtGGCCA\n>third\nTTTTTTTTTTAAAAAA\n' >> small.fa
"$BIN/ssm-score" runA small.fa --quiet > s1.tsv 2> err
check "ssm-score writes a header and one line per record" '[ $? -eq 0 ] && head -1 s1.tsv | grep -q "^id	length	n_scored	sum_logp	mean_logp	bits_per_base	perplexity$" && [ "$(wc -l < s1.tsv)" -eq 4 ]'
check "N bases are not scored" 'awk -F"\t" "\$1==\"second\" {exit !(\$2==23 && \$3==21)}" s1.tsv'
"$BIN/ssm-score" runA small.fa --quiet --batch 1 --threads 1 > s2.tsv
"$BIN/ssm-score" runA small.fa --quiet --batch 3 --threads 2 > s3.tsv
check "scores do not depend on batch size or threads" 'cmp -s s1.tsv s2.tsv && cmp -s s1.tsv s3.tsv'
"$BIN/ssm-score" runA small.fa --quiet --device cpu > s6.tsv
check "--device cpu scores like the default" 'cmp -s s1.tsv s6.tsv'
one_error "unknown device" "unknown device 'gpu' \(auto, cpu, cuda or cuda:N\)" "$BIN/ssm-score" runA small.fa --device gpu
"$BIN/ssm-score" runA small.fa --quiet --window 37 > s4.tsv
check "windows of 37 with the carried state equal one pass" 'paste s1.tsv s4.tsv | awk -F"\t" "NR>1 {d=\$4-\$11; if (d<0) d=-d; if (d > 1e-4*(\$4<0?-\$4:\$4)+1e-5) exit 1}"'
"$BIN/ssm-score" runA small.fa --quiet --bedgraph b.bedgraph --output s5.tsv
check "bedGraph: one line per scored base, 0-based half-open, sums to sum_logp" 'cmp -s s1.tsv s5.tsv && [ "$(awk "\$1==\"second\"" b.bedgraph | wc -l)" -eq 21 ] && awk -F"\t" "\$1==\"second\" && NR>0 {s+=\$4} END {exit 0}" b.bedgraph'

printf '>x\nACGTTGCANNACGGTTTAGC\n' > x.fa
printf '>x\n%s\n' "$(sed -n 2p x.fa | rev | tr ACGT TGCA)" > x_rc.fa
"$BIN/ssm-score" runA x.fa --quiet > fwd.tsv; "$BIN/ssm-score" runA x_rc.fa --quiet > rev.tsv
"$BIN/ssm-score" runA x.fa --quiet --strand both > both.tsv
check "--strand both reports each strand and both" 'head -1 both.tsv | grep -q "sum_logp_forward	sum_logp_reverse	sum_logp" && [ "$(cut -f4 both.tsv | tail -1)" = "$(cut -f4 fwd.tsv | tail -1)" ] && [ "$(cut -f5 both.tsv | tail -1)" = "$(cut -f4 rev.tsv | tail -1)" ] && [ "$(cut -f3 both.tsv | tail -1)" = 36 ]'

# --- generation ------------------------------------------------------------------------------
"$BIN/ssm-generate" runA --length 130 --seed 3 --quiet > g.txt 2> err
check "ssm-generate writes a FASTA record of 130 bases" '[ $? -eq 0 ] && head -1 g.txt | grep -q "^>sample_1" && [ "$(grep -v "^>" g.txt | tr -d "\n" | tr -d "ACGTN" | wc -c)" -eq 0 ] && [ "$(grep -v "^>" g.txt | tr -d "\n" | wc -c)" -eq 130 ]'
"$BIN/ssm-generate" runA --prompt ACGTACGT --length 20 --temperature 0 --quiet > g1.txt
"$BIN/ssm-generate" runA --prompt ACGTACGT --length 20 --temperature 0 --quiet > g2.txt
check "greedy generation is deterministic and continues the prompt" 'cmp -s g1.txt g2.txt && sed -n 2p g1.txt | grep -q "^ACGTACGT"'

# --- audio ---------------------------------------------------------------------------------------
cat > audio.yaml <<YAML
model: {d_model: 16, n_layer: 1, d_state: 4}
task: {name: audio, sample_rate: 8000}
data: {train: [$SRC/data/audio/allison]}
train: {steps: 3, batch_size: 2, seq_len: 64, eval_every: 3, eval_batches: 1, log_every: 1, threads: 2}
output: {dir: runAudio}
YAML
"$BIN/ssm-train" audio.yaml --quiet 2> err
check "train the audio task" '[ $? -eq 0 ] && grep -q bits_per_sample runAudio/metrics.jsonl'
WAV=$SRC/data/audio/allison/demo-echotest.wav
"$BIN/ssm-score" runAudio "$WAV" --quiet > a.tsv 2> err
check "score a WAV file: seconds and bits per sample" 'head -1 a.tsv | grep -q "^id	length	seconds	n_scored	sum_logp	mean_logp	bits_per_sample	perplexity$" && awk -F"\t" "NR==2 {exit !(\$3 > 21 && \$3 < 23)}" a.tsv'
"$BIN/ssm-score" runAudio "$WAV" --quiet --per-window 5 > w.tsv 2> err
check "--per-window 5: one line per 5 seconds" '[ "$(tail -n +2 w.tsv | wc -l)" -eq 5 ]'
"$BIN/ssm-generate" runAudio --length 800 --quiet > g.wav 2> err
check "ssm-generate writes a WAV" '[ $? -eq 0 ] && [ "$(head -c 4 g.wav)" = RIFF ] && [ "$(head -c 12 g.wav | tail -c 4)" = WAVE ]'

echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
