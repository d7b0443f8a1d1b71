/* fasta.c: FASTA/FASTQ reading (htslib's BGZF, which reads plain, gzip and bgzip alike),
 * validation, faidx random access, training/validation regions and window draws.
 * See fasta.h for the contract. */
#include "fasta.h"

#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <htslib/bgzf.h>
#include <htslib/faidx.h>
#include <htslib/hts_log.h>
#include <htslib/khash.h>
#include <htslib/kstring.h>

KHASH_MAP_INIT_STR(fasta_names, int64_t)

/* ---- bytes ------------------------------------------------------------------------------- */

int fasta_is_base(int c) {
    switch (c) {
    case 'A': case 'C': case 'G': case 'T': case 'U': case 'R': case 'Y': case 'S': case 'W':
    case 'K': case 'M': case 'B': case 'D': case 'H': case 'V': case 'N':
    case 'a': case 'c': case 'g': case 't': case 'u': case 'r': case 'y': case 's': case 'w':
    case 'k': case 'm': case 'b': case 'd': case 'h': case 'v': case 'n':
        return 1;
    default:
        return 0;
    }
}

/* "'x' (0x78)" or "0x01" for a byte that does not print, into buf. */
static const char *show_byte(int c, char *buf, size_t size) {
    if (c > 0x20 && c < 0x7f) snprintf(buf, size, "'%c' (0x%02x)", c, c);
    else snprintf(buf, size, "0x%02x", c & 0xff);
    return buf;
}

/* A line is text when it holds no control bytes other than tab (carriage returns are gone). */
static int is_text(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) return 0;
    }
    return 1;
}

/* Printable ASCII and tabs only. */
static int is_ascii_text(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c >= 0x7f) return 0;
    }
    return 1;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
    return 1;
}

/* ---- streaming reader -------------------------------------------------------------------- */

struct fasta_reader {
    char *path;
    BGZF *fp;
    int format;          /* '>' or '@' once known */
    int store;           /* keep the bases (and qualities) */
    int check_dups;      /* remember names and refuse a repeat */
    kstring_t line;      /* the current line, without its end of line */
    int pending;         /* line holds the next record's header, not consumed yet */
    int64_t line_no;
    int64_t n_records;
    kstring_t name, seq, qual;
    khash_t(fasta_names) *names;
};

/* htslib reports on stderr; we report through ssm_set_error instead, so keep it quiet around
 * the calls that can fail on bad input. */
static enum htsLogLevel quiet_begin(void) {
    enum htsLogLevel level = hts_get_log_level();
    hts_set_log_level(HTS_LOG_OFF);
    return level;
}
static void quiet_end(enum htsLogLevel level) { hts_set_log_level(level); }

/* 1: a line was read; 0: end of file; -1: error (message set). */
static int read_line(fasta_reader *r) {
    enum htsLogLevel level = quiet_begin();
    int ret = bgzf_getline(r->fp, '\n', &r->line);
    quiet_end(level);
    if (ret == -1 && bgzf_compression(r->fp) == 2 && !r->fp->last_block_eof) {
        /* a bgzip stream ends with an empty block: without it (stdin, where the end could not
         * be checked at open) the data was cut short at a block boundary */
        ssm_set_error(SSM_ERR_FORMAT, "%s: truncated bgzip data (its end-of-file block is missing "
                      "after %lld lines)", r->path, (long long)r->line_no);
        return -1;
    }
    if (ret == -1) return 0;
    if (ret < -1) {
        int c = bgzf_compression(r->fp);
        ssm_set_error(SSM_ERR_FORMAT, "%s: truncated or corrupt %s (read error after %lld complete "
                      "lines)", r->path, c == 2 ? "bgzip data" : c ? "gzip data" : "file",
                      (long long)r->line_no);
        return -1;
    }
    r->line_no++;
    while (r->line.l && r->line.s[r->line.l - 1] == '\r') r->line.s[--r->line.l] = 0; /* CRLF */
    return 1;
}

