/*
 * plan.c - `statesoup plan`: the fine-grained MoE scaling law (Krajewski, Ludziejewski et al.,
 * arXiv 2402.07871) as a planner. For a training budget: the compute-optimal granularity,
 * expansion, width, depth, parameters and tokens, the nearest buildable configuration and the
 * compute-optimal dense model beside it; for a range of budgets, a table and an SVG chart; for a
 * MoE-Mamba checkpoint, the token count and budget that make it compute-optimal.
 *
 * All the arithmetic is in scaling.c (shared with tests/test_plan.c); this file parses options
 * and prints. Runs offline: no daemon, no weights loaded.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ss_scaling.h"

static const char plan_help[] =
    "usage: statesoup plan --flops F [options]\n"
    "       statesoup plan --sweep LO:HI [--svg FILE] [options]\n"
    "       statesoup plan --model DIR [options]\n"
    "\n"
    "The compute-optimal fine-grained mixture of experts under the scaling law of Krajewski,\n"
    "Ludziejewski et al. (arXiv 2402.07871): L(N, D, G) = c + (g/G^gamma + a)/N^alpha + b/D^beta.\n"
    "The law was fitted on Transformer MoE trained on C4: for Mamba layers it is a planning aid,\n"
    "not a promise (docs/planner.md).\n"
    "\n"
    "  --flops F            a training budget in FLOPs (1e10 .. 1e35): the optimal granularity,\n"
    "                       width, depth, parameters, tokens and loss, the nearest buildable\n"
    "                       configuration, and the compute-optimal dense model beside it\n"
    "  --sweep LO:HI        one row per decade of budget from LO to HI, and a row where the\n"
    "                       optimal granularity doubles (marked *)\n"
    "  --svg FILE           write a chart of loss and optimal granularity against budget\n"
    "                       (MoE and dense, log axes) for the --sweep range (default 1e18:1e26)\n"
    "  --model DIR          a MoE-Mamba checkpoint (reads DIR/config.json only): its parameters,\n"
    "                       the tokens and budget that make it compute-optimal, its loss\n"
    "  --expansion 64|16    which of the paper's fits to use (default 64; with --model, the\n"
    "                       one nearest the checkpoint's expansion)\n"
    "  --coeffs FILE.json   your own fit: {\"expansion\": E, \"moe\": {\"a\", \"alpha\", \"b\",\n"
    "                       \"beta\", \"g\", \"gamma\", \"c\"}, \"dense\": {...}, \"c_f\", "
    "\"c_r\"}\n"
    "  --json               JSON instead of text\n"
    "  -h, --help           this text\n"
    "\n"
    "examples:\n"
    "  statesoup plan --flops 1e21\n"
    "  statesoup plan --sweep 1e18:1e26 --svg plan.svg\n"
    "  statesoup plan --model models/moe-mamba-finegrained --json\n";

enum {
    OPT_FLOPS = CLI_OPT_FIRST_LOCAL,
    OPT_SWEEP,
    OPT_SVG,
    OPT_MODEL,
    OPT_EXPANSION,
    OPT_COEFFS,
};

/* A count with an SI suffix, 3 significant digits: "1.02B", "28.3B", "7.81T". */
static const char *si(double x, char *buf, size_t cap)
{
    static const char *const suf[] = {"", "K", "M", "B", "T", "P", "E"};
    int i = 0;
    while (fabs(x) >= 999.5 && i < 6) x /= 1000, i++;
    snprintf(buf, cap, "%.3g%s", x, suf[i]);
    return buf;
}

/* ---- one budget ------------------------------------------------------------------------------ */

static json_t *moe_json(const ss_scaling_moe *m, int integral)
{
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "granularity", json_integer(m->granularity));
    json_object_set_new(o, "expansion", json_real(m->expansion));
    json_object_set_new(o, "experts", json_real(m->experts));
    json_object_set_new(o, "d_model",
                        integral ? json_integer((json_int_t)m->d_model) : json_real(m->d_model));
    json_object_set_new(o, "n_blocks",
                        integral ? json_integer((json_int_t)m->n_blocks) : json_real(m->n_blocks));
    json_object_set_new(o, "active_params", json_real(m->active_params));
    json_object_set_new(o, "total_params", json_real(m->total_params));
    json_object_set_new(o, "tokens", json_real(m->tokens));
    json_object_set_new(o, "flops", json_real(m->flops));
    json_object_set_new(o, "loss", json_real(m->loss));
    return o;
}

