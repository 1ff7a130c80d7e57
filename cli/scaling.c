/*
 * scaling.c - the fine-grained MoE scaling law (arXiv 2402.07871) and its compute-optimal
 * solver; see ss_scaling.h for the formulas and docs/planner.md for the reasoning.
 *
 * Why golden-section search and not Brent (the paper's choice): along the budget constraint the
 * loss is a convex function of log d_model (a decreasing and an increasing log-convex term), so
 * the simplest bracketing search converges to the one minimum, and does so to the last bits a
 * double can tell apart in about 70 steps; there is no derivative to get wrong.
 */
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_scaling.h"
#include "ss_util.h"

/* ss_fail(err, "<prefix>: <the current message>"): the message is copied first, since
 * ss_fail() writes over the buffer ss_errmsg() points into. */
static ss_err prefix_fail(ss_err err, const char *prefix)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", ss_errmsg());
    return ss_fail(err, "%s: %s", prefix, msg);
}

/* Brackets of the 1-D searches, in natural log units: d_model in [1e-2, 1e8], dense N in
 * [1, 1e28]. The optima for budgets in [1e10, 1e35] lie well inside both (tests check 1e10 and
 * 1e35 against the closed-form optimality condition). */
#define LOG_D_LO (-4.605170185988091)
#define LOG_D_HI 18.420680743952367
#define LOG_N_LO 0.0
#define LOG_N_HI 64.47238260383328
/* Stop once the bracket is this narrow (in log units): far below what the loss can tell apart. */
#define LOG_TOL 1e-13

ss_err ss_scaling_law_default(int expansion, ss_scaling_law *out)
{
    /* Table 1 (E = 64) and Appendix D, Table 8 (E = 16) of arXiv 2402.07871; dense: Table 1;
     * c_f, c_r: Appendix E. */
    ss_scaling_law l = {
        .dense_a = 16.3,
        .dense_alpha = 0.126,
        .dense_b = 26.7,
        .dense_beta = 0.127,
        .dense_c = 0.47,
        .c_f = 6,
        .c_r = 14,
    };
    if (expansion == 64) {
        l.expansion = 64;
        l.a = 18.1, l.alpha = 0.115, l.b = 30.8, l.beta = 0.147, l.g = 2.1, l.gamma = 0.58;
        l.c = 0.47;
    } else if (expansion == 16) {
        l.expansion = 16;
        l.a = 19.64, l.alpha = 0.124, l.b = 57.07, l.beta = 0.169, l.g = 1.18, l.gamma = 0.986;
        l.c = 0.472;
    } else {
        return ss_fail(SS_ERR_INVALID,
                       "expansion %d: the paper fits the law for expansion 64 and 16 only "
                       "(--coeffs FILE takes a fit of your own)",
                       expansion);
    }
    *out = l;
    return SS_OK;
}

/* Every number of a coefficients file: its section, its key, where it goes, its constraints. */
enum { TOP, MOE, DENSE, N_SECTIONS };
static const char *const section_name[N_SECTIONS] = {"", "moe.", "dense."};
static const struct coeff_key {
    int section;
    const char *key;
    size_t off;   /* offsetof(ss_scaling_law, ...) */
    int required; /* else the default (Table 1's dense fit, c_f 6, c_r 14) stays */
    int positive; /* > 0, else >= 0 */
} coeff_keys[] = {
    {TOP, "expansion", offsetof(ss_scaling_law, expansion), 1, 1},
    {MOE, "a", offsetof(ss_scaling_law, a), 1, 1},
    {MOE, "alpha", offsetof(ss_scaling_law, alpha), 1, 1},
    {MOE, "b", offsetof(ss_scaling_law, b), 1, 1},
    {MOE, "beta", offsetof(ss_scaling_law, beta), 1, 1},
    {MOE, "g", offsetof(ss_scaling_law, g), 1, 0},
    {MOE, "gamma", offsetof(ss_scaling_law, gamma), 1, 0},
    {MOE, "c", offsetof(ss_scaling_law, c), 1, 0},
    {DENSE, "a", offsetof(ss_scaling_law, dense_a), 0, 1},
    {DENSE, "alpha", offsetof(ss_scaling_law, dense_alpha), 0, 1},
    {DENSE, "b", offsetof(ss_scaling_law, dense_b), 0, 1},
    {DENSE, "beta", offsetof(ss_scaling_law, dense_beta), 0, 1},
    {DENSE, "c", offsetof(ss_scaling_law, dense_c), 0, 0},
    {TOP, "c_f", offsetof(ss_scaling_law, c_f), 0, 1},
    {TOP, "c_r", offsetof(ss_scaling_law, c_r), 0, 0},
};
#define N_COEFF_KEYS (sizeof coeff_keys / sizeof coeff_keys[0])

