/* run_dir.c: the run directory's lock and its two-file checkpoint (see run_dir.h). */
#include "run_dir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "ssm/checkpoint.h"

static void path_of(char *buf, size_t size, const char *dir, const char *name) {
    snprintf(buf, size, "%s/%s", dir, name);
}

void run_dir_sync(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

void run_dir_unlock(int fd) {
    if (fd >= 0) close(fd); /* closing the file drops its flock */
}

ssm_status run_dir_lock(const char *dir, int *lock_fd) {
    char path[4200];
    path_of(path, sizeof path, dir, ".lock");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return ssm_set_error(SSM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        int err = errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        close(fd);
        if (err == EWOULDBLOCK)
            return ssm_set_error(SSM_ERR_ARG, "%s: another ssm-train (pid %s) is writing to this run "
                                 "directory; wait for it to end, or use another output.dir",
                                 dir, pid[0] ? pid : "unknown");
        return ssm_set_error(SSM_ERR_IO, "%s: cannot lock: %s", path, strerror(err));
    }
    /* the holder's pid, for the message above; the lock itself is the flock */
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) || pwrite(fd, pid, (size_t)n, 0) != n) { /* only the message suffers */ }
    *lock_fd = fd; /* the lock lives as long as the file stays open */
    return SSM_OK;
}

ssm_status run_dir_commit_state(const char *dir) {
    char next[4200], final[4200];
    path_of(next, sizeof next, dir, RUN_STATE_NEXT);
    path_of(final, sizeof final, dir, RUN_STATE_FILE);
    if (rename(next, final))
        return ssm_set_error(SSM_ERR_IO, "%s: cannot rename %s to it: %s", final, next, strerror(errno));
    run_dir_sync(dir);
    return SSM_OK;
}

/* ssm.step of a safetensors file; -1 when it cannot be read */
static long long file_step(const char *path) {
    ssm_safetensors *st;
    if (ssm_safetensors_open(path, &st)) return -1;
    const char *v = ssm_safetensors_meta(st, "ssm.step");
    char *end = NULL;
    long long step = v ? strtoll(v, &end, 10) : -1;
    if (!v || *end) step = -1;
    ssm_safetensors_close(st);
    return step;
}

ssm_status run_dir_recover(const char *dir) {
    char next[4200], model[4200], tmp[4200];
    const char *partial[] = {"model.safetensors.tmp", "config.json.tmp", RUN_STATE_NEXT ".tmp"};
    for (int i = 0; i < 3; i++) path_of(tmp, sizeof tmp, dir, partial[i]), unlink(tmp); /* torn writes */
    path_of(next, sizeof next, dir, RUN_STATE_NEXT);
    if (access(next, F_OK)) return SSM_OK; /* the last save completed */
    path_of(model, sizeof model, dir, "model.safetensors");
    long long a = file_step(next), b = file_step(model);
    if (a >= 0 && a == b) return run_dir_commit_state(dir); /* the model was committed: finish */
    if (unlink(next)) /* the save stopped before its commit: the previous pair stands */
        return ssm_set_error(SSM_ERR_IO, "%s: cannot remove: %s", next, strerror(errno));
    run_dir_sync(dir);
    return SSM_OK;
}
