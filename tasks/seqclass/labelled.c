/* labelled.c: labelled sequences from TSV or FASTA (seqclass.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../dna/dna.h"
#include "seqclass.h"

typedef struct reader {
    sc_set *s;
    int cap;
    int labels_required;
} reader;

static char *dup_n(const char *p, size_t n) {
    char *d = malloc(n + 1);
    if (d) memcpy(d, p, n), d[n] = 0;
    return d;
}

static ssm_status nomem(const reader *r) {
    return ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", r->s->path);
}

/* Append a record; id, seq and label are taken (label may be NULL). */
static ssm_status add(reader *r, char *id, char *seq, int len, char *label, int line) {
    sc_set *s = r->s;
    if (s->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 64;
        void *p[6] = {realloc(s->ids, cap * sizeof(char *)), NULL};
        if (p[0]) s->ids = p[0];
        if ((p[1] = realloc(s->seqs, cap * sizeof(char *)))) s->seqs = p[1];
        if ((p[2] = realloc(s->lens, cap * sizeof(int)))) s->lens = p[2];
        if ((p[3] = realloc(s->labels, cap * sizeof(char *)))) s->labels = p[3];
        if ((p[4] = realloc(s->lines, cap * sizeof(int)))) s->lines = p[4];
        if ((p[5] = realloc(s->classes, cap * sizeof(int32_t)))) s->classes = p[5];
        for (int i = 0; i < 6; i++)
            if (!p[i]) {
                free(id), free(seq), free(label);
                return nomem(r);
            }
        r->cap = cap;
    }
    if (!id || !seq) {
        free(id), free(seq), free(label);
        return nomem(r);
    }
    s->ids[s->n] = id, s->seqs[s->n] = seq, s->lens[s->n] = len, s->labels[s->n] = label;
    s->lines[s->n] = line, s->classes[s->n] = -1;
    s->n++;
    return SSM_OK;
}

static int is_space(int c) { return c == ' ' || c == '\t' || c == '\r'; }

/* The bases of text[0, n): every byte a nucleotide code, else an error at its column. */
static ssm_status check_bases(const reader *r, const char *text, size_t n, int line, int col0) {
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)text[i];
        if (dna_token(c) >= 0) continue;
        if (c > 0x20 && c < 0x7f)
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%d:%d: '%c' is not a nucleotide code (A C G T U "
                                 "N or IUPAC)", r->s->path, line, col0 + (int)i, c);
        return ssm_set_error(SSM_ERR_FORMAT, "%s:%d:%d: byte 0x%02x is not a nucleotide code (A C G T "
                             "U N or IUPAC)", r->s->path, line, col0 + (int)i, c);
    }
    return SSM_OK;
}

static int all_bases(const char *text, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (dna_token((unsigned char)text[i]) < 0) return 0;
    return n > 0;
}

static ssm_status check_label(const reader *r, const char *label, size_t n, int line, int col) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)label[i] < 0x20 || label[i] == '"' || label[i] == '\\')
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%d:%d: a label may not hold control characters, "
                                 "quotes or backslashes", r->s->path, line, col + (int)i);
    return SSM_OK;
}

/* TSV: sequence<TAB>label a line (label optional unless required). */
static ssm_status read_tsv(reader *r, const char *text, size_t size) {
    int line = 0;
    for (size_t at = 0; at < size;) {
        const char *p = text + at, *nl = memchr(p, '\n', size - at);
        size_t n = nl ? (size_t)(nl - p) : size - at;
        at += n + 1;
        line++;
        while (n && (p[n - 1] == '\r' || p[n - 1] == ' ')) n--;
        if (!n) continue;
        const char *tab = memchr(p, '\t', n);
        size_t seq_n = tab ? (size_t)(tab - p) : n;
        if (r->s->n == 0 && line == 1 && !all_bases(p, seq_n)) continue; /* a header */
        if (!seq_n)
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%d:1: no sequence before the tab (expected "
                                 "sequence<TAB>label)", r->s->path, line);
        ssm_status st = check_bases(r, p, seq_n, line, 1);
        if (st) return st;
        char *label = NULL;
        if (tab) {
            const char *l = tab + 1;
            size_t ln = n - seq_n - 1;
            int col = (int)seq_n + 2;
            if (memchr(l, '\t', ln))
                return ssm_set_error(SSM_ERR_FORMAT, "%s:%d:%d: a third column (expected "
                                     "sequence<TAB>label)", r->s->path, line,
                                     col + (int)((const char *)memchr(l, '\t', ln) - l));
            if (!ln)
                return ssm_set_error(SSM_ERR_FORMAT, "%s:%d:%d: the label is empty", r->s->path, line, col);
            if ((st = check_label(r, l, ln, line, col))) return st;
            if (!(label = dup_n(l, ln))) return nomem(r);
        } else if (r->labels_required) {
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%d:%zu: no label (expected sequence<TAB>label)",
                                 r->s->path, line, seq_n + 1);
        }
        char id[32];
        snprintf(id, sizeof id, "%d", line);
        if ((st = add(r, strdup(id), dup_n(p, seq_n), (int)seq_n, label, line))) return st;
    }
    return SSM_OK;
}

