/* checkpoint_mamba_ssm.c: mamba_ssm's MixerModel hybrids. */
#include "checkpoint_json.h"

int ssm_mamba_ssm_layout(const ssm_config *c) { return 0; }
int ssm_mamba_ssm_piece(const ssm_config *c, const ssm_tensor_info *ti, int j, ssm_file_piece *p) { return 0; }
