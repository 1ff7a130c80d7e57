/*
 * ss_err.h - the project's single error enum.
 *
 * Every library function in statesoup returns an ss_err. Third-party codes (errno, MDB_*, MHD,
 * PCRE2) are translated to one of these at the module boundary. A human-readable detail (which
 * tensor, which field, which byte) is kept per thread and read back with ss_errmsg(); the API layer
 * maps ss_err to an HTTP status in one table (api/api.c); the codes on the wire are ss_err_name().
 */
#ifndef SS_ERR_H
#define SS_ERR_H

#include <stddef.h>

typedef enum ss_err {
    SS_OK = 0,
    SS_ERR_NOMEM,       /* allocation failed */
    SS_ERR_IO,          /* read/write/mmap failed (errno detail in the message) */
    SS_ERR_NOT_FOUND,   /* file, tensor, state or name does not exist */
    SS_ERR_FORMAT,      /* malformed input: JSON, safetensors header, truncated file */
    SS_ERR_INVALID,     /* well-formed input with an invalid value (NaN weight, bad token id) */
    SS_ERR_UNSUPPORTED, /* valid but not supported here: unknown architecture or dtype */
    SS_ERR_MISMATCH,    /* shapes/fingerprint do not match the loaded model */
    SS_ERR_EXISTS,      /* name already taken */
    SS_ERR_FULL,        /* storage full (disk or map cannot grow) */
    SS_ERR_CORRUPT,     /* stored data failed its checksum */
    SS_ERR_BUSY,        /* overloaded: queue full, try again */
    SS_ERR_TOO_LARGE,   /* request or input exceeds a configured limit */
    SS_ERR_PERM,        /* not allowed (auth scope, read-only store) */
    SS_ERR_CANCELLED,   /* operation cancelled by the caller (client went away) */
    SS_ERR_INTERNAL,    /* a bug: an invariant did not hold */
    SS_ERR_UNAVAILABLE, /* a resource is gone or degraded (the store's data file was removed) */
    SS_ERR__COUNT
} ss_err;

/* Short, stable description of the code ("not found"). Never NULL. Thread-safe. */
const char *ss_strerror(ss_err e);

/*
 * Stable snake_case name of the code ("not_found"): the `code` of the HTTP API's error answers
 * (docs/api.md). "unknown_error" for a value outside the enum. Never NULL.
 */
const char *ss_err_name(ss_err e);

/*
 * Record a detail message for the calling thread and return `e` unchanged, so error paths read
 * `return ss_fail(SS_ERR_FORMAT, "tensor %s: offsets outside the file", name);`.
 * The message is truncated to 1023 bytes. Thread-safe (thread-local storage).
 */
ss_err ss_fail(ss_err e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Detail of the last ss_fail() on this thread, or ss_strerror() of `e` when none was recorded
 * since the last ss_err_clear(). The pointer stays valid until the next ss_fail() on this thread.
 */
const char *ss_errmsg(void);

/* Forget the thread's last detail message. */
void ss_err_clear(void);

#endif
