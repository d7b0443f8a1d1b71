/* wav.c: audio through libsndfile and libsamplerate (see wav.h). */
#include "wav.h"

#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <math.h>
#include <samplerate.h>
#include <sndfile.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- codes ---------------------------------------------------------------------------------- */

uint8_t wav_encode_sample(float x, wav_encoding enc) {
    if (!(x > -1.0f)) x = -1.0f; /* NaN too */
    if (x > 1.0f) x = 1.0f;
    if (enc == WAV_LINEAR) {
        int c = (int)floorf((x + 1.0f) * 128.0f);
        return (uint8_t)(c > 255 ? 255 : c < 0 ? 0 : c);
    }
    /* y = sign(x) ln(1 + mu|x|) / ln(1 + mu) */
    double ax = fabs((double)x);
    double y = log1p(WAV_MULAW_MU * ax) / log1p(WAV_MULAW_MU);
    if (x < 0) y = -y;
    /* code = round((y + 1) / 2 * mu) */
    int c = (int)floor((y + 1.0) * 0.5 * WAV_MULAW_MU + 0.5);
    return (uint8_t)(c > 255 ? 255 : c < 0 ? 0 : c);
}

float wav_decode_sample(uint8_t code, wav_encoding enc) {
    if (enc == WAV_LINEAR) return ((float)code + 0.5f) / 128.0f - 1.0f;
    double y = 2.0 * code / WAV_MULAW_MU - 1.0;
    /* x = sign(y) ((1 + mu)^|y| - 1) / mu */
    double ax = expm1(fabs(y) * log1p(WAV_MULAW_MU)) / WAV_MULAW_MU;
    return (float)(y < 0 ? -ax : ax);
}

/* ---- memory I/O for libsndfile --------------------------------------------------------------- */

typedef struct membuf {
    unsigned char *data;
    size_t len, cap, pos;
    int writable;
} membuf;

static sf_count_t mem_len(void *u) { return (sf_count_t)((membuf *)u)->len; }
static sf_count_t mem_seek(sf_count_t off, int whence, void *u) {
    membuf *m = u;
    sf_count_t base = whence == SEEK_CUR ? (sf_count_t)m->pos : whence == SEEK_END ? (sf_count_t)m->len : 0;
    sf_count_t p = base + off;
    if (p < 0) p = 0;
    m->pos = (size_t)p;
    return p;
}
static sf_count_t mem_read(void *ptr, sf_count_t count, void *u) {
    membuf *m = u;
    if (m->pos >= m->len || count <= 0) return 0;
    size_t k = m->len - m->pos < (size_t)count ? m->len - m->pos : (size_t)count;
    memcpy(ptr, m->data + m->pos, k);
    m->pos += k;
    return (sf_count_t)k;
}
static sf_count_t mem_write(const void *ptr, sf_count_t count, void *u) {
    membuf *m = u;
    if (!m->writable || count <= 0) return 0;
    size_t end = m->pos + (size_t)count;
    if (end > m->cap) {
        size_t cap = m->cap ? m->cap : 4096;
        while (cap < end) cap *= 2;
        unsigned char *d = realloc(m->data, cap);
        if (!d) return 0;
        if (cap > m->cap) memset(d + m->cap, 0, cap - m->cap);
        m->data = d;
        m->cap = cap;
    }
    memcpy(m->data + m->pos, ptr, (size_t)count);
    m->pos = end;
    if (end > m->len) m->len = end;
    return count;
}
static sf_count_t mem_tell(void *u) { return (sf_count_t)((membuf *)u)->pos; }

static SF_VIRTUAL_IO mem_io = {mem_len, mem_seek, mem_read, mem_write, mem_tell};

/* ---- reading --------------------------------------------------------------------------------- */

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* libsndfile refuses a WAV whose header gives a sample rate (or channel count) of 0 with
 * "SF_INFO struct incomplete"; look at the fmt chunk ourselves to say what is wrong. head holds
 * the first len bytes of the file. */
