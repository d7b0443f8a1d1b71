#!/bin/bash
# test_genomics.sh: the genomics workflows end to end (docs/genomics.md): ssm-score --vcf on
# variants planted in pieces of the bundled genome (SNVs, an MNV, indels, indels at contig
# edges, a REF mismatch, symbolic alleles, a contig the reference lacks), each score checked
# against plain ssm-score runs over the same windows written as FASTA, strand symmetry (the
# reverse score of a variant is the forward score of the mirrored variant on the reverse-
# complemented reference), the records otherwise untouched, VCF/VCF.gz(+tbi)/BCF(+csi) output,
# bad inputs; --bigwig read back through libBigWig against --bedgraph.
# Environment: SSM_BIN (ssm-train, ssm-score), SSM_SRC (source tree), SSM_GENOMICS_HELPER
# (tests/cli/genomics_helper.c built), SSM_HAVE_BIGWIG (1 when ssm-score writes bigWig).
set -u
BIN=${SSM_BIN:?}; SRC=${SSM_SRC:?}; HELPER=${SSM_GENOMICS_HELPER:?}; HAVE_BW=${SSM_HAVE_BIGWIG:-0}
T=$(mktemp -d); [ -n "${SSM_KEEP:-}" ] || trap 'rm -rf "$T"' EXIT
fails=0 passes=0
ok() { passes=$((passes + 1)); echo "ok   $1"; }
bad() { fails=$((fails + 1)); echo "FAIL $1"; [ -f "$T/err" ] && sed 's/^/     | /' "$T/err" | head -5; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }
one_error() { # name, exit status, expected pattern, command...
    local name=$1 want=$2 pat=$3; shift 3
    "$@" > /dev/null 2> err; local rc=$?
    if [ $rc -eq "$want" ] && [ "$(grep -vc "^Try '" err)" -eq 1 ] && grep -qE -- "$pat" err; then ok "$name"; else bad "$name (rc $rc)"; fi
}
SCORE="$BIN/ssm-score"
cd "$T"

# --- a tiny DNA model (as test_cli.sh trains it) -------------------------------------------------
cat > tiny.yaml <<YAML
model: {d_model: 16, n_layer: 2, d_state: 4}
task: {name: dna, rc_prob: 0.5}
data: {train: [$SRC/data/ecoli/NC_008253.fna.gz], valid_fraction: 0.05}
train: {steps: 12, batch_size: 2, seq_len: 64, lr: 3e-3, warmup_steps: 3, eval_every: 12,
        eval_batches: 2, save_every: 12, log_every: 4, threads: 2}
output: {dir: runA}
YAML
"$BIN/ssm-train" tiny.yaml --quiet 2> err; check "train a tiny DNA model" '[ $? -eq 0 ] && [ -f runA/model.safetensors ]'

# --- a reference: two pieces of the bundled genome, and its reverse complement -------------------
gzip -dc "$SRC/data/ecoli/NC_008253.fna.gz" | grep -v '^>' | tr -d '\n\r' > genome.txt
A=$(cut -c1-6000 genome.txt); B=$(cut -c20001-22500 genome.txt)
rc() { rev | tr ACGTacgt TGCAtgca; }
{ echo ">chrA"; echo "$A" | fold -w 60; echo ">chrB"; echo "$B" | fold -w 60; } > ref.fa
{ echo ">chrA"; echo "$A" | rc | fold -w 60; echo ">chrB"; echo "$B" | rc | fold -w 60; } > rc.fa
printf 'chrA\t%s\nchrB\t%s\n' "$A" "$B" > seqs.tsv
printf 'chrA\t%s\nchrB\t%s\n' "$(echo "$A" | rc)" "$(echo "$B" | rc)" > rc_seqs.tsv
b() { local s=$1; [ "$s" = chrA ] && s=$A || s=$B; echo "${s:$(($2 - 1)):$3}"; } # contig pos1 len
other() { case $1 in A) echo C;; C) echo G;; G) echo T;; *) echo A;; esac; }
other2() { case $1 in A) echo G;; C) echo T;; G) echo A;; *) echo C;; esac; }

