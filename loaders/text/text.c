/* text.c: reading and checking text files (zlib), glob expansion, documents, the validation
 * split and window draws. See text.h for the contract. */
#include "text.h"

#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

/* ---- checks ------------------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at p (n bytes left), or 0 when it is not one. */
static size_t utf8_len(const uint8_t *p, size_t n) {
    uint8_t c = p[0];
    if (c < 0x80) return 1;
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf; /* range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c == 0xe0) len = 3, lo = 0xa0;
    else if (c == 0xed) len = 3, hi = 0x9f; /* no UTF-16 surrogates */
    else if (c >= 0xe1 && c <= 0xef) len = 3;
    else if (c == 0xf0) len = 4, lo = 0x90;
    else if (c >= 0xf1 && c <= 0xf3) len = 4;
    else if (c == 0xf4) len = 4, hi = 0x8f;
    else return 0;
    if (n < len || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf) return 0;
    return len;
}

/* Control bytes that do not occur in text: all below 0x20 but tab, LF, VT, FF, CR and ESC, and
 * DEL. NUL is handled apart. */
static int odd_control(uint8_t c) {
    return (c < 0x20 && c != '\t' && c != '\n' && c != '\v' && c != '\f' && c != '\r' && c != 0x1b) ||
           c == 0x7f;
}

ssm_status text_check(const char *path, const uint8_t *data, size_t len) {
    size_t odd = 0, first_odd = SIZE_MAX;
    int blank = 1;
    for (size_t i = 0; i < len;) {
        uint8_t c = data[i];
        if (c == 0)
            return ssm_set_error(SSM_ERR_FORMAT, "%s: looks binary (byte 0x00 at offset %zu); the text "
                                 "task reads UTF-8 text", path, i);
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\v' && c != '\f') blank = 0;
        size_t l = utf8_len(data + i, len - i);
        if (!l || odd_control(c)) {
            if (first_odd == SIZE_MAX) first_odd = i;
            odd++;
            l = 1;
        }
        i += l;
    }
    if (len == 0 || blank)
        return ssm_set_error(SSM_ERR_FORMAT, "%s: %s; the text task needs text to read", path,
                             len ? "holds only white space" : "empty file");
    if (odd > TEXT_MAX_ODD_FRACTION * (double)len)
        return ssm_set_error(SSM_ERR_FORMAT, "%s: looks binary (byte 0x%02x at offset %zu; %.1f%% of its "
                             "bytes are not UTF-8 text); the text task reads UTF-8 text", path,
                             data[first_odd], first_odd, 100.0 * (double)odd / (double)len);
    return SSM_OK;
}

/* ---- reading ----------------------------------------------------------------------------- */

ssm_status text_read_file(const char *path, uint8_t **data, size_t *len) {
    *data = NULL;
    *len = 0;
    int is_stdin = !strcmp(path, "-");
    const char *name = is_stdin ? "standard input" : path;
    gzFile gz;
    if (is_stdin) {
        int fd = dup(STDIN_FILENO);
        gz = fd < 0 ? NULL : gzdopen(fd, "rb");
        if (!gz && fd >= 0) close(fd);
    } else {
        gz = gzopen(path, "rb");
    }
    if (!gz) {
        int e = errno;
        return ssm_set_error(SSM_ERR_IO, "%s: cannot open: %s", name, e ? strerror(e) : "out of memory");
    }
    gzbuffer(gz, 1 << 17);
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap + 1);
    ssm_status s = SSM_OK;
    if (!buf) {
        s = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", name);
        goto done;
    }
    for (;;) {
        if (cap - n < (1 << 16)) {
            if (cap > SIZE_MAX / 4) {
                s = ssm_set_error(SSM_ERR_NOMEM, "%s: too large to hold in memory", name);
                goto done;
            }
            uint8_t *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                s = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory after %zu bytes (the text task "
                                  "holds its files in memory)", name, n);
                goto done;
            }
            buf = nb;
            cap *= 2;
        }
        size_t want = cap - n;
        if (want > INT_MAX / 2) want = INT_MAX / 2;
        int got = gzread(gz, buf + n, (unsigned)want);
        if (got < 0) {
            int err;
            const char *msg = gzerror(gz, &err);
            s = ssm_set_error(err == Z_ERRNO ? SSM_ERR_IO : SSM_ERR_FORMAT, "%s: cannot read after %zu "
                              "bytes: %s", name, n, err == Z_ERRNO ? strerror(errno) : msg);
            goto done;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    /* zlib reports a gzip stream cut short only through gzerror once the end is reached */
    int err;
    const char *msg = gzerror(gz, &err);
    if (err != Z_OK) {
        s = ssm_set_error(SSM_ERR_FORMAT, "%s: truncated or corrupt gzip data after %zu bytes (%s)",
                          name, n, msg);
        goto done;
    }
    buf[n] = 0;
    if (n >= 3 && buf[0] == 0xef && buf[1] == 0xbb && buf[2] == 0xbf) {
        memmove(buf, buf + 3, n - 3 + 1);
        n -= 3;
    }
    if ((s = text_check(name, buf, n))) goto done;
    *data = buf;
    *len = n;
    buf = NULL;
done:
    free(buf);
    gzclose(gz);
    return s;
}

