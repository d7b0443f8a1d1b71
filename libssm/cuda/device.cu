// device.cu: CUDA device discovery for `device: auto | cuda | cuda:N`, and the device facts
// and error reporting that the ops share (common.cuh).
#include <cuda_runtime.h>

#include "common.cuh"

extern "C" int ssm_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
    return n;
}

int ssm_cuda_sm_count(void) {
    static int cached[64]; // per device; a benign race writes the same value
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return 132;
    if (cached[dev] == 0) {
        int n = 0;
        if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0)
            n = 132;
        cached[dev] = n;
    }
    return cached[dev];
}

ssm_status ssm_cuda_fail(cudaError_t err, const char *where) {
    return ssm_set_error(err == cudaErrorMemoryAllocation ? SSM_ERR_NOMEM : SSM_ERR_DEVICE,
                         "%s: CUDA error %d (%s): %s", where, (int)err, cudaGetErrorName(err),
                         cudaGetErrorString(err));
}
