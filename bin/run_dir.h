/* run_dir.h: what keeps a run directory consistent (docs/reliability.md).
 *
 * One writer: run_dir_lock takes an exclusive flock(2) on DIR/.lock until run_dir_unlock (the
 * kernel drops it when the process dies, SIGKILL included); a second ssm-train on the same
 * directory is refused with the holder's pid.
 *
 * A checkpoint is two files that must agree: model.safetensors and train_state.safetensors,
 * each with the step in its ssm.step metadata. ssm_safetensors_write makes each file atomic
 * (a .tmp written, fsync'd, renamed, the directory fsync'd); the pair is made atomic by order:
 *   1. the optimizer state goes to train_state.next.safetensors;
 *   2. model.safetensors is replaced: the commit point;
 *   3. train_state.next.safetensors is renamed over train_state.safetensors.
 * After a crash, run_dir_recover finishes or undoes step 3: a leftover next file whose step is
 * the model's is renamed into place, any other leftover is deleted. */
#ifndef SSM_BIN_RUN_DIR_H
#define SSM_BIN_RUN_DIR_H
#include "ssm/ssm.h"

#define RUN_STATE_FILE "train_state.safetensors"
#define RUN_STATE_NEXT "train_state.next.safetensors"

/* *fd: the lock's file, for run_dir_unlock (which takes -1 as no lock) */
ssm_status run_dir_lock(const char *dir, int *fd);
void run_dir_unlock(int fd);
/* Step 3 above. */
ssm_status run_dir_commit_state(const char *dir);
/* After a crash: the model and the state of the same step (see above). */
ssm_status run_dir_recover(const char *dir);
/* fsync a directory (its renames durable); best effort where the filesystem refuses. */
void run_dir_sync(const char *dir);
#endif
