/*
 * record.c - the state record: checking the caller's JSON and writing the canonical form.
 *
 * The store keeps each record as the exact compact text the API serves, so reading a record is a
 * copy, not a re-encode. The key order is decided here and only here: id, name, tags, model,
 * n_tokens, created_at, bytes, dtype, parents, metadata, checksum. Unknown keys are refused rather
 * than dropped, so a caller's typo ("tag" for "tags") is an error and not silent data loss.
 */
#include "record.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ss_store.h"

/* [A-Za-z0-9._:/-]: the characters allowed in names and tags. */
static int is_name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '/' || c == '-';
}

static int is_hex(unsigned char c, int upper_ok)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (upper_ok && c >= 'A' && c <= 'F');
}

/* "st_" + 32 hex digits; upper_ok also accepts A-F (names must not even look like ids). */
static int id_shaped(const char *s, int upper_ok)
{
    if (!s || strncmp(s, "st_", 3) != 0) return 0;
    for (int i = 3; i < SS_REC_ID_LEN; i++) {
        if (!is_hex((unsigned char)s[i], upper_ok)) return 0;
    }
    return s[SS_REC_ID_LEN] == '\0';
}

/*
 * Is `ref` a state id ("st_" + 32 lowercase hex)? NULL gives 0. Pure function, thread-safe.
 */
int ss_store_is_id(const char *ref)
{
    return id_shaped(ref, 0);
}

/* Shared by names and tags: 1..max bytes of [A-Za-z0-9._:/-]. `what` names it in the message. */
static ss_err check_word(const char *what, const char *s, size_t max)
{
    if (!s) return ss_fail(SS_ERR_INVALID, "%s is missing", what);
    size_t n = strlen(s);
    if (n == 0 || n > max) {
        return ss_fail(SS_ERR_INVALID, "%s must be 1..%zu bytes long (got %zu)", what, max, n);
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_name_char(c)) {
            if (c >= 0x20 && c < 0x7f) {
                return ss_fail(SS_ERR_INVALID,
                               "%s '%.*s' contains '%c' (allowed: letters, digits, . _ : / -)",
                               what, (int)n, s, c);
            }
            return ss_fail(SS_ERR_INVALID,
                           "%s contains byte 0x%02x at offset %zu (allowed: letters, digits, "
                           ". _ : / -)",
                           what, c, i);
        }
    }
    return SS_OK;
}

/*
 * Validate a name: 1..128 bytes of [A-Za-z0-9._:/-] and not shaped like an id (in either case,
 * so that "st_ABC..." cannot be mistaken for an id by a reader either). SS_ERR_INVALID with a
 * message saying what is wrong. Thread-safe.
 */
ss_err ss_store_check_name(const char *name)
{
    ss_err err = check_word("name", name, SS_REC_NAME_MAX);
    if (err) return err;
    if (id_shaped(name, 1)) {
        return ss_fail(SS_ERR_INVALID, "name '%s' looks like a state id (st_ + 32 hex digits)",
                       name);
    }
    return SS_OK;
}

/* Validate a tenant name: 1..64 bytes of [A-Za-z0-9._:/-]. SS_ERR_INVALID. Thread-safe. */
ss_err ss_store_check_tenant(const char *tenant)
{
    return check_word("tenant", tenant, SS_STORE_TENANT_MAX);
}

/* Validate a tag: 1..64 bytes of [A-Za-z0-9._:/-]. SS_ERR_INVALID with a message. Thread-safe. */
ss_err ss_store_check_tag(const char *tag)
{
    return check_word("tag", tag, SS_REC_TAG_MAX);
}

/* A required non-empty string field of at most max bytes, copied into rec. */
static ss_err take_string(json_t *in, json_t *rec, const char *key, size_t max)
{
    json_t *v = json_object_get(in, key);
    if (!v) return ss_fail(SS_ERR_INVALID, "record: \"%s\" is required (a string)", key);
    if (!json_is_string(v)) return ss_fail(SS_ERR_INVALID, "record: \"%s\" must be a string", key);
    size_t n = json_string_length(v);
    if (n == 0 || n > max) {
        return ss_fail(SS_ERR_INVALID, "record: \"%s\" must be 1..%zu bytes long", key, max);
    }
    if (memchr(json_string_value(v), '\0', n)) {
        return ss_fail(SS_ERR_INVALID, "record: \"%s\" contains a NUL character", key);
    }
    return json_object_set(rec, key, v) ? ss_fail(SS_ERR_NOMEM, "record: out of memory") : SS_OK;
}

