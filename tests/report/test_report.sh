#!/bin/bash
# test_report.sh: ssm-train's report.html in a real browser (headless Chromium: the page's
# script fills the progress line and the validation table, the charts are there, a screenshot
# is taken), and ssm-score --plot as SVG and PNG.
# Environment: SSM_BIN (folder of the programs), SSM_SRC (source tree); CHROMIUM (optional).
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
task: {name: dna}
data: {train: [$SRC/data/ecoli/NC_008253.fna.gz], valid_fraction: 0.05}
train: {steps: 8, batch_size: 2, seq_len: 64, warmup_steps: 2, eval_every: 4, eval_batches: 2,
        log_every: 1, threads: 2}
output: {dir: run}
YAML
"$BIN/ssm-train" tiny.yaml --quiet --stop-after 4 2> err
check "the first validation (step 4) writes report.html, which reloads itself while the run goes on" \
  '[ -s run/report.html ] && grep -q "http-equiv=\"refresh\"" run/report.html && grep -q "\"step\":4,\"steps\":8" run/report.html'
"$BIN/ssm-train" --resume run --quiet 2> err
check "the next validations rewrite it (and no report.html.tmp is left)" '[ $? -eq 0 ] && grep -q "\"step\":8,\"steps\":8" run/report.html && [ ! -e run/report.html.tmp ]'
check "the report holds three charts (cairo SVGs), the model and the recipe" \
  '[ "$(grep -c "src=\"data:image/svg+xml;base64," run/report.html)" -eq 3 ] && grep -q "<table id=\"model\">" run/report.html && grep -q "seq_len: 64" run/report.html'
check "the finished run's page stops reloading itself" '! grep -q http-equiv run/report.html'

# ssm-score --plot
"$BIN/ssm-score" run "$SRC/tests/data/fasta/ok.fa" --plot p.svg --quiet > s.tsv 2> err
check "--plot p.svg writes an SVG (the TSV as usual)" '[ $? -eq 0 ] && head -c 300 p.svg | grep -q "<svg" && [ "$(wc -l < s.tsv)" -eq "$(($(grep -c "^>" "$SRC/tests/data/fasta/ok.fa") + 1))" ]'
"$BIN/ssm-score" run "$SRC/tests/data/fasta/ok.fa" --plot p.png --per-base entropy --strand both --quiet > /dev/null 2> err
check "--plot p.png (entropy, both strands) is a PNG" '[ $? -eq 0 ] && [ "$(head -c 8 p.png | od -An -tx1 | tr -d " \n")" = 89504e470d0a1a0a ]'
"$BIN/ssm-score" run "$SRC/tests/data/fasta/ok.fa" --plot p.pdf --quiet > /dev/null 2> err; rc=$?
check "--plot p.pdf is refused in one line, nothing written" '[ $rc -eq 1 ] && [ "$(wc -l < err)" -eq 1 ] && grep -q "svg or .png" err && [ ! -e p.pdf ]'

# the report in headless Chromium
chrome=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$chrome" ]; then
    ok "report in a browser (SKIPPED: no chromium here; Debian: apt-get install chromium)"
else
    flags=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --user-data-dir="$T/profile")
    timeout 120 "$chrome" "${flags[@]}" --dump-dom "file://$T/run/report.html" > dom.html 2> err
    check "Chromium runs the page's script: the progress line" \
      'grep -qE "<p id=\"status\">step 8 of 8: validation [0-9.]+ bits per base \(Markov baseline [0-9.]+\)</p>" dom.html'
    check "and the validation table (steps 4 and 8)" \
      '[ "$(grep -oE "<tr><td>[48]</td><td>[0-9.]+</td><td>-?[0-9.]+</td></tr>" dom.html | wc -l)" -eq 2 ]'
    timeout 120 "$chrome" "${flags[@]}" --window-size=1280,1400 --screenshot="$T/shot.png" "file://$T/run/report.html" > /dev/null 2> err
    # a blank page compresses to a few kB; three charts and the tables to far more
    check "a screenshot of the page (not blank)" '[ -f shot.png ] && [ "$(stat -c %s shot.png)" -gt 30000 ]'
    [ -n "${SSM_REPORT_SHOT:-}" ] && cp shot.png "$SSM_REPORT_SHOT"
fi

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