ssm_status fasta_reader_open(const char *path, fasta_reader **out) {
    *out = NULL;
    if (!path || !*path) return ssm_set_error(SSM_ERR_ARG, "fasta_reader_open: no file name");
    struct stat st;
    if (strcmp(path, "-") != 0) {
        if (stat(path, &st) != 0)
            return ssm_set_error(SSM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        if (S_ISDIR(st.st_mode))
            return ssm_set_error(SSM_ERR_IO, "%s: is a folder, not a FASTA or FASTQ file", path);
    }
    fasta_reader *r = calloc(1, sizeof *r);
    if (!r) return ssm_set_error(SSM_ERR_NOMEM, "out of memory opening %s", path);
    r->path = strdup(path);
    r->store = 1;
    r->check_dups = 1;
    r->names = kh_init(fasta_names);
    if (!r->path || !r->names) {
        fasta_reader_close(r);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory opening %s", path);
    }
    errno = 0;
    enum htsLogLevel level = quiet_begin();
    r->fp = bgzf_open(path, "r");
    quiet_end(level);
    if (!r->fp) {
        ssm_status s = ssm_set_error(SSM_ERR_IO, "%s: cannot open: %s", path,
                                     errno ? strerror(errno) : "unreadable or corrupt compressed data");
        fasta_reader_close(r);
        return s;
    }
    /* A bgzip file ends with an empty block; without it the file was cut short. */
    if (bgzf_compression(r->fp) == 2 && bgzf_check_EOF(r->fp) == 0) {
        fasta_reader_close(r);
        return ssm_set_error(SSM_ERR_FORMAT, "%s: truncated bgzip file (its end-of-file block is "
                             "missing): was it copied completely?", path);
    }
    *out = r;
    return SSM_OK;
}

void fasta_reader_store(fasta_reader *r, int store_seq) { r->store = store_seq; }
int fasta_reader_format(const fasta_reader *r) { return r->format; }

void fasta_reader_close(fasta_reader *r) {
    if (!r) return;
    if (r->fp) bgzf_close(r->fp);
    if (r->names) {
        for (khint_t k = kh_begin(r->names); k != kh_end(r->names); k++)
            if (kh_exist(r->names, k)) free((char *)kh_key(r->names, k));
        kh_destroy(fasta_names, r->names);
    }
    free(r->line.s);
    free(r->name.s);
    free(r->seq.s);
    free(r->qual.s);
    free(r->path);
    free(r);
}

/* Append the bases of the current line to r->seq (when storing); count them into *n. */
static ssm_status take_bases(fasta_reader *r, size_t *n) {
    const char *s = r->line.s;
    size_t len = r->line.l;
    if (r->store && ks_resize(&r->seq, r->seq.l + len + 1) != 0)
        return ssm_set_error(SSM_ERR_NOMEM, "%s:%lld: out of memory reading record '%s'", r->path,
                             (long long)r->line_no, r->name.s);
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)s[i];
        if (fasta_is_base(c)) {
            if (r->store) r->seq.s[r->seq.l++] = (char)c;
            (*n)++;
        } else if (c == ' ' || c == '\t' || c == '\r') {
            continue;
        } else {
            char b[32];
            if (r->format == '@' && c == '@' && i == 0)
                return ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: record '%s' has no '+' line between "
                                     "its sequence and the next header", r->path,
                                     (long long)r->line_no, r->name.s);
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: record '%s': byte %s at column %zu is not "
                                 "a nucleotide code (A C G T N, or IUPAC U R Y S W K M B D H V)",
                                 r->path, (long long)r->line_no, r->name.s,
                                 show_byte(c, b, sizeof b), i + 1);
        }
    }
    if (r->store) r->seq.s[r->seq.l] = 0;
    return SSM_OK;
}

static ssm_status take_quality(fasta_reader *r, size_t *n) {
    const char *s = r->line.s;
    for (size_t i = 0; i < r->line.l; i++) {
        int c = (unsigned char)s[i];
        if (c < '!' || c > '~') {
            char b[32];
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: record '%s': byte %s at column %zu is not a "
                                 "FASTQ quality character ('!' to '~')", r->path, (long long)r->line_no,
                                 r->name.s, show_byte(c, b, sizeof b), i + 1);
        }
    }
    if (r->store && kputsn(s, r->line.l, &r->qual) < 0)
        return ssm_set_error(SSM_ERR_NOMEM, "%s:%lld: out of memory", r->path, (long long)r->line_no);
    *n += r->line.l;
    return SSM_OK;
}