static ss_err take_name(json_t *in, json_t *rec)
{
    json_t *v = json_object_get(in, "name");
    if (!v || json_is_null(v)) {
        if (json_object_set_new(rec, "name", json_null())) {
            return ss_fail(SS_ERR_NOMEM, "record: out of memory");
        }
        return SS_OK;
    }
    if (!json_is_string(v)) {
        return ss_fail(SS_ERR_INVALID, "record: \"name\" must be a string or null");
    }
    if (strlen(json_string_value(v)) != json_string_length(v)) {
        return ss_fail(SS_ERR_INVALID, "record: \"name\" contains a NUL character");
    }
    ss_err err = ss_store_check_name(json_string_value(v));
    if (err) return err;
    return json_object_set(rec, "name", v) ? ss_fail(SS_ERR_NOMEM, "record: out of memory") : SS_OK;
}

static ss_err take_tags(json_t *in, json_t *rec)
{
    json_t *v = json_object_get(in, "tags");
    json_t *tags = json_array();
    ss_err err = SS_OK;
    if (!tags) return ss_fail(SS_ERR_NOMEM, "record: out of memory");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v)) {
            err = ss_fail(SS_ERR_INVALID, "record: \"tags\" must be an array of strings");
            goto out;
        }
        if (json_array_size(v) > SS_REC_MAX_TAGS) {
            err = ss_fail(SS_ERR_INVALID, "record: at most %d tags (got %zu)", SS_REC_MAX_TAGS,
                          json_array_size(v));
            goto out;
        }
        size_t i;
        json_t *t;
        json_array_foreach (v, i, t) {
            if (!json_is_string(t) || strlen(json_string_value(t)) != json_string_length(t)) {
                err = ss_fail(SS_ERR_INVALID, "record: tags[%zu] must be a string", i);
                goto out;
            }
            err = ss_store_check_tag(json_string_value(t));
            if (err) goto out;
            /* The tag index has one entry per (tag, state): a repeated tag is a caller bug. */
            for (size_t j = 0; j < i; j++) {
                if (json_equal(json_array_get(v, j), t)) {
                    err = ss_fail(SS_ERR_INVALID, "record: tag '%s' is given twice",
                                  json_string_value(t));
                    goto out;
                }
            }
            if (json_array_append(tags, t)) {
                err = ss_fail(SS_ERR_NOMEM, "record: out of memory");
                goto out;
            }
        }
    }
    if (json_object_set(rec, "tags", tags)) err = ss_fail(SS_ERR_NOMEM, "record: out of memory");
out:
    json_decref(tags);
    return err;
}

static ss_err take_n_tokens(json_t *in, json_t *rec)
{
    json_t *v = json_object_get(in, "n_tokens");
    if (!v) return ss_fail(SS_ERR_INVALID, "record: \"n_tokens\" is required (an integer)");
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        return ss_fail(SS_ERR_INVALID, "record: \"n_tokens\" must be a non-negative integer");
    }
    return json_object_set(rec, "n_tokens", v) ? ss_fail(SS_ERR_NOMEM, "record: out of memory")
                                               : SS_OK;
}

