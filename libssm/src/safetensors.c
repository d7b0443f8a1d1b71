/* safetensors.c: reading and writing safetensors files, the format of Hugging Face's
 * safetensors library: an 8-byte little-endian header length N, N bytes of JSON mapping each
 * tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data
 * section) plus an optional "__metadata__" object of strings, then the raw little-endian data.
 *
 * The reader validates the whole header when the file is opened, so that a malformed file is
 * refused with a message before anything is read and later reads can only fail on I/O. Data
 * is read on demand with pread (checkpoints can be larger than we want to map or copy).
 * Gaps between tensors are tolerated; overlaps are not. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "ssm/checkpoint.h"

#define MAX_HEADER ((uint64_t)100 << 20) /* a header this large is corrupt, not big */
#define CHUNK_BYTES ((size_t)1 << 20)   /* conversion buffer for non-f32 reads and writes */
#define MAX_NDIM 8

struct ssm_safetensors {
    char *path;
    int fd;
    uint64_t data_start; /* 8 + header length */
    uint64_t data_size;  /* bytes after the header */
    ssm_st_tensor *tensors; /* in header order */
    int n;
    const ssm_st_tensor **by_name; /* sorted by name, for bsearch */
    char **meta; /* key, value, key, value, ... */
    int n_meta;
};

/* ---- dtypes ------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    ssm_dtype dtype;
    size_t size;
} dtypes[] = {
    {"F32", SSM_DTYPE_F32, 4}, {"F16", SSM_DTYPE_F16, 2}, {"BF16", SSM_DTYPE_BF16, 2},
    {"F64", SSM_DTYPE_F64, 8}, {"I64", SSM_DTYPE_I64, 8}, {"I32", SSM_DTYPE_I32, 4},
    {"U8", SSM_DTYPE_U8, 1},
};
#define N_DTYPES ((int)(sizeof dtypes / sizeof dtypes[0]))

static int dtype_index(ssm_dtype d) {
    for (int i = 0; i < N_DTYPES; i++)
        if (dtypes[i].dtype == d) return i;
    return 0;
}
static size_t dtype_size(ssm_dtype d) { return dtypes[dtype_index(d)].size; }
static const char *dtype_name(ssm_dtype d) { return dtypes[dtype_index(d)].name; }

static int dtype_parse(const char *s, ssm_dtype *out) {
    for (int i = 0; i < N_DTYPES; i++)
        if (strcmp(dtypes[i].name, s) == 0) {
            *out = dtypes[i].dtype;
            return 1;
        }
    return 0;
}

/* ---- small helpers ----------------------------------------------------------------------- */

/* pread until n bytes arrived; -1 with errno (0 at end of file) otherwise. */
static int pread_full(int fd, void *buf, size_t n, uint64_t offset) {
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)offset);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = 0;
            return -1;
        }
        p += r, n -= (size_t)r, offset += (uint64_t)r;
    }
    return 0;
}

static const char *io_reason(void) { return errno ? strerror(errno) : "unexpected end of file"; }

static uint64_t load_le64(const uint8_t *b) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

static void store_le64(uint8_t *b, uint64_t v) {
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
}

static int host_is_little_endian(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

/* numel and byte count of a shape; 0 when either overflows */
static int shape_bytes(const int64_t *shape, int ndim, size_t elem, uint64_t *numel,
                       uint64_t *bytes) {
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++)
        if (__builtin_mul_overflow(n, (uint64_t)shape[i], &n)) return 0;
    if (__builtin_mul_overflow(n, (uint64_t)elem, bytes) || n > SIZE_MAX) return 0;
    *numel = n;
    return 1;
}

/* ---- opening: the header ----------------------------------------------------------------- */

