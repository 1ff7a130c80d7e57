/*
 * test_model.c - the model runtime against the golden tensors of tests/fixtures/models
 * (HF transformers / float64 references): logits at every position, the state after each
 * sequence, greedy continuations, every merge case; plus the runtime's own invariants (chunked
 * prefill == token by token, resume == one long run, batch == separate) and loader robustness.
 */
#include "internal.h"
#include "kernels.h"
#include "safetensors.h"
#include "ss_model.h"
#include "ss_util.h"
#include "test_util.h"
#include "golden.h"

#include <limits.h>
#include <unistd.h>

/* Worst error under the fixture's rule: |a-b| <= 2e-3 or <= 1e-3 |b|; returns max abs error. */
static double logits_check(const char *what, const float *got, const float *want, size_t n,
                           double *worst)
{
    double mx = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= 2e-3 || d <= 1e-3 * fabs((double)want[i]))) bad++;
        if (d > mx || d != d) mx = d != d ? INFINITY : d;
    }
    CHECKF(bad == 0, "%s: %zu of %zu logits out of tolerance (max abs err %.3g)", what, bad, n, mx);
    if (mx > *worst) *worst = mx;
    return mx;
}

static void state_check(const char *what, const ss_model *m, const ss_state *s, const golden *g,
                        const char *prefix, int with_hidden)
{
    ss_state_layout lay;
    ss_model_state_layout(m, &lay);
    char name[128];
    size_t n;
    snprintf(name, sizeof name, "%s.state.conv", prefix);
    const float *conv = gt(g, name, &n);
    CHECKF(n == lay.conv_n, "%s: conv size %zu vs %zu", what, n, lay.conv_n);
    double e = max_abs_diff(ss_state_cdata(s) + lay.conv_off, conv, lay.conv_n);
    CHECKF(e <= 1e-3, "%s: conv state off by %.3g", what, e);
    snprintf(name, sizeof name, "%s.state.ssm", prefix);
    const float *ssm = gt(g, name, &n);
    CHECKF(n == lay.ssm_n, "%s: ssm size %zu vs %zu", what, n, lay.ssm_n);
    e = max_abs_diff(ss_state_cdata(s) + lay.ssm_off, ssm, lay.ssm_n);
    CHECKF(e <= 1e-3, "%s: ssm state off by %.3g", what, e);
    if (with_hidden) {
        snprintf(name, sizeof name, "%s.final_hidden", prefix);
        const float *fh = gt(g, name, &n);
        e = max_abs_diff(ss_state_cdata(s) + lay.hidden_off, fh, lay.hidden_n);
        CHECKF(e <= 1e-3, "%s: final_hidden off by %.3g", what, e);
    }
}

/* Greedy continuation of `n` tokens from state s whose next-token logits are `logits`. */
static void greedy(ss_model *m, ss_ctx *c, ss_state *s, float *logits, int n, int32_t *out)
{
    int V = ss_model_get_info(m)->vocab_size;
    for (int i = 0; i < n; i++) {
        out[i] = ss_argmax(logits, V);
        ss_seq q = {.state = s, .tokens = &out[i], .n_tokens = 1, .logits = logits};
        REQUIRE_OK(ss_model_eval(m, c, &q, 1, 0));
    }
}

static const char *const seq_names[] = {"a", "b", "c", "q"};

/*
 * Set under another kernel set than the CPU's own (SS_KERNELS: the model-generic and model-avx2
 * runs of this binary): the sweeps over the demo model that vary the threads' scheduling (thread
 * counts, claims, resume points) take fewer points there. Those runs exist for the kernels; the
 * full sweeps run once, on the CPU's set. (The generic kernels run 10x slower: with the full
 * sweeps model-generic took 43 s of the plain pass, 130 s under ASan.)
 */
static int sweep_small;
/* The generic kernels: they read none of the SIMD sets' switches (kernels_far_rows, the far
 * streams), so the sweeps over them run once there. */
static int generic_set;

/* The same bits in two states: the SSM and conv data and the cumulative decay. */
static int same_state(const ss_model *m, const ss_state *a, const ss_state *b)
{
    return !memcmp(ss_state_cdata(a), ss_state_cdata(b), ss_state_floats(a) * sizeof(float)) &&
           !memcmp(ss_state_cdecay(a), ss_state_cdecay(b),
                   ss_model_get_info(m)->decay_floats * sizeof(float));
}

/*
 * Exact prefix reuse (docs/api.md): a prompt resumed from the state after its first p tokens,
 * for p around every chunk and vector size (1, 8, 9, 16, 17, ...), gives the same bits as the
 * prompt fed whole: the log-probabilities of every later position, the final state (decay too)
 * and a greedy continuation; also when the resumed part shares its call with another sequence,
 * and when the prefix itself was fed in pieces.
 */
static void check_reuse(const char *model_dir, const ss_model_params *params)
{
    enum { T = 45, NG = 6 };
    ss_model *m;
    ss_ctx *c;
    REQUIRE_OK(ss_model_open(&m, fixture_path(model_dir), params));
    /* q8: exact where every span has 2 tokens or more (docs/api.md): no prefix of one token,
     * none fed in pieces that leave one, no resuming with one left */
    const int q8 = params && params->weights == SS_WEIGHTS_Q8;
    REQUIRE_OK(ss_ctx_new(m, &c));
    const int V = ss_model_get_info(m)->vocab_size;
    int32_t P[T], other[13];
    for (int i = 0; i < T; i++) P[i] = (int32_t)((i * 37 + 11) % (V - 1)) + 1;
    for (int i = 0; i < 13; i++) other[i] = (int32_t)((i * 53 + 5) % (V - 1)) + 1;
    ss_state *full, *r, *o;
    REQUIRE_OK(ss_state_new(m, &full));
    REQUIRE_OK(ss_state_new(m, &r));
    REQUIRE_OK(ss_state_new(m, &o));
    float *lf = malloc((size_t)T * V * sizeof(float)), *lr = malloc((size_t)T * V * sizeof(float));
    float *lo = malloc((size_t)13 * V * sizeof(float)), *g = malloc((size_t)V * sizeof(float));
    ss_seq q = {.state = full, .tokens = P, .n_tokens = T, .logits = lf, .logits_all = 1};
    REQUIRE_OK(ss_model_eval(m, c, &q, 1, 0));
    int32_t gf[NG], gr[NG];
    REQUIRE_OK(ss_state_copy(r, full));
    memcpy(g, lf + (size_t)(T - 1) * V, (size_t)V * sizeof(float));
    greedy(m, c, r, g, NG, gf);
    static const int all[] = {1, 5, 8, 9, 16, 17, 23, 32, 33, 44}, few[] = {1, 9, 17, 33};
    /* sweep_small on a model of the demo's size: one token, and one past a vector of 8, 16, 32 */
    const int small = sweep_small && ss_model_get_info(m)->d_model >= 256;
    const int *at = small ? few : all;
    const size_t n_at = small ? sizeof few / sizeof *few : sizeof all / sizeof *all;
    for (size_t k = 0; k < n_at; k++) {
        const int p = at[k];
        if (q8 && (p < 2 || T - p < 2)) continue;
        for (int mode = 0; mode < 3; mode++) {
            if (q8 && mode == 2 && p % 3 == 1) continue;
            /* the stored prefix: one call (mode 0, 1) or calls of 3 tokens (mode 2) */
            ss_state_zero(r);
            for (int t = 0; t < p; t += mode == 2 ? 3 : p) {
                const int n = mode == 2 && p - t > 3 ? 3 : p - t;
                ss_seq a = {.state = r, .tokens = P + t, .n_tokens = n};
                REQUIRE_OK(ss_model_eval(m, c, &a, 1, 0));
            }
            /* the rest, alone (mode 0, 2) or beside another sequence (mode 1) */
            ss_seq b[2] = {{.state = r, .tokens = P + p, .n_tokens = T - p, .logits = lr,
                            .logits_all = 1},
                           {.state = o, .tokens = other, .n_tokens = 13, .logits = lo,
                            .logits_all = 1}};
            ss_state_zero(o);
            REQUIRE_OK(ss_model_eval(m, c, b, mode == 1 ? 2 : 1, 0));
            const int same_logits =
                !memcmp(lr, lf + (size_t)p * V, (size_t)(T - p) * V * sizeof(float));
            const int same_st = same_state(m, r, full);
            memcpy(g, lr + (size_t)(T - p - 1) * V, (size_t)V * sizeof(float));
            greedy(m, c, r, g, NG, gr);
            CHECKF(same_logits && same_st && !memcmp(gr, gf, sizeof gf),
                   "%s%s: resumed at %d (mode %d): logits %s (by %.3g), state %s, greedy %s",
                   model_dir, q8 ? " q8" : "", p, mode, same_logits ? "same" : "differ",
                   max_abs_diff(lr, lf + (size_t)p * V, (size_t)(T - p) * V),
                   same_st ? "same" : "differs", memcmp(gr, gf, sizeof gf) ? "differs" : "same");
        }
    }
    free(lf);
    free(lr);
    free(lo);
    free(g);
    ss_state_free(full);
    ss_state_free(r);
    ss_state_free(o);
    ss_ctx_free(c);
    ss_model_close(m);
}

