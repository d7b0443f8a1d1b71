/* reader.h: what the point readers share (not part of points.h's interface). */
#ifndef SSM_LOADERS_POINTS_READER_H
#define SSM_LOADERS_POINTS_READER_H

#include <math.h>
#include <stddef.h>

#include "points.h"

/* The whole file, NUL-terminated (*size excludes the NUL). */
ssm_status points_slurp(const char *path, char **data, size_t *size);

/* A cursor over text that counts lines. */
typedef struct text_cursor {
    const char *p, *end;
    int line;          /* of p, from 1 */
    char comment;      /* a character that comments out the rest of a line, or 0 */
} text_cursor;
/* Past whitespace and comments. */
void text_skip(text_cursor *c);
/* The next whitespace-separated token: *tok and *len; 0 at the end of the text. Sets
 * *line_of to the token's line. */
int text_token(text_cursor *c, const char **tok, size_t *len, int *line_of);
/* The token as a number (finite or not: the caller checks); 0 when it is not one. */
int text_number(const char *tok, size_t len, double *out);
/* x is a whole number in [lo, hi] (NaN is not), tested without a cast: casting a double outside
 * long long's range to it is undefined behaviour. */
static inline int text_whole(double x, double lo, double hi) {
    return x >= lo && x <= hi && x == floor(x);
}
/* A vertex's coordinates into set->xyz[i]; refuses a non-finite one with "where: ...". */
ssm_status points_store(const char *path, const char *where, point_set *set, int i,
                        const double v[3]);

ssm_status points_read_ply(const char *path, const char *data, size_t size, point_set *out);
ssm_status points_read_off(const char *path, const char *data, size_t size, point_set *out);
ssm_status points_read_xyz(const char *path, const char *data, size_t size, point_set *out);

#endif
