/*
 * dense.c - the dense helpers every mixer uses: projections (mm_rows: our threads split the
 * output columns, OpenBLAS or the small-M SIMD kernel inside), rows of embedding-like matrices
 * and the block norms. Shared by mamba.c, mamba2.c and moe.c; depends on nothing above it.
 */
#include "internal.h"
#include "kernels.h"
#include "mixers.h"

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

/*
 * y[rows, out] = x[rows, in] w[out, in]^T (+ bias). Our threads split the output columns (each
 * streams its share of w once); inside, OpenBLAS runs single-threaded: one runtime owns the cores,
 * so no two thread pools spin against each other. Small row counts (decode) use the small-M kernel
 * that streams the weights once for all rows.
 */
typedef struct mm_job {
    const float *x, *bias;
    wmat w;
    int rows, in, ldx, out, ldy;
    float *y;
    float *wide; /* n_threads blocks of wide_floats (16-bit weights, more than 16 rows) */
    size_t wide_floats;
    const float *xt; /* x transposed [in][16] when the broadcast kernel is used, else NULL */
    int block;       /* decode: columns per block taken dynamically, 0 = static ranges */
    atomic_int next; /* next block */
} mm_job;

/* Rows [r0, r0 + nr) of a 16-bit or 8-bit matrix [*, in] as F32 into dst (exact). */
static void widen_rows(const kernels *k, wmat w, int in, int r0, int nr, float *dst)
{
    if (w.t == W_Q8) {
        const size_t nb = (size_t)q8_blocks(in);
        for (int r = 0; r < nr; r++)
            k->widen_q8((const int8_t *)w.p + (size_t)(r0 + r) * in,
                        w.scale + (size_t)(r0 + r) * nb, in, dst + (size_t)r * in);
    } else {
        (w.t == W_BF16 ? k->widen_bf16 : k->widen_f16)((const uint16_t *)w.p + (size_t)r0 * in, dst,
                                                       (size_t)nr * in);
    }
}

/* Columns [lo, hi) of the product, on the calling thread (scratch slot tid). */
static void mm_cols(const mm_job *j, int tid, int lo, int hi)
{
    const kernels *k = kernels_get();
    const int n = hi - lo;
    float *yc = j->y + lo;
    if (j->w.t == W_F32) {
        const float *wc = (const float *)j->w.p + (size_t)lo * j->in;
        if (j->xt) {
            /* 9..16 rows: broadcast form, no horizontal sums (1.7x the dot-product kernel) */
            k->gemm_bcast(j->xt, j->rows, j->in, wc, n, yc, j->ldy);
        } else if (j->rows <= 16) {
            /* streams w once: 33-36 GB/s per core measured, OpenBLAS sgemv 30 */
            k->gemm_small(j->x, j->rows, j->in, j->ldx, wc, n, yc, j->ldy);
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->rows, n, j->in, 1.0f, j->x,
                        j->ldx, wc, j->in, 0.0f, yc, j->ldy);
        }
    } else if (j->rows <= 16) {
        /* 16-bit or 8-bit weights widened (and scaled) in registers, streamed once */
        if (j->w.t == W_Q8) {
            const size_t nb = (size_t)q8_blocks(j->in);
            k->gemm_small_q8(j->x, j->rows, j->in, j->ldx,
                             (const int8_t *)j->w.p + (size_t)lo * j->in,
                             j->w.scale + (size_t)lo * nb, n, yc, j->ldy);
        } else {
            const uint16_t *wc = (const uint16_t *)j->w.p + (size_t)lo * j->in;
            (j->w.t == W_BF16 ? k->gemm_small_bf16 : k->gemm_small_f16)(j->x, j->rows, j->in,
                                                                        j->ldx, wc, n, yc, j->ldy);
        }
    } else {
        /* 16-bit or 8-bit weights, prefill: widen WIDE_ROWS weight rows (exact) into this
         * thread's scratch, then an F32 GEMM on them (OpenBLAS). Widening tiles for the
         * broadcast kernel at 9..16 rows was tried: 10-20 % slower than the kernel above. */
        float *wide = j->wide + (size_t)tid * j->wide_floats;
        for (int r0 = 0; r0 < n; r0 += WIDE_ROWS) {
            const int nr = n - r0 < WIDE_ROWS ? n - r0 : WIDE_ROWS;
            widen_rows(k, j->w, j->in, lo + r0, nr, wide);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->rows, nr, j->in, 1.0f, j->x,
                        j->ldx, wide, j->in, 0.0f, yc + r0, j->ldy);
        }
    }
    if (j->bias) {
        for (int r = 0; r < j->rows; r++)
            for (int o = 0; o < n; o++) yc[(size_t)r * j->ldy + o] += j->bias[lo + o];
    }
}