/* ---- globs ------------------------------------------------------------------------------- */

void text_paths_free(char **paths) {
    if (!paths) return;
    for (char **p = paths; *p; p++) free(*p);
    free(paths);
}

static int has_pattern(const char *s) { return strpbrk(s, "*?[") != NULL; }

ssm_status text_glob(const char *const *patterns, int n, char ***paths, int *n_paths) {
    *paths = NULL;
    *n_paths = 0;
    size_t cap = 16, count = 0;
    char **out = calloc(cap + 1, sizeof *out);
    if (!out) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        const char *pat = patterns[i];
        if (!pat || !*pat) {
            text_paths_free(out);
            return ssm_set_error(SSM_ERR_ARG, "an empty file name or pattern");
        }
        glob_t g;
        memset(&g, 0, sizeof g);
        size_t found;
        const char *single[1] = {pat};
        char **list;
        if (has_pattern(pat) && strcmp(pat, "-")) {
            int rc = glob(pat, GLOB_ERR, NULL, &g);
            if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
                globfree(&g);
                text_paths_free(out);
                return ssm_set_error(SSM_ERR_MISSING, "no file matches '%s'", pat);
            }
            if (rc) {
                int e = errno;
                globfree(&g);
                text_paths_free(out);
                return ssm_set_error(rc == GLOB_NOSPACE ? SSM_ERR_NOMEM : SSM_ERR_IO, "cannot expand '%s': %s",
                                     pat, rc == GLOB_NOSPACE ? "out of memory" : strerror(e));
            }
            found = g.gl_pathc; /* glob(3) sorts its matches */
            list = g.gl_pathv;
        } else {
            found = 1;
            list = (char **)single;
        }
        for (size_t j = 0; j < found; j++) {
            int dup = 0;
            for (size_t k = 0; k < count && !dup; k++) dup = !strcmp(out[k], list[j]);
            if (dup) continue;
            if (count == cap) {
                char **nb = realloc(out, (cap * 2 + 1) * sizeof *out);
                if (!nb) {
                    globfree(&g);
                    text_paths_free(out);
                    return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
                }
                out = nb;
                cap *= 2;
            }
            out[count] = strdup(list[j]);
            out[++count] = NULL;
            if (!out[count - 1]) {
                globfree(&g);
                text_paths_free(out);
                return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
            }
        }
        if (list != (char **)single) globfree(&g);
    }
    *paths = out;
    *n_paths = (int)count;
    return SSM_OK;
}

/* ---- the set ----------------------------------------------------------------------------- */

typedef struct text_file {
    char *path;
    uint8_t *data;
    size_t len;
    int valid; /* a validation file (data.valid) */
} text_file;

/* A document: [start, end) of a file. */
typedef struct text_doc {
    int file;
    size_t start, end;
} text_doc;

typedef struct split_segs {
    text_segment *seg;
    int n, cap;
    size_t *cum; /* (n) cumulative positions (length + starts + ends) up to and with segment i */
    size_t bytes;
} split_segs;

