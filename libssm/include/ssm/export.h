/* export.h: SSM_API marks the functions of libssm's public interface.
 *
 * libssm is compiled with -fvisibility=hidden, so that only the functions declared with
 * SSM_API in the installed headers (ssm.h, checkpoint.h, recipe.h, task.h, markov.h) are
 * exported from libssm.so; the kernels and helpers of the internal headers (cpu_ops.h,
 * cuda_ops.h, internal.h, ...) stay inside the library. tests/exports/test_exports.sh checks it. */
#ifndef SSM_EXPORT_H
#define SSM_EXPORT_H

#if defined(__GNUC__) || defined(__clang__)
#define SSM_API __attribute__((visibility("default")))
#else
#define SSM_API
#endif

#endif