/* Open the file and read and parse its JSON header. */
static ssm_status read_header(ssm_safetensors *st, json_t **root) {
    const char *path = st->path;
    st->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (st->fd < 0) return ssm_fail_file(path, SSM_ERR_IO, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(st->fd, &sb) != 0) return ssm_fail_file(path, SSM_ERR_IO, "cannot stat: %s", strerror(errno));
    if (!S_ISREG(sb.st_mode)) return ssm_fail_file(path, SSM_ERR_IO, "not a regular file");
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8)
        return ssm_fail_file(path, SSM_ERR_FORMAT, "file is %llu bytes, shorter than 8 bytes (the header "
                    "length): not a safetensors file", (unsigned long long)size);
    uint8_t len_bytes[8];
    if (pread_full(st->fd, len_bytes, 8, 0) != 0)
        return ssm_fail_file(path, SSM_ERR_IO, "cannot read the header length: %s", io_reason());
    uint64_t hlen = load_le64(len_bytes);
    if (hlen > MAX_HEADER)
        return ssm_fail_file(path, SSM_ERR_FORMAT, "header length %llu is absurd (more than 100 MB): "
                    "not a safetensors file, or a corrupt one", (unsigned long long)hlen);
    if (hlen > size - 8)
        return ssm_fail_file(path, SSM_ERR_FORMAT, "header length %llu is larger than the file (%llu "
                    "bytes after the length): the file is truncated or not a safetensors file",
                    (unsigned long long)hlen, (unsigned long long)(size - 8));
    st->data_start = 8 + hlen;
    st->data_size = size - 8 - hlen;
    char *buf = malloc(hlen ? hlen : 1);
    if (!buf) return ssm_fail_file(path, SSM_ERR_NOMEM, "out of memory for a %llu-byte header",
                          (unsigned long long)hlen);
    if (pread_full(st->fd, buf, hlen, 8) != 0) {
        free(buf);
        return ssm_fail_file(path, SSM_ERR_IO, "cannot read the header: %s", io_reason());
    }
    json_error_t err;
    /* duplicate names would make one tensor silently shadow another */
    *root = json_loadb(buf, hlen, JSON_REJECT_DUPLICATES, &err);
    free(buf);
    if (!*root)
        return ssm_fail_file(path, SSM_ERR_FORMAT, "invalid JSON header at line %d, column %d: %s",
                    err.line, err.column, err.text);
    if (!json_is_object(*root))
        return ssm_fail_file(path, SSM_ERR_FORMAT, "the JSON header is not an object");
    return SSM_OK;
}

static ssm_status parse_metadata(ssm_safetensors *st, json_t *obj) {
    if (!json_is_object(obj))
        return ssm_fail_file(st->path, SSM_ERR_FORMAT, "__metadata__ is not an object of strings");
    st->meta = calloc(2 * json_object_size(obj) + 1, sizeof *st->meta);
    if (!st->meta) return ssm_fail_file(st->path, SSM_ERR_NOMEM, "out of memory for the metadata");
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
        if (!json_is_string(value))
            return ssm_fail_file(st->path, SSM_ERR_FORMAT, "__metadata__ value of key '%s' is not a "
                        "string (safetensors metadata maps strings to strings)", key);
        char *k = strdup(key), *v = strdup(json_string_value(value));
        st->meta[2 * st->n_meta] = k;
        st->meta[2 * st->n_meta + 1] = v;
        st->n_meta++; /* counted even on failure so that close frees what was made */
        if (!k || !v) return ssm_fail_file(st->path, SSM_ERR_NOMEM, "out of memory for the metadata");
    }
    return SSM_OK;
}

static ssm_status parse_shape(const ssm_safetensors *st, ssm_st_tensor *t, json_t *shape) {
    const char *path = st->path;
    if (!json_is_array(shape))
        return ssm_fail_file(path, SSM_ERR_FORMAT, "tensor '%s': \"shape\" is missing or not a list of "
                    "non-negative integers", t->name);
    size_t ndim = json_array_size(shape);
    if (ndim > MAX_NDIM)
        return ssm_fail_file(path, SSM_ERR_FORMAT, "tensor '%s' has %zu dimensions; at most %d are "
                    "supported", t->name, ndim, MAX_NDIM);
    t->ndim = (int)ndim;
    for (size_t i = 0; i < ndim; i++) {
        json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return ssm_fail_file(path, SSM_ERR_FORMAT, "tensor '%s': \"shape\" must be a list of "
                        "non-negative integers (dimension %zu is not)", t->name, i);
        t->shape[i] = json_integer_value(d);
    }
    return SSM_OK;
}

