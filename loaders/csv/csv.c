/* csv.c: see csv.h. libcsv splits the fields (quotes, embedded delimiters); the file is fed
 * one line at a time so that every field is known by its line. */
#include <csv.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csv.h"

/* what the callbacks see */
typedef struct reader {
    const char *path;
    int line;                /* the physical line being fed */
    int field;               /* fields seen in this row */
    int row_line;            /* the line where this row started */
    int header_done;
    char **header;           /* (n_header) */
    int n_header;
    char **cells;            /* this row's fields as text */
    int n_cells, cap_cells;
    /* the table being built */
    double *values;
    char **dates;
    int *lines;
    int rows, cap_rows;
    int *pick;               /* (cols) header index of each value column */
    int cols, date_index;
    const csv_options *opt;
    ssm_status status;       /* the first error */
} reader;

static ssm_status fail(reader *r, int line, int col, const char *fmt, const char *a, const char *b) {
    char msg[512];
    snprintf(msg, sizeof msg, fmt, a, b);
    r->status = ssm_set_error(SSM_ERR_FORMAT, "%s:%d:%d: %s", r->path, line, col, msg);
    return r->status;
}

static void on_field(void *s, size_t len, void *data) {
    reader *r = data;
    if (r->status) return;
    if (r->n_cells == 0) r->row_line = r->line;
    if (r->n_cells == r->cap_cells) {
        int cap = r->cap_cells ? 2 * r->cap_cells : 16;
        char **c = realloc(r->cells, (size_t)cap * sizeof *c);
        if (!c) { r->status = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", r->path); return; }
        r->cells = c, r->cap_cells = cap;
    }
    if (s && memchr(s, 0, len)) { /* the text would end there: "1\0abc" would read as 1 */
        fail(r, r->line, r->n_cells + 1, "a NUL byte in the field (a binary file?)%s%s", "", "");
        return;
    }
    char *text = malloc(len + 1);
    if (!text) { r->status = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", r->path); return; }
    memcpy(text, s ? s : "", s ? len : 0);
    text[s ? len : 0] = 0;
    r->cells[r->n_cells++] = text;
}

static int is_missing(const char *t) {
    while (isspace((unsigned char)*t)) t++;
    return !*t || !strcasecmp(t, "NA") || !strcasecmp(t, "NaN") || !strcmp(t, "?");
}

/* The header column of that name, or -1; a name the header holds twice is an error (which of
 * the two is meant?), at the second. */
static int find_column(reader *r, const char *name, const char *what) {
    int found = -1;
    for (int i = 0; i < r->n_header && !r->status; i++)
        if (!strcmp(r->header[i], name)) {
            if (found >= 0) fail(r, r->row_line, i + 1, "the header names '%s' twice (%s)", name, what);
            found = i;
        }
    return r->status ? -1 : found;
}

/* the header: find the date and value columns */
static void take_header(reader *r) {
    const csv_options *o = r->opt;
    r->header = r->cells, r->n_header = r->n_cells;
    r->cells = NULL, r->n_cells = r->cap_cells = 0;
    r->header_done = 1;
    r->date_index = o->date_column ? find_column(r, o->date_column, "the date column") : -1;
    if (r->status) return;
    if (o->date_column && r->date_index < 0) {
        fail(r, r->row_line, 1, "no column named '%s' (the date column)%s", o->date_column, "");
        return;
    }
    int want = 0;
    if (o->columns) while (o->columns[want]) want++;
    else want = r->n_header - (r->date_index >= 0);
    r->pick = malloc((size_t)(want ? want : 1) * sizeof(int));
    if (!r->pick) { r->status = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", r->path); return; }
    for (int i = 0; i < r->n_header && !o->columns; i++)
        if (i != r->date_index) {
            if (find_column(r, r->header[i], "a value column") < 0) return;
            r->pick[r->cols++] = i;
        }
    for (int k = 0; o->columns && o->columns[k]; k++) {
        int found = find_column(r, o->columns[k], "task.columns");
        if (r->status) return;
        if (found < 0) {
            fail(r, r->row_line, 1, "no column named '%s' (task.columns)%s", o->columns[k], "");
            return;
        }
        r->pick[r->cols++] = found;
    }
    if (!r->cols) fail(r, r->row_line, 1, "no value columns%s%s", "", "");
}

static void on_row(int c, void *data) {
    reader *r = data;
    (void)c;
    if (r->status) return;
    if (!r->header_done) {
        take_header(r);
        return;
    }
    if (r->n_cells != r->n_header) {
        char got[32], want[32];
        snprintf(got, sizeof got, "%d", r->n_cells);
        snprintf(want, sizeof want, "%d", r->n_header);
        fail(r, r->row_line, r->n_cells < r->n_header ? r->n_cells + 1 : r->n_header + 1,
             "the row has %s fields, the header %s (a ragged row)", got, want);
    }
    if (!r->status && r->rows == r->cap_rows) {
        int cap = r->cap_rows ? 2 * r->cap_rows : 256;
        double *v = realloc(r->values, (size_t)cap * r->cols * sizeof *v);
        int *l = realloc(r->lines, (size_t)cap * sizeof *l);
        char **d = realloc(r->dates, (size_t)cap * sizeof *d);
        if (v) r->values = v;
        if (l) r->lines = l;
        if (d) r->dates = d;
        if (!v || !l || !d) r->status = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", r->path);
        else r->cap_rows = cap;
    }
    for (int k = 0; !r->status && k < r->cols; k++) {
        int i = r->pick[k];
        const char *t = r->cells[i];
        double x = NAN;
        if (is_missing(t)) {
            if (r->opt->missing == CSV_MISSING_REFUSE)
                fail(r, r->row_line, i + 1, "missing value in column '%s' (fill it with task.missing: "
                     "previous or linear)%s", r->header[i], "");
        } else {
            char *end;
            errno = 0;
            x = strtod(t, &end);
            while (isspace((unsigned char)*end)) end++;
            if (end == t || *end || errno || !isfinite(x))
                fail(r, r->row_line, i + 1, "'%s' in column '%s' is not a number", t, r->header[i]);
        }
        if (!r->status) r->values[(size_t)r->rows * r->cols + k] = x;
    }
    if (!r->status) {
        r->lines[r->rows] = r->row_line;
        r->dates[r->rows] = r->date_index >= 0 ? r->cells[r->date_index] : NULL;
        if (r->date_index >= 0) r->cells[r->date_index] = NULL; /* kept */
        r->rows++;
    }
    for (int i = 0; i < r->n_cells; i++) free(r->cells[i]);
    r->n_cells = 0;
}

/* missing values (NaN) per column, filled as the options say */
static ssm_status fill_missing(reader *r) {
    for (int k = 0; k < r->cols; k++) {
        int last = -1; /* the last row with a value */
        for (int t = 0; t <= r->rows; t++) {
            double *v = r->values + k;
            if (t < r->rows && isnan(v[(size_t)t * r->cols])) continue;
            if (t == r->rows && last < 0)
                return ssm_set_error(SSM_ERR_FORMAT, "%s: column '%s' has no value at all", r->path,
                                     r->header[r->pick[k]]);
            /* rows last+1 .. t-1 are missing */
            for (int g = last + 1; g < t; g++) {
                double a = last >= 0 ? v[(size_t)last * r->cols] : v[(size_t)t * r->cols];
                double b = t < r->rows ? v[(size_t)t * r->cols] : a;
                double w = last >= 0 && t < r->rows ? (double)(g - last) / (t - last) : 0;
                v[(size_t)g * r->cols] = r->opt->missing == CSV_MISSING_LINEAR ? a + w * (b - a) : a;
            }
            last = t;
        }
    }
    return SSM_OK;
}

ssm_status csv_read(const char *path, const csv_options *opt, csv_table *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return ssm_set_error(SSM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct csv_parser p;
    if (csv_init(&p, CSV_APPEND_NULL)) {
        fclose(f);
        return ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t n = strlen(path);
    char delim = opt->delimiter ? opt->delimiter
               : (n > 4 && (!strcmp(path + n - 4, ".tsv") || !strcmp(path + n - 4, ".tab"))) ? '\t' : ',';
    csv_set_delim(&p, (unsigned char)delim);
    reader r = {.path = path, .opt = opt};
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while (!r.status && (len = getline(&line, &cap, f)) > 0) {
        r.line++;
        if (csv_parse(&p, line, (size_t)len, on_field, on_row, &r) != (size_t)len && !r.status)
            r.status = ssm_set_error(SSM_ERR_FORMAT, "%s:%d: %s", path, r.line, csv_strerror(csv_error(&p)));
    }
    int read_error = ferror(f);
    if (!r.status) csv_fini(&p, on_field, on_row, &r);
    csv_free(&p);
    free(line);
    fclose(f);
    if (!r.status && read_error) r.status = ssm_set_error(SSM_ERR_IO, "%s: read error", path);
    if (!r.status && !r.header_done)
        r.status = ssm_set_error(SSM_ERR_FORMAT, "%s: the file is empty (it needs a header row and "
                                 "rows of values)", path);
    if (!r.status && !r.rows)
        r.status = ssm_set_error(SSM_ERR_FORMAT, "%s:%d: a header and no rows of values", path, r.line);
    if (!r.status) r.status = fill_missing(&r);
    for (int i = 0; i < r.n_cells; i++) free(r.cells[i]);
    free(r.cells);
    if (!r.status) {
        out->rows = r.rows, out->cols = r.cols;
        out->values = r.values, out->lines = r.lines;
        out->dates = r.date_index >= 0 ? r.dates : NULL;
        out->names = malloc((size_t)r.cols * sizeof(char *));
        out->path = strdup(path);
        for (int k = 0; out->names && k < r.cols; k++) out->names[k] = strdup(r.header[r.pick[k]]);
        if (r.date_index < 0) free(r.dates);
        r.values = NULL, r.lines = NULL, r.dates = NULL;
        if (!out->names || !out->path) r.status = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", path);
    }
    for (int i = 0; i < r.n_header; i++) free(r.header[i]);
    free(r.header);
    free(r.pick);
    if (r.status) {
        for (int t = 0; r.dates && r.date_index >= 0 && t < r.rows; t++) free(r.dates[t]);
        free(r.dates);
        free(r.values);
        free(r.lines);
        csv_table_free(out);
    }
    return r.status;
}

void csv_table_free(csv_table *t) {
    for (int k = 0; t->names && k < t->cols; k++) free(t->names[k]);
    for (int i = 0; t->dates && i < t->rows; i++) free(t->dates[i]);
    free(t->names);
    free(t->dates);
    free(t->values);
    free(t->lines);
    free(t->path);
    memset(t, 0, sizeof *t);
}

int csv_column(const csv_table *t, const char *name) {
    for (int k = 0; k < t->cols; k++)
        if (!strcmp(t->names[k], name)) return k;
    return -1;
}