/* parents: [{"id": state id, "weight": number}], rebuilt so the keys are in that order. */
static ss_err take_parents(json_t *in, json_t *rec)
{
    json_t *v = json_object_get(in, "parents");
    json_t *parents = json_array();
    ss_err err = SS_OK;
    if (!parents) return ss_fail(SS_ERR_NOMEM, "record: out of memory");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v)) {
            err = ss_fail(SS_ERR_INVALID, "record: \"parents\" must be an array");
            goto out;
        }
        if (json_array_size(v) > SS_REC_MAX_PARENTS) {
            err = ss_fail(SS_ERR_INVALID, "record: at most %d parents (got %zu)",
                          SS_REC_MAX_PARENTS, json_array_size(v));
            goto out;
        }
        size_t i;
        json_t *src;
        json_array_foreach (v, i, src) {
            if (!json_is_object(src)) {
                err = ss_fail(SS_ERR_INVALID, "record: parents[%zu] must be an object", i);
                goto out;
            }
            json_t *id = json_object_get(src, "id");
            json_t *w = json_object_get(src, "weight");
            if (!json_is_string(id) || !ss_store_is_id(json_string_value(id))) {
                err = ss_fail(SS_ERR_INVALID, "record: parents[%zu].id must be a state id", i);
                goto out;
            }
            if (!json_is_number(w)) {
                err = ss_fail(SS_ERR_INVALID, "record: parents[%zu].weight must be a number", i);
                goto out;
            }
            if (json_object_size(src) != 2) {
                err =
                    ss_fail(SS_ERR_INVALID,
                            "record: parents[%zu] may only have the keys \"id\" and \"weight\"", i);
                goto out;
            }
            json_t *p = json_object();
            if (!p || json_object_set(p, "id", id) || json_object_set(p, "weight", w)) {
                json_decref(p);
                err = ss_fail(SS_ERR_NOMEM, "record: out of memory");
                goto out;
            }
            /* append_new takes the reference even when it fails. */
            if (json_array_append_new(parents, p)) {
                err = ss_fail(SS_ERR_NOMEM, "record: out of memory");
                goto out;
            }
        }
    }
    if (json_object_set(rec, "parents", parents)) {
        err = ss_fail(SS_ERR_NOMEM, "record: out of memory");
    }
out:
    json_decref(parents);
    return err;
}

static ss_err take_metadata(json_t *in, json_t *rec)
{
    json_t *v = json_object_get(in, "metadata");
    if (!v || json_is_null(v)) {
        if (json_object_set_new(rec, "metadata", json_object())) {
            return ss_fail(SS_ERR_NOMEM, "record: out of memory");
        }
        return SS_OK;
    }
    if (!json_is_object(v)) {
        return ss_fail(SS_ERR_INVALID, "record: \"metadata\" must be an object");
    }
    return json_object_set(rec, "metadata", v) ? ss_fail(SS_ERR_NOMEM, "record: out of memory")
                                               : SS_OK;
}

static const char *const record_keys[] = {"id",      "name",       "tenant",   "tags",
                                          "model",   "n_tokens",   "created_at", "bytes",
                                          "dtype",   "parents",    "merge_mode", "shared",
                                          "metadata", "checksum"};

/* The caller's "tenant" (absent, null or "" = the default tenant: left out) and "shared"
 * (absent or false: left out), kept only when keep is set (copies of complete records). */
static ss_err take_tenant(json_t *in, json_t *rec, int keep, const char *tenant)
{
    json_t *v = keep ? json_object_get(in, "tenant") : NULL;
    if (v && !json_is_null(v)) {
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
            return ss_fail(SS_ERR_INVALID, "record: \"tenant\" must be a string or null");
        tenant = json_string_value(v);
    }
    if (!tenant || !*tenant) return SS_OK;
    ss_err err = ss_store_check_tenant(tenant);
    if (err) return err;
    return json_object_set_new(rec, "tenant", json_string(tenant))
               ? ss_fail(SS_ERR_NOMEM, "record: out of memory")
               : SS_OK;
}

static ss_err take_shared(json_t *in, json_t *rec, int keep)
{
    json_t *v = keep ? json_object_get(in, "shared") : NULL;
    if (!v || json_is_null(v) || json_is_false(v)) return SS_OK;
    if (!json_is_true(v)) return ss_fail(SS_ERR_INVALID, "record: \"shared\" must be a boolean");
    return json_object_set_new(rec, "shared", json_true())
               ? ss_fail(SS_ERR_NOMEM, "record: out of memory")
               : SS_OK;
}

ss_err ss_rec_set_shared(json_t *rec, int shared)
{
    json_t *out = json_object();
    const char *key;
    json_t *v;
    if (!out) return ss_fail(SS_ERR_NOMEM, "record: out of memory");
    json_object_foreach (rec, key, v) {
        if (!strcmp(key, "shared")) continue;
        if (!strcmp(key, "metadata") && shared && json_object_set_new(out, "shared", json_true()))
            goto nomem;
        if (json_object_set(out, key, v)) goto nomem;
    }
    json_object_clear(rec);
    if (json_object_update(rec, out)) goto nomem;
    json_decref(out);
    return SS_OK;
nomem:
    json_decref(out);
    return ss_fail(SS_ERR_NOMEM, "record: out of memory");
}

