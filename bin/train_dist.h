/* train_dist.h: ssm-train's data parallelism (docs/distributed.md): the hooks the training loop
 * calls, over a communicator (ssm/comm.h) that is a single process unless an MPI launcher
 * started several ranks. Every hook is collective: all ranks call it at the same step. */
#ifndef SSM_TRAIN_DIST_H
#define SSM_TRAIN_DIST_H

#include "cli.h"
#include "ssm/comm.h"

typedef struct train_dist {
    ssm_comm *comm; /* host memory (MPI) */
    ssm_comm *gpu;  /* the gradients of a model on a GPU (NCCL), from the first step */
    int rank, size;
    int agreed;        /* the current failure is known to every rank: no need to abort the job */
    float grad_scale;  /* this rank's share of the step's scored tokens (train_dist_loss) */
    double reduce_s, first_s, last_s; /* all-reduce seconds; first and last call (step time) */
    int64_t reduces;
    size_t n_params;
    char program[64];  /* "ssm-train (rank 1)" */
} train_dist;

/* Open the communicator; refuse ranks whose recipe or binaries differ from rank 0's; make the
 * other ranks quiet (rank 0 alone prints notes and progress) and their messages name them. */
ssm_status train_dist_open(train_dist *d, const ssm_recipe *recipe);
static inline int train_dist_root(const train_dist *d) { return d->rank == 0; }
/* Rank 0's model, optimizer state and data position to every rank (after a load or an init). */
ssm_status train_dist_share(train_dist *d, ssm_model *model, ssm_adamw *opt, ssm_rng *data_rng);
/* A rank other than 0 resuming: a model of the recipe's shape to receive rank 0's state. */
ssm_status train_dist_blank(train_dist *d, const ssm_config *config, const ssm_adamw_config *adamw,
                            ssm_model **model, ssm_adamw **opt);
/* This rank's rows of the step's global batch (ranks x B rows): one draw of data_rng per step
 * keys it, and global row i comes from its own stream keyed by (that draw, i). So the data
 * does not depend on how many ranks share the rows: 2 ranks of batch B see what 1 rank of
 * batch 2B sees, and a resume on another number of ranks continues the same stream. */
ssm_status train_dist_next_batch(train_dist *d, const ssm_task_ops *ops, void *task,
                                 ssm_split split, ssm_rng *data_rng, const ssm_io_config *io,
                                 ssm_batch *batch);
/* After the forward of *scored targets: the global mean loss over every rank's scored targets
 * (in place), *scored <- their global count, and this rank's weight in the gradient sum. */
ssm_status train_dist_loss(train_dist *d, int64_t *scored, float *loss);
/* After the backward: every rank's gradients <- the global mean gradient, one blob (over MPI
 * on the CPU, NCCL on GPUs). The optimizer then clips with the global norm. */
ssm_status train_dist_grads(train_dist *d, ssm_model *model);
/* The GPU of this rank: one per rank of a machine (the launcher's local rank), from device. */
int train_dist_gpu(const train_dist *d, int device);
/* *stopped (a reason, or NULL) and *timed_out become every rank's when any rank has them. */
ssm_status train_dist_agree_stop(train_dist *d, const char **stopped, int *timed_out);
/* *a and *b <- their sums over the ranks */
ssm_status train_dist_sum(train_dist *d, double *a, double *b);
/* v[0..n) <- their means over the ranks */
ssm_status train_dist_mean(train_dist *d, double *v, int n);
/* Every rank's weights are bit-identical to rank 0's, or fail loudly naming the rank. */
ssm_status train_dist_check_weights(train_dist *d, ssm_model *model, int64_t step);
/* "batch 8 x length 64", or "2 ranks x batch 8 x length 64" */
const char *train_dist_batch_text(const train_dist *d, int B, int L, char *buf, size_t size);
/* The fail path: print the error; a failure the other ranks cannot know of ends the whole job
 * (they would wait for this rank forever). Returns the exit status. */
int train_dist_fail(train_dist *d);
/* Rank 0 notes the all-reduce time per step beside the step time; closes the communicator. */
void train_dist_close(train_dist *d);

#endif
