/*
 * mamba.c - the forward pass: model open/close, scratch contexts and ss_model_eval().
 *
 * All tokens of a batch (several sequences, each with its own state) travel together through the
 * per-token projections, which become one GEMM per weight matrix (OpenBLAS); only the causal conv
 * and the selective scan walk each sequence in order. Long inputs are processed in rounds of at
 * most ROUND_ROWS tokens so scratch memory stays bounded (a few MB per 1k of d_inner).
 *
 * Mamba-1 block, per token (HF MambaMixer, the equations of docs/model-format.md):
 *   [x | z] = in_proj(u)                                  x, z: [Di]
 *   x = SiLU(conv1d_causal(x) + conv_bias)                depthwise, kernel K
 *   [dt_r | B | C] = x_proj(x)                            [R], [N], [N]
 *   dt = softplus(dt_proj(dt_r) + dt_bias)                [Di]
 *   s[i,n] = exp(dt[i] A[i,n]) s[i,n] + dt[i] B[n] x[i]   A = -exp(A_log)
 *   y[i] = (sum_n s[i,n] C[n] + D[i] x[i]) * SiLU(z[i])
 *   out = out_proj(y)
 * Each block is pre-norm residual: h += block(norm(h)); logits = lm_head(norm_f(h)).
 */
#include "internal.h"
#include "kernels.h"
#include "mixers.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ss_util.h"

/* Tokens per round; sized so the scratch of a 2.8b model stays under ~100 MB. */
#define ROUND_ROWS 256
/* Rows (sequences of a decode step) up to which a Mamba-1 layer takes two parallel steps
 * (mamba1_fused) instead of four. */
#define FUSE_ROWS 16

/* ---- model -------------------------------------------------------------------------------- */

ss_model_params ss_model_default_params(void)
{
    return (ss_model_params){.n_threads = 0};
}

static void fused_from_env(void)
{
    const char *e = getenv("SS_UNITS");
    if (e && (!strcmp(e, "0") || !strcmp(e, "1"))) fused_units = *e - '0';
    const char *r = getenv("SS_FUSED_ROWS");
    if (r && atoi(r) >= 1 && atoi(r) <= FUSE_ROWS) fused_max_rows = atoi(r);
    const char *a8 = getenv("SS_DT_A8");
    if (a8 && (!strcmp(a8, "0") || !strcmp(a8, "1"))) dt_a8 = *a8 - '0';
}

ss_err ss_model_open(ss_model **out, const char *dir, const ss_model_params *params)
{
    static pthread_once_t fused_once = PTHREAD_ONCE_INIT;
    pthread_once(&fused_once, fused_from_env);
    ss_model_params def = ss_model_default_params();
    if (!params) params = &def;
    ss_model *m = calloc(1, sizeof *m);
    if (!m) return ss_fail(SS_ERR_NOMEM, "out of memory");
    ss_err err = model_load(m, dir, params);
    /* Our pool's threads split every matrix product; OpenBLAS runs inside them single-threaded
     * (two thread pools spinning against each other on the same cores cost 30 % here). */
    openblas_set_num_threads(1);
    if (!err) err = state_spares_new(m);
    if (err) {
        model_unload(m);
        free(m);
        return err;
    }
    *out = m;
    return SS_OK;
}

void ss_model_close(ss_model *m)
{
    if (!m) return;
    state_spares_free(m);
    model_unload(m);
    free(m);
}

const ss_model_info *ss_model_get_info(const ss_model *m)
{
    return &m->info;
}

/* ---- scratch ------------------------------------------------------------------------------ */

ss_err ss_ctx_new(const ss_model *m, ss_ctx **out)
{
    ss_ctx *c = calloc(1, sizeof *c);
    if (!c) return ss_fail(SS_ERR_NOMEM, "out of memory");
    c->m = m;
    *out = c;
    return SS_OK;
}

static void ctx_release(ss_ctx *c)
{
    float **bufs[] = {&c->h,   &c->xn,     &c->proj, &c->xc,  &c->dbc,  &c->dt,      &c->y,
                      &c->out, &c->router, &c->eh,   &c->ein, &c->eout, &c->route_w, &c->px,
                      &c->po,  &c->dbcp, &c->tstack};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        *bufs[i] = NULL;
    }
    free((void *)c->segdone);
    free((void *)c->segnode);
    c->segdone = c->segnode = NULL;
    free(c->segact);
    c->segact = NULL;
    free(c->route_idx);
    free(c->perm);
    free(c->counts);
    free(c->grows);
    free(c->gw);
    free(c->wide);
    c->wide = NULL;
    c->route_idx = c->perm = c->counts = c->grows = NULL;
    c->gw = NULL;
    c->rows = 0;
}

void ss_ctx_free(ss_ctx *c)
{
    if (!c) return;
    ctx_release(c);
    free(c->logits);
    free(c->spans);
    free(c->pos);
    free(c->gid);
    free(c->gmembers);
    free(c->act8);
    free(c);
}

static float *alloc_f(size_t n)
{
    return aligned_alloc(64, ((n ? n : 1) * sizeof(float) + 63) & ~(size_t)63);
}

