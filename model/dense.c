/*
 * dense.c - the dense helpers every mixer uses: projections (mm_rows: our threads split the
 * output columns, OpenBLAS or the small-M SIMD kernel inside), rows of embedding-like matrices
 * and the block norms. Shared by mamba.c, mamba2.c and moe.c; depends on nothing above it.
 */
#include "internal.h"
#include "kernels.h"
#include "mixers.h"

#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* A product y[rows, out] = x[rows, in] w[out, in]^T (+ bias) shared by the pool's threads. */
typedef struct mm_job {
    const float *x, *bias;
    wmat w;
    int rows, in, ldx, out, ldy;
    float *y;
    float *wide; /* NULL, or n_threads blocks of wide_floats (q8 prefill, see mm_cols) */
    size_t wide_floats;
    const q8_act *act; /* q8 at one row: x quantised (gemv_q8a8), or NULL */
    int block;       /* decode: columns per block taken dynamically, 0 = static ranges; guided:
                      * the least columns a claim takes */
    int guided;      /* 0, or a claim takes 1 / guided of the columns left (pool.h pool_parts) */
    int q8p_groups;  /* guided q8p at one row: claims in whole groups of `block` columns (the
                      * kernel's streams) while two rounds of them are left, and an equal share
                      * when the columns left cannot give each thread `block` (claim_rule) */
    atomic_int next; /* next block (blocks of one size) */
    _Atomic uint64_t ends; /* guided: the columns not claimed, [lo, hi) (pool_ends_pack) */
    mm_after_fn after; /* NULL, or run on each range of columns right after it (mm_rows_then) */
    void *user;
} mm_job;

/*
 * Rows per panel of x in a product with many rows: a panel (64 rows of up to 4 KB at K = 1024
 * floats: 256 KB) stays in L2 while the thread's weight columns stream past it once.
 */
#define MM_PANEL 64

/*
 * Columns [lo, hi) of a product on 8-bit weights in the q8p layout (kernels.h) of `in` inputs,
 * a panel's run of them at a time: one row on 8-bit activations (act), else nr rows of F32 ones
 * (x). Each output is one chain over its blocks whatever the rows and the columns taken with it.
 */
static void q8p_cols(wmat w, int in, const q8_act *act, const float *x, int nr, int ldx, int lo,
                     int hi, float *y, int ldy)
{
    const kernels *k = kernels_get();
    const size_t pb = q8p_panel_bytes(in);
    if (act) {
        k->gemv_q8p_a8(act, w.p, lo, hi, y);
        return;
    }
    for (int a = lo; a < hi;) {
        const int c = a / Q8P_W, o = a % Q8P_W, e = hi < (c + 1) * Q8P_W ? hi : (c + 1) * Q8P_W;
        const uint8_t *W = (const uint8_t *)w.p + (size_t)c * pb + 4 * (size_t)o;
        k->gemm_t_q8k(x, nr, in, ldx, W, 4 * Q8P_W, e - a, y + (a - lo), ldy);
        a = e;
    }
}

/*
 * Columns [lo, hi) of the product, on the calling thread. Every element is one dot product
 * computed the same way for any number of rows, any panel and any column range (kernels.h:
 * gemm_small): a token's projections do not depend on how many tokens share its step, where
 * its chunk starts or how the columns are split among threads, which is what makes a prompt
 * resumed from a stored state give the same bits as one fed whole.
 */
