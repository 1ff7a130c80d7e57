/*
 * ss_scaling.h - the fine-grained Mixture-of-Experts scaling law of Krajewski, Ludziejewski et al.,
 * "Scaling Laws for Fine-Grained Mixture of Experts" (arXiv 2402.07871, ICML 2024), as a planner:
 * the law, its FLOPs model, the compute-optimal configuration for a training budget (and the
 * nearest one that can be built), the compute-optimal dense model beside it, and the token count
 * that makes an existing checkpoint compute-optimal. `statesoup plan` and tests/test_plan.c share
 * it; docs/planner.md explains every formula.
 *
 * The law (Eq. 9), N = total non-embedding parameters excluding the router, D = training tokens,
 * G = granularity:
 *     L(N, D, G) = c + (g / G^gamma + a) / N^alpha + b / D^beta
 * The model family it is solved over (Section 6.1): d_model = 64 * n_blocks, active parameters
 * N_act = 12 d_model^2 n_blocks, total N = d_model^2 (8E + 4) n_blocks, G * E experts, top-k = G,
 * and training FLOPs (Eq. 10)
 *     F = (12 d_model^2 c_f + d_model E G c_r) * n_blocks * D,   c_f = 6, c_r = 14.
 * Dense (Eq. 1 with its own coefficients): L = c + a / N^alpha + b / D^beta, F = c_f N D.
 *
 * Everything is plain arithmetic on doubles: thread-safe, no allocation (but for reading files).
 */
#ifndef SS_SCALING_H
#define SS_SCALING_H

#include <stddef.h>

#include "ss_err.h"

/* The coefficients of one fit. */
typedef struct ss_scaling_law {
    double expansion; /* E the MoE fit was made at (64: Table 1; 16: Appendix D, Table 8) */
    double a, alpha, b, beta, g, gamma, c;                     /* MoE, Eq. 9 */
    double dense_a, dense_alpha, dense_b, dense_beta, dense_c; /* dense Transformer, Eq. 1 */
    double c_f; /* training FLOPs per active parameter and token (6) */
    double c_r; /* training FLOPs per routing weight and token (14, Appendix E) */
} ss_scaling_law;

/* Granularities the optimiser tries: powers of two 1 .. SS_SCALING_G_MAX. */
#define SS_SCALING_G_MAX 256
/* Budgets the planner accepts (the solver's brackets hold well beyond both ends). */
#define SS_SCALING_FLOPS_MIN 1e10
#define SS_SCALING_FLOPS_MAX 1e35

/*
 * The paper's fit for expansion rate 64 (Table 1) or 16 (Appendix D, Table 8; the dense
 * coefficients are Table 1's for both). SS_ERR_INVALID for any other expansion.
 */
ss_err ss_scaling_law_default(int expansion, ss_scaling_law *out);

/*
 * A user's refit, as JSON text: {"expansion": E, "moe": {"a", "alpha", "b", "beta", "g", "gamma",
 * "c"}, "dense": {"a", "alpha", "b", "beta", "c"}, "c_f": 6, "c_r": 14}. "expansion" and all of
 * "moe" are required; "dense", "c_f" and "c_r" default to the paper's (Table 1, Appendix E).
 * Every value must be a finite number with a, b, alpha, beta, c_f, expansion > 0 and
 * g, gamma, c, c_r >= 0; an unknown key is an error (a typo would otherwise go unnoticed).
 * `what` names the text in messages. SS_ERR_FORMAT (not JSON, unknown key, not a number) or
 * SS_ERR_INVALID (out of range), with the key in ss_errmsg(); *out is set only on success.
 */
ss_err ss_scaling_law_parse(const char *text, size_t len, const char *what, ss_scaling_law *out);

/* ss_scaling_law_parse() of the file at path (SS_ERR_NOT_FOUND / SS_ERR_IO when unreadable). */
ss_err ss_scaling_law_load(const char *path, ss_scaling_law *out);

/* Eq. 9: the MoE loss at total parameters n, tokens d, granularity g. */
double ss_scaling_loss(const ss_scaling_law *l, double n, double d, double g);
/* Eq. 1 with the dense coefficients. */
double ss_scaling_dense_loss(const ss_scaling_law *l, double n, double d);

/* One MoE configuration of the law's family and what the law says of it. */
typedef struct ss_scaling_moe {
    int granularity;      /* G */
    double expansion;     /* E */
    double experts;       /* E * G */
    double d_model;       /* continuous at the optimum, a multiple of 64 when buildable */
    double n_blocks;      /* d_model / 64 */
    double active_params; /* 12 d_model^2 n_blocks */
    double total_params;  /* d_model^2 (8E + 4) n_blocks: the law's N */
    double tokens;        /* D = F / (FLOPs per token) */
    double flops;         /* F */
    double loss;          /* L(N, D, G) */
} ss_scaling_moe;

/* The configuration at d_model and G that spends exactly `flops` (tokens follow from Eq. 10). */
void ss_scaling_at(const ss_scaling_law *l, double flops, double d_model, int g,
                   ss_scaling_moe *out);

/*
 * The compute-optimal configuration at a fixed G: minimises the loss over d_model (golden-section
 * search on log d_model; the loss along the budget constraint is convex in log d_model, see
 * docs/planner.md, so the search finds the one minimum).
 */
