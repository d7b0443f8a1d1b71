/* checkpoint_json.h: reading transformers' config.json keys (checkpoint.c), shared with the
 * hybrid models' configs (checkpoint_hybrid.c). Each failure names the file and the key. */
#ifndef SSM_CHECKPOINT_JSON_H
#define SSM_CHECKPOINT_JSON_H

#include <jansson.h>

#include "internal.h"
#include "ssm/checkpoint.h"

/* The largest integer a config key may hold: sizes past it are not models ssm makes, and the
 * arithmetic on them (a width times expand, a vocabulary padded up) stays inside an int. */
#define SSM_JSON_INT_MAX (1 << 24)
/* An integer key in [1, SSM_JSON_INT_MAX]: required, or dflt when absent. */
ssm_status json_int(json_t *cfg, const char *cpath, const char *key, int required, int dflt,
                    int *out);
/* An integer key in [lo, SSM_JSON_INT_MAX]: dflt when absent or null. */
ssm_status json_int_from(json_t *cfg, const char *cpath, const char *key, int dflt, int lo,
                         int *out);
/* a x b (each in [1, SSM_JSON_INT_MAX]), a width of the model: past SSM_JSON_INT_MAX it is
 * refused, naming key. */
ssm_status json_times(const char *cpath, const char *key, int a, int b, int *out);
/* A boolean key that must be absent or equal want (why: what ssm lacks). */
ssm_status json_bool_must(json_t *cfg, const char *cpath, const char *key, int want,
                          const char *why);
/* A string key that must be absent or equal want. */
ssm_status json_str_must(json_t *cfg, const char *cpath, const char *key, const char *want);
/* A number, or {"__float__": "Infinity"}. */
ssm_status json_float(json_t *v, const char *cpath, const char *key, double *out);

/* transformers' NemotronHConfig (model_type "nemotron_h") -> c; a key ssm cannot represent is
 * refused by name. */
ssm_status ssm_json_nemotron_h(json_t *cfg, const char *cpath, ssm_config *c);
/* The NemotronHConfig of a model that one can hold (a layer pattern of Mamba-2, attention
 * without RoPE, relu2 MLP and sigmoid-routed relu2 MoE layers, no second sublayers), or NULL. */
json_t *ssm_json_nemotron_h_config(const ssm_config *c, int bos_token_id);

/* Caduceus (checkpoint_caduceus.c): CaduceusConfig (model_type "caduceus") -> c; the ssm.*
 * metadata of the bidirectional and RCPS options (ssm.bidirectional, ssm.rcps,
 * ssm.complement_map "0,1,...": ssm_format_complement writes it into vocab_size * 4 + 1 bytes);
 * a file of Caduceus' names (caduceus.backbone.*); the stored name of one of ours (into out);
 * 1 for a stored tied alias or complement_map buffer; those checked against the model. */
ssm_status ssm_json_caduceus(json_t *cfg, const char *cpath, ssm_config *c);
void ssm_format_complement(const ssm_config *c, char *out);
ssm_status ssm_caduceus_from_metadata(const ssm_safetensors *st, const char *file, ssm_config *c);
int ssm_caduceus_file(const ssm_safetensors *st);
const char *ssm_caduceus_name(const ssm_safetensors *st, const char *ours, char *out, size_t size);
int ssm_caduceus_alias(const char *name);
ssm_status ssm_caduceus_check_aliases(const ssm_safetensors *st, const char *file,
                                      const ssm_model *m);
/* How a file names the tensors: ssm's own names (which are also transformers' Mamba, Mamba2
 * and NemotronH names), or another layout mapped piece by piece (ssm_file_piece). */
typedef enum ssm_file_names { SSM_NAMES_OWN, SSM_NAMES_JAMBA, SSM_NAMES_MAMBA_SSM } ssm_file_names;

/* One stored tensor's share of an ssm tensor: `count` elements from element `from` of the
 * stored tensor `name` (of shape ndim/shape in the file) are the next `count` elements of the
 * ssm tensor, pieces in order (Jamba's fc1 = [up_proj | gate_proj]; mamba_ssm's attention
 * in_proj = [q | k | v] rows, one piece of each of q_proj, k_proj, v_proj). */
typedef struct ssm_file_piece {
    char name[160];
    int ndim;
    int64_t shape[3];
    size_t from, count;
} ssm_file_piece;

/* Piece j of tensor ti in a file of these names: 1, or 0 past the last (or for OWN names). */
int ssm_file_piece_of(ssm_file_names names, const ssm_config *c, const ssm_tensor_info *ti,
                      int j, ssm_file_piece *p);
/* The names a checkpoint of this config is saved under (with its config.json). */
ssm_file_names ssm_file_names_for(const ssm_config *c);

/* transformers' JambaConfig (model_type "jamba") -> c, and its names; the config of a model
 * that JambaForCausalLM holds (layers in [mixer, feed-forward] pairs laid out by periods and
 * offsets, Mamba-1 with the inner norms, no RoPE, SwiGLU, softmax-routed MoE), or NULL. */
ssm_status ssm_json_jamba(json_t *cfg, const char *cpath, ssm_config *c);
int ssm_jamba_layout(const ssm_config *c, int *ap, int *ao, int *ep, int *eo);
json_t *ssm_json_jamba_config(const ssm_config *c, int bos_token_id);
int ssm_jamba_piece(const ssm_config *c, const ssm_tensor_info *ti, int j, ssm_file_piece *p);

/* mamba_ssm's MixerModel hybrids (its config.json: d_model, ssm_cfg, attn_layer_idx, attn_cfg,
 * d_intermediate) and their names: the attention's q, k, v stacked in mixer.in_proj.weight. */
ssm_status ssm_json_mamba_ssm(json_t *cfg, const char *cpath, ssm_config *c);
int ssm_mamba_ssm_layout(const ssm_config *c);
json_t *ssm_json_mamba_ssm_config(const ssm_config *c);
int ssm_mamba_ssm_piece(const ssm_config *c, const ssm_tensor_info *ti, int j, ssm_file_piece *p);

#endif
