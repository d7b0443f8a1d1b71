#!/bin/bash
# test_gpu_train.sh BIN_DIR [OUT_DIR]: recipes/dna.yaml for 200 steps on the GPU and on the CPU
# from the same seed (the same batches): the GPU's training loss follows the CPU's within bf16
# tolerance (mean relative difference over the logged steps < 2%, none above 6%) and its
# validation figure is within 1%; then the GPU-trained run scores the held-out excerpt on the
# GPU and on the CPU with the same result (one record, then 5 records side by side in short
# windows), a run stopped on the GPU resumes on the CPU and back
# (checkpoints move freely), and the GPU generates.
# Exit 77 (skipped) without a GPU. Run from the repository root.
set -uo pipefail
bin=${1:?usage: test_gpu_train.sh BIN_DIR [OUT_DIR]}
out=${2:-$(mktemp -d)}
mkdir -p "$out"
if ! nvidia-smi -L >/dev/null 2>&1; then echo "no GPU: skipped"; exit 77; fi
for dev in cuda cpu; do
  "$bin/ssm-train" recipes/dna.yaml --device $dev --force --quiet --output "$out/dna-$dev" \
    --set train.steps=200 --set train.eval_every=200 --set train.log_every=10 >"$out/train-$dev.log" 2>&1 ||
    { echo "FAIL: ssm-train --device $dev"; tail -5 "$out/train-$dev.log"; exit 1; }
  tail -1 "$out/train-$dev.log"
done
python3 - "$out/dna-cuda/metrics.jsonl" "$out/dna-cpu/metrics.jsonl" <<'PY' || exit 1
import json, sys
def read(p):
    rows = [json.loads(l) for l in open(p)]
    return ({r["step"]: r["loss"] for r in rows if "loss" in r},
            [r["valid_loss"] for r in rows if "valid_loss" in r][-1])
(g, gv), (c, cv) = read(sys.argv[1]), read(sys.argv[2])
steps = sorted(set(g) & set(c))
d = [abs(g[s] - c[s]) / c[s] for s in steps]
mean, worst, dv = sum(d) / len(d), max(d), abs(gv - cv) / cv
print(f"{len(steps)} logged steps: mean relative loss difference {mean:.4f}, worst {worst:.4f}; "
      f"validation GPU {gv:.4f} vs CPU {cv:.4f} nats ({dv:.4f})")
for s in steps[::4]: print(f"  step {s:4d}: gpu {g[s]:.4f} cpu {c[s]:.4f}")
sys.exit(0 if len(steps) >= 10 and mean < 0.02 and worst < 0.06 and dv < 0.01 else 1)
PY
for dev in cuda cpu; do
  "$bin/ssm-score" "$out/dna-cuda" data/ecoli/held_out_50kb.fa --device $dev >"$out/score-$dev.tsv" ||
    { echo "FAIL: ssm-score --device $dev"; exit 1; }
done
paste "$out/score-cuda.tsv" "$out/score-cpu.tsv" | awk -F'\t' 'NR > 1 {
  g = $6; c = $(NF - 1); d = g > c ? g - c : c - g; print "bits per base: gpu " g ", cpu " c;
  exit !(d < 0.01 * c) }' || { echo "FAIL: GPU and CPU scores differ"; exit 1; }
# several records side by side with their states carried over short windows (rows move between
# batch states on the host): the same per-record figures on the GPU as on the CPU
awk 'NR == 1 {next} {seq = seq $0} END {n = split("7000 12000 3000 9000 15000", len, " "); p = 1;
  for (i = 1; i <= n; i++) {print ">r" i; print substr(seq, p, len[i]); p += len[i]}}' \
  data/ecoli/held_out_50kb.fa >"$out/multi.fa"
for dev in cuda cpu; do
  "$bin/ssm-score" "$out/dna-cuda" "$out/multi.fa" --device $dev --batch 3 --window 1000 --quiet \
    >"$out/multi-$dev.tsv" || { echo "FAIL: ssm-score multi --device $dev"; exit 1; }
done
paste "$out/multi-cuda.tsv" "$out/multi-cpu.tsv" | awk -F'\t' 'NR > 1 {
  g = $6; c = $(NF - 1); d = g > c ? g - c : c - g; if (!($1 == $8) || d > 0.005 * c) bad = 1; n++ }
  END { print n " records, batch 3, window 1000: GPU and CPU bits per base " (bad ? "differ" : "agree");
        exit bad || n != 5 }' || { echo "FAIL: multi-record scores"; exit 1; }
# checkpoints move freely: a GPU run stopped at step 100, resumed on the CPU to 150, then on the
# GPU to 200, ends within 1% of the uninterrupted GPU run's validation loss
run_r() { "$bin/ssm-train" "$@" --quiet >>"$out/train-r.log" 2>&1 || { echo "FAIL: ssm-train $*"; tail -5 "$out/train-r.log"; exit 1; }; }
run_r recipes/dna.yaml --device cuda --force --output "$out/dna-r" --set train.steps=200 \
  --set train.eval_every=200 --set train.log_every=10 --stop-after 100
run_r --resume "$out/dna-r" --device cpu --stop-after 50
run_r --resume "$out/dna-r" --device cuda
python3 - "$out/dna-r/metrics.jsonl" "$out/dna-cuda/metrics.jsonl" <<'PY' || exit 1
import json, sys
v = [[json.loads(l)["valid_loss"] for l in open(p) if "valid_loss" in l][-1] for p in sys.argv[1:]]
d = abs(v[0] - v[1]) / v[1]
print(f"GPU -> CPU -> GPU resumed run: validation {v[0]:.4f} vs {v[1]:.4f} nats uninterrupted ({d:.4f})")
sys.exit(0 if d < 0.01 else 1)
PY
"$bin/ssm-generate" "$out/dna-cuda" --device cuda --length 80 --seed 3 >"$out/gen.fa" ||
  { echo "FAIL: ssm-generate --device cuda"; exit 1; }
head -2 "$out/gen.fa"
echo "ok"