ssm_status fasta_reader_next(fasta_reader *r, fasta_entry *e, int *done) {
    memset(e, 0, sizeof *e);
    *done = 0;
    int k;
    /* the header */
    if (!r->pending) {
        for (;;) {
            if ((k = read_line(r)) < 0) return SSM_ERR_FORMAT;
            if (k == 0) {
                if (r->n_records == 0)
                    return ssm_set_error(SSM_ERR_FORMAT, "%s: not a FASTA or FASTQ file: it holds no "
                                         "record (the file is empty)", r->path);
                *done = 1;
                return SSM_OK;
            }
            if (!is_blank(r->line.s, r->line.l)) break;
        }
    }
    r->pending = 0;
    const char *s = r->line.s;
    if (!r->format) {
        if (s[0] == '>' || s[0] == '@') {
            r->format = s[0];
        } else if (!is_ascii_text(s, r->line.l)) {
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: not a FASTA or FASTQ file (binary data)",
                                 r->path, (long long)r->line_no);
        } else {
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: not a FASTA or FASTQ file: a FASTA record "
                                 "starts with '>' and a FASTQ record with '@', this line starts with "
                                 "'%.20s'", r->path, (long long)r->line_no, s);
        }
    }
    if (s[0] != r->format) /* only FASTQ gets here: FASTA reads sequence up to the next '>' */
        return ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: expected a FASTQ header starting with '@', got "
                             "'%.20s' (is the previous record's quality longer than its sequence?)",
                             r->path, (long long)r->line_no, s);
    if (!is_text(s, r->line.l))
        return ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: the header holds binary data", r->path,
                             (long long)r->line_no);
    /* the name: the first word after the marker (leading blanks skipped, as faidx does) */
    size_t i = 1;
    while (i < r->line.l && (s[i] == ' ' || s[i] == '\t')) i++;
    size_t j = i;
    while (j < r->line.l && s[j] != ' ' && s[j] != '\t') j++;
    if (j == i)
        return ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: header with no name (write the record's name "
                             "right after '%c')", r->path, (long long)r->line_no, r->format);
    r->name.l = 0;
    if (kputsn(s + i, j - i, &r->name) < 0) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    int64_t header_line = r->line_no;
    r->seq.l = 0;
    r->qual.l = 0;
    if (r->store && ks_resize(&r->seq, 1) == 0) r->seq.s[0] = 0;
    if (r->store && ks_resize(&r->qual, 1) == 0) r->qual.s[0] = 0;
    size_t n = 0;
    int seq_lines = 0, saw_plus = 0;
    ssm_status st;
    /* the sequence */
    for (;;) {
        if ((k = read_line(r)) < 0) return SSM_ERR_FORMAT;
        if (k == 0) break;
        if (r->format == '>' && r->line.s[0] == '>') {
            r->pending = 1;
            break;
        }
        if (r->format == '@' && r->line.s[0] == '+') {
            saw_plus = 1;
            break;
        }
        if (r->line.l == 0) continue;
        if ((st = take_bases(r, &n))) return st;
        seq_lines++;
    }
    if (r->format == '@' && !saw_plus)
        return ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: record '%s' ends without its '+' line and "
                             "quality (truncated FASTQ?)", r->path, (long long)r->line_no, r->name.s);
    if (n == 0)
        return ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: record '%s' is empty (no bases after its "
                             "header)", r->path, (long long)header_line, r->name.s);
    /* the quality: one line after a one-line sequence, else lines until it is long enough */
    if (r->format == '@') {
        size_t q = 0;
        int eof = 0;
        for (;;) {
            if ((k = read_line(r)) < 0) return SSM_ERR_FORMAT;
            if (k == 0) {
                eof = 1;
                break;
            }
            if ((st = take_quality(r, &q))) return st;
            if (q >= n || seq_lines <= 1) break;
        }
        if (q != n)
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: record '%s': its quality has %zu characters "
                                 "but its sequence has %zu bases%s", r->path, (long long)r->line_no,
                                 r->name.s, q, n, eof ? " (truncated FASTQ?)" : "");
    }
    if (r->check_dups) {
        int absent;
        char *key = strdup(r->name.s);
        if (!key) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        khint_t it = kh_put(fasta_names, r->names, key, &absent);
        if (absent < 0) {
            free(key);
            return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        }
        if (!absent) {
            free(key);
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: duplicate record name '%s' (first seen at "
                                 "line %lld)", r->path, (long long)header_line, r->name.s,
                                 (long long)kh_val(r->names, it));
        }
        kh_val(r->names, it) = header_line;
    }
    r->n_records++;
    e->name = r->name.s;
    e->length = n;
    e->line = header_line;
    e->seq = r->store ? r->seq.s : NULL;
    e->qual = (r->store && r->format == '@') ? r->qual.s : NULL;
    return SSM_OK;
}

/* ---- training set ------------------------------------------------------------------------ */

typedef struct fasta_file {
    char *path;
    int is_valid;         /* a validation file: all its records go to the validation split */
    fasta_access access;
    faidx_t *fai;
    char *mem;            /* FASTA_ACCESS_MEMORY: the bases of all its records back to back */
    size_t mem_len, mem_cap;
} fasta_file;

typedef struct region_split {
    fasta_region *r;
    int n, cap;
    int64_t *cum;         /* (n) cumulative lengths, for weighted draws */
    int64_t bases;
} region_split;

struct fasta_set {
    fasta_file *files;
    int n_files;
    fasta_record *records;
    int64_t *mem_off;     /* (n_records) offset into the file's mem, or -1 */
    int64_t *line;        /* (n_records) header line, for messages (0 when read from a .fai) */
    int n_records, cap_records;
    int write_index;      /* may write .fai/.gzi beside the data */
    khash_t(fasta_names) *names; /* name -> record index */
    region_split split[2];
};

fasta_set_options fasta_set_options_default(void) {
    fasta_set_options o = {.valid_fraction = 0.05, .bed = NULL, .write_index = 1};
    return o;
}