static ssm_status open_error(const char *name, const unsigned char *head, size_t len) {
    const char *why = sf_strerror(NULL);
    if (len >= 12 && (!memcmp(head, "RIFF", 4) || !memcmp(head, "RF64", 4)) && !memcmp(head + 8, "WAVE", 4)) {
        for (size_t p = 12; p + 8 <= len;) {
            uint32_t size = le32(head + p + 4);
            if (!memcmp(head + p, "fmt ", 4) && p + 16 <= len) {
                unsigned channels = (unsigned)head[p + 10] | (unsigned)head[p + 11] << 8;
                uint32_t rate = p + 16 <= len ? le32(head + p + 12) : 1;
                if (rate == 0)
                    return ssm_set_error(SSM_ERR_FORMAT, "%s: the WAV header gives a sample rate of 0 Hz "
                                         "(a broken file; libsndfile: %s)", name, why);
                if (channels == 0)
                    return ssm_set_error(SSM_ERR_FORMAT, "%s: the WAV header gives 0 channels (a broken "
                                         "file; libsndfile: %s)", name, why);
                break;
            }
            if (size > len) break;
            p += 8 + size + (size & 1);
        }
    }
    return ssm_set_error(SSM_ERR_FORMAT, "%s: not an audio file libsndfile can read (libsndfile: %s)",
                         name, why ? why : "unknown error");
}

/* The decoding loop shared by files and memory: blocks of frames -> mono -> resampled ->
 * codes. Closes sf. */
static ssm_status decode(const char *name, SNDFILE *sf, const SF_INFO *info, int rate, wav_encoding enc,
                         size_t max_samples, wav_audio *out) {
    memset(out, 0, sizeof *out);
    ssm_status s = SSM_OK;
    float *in = NULL, *mono = NULL, *res = NULL;
    uint8_t *codes = NULL;
    size_t n = 0, cap = 0;
    SRC_STATE *src = NULL;
    if (info->samplerate <= 0) {
        s = ssm_set_error(SSM_ERR_FORMAT, "%s: the header gives a sample rate of %d Hz", name, info->samplerate);
        goto done;
    }
    if (info->channels <= 0) {
        s = ssm_set_error(SSM_ERR_FORMAT, "%s: the header gives %d channels", name, info->channels);
        goto done;
    }
    if (info->frames <= 0) {
        s = ssm_set_error(SSM_ERR_FORMAT, "%s: holds no samples (an empty audio file)", name);
        goto done;
    }
    const int ch = info->channels, sub = info->format & SF_FORMAT_SUBMASK;
    const int check_finite = sub == SF_FORMAT_FLOAT || sub == SF_FORMAT_DOUBLE;
    const double ratio = (double)rate / info->samplerate;
    const size_t B = WAV_BLOCK_FRAMES, res_cap = (size_t)(B * ratio) + 64;
    in = malloc(B * ch * sizeof *in);
    mono = malloc(B * sizeof *mono);
    res = malloc(res_cap * sizeof *res);
    if (!in || !mono || !res) {
        s = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", name);
        goto done;
    }
    if (info->samplerate != rate) {
        int err = 0;
        src = src_new(SRC_SINC_MEDIUM_QUALITY, 1, &err);
        if (!src) {
            s = ssm_set_error(SSM_ERR_UNSUPPORTED, "%s: libsamplerate: %s", name, src_strerror(err));
            goto done;
        }
        if (!src_is_valid_ratio(ratio)) {
            s = ssm_set_error(SSM_ERR_UNSUPPORTED, "%s: cannot resample %d Hz to %d Hz (ratio out of range)",
                              name, info->samplerate, rate);
            goto done;
        }
    }
    int64_t frame = 0;
    int eof = 0;
    while (!eof && (!max_samples || n < max_samples)) {
        sf_count_t got = sf_readf_float(sf, in, (sf_count_t)B);
        if (got < 0) got = 0;
        if (got == 0) {
            int e = sf_error(sf);
            if (e) {
                s = ssm_set_error(SSM_ERR_FORMAT, "%s: read error after frame %lld: %s", name, (long long)frame,
                                  sf_strerror(sf));
                goto done;
            }
            eof = 1;
        }
        for (sf_count_t f = 0; f < got; f++) {
            double sum = 0;
            for (int c = 0; c < ch; c++) {
                float v = in[f * ch + c];
                if (check_finite && !isfinite(v)) {
                    s = ssm_set_error(SSM_ERR_FORMAT, "%s: sample %lld (channel %d) is %s: the audio must be "
                                      "finite", name, (long long)(frame + f), c, isnan(v) ? "NaN" : "infinite");
                    goto done;
                }
                sum += v;
            }
            mono[f] = (float)(sum / ch);
        }
        frame += got;
        const float *block = mono;
        size_t nb = (size_t)got;
        if (src) {
            SRC_DATA d = {0};
            d.data_in = mono;
            d.input_frames = got;
            d.src_ratio = ratio;
            d.end_of_input = eof;
            size_t used = 0;
            /* feed the block until it is consumed (and, at the end, until the filter is drained) */
            for (;;) {
                d.data_out = res;
                d.output_frames = (long)res_cap;
                d.data_in = mono + used;
                d.input_frames = (long)((size_t)got - used);
                int err = src_process(src, &d);
                if (err) {
                    s = ssm_set_error(SSM_ERR_FORMAT, "%s: libsamplerate: %s", name, src_strerror(err));
                    goto done;
                }
                used += (size_t)d.input_frames_used;
                size_t k = (size_t)d.output_frames_gen;
                if (n + k > cap) {
                    size_t nc = cap ? cap * 2 : 65536;
                    while (nc < n + k) nc *= 2;
                    uint8_t *c2 = realloc(codes, nc);
                    if (!c2) {
                        s = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory for %zu samples", name, nc);
                        goto done;
                    }
                    codes = c2, cap = nc;
                }
                for (size_t i = 0; i < k; i++) codes[n++] = wav_encode_sample(res[i], enc);
                if (used >= (size_t)got && (!eof || k == 0)) break;
            }
            continue;
        }
        if (n + nb > cap) {
            size_t nc = cap ? cap * 2 : 65536;
            while (nc < n + nb) nc *= 2;
            uint8_t *c2 = realloc(codes, nc);
            if (!c2) {
                s = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory for %zu samples", name, nc);
                goto done;
            }
            codes = c2, cap = nc;
        }
        for (size_t i = 0; i < nb; i++) codes[n++] = wav_encode_sample(block[i], enc);
    }
    if (max_samples && n > max_samples) n = max_samples;
    if (n == 0) {
        s = ssm_set_error(SSM_ERR_FORMAT, "%s: holds no samples (an empty audio file)", name);
        goto done;
    }
    out->codes = codes;
    out->n = n;
    out->file_rate = info->samplerate;
    out->channels = ch;
    out->frames = info->frames;
    codes = NULL;
done:
    if (src) src_delete(src);
    sf_close(sf);
    free(in);
    free(mono);
    free(res);
    free(codes);
    return s;
}