/* SS_ERR_FORMAT naming the first key of section sec (object obj) that the file may not hold. */
static ss_err known_keys(const json_t *obj, int sec)
{
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        int ok = sec == TOP && (!strcmp(k, "moe") || !strcmp(k, "dense"));
        for (size_t i = 0; i < N_COEFF_KEYS && !ok; i++)
            ok = coeff_keys[i].section == sec && !strcmp(coeff_keys[i].key, k);
        if (!ok) return ss_fail(SS_ERR_FORMAT, "unknown key %s%s", section_name[sec], k);
    }
    return SS_OK;
}

/* Take coefficient i from its section's object (NULL: the section is absent) into *l. */
static ss_err take_coeff(const json_t *obj, size_t i, ss_scaling_law *l)
{
    const struct coeff_key *ck = &coeff_keys[i];
    const json_t *v = json_object_get(obj, ck->key);
    const char *sec = section_name[ck->section];
    if (!v) {
        return ck->required ? ss_fail(SS_ERR_FORMAT, "%s%s is missing", sec, ck->key) : SS_OK;
    }
    if (!json_is_number(v)) return ss_fail(SS_ERR_FORMAT, "%s%s is not a number", sec, ck->key);
    double x = json_number_value(v);
    if (!isfinite(x) || (ck->positive ? !(x > 0) : !(x >= 0))) {
        return ss_fail(SS_ERR_INVALID, "%s%s = %g: must be a finite number %s 0", sec, ck->key, x,
                       ck->positive ? ">" : ">=");
    }
    *(double *)((char *)l + ck->off) = x;
    return SS_OK;
}

ss_err ss_scaling_law_parse(const char *text, size_t len, const char *what, ss_scaling_law *out)
{
    json_t *root = NULL;
    ss_err err = ss_json_parse_relaxed(text, len, what, &root);
    if (err) return err;
    ss_scaling_law l;
    ss_scaling_law_default(64, &l); /* dense, c_f, c_r defaults; the MoE part is required */
    const json_t *obj[N_SECTIONS] = {root, json_object_get(root, "moe"),
                                     json_object_get(root, "dense")};
    if (!json_is_object(root)) {
        err = ss_fail(SS_ERR_FORMAT, "not a JSON object");
    } else if (!json_is_object(obj[MOE])) {
        err = ss_fail(SS_ERR_FORMAT, "\"moe\" must be an object of a, alpha, b, beta, g, gamma, c");
    } else if (obj[DENSE] && !json_is_object(obj[DENSE])) {
        err = ss_fail(SS_ERR_FORMAT, "\"dense\" must be an object of a, alpha, b, beta, c");
    }
    for (int sec = 0; sec < N_SECTIONS && !err; sec++)
        if (obj[sec]) err = known_keys(obj[sec], sec);
    for (size_t i = 0; i < N_COEFF_KEYS && !err; i++)
        err = take_coeff(obj[coeff_keys[i].section], i, &l);
    json_decref(root);
    if (err) return prefix_fail(err, what);
    *out = l;
    return SS_OK;
}

ss_err ss_scaling_law_load(const char *path, ss_scaling_law *out)
{
    char *text = NULL;
    size_t len = 0;
    ss_err err = ss_read_file(path, 1 << 20, &text, &len);
    if (!err) err = ss_scaling_law_parse(text, len, path, out);
    free(text);
    return err;
}

double ss_scaling_loss(const ss_scaling_law *l, double n, double d, double g)
{
    return l->c + (l->g / pow(g, l->gamma) + l->a) / pow(n, l->alpha) + l->b / pow(d, l->beta);
}

double ss_scaling_dense_loss(const ss_scaling_law *l, double n, double d)
{
    return l->dense_c + l->dense_a / pow(n, l->dense_alpha) + l->dense_b / pow(d, l->dense_beta);
}