/* Everything the mamba1/mamba2/moe (token choice) goldens define. */
static void check_fixture(const char *model_dir, const char *golden_dir, double *worst_out)
{
    ss_model *m = NULL;
    ss_ctx *c = NULL;
    golden g;
    double worst = 0;
    REQUIRE_OK(ss_model_open(&m, fixture_path(model_dir), NULL));
    REQUIRE_OK(ss_ctx_new(m, &c));
    golden_open(&g, fixture_path(golden_dir));
    const ss_model_info *info = ss_model_get_info(m);
    const int V = info->vocab_size;
    ss_state *st[4] = {0};
    char name[128], what[256];

    /* Every sequence from the zero state: logits at every position, state after it. */
    for (int q = 0; q < 4; q++) {
        size_t L;
        snprintf(name, sizeof name, "seq_%s.ids", seq_names[q]);
        REQUIRE_OK(ss_state_new(m, &st[q]));
        if (!has_gt(&g, name)) continue; /* goldens made elsewhere may have fewer sequences */
        const int32_t *ids = gt(&g, name, &L);
        float *logits = malloc(L * V * sizeof(float));
        ss_seq s = {.state = st[q], .tokens = ids, .n_tokens = (int)L, .logits = logits,
                    .logits_all = 1};
        REQUIRE_OK(ss_model_eval(m, c, &s, 1, 0));
        snprintf(name, sizeof name, "seq_%s.logits", seq_names[q]);
        if (has_gt(&g, name)) {
            snprintf(what, sizeof what, "%s seq_%s logits", model_dir, seq_names[q]);
            logits_check(what, logits, gt(&g, name, NULL), L * V, &worst);
        }
        snprintf(name, sizeof name, "seq_%s.state.conv", seq_names[q]);
        if (has_gt(&g, name)) {
            snprintf(what, sizeof what, "%s seq_%s state", model_dir, seq_names[q]);
            snprintf(name, sizeof name, "seq_%s", seq_names[q]);
            state_check(what, m, st[q], &g, name, 1);
        }
        /* The state's final_hidden gives the same next-token logits as the last position. */
        float *from_state = malloc(V * sizeof(float));
        REQUIRE_OK(ss_model_logits_from_state(m, c, st[q], from_state));
        CHECKF(max_abs_diff(from_state, logits + (L - 1) * V, V) < 1e-4,
               "%s seq_%s: logits from final_hidden differ", model_dir, seq_names[q]);
        free(from_state);

        if (q == 0) {
            /* seq_a.greedy12 */
            size_t n;
            const int32_t *want = gt(&g, "seq_a.greedy12", &n);
            ss_state *s2;
            REQUIRE_OK(ss_state_new(m, &s2));
            REQUIRE_OK(ss_state_copy(s2, st[0]));
            float *lg = malloc(V * sizeof(float));
            memcpy(lg, logits + (L - 1) * V, V * sizeof(float));
            int32_t got[16];
            greedy(m, c, s2, lg, (int)n, got);
            CHECKF(memcmp(got, want, n * sizeof(int32_t)) == 0, "%s: greedy12 differs", model_dir);
            free(lg);
            ss_state_free(s2);
        }
        free(logits);
    }

    /* Merges: combine our own states with the golden weights. */
    json_t *merges = json_object_get(g.cases, "merges");
    size_t mi;
    json_t *mc;
    size_t qL = 0;
    const int32_t *qids = json_array_size(merges) ? gt(&g, "seq_q.ids", &qL) : NULL;
    json_array_foreach(merges, mi, mc)
    {
        const char *mname = json_string_value(json_object_get(mc, "name"));
        json_t *srcs = json_object_get(mc, "sources"), *ws = json_object_get(mc, "weights");
        int n = (int)json_array_size(srcs);
        const float *ptr[8];
        double w[8];
        for (int i = 0; i < n; i++) {
            const char *sn = json_string_value(json_array_get(srcs, (size_t)i));
            int q = 0;
            while (strcmp(seq_names[q], sn)) q++;
            ptr[i] = ss_state_cdata(st[q]);
            w[i] = json_number_value(json_array_get(ws, (size_t)i));
        }
        ss_state *ms;
        REQUIRE_OK(ss_state_new(m, &ms));
        test_merge(ss_state_data(ms), ptr, w, n, ss_model_get_info(m)->state_floats);
        snprintf(what, sizeof what, "%s merge %s state", model_dir, mname);
        snprintf(name, sizeof name, "merge_%s", mname);
        state_check(what, m, ms, &g, name, 0);
        float *logits = malloc(qL * V * sizeof(float));
        ss_seq s = {.state = ms, .tokens = qids, .n_tokens = (int)qL, .logits = logits,
                    .logits_all = 1};
        REQUIRE_OK(ss_model_eval(m, c, &s, 1, 0));
        snprintf(name, sizeof name, "merge_%s.query_logits", mname);
        snprintf(what, sizeof what, "%s merge %s query logits", model_dir, mname);
        logits_check(what, logits, gt(&g, name, NULL), qL * V, &worst);
        size_t gn;
        snprintf(name, sizeof name, "merge_%s.greedy8", mname);
        const int32_t *want = gt(&g, name, &gn);
        int32_t got[16];
        float *lg = malloc(V * sizeof(float));
        memcpy(lg, logits + (qL - 1) * V, V * sizeof(float));
        greedy(m, c, ms, lg, (int)gn, got);
        CHECKF(memcmp(got, want, gn * sizeof(int32_t)) == 0, "%s: merge %s greedy8 differs",
               model_dir, mname);
        free(lg);
        free(logits);
        ss_state_free(ms);
    }
    printf("%-28s worst |logit error| %.3g  (fingerprint %s, %s)\n", model_dir, worst,
           info->fingerprint, info->dtype);
    if (worst_out) *worst_out = worst;
    for (int q = 0; q < 4; q++) ss_state_free(st[q]);
    golden_close(&g);
    ss_ctx_free(c);
    ss_model_close(m);
}

/* Chunked prefill == token by token; resume == one long run; batch == separate. */
static void check_invariants(const char *model_dir, const char *golden_dir)
{
    ss_model *m;
    ss_ctx *c;
    golden g;
    REQUIRE_OK(ss_model_open(&m, fixture_path(model_dir), NULL));
    REQUIRE_OK(ss_ctx_new(m, &c));
    golden_open(&g, fixture_path(golden_dir));
    const int V = ss_model_get_info(m)->vocab_size;
    size_t L;
    const int32_t *ids = gt(&g, "seq_a.ids", &L);
    /* reference: token by token */
    ss_state *ref, *s;
    REQUIRE_OK(ss_state_new(m, &ref));
    REQUIRE_OK(ss_state_new(m, &s));
    float *ref_logits = malloc(L * V * sizeof(float)), *logits = malloc(L * V * sizeof(float));
    for (size_t t = 0; t < L; t++) {
        ss_seq q = {.state = ref, .tokens = ids + t, .n_tokens = 1, .logits = ref_logits + t * V};
        REQUIRE_OK(ss_model_eval(m, c, &q, 1, 0));
    }
    const int chunks[] = {2, 3, 5, 7, 16, (int)L};
    for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
        ss_state_zero(s);
        for (size_t t = 0; t < L; t += (size_t)chunks[k]) {
            int n = (int)(L - t) < chunks[k] ? (int)(L - t) : chunks[k];
            ss_seq q = {.state = s, .tokens = ids + t, .n_tokens = n, .logits = logits + t * V,
                        .logits_all = 1};
            REQUIRE_OK(ss_model_eval(m, c, &q, 1, 0));
        }
        /* exact: the kernels' sums do not depend on how many tokens share a call */
        CHECKF(same_state(m, s, ref), "%s: chunk %d: state differs from token-by-token (by %.3g)",
               model_dir, chunks[k],
               max_abs_diff(ss_state_cdata(s), ss_state_cdata(ref), ss_state_floats(s)));
        CHECKF(!memcmp(logits, ref_logits, L * V * sizeof(float)),
               "%s: chunk %d: logits differ from token-by-token (by %.3g)", model_dir, chunks[k],
               max_abs_diff(logits, ref_logits, L * V));
    }
    /* Batch: a, b, c, q at once (different lengths), compared with each alone. */
    ss_state *bs[4], *ss1[4];
    float *bl[4], *sl[4];
    ss_seq batch[4];
    for (int q = 0; q < 4; q++) {
        char name[64];
        size_t n = 0;
        snprintf(name, sizeof name, "seq_%s.ids", seq_names[q]);
        const int32_t *qi = has_gt(&g, name) ? gt(&g, name, &n) : ids; /* missing: reuse seq_a */
        if (!has_gt(&g, name)) n = L;
        REQUIRE_OK(ss_state_new(m, &bs[q]));
        REQUIRE_OK(ss_state_new(m, &ss1[q]));
        bl[q] = malloc(V * sizeof(float));
        sl[q] = malloc(V * sizeof(float));
        batch[q] = (ss_seq){.state = bs[q], .tokens = qi, .n_tokens = (int)n, .logits = bl[q]};
        ss_seq one = {.state = ss1[q], .tokens = qi, .n_tokens = (int)n, .logits = sl[q]};
        REQUIRE_OK(ss_model_eval(m, c, &one, 1, 0));
    }
    REQUIRE_OK(ss_model_eval(m, c, batch, 4, 0));
    for (int q = 0; q < 4; q++) {
        CHECKF(same_state(m, bs[q], ss1[q]) && !memcmp(bl[q], sl[q], V * sizeof(float)),
               "%s: batched seq %d differs from alone (state by %.3g, logits by %.3g)", model_dir,
               q, max_abs_diff(ss_state_cdata(bs[q]), ss_state_cdata(ss1[q]), ss_state_floats(s)),
               max_abs_diff(bl[q], sl[q], V));
        ss_state_free(bs[q]);
        ss_state_free(ss1[q]);
        free(bl[q]);
        free(sl[q]);
    }
    /* Bad token ids are refused before any state changes. */
    ss_state_zero(s);
    int32_t bad[2] = {1, V};
    ss_seq q = {.state = s, .tokens = bad, .n_tokens = 2};
    CHECK_ERR(ss_model_eval(m, c, &q, 1, 0), SS_ERR_INVALID);
    float zero = 0;
    for (size_t i = 0; i < ss_state_floats(s); i++) zero += fabsf(ss_state_cdata(s)[i]);
    CHECK(zero == 0);
    /* Export -> import is bit-exact in F32, close in BF16. */
    uint8_t *file;
    size_t flen;
    REQUIRE_OK(ss_state_export(m, ss_state_cdata(ref), NULL, "{\"name\":\"x\"}", &file, &flen));
    float *back = malloc(ss_state_floats(ref) * sizeof(float));
    char *meta = NULL;
    CHECK_OK(ss_state_import(m, file, flen, back, &meta));
    CHECK(memcmp(back, ss_state_cdata(ref), ss_state_floats(ref) * sizeof(float)) == 0);
    CHECK(meta && strstr(meta, "\"name\":\"x\"") &&
          strstr(meta, ss_model_get_info(m)->fingerprint));
    free(meta);
    free(file);
    REQUIRE_OK(ss_state_export(m, ss_state_cdata(ref), "BF16", NULL, &file, &flen));
    CHECK_OK(ss_state_import(m, file, flen, back, NULL));
    double e = max_abs_diff(back, ss_state_cdata(ref), ss_state_floats(ref));
    CHECKF(e < 0.05, "bf16 export off by %.3g", e);
    /* truncated file */
    CHECK_ERR(ss_state_import(m, file, flen - 3, back, NULL), SS_ERR_FORMAT);
    free(file);
    free(back);
    free(ref_logits);
    free(logits);
    ss_state_free(ref);
    ss_state_free(s);
    golden_close(&g);
    ss_ctx_free(c);
    ss_model_close(m);
}