struct text_set {
    text_file *files;
    int n_files;
    text_doc *docs;
    int n_docs, cap_docs;
    split_segs split[2];
};

text_set_options text_set_options_default(void) {
    text_set_options o = {0.05, TEXT_DOCS_FILE, TEXT_VALID_TAIL};
    return o;
}

static int add_doc(text_set *s, int file, size_t start, size_t end) {
    if (s->n_docs == s->cap_docs) {
        int cap = s->cap_docs ? s->cap_docs * 2 : 64;
        text_doc *nd = realloc(s->docs, (size_t)cap * sizeof *nd);
        if (!nd) return -1;
        s->docs = nd;
        s->cap_docs = cap;
    }
    s->docs[s->n_docs++] = (text_doc){file, start, end};
    return 0;
}

static int add_seg(text_set *s, ssm_split split, int file, size_t start, size_t end, int starts, int ends) {
    split_segs *ss = &s->split[split];
    if (end <= start) return 0;
    if (ss->n == ss->cap) {
        int cap = ss->cap ? ss->cap * 2 : 64;
        text_segment *ns = realloc(ss->seg, (size_t)cap * sizeof *ns);
        if (!ns) return -1;
        ss->seg = ns;
        ss->cap = cap;
    }
    const text_file *f = &s->files[file];
    ss->seg[ss->n++] = (text_segment){file, start, f->data + start, end - start, starts, ends};
    ss->bytes += end - start;
    return 0;
}