void ss_scaling_optimum_g(const ss_scaling_law *l, double flops, int g, ss_scaling_moe *out);

/* The compute-optimal configuration over G = 1, 2, 4, ..., SS_SCALING_G_MAX as well. */
void ss_scaling_optimum(const ss_scaling_law *l, double flops, ss_scaling_moe *out);

/*
 * The nearest configuration that can be built from `opt`: same G and budget, an integer
 * n_blocks >= 1 (so d_model = 64 * n_blocks): of the two integers around opt->n_blocks, the one
 * with the lower loss (the loss is convex in log d_model, so the best integer is one of them).
 */
void ss_scaling_buildable(const ss_scaling_law *l, const ss_scaling_moe *opt, ss_scaling_moe *out);

/* The compute-optimal dense Transformer for a budget. */
typedef struct ss_scaling_dense {
    double params, tokens, flops, loss;
} ss_scaling_dense;
void ss_scaling_dense_optimum(const ss_scaling_law *l, double flops, ss_scaling_dense *out);

/*
 * The budget at which the compute-optimal dense model reaches `loss` (bisection on log F; the
 * dense optimum's loss falls strictly with F). INFINITY when no budget does (loss <= dense c).
 */
double ss_scaling_dense_flops_for_loss(const ss_scaling_law *l, double loss);

/* Everything `statesoup plan --flops F` prints. */
typedef struct ss_scaling_plan {
    ss_scaling_moe moe;       /* the optimum */
    ss_scaling_moe buildable; /* the nearest buildable configuration */
    ss_scaling_dense dense;   /* the compute-optimal dense model for the same budget */
    double compute_ratio;     /* dense FLOPs to reach moe.loss / F (INFINITY: never) */
} ss_scaling_plan;

/* SS_ERR_INVALID unless flops is finite and in [SS_SCALING_FLOPS_MIN, SS_SCALING_FLOPS_MAX]. */
ss_err ss_scaling_check_flops(double flops);
/* The plan for a budget; SS_ERR_INVALID as ss_scaling_check_flops(). */
ss_err ss_scaling_plan_budget(const ss_scaling_law *l, double flops, ss_scaling_plan *out);

/*
 * The smallest budget in (lo, hi] at which the optimal granularity is at least g (bisection on
 * log F; the optimal G does not fall as the budget grows). Returns hi when even hi's is below g.
 */
double ss_scaling_g_threshold(const ss_scaling_law *l, int g, double lo, double hi);

/* ---- checkpoints ----------------------------------------------------------------------------- */

/*
 * What the law needs from a MoE-Mamba checkpoint's config.json. Mapping (docs/planner.md): one
 * Mamba layer plus one MoE layer play the role of one Transformer block (the Mamba mixer takes
 * attention's place, the MoE layer the feed-forward's), so n_blocks = the number of MoE layers;
 * parameters are counted from the config as they are, not from the family's 12 d_model^2.
 */
typedef struct ss_scaling_ckpt {
    int d_model;
    int n_layers, n_mamba_layers, n_moe_layers;
    int experts;          /* per MoE layer */
    int top_k;            /* experts per token */
    int granularity;      /* moe.granularity, else top_k (the law's family routes to G experts) */
    double expansion;     /* moe.expansion_rate, else experts / granularity */
    double active_params; /* non-embedding, no router, k experts per MoE layer */
    double total_params;  /* non-embedding, no router, every expert: the law's N */
    double router_params; /* router weights (+ biases), left out of both counts above */
    double embedding_params; /* embedding, plus lm_head when untied */
} ss_scaling_ckpt;

/*
 * Read dir/config.json (only that file; no weights). SS_ERR_NOT_FOUND / SS_ERR_IO / SS_ERR_FORMAT
 * for a missing or malformed file; SS_ERR_UNSUPPORTED, with the reason, for a checkpoint the law
 * does not describe: not MoE-Mamba (dense Mamba, Mamba-2) or mixture-of-tokens routing.
 */
ss_err ss_scaling_read_checkpoint(const char *dir, ss_scaling_ckpt *out);

/* FLOPs per training token of a checkpoint: c_f N_act + c_r d_model experts n_moe_layers. */
double ss_scaling_ckpt_flops_per_token(const ss_scaling_law *l, const ss_scaling_ckpt *c);

/*
 * The token count that makes the checkpoint compute-optimal under the law: the D at which a
 * budget's last FLOP lowers the loss as much spent on parameters as on tokens, with the model
 * scaled the way the law's family scales (N grows as d_model^3, routing FLOPs as d_model^2):
 *     3 alpha (g/G^gamma + a) N^-alpha = beta b D^-beta (3 - r),
 * r = the routing share of the FLOPs per token. For a member of the family this is exactly the
 * optimiser's D. Fills tokens, flops (= tokens * FLOPs per token) and loss of *out, and copies
 * the checkpoint's figures into the rest.
 */
void ss_scaling_ckpt_optimum(const ss_scaling_law *l, const ss_scaling_ckpt *c,
                             ss_scaling_moe *out);

/* The fitted expansion (16 or 64) nearest to e on a log scale (ties go to 64). */
int ss_scaling_nearest_expansion(double e);

#endif