/* The JSON of a plan; compute_ratio is null when no dense budget reaches the MoE's loss. */
static json_t *plan_json(const ss_scaling_plan *p)
{
    json_t *o = moe_json(&p->moe, 0);
    if (!o) return NULL;
    json_object_set_new(o, "buildable", moe_json(&p->buildable, 1));
    json_object_set_new(
        o, "dense",
        json_pack("{s:f,s:f,s:f,s:o}", "params", p->dense.params, "tokens", p->dense.tokens, "loss",
                  p->dense.loss, "compute_ratio",
                  isfinite(p->compute_ratio) ? json_real(p->compute_ratio) : json_null()));
    return o;
}

static void print_plan(const ss_scaling_plan *p)
{
    const ss_scaling_moe *m = &p->moe, *b = &p->buildable;
    char s1[32], s2[32];
    printf("compute-optimal fine-grained MoE for %.3g FLOPs (expansion %g fit)\n", m->flops,
           m->expansion);
    printf("  %-22s %-16s %s\n", "", "optimum", "buildable");
    printf("  %-22s %-16d %d\n", "granularity G", m->granularity, b->granularity);
    printf("  %-22s %-16g %g\n", "expansion E", m->expansion, b->expansion);
    printf("  %-22s %-16g %g\n", "experts (E*G, top-G)", m->experts, b->experts);
    printf("  %-22s %-16.1f %.0f\n", "d_model", m->d_model, b->d_model);
    printf("  %-22s %-16.2f %.0f\n", "n_blocks", m->n_blocks, b->n_blocks);
    printf("  %-22s %-16s %s\n", "active params", si(m->active_params, s1, sizeof s1),
           si(b->active_params, s2, sizeof s2));
    printf("  %-22s %-16s %s\n", "total params (N)", si(m->total_params, s1, sizeof s1),
           si(b->total_params, s2, sizeof s2));
    printf("  %-22s %-16s %s\n", "tokens (D)", si(m->tokens, s1, sizeof s1),
           si(b->tokens, s2, sizeof s2));
    printf("  %-22s %-16.4f %.4f\n", "loss", m->loss, b->loss);
    printf("compute-optimal dense Transformer for the same budget:\n");
    printf("  params %s, tokens %s, loss %.4f\n", si(p->dense.params, s1, sizeof s1),
           si(p->dense.tokens, s2, sizeof s2), p->dense.loss);
    if (isfinite(p->compute_ratio))
        printf("  a dense model needs %.1fx this budget (%.3g FLOPs) to reach the MoE's loss\n",
               p->compute_ratio, p->compute_ratio * m->flops);
    else
        printf("  no dense budget reaches the MoE's loss under these coefficients\n");
}

/* ---- a range of budgets
 * -------------------------------------------------------------------------- */

/* Parse "LO:HI" into a valid range; prints why not. */
static int parse_range(const char *s, double *lo, double *hi)
{
    const char *colon = strchr(s, ':');
    char a[64];
    if (!colon || (size_t)(colon - s) >= sizeof a) {
        return cli_usage("plan", "--sweep %s: expected LO:HI, e.g. 1e18:1e26", s);
    }
    memcpy(a, s, (size_t)(colon - s));
    a[colon - s] = 0;
    if (cli_parse_num("plan", "sweep", a, SS_SCALING_FLOPS_MIN, SS_SCALING_FLOPS_MAX, lo) ||
        cli_parse_num("plan", "sweep", colon + 1, SS_SCALING_FLOPS_MIN, SS_SCALING_FLOPS_MAX, hi))
        return CLI_USAGE;
    if (*hi < *lo) return cli_usage("plan", "--sweep %s: LO must not exceed HI", s);
    if (log10(*hi / *lo) > 25) return cli_usage("plan", "--sweep %s: at most 25 decades", s);
    return CLI_OK;
}