/* Make room for `rows` rows. Buffers never shrink. */
static ss_err ctx_reserve(ss_ctx *c, int rows)
{
    if (rows <= c->rows) return SS_OK;
    const ss_model *m = c->m;
    const model_config *cf = &m->cfg;
    size_t T = (size_t)rows, d = (size_t)cf->d_model, Di = (size_t)cf->d_inner;
    size_t C = (size_t)m->info.conv_channels, N = (size_t)cf->d_state;
    size_t proj = m->info.arch == SS_ARCH_MAMBA2 ? Di + C + (size_t)cf->n_heads : 2 * Di;
    size_t dbc = (size_t)cf->dt_rank + 2 * N;
    size_t E = (size_t)(cf->moe.n_experts ? cf->moe.n_experts : 1);
    size_t k = (size_t)(cf->moe.top_k ? cf->moe.top_k : 1);
    size_t de = (size_t)(cf->moe.expert_width ? cf->moe.expert_width : 1);
    ctx_release(c);
    c->h = alloc_f(T * d);
    c->xn = alloc_f(T * d);
    c->proj = alloc_f(T * proj);
    c->xc = alloc_f(T * C);
    c->dbc = alloc_f(T * dbc);
    c->dt = alloc_f(T * Di);
    c->y = alloc_f(T * Di);
    c->out = alloc_f(T * d);
    int ok = c->h && c->xn && c->proj && c->xc && c->dbc && c->dt && c->y && c->out;
    if (ok && m->fused) { /* Mamba-1 layers: the fused decode step's partial products */
        const size_t G = (size_t)mamba1_segs((int)Di);
        c->px = alloc_f(G * FUSE_ROWS * dbc);
        c->po = alloc_f(G * FUSE_ROWS * d);
        c->dbcp = alloc_f((size_t)m->n_threads * FUSE_ROWS * dbc);
        c->segdone = calloc(2 * G, sizeof *c->segdone);
        c->segnode = calloc((size_t)FUSE_BLOCKS * SEG_MAX, sizeof *c->segnode);
        c->tstack = alloc_f((size_t)m->n_threads * MMT_STACK_FLOATS);
        ok = c->px && c->po && c->dbcp && c->segdone && c->segnode && c->tstack;
        if (ok && m->act8) { /* each segment's inputs quantised (q8 batch-1 decode) */
            c->segact = aligned_alloc(64, G * q8_act_bytes(mamba1_seg((int)Di)));
            ok = c->segact != NULL;
        }
    }
    if (ok && m->info.arch == SS_ARCH_MOE_MAMBA) {
        c->router = alloc_f(T * E);
        c->eh = alloc_f(T * k * 2 * de);
        c->ein = alloc_f(T * k * d);
        c->eout = alloc_f(T * k * d);
        c->route_w = alloc_f(T * k);
        c->route_idx = malloc(T * k * sizeof(int));
        c->perm = malloc(T * k * sizeof(int));
        size_t g = (size_t)(cf->moe.group_size ? cf->moe.group_size : 1);
        c->counts = malloc(2 * (E + 1) * sizeof(int));
        c->grows = malloc(g * sizeof(int));
        c->gw = alloc_f(g);
        ok = c->router && c->eh && c->ein && c->eout && c->route_w && c->route_idx && c->perm &&
             c->counts && c->grows && c->gw;
    }
    if (ok && strcmp(m->info.weights, "q8") == 0) {
        /* the widest K a weight matrix has: d, Di, de (router/up: d; out/down: Di, de) */
        size_t kmax = d > Di ? d : Di;
        if ((size_t)cf->moe.expert_width > kmax) kmax = (size_t)cf->moe.expert_width;
        c->wide_floats = (size_t)WIDE_ROWS * kmax;
        c->wide = alloc_f(c->wide_floats * (size_t)m->n_threads);
        ok = c->wide != NULL;
    }
    if (!ok) {
        ctx_release(c);
        return ss_fail(SS_ERR_NOMEM, "cannot allocate scratch for %d rows", rows);
    }
    c->rows = rows;
    return SS_OK;
}

static ss_err ctx_reserve_logits(ss_ctx *c, int rows)
{
    if (rows <= c->logits_rows) return SS_OK;
    free(c->logits);
    c->logits = alloc_f((size_t)rows * (size_t)c->m->cfg.vocab);
    c->logits_rows = c->logits ? rows : 0;
    return c->logits ? SS_OK : ss_fail(SS_ERR_NOMEM, "cannot allocate logits");
}

/* ---- Mamba-1 mixer ------------------------------------------------------------------------ */

/* RMS-normalise v[n] in place without a weight (falcon-mamba's B/C/dt norms). */
static void rms_inplace(float *v, int n, float eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)v[i] * v[i];
    float inv = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) v[i] *= inv;
}

/*
 * Causal depthwise conv + SiLU over the rows of each span, channels [0, C) of `in` (row stride
 * ld_in), updating the conv windows in the states. out: [T, C].
 */
typedef struct conv_job {
    const ss_model *m;
    const layer *ly;
    const span *sp;
    int n_sp, ld_in, C;
    int off; /* conv_after: channel c is column off + c of the projection */
    const float *in;
    float *out;
} conv_job;

/* Channels [c0, c1) of every span. The kernel's result for a channel does not depend on the
 * range, as long as both ends are multiples of 16 whenever C is (else the whole of [0, C) goes
 * to the generic kernel: conv_rows and the callers of conv_after keep to that). */
static void conv_range(const conv_job *j, int c0, int c1)
{
    const int K = j->m->cfg.conv_kernel;
    const size_t L_off = (size_t)j->ly->state_index * (size_t)j->C * (size_t)K;
    for (int s = 0; s < j->n_sp; s++) {
        conv_args a = {.T = j->sp[s].n,
                       .c0 = c0,
                       .c1 = c1,
                       .K = K,
                       .in = j->in + (size_t)j->sp[s].row * j->ld_in,
                       .ld_in = j->ld_in,
                       .w = j->ly->conv_w,
                       .w16 = j->ly->conv_w16,
                       .bias = j->ly->conv_b,
                       .win = ss_state_data(j->sp[s].state) + L_off,
                       .out = j->out + (size_t)j->sp[s].row * j->C,
                       .ld_out = j->C};
        kernels_get()->conv(&a);
    }
}

static void conv_part(void *arg, int tid, int nt)
{
    const conv_job *j = arg;
    int c0, c1;
    pool_range(j->C, j->C % 16 ? 1 : 16, tid, nt, &c0, &c1);
    if (c0 < c1) conv_range(j, c0, c1);
}

/* Decode: in_proj's columns [lo, hi) are done; those in [off, off + C) are conv channels
 * (mm_rows_then; off and C multiples of 16, so the channel ranges are too). */
static void conv_after(void *user, int lo, int hi)
{
    const conv_job *j = user;
    lo -= j->off;
    hi -= j->off;
    if (lo < 0) lo = 0;
    if (hi > j->C) hi = j->C;
    if (lo < hi) conv_range(j, lo, hi);
}

void conv_rows(const ss_model *m, ss_ctx *c, const layer *ly, const span *sp, int n_sp,
               const float *in, int ld_in, float *out, int C)
{
    conv_job j = {
        .m = m, .ly = ly, .sp = sp, .n_sp = n_sp, .ld_in = ld_in, .C = C, .in = in, .out = out};
    int T = 0;
    for (int s = 0; s < n_sp; s++) T += sp[s].n;
    /* one decode token of 130m's 1536 channels takes ~2 us: less than the threads meeting */
    if (C < 256 || (size_t)T * C <= 4096)
        conv_part(&j, 0, 1);
    else
        model_run(m, c, conv_part, &j);
}