ssm_status wav_read_memory(const char *name, const void *data, size_t len, int rate, wav_encoding enc,
                           size_t max_samples, wav_audio *out) {
    memset(out, 0, sizeof *out);
    if (rate <= 0) return ssm_set_error(SSM_ERR_ARG, "%s: sample rate %d must be positive", name, rate);
    if (len == 0) return ssm_set_error(SSM_ERR_FORMAT, "%s: is empty (0 bytes), not audio", name);
    membuf m = {(unsigned char *)data, len, len, 0, 0};
    SF_INFO info;
    memset(&info, 0, sizeof info);
    SNDFILE *sf = sf_open_virtual(&mem_io, SFM_READ, &info, &m);
    if (!sf) return open_error(name, data, len < 4096 ? len : 4096);
    return decode(name, sf, &info, rate, enc, max_samples, out);
}

static ssm_status read_stream(FILE *f, const char *name, unsigned char **data, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    unsigned char *d = malloc(cap);
    while (d) {
        size_t k = fread(d + n, 1, cap - n, f);
        n += k;
        if (n < cap) break;
        unsigned char *d2 = realloc(d, cap * 2);
        if (!d2) {
            free(d);
            d = NULL;
            break;
        }
        d = d2, cap *= 2;
    }
    if (!d) return ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", name);
    if (ferror(f)) {
        free(d);
        return ssm_set_error(SSM_ERR_IO, "%s: read error", name);
    }
    *data = d;
    *len = n;
    return SSM_OK;
}