static ssm_status add_record(fasta_set *set, int file, const char *name, int64_t length,
                             int64_t line) {
    if (set->n_records == set->cap_records) {
        int cap = set->cap_records ? set->cap_records * 2 : 64;
        fasta_record *r = realloc(set->records, (size_t)cap * sizeof *r);
        if (r) set->records = r;
        int64_t *m = realloc(set->mem_off, (size_t)cap * sizeof *m);
        if (m) set->mem_off = m;
        int64_t *l = realloc(set->line, (size_t)cap * sizeof *l);
        if (l) set->line = l;
        if (!r || !m || !l) return ssm_set_error(SSM_ERR_NOMEM, "out of memory indexing records");
        set->cap_records = cap;
    }
    if (set->n_records == INT_MAX - 1)
        return ssm_set_error(SSM_ERR_ARG, "too many records (more than %d)", INT_MAX - 1);
    char *key = strdup(name);
    if (!key) return ssm_set_error(SSM_ERR_NOMEM, "out of memory indexing records");
    int absent;
    khint_t it = kh_put(fasta_names, set->names, key, &absent);
    if (absent < 0) {
        free(key);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory indexing records");
    }
    if (!absent) {
        free(key);
        int prev = (int)kh_val(set->names, it);
        char where[64] = "";
        if (set->line[prev]) snprintf(where, sizeof where, ":%lld", (long long)set->line[prev]);
        char here[64] = "";
        if (line) snprintf(here, sizeof here, ":%lld", (long long)line);
        return ssm_set_error(SSM_ERR_FORMAT, "%s%s: duplicate record name '%s' (also in %s%s): record "
                             "names must be unique across the data files", set->files[file].path, here,
                             name, set->files[set->records[prev].file].path, where);
    }
    kh_val(set->names, it) = set->n_records;
    fasta_record *r = &set->records[set->n_records];
    r->name = kh_key(set->names, it);
    r->length = length;
    r->file = file;
    set->mem_off[set->n_records] = -1;
    set->line[set->n_records] = line;
    set->n_records++;
    return SSM_OK;
}

/* Read every record of a file, checking it; with store, keep the bases in file->mem. */
static ssm_status scan_file(fasta_set *set, int fi, int store) {
    fasta_file *f = &set->files[fi];
    fasta_reader *rd;
    ssm_status s = fasta_reader_open(f->path, &rd);
    if (s) return s;
    fasta_reader_store(rd, store);
    rd->check_dups = 0; /* the set checks names across all its files */
    for (;;) {
        fasta_entry e;
        int done;
        if ((s = fasta_reader_next(rd, &e, &done)) || done) break;
        if (store) {
            if (f->mem_len + e.length + 1 > f->mem_cap) {
                size_t cap = f->mem_cap ? f->mem_cap : 1 << 20;
                while (cap < f->mem_len + e.length + 1) cap *= 2;
                char *m = realloc(f->mem, cap);
                if (!m) {
                    s = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory holding its bases (%zu bytes): "
                                      "a plain gzip file is held in memory because it cannot be "
                                      "indexed; recompress it with bgzip", f->path, cap);
                    break;
                }
                f->mem = m;
                f->mem_cap = cap;
            }
            memcpy(f->mem + f->mem_len, e.seq, e.length);
        }
        if ((s = add_record(set, fi, e.name, (int64_t)e.length, e.line))) break;
        if (store) {
            set->mem_off[set->n_records - 1] = (int64_t)f->mem_len;
            f->mem_len += e.length;
        }
    }
    fasta_reader_close(rd);
    return s;
}

static char *cat2(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (s) memcpy(s, a, la), memcpy(s + la, b, lb + 1);
    return s;
}

/* The index files exist and are not older than the data. */
static int index_fresh(const char *path, const char *fai, const char *gzi) {
    struct stat sp, sf, sg;
    if (stat(path, &sp) || stat(fai, &sf)) return 0;
    if (sf.st_mtime < sp.st_mtime) return 0;
    if (gzi && (stat(gzi, &sg) || sg.st_mtime < sp.st_mtime)) return 0;
    return 1;
}

/* Records (names, lengths) of a .fai file, added to the set. */
static ssm_status read_fai(fasta_set *set, int fi, const char *fai_path) {
    FILE *fp = fopen(fai_path, "r");
    if (!fp) return ssm_set_error(SSM_ERR_IO, "%s: cannot open: %s", fai_path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    long long ln = 0;
    ssm_status s = SSM_OK;
    while ((got = getline(&line, &cap, fp)) >= 0) {
        ln++;
        char *tab = strchr(line, '\t');
        char *end = NULL;
        long long len = tab ? strtoll(tab + 1, &end, 10) : -1;
        if (!tab || tab == line || len <= 0 || (*end != '\t' && *end != '\n' && *end)) {
            s = ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: not a faidx index line (delete the file to "
                              "rebuild it)", fai_path, ln);
            break;
        }
        /* OFFSET, LINEBASES, LINEWIDTH: htslib divides by the bases per line when it fetches, and
         * indexes a record whose first line is blanks alone with 0 of them (a fuzzed input) */
        long long col[3] = {0, 0, 0};
        for (int c = 0; c < 3 && *end == '\t'; c++) col[c] = strtoll(end + 1, &end, 10);
        if (col[1] < 1 || col[2] < col[1]) {
            s = ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: %lld bases in lines of %lld bytes: not an index "
                              "faidx can read (delete the file to rebuild it)", fai_path, ln, col[1], col[2]);
            break;
        }
        *tab = 0;
        if ((s = add_record(set, fi, line, len, 0))) break;
    }
    free(line);
    fclose(fp);
    if (!s && ln == 0)
        s = ssm_set_error(SSM_ERR_FORMAT, "%s: empty index (delete it to rebuild it)", fai_path);
    return s;
}

/* Open through faidx with the given index paths; add the records from the .fai. */
static ssm_status load_faidx(fasta_set *set, int fi, const char *fai, const char *gzi) {
    fasta_file *f = &set->files[fi];
    enum htsLogLevel level = quiet_begin();
    f->fai = fai_load3(f->path, fai, gzi, 0);
    quiet_end(level);
    if (!f->fai)
        return ssm_set_error(SSM_ERR_FORMAT, "%s: cannot load its index %s", f->path, fai);
    fai_set_cache_size(f->fai, 32 << 20);
    f->access = FASTA_ACCESS_FAIDX;
    return read_fai(set, fi, fai);
}