/* Mixture of Tokens: 4 sequences in lockstep form the groups; a lone sequence runs ungrouped. */
static void check_mot(void)
{
    ss_model *m;
    ss_ctx *c;
    golden g;
    double worst = 0;
    REQUIRE_OK(ss_model_open(&m, fixture_path("models/moe-mamba-mot"), NULL));
    REQUIRE_OK(ss_ctx_new(m, &c));
    golden_open(&g, fixture_path("models/moe-mamba-mot"));
    const ss_model_info *info = ss_model_get_info(m);
    const int V = info->vocab_size;
    CHECK(info->mot_group_size == 4);
    size_t n;
    const int32_t *ids = gt(&g, "batch.ids", &n);
    const int B = 4, L = (int)n / 4;
    ss_state *st[4];
    ss_seq seqs[4];
    float *logits = malloc((size_t)B * L * V * sizeof(float));
    for (int b = 0; b < B; b++) {
        REQUIRE_OK(ss_state_new(m, &st[b]));
        seqs[b] = (ss_seq){.state = st[b], .tokens = ids + b * L, .n_tokens = L,
                           .logits = logits + (size_t)b * L * V, .logits_all = 1};
    }
    REQUIRE_OK(ss_model_eval(m, c, seqs, B, 1));
    logits_check("moe-mamba-mot batch logits", logits, gt(&g, "batch.logits", NULL),
                 (size_t)B * L * V, &worst);
    ss_state_layout lay;
    ss_model_state_layout(m, &lay);
    const float *conv = gt(&g, "batch.state.conv", NULL), *ssm = gt(&g, "batch.state.ssm", NULL);
    for (int b = 0; b < B; b++) {
        double e = max_abs_diff(ss_state_cdata(st[b]) + lay.conv_off, conv + b * lay.conv_n,
                                lay.conv_n);
        CHECKF(e <= 1e-3, "mot seq %d conv state off by %.3g", b, e);
        e = max_abs_diff(ss_state_cdata(st[b]) + lay.ssm_off, ssm + b * lay.ssm_n, lay.ssm_n);
        CHECKF(e <= 1e-3, "mot seq %d ssm state off by %.3g", b, e);
    }
    /* The same 4 sequences stepped one token at a time in lockstep. */
    for (int b = 0; b < B; b++) ss_state_zero(st[b]);
    float *step = malloc((size_t)B * V * sizeof(float));
    double e = 0;
    for (int t = 0; t < L; t++) {
        for (int b = 0; b < B; b++)
            seqs[b] = (ss_seq){.state = st[b], .tokens = ids + b * L + t, .n_tokens = 1,
                               .logits = step + (size_t)b * V};
        REQUIRE_OK(ss_model_eval(m, c, seqs, B, 1));
        for (int b = 0; b < B; b++) {
            double d = max_abs_diff(step + (size_t)b * V, logits + ((size_t)b * L + t) * V, V);
            e = d > e ? d : e;
        }
    }
    CHECKF(e < 1e-4, "mot lockstep stepping differs from lockstep prefill by %.3g", e);
    /* single: sequence 0 alone, mixing disabled */
    const int32_t *sids = gt(&g, "single.ids", &n);
    ss_state_zero(st[0]);
    ss_seq one = {.state = st[0], .tokens = sids, .n_tokens = (int)n, .logits = logits,
                  .logits_all = 1};
    REQUIRE_OK(ss_model_eval(m, c, &one, 1, 1));
    logits_check("moe-mamba-mot single logits", logits, gt(&g, "single.logits", NULL), n * V,
                 &worst);
    /* Explicit group ids, with an ungrouped fifth sequence in the same call (the engine's case):
     * the group gives the lockstep result, the loner the single (mixing disabled) result. */
    {
        ss_state *lone;
        REQUIRE_OK(ss_state_new(m, &lone));
        float *lone_logits = malloc(n * V * sizeof(float));
        ss_seq five[5];
        for (int b = 0; b < B; b++) {
            ss_state_zero(st[b]);
            five[b] = (ss_seq){.state = st[b], .tokens = ids + b * L, .n_tokens = L,
                               .logits = logits + (size_t)b * L * V, .logits_all = 1, .group = 7};
        }
        five[4] = (ss_seq){.state = lone, .tokens = sids, .n_tokens = (int)n,
                           .logits = lone_logits, .logits_all = 1};
        REQUIRE_OK(ss_model_eval(m, c, five, 5, 0));
        logits_check("moe-mamba-mot group 7 logits", logits, gt(&g, "batch.logits", NULL),
                     (size_t)B * L * V, &worst);
        logits_check("moe-mamba-mot loner logits", lone_logits, gt(&g, "single.logits", NULL),
                     n * V, &worst);
        five[4].group = 7; /* a fifth member: more than the group size of 4 */
        CHECK_ERR(ss_model_eval(m, c, five, 5, 0), SS_ERR_INVALID);
        ss_state_free(lone);
        free(lone_logits);
    }
    /* Unequal lengths inside a group are refused in lockstep. */
    for (int b = 0; b < B; b++)
        seqs[b] = (ss_seq){.state = st[b], .tokens = ids + b * L, .n_tokens = b ? L : L - 1};
    CHECK_ERR(ss_model_eval(m, c, seqs, B, 1), SS_ERR_INVALID);
    printf("%-28s worst |logit error| %.3g  (fingerprint %s)\n", "models/moe-mamba-mot", worst,
           info->fingerprint);
    for (int b = 0; b < B; b++) ss_state_free(st[b]);
    free(step);
    free(logits);
    golden_close(&g);
    ss_ctx_free(c);
    ss_model_close(m);
}

/* ---- loader robustness ---------------------------------------------------------------------- */

static char tmpdir[256];

static void copy_file(const char *from, const char *to)
{
    char *buf;
    size_t n;
    REQUIRE_OK(ss_read_file(from, 1 << 30, &buf, &n));
    FILE *f = fopen(to, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
    free(buf);
}

/* Write config + a modified copy of mamba1-tiny's weights; return what ss_model_open says. */
static ss_err open_modified(const char *config_override, void (*edit)(uint8_t *buf, size_t *len))
{
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", tmpdir);
    if (config_override) {
        FILE *f = fopen(path, "wb");
        fputs(config_override, f);
        fclose(f);
    } else {
        copy_file(fixture_path("models/mamba1-tiny/config.json"), path);
    }
    char *buf;
    size_t n;
    REQUIRE_OK(
        ss_read_file(fixture_path("models/mamba1-tiny/model.safetensors"), 1 << 30, &buf, &n));
    if (edit) edit((uint8_t *)buf, &n);
    snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
    free(buf);
    ss_model *m = NULL;
    ss_err e = ss_model_open(&m, tmpdir, NULL);
    ss_model_close(m);
    return e;
}

static void truncate_half(uint8_t *b, size_t *n)
{
    (void)b;
    *n /= 2;
}
static void garbage_header_len(uint8_t *b, size_t *n)
{
    (void)n;
    memset(b, 0xff, 8);
}
static void break_json(uint8_t *b, size_t *n)
{
    (void)n;
    b[8] = '[';
}
/* Rename a tensor in place (same length): "A_log" of layer 0 -> "A_lgg". */
static void rename_tensor(uint8_t *b, size_t *n)
{
    uint8_t *p = memmem(b, *n, "layers.0.mixer.A_log", 20);
    if (p) p[18] = 'g';
}
/* Change a dtype string F32 -> F64 would change sizes; use "I32" for the first tensor. */
static void bad_dtype(uint8_t *b, size_t *n)
{
    uint8_t *p = memmem(b, *n, "\"F32\"", 5);
    if (p) memcpy(p, "\"I32\"", 5);
}

static void check_loader_errors(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ss_test_model_XXXXXX");
    if (!mkdtemp(tmpdir)) exit(1);
    CHECK_OK(open_modified(NULL, NULL));
    CHECK_ERR(open_modified(NULL, truncate_half), SS_ERR_FORMAT);
    CHECKF(strstr(ss_errmsg(), "beyond the end") != NULL, "message: %s", ss_errmsg());
    CHECK_ERR(open_modified(NULL, garbage_header_len), SS_ERR_FORMAT);
    CHECK_ERR(open_modified(NULL, break_json), SS_ERR_FORMAT);
    CHECK_ERR(open_modified(NULL, rename_tensor), SS_ERR_FORMAT);
    CHECKF(strstr(ss_errmsg(), "backbone.layers.0.mixer.A_log") != NULL, "message: %s",
           ss_errmsg());
    CHECK_ERR(open_modified(NULL, bad_dtype), SS_ERR_UNSUPPORTED);
    /* config inconsistent with the tensors: hidden_size 32 */
    char *cfg;
    size_t n;
    REQUIRE_OK(ss_read_file(fixture_path("models/mamba1-tiny/config.json"), 1 << 20, &cfg, &n));
    char *p = strstr(cfg, "\"hidden_size\": 64");
    REQUIRE_OK(p ? SS_OK : SS_ERR_INTERNAL);
    memcpy(p, "\"hidden_size\": 32", 17);
    CHECK_ERR(open_modified(cfg, NULL), SS_ERR_MISMATCH);
    CHECKF(strstr(ss_errmsg(), "backbone.embeddings.weight") != NULL, "message: %s", ss_errmsg());
    free(cfg);
    CHECK_ERR(open_modified("{\"model_type\": \"llama\"}", NULL), SS_ERR_UNSUPPORTED);
    CHECK_ERR(open_modified("{not json", NULL), SS_ERR_FORMAT);
    CHECK_ERR(open_modified("[]", NULL), SS_ERR_FORMAT);
    ss_model *m = NULL;
    CHECK_ERR(ss_model_open(&m, "/nonexistent/model", NULL), SS_ERR_NOT_FOUND);
    CHECK(m == NULL);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    CHECK(system(cmd) == 0);
}

/*
 * F32 matrices copied onto huge pages (the default) and used in place from the file mapping
 * (f32_in_place) compute exactly the same thing: the same bytes, the same kernels. The copies are
 * 64-byte aligned; the fixtures' in-place data is wherever safetensors put it.
 */
static void check_f32_in_place(void)
{
    ss_model_params p = ss_model_default_params();
    p.f32_in_place = 1;
    const char *dirs[] = {"models/mamba1-tiny", "models/mamba1-tiny-sharded",
                          "models/mamba1-tiny-bf16"};
    for (int i = 0; i < 3; i++) {
        ss_model *a, *b;
        REQUIRE_OK(ss_model_open(&a, fixture_path(dirs[i]), NULL));
        REQUIRE_OK(ss_model_open(&b, fixture_path(dirs[i]), &p));
        CHECK(strcmp(ss_model_get_info(a)->fingerprint, ss_model_get_info(b)->fingerprint) == 0);
        /* where in_proj lies: in the copy on the weights' arena, 64-byte aligned, or in the
         * file's mapping */
        const char *pa = a->layers[0].in_proj_w.p, *pb = b->layers[0].in_proj_w.p;
        int in_map_a = 0, in_map_b = 0;
        for (int k = 0; k < a->n_maps; k++)
            in_map_a |= a->maps[k].addr && pa >= (char *)a->maps[k].addr &&
                        pa < (char *)a->maps[k].addr + a->maps[k].len;
        for (int k = 0; k < b->n_maps; k++)
            in_map_b |= b->maps[k].addr && pb >= (char *)b->maps[k].addr &&
                        pb < (char *)b->maps[k].addr + b->maps[k].len;
        CHECKF(!in_map_a && (uintptr_t)pa % 64 == 0, "%s: in_proj not copied (%p)", dirs[i],
               (const void *)pa);
        if (i < 2) /* F32 fixtures: in place on request */
            CHECKF(in_map_b, "%s: in_proj not in the file mapping with f32_in_place", dirs[i]);
        const int V = ss_model_get_info(a)->vocab_size;
        int32_t ids[5] = {3, 14, 15, 92, 65};
        float *la = malloc(5 * V * sizeof(float)), *lb = malloc(5 * V * sizeof(float));
        ss_model *ms[2] = {a, b};
        float *ls[2] = {la, lb};
        for (int k = 0; k < 2; k++) {
            ss_ctx *c;
            ss_state *st;
            REQUIRE_OK(ss_ctx_new(ms[k], &c));
            REQUIRE_OK(ss_state_new(ms[k], &st));
            ss_seq q = {.state = st, .tokens = ids, .n_tokens = 5, .logits = ls[k],
                        .logits_all = 1};
            REQUIRE_OK(ss_model_eval(ms[k], c, &q, 1, 0));
            ss_state_free(st);
            ss_ctx_free(c);
        }
        CHECKF(memcmp(la, lb, 5 * V * sizeof(float)) == 0,
               "%s: the copy and the file mapping give different logits", dirs[i]);
        free(la);
        free(lb);
        ss_model_close(a);
        ss_model_close(b);
    }
}

/*
 * mamba1-tiny-bf16 (every tensor BF16) rewritten into dir with its tensors as F32 (the same
 * values, exactly), all of them (mixed 0) or only the 1-D ones (mixed 1: the matrices stay BF16
 * and are copied out of a shard that stays mapped for the F32 vectors used in place).
 */
static void write_bf16_as_f32(const char *dir, int mixed)
{
    char path[512], *buf;
    size_t n;
    snprintf(path, sizeof path, "%s/config.json", dir);
    copy_file(fixture_path("models/mamba1-tiny-bf16/config.json"), path);
    REQUIRE_OK(ss_read_file(fixture_path("models/mamba1-tiny-bf16/model.safetensors"), 1 << 30,
                            &buf, &n));
    st_file f;
    REQUIRE_OK(st_parse(&f, (const uint8_t *)buf, n, "fixture"));
    st_out_tensor *o = calloc((size_t)f.n_tensors, sizeof *o);
    float **wide = calloc((size_t)f.n_tensors, sizeof *wide);
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        o[i] = (st_out_tensor){
            .name = t->name, .dtype = t->dtype, .ndim = t->ndim, .data = t->data};
        memcpy(o[i].shape, t->shape, sizeof o[i].shape);
        if (mixed && t->ndim == 2) continue;
        wide[i] = malloc(t->n_elem * sizeof(float));
        st_to_f32(t->dtype, t->data, wide[i], t->n_elem);
        o[i].dtype = ST_F32;
        o[i].data = wide[i];
    }
    uint8_t *out;
    size_t len;
    REQUIRE_OK(st_write_mem(o, f.n_tensors, NULL, &out, &len));
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *fo = fopen(path, "wb");
    CHECK(fo && fwrite(out, 1, len, fo) == len);
    if (fo) fclose(fo);
    for (int i = 0; i < f.n_tensors; i++) free(wide[i]);
    free(wide);
    free(o);
    free(out);
    st_free(&f);
    free(buf);
}