/* The label of a FASTA header (after '>'): label=NAME anywhere, else the last of two or more
 * words. *col: its column (1-based, '>' is column 1). */
static const char *header_label(const char *h, size_t n, size_t *len, int *col) {
    for (size_t i = 0; i + 6 <= n; i++)
        if ((i == 0 || is_space(h[i - 1])) && !memcmp(h + i, "label=", 6)) {
            size_t j = i + 6;
            while (j < n && !is_space(h[j])) j++;
            *len = j - i - 6, *col = (int)i + 8;
            return h + i + 6;
        }
    size_t end = n;
    while (end && is_space(h[end - 1])) end--;
    size_t start = end;
    while (start && !is_space(h[start - 1])) start--;
    size_t first_end = 0;
    while (first_end < n && !is_space(h[first_end])) first_end++;
    if (start <= first_end) return NULL; /* one word: the id alone */
    *len = end - start, *col = (int)start + 2;
    return h + start;
}

static ssm_status read_fasta(reader *r, const char *text, size_t size) {
    int line = 0, rec_line = 0;
    char *seq = NULL, *id = NULL, *label = NULL;
    size_t len = 0, cap = 0;
    ssm_status st = SSM_OK;
    for (size_t at = 0; at <= size && !st; line++) {
        const char *p = text + at, *nl = at < size ? memchr(p, '\n', size - at) : NULL;
        size_t n = at < size ? (nl ? (size_t)(nl - p) : size - at) : 0;
        int eof = at >= size;
        at += n + (nl != NULL); /* a last line without a newline: the next turn is the end */
        while (n && (p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
        if (eof || (n && p[0] == '>')) { /* the record before ends here */
            if (id) {
                if (!len) {
                    st = ssm_set_error(SSM_ERR_FORMAT, "%s:%d:1: record '%s' has no bases", r->s->path,
                                       rec_line, id);
                    break;
                }
                st = add(r, id, seq, (int)len, label, rec_line);
                id = seq = label = NULL, len = cap = 0;
                if (st) break;
            }
            if (eof) break;
            size_t w = 1;
            while (w < n && !is_space(p[w])) w++;
            if (w == 1) {
                st = ssm_set_error(SSM_ERR_FORMAT, "%s:%d:2: a FASTA header without a name", r->s->path,
                                   line + 1);
                break;
            }
            const char *nul = memchr(p + 1, 0, w - 1); /* the name would end there */
            if (nul) {
                st = ssm_set_error(SSM_ERR_FORMAT, "%s:%d:%d: byte 0x00 in the record's name", r->s->path,
                                   line + 1, (int)(nul - p) + 1);
                break;
            }
            rec_line = line + 1;
            size_t ln;
            int col;
            const char *l = header_label(p + 1, n - 1, &ln, &col);
            if (l && !ln) {
                st = ssm_set_error(SSM_ERR_FORMAT, "%s:%d:%d: the label is empty", r->s->path, line + 1, col);
                break;
            }
            if (!l && r->labels_required) {
                st = ssm_set_error(SSM_ERR_FORMAT, "%s:%d:%zu: no label in the header (write "
                                   ">name label=CLASS, or the class as its last word)", r->s->path,
                                   line + 1, n + 1);
                break;
            }
            if (l && (st = check_label(r, l, ln, line + 1, col))) break;
            id = dup_n(p + 1, w - 1);
            label = l ? dup_n(l, ln) : NULL;
            if (!id || (l && !label)) st = nomem(r);
            continue;
        }
        if (!n) continue;
        if (!id) {
            st = ssm_set_error(SSM_ERR_FORMAT, "%s:%d:1: bases before the first FASTA header", r->s->path,
                               line + 1);
            break;
        }
        if ((st = check_bases(r, p, n, line + 1, 1))) break;
        if (len + n + 1 > cap) {
            cap = 2 * (len + n) + 64;
            char *g = realloc(seq, cap);
            if (!g) {
                st = nomem(r);
                break;
            }
            seq = g;
        }
        memcpy(seq + len, p, n);
        len += n;
        seq[len] = 0;
    }
    free(seq), free(id), free(label);
    return st;
}

ssm_status sc_set_read(const char *path, int labels_required, sc_set *out) {
    memset(out, 0, sizeof *out);
    if (!(out->path = strdup(path))) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    FILE *f = fopen(path, "rb");
    if (!f) {
        sc_set_free(out);
        return ssm_set_error(SSM_ERR_IO, "%s: cannot open", path);
    }
    char *text = NULL;
    size_t size = 0, cap = 0, got;
    do {
        if (size + 65536 > cap) {
            char *t = realloc(text, cap = 2 * cap + 65536);
            if (!t) {
                free(text), fclose(f), sc_set_free(out);
                return ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", path);
            }
            text = t;
        }
        got = fread(text + size, 1, cap - size, f);
        size += got;
    } while (got);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(text), sc_set_free(out);
        return ssm_set_error(SSM_ERR_IO, "%s: read error", path);
    }
    reader r = {.s = out, .labels_required = labels_required};
    size_t first = 0;
    while (first < size && (is_space(text[first]) || text[first] == '\n')) first++;
    ssm_status st = first < size && text[first] == '>' ? read_fasta(&r, text, size) : read_tsv(&r, text, size);
    free(text);
    if (!st && out->n == 0) st = ssm_set_error(SSM_ERR_FORMAT, "%s: no sequences", path);
    if (st) sc_set_free(out);
    return st;
}

void sc_set_free(sc_set *s) {
    for (int i = 0; i < s->n; i++) free(s->ids[i]), free(s->seqs[i]), free(s->labels[i]);
    free(s->ids), free(s->seqs), free(s->lens), free(s->labels), free(s->lines), free(s->classes);
    free(s->path);
    memset(s, 0, sizeof *s);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

ssm_status sc_set_label_names(const sc_set *s, const char ***names, int *n) {
    const char **v = malloc((size_t)(s->n ? s->n : 1) * sizeof *v);
    if (!v) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    int k = 0;
    for (int i = 0; i < s->n; i++)
        if (s->labels[i]) v[k++] = s->labels[i];
    qsort(v, (size_t)k, sizeof *v, cmp_str);
    int u = 0;
    for (int i = 0; i < k; i++)
        if (!u || strcmp(v[u - 1], v[i])) v[u++] = v[i];
    *names = v, *n = u;
    return SSM_OK;
}

ssm_status sc_set_classes(sc_set *s, const char *const *names, int n_names, int strict) {
    for (int i = 0; i < s->n; i++) {
        s->classes[i] = -1;
        for (int k = 0; s->labels[i] && k < n_names; k++)
            if (!strcmp(s->labels[i], names[k])) s->classes[i] = k;
        if (s->classes[i] < 0 && strict) {
            char list[512] = "";
            for (int k = 0; k < n_names; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s'%s'", k ? ", " : "", names[k]);
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: the label '%s' is not one of the classes (%s: "
                                 "task.classes)", s->path, s->lines[i], s->labels[i] ? s->labels[i] : "",
                                 list);
        }
    }
    return SSM_OK;
}

void sc_folds(const int32_t *classes, int n, int n_classes, int k, uint64_t seed, int *fold_of) {
    ssm_rng rng;
    ssm_rng_seed(&rng, seed);
    int *order = malloc((size_t)(n ? n : 1) * sizeof *order), next = 0;
    if (!order) { /* no memory for the shuffle: contiguous folds, still a partition */
        for (int i = 0; i < n; i++) fold_of[i] = (int)((int64_t)i * k / n);
        return;
    }
    for (int c = -1; c < n_classes; c++) { /* c = -1: records without a class, dealt too */
        int m = 0;
        for (int i = 0; i < n; i++)
            if (classes[i] == c || (c == -1 && (classes[i] < 0 || classes[i] >= n_classes))) order[m++] = i;
        for (int i = m - 1; i > 0; i--) { /* Fisher-Yates */
            int j = (int)ssm_rng_below(&rng, (uint64_t)i + 1), t = order[i];
            order[i] = order[j], order[j] = t;
        }
        for (int i = 0; i < m; i++) fold_of[order[i]] = next++ % k;
    }
    free(order);
}
