/* recipe.h: YAML recipes (libyaml) as a tree of nodes that remember their file:line:col, with
 * typed getters that check types and ranges, unknown-key detection with a suggestion, and
 * command-line overrides (--set train.lr=1e-3). Every error message starts with
 * "FILE:LINE:COL: " so that programs print "ssm-train: recipes/dna.yaml:14:5: ...". */
#ifndef SSM_RECIPE_H
#define SSM_RECIPE_H

#include <stdio.h>

#include "ssm/export.h"
#include "ssm/ssm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ssm_node_kind { SSM_NODE_SCALAR, SSM_NODE_MAP, SSM_NODE_SEQ } ssm_node_kind;

typedef struct ssm_node ssm_node;
struct ssm_node {
    ssm_node_kind kind;
    int line, col;     /* 1-based position in the file ("--set" overrides: line 0) */
    char *value;       /* scalar text (SSM_NODE_SCALAR) */
    int n;             /* children (map entries or sequence items) */
    char **keys;       /* (n) map keys; NULL for a sequence */
    ssm_node **items;  /* (n) children */
    int used;          /* set by the getters: keys never read are reported as unknown */
};

typedef struct ssm_recipe {
    char *path;        /* as given, used in messages */
    ssm_node *root;    /* a map */
} ssm_recipe;

/* Parse a YAML file (a mapping at the top). Anchors/aliases and tags are refused. */
SSM_API ssm_status ssm_recipe_load(const char *path, ssm_recipe **out);
/* Parse YAML text held in memory; name is used in messages. */
SSM_API ssm_status ssm_recipe_parse(const char *name, const char *text, size_t len,
                                    ssm_recipe **out);
SSM_API void ssm_recipe_free(ssm_recipe *r);
/* Apply "a.b.c=value" (creates maps and the key as needed; value parsed as a YAML scalar). */
SSM_API ssm_status ssm_recipe_set(ssm_recipe *r, const char *assignment);
/* Write the recipe (the resolved one, overrides included) as YAML, via path.tmp + rename. */
SSM_API ssm_status ssm_recipe_write(const ssm_recipe *r, const char *path);
/* Emit YAML to a stream (used by ssm_recipe_write and to embed the recipe in checkpoints). */
SSM_API ssm_status ssm_recipe_emit(const ssm_recipe *r, FILE *f);

/* Child of a map by key (marks it used), or NULL when absent. */
SSM_API ssm_node *ssm_node_get(ssm_node *map, const char *key);
/* The section map under key: absent -> NULL and SSM_OK; present but not a map -> error. */
SSM_API ssm_status ssm_node_section(const ssm_recipe *r, ssm_node *map, const char *key,
                                    ssm_node **out);

/* Typed getters: absent key -> *out = def; a value of the wrong type or out of [lo, hi] ->
 * SSM_ERR_ARG with "FILE:LINE:COL: key 'lr' must be a number in [0, 1], got 'abc'". */
SSM_API ssm_status ssm_node_int(const ssm_recipe *r, ssm_node *map, const char *key, long long def,
                                long long lo, long long hi, long long *out);
SSM_API ssm_status ssm_node_float(const ssm_recipe *r, ssm_node *map, const char *key, double def,
                                  double lo, double hi, double *out);
SSM_API ssm_status ssm_node_bool(const ssm_recipe *r, ssm_node *map, const char *key, int def,
                                 int *out);
/* String scalar (pointer into the tree); absent -> def (may be NULL). */
SSM_API ssm_status ssm_node_string(const ssm_recipe *r, ssm_node *map, const char *key,
                                   const char *def, const char **out);
/* One of choices (NULL-terminated): index into *out. */
SSM_API ssm_status ssm_node_choice(const ssm_recipe *r, ssm_node *map, const char *key,
                                   const char *const *choices, int def, int *out);
/* A string or a sequence of strings, as a NULL-terminated array (free with free()) whose
 * strings point into the tree. Absent -> *out = NULL. */
SSM_API ssm_status ssm_node_strings(const ssm_recipe *r, ssm_node *map, const char *key,
                                    const char ***out, int *n);

/* After a section has been read: any key of map never read is an error,
 * "FILE:LINE:COL: unknown key 'lr_shedule' in train (did you mean 'lr_schedule'?)"; the
 * suggestion comes from `known` (NULL-terminated) by edit distance. */
SSM_API ssm_status ssm_node_check_unknown(const ssm_recipe *r, ssm_node *map, const char *section,
                                          const char *const *known);

/* The recipe's model section -> a validated config (docs/recipes.md, 'model'): the layer kinds
 * (mixer, layers), their options and the vocabulary the task needs. Errors name the key's
 * FILE:LINE:COL. */
SSM_API ssm_status ssm_config_from_recipe(const ssm_recipe *r, int vocab_size, ssm_config *out);

/* "FILE:LINE:COL" of a node, for messages of the caller's own. */
SSM_API const char *ssm_node_where(const ssm_recipe *r, const ssm_node *node, char *buf,
                                   size_t size);

#ifdef __cplusplus
}
#endif
#endif