static void mm_cols(const mm_job *j, int tid, int lo, int hi)
{
    const kernels *k = kernels_get();
    const int n = hi - lo;
    float *yc = j->y + lo;
    const size_t nb = (size_t)q8_blocks(j->in);
    for (int r0 = 0; r0 < j->rows; r0 += MM_PANEL) {
        const int nr = j->rows - r0 < MM_PANEL ? j->rows - r0 : MM_PANEL;
        const float *x = j->x + (size_t)r0 * j->ldx;
        float *y = yc + (size_t)r0 * j->ldy;
        if (j->w.t == W_Q8P) {
            q8p_cols(j->w, j->in, j->act, x, nr, j->ldx, lo, hi, y, j->ldy);
        } else if (j->w.t == W_F32) {
            k->gemm_small(x, nr, j->in, j->ldx, (const float *)j->w.p + (size_t)lo * j->in, n, y,
                          j->ldy);
        } else if (j->w.t == W_Q8 && nr > 16 && j->wide &&
                   (size_t)WIDE_ROWS * j->in <= j->wide_floats) {
            /* a prefill panel: widen WIDE_ROWS weight rows once (s * q, as the 8-bit kernel
             * does in registers) and run the F32 kernel on them, instead of every block of
             * rows converting them again (1.2-1.3x the F32 time before). Both kernels take the
             * same vector steps over K (kernels_simd.h, Q8_BLOCKFN): the same bits. */
            float *wide = j->wide + (size_t)tid * j->wide_floats;
            for (int c0 = 0; c0 < n; c0 += WIDE_ROWS) {
                const int nc = n - c0 < WIDE_ROWS ? n - c0 : WIDE_ROWS;
                for (int r = 0; r < nc; r++)
                    k->widen_q8((const int8_t *)j->w.p + (size_t)(lo + c0 + r) * j->in,
                                j->w.scale + (size_t)(lo + c0 + r) * nb, j->in,
                                wide + (size_t)r * j->in);
                k->gemm_small(x, nr, j->in, j->ldx, wide, nc, y + c0, j->ldy);
            }
        } else if (j->w.t == W_Q8 && j->act) {
            k->gemv_q8a8(j->act, (const int8_t *)j->w.p + (size_t)lo * j->in,
                         j->w.scale + (size_t)lo * nb, n, y);
        } else if (j->w.t == W_Q8) {
            k->gemm_small_q8(x, nr, j->in, j->ldx, (const int8_t *)j->w.p + (size_t)lo * j->in,
                             j->w.scale + (size_t)lo * nb, n, y, j->ldy);
        } else {
            const uint16_t *wc = (const uint16_t *)j->w.p + (size_t)lo * j->in;
            (j->w.t == W_BF16 ? k->gemm_small_bf16 : k->gemm_small_f16)(x, nr, j->in, j->ldx, wc,
                                                                        n, y, j->ldy);
        }
    }
    if (j->bias) {
        for (int r = 0; r < j->rows; r++)
            for (int o = 0; o < n; o++) yc[(size_t)r * j->ldy + o] += j->bias[lo + o];
    }
    if (j->after) j->after(j->user, lo, hi);
}

/*
 * The least columns and the unit of a guided claim with `left` columns unclaimed. q8p at one row
 * (q8p_groups): whole groups of the kernel's streams while two rounds of them are left
 * (gemv_q8p_a8 then never falls back to fewer streams inside a claim: 370m's 4096 outputs go
 * 16, 12, 12, 8, 4 ... panels instead of 16, 12, 9, 7, 5, ...; a step 0.968-0.989x at 130m,
 * 370m and 1.4b), then single panels, and at least an equal share of what is left when that
 * is under `block` (130m's out_proj, 12 panels: 4, 4, 2, 1, 1 rather than 4, 4, 4; a step
 * 0.971 and 0.979x). docs/performance.md.
 */
static void claim_rule(const mm_job *j, int left, int nt, int *least, int *unit)
{
    *least = j->block;
    *unit = j->w.t == W_Q8P ? Q8P_W : 16;
    if (!j->q8p_groups) return;
    if (left >= 2 * nt * j->block) {
        *unit = j->block;
        return;
    }
    const int share = ((left + nt - 1) / nt + Q8P_W - 1) / Q8P_W * Q8P_W;
    if (share < *least) *least = share;
}

/*
 * A thread's share: prefill takes one static range (large contiguous GEMMs); decode, which is
 * memory-bound and sensitive to a thread the host slows down, takes blocks as it goes: guided
 * claims (pool.h pool_parts, the default) or blocks of one size (pool_parts 0).
 */