/* Drop the records of file fi (they were added last) before adding them another way. */
static void drop_records(fasta_set *set, int fi) {
    while (set->n_records && set->records[set->n_records - 1].file == fi) {
        fasta_record *r = &set->records[--set->n_records];
        khint_t it = kh_get(fasta_names, set->names, r->name);
        if (it != kh_end(set->names)) {
            free((char *)kh_key(set->names, it));
            kh_del(fasta_names, set->names, it);
        }
    }
}

/* Build an index into a private temporary folder, load it, remove the files: the index then
 * lives only in memory (a read-only folder, or a stale index we may not replace). */
static ssm_status faidx_in_memory(fasta_set *set, int fi) {
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/ssm-fai-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) return ssm_set_error(SSM_ERR_IO, "cannot create a temporary folder: %s", strerror(errno));
    char fai[4200], gzi[4200];
    snprintf(fai, sizeof fai, "%s/index.fai", dir);
    snprintf(gzi, sizeof gzi, "%s/index.gzi", dir);
    enum htsLogLevel level = quiet_begin();
    int rc = fai_build3(set->files[fi].path, fai, gzi);
    quiet_end(level);
    ssm_status s = rc == 0 ? load_faidx(set, fi, fai, gzi)
                           : ssm_set_error(SSM_ERR_FORMAT, "faidx cannot index %s", set->files[fi].path);
    unlink(fai);
    unlink(gzi);
    rmdir(dir);
    return s;
}

