/* scan_args.h: the one argument struct of the selective scan, shared by its CPU twin
 * (libssm/cpu/scan.c: cpu_scan_forward, _backward, _step) and its CUDA twin (libssm/cuda/scan.cu:
 * cuda_scan_forward, _backward, _step), and the element types of the ops' activations.
 * Internal (not installed), like cpu_ops.h and cuda_ops.h.
 *
 * The scan (mamba_ssm's selective_scan_fn with delta_bias, delta_softplus, D and optionally z),
 * per sequence of L rows, T = B * L rows (row t = b * L + l), E channels, N states each:
 *   delta = softplus(dt + dt_bias) (threshold 20);  A = -exp(A_log)
 *   h_l = exp(delta * A) * h_{l-1} + delta * B_l * u_l;  y_l = C_l . h_l + D * u_l
 *   out_l = y_l * silu(z_l) when z != NULL, else y_l */
#ifndef SSM_SCAN_ARGS_H
#define SSM_SCAN_ARGS_H

/* the element type of an op's activations; parameters and states are always fp32 */
typedef enum ssm_dtype {
    SSM_DTYPE_F32 = 0,
    SSM_DTYPE_BF16 = 1,
} ssm_dtype;

/* The CPU twin reads the fields up to A (fp32 only: dtype F32, z NULL); the others are the CUDA
 * twin's (its fused gate, its tuning and its saved states), left 0 / NULL on the CPU. */
typedef struct ssm_scan_args {
    int B, L, E, N;        /* the step ignores L (1): rows are sequences */
    ssm_dtype dtype;       /* of u, dt, Bm, Cm, z, the output and the activation gradients */
    const void *u;         /* (T, E) */
    const void *dt;        /* (T, E) before the bias */
    const void *Bm, *Cm;   /* (T, N) each, row stride ld_bc (columns of x_proj's output) */
    int ld_bc;
    const float *dt_bias;  /* (E) */
    const float *A_log;    /* (E, N) */
    const float *D;        /* (E) */
    const float *A;        /* CPU step only, or NULL: (E, N) = -exp(A_log) already taken (the
                              decode weights' copy, so that a step makes no expf calls) */
    /* ---- CUDA only ---- */
    const void *z;         /* (T, E) row stride ld_z, or NULL: no gate */
    int ld_z;
    int chunk;             /* 0: chosen for the device; else the chunk length over L that the
                              kernels use (tests and benchmarks exercise the chunked path) */
    int split;             /* forward: 0 chosen for the device; else 1, 2 or 4 threads share a
                              channel's states (at most N / 4 rounded up to 8); backward: 1
                              forces one thread per channel, else two (tests and benchmarks) */
    const void *dt_w;      /* step only, or NULL: dt_proj.weight (E, dt_rank) in dtype; dt is
                              then dt_proj's input (B, dt_rank), row stride ld_dt, and the step
                              applies the projection itself (N a multiple of 4) */
    int dt_rank, ld_dt;
    int overlap;           /* step only: 1 launches with programmatic dependent launch (sm_90 and
                              later): the weights' loads and the launch overlap the kernel
                              before, which must not write them (the decode graph) */
    float *ckpt;           /* or NULL: cuda_scan_checkpoint_bytes(args) bytes (when that is not
                              0) where a training forward (zero initial state) saves the states
                              its backward needs, so that the backward does not recompute
                              them; pass the same args (and buffer) to both */
} ssm_scan_args;

#endif
