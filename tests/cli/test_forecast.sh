#!/bin/bash
# test_forecast.sh: the time-series task through the programs: training on a CSV (float
# inputs, the regression head), ssm-score's table beside the baselines, ssm-generate --input
# writing the next H steps as CSV, resume, and bad input refused with file:line.
# Environment: SSM_BIN (folder of the programs), SSM_SRC (source tree).
set -u
BIN=${SSM_BIN:?}; SRC=${SSM_SRC:?}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0 passes=0
ok() { passes=$((passes + 1)); echo "ok   $1"; }
bad() { fails=$((fails + 1)); echo "FAIL $1"; [ -f "$T/err" ] && sed 's/^/     | /' "$T/err" | head -5; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }

cd "$T"
csv=$SRC/data/timeseries/ice_river.csv
cat > tiny.yaml <<YAML
model: {d_model: 16, pattern: "M*", d_state: 4, n_heads: 2}
task: {name: timeseries, date_column: date, lookback: 16, horizon: 3, patch: 2, ar_order: 4}
data: {train: $csv}
train: {steps: 6, batch_size: 4, lr: 3e-3, warmup_steps: 2, eval_every: 3, eval_batches: 2,
        save_every: 3, log_every: 1, threads: 2, device: cpu}
output: {dir: run}
YAML

"$BIN/ssm-train" tiny.yaml 2> err; check "train on a CSV" '[ $? -eq 0 ] && [ -f run/model.safetensors ]'
check "validation prints the task's metrics" 'grep -q "validation loss .* (mse), forecast_mse .*, forecast_mae" err'
check "metrics.jsonl logs them" 'grep -q "\"valid_forecast_mse\"" run/metrics.jsonl'
check "config.json says the config is in the metadata" 'grep -q "\"model_type\": \"ssm\"" run/config.json'
"$BIN/ssm-train" --resume run --set train.steps=9 2> err; check "resume" '[ $? -eq 0 ] && grep -q "\"step\":9," run/metrics.jsonl'

"$BIN/ssm-score" run "$csv" > score.tsv 2> err
check "score: a row per channel and overall" '[ $? -eq 0 ] && [ "$(grep -c -v "^#" score.tsv)" -eq 6 ] && grep -q "^overall" score.tsv'
check "score: the baselines beside the model" 'head -2 score.tsv | tail -1 | grep -q "model_mse.*last_value_mse.*seasonal_naive_mse.*ar_mse"'
check "score: test rows and the period" 'grep -q "test rows 878-1096" score.tsv && grep -q "seasonal period" score.tsv'

"$BIN/ssm-generate" run --input "$csv" > next.csv 2> err
check "generate: header and H rows" '[ $? -eq 0 ] && [ "$(wc -l < next.csv)" -eq 4 ] && head -1 next.csv | grep -q "^date,flow_vatnsdalsa,flow_jokulsa,precipitation,temperature$"'
check "generate: the dates after the last row" 'sed -n 2p next.csv | grep -q "^1975-01-01," && sed -n 4p next.csv | grep -q "^1975-01-03,"'
check "generate: finite numbers" '! grep -qi "nan\|inf" next.csv'
"$BIN/ssm-generate" run 2> err; check "generate without --input says so" '[ $? -ne 0 ] && grep -q "give it with --input" err'

# bad input: one line naming the file and line
printf 'date,a,b\n1,1,2\n2,3\n' > ragged.csv
"$BIN/ssm-train" tiny.yaml --force --output r2 --set data.train=ragged.csv 2> err
check "ragged row" '[ $? -eq 1 ] && grep -q "ragged.csv:3:3: the row has 2 fields, the header 3" err'
printf 'date,a\n1,1\n2,oops\n' > word.csv
"$BIN/ssm-score" run word.csv > /dev/null 2> err
check "non-numeric cell when scoring" '[ $? -ne 0 ] && grep -q "word.csv:3:2: .oops. in column .a. is not a number" err'
: > empty.csv
"$BIN/ssm-train" tiny.yaml --force --output r3 --set data.train=empty.csv 2> err
check "empty file" '[ $? -eq 1 ] && grep -q "empty.csv: the file is empty" err'
"$BIN/ssm-train" tiny.yaml --force --output r4 --set task.horizon=900 2> err
check "horizon longer than the series" '[ $? -eq 1 ] && grep -q "the horizon is too long for the series" err'

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
