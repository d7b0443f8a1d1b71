/* comm_nccl.c: the NCCL communicator: one rank per GPU, the gradient sum and broadcasts on
 * device buffers, on the default stream (the one the CUDA backend computes on), so that each
 * call is ordered after the backward that wrote the buffer. The unique id that joins the
 * ranks goes over MPI, and the host-side calls go to that MPI communicator: the logic above
 * (who reduces what, when) is the MPI one's. */
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdlib.h>

#include "comm_impl.h"

typedef struct nccl_state {
    ncclComm_t nccl;
    ssm_comm *mpi; /* owned: bootstrap and host memory */
} nccl_state;

static ssm_status nccl_check(ncclResult_t r, const char *what) {
    if (r == ncclSuccess) return SSM_OK;
    return ssm_set_error(SSM_ERR_DEVICE, "NCCL %s failed: %s", what, ncclGetErrorString(r));
}

/* wait for the default stream (or the whole device), so that a peer's failure surfaces here
 * rather than in a later kernel */
static ssm_status nccl_sync(const char *what, int device) {
    cudaError_t e = device ? cudaDeviceSynchronize() : cudaStreamSynchronize(0);
    return e == cudaSuccess ? SSM_OK
                            : ssm_set_error(SSM_ERR_DEVICE, "NCCL %s: %s", what, cudaGetErrorString(e));
}

static ssm_status nccl_sum_scaled(ssm_comm *c, float *buf, size_t n, float scale) {
    nccl_state *st = c->impl;
    ncclRedOp_t op = ncclSum;
    /* the backward that wrote buf ran on the model's own (non-blocking) stream */
    ssm_status s = nccl_sync("all-reduce", 1);
    if (s) return s;
    /* sum of scale_r * buf_r in one pass: NCCL's pre-multiplied sum (NCCL >= 2.11) */
    if (scale != 1.0f &&
        (s = nccl_check(ncclRedOpCreatePreMulSum(&op, &scale, ncclFloat32, ncclScalarHostImmediate,
                                                 st->nccl), "pre-multiplied sum")))
        return s;
    s = nccl_check(ncclAllReduce(buf, buf, n, ncclFloat32, op, st->nccl, 0), "all-reduce");
    if (op != ncclSum) ncclRedOpDestroy(op, st->nccl);
    return s ? s : nccl_sync("all-reduce", 0);
}

static ssm_status nccl_all_reduce(ssm_comm *c, double *buf, size_t n, ssm_comm_op op) {
    nccl_state *st = c->impl;
    return ssm_comm_all_reduce(st->mpi, buf, n, op);
}

static ssm_status nccl_broadcast(ssm_comm *c, void *buf, size_t bytes, int root) {
    nccl_state *st = c->impl;
    ssm_status s = nccl_sync("broadcast", 1);
    if (!s) s = nccl_check(ncclBroadcast(buf, buf, bytes, ncclUint8, root, st->nccl, 0), "broadcast");
    if (!s) s = nccl_sync("broadcast", 1);
    return s;
}

static ssm_status nccl_barrier(ssm_comm *c) {
    nccl_state *st = c->impl;
    return ssm_comm_barrier(st->mpi);
}

static void nccl_abort(ssm_comm *c, int code) {
    nccl_state *st = c->impl;
    ncclCommAbort(st->nccl);
    ssm_comm_abort(st->mpi, code);
}

static void nccl_close(ssm_comm *c) {
    nccl_state *st = c->impl;
    ncclCommDestroy(st->nccl);
    ssm_comm_close(st->mpi);
    free(st);
    free(c);
}

static const comm_ops nccl_ops = {"nccl", nccl_sum_scaled, nccl_all_reduce, nccl_broadcast,
                                  nccl_barrier, nccl_abort, nccl_close};

ssm_status comm_nccl_open(ssm_comm *mpi, int device, ssm_comm **out) {
    ssm_comm *c = calloc(1, sizeof *c);
    nccl_state *st = calloc(1, sizeof *st);
    ssm_status s = SSM_OK;
    if (!c || !st) {
        s = ssm_set_error(SSM_ERR_NOMEM, "out of memory for a communicator");
        goto fail;
    }
    if (cudaSetDevice(device) != cudaSuccess) {
        s = ssm_set_error(SSM_ERR_DEVICE, "NCCL: cannot use GPU %d", device);
        goto fail;
    }
    ncclUniqueId id;
    if (mpi->rank == 0 && (s = nccl_check(ncclGetUniqueId(&id), "unique id"))) goto fail;
    if ((s = ssm_comm_broadcast(mpi, &id, sizeof id, 0)) ||
        (s = nccl_check(ncclCommInitRank(&st->nccl, mpi->size, id, mpi->rank), "init")))
        goto fail;
    st->mpi = mpi;
    *c = (ssm_comm){.ops = &nccl_ops, .rank = mpi->rank, .size = mpi->size, .host = mpi, .impl = st};
    *out = c;
    return SSM_OK;
fail:
    free(c);
    free(st);
    ssm_comm_close(mpi);
    return s;
}
