/* genomics_helper: reads back what ssm-score --vcf and --bigwig write, for test_genomics.sh
 * (bcftools and UCSC's tools need not be installed).
 *
 *   genomics_helper records FILE [--strip]  the records of a VCF/VCF.gz/BCF as VCF text lines;
 *                                           --strip drops ssm-score's INFO fields and FILTERs
 *   genomics_helper scores FILE             per record: CHROM POS ID FILTER SSM_LLR_FWD SSM_LLR_RC
 *                                           SSM_LLR (%.6g each, '.' when missing)
 *   genomics_helper query FILE REGION       the records of REGION (chr:beg-end) through the index
 *   genomics_helper bigwig FILE             a bigWig's chromosomes ("#chrom NAME LENGTH") and its
 *                                           items as bedGraph lines (value %.5f)
 * Exit status 1 with a message on any failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <htslib/hts.h>
#include <htslib/kstring.h>
#include <htslib/synced_bcf_reader.h>
#include <htslib/vcf.h>

#ifdef SSM_HAVE_BIGWIG
#include <bigWig.h>
#endif

static int fail(const char *what, const char *file) {
    fprintf(stderr, "genomics_helper: %s: %s\n", file, what);
    return 1;
}

static void strip(bcf_hdr_t *h, bcf1_t *b) {
    const char *info[3] = {"SSM_LLR_FWD", "SSM_LLR_RC", "SSM_LLR"};
    const char *flt[3] = {"SSM_REF_MISMATCH", "SSM_SYMBOLIC", "SSM_NO_CONTIG"};
    for (int i = 0; i < 3; i++) bcf_update_info_float(h, b, info[i], NULL, 0);
    for (int i = 0; i < 3; i++) {
        int id = bcf_hdr_id2int(h, BCF_DT_ID, flt[i]);
        if (id >= 0 && bcf_has_filter(h, b, (char *)flt[i]) == 1) bcf_remove_filter(h, b, id, 0);
    }
}

static void print_values(bcf_hdr_t *h, bcf1_t *b, const char *tag) {
    float *v = NULL;
    int n = 0, got = bcf_get_info_float(h, b, tag, &v, &n);
    putchar('\t');
    if (got <= 0) putchar('.');
    for (int i = 0; i < got; i++) {
        if (i) putchar(',');
        if (bcf_float_is_missing(v[i])) putchar('.');
        else printf("%.6g", v[i]);
    }
    free(v);
}

/* The records of a region, through the file's index (.tbi or .csi) */
static int query(const char *path, const char *region) {
    bcf_srs_t *sr = bcf_sr_init();
    bcf_sr_set_opt(sr, BCF_SR_REQUIRE_IDX);
    if (bcf_sr_set_regions(sr, region, 0) < 0 || !bcf_sr_add_reader(sr, path)) {
        int rc = fail(bcf_sr_strerror(sr->errnum), path);
        bcf_sr_destroy(sr);
        return rc;
    }
    kstring_t s = {0, 0, NULL};
    while (bcf_sr_next_line(sr)) {
        s.l = 0;
        vcf_format(sr->readers[0].header, bcf_sr_get_line(sr, 0), &s);
        fwrite(s.s, 1, s.l, stdout);
    }
    free(s.s);
    bcf_sr_destroy(sr);
    return 0;
}

static int records(const char *path, int mode) {
    htsFile *fp = hts_open(path, "r");
    if (!fp) return fail("cannot open", path);
    bcf_hdr_t *h = bcf_hdr_read(fp);
    if (!h) {
        hts_close(fp);
        return fail("no VCF header", path);
    }
    bcf1_t *b = bcf_init();
    kstring_t s = {0, 0, NULL};
    int rc = 0, ret;
    while (!rc && (ret = bcf_read(fp, h, b)) == 0) {
        bcf_unpack(b, BCF_UN_ALL);
        if (mode == 1) strip(h, b);
        if (mode == 2) {
            printf("%s\t%lld\t%s\t", bcf_seqname_safe(h, b), (long long)b->pos + 1, b->d.id);
            if (b->d.n_flt == 0) putchar('.');
            for (int i = 0; i < b->d.n_flt; i++) printf("%s%s", i ? ";" : "", bcf_hdr_int2id(h, BCF_DT_ID, b->d.flt[i]));
            print_values(h, b, "SSM_LLR_FWD");
            print_values(h, b, "SSM_LLR_RC");
            print_values(h, b, "SSM_LLR");
            putchar('\n');
            continue;
        }
        s.l = 0;
        if (vcf_format(h, b, &s) < 0) {
            rc = fail("cannot format a record", path);
            break;
        }
        fwrite(s.s, 1, s.l, stdout);
    }
    if (!rc && ret < -1) rc = fail("a record cannot be read", path);
    free(s.s);
    bcf_destroy(b);
    bcf_hdr_destroy(h);
    hts_close(fp);
    return rc;
}

static int bigwig(const char *path) {
#ifdef SSM_HAVE_BIGWIG
    if (bwInit(1 << 17)) return fail("bwInit failed", path);
    bigWigFile_t *fp = bwOpen((char *)path, NULL, "r");
    if (!fp) return fail("not a bigWig file", path);
    int rc = 0;
    for (int64_t c = 0; c < fp->cl->nKeys; c++)
        printf("#chrom\t%s\t%u\n", fp->cl->chrom[c], fp->cl->len[c]);
    for (int64_t c = 0; c < fp->cl->nKeys && !rc; c++) {
        bwOverlappingIntervals_t *o = bwGetOverlappingIntervals(fp, fp->cl->chrom[c], 0, fp->cl->len[c]);
        if (!o) {
            rc = fail("cannot read the items", path);
            break;
        }
        for (uint32_t i = 0; i < o->l; i++)
            printf("%s\t%u\t%u\t%.5f\n", fp->cl->chrom[c], o->start[i], o->end[i], o->value[i]);
        bwDestroyOverlappingIntervals(o);
    }
    bwClose(fp);
    bwCleanup();
    return rc;
#else
    return fail("built without libBigWig", path);
#endif
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "records"))
        return records(argv[2], argc > 3 && !strcmp(argv[3], "--strip"));
    if (argc == 3 && !strcmp(argv[1], "scores")) return records(argv[2], 2);
    if (argc == 4 && !strcmp(argv[1], "query")) return query(argv[2], argv[3]);
    if (argc == 3 && !strcmp(argv[1], "bigwig")) return bigwig(argv[2]);
    fprintf(stderr, "usage: genomics_helper records FILE [--strip] | scores FILE | query FILE REGION | bigwig FILE\n");
    return 2;
}
