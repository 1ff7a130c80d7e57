/*
 * state.c - the recurrent state as a first-class object: allocation, copies, linear
 * combinations (State Soup's sum_i w_i s_i) and the safetensors file format users exchange.
 *
 * A state is one contiguous float array (layout in ss_model.h), so a merge is a single streaming
 * pass over N inputs and one output: memory-bound, threaded across two halves of the array.
 */
#include "internal.h"
#include "kernels.h"
#include "safetensors.h"
#include "ss_util.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ss_state {
    const ss_model *m; /* for its thread pool */
    size_t n;
    float *data;       /* [n], 64-byte aligned */
    size_t nd;
    float *decay;      /* [nd], 64-byte aligned: cumulative decay (ss_state_decay) */
    int has_decay;     /* decay is known */
};

/* The layout lives beside the state it describes (ss_model.h documents the fields). */
void ss_model_state_layout(const ss_model *m, ss_state_layout *o)
{
    const ss_model_info *in = &m->info;
    size_t L = (size_t)in->n_state_layers;
    memset(o, 0, sizeof *o);
    o->conv_off = 0;
    o->conv_n = L * (size_t)in->conv_channels * (size_t)in->conv_kernel;
    o->ssm_off = o->conv_n;
    o->ssm_n = L * (size_t)in->d_inner * (size_t)in->d_state;
    o->hidden_off = o->ssm_off + o->ssm_n;
    o->hidden_n = (size_t)in->d_model;
    o->conv_ndim = 3;
    o->conv_shape[0] = (int)L;
    o->conv_shape[1] = in->conv_channels;
    o->conv_shape[2] = in->conv_kernel;
    if (in->arch == SS_ARCH_MAMBA2) {
        o->ssm_ndim = 4;
        o->ssm_shape[0] = (int)L;
        o->ssm_shape[1] = in->n_heads;
        o->ssm_shape[2] = in->head_dim;
        o->ssm_shape[3] = in->d_state;
    } else {
        o->ssm_ndim = 3;
        o->ssm_shape[0] = (int)L;
        o->ssm_shape[1] = in->d_inner;
        o->ssm_shape[2] = in->d_state;
    }
}

/*
 * The model keeps large buffers that were given back (up to KEEP_BYTES, at most KEEP_MAX of
 * them) and hands them out again: every job, load and merge takes a state's worth of memory, a
 * few to tens of MB, a job its logits (V floats) and a scoring job its rows of logits (the
 * engine's prefill_chunk x V, 51 MB at V = 50,280), and fresh memory is slow to touch the first
 * time (this 2-vCPU VM: ~11 us a 4 KiB page, 7.5-8.5 ms for 130m's 2.9 MB state, two and a half
 * decode tokens, on every request's way to its first token; a 256-token score touched 12,500
 * fresh pages, a third of its time; glibc reused neither aligned_alloc's blocks nor, above its
 * mmap threshold, anything). A state's floats and its decay are one block of block_floats
 * (state_floats rounded up to 16, the decay, 16 more): the decay 64-byte aligned, and the first
 * state_floats + decay_floats + 1 floats one run for a stored blob (ss_scratch_take).
 */
#define KEEP_BYTES ((size_t)128 << 20)
#define BUF_HEAD 16 /* floats before each buffer: its size (buf_floats) */
#define KEEP_MAX 40
struct state_spares {
    pthread_mutex_t mu;
    int n;
    size_t kept;             /* bytes kept */
    size_t decay_at, floats; /* a state block: where its decay starts, its size */
    float *b[KEEP_MAX];
};

ss_err state_spares_new(ss_model *m)
{
    struct state_spares *sp = calloc(1, sizeof *sp);
    if (!sp) return ss_fail(SS_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&sp->mu, NULL);
    sp->decay_at = (m->info.state_floats + 15) & ~(size_t)15;
    sp->floats = sp->decay_at + ((m->info.decay_floats + 15) & ~(size_t)15) + 16;
    m->spares = sp;
    return SS_OK;
}

void state_spares_free(ss_model *m)
{
    struct state_spares *sp = m->spares;
    if (!sp) return;
    for (int i = 0; i < sp->n; i++) free(sp->b[i] - BUF_HEAD);
    pthread_mutex_destroy(&sp->mu);
    free(sp);
    m->spares = NULL;
}

/* A buffer's size in floats, kept in the 64 bytes before it (so one taken for fewer floats than
 * it holds is still counted, and reused, at its true size). */