void ss_scaling_at(const ss_scaling_law *l, double flops, double d_model, int g,
                   ss_scaling_moe *out)
{
    double n_blocks = d_model / 64.0;
    double e = l->expansion;
    /* Eq. 10: F = (12 d^2 c_f + d E G c_r) n_blocks D */
    double per_token = (12.0 * d_model * d_model * l->c_f + d_model * e * g * l->c_r) * n_blocks;
    out->granularity = g;
    out->expansion = e;
    out->experts = e * g;
    out->d_model = d_model;
    out->n_blocks = n_blocks;
    out->active_params = 12.0 * d_model * d_model * n_blocks;
    out->total_params = d_model * d_model * (8.0 * e + 4.0) * n_blocks;
    out->tokens = flops / per_token;
    out->flops = flops;
    out->loss = ss_scaling_loss(l, out->total_params, out->tokens, g);
}

/* f's minimum on [lo, hi] by golden-section search; f convex (so unimodal) on the bracket. */
static double golden_min(double (*f)(const void *, double), const void *ctx, double lo, double hi)
{
    const double r = 0.6180339887498949; /* (sqrt(5) - 1) / 2 */
    double x1 = hi - r * (hi - lo), x2 = lo + r * (hi - lo);
    double f1 = f(ctx, x1), f2 = f(ctx, x2);
    for (int i = 0; i < 300 && hi - lo > LOG_TOL; i++) {
        if (f1 <= f2) {
            hi = x2, x2 = x1, f2 = f1;
            x1 = hi - r * (hi - lo), f1 = f(ctx, x1);
        } else {
            lo = x1, x1 = x2, f1 = f2;
            x2 = lo + r * (hi - lo), f2 = f(ctx, x2);
        }
    }
    return f1 <= f2 ? x1 : x2;
}

typedef struct moe_ctx {
    const ss_scaling_law *l;
    double flops;
    int g;
} moe_ctx;

static double moe_loss_at_log_d(const void *p, double log_d)
{
    const moe_ctx *c = p;
    ss_scaling_moe m;
    ss_scaling_at(c->l, c->flops, exp(log_d), c->g, &m);
    return m.loss;
}

void ss_scaling_optimum_g(const ss_scaling_law *l, double flops, int g, ss_scaling_moe *out)
{
    moe_ctx c = {l, flops, g};
    double log_d = golden_min(moe_loss_at_log_d, &c, LOG_D_LO, LOG_D_HI);
    ss_scaling_at(l, flops, exp(log_d), g, out);
}

void ss_scaling_optimum(const ss_scaling_law *l, double flops, ss_scaling_moe *out)
{
    ss_scaling_optimum_g(l, flops, 1, out);
    for (int g = 2; g <= SS_SCALING_G_MAX; g *= 2) {
        ss_scaling_moe m;
        ss_scaling_optimum_g(l, flops, g, &m);
        if (m.loss < out->loss) *out = m;
    }
}

void ss_scaling_buildable(const ss_scaling_law *l, const ss_scaling_moe *opt, ss_scaling_moe *out)
{
    double lo = floor(opt->n_blocks), hi = lo + 1;
    if (lo < 1) lo = 1;
    if (hi < 1) hi = 1;
    ss_scaling_moe a, b;
    ss_scaling_at(l, opt->flops, 64.0 * lo, opt->granularity, &a);
    ss_scaling_at(l, opt->flops, 64.0 * hi, opt->granularity, &b);
    *out = b.loss < a.loss ? b : a;
}

typedef struct dense_ctx {
    const ss_scaling_law *l;
    double flops;
} dense_ctx;

static double dense_loss_at_log_n(const void *p, double log_n)
{
    const dense_ctx *c = p;
    double n = exp(log_n);
    return ss_scaling_dense_loss(c->l, n, c->flops / (c->l->c_f * n));
}

void ss_scaling_dense_optimum(const ss_scaling_law *l, double flops, ss_scaling_dense *out)
{
    dense_ctx c = {l, flops};
    double n = exp(golden_min(dense_loss_at_log_n, &c, LOG_N_LO, LOG_N_HI));
    out->params = n;
    out->tokens = flops / (l->c_f * n);
    out->flops = flops;
    out->loss = ss_scaling_dense_loss(l, n, out->tokens);
}

static double dense_opt_loss(const ss_scaling_law *l, double log_f)
{
    ss_scaling_dense d;
    ss_scaling_dense_optimum(l, exp(log_f), &d);
    return d.loss;
}