static void q8_run(ss_model *m, float *out);

/*
 * BF16 matrices are copied at load into the kernels' pair layout (kernels.h) on huge pages:
 * prefill and decode logits have the bits of the same weights stored as F32 (the BF16 kernel
 * takes the F32 kernel's steps), with every tensor BF16, with F32 vectors used in place beside
 * them (the copied matrices' file pages dropped), and with f32_in_place on that mixed shard.
 */
static void check_bf16_exact(void)
{
    char dir[256], mdir[256];
    snprintf(dir, sizeof dir, "/tmp/ss_test_bf16_XXXXXX");
    snprintf(mdir, sizeof mdir, "/tmp/ss_test_bf16m_XXXXXX");
    if (!mkdtemp(dir) || !mkdtemp(mdir)) exit(1);
    write_bf16_as_f32(dir, 0);
    write_bf16_as_f32(mdir, 1);
    ss_model_params hp = ss_model_default_params();
    hp.f32_in_place = 1;
    const char *dirs[4] = {dir, fixture_path("models/mamba1-tiny-bf16"), mdir, mdir};
    const ss_model_params *ps[4] = {NULL, NULL, NULL, &hp};
    static const char *const what[4] = {"F32", "BF16", "BF16 matrices, F32 vectors",
                                         "the same with f32_in_place"};
    static const char *const dtype[4] = {"F32", "BF16", "mixed", "mixed"};
    float *logits[4] = {NULL};
    size_t V = 0;
    for (int i = 0; i < 4; i++) {
        ss_model *m;
        REQUIRE_OK(ss_model_open(&m, dirs[i], ps[i]));
        CHECKF(strcmp(ss_model_get_info(m)->dtype, dtype[i]) == 0, "%s: dtype %s", what[i],
               ss_model_get_info(m)->dtype);
        V = (size_t)ss_model_get_info(m)->vocab_size;
        logits[i] = malloc(43 * V * sizeof(float));
        q8_run(m, logits[i]);
        ss_model_close(m);
        if (i > 0)
            CHECKF(memcmp(logits[0], logits[i], 43 * V * sizeof(float)) == 0,
                   "%s: logits differ from the F32 copy's", what[i]);
    }
    for (int i = 0; i < 4; i++) free(logits[i]);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", dir, mdir);
    CHECK(system(cmd) == 0);
}

/* ---- 8-bit weights (--weights q8) ------------------------------------------------------------ */

/*
 * Snap a matrix to values that int8 blocks of 32 hold exactly: per block a power-of-two scale s
 * with the largest |value| = 127 s, every value q s. Quantising such a matrix loses nothing, so
 * the q8 path must then give the exact path's results up to summation order.
 */
static void snap_q8(float *w, size_t rows, size_t cols)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t k0 = 0; k0 < cols; k0 += 32) {
            float *b = w + r * cols + k0;
            const size_t n = cols - k0 < 32 ? cols - k0 : 32;
            size_t imax = 0;
            for (size_t k = 1; k < n; k++) imax = fabsf(b[k]) > fabsf(b[imax]) ? k : imax;
            if (b[imax] == 0) continue;
            const float s = ldexpf(1.0f, (int)ceil(log2(fabs(b[imax]) / 127.0)));
            for (size_t k = 0; k < n; k++) {
                float q = rintf(b[k] / s);
                b[k] = (q > 127 ? 127 : q < -127 ? -127 : q) * s;
            }
            b[imax] = copysignf(127 * s, b[imax]);
        }
}

/* A copy of the fixture `name` in dir with every F32 matrix snapped (snap_q8). */
static void write_snapped(const char *name, const char *dir)
{
    char path[512], *buf;
    size_t n;
    snprintf(path, sizeof path, "%s/config.json", dir);
    char src[512];
    snprintf(src, sizeof src, "%s/config.json", name);
    copy_file(fixture_path(src), path);
    snprintf(src, sizeof src, "%s/model.safetensors", name);
    REQUIRE_OK(ss_read_file(fixture_path(src), 1 << 30, &buf, &n));
    st_file f;
    REQUIRE_OK(st_parse(&f, (const uint8_t *)buf, n, "fixture"));
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        if (t->dtype != ST_F32 || t->ndim != 2 || ((uintptr_t)t->data & 3)) continue;
        snap_q8((float *)(buf + t->offset), (size_t)t->shape[0], (size_t)t->shape[1]);
    }
    st_free(&f);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *o = fopen(path, "wb");
    CHECK(o && fwrite(buf, 1, n, o) == n);
    if (o) fclose(o);
    free(buf);
}

/* Logits of 40 prompt tokens (one eval: the prefill GEMM path), then of 3 tokens fed one by one
 * (the decode kernel path): 43 rows of V into out. */
static void q8_ids(int32_t *ids, int V) /* the 43 tokens of q8_run */
{
    for (int i = 0; i < 43; i++) ids[i] = (i * 37 + 5) % V;
}

static void q8_run(ss_model *m, float *out)
{
    const int V = ss_model_get_info(m)->vocab_size;
    int32_t ids[43];
    q8_ids(ids, V);
    ss_ctx *c;
    ss_state *st;
    REQUIRE_OK(ss_ctx_new(m, &c));
    REQUIRE_OK(ss_state_new(m, &st));
    ss_seq q = {.state = st, .tokens = ids, .n_tokens = 40, .logits = out, .logits_all = 1};
    REQUIRE_OK(ss_model_eval(m, c, &q, 1, 0));
    for (int t = 40; t < 43; t++) {
        ss_seq d = {.state = st, .tokens = ids + t, .n_tokens = 1, .logits = out + (size_t)t * V};
        REQUIRE_OK(ss_model_eval(m, c, &d, 1, 0));
    }
    ss_state_free(st);
    ss_ctx_free(c);
}

/* The 43 tokens of q8_run as one prompt on a fresh state (every row's logits into out), then 4
 * decode tokens with the profile on: the parallel steps they took. */
static uint64_t prompt_then_steps(ss_model *m, float *out)
{
    const int V = ss_model_get_info(m)->vocab_size;
    int32_t ids[43], tok = 7;
    q8_ids(ids, V);
    ss_ctx *c;
    ss_state *st;
    REQUIRE_OK(ss_ctx_new(m, &c));
    REQUIRE_OK(ss_state_new(m, &st));
    ss_seq q = {.state = st, .tokens = ids, .n_tokens = 43, .logits = out, .logits_all = 1};
    REQUIRE_OK(ss_model_eval(m, c, &q, 1, 0));
    float *l1 = malloc((size_t)V * sizeof *l1);
    if (!l1) abort();
    ss_seq d = {.state = st, .tokens = &tok, .n_tokens = 1, .logits = l1};
    ss_ctx_set_profile(c, 1);
    for (int i = 0; i < 4; i++) REQUIRE_OK(ss_model_eval(m, c, &d, 1, 0));
    ss_profile pr;
    ss_ctx_get_profile(c, &pr);
    free(l1);
    ss_state_free(st);
    ss_ctx_free(c);
    return pr.pool_steps;
}

static double q8_max_diff(const float *a, const float *b, size_t n, double *amax)
{
    double worst = 0;
    *amax = 0;
    for (size_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs((double)a[i] - b[i]));
        *amax = fmax(*amax, fabs((double)b[i]));
    }
    return worst;
}

/* 12 sequences decoded in one step equal each decoded alone: bit for bit (tol 0) or, for q8
 * weights, whose one-row kernel sums in another order (and, by default, quantises the
 * activations), within tol x (1 + the largest |logit|). */
