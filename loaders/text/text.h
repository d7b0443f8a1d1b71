/* text.h: plain and gzip text files for the text task (tasks/lm), for training and for scoring.
 *
 * Files are read whole into memory through zlib's gzread, which reads gzip (one member or
 * several) and plain files alike; "-" is standard input. Every file is checked:
 *
 *  - an empty file (or one holding only white space) is an error naming it;
 *  - a file that looks binary is refused: any NUL byte, or more than TEXT_MAX_ODD_FRACTION of
 *    its bytes in invalid UTF-8 sequences or control characters other than tab, line feed,
 *    vertical tab, form feed, carriage return and escape. The message is
 *    "FILE: looks binary (byte 0x00 at offset N); the text task reads UTF-8 text". A few stray
 *    bytes (a Latin-1 accent in an otherwise English file) are accepted and kept as they are;
 *  - truncated or corrupt gzip data is an error naming the file;
 *  - a UTF-8 byte order mark at the start is dropped.
 *
 * Documents. A document is the unit a training window stays inside (the task puts a start
 * token before its first byte and an end token after its last). By default each file is one
 * document (TEXT_DOCS_FILE). With TEXT_DOCS_BLANK_LINES a file is cut at every run of blank
 * lines (lines empty or holding only spaces, tabs or a carriage return): each stretch of
 * non-blank lines, with its line ends, is a document and the blank lines belong to none. Use
 * it for corpora that put one blank line between articles or books (data/text/web.txt.gz has
 * one between books); prose whose paragraphs are separated by blank lines would then be
 * read as one document per paragraph.
 *
 * Validation split, the same on every run:
 *  - with validation files (data.valid), those are the validation split and the training
 *    files the training split;
 *  - else TEXT_VALID_TAIL (the default): the last valid_fraction of each file's bytes, the
 *    cut moved forward to the start of the next line (or, in a file of one line, to the next
 *    UTF-8 character boundary). A document that spans the cut is two pieces: the training
 *    piece has no end, the validation piece no start;
 *  - else TEXT_VALID_DOCUMENTS: whole documents, taken in the order of a hash of their
 *    content (FNV-1a) until they hold valid_fraction of all the bytes: at least one document,
 *    never all of them; the same content is always on the same side, whatever the file names.
 * valid_fraction 0 means no validation split. */
#ifndef SSM_LOADERS_TEXT_H
#define SSM_LOADERS_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "ssm/ssm.h"
#include "ssm/task.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The share of a file's bytes that may be invalid UTF-8 or odd control bytes before the file
 * is called binary. */
#define TEXT_MAX_ODD_FRACTION 0.01

/* ---- files ------------------------------------------------------------------------------- */

/* Read a whole file (plain or gzip; "-" = stdin) and check it (see above). *data is
 * NUL-terminated (not counted in *len), without a leading byte order mark; free() it. */
ssm_status text_read_file(const char *path, uint8_t **data, size_t *len);
/* The check alone: SSM_OK, or SSM_ERR_FORMAT with the "looks binary" / "empty" message. */
ssm_status text_check(const char *path, const uint8_t *data, size_t len);

/* Expand shell patterns (*, ?, [...], glob(3)) into paths, each pattern's matches sorted, in
 * the order of the patterns, duplicates dropped. A name without pattern characters is kept as
 * it is (so that opening it reports a missing file by name); "-" is kept too. A pattern that
 * matches nothing is an error naming it. *paths is NULL-terminated; free with text_paths_free. */
ssm_status text_glob(const char *const *patterns, int n, char ***paths, int *n_paths);
void text_paths_free(char **paths);

/* ---- training set ------------------------------------------------------------------------ */

typedef enum text_docs { TEXT_DOCS_FILE = 0, TEXT_DOCS_BLANK_LINES = 1 } text_docs;
typedef enum text_valid_split { TEXT_VALID_TAIL = 0, TEXT_VALID_DOCUMENTS = 1 } text_valid_split;

typedef struct text_set_options {
    double valid_fraction;        /* 0.05; in [0, 0.5] */
    text_docs documents;          /* TEXT_DOCS_FILE */
    text_valid_split valid_split; /* TEXT_VALID_TAIL */
} text_set_options;

text_set_options text_set_options_default(void);

/* A piece of one document that lies in one split. */
typedef struct text_segment {
    int file;             /* index into the set's files */
    size_t offset;        /* of the first byte in the file */
    const uint8_t *bytes; /* (length) */
    size_t length;
    int starts;           /* 1 when the document starts here (the task puts its start token) */
    int ends;             /* 1 when the document ends here (the task puts its end token) */
} text_segment;

typedef struct text_set text_set;

/* Open the files the patterns name (training, and optional validation patterns) and split
 * them. Errors name the pattern or the file. */
ssm_status text_set_open(const char *const *train, int n_train, const char *const *valid,
                         int n_valid, const text_set_options *opt, text_set **out);
void text_set_free(text_set *set);

int text_set_n_files(const text_set *set);
const char *text_set_file_path(const text_set *set, int file);
size_t text_set_file_size(const text_set *set, int file);
int text_set_n_documents(const text_set *set);
/* Segments of a split, in file and position order. */
int text_set_n_segments(const text_set *set, ssm_split split);
const text_segment *text_set_segment(const text_set *set, ssm_split split, int i);
/* Bytes in a split. */
size_t text_set_split_bytes(const text_set *set, ssm_split split);

/* A random window of width positions from the split, a segment counting length + starts +
 * ends positions (room for the start and end tokens): a segment with probability
 * proportional to its positions, then a uniform start inside it (0 when the segment is not
 * longer than width). Draws only from rng. */
ssm_status text_set_draw(const text_set *set, ssm_split split, size_t width, ssm_rng *rng,
                         int *segment, size_t *start);

#ifdef __cplusplus
}
#endif
#endif
