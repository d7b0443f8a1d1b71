#!/bin/bash
# test_embed.sh: ssm-embed end to end on a tiny DNA model (trained here as test_cli.sh does):
# embeddings per record, per window and per BED region; the NPY files read back with Python's
# standard library (header parsed, data struct-unpacked) and, when numpy is importable, with
# numpy.load; pooling checked against per-position hidden states (--window 1); windows and
# regions with their left context equal slices of one pass; --context alone equals the segment
# as a record of its own; --strand both equals the mean of the two strands; batch, chunk and
# thread invariance; --layer; the safetensors output; bad inputs (one line, exit 1 or 2, nothing
# written).
# Environment: SSM_BIN (folder of ssm-train and ssm-embed), SSM_SRC (source tree).
set -u
BIN=${SSM_BIN:?}; SRC=${SSM_SRC:?}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0 passes=0
ok() { passes=$((passes + 1)); echo "ok   $1"; }
bad() { fails=$((fails + 1)); echo "FAIL $1"; [ -f "$T/err" ] && sed 's/^/     | /' "$T/err" | head -5; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }
# name, exit status, pattern, command...: that status, one line on stderr matching pattern
one_error() {
    local name=$1 want=$2 pat=$3; shift 3
    "$@" > /dev/null 2> err; local rc=$?
    if [ $rc -eq "$want" ] && [ "$(grep -vc "^Try '" err)" -eq 1 ] && grep -qE -- "$pat" err; then ok "$name"
    else bad "$name (rc $rc)"; fi
}

cd "$T"
cat > tiny.yaml <<YAML
model: {d_model: 16, n_layer: 2, d_state: 4}
task: {name: dna, rc_prob: 0.5}
data: {train: [$SRC/data/ecoli/NC_008253.fna.gz], valid_fraction: 0.05}
train: {steps: 12, batch_size: 2, seq_len: 64, lr: 3e-3, warmup_steps: 3, eval_every: 6,
        eval_batches: 2, save_every: 100, log_every: 1, threads: 2}
output: {dir: runA}
YAML
"$BIN/ssm-train" tiny.yaml --quiet 2> err
check "train a tiny DNA model" '[ $? -eq 0 ] && [ -f runA/model.safetensors ]'
E="$BIN/ssm-embed"

# records of several lengths, N bases and lowercase among them
cp "$SRC/tests/data/fasta/ok.fa" ok.fa
{ head -n 20 "$SRC/data/ecoli/held_out_50kb.fa"; printf '>second\nACGTNNACGTTGCAacgtGGCCA\n>third\nTTTTTTTTTTAAAAAA\n'; } > small.fa

# --- the NPY reader (Python's standard library) ---------------------------------------------
have_py=0
if command -v python3 > /dev/null; then
    have_py=1
    cat > emb.py <<'PY'
import ast, json, math, struct, sys

def load_npy(path):
    """(n, D) rows from an NPY 1.0 '<f4' C-order file, checking its header."""
    b = open(path, 'rb').read()
    assert b[:6] == b'\x93NUMPY', 'magic'
    assert b[6:8] == b'\x01\x00', 'version 1.0'
    hlen = struct.unpack('<H', b[8:10])[0]
    assert (10 + hlen) % 64 == 0, 'header padded to 64 bytes'
    text = b[10:10 + hlen].decode('latin1')
    assert text.endswith('\n'), 'header ends with a newline'
    h = ast.literal_eval(text.strip())
    assert h['descr'] == '<f4' and h['fortran_order'] is False, h
    n, d = h['shape']
    data = b[10 + hlen:]
    assert len(data) == 4 * n * d, (len(data), n, d)
    flat = struct.unpack('<%df' % (n * d), data)
    return [list(flat[i * d:(i + 1) * d]) for i in range(n)]

def load_safetensors(path, name='embeddings'):
    b = open(path, 'rb').read()
    hlen = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + hlen])
    t = h[name]
    assert t['dtype'] == 'F32', t
    n, d = t['shape']
    a, e = t['data_offsets']
    flat = struct.unpack('<%df' % (n * d), b[8 + hlen + a:8 + hlen + e])
    return [list(flat[i * d:(i + 1) * d]) for i in range(n)], h.get('__metadata__', {})

def load_tsv(path):
    lines = open(path).read().splitlines()
    head = lines[0].split('\t')
    return head, [dict(zip(head, l.split('\t'))) for l in lines[1:]]

