/*
 * tok_decode.c - ids -> text: whole-sequence decode and the streaming decoder, both with
 * Rust's lossy UTF-8 repair.
 */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

#include "ss_buf.h"
#include "ss_util.h"

/* ---- decoding ------------------------------------------------------------------------------ */

ss_err ss_tokenizer_decode(const ss_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                           char **text, size_t *len)
{
    ss_err err = SS_OK;
    unsigned char *raw = NULL;
    char *res = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_ids || !t->ids[ids[i]].bytes) {
            return ss_fail(SS_ERR_INVALID, "tokenizer: id %d (at %zu) is not a token id (vocab %d)",
                           (int)ids[i], i, (int)t->n_ids);
        }
        if (!(skip_special && t->ids[ids[i]].special)) total += t->ids[ids[i]].len;
    }
    raw = malloc(total + 1);
    res = malloc(3 * total + 1);
    if (!raw || !res) {
        err = ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
        goto out;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const id_info *d = &t->ids[ids[i]];
        if (skip_special && d->special) continue;
        memcpy(raw + o, d->bytes, d->len);
        o += d->len;
    }
    size_t rl;
    utf8_lossy(raw, total, 1, res, &rl);
    res[rl] = '\0';
    *text = res;
    res = NULL;
    if (len) *len = rl;
out:
    free(raw);
    free(res);
    return err;
}

struct ss_detok {
    const ss_tokenizer *t;
    unsigned char *in; /* held-back tail (< 4 bytes) followed by the new token's bytes */
    size_t n_in, cap_in;
    char *out; /* what push/flush return */
    size_t cap_out;
};

ss_err ss_detok_new(const ss_tokenizer *t, ss_detok **out)
{
    ss_detok *d = calloc(1, sizeof *d);
    if (!d) return ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
    d->t = t;
    *out = d;
    return SS_OK;
}

void ss_detok_free(ss_detok *d)
{
    if (!d) return;
    free(d->in);
    free(d->out);
    free(d);
}

/* Decode d->in, keep the incomplete tail (unless final), return the text. */
static const char *detok_run(ss_detok *d, int final, size_t *len)
{
    if (ss_grow((void **)&d->out, &d->cap_out, 3 * d->n_in + 1, 1) != 0) {
        ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
        return NULL;
    }
    size_t ol;
    size_t used = utf8_lossy(d->in, d->n_in, final, d->out, &ol);
    if (used && used < d->n_in) memmove(d->in, d->in + used, d->n_in - used);
    d->n_in -= used;
    d->out[ol] = '\0';
    if (len) *len = ol;
    return d->out;
}

const char *ss_detok_push(ss_detok *d, int32_t id, size_t *len)
{
    size_t n;
    const char *b = ss_tokenizer_token_bytes(d->t, id, &n);
    if (!b) {
        ss_fail(SS_ERR_INVALID, "tokenizer: id %d is not a token id (vocab %d)", (int)id,
                (int)d->t->n_ids);
        return NULL;
    }
    if (ss_grow((void **)&d->in, &d->cap_in, d->n_in + n, 1) != 0) {
        ss_fail(SS_ERR_NOMEM, "tokenizer: out of memory");
        return NULL;
    }
    memcpy(d->in + d->n_in, b, n);
    d->n_in += n;
    return detok_run(d, 0, len);
}

const char *ss_detok_flush(ss_detok *d, size_t *len)
{
    return detok_run(d, 1, len);
}