static ssm_status parse_offsets(const ssm_safetensors *st, ssm_st_tensor *t, json_t *off) {
    const char *path = st->path;
    json_t *b = json_array_get(off, 0), *e = json_array_get(off, 1);
    if (!json_is_array(off) || json_array_size(off) != 2 || !json_is_integer(b) ||
        !json_is_integer(e) || json_integer_value(b) < 0 || json_integer_value(e) < 0)
        return ssm_fail_file(path, SSM_ERR_FORMAT, "tensor '%s': \"data_offsets\" must be two "
                    "non-negative integers [begin, end]", t->name);
    t->begin = (uint64_t)json_integer_value(b);
    t->end = (uint64_t)json_integer_value(e);
    if (t->begin > t->end)
        return ssm_fail_file(path, SSM_ERR_FORMAT, "tensor '%s': data_offsets [%llu, %llu] begin after "
                    "they end", t->name, (unsigned long long)t->begin,
                    (unsigned long long)t->end);
    if (t->end > st->data_size)
        return ssm_fail_file(path, SSM_ERR_FORMAT, "tensor '%s': data_offsets [%llu, %llu] run past the "
                    "end of the data section (%llu bytes): the file is truncated or corrupt",
                    t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                    (unsigned long long)st->data_size);
    uint64_t numel, bytes;
    char sh[160];
    ssm_format_shape(sh, sizeof sh, t->shape, t->ndim);
    if (!shape_bytes(t->shape, t->ndim, dtype_size(t->dtype), &numel, &bytes))
        return ssm_fail_file(path, SSM_ERR_FORMAT, "tensor '%s': shape %s is too large", t->name, sh);
    if (t->end - t->begin != bytes)
        return ssm_fail_file(path, SSM_ERR_FORMAT, "tensor '%s': data_offsets [%llu, %llu] hold %llu "
                    "bytes, but shape %s of %s needs %llu", t->name,
                    (unsigned long long)t->begin, (unsigned long long)t->end,
                    (unsigned long long)(t->end - t->begin), sh, dtype_name(t->dtype),
                    (unsigned long long)bytes);
    t->numel = (size_t)numel;
    return SSM_OK;
}

static ssm_status parse_tensor(const ssm_safetensors *st, ssm_st_tensor *t, json_t *entry) {
    const char *path = st->path;
    if (!json_is_object(entry))
        return ssm_fail_file(path, SSM_ERR_FORMAT, "the entry of tensor '%s' is not an object with "
                    "\"dtype\", \"shape\" and \"data_offsets\"", t->name);
    json_t *dtype = json_object_get(entry, "dtype");
    if (!json_is_string(dtype))
        return ssm_fail_file(path, SSM_ERR_FORMAT, "tensor '%s': \"dtype\" is missing or not a string",
                    t->name);
    if (!dtype_parse(json_string_value(dtype), &t->dtype))
        return ssm_fail_file(path, SSM_ERR_DTYPE, "tensor '%s' has unsupported dtype %s (ssm reads F32, "
                    "F16, BF16, F64, I64, I32 and U8)", t->name, json_string_value(dtype));
    ssm_status s = parse_shape(st, t, json_object_get(entry, "shape"));
    if (s) return s;
    return parse_offsets(st, t, json_object_get(entry, "data_offsets"));
}

static ssm_status parse_entries(ssm_safetensors *st, json_t *root) {
    st->tensors = calloc(json_object_size(root) + 1, sizeof *st->tensors);
    if (!st->tensors) return ssm_fail_file(st->path, SSM_ERR_NOMEM, "out of memory for the header");
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        ssm_status s;
        if (strcmp(key, "__metadata__") == 0) {
            s = parse_metadata(st, value);
        } else {
            ssm_st_tensor *t = &st->tensors[st->n++];
            t->name = strdup(key);
            s = t->name ? parse_tensor(st, t, value)
                        : ssm_fail_file(st->path, SSM_ERR_NOMEM, "out of memory for the header");
        }
        if (s) return s;
    }
    return SSM_OK;
}

static int cmp_begin(const void *a, const void *b) {
    const ssm_st_tensor *x = *(const ssm_st_tensor *const *)a, *y = *(const ssm_st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const ssm_st_tensor *const *)a)->name, (*(const ssm_st_tensor *const *)b)->name);
}

