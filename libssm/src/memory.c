/* memory.c: the host memory a training plan needs, and what the machine has left, so that a
 * plan too large is refused before anything is allocated (docs/reliability.md). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "layers.h"

/* What build_tensor_table counts: embedding, per layer its norm and its kind's tensors, norm_f. */
static double param_floats(const ssm_config *c) {
    double n = (double)c->vocab_size * c->d_model + c->d_model;
    for (int i = 0; i < c->n_layer; i++) {
        const ssm_layer_kind_ops *k = ssm_kind_of(c, i);
        int64_t shape[SSM_MIXER_MAX_TENSORS][3];
        int ndim[SSM_MIXER_MAX_TENSORS];
        k->shapes(c, shape, ndim);
        n += c->d_model;
        for (int j = 0; j < k->n_tensors; j++) {
            double e = 1;
            for (int d = 0; d < ndim[j]; d++) e *= (double)shape[j][d];
            n += e;
        }
    }
    return n;
}

ssm_status ssm_plan_training_memory(const ssm_config *config, int B, int L, ssm_memory_plan *out) {
    if (!config || !out || B <= 0 || L <= 0)
        return ssm_set_error(SSM_ERR_ARG, "ssm_plan_training_memory: need a config, B, L > 0 and out");
    ssm_config c = *config;
    ssm_status s = ssm_config_validate(&c);
    if (s) return s;
    double P = param_floats(&c), T = (double)B * L;
    out->params = out->grads = 4 * P;
    out->optimizer = 8 * P; /* AdamW's two moments */
    /* the planner's exact count, unless the plan is too large for size_t arithmetic: then a
     * lower bound (residual streams, logits) is enough to refuse it */
    double bound = 4 * T * ((double)c.vocab_size + 3.0 * c.d_model * (c.n_layer + 2));
    out->activations = bound > 1e15 ? bound : 4.0 * ssm_acts_floats(&c, B, L, omp_get_max_threads())
                                                  + 8.0 * T; /* tokens and targets */
    out->total = out->params + out->grads + out->optimizer + out->activations;
    return SSM_OK;
}

/* a number from a one-line file ("max" and failures: -1) */
static double read_number(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char buf[64] = "";
    double v = fgets(buf, sizeof buf, f) && strncmp(buf, "max", 3) ? strtod(buf, NULL) : -1;
    fclose(f);
    return v;
}

static void take_least(double *best, double v) {
    if (v > 0 && (*best == 0 || v < *best)) *best = v;
}

double ssm_available_memory(void) {
    double best = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[128];
        double kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) take_least(&best, kb * 1024);
        fclose(f);
    }
    double max = read_number("/sys/fs/cgroup/memory.max"), cur = read_number("/sys/fs/cgroup/memory.current");
    if (max > 0) take_least(&best, max - (cur > 0 ? cur : 0));
    struct rlimit rl;
    if (!getrlimit(RLIMIT_AS, &rl) && rl.rlim_cur != RLIM_INFINITY) take_least(&best, (double)rl.rlim_cur);
    if (!getrlimit(RLIMIT_DATA, &rl) && rl.rlim_cur != RLIM_INFINITY) take_least(&best, (double)rl.rlim_cur);
    return best;
}