void in_proj_conv(ss_model *m, ss_ctx *c, const layer *ly, const span *sp, int n_sp, int T,
                  int W, int off, int C)
{
    const int d = m->cfg.d_model;
    if (T <= 16 && off % 16 == 0 && C % 16 == 0) {
        /* each block of conv channels on the thread that produced it, inside in_proj's step
         * (one serial step fewer; the same kernel on 16-channel-aligned ranges: the same bits) */
        conv_job j = {.m = m, .ly = ly, .sp = sp, .n_sp = n_sp, .ld_in = W, .C = C, .off = off,
                      .in = c->proj + off, .out = c->xc};
        mm_rows_then(m, c, c->xn, T, d, d, ly->in_proj_w, ly->in_proj_b, W, c->proj, W,
                     conv_after, &j);
        prof_mark(c, SS_PHASE_IN_PROJ);
        return;
    }
    mm_rows(m, c, c->xn, T, d, d, ly->in_proj_w, ly->in_proj_b, W, c->proj, W);
    prof_mark(c, SS_PHASE_IN_PROJ);
    conv_rows(m, c, ly, sp, n_sp, c->proj + off, W, c->xc, C);
    prof_mark(c, SS_PHASE_CONV);
}

/* h[rows, d] += out[rows, d], columns [lo, hi): the residual add inside out_proj's step. */
typedef struct residual_job {
    float *h;
    const float *out;
    int rows, d;
} residual_job;

static void residual_after(void *user, int lo, int hi)
{
    const residual_job *j = user;
    for (int r = 0; r < j->rows; r++) {
        float *h = j->h + (size_t)r * j->d;
        const float *o = j->out + (size_t)r * j->d;
        for (int i = lo; i < hi; i++) h[i] += o[i];
    }
}

void out_proj_residual(ss_model *m, ss_ctx *c, const layer *ly, int T)
{
    const int d = m->cfg.d_model, Di = m->cfg.d_inner;
    residual_job rj = {.h = c->h, .out = c->out, .rows = T, .d = d};
    mm_rows_then(m, c, c->y, T, Di, Di, ly->out_proj_w, ly->out_proj_b, d, c->out, d,
                 residual_after, &rj);
    prof_mark(c, SS_PHASE_OUT_PROJ);
}

int dt_a8 = 1; /* internal.h */

/* dt_proj + the scan of channels [c0, c1) of every span (dt computed first when the job fuses
 * it), with [dt_r | B | C] read from dbc (rows of R + 2N). One row on 8-bit weights in panels
 * (--weights q8 at batch-1 decode, dt_a8): dt_r quantised to 8 bits and dt_proj's integer panel
 * kernel, as every other projection of that step (130m, this host, interleaved: 0.97 of the
 * step with F32 activations; docs/performance.md). */
static void scan1_range(const scan_job *j, int c0, int c1, const float *dbc)
{
    const model_config *cf = &j->m->cfg;
    const int Di = cf->d_inner, N = cf->d_state, R = cf->dt_rank, ldbc = R + 2 * N;
    const ss_ctx *c = j->c;
    if (j->fuse_dt) { /* dt = dt_proj(dt_r) + b for these channels: rows c0..c1 of W */
        const int T = j->sp[j->n_sp - 1].row + j->sp[j->n_sp - 1].n;
        const wmat w = j->ly->dt_proj_w;
        char mem[2048] __attribute__((aligned(64)));
        q8_act a8, *act = NULL;
        if (dt_a8 && T == 1 && w.t == W_Q8P && j->m->act8 && q8_act_bytes(R) <= sizeof mem) {
            q8_act_init(&a8, mem, R);
            kernels_get()->quantize_act8(&a8, dbc);
            act = &a8;
        }
        mm_cols_small(dbc, T, R, ldbc, w, j->ly->dt_proj_b, c0, c1, c->dt, Di, act);
    }
    for (int q = 0; q < j->n_sp; q++) {
        const size_t r = (size_t)j->sp[q].row;
        scan1_args a = {.T = j->sp[q].n,
                        .c0 = c0,
                        .c1 = c1,
                        .N = N,
                        .dt = c->dt + r * Di,
                        .ldd = Di,
                        .x = c->xc + r * Di,
                        .ldx = Di,
                        .z = c->proj + r * 2 * Di + Di,
                        .ldz = 2 * Di,
                        .B = dbc + r * ldbc + R,
                        .C = dbc + r * ldbc + R + N,
                        .ldbc = ldbc,
                        .A = j->ly->A,
                        .A16 = j->ly->A16,
                        .D = j->ly->D,
                        .s = ss_state_data(j->sp[q].state) + j->ssm_off,
                        .y = c->y + r * Di,
                        .ldy = Di,
                        .dsum = ss_state_decay(j->sp[q].state) +
                                (size_t)j->ly->state_index * Di};
        kernels_get()->scan1(&a);
    }
}

static void scan1_part(void *arg, int tid, int nt)
{
    const scan_job *j = arg;
    const int Di = j->m->cfg.d_inner;
    int c0, c1;
    pool_range(Di, Di % 16 ? 1 : 16, tid, nt, &c0, &c1);
    if (c0 < c1) scan1_range(j, c0, c1, j->c->dbc);
}

/* falcon-mamba's RMS norms of dt_r, B and C, rows of dbc */
static void mixer_rms(const model_config *cf, float *dbc, int T)
{
    const int R = cf->dt_rank, N = cf->d_state, ldbc = R + 2 * N;
    for (int t = 0; t < T; t++) {
        float *r = dbc + (size_t)t * ldbc;
        rms_inplace(r, R, cf->mixer_rms_eps);
        rms_inplace(r + R, N, cf->mixer_rms_eps);
        rms_inplace(r + R + N, N, cf->mixer_rms_eps);
    }
}

