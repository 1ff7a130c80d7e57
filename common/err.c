/*
 * err.c - error names and the per-thread detail message behind ss_fail()/ss_errmsg().
 *
 * The names are the `code` of the HTTP API's error answers (docs/api.md): the daemon sends them
 * and the CLI reads them back into an ss_err, so this table is their one source.
 */
#include "ss_err.h"

#include <stdarg.h>
#include <stdio.h>

static const struct {
    const char *name;
    const char *text;
} table[SS_ERR__COUNT] = {
    [SS_OK] = {"ok", "success"},
    [SS_ERR_NOMEM] = {"out_of_memory", "out of memory"},
    [SS_ERR_IO] = {"io_error", "input/output error"},
    [SS_ERR_NOT_FOUND] = {"not_found", "not found"},
    [SS_ERR_FORMAT] = {"bad_request", "malformed input"},
    [SS_ERR_INVALID] = {"invalid_value", "invalid value"},
    [SS_ERR_UNSUPPORTED] = {"unsupported", "not supported"},
    [SS_ERR_MISMATCH] = {"model_mismatch", "does not match the loaded model"},
    [SS_ERR_EXISTS] = {"already_exists", "already exists"},
    [SS_ERR_FULL] = {"store_full", "storage is full"},
    [SS_ERR_CORRUPT] = {"corrupt", "stored data is corrupt"},
    [SS_ERR_BUSY] = {"overloaded", "server overloaded"},
    [SS_ERR_TOO_LARGE] = {"too_large", "too large"},
    [SS_ERR_PERM] = {"forbidden", "not allowed"},
    [SS_ERR_CANCELLED] = {"cancelled", "cancelled"},
    [SS_ERR_INTERNAL] = {"internal_error", "internal error"},
    [SS_ERR_UNAVAILABLE] = {"unavailable", "temporarily unavailable"},
};

static _Thread_local char last_msg[1024];
static _Thread_local int have_msg;
static _Thread_local ss_err last_code;

const char *ss_strerror(ss_err e)
{
    if ((unsigned)e >= SS_ERR__COUNT) return "unknown error";
    return table[e].text;
}

const char *ss_err_name(ss_err e)
{
    if ((unsigned)e >= SS_ERR__COUNT) return "unknown_error";
    return table[e].name;
}

ss_err ss_fail(ss_err e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    va_end(ap);
    have_msg = 1;
    last_code = e;
    return e;
}

const char *ss_errmsg(void)
{
    if (have_msg) return last_msg;
    return ss_strerror(last_code);
}

void ss_err_clear(void)
{
    have_msg = 0;
    last_code = SS_OK;
    last_msg[0] = '\0';
}
