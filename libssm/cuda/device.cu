// device.cu: CUDA device discovery for `device: auto | cuda | cuda:N`.
#include <cuda_runtime.h>

extern "C" int ssm_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
    return n;
}