/*
 * A Mamba-1 layer of a decode step (T <= FUSE_ROWS rows) in two parallel steps, not four. The
 * input channels are cut into G segments of S (mamba1_seg): x_proj and out_proj are sums over
 * the channels, and their transposed kernels (kernels.h gemm_t) give a sum over segments the
 * same bits as mm_t_rows does for a prompt, so each thread can compute its segments' part of
 * them where the channels are produced:
 *   step 1: in_proj, each block of x channels convolved on the thread that produced it (as
 *           before), and x_proj's partial product of a segment by the thread that completes its
 *           channels (segdone counts them);
 *   step 2: per segment taken: [dt_r | B | C] = the sum of the G partials (each part sums them
 *           once, into its own rows), dt_proj and the scan of the segment's channels, then
 *           out_proj's partial product over them, summed up the tree by whichever part finishes
 *           a node's second child; the part that completes the root adds it (+ bias) into the
 *           residual stream (fused1_tree_up).
 */
typedef struct fused1_job {
    scan_job sj;
    conv_job cj;
    int S, G, T;
    int a8; /* --weights q8, one row: 8-bit activations (each segment's, quantised by its part) */
    _Atomic uint64_t ends; /* step 2: the segments not taken, [lo, hi) (pool_ends_pack) */
    int B;               /* step 2 in units (fused_units): column blocks per segment, else 1 */
    atomic_int unit;     /* units: the next one, segment-major */
    atomic_int scan;     /* units: the next segment to scan */
} fused1_job;

/* Columns [*n0, *n1) of out_proj's block b of B (multiples of 16 but the end). */
static void fused1_block(int d, int b, int B, int *n0, int *n1)
{
    *n0 = b * d / B & ~15;
    *n1 = b + 1 == B ? d : (b + 1) * d / B & ~15;
}

/*
 * Segment l's partial product of a transposed matrix over the channels [s0, s1) of x (rows at
 * stride Di) into out: with 8-bit activations (j->a8), the segment's channels quantised first
 * (into its own scratch: one part per segment at a time), then the integer kernel.
 */
static void fused1_part(const fused1_job *j, wmat w, int N, const float *x, int l, int s0, int s1,
                        float *out)
{
    ss_ctx *c = j->sj.c;
    const int Di = j->sj.m->cfg.d_inner;
    if (!j->a8) {
        mm_t_part(w, N, x, j->T, Di, s0, s1, 0, N, out, N);
        return;
    }
    q8_act a;
    q8_act_init(&a, (char *)c->segact + (size_t)l * q8_act_bytes(j->S), s1 - s0);
    kernels_get()->quantize_act8(&a, x + s0);
    mm_t_part_a8(w, N, &a, s0, 0, N, out);
}

static void fused1_in_after(void *user, int lo, int hi)
{
    fused1_job *j = user;
    const model_config *cf = &j->sj.m->cfg;
    const int Di = cf->d_inner, ldbc = cf->dt_rank + 2 * cf->d_state;
    ss_ctx *c = j->sj.c;
    conv_after(&j->cj, lo, hi);
    if (hi > Di) hi = Di;
    for (int l = lo / j->S; lo < hi && l * j->S < hi; l++) {
        const int s0 = l * j->S, s1 = s0 + j->S < Di ? s0 + j->S : Di;
        const int n = (hi < s1 ? hi : s1) - (lo > s0 ? lo : s0);
        if (atomic_fetch_add(&c->segdone[l], n) + n == s1 - s0)
            fused1_part(j, j->sj.ly->x_proj_t, ldbc, c->xc, l, s0, s1,
                        c->px + (size_t)l * j->T * ldbc);
    }
}

/*
 * Segment l's partial product of out_proj is done (its columns of block b: all of them unless
 * step 2 runs in units): up the tree (internal.h seg_tree_sum), each node summed (left += right,
 * in the left child's buffer) by the part that finishes its second child; the part that completes
 * the root adds it (+ bias) into the residual stream. Each block has a tree of its own.
 */
static void fused1_tree_up(fused1_job *j, int l, int b)
{
    const ss_model *m = j->sj.m;
    ss_ctx *c = j->sj.c;
    const int d = m->cfg.d_model;
    const size_t rows = (size_t)j->T * d;
    int n0, n1; /* the columns of this block (all of them when B = 1): their own tree */
    fused1_block(d, b, j->B, &n0, &n1);
    _Atomic int *node = c->segnode + (size_t)b * SEG_MAX;
    int id = l, h = 0, base = 0; /* node (h, id) covers leaves [id << h, (id + 1) << h) */
    while (!(id == 0 && (1 << h) >= j->G)) {
        const int sib = id ^ 1;
        if ((sib << h) < j->G) { /* two children: the second to finish sums them */
            if (atomic_fetch_add(&node[base + (id >> 1)], 1) == 0) return;
            float *L = c->po + (size_t)((id & ~1) << h) * rows;
            const float *R = c->po + (size_t)((id | 1) << h) * rows;
            for (int t = 0; t < j->T; t++)
                for (size_t i = (size_t)t * d + n0; i < (size_t)t * d + n1; i++) L[i] += R[i];
        }
        base += SEG_MAX >> (h + 1);
        id >>= 1;
        h++;
    }
    const float *bias = j->sj.ly->out_proj_b;
    for (int t = 0; t < j->T; t++) {
        const float *o = c->po + (size_t)t * d;
        float *hr = c->h + (size_t)t * d;
        for (int i = n0; i < n1; i++) hr[i] += bias ? o[i] + bias[i] : o[i];
    }
}

/*
 * Step 2's next segment from the bottom or (top) the top of those not taken (pool_ends), -1 when
 * none is left; with peek, the one a claim would take, not taken.
 */
static int fused1_claim(fused1_job *j, int top, int peek)
{
    uint64_t v = atomic_load_explicit(&j->ends, memory_order_relaxed);
    for (;;) {
        const int lo = (int)(uint32_t)v, hi = (int)(v >> 32);
        if (lo >= hi) return -1;
        if (peek) return top ? hi - 1 : lo;
        const uint64_t nv = top ? pool_ends_pack(lo, hi - 1) : pool_ends_pack(lo + 1, hi);
        if (atomic_compare_exchange_weak_explicit(&j->ends, &v, nv, memory_order_relaxed,
                                                  memory_order_relaxed))
            return top ? hi - 1 : lo;
    }
}

/* What segment l's dt_proj and scan read from memory, prefetched into L2: its rows of dt_proj
 * and A, and each sequence's SSM state of its channels (a few KB each, far apart, too short for
 * the hardware prefetchers to catch: cold they stalled a thread for ~3x the scan's arithmetic) */
