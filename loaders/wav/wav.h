/* wav.h: audio files through libsndfile, for the audio task (tasks/audio), for training and for
 * scoring.
 *
 * Every format libsndfile reads (WAV, FLAC, OGG/Vorbis, AIFF, AU, CAF, ...), any sample type
 * (8/16/24/32-bit integer, float, double, mu-law/A-law, ...). Channels are mixed down to mono
 * (their mean); the result is resampled with libsamplerate (SRC_SINC_MEDIUM_QUALITY) to the
 * rate asked for, unless the file already has it, and quantised to 8-bit codes (mu-law or
 * linear, below). Files are read in blocks of WAV_BLOCK_FRAMES frames (sf_readf_float), never
 * whole: only the 8-bit codes are kept, one byte per sample.
 *
 * Errors (SSM_ERR_IO for files that cannot be opened, SSM_ERR_FORMAT for the rest, always
 * naming the file):
 *  - a file libsndfile cannot open or does not know ("FILE: not an audio file libsndfile can
 *    read: ..."), a header with a sample rate of 0 (libsndfile refuses those as malformed; the
 *    message says so), a file with no samples (zero length, or a header only);
 *  - a float or double file holding NaN or infinity: "FILE: sample 1234 (channel 0) is NaN"
 *    (the index is the frame in the file, 0-based, at the file's own rate);
 *  - a folder with no audio file in it, a glob matching nothing.
 * Float samples outside [-1, 1] are clipped.
 *
 * File lists (wav_glob): a file is kept as it is; a folder stands for the audio files inside it
 * (not recursive; hidden files skipped; every regular file libsndfile can open, sorted by name;
 * others such as a LICENSE beside the audio are skipped silently); a shell pattern (*, ?, [...])
 * stands for its matches, sorted.
 *
 * The training set (wav_set) and its validation split, the same on every run:
 *  - with validation files (data.valid), those are the validation split and the training files
 *    the training split;
 *  - else with two files or more: whole files, those whose name's hash (FNV-1a of the base name,
 *    so moving the folder changes nothing) falls below valid_fraction; at least one file when
 *    valid_fraction > 0 (the lowest hash), never all of them (the highest stays);
 *  - else (one file): its last floor(valid_fraction * samples) samples.
 * A file shorter than one training window is not an error: it is used whole, and the task pads
 * the window past its end (padding is not scored). */
#ifndef SSM_LOADERS_WAV_H
#define SSM_LOADERS_WAV_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ssm/ssm.h"
#include "ssm/task.h"

#ifdef __cplusplus
extern "C" {
#endif

#define WAV_BLOCK_FRAMES 8192
#define WAV_MULAW_MU 255

typedef enum wav_encoding { WAV_MULAW = 0, WAV_LINEAR = 1 } wav_encoding;

/* ---- 8-bit codes --------------------------------------------------------------------------- */

/* x in [-1, 1] (clipped) to a code 0..255 and back.
 * mu-law: y = sign(x) ln(1 + mu|x|) / ln(1 + mu), code = round((y + 1) / 2 * 255);
 * linear: code = floor((x + 1) * 128) clipped to 255, decoded at the middle of its step. */
uint8_t wav_encode_sample(float x, wav_encoding enc);
float wav_decode_sample(uint8_t code, wav_encoding enc);

/* ---- reading -------------------------------------------------------------------------------- */

typedef struct wav_audio {
    uint8_t *codes;  /* (n) 8-bit codes at the rate asked for; free() */
    size_t n;
    int file_rate;   /* the file's own sample rate */
    int channels;    /* the file's channels */
    int64_t frames;  /* the file's frames at its own rate */
} wav_audio;

/* Read a file ("-" = standard input, read into memory first) at `rate` Hz as codes; at most
 * max_samples codes when max_samples > 0 (the rest is not read). */
ssm_status wav_read_file(const char *path, int rate, wav_encoding enc, size_t max_samples,
                         wav_audio *out);
/* The same from bytes in memory (libsndfile virtual I/O); name is used in messages. */
ssm_status wav_read_memory(const char *name, const void *data, size_t len, int rate,
                           wav_encoding enc, size_t max_samples, wav_audio *out);
/* 1 when libsndfile can open path as audio (the header is read, not the samples). */
int wav_is_audio(const char *path);

/* ---- writing -------------------------------------------------------------------------------- */

/* A complete 16-bit PCM mono WAV of the codes at `rate`, built in memory (virtual I/O, so that
 * out may be a pipe) and then written to out. */
ssm_status wav_write_codes(FILE *out, const uint8_t *codes, size_t n, int rate, wav_encoding enc);

/* ---- file lists ----------------------------------------------------------------------------- */

/* Expand files, folders and patterns (see above) in order, duplicates dropped. *paths is
 * NULL-terminated; free with wav_paths_free. */
ssm_status wav_glob(const char *const *patterns, int n, char ***paths, int *n_paths);
void wav_paths_free(char **paths);

/* ---- training set --------------------------------------------------------------------------- */

typedef struct wav_set_options {
    int sample_rate;       /* 16000 */
    wav_encoding encoding; /* WAV_MULAW */
    double valid_fraction; /* 0.1; in [0, 0.5] */
} wav_set_options;

wav_set_options wav_set_options_default(void);

/* A stretch of one file's codes in one split. */
typedef struct wav_segment {
    int file;             /* index into the set's files */
    size_t offset;        /* of the first code in the file */
    const uint8_t *codes; /* (length) */
    size_t length;
    int starts;           /* 1 when the file starts here (the task puts BOS before it) */
} wav_segment;

typedef struct wav_set wav_set;

/* Open the files the patterns name (training, and optional validation patterns) and split
 * them. Errors name the pattern or the file. */
ssm_status wav_set_open(const char *const *train, int n_train, const char *const *valid,
                        int n_valid, const wav_set_options *opt, wav_set **out);
void wav_set_free(wav_set *set);

int wav_set_n_files(const wav_set *set);
const char *wav_set_file_path(const wav_set *set, int file);
size_t wav_set_file_samples(const wav_set *set, int file);
int wav_set_n_segments(const wav_set *set, ssm_split split);
const wav_segment *wav_set_segment(const wav_set *set, ssm_split split, int i);
size_t wav_set_split_samples(const wav_set *set, ssm_split split);

/* A random window of width positions: a segment with probability proportional to its
 * positions (length + starts), then a uniform start in it (0 when it is not longer than
 * width). Draws only from rng. A split with no samples is an error. */
ssm_status wav_set_draw(const wav_set *set, ssm_split split, size_t width, ssm_rng *rng,
                        int *segment, size_t *start);

/* FNV-1a 64 of the base name of path (what the split uses). */
uint64_t wav_name_hash(const char *path);

#ifdef __cplusplus
}
#endif
#endif
