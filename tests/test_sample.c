/*
 * test_sample.c - sampling (greedy, temperature, top-k, top-p, min-p, seeds, logprobs) and the
 * streaming stop-string matcher.
 */
#include "ss_model.h"
#include "test_util.h"

#define V 8

/* logits whose softmax is known: p = [0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.015, 0.005] */
static const double probs[V] = {0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.015, 0.005};
static float logits[V];

static void frequencies(ss_sample_params p, int n, double *freq)
{
    ss_sampler *s;
    REQUIRE_OK(ss_sampler_new(&p, V, &s));
    int count[V] = {0};
    for (int i = 0; i < n; i++) count[ss_sampler_sample(s, logits, NULL)]++;
    for (int i = 0; i < V; i++) freq[i] = (double)count[i] / n;
    ss_sampler_free(s);
}

static void test_sampling(void)
{
    for (int i = 0; i < V; i++) logits[i] = (float)log(probs[i]) + 3.0f;
    CHECK(ss_argmax(logits, V) == 0);
    CHECK(fabsf(ss_logprob_of(logits, V, 1) - (float)log(0.25)) < 1e-5);

    double f[V];
    const int N = 200000;
    ss_sample_params p = ss_sample_default_params();
    p.seed = 42;
    frequencies(p, N, f);
    for (int i = 0; i < V; i++) {
        double sd = sqrt(probs[i] * (1 - probs[i]) / N);
        CHECKF(fabs(f[i] - probs[i]) < 5 * sd + 1e-4, "token %d: %g vs %g", i, f[i], probs[i]);
    }
    /* top_k = 2: only the two best, renormalised 0.4/0.65 and 0.25/0.65 */
    p.top_k = 2;
    frequencies(p, N, f);
    CHECK(fabs(f[0] - 0.4 / 0.65) < 0.01 && fabs(f[1] - 0.25 / 0.65) < 0.01);
    for (int i = 2; i < V; i++) CHECK(f[i] == 0);
    /* top_p = 0.7: 0.4 + 0.25 = 0.65 < 0.7, so the nucleus is {0, 1, 2} */
    p.top_k = 0;
    p.top_p = 0.7f;
    frequencies(p, N, f);
    CHECK(f[2] > 0.1 && f[3] == 0 && f[7] == 0);
    CHECK(fabs(f[0] - 0.4 / 0.8) < 0.01);
    /* min_p = 0.3: keep p >= 0.12: {0, 1, 2} */
    p.top_p = 1;
    p.min_p = 0.3f;
    frequencies(p, N, f);
    CHECK(f[2] > 0.1 && f[3] == 0);
    /* temperature 0 is greedy; low temperature sharpens */
    p.min_p = 0;
    p.temperature = 0;
    frequencies(p, 1000, f);
    CHECK(f[0] == 1.0);
    p.temperature = 0.25f;
    frequencies(p, N, f);
    double t0 = pow(0.4, 4), t1 = pow(0.25, 4), tot = 0;
    for (int i = 0; i < V; i++) tot += pow(probs[i], 4);
    CHECKF(fabs(f[0] - t0 / tot) < 0.01 && fabs(f[1] - t1 / tot) < 0.01, "T=0.25: %g %g", f[0],
           f[1]);

    /* same seed, same sequence; another seed, another one */
    p = ss_sample_default_params();
    ss_sampler *a, *b, *c;
    p.seed = 7;
    REQUIRE_OK(ss_sampler_new(&p, V, &a));
    REQUIRE_OK(ss_sampler_new(&p, V, &b));
    p.seed = 8;
    REQUIRE_OK(ss_sampler_new(&p, V, &c));
    int same = 1, diff = 0;
    for (int i = 0; i < 200; i++) {
        int x = ss_sampler_sample(a, logits, NULL), y = ss_sampler_sample(b, logits, NULL);
        same &= x == y;
        diff |= x != ss_sampler_sample(c, logits, NULL);
    }
    CHECK(same && diff);
    float lp;
    int32_t t = ss_sampler_sample(a, logits, &lp);
    CHECK(fabsf(lp - (float)log(probs[t])) < 1e-5);
    ss_sampler_free(a);
    ss_sampler_free(b);
    ss_sampler_free(c);

    int32_t ids[3];
    float lps[3];
    ss_logprobs_top(logits, V, 3, ids, lps);
    CHECK(ids[0] == 0 && ids[1] == 1 && ids[2] == 2);
    CHECK(fabsf(lps[2] - (float)log(0.15)) < 1e-5);

    /* the top k of a large vocabulary with many ties, against a full sort (best first, lower id
     * first on ties) */
    {
        enum { VB = 5000, KMAX = 20 };
        static float lg[VB];
        static int order[VB];
        for (int i = 0; i < VB; i++) {
            lg[i] = (float)((i * 2654435761u) % 97) * 0.25f - 12.0f; /* 97 distinct values */
            order[i] = i;
        }
        for (int i = 1; i < VB; i++) { /* insertion sort by (logit desc, id asc) */
            int x = order[i], j = i - 1;
            while (j >= 0 && (lg[x] > lg[order[j]] || (lg[x] == lg[order[j]] && x < order[j]))) {
                order[j + 1] = order[j];
                j--;
            }
            order[j + 1] = x;
        }
        int32_t tid[KMAX];
        float tlp[KMAX];
        int ok = 1;
        for (int k = 1; k <= KMAX; k++) {
            ss_logprobs_top(lg, VB, k, tid, tlp);
            for (int j = 0; j < k; j++) ok &= tid[j] == order[j];
            ok &= fabsf(tlp[0] - ss_logprob_of(lg, VB, tid[0])) < 1e-5f;
        }
        CHECK(ok);
    }

    /* a large vocabulary exercises the widening top-p window */
    enum { BIG = 50000 };
    float *big = malloc(BIG * sizeof(float));
    for (int i = 0; i < BIG; i++) big[i] = (float)((i * 7919) % BIG) / BIG; /* nearly flat */
    p = ss_sample_default_params();
    p.top_p = 0.9f;
    p.seed = 3;
    REQUIRE_OK(ss_sampler_new(&p, BIG, &a));
    for (int i = 0; i < 20; i++) {
        int32_t x = ss_sampler_sample(a, big, NULL);
        CHECK(x >= 0 && x < BIG);
    }
    ss_sampler_free(a);
    free(big);

    /* parameter checks */
    p = ss_sample_default_params();
    p.temperature = -1;
    CHECK_ERR(ss_sample_params_check(&p), SS_ERR_INVALID);
    p = ss_sample_default_params();
    p.top_p = 0;
    CHECK_ERR(ss_sample_params_check(&p), SS_ERR_INVALID);
    p = ss_sample_default_params();
    p.min_p = 2;
    CHECK_ERR(ss_sample_params_check(&p), SS_ERR_INVALID);
    p = ss_sample_default_params();
    p.temperature = NAN;
    CHECK_ERR(ss_sample_params_check(&p), SS_ERR_INVALID);
}