double ss_scaling_dense_flops_for_loss(const ss_scaling_law *l, double loss)
{
    if (!(loss > l->dense_c)) return INFINITY;
    /* Bracket: start at 1e10 FLOPs and widen by factors of 1e5 (the dense optimum's loss falls
     * strictly with the budget); past 1e300 FLOPs count as never. */
    double lo = log(1e10), hi = lo;
    while (dense_opt_loss(l, lo) <= loss && lo > log(1e-300)) lo -= log(1e5);
    while (dense_opt_loss(l, hi) > loss) {
        hi += log(1e5);
        if (hi > log(1e300)) return INFINITY;
    }
    for (int i = 0; i < 200 && hi - lo > 1e-12; i++) {
        double mid = 0.5 * (lo + hi);
        if (dense_opt_loss(l, mid) > loss)
            lo = mid;
        else
            hi = mid;
    }
    return exp(0.5 * (lo + hi));
}

ss_err ss_scaling_check_flops(double flops)
{
    if (!isfinite(flops) || !(flops > 0)) {
        return ss_fail(SS_ERR_INVALID, "budget %g: must be a finite number of FLOPs > 0", flops);
    }
    if (flops < SS_SCALING_FLOPS_MIN || flops > SS_SCALING_FLOPS_MAX) {
        return ss_fail(SS_ERR_INVALID, "budget %g FLOPs: the planner solves %g to %g", flops,
                       SS_SCALING_FLOPS_MIN, SS_SCALING_FLOPS_MAX);
    }
    return SS_OK;
}

ss_err ss_scaling_plan_budget(const ss_scaling_law *l, double flops, ss_scaling_plan *out)
{
    ss_err err = ss_scaling_check_flops(flops);
    if (err) return err;
    ss_scaling_optimum(l, flops, &out->moe);
    ss_scaling_buildable(l, &out->moe, &out->buildable);
    ss_scaling_dense_optimum(l, flops, &out->dense);
    out->compute_ratio = ss_scaling_dense_flops_for_loss(l, out->moe.loss) / flops;
    return SS_OK;
}

double ss_scaling_g_threshold(const ss_scaling_law *l, int g, double lo, double hi)
{
    ss_scaling_moe m;
    ss_scaling_optimum(l, hi, &m);
    if (m.granularity < g) return hi;
    double a = log(lo), b = log(hi);
    for (int i = 0; i < 100 && b - a > 1e-10; i++) {
        double mid = 0.5 * (a + b);
        ss_scaling_optimum(l, exp(mid), &m);
        if (m.granularity >= g)
            b = mid;
        else
            a = mid;
    }
    return exp(b);
}

/* ---- checkpoints ----------------------------------------------------------------------------- */

/* An integer key of a config object, or dflt when absent or not an integer. */
static long long cfg_int(const json_t *o, const char *key, long long dflt)
{
    const json_t *v = json_object_get(o, key);
    if (json_is_integer(v)) return json_integer_value(v);
    if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)))
        return (long long)json_real_value(v);
    return dflt;
}

