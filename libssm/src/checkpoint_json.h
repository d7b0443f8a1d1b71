/* checkpoint_json.h: reading transformers' config.json keys (checkpoint.c), shared with the
 * hybrid models' configs (checkpoint_hybrid.c). Each failure names the file and the key. */
#ifndef SSM_CHECKPOINT_JSON_H
#define SSM_CHECKPOINT_JSON_H

#include <jansson.h>

#include "internal.h"

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

#endif