/* Whether s[0, n) ends on a UTF-8 character boundary (no multi-byte character cut short). */
static int whole_chars(const char *s, size_t n)
{
    const unsigned char *b = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t l = b[i] >= 0xF0 ? 4 : b[i] >= 0xE0 ? 3 : b[i] >= 0xC0 ? 2 : 1;
        if (i + l > n) return 0;
        i += l;
    }
    return 1;
}

/* Feed pieces, collect output, return 1 if a stop matched. Every released piece must end on a
 * character boundary (the pieces given here are all valid UTF-8 together, unless utf8 is 0). */
static int run_stopper_(const char *const *stops, int n, const char *const *pieces, char *out,
                        int utf8)
{
    ss_stopper *s;
    REQUIRE_OK(ss_stopper_new(stops, n, &s));
    out[0] = '\0';
    int hit = 0;
    for (int i = 0; pieces[i]; i++) {
        size_t len;
        const char *r = ss_stopper_push(s, pieces[i], strlen(pieces[i]), &len, &hit);
        CHECK(r && strlen(r) == len);
        CHECKF(!utf8 || whole_chars(r, len), "piece %d released a cut character", i);
        strcat(out, r);
        if (hit) break;
    }
    size_t len;
    strcat(out, ss_stopper_flush(s, &len));
    ss_stopper_free(s);
    return hit;
}
#define run_stopper(st, n, p, out) run_stopper_(st, n, p, out, 1)

