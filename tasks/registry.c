/* registry.c: the built-in tasks, and loading external task plugins with dlopen. */
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"

/* Weak: a build without a task's dependencies simply lacks that task. */
extern const ssm_task_ops ssm_task_lm __attribute__((weak));
extern const ssm_task_ops ssm_task_dna __attribute__((weak));
extern const ssm_task_ops ssm_task_seqclass __attribute__((weak));
extern const ssm_task_ops ssm_task_audio __attribute__((weak));
extern const ssm_task_ops ssm_task_timeseries __attribute__((weak));
extern const ssm_task_ops ssm_task_points __attribute__((weak));

/* the built-in tasks linked into this program, NULL-terminated (one slot per task + 1) */
const ssm_task_ops *const *ssm_task_builtins(void) {
    static const ssm_task_ops *list[7];
    int n = 0;
    if (&ssm_task_lm) list[n++] = &ssm_task_lm;
    if (&ssm_task_dna) list[n++] = &ssm_task_dna;
    if (&ssm_task_seqclass) list[n++] = &ssm_task_seqclass;
    if (&ssm_task_audio) list[n++] = &ssm_task_audio;
    if (&ssm_task_timeseries) list[n++] = &ssm_task_timeseries;
    if (&ssm_task_points) list[n++] = &ssm_task_points;
    list[n] = NULL;
    return list;
}

static ssm_status load_plugin(const char *path, const ssm_task_ops **out) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) return ssm_set_error(SSM_ERR_IO, "cannot load task plugin %s: %s", path, dlerror());
    ssm_task_plugin_entry_fn entry = (ssm_task_plugin_entry_fn)dlsym(h, "ssm_task_plugin_entry");
    if (!entry) {
        dlclose(h);
        return ssm_set_error(SSM_ERR_FORMAT, "%s is not an ssm task plugin (no ssm_task_plugin_entry; "
                             "define one with SSM_TASK_PLUGIN(ops))", path);
    }
    const ssm_task_ops *ops = entry();
    unsigned v = ops ? ops->abi_version : 0;
    if (!ops || v < 1 || v > SSM_TASK_ABI_VERSION) {
        dlclose(h);
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "task plugin %s was built for task ABI version %u, "
                             "this ssm has version %d: rebuild it against this ssm's task.h",
                             path, v, SSM_TASK_ABI_VERSION);
    }
    if (!ops->name || !ops->create || !ops->destroy || !ops->vocab_size || !ops->next_batch) {
        dlclose(h);
        return ssm_set_error(SSM_ERR_FORMAT, "task plugin %s lacks a name or one of create, destroy, "
                             "vocab_size, next_batch", path);
    }
    /* our full-size table: the plugin's fields, NULL past its end (a version 1 table ends
     * where version 2's fields begin; a newer table's extra fields are not ours to call) */
    size_t size = v == 1 ? offsetof(ssm_task_ops, model_io) : ops->struct_size;
    if (size < offsetof(ssm_task_ops, model_io)) {
        dlclose(h);
        return ssm_set_error(SSM_ERR_FORMAT, "task plugin %s: struct_size %zu is smaller than a "
                             "version 1 table (set it with SSM_TASK_OPS_HEADER)", path, size);
    }
    if (size > sizeof *ops) size = sizeof *ops;
    static struct { const ssm_task_ops *from, *full; } loaded[64];
    for (int i = 0; i < 64 && loaded[i].from; i++)
        if (loaded[i].from == ops) return *out = loaded[i].full, SSM_OK; /* the same file again */
    ssm_task_ops *full = calloc(1, sizeof *full);
    if (!full) {
        dlclose(h);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory loading %s", path);
    }
    memcpy(full, ops, size);
    full->struct_size = sizeof *full;
    for (int i = 0; i < 64; i++)
        if (!loaded[i].from) {
            loaded[i].from = ops, loaded[i].full = full;
            break;
        }
    ops = full;
    *out = ops; /* the library stays loaded for the life of the process */
    return SSM_OK;
}

ssm_status ssm_task_find(const char *name, const ssm_task_ops **out) {
    if (!name || !*name) return ssm_set_error(SSM_ERR_ARG, "no task name given");
    size_t len = strlen(name);
    if (strchr(name, '/') || (len > 3 && !strcmp(name + len - 3, ".so"))) return load_plugin(name, out);
    for (const ssm_task_ops *const *t = ssm_task_builtins(); *t; t++)
        if (!strcmp((*t)->name, name)) return *out = *t, SSM_OK;
    const char *path = getenv("SSM_PLUGIN_PATH");
    if (path) {
        char *copy = strdup(path), *save = NULL;
        for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
            const char *forms[] = {"%s/%s.so", "%s/libssm-task-%s.so"};
            for (int f = 0; f < 2; f++) {
                char file[4096];
                snprintf(file, sizeof file, forms[f], dir, name);
                FILE *probe = fopen(file, "rb");
                if (!probe) continue;
                fclose(probe);
                free(copy);
                return load_plugin(file, out);
            }
        }
        free(copy);
    }
    char names[256] = "";
    for (const ssm_task_ops *const *t = ssm_task_builtins(); *t; t++) {
        if (names[0]) strncat(names, ", ", sizeof names - strlen(names) - 1);
        strncat(names, (*t)->name, sizeof names - strlen(names) - 1);
    }
    return ssm_set_error(SSM_ERR_MISSING, "unknown task '%s' (built-in tasks: %s; a plugin is a path "
                         "to a .so or a name found on SSM_PLUGIN_PATH)", name, names[0] ? names : "none");
}
