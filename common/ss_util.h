/*
 * ss_util.h - small helpers shared by every module: whole-file reads and JSON as HF writes it.
 * Internal to the project (uses jansson types); no module exposes these through its own header.
 */
#ifndef SS_UTIL_H
#define SS_UTIL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "ss_err.h"

/*
 * Read the whole file at `path` into a malloc'd, NUL-terminated buffer (*buf, *len without the
 * NUL). Files larger than max_bytes give SS_ERR_TOO_LARGE. SS_ERR_NOT_FOUND / SS_ERR_IO otherwise.
 */
ss_err ss_read_file(const char *path, size_t max_bytes, char **buf, size_t *len);

/*
 * Parse JSON that may contain the bare tokens Infinity, -Infinity and NaN (Python's json module
 * and so HF write them): outside strings they are turned into the strings "Infinity",
 * "-Infinity" and "NaN" before jansson sees them; ss_json_real() reads them back as numbers.
 * On error returns SS_ERR_FORMAT with line/column and jansson's text in the message,
 * prefixed by `what` (e.g. the file name).
 */
ss_err ss_json_parse_relaxed(const char *text, size_t len, const char *what, json_t **out);

/* A JSON number (or one of the strings above) as a double; `dflt` when absent or not numeric. */
double ss_json_real(const json_t *v, double dflt);
/* Is v a number or one of the strings "Infinity", "-Infinity", "NaN"? */
int ss_json_is_number(const json_t *v);

/*
 * A load-progress printer for ss_model_params.progress: "<prefix>loading model: <phase> N%" on a
 * terminal (redrawn in place), one "... done" line per phase otherwise (log files). `prefix` is
 * a const char * passed as the user pointer; NULL: the log's program name and format (ss_log.h:
 * with JSON, one {"event":"loading","phase":...} line per phase). Not thread-safe (one load at a
 * time).
 */
void ss_progress_print(void *prefix, const char *phase, uint64_t done, uint64_t total);

/* Wall clock in nanoseconds since the epoch / monotonic clock in nanoseconds. */
int64_t ss_now_ns(void);
int64_t ss_mono_ns(void);

/* Fill buf with n cryptographically random bytes (getrandom). SS_ERR_IO when it fails. */
ss_err ss_random_bytes(void *buf, size_t n);

/* Lowercase hex of n bytes into out (2n+1 bytes incl. NUL). */
void ss_hex(const void *bytes, size_t n, char *out);

#endif