/* Sorted by begin, tensors overlap exactly when one starts before the previous one ends (empty
 * tensors occupy no bytes and are skipped). by_name is used as scratch, then sorted by name. */
static ssm_status check_overlaps_and_index(ssm_safetensors *st) {
    st->by_name = malloc(((size_t)st->n + 1) * sizeof *st->by_name);
    if (!st->by_name) return ssm_fail_file(st->path, SSM_ERR_NOMEM, "out of memory for the header");
    for (int i = 0; i < st->n; i++) st->by_name[i] = &st->tensors[i];
    qsort(st->by_name, (size_t)st->n, sizeof *st->by_name, cmp_begin);
    const ssm_st_tensor *prev = NULL;
    for (int i = 0; i < st->n; i++) {
        const ssm_st_tensor *t = st->by_name[i];
        if (t->begin == t->end) continue;
        if (prev && t->begin < prev->end)
            return ssm_fail_file(st->path, SSM_ERR_FORMAT, "tensors '%s' [%llu, %llu] and '%s' [%llu, "
                        "%llu] overlap in the data section", prev->name,
                        (unsigned long long)prev->begin, (unsigned long long)prev->end, t->name,
                        (unsigned long long)t->begin, (unsigned long long)t->end);
        prev = t;
    }
    qsort(st->by_name, (size_t)st->n, sizeof *st->by_name, cmp_name);
    return SSM_OK;
}

ssm_status ssm_safetensors_open(const char *path, ssm_safetensors **out) {
    if (!path || !out) return ssm_set_error(SSM_ERR_ARG, "ssm_safetensors_open: NULL argument");
    *out = NULL;
    ssm_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        return ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", path);
    }
    st->fd = -1;
    json_t *root = NULL;
    ssm_status s = read_header(st, &root);
    if (!s) s = parse_entries(st, root);
    if (!s) s = check_overlaps_and_index(st);
    json_decref(root);
    if (s) {
        ssm_safetensors_close(st);
        return s;
    }
    *out = st;
    return SSM_OK;
}

void ssm_safetensors_close(ssm_safetensors *st) {
    if (!st) return;
    if (st->fd >= 0) close(st->fd);
    for (int i = 0; i < st->n; i++) free(st->tensors[i].name);
    for (int i = 0; i < 2 * st->n_meta; i++) free(st->meta[i]);
    free(st->tensors);
    free(st->by_name);
    free(st->meta);
    free(st->path);
    free(st);
}

int ssm_safetensors_count(const ssm_safetensors *st) { return st ? st->n : 0; }

const ssm_st_tensor *ssm_safetensors_tensor(const ssm_safetensors *st, int i) {
    return st && i >= 0 && i < st->n ? &st->tensors[i] : NULL;
}

const ssm_st_tensor *ssm_safetensors_find(const ssm_safetensors *st, const char *name) {
    if (!st || !name) return NULL;
    ssm_st_tensor key = {.name = (char *)name};
    const ssm_st_tensor *kp = &key;
    const ssm_st_tensor **hit = bsearch(&kp, st->by_name, (size_t)st->n, sizeof *st->by_name,
                                        cmp_name);
    return hit ? *hit : NULL;
}

const char *ssm_safetensors_meta(const ssm_safetensors *st, const char *key) {
    if (!st || !key) return NULL;
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta[2 * i], key) == 0) return st->meta[2 * i + 1];
    return NULL;
}

/* ---- reading data ------------------------------------------------------------------------ */