ssm_status wav_read_file(const char *path, int rate, wav_encoding enc, size_t max_samples, wav_audio *out) {
    memset(out, 0, sizeof *out);
    if (rate <= 0) return ssm_set_error(SSM_ERR_ARG, "%s: sample rate %d must be positive", path, rate);
    if (!strcmp(path, "-")) {
        unsigned char *d = NULL;
        size_t len = 0;
        ssm_status s = read_stream(stdin, "stdin", &d, &len);
        if (s) return s;
        s = wav_read_memory("stdin", d, len, rate, enc, max_samples, out);
        free(d);
        return s;
    }
    struct stat st;
    if (stat(path, &st) != 0) return ssm_set_error(SSM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return ssm_set_error(SSM_ERR_ARG, "%s: is a folder, not an audio file", path);
    if (st.st_size == 0) return ssm_set_error(SSM_ERR_FORMAT, "%s: is empty (0 bytes), not audio", path);
    SF_INFO info;
    memset(&info, 0, sizeof info);
    SNDFILE *sf = sf_open(path, SFM_READ, &info);
    if (!sf) {
        unsigned char head[4096];
        size_t len = 0;
        FILE *f = fopen(path, "rb");
        if (!f) return ssm_set_error(SSM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        len = fread(head, 1, sizeof head, f);
        fclose(f);
        return open_error(path, head, len);
    }
    return decode(path, sf, &info, rate, enc, max_samples, out);
}

int wav_is_audio(const char *path) {
    SF_INFO info;
    memset(&info, 0, sizeof info);
    SNDFILE *sf = sf_open(path, SFM_READ, &info);
    if (!sf) return 0;
    sf_close(sf);
    return 1;
}

/* ---- writing --------------------------------------------------------------------------------- */

ssm_status wav_write_codes(FILE *out, const uint8_t *codes, size_t n, int rate, wav_encoding enc) {
    if (rate <= 0) return ssm_set_error(SSM_ERR_ARG, "sample rate %d must be positive", rate);
    membuf m = {NULL, 0, 0, 0, 1};
    SF_INFO info;
    memset(&info, 0, sizeof info);
    info.samplerate = rate;
    info.channels = 1;
    info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
    SNDFILE *sf = sf_open_virtual(&mem_io, SFM_WRITE, &info, &m);
    if (!sf) {
        free(m.data);
        return ssm_set_error(SSM_ERR_IO, "cannot start the WAV output: %s", sf_strerror(NULL));
    }
    short block[4096];
    ssm_status s = SSM_OK;
    for (size_t i = 0; i < n && !s; i += 4096) {
        size_t k = n - i < 4096 ? n - i : 4096;
        for (size_t j = 0; j < k; j++) {
            float x = wav_decode_sample(codes[i + j], enc) * 32767.0f;
            block[j] = (short)lrintf(x > 32767.0f ? 32767.0f : x < -32768.0f ? -32768.0f : x);
        }
        if (sf_writef_short(sf, block, (sf_count_t)k) != (sf_count_t)k)
            s = ssm_set_error(SSM_ERR_IO, "cannot write the WAV output: %s", sf_strerror(sf));
    }
    if (sf_close(sf) && !s) s = ssm_set_error(SSM_ERR_IO, "cannot finish the WAV output");
    if (!s && (fwrite(m.data, 1, m.len, out) != m.len || fflush(out) != 0 || ferror(out)))
        s = ssm_set_error(SSM_ERR_IO, "cannot write the WAV output (%zu bytes)", m.len);
    free(m.data);
    return s;
}

/* ---- file lists ------------------------------------------------------------------------------ */

typedef struct strlist {
    char **v;
    int n, cap;
} strlist;

static int push(strlist *l, const char *s) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], s)) return 0;
    if (l->n + 2 > l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        l->v = v, l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(s))) return -1;
    l->v[++l->n] = NULL;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static ssm_status add_folder(strlist *l, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return ssm_set_error(SSM_ERR_IO, "%s: cannot open the folder: %s", dir, strerror(errno));
    strlist names = {0};
    struct dirent *e;
    ssm_status s = SSM_OK;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(len);
        if (!p) {
            s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
            break;
        }
        snprintf(p, len, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 && wav_is_audio(p) && push(&names, p))
            s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        free(p);
        if (s) break;
    }
    closedir(d);
    if (!s && names.n == 0)
        s = ssm_set_error(SSM_ERR_MISSING, "%s: the folder holds no audio file libsndfile can read", dir);
    if (!s) {
        qsort(names.v, (size_t)names.n, sizeof *names.v, cmp_str);
        for (int i = 0; i < names.n && !s; i++)
            if (push(l, names.v[i])) s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < names.n; i++) free(names.v[i]);
    free(names.v);
    return s;
}