static void fused1_prefetch(const fused1_job *j, int l)
{
    const model_config *cf = &j->sj.m->cfg;
    const int Di = cf->d_inner, N = cf->d_state, R = cf->dt_rank;
    const int s0 = l * j->S, s1 = s0 + j->S < Di ? s0 + j->S : Di;
    const size_t c0 = (size_t)s0, n = (size_t)(s1 - s0);
    if (!fused_prefetch) return;
    wmat_prefetch_rows(j->sj.ly->dt_proj_w, R, s0, s1);
    prefetch_l2(j->sj.ly->A + c0 * N, n * N * sizeof(float));
    for (int q = 0; q < j->sj.n_sp; q++)
        prefetch_l2(ss_state_data(j->sj.sp[q].state) + j->sj.ssm_off + c0 * N,
                    n * N * sizeof(float));
}

/*
 * Step 2 in units (fused_units; many threads): first the scans, one segment a claim (and on
 * 8-bit activations its outputs quantised), each flagged when done; then each segment's out_proj
 * partial cut into B column blocks, claimed segment-major, a unit waiting for its segment's flag
 * (rarely: every scan was claimed before any unit, and they ran side by side). Each column is one
 * chain over k and the tree is summed per block: the same bits as whole segments. 16 segments for
 * 16 threads left the step as long as the slowest thread's segment; 64 units for 16 threads,
 * 0.86-0.98 of its time on the device's Xeon at 8 and 16 threads (docs/performance.md).
 */
static void fused1_units(fused1_job *j, float *dbc)
{
    const model_config *cf = &j->sj.m->cfg;
    const int Di = cf->d_inner, d = cf->d_model, ldbc = cf->dt_rank + 2 * cf->d_state;
    const size_t rows = (size_t)j->T * ldbc;
    ss_ctx *c = j->sj.c;
    _Atomic int *scanned = c->segdone + j->G;
    /* first the scans, a segment per claim (all parts at once), then the units */
    for (int l, summed = 0;
         (l = atomic_fetch_add_explicit(&j->scan, 1, memory_order_relaxed)) < j->G;) {
        const int c0 = l * j->S, c1 = c0 + j->S < Di ? c0 + j->S : Di;
        if (!summed) { /* x_proj's partials in their tree (seg_tree_sum, as mm_t_rows) */
            seg_tree_sum(c->px, rows, j->G, rows, dbc);
            if (cf->has_mixer_rms) mixer_rms(cf, dbc, j->T);
            summed = 1;
        }
        scan1_range(&j->sj, c0, c1, dbc);
        if (j->a8) {
            q8_act a;
            q8_act_init(&a, (char *)c->segact + (size_t)l * q8_act_bytes(j->S), c1 - c0);
            kernels_get()->quantize_act8(&a, c->y + c0);
        }
        atomic_store_explicit(&scanned[l], 1, memory_order_release);
    }
    for (int u;
         (u = atomic_fetch_add_explicit(&j->unit, 1, memory_order_relaxed)) < j->G * j->B;) {
        const int l = u / j->B, b = u % j->B;
        const int c0 = l * j->S, c1 = c0 + j->S < Di ? c0 + j->S : Di;
        while (!atomic_load_explicit(&scanned[l], memory_order_acquire)) cpu_pause();
        int n0, n1;
        fused1_block(d, b, j->B, &n0, &n1);
        float *po = c->po + (size_t)l * j->T * d;
        if (j->a8) {
            q8_act a;
            q8_act_init(&a, (char *)c->segact + (size_t)l * q8_act_bytes(j->S), c1 - c0);
            mm_t_part_a8(j->sj.ly->out_proj_t, d, &a, c0, n0, n1, po);
        } else {
            mm_t_part(j->sj.ly->out_proj_t, d, c->y, j->T, Di, c0, c1, n0, n1, po, d);
        }
        fused1_tree_up(j, l, b);
    }
}

static void fused1_scan_part(void *arg, int part, int np)
{
    fused1_job *j = arg;
    const model_config *cf = &j->sj.m->cfg;
    const int Di = cf->d_inner, d = cf->d_model, ldbc = cf->dt_rank + 2 * cf->d_state;
    const size_t rows = (size_t)j->T * ldbc;
    ss_ctx *c = j->sj.c;
    float *dbc = c->dbcp + (size_t)part * FUSE_ROWS * ldbc;
    /* two ends (pool_ends 2): a part's segments adjacent, so out_proj's rows stream on from one
     * into the next, and the part knows which segment it takes next: prefetched (its dt_proj
     * and scan inputs) while out_proj's partial of this one streams. 130m, 2 threads, this
     * host, interleaved: 0.95 (1 stream) and 0.89 (16) of one end's time on F32 */
    const int top = pool_ends > 1 && (part & 1);
    (void)np;
    if (j->B > 1) {
        fused1_units(j, dbc);
        return;
    }
    if (pool_ends > 1) {
        const int l0 = fused1_claim(j, top, 1);
        if (l0 >= 0) fused1_prefetch(j, l0);
    }
    for (int l, summed = 0; (l = fused1_claim(j, top, 0)) >= 0;) {
        if (!summed) { /* x_proj's partials in their tree (seg_tree_sum, as mm_t_rows) */
            seg_tree_sum(c->px, rows, j->G, rows, dbc);
            if (cf->has_mixer_rms) mixer_rms(cf, dbc, j->T);
            summed = 1;
        }
        const int c0 = l * j->S, c1 = c0 + j->S < Di ? c0 + j->S : Di;
        scan1_range(&j->sj, c0, c1, dbc);
        if (pool_ends > 1) {
            const int ln = fused1_claim(j, top, 1);
            if (ln >= 0) fused1_prefetch(j, ln);
        }
        fused1_part(j, j->sj.ly->out_proj_t, d, c->y, l, c0, c1, c->po + (size_t)l * j->T * d);
        fused1_tree_up(j, l, 0);
    }
}

