/* registry.h: finding a task, built in or loaded from a plugin. Part of the tasks (compiled
 * into the programs with tasks/registry.c), not of libssm: the installed ssm/task.h declares
 * only the plugin ABI. */
#ifndef SSM_TASKS_REGISTRY_H
#define SSM_TASKS_REGISTRY_H

#include "ssm/task.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Find a built-in task by name, or load a plugin: a path containing '/' or ending in ".so",
 * else "NAME" searched as NAME.so / libssm-task-NAME.so in the folders of SSM_PLUGIN_PATH.
 * A plugin built for another ABI version is refused with SSM_ERR_UNSUPPORTED. */
ssm_status ssm_task_find(const char *name, const ssm_task_ops **out);
/* The built-in tasks, NULL-terminated. */
const ssm_task_ops *const *ssm_task_builtins(void);

#ifdef __cplusplus
}
#endif
#endif