/* Is the line [a, b) (without its '\n') blank? */
static int blank_line(const uint8_t *p, size_t a, size_t b) {
    for (size_t i = a; i < b; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r') return 0;
    return 1;
}

/* Cut file f into documents. */
static int find_docs(text_set *s, int f, text_docs mode) {
    const text_file *tf = &s->files[f];
    if (mode == TEXT_DOCS_FILE) return add_doc(s, f, 0, tf->len);
    size_t doc_start = 0;
    int in_doc = 0;
    for (size_t a = 0; a < tf->len;) {
        const uint8_t *nl = memchr(tf->data + a, '\n', tf->len - a);
        size_t b = nl ? (size_t)(nl - tf->data) : tf->len; /* line is [a, b) */
        size_t next = nl ? b + 1 : tf->len;
        if (blank_line(tf->data, a, b)) {
            if (in_doc && add_doc(s, f, doc_start, a)) return -1;
            in_doc = 0;
        } else if (!in_doc) {
            doc_start = a;
            in_doc = 1;
        }
        a = next;
    }
    if (in_doc && add_doc(s, f, doc_start, tf->len)) return -1;
    return 0;
}

static uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

typedef struct doc_rank {
    uint64_t hash;
    int doc;
} doc_rank;

static int cmp_rank(const void *a, const void *b) {
    const doc_rank *x = a, *y = b;
    if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
    return x->doc - y->doc;
}

/* Where the validation tail of a file of len bytes starts. */
static size_t tail_cut(const uint8_t *p, size_t len, double fraction) {
    size_t tail = (size_t)(fraction * (double)len);
    if (tail == 0) return len;
    size_t cut = len - tail;
    if (cut == 0) return 0;
    const uint8_t *nl = memchr(p + cut - 1, '\n', len - (cut - 1));
    if (nl) return (size_t)(nl - p) + 1; /* the start of the line after the cut point */
    while (cut < len && (p[cut] & 0xc0) == 0x80) cut++; /* one long line: a character boundary */
    return cut;
}

static ssm_status nomem(void) { return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the text set"); }

static ssm_status split_docs(text_set *s, const text_set_options *opt, int have_valid_files) {
    if (have_valid_files) {
        for (int d = 0; d < s->n_docs; d++) {
            const text_doc *doc = &s->docs[d];
            if (add_seg(s, s->files[doc->file].valid ? SSM_SPLIT_VALID : SSM_SPLIT_TRAIN, doc->file,
                        doc->start, doc->end, 1, 1))
                return nomem();
        }
        return SSM_OK;
    }
    if (opt->valid_fraction <= 0) {
        for (int d = 0; d < s->n_docs; d++)
            if (add_seg(s, SSM_SPLIT_TRAIN, s->docs[d].file, s->docs[d].start, s->docs[d].end, 1, 1))
                return nomem();
        return SSM_OK;
    }
    if (opt->valid_split == TEXT_VALID_TAIL) {
        for (int f = 0; f < s->n_files; f++) {
            const text_file *tf = &s->files[f];
            size_t cut = tail_cut(tf->data, tf->len, opt->valid_fraction);
            for (int d = 0; d < s->n_docs; d++) {
                const text_doc *doc = &s->docs[d];
                if (doc->file != f) continue;
                if (doc->end <= cut) {
                    if (add_seg(s, SSM_SPLIT_TRAIN, f, doc->start, doc->end, 1, 1)) return nomem();
                } else if (doc->start >= cut) {
                    if (add_seg(s, SSM_SPLIT_VALID, f, doc->start, doc->end, 1, 1)) return nomem();
                } else if (add_seg(s, SSM_SPLIT_TRAIN, f, doc->start, cut, 1, 0) ||
                           add_seg(s, SSM_SPLIT_VALID, f, cut, doc->end, 0, 1)) {
                    return nomem();
                }
            }
        }
        return SSM_OK;
    }
    /* whole documents, in hash order, until valid_fraction of the bytes */
    if (s->n_docs < 2)
        return ssm_set_error(SSM_ERR_ARG, "valid_split: documents needs at least two documents, and %s "
                             "holds one (use valid_split: tail, documents: blank_lines, more files, or "
                             "data.valid)", s->files[0].path);
    doc_rank *rank = malloc((size_t)s->n_docs * sizeof *rank);
    uint8_t *is_valid = calloc((size_t)s->n_docs, 1);
    if (!rank || !is_valid) return free(rank), free(is_valid), nomem();
    size_t total = 0;
    for (int d = 0; d < s->n_docs; d++) {
        const text_doc *doc = &s->docs[d];
        rank[d] = (doc_rank){fnv1a(s->files[doc->file].data + doc->start, doc->end - doc->start), d};
        total += doc->end - doc->start;
    }
    qsort(rank, (size_t)s->n_docs, sizeof *rank, cmp_rank);
    size_t want = (size_t)(opt->valid_fraction * (double)total), got = 0;
    for (int i = 0; i < s->n_docs - 1 && (i == 0 || got < want); i++) {
        const text_doc *doc = &s->docs[rank[i].doc];
        is_valid[rank[i].doc] = 1;
        got += doc->end - doc->start;
    }
    ssm_status st = SSM_OK;
    for (int d = 0; d < s->n_docs && !st; d++)
        if (add_seg(s, is_valid[d] ? SSM_SPLIT_VALID : SSM_SPLIT_TRAIN, s->docs[d].file, s->docs[d].start,
                    s->docs[d].end, 1, 1))
            st = nomem();
    free(rank);
    free(is_valid);
    return st;
}

static ssm_status open_files(text_set *s, const char *const *patterns, int n, int valid) {
    char **paths;
    int np;
    ssm_status st = text_glob(patterns, n, &paths, &np);
    if (st) return st;
    text_file *nf = realloc(s->files, (size_t)(s->n_files + np) * sizeof *nf);
    if (!nf) return text_paths_free(paths), nomem();
    s->files = nf;
    for (int i = 0; i < np && !st; i++) {
        for (int j = 0; j < s->n_files; j++)
            if (!strcmp(s->files[j].path, paths[i])) {
                st = ssm_set_error(SSM_ERR_ARG, "%s is named both for training and for validation",
                                   paths[i]);
                break;
            }
        if (st) break;
        text_file *f = &s->files[s->n_files];
        memset(f, 0, sizeof *f);
        f->valid = valid;
        if (!(f->path = strdup(paths[i]))) {
            st = nomem();
            break;
        }
        s->n_files++;
        st = text_read_file(paths[i], &f->data, &f->len);
    }
    text_paths_free(paths);
    return st;
}

ssm_status text_set_open(const char *const *train, int n_train, const char *const *valid, int n_valid,
                         const text_set_options *opt_in, text_set **out) {
    *out = NULL;
    text_set_options opt = opt_in ? *opt_in : text_set_options_default();
    if (!(opt.valid_fraction >= 0 && opt.valid_fraction <= 0.5))
        return ssm_set_error(SSM_ERR_ARG, "valid_fraction must be in [0, 0.5], got %g", opt.valid_fraction);
    if (n_train < 1) return ssm_set_error(SSM_ERR_MISSING, "no training files given");
    text_set *s = calloc(1, sizeof *s);
    if (!s) return nomem();
    ssm_status st = open_files(s, train, n_train, 0);
    if (!st && n_valid > 0) st = open_files(s, valid, n_valid, 1);
    for (int f = 0; f < s->n_files && !st; f++)
        if (find_docs(s, f, opt.documents)) st = nomem();
    if (!st) st = split_docs(s, &opt, n_valid > 0);
    if (!st && s->split[SSM_SPLIT_TRAIN].n == 0)
        st = ssm_set_error(SSM_ERR_MISSING, "no training text left in %s after the validation split",
                           s->files[0].path);
    if (!st && s->split[SSM_SPLIT_VALID].n == 0 && (n_valid > 0 || opt.valid_fraction > 0))
        st = ssm_set_error(SSM_ERR_MISSING, "no validation text: the last %g of %s%s is empty (give a larger "
                           "valid_fraction, longer files or data.valid)", opt.valid_fraction,
                           s->files[0].path, s->n_files > 1 ? " and the other files" : "");
    for (int k = 0; k < 2 && !st; k++) {
        split_segs *ss = &s->split[k];
        if (!ss->n) continue;
        if (!(ss->cum = malloc((size_t)ss->n * sizeof *ss->cum))) {
            st = nomem();
            break;
        }
        size_t c = 0;
        for (int i = 0; i < ss->n; i++) {
            c += ss->seg[i].length + (size_t)ss->seg[i].starts + (size_t)ss->seg[i].ends;
            ss->cum[i] = c;
        }
    }
    if (st) {
        text_set_free(s);
        return st;
    }
    *out = s;
    return SSM_OK;
}

void text_set_free(text_set *s) {
    if (!s) return;
    for (int f = 0; f < s->n_files; f++) {
        free(s->files[f].path);
        free(s->files[f].data);
    }
    free(s->files);
    free(s->docs);
    for (int k = 0; k < 2; k++) {
        free(s->split[k].seg);
        free(s->split[k].cum);
    }
    free(s);
}

int text_set_n_files(const text_set *s) { return s->n_files; }
const char *text_set_file_path(const text_set *s, int file) { return s->files[file].path; }
size_t text_set_file_size(const text_set *s, int file) { return s->files[file].len; }
int text_set_n_documents(const text_set *s) { return s->n_docs; }
int text_set_n_segments(const text_set *s, ssm_split split) { return s->split[split].n; }
const text_segment *text_set_segment(const text_set *s, ssm_split split, int i) {
    return &s->split[split].seg[i];
}
size_t text_set_split_bytes(const text_set *s, ssm_split split) { return s->split[split].bytes; }

ssm_status text_set_draw(const text_set *s, ssm_split split, size_t width, ssm_rng *rng, int *segment,
                         size_t *start) {
    const split_segs *ss = &s->split[split];
    if (!ss->n)
        return ssm_set_error(SSM_ERR_MISSING, "the %s split holds no text",
                             split == SSM_SPLIT_VALID ? "validation" : "training");
    uint64_t u = ssm_rng_below(rng, ss->cum[ss->n - 1]);
    int lo = 0, hi = ss->n - 1; /* the first segment whose cum > u */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (ss->cum[mid] > u) hi = mid;
        else lo = mid + 1;
    }
    const text_segment *g = &ss->seg[lo];
    size_t n = g->length + (size_t)g->starts + (size_t)g->ends;
    *segment = lo;
    *start = n > width ? (size_t)ssm_rng_below(rng, n - width + 1) : 0;
    return SSM_OK;
}