# --- planted variants (1-based POS); the REF mismatch and the unscorable ones have FILTER '.' ----
x=$(b chrA 300 1); m=$(b chrA 800 1); e=$(b chrA 6000 1); s=$(b chrA 4200 1)
{
printf '##fileformat=VCFv4.2\n##contig=<ID=chrA,length=6000>\n##contig=<ID=chrB,length=2500>\n'
printf '##FILTER=<ID=q10,Description="quality below 10">\n'
printf '##INFO=<ID=DP,Number=1,Type=Integer,Description="depth">\n'
printf '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
printf '#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\n'
r() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\tGT\t0/1\n' "$@"; }
r chrA 1 v_start "$(b chrA 1 1)" "$(other "$(b chrA 1 1)")" 50 PASS DP=11
r chrA 300 v_snv "$x" "$(other "$x")" 50 PASS DP=12
r chrA 300 v_snv_same "$x" "$(other2 "$x")" 40 q10 DP=13
r chrA 800 v_multi "$m" "$(other "$m"),$(other2 "$m")" 50 PASS .
r chrA 1500 v_ins "$(b chrA 1500 1)" "$(b chrA 1500 1)GAT" 50 PASS DP=14
r chrA 2500 v_del "$(b chrA 2500 4)" "$(b chrA 2500 1)" 50 PASS DP=15
r chrA 3000 v_mnv "$(b chrA 3000 2)" "$(other "$(b chrA 3000 1)")$(other "$(b chrA 3001 1)")" 50 PASS .
r chrA 3500 v_mismatch "$(other "$(b chrA 3500 1)")" "$(b chrA 3500 1)" 50 . DP=16
r chrA 3600 v_mismatch_q "$(other "$(b chrA 3600 1)")" "$(b chrA 3600 1)" 50 q10 DP=17
r chrA 4000 v_sym "$(b chrA 4000 1)" '<DEL>' 50 . DP=18
r chrA 4100 v_bnd "$(b chrA 4100 1)" "$(b chrA 4100 1)]chrB:100]" 50 . .
r chrA 4200 v_star "$s" "*,$(other "$s")" 50 PASS .
r chrA 4300 v_noalt "$(b chrA 4300 1)" . 50 . .
r chrA 6000 v_end "$e" "$(other "$e")" 50 PASS .
r chrB 1 v_del_start "$(b chrB 1 3)" "$(b chrB 3 1)" 50 PASS .
r chrB 1 v_ins_start "$(b chrB 1 1)" "GG$(b chrB 1 1)" 50 PASS .
r chrB 2498 v_del_end "$(b chrB 2498 3)" "$(b chrB 2498 1)" 50 PASS .
r chrB 2500 v_ins_end "$(b chrB 2500 1)" "$(b chrB 2500 1)TT" 50 PASS .
r chrZ 10 v_nocontig A C 50 . .
} > planted.vcf
FLANK=40:12; FL=40; FR=12