static int cfg_bool(const json_t *o, const char *key, int dflt)
{
    const json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static const char *cfg_str(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* A moe_mamba config with token-choice routing: its "moe" object and "layer_types" array in *moe
 * and *lt (borrowed from c). SS_ERR_UNSUPPORTED for another model type or routing. */
static ss_err check_moe_config(const json_t *c, const json_t **moe, const json_t **lt)
{
    const char *mt = cfg_str(c, "model_type");
    const json_t *archs = json_object_get(c, "architectures");
    const char *arch = json_string_value(json_array_get(archs, 0)); /* NULL when absent */
    /* model_type decides when present, as in the loader */
    int moe_mamba = mt ? !strcmp(mt, "moe_mamba") : arch && !strcmp(arch, "MoEMambaForCausalLM");
    if (!moe_mamba) {
        return ss_fail(SS_ERR_UNSUPPORTED,
                       "model_type %s is not a mixture of experts: the scaling law describes "
                       "MoE models (moe_mamba with token-choice routing)",
                       mt     ? mt
                       : arch ? arch
                              : "(none)");
    }
    *moe = json_object_get(c, "moe");
    *lt = json_object_get(c, "layer_types");
    if (!json_is_object(*moe) || !json_is_array(*lt)) {
        return ss_fail(SS_ERR_FORMAT, "moe_mamba config without a moe object or layer_types");
    }
    const char *routing = cfg_str(*moe, "routing");
    if (routing && strcmp(routing, "token_choice") != 0) {
        return ss_fail(
            SS_ERR_UNSUPPORTED,
            "moe.routing %s: the scaling law describes token-choice experts (top-k = G), "
            "not %s",
            routing, routing);
    }
    return SS_OK;
}

/* The sizes of a moe_mamba config that the parameter counts need. */
typedef struct moe_dims {
    long long d, vocab, n_state, k_conv; /* hidden_size, vocab_size, state_size, conv_kernel */
    long long di, dt_rank;               /* intermediate_size, time_step_rank */
    long long n_exp, de, k;              /* experts, expert_intermediate_size, top-k */
} moe_dims;

/* Read and check the sizes (c: the config, moe: its "moe" object). SS_ERR_FORMAT when one is
 * not a positive integer or top-k exceeds the experts. */
static ss_err read_moe_dims(const json_t *c, const json_t *moe, moe_dims *m)
{
    m->d = cfg_int(c, "hidden_size", 0);
    m->vocab = cfg_int(c, "vocab_size", 0);
    m->n_state = cfg_int(c, "state_size", 0);
    long long expand = cfg_int(c, "expand", 2);
    m->k_conv = cfg_int(c, "conv_kernel", 4);
    m->di = cfg_int(c, "intermediate_size", expand * m->d);
    const json_t *tsr = json_object_get(c, "time_step_rank");
    m->dt_rank = json_is_string(tsr) ? (m->d + 15) / 16
                                     : cfg_int(c, "time_step_rank", (m->d + 15) / 16);
    m->n_exp = cfg_int(moe, "num_experts", 0);
    m->de = cfg_int(moe, "expert_intermediate_size", 0);
    m->k = cfg_int(moe, "num_experts_per_tok", 1);
    if (m->d <= 0 || m->d > (1 << 24) || m->vocab <= 0 || m->n_state <= 0 || m->di <= 0 ||
        m->dt_rank <= 0 || m->n_exp <= 0 || m->de <= 0 || m->k < 1 || m->k > m->n_exp ||
        m->k_conv < 1) {
        return ss_fail(SS_ERR_FORMAT, "hidden_size, vocab_size, state_size, moe.num_experts, "
                                      "moe.expert_intermediate_size and moe.num_experts_per_tok "
                                      "must be positive integers (top-k <= experts)");
    }
    return SS_OK;
}

/* Count the "moe" and "mamba" entries of layer_types; SS_ERR_FORMAT for any other entry,
 * SS_ERR_UNSUPPORTED when there is no MoE layer. */
static ss_err count_layer_types(const json_t *lt, int *n_moe, int *n_mamba)
{
    size_t i;
    const json_t *t;
    *n_moe = *n_mamba = 0;
    json_array_foreach(lt, i, t)
    {
        const char *s = json_string_value(t);
        if (s && !strcmp(s, "moe"))
            (*n_moe)++;
        else if (s && !strcmp(s, "mamba"))
            (*n_mamba)++;
        else
            return ss_fail(SS_ERR_FORMAT, "layer_types[%zu] is neither \"mamba\" nor \"moe\"", i);
    }
    if (*n_moe == 0) return ss_fail(SS_ERR_UNSUPPORTED, "no MoE layer in layer_types");
    return SS_OK;
}

/* The counts, from a parsed config; the defaults are the model loader's (model/checkpoint.c). */
static ss_err ckpt_from_config(const json_t *c, ss_scaling_ckpt *out)
{
    const json_t *moe = NULL, *lt = NULL;
    moe_dims m;
    int n_moe = 0, n_mamba = 0;
    ss_err err;
    if ((err = check_moe_config(c, &moe, &lt)) || (err = read_moe_dims(c, moe, &m)) ||
        (err = count_layer_types(lt, &n_moe, &n_mamba)))
        return err;
    long long d = m.d, di = m.di, n_state = m.n_state, dt_rank = m.dt_rank, n_exp = m.n_exp;
    const char *nt = cfg_str(c, "norm_type");
    double norm = nt && !strcmp(nt, "layer") ? 2.0 * d : (double)d; /* weight (+ bias) */
    int bias = cfg_bool(c, "use_bias", 0), conv_bias = cfg_bool(c, "use_conv_bias", 1);
    /* One Mamba-1 layer: norm, in_proj [2 di, d], conv1d [di, 1, k] (+ bias), x_proj
     * [dt_rank + 2 N, di], dt_proj [di, dt_rank] + bias, A_log [di, N], D [di], out_proj [d, di].
     */
    double mamba = norm + 2.0 * di * d + (bias ? 2.0 * di : 0) + (double)di * m.k_conv +
                   (conv_bias ? di : 0) + (double)di * (dt_rank + 2 * n_state) +
                   (double)dt_rank * di + di + (double)di * n_state + di + (double)di * d +
                   (bias ? d : 0);
    /* One expert: up [de or 2 de, d], down [d, de]. */
    double expert = (double)d * m.de * (cfg_bool(moe, "expert_gated", 0) ? 3 : 2);
    double tail = norm; /* the final norm */
    memset(out, 0, sizeof *out);
    out->d_model = (int)d;
    out->n_layers = n_moe + n_mamba;
    out->n_mamba_layers = n_mamba;
    out->n_moe_layers = n_moe;
    out->experts = (int)n_exp;
    out->top_k = (int)m.k;
    long long gr = cfg_int(moe, "granularity", 0);
    out->granularity = gr > 0 ? (int)gr : (int)m.k;
    const json_t *er = json_object_get(moe, "expansion_rate");
    out->expansion = json_is_number(er) && json_number_value(er) > 0
                         ? json_number_value(er)
                         : (double)n_exp / out->granularity;
    out->total_params = n_mamba * mamba + n_moe * (norm + n_exp * expert) + tail;
    out->active_params = n_mamba * mamba + n_moe * (norm + m.k * expert) + tail;
    out->router_params =
        (double)n_moe * n_exp * ((double)d + (cfg_bool(moe, "router_bias", 0) ? 1 : 0));
    out->embedding_params = (double)m.vocab * d * (cfg_bool(c, "tie_word_embeddings", 1) ? 1 : 2);
    return SS_OK;
}

ss_err ss_scaling_read_checkpoint(const char *dir, ss_scaling_ckpt *out)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/config.json", dir) >= sizeof path) {
        return ss_fail(SS_ERR_INVALID, "%s: path too long", dir);
    }
    char *text = NULL;
    size_t len = 0;
    json_t *root = NULL;
    ss_scaling_ckpt c;
    ss_err err = ss_read_file(path, 16 << 20, &text, &len);
    if (err) goto out;
    if ((err = ss_json_parse_relaxed(text, len, path, &root))) goto out;
    if (!json_is_object(root)) {
        err = ss_fail(SS_ERR_FORMAT, "%s: not a JSON object", path);
        goto out;
    }
    if ((err = ckpt_from_config(root, &c))) {
        err = prefix_fail(err, path);
        goto out;
    }
    *out = c;
out:
    json_decref(root);
    free(text);
    return err;
}