static void batch12_check(ss_model *m, const char *what, double tol)
{
    enum { S = 12 };
    const size_t V = (size_t)ss_model_get_info(m)->vocab_size;
    ss_ctx *c;
    REQUIRE_OK(ss_ctx_new(m, &c));
    ss_state *st[S], *alone;
    REQUIRE_OK(ss_state_new(m, &alone));
    float *lb = malloc(S * V * sizeof(float));
    int32_t pre[S][5], next[S];
    ss_seq q[S];
    for (int i = 0; i < S; i++) {
        for (int t = 0; t < 5; t++) pre[i][t] = (int32_t)((i * 7 + t * 13 + 1) % (int)V);
        next[i] = (int32_t)((i * 11 + 3) % (int)V);
        REQUIRE_OK(ss_state_new(m, &st[i]));
        ss_seq p = {.state = st[i], .tokens = pre[i], .n_tokens = 5};
        REQUIRE_OK(ss_model_eval(m, c, &p, 1, 0));
        q[i] = (ss_seq){.state = st[i], .tokens = &next[i], .n_tokens = 1, .logits = lb + i * V};
    }
    float *lalone = malloc(S * V * sizeof(float));
    for (int i = 0; i < S; i++) { /* alone, from a copy of the same state */
        REQUIRE_OK(ss_state_copy(alone, st[i]));
        ss_seq a = {.state = alone, .tokens = &next[i], .n_tokens = 1, .logits = lalone + i * V};
        REQUIRE_OK(ss_model_eval(m, c, &a, 1, 0));
    }
    double worst = 0, amax = 0;
    REQUIRE_OK(ss_model_eval(m, c, q, S, 0));
    for (size_t i = 0; i < S * V; i++) {
        worst = fmax(worst, fabs((double)lb[i] - lalone[i]));
        amax = fmax(amax, fabs((double)lalone[i]));
    }
    CHECKF(tol == 0 ? !memcmp(lb, lalone, S * V * sizeof(float)) : worst <= tol * (1 + amax),
           "%s: 12 sequences in one step differ from alone by %g (|logit| <= %g)", what, worst,
           amax);
    for (int i = 0; i < S; i++) ss_state_free(st[i]);
    ss_state_free(alone);
    ss_ctx_free(c);
    free(lb);
    free(lalone);
}

/* The bundled demo model (models/demo-mamba1) on nt threads with ss_model_params.fused_decode
 * `fused`, a context and a zero state. */
static void open_demo_fused(int nt, int fused, ss_model **m, ss_ctx **c, ss_state **s)
{
    char demo[4096];
    snprintf(demo, sizeof demo, "%s/models/demo-mamba1", test_source_root());
    ss_model_params p = ss_model_default_params();
    p.n_threads = nt;
    p.fused_decode = fused;
    REQUIRE_OK(ss_model_open(m, demo, &p));
    REQUIRE_OK(ss_ctx_new(*m, c));
    REQUIRE_OK(ss_state_new(*m, s));
}

/* The demo model on nt threads with the default parameters. */
static void open_demo(int nt, ss_model **m, ss_ctx **c, ss_state **s)
{
    open_demo_fused(nt, 0, m, c, s);
}

/*
 * Thread counts: the demo model (wide enough for every threaded path: projections split by
 * columns, the scan by channels) gives the same logits and state bits on 1, 2 and 3 threads.
 */
static void check_threads(void)
{
    enum { T = 40 };
    float *ref = NULL, *ref_state = NULL;
    size_t V = 0, nf = 0;
    for (int nt = 1; nt <= 3; nt++) {
        ss_model *m;
        ss_ctx *c;
        ss_state *s;
        open_demo(nt, &m, &c, &s);
        V = (size_t)ss_model_get_info(m)->vocab_size;
        int32_t ids[T];
        for (int i = 0; i < T; i++) ids[i] = (int32_t)((i * 37 + 11) % (int)(V - 1)) + 1;
        float *lg = malloc(T * V * sizeof(float));
        ss_seq q = {.state = s, .tokens = ids, .n_tokens = T, .logits = lg, .logits_all = 1};
        REQUIRE_OK(ss_model_eval(m, c, &q, 1, 0));
        nf = ss_state_floats(s);
        /* The same tokens as a prefill of 32, then one decode step at a time (the steps that
         * convolve inside in_proj's step and add the residual inside out_proj's): the bits of
         * the whole prompt's rows. */
        {
            enum { P = 32 };
            ss_state *s2;
            REQUIRE_OK(ss_state_new(m, &s2));
            float *one = malloc(V * sizeof(float));
            ss_seq q2 = {.state = s2, .tokens = ids, .n_tokens = P};
            REQUIRE_OK(ss_model_eval(m, c, &q2, 1, 0));
            for (int t = P; t < T; t++) {
                q2 = (ss_seq){.state = s2, .tokens = ids + t, .n_tokens = 1, .logits = one};
                REQUIRE_OK(ss_model_eval(m, c, &q2, 1, 0));
                CHECKF(!memcmp(one, lg + (size_t)t * V, V * sizeof(float)),
                       "demo-mamba1, %d threads: decode step %d differs from the prompt's row",
                       nt, t);
            }
            CHECKF(!memcmp(ss_state_cdata(s2), ss_state_cdata(s), nf * sizeof(float)),
                   "demo-mamba1, %d threads: state after decode steps differs", nt);
            free(one);
            ss_state_free(s2);
        }
        if (!ref) {
            ref = lg;
            ref_state = malloc(nf * sizeof(float));
            memcpy(ref_state, ss_state_cdata(s), nf * sizeof(float));
        } else {
            CHECKF(!memcmp(lg, ref, T * V * sizeof(float)) &&
                       !memcmp(ss_state_cdata(s), ref_state, nf * sizeof(float)),
                   "demo-mamba1: %d threads differ from 1 (logits by %.3g)", nt,
                   max_abs_diff(lg, ref, T * V));
            free(lg);
        }
        ss_state_free(s);
        ss_ctx_free(c);
        ss_model_close(m);
    }
    free(ref);
    free(ref_state);
}

/*
 * How decode steps split their products among the threads (pool.h pool_parts: equal blocks or
 * guided claims of any size, pool_ends: from one end or both; four far streams per call or one;
 * Mamba-1's fused step 2 in whole segments or column blocks, internal.h fused_units) changes no
 * bits: the demo model
 * decoding after a short prompt on 2 and 3 threads, with every split and both far settings,
 * gives the logits and the state of 1 thread bit for bit, in both layouts and with 8-bit
 * weights (whose one-row kernels differ from a prompt's, so the reference is decode on 1
 * thread rather than a prompt's rows).
 */
static void check_parts(void)
{
    /* the claims themselves (pool.h pool_guided_claim), from the bottom only and from both ends
     * (in a few orders): they tile [0, n) exactly, each starts and ends on a 16-row boundary or
     * n, each but the last to be taken (which takes a remainder under least / 2 along) is at
     * least the least claim and no larger than the rows left allow, and they are few */
    static const int sizes[] = {1, 15, 16, 80, 100, 768, 1000, 1536, 3072, 4096, 50277, 50280};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        for (int div = 1; div <= 64; div *= 2)
            for (int least = 16; least <= 64; least *= 2)
                for (int order = 0; order < 4; order++) {
                    /* order 0: all from the bottom; 1: alternating; 2: all from the top; 3: a
                     * fixed irregular pattern */
                    const int n = sizes[i];
                    int lo = 0, hi = n, claims = 0, bad = 0, covered = 0;
                    while (lo < hi && claims < 10000) {
                        const int top = order == 1 ? claims & 1
                                        : order == 2 ? 1
                                        : order == 3 ? (claims * 7 + 3) % 5 < 2
                                                     : 0;
                        int c0, c1;
                        pool_guided_claim(lo, hi, top, div, least, &c0, &c1);
                        const int last = c0 == lo && c1 == hi;
                        if (c0 < lo || c1 > hi || c0 >= c1 || (c0 != lo && c1 != hi) ||
                            (c0 % 16 && c0 != n) || (c1 % 16 && c1 != n) ||
                            (!last && c1 - c0 < least) ||
                            (!last && c1 - c0 > (hi - lo + div - 1) / div + 15 + 15 + least))
                            bad = 1;
                        if (last && c1 - c0 > least + least / 2 + (hi - lo + div - 1) / div + 15)
                            bad = 1;
                        covered += c1 - c0;
                        if (c0 == lo)
                            lo = c1;
                        else
                            hi = c0;
                        claims++;
                    }
                    const int most = div * 16 + n / least / 4 + 2;
                    CHECKF(!bad && lo == hi && covered == n && claims <= most,
                           "guided claims of %d rows (div %d, least %d, order %d): %d claims, "
                           "%d rows covered%s",
                           n, div, least, order, claims, covered, bad ? ", a bad claim" : "");
                }

    enum { P = 6, D = 10 };
    char demo[4096];
    snprintf(demo, sizeof demo, "%s/models/demo-mamba1", test_source_root());
    const int saved_parts = pool_parts, saved_ends = pool_ends, saved_far = kernels_far_rows;
    static const int parts[] = {0, 1, 2, 5};
    static const char *const cfg_name[] = {"fused", "rows", "q8 rows", "q8 fused"};
    for (int cfg = 0; cfg < 4; cfg++) {
        ss_model_params p = ss_model_default_params();
        p.fused_decode = cfg == 0 || cfg == 3 ? 1 : -1;
        if (cfg >= 2) p.weights = SS_WEIGHTS_Q8;
        float *ref = NULL, *ref_state = NULL, *lg = NULL;
        size_t V = 0, nf = 0;
        for (int nt = 1; nt <= 3; nt += sweep_small ? 2 : 1) {
            p.n_threads = nt;
            ss_model *m;
            ss_ctx *c;
            REQUIRE_OK(ss_model_open(&m, demo, &p));
            REQUIRE_OK(ss_ctx_new(m, &c));
            if (!ref) {
                V = (size_t)ss_model_get_info(m)->vocab_size;
                ref = malloc(D * V * sizeof(float));
                lg = malloc(D * V * sizeof(float));
            }
            for (int pi = 0; pi < (nt == 1 ? 1 : 4); pi += sweep_small ? 3 : 1)
                for (int far = 0; far < (nt == 1 ? 1 : 6); far += generic_set ? 2 : 1) {
                    pool_parts = parts[pi];
                    /* claims from both ends, or the bottom only; the fused step 2 in units */
                    pool_ends = far / 2 == 1 ? 1 : 2;
                    fused_units = far / 2 == 2 ? 1 : -1;
                    kernels_far_rows = far & 1 ? FAR_MIN_ROWS : INT_MAX;
                    ss_state *s;
                    REQUIRE_OK(ss_state_new(m, &s));
                    int32_t ids[P + D];
                    for (int i = 0; i < P + D; i++)
                        ids[i] = (int32_t)((i * 53 + 7) % (int)(V - 1)) + 1;
                    ss_seq q = {.state = s, .tokens = ids, .n_tokens = P};
                    REQUIRE_OK(ss_model_eval(m, c, &q, 1, 0));
                    for (int t = 0; t < D; t++) {
                        q = (ss_seq){.state = s, .tokens = ids + P + t, .n_tokens = 1,
                                     .logits = (nt == 1 ? ref : lg) + (size_t)t * V};
                        REQUIRE_OK(ss_model_eval(m, c, &q, 1, 0));
                    }
                    nf = ss_state_floats(s);
                    if (nt == 1) {
                        ref_state = malloc(nf * sizeof(float));
                        memcpy(ref_state, ss_state_cdata(s), nf * sizeof(float));
                    } else {
                        CHECKF(!memcmp(lg, ref, D * V * sizeof(float)) &&
                                   !memcmp(ss_state_cdata(s), ref_state, nf * sizeof(float)),
                               "demo-mamba1 (%s), %d threads, parts %d, far %d, ends %d, units "
                               "%d: other bits than 1 thread (logits by %.3g)",
                               cfg_name[cfg], nt, parts[pi], far & 1, pool_ends, fused_units,
                               max_abs_diff(lg, ref, D * V));
                    }
                    ss_state_free(s);
                }
            ss_ctx_free(c);
            ss_model_close(m);
        }
        free(ref);
        free(lg);
        free(ref_state);
    }
    pool_parts = saved_parts;
    pool_ends = saved_ends;
    fused_units = -1;
    kernels_far_rows = saved_far;
}

