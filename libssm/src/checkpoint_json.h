/* checkpoint_json.h: reading transformers' config.json keys (checkpoint.c), shared with the
 * hybrid models' configs (checkpoint_hybrid.c). Each failure names the file and the key. */
#ifndef SSM_CHECKPOINT_JSON_H
#define SSM_CHECKPOINT_JSON_H

#include <jansson.h>

#include "internal.h"
#include "ssm/checkpoint.h"

/* An integer key >= 1: required, or dflt when absent. */
ssm_status json_int(json_t *cfg, const char *cpath, const char *key, int required, int dflt,
                    int *out);
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

#endif