/* The budgets of a sweep: each decade from LO (and HI when it is not one), plus each budget where
 * the optimal G doubles; sorted. Returns the count; is_step[i] marks the doublings. */
static int sweep_points(const ss_scaling_law *l, double lo, double hi, double *f, int *is_step,
                        int cap)
{
    int n = 0;
    for (double x = lo; x <= hi * (1 + 1e-9) && n < cap; x *= 10) f[n] = x, is_step[n++] = 0;
    if (f[n - 1] < hi * (1 - 1e-9) && n < cap) f[n] = hi, is_step[n++] = 0;
    ss_scaling_moe a, b;
    ss_scaling_optimum(l, lo, &a);
    ss_scaling_optimum(l, hi, &b);
    for (int g = a.granularity * 2; g <= b.granularity && n < cap; g *= 2) {
        double t = ss_scaling_g_threshold(l, g, lo, hi);
        int at = n;
        while (at > 0 && f[at - 1] > t) at--;
        memmove(f + at + 1, f + at, (size_t)(n - at) * sizeof *f);
        memmove(is_step + at + 1, is_step + at, (size_t)(n - at) * sizeof *is_step);
        f[at] = t, is_step[at] = 1, n++;
    }
    return n;
}

static int run_sweep(const ss_scaling_law *l, double lo, double hi, int json)
{
    double f[64];
    int step[64];
    int n = sweep_points(l, lo, hi, f, step, 64);
    json_t *arr = json ? json_array() : NULL;
    if (!json) {
        printf("compute-optimal fine-grained MoE against budget (expansion %g fit; * = the budget "
               "where the optimal G doubles)\n",
               l->expansion);
        printf("%-10s %4s %7s %9s %8s %8s %8s %8s %7s %10s %7s %7s\n", "FLOPS", "G", "EXPERTS",
               "D_MODEL", "N_BLOCKS", "ACTIVE", "TOTAL", "TOKENS", "LOSS", "DENSE_LOSS", "RATIO",
               "BUILD");
    }
    for (int i = 0; i < n; i++) {
        ss_scaling_plan p;
        if (ss_scaling_plan_budget(l, f[i], &p)) return cli_fail("plan");
        if (json) {
            json_t *o = plan_json(&p);
            json_object_set_new(o, "granularity_step", json_boolean(step[i]));
            json_array_append_new(arr, o);
            continue;
        }
        char s1[32], s2[32], s3[32], fl[32], bl[40];
        snprintf(fl, sizeof fl, "%.3g%s", f[i], step[i] ? "*" : "");
        snprintf(bl, sizeof bl, "%.0fx%.0f", p.buildable.n_blocks, p.buildable.d_model);
        printf("%-10s %4d %7g %9.1f %8.2f %8s %8s %8s %7.4f %10.4f %6.1fx %7s\n", fl,
               p.moe.granularity, p.moe.experts, p.moe.d_model, p.moe.n_blocks,
               si(p.moe.active_params, s1, sizeof s1), si(p.moe.total_params, s2, sizeof s2),
               si(p.moe.tokens, s3, sizeof s3), p.moe.loss, p.dense.loss, p.compute_ratio, bl);
    }
    if (json) {
        cli_print_json(arr);
        json_decref(arr);
    } else {
        printf("RATIO: how many times this budget a compute-optimal dense model needs to reach the "
               "MoE's loss.\nBUILD: n_blocks x d_model of the nearest buildable configuration.\n");
    }
    return CLI_OK;
}

/* ---- the chart
 * ----------------------------------------------------------------------------------- */

/* Plot geometry: two panels sharing the log-FLOPs x axis. */
#define SVG_W 820
#define SVG_H 640
#define PX0   80.0  /* left edge of the plots */
#define PX1   780.0 /* right edge */
#define LY0   60.0  /* loss panel, top */
#define LY1   380.0 /* loss panel, bottom */
#define GY0   430.0 /* G panel, top */
#define GY1   580.0 /* G panel, bottom */