/*
 * The per-phase profile (statesoup-bench --profile): 16 decode steps of the demo model on 2
 * threads. Every phase a Mamba-1 decode step runs is counted once per layer (or per eval), the
 * phases add up to the evals' time, and that time lies within the wall time measured around the
 * calls (not a speed check: no bound on the figures themselves). Off, nothing is counted.
 */
static void check_profile(void)
{
    ss_model *m;
    ss_ctx *c;
    ss_state *s;
    open_demo_fused(2, 1, &m, &c, &s); /* fused_decode: the phases below are its */
    const ss_model_info *info = ss_model_get_info(m);
    const int V = info->vocab_size, L = info->n_layer;
    float *lg = malloc((size_t)V * sizeof(float));
    int32_t tok = 1;
    ss_seq q = {.state = s, .tokens = &tok, .n_tokens = 1, .logits = lg};
    REQUIRE_OK(ss_model_eval(m, c, &q, 1, 0)); /* warm: scratch reserved, off */
    ss_profile pr;
    ss_ctx_get_profile(c, &pr);
    CHECK(pr.evals == 0 && pr.eval_ns == 0 && pr.ns[SS_PHASE_NORM] == 0);

    enum { N = 16 };
    ss_ctx_set_profile(c, 1);
    int64_t wall = 0;
    for (int i = 0; i < N; i++) {
        tok = (int32_t)(i * 13 % (V - 1)) + 1;
        int64_t t0 = ss_mono_ns();
        REQUIRE_OK(ss_model_eval(m, c, &q, 1, 0));
        wall += ss_mono_ns() - t0;
    }
    ss_ctx_get_profile(c, &pr);
    uint64_t sum = 0;
    for (int ph = 0; ph < SS_PHASE_COUNT; ph++) sum += pr.ns[ph];
    CHECKF(pr.evals == N, "%llu evals counted", (unsigned long long)pr.evals);
    CHECKF(sum == pr.eval_ns, "phases sum to %llu ns, evals took %llu", (unsigned long long)sum,
           (unsigned long long)pr.eval_ns);
    CHECKF(pr.eval_ns <= (uint64_t)wall && pr.eval_ns >= (uint64_t)wall / 2,
           "evals %llu ns of %lld ns measured around them", (unsigned long long)pr.eval_ns,
           (long long)wall);
    const struct {
        ss_phase ph;
        uint64_t calls;
    } want[] = {{SS_PHASE_EMBED, N},       {SS_PHASE_NORM, (uint64_t)N * L},
                {SS_PHASE_IN_PROJ, (uint64_t)N * L}, {SS_PHASE_CONV, 0},
                {SS_PHASE_X_PROJ, 0},  {SS_PHASE_SCAN, (uint64_t)N * L},
                {SS_PHASE_OUT_PROJ, 0}, {SS_PHASE_MIXER, 0},
                {SS_PHASE_RESIDUAL, (uint64_t)N * L},   {SS_PHASE_FINAL_NORM, N},
                {SS_PHASE_LM_HEAD, N}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        CHECKF(pr.calls[want[i].ph] == want[i].calls, "phase %s: %llu calls, want %llu",
               ss_phase_name(want[i].ph), (unsigned long long)pr.calls[want[i].ph],
               (unsigned long long)want[i].calls);
        CHECKF(!want[i].calls || pr.ns[want[i].ph] > 0, "phase %s: no time",
               ss_phase_name(want[i].ph));
    }
    /* a decode token of the demo model under fused_decode: two parallel steps per
     * layer (in_proj with the conv and x_proj's partials; dt, scan and out_proj's partials,
     * summed up their tree), and lm_head */
    CHECKF(pr.pool_steps == (uint64_t)N * (2 * L + 1), "%llu parallel steps, want %llu",
           (unsigned long long)pr.pool_steps, (unsigned long long)N * (2 * L + 1));
    CHECK(pr.pool_wait_ns <= pr.eval_ns);
    /* the meetings by phase add up to the totals, in the phases that run parallel steps */
    uint64_t st = 0, wt = 0, spr = 0, lag = 0;
    for (int ph = 0; ph < SS_PHASE_COUNT; ph++) {
        st += pr.ph_steps[ph];
        wt += pr.ph_wait_ns[ph];
        spr += pr.ph_spread_ns[ph];
        lag += pr.ph_lag_ns[ph];
    }
    CHECKF(st == pr.pool_steps && wt == pr.pool_wait_ns && spr == pr.pool_spread_ns &&
               lag == pr.pool_lag_ns,
           "meetings by phase: %llu steps of %llu", (unsigned long long)st,
           (unsigned long long)pr.pool_steps);
    CHECKF(pr.ph_steps[SS_PHASE_IN_PROJ] == (uint64_t)N * L &&
               pr.ph_steps[SS_PHASE_SCAN] == (uint64_t)N * L &&
               pr.ph_steps[SS_PHASE_LM_HEAD] == N && pr.ph_steps[SS_PHASE_NORM] == 0,
           "meetings by phase: in_proj %llu, dt+scan %llu, lm_head %llu",
           (unsigned long long)pr.ph_steps[SS_PHASE_IN_PROJ],
           (unsigned long long)pr.ph_steps[SS_PHASE_SCAN],
           (unsigned long long)pr.ph_steps[SS_PHASE_LM_HEAD]);
    CHECK(pr.pool_woken <= pr.pool_steps && pr.pool_woken_lag_ns <= pr.pool_lag_ns);
    CHECK(strcmp(ss_phase_name(SS_PHASE_SCAN), "dt+scan") == 0);
    CHECK(strcmp(ss_phase_name(SS_PHASE_COUNT), "?") == 0);
    /* off again: zeroed, and nothing more is counted */
    ss_ctx_set_profile(c, 0);
    REQUIRE_OK(ss_model_eval(m, c, &q, 1, 0));
    ss_ctx_get_profile(c, &pr);
    CHECK(pr.evals == 0 && pr.eval_ns == 0 && pr.pool_steps == 0 && pr.calls[SS_PHASE_NORM] == 0);
    free(lg);
    ss_state_free(s);
    ss_ctx_free(c);
    ss_model_close(m);
}

/* Parallel steps (meetings of the threads) of one decode token of the demo model on nt threads
 * with ss_model_params.fused_decode `fused`. */
static uint64_t demo_token_steps(int nt, int fused)
{
    ss_model *m;
    ss_ctx *c;
    ss_state *s;
    open_demo_fused(nt, fused, &m, &c, &s);
    float *lg = malloc((size_t)ss_model_get_info(m)->vocab_size * sizeof(float));
    int32_t tok = 7;
    ss_seq q = {.state = s, .tokens = &tok, .n_tokens = 1, .logits = lg};
    REQUIRE_OK(ss_model_eval(m, c, &q, 1, 0));
    ss_ctx_set_profile(c, 1);
    REQUIRE_OK(ss_model_eval(m, c, &q, 1, 0));
    ss_profile pr;
    ss_ctx_get_profile(c, &pr);
    free(lg);
    ss_state_free(s);
    ss_ctx_free(c);
    ss_model_close(m);
    return pr.pool_steps;
}

/* fused_decode's default (0) is the rows on any thread count (four parallel steps per layer);
 * 1 the fused step (two per layer and the logits head's) on any too. */
static void check_fused_default(void)
{
    char demo[4096];
    snprintf(demo, sizeof demo, "%s/models/demo-mamba1", test_source_root());
    ss_model *m;
    REQUIRE_OK(ss_model_open(&m, demo, NULL));
    const uint64_t L = (uint64_t)ss_model_get_info(m)->n_layer;
    ss_model_close(m);
    const uint64_t rows2 = demo_token_steps(2, -1), fused2 = demo_token_steps(2, 1);
    CHECKF(fused2 == 2 * L + 1 && rows2 > fused2, "rows %llu, fused %llu parallel steps",
           (unsigned long long)rows2, (unsigned long long)fused2);
    CHECK(demo_token_steps(2, 0) == rows2);
    CHECK(demo_token_steps(16, 0) == rows2);
    CHECK(demo_token_steps(16, -1) == rows2);
    CHECK(demo_token_steps(16, 1) == fused2);
}

/* Bytes of a matrix W [N, K] under --weights q8: q8p panels of 64 outputs from 256 outputs,
 * else rows with an F32 scale per block of 32 inputs; transposed (q8k) under fused_decode. */
static uint64_t q8_mat_bytes(uint64_t N, uint64_t K, int transposed)
{
    if (transposed) return q8k_bytes((int)N, (int)K);
    if (N >= 256) return (uint64_t)q8p_panels((int)N) * q8p_panel_bytes((int)K);
    return N * K + N * (uint64_t)q8_blocks((int)K) * 4;
}

/*
 * token_weight_bytes (what statesoup-bench's bandwidth bound divides by): every weight a decode
 * token reads as the model holds it, summed here by hand from the Mamba-1 shapes: the vectors
 * (A, D, the conv's weights and bias, dt_proj's bias, the norms) in F32, the matrices (in_proj,
 * x_proj, dt_proj, out_proj, the head) in the weights' type and layout, one row of an untied
 * embedding.
 */
