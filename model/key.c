/*
 * key.c - retrieval keys: a short, L2-normalised F32 vector per state, so that the catalog can be
 * searched by cosine similarity (one matrix-vector product over the keys of every stored state).
 *
 * Three candidates (docs/retrieval.md measures them on the demo model's tasks):
 *   final_hidden  the final norm's output at the last token [d_model], normalised;
 *   ssm_norm      every state layer's SSM state scaled to unit norm (so each layer counts the
 *                 same, whatever its magnitude), then reduced to SS_KEY_SKETCH_DIM values by a
 *                 fixed random projection (below), normalised;
 *   projection    the whole state (conv windows, SSM states, final hidden) as it is, reduced by
 *                 the same projection, normalised.
 *
 * The projection is a count sketch (a sparse random projection, Johnson-Lindenstrauss in
 * expectation): element i of the input adds sign(i) * x_i to coordinate bucket(i), where bucket
 * and sign come from a fixed-seed hash of i. It needs no stored matrix (a dense 256 x n one would
 * be hundreds of MB for a 130m model), costs one pass over the state, and is the same on every
 * machine and in every run, so keys stored yesterday compare with queries made today.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define KEY_SEED 0x5eed5011a7e5eedULL /* fixed: changing it invalidates every stored key */

static const char *const kind_names[] = {"final_hidden", "ssm_norm", "projection"};

const char *ss_key_kind_name(ss_key_kind k)
{
    return (unsigned)k < SS_KEY__COUNT ? kind_names[k] : "?";
}

ss_err ss_key_kind_parse(const char *name, ss_key_kind *out)
{
    for (int i = 0; name && i < SS_KEY__COUNT; i++) {
        if (!strcmp(name, kind_names[i])) {
            *out = (ss_key_kind)i;
            return SS_OK;
        }
    }
    return ss_fail(SS_ERR_INVALID, "unknown retrieval key \"%.64s\" (final_hidden, ssm_norm or "
                                   "projection)", name ? name : "");
}

int ss_key_dim(const ss_model *m, ss_key_kind k)
{
    return k == SS_KEY_FINAL_HIDDEN ? m->info.d_model : SS_KEY_SKETCH_DIM;
}

/* splitmix64: a well-mixed 64-bit hash of the element index. */
static inline uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* acc[bucket(i)] += sign(i) * scale * x[i] for i in [base, base + n): the count sketch, with i
 * the element's index in the whole state (so every part of the state has its own buckets). */
static void sketch(const float *x, size_t n, size_t base, double scale, double *acc)
{
    for (size_t j = 0; j < n; j++) {
        uint64_t h = mix(KEY_SEED ^ (uint64_t)(base + j));
        double v = scale * (double)x[j];
        acc[h & (SS_KEY_SKETCH_DIM - 1)] += (h >> 32) & 1 ? v : -v;
    }
}

/* out[dim] = v / |v| (zeros stay zeros: the zero state's key matches nothing). */
static void normalise(const double *v, int dim, float *out)
{
    double ss = 0;
    for (int i = 0; i < dim; i++) ss += v[i] * v[i];
    double inv = ss > 0 ? 1.0 / sqrt(ss) : 0;
    for (int i = 0; i < dim; i++) out[i] = (float)(v[i] * inv);
}

ss_err ss_state_key(const ss_model *m, ss_key_kind k, const float *data, size_t n, float *out)
{
    const ss_model_info *in = &m->info;
    if (n != in->state_floats)
        return ss_fail(SS_ERR_MISMATCH, "a state of %zu floats is not this model's (%zu)", n,
                       in->state_floats);
    ss_state_layout lay;
    ss_model_state_layout(m, &lay);
    double acc[SS_KEY_SKETCH_DIM > 4096 ? SS_KEY_SKETCH_DIM : 4096];
    switch (k) {
    case SS_KEY_FINAL_HIDDEN: {
        int d = in->d_model;
        if (d > (int)(sizeof acc / sizeof acc[0]))
            return ss_fail(SS_ERR_UNSUPPORTED, "final_hidden keys take d_model <= 4096 (got %d)",
                           d);
        for (int i = 0; i < d; i++) acc[i] = data[lay.hidden_off + (size_t)i];
        normalise(acc, d, out);
        return SS_OK;
    }
    case SS_KEY_SSM_NORM: {
        memset(acc, 0, SS_KEY_SKETCH_DIM * sizeof acc[0]);
        size_t L = (size_t)in->n_state_layers, per = L ? lay.ssm_n / L : 0;
        for (size_t l = 0; l < L; l++) {
            const float *x = data + lay.ssm_off + l * per;
            double ss = 0;
            for (size_t j = 0; j < per; j++) ss += (double)x[j] * x[j];
            if (ss > 0) sketch(x, per, l * per, 1.0 / sqrt(ss), acc);
        }
        normalise(acc, SS_KEY_SKETCH_DIM, out);
        return SS_OK;
    }
    case SS_KEY_PROJECTION:
        memset(acc, 0, SS_KEY_SKETCH_DIM * sizeof acc[0]);
        sketch(data, n, 0, 1.0, acc);
        normalise(acc, SS_KEY_SKETCH_DIM, out);
        return SS_OK;
    default:
        return ss_fail(SS_ERR_INVALID, "unknown retrieval key kind %d", (int)k);
    }
}
