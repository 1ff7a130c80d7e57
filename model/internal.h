/*
 * internal.h - the model's plain structs (config, weights, scratch), shared by the files of
 * model/ and by white-box tests. Not part of the public API (ss_model.h).
 *
 * Shapes use: d = d_model, Di = d_inner, N = d_state, R = dt rank, K = conv_kernel,
 * C = conv channels, V = vocab, H = heads (Mamba-2), P = head_dim, G = n_groups,
 * E = experts, de = expert width, T = tokens in flight (rows of the scratch matrices).
 * Weight matrices are row-major [out, in] as in the checkpoint: y = W x (but Mamba-1's x_proj
 * and out_proj are kept transposed, [in][out], under fused_decode: see mm_t_rows).
 */
#ifndef SS_MODEL_INTERNAL_H
#define SS_MODEL_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>

#include "pool.h"
#include "ss_model.h"

typedef enum layer_kind { LAYER_MAMBA1, LAYER_MAMBA2, LAYER_MOE } layer_kind;

/*
 * A weight matrix [out, in], row-major: F32 used in place; BF16 / F16 copied at load onto huge
 * pages and widened as it is read, BF16 in the pair layout of kernels.h (bf16_pack_rows); or
 * quantised at load to 8 bits (--weights q8): int8 values and one F32 scale per block of
 * Q8_BLOCK values of a row, in kernels.h's q8p layout (W_Q8P: panels of Q8P_W outputs, the
 * scales in the panels), in rows (W_Q8: values at p, scales at scale; the short matrices, or all
 * under SS_Q8_LAYOUT=rows) or, for the transposed x_proj_t and out_proj_t, in kernels.h's q8k
 * layout (W_Q8, the scales in the layout).
 */
typedef enum wtype { W_F32, W_BF16, W_F16, W_Q8, W_Q8P } wtype;
typedef struct wmat {
    const void *p;
    wtype t;
    const float *scale; /* W_Q8 in rows only */
    /* a transposed matrix Wt [K][N] (x_proj_t, out_proj_t) in the far layout (kernels.h
     * far_t_width): N / bw blocks of bw columns, block c [K][bw] at p + c * bs elements; bw = 0:
     * plain rows of N */
    int bw;
    size_t bs;
} wmat;
typedef enum norm_kind { NORM_RMS, NORM_LAYER } norm_kind;
typedef enum act_kind { ACT_RELU, ACT_GELU, ACT_SILU } act_kind;
typedef enum routing_kind { ROUTE_TOKEN_CHOICE, ROUTE_MIXTURE_OF_TOKENS } routing_kind;

typedef struct moe_config {
    routing_kind routing;
    int n_experts;        /* E */
    int expert_width;     /* de */
    act_kind activation;
    int gated;            /* up has 2*de rows: act(up[:de]) * up[de:] */
    int top_k;            /* token choice */
    int router_sigmoid;   /* token choice: sigmoid instead of softmax */
    int router_bias;
    int normalize_topk;
    int group_size;       /* mixture of tokens */
    float temperature;    /* mixture of tokens */
} moe_config;

typedef struct model_config {
    int d_model, n_layer, vocab, d_state, conv_kernel, expand, d_inner, dt_rank;
    int use_bias, use_conv_bias, tie_embeddings;
    float norm_eps;
    norm_kind norm;
    /* falcon-mamba: RMS norms (no weight) on dt, B and C; 0 = off */
    float mixer_rms_eps;
    int has_mixer_rms;
    /* Mamba-2 */
    int n_heads, head_dim, n_groups, chunk_size; /* chunk_size: read, unused (no SSD form) */
    float dt_min, dt_max; /* time_step_limit */
    /* MoE family */
    moe_config moe;
    int eos, bos;
} model_config;

typedef struct layer {
    layer_kind kind;
    int state_index;      /* index among state-carrying layers, -1 for MoE layers */
    const float *norm_w;  /* [d] */
    const float *norm_b;  /* [d] LayerNorm only, else NULL */
    /* Mamba-1 / Mamba-2 mixer */
    wmat in_proj_w;         /* M1: [2Di, d]; M2: [Di + C + H, d] with C = Di + 2GN */
    const float *in_proj_b; /* same rows, or NULL */
    const float *conv_w;    /* [C, K] (stored [C, 1, K]) */
    const float *conv_b;    /* [C] or NULL */
    wmat x_proj_w;          /* M1 without fused_decode: [R + 2N, Di] */
    wmat x_proj_t;          /* M1 with fused_decode, instead: [Di][R + 2N], x_proj transposed */
    wmat dt_proj_w;         /* M1: [Di, R] */
    const float *dt_proj_b; /* M1: [Di] */
    const float *dt_bias;   /* M2: [H] */
    float *A;               /* M1: [Di, N], M2: [H]; = -exp(A_log), owned */
    float *A16;             /* M1: A as [Di/16][N][16] blocks for the SIMD scan, or NULL */
    float *conv_w16;        /* conv_w as [C/16][K][16] blocks for the SIMD conv, or NULL */
    const float *D;         /* M1: [Di], M2: [H] */
    const float *gnorm_w;   /* M2: [Di] gated RMSNorm weight */
    wmat out_proj_w;         /* [d, Di] */
    wmat out_proj_t;         /* M1 with fused_decode, instead: [Di][d], transposed */
    const float *out_proj_b; /* [d] or NULL */
    /* MoE */
    wmat router_w;          /* [E, d] */
    const float *router_b;  /* [E] or NULL */
    wmat *up_w;             /* E matrices [de or 2de, d], owned array */
    wmat *down_w;           /* E matrices [d, de], owned array */
} layer;

