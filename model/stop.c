/*
 * stop.c - streaming stop strings for generation (see ss_stopper in ss_model.h).
 *
 * Held-back text is the longest suffix of what we have that is a proper prefix of some stop
 * string; everything before it can no longer be part of a match and is released. A stop string
 * can straddle token boundaries (" Ques" + "tion:"), which is why the matcher works on text and
 * not on tokens.
 *
 * UTF-8: every cut (where released text ends) is moved back to the start of the character it
 * would split, so released text never ends inside a multi-byte character, whatever the stop
 * strings (a CLI argument need not be valid UTF-8) and however the text is cut into pieces. A
 * JSON answer built from the pieces is then always valid.
 */
#include "ss_buf.h"
#include "ss_model.h"

#include <stdlib.h>
#include <string.h>

struct ss_stopper {
    char **stops;
    size_t *lens;
    int n;
    char *buf; /* held text + new text */
    size_t len, cap;
    char *out; /* text returned to the caller */
    size_t out_cap;
    int hit;
};

ss_err ss_stopper_new(const char *const *stops, int n, ss_stopper **out)
{
    ss_stopper *s = calloc(1, sizeof *s);
    if (!s) return ss_fail(SS_ERR_NOMEM, "out of memory");
    s->stops = calloc((size_t)(n > 0 ? n : 1), sizeof *s->stops);
    s->lens = calloc((size_t)(n > 0 ? n : 1), sizeof *s->lens);
    if (!s->stops || !s->lens) goto nomem;
    for (int i = 0; i < n; i++) {
        if (!stops[i] || !stops[i][0]) continue;
        s->lens[s->n] = strlen(stops[i]);
        s->stops[s->n] = strdup(stops[i]);
        if (!s->stops[s->n]) goto nomem;
        s->n++;
    }
    *out = s;
    return SS_OK;
nomem:
    ss_stopper_free(s);
    return ss_fail(SS_ERR_NOMEM, "out of memory");
}

void ss_stopper_free(ss_stopper *s)
{
    if (!s) return;
    for (int i = 0; i < s->n; i++) free(s->stops[i]);
    free(s->stops);
    free(s->lens);
    free(s->buf);
    free(s->out);
    free(s);
}

/* Bytes in a UTF-8 sequence that starts with lead byte c (1 for ASCII and stray bytes). */
static size_t utf8_len(unsigned char c)
{
    return c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
}

/*
 * Move a cut of buf[0, len) at `cut` back to the start of the character it splits, if any: the
 * character holding byte cut - 1 starts at its lead byte (at most 3 continuation bytes back) and
 * is split when its bytes run past the cut (also at the end of buf: its last bytes have not
 * arrived yet). Bytes that are not UTF-8 are left where they are.
 */
static size_t char_boundary(const char *buf, size_t cut)
{
    const unsigned char *b = (const unsigned char *)buf;
    if (cut == 0) return 0;
    size_t q = cut - 1;
    while (q > 0 && cut - 1 - q < 3 && (b[q] & 0xC0) == 0x80) q--;
    if (b[q] >= 0xC0 && q + utf8_len(b[q]) > cut) return q;
    return cut;
}

/* Copy n bytes of buf to the output buffer and drop them from buf; NULL when out of memory. */
static const char *release(ss_stopper *s, size_t n, size_t *out_len)
{
    *out_len = 0;
    if (ss_grow((void **)&s->out, &s->out_cap, n + 1, 1)) {
        ss_fail(SS_ERR_NOMEM, "out of memory in the stop-string matcher");
        return NULL;
    }
    memcpy(s->out, s->buf, n);
    s->out[n] = '\0';
    memmove(s->buf, s->buf + n, s->len - n);
    s->len -= n;
    *out_len = n;
    return s->out;
}

const char *ss_stopper_push(ss_stopper *s, const char *text, size_t len, size_t *out_len, int *hit)
{
    *hit = s->hit;
    *out_len = 0;
    if (s->hit) return "";
    if (ss_grow((void **)&s->buf, &s->cap, s->len + len + 1, 1)) {
        ss_fail(SS_ERR_NOMEM, "out of memory in the stop-string matcher");
        return NULL;
    }
    if (len) memcpy(s->buf + s->len, text, len);
    s->len += len;
    /* earliest complete match */
    size_t first = s->len;
    for (int i = 0; i < s->n; i++) {
        char *p = memmem(s->buf, s->len, s->stops[i], s->lens[i]);
        if (p && (size_t)(p - s->buf) < first) first = (size_t)(p - s->buf);
    }
    if (first < s->len) {
        s->hit = *hit = 1;
        /* a stop string that begins inside a character takes the whole character with it */
        const char *r = release(s, char_boundary(s->buf, first), out_len);
        s->len = 0;
        return r;
    }
    /* longest suffix that is a proper prefix of a stop string */
    size_t hold = 0;
    for (int i = 0; i < s->n; i++) {
        size_t max = s->lens[i] - 1 < s->len ? s->lens[i] - 1 : s->len;
        for (size_t k = max; k > hold; k--) {
            if (memcmp(s->buf + s->len - k, s->stops[i], k) == 0) {
                hold = k;
                break;
            }
        }
    }
    return release(s, char_boundary(s->buf, s->len - hold), out_len);
}

const char *ss_stopper_flush(ss_stopper *s, size_t *out_len)
{
    *out_len = 0;
    if (s->hit || s->len == 0) return "";
    return release(s, s->len, out_len);
}
