/* score_plot.h: ssm-score --plot FILE.svg|.png: the per-symbol scores of the records drawn as
 * curves (one per record, the first 8), each the mean over consecutive windows, in bits. */
#ifndef SSM_SCORE_PLOT_H
#define SSM_SCORE_PLOT_H

#include <stddef.h>

#include "ssm/ssm.h"

typedef struct score_plot score_plot;

/* entropy: the values are entropies (else log p); symbol: "base", "byte", "sample"...;
 * window_s > 0: windows of that many seconds (audio --per-window), x in seconds. */
ssm_status score_plot_create(int entropy, const char *symbol, double window_s, score_plot **out);
/* One record's values (length; NaN: not scored); rc: its reverse strand's, position
 * length - 1 - i for base i, averaged in (or NULL). seconds: its duration (audio), else 0. */
ssm_status score_plot_add(score_plot *p, const char *id, const float *values, const float *rc,
                          size_t length, double seconds);
ssm_status score_plot_write(score_plot *p, const char *path);
void score_plot_free(score_plot *p);

#endif
