/* plot.c: line charts with cairo (plot.h). Axes get "nice" ticks (1, 2, 5 x 10^k); each series
 * takes the next colour of a fixed palette so a chart reads the same in every report. */
#include "plot.h"

#include <cairo-svg.h>
#include <cairo.h>
#include <fontconfig/fontconfig.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double palette[][3] = {
    {0.12, 0.47, 0.71}, {0.84, 0.15, 0.16}, {0.17, 0.63, 0.17}, {1.00, 0.50, 0.05},
    {0.58, 0.40, 0.74}, {0.55, 0.34, 0.29}, {0.89, 0.47, 0.76}, {0.50, 0.50, 0.50},
};
enum { N_COLOURS = sizeof palette / sizeof palette[0] };

typedef struct range { double lo, hi; } range;

/* Tick spacing of about n ticks over r: 1, 2 or 5 times a power of ten. */
static double tick_step(range r, int n) {
    double raw = (r.hi - r.lo) / n, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static range data_range(const plot_chart *c, int axis_y) {
    range r = {INFINITY, -INFINITY};
    for (int s = 0; s < c->n_series; s++)
        for (size_t i = 0; i < c->series[s].n; i++) {
            double v = axis_y ? c->series[s].y[i] : c->series[s].x[i];
            if (isfinite(v)) r.lo = fmin(r.lo, v), r.hi = fmax(r.hi, v);
        }
    if (!(r.lo <= r.hi)) r = (range){0, 1};
    if (r.hi - r.lo < 1e-12 * fmax(1, fabs(r.hi))) r.lo -= 0.5, r.hi += 0.5; /* one value */
    if (axis_y) { /* a margin above and below the curves */
        double pad = 0.05 * (r.hi - r.lo);
        r.lo -= pad, r.hi += pad;
    }
    return r;
}

static void text_at(cairo_t *cr, double x, double y, const char *s, double align_x, double align_y) {
    cairo_text_extents_t e;
    cairo_text_extents(cr, s, &e);
    cairo_move_to(cr, x - align_x * e.width - e.x_bearing, y - align_y * e.height - e.y_bearing);
    cairo_show_text(cr, s);
}

static void tick_label(double v, char *buf, size_t size) {
    if (fabs(v) >= 1e5 || (fabs(v) < 1e-4 && v != 0)) snprintf(buf, size, "%.1e", v);
    else snprintf(buf, size, "%g", fabs(v) < 1e-12 ? 0.0 : v);
}

static void draw(cairo_t *cr, const plot_chart *c, double W, double H) {
    const double left = 64, right = 16, top = 30, bottom = 42;
    double pw = W - left - right, ph = H - top - bottom;
    range rx = data_range(c, 0), ry = data_range(c, 1);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, 11);
    char buf[64];
    /* grid and tick labels */
    cairo_set_line_width(cr, 1);
    for (int axis = 0; axis < 2; axis++) {
        range r = axis ? ry : rx;
        double step = tick_step(r, axis ? 5 : 6);
        for (double v = ceil(r.lo / step) * step; v <= r.hi + 1e-9 * step; v += step) {
            double px = left + (v - rx.lo) / (rx.hi - rx.lo) * pw;
            double py = top + ph - (v - ry.lo) / (ry.hi - ry.lo) * ph;
            cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
            if (axis) cairo_move_to(cr, left, py), cairo_line_to(cr, left + pw, py);
            else cairo_move_to(cr, px, top), cairo_line_to(cr, px, top + ph);
            cairo_stroke(cr);
            cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
            tick_label(v, buf, sizeof buf);
            if (axis) text_at(cr, left - 5, py, buf, 1, 0.5);
            else text_at(cr, px, top + ph + 5, buf, 0.5, 0);
        }
    }
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_rectangle(cr, left, top, pw, ph);
    cairo_stroke(cr);
    if (c->xlabel) text_at(cr, left + pw / 2, H - 4, c->xlabel, 0.5, 1);
    if (c->ylabel) {
        cairo_save(cr);
        cairo_translate(cr, 12, top + ph / 2);
        cairo_rotate(cr, -M_PI / 2);
        text_at(cr, 0, 0, c->ylabel, 0.5, 0.5);
        cairo_restore(cr);
    }
    if (c->title) {
        cairo_set_font_size(cr, 13);
        text_at(cr, left, 8, c->title, 0, 0);
        cairo_set_font_size(cr, 11);
    }
    /* the series, clipped to the frame */
    cairo_save(cr);
    cairo_rectangle(cr, left, top, pw, ph);
    cairo_clip(cr);
    cairo_set_line_width(cr, 1.5);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    for (int s = 0; s < c->n_series; s++) {
        const plot_series *se = &c->series[s];
        const double *rgb = palette[s % N_COLOURS];
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        double dash[] = {6, 4};
        cairo_set_dash(cr, dash, se->dashed ? 2 : 0, 0);
        int pen_down = 0;
        for (size_t i = 0; i < se->n; i++) {
            double y = se->y[i];
            if (!isfinite(y) || !isfinite(se->x[i])) { pen_down = 0; continue; }
            double px = left + (se->x[i] - rx.lo) / (rx.hi - rx.lo) * pw;
            double py = top + ph - (y - ry.lo) / (ry.hi - ry.lo) * ph;
            if (pen_down) cairo_line_to(cr, px, py);
            else cairo_move_to(cr, px, py);
            pen_down = 1;
        }
        cairo_stroke(cr);
        for (size_t i = 0; se->dots && i < se->n; i++) {
            double y = se->y[i];
            if (!isfinite(y)) continue;
            cairo_arc(cr, left + (se->x[i] - rx.lo) / (rx.hi - rx.lo) * pw,
                      top + ph - (y - ry.lo) / (ry.hi - ry.lo) * ph, 3, 0, 2 * M_PI);
            cairo_fill(cr);
        }
    }
    cairo_restore(cr);
    /* the legend, top right inside the frame */
    double ly = top + 8;
    for (int s = 0; s < c->n_series; s++, ly += 15) {
        const double *rgb = palette[s % N_COLOURS];
        cairo_text_extents_t e;
        cairo_text_extents(cr, c->series[s].label, &e);
        double lx = left + pw - 8 - e.x_advance;
        cairo_set_source_rgba(cr, 1, 1, 1, 0.8);
        cairo_rectangle(cr, lx - 26, ly - 6, e.x_advance + 30, 14);
        cairo_fill(cr);
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        double dash[] = {6, 4};
        cairo_set_dash(cr, dash, c->series[s].dashed ? 2 : 0, 0);
        cairo_move_to(cr, lx - 24, ly), cairo_line_to(cr, lx - 4, ly);
        cairo_stroke(cr);
        cairo_set_dash(cr, dash, 0, 0);
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        text_at(cr, lx, ly, c->series[s].label, 0, 0.5);
    }
}