"$SCORE" runA --vcf planted.vcf --reference ref.fa --flank $FLANK -o out.vcf --quiet 2> err; rc=$?
check "score the planted VCF (exit 0)" '[ $rc -eq 0 ] && [ -s out.vcf ]'
check "the reference gets its .fai index when it has none" '[ -f ref.fa.fai ]'
"$HELPER" scores out.vcf > scores.tsv 2>> err
check "the output VCF parses (htslib) and has one line per record" '[ $? -eq 0 ] && [ "$(wc -l < scores.tsv)" -eq 19 ]'
check "the header declares the INFO fields and FILTERs" 'for t in "INFO=<ID=SSM_LLR_FWD,Number=A,Type=Float" "INFO=<ID=SSM_LLR_RC,Number=A,Type=Float" "INFO=<ID=SSM_LLR,Number=A,Type=Float" "FILTER=<ID=SSM_REF_MISMATCH" "FILTER=<ID=SSM_SYMBOLIC" "FILTER=<ID=SSM_NO_CONTIG"; do grep -q "^##$t" out.vcf || exit 1; done'
field() { awk -F'\t' -v id="$1" -v c="$2" '$3 == id {print $c}' scores.tsv; }
check "a REF mismatch: FILTER SSM_REF_MISMATCH (beside an existing filter), no score" '[ "$(field v_mismatch 4)" = SSM_REF_MISMATCH ] && [ "$(field v_mismatch_q 4)" = "q10;SSM_REF_MISMATCH" ] && [ "$(field v_mismatch 5)" = . ]'
check "... counted on stderr, with the first one" 'grep -q "planted.vcf: 2 records with a REF that does not match ref.fa.*SSM_REF_MISMATCH.*chrA:3500 REF" err'
check "symbolic alleles, breakends, *: not scored; FILTER SSM_SYMBOLIC when no ALT is left" '[ "$(field v_sym 4)" = SSM_SYMBOLIC ] && [ "$(field v_bnd 4)" = SSM_SYMBOLIC ] && [ "$(field v_star 4)" = PASS ] && field v_star 5 | grep -qE "^\.,-?[0-9]"'
check "... counted on stderr" 'grep -q "planted.vcf: 3 ALT alleles not scored: symbolic.*2 records with no other ALT (FILTER SSM_SYMBOLIC)" err'
check "a contig the reference lacks: FILTER SSM_NO_CONTIG, named on stderr" '[ "$(field v_nocontig 4)" = SSM_NO_CONTIG ] && grep -q "1 record on contigs that ref.fa does not have.*: chrZ" err'
check "a record without ALT is left as it is (and counted)" '[ "$(field v_noalt 4)" = . ] && [ "$(field v_noalt 5)" = . ] && grep -q "1 record without an ALT allele" err'
check "every other allele is scored, SSM_LLR the mean of both strands" 'awk -F"\t" "\$5 != \".\" {split(\$5,f,\",\"); split(\$6,r,\",\"); split(\$7,m,\",\"); for (i in f) if (f[i] != \".\") {n++; d = m[i] - (f[i] + r[i]) / 2; if (d > 2e-5 || d < -2e-5) exit 1}} END {exit n != 14}" scores.tsv'
"$HELPER" records planted.vcf > in.txt 2>> err; "$HELPER" records out.vcf --strip > out_stripped.txt 2>> err
check "records otherwise untouched (ssm-score's INFO and FILTER taken out, they read the same)" 'diff in.txt out_stripped.txt > /dev/null && [ -s in.txt ]'