static void mamba1_fused(ss_model *m, ss_ctx *c, const layer *ly, const span *sp, int n_sp,
                         int T, size_t ssm_off)
{
    const model_config *cf = &m->cfg;
    const int Di = cf->d_inner, d = cf->d_model, S = mamba1_seg(Di), G = mamba1_segs(Di);
    fused1_job j = {.sj = {.m = m, .c = c, .ly = ly, .sp = sp, .n_sp = n_sp, .ssm_off = ssm_off,
                           .fuse_dt = 1},
                    .cj = {.m = m, .ly = ly, .sp = sp, .n_sp = n_sp, .ld_in = 2 * Di, .C = Di,
                           .off = 0, .in = c->proj, .out = c->xc},
                    .S = S, .G = G, .T = T, .ends = pool_ends_pack(0, G),
                    .B = fused_units > 0 || (fused_units < 0 && pool_size(m->pool) * 4 > G)
                             ? FUSE_BLOCKS
                             : 1,
                    .a8 = ly->x_proj_t.t == W_Q8 && T == 1 && m->act8 && c->round_rows <= 1 &&
                          c->segact};
    for (int l = 0; l < 2 * G; l++)
        atomic_store_explicit(&c->segdone[l], 0, memory_order_relaxed);
    for (int i = 0; i < FUSE_BLOCKS * SEG_MAX; i++)
        atomic_store_explicit(&c->segnode[i], 0, memory_order_relaxed);
    mm_rows_then(m, c, c->xn, T, d, d, ly->in_proj_w, ly->in_proj_b, 2 * Di, c->proj, 2 * Di,
                 fused1_in_after, &j);
    prof_mark(c, SS_PHASE_IN_PROJ);
    model_run(m, c, fused1_scan_part, &j);
    prof_mark(c, SS_PHASE_SCAN);
    prof_mark(c, SS_PHASE_RESIDUAL);
}

static void mamba1_mixer(ss_model *m, ss_ctx *c, const layer *ly, const span *sp, int n_sp, int T)
{
    const model_config *cf = &m->cfg;
    const int Di = cf->d_inner, N = cf->d_state, R = cf->dt_rank, d = cf->d_model;
    const int ldbc = R + 2 * N;
    const size_t ssm_off = m->info.n_state_layers * (size_t)Di * cf->conv_kernel +
                           (size_t)ly->state_index * (size_t)Di * N;
    const int fused = ly->x_proj_t.p != NULL; /* ss_model_params.fused_decode */
    if (fused && T <= fused_max_rows && T <= FUSE_ROWS && Di % 16 == 0) {
        mamba1_fused(m, c, ly, sp, n_sp, T, ssm_off);
        return;
    }

    /* [x | z] = in_proj(u): proj [T, 2Di]; x = SiLU(conv(x)): xc [T, Di] */
    in_proj_conv(m, c, ly, sp, n_sp, T, 2 * Di, 0, Di);
    /* [dt_r | B | C] = x_proj(x): dbc [T, R + 2N] (fused_decode: over the channels' segments) */
    if (fused)
        mm_t_rows(m, c, c->xc, T, Di, ly->x_proj_t, Di, ldbc, mamba1_seg(Di), NULL, c->dbc, ldbc,
                  NULL);
    else
        mm_rows(m, c, c->xc, T, Di, Di, ly->x_proj_w, NULL, ldbc, c->dbc, ldbc);
    if (cf->has_mixer_rms) mixer_rms(cf, c->dbc, T);
    /* dt = softplus(dt_proj(dt_r) + b): dt [T, Di]; up to 16 rows inside the scan's step, each
     * thread for its own channels (one parallel step fewer, and no serial one) */
    const int fuse_dt = T <= 16 && Di >= 256;
    if (!fuse_dt) mm_rows(m, c, c->dbc, T, R, ldbc, ly->dt_proj_w, ly->dt_proj_b, Di, c->dt, Di);

    /* Selective scan: channel ranges in parallel, each walks its spans in token order. */
    scan_job sj = {
        .m = m, .c = c, .ly = ly, .sp = sp, .n_sp = n_sp, .ssm_off = ssm_off, .fuse_dt = fuse_dt};
    prof_mark(c, SS_PHASE_X_PROJ);
    if (Di < 256)
        scan1_part(&sj, 0, 1);
    else
        model_run(m, c, scan1_part, &sj);
    prof_mark(c, SS_PHASE_SCAN);
    /* out = out_proj(y): [T, d]; h += out */
    if (!fused) {
        out_proj_residual(m, c, ly, T);
        return;
    }
    mm_t_rows(m, c, c->y, T, Di, ly->out_proj_t, Di, d, mamba1_seg(Di), ly->out_proj_b, c->out, d,
              c->h);
    prof_mark(c, SS_PHASE_OUT_PROJ);
}

/* ---- eval --------------------------------------------------------------------------------- */

/* Room for per-eval bookkeeping of n sequences. */
static ss_err ctx_reserve_seqs(ss_ctx *c, int n)
{
    if (n <= c->seq_cap) return SS_OK;
    int cap = n < 16 ? 16 : n;
    span *sp = realloc(c->spans, (size_t)cap * sizeof *sp);
    if (sp) c->spans = sp;
    int *pos = realloc(c->pos, (size_t)cap * sizeof *pos);
    if (pos) c->pos = pos;
    int *gid = realloc(c->gid, (size_t)cap * sizeof *gid);
    if (gid) c->gid = gid;
    int *gm = realloc(c->gmembers, (size_t)cap * sizeof *gm);
    if (gm) c->gmembers = gm;
    if (!sp || !pos || !gid || !gm) return ss_fail(SS_ERR_NOMEM, "out of memory");
    c->seq_cap = cap;
    return SS_OK;
}

