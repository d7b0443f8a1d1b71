/* glyphs.c: points-glyphs, the converter that made data/points: the outlines of characters in
 * font files (read through FreeType), each sampled as M points evenly spaced along its contours
 * (arc length; curves flattened into 16 segments), written as binary little-endian PLY with
 * short x y z in font units (z = 0): OUT/CHAR_NAME/FONT_STEM.ply.
 *   points-glyphs OUT M CHARS FONT...     e.g. points-glyphs data/points/train 512 0123456789 a.ttf */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <ft2build.h>
#include FT_FREETYPE_H
#include FT_OUTLINE_H

typedef struct path { double *xy; int n, cap; int *starts, n_starts, starts_cap; double cx, cy; } path;

static void push(path *p, double x, double y) {
    if (p->n == p->cap) p->cap = p->cap ? 2 * p->cap : 256, p->xy = realloc(p->xy, (size_t)p->cap * 2 * sizeof(double));
    p->xy[2 * p->n] = x, p->xy[2 * p->n + 1] = y, p->n++;
    p->cx = x, p->cy = y;
}
static int move_to(const FT_Vector *to, void *u) {
    path *p = u;
    if (p->n_starts == p->starts_cap)
        p->starts_cap = p->starts_cap ? 2 * p->starts_cap : 16, p->starts = realloc(p->starts, (size_t)p->starts_cap * sizeof(int));
    p->starts[p->n_starts++] = p->n;
    push(p, to->x, to->y);
    return 0;
}
static int line_to(const FT_Vector *to, void *u) { push(u, to->x, to->y); return 0; }
static int conic_to(const FT_Vector *c, const FT_Vector *to, void *u) {
    path *p = u;
    double x0 = p->cx, y0 = p->cy;
    for (int i = 1; i <= 16; i++) {
        double t = i / 16.0, a = (1 - t) * (1 - t), b = 2 * t * (1 - t), d = t * t;
        push(p, a * x0 + b * c->x + d * to->x, a * y0 + b * c->y + d * to->y);
    }
    return 0;
}
static int cubic_to(const FT_Vector *c1, const FT_Vector *c2, const FT_Vector *to, void *u) {
    path *p = u;
    double x0 = p->cx, y0 = p->cy;
    for (int i = 1; i <= 16; i++) {
        double t = i / 16.0, s = 1 - t, a = s * s * s, b = 3 * s * s * t, c = 3 * s * t * t, d = t * t * t;
        push(p, a * x0 + b * c1->x + c * c2->x + d * to->x, a * y0 + b * c1->y + c * c2->y + d * to->y);
    }
    return 0;
}

/* M points at arc lengths (i + 1/2) L / M along the closed contours of p. */
static int sample(const path *p, int M, short *out) {
    double total = 0;
    for (int pass = 0; pass < 2; pass++) {
        double at = 0;
        int m = 0;
        for (int c = 0; c < p->n_starts; c++) {
            int a = p->starts[c], b = c + 1 < p->n_starts ? p->starts[c + 1] : p->n;
            for (int i = a; i < b; i++) {
                int j = i + 1 < b ? i + 1 : a; /* closing segment */
                double x0 = p->xy[2 * i], y0 = p->xy[2 * i + 1], x1 = p->xy[2 * j], y1 = p->xy[2 * j + 1];
                double len = hypot(x1 - x0, y1 - y0);
                if (pass == 0) { total += len; continue; }
                while (m < M && (m + 0.5) * total / M < at + len) {
                    double t = ((m + 0.5) * total / M - at) / len;
                    out[3 * m] = (short)lrint(x0 + t * (x1 - x0));
                    out[3 * m + 1] = (short)lrint(y0 + t * (y1 - y0));
                    out[3 * m + 2] = 0;
                    m++;
                }
                at += len;
            }
        }
        if (pass == 0 && !(total > 0)) return -1;
        if (pass == 1) return m == M ? 0 : -1;
    }
    return -1;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: points-glyphs OUT M CHARS FONT...\n");
        return 2;
    }
    const char *out = argv[1], *chars = argv[3];
    int M = atoi(argv[2]);
    FT_Library lib;
    if (M < 1 || FT_Init_FreeType(&lib)) return fprintf(stderr, "points-glyphs: bad M or no FreeType\n"), 1;
    mkdir(out, 0777);
    short *pts = malloc((size_t)M * 3 * sizeof(short));
    int rc = 0;
    for (int f = 4; f < argc; f++) {
        FT_Face face;
        if (FT_New_Face(lib, argv[f], 0, &face)) {
            fprintf(stderr, "points-glyphs: %s: not a font FreeType reads\n", argv[f]);
            rc = 1;
            continue;
        }
        const char *base = strrchr(argv[f], '/') ? strrchr(argv[f], '/') + 1 : argv[f];
        char stem[256];
        snprintf(stem, sizeof stem, "%s", base);
        if (strrchr(stem, '.')) *strrchr(stem, '.') = 0;
        for (const char *ch = chars; *ch; ch++) {
            path p = {0};
            FT_Outline_Funcs fn = {move_to, line_to, conic_to, cubic_to, 0, 0};
            if (FT_Load_Char(face, (FT_ULong)(unsigned char)*ch, FT_LOAD_NO_SCALE | FT_LOAD_NO_BITMAP) ||
                face->glyph->format != FT_GLYPH_FORMAT_OUTLINE ||
                FT_Outline_Decompose(&face->glyph->outline, &fn, &p) || sample(&p, M, pts)) {
                fprintf(stderr, "points-glyphs: %s: no outline for '%c'\n", argv[f], *ch);
                rc = 1;
            } else {
                char dir[4096], file[4400];
                snprintf(dir, sizeof dir, "%s/%c", out, *ch);
                mkdir(dir, 0777);
                snprintf(file, sizeof file, "%s/%s.ply", dir, stem);
                FILE *o = fopen(file, "wb");
                if (!o) return fprintf(stderr, "points-glyphs: %s: %s\n", file, strerror(errno)), 1;
                fprintf(o, "ply\nformat binary_little_endian 1.0\ncomment '%c' of %s %s (%s), sampled by "
                        "points-glyphs\nelement vertex %d\nproperty short x\nproperty short y\nproperty "
                        "short z\nend_header\n", *ch, face->family_name, face->style_name, base, M);
                for (int i = 0; i < 3 * M; i++) fputc(pts[i] & 0xff, o), fputc((pts[i] >> 8) & 0xff, o);
                fclose(o);
            }
            free(p.xy), free(p.starts);
        }
        FT_Done_Face(face);
    }
    free(pts);
    FT_Done_FreeType(lib);
    return rc;
}