static void mm_part(void *arg, int tid, int nt)
{
    mm_job *j = arg;
    if (!j->block) {
        int lo, hi;
        pool_range(j->out, 16, tid, nt, &lo, &hi);
        if (lo < hi) mm_cols(j, tid, lo, hi);
        return;
    }
    if (j->guided) {
        /* from the bottom or (odd parts, pool_ends 2) the top: each thread one run of rows in
         * order; every claim starts and ends on a multiple of 16 or the end (conv_after) */
        const int top = pool_ends > 1 && (tid & 1);
        uint64_t v = atomic_load_explicit(&j->ends, memory_order_relaxed);
        for (;;) {
            const int lo = (int)(uint32_t)v, hi = (int)(v >> 32);
            if (lo >= hi) break;
            int c0, c1, least, unit;
            claim_rule(j, hi - lo, nt, &least, &unit);
            pool_guided_claim_in(lo, hi, top, j->guided, least, unit, &c0, &c1);
            const uint64_t nv = c0 == lo ? pool_ends_pack(c1, hi) : pool_ends_pack(lo, c0);
            if (!atomic_compare_exchange_weak_explicit(&j->ends, &v, nv, memory_order_relaxed,
                                                       memory_order_relaxed))
                continue; /* v now holds the current ends */
            mm_cols(j, tid, c0, c1);
            v = atomic_load_explicit(&j->ends, memory_order_relaxed);
        }
        return;
    }
    for (int b; (b = atomic_fetch_add(&j->next, 1)) * j->block < j->out;) {
        int lo = b * j->block, hi = lo + j->block < j->out ? lo + j->block : j->out;
        mm_cols(j, tid, lo, hi);
    }
}

/* x[in] quantised into c's scratch for gemv_q8a8, or NULL (no memory: the F32 path then). No
 * allocation after the first token: the scratch only grows, to the longest row. */
static const q8_act *quantize_act(ss_ctx *c, const float *x, int in, q8_act *a)
{
    if (in > c->act8_k) {
        void *mem = aligned_alloc(64, q8_act_bytes(in));
        if (!mem) return NULL;
        free(c->act8);
        c->act8 = mem;
        c->act8_k = in;
    }
    q8_act_init(a, c->act8, in);
    kernels_get()->quantize_act8(a, x);
    return a;
}

/*
 * y[rows, out] = x[rows, in] w[out, in]^T (+ bias). The pool's threads split the output columns
 * (each streams its share of w once per panel of rows) and run our dot-product kernels on them
 * (16-bit and 8-bit weights widened in registers): one kernel family for 1 row (decode) to a
 * whole prompt chunk, so a row's result does not depend on the row count (see mm_cols).
 */
void mm_rows(const ss_model *m, ss_ctx *c, const float *x, int rows, int in, int ldx, wmat w,
             const float *bias, int out, float *y, int ldy)
{
    mm_rows_then(m, c, x, rows, in, ldx, w, bias, out, y, ldy, NULL, NULL);
}