# --- each score against plain ssm-score over the same windows ----------------------------------
# The allele in minimal form (common trailing, then leading bases dropped) at p (0-based); forward:
# LEFT bases before p, the allele, RIGHT bases after REF; reverse: the reverse complement of the
# LEFT bases after REF, of the allele, of the RIGHT bases before p. score = sum over the allele of
# (log p + entropy) + sum over the flank of log p. The TSV's sum_logp difference gives the log p
# part (the context is the same in both records), the entropy bedGraph the allele's entropies.
awk -F'\t' '!/^#/ {print $3 "\t" $1 "\t" $2 "\t" $4 "\t" $5}' planted.vcf > alleles.tsv
awk -F'\t' -v L=$FL -v R=$FR '
function rc(s,  i, t, c) { t = ""; for (i = length(s); i > 0; i--) { c = substr(s, i, 1); t = t (c == "A" ? "T" : c == "C" ? "G" : c == "G" ? "C" : "A") } return t }
function min(a, b) { return a < b ? a : b }
function rec(name, ctx, own, flank) { print ">" name > "windows.fa"; print ctx own flank > "windows.fa"; print name "\t" length(ctx) "\t" length(own) > "windows.meta" }
FILENAME == ARGV[1] { seq[$1] = $2; next }
FILENAME == ARGV[2] { info[$1] = $0; next }
{ # scores.tsv: the scored alleles
  if ($5 == "." || !($3 in info)) next
  split(info[$3], v, "\t"); S = seq[v[2]]; C = length(S)
  n = split(v[5], alt, ","); split($5, fw, ",")
  for (i = 1; i <= n; i++) {
    if (fw[i] == ".") continue
    r = toupper(v[4]); x = toupper(alt[i])
    while (length(r) && length(x) && substr(r, length(r)) == substr(x, length(x))) { r = substr(r, 1, length(r) - 1); x = substr(x, 1, length(x) - 1) }
    k = 0; while (k < length(r) && k < length(x) && substr(r, k + 1, 1) == substr(x, k + 1, 1)) k++
    p = v[3] - 1 + k; r = substr(r, k + 1); x = substr(x, k + 1); e = p + length(r)
    cl = min(L, p); f = min(R, C - e); clr = min(L, C - e); fr = min(R, p)
    id = $3 "_" i
    rec(id "_ref_f", substr(S, p - cl + 1, cl), r, substr(S, e + 1, f))
    rec(id "_alt_f", substr(S, p - cl + 1, cl), x, substr(S, e + 1, f))
    rec(id "_ref_r", rc(substr(S, e + 1, clr)), rc(r), rc(substr(S, p - fr + 1, fr)))
    rec(id "_alt_r", rc(substr(S, e + 1, clr)), rc(x), rc(substr(S, p - fr + 1, fr)))
    # the same variant mirrored onto the reverse-complemented contig (for the symmetry test)
    q = C - e; mr = rc(r); mx = rc(x); RCS = rc(S)
    if (length(mr) && length(mx)) { pos = q + 1; R1 = mr; X1 = mx }
    else if (q > 0) { a0 = substr(RCS, q, 1); pos = q; R1 = a0 mr; X1 = a0 mx }
    else { a0 = substr(RCS, length(mr) + 1, 1); pos = 1; R1 = mr a0; X1 = mx a0 }
    print v[2] "\t" pos "\t" id "\t" R1 "\t" X1 "\t.\t.\t." > "mirror.body"
  }
}' seqs.tsv alleles.tsv scores.tsv
check "windows written for the 14 scored alleles" '[ "$(grep -c "^>" windows.fa)" -eq 56 ]'
"$SCORE" runA windows.fa --quiet > windows.tsv 2> err && "$SCORE" runA windows.fa --quiet --per-base entropy --bedgraph windows_h.bedgraph > /dev/null 2>> err
check "plain ssm-score over the windows" '[ $? -eq 0 ] && [ "$(wc -l < windows.tsv)" -eq 57 ]'
awk -F'\t' '
FILENAME == ARGV[1] { cl[$1] = $2; own[$1] = $3; next }
FILENAME == ARGV[2] { if (FNR > 1) lp[$1] = $4; next }
FILENAME == ARGV[3] { if ($2 >= cl[$1] && $2 < cl[$1] + own[$1]) h[$1] += $4; next }
{ split($5, fw, ","); split($6, rv, ",")
  for (i = 1; i in fw; i++) {
    if (fw[i] == ".") continue
    id = $3 "_" i; n++
    ef = lp[id "_alt_f"] + h[id "_alt_f"] - lp[id "_ref_f"] - h[id "_ref_f"]
    er = lp[id "_alt_r"] + h[id "_alt_r"] - lp[id "_ref_r"] - h[id "_ref_r"]
    df = fw[i] - ef; dr = rv[i] - er; if (df < 0) df = -df; if (dr < 0) dr = -dr
    if (df > worst) worst = df; if (dr > worst) worst = dr
  }
}
END { printf "%d alleles, largest difference %.2g\n", n, worst > "llr_check.txt"; exit !(n == 14 && worst < 1e-4) }
' windows.meta windows.tsv windows_h.bedgraph scores.tsv; rc=$?
check "SSM_LLR_FWD and SSM_LLR_RC equal plain ssm-score runs over the allele windows (< 1e-4: $(cat llr_check.txt 2>/dev/null))" '[ $rc -eq 0 ]'
check "an SNV's forward score is exactly log p(ALT) - log p(REF) over the window (the TSV sums)" 'awk -F"\t" "FILENAME == ARGV[1] {if (FNR > 1) lp[\$1] = \$4; next} \$3 == \"v_snv\" {d = \$5 - (lp[\"v_snv_1_alt_f\"] - lp[\"v_snv_1_ref_f\"]); exit !(d < 1e-5 && d > -1e-5)}" windows.tsv scores.tsv'

