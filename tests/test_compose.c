/*
 * test_compose.c - the state's cumulative decay and decay-aware composition (model/compose.c)
 * against computed references:
 *  - the first layer's decay equals a double-precision recomputation of sum_t softplus(dt) from
 *    the checkpoint's weights (Mamba-1: embedding, RMSNorm, in_proj, conv, x_proj, dt_proj);
 *  - the first layer's SSM state of sequential(c1, c2), c2 read from h = 0 with c1's conv
 *    window, equals the one-pass state of c1 c2 to float rounding (Mamba-1 and Mamba-2);
 *  - symmetric of 2 equals the mean of the two sequential orders; symmetric of 3 the mean of the
 *    6 orders enumerated here; the result's decay is the sum of the sources'.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "ss_model.h"
#include "test_util.h"

static const int32_t c1[] = {5, 17, 42, 100, 7, 300, 12};
static const int32_t c2[] = {9, 250, 33, 71, 2};
static const int32_t c3[] = {200, 3, 88, 19};

static void run(ss_model *m, ss_ctx *c, ss_state *s, const int32_t *t, int n)
{
    ss_seq q = {.state = s, .tokens = t, .n_tokens = n};
    REQUIRE_OK(ss_model_eval(m, c, &q, 1, 0));
}

/* A state holding s's conv windows and nothing else, decay known and zero: the start of "c2 read
 * from h = 0 with c1's conv window". */
static void conv_only(ss_model *m, const ss_state *s, ss_state *out)
{
    ss_state_layout lay;
    ss_model_state_layout(m, &lay);
    REQUIRE_OK(ss_state_copy(out, s));
    float *d = ss_state_data(out);
    memset(d + lay.ssm_off, 0, lay.ssm_n * sizeof(float));
    memset(d + lay.hidden_off, 0, lay.hidden_n * sizeof(float));
    size_t nd = ss_model_get_info(m)->decay_floats;
    float *zero = calloc(nd, sizeof(float));
    REQUIRE_OK(ss_state_set_decay(out, zero, nd));
    free(zero);
}

static double wget(wmat w, size_t i)
{
    return ((const float *)w.p)[i];
}

/* Layer 0's sum_t softplus(dt) per channel for tokens t[n] from the zero state, in double. */
static void ref_decay_m1(const ss_model *m, const int32_t *t, int n, double *S)
{
    const model_config *cf = &m->cfg;
    const int d = cf->d_model, Di = cf->d_inner, K = cf->conv_kernel, R = cf->dt_rank,
              N = cf->d_state;
    const layer *ly = &m->layers[0];
    double *u = calloc((size_t)d, sizeof(double)), *xs = calloc((size_t)n * Di, sizeof(double));
    double *xc = calloc((size_t)Di, sizeof(double)), *dbc = calloc((size_t)(R + 2 * N), 8);
    for (int i = 0; i < Di; i++) S[i] = 0;
    for (int s = 0; s < n; s++) {
        double ss = 0;
        for (int k = 0; k < d; k++) {
            u[k] = wget(m->embed, (size_t)t[s] * d + k);
            ss += u[k] * u[k];
        }
        double inv = 1 / sqrt(ss / d + cf->norm_eps);
        for (int k = 0; k < d; k++) u[k] *= inv * ly->norm_w[k];
        for (int i = 0; i < Di; i++) { /* x half of in_proj */
            double acc = 0;
            for (int k = 0; k < d; k++) acc += wget(ly->in_proj_w, (size_t)i * d + k) * u[k];
            xs[(size_t)s * Di + i] = acc;
        }
        for (int i = 0; i < Di; i++) { /* causal conv over the last K inputs, then SiLU */
            double acc = ly->conv_b ? ly->conv_b[i] : 0;
            for (int k = 0; k < K; k++) {
                int src = s - (K - 1) + k;
                if (src >= 0) acc += ly->conv_w[(size_t)i * K + k] * xs[(size_t)src * Di + i];
            }
            xc[i] = acc / (1 + exp(-acc));
        }
        for (int r = 0; r < R; r++) {
            double acc = 0;
            for (int i = 0; i < Di; i++) /* (transposed, [Di][R + 2N], under SS_FUSED_DECODE=1) */
                acc += (ly->x_proj_w.p ? wget(ly->x_proj_w, (size_t)r * Di + i)
                                       : wget(ly->x_proj_t, (size_t)i * (R + 2 * N) + r)) *
                       xc[i];
            dbc[r] = acc;
        }
        for (int i = 0; i < Di; i++) {
            double acc = ly->dt_proj_b ? ly->dt_proj_b[i] : 0;
            for (int r = 0; r < R; r++) acc += wget(ly->dt_proj_w, (size_t)i * R + r) * dbc[r];
            S[i] += acc > 20 ? acc : log1p(exp(acc));
        }
    }
    free(u);
    free(xs);
    free(xc);
    free(dbc);
}

