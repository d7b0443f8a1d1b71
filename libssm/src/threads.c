/* threads.c: one knob for the CPU backend's OpenMP threads and its BLAS threads. */
#include <omp.h>

#include "ssm/ssm.h"

void openblas_set_num_threads(int n) __attribute__((weak));

void ssm_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
    if (openblas_set_num_threads) openblas_set_num_threads(n);
}

int ssm_get_threads(void) { return omp_get_max_threads(); }
