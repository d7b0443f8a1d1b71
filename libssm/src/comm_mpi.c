/* comm_mpi.c: the MPI communicator (MPI_COMM_WORLD, host buffers). Errors return (never abort
 * by themselves) and become ssm_status with MPI's own message. */
#include <limits.h>
#include <mpi.h>
#include <stdlib.h>

#include "comm_impl.h"

typedef struct mpi_state {
    int initialised_here; /* we called MPI_Init, so we call MPI_Finalize */
} mpi_state;

static ssm_status mpi_check(int err, const char *what) {
    if (err == MPI_SUCCESS) return SSM_OK;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(err, text, &len);
    return ssm_set_error(SSM_ERR_IO, "MPI %s failed: %.*s", what, len, text);
}

/* MPI counts are ints: long buffers go in pieces of at most 2^30 elements */
enum { MPI_PIECE = 1 << 30 };

static ssm_status mpi_sum_scaled(ssm_comm *c, float *buf, size_t n, float scale) {
    if (scale != 1.0f)
        for (size_t i = 0; i < n; i++) buf[i] *= scale;
    for (size_t i = 0; i < n; i += MPI_PIECE) {
        int count = (int)(n - i < MPI_PIECE ? n - i : MPI_PIECE);
        ssm_status s = mpi_check(MPI_Allreduce(MPI_IN_PLACE, buf + i, count, MPI_FLOAT, MPI_SUM,
                                               MPI_COMM_WORLD), "all-reduce");
        if (s) return s;
    }
    return SSM_OK;
}

static ssm_status mpi_all_reduce(ssm_comm *c, double *buf, size_t n, ssm_comm_op op) {
    if (n > INT_MAX) return ssm_set_error(SSM_ERR_ARG, "ssm_comm_all_reduce: %zu values", n);
    return mpi_check(MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE,
                                   op == SSM_COMM_MAX ? MPI_MAX : MPI_SUM, MPI_COMM_WORLD),
                     "all-reduce");
}

static ssm_status mpi_broadcast(ssm_comm *c, void *buf, size_t bytes, int root) {
    for (size_t i = 0; i < bytes; i += MPI_PIECE) {
        int count = (int)(bytes - i < MPI_PIECE ? bytes - i : MPI_PIECE);
        ssm_status s = mpi_check(MPI_Bcast((char *)buf + i, count, MPI_BYTE, root, MPI_COMM_WORLD),
                                 "broadcast");
        if (s) return s;
    }
    return SSM_OK;
}

static ssm_status mpi_barrier(ssm_comm *c) { return mpi_check(MPI_Barrier(MPI_COMM_WORLD), "barrier"); }

static void mpi_abort(ssm_comm *c, int code) { MPI_Abort(MPI_COMM_WORLD, code); }

static void mpi_close(ssm_comm *c) {
    mpi_state *st = c->impl;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (st->initialised_here && !finalized) MPI_Finalize();
    free(st);
    free(c);
}

static const comm_ops mpi_ops = {"mpi", mpi_sum_scaled, mpi_all_reduce, mpi_broadcast,
                                 mpi_barrier, mpi_abort, mpi_close};

ssm_status comm_mpi_open(ssm_comm **out) {
    ssm_comm *c = calloc(1, sizeof *c);
    mpi_state *st = calloc(1, sizeof *st);
    if (!c || !st) {
        free(c), free(st);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory for a communicator");
    }
    int ready = 0;
    MPI_Initialized(&ready);
    if (!ready) {
        /* the OpenMP threads never call MPI: only the main thread does */
        int provided;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            free(c), free(st);
            return ssm_set_error(SSM_ERR_IO, "MPI_Init failed");
        }
        st->initialised_here = 1;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    c->ops = &mpi_ops;
    c->host = c;
    c->impl = st;
    *out = c;
    return SSM_OK;
}