/* cairo keeps its font caches, and fontconfig its configuration, for the life of the process:
 * release both at exit so that LeakSanitizer sees what the programs themselves leak. */
static void release_fonts(void) {
    cairo_debug_reset_static_data();
    FcFini();
}

static cairo_t *start_drawing(cairo_surface_t *surface) {
    static int registered;
    if (!registered) registered = 1, atexit(release_fonts);
    return cairo_create(surface);
}

static cairo_status_t to_memstream(void *closure, const unsigned char *data, unsigned int length) {
    return fwrite(data, 1, length, closure) == length ? CAIRO_STATUS_SUCCESS : CAIRO_STATUS_WRITE_ERROR;
}

ssm_status plot_svg(const plot_chart *chart, double width, double height, char **svg) {
    size_t len = 0;
    *svg = NULL;
    FILE *f = open_memstream(svg, &len);
    if (!f) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for a chart");
    cairo_surface_t *surface = cairo_svg_surface_create_for_stream(to_memstream, f, width, height);
    cairo_t *cr = start_drawing(surface);
    draw(cr, chart, width, height);
    cairo_destroy(cr);
    cairo_surface_finish(surface);
    cairo_status_t st = cairo_surface_status(surface);
    cairo_surface_destroy(surface);
    if (fclose(f) || st) {
        free(*svg);
        *svg = NULL;
        return ssm_set_error(SSM_ERR_NOMEM, "cannot draw the chart '%s': %s", chart->title ? chart->title : "",
                             cairo_status_to_string(st));
    }
    return SSM_OK;
}

ssm_status plot_write(const plot_chart *chart, double width, double height, const char *path) {
    size_t n = strlen(path);
    int png = n > 4 && !strcasecmp(path + n - 4, ".png");
    if (!png && !(n > 4 && !strcasecmp(path + n - 4, ".svg")))
        return ssm_set_error(SSM_ERR_ARG, "%s: a plot is written as .svg or .png", path);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    cairo_surface_t *surface = png ? cairo_image_surface_create(CAIRO_FORMAT_RGB24, (int)width, (int)height)
                                   : cairo_svg_surface_create(tmp, width, height);
    cairo_t *cr = start_drawing(surface);
    draw(cr, chart, width, height);
    cairo_destroy(cr);
    cairo_status_t st = png ? cairo_surface_write_to_png(surface, tmp) : CAIRO_STATUS_SUCCESS;
    cairo_surface_finish(surface); /* an SVG is complete once finished */
    if (!st) st = cairo_surface_status(surface);
    cairo_surface_destroy(surface);
    if (st || rename(tmp, path)) {
        remove(tmp);
        return ssm_set_error(SSM_ERR_IO, "%s: cannot write the plot: %s", path,
                             st ? cairo_status_to_string(st) : "rename failed");
    }
    return SSM_OK;
}