static size_t buf_floats(const float *p)
{
    size_t n;
    memcpy(&n, p - BUF_HEAD, sizeof n);
    return n;
}

float *ss_buf_take(const ss_model *m, size_t floats)
{
    struct state_spares *sp = m->spares;
    int best = -1;
    pthread_mutex_lock(&sp->mu);
    /* the smallest kept buffer that holds it, not more than twice its size (a state's block is
     * not spent on logits) */
    for (int i = 0; i < sp->n; i++) {
        const size_t have = buf_floats(sp->b[i]);
        if (have >= floats && have / 2 <= floats && (best < 0 || have < buf_floats(sp->b[best])))
            best = i;
    }
    float *p = NULL;
    if (best >= 0) {
        p = sp->b[best];
        sp->kept -= buf_floats(p) * sizeof(float);
        sp->b[best] = sp->b[--sp->n];
    }
    pthread_mutex_unlock(&sp->mu);
    if (p) return p;
    const size_t n = (floats + 15) & ~(size_t)15;
    float *h = aligned_alloc(64, (BUF_HEAD + (n ? n : 16)) * sizeof(float));
    if (!h) return NULL;
    memcpy(h, &n, sizeof n);
    return h + BUF_HEAD;
}

void ss_buf_give(const ss_model *m, float *p)
{
    if (!p) return;
    struct state_spares *sp = m->spares;
    const size_t bytes = buf_floats(p) * sizeof(float);
    pthread_mutex_lock(&sp->mu);
    const int kept = sp->n < KEEP_MAX && sp->kept + bytes <= KEEP_BYTES;
    if (kept) {
        sp->b[sp->n++] = p;
        sp->kept += bytes;
    }
    pthread_mutex_unlock(&sp->mu);
    if (!kept) free(p - BUF_HEAD);
}

float *ss_scratch_take(const ss_model *m)
{
    return ss_buf_take(m, m->spares->floats);
}

void ss_scratch_give(const ss_model *m, float *b)
{
    ss_buf_give(m, b);
}

ss_err ss_state_new(const ss_model *m, ss_state **out)
{
    ss_state *s = calloc(1, sizeof *s);
    float *b = s ? ss_scratch_take(m) : NULL;
    if (!b) {
        free(s);
        return ss_fail(SS_ERR_NOMEM, "cannot allocate a state of %zu bytes", m->info.state_bytes);
    }
    s->m = m;
    s->n = m->info.state_floats;
    s->nd = m->info.decay_floats;
    s->data = b;
    s->decay = b + m->spares->decay_at;
    memset(s->data, 0, s->n * sizeof(float));
    memset(s->decay, 0, s->nd * sizeof(float));
    s->has_decay = 1;
    *out = s;
    return SS_OK;
}

void ss_state_free(ss_state *s)
{
    if (!s) return;
    ss_scratch_give(s->m, s->data);
    free(s);
}

float *ss_state_data(ss_state *s)
{
    return s->data;
}

const float *ss_state_cdata(const ss_state *s)
{
    return s->data;
}

size_t ss_state_floats(const ss_state *s)
{
    return s->n;
}

void ss_state_zero(ss_state *s)
{
    memset(s->data, 0, s->n * sizeof(float));
    memset(s->decay, 0, s->nd * sizeof(float));
    s->has_decay = 1;
}

float *ss_state_decay(ss_state *s)
{
    return s->decay;
}

const float *ss_state_cdecay(const ss_state *s)
{
    return s->decay;
}

int ss_state_has_decay(const ss_state *s)
{
    return s->has_decay;
}

ss_err ss_state_set_decay(ss_state *s, const float *d, size_t n)
{
    if (!d) {
        memset(s->decay, 0, s->nd * sizeof(float));
        s->has_decay = 0;
        return SS_OK;
    }
    if (n != s->nd) return ss_fail(SS_ERR_MISMATCH, "decay has %zu floats, got %zu", s->nd, n);
    memcpy(s->decay, d, n * sizeof(float));
    s->has_decay = 1;
    return SS_OK;
}

ss_err ss_state_copy(ss_state *dst, const ss_state *src)
{
    if (dst->n != src->n) {
        return ss_fail(SS_ERR_MISMATCH, "state sizes differ (%zu vs %zu floats)", dst->n, src->n);
    }
    if (dst != src) {
        memcpy(dst->data, src->data, dst->n * sizeof(float));
        memcpy(dst->decay, src->decay, dst->nd * sizeof(float));
        dst->has_decay = src->has_decay;
    }
    return SS_OK;
}