/* What the chart shows: the optima sampled on a log grid of budgets, and the axes' ranges. */
enum { PER_DECADE = 20, MAXP = 25 * PER_DECADE + 1 }; /* samples: per decade, at most */
typedef struct chart {
    int n;
    double lf[MAXP];    /* log10 of the budget [n] */
    double moe[MAXP];   /* MoE optimum's loss [n] */
    double dense[MAXP]; /* dense optimum's loss [n] */
    int g[MAXP];        /* optimal G [n] */
    double llo, lhi;    /* x range, log10 FLOPs */
    double y_lo, y_hi;  /* loss range (round values) */
} chart;

static double chart_x(const chart *c, double lf)
{
    return PX0 + (lf - c->llo) / (c->lhi - c->llo) * (PX1 - PX0);
}

static double chart_loss_y(const chart *c, double loss)
{
    return LY1 - log10(loss / c->y_lo) / log10(c->y_hi / c->y_lo) * (LY1 - LY0);
}

static double chart_g_y(int g)
{
    return GY1 - log2(g) / log2(SS_SCALING_G_MAX) * (GY1 - GY0);
}

static void chart_sample(chart *c, const ss_scaling_law *l, double lo, double hi)
{
    c->llo = log10(lo), c->lhi = log10(hi);
    if (c->lhi - c->llo < 1) c->lhi = c->llo + 1; /* a single budget still gets a decade */
    c->n = (int)ceil((c->lhi - c->llo) * PER_DECADE) + 1;
    if (c->n > MAXP) c->n = MAXP;
    double ymin = INFINITY, ymax = 0;
    for (int i = 0; i < c->n; i++) {
        c->lf[i] = c->llo + (c->lhi - c->llo) * i / (c->n - 1);
        ss_scaling_moe m;
        ss_scaling_dense d;
        ss_scaling_optimum(l, pow(10, c->lf[i]), &m);
        ss_scaling_dense_optimum(l, pow(10, c->lf[i]), &d);
        c->moe[i] = m.loss, c->dense[i] = d.loss, c->g[i] = m.granularity;
        ymin = fmin(ymin, fmin(m.loss, d.loss));
        ymax = fmax(ymax, fmax(m.loss, d.loss));
    }
    c->y_lo = floor(ymin * 10) / 10, c->y_hi = ceil(ymax * 10) / 10;
}

/* Frames, grid lines, tick labels and axis titles of both panels. */
static void chart_axes(FILE *f, const chart *c)
{
    for (int p = 0; p < 2; p++)
        fprintf(f,
                "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" "
                "stroke=\"#444\"/>\n",
                PX0, p ? GY0 : LY0, PX1 - PX0, p ? GY1 - GY0 : LY1 - LY0);
    /* x: one grid line and label per decade */
    for (int e = (int)ceil(c->llo - 1e-9); e <= (int)floor(c->lhi + 1e-9); e++) {
        double x = chart_x(c, e);
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"#ddd\"/>\n"
                "<line x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"#ddd\"/>\n"
                "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">1e%d</text>\n",
                x, LY0, x, LY1, x, GY0, x, GY1, x, GY1 + 18, e);
    }
    fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">training budget (FLOPs)</text>\n",
            (PX0 + PX1) / 2, GY1 + 40);
    /* loss: round values that spread evenly on a log axis */
    static const double ticks[] = {0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.4, 1.6,  1.8, 2.0,
                                   2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0};
    for (size_t t = 0; t < sizeof ticks / sizeof *ticks; t++) {
        if (ticks[t] < c->y_lo - 1e-9 || ticks[t] > c->y_hi + 1e-9) continue;
        double y = chart_loss_y(c, ticks[t]);
        fprintf(f,
                "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#eee\"/>\n"
                "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%.1f</text>\n",
                PX0, y, PX1, y, PX0 - 6, y + 4, ticks[t]);
    }
    /* G: log2, 1 .. 256 */
    for (int g = 1; g <= SS_SCALING_G_MAX; g *= 2) {
        double y = chart_g_y(g);
        fprintf(f,
                "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#eee\"/>\n"
                "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%d</text>\n",
                PX0, y, PX1, y, PX0 - 6, y + 4, g);
    }
    fprintf(f,
            "<text transform=\"translate(24,%g) rotate(-90)\" text-anchor=\"middle\">loss "
            "(log scale)</text>\n"
            "<text transform=\"translate(24,%g) rotate(-90)\" text-anchor=\"middle\">optimal "
            "G</text>\n",
            (LY0 + LY1) / 2, (GY0 + GY1) / 2);
}