static ssm_status open_file(fasta_set *set, int fi) {
    fasta_file *f = &set->files[fi];
    struct stat st;
    if (stat(f->path, &st) != 0)
        return ssm_set_error(SSM_ERR_IO, "%s: cannot open: %s", f->path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return ssm_set_error(SSM_ERR_IO, "%s: is a folder, not a FASTA or FASTQ file", f->path);
    enum htsLogLevel level0 = quiet_begin();
    BGZF *fp = bgzf_open(f->path, "r");
    quiet_end(level0);
    if (!fp) return ssm_set_error(SSM_ERR_IO, "%s: cannot open: %s", f->path, strerror(errno));
    int compression = bgzf_compression(fp); /* 0 none, 1 gzip, 2 bgzip */
    bgzf_close(fp);

    /* Plain gzip cannot be indexed (no random access into a deflate stream): hold it in memory. */
    if (compression == 1) {
        f->access = FASTA_ACCESS_MEMORY;
        return scan_file(set, fi, 1);
    }
    char *fai = cat2(f->path, ".fai"), *gzi = cat2(f->path, ".gzi");
    ssm_status s = SSM_OK;
    if (!fai || !gzi) {
        s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        goto done;
    }
    /* An up-to-date index is trusted as it is (the bases are still checked when fetched). */
    if (index_fresh(f->path, fai, compression == 2 ? gzi : NULL)) {
        if (!(s = load_faidx(set, fi, fai, compression == 2 ? gzi : NULL))) goto done;
        drop_records(set, fi);
        if (f->fai) fai_destroy(f->fai), f->fai = NULL;
    }
    /* Check every record once, then index: beside the file if we may write there, else in memory. */
    int first = set->n_records;
    if ((s = scan_file(set, fi, 0))) goto done;
    int n_scanned = set->n_records - first;
    int64_t *lengths = malloc(sizeof(int64_t) * (size_t)(n_scanned + 1));
    if (!lengths) {
        s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < n_scanned; i++) lengths[i] = set->records[first + i].length;
    drop_records(set, fi);
    enum htsLogLevel level = quiet_begin();
    int built = set->write_index && fai_build3(f->path, NULL, NULL) == 0;
    quiet_end(level);
    s = built ? load_faidx(set, fi, fai, compression == 2 ? gzi : NULL) : faidx_in_memory(set, fi);
    /* faidx must agree with what we read; when it cannot index the layout (lines of varying
     * length, blank lines inside a record), hold the bases in memory instead. */
    int agree = !s && set->n_records - first == n_scanned;
    for (int i = first; agree && i < set->n_records; i++) agree = set->records[i].length == lengths[i - first];
    free(lengths);
    if (!agree) {
        if (built) unlink(fai); /* an index that disagrees with the file must not be trusted later */
        drop_records(set, fi);
        if (f->fai) fai_destroy(f->fai), f->fai = NULL;
        f->access = FASTA_ACCESS_MEMORY;
        s = scan_file(set, fi, 1);
    }
done:
    free(fai);
    free(gzi);
    return s;
}

static ssm_status add_region(region_split *sp, int record, int64_t start, int64_t end) {
    if (end <= start) return SSM_OK;
    if (sp->n == sp->cap) {
        int cap = sp->cap ? sp->cap * 2 : 64;
        fasta_region *r = realloc(sp->r, (size_t)cap * sizeof *r);
        if (!r) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        sp->r = r;
        sp->cap = cap;
    }
    sp->r[sp->n++] = (fasta_region){record, start, end};
    return SSM_OK;
}

/* Split a stretch [start, end) of a record: all to one split for a training or validation file
 * when validation files exist, else its last valid_fraction to validation. */
static ssm_status split_stretch(fasta_set *set, int rec, int64_t start, int64_t end, double vf,
                                int have_valid_files) {
    if (have_valid_files) {
        int v = set->files[set->records[rec].file].is_valid;
        return add_region(&set->split[v], rec, start, end);
    }
    int64_t n_valid = (int64_t)((double)(end - start) * vf);
    ssm_status s = add_region(&set->split[SSM_SPLIT_TRAIN], rec, start, end - n_valid);
    return s ? s : add_region(&set->split[SSM_SPLIT_VALID], rec, end - n_valid, end);
}

typedef struct bed_item {
    int split, record;
    int64_t start, end, line;
} bed_item;

static int cmp_bed(const void *a, const void *b) {
    const bed_item *x = a, *y = b;
    if (x->record != y->record) return x->record < y->record ? -1 : 1;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    return (x->line > y->line) - (x->line < y->line);
}

static ssm_status read_bed(fasta_set *set, const char *path, double vf, int have_valid_files) {
    enum htsLogLevel level = quiet_begin();
    BGZF *fp = bgzf_open(path, "r");
    quiet_end(level);
    if (!fp) return ssm_set_error(SSM_ERR_IO, "%s: cannot open the BED file: %s", path, strerror(errno));
    kstring_t line = {0, 0, NULL};
    bed_item *items = NULL;
    size_t n = 0, cap = 0, n_test = 0;
    long long ln = 0;
    ssm_status s = SSM_OK;
    int ret;
    for (;;) {
        level = quiet_begin();
        ret = bgzf_getline(fp, '\n', &line);
        quiet_end(level);
        if (ret < 0) break;
        ln++;
        while (line.l && line.s[line.l - 1] == '\r') line.s[--line.l] = 0;
        char *p = line.s;
        if (is_blank(p, line.l) || p[0] == '#' || !strncmp(p, "track", 5) || !strncmp(p, "browser", 7))
            continue;
        if (!is_text(p, line.l)) {
            s = ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: not a BED file (binary data)", path, ln);
            break;
        }
        char *field[4] = {0};
        int nf = 0;
        char *save = NULL;
        for (char *t = strtok_r(p, "\t ", &save); t && nf < 4; t = strtok_r(NULL, "\t ", &save))
            field[nf++] = t;
        if (nf < 3) {
            s = ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: a BED line needs chrom, start and end (and "
                              "optionally a name: train, valid or test)", path, ln);
            break;
        }
        char *e1, *e2;
        errno = 0;
        long long start = strtoll(field[1], &e1, 10), end = strtoll(field[2], &e2, 10);
        if (errno || *e1 || *e2 || start < 0 || end <= start) {
            s = ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: start '%s' and end '%s' must be integers with "
                              "0 <= start < end (0-based, end excluded)", path, ln, field[1], field[2]);
            break;
        }
        khint_t it = kh_get(fasta_names, set->names, field[0]);
        if (it == kh_end(set->names)) {
            s = ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: '%s' is not the name of a record in the data "
                              "files", path, ln, field[0]);
            break;
        }
        int rec = (int)kh_val(set->names, it);
        if (end > set->records[rec].length) {
            s = ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: end %lld is past the end of '%s' (%lld bases)",
                              path, ln, end, field[0], (long long)set->records[rec].length);
            break;
        }
        int split = -1; /* -1: unnamed, split like a whole record */
        if (field[3]) {
            if (!strcmp(field[3], "train")) split = SSM_SPLIT_TRAIN;
            else if (!strcmp(field[3], "valid") || !strcmp(field[3], "validation")) split = SSM_SPLIT_VALID;
            else if (!strcmp(field[3], "test")) {
                n_test++;
                continue;
            }
            else {
                s = ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: the name column must be train, valid or "
                                  "test, got '%s'", path, ln, field[3]);
                break;
            }
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            bed_item *b = realloc(items, cap * sizeof *b);
            if (!b) {
                s = ssm_set_error(SSM_ERR_NOMEM, "out of memory reading %s", path);
                break;
            }
            items = b;
        }
        items[n++] = (bed_item){split, rec, start, end, ln};
    }
    if (!s && ret < -1)
        s = ssm_set_error(SSM_ERR_FORMAT, "%s: cannot read past line %lld: truncated or corrupt data",
                          path, ln);
    bgzf_close(fp);
    free(line.s);
    if (!s && n + n_test == 0)
        s = ssm_set_error(SSM_ERR_FORMAT, "%s: the BED file holds no interval", path);
    if (!s) {
        if (n) qsort(items, n, sizeof *items, cmp_bed);
        /* a training interval overlapping a validation one would leak validation data */
        int64_t reach[2] = {0, 0}, reach_line[2] = {0, 0};
        int cur = -1;
        for (size_t i = 0; i < n && !s; i++) {
            bed_item *b = &items[i];
            if (b->record != cur) cur = b->record, reach[0] = reach[1] = 0;
            if (b->split >= 0 && reach[!b->split] > b->start) {
                s = ssm_set_error(SSM_ERR_FORMAT, "%s:%lld: this %s interval overlaps the %s interval "
                                  "on line %lld", path, (long long)b->line,
                                  b->split ? "validation" : "training", b->split ? "training" : "validation",
                                  (long long)reach_line[!b->split]);
                break;
            }
            int kinds[2] = {b->split, b->split};
            if (b->split < 0) kinds[0] = 0, kinds[1] = 1; /* unnamed: both, conservatively */
            for (int k = 0; k < 2; k++)
                if (b->end > reach[kinds[k]]) reach[kinds[k]] = b->end, reach_line[kinds[k]] = b->line;
            s = b->split >= 0 ? add_region(&set->split[b->split], b->record, b->start, b->end)
                              : split_stretch(set, b->record, b->start, b->end, vf, have_valid_files);
        }
    }
    free(items);
    return s;
}

