/* ply.c: PLY (Turk's polygon file format): an ASCII header of elements and their properties,
 * then the items as ASCII, binary little endian or binary big endian. Only the vertex
 * element's x, y and z are kept; every other element and property is read past by its type
 * (lists by their count), so that a header whose counts do not match the data is caught: the
 * data must end exactly where the last declared item does, and an ASCII item fill its line. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reader.h"

enum { MAX_PROPS = 64, MAX_ELEMENTS = 16, NAME = 64 };
enum { ASCII, LITTLE, BIG };

typedef struct ply_type { const char *name, *alias; int size, integer; } ply_type;
static const ply_type types[] = {
    {"char", "int8", 1, 1}, {"uchar", "uint8", 1, 1}, {"short", "int16", 2, 1}, {"ushort", "uint16", 2, 1},
    {"int", "int32", 4, 1}, {"uint", "uint32", 4, 1}, {"float", "float32", 4, 0}, {"double", "float64", 8, 0},
};
enum { CHAR, UCHAR, SHORT, USHORT, INT, UINT, FLOAT, DOUBLE, N_TYPES };

typedef struct ply_prop { char name[NAME]; int type, list, count_type; } ply_prop;
typedef struct ply_element {
    char name[NAME];
    long long count;
    ply_prop props[MAX_PROPS];
    int n_props, line;
} ply_element;

typedef struct ply_reader {
    const char *path, *data;
    size_t size, pos;    /* binary: the byte offset */
    int format;
    text_cursor text;    /* ASCII: one item a line */
    int item_line;       /* ASCII: the line of the item being read */
    ply_element el[MAX_ELEMENTS];
    int n_el;
} ply_reader;

static int type_of(const char *s) {
    for (int t = 0; t < N_TYPES; t++)
        if (!strcmp(s, types[t].name) || !strcmp(s, types[t].alias)) return t;
    return -1;
}

/* The header, line by line; r->pos ends on the first data byte. */
static ssm_status read_header(ply_reader *r) {
    const char *p = r->data, *end = r->data + r->size;
    int line = 0, format_seen = 0;
    for (;;) {
        line++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: the header has no end_header line", r->path, line);
        char buf[512];
        size_t len = (size_t)(nl - p);
        if (len && p[len - 1] == '\r') len--;
        if (len >= sizeof buf) return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: header line too long", r->path, line);
        memcpy(buf, p, len);
        buf[len] = 0;
        p = nl + 1;
        char *save = NULL, *word = strtok_r(buf, " \t", &save);
        if (line == 1) {
            if (!word || strcmp(word, "ply"))
                return ssm_set_error(SSM_ERR_FORMAT, "%s:1: not a PLY file (it does not start with 'ply')", r->path);
            continue;
        }
        if (!word || !strcmp(word, "comment") || !strcmp(word, "obj_info")) continue;
        if (!strcmp(word, "end_header")) break;
        char *a = strtok_r(NULL, " \t", &save), *b = strtok_r(NULL, " \t", &save);
        char *c = strtok_r(NULL, " \t", &save), *d = strtok_r(NULL, " \t", &save);
        if (!strcmp(word, "format")) {
            static const char *const formats[] = {"ascii", "binary_little_endian", "binary_big_endian"};
            int f = -1;
            for (int i = 0; i < 3; i++)
                if (a && !strcmp(a, formats[i])) f = i;
            if (f < 0 || !b || strcmp(b, "1.0"))
                return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: unknown format '%s %s' (ascii, binary_little_endian "
                                     "or binary_big_endian, version 1.0)", r->path, line, a ? a : "", b ? b : "");
            r->format = f, format_seen = 1;
        } else if (!strcmp(word, "element")) {
            char *e;
            long long n = b ? strtoll(b, &e, 10) : -1;
            if (!a || !b || *e || n < 0 || c)
                return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: expected 'element NAME COUNT'", r->path, line);
            if (r->n_el == MAX_ELEMENTS)
                return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: more than %d elements", r->path, line, MAX_ELEMENTS);
            ply_element *el = &r->el[r->n_el++];
            snprintf(el->name, NAME, "%s", a);
            el->count = n, el->line = line;
        } else if (!strcmp(word, "property")) {
            if (!r->n_el) return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: a property before any element", r->path, line);
            ply_element *el = &r->el[r->n_el - 1];
            if (el->n_props == MAX_PROPS)
                return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: more than %d properties", r->path, line, MAX_PROPS);
            ply_prop *pr = &el->props[el->n_props];
            int list = a && !strcmp(a, "list");
            const char *type = list ? c : a, *name = list ? d : b;
            pr->list = list;
            pr->type = type ? type_of(type) : -1;
            pr->count_type = list && b ? type_of(b) : 0;
            if (pr->type < 0 || pr->count_type < 0 || !name || (list && !types[pr->count_type].integer))
                return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: expected 'property TYPE NAME' or 'property list "
                                     "COUNT_TYPE TYPE NAME' with types among char uchar short ushort int uint "
                                     "float double", r->path, line);
            snprintf(pr->name, NAME, "%s", name);
            el->n_props++;
        } else {
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: unknown header line '%s'", r->path, line, word);
        }
    }
    if (!format_seen) return ssm_set_error(SSM_ERR_FORMAT, "%s: the header has no format line", r->path);
    r->pos = (size_t)(p - r->data);
    r->text = (text_cursor){.p = p, .end = end, .line = line + 1};
    return SSM_OK;
}

