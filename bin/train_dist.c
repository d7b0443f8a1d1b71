/* train_dist.c: ssm-train's data parallelism over a communicator (train_dist.h,
 * docs/distributed.md). With one process every hook is a no-op apart from the batch rows. */
#include <dlfcn.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "task_io.h"
#include "train_dist.h"

/* FNV-1a, 64 bits */
static uint64_t hash_bytes(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}
enum { HASH_START = 0xcbf29ce484222325ULL };

static uint64_t hash_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    uint64_t h = HASH_START;
    char buf[1 << 16];
    for (size_t n; (n = fread(buf, 1, sizeof buf, f)) > 0;) h = hash_bytes(h, buf, n);
    fclose(f);
    return h;
}

/* What must be the same on every rank: the resolved recipe, the program, libssm. */
typedef struct launch_hashes {
    uint64_t recipe, program, library;
} launch_hashes;

static launch_hashes hashes_of(const ssm_recipe *recipe) {
    launch_hashes h = {HASH_START, hash_file("/proc/self/exe"), 0};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f) {
        ssm_recipe_emit(recipe, f);
        fclose(f);
        h.recipe = hash_bytes(h.recipe, text, len);
        free(text);
    }
    Dl_info info;
    if (dladdr((void *)ssm_forward, &info) && info.dli_fname) h.library = hash_file(info.dli_fname);
    return h;
}

/* Sum of a flag over the ranks (host memory) */
static ssm_status count_ranks(train_dist *d, int flag, int *count) {
    double v = flag;
    ssm_status s = ssm_comm_all_reduce(ssm_comm_host(d->comm), &v, 1, SSM_COMM_SUM);
    *count = (int)v;
    return s;
}

ssm_status train_dist_open(train_dist *d, const ssm_recipe *recipe) {
    memset(d, 0, sizeof *d);
    d->grad_scale = 1;
    ssm_status s = ssm_comm_open(SSM_COMM_AUTO, -1, &d->comm);
    if (s) return d->agreed = 1, s;
    d->rank = ssm_comm_rank(d->comm);
    d->size = ssm_comm_size(d->comm);
    if (d->size == 1) return SSM_OK;
    snprintf(d->program, sizeof d->program, "%s (rank %d)", cli_program(), d->rank);
    cli_init(d->program);
    if (d->rank) cli_quiet = 1;
    launch_hashes mine = hashes_of(recipe), root = mine;
    if ((s = ssm_comm_broadcast(ssm_comm_host(d->comm), &root, sizeof root, 0))) return s;
    int differs = memcmp(&mine, &root, sizeof mine) != 0, n;
    if ((s = count_ranks(d, differs, &n))) return s;
    if (!n) return SSM_OK;
    if (differs)
        fprintf(stderr, "%s: this rank's %s differs from rank 0's\n", cli_program(),
                mine.recipe != root.recipe ? "recipe" : mine.program != root.program ? "ssm-train" : "libssm");
    d->agreed = 1;
    return ssm_set_error(SSM_ERR_ARG, "%d of %d ranks were started with another recipe or binary "
                         "than rank 0: refused; launch every rank with the same ssm-train, libssm "
                         "and recipe", n, d->size);
}

ssm_status train_dist_share(train_dist *d, ssm_model *model, ssm_adamw *opt, ssm_rng *data_rng) {
    if (d->size == 1) return SSM_OK;
    ssm_comm *c = ssm_comm_host(d->comm);
    size_t n = model->n_params * sizeof(float);
    ssm_status s;
    if ((s = ssm_comm_broadcast(c, model->params_blob, n, 0)) ||
        (s = ssm_comm_broadcast(c, opt->m, n, 0)) || (s = ssm_comm_broadcast(c, opt->v, n, 0)) ||
        (s = ssm_comm_broadcast(c, &opt->step, sizeof opt->step, 0)) ||
        (s = ssm_comm_broadcast(c, data_rng, sizeof *data_rng, 0)))
        return s;
    return SSM_OK;
}

ssm_status train_dist_blank(train_dist *d, const ssm_config *config, const ssm_adamw_config *adamw,
                            ssm_model **model, ssm_adamw **opt) {
    ssm_status s = ssm_model_create(config, model);
    return s ? s : ssm_adamw_create(adamw, *model, opt);
}

