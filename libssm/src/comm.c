/* comm.c: the communicator interface (ssm/comm.h): dispatch to an implementation, the
 * single-process one, and which one SSM_COMM_AUTO picks. */
#include <stdlib.h>
#include <string.h>

#include "comm_impl.h"

static ssm_status single_sum_scaled(ssm_comm *c, float *buf, size_t n, float scale) {
    if (scale != 1.0f)
        for (size_t i = 0; i < n; i++) buf[i] *= scale;
    return SSM_OK;
}
static ssm_status single_all_reduce(ssm_comm *c, double *buf, size_t n, ssm_comm_op op) { return SSM_OK; }
static ssm_status single_broadcast(ssm_comm *c, void *buf, size_t bytes, int root) { return SSM_OK; }
static ssm_status single_barrier(ssm_comm *c) { return SSM_OK; }
static void single_abort(ssm_comm *c, int code) {}
static void single_close(ssm_comm *c) { free(c); }

static const comm_ops single_ops = {"single", single_sum_scaled, single_all_reduce,
                                    single_broadcast, single_barrier, single_abort, single_close};

static ssm_status single_open(ssm_comm **out) {
    ssm_comm *c = calloc(1, sizeof *c);
    if (!c) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for a communicator");
    *c = (ssm_comm){.ops = &single_ops, .rank = 0, .size = 1, .host = c};
    *out = c;
    return SSM_OK;
}

/* The number of processes an MPI launcher started, from its environment (OpenMPI's mpirun,
 * MPICH's hydra or a PMI, SLURM's srun); 1 when none did. */
static int launched_ranks(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS",
                          "SLURM_STEP_NUM_TASKS", NULL};
    for (int i = 0; vars[i]; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 1) return atoi(v);
    }
    return 1;
}

#ifndef SSM_WITH_MPI
ssm_status comm_mpi_open(ssm_comm **out) {
    return ssm_set_error(SSM_ERR_UNSUPPORTED, "this build of libssm has no MPI (install "
                         "libopenmpi-dev and rebuild)");
}
#endif
#ifndef SSM_WITH_NCCL
ssm_status comm_nccl_open(ssm_comm *mpi, int device, ssm_comm **out) {
    ssm_comm_close(mpi);
    return ssm_set_error(SSM_ERR_UNSUPPORTED, "this build of libssm has no NCCL (build with "
                         "-Dnccl=enabled where the CUDA toolkit has nccl.h)");
}
#endif

#ifndef SSM_WITH_CUDA
float *ssm_model_device_grads(ssm_model *model) { return NULL; }
#endif

ssm_status ssm_comm_open(ssm_comm_kind kind, int device, ssm_comm **out) {
    if (!out) return ssm_set_error(SSM_ERR_ARG, "ssm_comm_open: NULL argument");
    *out = NULL;
    if (kind == SSM_COMM_AUTO) kind = launched_ranks() > 1 ? SSM_COMM_MPI : SSM_COMM_SINGLE;
    switch (kind) {
    case SSM_COMM_SINGLE: return single_open(out);
    case SSM_COMM_MPI: return comm_mpi_open(out);
    case SSM_COMM_NCCL: {
        ssm_comm *mpi;
        ssm_status s = comm_mpi_open(&mpi);
        return s ? s : comm_nccl_open(mpi, device, out);
    }
    default: return ssm_set_error(SSM_ERR_ARG, "ssm_comm_open: unknown kind %d", (int)kind);
    }
}

void ssm_comm_close(ssm_comm *c) {
    if (c) c->ops->close(c);
}
int ssm_comm_rank(const ssm_comm *c) { return c->rank; }
int ssm_comm_size(const ssm_comm *c) { return c->size; }
const char *ssm_comm_name(const ssm_comm *c) { return c->ops->name; }
ssm_comm *ssm_comm_host(ssm_comm *c) { return c->host; }

ssm_status ssm_comm_sum_scaled(ssm_comm *c, float *buf, size_t n, float scale) {
    return n ? c->ops->sum_scaled(c, buf, n, scale) : SSM_OK;
}
ssm_status ssm_comm_all_reduce(ssm_comm *c, double *buf, size_t n, ssm_comm_op op) {
    return n ? c->ops->all_reduce(c, buf, n, op) : SSM_OK;
}
ssm_status ssm_comm_broadcast(ssm_comm *c, void *buf, size_t bytes, int root) {
    if (root < 0 || root >= c->size)
        return ssm_set_error(SSM_ERR_ARG, "ssm_comm_broadcast: root %d of %d ranks", root, c->size);
    return bytes ? c->ops->broadcast(c, buf, bytes, root) : SSM_OK;
}
ssm_status ssm_comm_barrier(ssm_comm *c) { return c->ops->barrier(c); }
void ssm_comm_abort(ssm_comm *c, int code) { c->ops->abort(c, code); }