static ssm_status finish_split(region_split *sp) {
    free(sp->cum);
    sp->cum = malloc(sizeof(int64_t) * (size_t)(sp->n + 1));
    if (!sp->cum) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    int64_t total = 0;
    for (int i = 0; i < sp->n; i++) sp->cum[i] = total += sp->r[i].end - sp->r[i].start;
    sp->bases = total;
    return SSM_OK;
}

ssm_status fasta_set_open(const char *const *train, int n_train, const char *const *valid,
                          int n_valid, const fasta_set_options *opt, fasta_set **out) {
    *out = NULL;
    fasta_set_options o = opt ? *opt : fasta_set_options_default();
    if (n_train <= 0) return ssm_set_error(SSM_ERR_ARG, "no training files given");
    if (n_valid < 0 || (n_valid > 0 && !valid)) return ssm_set_error(SSM_ERR_ARG, "bad validation file list");
    if (!(o.valid_fraction >= 0 && o.valid_fraction < 1))
        return ssm_set_error(SSM_ERR_ARG, "valid_fraction must be in [0, 1), got %g", o.valid_fraction);
    fasta_set *set = calloc(1, sizeof *set);
    if (!set) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    ssm_status s = SSM_OK;
    set->write_index = o.write_index;
    set->names = kh_init(fasta_names);
    set->files = calloc((size_t)(n_train + n_valid), sizeof *set->files);
    if (!set->names || !set->files) {
        s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < n_train + n_valid; i++) {
        const char *p = i < n_train ? train[i] : valid[i - n_train];
        fasta_file *f = &set->files[set->n_files++];
        f->is_valid = i >= n_train;
        if (!(f->path = strdup(p))) {
            s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
            goto fail;
        }
        if ((s = open_file(set, i))) goto fail;
    }
    if (o.bed) {
        if ((s = read_bed(set, o.bed, o.valid_fraction, n_valid > 0))) goto fail;
    } else {
        for (int r = 0; r < set->n_records; r++)
            if ((s = split_stretch(set, r, 0, set->records[r].length, o.valid_fraction, n_valid > 0)))
                goto fail;
    }
    for (int k = 0; k < 2; k++)
        if ((s = finish_split(&set->split[k]))) goto fail;
    if (set->split[SSM_SPLIT_TRAIN].bases == 0) {
        s = ssm_set_error(SSM_ERR_FORMAT, "%s: no training bases%s", o.bed ? o.bed : set->files[0].path,
                          o.bed ? " (no interval named train or unnamed)" : "");
        goto fail;
    }
    *out = set;
    return SSM_OK;
fail:
    fasta_set_free(set);
    return s;
}

void fasta_set_free(fasta_set *set) {
    if (!set) return;
    for (int i = 0; i < set->n_files; i++) {
        if (set->files[i].fai) fai_destroy(set->files[i].fai);
        free(set->files[i].mem);
        free(set->files[i].path);
    }
    free(set->files);
    if (set->names) {
        for (khint_t k = kh_begin(set->names); k != kh_end(set->names); k++)
            if (kh_exist(set->names, k)) free((char *)kh_key(set->names, k));
        kh_destroy(fasta_names, set->names);
    }
    free(set->records);
    free(set->mem_off);
    free(set->line);
    for (int k = 0; k < 2; k++) free(set->split[k].r), free(set->split[k].cum);
    free(set);
}

int fasta_set_n_files(const fasta_set *set) { return set->n_files; }
const char *fasta_set_file_path(const fasta_set *set, int file) { return set->files[file].path; }
fasta_access fasta_set_file_access(const fasta_set *set, int file) { return set->files[file].access; }
int fasta_set_n_records(const fasta_set *set) { return set->n_records; }
const fasta_record *fasta_set_record(const fasta_set *set, int i) { return &set->records[i]; }
int fasta_set_n_regions(const fasta_set *set, ssm_split split) { return set->split[split != 0].n; }
const fasta_region *fasta_set_region(const fasta_set *set, ssm_split split, int i) {
    return &set->split[split != 0].r[i];
}
int64_t fasta_set_split_bases(const fasta_set *set, ssm_split split) { return set->split[split != 0].bases; }

