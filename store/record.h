/*
 * record.h - internal to store/: the state record's schema (validation of the caller's JSON and
 * the canonical text the store keeps and serves). Uses jansson types, so it is not part of the
 * public ss_store.h.
 */
#ifndef SS_STORE_RECORD_H
#define SS_STORE_RECORD_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "ss_err.h"

#define SS_REC_ID_LEN      35         /* "st_" + 32 lowercase hex */
#define SS_REC_NAME_MAX    128        /* bytes */
#define SS_REC_TAG_MAX     64         /* bytes per tag */
#define SS_REC_MAX_TAGS    64         /* tags per state */
#define SS_REC_MAX_PARENTS 1024       /* parents per state */
#define SS_REC_TEXT_MAX    (1u << 20) /* caller's record JSON, bytes */
#define SS_REC_TIME_LEN    27         /* "2026-11-29T14:03:07.123456Z" */

/*
 * Validate the caller's part of a record (`text`, NUL-terminated) and build the canonical object:
 * every key present, in the served order, with id/created_at/checksum null and bytes 0 until
 * ss_rec_finish() fills them. SS_ERR_FORMAT if `text` is not JSON, SS_ERR_INVALID (with the field
 * in the message) for a well-formed record with a bad value, SS_ERR_TOO_LARGE above
 * SS_REC_TEXT_MAX. *out (json_decref it) is set only on success.
 */
ss_err ss_rec_parse(const char *text, json_t **out);
/*
 * The same with the tenancy fields: keep 1 takes the caller's "tenant" and "shared" (a complete
 * record copied from another catalog), keep 0 drops them and sets "tenant" to `tenant` (NULL or
 * "": the default tenant, no field). ss_rec_parse is keep 0 with the default tenant.
 */
ss_err ss_rec_parse_as(const char *text, int keep, const char *tenant, json_t **out);
/* Set (or remove) "shared": true in a canonical record, keeping the key order. */
ss_err ss_rec_set_shared(json_t *rec, int shared);

/*
 * Fill the store-owned fields of `rec` (from ss_rec_parse) and serialise it compactly in key
 * order. *text (free() it) and *len (without the NUL) are set only on success.
 */
ss_err ss_rec_finish(json_t *rec, const char *id, int64_t created_ns, uint64_t bytes,
                     const char *checksum, char **text, size_t *len);

/* created_ns (nanoseconds since the epoch) as RFC 3339 UTC with microseconds; out holds 40. */
void ss_rec_format_time(int64_t created_ns, char *out, size_t cap);

#endif