/*
 * A thread's share: prefill takes one static range (large contiguous GEMMs); decode, which is
 * memory-bound and sensitive to a thread the host slows down, takes blocks as it goes.
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
    for (int b; (b = atomic_fetch_add(&j->next, 1)) * j->block < j->out;) {
        int lo = b * j->block, hi = lo + j->block < j->out ? lo + j->block : j->out;
        mm_cols(j, tid, lo, hi);
    }
}

/*
 * y[rows, out] = x[rows, in] w[out, in]^T (+ bias). The pool's threads split the output columns
 * (each streams its share of w once); inside, OpenBLAS runs single-threaded: one set of threads
 * owns the cores. Row counts up to 16 (decode) use our small-M kernel, which streams the weights
 * once for all rows (16-bit and 8-bit weights are widened in registers). c provides the scratch
 * for widening 16-bit and 8-bit weights in prefill.
 */
void mm_rows(const ss_model *m, ss_ctx *c, const float *x, int rows, int in, int ldx, wmat w,
             const float *bias, int out, float *y, int ldy)
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
                .wide_floats = c->wide_floats};
    if (w.t != W_F32 && rows > 16 && (size_t)WIDE_ROWS * in > c->wide_floats) {
        /* scratch missing (cannot happen after ctx_reserve): stay correct, one row at a time */
        for (int r = 0; r < rows; r++)
            mm_rows(m, c, x + (size_t)r * ldx, 1, in, ldx, w, bias, out, y + (size_t)r * ldy, ldy);
        return;
    }
    const kernels *k = kernels_get();
    if (w.t == W_F32 && rows > 8 && rows <= 16 && k->gemm_bcast &&
        (size_t)in * 16 <= c->xt_floats) {
        for (int kk = 0; kk < in; kk++) {
            float *col = c->xt + (size_t)kk * 16;
            for (int r = 0; r < 16; r++) col[r] = r < rows ? x[(size_t)r * ldx + kk] : 0.0f;
        }
        j.xt = c->xt;
    }
    if ((size_t)rows * out * in < 100000 || out < 32) {
        mm_part(&j, 0, 1);
        return;
    }
    if (rows <= 16) { /* about 8 blocks per thread, whole 16-column tiles */
        const int nt = pool_size(m->pool);
        j.block = ((out + 8 * nt - 1) / (8 * nt) + 15) & ~15;
        if (j.block < 64) j.block = 64;
        /* a short matrix (x_proj: 80 columns at 130m) in 64-column blocks split 64 + 16: one
         * block per thread instead, in whole 8-column tiles (40 + 40) */
        if (out < 2 * 64 * nt) j.block = ((out + nt - 1) / nt + 7) & ~7;
    }
    pool_run(m->pool, mm_part, &j);
}

void mm_cols_small(const float *x, int rows, int in, int ldx, wmat w, const float *bias, int lo,
                   int hi, float *y, int ldy)
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
                .y = y};
    mm_cols(&j, 0, lo, hi);
}

void wmat_row(wmat w, int d, int r, float *dst)
{
    const kernels *k = kernels_get();
    if (w.t == W_F32)
        memcpy(dst, (const float *)w.p + (size_t)r * d, (size_t)d * sizeof(float));
    else if (w.t == W_Q8)
        k->widen_q8((const int8_t *)w.p + (size_t)r * d, w.scale + (size_t)r * q8_blocks(d), d,
                    dst);
    else if (w.t == W_BF16)
        k->widen_bf16((const uint16_t *)w.p + (size_t)r * d, dst, (size_t)d);
    else
        k->widen_f16((const uint16_t *)w.p + (size_t)r * d, dst, (size_t)d);
}

void norm_rows(const model_config *c, const float *w, const float *b, const float *x, float *y,
               int rows, int d)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * d;
        float *yr = y + (size_t)r * d;
        if (c->norm == NORM_RMS) {
            /* RMSNorm: x / sqrt(mean(x^2) + eps) * w  (accumulated in double like float64 refs) */
            double ss = 0;
            for (int i = 0; i < d; i++) ss += (double)xr[i] * xr[i];
            float inv = (float)(1.0 / sqrt(ss / d + c->norm_eps));
            for (int i = 0; i < d; i++) yr[i] = xr[i] * inv * w[i];
        } else {
            /* LayerNorm: (x - mean) / sqrt(var + eps) * w + b, biased variance */
            double mean = 0, var = 0;
            for (int i = 0; i < d; i++) mean += xr[i];
            mean /= d;
            for (int i = 0; i < d; i++) var += ((double)xr[i] - mean) * ((double)xr[i] - mean);
            float inv = (float)(1.0 / sqrt(var / d + c->norm_eps));
            for (int i = 0; i < d; i++) yr[i] = (float)(xr[i] - mean) * inv * w[i] + (b ? b[i] : 0);
        }
    }
}