typedef struct mapping {
    void *addr;
    size_t len;
} mapping;

struct ss_model {
    ss_model_info info;
    model_config cfg;
    char architecture[64];
    char model_type[32];
    char dtype[8];
    wmat embed;           /* [V, d] */
    wmat lm_head;         /* [V, d]; == embed when tied */
    const float *norm_f_w; /* [d] */
    const float *norm_f_b; /* [d] LayerNorm only */
    layer *layers;        /* [n_layer] */
    int n_threads;
    ss_pool *pool; /* n_threads workers for every parallel step of the forward pass */
    int act8; /* --weights q8: batch-1 decode quantises activations too (gemv_q8a8) */
    int fused; /* ss_model_params.fused_decode (resolved): Mamba-1 x_proj/out_proj transposed */
    /* resources */
    mapping *maps;
    int n_maps;
    void **owned; /* converted weights and other buffers freed at close */
    int n_owned;
    size_t cap_owned;
    /* the 16-bit matrices and (--weights q8) the 8-bit ones and their scales, bump-allocated
     * from chunks on transparent huge pages (checkpoint.c, arena_alloc); unmapped at close */
    mapping *arena;
    int n_arena;
    size_t arena_used; /* bytes taken from the last chunk */
    struct state_spares *spares; /* large buffers given back, kept for reuse (state.c) */
};
/* The model's kept buffers (states' blocks, blob scratch, jobs' logits; state.c ss_buf_take):
 * made by ss_model_open, freed at close. */
ss_err state_spares_new(ss_model *m);
void state_spares_free(ss_model *m);

/* Scratch buffers for a round of T rows; grown by ctx_reserve. */
struct ss_ctx {
    const ss_model *m;
    int rows;       /* capacity in rows */
    float *h;       /* [T, d] residual stream */
    float *xn;      /* [T, d] normed input of a block */
    float *proj;    /* [T, in_proj rows] */
    float *xc;      /* [T, C] conv output */
    float *dbc;     /* [T, R + 2N] (M1) */
    float *dt;      /* [T, Di] (M1) or [T, H] (M2) */
    float *y;       /* [T, Di] */
    float *out;     /* [T, d] */
    float *logits;  /* [n_last, V] for last-token logits */
    int logits_rows;
    /* per-eval bookkeeping, [seq_cap] each */
    int seq_cap;
    struct span *spans;
    int *pos;
    int *gid;
    /* MoE scratch */
    float *router;   /* [T, E] */
    float *eh;       /* [T, 2*de] expert hidden */
    float *ein;      /* [T, d] gathered expert inputs */
    float *eout;     /* [T, d] */
    int *route_idx;  /* [T * k] */
    float *route_w;  /* [T * k] */
    int *perm;       /* [T * k] */
    int *counts;     /* [2 * (E + 1)] per-expert counts and fill pointers */
    int *grows;      /* [group_size] MoT group member rows */
    int *gmembers;   /* [seq_cap] MoT group member spans */
    float *gw;       /* [group_size] MoT group weights */
    /* q8 prefill: n_threads blocks of wide_floats (WIDE_ROWS weight rows widened to F32) */
    float *wide;
    size_t wide_floats;
    /* q8 batch-1 decode: the activation row quantised to 8 bits (kernels.h q8_act), for rows of
     * up to act8_k values */
    void *act8;
    int act8_k;
    /* Mamba-1's fused decode step (mamba.c, rows <= FUSE_ROWS): x_proj's and out_proj's partial
     * products per segment of the channels, [G][FUSE_ROWS][R + 2N] and [G][FUSE_ROWS][d]; each
     * pool part's sum of x_proj's, [n_threads][FUSE_ROWS][R + 2N]; channels done per segment */
    float *px, *po, *dbcp;
    _Atomic int *segdone; /* [2 G]: channels of each segment done; then each segment scanned */
    _Atomic int *segnode; /* [FUSE_BLOCKS][SEG_MAX]: children of each tree node done, per block
                           * of out_proj's columns (mamba1_fused) */
    float *tstack;        /* [n_threads][MMT_STACK_FLOATS]: mm_t_rows' subtrees */
    void *segact; /* --weights q8 with 8-bit activations: [G] q8_act_bytes(S), each segment's
                   * inputs of x_proj, then of out_proj, quantised (mamba1_fused) */
    /* rows of the round in flight (0 outside a round): 8-bit activations are for batch-1 decode
     * only, not for a prompt's expert that happens to get one row */
    int round_rows;
    /* run_round holds the model's pool for its whole round (one lock per round, not per step) */
    int pool_held;
    /* per-phase profile (ss_ctx_set_profile): prof_t is the end of the last phase */
    int prof;
    uint64_t prof_t;
    ss_profile prof_acc;
    pool_times prof_pool;
    pool_times prof_pool_lap; /* prof_pool at the end of the last phase (prof_lap) */
};

