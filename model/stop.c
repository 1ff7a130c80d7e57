/*
 * stop.c - streaming stop strings for generation (see ss_stopper in ss_model.h).
 *
 * Held-back text is the longest suffix of what we have that is a proper prefix of some stop
 * string; everything before it can no longer be part of a match and is released. A stop string
 * can straddle token boundaries (" Ques" + "tion:"), which is why the matcher works on text and
 * not on tokens.
 */
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

static int reserve(char **p, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    char *n = realloc(*p, c);
    if (!n) return -1;
    *p = n;
    *cap = c;
    return 0;
}

/* Copy n bytes of buf to the output buffer and drop them from buf. */
static const char *release(ss_stopper *s, size_t n, size_t *out_len)
{
    if (reserve(&s->out, &s->out_cap, n + 1)) {
        *out_len = 0;
        return "";
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
    if (reserve(&s->buf, &s->cap, s->len + len + 1)) return "";
    memcpy(s->buf + s->len, text, len);
    s->len += len;
    /* earliest complete match */
    size_t first = s->len;
    for (int i = 0; i < s->n; i++) {
        char *p = memmem(s->buf, s->len, s->stops[i], s->lens[i]);
        if (p && (size_t)(p - s->buf) < first) first = (size_t)(p - s->buf);
    }
    if (first < s->len) {
        s->hit = *hit = 1;
        const char *r = release(s, first, out_len);
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
    return release(s, s->len - hold, out_len);
}

const char *ss_stopper_flush(ss_stopper *s, size_t *out_len)
{
    if (s->hit) {
        *out_len = 0;
        return "";
    }
    return release(s, s->len, out_len);
}
