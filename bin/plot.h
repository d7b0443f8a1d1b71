/* plot.h: line charts drawn with cairo, for report.html (SVG inline) and ssm-score --plot
 * (an SVG or PNG file). One chart: a frame with ticked axes, one polyline per series, a legend. */
#ifndef SSM_PLOT_H
#define SSM_PLOT_H

#include <stddef.h>

#include "ssm/ssm.h"

typedef struct plot_series {
    const char *label;
    const double *x, *y; /* (n) points; a NaN y breaks the line */
    size_t n;
    int dashed;          /* 1: a dashed line (a reference level such as the baseline) */
    int dots;            /* 1: a dot at each point too (few points, e.g. validations) */
} plot_series;

typedef struct plot_chart {
    const char *title, *xlabel, *ylabel;
    const plot_series *series;
    int n_series;
} plot_chart;

/* The chart as SVG text (malloc'd, NUL-terminated) of width x height points. */
ssm_status plot_svg(const plot_chart *chart, double width, double height, char **svg);
/* The chart into path: .svg or .png by its extension (written to path.tmp, then renamed). */
ssm_status plot_write(const plot_chart *chart, double width, double height, const char *path);

#endif