/* Check the batch and compute each sequence's effective MoT group into c->gid. */
static ss_err validate(const ss_model *m, ss_ctx *c, ss_seq *seqs, int n_seqs, int lockstep)
{
    if (n_seqs < 0) return ss_fail(SS_ERR_INVALID, "negative batch size");
    for (int s = 0; s < n_seqs; s++) {
        const ss_seq *q = &seqs[s];
        if (!q->state || ss_state_floats(q->state) != m->info.state_floats) {
            return ss_fail(SS_ERR_MISMATCH, "sequence %d: state missing or of another model", s);
        }
        if (q->n_tokens < 0 || (q->n_tokens > 0 && !q->tokens)) {
            return ss_fail(SS_ERR_INVALID, "sequence %d: bad token array", s);
        }
        if (q->group < 0) return ss_fail(SS_ERR_INVALID, "sequence %d: negative group", s);
        for (int t = 0; t < q->n_tokens; t++) {
            if (q->tokens[t] < 0 || q->tokens[t] >= m->cfg.vocab) {
                return ss_fail(SS_ERR_INVALID,
                               "token id %d at position %d is outside the vocabulary [0, %d)",
                               q->tokens[t], t, m->cfg.vocab);
            }
        }
        for (int o = 0; o < s; o++) {
            if (seqs[o].state == q->state && q->n_tokens && seqs[o].n_tokens)
                return ss_fail(SS_ERR_INVALID, "sequences %d and %d share a state", o, s);
        }
    }
    const int g = m->info.mot_group_size;
    /* explicit groups keep their ids; lockstep puts the others in implicit groups above them */
    int max_id = 0;
    for (int s = 0; s < n_seqs; s++) max_id = seqs[s].group > max_id ? seqs[s].group : max_id;
    for (int s = 0; s < n_seqs; s++) {
        c->gid[s] = 0;
        if (g <= 0) continue;
        if (seqs[s].group)
            c->gid[s] = seqs[s].group;
        else if (lockstep)
            c->gid[s] = max_id + 1 + s / g;
    }
    for (int s = 0; s < n_seqs; s++) {
        if (!c->gid[s]) continue;
        int members = 0;
        for (int o = 0; o < n_seqs; o++) {
            if (c->gid[o] != c->gid[s]) continue;
            members++;
            if (seqs[o].n_tokens != seqs[s].n_tokens) {
                return ss_fail(SS_ERR_INVALID,
                               "mixture-of-tokens group %d mixes sequences of %d "
                               "and %d tokens: a group must move in lockstep",
                               seqs[s].group, seqs[s].n_tokens, seqs[o].n_tokens);
            }
        }
        if (members > g) {
            return ss_fail(SS_ERR_INVALID,
                           "mixture-of-tokens group of %d sequences; the model's "
                           "group size is %d",
                           members, g);
        }
    }
    return SS_OK;
}

/* Run one round: spans of consecutive tokens, T rows in all. */
static ss_err round_layers(ss_model *m, ss_ctx *c, ss_seq *seqs, const span *sp, int n_sp, int T)
{
    const model_config *cf = &m->cfg;
    const int d = cf->d_model, V = cf->vocab;
    ss_err err;
    /* h = embeddings[token] */
    for (int q = 0; q < n_sp; q++) {
        const ss_seq *s = &seqs[sp[q].seq];
        for (int j = 0; j < sp[q].n; j++) {
            wmat_row(m->embed, d, s->tokens[sp[q].pos + j], c->h + (size_t)(sp[q].row + j) * d);
        }
    }
    prof_mark(c, SS_PHASE_EMBED);
    for (int l = 0; l < cf->n_layer; l++) {
        const layer *ly = &m->layers[l];
        norm_rows(cf, ly->norm_w, ly->norm_b, c->h, c->xn, T, d);
        prof_mark(c, SS_PHASE_NORM);
        switch (ly->kind) {
        case LAYER_MAMBA1: /* the two mixers add their output to h themselves */
            mamba1_mixer(m, c, ly, sp, n_sp, T);
            continue;
        case LAYER_MAMBA2:
            mamba2_mixer(m, c, ly, sp, n_sp, T);
            continue;
        case LAYER_MOE:
            if ((err = moe_block(m, c, ly, sp, n_sp, T))) return err;
            break;
        }
        prof_mark(c, SS_PHASE_MIXER);
        for (size_t i = 0; i < (size_t)T * d; i++) c->h[i] += c->out[i];
        prof_mark(c, SS_PHASE_RESIDUAL);
    }
    /* Final norm of every row (needed for logits_all), final_hidden of each span's last row. */
    norm_rows(cf, m->norm_f_w, m->norm_f_b, c->h, c->xn, T, d);
    prof_mark(c, SS_PHASE_FINAL_NORM);
    int n_last = 0, one = -1; /* one: the span of the only last row, when there is one */
    for (int q = 0; q < n_sp; q++) {
        ss_seq *s = &seqs[sp[q].seq];
        const float *last = c->xn + (size_t)(sp[q].row + sp[q].n - 1) * d;
        ss_state_layout lay;
        ss_model_state_layout(m, &lay);
        memcpy(ss_state_data(s->state) + lay.hidden_off, last, (size_t)d * sizeof(float));
        if (!s->logits) continue;
        if (s->logits_all) {
            prof_mark(c, SS_PHASE_OTHER);
            mm_rows(m, c, c->xn + (size_t)sp[q].row * d, sp[q].n, d, d, m->lm_head, NULL, V,
                    s->logits + (size_t)sp[q].pos * V, V);
            prof_mark(c, SS_PHASE_LM_HEAD);
        } else if (sp[q].pos + sp[q].n == s->n_tokens) {
            n_last++;
            one = q;
        }
    }
    prof_mark(c, SS_PHASE_OTHER);
    if (n_last == 1) {
        /* batch-1 decode: straight into the caller's logits (no 200 KB copy per token) */
        mm_rows(m, c, c->xn + (size_t)(sp[one].row + sp[one].n - 1) * d, 1, d, d, m->lm_head,
                NULL, V, seqs[sp[one].seq].logits, V);
    } else if (n_last) {
        /* Gather the last rows, one GEMM, scatter. out is free scratch here. */
        if ((err = ctx_reserve_logits(c, n_last))) return err;
        int k = 0;
        for (int q = 0; q < n_sp; q++) {
            ss_seq *s = &seqs[sp[q].seq];
            if (!s->logits || s->logits_all || sp[q].pos + sp[q].n != s->n_tokens) continue;
            memcpy(c->out + (size_t)k++ * d, c->xn + (size_t)(sp[q].row + sp[q].n - 1) * d,
                   (size_t)d * sizeof(float));
        }
        mm_rows(m, c, c->out, n_last, d, d, m->lm_head, NULL, V, c->logits, V);
        k = 0;
        for (int q = 0; q < n_sp; q++) {
            ss_seq *s = &seqs[sp[q].seq];
            if (!s->logits || s->logits_all || sp[q].pos + sp[q].n != s->n_tokens) continue;
            memcpy(s->logits, c->logits + (size_t)k++ * V, (size_t)V * sizeof(float));
        }
    }
    if (n_last) prof_mark(c, SS_PHASE_LM_HEAD);
    return SS_OK;
}