static void check_weight_bytes(void)
{
    char demo[PATH_MAX];
    snprintf(demo, sizeof demo, "%s/models/demo-mamba1", test_source_root());
    static const struct {
        const char *model;
        int q8, fused;
    } runs[] = {
        {"models/mamba1-tiny", 0, 0},
        {"models/mamba1-tiny-bf16", 0, 0},
        {"models/mamba1-tiny-bf16", 0, 1},
        {"models/mamba1-tiny", 1, 0},
        {"models/mamba1-untied", 0, 0},
        {NULL, 0, 0},
        {NULL, 1, 0},
        {NULL, 1, 1},
    };
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
        ss_model_params p = ss_model_default_params();
        p.n_threads = 1;
        p.fused_decode = runs[i].fused;
        if (runs[i].q8) p.weights = SS_WEIGHTS_Q8;
        const char *dir = runs[i].model ? fixture_path(runs[i].model) : demo;
        ss_model *m;
        REQUIRE_OK(ss_model_open(&m, dir, &p));
        const ss_model_info *in = ss_model_get_info(m);
        const int untied = runs[i].model && strstr(runs[i].model, "untied");
        /* R: dt_rank, ceil(d_model / 16) but in the untied fixture's config (5) */
        const uint64_t L = (uint64_t)in->n_layer, d = (uint64_t)in->d_model,
                       Di = (uint64_t)in->d_inner, N = (uint64_t)in->d_state,
                       K = (uint64_t)in->conv_kernel, V = (uint64_t)in->vocab_size,
                       R = untied ? 5 : (d + 15) / 16, X = R + 2 * N;
        /* per layer A, D, the conv's weights and bias, dt_proj's bias, the norm (the untied
         * fixture also in_proj's and out_proj's biases); the final norm */
        const uint64_t vec =
            L * (Di * N + Di + Di * K + Di + Di + d + (untied ? 2 * Di + d : 0)) + d;
        uint64_t want = 4 * vec;
        if (runs[i].q8) {
            /* x_proj and out_proj transposed only where fused_decode applies to 8-bit weights:
             * segments of d_inner / 16 channels starting on a block */
            const int t = runs[i].fused && mamba1_seg((int)Di) % Q8_BLOCK == 0;
            want += L * (q8_mat_bytes(2 * Di, d, 0) + q8_mat_bytes(X, Di, t) +
                         q8_mat_bytes(Di, R, 0) + q8_mat_bytes(d, Di, t)) +
                    q8_mat_bytes(V, d, 0);
        } else {
            const uint64_t esz = strcmp(in->dtype, "BF16") ? 4 : 2;
            want += esz * (L * (2 * Di * d + X * Di + Di * R + d * Di) + V * d + (untied ? d : 0));
        }
        CHECKF(in->token_weight_bytes == want, "%s%s%s: token_weight_bytes %llu, want %llu",
               runs[i].model ? runs[i].model : "demo-mamba1", runs[i].q8 ? " q8" : "",
               runs[i].fused ? " fused" : "", (unsigned long long)in->token_weight_bytes,
               (unsigned long long)want);
        ss_model_close(m);
    }
}

