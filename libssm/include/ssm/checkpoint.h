/* checkpoint.h: safetensors files for models and optimizer state.
 *
 * A model checkpoint is a safetensors file whose tensor names are those of the Hugging Face
 * Mamba classes (backbone.embeddings.weight, backbone.layers.{i}.mixer.in_proj.weight, ...)
 * and whose __metadata__ holds the model config (ssm.* keys) and any caller key/values (the
 * recipe, say). Files are written to PATH.tmp and renamed, so a crash never leaves a
 * half-written checkpoint under the real name. The reader validates everything and turns a
 * malformed file into SSM_ERR_FORMAT / _DTYPE / _SHAPE / _MISSING with a message, never a crash. */
#ifndef SSM_CHECKPOINT_H
#define SSM_CHECKPOINT_H

#include "ssm/export.h"
#include "ssm/ssm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- generic safetensors reading -------------------------------------------------------- */

typedef enum ssm_dtype {
    SSM_DTYPE_F32, SSM_DTYPE_F16, SSM_DTYPE_BF16, SSM_DTYPE_F64,
    SSM_DTYPE_I64, SSM_DTYPE_I32, SSM_DTYPE_U8,
} ssm_dtype;

typedef struct ssm_st_tensor {
    char *name;
    ssm_dtype dtype;
    int ndim;
    int64_t shape[8];
    size_t numel;
    uint64_t begin, end; /* byte offsets into the data section */
} ssm_st_tensor;

typedef struct ssm_safetensors ssm_safetensors; /* an open, validated file */

SSM_API ssm_status ssm_safetensors_open(const char *path, ssm_safetensors **out);
SSM_API void ssm_safetensors_close(ssm_safetensors *st);
SSM_API int ssm_safetensors_count(const ssm_safetensors *st);
SSM_API const ssm_st_tensor *ssm_safetensors_tensor(const ssm_safetensors *st, int i);
SSM_API const ssm_st_tensor *ssm_safetensors_find(const ssm_safetensors *st, const char *name);
/* A __metadata__ value, or NULL. */
SSM_API const char *ssm_safetensors_meta(const ssm_safetensors *st, const char *key);
/* Read a tensor converted to float32 (from f32/f16/bf16/f64); n must equal its numel. */
SSM_API ssm_status ssm_safetensors_read_f32(const ssm_safetensors *st, const char *name, float *dst,
                                            size_t n);
/* Read an integer tensor (i64/i32/u8) converted to int32; n must equal its numel. */
SSM_API ssm_status ssm_safetensors_read_i32(const ssm_safetensors *st, const char *name,
                                            int32_t *dst, size_t n);

/* ---- generic safetensors writing (fp32 tensors) ----------------------------------------- */

typedef struct ssm_st_write_item {
    const char *name;
    int ndim;
    int64_t shape[8];
    const float *data;
} ssm_st_write_item;

/* Write items as F32 tensors with the given metadata (NULL-terminated key, value, key, value,
 * ..., NULL list; may be NULL) to path.tmp, fsync, rename to path. */
SSM_API ssm_status ssm_safetensors_write(const char *path, const ssm_st_write_item *items,
                                         int n_items, const char *const *meta_kv);

/* ---- model checkpoints ------------------------------------------------------------------ */

/* Save the model's parameters and config; meta_kv as above (extra metadata, may be NULL). */
SSM_API ssm_status ssm_checkpoint_save(const ssm_model *model, const char *path,
                                       const char *const *meta_kv);
/* config.json for transformers (MambaConfig for Mamba-1 models, Mamba2Config for Mamba-2
 * ones; a model of several kinds gets a stub naming the metadata), via path.tmp + rename. */
SSM_API ssm_status ssm_checkpoint_write_config(const ssm_model *model, const char *path,
                                               int bos_token_id);
/* Load a model. path is a .safetensors file, or a directory holding model.safetensors. The
 * config comes from the ssm.* metadata, else from a config.json beside the file (what
 * transformers' save_pretrained writes), else it is an error. Tensors may be f32, f16 or bf16;
 * lm_head.weight may be absent (tied) and, when present, must equal the embedding's shape. */
SSM_API ssm_status ssm_checkpoint_load(const char *path, ssm_model **out);

/* ---- optimizer state (exact resume) ----------------------------------------------------- */

/* m.<name> and v.<name> tensors, the step and the extra metadata (data position, RNG...). */
SSM_API ssm_status ssm_adamw_save(const ssm_adamw *opt, const ssm_model *model, const char *path,
                                  const char *const *meta_kv);
/* Restore moments and step into opt (created for this model); *st_out (optional) receives the
 * open file so that the caller can read its own metadata; close it with
 * ssm_safetensors_close. */
SSM_API ssm_status ssm_adamw_load(ssm_adamw *opt, const ssm_model *model, const char *path,
                                  ssm_safetensors **st_out);

#ifdef __cplusplus
}
#endif
#endif