static void where(ply_reader *r, char *buf, size_t n) {
    if (r->format == ASCII) text_skip(&r->text), snprintf(buf, n, "%d", r->text.line);
    else snprintf(buf, n, " byte %zu", r->pos);
}

static ssm_status ended(ply_reader *r, const ply_element *el, long long item) {
    char at[64];
    where(r, at, sizeof at);
    return ssm_set_error(SSM_ERR_FORMAT, "%s:%s: the file ends in element '%s' item %lld of the %lld its "
                         "header declares (line %d), after %zu bytes: truncated, or the header's count is wrong",
                         r->path, at, el->name, item + 1, el->count, el->line, r->size);
}

/* One value of type t at the cursor. */
static ssm_status read_value(ply_reader *r, const ply_element *el, long long item, int t, double *v) {
    if (r->format == ASCII) {
        const char *tok;
        size_t len;
        int line;
        if (!text_token(&r->text, &tok, &len, &line)) return ended(r, el, item);
        if (line != r->item_line)
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: element '%s' item %lld ends before its %d "
                                 "properties do (the header's properties or counts do not match the data)",
                                 r->path, r->item_line, el->name, item + 1, el->n_props);
        if (!text_number(tok, len, v) || (types[t].integer && !text_whole(*v, -0x1p63, 0x1p63)))
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: '%.*s' in element '%s' item %lld is not %s %s",
                                 r->path, line, (int)(len < 40 ? len : 40), tok, el->name, item + 1,
                                 types[t].integer ? "an integer of type" : "a number of type", types[t].name);
        return SSM_OK;
    }
    int size = types[t].size;
    if (r->pos + (size_t)size > r->size) return ended(r, el, item);
    unsigned char b[8];
    for (int i = 0; i < size; i++) b[i] = (unsigned char)r->data[r->pos + (r->format == BIG ? size - 1 - i : i)];
    r->pos += (size_t)size;
    uint64_t u = 0;
    for (int i = size - 1; i >= 0; i--) u = u << 8 | b[i];
    switch (t) { /* b is little endian now */
    case CHAR: *v = (int8_t)u; break;
    case UCHAR: *v = (uint8_t)u; break;
    case SHORT: *v = (int16_t)u; break;
    case USHORT: *v = (uint16_t)u; break;
    case INT: *v = (int32_t)u; break;
    case UINT: *v = (uint32_t)u; break;
    case FLOAT: { uint32_t w = (uint32_t)u; float f; memcpy(&f, &w, 4); *v = f; break; }
    default: { double d; memcpy(&d, &u, 8); *v = d; break; }
    }
    return SSM_OK;
}

/* A bound on an element's count, to refuse a header's absurd counts before allocating: each
 * ASCII item takes at least 2 characters a property; a binary item at least a byte (so that a
 * truncated binary file is reported where its data ends). */
static size_t min_item_size(const ply_reader *r, const ply_element *el) {
    return r->format == ASCII && el->n_props ? 2 * (size_t)el->n_props : 1;
}

