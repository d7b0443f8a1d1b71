/* report.h: runs/NAME/report.html, ssm-train's report for a browser: the training and
 * validation curves against the Markov baseline, the learning rate, tokens/s, the model and
 * the recipe. Written from the run directory's metrics.jsonl and recipe.yaml. */
#ifndef SSM_REPORT_H
#define SSM_REPORT_H

#include "ssm/ssm.h"

/* (Re)write RUN_DIR/report.html (to report.html.tmp, then renamed: a browser never sees half
 * a page). total_steps: the run's train.steps, for the progress line. */
ssm_status report_write(const char *run_dir, const ssm_model *model, int64_t total_steps);
/* report_write, with a note on stderr instead of a failure (the report never stops a run). */
void train_report(const char *run_dir, const ssm_model *model, int64_t total_steps);

#endif