# --- strand symmetry ----------------------------------------------------------------------------
{ grep '^##' planted.vcf | grep -v '^##FORMAT'; printf '#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n'; cat mirror.body; } > mirror.vcf
"$SCORE" runA --vcf mirror.vcf --reference rc.fa --flank $FLANK -o mirror_out.vcf --quiet 2> err
"$HELPER" scores mirror_out.vcf > mirror_scores.tsv 2>> err
awk -F'\t' '
FILENAME == ARGV[1] { f[$3] = $5; r[$3] = $6; next }
{ split($5, fw, ","); split($6, rv, ",")
  for (i = 1; i in fw; i++) {
    if (fw[i] == ".") continue
    id = $3 "_" i; n++
    d1 = rv[i] - f[id]; d2 = fw[i] - r[id]; if (d1 < 0) d1 = -d1; if (d2 < 0) d2 = -d2
    if (d1 > worst) worst = d1; if (d2 > worst) worst = d2
  }
}
END { exit !(n == 14 && worst < 1e-4) }' mirror_scores.tsv scores.tsv; rc=$?
check "strand symmetry: the reverse score is the forward score of the mirrored variant on the reverse-complemented reference, and back" '[ $rc -eq 0 ]'

# --- the same scores whatever the batch, window, threads, input form, reference form -------------
close_to() { # two scores files: the same records and values within $3
    paste "$1" "$2" | awk -F'\t' -v tol="$3" '{ if ($3 != $10 || $4 != $11) exit 1
      for (c = 5; c <= 7; c++) { n = split($c, a, ","); split($(c + 7), b, ",")
        for (i = 1; i <= n; i++) { if ((a[i] == ".") != (b[i] == ".")) exit 1; d = a[i] - b[i]; if (d > tol || d < -tol) exit 1 } } }
      END { exit NR != 19 }'
}
"$SCORE" runA --vcf planted.vcf --reference ref.fa --flank $FLANK --batch 1 --threads 1 -o b1.vcf --quiet 2> err
"$HELPER" scores b1.vcf > b1.tsv
check "--batch 1 --threads 1 gives the same scores (to rounding)" 'close_to scores.tsv b1.tsv 1e-5'
"$SCORE" runA --vcf planted.vcf --reference ref.fa --flank $FLANK --window 7 --batch 3 -o w7.vcf --quiet 2> err
"$HELPER" scores w7.vcf > w7.tsv
check "--window 7 (the state carried window to window) gives the same scores" 'close_to scores.tsv w7.tsv 1e-4'

# --- nearby variants share one pass (--context-step): a saturation scan of chrA:2001-2048 (every
# other base, three ALTs each) and two indels; contexts start at multiples of 16 bases, so sites
# share chains. Each record must score as it does in a VCF of its own (no chain to share).
alts() { case $1 in A) echo C,G,T;; C) echo A,G,T;; G) echo A,C,T;; *) echo A,C,G;; esac; }
snv() { local c; c=$(b chrA $1 1); printf 'chrA\t%s\ts%s\t%s\t%s\t.\t.\t.\n' $1 $1 "$c" "$(alts "$c")"; }
{ grep '^##' planted.vcf | grep -v '^##FORMAT'; printf '#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n'
  snv 20; for p in $(seq 2001 2 2048); do snv $p; done
  printf 'chrA\t2030\tdel2030\t%s\t%s\t.\t.\t.\n' "$(b chrA 2030 3)" "$(b chrA 2030 1)"
  printf 'chrA\t2040\tins2040\t%s\t%sTTA\t.\t.\t.\n' "$(b chrA 2040 1)" "$(b chrA 2040 1)"
  snv 2300; } > dense.vcf
