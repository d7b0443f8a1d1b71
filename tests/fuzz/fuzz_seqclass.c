/* fuzz_seqclass.c: fuzz target for the labelled-sequence reader (tasks/seqclass/labelled.c,
 * sc_set_read: TSV sequence<TAB>label lines or FASTA with labels in the headers).
 *
 * Each input is written to a temporary file and read with labels optional and required; the
 * input with a newline appended is read too, and must give the same records (a file need not
 * end with a newline). Errors are fine; an error without a message, a set that breaks
 * seqclass.h's promises (n > 0; each record a non-empty id, bases all nucleotide codes of its
 * length, a label free of control characters, quotes and backslashes, and every label when
 * they are required; lines increasing), label names that sc_set_classes does not take back, a
 * crash, a leak or undefined behaviour is a bug.
 *
 * With libFuzzer: tests/fuzz/libfuzzer.sh builds it (build-fuzz/fuzz_seqclass), and
 *   build-fuzz/fuzz_seqclass tests/fuzz/seqclass_corpus
 * Built with -DSSM_FUZZ_STANDALONE (the meson test 'fuzz_seqclass'), the standalone driver runs
 * tests/fuzz/seqclass_corpus (TSV with and without a header, FASTA with label= and last-word
 * labels, multi-line and CRLF records, no final newline, a few near-valid ones) and
 * deterministic mutations of each (SSM_FUZZ_MUTATIONS, default 300; SSM_FUZZ_SEED). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tasks/dna/dna.h"
#include "../../tasks/seqclass/seqclass.h"
#include "fuzz_driver.h"

static long n_read;

static void check_set(sc_set *s, int labels_required) {
    CHECK(s->n > 0, "%d records", s->n);
    for (int i = 0; i < s->n; i++) {
        CHECK(s->ids[i] && s->ids[i][0], "record %d: an empty id", i);
        CHECK(s->lens[i] > 0 && strlen(s->seqs[i]) == (size_t)s->lens[i], "record %d: length %d", i, s->lens[i]);
        for (int k = 0; k < s->lens[i]; k++)
            CHECK(dna_token((unsigned char)s->seqs[i][k]) >= 0, "record %d: base %d", i, k);
        CHECK(s->labels[i] || !labels_required, "record %d: no label", i);
        for (const char *l = s->labels[i]; l && *l; l++)
            CHECK((unsigned char)*l >= 0x20 && *l != '"' && *l != '\\', "record %d: label byte 0x%02x", i, *l);
        CHECK(!s->labels[i] || s->labels[i][0], "record %d: an empty label", i);
        CHECK(s->lines[i] >= 1 && (i == 0 || s->lines[i] > s->lines[i - 1]), "record %d on line %d", i, s->lines[i]);
        CHECK(s->classes[i] == -1, "record %d: class %d before sc_set_classes", i, s->classes[i]);
    }
    const char **names;
    int n;
    CHECK(sc_set_label_names(s, &names, &n) == SSM_OK, "label names: %s", ssm_last_error());
    for (int k = 1; k < n; k++) CHECK(strcmp(names[k - 1], names[k]) < 0, "label names not sorted at %d", k);
    /* every labelled record has one of the names: strict is an error only for unlabelled ones */
    int unlabelled = 0;
    for (int i = 0; i < s->n; i++) unlabelled += !s->labels[i];
    ssm_status st = sc_set_classes(s, names, n, 1);
    CHECK(!st == !unlabelled, "strict classes: %s with %d unlabelled", st ? ssm_last_error() : "ok", unlabelled);
    CHECK(sc_set_classes(s, names, n, 0) == SSM_OK, "classes: %s", ssm_last_error());
    for (int i = 0; i < s->n; i++)
        CHECK(s->labels[i] ? s->classes[i] >= 0 && s->classes[i] < n && !strcmp(names[s->classes[i]], s->labels[i])
                           : s->classes[i] == -1, "record %d: class %d", i, s->classes[i]);
    free(names);
}

/* a and b hold the same records */
static void check_same(const sc_set *a, const sc_set *b) {
    CHECK(a->n == b->n, "%d records, %d with a newline appended", a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        CHECK(!strcmp(a->ids[i], b->ids[i]) && !strcmp(a->seqs[i], b->seqs[i]) && a->lines[i] == b->lines[i],
              "record %d differs with a newline appended", i);
        CHECK(!a->labels[i] == !b->labels[i] && (!a->labels[i] || !strcmp(a->labels[i], b->labels[i])),
              "record %d's label differs with a newline appended", i);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* in.txt: the input; nl.txt: the input and a newline */
    const char *path[2] = {fuzz_temp_path("fuzz_seqclass", "in.txt"), fuzz_temp_path("fuzz_seqclass", "nl.txt")};
    fuzz_write_file(path[0], data, size);
    unsigned char *with_nl = malloc(size + 1);
    CHECK(with_nl != NULL, "out of memory");
    if (size) memcpy(with_nl, data, size);
    with_nl[size] = '\n';
    fuzz_write_file(path[1], with_nl, size + 1);
    free(with_nl);
    for (int required = 0; required < 2; required++) {
        sc_set s[2];
        ssm_status st[2];
        for (int nl = 0; nl < 2; nl++) {
            if ((st[nl] = sc_set_read(path[nl], required, &s[nl]))) {
                FAILED(st[nl]);
                CHECK(!s[nl].n && !s[nl].ids && !s[nl].path, "an error left a set");
            } else {
                check_set(&s[nl], required);
            }
        }
        CHECK(!st[0] == !st[1], "read %s, with a newline appended %s", st[0] ? "fails" : "succeeds",
              st[1] ? "fails" : "succeeds");
        if (!st[0]) check_same(&s[0], &s[1]), n_read++;
        for (int nl = 0; nl < 2; nl++)
            if (!st[nl]) sc_set_free(&s[nl]);
    }
    return 0;
}

#ifdef SSM_FUZZ_STANDALONE
const fuzz_target fuzz_this_target = {.name = "fuzz_seqclass", .mutations = 300, .truncations = 48,
                                      .reads = &n_read,
                                      .punct = ">\t\t \n\r=\"\\ACGTNacgtnRYlabel=xyz01\xff"};
#endif