#define MOE_STYLE   "stroke=\"#1f77b4\" stroke-width=\"2.5\""
#define DENSE_STYLE "stroke=\"#d62728\" stroke-width=\"2\" stroke-dasharray=\"7,5\""

/* The two loss curves, the G staircase and the legend. */
static void chart_curves(FILE *f, const chart *c)
{
    for (int k = 0; k < 2; k++) {
        const double *loss = k ? c->dense : c->moe;
        fprintf(f, "<polyline fill=\"none\" %s points=\"", k ? DENSE_STYLE : MOE_STYLE);
        for (int i = 0; i < c->n; i++)
            fprintf(f, "%.1f,%.1f ", chart_x(c, c->lf[i]), chart_loss_y(c, loss[i]));
        fprintf(f, "\"/>\n");
    }
    fprintf(f, "<polyline fill=\"none\" " MOE_STYLE " points=\"");
    for (int i = 0; i < c->n; i++) {
        if (i > 0 && c->g[i] != c->g[i - 1]) { /* a step: vertical between the two samples */
            double x = chart_x(c, 0.5 * (c->lf[i] + c->lf[i - 1]));
            fprintf(f, "%.1f,%.1f %.1f,%.1f ", x, chart_g_y(c->g[i - 1]), x, chart_g_y(c->g[i]));
        }
        fprintf(f, "%.1f,%.1f ", chart_x(c, c->lf[i]), chart_g_y(c->g[i]));
    }
    fprintf(f, "\"/>\n");
    fprintf(f,
            "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" " MOE_STYLE "/>"
            "<text x=\"%g\" y=\"%g\">fine-grained MoE, optimal G</text>\n"
            "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" " DENSE_STYLE "/>"
            "<text x=\"%g\" y=\"%g\">dense Transformer</text>\n",
            PX1 - 230, LY0 + 20, PX1 - 200, LY0 + 20, PX1 - 194, LY0 + 24, PX1 - 230, LY0 + 40,
            PX1 - 200, LY0 + 40, PX1 - 194, LY0 + 44);
}

/* Write the chart of budgets lo..hi to path (SS_ERR_IO with the reason). */
static ss_err write_svg(const ss_scaling_law *l, double lo, double hi, const char *path)
{
    chart *c = malloc(sizeof *c);
    if (!c) return ss_fail(SS_ERR_NOMEM, "out of memory");
    chart_sample(c, l, lo, hi);
    ss_err err = SS_OK;
    FILE *f = fopen(path, "w");
    if (!f) {
        err = ss_fail(SS_ERR_IO, "%s: %s", path, strerror(errno));
        goto out;
    }
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"%d\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">Compute-optimal "
            "loss and granularity (Krajewski et al. 2024 law, E = %g)</text>\n",
            SVG_W, SVG_H, SVG_W, SVG_H, SVG_W / 2, l->expansion);
    chart_axes(f, c);
    chart_curves(f, c);
    fprintf(f, "</svg>\n");
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) err = ss_fail(SS_ERR_IO, "%s: write failed", path);
out:
    free(c);
    return err;
}

/* ---- a checkpoint
 * -------------------------------------------------------------------------------- */