void mm_rows_then(const ss_model *m, ss_ctx *c, const float *x, int rows, int in, int ldx,
                  wmat w, const float *bias, int out, float *y, int ldy, mm_after_fn after,
                  void *user)
{
    if (rows <= 0 || out <= 0) return;
    mm_job j = {.x = x,
                .w = w,
                .bias = bias,
                .rows = rows,
                .in = in,
                .ldx = ldx,
                .out = out,
                .ldy = ldy,
                .y = y,
                .wide = c->wide,
                .wide_floats = c->wide_floats,
                .after = after,
                .user = user};
    q8_act act;
    /* batch-1 decode on 8-bit weights: integer dot products on x quantised once here */
    if ((w.t == W_Q8 || w.t == W_Q8P) && rows == 1 && m->act8 && c->round_rows <= 1)
        j.act = quantize_act(c, x, in, &act);
    if ((size_t)rows * out * in < 100000 || out < 32) {
        mm_part(&j, 0, 1);
        return;
    }
    if (rows <= 16) { /* pool_parts 0: about 8 blocks per thread, whole 16-column tiles */
        const int nt = pool_size(m->pool);
        j.block = ((out + 8 * nt - 1) / (8 * nt) + 15) & ~15;
        /* at least 32 columns (a 130m in_proj block of 96 KB): 64 left 16 threads 3 blocks of
         * in_proj each, and the caller waiting 0.63 ms per token for the slowest; with 32 it
         * waited 0.26-0.40 ms and a token took 3.6-3.9 ms instead of 3.8-4.3 (docs/performance.md)
         */
        if (j.block < 32) j.block = 32;
        /* a short matrix (x_proj: 80 columns at 130m) in 64-column blocks split 64 + 16: one
         * block per thread instead, in whole 8-column tiles (40 + 40; 16-column ones when an
         * `after` needs them) */
        if (out < 2 * 64 * nt)
            j.block = after ? ((out + nt - 1) / nt + 15) & ~15 : ((out + nt - 1) / nt + 7) & ~7;
        else if (pool_parts > 0) {
            /* guided (pool.h): big claims first, small ones last; a claim of up to
             * kernels_far_m input rows at least 16 rows per far stream (kernels.h), else 32
             * (above). 130m at 2 threads on the AMD host, interleaved (docs/performance.md):
             * the caller's wait at lm_head went from 46-77 to 1-2 us a token, a step
             * 0.93-0.97x (F32, BF16), 0.84x (q8) */
            const int far = rows <= kernels_far_m && kernels_far_rows < INT_MAX;
            j.guided = pool_parts * nt;
            atomic_init(&j.ends, pool_ends_pack(0, out));
            j.block = pool_parts_min > 0 ? pool_parts_min : far ? 4 * FAR_MIN_ROWS : 32;
        }
        /* the q8p layout: claims of whole panels (each one run of memory, kernels.h); at one
         * row on 8-bit activations, guided claims of at least as many panels as
         * gemv_q8p_a8 reads side by side, so that no claim falls back to fewer streams
         * (130m q8, four streams on the AMD host: a step 0.93-0.95x; 370m 0.97x) */
        if (w.t == W_Q8P) j.block = (j.block + Q8P_W - 1) / Q8P_W * Q8P_W;
        if (w.t == W_Q8P && j.act && j.guided && pool_parts_min <= 0) {
            if (j.block < kernels_q8p_streams * Q8P_W) j.block = kernels_q8p_streams * Q8P_W;
            /* in whole groups of them, and an equal share at the end (claim_rule) */
            j.q8p_groups = 1;
        }
    }
    model_run(m, c, mm_part, &j);
}

void model_run(const ss_model *m, ss_ctx *c, pool_fn fn, void *arg)
{
    if (c && c->pool_held)
        pool_run_locked(m->pool, fn, arg, c->prof ? &c->prof_pool : NULL);
    else
        pool_run(m->pool, fn, arg);
}

void mm_cols_small(const float *x, int rows, int in, int ldx, wmat w, const float *bias, int lo,
                   int hi, float *y, int ldy, const q8_act *act)
{
    if (rows <= 0 || lo >= hi) return;
    mm_job j = {.x = x,
                .w = w,
                .bias = bias,
                .rows = rows,
                .in = in,
                .ldx = ldx,
                .out = hi,
                .ldy = ldy,
                .y = y,
                .act = act};
    mm_cols(&j, 0, lo, hi);
}

/* ---- transposed matrices (Mamba-1's x_proj and out_proj) ---------------------------------- */

/* Byte offset of input k0 (a multiple of Q8_BLOCK), output n0 in a q8k layout of N outputs. */
static size_t q8k_off(int N, int k0, int n0)
{
    return (size_t)(k0 / Q8_BLOCK) * Q8K_ROWS * 4 * (size_t)N + 4 * (size_t)n0;
}