/* model/checkpoint.c */
/* Fill m from the checkpoint folder dir; the codes of ss_model_open. */
ss_err model_load(ss_model *m, const char *dir, const ss_model_params *p);
/* Unmap and free everything model_load set up (m itself stays). */
void model_unload(ss_model *m);

/* model/mamba.c: the end of a phase of c's eval (profiling on only; see prof_mark) */
void prof_lap(ss_ctx *c, ss_phase ph);
static inline void prof_mark(ss_ctx *c, ss_phase ph)
{
    if (c->prof) prof_lap(c, ph);
}

/* model/dense.c: dense helpers shared by every mixer */
/* One parallel step of c's eval on the model's pool: without the lock when run_round holds the
 * pool, timed when c is profiled. c may be NULL (a plain pool_run). */
void model_run(const ss_model *m, ss_ctx *c, pool_fn fn, void *arg);
/* 8-bit weight rows widened at a time for a prefill panel (ctx_reserve sizes the scratch). */
#define WIDE_ROWS 64
/* y[rows, out] = x[rows, in] (row stride ldx) times w[out, in]^T, plus bias when not NULL, into y
 * (row stride ldy); threaded over the model's pool. Each row's result is the same bits whatever
 * the row count (but q8 weights at one row) and the thread count. */
void mm_rows(const ss_model *m, ss_ctx *c, const float *x, int rows, int in, int ldx, wmat w,
             const float *bias, int out, float *y, int ldy);
/*
 * mm_rows, and after(user, lo, hi) on the thread that computed output columns [lo, hi) of every
 * row, as soon as they are done (rows <= 16: a few blocks per thread; more rows: one range per
 * thread). lo and hi are multiples of 16, or hi = out. What after does must not depend on how
 * the columns are split (the same elementwise work for any ranges), and it must touch only what
 * belongs to its columns.
 */
typedef void (*mm_after_fn)(void *user, int lo, int hi);
void mm_rows_then(const ss_model *m, ss_ctx *c, const float *x, int rows, int in, int ldx,
                  wmat w, const float *bias, int out, float *y, int ldy, mm_after_fn after,
                  void *user);

/* A spin-wait's pause. */
static inline void cpu_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}
/* Prefetch [p, p + bytes) into L2, one request per cache line. */
static inline void prefetch_l2(const void *p, size_t bytes)
{
    const char *a = (const char *)((uintptr_t)p & ~(uintptr_t)63), *e = (const char *)p + bytes;
    for (; a < e; a += 64) __builtin_prefetch(a, 0, 2);
}
/* Bytes per element of w's values (8-bit weights: their scales not counted). */
static inline size_t wmat_esize(wmat w)
{
    return w.t == W_F32 ? 4 : w.t == W_Q8 || w.t == W_Q8P ? 1 : 2;
}
/* Rows [k0, k1) of w (N values per row; a row matrix, 8-bit ones in rows or panels, or a
 * transposed one in the plain or far layout), prefetched into L2. */
void wmat_prefetch_rows(wmat w, int N, int k0, int k1);
/*
 * Whether the second step of Mamba-1's fused decode layer prefetches its next segment's short
 * runs (dt_proj's rows, A, the SSM states; mamba.c fused1_prefetch): 1 (default) or 0;
 * statesoup-decode-ab --compare prefetch flips it between steps.
 */
extern int fused_prefetch;
/*
 * Whether that second step scans the segments first and then cuts each one's out_proj partial
 * into FUSE_BLOCKS column blocks claimed as units (same bits; mamba.c fused1_units): -1 (the
 * default) when the pool has more than mamba1_segs / 4 threads (more than 4 at 16 segments),
 * 0 never, 1 always. SS_UNITS=0 or 1 sets it at the first ss_model_open; statesoup-decode-ab
 * --compare units flips it between steps.
 */