ss_err ss_state_set(ss_state *s, const float *data, size_t n)
{
    if (n != s->n) {
        return ss_fail(SS_ERR_MISMATCH, "state has %zu floats, got %zu", s->n, n);
    }
    memcpy(s->data, data, n * sizeof(float));
    memset(s->decay, 0, s->nd * sizeof(float));
    s->has_decay = 0; /* floats from elsewhere: their decay is not known (ss_state_set_decay) */
    return SS_OK;
}

ss_err ss_state_check_finite(const float *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(data[i])) {
            return ss_fail(SS_ERR_INVALID, "state value %zu is not finite (%g)", i,
                           (double)data[i]);
        }
    }
    return SS_OK;
}

/* ---- safetensors state files ---------------------------------------------------------------- */

ss_err ss_state_export(const ss_model *m, const float *data, const char *dtype,
                       const char *metadata_json, uint8_t **out, size_t *out_len)
{
    return ss_state_export_decay(m, data, NULL, dtype, metadata_json, out, out_len);
}

ss_err ss_state_export_decay(const ss_model *m, const float *data, const float *decay,
                             const char *dtype, const char *metadata_json, uint8_t **out,
                             size_t *out_len)
{
    ss_err err = SS_OK;
    json_t *meta = NULL;
    char *meta_text = NULL;
    void *conv = NULL, *ssm = NULL, *hid = NULL;
    int dt = dtype ? st_dtype_parse(dtype) : ST_F32;
    if (dt != ST_F32 && dt != ST_BF16 && dt != ST_F16) {
        return ss_fail(SS_ERR_INVALID, "state dtype %s not supported (F32, BF16 or F16)",
                       dtype ? dtype : "?");
    }
    if (metadata_json) {
        json_error_t je;
        meta = json_loads(metadata_json, 0, &je);
        if (!json_is_object(meta)) {
            err = ss_fail(SS_ERR_INVALID, "state metadata must be a JSON object");
            goto out;
        }
    } else {
        meta = json_object();
    }
    json_object_set_new(meta, "model_fingerprint", json_string(m->info.fingerprint));
    json_object_set_new(meta, "format", json_string("statesoup-state-v1"));
    json_object_set_new(meta, "architecture", json_string(m->info.architecture));
    meta_text = json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS);
    if (!meta_text) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    ss_state_layout lay;
    ss_model_state_layout(m, &lay);
    const float *parts[3] = {data + lay.conv_off, data + lay.ssm_off, data + lay.hidden_off};
    size_t counts[3] = {lay.conv_n, lay.ssm_n, lay.hidden_n};
    void **bufs[3] = {&conv, &ssm, &hid};
    for (int i = 0; i < 3; i++) {
        if (dt == ST_F32) {
            *bufs[i] = NULL;
            continue;
        }
        *bufs[i] = malloc(counts[i] * 2 + 1);
        if (!*bufs[i]) {
            err = ss_fail(SS_ERR_NOMEM, "out of memory");
            goto out;
        }
        st_from_f32((st_dtype)dt, parts[i], *bufs[i], counts[i]);
    }
    st_out_tensor t[4] = {
        {.name = "conv", .dtype = (st_dtype)dt, .ndim = lay.conv_ndim,
         .data = conv ? conv : (const void *)parts[0]},
        {.name = "ssm", .dtype = (st_dtype)dt, .ndim = lay.ssm_ndim,
         .data = ssm ? ssm : (const void *)parts[1]},
        {.name = "final_hidden", .dtype = (st_dtype)dt, .ndim = 1, .shape = {(int64_t)lay.hidden_n},
         .data = hid ? hid : (const void *)parts[2]},
    };
    for (int i = 0; i < lay.conv_ndim; i++) t[0].shape[i] = lay.conv_shape[i];
    for (int i = 0; i < lay.ssm_ndim; i++) t[1].shape[i] = lay.ssm_shape[i];
    /* the cumulative decay, always F32 (compositions exponentiate it); its data goes first, so
     * the state's tensors keep their places at the end of the file */
    int L = m->info.n_state_layers, nt = 3;
    if (decay && m->info.decay_floats) {
        memmove(&t[1], &t[0], 3 * sizeof t[0]);
        t[0] = (st_out_tensor){.name = "decay", .dtype = ST_F32, .ndim = 2,
                               .shape = {L, (int64_t)(m->info.decay_floats / (size_t)L)},
                               .data = decay};
        nt = 4;
    }
    err = st_write_mem(t, nt, meta_text, out, out_len);