"$SCORE" runA --vcf dense.vcf --reference ref.fa --flank $FLANK --context-step 16 --batch 5 -o dense_out.vcf --quiet 2> err; rc=$?
"$HELPER" scores dense_out.vcf > dense.tsv 2>> err
check "--context-step 16: a dense VCF scores (exit 0), every allele" '[ $rc -eq 0 ] && [ "$(grep -c "SSM_LLR=" dense_out.vcf)" -eq 28 ] && ! grep -q "SSM_LLR=\.\|SSM_LLR=nan" dense_out.vcf'
check "... the header says the context's range" 'grep -q "after 40 to 55 bases of context" dense_out.vcf'
alone_ok=1
for id in s20 s2001 s2015 s2017 del2030 ins2040 s2047 s2300; do
    { grep '^#' dense.vcf; awk -F'\t' -v id=$id '$3 == id' dense.vcf; } > one.vcf
    "$SCORE" runA --vcf one.vcf --reference ref.fa --flank $FLANK --context-step 16 -o one_out.vcf --quiet 2>> err
    "$HELPER" scores one_out.vcf > one.tsv 2>> err
    paste <(awk -F'\t' -v id=$id '$3 == id' dense.tsv) one.tsv | awk -F'\t' '{ if ($3 != $10) exit 1
      for (c = 5; c <= 7; c++) { n = split($c, a, ","); split($(c + 7), b, ",")
        for (i = 1; i <= n; i++) { d = a[i] - b[i]; if (a[i] == "." || d > 1e-4 || d < -1e-4) exit 1 } } }
      END { exit NR != 1 }' || { alone_ok=0; echo "     | $id differs: $(awk -F'\t' -v id=$id '$3 == id' dense.tsv | cut -f5-7) vs $(cut -f5-7 one.tsv)"; }
done
check "... each record scores as in a VCF of its own (the shared chain is exact, < 1e-4)" '[ $alone_ok -eq 1 ]'
"$SCORE" runA --vcf dense.vcf --reference ref.fa --flank $FLANK --context-step 16 --batch 1 --window 5 --threads 1 -o dense_b1.vcf --quiet 2> err
"$HELPER" scores dense_b1.vcf > dense_b1.tsv 2>> err
check "... and the same with --batch 1 --window 5 --threads 1" 'paste dense.tsv dense_b1.tsv | awk -F"\t" "{for (c = 5; c <= 7; c++) {n = split(\$c, a, \",\"); split(\$(c + 7), b, \",\"); for (i = 1; i <= n; i++) {d = a[i] - b[i]; if (d > 1e-4 || d < -1e-4) exit 1}}} END {exit NR != 28}"'
one_error "--context-step takes a number of bases" 2 "context-step takes a number of bases" "$SCORE" runA --vcf dense.vcf --reference ref.fa --context-step x
gzip -c ref.fa > refgz.fa.gz
"$SCORE" runA --vcf - --reference refgz.fa.gz --flank $FLANK --quiet < planted.vcf > stdin.vcf 2> err
"$HELPER" scores stdin.vcf > stdin.tsv
check "VCF on stdin, VCF text on stdout, a plain-gzip reference: the same" 'close_to scores.tsv stdin.tsv 1e-6'

# --- VCF.gz with .tbi, BCF with .csi --------------------------------------------------------------
"$SCORE" runA --vcf planted.vcf --reference ref.fa --flank $FLANK -o out.vcf.gz 2> progress.err; rc=$?
check "write .vcf.gz: bgzip (BGZF blocks) and a .tbi index" '[ $rc -eq 0 ] && [ "$(head -c 4 out.vcf.gz | od -An -tx1 | tr -d " ")" = 1f8b0804 ] && [ -s out.vcf.gz.tbi ] && [ ! -e out.vcf.gz.tmp ]'
check "progress on stderr over the records" 'grep -q "record [0-9]*/.*variants/s" progress.err && grep -q "14 variants scored in 13 of 19 records" progress.err'
"$HELPER" query out.vcf.gz chrA:1-1000 > q.txt 2> err
check "... the index finds a region's records" '[ $? -eq 0 ] && [ "$(cut -f3 q.txt | tr "\n" " ")" = "v_start v_snv v_snv_same v_multi " ]'
if command -v bcftools > /dev/null; then
    check "... bcftools reads it, through its index too" 'bcftools view -H out.vcf.gz | cmp -s - <(grep -v "^#" out.vcf) && [ "$(bcftools view -H -r chrA:1-1000 out.vcf.gz | wc -l)" -eq 4 ]'
