/* comm_impl.h: what the communicator implementations (comm.c single, comm_mpi.c, comm_nccl.c)
 * share: the struct behind ssm_comm and its table of operations. */
#ifndef SSM_COMM_IMPL_H
#define SSM_COMM_IMPL_H

#include "internal.h"
#include "ssm/comm.h"

typedef struct comm_ops {
    const char *name;
    ssm_status (*sum_scaled)(ssm_comm *c, float *buf, size_t n, float scale);
    ssm_status (*all_reduce)(ssm_comm *c, double *buf, size_t n, ssm_comm_op op);
    ssm_status (*broadcast)(ssm_comm *c, void *buf, size_t bytes, int root);
    ssm_status (*barrier)(ssm_comm *c);
    void (*abort)(ssm_comm *c, int code);
    void (*close)(ssm_comm *c);
} comm_ops;

struct ssm_comm {
    const comm_ops *ops;
    int rank, size;
    ssm_comm *host; /* the communicator for host memory: this one, or NCCL's MPI one */
    void *impl;     /* the implementation's own state */
};

/* comm_mpi.c: MPI_COMM_WORLD (MPI_Init when not yet done) */
ssm_status comm_mpi_open(ssm_comm **out);
/* comm_nccl.c: NCCL on `device`, its unique id broadcast over mpi (which it then owns) */
ssm_status comm_nccl_open(ssm_comm *mpi, int device, ssm_comm **out);

#endif