static int run_model(const char *dir, const ss_scaling_law *given, int json)
{
    ss_scaling_ckpt c;
    ss_err err = ss_scaling_read_checkpoint(dir, &c);
    if (err == SS_ERR_UNSUPPORTED) {
        fprintf(stderr, "statesoup plan: %s\n", ss_errmsg());
        return CLI_USAGE;
    }
    if (err) return cli_fail("plan");
    ss_scaling_law l;
    int nearest = 0;
    if (given) {
        l = *given;
    } else {
        nearest = ss_scaling_nearest_expansion(c.expansion);
        ss_scaling_law_default(nearest, &l);
    }
    ss_scaling_moe m;
    ss_scaling_ckpt_optimum(&l, &c, &m);
    static const char note[] =
        "the law was fitted on Transformer MoE trained on C4 (GPT-2 tokenizer): for Mamba layers "
        "it is a planning aid, not a promise";
    static const char mapping[] =
        "one Mamba layer + one MoE layer = one Transformer block (the Mamba mixer in attention's "
        "place), so n_blocks = MoE layers; parameters counted from config.json as they are";
    if (json) {
        json_t *o = moe_json(&m, 1);
        json_object_set_new(o, "model", json_string(dir));
        json_object_set_new(o, "n_layers", json_integer(c.n_layers));
        json_object_set_new(o, "n_moe_layers", json_integer(c.n_moe_layers));
        json_object_set_new(o, "experts_per_token", json_integer(c.top_k));
        json_object_set_new(o, "coeffs_expansion", json_real(l.expansion));
        json_object_set_new(o, "flops_per_token",
                            json_real(ss_scaling_ckpt_flops_per_token(&l, &c)));
        json_object_set_new(o, "mapping", json_string(mapping));
        json_object_set_new(o, "note", json_string(note));
        cli_print_json(o);
        json_decref(o);
        return CLI_OK;
    }
    char s1[32], s2[32], s3[32];
    printf("%s: fine-grained MoE-Mamba\n", dir);
    printf("  d_model %d, %d layers (%d Mamba, %d MoE) -> n_blocks %d\n", c.d_model, c.n_layers,
           c.n_mamba_layers, c.n_moe_layers, c.n_moe_layers);
    printf("    (one Mamba layer + one MoE layer = one Transformer block, the Mamba mixer in\n"
           "     attention's place; parameters counted from config.json as they are)\n");
    printf("  granularity %d, expansion %g: %d experts per MoE layer, %d per token\n",
           c.granularity, c.expansion, c.experts, c.top_k);
    printf("  active params  %s (non-embedding, without the router)\n",
           si(c.active_params, s1, sizeof s1));
    printf("  total params   %s (the law's N; embedding %s and router %s left out)\n",
           si(c.total_params, s1, sizeof s1), si(c.embedding_params, s2, sizeof s2),
           si(c.router_params, s3, sizeof s3));
    if (given)
        printf("  coefficients   expansion %g (given)\n", l.expansion);
    else if (fabs(c.expansion - nearest) > 1e-9)
        printf("  coefficients   expansion %d fit, the nearest the paper has to %g\n", nearest,
               c.expansion);
    else
        printf("  coefficients   expansion %d fit\n", nearest);
    printf("compute-optimal training under the law:\n");
    printf("  tokens         %s\n", si(m.tokens, s1, sizeof s1));
    printf("  budget         %.3g FLOPs\n", m.flops);
    printf("  per token      %.3g FLOPs (c_f * active + c_r * d_model * experts * MoE layers)\n",
           ss_scaling_ckpt_flops_per_token(&l, &c));
    printf("  predicted loss %.4f\n", m.loss);
    /* Section 5: fitted on 129M..3.7B total parameters and 16B..130B tokens */
    if (c.total_params < 129e6 || c.total_params > 3.7e9 || m.tokens < 16e9 || m.tokens > 130e9)
        printf("  (outside the fitted range, N 129M..3.7B and D 16B..130B: an extrapolation)\n");
    printf("note: the law was fitted on Transformer MoE trained on C4 (GPT-2 tokenizer):\n"
           "      for Mamba layers it is a planning aid, not a promise.\n");
    return CLI_OK;
}

/* ---- the command
 * --------------------------------------------------------------------------------- */

typedef struct plan_args {
    const char *flops, *sweep, *svg, *model, *coeffs;
    double expansion;
    int json;
} plan_args;