enum { FUSE_BLOCKS = 4 };
extern int fused_units;
/*
 * The most rows (streams of a decode step) a Mamba-1 layer of a model in the fused layout takes
 * in two parallel steps (mamba.c mamba1_fused; at most FUSE_ROWS); more take the four steps of
 * a prompt on the same transposed matrices (mm_t_rows), which give the same bits. SS_FUSED_ROWS
 * (1 to 16) sets it at the first ss_model_open; statesoup-decode-ab --compare fuserows flips it.
 */
extern int fused_max_rows;
/*
 * Whether --weights q8 at batch-1 decode multiplies dt_proj (in panels, kernels.h q8p) on 8-bit
 * activations too (mamba.c scan1_range): 1 (default) or 0, F32 activations. SS_DT_A8 sets it at
 * the first ss_model_open; statesoup-decode-ab --compare dta8 flips it.
 */
extern int dt_a8;
/* Columns [lo, hi) of the same product on the calling thread, for rows <= 16 (needs no scratch):
 * what one thread computes of a projection inside a parallel step of its own. act: one row on
 * 8-bit weights, x quantised (8-bit activations, as mm_rows at batch-1 decode), else NULL. */
struct q8_act;
void mm_cols_small(const float *x, int rows, int in, int ldx, wmat w, const float *bias, int lo,
                   int hi, float *y, int ldy, const struct q8_act *act);
/*
 * Transposed matrices Wt [K][N] (Mamba-1's x_proj, out_proj; kernels.h gemm_t). Their products
 * are cut into mamba1_segs(K) segments of mamba1_seg(K) rows of Wt (at most 16, whole vectors
 * of channels), whose partial products are summed in a fixed tree (seg_tree_sum below): the same
 * bits whether one thread runs the segments one after the other (mm_t_rows) or threads compute
 * a segment each (the fused decode step of model/mamba.c).
 */
static inline int mamba1_seg(int Di)
{
    return ((Di + 15) / 16 + 15) & ~15;
}
static inline int mamba1_segs(int Di)
{
    return (Di + mamba1_seg(Di) - 1) / mamba1_seg(Di);
}
/* Y[m][n] = sum over k in [k0, k1) of Wt[k][n] X[m][k] (a segment's partial product), columns
 * [n0, n1); X and Y point at column 0 of their rows (8-bit weights, the q8k layout: k0 a
 * multiple of Q8_BLOCK). On the calling thread. Any layout of w (plain, far, q8k); the same
 * bits from each. */
void mm_t_part(wmat w, int N, const float *X, int M, int ldx, int k0, int k1, int n0, int n1,
               float *Y, int ldy);
/* The same for one row on 8-bit weights with 8-bit activations (kernels.h gemv_t_q8ka8): x the
 * segment's inputs [k0, k0 + x->K) quantised (k0 a multiple of Q8_BLOCK); Y at column 0. */
struct q8_act;
void mm_t_part_a8(wmat w, int N, const struct q8_act *x, int k0, int n0, int n1, float *Y);
/*
 * The segments' partial products P_0..P_{G-1} are summed in a fixed binary tree, the same for
 * every caller: the complete tree over 16 leaves of which the first G are present (a node is the
 * sum of its two children, left + right, or its one child when the right one is empty). A
 * prompt builds it in segment order (a stack of subtrees, mm_t_rows); a decode step lets the
 * part that finishes a node's second child add the two (mamba1_fused), so no thread sums more
 * than four pairs and none waits.
 */
enum { SEG_MAX = 16 };
/* out[i] = the tree's sum over P[l * stride + i], l < G, for i < n (element by element). */
void seg_tree_sum(const float *P, size_t stride, int G, size_t n, float *out);
/* Scratch floats mm_t_rows needs per thread (ss_ctx.tstack). */
#define MMT_STACK_BUFS   6 /* subtrees of 8, 4, 2, 1 and 1 leaves, and a spare */
#define MMT_STACK_COLS   128
#define MMT_STACK_FLOATS ((size_t)MMT_STACK_BUFS * 64 * MMT_STACK_COLS) /* 64: MM_PANEL */
/* y[rows, N] = x[rows, K] Wt, the segments' products summed in their tree (+ bias; then
 * h[rows, N] += y when h is not NULL); threaded over the model's pool. */
void mm_t_rows(const ss_model *m, ss_ctx *c, const float *x, int rows, int ldx, wmat w, int K,
               int N, int S, const float *bias, float *y, int ldy, float *h);
/* Row r of an embedding-like matrix [V, d] as F32 into dst. */
void wmat_row(wmat w, int d, int r, float *dst);

#endif