else
    ok "... bcftools reads it (skipped: bcftools is not installed; the helper read it through htslib)"
fi
"$HELPER" scores out.vcf.gz > gz.tsv
check "... and its records are the .vcf's" 'cmp -s gz.tsv scores.tsv'
"$SCORE" runA --vcf out.vcf.gz --reference ref.fa --flank $FLANK -o out.bcf --quiet 2> err; rc=$?
check "write .bcf (from the scored .vcf.gz: the old scores replaced) with a .csi index" '[ $rc -eq 0 ] && [ -s out.bcf.csi ] && [ "$(head -c 2 out.bcf | od -An -tx1 | tr -d " ")" = 1f8b ]'
"$HELPER" scores out.bcf > bcf.tsv; "$HELPER" query out.bcf chrB:1-10 > qb.txt
check "... the BCF reads back (full float precision) with the same scores, and its index works" 'close_to scores.tsv bcf.tsv 2e-6 && [ "$(cut -f3 qb.txt | tr "\n" " ")" = "v_del_start v_ins_start " ]'
"$HELPER" records out.bcf --strip > bcf_stripped.txt
check "... its records untouched too" 'diff in.txt bcf_stripped.txt > /dev/null'

# --- the default windows on the bundled genome (bgzip, its .fai) -----------------------------------
G=$SRC/data/ecoli/NC_008253.fna.gz
NAME=$(head -1 "$G.fai" | cut -f1)
{ printf '##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n'
  for p in 1000 2000 4938900; do printf '%s\t%s\tg%s\t%s\t%s\t.\t.\t.\n' "$NAME" $p $p "$(cut -c$p genome.txt)" "$(other "$(cut -c$p genome.txt)")"; done; } > genome.vcf
"$SCORE" runA --vcf genome.vcf --reference "$G" -o genome_out.vcf --quiet 2> err; rc=$?
check "the bundled genome with the default --flank 512:64 (a header without contigs)" '[ $rc -eq 0 ] && [ "$(grep -c "SSM_LLR=" genome_out.vcf)" -eq 3 ] && grep -q "after 512 bases of context" genome_out.vcf'

