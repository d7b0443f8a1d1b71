// model_device_grads.cu: the gradient blob of a model on a GPU, for a communicator that reduces
// device buffers (NCCL). CUDA builds only; comm.c answers NULL in the others.
#include "../cuda/model.cuh"
#include "ssm/comm.h"

extern "C" float *ssm_model_device_grads(ssm_model *model) {
    return model && model->cuda ? model->cuda->grads : NULL;
}