static void check_q8(void)
{
    ss_model_params q8 = ss_model_default_params(), q8f;
    q8.weights = SS_WEIGHTS_Q8;
    q8f = q8;
    q8f.q8_f32_act = 1;
    const char *dirs[] = {"models/mamba1-tiny", "models/mamba2-tiny", "models/moe-mamba-switch"};
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/ss_test_q8_XXXXXX");
    if (!mkdtemp(dir)) exit(1);
    /* each model in its own layouts (the tiny models' matrices are under the q8p layout's 256
     * outputs and inputs: rows), then every matrix in q8p panels (SS_Q8_LAYOUT=panels) */
    for (int i = 0; i < 6; i++) {
        if (i == 3) setenv("SS_Q8_LAYOUT", "panels", 1);
        /* lossless weights: q8 equals the exact path */
        write_snapped(dirs[i % 3], dir);
        ss_model *a, *b, *c;
        REQUIRE_OK(ss_model_open(&a, dir, NULL));
        REQUIRE_OK(ss_model_open(&b, dir, &q8f));
        REQUIRE_OK(ss_model_open(&c, dir, &q8));
        CHECK(strcmp(ss_model_get_info(a)->weights, "stored") == 0);
        CHECK(strcmp(ss_model_get_info(b)->weights, "q8") == 0);
        CHECK(strcmp(ss_model_get_info(a)->fingerprint, ss_model_get_info(b)->fingerprint) == 0);
        const size_t V = (size_t)ss_model_get_info(a)->vocab_size;
        float *la = malloc(43 * V * sizeof(float)), *lb = malloc(43 * V * sizeof(float));
        float *lc = malloc(43 * V * sizeof(float));
        q8_run(a, la);
        q8_run(b, lb);
        q8_run(c, lc);
        double amax, e = q8_max_diff(lb, la, 43 * V, &amax);
        CHECKF(e <= 1e-5 * (1 + amax), "%s snapped: q8 differs from exact by %g (|logit| <= %g)",
               dirs[i % 3], e, amax);
        /* 8-bit activations: the prompt (40 rows in one step) is computed as above; the three
         * decoded tokens carry the activations' rounding (a few parts in a thousand per
         * product: ~1 % of the logits' range here), no more */
        CHECKF(!memcmp(lc, lb, 40 * V * sizeof(float)), "%s: q8 prompt rows changed", dirs[i % 3]);
        e = q8_max_diff(lc + 40 * V, la + 40 * V, 3 * V, &amax);
        CHECKF(e > 0 && e <= 0.03 * (1 + amax),
               "%s snapped: q8 with 8-bit activations differs from exact by %g (|logit| <= %g)",
               dirs[i % 3], e, amax);
        ss_model_close(a);
        ss_model_close(b);
        ss_model_close(c);
        free(la);
        free(lb);
        free(lc);
    }
    unsetenv("SS_Q8_LAYOUT");
    /* the trained demo model: the quantisation error stays small against the logits' range */
    {
        ss_model *a, *b;
        char demo[4096];
        snprintf(demo, sizeof demo, "%s/models/demo-mamba1", test_source_root());
        REQUIRE_OK(ss_model_open(&a, demo, NULL));
        REQUIRE_OK(ss_model_open(&b, demo, &q8));
        const size_t V = (size_t)ss_model_get_info(a)->vocab_size;
        float *la = malloc(43 * V * sizeof(float)), *lb = malloc(43 * V * sizeof(float));
        q8_run(a, la);
        q8_run(b, lb);
        double amax, e = q8_max_diff(lb, la, 43 * V, &amax);
        int same = 0; /* positions whose top token q8 keeps */
        for (int t = 0; t < 43; t++) {
            int ia = 0, ib = 0;
            for (size_t v = 1; v < V; v++) {
                ia = la[t * V + v] > la[t * V + ia] ? (int)v : ia;
                ib = lb[t * V + v] > lb[t * V + ib] ? (int)v : ib;
            }
            same += ia == ib;
        }
        printf("demo-mamba1: q8 logits within %.2g of exact (|logit| <= %.3g), same top token at "
               "%d of 43 positions\n", e, amax, same);
        CHECKF(e <= 0.02 * amax && same >= 40, "demo-mamba1: q8 differs by %g (|logit| <= %g), "
               "%d of 43 top tokens kept", e, amax, same);
        ss_model_close(a);
        ss_model_close(b);
        free(la);
        free(lb);
    }
    /* 16-bit checkpoints quantise from their own values; a batch of 12 rows equals one
     * sequence at a time, for q8 and other weights */
    ss_model *m;
    REQUIRE_OK(ss_model_open(&m, fixture_path("models/mamba1-tiny-bf16"), &q8));
    CHECK(strcmp(ss_model_get_info(m)->dtype, "BF16") == 0);
    batch12_check(m, "bf16 as q8", 0.03);
    ss_model_close(m);
    REQUIRE_OK(ss_model_open(&m, fixture_path("models/mamba1-tiny-bf16"), &q8f));
    batch12_check(m, "bf16 as q8, F32 activations", 1e-5);
    ss_model_close(m);
    /* other weights: every stream's tokens are the same bits whatever the batch */
    static const char *const exact[] = {"models/mamba1-tiny-bf16", "models/mamba1-tiny",
                                        "models/mamba2-tiny", "models/moe-mamba-switch"};
    for (int i = 0; i < 4; i++) {
        REQUIRE_OK(ss_model_open(&m, fixture_path(exact[i]), NULL));
        batch12_check(m, exact[i], 0);
        ss_model_close(m);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* Same weights, same fingerprint (sharded); any change, another one. */
static void check_fingerprints(void)
{
    const char *dirs[] = {"models/mamba1-tiny", "models/mamba1-tiny-sharded",
                          "models/mamba1-tiny-bf16", "models/mamba1-untied"};
    char fp[4][33];
    for (int i = 0; i < 4; i++) {
        ss_model *m;
        REQUIRE_OK(ss_model_open(&m, fixture_path(dirs[i]), NULL));
        memcpy(fp[i], ss_model_get_info(m)->fingerprint, 33);
        ss_model_close(m);
        ss_model *m2;
        REQUIRE_OK(ss_model_open(&m2, fixture_path(dirs[i]), NULL));
        CHECK(strcmp(fp[i], ss_model_get_info(m2)->fingerprint) == 0);
        ss_model_close(m2);
    }
    CHECK(strcmp(fp[0], fp[1]) == 0);
    CHECK(strcmp(fp[0], fp[2]) != 0);
    CHECK(strcmp(fp[0], fp[3]) != 0);
}

/*
 * ss_model_params.fused_decode (Mamba-1 x_proj and out_proj transposed, two parallel steps per
 * layer at decode; SS_FUSED_DECODE=1): on the demo
 * model (16 segments of 32 channels) a prompt and the same tokens decoded one by one give the
 * same bits, on 1, 2 and 3 threads alike; the logits stay within float rounding of the row
 * layout's (fused_decode = -1); a decode token takes two parallel steps per layer and one for
 * the logits.
 */
static void check_fused(void)
{
    char demo[4096];
    snprintf(demo, sizeof demo, "%s/models/demo-mamba1", test_source_root());
    ss_model_params p = ss_model_default_params();
    p.n_threads = 2;
    p.fused_decode = -1; /* the rows: four steps per layer */
    ss_model *a;
    REQUIRE_OK(ss_model_open(&a, demo, &p));
    const size_t V = (size_t)ss_model_get_info(a)->vocab_size;
    const int L = ss_model_get_info(a)->n_layer;
    float *la = malloc(43 * V * sizeof(float)), *lf = malloc(43 * V * sizeof(float));
    float *lw = malloc(43 * V * sizeof(float));
    q8_run(a, la); /* (40 prompt tokens in one step, then 3 decoded: 43 rows of logits) */
    ss_model_close(a);
    p.fused_decode = 1;
    for (int nt = 1; nt <= 3; nt++) {
        p.n_threads = nt;
        ss_model *m;
        REQUIRE_OK(ss_model_open(&m, demo, &p));
        q8_run(m, lf);
        double amax, e = q8_max_diff(lf, la, 43 * V, &amax);
        CHECKF(e <= 1e-4 * (1 + amax), "fused decode, %d threads: logits differ from the "
               "row layout's by %g (|logit| <= %g)", nt, e, amax);
        /* the 43 tokens as one prompt: rows 40-42 as decoded one by one, bit for bit */
        const uint64_t steps = prompt_then_steps(m, lw);
        CHECKF(!memcmp(lw, lf, 43 * V * sizeof(float)),
               "fused decode, %d threads: decoded tokens differ from the same prompt's rows", nt);
        /* two parallel steps per layer, and the logits */
        if (nt > 1)
            CHECKF(steps == 4u * (2 * (uint64_t)L + 1), "fused decode: %llu parallel "
                   "steps for 4 tokens, want %d", (unsigned long long)steps, 4 * (2 * L + 1));
        ss_model_close(m);
    }
    free(la);
    free(lf);
    free(lw);
}

/*
 * The far layout of the transposed matrices (kernels.h far_t_width): loaded while far streams
 * are on, out_proj is kept in four column blocks (x_proj, whose N is not a multiple of 64 here,
 * stays plain) and gives the plain layout's bits: a 43-token prompt's rows, then decode tokens,
 * on 1 and 2 threads, F32 (the demo model: four far streams per pass at one row), BF16 and F16
 * (the tiny fixtures: blocks of 16 columns); and each layout read with far streams on and off.
 */
static void check_far_t(void)
{
    static const char *const dirs[] = {"../../models/demo-mamba1", "models/mamba1-tiny-bf16",
                                       "models/mamba1-tiny-f16"};
    (void)kernels_get(); /* (sets both from the environment first) */
    const int far0 = kernels_far_rows, far_t0 = kernels_far_t;
    kernels_far_t = -1; /* the layout as kernels_far_rows says (whatever SS_FAR_T says) */
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        for (int nt = 1; nt <= 2; nt++) {
            ss_model_params p = ss_model_default_params();
            p.n_threads = nt;
            p.fused_decode = 1;
            float *l[2][2] = {{NULL}};
            size_t V = 0;
            for (int blocked = 0; blocked < 2; blocked++) {
                kernels_far_rows = blocked ? FAR_MIN_ROWS : INT_MAX;
                ss_model *m;
                REQUIRE_OK(ss_model_open(&m, fixture_path(dirs[i]), &p));
                const layer *ly = &m->layers[0];
                const int d = m->cfg.d_model;
                CHECKF(ly->out_proj_t.bw == (blocked ? d / 4 : 0) && !ly->x_proj_t.bw,
                       "%s: out_proj kept with blocks of %d columns, x_proj of %d (want %d, 0)",
                       dirs[i], ly->out_proj_t.bw, ly->x_proj_t.bw, blocked ? d / 4 : 0);
                V = (size_t)ss_model_get_info(m)->vocab_size;
                for (int far = 0; far < 2; far++) { /* the kernels' far streams off, then on */
                    /* (the generic kernels do not read the far streams' switch) */
                    if (far && generic_set) continue;
                    kernels_far_rows = far ? FAR_MIN_ROWS : INT_MAX;
                    l[blocked][far] = malloc(86 * V * sizeof(float));
                    if (!l[blocked][far]) abort();
                    q8_run(m, l[blocked][far]); /* 40 prompt rows, 3 decoded */
                    prompt_then_steps(m, l[blocked][far] + 43 * V);
                }
                ss_model_close(m);
            }
            for (int k = 1; k < 4; k++)
                CHECKF(!l[k / 2][k % 2] ||
                           !memcmp(l[0][0], l[k / 2][k % 2], 86 * V * sizeof(float)),
                       "%s, %d threads: the %s layout read with far streams %s gives other bits "
                       "than the plain one", dirs[i], nt, k / 2 ? "far" : "plain",
                       k % 2 ? "on" : "off");
            for (int k = 0; k < 4; k++) free(l[k / 2][k % 2]);
        }
    kernels_far_rows = far0;
    kernels_far_t = far_t0;
}

/*
 * --weights q8 with fused_decode on the demo model (segments of 32 channels: the q8k layout, its
 * integer kernel at batch-1 decode): the logits stay within the quantisation's reach of the exact
 * model's (the same top token nearly everywhere) and close to q8's row layout (the same 8-bit
 * values, the blocks' sums in another order); prompts and decode tokens give the same bits on 1,
 * 2 and 3 threads (each segment's part and the tree are fixed), with 8-bit or F32 activations,
 * and a prompt's rows do not depend on its length (check_reuse: prompts split anywhere); a
 * decode token takes two parallel steps per layer and one for the logits.
 */
static void check_fused_q8(void)
{
    char demo[4096];
    snprintf(demo, sizeof demo, "%s/models/demo-mamba1", test_source_root());
    ss_model_params p = ss_model_default_params();
    p.n_threads = 2;
    ss_model *m;
    REQUIRE_OK(ss_model_open(&m, demo, &p));
    const size_t V = (size_t)ss_model_get_info(m)->vocab_size;
    const int L = ss_model_get_info(m)->n_layer;
    float *lx = malloc(43 * V * sizeof(float)), *lr = malloc(43 * V * sizeof(float));
    float *lf = malloc(43 * V * sizeof(float)), *l1 = malloc(43 * V * sizeof(float));
    float *lw = malloc(43 * V * sizeof(float));
    q8_run(m, lx); /* exact */
    ss_model_close(m);
    p.weights = SS_WEIGHTS_Q8;
    for (int act = 0; act < 2; act++) { /* 8-bit activations (the default), then F32 ones */
        p.q8_f32_act = act;
        p.fused_decode = -1; /* q8's rows */
        REQUIRE_OK(ss_model_open(&m, demo, &p));
        q8_run(m, lr);
        ss_model_close(m);
        p.fused_decode = 1;
        for (int nt = 1; nt <= 3; nt += sweep_small ? 2 : 1) {
            p.n_threads = nt;
            REQUIRE_OK(ss_model_open(&m, demo, &p));
            q8_run(m, lf);
            double amax, e = q8_max_diff(lf, lr, 43 * V, &amax);
            CHECKF(e <= 1e-4 * (1 + amax), "q8 fused (%s activations), %d threads: logits differ "
                   "from q8's rows by %g (|logit| <= %g)", act ? "F32" : "8-bit", nt, e, amax);
            e = q8_max_diff(lf, lx, 43 * V, &amax);
            int same = 0;
            for (int t = 0; t < 43; t++) {
                int ia = 0, ib = 0;
                for (size_t v = 1; v < V; v++) {
                    ia = lx[t * V + v] > lx[t * V + ia] ? (int)v : ia;
                    ib = lf[t * V + v] > lf[t * V + ib] ? (int)v : ib;
                }
                same += ia == ib;
            }
            CHECKF(e <= 0.02 * amax && same >= 40, "q8 fused (%s activations), %d threads: "
                   "differs from exact by %g (|logit| <= %g), %d of 43 top tokens kept",
                   act ? "F32" : "8-bit", nt, e, amax, same);
            if (nt == 1) memcpy(l1, lf, 43 * V * sizeof(float));
            CHECKF(!memcmp(lf, l1, 43 * V * sizeof(float)),
                   "q8 fused (%s activations): %d threads give other bits than one",
                   act ? "F32" : "8-bit", nt);
            /* the 43 tokens as one prompt: its first 40 rows are the 40-token prompt's (one row
             * at a time q8 sums in another order, whatever the layout: check_reuse) */
            const uint64_t steps = prompt_then_steps(m, lw);
            CHECKF(!memcmp(lw, lf, 40 * V * sizeof(float)),
                   "q8 fused (%s activations), %d threads: a prompt's rows depend on its length",
                   act ? "F32" : "8-bit", nt);
            if (nt > 1)
                CHECKF(steps == 4u * (2 * (uint64_t)L + 1), "q8 fused: %llu parallel "
                       "steps for 4 tokens, want %d", (unsigned long long)steps, 4 * (2 * L + 1));
            ss_model_close(m);
        }
        p.n_threads = 2;
    }
    free(lx);
    free(lr);
    free(lf);
    free(l1);
    free(lw);
}

int main(int argc, char **argv)
{
    ss_blas_ensure_kernels(argv);
    printf("OpenBLAS core: %s\n", ss_blas_core_name());
    const char *only = argc > 1 ? argv[1] : NULL;
    sweep_small = getenv("SS_KERNELS") != NULL;
    generic_set = kernels_get() == kernels_generic();
    static const char *const fixtures[][2] = {
        {"models/mamba1-tiny", "models/mamba1-tiny"},
        {"models/mamba1-tiny-sharded", "models/mamba1-tiny"},
        {"models/mamba1-tiny-bf16", "models/mamba1-tiny-bf16"},
        {"models/mamba1-tiny-f16", "models/mamba1-tiny-f16"},
        {"models/mamba1-untied", "models/mamba1-untied"},
        {"models/mamba2-tiny", "models/mamba2-tiny"},
        {"models/mamba2-groups", "models/mamba2-groups"},
        {"models/moe-mamba-switch", "models/moe-mamba-switch"},
        {"models/moe-mamba-finegrained", "models/moe-mamba-finegrained"},
        {"models/moe-mamba-blackmamba-like", "models/moe-mamba-blackmamba-like"},
        /* made with HF FalconMambaForCausalLM (tests/golden/falcon-mamba/make_golden.py) */
        {"../golden/falcon-mamba", "../golden/falcon-mamba"},
    };
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
        if (only && !strstr(fixtures[i][0], only)) continue;
        check_fixture(fixtures[i][0], fixtures[i][1], NULL);
        check_invariants(fixtures[i][0], fixtures[i][1]);
        check_reuse(fixtures[i][0], NULL);
    }
    if (!only || strstr("models/moe-mamba-mot", only)) check_mot();
    if (!only) {
        check_loader_errors();
        check_fingerprints();
        check_f32_in_place();
        check_bf16_exact();
        check_q8();
        check_weight_bytes();
        check_threads();
        check_parts();
        check_profile();
        check_fused_default();
        check_fused();
        check_far_t();
        check_fused_q8();
        /* both layouts: prompts split anywhere, decode steps of one to a few rows, the same
         * bits (the default keeps the rows; SS_FUSED_DECODE=1 fuses: so both, and q8 fused) */
        ss_model_params fd = ss_model_default_params();
        for (int f = -1; f <= 1; f += 2) {
            fd.fused_decode = f;
            check_reuse("models/mamba1-tiny", &fd);
            check_reuse("models/moe-mamba-switch", &fd);
        }
        fd.fused_decode = 1;
        /* the fused layout with the two-step layer for one row only (internal.h
         * fused_max_rows): steps of more rows take the prompt's four steps, the same bits */
        fused_max_rows = 1;
        check_reuse("../../models/demo-mamba1", &fd);
        fused_max_rows = 16;
        fd.weights = SS_WEIGHTS_Q8;
        check_reuse("models/mamba1-tiny", &fd); /* (segments of 16 channels: q8 keeps rows) */
        check_reuse("../../models/demo-mamba1", &fd); /* the q8k layout */
        fd.q8_f32_act = 1;
        check_reuse("../../models/demo-mamba1", &fd);
        /* 8-bit weights: prefill panels widen the weights (dense.c), short spans convert them
         * in registers: the same bits. (Not MoE: an expert given one token of a step runs the
         * one-row kernel, which sums in another order.) */
        ss_model_params q8 = ss_model_default_params();
        q8.weights = SS_WEIGHTS_Q8;
        check_reuse("models/mamba1-tiny", &q8);
        check_reuse("models/mamba2-tiny", &q8);
        /* every matrix in q8p panels: the F32-activation kernel (gemm_t_q8k) for any row count */
        setenv("SS_Q8_LAYOUT", "panels", 1);
        check_reuse("models/mamba1-tiny", &q8);
        check_reuse("models/mamba2-tiny", &q8);
        unsetenv("SS_Q8_LAYOUT");
    }
    return test_done("test_model");
}