void wav_paths_free(char **paths) {
    if (!paths) return;
    for (char **p = paths; *p; p++) free(*p);
    free(paths);
}

ssm_status wav_glob(const char *const *patterns, int n, char ***paths, int *n_paths) {
    *paths = NULL;
    *n_paths = 0;
    strlist l = {0};
    ssm_status s = SSM_OK;
    for (int i = 0; i < n && !s; i++) {
        const char *p = patterns[i];
        struct stat st;
        if (strpbrk(p, "*?[")) {
            glob_t g;
            int rc = glob(p, 0, NULL, &g);
            if (rc == GLOB_NOMATCH) {
                s = ssm_set_error(SSM_ERR_MISSING, "%s: the pattern matches no file", p);
            } else if (rc) {
                s = ssm_set_error(SSM_ERR_IO, "%s: cannot expand the pattern", p);
            } else {
                for (size_t j = 0; j < g.gl_pathc && !s; j++) {
                    if (stat(g.gl_pathv[j], &st) == 0 && S_ISDIR(st.st_mode)) s = add_folder(&l, g.gl_pathv[j]);
                    else if (push(&l, g.gl_pathv[j])) s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
                }
                globfree(&g);
            }
        } else if (strcmp(p, "-") && stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            s = add_folder(&l, p);
        } else if (push(&l, p)) {
            s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        }
    }
    if (s) {
        wav_paths_free(l.v);
        return s;
    }
    if (!l.v) {
        if (!(l.v = calloc(1, sizeof *l.v))) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    }
    *paths = l.v;
    *n_paths = l.n;
    return SSM_OK;
}

/* ---- training set ---------------------------------------------------------------------------- */

typedef struct wav_file {
    char *path;
    uint8_t *codes;
    size_t n;
} wav_file;

struct wav_set {
    wav_file *files;
    int n_files;
    wav_segment *seg[2];
    int n_seg[2];
    size_t samples[2];
};

wav_set_options wav_set_options_default(void) {
    wav_set_options o = {16000, WAV_MULAW, 0.1};
    return o;
}

uint64_t wav_name_hash(const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    uint64_t h = 1469598103934665603ULL;
    for (; *b; b++) h = (h ^ (unsigned char)*b) * 1099511628211ULL;
    return h;
}

void wav_set_free(wav_set *set) {
    if (!set) return;
    for (int i = 0; i < set->n_files; i++) {
        free(set->files[i].path);
        free(set->files[i].codes);
    }
    free(set->files);
    free(set->seg[0]);
    free(set->seg[1]);
    free(set);
}

static ssm_status add_segment(wav_set *set, int split, int file, size_t off, size_t len, int starts) {
    wav_segment *g = realloc(set->seg[split], (size_t)(set->n_seg[split] + 1) * sizeof *g);
    if (!g) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    set->seg[split] = g;
    g[set->n_seg[split]++] = (wav_segment){file, off, set->files[file].codes + off, len, starts};
    set->samples[split] += len;
    return SSM_OK;
}