def mean(rows):
    return [sum(c) / len(rows) for c in zip(*rows)]

def avg2(a, b):
    return [(x + y) / 2 for x, y in zip(a, b)]

def rel(a, b):
    """||a - b|| / ||b|| over all the rows"""
    num = sum((x - y) ** 2 for ra, rb in zip(a, b) for x, y in zip(ra, rb))
    den = sum(y * y for rb in b for y in rb)
    return math.sqrt(num) / (math.sqrt(den) + 1e-30)

def close(a, b, tol, what=''):
    assert len(a) == len(b), (what, len(a), len(b))
    e = rel(a, b)
    if not e <= tol:
        sys.exit('%s: relative error %.3g > %g' % (what, e, tol))

def per_position(npy, tsv):
    """{id: [rows]} from a --window 1 run"""
    rows, (_, lines) = load_npy(npy), load_tsv(tsv)
    out = {}
    for r, l in zip(rows, lines):
        assert int(l['end']) - int(l['start']) == 1
        out.setdefault(l['id'], []).append(r)
    return out
PY
fi
py() { PYTHONPATH=. python3 - "$@" 2> err; }
skip_py() { ok "$1 (skipped: no python3)"; }

# --- per record ------------------------------------------------------------------------------
"$E" runA small.fa --output rec --quiet 2> err
check "per record: PREFIX.npy and PREFIX.tsv, no .tmp left" '[ $? -eq 0 ] && [ -f rec.npy ] && [ -f rec.tsv ] && [ -z "$(ls *.tmp 2> /dev/null)" ]'
check "the TSV: a header, then index id start end length strand per record" 'head -1 rec.tsv | grep -q "^index	id	start	end	length	strand$" && [ "$(tail -n +2 rec.tsv | cut -f1,3- | tr "\t\n" ", ")" = "0,0,1140,1140,forward 1,0,23,23,forward 2,0,16,16,forward " ] && [ "$(tail -n +2 rec.tsv | cut -f2 | tail -2 | tr "\n" " ")" = "second third " ]'
if [ $have_py = 1 ]; then
    py <<'PY'
from emb import *
rows = load_npy('rec.npy')
assert len(rows) == 3 and all(len(r) == 16 for r in rows), len(rows)
assert all(math.isfinite(x) for r in rows for x in r)
PY
    check "the NPY (Python's standard library): version 1.0, '<f4', shape (3, 16), finite" '[ $? -eq 0 ]'
    # numpy may be in another Python than the first python3 (Debian's python3-numpy)
    np_py=
    for p in python3 /usr/bin/python3; do
        if command -v $p > /dev/null && $p -c 'import numpy' 2> /dev/null; then np_py=$p; break; fi
    done
    if [ -n "$np_py" ]; then
        PYTHONPATH=. $np_py - 2> err <<'PY'
import numpy as np
from emb import load_npy
a = np.load('rec.npy')
assert a.dtype == np.float32 and a.shape == (3, 16) and a.flags['C_CONTIGUOUS'], (a.dtype, a.shape)
assert (a == np.array(load_npy('rec.npy'), dtype=np.float32)).all()
PY
        check "numpy.load reads it: float32 (3, 16), the same values" '[ $? -eq 0 ]'
    else
        ok "numpy.load (skipped: numpy is not importable)"
    fi
else
    skip_py "the NPY read back"
fi
cp rec.npy rec0.npy; cp rec.tsv rec0.tsv
"$E" runA small.fa --output rec.npy --quiet 2> err
check "--output PREFIX.npy is PREFIX" '[ $? -eq 0 ] && cmp -s rec.npy rec0.npy && cmp -s rec.tsv rec0.tsv && [ ! -e rec.npy.npy ] && [ ! -e rec.npy.tsv ]'

# --- pooling against the per-position hidden states --------------------------------------------
"$E" runA small.fa --window 1 --output pos --quiet 2> err
check "--window 1: one embedding per base" '[ $? -eq 0 ] && [ "$(tail -n +2 pos.tsv | wc -l)" -eq $((1140 + 23 + 16)) ]'
"$E" runA small.fa --window 100 --output win --quiet 2> err
"$E" runA small.fa --window 100 --pool max --output winmax --quiet 2> err
"$E" runA small.fa --window 100 --pool last --output winlast --quiet 2> err
"$E" runA small.fa --pool last --output reclast --quiet 2> err
check "--window 100: 12 + 1 + 1 windows, the last of each record shorter" '[ "$(tail -n +2 win.tsv | wc -l)" -eq 14 ] && grep -q "	1100	1140	40	forward$" win.tsv && grep -q "^12	second	0	23	23	forward$" win.tsv'
if [ $have_py = 1 ]; then
    py <<'PY'
