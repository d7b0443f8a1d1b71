/* v1_abi.c: for the tests only: selective_copy as a plugin built against version 1 of task.h
 * would be (abi_version 1, no struct_size: the v1 table is a prefix of v2's), which ssm must
 * keep loading. */
#include <ssm/task.h>

#undef SSM_TASK_OPS_HEADER
#define SSM_TASK_OPS_HEADER .abi_version = 1
#include "selective_copy.c"