ssm_status wav_set_open(const char *const *train, int n_train, const char *const *valid, int n_valid,
                        const wav_set_options *opt, wav_set **out) {
    *out = NULL;
    wav_set_options o = opt ? *opt : wav_set_options_default();
    if (!(o.valid_fraction >= 0 && o.valid_fraction <= 0.5))
        return ssm_set_error(SSM_ERR_ARG, "valid_fraction must be in [0, 0.5], got %g", o.valid_fraction);
    if (n_train <= 0) return ssm_set_error(SSM_ERR_ARG, "no training audio given");
    char **tp = NULL, **vp = NULL;
    int nt = 0, nv = 0;
    ssm_status s = wav_glob(train, n_train, &tp, &nt);
    if (!s && n_valid > 0) s = wav_glob(valid, n_valid, &vp, &nv);
    wav_set *set = NULL;
    if (s) goto fail;
    set = calloc(1, sizeof *set);
    if (!set || !(set->files = calloc((size_t)(nt + nv), sizeof *set->files))) {
        s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < nt + nv; i++) {
        const char *p = i < nt ? tp[i] : vp[i - nt];
        wav_audio a;
        if ((s = wav_read_file(p, o.sample_rate, o.encoding, 0, &a))) goto fail;
        set->files[i].path = strdup(p);
        set->files[i].codes = a.codes;
        set->files[i].n = a.n;
        set->n_files = i + 1;
        if (!set->files[i].path) {
            s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
            goto fail;
        }
    }
    if (nv > 0) {
        for (int i = 0; i < nt + nv && !s; i++) s = add_segment(set, i >= nt, i, 0, set->files[i].n, 1);
    } else if (nt == 1) {
        size_t n = set->files[0].n, nval = (size_t)floor(o.valid_fraction * (double)n);
        if ((s = add_segment(set, 0, 0, 0, n - nval, 1))) goto fail;
        if (nval && (s = add_segment(set, 1, 0, n - nval, nval, 0))) goto fail;
    } else {
        /* whole files by the hash of their name: below the fraction of the hash range */
        char *is_valid = calloc((size_t)nt, 1);
        if (!is_valid) {
            s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
            goto fail;
        }
        int nval = 0, lo = 0, hi = 0;
        for (int i = 0; i < nt; i++) {
            uint64_t h = wav_name_hash(tp[i]);
            if (h < wav_name_hash(tp[lo])) lo = i;
            if (h > wav_name_hash(tp[hi])) hi = i;
            is_valid[i] = (double)h < o.valid_fraction * 18446744073709551616.0;
            nval += is_valid[i];
        }
        if (o.valid_fraction > 0 && nval == 0) is_valid[lo] = 1;
        is_valid[hi] = 0;
        for (int i = 0; i < nt && !s; i++) s = add_segment(set, is_valid[i], i, 0, set->files[i].n, 1);
        free(is_valid);
        if (s) goto fail;
    }
    if (s) goto fail;
    wav_paths_free(tp);
    wav_paths_free(vp);
    *out = set;
    return SSM_OK;
fail:
    wav_paths_free(tp);
    wav_paths_free(vp);
    wav_set_free(set);
    return s;
}

int wav_set_n_files(const wav_set *set) { return set->n_files; }
const char *wav_set_file_path(const wav_set *set, int file) { return set->files[file].path; }
size_t wav_set_file_samples(const wav_set *set, int file) { return set->files[file].n; }
int wav_set_n_segments(const wav_set *set, ssm_split split) { return set->n_seg[split]; }
const wav_segment *wav_set_segment(const wav_set *set, ssm_split split, int i) { return &set->seg[split][i]; }
size_t wav_set_split_samples(const wav_set *set, ssm_split split) { return set->samples[split]; }

ssm_status wav_set_draw(const wav_set *set, ssm_split split, size_t width, ssm_rng *rng, int *segment,
                        size_t *start) {
    uint64_t total = 0;
    for (int i = 0; i < set->n_seg[split]; i++) total += set->seg[split][i].length + (uint64_t)set->seg[split][i].starts;
    if (total == 0)
        return ssm_set_error(SSM_ERR_MISSING, "the %s split holds no audio (valid_fraction 0, or too few "
                             "samples: give data.valid or raise data.valid_fraction)",
                             split == SSM_SPLIT_VALID ? "validation" : "training");
    uint64_t r = ssm_rng_below(rng, total);
    int i = 0;
    for (;; i++) {
        uint64_t len = set->seg[split][i].length + (uint64_t)set->seg[split][i].starts;
        if (r < len) break;
        r -= len;
    }
    const wav_segment *g = &set->seg[split][i];
    size_t positions = g->length + (size_t)g->starts;
    *segment = i;
    *start = positions > width ? (size_t)ssm_rng_below(rng, positions - width + 1) : 0;
    return SSM_OK;
}