from emb import *
pos = per_position('pos.npy', 'pos.tsv')
_, lines = load_tsv('win.tsv')
want_mean, want_max, want_last = [], [], []
for l in lines:
    rows = pos[l['id']][int(l['start']):int(l['end'])]
    want_mean.append(mean(rows))
    want_max.append([max(c) for c in zip(*rows)])
    want_last.append(rows[-1])
close(load_npy('win.npy'), want_mean, 1e-6, 'mean')
assert load_npy('winmax.npy') == want_max, 'max'
assert load_npy('winlast.npy') == want_last, 'last'
# a whole record: the mean of all its bases, last = the state after its last base
_, rl = load_tsv('rec.tsv')
close(load_npy('rec.npy'), [mean(pos[l['id']]) for l in rl], 1e-6, 'record mean')
assert load_npy('reclast.npy') == [pos[l['id']][-1] for l in rl], 'record last'
PY
    check "mean over a window = the mean of its per-position states; max and last exactly" '[ $? -eq 0 ]'
else
    skip_py "pooling against the per-position states"
fi

# --- invariance: batch and threads exact, chunks to rounding ------------------------------------
"$E" runA small.fa --window 100 --batch 1 --threads 1 --output b1 --quiet 2> err
"$E" runA small.fa --window 100 --batch 3 --threads 2 --output b3 --quiet 2> err
check "embeddings do not depend on the batch size or the thread count" 'cmp -s win.npy b1.npy && cmp -s win.npy b3.npy && cmp -s win.tsv b3.tsv'
"$E" runA small.fa --window 100 --chunk 37 --output c37 --quiet 2> err
if [ $have_py = 1 ]; then
    py <<'PY'
from emb import *
close(load_npy('c37.npy'), load_npy('win.npy'), 1e-6, 'chunk 37')
PY
    check "chunks of 37 with the carried state equal one pass" '[ $? -eq 0 ]'
fi

# --- --layer -------------------------------------------------------------------------------------
"$E" runA ok.fa --layer 2 --output l2 --quiet 2> err; "$E" runA ok.fa --layer -1 --output lm1 --quiet 2> err
"$E" runA ok.fa --output ldef --quiet 2> err; "$E" runA ok.fa --layer 0 --output l0 --quiet 2> err
check "--layer 2 (n_layer) and -1 are the default, layer 0 is not" 'cmp -s l2.npy ldef.npy && cmp -s lm1.npy ldef.npy && ! cmp -s l0.npy ldef.npy'

# --- BED regions -------------------------------------------------------------------------------
printf 'track name=test\n# a comment\nchr2\t10\t60\tfirst\nchr1\t0\t300\nchr1\t250\t251\tone_base\n\nchr3\t5\t37\tto_the_end\tx\t+\nchr1\t100\t200\n' > r.bed
"$E" runA ok.fa --regions r.bed --output reg --quiet 2> err
check "--regions: one embedding per interval, in the BED's order, names in the TSV" '[ $? -eq 0 ] && head -1 reg.tsv | grep -q "^index	id	start	end	length	strand	name$" && [ "$(tail -n +2 reg.tsv | cut -f2-5,7 | tr "\t\n" ", ")" = "chr2,10,60,50,first chr1,0,300,300,. chr1,250,251,1,one_base chr3,5,37,32,to_the_end chr1,100,200,100,. " ]'
"$E" runA ok.fa --window 1 --output okpos --quiet 2> err
"$E" runA ok.fa --regions r.bed --context alone --output alone --quiet 2> err
# each region as a record of its own
awk 'BEGIN {RS=">"; FS="\n"} NR > 1 {s=""; for (i = 2; i <= NF; i++) s = s $i; split($1, w, " "); print w[1] "\t" s}' ok.fa > seqs.tsv
grep -v -e '^track' -e '^#' -e '^$' r.bed | while IFS=$'\t' read -r c a b rest; do
    printf '>%s_%s_%s\n%s\n' "$c" "$a" "$b" "$(awk -F'\t' -v c="$c" '$1 == c {print $2}' seqs.tsv | cut -c$((a + 1))-$b)"
done > regions_alone.fa
"$E" runA regions_alone.fa --output alone_ref --quiet 2> err
if [ $have_py = 1 ]; then
    py <<'PY'