/* A round holds the model's pool throughout: its ~100 steps take no lock each (a merge or
 * another context waits for the round, not for a step). */
static ss_err run_round(ss_model *m, ss_ctx *c, ss_seq *seqs, const span *sp, int n_sp, int T)
{
    pool_lock(m->pool);
    c->pool_held = 1;
    c->round_rows = T;
    ss_err err = round_layers(m, c, seqs, sp, n_sp, T);
    c->round_rows = 0;
    c->pool_held = 0;
    pool_unlock(m->pool);
    return err;
}

/* ---- per-phase profile ------------------------------------------------------------------- */

static const char *const phase_names[SS_PHASE_COUNT] = {
    [SS_PHASE_EMBED] = "embed",           [SS_PHASE_NORM] = "norm",
    [SS_PHASE_IN_PROJ] = "in_proj",       [SS_PHASE_CONV] = "conv",
    [SS_PHASE_X_PROJ] = "x_proj",         [SS_PHASE_SCAN] = "dt+scan",
    [SS_PHASE_OUT_PROJ] = "out_proj",     [SS_PHASE_MIXER] = "mixer",
    [SS_PHASE_RESIDUAL] = "residual",     [SS_PHASE_FINAL_NORM] = "final_norm",
    [SS_PHASE_LM_HEAD] = "lm_head",       [SS_PHASE_OTHER] = "other",
};

const char *ss_phase_name(ss_phase p)
{
    return (unsigned)p < SS_PHASE_COUNT ? phase_names[p] : "?";
}

void prof_lap(ss_ctx *c, ss_phase ph)
{
    const uint64_t now = (uint64_t)ss_mono_ns();
    c->prof_acc.ns[ph] += now - c->prof_t;
    c->prof_acc.calls[ph]++;
    c->prof_t = now;
    /* the meetings since the last lap were this phase's */
    const pool_times *t = &c->prof_pool, *l = &c->prof_pool_lap;
    c->prof_acc.ph_steps[ph] += t->steps - l->steps;
    c->prof_acc.ph_wait_ns[ph] += t->wait_ns - l->wait_ns;
    c->prof_acc.ph_spread_ns[ph] += t->spread_ns - l->spread_ns;
    c->prof_acc.ph_lag_ns[ph] += t->lag_ns - l->lag_ns;
    c->prof_pool_lap = *t;
}

void ss_ctx_set_profile(ss_ctx *c, int on)
{
    c->prof = on != 0;
    c->prof_acc = (ss_profile){0};
    c->prof_pool = c->prof_pool_lap = (pool_times){0};
}

void ss_ctx_get_profile(const ss_ctx *c, ss_profile *out)
{
    *out = c->prof_acc;
    out->pool_steps = c->prof_pool.steps;
    out->pool_wait_ns = c->prof_pool.wait_ns;
    out->pool_spread_ns = c->prof_pool.spread_ns;
    out->pool_lag_ns = c->prof_pool.lag_ns;
    out->pool_alone = c->prof_pool.alone;
    out->pool_woken = c->prof_pool.woken;
    out->pool_woken_lag_ns = c->prof_pool.woken_lag_ns;
}

static ss_err eval_rounds(ss_model *m, ss_ctx *c, ss_seq *seqs, int n_seqs, int lockstep);

ss_err ss_model_eval(ss_model *m, ss_ctx *c, ss_seq *seqs, int n_seqs, int lockstep)
{
    if (!c->prof) return eval_rounds(m, c, seqs, n_seqs, lockstep);
    const uint64_t t0 = (uint64_t)ss_mono_ns();
    c->prof_t = t0;
    ss_err err = eval_rounds(m, c, seqs, n_seqs, lockstep);
    prof_lap(c, SS_PHASE_OTHER);
    c->prof_acc.evals++;
    c->prof_acc.eval_ns += c->prof_t - t0;
    return err;
}

static ss_err eval_rounds(ss_model *m, ss_ctx *c, ss_seq *seqs, int n_seqs, int lockstep)
{
    ss_err err = ctx_reserve_seqs(c, n_seqs);
    if (err) return err;
    if ((err = validate(m, c, seqs, n_seqs, lockstep))) return err;
    if ((err = ctx_reserve(c, ROUND_ROWS))) return err;
    span *sp = c->spans;
    int *pos = c->pos;
    int grouped = 0;
    for (int s = 0; s < n_seqs; s++) {
        pos[s] = 0;
        grouped |= c->gid[s] != 0;
    }
    /* With groups, every sequence advances by the same count per round, so the members of a
     * group stay at the same positions. */
    int step = n_seqs ? ROUND_ROWS / n_seqs : ROUND_ROWS;
    if (step < 1) step = 1;
    for (;;) {
        int T = 0, n_sp = 0;
        for (int s = 0; s < n_seqs; s++) {
            int left = seqs[s].n_tokens - pos[s];
            if (left <= 0) continue;
            int take = grouped ? (left < step ? left : step) : left;
            if (take > ROUND_ROWS - T) take = ROUND_ROWS - T;
            if (take <= 0) break;
            sp[n_sp++] = (span){.seq = s,
                                .state = seqs[s].state,
                                .pos = pos[s],
                                .row = T,
                                .n = take,
                                .group = c->gid[s]};
            T += take;
        }
        if (!n_sp) break;
        if (T > c->rows && (err = ctx_reserve(c, T))) return err;
        if ((err = run_round(m, c, seqs, sp, n_sp, T))) return err;
        for (int q = 0; q < n_sp; q++) pos[sp[q].seq] += sp[q].n;
    }
    return SS_OK;
}

ss_err ss_model_logits_from_state(ss_model *m, ss_ctx *c, const ss_state *s, float *logits)
{
    (void)c;
    if (!s || ss_state_floats(s) != m->info.state_floats)
        return ss_fail(SS_ERR_MISMATCH, "state of another model");
    ss_state_layout lay;
    ss_model_state_layout(m, &lay);
    mm_rows(m, c, ss_state_cdata(s) + lay.hidden_off, 1, m->cfg.d_model, m->cfg.d_model, m->lm_head,
            NULL, m->cfg.vocab, logits, m->cfg.vocab);
    return SS_OK;
}