int fused_prefetch = 1; /* internal.h */
int fused_units = -1;
int fused_max_rows = 16; /* internal.h; mamba.c FUSE_ROWS */

void wmat_prefetch_rows(wmat w, int N, int k0, int k1)
{
    const size_t es = wmat_esize(w);
    if (w.t == W_Q8P) { /* rows k0 .. k1 - 1 are outputs: their panels */
        const int c0 = k0 / Q8P_W, c1 = (k1 + Q8P_W - 1) / Q8P_W;
        prefetch_l2((const char *)w.p + (size_t)c0 * q8p_panel_bytes(N),
                    (size_t)(c1 - c0) * q8p_panel_bytes(N));
    } else if (!w.bw) { /* rows (8-bit: their values) */
        prefetch_l2((const char *)w.p + (size_t)k0 * N * es, (size_t)(k1 - k0) * N * es);
    } else { /* the far layout: each block's rows */
        for (int b = 0; b < N / w.bw; b++)
            prefetch_l2((const char *)w.p + ((size_t)b * w.bs + (size_t)k0 * w.bw) * es,
                        (size_t)(k1 - k0) * w.bw * es);
    }
}

/* The kernel of w's type (F32, BF16, F16) on the values from element o of w, as gemm_t's
 * arguments (kernels.h). */
static void gemm_t_at(wmat w, size_t o, const float *X, int M, int K, int ldx, int ldw, int bw,
                      size_t bs, int n, float *Y, int ldy)
{
    const kernels *k = kernels_get();
    if (w.t == W_F32)
        k->gemm_t(X, M, K, ldx, (const float *)w.p + o, ldw, bw, bs, n, Y, ldy, 0);
    else if (w.t == W_BF16)
        k->gemm_t_bf16(X, M, K, ldx, (const uint16_t *)w.p + o, ldw, bw, bs, n, Y, ldy, 0);
    else
        k->gemm_t_f16(X, M, K, ldx, (const uint16_t *)w.p + o, ldw, bw, bs, n, Y, ldy, 0);
}

void mm_t_part(wmat w, int N, const float *X, int M, int ldx, int k0, int k1, int n0, int n1,
               float *Y, int ldy)
{
    const int K = k1 - k0, n = n1 - n0, bw = w.bw;
    X += k0;
    Y += n0;
    if (w.t == W_Q8) { /* the q8k layout (kernels.h): per block rows of 4 inputs, then scales */
        kernels_get()->gemm_t_q8k(X, M, K, ldx, (const uint8_t *)w.p + q8k_off(N, k0, n0),
                                  4 * (size_t)N, n, Y, ldy);
    } else if (!bw) { /* plain rows of N */
        gemm_t_at(w, (size_t)k0 * N + (size_t)n0, X, M, K, ldx, N, n, 0, n, Y, ldy);
    } else if (n0 % bw == 0 && n1 % bw == 0) { /* whole blocks of the far layout: one call */
        gemm_t_at(w, (size_t)(n0 / bw) * w.bs + (size_t)k0 * bw, X, M, K, ldx, bw, bw, w.bs, n,
                  Y, ldy);
    } else { /* a block's columns at a time, each part of a block as a plain matrix */
        for (int a = n0; a < n1;) {
            const int c = a / bw, e = n1 < (c + 1) * bw ? n1 : (c + 1) * bw;
            gemm_t_at(w, (size_t)c * w.bs + (size_t)k0 * bw + (size_t)(a % bw), X, M, K, ldx, bw,
                      e - a, 0, e - a, Y + (a - n0), ldy);
            a = e;
        }
    }
}

void mm_t_part_a8(wmat w, int N, const q8_act *x, int k0, int n0, int n1, float *Y)
{
    kernels_get()->gemv_t_q8ka8(x, (const uint8_t *)w.p + q8k_off(N, k0, n0), 4 * (size_t)N,
                                n1 - n0, Y + n0);
}

/* y = x w summed over the segments of K in their tree (+ bias; h += y when h): a grid of nr row
 * ranges x nc column ranges, one part each */