from emb import *
pos = per_position('okpos.npy', 'okpos.tsv')
_, lines = load_tsv('reg.tsv')
close(load_npy('reg.npy'), [mean(pos[l['id']][int(l['start']):int(l['end'])]) for l in lines], 1e-6, 'regions')
PY
    check "a region (--context record) is the mean of the record's per-position states over it" '[ $? -eq 0 ]'
fi
check "--context alone: a region embeds as that stretch alone does" 'cmp -s alone.npy alone_ref.npy && ! cmp -s alone.npy reg.npy'
"$E" runA ok.fa --window 100 --context alone --output walone --quiet 2> err
"$E" runA ok.fa --window 100 --output wrec --quiet 2> err
check "--context alone with --window: the first window of a record is the same, the others not" 'cmp -s <(head -c 192 walone.npy) <(head -c 192 wrec.npy) && ! cmp -s walone.npy wrec.npy'

# --- both strands --------------------------------------------------------------------------------
printf '>x\nACGTTGCANNACGGTTTAGCGGATCCATTAGGCCAATGCA\n' > x.fa
printf '>x\n%s\n' "$(sed -n 2p x.fa | rev | tr ACGT TGCA)" > x_rc.fa
for p in mean last; do
    "$E" runA x.fa --pool $p --output f_$p --quiet 2> err; "$E" runA x_rc.fa --pool $p --output r_$p --quiet 2> err
    "$E" runA x.fa --pool $p --strand both --output both_$p --quiet 2> err
done
check "--strand both: the TSV says both" '[ "$(tail -1 both_mean.tsv | cut -f6)" = both ]'
if [ $have_py = 1 ]; then
    py <<'PY'
from emb import *
for p in ('mean', 'last'):
    close(load_npy('both_%s.npy' % p), [avg2(load_npy('f_%s.npy' % p)[0], load_npy('r_%s.npy' % p)[0])], 1e-6, p)
PY
    check "--strand both = the mean of the record's and its reverse complement's embeddings (mean, last)" '[ $? -eq 0 ]'
    printf 'x\t3\t20\n' > x.bed; printf 'x\t20\t37\n' > x_rc.bed   # the same bases on the other strand
    "$E" runA x.fa --regions x.bed --strand both --context alone --output xb --quiet 2> err
    "$E" runA x.fa --regions x.bed --context alone --output xf --quiet 2> err
    "$E" runA x_rc.fa --regions x_rc.bed --context alone --output xr --quiet 2> err
    py <<'PY'
from emb import *
close(load_npy('xb.npy'), [avg2(load_npy('xf.npy')[0], load_npy('xr.npy')[0])], 1e-6, 'region, both strands')
PY
    check "--strand both on a region alone = the mean of the region and of its reverse complement" '[ $? -eq 0 ]'
fi

# --- safetensors -------------------------------------------------------------------------------------
"$E" runA small.fa --window 100 --format safetensors --output st --quiet 2> err
check "--format safetensors: PREFIX.safetensors and PREFIX.tsv" '[ $? -eq 0 ] && [ -f st.safetensors ] && cmp -s st.tsv win.tsv'
if [ $have_py = 1 ]; then
    py <<'PY'
from emb import *
rows, meta = load_safetensors('st.safetensors')
assert rows == load_npy('win.npy'), 'the same values as the NPY'
assert meta['ssm.embed.pool'] == 'mean' and meta['ssm.embed.window'] == '100' and meta['ssm.embed.layer'] == '2', meta
assert meta['ssm.embed.ids'] == 'st.tsv' and meta['ssm.embed.count'] == '14', meta
PY
    check "its tensor 'embeddings' (F32, (14, 16)) holds the NPY's values; ssm.embed.* metadata" '[ $? -eq 0 ]'
fi

# --- several files ----------------------------------------------------------------------------------
cp "$SRC/tests/data/fasta/other.fa" other.fa
"$E" runA ok.fa other.fa --output two --quiet 2> err
check "several files: ids FILE:ID, in order" '[ $? -eq 0 ] && [ "$(tail -n +2 two.tsv | cut -f2 | tr "\n" " ")" = "ok.fa:chr1 ok.fa:chr2 ok.fa:chr3 other.fa:plasmid " ] && cmp -s <(head -c $((128 + 3 * 64)) two.npy | tail -c 192) <(tail -c 192 ldef.npy)'