/* The first layer's SSM state of x vs y: max |x - y| relative to max |y|. */
static double first_layer_diff(ss_model *m, const float *x, const float *y)
{
    ss_state_layout lay;
    ss_model_state_layout(m, &lay);
    size_t n = lay.ssm_n / (size_t)ss_model_get_info(m)->n_state_layers;
    double mx = 0, dm = 0;
    for (size_t i = 0; i < n; i++) {
        mx = fmax(mx, fabs(y[lay.ssm_off + i]));
        dm = fmax(dm, fabs((double)x[lay.ssm_off + i] - y[lay.ssm_off + i]));
    }
    return dm / (mx > 0 ? mx : 1);
}

static void compose(ss_model *m, ss_compose_mode mode, ss_state **src, int n, float *out,
                    float *od)
{
    const float *st[3], *dc[3];
    for (int i = 0; i < n; i++) {
        st[i] = ss_state_cdata(src[i]);
        dc[i] = ss_state_cdecay(src[i]);
    }
    REQUIRE_OK(ss_state_compose(m, mode, st, dc, n, out, od));
}

static void check_model(const char *dir, int m1)
{
    ss_model *m;
    ss_ctx *c;
    REQUIRE_OK(ss_model_open(&m, fixture_path(dir), NULL));
    REQUIRE_OK(ss_ctx_new(m, &c));
    const ss_model_info *in = ss_model_get_info(m);
    const size_t F = in->state_floats, D = in->decay_floats;
    const int n1 = (int)(sizeof c1 / sizeof c1[0]), n2 = (int)(sizeof c2 / sizeof c2[0]);
    ss_state *s1, *s2, *s3, *one, *tmp;
    REQUIRE_OK(ss_state_new(m, &s1));
    REQUIRE_OK(ss_state_new(m, &s2));
    REQUIRE_OK(ss_state_new(m, &s3));
    REQUIRE_OK(ss_state_new(m, &one));
    REQUIRE_OK(ss_state_new(m, &tmp));
    CHECK(ss_state_has_decay(s1));
    run(m, c, s1, c1, n1);
    /* decay: layer 0 against the double recomputation; reading in pieces adds up */
    if (m1) {
        double *S = malloc((size_t)in->d_inner * sizeof(double)), worst = 0;
        ref_decay_m1(m, c1, n1, S);
        for (int i = 0; i < in->d_inner; i++)
            worst = fmax(worst, fabs(ss_state_cdecay(s1)[i] - S[i]) / fmax(1e-3, fabs(S[i])));
        CHECKF(worst < 1e-4, "%s: decay vs double reference: %g", dir, worst);
        free(S);
    }
    run(m, c, one, c1, 3);
    run(m, c, one, c1 + 3, n1 - 3);
    CHECKF(max_abs_diff(ss_state_cdecay(one), ss_state_cdecay(s1), D) <= 1e-5 * n1,
           "%s: decay of 3 + 4 tokens", dir);
    /* sequential(c1, c2 | h = 0 with c1's conv window) = one pass of c1 c2 at the first layer */
    conv_only(m, s1, s2);
    run(m, c, s2, c2, n2);
    ss_state_zero(one);
    run(m, c, one, c1, n1);
    run(m, c, one, c2, n2);
    float *out = malloc(F * sizeof(float)), *od = malloc(D * sizeof(float));
    float *ref = malloc(F * sizeof(float)), *rd = malloc(D * sizeof(float));
    ss_state *p2[2] = {s1, s2};
    compose(m, SS_COMPOSE_SEQUENTIAL, p2, 2, out, od);
    double e = first_layer_diff(m, out, ss_state_cdata(one));
    CHECKF(e < 1e-5, "%s: sequential first layer vs one pass: %g", dir, e);
    for (size_t i = 0; i < D; i++) /* decay: the sum, and the one pass's at the first layer */
        CHECKF(od[i] == (float)((double)ss_state_cdecay(s1)[i] + ss_state_cdecay(s2)[i]), "sum");
    size_t dl = D / (size_t)in->n_state_layers;
    CHECK(max_abs_diff(od, ss_state_cdecay(one), dl) <= 1e-5 * (n1 + n2));
    /* the deeper layers are an approximation: they must differ from a plain sum somewhere */
    CHECK(max_abs_diff(out, ss_state_cdata(s2), F) > 0);
    /* symmetric of 2 = the mean of the two orders (the whole state) */
    ss_state *q2[2] = {s2, s1};
    compose(m, SS_COMPOSE_SEQUENTIAL, q2, 2, ref, rd);
    for (size_t i = 0; i < F; i++) ref[i] = (float)(0.5 * ((double)out[i] + ref[i]));
    compose(m, SS_COMPOSE_SYMMETRIC, p2, 2, out, od);
    CHECKF(max_abs_diff(out, ref, F) < 1e-5, "%s: symmetric 2: %g", dir, max_abs_diff(out, ref, F));
    /* symmetric of 3 = the mean of the 6 sequential orders */
    run(m, c, s3, c3, (int)(sizeof c3 / sizeof c3[0]));
    ss_state *all[3] = {s1, s2, s3};
    static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                    {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    double *acc = calloc(F, sizeof(double));
    for (int p = 0; p < 6; p++) {
        ss_state *o[3] = {all[perms[p][0]], all[perms[p][1]], all[perms[p][2]]};
        compose(m, SS_COMPOSE_SEQUENTIAL, o, 3, ref, rd);
        for (size_t i = 0; i < F; i++) acc[i] += ref[i] / 6.0;
    }
    compose(m, SS_COMPOSE_SYMMETRIC, all, 3, out, od);
    double worst = 0;
    for (size_t i = 0; i < F; i++) worst = fmax(worst, fabs(out[i] - acc[i]));
    CHECKF(worst < 1e-5, "%s: symmetric 3 vs 6 orders: %g", dir, worst);
    CHECK(max_abs_diff(od, rd, D) < 1e-5); /* the same decay in every order */
    /* one source: itself; bad counts refused */
    compose(m, SS_COMPOSE_SYMMETRIC, all, 1, out, od);
    CHECK(max_abs_diff(out, ss_state_cdata(s1), F) == 0);
    const float *st[1] = {ss_state_cdata(s1)}, *dc[1] = {ss_state_cdecay(s1)};
    CHECK_ERR(ss_state_compose(m, SS_COMPOSE_SEQUENTIAL, st, dc, 0, out, od), SS_ERR_INVALID);
    /* decay bookkeeping: set forgets it, copy carries it, zero restores it */
    REQUIRE_OK(ss_state_copy(tmp, s1));
    CHECK(ss_state_has_decay(tmp) &&
          max_abs_diff(ss_state_cdecay(tmp), ss_state_cdecay(s1), D) == 0);
    REQUIRE_OK(ss_state_set(tmp, ss_state_cdata(s1), F));
    CHECK(!ss_state_has_decay(tmp));
    CHECK_ERR(ss_state_set_decay(tmp, od, D + 1), SS_ERR_MISMATCH);
    ss_state_zero(tmp);
    CHECK(ss_state_has_decay(tmp));
    free(acc);
    free(out);
    free(od);
    free(ref);
    free(rd);
    ss_state_free(s1);
    ss_state_free(s2);
    ss_state_free(s3);
    ss_state_free(one);
    ss_state_free(tmp);
    ss_ctx_free(c);
    ss_model_close(m);
}

int main(int argc, char **argv)
{
    ss_blas_ensure_kernels(argv);
    check_model("models/mamba1-tiny", 1);
    check_model("models/mamba2-tiny", 0);
    check_model("models/moe-mamba-switch", 0);
    return test_done("test_compose");
}