/* Options into *a; CLI_OK to go on, else the exit status (--help printed, or a usage error). */
static int plan_parse(int argc, char **argv, plan_args *a, int *done)
{
    static const struct option opts[] = {
        {"flops", required_argument, NULL, OPT_FLOPS},
        {"sweep", required_argument, NULL, OPT_SWEEP},
        {"svg", required_argument, NULL, OPT_SVG},
        {"model", required_argument, NULL, OPT_MODEL},
        {"expansion", required_argument, NULL, OPT_EXPANSION},
        {"coeffs", required_argument, NULL, OPT_COEFFS},
        {"json", no_argument, NULL, CLI_OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    *a = (plan_args){0};
    *done = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_FLOPS:
            a->flops = optarg;
            break;
        case OPT_SWEEP:
            a->sweep = optarg;
            break;
        case OPT_SVG:
            a->svg = optarg;
            break;
        case OPT_MODEL:
            a->model = optarg;
            break;
        case OPT_COEFFS:
            a->coeffs = optarg;
            break;
        case OPT_EXPANSION:
            if (cli_parse_num("plan", "expansion", optarg, 1, 1e6, &a->expansion)) return CLI_USAGE;
            break;
        case CLI_OPT_JSON:
            a->json = 1;
            break;
        case 'h':
            fputs(plan_help, stdout);
            *done = 1;
            return CLI_OK;
        default:
            return cli_bad_option("plan");
        }
    }
    if (optind < argc) return cli_usage("plan", "unexpected argument '%s'", argv[optind]);
    int modes = !!a->flops + !!(a->sweep || a->svg) + !!a->model;
    if (modes != 1) {
        return cli_usage("plan", modes ? "give one of --flops, --sweep/--svg, --model"
                                       : "give --flops F, --sweep LO:HI or --model DIR");
    }
    if (a->coeffs && a->expansion)
        return cli_usage("plan", "--coeffs and --expansion exclude each other");
    if (a->svg && a->json && !a->sweep)
        return cli_usage("plan", "--json goes with --sweep, not --svg alone");
    return CLI_OK;
}

/* The law: --coeffs, --expansion or the paper's E = 64 fit; *given says whether it was chosen. */
static int plan_law(const plan_args *a, ss_scaling_law *law, int *given)
{
    *given = 1;
    if (a->coeffs) {
        if (ss_scaling_law_load(a->coeffs, law)) {
            fprintf(stderr, "statesoup plan: --coeffs %s\n", ss_errmsg());
            return CLI_USAGE;
        }
    } else if (a->expansion) {
        if (a->expansion != floor(a->expansion) || ss_scaling_law_default((int)a->expansion, law)) {
            return cli_usage("plan",
                             "--expansion %g: the paper fits the law for 64 and 16 only "
                             "(--coeffs FILE takes a fit of your own)",
                             a->expansion);
        }
    } else {
        ss_scaling_law_default(64, law);
        *given = 0;
    }
    return CLI_OK;
}

/* plan --flops F */
static int run_budget(const ss_scaling_law *law, const char *flops_s, int json)
{
    /* strtod takes "inf" and "nan": the range check refuses them with the rest */
    char *end;
    double flops = strtod(flops_s, &end);
    if (end == flops_s || *end) {
        return cli_usage("plan", "--flops %s: expected a number of FLOPs, e.g. 1e21", flops_s);
    }
    if (ss_scaling_check_flops(flops)) return cli_usage("plan", "--flops: %s", ss_errmsg());
    ss_scaling_plan p;
    ss_scaling_plan_budget(law, flops, &p);
    if (json) {
        json_t *o = plan_json(&p);
        cli_print_json(o);
        json_decref(o);
    } else {
        print_plan(&p);
    }
    return CLI_OK;
}

int cmd_plan(int argc, char **argv)
{
    plan_args a;
    int done, given, rc;
    if ((rc = plan_parse(argc, argv, &a, &done)) || done) return rc;
    ss_scaling_law law;
    if ((rc = plan_law(&a, &law, &given))) return rc;
    if (a.model) return run_model(a.model, given ? &law : NULL, a.json);
    if (a.flops) return run_budget(&law, a.flops, a.json);

    double lo = 1e18, hi = 1e26;
    if (a.sweep && (rc = parse_range(a.sweep, &lo, &hi))) return rc;
    if (a.svg) {
        if (write_svg(&law, lo, hi, a.svg)) return cli_fail("plan --svg");
        if (!a.sweep) {
            fprintf(stderr, "statesoup plan: wrote %s\n", a.svg);
            return CLI_OK;
        }
    }
    return run_sweep(&law, lo, hi, a.json);
}