typedef struct mmt_job {
    wmat w;
    int K, N, S, rows, ldx, ldy, nr, nc, unit;
    const float *x, *bias;
    float *y, *h, *stack;
} mmt_job;

void seg_tree_sum(const float *P, size_t stride, int G, size_t n, float *out)
{
    for (size_t i = 0; i < n; i++) {
        float v[SEG_MAX];
        int c = G;
        for (int l = 0; l < G; l++) v[l] = P[(size_t)l * stride + i];
        /* level by level: pairs (2k, 2k+1) -> k; an odd one out moves up alone */
        for (; c > 1; c = (c + 1) / 2)
            for (int k = 0; k < c / 2 + c % 2; k++)
                v[k] = 2 * k + 1 < c ? v[2 * k] + v[2 * k + 1] : v[2 * k];
        out[i] = v[0];
    }
}

_Static_assert(MMT_STACK_FLOATS >= (size_t)MMT_STACK_BUFS * MM_PANEL * MMT_STACK_COLS,
               "mm_t_rows' stack holds a panel of rows");

/* The top subtree of a stack of top buffers of nb floats added into the one below it. */
static void join_top(float *stack, int top, size_t nb)
{
    float *l = stack + (size_t)(top - 2) * nb;
    const float *r = stack + (size_t)(top - 1) * nb;
    for (size_t i = 0; i < nb; i++) l[i] += r[i];
}

/* The rows [r0, r0 + np) and columns [c0, c0 + nc) of y: each segment's product onto a stack of
 * subtrees (sizes 8, 4, 2, 1: a binary counter), the stack summed from its top at the end:
 * the tree of seg_tree_sum. */
static void mmt_block(const mmt_job *j, float *stack, int r0, int np, int c0, int nc)
{
    int size[MMT_STACK_BUFS], top = 0;
    const size_t nb = (size_t)np * nc;
    for (int k0 = 0; k0 < j->K; k0 += j->S) {
        float *b = stack + (size_t)top * nb;
        mm_t_part(j->w, j->N, j->x + (size_t)r0 * j->ldx, np, j->ldx, k0,
                  k0 + j->S < j->K ? k0 + j->S : j->K, c0, c0 + nc, b - c0, nc);
        size[top++] = 1;
        for (; top >= 2 && size[top - 1] == size[top - 2]; top--) {
            join_top(stack, top, nb);
            size[top - 2] *= 2;
        }
    }
    for (; top >= 2; top--) join_top(stack, top, nb); /* the right edge, from the top */
    for (int r = 0; r < np; r++) {
        float *yr = j->y + (size_t)(r0 + r) * j->ldy + c0;
        const float *t = stack + (size_t)r * nc;
        for (int n = 0; n < nc; n++) yr[n] = t[n] + (j->bias ? j->bias[c0 + n] : 0.0f);
        if (j->h) {
            float *hr = j->h + (size_t)(r0 + r) * j->N + c0;
            for (int n = 0; n < nc; n++) hr[n] += yr[n];
        }
    }
}

static void mmt_part(void *arg, int tid, int nt)
{
    const mmt_job *j = arg;
    int r0, r1, n0, n1;
    (void)nt;
    if (tid >= j->nr * j->nc) return;
    pool_range(j->rows, 1, tid / j->nc, j->nr, &r0, &r1);
    pool_range(j->N, j->unit, tid % j->nc, j->nc, &n0, &n1);
    float *stack = j->stack + (size_t)tid * MMT_STACK_FLOATS;
    for (int p0 = r0; p0 < r1; p0 += MM_PANEL) {
        const int np = r1 - p0 < MM_PANEL ? r1 - p0 : MM_PANEL;
        for (int c0 = n0; c0 < n1; c0 += MMT_STACK_COLS)
            mmt_block(j, stack, p0, np, c0, n1 - c0 < MMT_STACK_COLS ? n1 - c0 : MMT_STACK_COLS);
    }
}

