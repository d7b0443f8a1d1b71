/* fuzz_bed.c: fuzz target for the BED reader of ssm-embed --regions (bin/bed.c).
 *
 * Each input is written to a temporary file and read with bed_read against four records (chr1
 * of 1000 bases, chr2 of 60, chrM of 16, x of 1). Errors are fine; an error without a message,
 * a set that breaks bed.h's promises (n > 0; each interval on a known record, start < end <=
 * its length; a name, when there is one, non-empty and without blanks; by_contig/contig_first listing each
 * record's intervals once, in the file's order), a crash, a leak or undefined behaviour is a bug.
 *
 * With libFuzzer: tests/fuzz/libfuzzer.sh builds it (build-fuzz/fuzz_bed), and
 *   build-fuzz/fuzz_bed tests/fuzz/bed_corpus
 * Built with -DSSM_FUZZ_STANDALONE (the meson test 'fuzz_bed'), the standalone driver runs
 * tests/fuzz/bed_corpus (intervals with and without names, extra columns, track/browser lines
 * and comments, CRLF, a few near-valid ones) and deterministic mutations of each
 * (SSM_FUZZ_MUTATIONS, default 400; SSM_FUZZ_SEED). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../bin/bed.h"
#include "fuzz_driver.h"

static bed_contig contigs[] = {{"chr1", 1000, 0}, {"chr2", 60, 0}, {"chrM", 16, 0}, {"x", 1, 0}};
enum { N_CONTIGS = sizeof contigs / sizeof *contigs };
static long n_read;

static void check_set(const bed_set *s) {
    CHECK(s->n > 0 && s->regions && s->by_contig && s->contig_first, "%zu regions", s->n);
    for (size_t i = 0; i < s->n; i++) {
        const bed_region *r = &s->regions[i];
        CHECK(r->contig < N_CONTIGS, "region %zu: contig %zu", i, r->contig);
        CHECK(r->start < r->end && r->end <= contigs[r->contig].length, "region %zu: %zu-%zu on %s",
              i, r->start, r->end, contigs[r->contig].id);
        CHECK(!r->name || (r->name[0] && !strpbrk(r->name, " \t\n")), "region %zu: name '%s'", i, r->name);
    }
    CHECK(s->contig_first[0] == 0 && s->contig_first[N_CONTIGS] == s->n, "contig_first ends %zu, %zu",
          s->contig_first[0], s->contig_first[N_CONTIGS]);
    for (size_t c = 0; c < N_CONTIGS; c++) {
        CHECK(s->contig_first[c] <= s->contig_first[c + 1], "contig_first not sorted at %zu", c);
        for (size_t k = s->contig_first[c]; k < s->contig_first[c + 1]; k++) {
            size_t i = s->by_contig[k];
            CHECK(i < s->n && s->regions[i].contig == c, "by_contig[%zu] = %zu not on contig %zu", k, i, c);
            CHECK(k == s->contig_first[c] || s->by_contig[k - 1] < i, "by_contig[%zu] out of order", k);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int sorted;
    if (!sorted) bed_sort_contigs(contigs, N_CONTIGS), sorted = 1;
    const char *path = fuzz_temp_path("fuzz_bed", "in.bed");
    fuzz_write_file(path, data, size);
    bed_set s;
    ssm_status st = bed_read(path, contigs, N_CONTIGS, "base", &s);
    if (st) {
        FAILED(st);
        CHECK(!s.n && !s.regions, "an error left %zu regions", s.n);
        return 0;
    }
    check_set(&s);
    n_read++;
    bed_set_free(&s);
    return 0;
}

#ifdef SSM_FUZZ_STANDALONE
const fuzz_target fuzz_this_target = {.name = "fuzz_bed", .mutations = 400, .truncations = 48,
                                      .reads = &n_read,
                                      .punct = "\t\t \n\r#-+0123456789chr1chr2chrMxtrackbrowser\xff"};
#endif
