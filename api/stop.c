/*
 * stop.c - the streaming stop-string matcher behind "stop" in /v1/generate and /v1/completions.
 *
 * Tokens arrive one at a time and a stop string may span several of them, so text that could
 * still turn out to be the start of a stop string is held back until it either completes a match
 * (then everything from the match on is dropped) or cannot any more (then it is released).
 * Only the longest suffix that is a prefix of some stop string is held: at most max_len - 1 bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int api_buf_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 64;
        while (nc < *len + n + 1) nc *= 2;
        char *p = realloc(*buf, nc);
        if (!p) return -1;
        *buf = p;
        *cap = nc;
    }
    if (n) memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

ss_err api_stop_init(api_stop *s, const json_t *stops)
{
    memset(s, 0, sizeof *s);
    if (!stops || json_is_null(stops)) return SS_OK;
    size_t n = json_is_string(stops) ? 1 : json_is_array(stops) ? json_array_size(stops) : 0;
    if (!json_is_string(stops) && !json_is_array(stops))
        return ss_fail(SS_ERR_FORMAT, "stop must be a string or an array of strings");
    if (n > API_MAX_STOPS)
        return ss_fail(SS_ERR_INVALID, "at most %d stop strings, not %zu", API_MAX_STOPS, n);
    s->stops = calloc(n ? n : 1, sizeof *s->stops);
    if (!s->stops) return ss_fail(SS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_is_string(stops) ? stops : json_array_get(stops, i);
        if (!json_is_string(v)) {
            api_stop_free(s);
            return ss_fail(SS_ERR_FORMAT, "stop[%zu] is not a string", i);
        }
        size_t len = json_string_length(v);
        if (len == 0 || len > 256 || memchr(json_string_value(v), 0, len)) {
            api_stop_free(s);
            return ss_fail(SS_ERR_INVALID, "stop[%zu] must be 1 to 256 bytes of text", i);
        }
        s->stops[i] = strdup(json_string_value(v));
        if (!s->stops[i]) {
            api_stop_free(s);
            return ss_fail(SS_ERR_NOMEM, "out of memory");
        }
        s->n = (int)i + 1;
    }
    return SS_OK;
}

void api_stop_free(api_stop *s)
{
    for (int i = 0; i < s->n; i++) free(s->stops[i]);
    free(s->stops);
    free(s->held);
    memset(s, 0, sizeof *s);
}

int api_stop_push(api_stop *s, const char *piece, size_t len, char **out, size_t *out_len,
                  size_t *out_cap)
{
    if (s->matched) return 1;
    if (s->n == 0) return api_buf_append(out, out_len, out_cap, piece, len);
    if (api_buf_append(&s->held, &s->held_len, &s->held_cap, piece, len)) return -1;
    const char *t = s->held;
    size_t n = s->held_len;
    /* The earliest complete match wins. */
    size_t best = n;
    for (int i = 0; i < s->n; i++) {
        const char *m = memmem(t, n, s->stops[i], strlen(s->stops[i]));
        if (m && (size_t)(m - t) < best) best = (size_t)(m - t);
    }
    if (best < n) {
        s->matched = 1;
        int rc = api_buf_append(out, out_len, out_cap, t, best);
        s->held_len = 0;
        return rc ? -1 : 1;
    }
    /* Hold the longest suffix that is a proper prefix of a stop string. */
    size_t hold = 0;
    for (int i = 0; i < s->n; i++) {
        size_t sl = strlen(s->stops[i]);
        for (size_t k = sl - 1 < n ? sl - 1 : n; k > hold; k--) {
            if (!memcmp(t + n - k, s->stops[i], k)) {
                hold = k;
                break;
            }
        }
    }
    if (api_buf_append(out, out_len, out_cap, t, n - hold)) return -1;
    memmove(s->held, t + n - hold, hold);
    s->held_len = hold;
    return 0;
}

int api_stop_flush(api_stop *s, char **out, size_t *out_len, size_t *out_cap)
{
    if (s->matched || s->held_len == 0) return 0;
    int rc = api_buf_append(out, out_len, out_cap, s->held, s->held_len);
    s->held_len = 0;
    return rc;
}