void mm_t_rows(const ss_model *m, ss_ctx *c, const float *x, int rows, int ldx, wmat w, int K,
               int N, int S, const float *bias, float *y, int ldy, float *h)
{
    if (rows <= 0 || N <= 0) return;
    const int nt = pool_size(m->pool);
    /* columns in whole vectors; rows too when the columns alone leave threads idle (x_proj: 80
     * columns at 130m) */
    const int unit = 16, units = (N + unit - 1) / unit;
    mmt_job j = {.w = w, .K = K, .N = N, .S = S, .rows = rows, .ldx = ldx, .ldy = ldy,
                 .unit = unit, .x = x, .bias = bias, .y = y, .h = h, .stack = c->tstack};
    j.nc = units < nt ? units : nt;
    j.nr = nt / j.nc < rows ? nt / j.nc : rows;
    if ((size_t)rows * N * K < 100000) {
        j.nr = j.nc = 1;
        mmt_part(&j, 0, 1);
    } else {
        model_run(m, c, mmt_part, &j);
    }
}

void wmat_row(wmat w, int d, int r, float *dst)
{
    const kernels *k = kernels_get();
    if (w.t == W_F32)
        memcpy(dst, (const float *)w.p + (size_t)r * d, (size_t)d * sizeof(float));
    else if (w.t == W_Q8P) { /* output r of its panel: s * q, as widen_q8 */
        const uint8_t *W = (const uint8_t *)w.p + (size_t)(r / Q8P_W) * q8p_panel_bytes(d);
        for (int i = 0; i < d; i++)
            dst[i] = (float)q8k_at(W, Q8P_W, r % Q8P_W, i) *
                     q8k_scl(W, 4 * Q8P_W, i / Q8_BLOCK)[r % Q8P_W];
    } else if (w.t == W_Q8)
        k->widen_q8((const int8_t *)w.p + (size_t)r * d, w.scale + (size_t)r * q8_blocks(d), d,
                    dst);
    else if (w.t == W_BF16)
        k->widen_bf16_pairs((const uint16_t *)w.p + (size_t)r * d, d, dst);
    else
        k->widen_f16((const uint16_t *)w.p + (size_t)r * d, dst, (size_t)d);
}

/* sum of x[i] (sq: of x[i]^2; minus mean first when centred) over i < n, in double: eight
 * running sums (i mod 8) added pairwise at the end. One running sum was a chain of n dependent
 * double adds (~4 cycles each: ~1 us a 768-wide row, paid serially between a decode step's
 * parallel parts, 16 times at 16 streams). The same order for every row and caller. */
static double sum8(const float *x, int n, int sq, double mean)
{
    double a[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) {
            const double v = (double)x[i + k] - mean;
            a[k] += sq ? v * v : v;
        }
    for (int k = 0; i < n; i++, k++) {
        const double v = (double)x[i] - mean;
        a[k] += sq ? v * v : v;
    }
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

void norm_rows(const model_config *c, const float *w, const float *b, const float *x, float *y,
               int rows, int d)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * d;
        float *yr = y + (size_t)r * d;
        if (c->norm == NORM_RMS) {
            /* RMSNorm: x / sqrt(mean(x^2) + eps) * w  (accumulated in double like float64 refs) */
            const double ss = sum8(xr, d, 1, 0);
            float inv = (float)(1.0 / sqrt(ss / d + c->norm_eps));
            for (int i = 0; i < d; i++) yr[i] = xr[i] * inv * w[i];
        } else {
            /* LayerNorm: (x - mean) / sqrt(var + eps) * w + b, biased variance */
            const double mean = sum8(xr, d, 0, 0) / d;
            const double var = sum8(xr, d, 1, mean);
            float inv = (float)(1.0 / sqrt(var / d + c->norm_eps));
            for (int i = 0; i < d; i++) yr[i] = (float)(xr[i] - mean) * inv * w[i] + (b ? b[i] : 0);
        }
    }
}
