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
 *                 the same projection, normalised;
 *   ssm_slow      the first state layer's SSM state at its slowest-decaying state dimensions (per
 *                 channel the one with the smallest |A|; Mamba-2: the slowest quarter of the
 * heads), reduced by the same projection, normalised. Those dimensions forget least: at the first
 * layer they hold close to a sum over every token read, a bag of the context's tokens, which is
 * what a question shares with the context answering it.
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

static const char *const kind_names[] = {"final_hidden", "ssm_norm", "projection", "ssm_slow"};

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
    return ss_fail(SS_ERR_INVALID, "unknown retrieval key \"%.64s\" (ssm_slow, ssm_norm, "
                                   "projection or final_hidden)", name ? name : "");
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

/* acc += the sketch of the first state layer's slowest SSM elements (ssm_slow), at unit norm. */
static void sketch_slow(const ss_model *m, const ss_state_layout *lay, const float *data,
                        double *acc)
{
    const ss_model_info *in = &m->info;
    const layer *ly = NULL;
    for (int i = 0; i < in->n_layer && !ly; i++)
        if (m->layers[i].state_index == 0) ly = &m->layers[i];
    if (!ly) return;
    const float *x = data + lay->ssm_off; /* layer 0: [Di, N] or [H, P, N] */
    double ss = 0;
    if (in->arch == SS_ARCH_MAMBA2) {
        /* A is per head: the heads at or below the slowest quarter's largest |A| (at least 1) */
        int H = in->n_heads, q = H / 4 > 0 ? H / 4 : 1;
        size_t per_head = (size_t)in->head_dim * (size_t)in->d_state;
        float thr = 0;
        for (int h = 0; h < H; h++) { /* the q-th smallest |A| by counting (H is small) */
            int below = 0;
            for (int g = 0; g < H; g++) below += -ly->A[g] < -ly->A[h];
            if (below < q && -ly->A[h] > thr) thr = -ly->A[h];
        }
        for (int pass = 0; pass < 2; pass++)
            for (int h = 0; h < H; h++) {
                if (-ly->A[h] > thr) continue;
                const float *v = x + (size_t)h * per_head;
                for (size_t j = 0; j < per_head && !pass; j++) ss += (double)v[j] * v[j];
                if (pass && ss > 0) sketch(v, per_head, (size_t)h * per_head, 1.0 / sqrt(ss), acc);
            }
        return;
    }
    /* Mamba-1, MoE-Mamba: A [Di, N]; per channel the state dimension with the smallest |A| */
    int Di = in->d_inner, N = in->d_state;
    for (int pass = 0; pass < 2; pass++)
        for (int c = 0; c < Di; c++) {
            int best = 0;
            for (int s = 1; s < N; s++)
                if (-ly->A[(size_t)c * N + s] < -ly->A[(size_t)c * N + best]) best = s;
            size_t j = (size_t)c * N + (size_t)best;
            if (!pass) ss += (double)x[j] * x[j];
            else if (ss > 0) sketch(x + j, 1, j, 1.0 / sqrt(ss), acc);
        }
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
    case SS_KEY_SSM_SLOW:
        memset(acc, 0, SS_KEY_SKETCH_DIM * sizeof acc[0]);
        sketch_slow(m, &lay, data, acc);
        normalise(acc, SS_KEY_SKETCH_DIM, out);
        return SS_OK;
    default:
        return ss_fail(SS_ERR_INVALID, "unknown retrieval key kind %d", (int)k);
    }
}