ssm_status points_read_ply(const char *path, const char *data, size_t size, point_set *out) {
    ply_reader *r = calloc(1, sizeof *r);
    if (!r) return ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", path);
    r->path = path, r->data = data, r->size = size;
    ssm_status s = read_header(r);
    int vx = -1, axis[3] = {-1, -1, -1};
    for (int e = 0; !s && e < r->n_el; e++) {
        ply_element *el = &r->el[e];
        if ((unsigned long long)el->count > (size - r->pos + 1) / min_item_size(r, el) + 1)
            s = ssm_set_error(SSM_ERR_FORMAT, "%s:%d: the header declares %lld '%s' items, more than the "
                              "%zu bytes after the header can hold", path, el->line, el->count, el->name,
                              size - r->pos);
        if (strcmp(el->name, "vertex")) continue;
        vx = e;
        for (int i = 0; i < el->n_props; i++)
            for (int d = 0; d < 3; d++)
                if (!el->props[i].list && !strcmp(el->props[i].name, (const char *[]){"x", "y", "z"}[d])) axis[d] = i;
    }
    if (!s && (vx < 0 || axis[0] < 0 || axis[1] < 0 || axis[2] < 0))
        s = ssm_set_error(SSM_ERR_FORMAT, "%s: the header declares no 'vertex' element with properties x, y "
                          "and z", path);
    if (!s && r->el[vx].count > (1 << 28))
        s = ssm_set_error(SSM_ERR_FORMAT, "%s:%d: %lld vertices: more than this reader takes", path,
                          r->el[vx].line, r->el[vx].count);
    if (!s) {
        out->n = (int)r->el[vx].count;
        if (!(out->xyz = malloc((size_t)out->n * 3 * sizeof(float) + 1)))
            s = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory for %d points", path, out->n);
    }
    for (int e = 0; !s && e < r->n_el; e++) {
        const ply_element *el = &r->el[e];
        for (long long item = 0; !s && item < el->count; item++) {
            double xyz[3] = {0, 0, 0};
            char at[64];
            where(r, at, sizeof at);
            r->item_line = r->text.line;
            for (int i = 0; !s && i < el->n_props; i++) {
                const ply_prop *pr = &el->props[i];
                double v;
                if (!pr->list) {
                    if (!(s = read_value(r, el, item, pr->type, &v)))
                        for (int d = 0; d < 3; d++)
                            if (e == vx && i == axis[d]) xyz[d] = v;
                    continue;
                }
                if ((s = read_value(r, el, item, pr->count_type, &v))) break;
                if (!(v >= 0 && v <= 1e6)) { /* NaN too */
                    where(r, at, sizeof at);
                    s = ssm_set_error(SSM_ERR_FORMAT, "%s:%s: element '%s' item %lld: a list of %g values "
                                      "(the header's counts may not match the data)", path, at, el->name,
                                      item + 1, v);
                }
                for (long long k = 0; !s && k < (long long)v; k++) s = read_value(r, el, item, pr->type, &(double){0});
            }
            if (!s && r->format == ASCII) { /* the item's line must end with it */
                const char *q = r->text.p;
                while (q < r->text.end && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
                if (q < r->text.end && *q != '\n')
                    s = ssm_set_error(SSM_ERR_FORMAT, "%s:%d: element '%s' item %lld has more values than "
                                      "its %d properties (the header's properties or counts do not match "
                                      "the data)", path, r->item_line, el->name, item + 1, el->n_props);
            }
            if (!s && e == vx) s = points_store(path, at, out, (int)item, xyz);
        }
    }
    if (!s) { /* nothing may follow the last item */
        const char *tok;
        size_t len;
        int line;
        if (r->format == ASCII && text_token(&r->text, &tok, &len, &line))
            s = ssm_set_error(SSM_ERR_FORMAT, "%s:%d: data after the last item the header declares (the "
                              "header's counts do not match the data)", path, line);
        else if (r->format != ASCII && r->pos < size)
            s = ssm_set_error(SSM_ERR_FORMAT, "%s: byte %zu: %zu bytes after the last item the header "
                              "declares (the header's counts do not match the data)", path, r->pos, size - r->pos);
    }
    free(r);
    return s;
}