/* IEEE half to single, exact for every value: normals, subnormals, zeros, infinities, NaNs. */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | mant << 13; /* inf, or NaN keeping its payload */
    } else if (exp != 0) {
        bits = sign | (exp - 15 + 127) << 23 | mant << 13;
    } else {
        float f = ldexpf((float)mant, -24); /* zero or subnormal: mant * 2^-24 */
        return sign ? -f : f;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static uint32_t load_le32(const uint8_t *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void decode_f32(ssm_dtype dtype, const uint8_t *src, float *dst, size_t k) {
    uint32_t bits;
    switch (dtype) {
    case SSM_DTYPE_F32:
        for (size_t i = 0; i < k; i++) bits = load_le32(src + 4 * i), memcpy(&dst[i], &bits, 4);
        break;
    case SSM_DTYPE_BF16: /* bf16 is the upper half of an f32 */
        for (size_t i = 0; i < k; i++) {
            bits = ((uint32_t)src[2 * i] | (uint32_t)src[2 * i + 1] << 8) << 16;
            memcpy(&dst[i], &bits, 4);
        }
        break;
    case SSM_DTYPE_F16:
        for (size_t i = 0; i < k; i++)
            dst[i] = half_to_float((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        break;
    default: /* F64 */
        for (size_t i = 0; i < k; i++) {
            uint64_t b64 = load_le64(src + 8 * i);
            double d;
            memcpy(&d, &b64, sizeof d);
            dst[i] = (float)d;
        }
    }
}

/* Returns the index of the first value outside int32, or k when all fit. */
static size_t decode_i32(ssm_dtype dtype, const uint8_t *src, int32_t *dst, size_t k) {
    for (size_t i = 0; i < k; i++) {
        if (dtype == SSM_DTYPE_U8) {
            dst[i] = src[i];
        } else if (dtype == SSM_DTYPE_I32) {
            dst[i] = (int32_t)load_le32(src + 4 * i);
        } else { /* I64 */
            int64_t v = (int64_t)load_le64(src + 8 * i);
            if (v < INT32_MIN || v > INT32_MAX) return i;
            dst[i] = (int32_t)v;
        }
    }
    return k;
}

static int is_float_dtype(ssm_dtype d) {
    return d == SSM_DTYPE_F32 || d == SSM_DTYPE_F16 || d == SSM_DTYPE_BF16 || d == SSM_DTYPE_F64;
}

static ssm_status lookup(const ssm_safetensors *st, const char *name, const void *dst, size_t n,
                         const ssm_st_tensor **out) {
    if (!st || !name || (!dst && n > 0))
        return ssm_set_error(SSM_ERR_ARG, "ssm_safetensors_read: NULL argument");
    *out = ssm_safetensors_find(st, name);
    if (!*out) return ssm_fail_file(st->path, SSM_ERR_MISSING, "no tensor named '%s'", name);
    if ((*out)->numel != n)
        return ssm_fail_file(st->path, SSM_ERR_ARG, "tensor '%s' has %zu elements, the caller expected %zu",
                    name, (*out)->numel, n);
    return SSM_OK;
}

/* Read the tensor chunk by chunk and decode each chunk into f32 or i32. */
static ssm_status read_converted(const ssm_safetensors *st, const ssm_st_tensor *t, float *f32,
                                 int32_t *i32) {
    size_t es = dtype_size(t->dtype), per = CHUNK_BYTES / es;
    uint8_t *buf = malloc(CHUNK_BYTES);
    if (!buf) return ssm_fail_file(st->path, SSM_ERR_NOMEM, "out of memory reading '%s'", t->name);
    ssm_status s = SSM_OK;
    for (size_t i = 0; i < t->numel && !s; i += per) {
        size_t k = t->numel - i < per ? t->numel - i : per;
        if (pread_full(st->fd, buf, k * es, st->data_start + t->begin + i * es) != 0) {
            s = ssm_fail_file(st->path, SSM_ERR_IO, "cannot read tensor '%s': %s", t->name, io_reason());
        } else if (f32) {
            decode_f32(t->dtype, buf, f32 + i, k);
        } else {
            size_t bad = decode_i32(t->dtype, buf, i32 + i, k);
            if (bad < k)
                s = ssm_fail_file(st->path, SSM_ERR_FORMAT, "tensor '%s': element %zu does not fit in "
                         "32 bits", t->name, i + bad);
        }
    }
    free(buf);
    return s;
}

ssm_status ssm_safetensors_read_f32(const ssm_safetensors *st, const char *name, float *dst,
                                    size_t n) {
    const ssm_st_tensor *t = NULL;
    ssm_status s = lookup(st, name, dst, n, &t);
    if (s) return s;
    if (!is_float_dtype(t->dtype))
        return ssm_fail_file(st->path, SSM_ERR_DTYPE, "tensor '%s' has dtype %s; a floating-point tensor "
                    "(F32, F16, BF16, F64) was expected", name, dtype_name(t->dtype));
    if (t->dtype == SSM_DTYPE_F32 && host_is_little_endian()) { /* the common case: no copy */
        if (pread_full(st->fd, dst, n * 4, st->data_start + t->begin) != 0)
            return ssm_fail_file(st->path, SSM_ERR_IO, "cannot read tensor '%s': %s", name, io_reason());
        return SSM_OK;
    }
    return read_converted(st, t, dst, NULL);
}

ssm_status ssm_safetensors_read_i32(const ssm_safetensors *st, const char *name, int32_t *dst,
                                    size_t n) {
    const ssm_st_tensor *t = NULL;
    ssm_status s = lookup(st, name, dst, n, &t);
    if (s) return s;
    if (is_float_dtype(t->dtype))
        return ssm_fail_file(st->path, SSM_ERR_DTYPE, "tensor '%s' has dtype %s; an integer tensor (I64, "
                    "I32, U8) was expected", name, dtype_name(t->dtype));
    return read_converted(st, t, NULL, dst);
}

/* ---- writing ----------------------------------------------------------------------------- */

static ssm_status add_item(json_t *root, const ssm_st_write_item *it, uint64_t *offset) {
    if (!it->name || it->ndim < 0 || it->ndim > MAX_NDIM)
        return ssm_set_error(SSM_ERR_ARG, "safetensors write: an item has no name or ndim "
                             "outside [0, %d]", MAX_NDIM);
    if (strcmp(it->name, "__metadata__") == 0 || json_object_get(root, it->name))
        return ssm_set_error(SSM_ERR_ARG, "safetensors write: tensor name '%s' is reserved or "
                             "repeated", it->name);
    for (int d = 0; d < it->ndim; d++)
        if (it->shape[d] < 0)
            return ssm_set_error(SSM_ERR_ARG, "safetensors write: tensor '%s' has a negative "
                                 "dimension", it->name);
    uint64_t numel, bytes;
    if (!shape_bytes(it->shape, it->ndim, 4, &numel, &bytes) || (numel && !it->data))
        return ssm_set_error(SSM_ERR_ARG, "safetensors write: tensor '%s' is too large or has "
                             "no data", it->name);
    json_t *shape = json_array();
    for (int d = 0; d < it->ndim; d++) json_array_append_new(shape, json_integer(it->shape[d]));
    json_t *entry = json_pack("{s:s, s:o, s:[I, I]}", "dtype", "F32", "shape", shape,
                              "data_offsets", (json_int_t)*offset,
                              (json_int_t)(*offset + bytes));
    if (!entry || json_object_set_new(root, it->name, entry) != 0)
        return ssm_set_error(SSM_ERR_NOMEM, "safetensors write: out of memory for the header");
    *offset += bytes;
    return SSM_OK;
}

static ssm_status add_metadata(json_t *root, const char *const *kv) {
    json_t *meta = json_object();
    if (!meta || json_object_set_new(root, "__metadata__", meta) != 0)
        return ssm_set_error(SSM_ERR_NOMEM, "safetensors write: out of memory for the header");
    for (int i = 0; kv && kv[i]; i += 2) {
        if (!kv[i + 1])
            return ssm_set_error(SSM_ERR_ARG, "safetensors write: metadata key '%s' has no value",
                                 kv[i]);
        if (json_object_get(meta, kv[i]))
            return ssm_set_error(SSM_ERR_ARG, "safetensors write: metadata key '%s' is given "
                                 "twice", kv[i]);
        json_t *v = json_string(kv[i + 1]);
        if (!v)
            return ssm_set_error(SSM_ERR_ARG, "safetensors write: metadata value of '%s' is not "
                                 "valid UTF-8", kv[i]);
        json_object_set_new(meta, kv[i], v);
    }
    return SSM_OK;
}

/* The header JSON, padded with spaces to a multiple of 8 bytes (as safetensors does) so that
 * the data section starts aligned. */
static ssm_status build_header(const ssm_st_write_item *items, int n, const char *const *kv,
                               char **out, size_t *len) {
    json_t *root = json_object();
    if (!root) return ssm_set_error(SSM_ERR_NOMEM, "safetensors write: out of memory");
    /* metadata first, like the safetensors library */
    ssm_status s = kv && kv[0] ? add_metadata(root, kv) : SSM_OK;
    uint64_t offset = 0;
    for (int i = 0; i < n && !s; i++) s = add_item(root, &items[i], &offset);
    char *json = s ? NULL : json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (s) return s;
    if (!json) return ssm_set_error(SSM_ERR_NOMEM, "safetensors write: out of memory");
    size_t raw = strlen(json), padded = (raw + 7) / 8 * 8;
    char *buf = realloc(json, padded + 1);
    if (!buf) {
        free(json);
        return ssm_set_error(SSM_ERR_NOMEM, "safetensors write: out of memory");
    }
    memset(buf + raw, ' ', padded - raw);
    buf[padded] = '\0';
    *out = buf;
    *len = padded;
    return SSM_OK;
}

static int write_f32_le(FILE *f, const float *x, size_t n) {
    if (host_is_little_endian()) return fwrite(x, 4, n, f) == n ? 0 : -1;
    uint8_t buf[4096];
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        for (; k < sizeof buf / 4 && i < n; k++, i++) {
            uint32_t b;
            memcpy(&b, &x[i], 4);
            for (int j = 0; j < 4; j++) buf[4 * k + j] = (uint8_t)(b >> (8 * j));
        }
        if (fwrite(buf, 4, k, f) != k) return -1;
    }
    return 0;
}

/* Write everything to f; -1 with errno set on failure. */
static int write_all(FILE *f, const char *header, size_t hlen, const ssm_st_write_item *items,
                     int n) {
    uint8_t len[8];
    store_le64(len, hlen);
    if (fwrite(len, 1, 8, f) != 8 || fwrite(header, 1, hlen, f) != hlen) return -1;
    for (int i = 0; i < n; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < items[i].ndim; d++) numel *= (uint64_t)items[i].shape[d];
        if (write_f32_le(f, items[i].data, (size_t)numel) != 0) return -1;
    }
    return 0;
}

/* Make the rename durable too; best effort (some filesystems refuse to fsync a directory). */
static void sync_parent_dir(const char *path) {
    char *copy = strdup(path);
    if (!copy) return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(copy);
}

ssm_status ssm_file_commit(FILE *f, int bad, const char *tmp, const char *path) {
    int err = errno;
    if (!bad && (fflush(f) != 0 || fsync(fileno(f)) != 0)) bad = 1, err = errno;
    if (fclose(f) != 0 && !bad) bad = 1, err = errno;
    ssm_status s = SSM_OK;
    if (bad)
        s = ssm_set_error(SSM_ERR_IO, "%s: cannot write: %s", tmp, strerror(err ? err : EIO));
    else if (rename(tmp, path) != 0)
        s = ssm_set_error(SSM_ERR_IO, "%s: cannot rename %s to it: %s", path, tmp, strerror(errno));
    if (s) unlink(tmp); /* never leave a half-written file behind */
    else sync_parent_dir(path);
    return s;
}

ssm_status ssm_write_file_atomic(const char *path, const char *tmp, const void *data, size_t len) {
    FILE *f = fopen(tmp, "wb");
    if (!f) return ssm_set_error(SSM_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    errno = 0;
    return ssm_file_commit(f, len && fwrite(data, 1, len, f) != len, tmp, path);
}

ssm_status ssm_safetensors_write(const char *path, const ssm_st_write_item *items, int n_items,
                                 const char *const *meta_kv) {
    if (!path || n_items < 0 || (n_items > 0 && !items))
        return ssm_set_error(SSM_ERR_ARG, "ssm_safetensors_write: bad arguments");
    char *header = NULL;
    size_t hlen = 0;
    ssm_status s = build_header(items, n_items, meta_kv, &header, &hlen);
    if (s) return s;
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) {
        free(header);
        return ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        s = ssm_set_error(SSM_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    } else {
        errno = 0;
        s = ssm_file_commit(f, write_all(f, header, hlen, items, n_items), tmp, path);
    }
    free(tmp);
    free(header);
    return s;
}
