/*
 * sample.c - choosing the next token: greedy, temperature, top-k, top-p, min-p; seeded.
 *
 * Filters apply in HF's order: temperature, top-k, top-p, min-p; then one draw from the
 * renormalised distribution. The RNG is xoshiro256** seeded through splitmix64, so the same seed
 * and the same logits give the same tokens on every machine. Sorting a 50k vocabulary per token
 * would cost milliseconds, so candidates are narrowed by partial selection that widens only when
 * the nucleus needs more tokens.
 */
#include "internal.h"
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct ss_sampler {
    ss_sample_params p;
    int vocab;
    uint64_t rng[4];
    int *idx;    /* [vocab] candidate ids */
    float *prob; /* [vocab] scratch */
};

ss_sample_params ss_sample_default_params(void)
{
    return (ss_sample_params){.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f,
                              .seed = 0};
}

ss_err ss_sample_params_check(const ss_sample_params *p)
{
    if (!(p->temperature >= 0) || !isfinite(p->temperature))
        return ss_fail(SS_ERR_INVALID, "temperature must be a finite number >= 0");
    if (p->top_k < 0) return ss_fail(SS_ERR_INVALID, "top_k must be >= 0");
    if (!(p->top_p > 0 && p->top_p <= 1)) return ss_fail(SS_ERR_INVALID, "top_p must be in (0, 1]");
    if (!(p->min_p >= 0 && p->min_p <= 1))
        return ss_fail(SS_ERR_INVALID, "min_p must be in [0, 1]");
    return SS_OK;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next_u64(uint64_t *s)
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform double in [0, 1). */
static double next_unit(uint64_t *s)
{
    return (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0);
}

ss_err ss_sampler_new(const ss_sample_params *p, int vocab, ss_sampler **out)
{
    ss_err err = ss_sample_params_check(p);
    if (err) return err;
    if (vocab < 1) return ss_fail(SS_ERR_INVALID, "vocabulary is empty");
    ss_sampler *s = calloc(1, sizeof *s);
    if (!s) return ss_fail(SS_ERR_NOMEM, "out of memory");
    s->p = *p;
    s->vocab = vocab;
    s->idx = malloc((size_t)vocab * sizeof *s->idx);
    s->prob = malloc((size_t)vocab * sizeof *s->prob);
    if (!s->idx || !s->prob) {
        ss_sampler_free(s);
        return ss_fail(SS_ERR_NOMEM, "out of memory");
    }
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    *out = s;
    return SS_OK;
}

void ss_sampler_free(ss_sampler *s)
{
    if (!s) return;
    free(s->idx);
    free(s->prob);
    free(s);
}

int32_t ss_argmax(const float *logits, int vocab)
{
    return kernels_get()->argmax(logits, vocab);
}

static double log_sum_exp(const float *logits, int vocab)
{
    return kernels_get()->logsumexp(logits, vocab);
}

float ss_logprob_of(const float *logits, int vocab, int32_t id)
{
    return (float)(logits[id] - log_sum_exp(logits, vocab));
}

/* Order candidates: higher value first, lower id on ties. */
static inline int before(const float *v, int a, int b)
{
    return v[a] > v[b] || (v[a] == v[b] && a < b);
}

/*
 * Partially order idx[0..n) so that its first k entries are the k best by val (in any order):
 * quickselect with median-of-three pivots.
 */
static void select_top(int *idx, int n, int k, const float *val)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int a = idx[lo], b = idx[mid], c = idx[hi], piv;
        if (before(val, a, b)) piv = before(val, b, c) ? b : (before(val, a, c) ? c : a);
        else piv = before(val, a, c) ? a : (before(val, b, c) ? c : b);
        int i = lo, j = hi;
        while (i <= j) {
            while (before(val, idx[i], piv)) i++;
            while (before(val, piv, idx[j])) j--;
            if (i <= j) {
                int t = idx[i];
                idx[i++] = idx[j];
                idx[j--] = t;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

/* Sort idx[0..n) best first (n is small after selection). */
static void sort_desc(int *idx, int n, const float *val)
{
    /* insertion sort for small n */
    if (n <= 64) {
        for (int i = 1; i < n; i++) {
            int x = idx[i], j = i - 1;
            while (j >= 0 && before(val, x, idx[j])) {
                idx[j + 1] = idx[j];
                j--;
            }
            idx[j + 1] = x;
        }
        return;
    }
    /* larger n: select the best 64, sort them, continue with the rest (no globals, re-entrant) */
    for (int start = 0; start < n; start += 64) {
        int len = n - start;
        int k = len < 64 ? len : 64;
        select_top(idx + start, len, k, val);
        sort_desc(idx + start, k, val);
    }
}

int32_t ss_sampler_sample(ss_sampler *s, const float *logits, float *logprob)
{
    const int V = s->vocab;
    const ss_sample_params *p = &s->p;
    int32_t pick;
    if (p->temperature == 0.0f || p->top_k == 1) {
        pick = ss_argmax(logits, V);
        goto done;
    }
    /* Candidates: all, or the top_k best. */
    int n = V;
    for (int i = 0; i < V; i++) s->idx[i] = i;
    if (p->top_k > 0 && p->top_k < V) {
        select_top(s->idx, V, p->top_k, logits);
        n = p->top_k;
    }
    /* Softmax of logits / T over the candidates. */
    float mx = -INFINITY;
    for (int j = 0; j < n; j++) mx = fmaxf(mx, logits[s->idx[j]]);
    const float inv_t = 1.0f / p->temperature;
    double total = 0;
    for (int j = 0; j < n; j++) {
        int i = s->idx[j];
        s->prob[i] = expf((logits[i] - mx) * inv_t);
        total += s->prob[i];
    }
    if (p->top_p < 1.0f) {
        /* Smallest best-first prefix whose mass reaches top_p; widen the sorted window as needed.
         */
        int k = 64 < n ? 64 : n, keep = n;
        for (;;) {
            select_top(s->idx, n, k, s->prob);
            sort_desc(s->idx, k, s->prob);
            double cum = 0;
            int j;
            for (j = 0; j < k; j++) {
                cum += s->prob[s->idx[j]];
                if (cum >= p->top_p * total) break;
            }
            if (j < k) {
                keep = j + 1;
                break;
            }
            if (k == n) break;
            k = k * 8 < n ? k * 8 : n;
        }
        n = keep;
        total = 0;
        for (int j = 0; j < n; j++) total += s->prob[s->idx[j]];
    }
    if (p->min_p > 0.0f) {
        float pmax = 0;
        for (int j = 0; j < n; j++) pmax = fmaxf(pmax, s->prob[s->idx[j]]);
        const float thr = p->min_p * pmax;
        int w = 0;
        total = 0;
        for (int j = 0; j < n; j++) {
            int i = s->idx[j];
            if (s->prob[i] >= thr) {
                s->idx[w++] = i;
                total += s->prob[i];
            }
        }
        n = w;
    }
    double r = next_unit(s->rng) * total, cum = 0;
    pick = s->idx[n - 1];
    for (int j = 0; j < n; j++) {
        cum += s->prob[s->idx[j]];
        if (r < cum) {
            pick = s->idx[j];
            break;
        }
    }
done:
    if (logprob) {
        /* greedy already knows the maximum: one pass for the normaliser instead of two */
        const float lse = p->temperature == 0.0f || p->top_k == 1
                              ? kernels_get()->logsumexp_at(logits, V, logits[pick])
                              : (float)log_sum_exp(logits, V);
        *logprob = logits[pick] - lse;
    }
    return pick;
}

void ss_logprobs_top(const float *logits, int vocab, int k, int32_t *ids, float *logprobs)
{
    if (k <= 0) return;
    if (k > vocab) k = vocab;
    /* one pass keeping the best k so far sorted in ids (k is small: no allocation per token) */
    int n = 0;
    for (int i = 0; i < vocab; i++) {
        if (n == k && !before(logits, i, ids[k - 1])) continue;
        int pos = n < k ? n++ : k - 1;
        for (; pos > 0 && before(logits, i, ids[pos - 1]); pos--) ids[pos] = ids[pos - 1];
        ids[pos] = i;
    }
    double lse = log_sum_exp(logits, vocab);
    for (int j = 0; j < k; j++) logprobs[j] = (float)(logits[ids[j]] - lse);
}