/* splitmix64's finaliser: a row's seed from the step's key and the row */
static uint64_t row_seed(uint64_t key, uint64_t row) {
    uint64_t z = key ^ (row + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

ssm_status train_dist_next_batch(train_dist *d, const ssm_task_ops *ops, void *task,
                                 ssm_split split, ssm_rng *data_rng, const ssm_io_config *io,
                                 ssm_batch *batch) {
    uint64_t key = ssm_rng_next(data_rng); /* the same on every rank */
    for (int b = 0; b < batch->B; b++) {
        ssm_rng rng;
        ssm_rng_seed(&rng, row_seed(key, (uint64_t)d->rank * batch->B + b));
        ssm_batch row = task_batch_row(batch, io, b);
        ssm_status s = ops->next_batch(task, split, &rng, &row);
        if (s) return s;
    }
    return SSM_OK;
}

ssm_status train_dist_loss(train_dist *d, int64_t *n_scored, float *loss) {
    if (d->size == 1) return SSM_OK;
    double scored = (double)*n_scored;
    double v[2] = {scored, scored ? scored * *loss : 0}; /* [tokens, loss sum] over the ranks */
    ssm_status s = ssm_comm_all_reduce(ssm_comm_host(d->comm), v, 2, SSM_COMM_SUM);
    if (s) return s;
    *loss = v[0] ? (float)(v[1] / v[0]) : *loss;
    *n_scored = (int64_t)v[0];
    d->grad_scale = v[0] ? (float)(scored / v[0]) : 0;
    return SSM_OK;
}

ssm_status train_dist_grads(train_dist *d, ssm_model *model) {
    if (d->size == 1) return SSM_OK;
    double t0 = cli_now();
    ssm_status s = SSM_OK;
    float *grads = model->grads_blob;
    ssm_comm *comm = d->comm;
    if (model->cuda) { /* on the GPUs, with NCCL, opened at the first step */
        if (!d->gpu && (s = ssm_comm_open(SSM_COMM_NCCL, model->device, &d->gpu))) return s;
        comm = d->gpu;
        if (!(grads = ssm_model_device_grads(model)))
            return ssm_set_error(SSM_ERR_DEVICE, "the model on the GPU has no gradients");
    }
    d->n_params = model->n_params;
    s = ssm_comm_sum_scaled(comm, grads, model->n_params, d->grad_scale);
    d->last_s = cli_now();
    d->reduce_s += d->last_s - t0;
    if (!d->reduces++) d->first_s = d->last_s;
    return s;
}

int train_dist_gpu(const train_dist *d, int device) {
    if (d->size == 1 || device < 0) return device;
    const char *vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID",
                          "PMI_LOCAL_RANK", NULL};
    int local = 0, count = ssm_device_count();
    for (int i = 0; vars[i]; i++)
        if (getenv(vars[i])) {
            local = atoi(getenv(vars[i]));
            break;
        }
    return count > 0 ? (device + local) % count : device;
}

ssm_status train_dist_agree_stop(train_dist *d, const char **stopped, int *timed_out) {
    if (d->size == 1) return SSM_OK;
    double v[2] = {*stopped != NULL, *timed_out};
    ssm_status s = ssm_comm_all_reduce(ssm_comm_host(d->comm), v, 2, SSM_COMM_MAX);
    if (s) return s;
    *timed_out = v[1] > 0;
    if (v[0] && !*stopped) *stopped = *timed_out ? "time limit (train.max_minutes)" : "stopped with another rank";
    return SSM_OK;
}

ssm_status train_dist_sum(train_dist *d, double *a, double *b) {
    if (d->size == 1) return SSM_OK;
    double v[2] = {*a, *b};
    ssm_status s = ssm_comm_all_reduce(ssm_comm_host(d->comm), v, 2, SSM_COMM_SUM);
    *a = v[0], *b = v[1];
    return s;
}

ssm_status train_dist_mean(train_dist *d, double *v, int n) {
    if (d->size == 1) return SSM_OK;
    ssm_status s = ssm_comm_all_reduce(ssm_comm_host(d->comm), v, n, SSM_COMM_SUM);
    for (int i = 0; i < n; i++) v[i] /= d->size;
    return s;
}

ssm_status train_dist_check_weights(train_dist *d, ssm_model *model, int64_t step) {
    if (d->size == 1) return SSM_OK;
    ssm_status s = model->cuda ? ssm_model_sync_host(model, NULL) : SSM_OK;
    if (s) return s;
    uint64_t mine = hash_bytes(HASH_START, model->params_blob, model->n_params * sizeof(float));
    uint64_t root = mine;
    if ((s = ssm_comm_broadcast(ssm_comm_host(d->comm), &root, sizeof root, 0))) return s;
    int n;
    if ((s = count_ranks(d, mine != root, &n))) return s;
    if (!n) return SSM_OK;
    if (mine != root)
        fprintf(stderr, "%s: this rank's weights differ from rank 0's at step %" PRId64
                " (checksum %016" PRIx64 ", rank 0 %016" PRIx64 ")\n", cli_program(), step, mine, root);
    d->agreed = 1;
    return ssm_set_error(SSM_ERR_NUMERIC, "the weights of %d of %d ranks have diverged from rank "
                         "0's at step %" PRId64 ": stopped without saving them", n, d->size, step);
}

const char *train_dist_batch_text(const train_dist *d, int B, int L, char *buf, size_t size) {
    if (d->size > 1)
        snprintf(buf, size, "%d ranks x batch %d x length %d", d->size, B, L);
    else
        snprintf(buf, size, "batch %d x length %d", B, L);
    return buf;
}

int train_dist_fail(train_dist *d) {
    int rc = cli_fail();
    if (d->comm && d->size > 1 && !d->agreed) {
        fprintf(stderr, "%s: stopping every rank of the job\n", cli_program());
        fflush(stderr);
        ssm_comm_abort(d->gpu ? d->gpu : d->comm, rc);
    }
    return rc;
}

void train_dist_close(train_dist *d) {
    if (d->reduces > 1) {
        char mb[32];
        double per_step = d->reduce_s / d->reduces, step = (d->last_s - d->first_s) / (d->reduces - 1);
        cli_note("gradient all-reduce (%s, %sB per step): %.3f ms per step, %.1f%% of the step time "
                 "(%.1f ms)", ssm_comm_name(d->gpu ? d->gpu : d->comm), cli_si(4.0 * d->n_params, mb, sizeof mb),
                 per_step * 1e3, 100 * per_step / step, step * 1e3);
    }
    ssm_comm_close(d->gpu);
    ssm_comm_close(d->comm);
    d->gpu = d->comm = NULL;
}