ssm_status fasta_set_draw(const fasta_set *set, ssm_split split, int64_t width, ssm_rng *rng,
                          fasta_window *w) {
    const region_split *sp = &set->split[split != 0];
    if (width <= 0) return ssm_set_error(SSM_ERR_ARG, "window width must be positive, got %lld", (long long)width);
    if (sp->bases == 0)
        return ssm_set_error(SSM_ERR_MISSING, "no %s data: %s", split ? "validation" : "training",
                             split ? "valid_fraction is 0 (or too small for these records) and no "
                                     "validation files or BED 'valid' intervals were given"
                                   : "no training regions");
    uint64_t u = ssm_rng_below(rng, (uint64_t)sp->bases);
    int lo = 0, hi = sp->n - 1; /* the first region whose cumulative length exceeds u */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if ((uint64_t)sp->cum[mid] > u) hi = mid;
        else lo = mid + 1;
    }
    const fasta_region *r = &sp->r[lo];
    int64_t n = r->end - r->start;
    w->region = lo;
    w->record = r->record;
    if (n > width) {
        w->start = r->start + (int64_t)ssm_rng_below(rng, (uint64_t)(n - width + 1));
        w->length = width;
    } else {
        w->start = r->start;
        w->length = n;
    }
    return SSM_OK;
}

ssm_status fasta_set_fetch(fasta_set *set, int record, int64_t start, int64_t len, char *buf) {
    if (record < 0 || record >= set->n_records)
        return ssm_set_error(SSM_ERR_ARG, "fasta_set_fetch: no record %d", record);
    const fasta_record *rec = &set->records[record];
    fasta_file *f = &set->files[rec->file];
    if (start < 0 || len < 0 || start + len > rec->length)
        return ssm_set_error(SSM_ERR_ARG, "fasta_set_fetch: %s:%lld-%lld is outside the record (%lld bases)",
                             rec->name, (long long)start, (long long)(start + len), (long long)rec->length);
    if (len == 0) return SSM_OK;
    if (f->access == FASTA_ACCESS_MEMORY) {
        memcpy(buf, f->mem + set->mem_off[record] + start, (size_t)len);
        return SSM_OK;
    }
    hts_pos_t got = 0;
    enum htsLogLevel level = quiet_begin();
    char *seq = faidx_fetch_seq64(f->fai, rec->name, start, start + len - 1, &got);
    quiet_end(level);
    if (!seq || got != len) {
        free(seq);
        return ssm_set_error(SSM_ERR_FORMAT, "%s: cannot read %s:%lld-%lld through its index (is %s.fai "
                             "out of date? delete it and it is rebuilt)", f->path, rec->name,
                             (long long)start, (long long)(start + len), f->path);
    }
    for (int64_t i = 0; i < len; i++) {
        if (!fasta_is_base((unsigned char)seq[i])) {
            char b[32];
            ssm_status s = ssm_set_error(SSM_ERR_FORMAT, "%s: record '%s' position %lld: byte %s is not "
                                         "a nucleotide code (A C G T N, or IUPAC U R Y S W K M B D H V)",
                                         f->path, rec->name, (long long)(start + i),
                                         show_byte((unsigned char)seq[i], b, sizeof b));
            free(seq);
            return s;
        }
    }
    memcpy(buf, seq, (size_t)len);
    free(seq);
    return SSM_OK;
}

/* ---- file lists --------------------------------------------------------------------------- */

ssm_status fasta_glob(const char *const *patterns, int n, char ***paths, int *n_paths) {
    *paths = NULL;
    *n_paths = 0;
    size_t cap = 8, count = 0;
    char **out = calloc(cap, sizeof *out);
    if (!out) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    ssm_status s = SSM_OK;
    for (int i = 0; i < n && !s; i++) {
        const char *p = patterns[i];
        glob_t g;
        memset(&g, 0, sizeof g);
        int is_pattern = strpbrk(p, "*?[") != NULL;
        if (is_pattern) {
            int rc = glob(p, GLOB_TILDE | GLOB_BRACE, NULL, &g);
            if (rc == GLOB_NOMATCH) {
                s = ssm_set_error(SSM_ERR_IO, "no file matches '%s'", p);
                break;
            }
            if (rc != 0) {
                s = ssm_set_error(SSM_ERR_IO, "cannot expand '%s'", p);
                globfree(&g);
                break;
            }
        }
        size_t m = is_pattern ? g.gl_pathc : 1;
        for (size_t j = 0; j < m && !s; j++) {
            if (count + 2 > cap) {
                char **o = realloc(out, 2 * cap * sizeof *o);
                if (!o) {
                    s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
                    break;
                }
                out = o;
                cap *= 2;
            }
            out[count] = strdup(is_pattern ? g.gl_pathv[j] : p);
            if (!out[count]) s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
            else out[++count] = NULL;
        }
        if (is_pattern) globfree(&g);
    }
    if (s) {
        fasta_paths_free(out);
        return s;
    }
    *paths = out;
    *n_paths = (int)count;
    return SSM_OK;
}

void fasta_paths_free(char **paths) {
    if (!paths) return;
    for (char **p = paths; *p; p++) free(*p);
    free(paths);
}