ss_err ss_rec_parse(const char *text, json_t **out)
{
    return ss_rec_parse_as(text, 0, NULL, out);
}

ss_err ss_rec_parse_as(const char *text, int keep, const char *tenant, json_t **out)
{
    ss_err err = SS_OK;
    json_t *in = NULL;
    json_t *rec = NULL;
    json_error_t je;

    if (!text) return ss_fail(SS_ERR_INVALID, "record: missing (NULL)");
    size_t n = strlen(text);
    if (n > SS_REC_TEXT_MAX) {
        return ss_fail(SS_ERR_TOO_LARGE, "record: %zu bytes of JSON, more than the limit of %u", n,
                       SS_REC_TEXT_MAX);
    }
    in = json_loadb(text, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!in) {
        return ss_fail(SS_ERR_FORMAT, "record: invalid JSON at line %d column %d: %s", je.line,
                       je.column, je.text);
    }
    if (!json_is_object(in)) {
        err = ss_fail(SS_ERR_INVALID, "record: must be a JSON object");
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach (in, key, v) {
        size_t k = 0;
        while (k < sizeof record_keys / sizeof record_keys[0] && strcmp(key, record_keys[k])) k++;
        if (k == sizeof record_keys / sizeof record_keys[0]) {
            err = ss_fail(SS_ERR_INVALID, "record: unknown field \"%.64s\"", key);
            goto out;
        }
    }

    rec = json_object();
    if (!rec) {
        err = ss_fail(SS_ERR_NOMEM, "record: out of memory");
        goto out;
    }
    /* Build in the served order; the placeholders keep their slots when finish() replaces them. */
    if (json_object_set_new(rec, "id", json_null())) goto nomem;
    if ((err = take_name(in, rec))) goto out;
    if ((err = take_tenant(in, rec, keep, tenant))) goto out;
    if ((err = take_tags(in, rec))) goto out;
    if ((err = take_string(in, rec, "model", 256))) goto out;
    if ((err = take_n_tokens(in, rec))) goto out;
    if (json_object_set_new(rec, "created_at", json_null())) goto nomem;
    if (json_object_set_new(rec, "bytes", json_integer(0))) goto nomem;
    if ((err = take_string(in, rec, "dtype", 32))) goto out;
    if ((err = take_parents(in, rec))) goto out;
    /* optional: how a merged state was combined ("linear", "sequential", "symmetric") */
    if (json_object_get(in, "merge_mode") && (err = take_string(in, rec, "merge_mode", 32)))
        goto out;
    if ((err = take_shared(in, rec, keep))) goto out;
    if ((err = take_metadata(in, rec))) goto out;
    if (json_object_set_new(rec, "checksum", json_null())) goto nomem;

    *out = rec;
    rec = NULL;
    goto out;
nomem:
    err = ss_fail(SS_ERR_NOMEM, "record: out of memory");
out:
    json_decref(rec);
    json_decref(in);
    return err;
}

void ss_rec_format_time(int64_t created_ns, char *out, size_t cap)
{
    time_t sec = (time_t)(created_ns / 1000000000);
    long us = (long)((created_ns % 1000000000) / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, us);
}

ss_err ss_rec_finish(json_t *rec, const char *id, int64_t created_ns, uint64_t bytes,
                     const char *checksum, char **text, size_t *len)
{
    char when[40];
    ss_rec_format_time(created_ns, when, sizeof when);
    /* json_object_set on an existing key replaces the value in place: the order is kept. */
    if (json_object_set_new(rec, "id", json_string(id)) ||
        json_object_set_new(rec, "created_at", json_string(when)) ||
        json_object_set_new(rec, "bytes", json_integer((json_int_t)bytes)) ||
        json_object_set_new(rec, "checksum", json_string(checksum))) {
        return ss_fail(SS_ERR_NOMEM, "record: out of memory");
    }
    char *s = json_dumps(rec, JSON_PRESERVE_ORDER | JSON_COMPACT);
    if (!s) return ss_fail(SS_ERR_NOMEM, "record: cannot serialise");
    *text = s;
    *len = strlen(s);
    return SS_OK;
}