# --- bad input: one clear line, exit 1 (2 for usage), no output left --------------------------------
grep -v '^#' planted.vcf > noheader.vcf
one_error "a VCF without a header" 1 "noheader.vcf: not a VCF or BCF file: no VCF header" "$SCORE" runA --vcf noheader.vcf --reference ref.fa
printf '##fileformat=VCFv4.2\nchrA\t5\t.\tA\tC\t.\t.\t.\n' > nochrom.vcf
one_error "a VCF header without its #CHROM line" 1 "nochrom.vcf: cannot read its VCF header" "$SCORE" runA --vcf nochrom.vcf --reference ref.fa
{ head -12 planted.vcf; printf 'chrA\n'; tail -n +13 planted.vcf; } > broken.vcf
echo "old" > kept.vcf
one_error "a broken record halfway" 1 "broken.vcf: record 6 \(after chrA:1500\) cannot be read" "$SCORE" runA --vcf broken.vcf --reference ref.fa -o kept.vcf --quiet
check "... leaves no output, an older file as it was" '[ "$(cat kept.vcf)" = old ] && [ ! -e kept.vcf.tmp ]'
{ grep '^#' planted.vcf; grep -v '^#' planted.vcf | sort -t"$(printf '\t')" -k2,2nr; } > unsorted.vcf
one_error "unsorted records cannot be indexed" 1 "unsorted.vcf: the records are not sorted .*so u.vcf.gz cannot be indexed" "$SCORE" runA --vcf unsorted.vcf --reference ref.fa -o u.vcf.gz --quiet
check "... and leave no u.vcf.gz nor index" '[ ! -e u.vcf.gz ] && [ ! -e u.vcf.gz.tbi ] && [ ! -e u.vcf.gz.tmp ] && [ ! -e u.vcf.gz.tbi.tmp ]'
"$SCORE" runA --vcf unsorted.vcf --reference ref.fa --flank $FLANK -o u.vcf --quiet 2> err
check "... while plain VCF output keeps their order" '[ $? -eq 0 ] && diff <(grep -v "^#" unsorted.vcf | cut -f3) <(grep -v "^#" u.vcf | cut -f3) > /dev/null'
one_error "a missing VCF" 1 "nothere.vcf: cannot open" "$SCORE" runA --vcf nothere.vcf --reference ref.fa
one_error "a missing reference" 1 "nothere.fa: cannot open" "$SCORE" runA --vcf planted.vcf --reference nothere.fa
one_error "--vcf without --reference" 2 "needs --reference" "$SCORE" runA --vcf planted.vcf
one_error "a bad --flank" 2 "--flank takes LEFT:RIGHT" "$SCORE" runA --vcf planted.vcf --reference ref.fa --flank 5:x
one_error "--vcf with --bedgraph" 2 "--bedgraph does not go with --vcf" "$SCORE" runA --vcf planted.vcf --reference ref.fa --bedgraph x.bg
one_error "--vcf with a FASTA file too" 2 "one file too many" "$SCORE" runA ref.fa --vcf planted.vcf --reference ref.fa

# --- bigWig ---------------------------------------------------------------------------------------
printf '>n1\nACGTNNNNACGTTGCAacgtGGCCA\n>allN\nNNNNNN\n>n2\nTTTTTTTTTTAAAAAAC\n' > ns.fa
if [ "$HAVE_BW" = 1 ]; then
    "$SCORE" runA ref.fa --quiet --bedgraph a.bedgraph --bigwig a.bw > a.tsv 2> err; rc=$?
    "$HELPER" bigwig a.bw > a_bw.txt 2>> err
    check "--bigwig beside --bedgraph: chromosome sizes from the records" '[ $rc -eq 0 ] && [ "$(grep "^#chrom" a_bw.txt | tr "\t" " " | tr "\n" " ")" = "#chrom chrA 6000 #chrom chrB 2500 " ]'
    check "... the bigWig (read back through libBigWig) equals the bedGraph" 'diff <(grep -v "^#" a_bw.txt) <(LC_ALL=C sort -k1,1 -k2,2n a.bedgraph) > /dev/null && [ "$(wc -l < a.bedgraph)" -eq 8500 ]'
    "$SCORE" runA ns.fa --quiet --bedgraph n.bedgraph --bigwig n.bw --strand both --per-base entropy > /dev/null 2> err
    "$HELPER" bigwig n.bw > n_bw.txt 2>> err
    check "--bigwig with --per-base entropy and both strands: the bedGraph's values; N bases absent, not zero" 'diff <(grep -v "^#" n_bw.txt) <(LC_ALL=C sort -k1,1 -k2,2n n.bedgraph) > /dev/null && awk -F"\t" "\$1 == \"n1\" && \$2 >= 4 && \$2 <= 7 {exit 1}" n_bw.txt && grep -q "^#chrom	allN	6$" n_bw.txt && ! grep -q "^allN	" n_bw.txt'
    "$SCORE" runA ns.fa --quiet --bigwig nodir/x.bw > /dev/null 2> err; rc=$?
    check "an unwritable --bigwig: exit 1 naming it, no output" '[ $rc -eq 1 ] && grep -q "nodir/x.bw" err'
else
    one_error "--bigwig in a build without libBigWig: one clear error" 1 "without libBigWig" "$SCORE" runA ns.fa --bigwig n.bw
fi

echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