# --- bad inputs: one line, exit 1 (input) or 2 (usage), nothing written ---------------------------
printf 'chr1\t0\t100\nchr3\t10\t40\n' > past.bed
one_error "an interval past the end of its record" 1 '^ssm-embed: past.bed:2: chr3:10-40 ends past the end of chr3 \(37 bases\)$' "$E" runA ok.fa --regions past.bed --output bad1
printf 'chr1\t0\t100\nchrX\t10\t40\n' > unknown.bed
one_error "an unknown record" 1 "^ssm-embed: unknown.bed:2: no record named 'chrX' in the input files" "$E" runA ok.fa --regions unknown.bed --output bad2
printf 'chr1\t50\t50\n' > empty.bed
one_error "an empty interval" 1 'empty.bed:1: chr1:50-50 is empty' "$E" runA ok.fa --regions empty.bed --output bad3
printf 'chr1\tten\t50\n' > notint.bed
one_error "a start that is not a number" 1 "notint.bed:1: start and end must be integers" "$E" runA ok.fa --regions notint.bed --output bad4
one_error "a missing BED file" 1 "nothere.bed: cannot open" "$E" runA ok.fa --regions nothere.bed --output bad5
one_error "--layer past the last" 2 '^ssm-embed: --layer 3: the model has 2 layers' "$E" runA ok.fa --layer 3 --output bad6
one_error "--layer that is not a number" 2 "^ssm-embed: --layer takes a layer number" "$E" runA ok.fa --layer top --output bad7
one_error "--window with --regions" 2 "do not go together" "$E" runA ok.fa --window 10 --regions r.bed --output bad8
one_error "no --output" 2 "need --output PREFIX" "$E" runA ok.fa
one_error "--pool of another kind" 2 "--pool takes mean, max or last, not 'median'" "$E" runA ok.fa --pool median --output bad9
one_error "--regions with stdin" 2 "stdin" "$E" runA - --regions r.bed --output bad10
one_error "a file that is not FASTA" 1 "bad_not_fasta.txt" "$E" runA "$SRC/tests/data/fasta/bad_not_fasta.txt" --output bad11
one_error "a missing second file" 1 "^ssm-embed: missing.fa: cannot open" "$E" runA ok.fa missing.fa --output bad12
one_error "--device cuda" 1 "the CUDA backend does not keep the hidden states|this build has no CUDA support|no CUDA device is present" "$E" runA ok.fa --device cuda --output bad13
one_error "an output folder that does not exist" 1 "^ssm-embed: nofolder/e.tsv.tmp: cannot write" "$E" runA ok.fa --output nofolder/e
check "failed runs write nothing" '[ -z "$(ls bad* 2> /dev/null)" ]'
echo "old" > keep.npy; echo "old" > keep.tsv
"$E" runA ok.fa "$SRC/tests/data/fasta/bad_truncated.fa.gz" --output keep --quiet 2> err
check "a file malformed halfway: exit 1, older outputs left as they were, no .tmp" '[ $? -eq 1 ] && [ "$(cat keep.npy keep.tsv)" = "old
old" ] && [ -z "$(ls *.tmp 2> /dev/null)" ]'

# a model of a task without strands
cat > text.yaml <<YAML
model: {d_model: 16, n_layer: 1, d_state: 4}
task: {name: lm}
data: {train: [$SRC/tests/data/text/proverbs.txt]}
train: {steps: 2, batch_size: 2, seq_len: 32, eval_every: 2, eval_batches: 1, log_every: 1, threads: 2}
output: {dir: runText}
YAML
"$BIN/ssm-train" text.yaml --quiet 2> err
check "train a tiny text model" '[ $? -eq 0 ]'
one_error "--strand both with a non-DNA model" 1 "^ssm-embed: --strand both: the task 'lm' has no strands" "$E" runText "$SRC/tests/data/text/proverbs.txt" --strand both --output bad14
"$E" runText "$SRC/tests/data/text/proverbs.txt" --window 64 --output text --quiet 2> err
check "a text model embeds text (per window of 64 bytes)" '[ $? -eq 0 ] && [ "$(tail -n +2 text.tsv | wc -l)" -eq $(( ($(wc -c < "$SRC/tests/data/text/proverbs.txt") + 63) / 64 )) ]'

check "--help lists every option" 'for o in --layer --pool --window --regions --context --strand --format --output --chunk --batch; do "$E" --help | grep -q -- "$o" || exit 1; done'

echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