out:
    free(conv);
    free(ssm);
    free(hid);
    free(meta_text);
    json_decref(meta);
    return err;
}

/* Check one tensor of a state file against the expected shape and convert it into dst. */
static ss_err import_tensor(const st_file *f, const char *name, int ndim, const int *shape,
                            size_t n, float *dst, int optional)
{
    const st_tensor *t = st_find(f, name);
    if (!t) {
        if (optional) {
            memset(dst, 0, n * sizeof(float));
            return SS_OK;
        }
        /* a well-formed file without a tensor the state needs: 422, naming it */
        return ss_fail(SS_ERR_INVALID, "state file has no tensor \"%s\" (every state file needs "
                                       "conv, ssm and final_hidden)", name);
    }
    if (t->dtype != ST_F32 && t->dtype != ST_BF16 && t->dtype != ST_F16) {
        return ss_fail(SS_ERR_FORMAT, "state tensor %s: dtype %s (need F32, BF16 or F16)", name,
                       st_dtype_name(t->dtype));
    }
    int ok = t->ndim == ndim && t->n_elem == n;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char want[96] = "";
        size_t wl = 0;
        for (int i = 0; i < ndim; i++)
            wl += (size_t)snprintf(want + wl, sizeof want - wl, "%s%d", i ? ", " : "", shape[i]);
        return ss_fail(SS_ERR_MISMATCH, "state tensor %s has the wrong shape for this model "
                                        "(expected [%s])", name, want);
    }
    st_to_f32(t->dtype, t->data, dst, n);
    if (ss_state_check_finite(dst, n) != SS_OK) {
        char why[256];
        snprintf(why, sizeof why, "%s", ss_errmsg());
        return ss_fail(SS_ERR_INVALID, "state tensor %s: %s", name, why);
    }
    return SS_OK;
}

ss_err ss_state_import(const ss_model *m, const uint8_t *buf, size_t len, float *dst,
                       char **metadata_json)
{
    return ss_state_import_decay(m, buf, len, dst, NULL, NULL, metadata_json);
}

ss_err ss_state_import_decay(const ss_model *m, const uint8_t *buf, size_t len, float *dst,
                             float *decay, int *has_decay, char **metadata_json)
{
    st_file f;
    ss_err err = st_parse(&f, buf, len, "state file");
    if (err) return err;
    json_t *meta = NULL;
    if (f.metadata_json) {
        json_error_t je;
        meta = json_loads(f.metadata_json, 0, &je);
        const char *fp = json_string_value(json_object_get(meta, "model_fingerprint"));
        if (fp && strcmp(fp, m->info.fingerprint) != 0) {
            err = ss_fail(SS_ERR_MISMATCH,
                          "state was made by model %s, but the loaded model is %s", fp,
                          m->info.fingerprint);
            goto out;
        }
    }
    ss_state_layout lay;
    ss_model_state_layout(m, &lay);
    int hshape[1] = {(int)lay.hidden_n};
    if ((err = import_tensor(&f, "conv", lay.conv_ndim, lay.conv_shape, lay.conv_n,
                             dst + lay.conv_off, 0)))
        goto out;
    if ((err = import_tensor(&f, "ssm", lay.ssm_ndim, lay.ssm_shape, lay.ssm_n, dst + lay.ssm_off,
                             0)))
        goto out;
    /* Required: a state without it was stored as zeros and then could not start a generation
     * (the first token's logits come from final_hidden). */
    if ((err = import_tensor(&f, "final_hidden", 1, hshape, lay.hidden_n, dst + lay.hidden_off,
                             0)))
        goto out;
    if (has_decay) *has_decay = 0;
    if (decay && has_decay && m->info.decay_floats && st_find(&f, "decay")) {
        int L = m->info.n_state_layers;
        int dshape[2] = {L, (int)(m->info.decay_floats / (size_t)L)};
        if ((err = import_tensor(&f, "decay", 2, dshape, m->info.decay_floats, decay, 0))) goto out;
        *has_decay = 1;
    }
    if (metadata_json) {
        *metadata_json = meta ? json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS) : strdup("{}");
        if (!*metadata_json) err = ss_fail(SS_ERR_NOMEM, "out of memory");
    }
out:
    json_decref(meta);
    st_free(&f);
    return err;
}
