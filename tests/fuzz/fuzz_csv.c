/* fuzz_csv.c: fuzz target for the CSV/TSV time-series reader (loaders/csv, through libcsv; the
 * forecasting task's csv_read).
 *
 * Each input is written to a temporary file and read three ways, as the forecasting task's
 * options can ask: in.csv with every column and missing cells refused; in.csv with the date
 * column 'date' and missing cells filled from the previous value; in.tsv (tab-separated) with
 * the columns 'b' and 'a' in that order, the date column and linear interpolation. Errors are
 * fine; an error without a message, a table that breaks csv.h's promises (rows and columns > 0,
 * every value finite, the columns asked for in their order, a date per row exactly when there is
 * a date column, row lines in order), a crash, a leak or undefined behaviour
 * is a bug.
 *
 * With libFuzzer: tests/fuzz/libfuzzer.sh builds it (build-fuzz/fuzz_csv), and
 *   build-fuzz/fuzz_csv tests/fuzz/csv_corpus
 * Built with -DSSM_FUZZ_STANDALONE (the meson test 'fuzz_csv'), the standalone driver runs
 * tests/fuzz/csv_corpus (a header and numeric columns, with a date column, quoted fields, NA
 * gaps, CRLF, a TSV; ragged rows, NaN/inf, an empty file) and deterministic mutations of each
 * (SSM_FUZZ_MUTATIONS, default 300; SSM_FUZZ_SEED). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../loaders/csv/csv.h"
#include "fuzz_driver.h"

static const char *const ba[] = {"b", "a", NULL};
static const struct way {
    const char *file; /* .tsv: tab-separated */
    csv_options opt;
} ways[] = {
    {"in.csv", {.missing = CSV_MISSING_REFUSE}},
    {"in.csv", {.date_column = "date", .missing = CSV_MISSING_PREVIOUS}},
    {"in.tsv", {.columns = ba, .date_column = "date", .missing = CSV_MISSING_LINEAR}},
};
enum { N_WAYS = sizeof ways / sizeof *ways };
static long n_read;

static void check_table(const struct way *w, const char *path, const csv_table *t) {
    CHECK(t->rows > 0 && t->cols > 0 && t->names && t->values && t->lines, "%d rows, %d columns",
          t->rows, t->cols);
    CHECK(t->path && !strcmp(t->path, path), "path %s", t->path ? t->path : "(null)");
    if (w->opt.columns) {
        CHECK(t->cols == 2 && !strcmp(t->names[0], "b") && !strcmp(t->names[1], "a"), "columns %d: %s",
              t->cols, t->names[0]);
    }
    for (int k = 0; k < t->cols; k++) {
        CHECK(t->names[k], "column %d has no name", k);
        CHECK(!w->opt.date_column || strcmp(t->names[k], w->opt.date_column), "the date column is a value column");
        int c = csv_column(t, t->names[k]);
        CHECK(c >= 0 && c <= k && !strcmp(t->names[c], t->names[k]), "csv_column(%s) = %d", t->names[k], c);
    }
    for (long i = 0; i < (long)t->rows * t->cols; i++) CHECK(isfinite(t->values[i]), "value %ld", i);
    CHECK(!t->dates == !w->opt.date_column, "dates %p with date column %s", (void *)t->dates,
          w->opt.date_column ? w->opt.date_column : "(none)");
    for (int r = 0; r < t->rows; r++) {
        CHECK(!t->dates || t->dates[r], "row %d has no date", r);
        /* a lone CR ends a row (libcsv) but not a line: rows may share one */
        CHECK(t->lines[r] >= 1 && (r == 0 || t->lines[r] >= t->lines[r - 1]), "row %d on line %d", r, t->lines[r]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_write_file(fuzz_temp_path("fuzz_csv", "in.csv"), data, size);
    fuzz_write_file(fuzz_temp_path("fuzz_csv", "in.tsv"), data, size);
    for (int k = 0; k < N_WAYS; k++) {
        const struct way *w = &ways[k];
        const char *path = fuzz_temp_path("fuzz_csv", w->file);
        csv_table t;
        ssm_status s = csv_read(path, &w->opt, &t);
        if (s) {
            FAILED(s);
            CHECK(!t.rows && !t.names && !t.values && !t.dates, "an error left a table");
            continue;
        }
        check_table(w, path, &t);
        n_read++;
        csv_table_free(&t);
    }
    return 0;
}

#ifdef SSM_FUZZ_STANDALONE
const fuzz_target fuzz_this_target = {.name = "fuzz_csv", .mutations = 300, .truncations = 48,
                                      .reads = &n_read,
                                      .punct = ",,\t\"\n\r -.eE0123456789NAnaninf?datab\xff"};
#endif
