/* comm.h: a communicator between the processes (ranks) of one data-parallel job.
 *
 * Three implementations behind one interface (docs/distributed.md):
 *   - single: one process, every call a no-op (size 1, rank 0);
 *   - MPI: the ranks of an mpirun or srun launch (MPI_COMM_WORLD), host buffers;
 *   - NCCL: one rank per GPU, ssm_comm_sum_scaled and ssm_comm_broadcast on device buffers;
 *     NCCL is bootstrapped over MPI, and the host-side calls (ssm_comm_all_reduce, the
 *     barrier, ssm_comm_host) go through that MPI communicator.
 * Every rank must make the same calls in the same order (they are collective). */
#ifndef SSM_COMM_H
#define SSM_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "ssm/ssm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ssm_comm ssm_comm;

typedef enum ssm_comm_kind {
    SSM_COMM_AUTO,   /* MPI when an MPI launcher (mpirun, srun) started several ranks, else single */
    SSM_COMM_SINGLE, /* this process alone */
    SSM_COMM_MPI,    /* MPI_COMM_WORLD, host memory */
    SSM_COMM_NCCL,   /* NCCL on the GPU `device`, one rank per GPU, bootstrapped over MPI */
} ssm_comm_kind;

typedef enum ssm_comm_op { SSM_COMM_SUM, SSM_COMM_MAX } ssm_comm_op;

/* Open a communicator (MPI_Init on the first MPI or NCCL one). device: the GPU for NCCL, else
 * ignored. SSM_ERR_UNSUPPORTED when this build has no MPI (or no NCCL). */
SSM_API ssm_status ssm_comm_open(ssm_comm_kind kind, int device, ssm_comm **out);
/* Close it (MPI_Finalize when it initialised MPI). NULL is fine. */
SSM_API void ssm_comm_close(ssm_comm *comm);
SSM_API int ssm_comm_rank(const ssm_comm *comm);
SSM_API int ssm_comm_size(const ssm_comm *comm);
/* "single", "mpi", "nccl" */
SSM_API const char *ssm_comm_name(const ssm_comm *comm);
/* The communicator for host memory: comm itself, or the MPI one under an NCCL communicator. */
SSM_API ssm_comm *ssm_comm_host(ssm_comm *comm);

/* buf (n floats, in the communicator's memory: host, or the GPU for NCCL) <- the sum over the
 * ranks of scale_r * buf_r, in place; scale is this rank's factor (1 for a plain sum). Every
 * rank receives the same bits. */
SSM_API ssm_status ssm_comm_sum_scaled(ssm_comm *comm, float *buf, size_t n, float scale);
/* Small host values (counts, losses, flags): buf (n doubles) <- op over the ranks. */
SSM_API ssm_status ssm_comm_all_reduce(ssm_comm *comm, double *buf, size_t n, ssm_comm_op op);
/* bytes of buf (the communicator's memory) from rank root to every rank. */
SSM_API ssm_status ssm_comm_broadcast(ssm_comm *comm, void *buf, size_t bytes, int root);
SSM_API ssm_status ssm_comm_barrier(ssm_comm *comm);
/* End every rank of the job now, with this exit code (MPI_Abort), for a program that hit an
 * error the other ranks cannot know of: they would wait for it forever. The library itself never
 * calls it. With a single-process communicator it returns and does nothing. */
SSM_API void ssm_comm_abort(ssm_comm *comm, int code);

/* The gradient blob (n_params floats) of a model on a GPU, for ssm_comm_sum_scaled over NCCL;
 * NULL for a model on the CPU (its gradients are grads_blob) or before its first backward. */
SSM_API float *ssm_model_device_grads(ssm_model *model);

#ifdef __cplusplus
}
#endif
#endif