double ss_scaling_ckpt_flops_per_token(const ss_scaling_law *l, const ss_scaling_ckpt *c)
{
    return l->c_f * c->active_params + l->c_r * (double)c->d_model * c->experts * c->n_moe_layers;
}

void ss_scaling_ckpt_optimum(const ss_scaling_law *l, const ss_scaling_ckpt *c, ss_scaling_moe *out)
{
    double per_token = ss_scaling_ckpt_flops_per_token(l, c);
    double r = l->c_r * (double)c->d_model * c->experts * c->n_moe_layers / per_token;
    double n = c->total_params, g = c->granularity;
    double a_g = l->g / pow(g, l->gamma) + l->a;
    /* 3 alpha a_G N^-alpha = beta b D^-beta (3 - r), solved for D */
    double d_pow = l->beta * l->b * (3.0 - r) * pow(n, l->alpha) / (3.0 * l->alpha * a_g);
    out->granularity = c->granularity;
    out->expansion = c->expansion;
    out->experts = c->experts;
    out->d_model = c->d_model;
    out->n_blocks = c->n_moe_layers;
    out->active_params = c->active_params;
    out->total_params = n;
    out->tokens = pow(d_pow, 1.0 / l->beta);
    out->flops = out->tokens * per_token;
    out->loss = ss_scaling_loss(l, n, out->tokens, g);
}

int ss_scaling_nearest_expansion(double e)
{
    return fabs(log(e / 16.0)) < fabs(log(e / 64.0)) ? 16 : 64;
}