static void test_stopper(void)
{
    char out[256];
    const char *stops[] = {"\nQ:", "END"};
    const char *p1[] = {"Paris", " is", "\n", "Q", ":", " more", NULL};
    CHECK(run_stopper(stops, 2, p1, out) == 1 && strcmp(out, "Paris is") == 0);
    /* a held-back prefix that does not complete is released */
    const char *p2[] = {"a\n", "Qb", "EN", "D!", NULL};
    CHECK(run_stopper(stops, 2, p2, out) == 1 && strcmp(out, "a\nQb") == 0);
    const char *p3[] = {"no stop ", "here E", "N", NULL};
    CHECK(run_stopper(stops, 2, p3, out) == 0 && strcmp(out, "no stop here EN") == 0);
    /* match inside one piece; earliest stop wins */
    const char *p4[] = {"xxENDyy\nQ:zz", NULL};
    CHECK(run_stopper(stops, 2, p4, out) == 1 && strcmp(out, "xx") == 0);
    /* no stops at all: everything passes through at once */
    ss_stopper *s;
    REQUIRE_OK(ss_stopper_new(NULL, 0, &s));
    size_t len;
    int hit;
    CHECK(strcmp(ss_stopper_push(s, "abc", 3, &len, &hit), "abc") == 0 && !hit);
    ss_stopper_free(s);
    /* multi-byte UTF-8 stop string split across pieces */
    const char *stops2[] = {"\xc3\xa9t\xc3\xa9"};
    const char *p5[] = {"l'\xc3\xa9", "t\xc3", "\xa9 fin", NULL};
    CHECK(run_stopper(stops2, 1, p5, out) == 1 && strcmp(out, "l'") == 0);
    /* a held character that begins the stop string, then the match: the text before is kept */
    const char *p6[] = {"caf\xc3\xa9", " \xc3\xa9t\xc3\xa9", NULL};
    CHECK(run_stopper(stops2, 1, p6, out) == 1 && strcmp(out, "caf\xc3\xa9 ") == 0);
    /* a false start that is released by the next piece; one held at the very end */
    const char *stops3[] = {"END"};
    const char *p7[] = {"abc E", "N", "x", NULL};
    CHECK(run_stopper(stops3, 1, p7, out) == 0 && strcmp(out, "abc ENx") == 0);
    const char *p8[] = {"abc E", NULL};
    CHECK(run_stopper(stops3, 1, p8, out) == 0 && strcmp(out, "abc E") == 0);
    /* a stop string assembled from one-character pieces; two stops, one spanning a boundary */
    const char *stops4[] = {"\n\n", "xyz"};
    const char *p9[] = {"a", "x", "y", "z", NULL};
    CHECK(run_stopper(stops4, 2, p9, out) == 1 && strcmp(out, "a") == 0);
    const char *p10[] = {"one\n", "\ntwo", NULL};
    CHECK(run_stopper(stops4, 2, p10, out) == 1 && strcmp(out, "one") == 0);

    /* UTF-8: a character split over pieces is held until whole, stops or not */
    REQUIRE_OK(ss_stopper_new(NULL, 0, &s));
    const char *r = ss_stopper_push(s, "caf\xc3", 4, &len, &hit);
    CHECK(r && len == 3 && !memcmp(r, "caf", 3));
    r = ss_stopper_push(s, "\xa9!", 2, &len, &hit);
    CHECK(r && len == 3 && !memcmp(r, "\xc3\xa9!", 3));
    /* the end of the text releases what is held, even an incomplete character */
    r = ss_stopper_push(s, "\xe2\x82", 2, &len, &hit);
    CHECK(r && len == 0);
    r = ss_stopper_flush(s, &len);
    CHECK(r && len == 2 && !memcmp(r, "\xe2\x82", 2));
    ss_stopper_free(s);
    const char *p11[] = {"\xf0\x9f", "\x98", "\x80 ok", NULL}; /* U+1F600 in three pieces */
    CHECK(run_stopper(NULL, 0, p11, out) == 0 && strcmp(out, "\xf0\x9f\x98\x80 ok") == 0);
    /* stop strings that are not valid UTF-8 (a CLI argument may be anything) never make a cut
     * inside a character: one that starts inside a character takes the whole character */
    const char *stops5[] = {"\xa9t"};
    const char *p12[] = {"caf\xc3\xa9t!", NULL};
    CHECK(run_stopper(stops5, 1, p12, out) == 1 && strcmp(out, "caf") == 0);
    /* a held suffix that would start inside a character holds the whole character */
    const char *stops6[] = {"\xa9\xa9"};
    REQUIRE_OK(ss_stopper_new(stops6, 1, &s));
    r = ss_stopper_push(s, "a\xc3\xa9", 3, &len, &hit);
    CHECK(r && len == 1 && r[0] == 'a' && !hit);
    r = ss_stopper_push(s, "b", 1, &len, &hit);
    CHECK(r && len == 3 && !memcmp(r, "\xc3\xa9" "b", 3) && !hit);
    ss_stopper_free(s);
    const char *p13[] = {"x\xc3\xa9", "\xa9y", NULL}; /* "\xa9\xa9" across the pieces */
    CHECK(run_stopper_(stops6, 1, p13, out, 0) == 1 && strcmp(out, "x") == 0);
}

int main(void)
{
    test_sampling();
    test_stopper();
    return test_done("test_sample");
}
