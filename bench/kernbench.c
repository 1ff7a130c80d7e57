/*
 * kernbench.c - statesoup-kernbench: how fast the decode kernels stream weights on this machine,
 * beside a plain read of the same bytes, at any number of threads.
 *
 * Each run streams a 1 GB weight matrix [N, 1536] (64-byte aligned as the model's copies are,
 * filled with varied bytes) through one kernel, the threads splitting the rows, and reports GB/s
 * of weights and GMAC/s; "read" sums the same bytes as statesoup-bench's machine limits do
 * (bench/read.c: the widest loads, each thread's rows as one stream or as four far-apart ones in
 * alternate passes; with --offset, 64-bit integers in one stream). Best of 6 passes. With
 * --matrix MB the matrix is taken as consecutive matrices of MB megabytes each, the threads
 * (model/pool.c, as the model's projections) splitting one matrix and meeting before the next:
 * what short matrices and threads meeting cost beside one long stream per thread. The model is
 * not involved: this isolates the kernels (model/kernels*.c) from the forward pass around them,
 * whose per-token cost statesoup-bench reports.
 *
 * The transposed kinds (f32t, bf16t, f16t, q8t, q8k, q8ka8: kernels.h gemm_t*) take the bytes of
 * Wt[rows][N], N = --k outputs, cut into segments of --seg rows (a segment of x_proj or out_proj
 * as Mamba-1 decode stores them transposed): each thread takes whole segments, contiguous, and
 * computes each segment's partial product (--rows input rows, the segment's SEG inputs of each)
 * into its own scratch, as batch-1 decode does before the partials are summed. Before each is
 * measured, its first and last segments are compared bitwise with the generic kernel (gemm_t's
 * contract is the same bits), so a broken kernel is reported, not measured.
 *
 * usage: statesoup-kernbench [--threads LIST] [--rows LIST] [--kernels LIST] [--matrix MB]
 *                            [--size MB] [--k N] [--seg S] [--offset B] [--tblock] [--huge]
 *   --threads 1,2,16   thread counts (default: 1,2 and all cores)
 *   --rows 1,16        input rows per product: 1 = batch-1 decode, 16 = 16 streams (default 1,16)
 *   --kernels LIST     read, f32, bf16, f16, q8, q8a8, q8pa8, f32t, bf16t, f16t, q8t, q8k, q8ka8
 *                      (default read, f32, bf16, f16, q8)
 *   --matrix MB        stream matrices of MB megabytes one after another (default: one 1 GB)
 *   --size MB          weight bytes per kernel (default 1000)
 *   --k N              values per weight row, a multiple of 64 (default 1536; 768 = d_model of
 *                      mamba-130m, the K of its in_proj and logits); the transposed kinds' N
 *   --seg S            rows per segment of the transposed kinds (default 96, 130m's)
 *   --offset B         the weights start B bytes past a 64-byte boundary (0 to 56, a multiple
 *                      of 8): where a checkpoint's F32 tensors used in place lie, since
 *                      safetensors pads its header to 8 bytes only
 *   --tblock           f32t, bf16t, f16t on the far layout (16 segments a matrix in 4 column
 *                      blocks, kernels.h far_t_width)
 *   --huge             the weights on transparent huge pages (madvise), as the model's copies
 * It builds with the kernels alone: cc -O2 -Imodel bench/kernbench.c bench/read.c
 * model/kernels*.c (the ISA files with their -m flags, as model/meson.build does) -lm -lpthread.
 */
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kernels.h"
#include "pool.h"
#include "read.h"

enum { TILE = 64, MAX_THREADS = 256, MAX_LIST = 16, SEGS = 16 };
static int K = 1536;  /* values per weight row (--k): the outputs of the transposed kinds */
static int SEG = 96;  /* rows of Wt per segment, the transposed kinds' unit of work (--seg) */
static int OFFSET = 0; /* bytes the weights start past a 64-byte boundary (--offset) */
static int TBLOCK;    /* --tblock: f32t, bf16t, f16t on the far layout (kernels.h far_t_width) */
static int HUGE;      /* --huge: the weights on transparent huge pages */
enum kind {
    K_READ, K_F32, K_BF16, K_Q8, K_F16, K_Q8A8, K_Q8PA8, K_F32T, K_BF16T, K_F16T, K_Q8T, K_Q8K,
    K_Q8KA8,
    N_KINDS
};
static const char *const kind_names[] = {"read", "f32",   "bf16",  "q8",  "f16", "q8a8", "q8pa8",
                                         "f32t", "bf16t", "f16t",  "q8t", "q8k", "q8ka8"};

static int transposed(enum kind k)
{
    return k >= K_F32T;
}

/* The weight type of a kind: a transposed kind's plain twin. */
static enum kind base_kind(enum kind k)
{
    static const enum kind base[] = {[K_F32T] = K_F32, [K_BF16T] = K_BF16, [K_F16T] = K_F16,
                                     [K_Q8T] = K_Q8, [K_Q8K] = K_Q8, [K_Q8KA8] = K_Q8};
    return transposed(k) ? base[k] : k;
}

/* Rows of weights a thread takes at a time: tiles of the row kernels, segments of Wt. */
static size_t unit_rows(enum kind k)
{
    return transposed(k) ? (size_t)SEG : k == K_Q8PA8 ? Q8P_W : TILE;
}

typedef struct bench {
    enum kind kind;
    int rows, threads;
    size_t n;        /* weight rows */
    const void *w;   /* [n, K] in the kind's type (BF16: any bytes serve as the pair layout;
                      * the transposed kinds: Wt of n / SEG segments of SEG rows, row order) */
    const float *s;  /* q8 scales [n, K / 32] */
    size_t piece;    /* rows per matrix with --matrix, else 0 (one matrix) */
    ss_pool *pool;   /* with --matrix: b->threads threads in all */
    const float *x;  /* [rows, K] */
    const float *xt; /* transposed kinds: [rows, SEGS * SEG], segment j reads columns of j % SEGS */
    float *part;     /* transposed kinds: thread t's partial products [rows, K] at t * 16 * K */
    const q8_act *xq; /* q8a8: x's first row quantised */
    const q8_act *xqt; /* q8ka8: [SEGS] the segments' inputs of xt's first row quantised */
    float *y;        /* [rows, n] */
    int reps;        /* passes over the matrix per measurement (--size below 200 MB) */
    int read_streams; /* read: this pass reads each thread's rows as 1 or 4 streams */
    unsigned long long sink[MAX_THREADS];
} bench;

typedef struct targ {
    bench *b;
    int t;
} targ;

static size_t elem_size(enum kind k)
{
    k = base_kind(k);
    return k == K_Q8 || k == K_Q8A8 || k == K_Q8PA8 ? 1 : k == K_BF16 || k == K_F16 ? 2 : 4;
}

/*
 * Segment j of Wt (rows [j SEG, (j + 1) SEG), all K outputs) times b->rows input rows into out
 * [rows, K], as batch-1 decode computes a thread's partial product of x_proj or out_proj.
 */
static void segment(const kernels *k, const bench *b, size_t j, float *out)
{
    const int ldx = SEGS * SEG;
    const float *x = b->xt + (j % SEGS) * (size_t)SEG;
    size_t off = j * (size_t)SEG * K;
    /* --tblock: each SEGS segments one matrix [SEGS SEG][K] in FAR_T_BLOCKS column blocks */
    const int far = TBLOCK && b->kind != K_Q8T && b->kind != K_Q8K && b->kind != K_Q8KA8;
    const int bw = far ? K / FAR_T_BLOCKS : K;
    const size_t bs = far ? (size_t)SEGS * SEG * bw : 0;
    if (far) off = j / SEGS * SEGS * (size_t)SEG * K + j % SEGS * (size_t)SEG * bw;
    if (b->kind == K_F32T)
        k->gemm_t(x, b->rows, SEG, ldx, (const float *)b->w + off, bw, bw, bs, K, out, K, 0);
    else if (b->kind == K_BF16T)
        k->gemm_t_bf16(x, b->rows, SEG, ldx, (const uint16_t *)b->w + off, bw, bw, bs, K, out, K,
                       0);
    else if (b->kind == K_F16T)
        k->gemm_t_f16(x, b->rows, SEG, ldx, (const uint16_t *)b->w + off, bw, bw, bs, K, out, K,
                      0);
    else if (b->kind == K_Q8T)
        k->gemm_t_q8(x, b->rows, SEG, ldx, (const int8_t *)b->w + off,
                     K, b->s + off / Q8_BLOCK, K / Q8_BLOCK, K, out, K, 0);
    else if (b->kind == K_Q8K) /* the q8k layout: per block rows of 4 k x K outputs, scales */
        k->gemm_t_q8k(x, b->rows, SEG, ldx, (const uint8_t *)b->w + off / 8 * 9, 4 * (size_t)K,
                      K, out, K);
    else
        k->gemv_t_q8ka8(&b->xqt[j % SEGS], (const uint8_t *)b->w + off / 8 * 9, 4 * (size_t)K, K,
                        out);
}

/*
 * The bench's kernel against the generic one on the first and last segments (the contract of
 * gemm_t is the same bits): a broken kernel is not measured. 0 if equal.
 */
static int check_segments(const bench *b)
{
    const kernels *k = kernels_get(), *g = kernels_generic();
    const size_t len = (size_t)b->rows * K;
    float *y = malloc(2 * len * sizeof *y);
    if (!y) return -1;
    int bad = 0;
    for (size_t j = 0; j < b->n / SEG && !bad; j += b->n / SEG - 1 > 0 ? b->n / SEG - 1 : 1) {
        for (size_t i = 0; i < 2 * len; i++) y[i] = NAN; /* nothing left from before */
        segment(k, b, j, y);
        segment(g, b, j, y + len);
        for (size_t i = 0; i < len && !bad; i++)
            if (memcmp(&y[i], &y[len + i], sizeof *y)) {
                fprintf(stderr,
                        "statesoup-kernbench: %s %s, rows %d, segment %zu: y[%zu][%zu] = %.9g, "
                        "the generic kernel gives %.9g\n",
                        k->name, kind_names[b->kind], b->rows, j, i / K, i % K, y[i], y[len + i]);
                bad = 1;
            }
    }
    free(y);
    return bad;
}

/* Rows [lo, lo + per) of the matrix through thread t's kernel (or read). */
static void stream_rows(bench *b, int t, size_t lo, size_t per)
{
    const kernels *k = kernels_get();
    if (transposed(b->kind)) { /* whole segments, each into the thread's own partial sums */
        for (size_t j = lo / SEG; j < (lo + per) / SEG; j++)
            segment(k, b, j, b->part + (size_t)t * 16 * K);
        return;
    }
    if (b->kind == K_READ) { /* statesoup-bench's plain read where the rows are 64-byte aligned */
        const unsigned long long *p = (const unsigned long long *)b->w + lo * K / 2;
        if ((uintptr_t)p % 64 == 0) { /* its float sum's bits: random bytes make NaNs */
            const float f = bench_read(p, per * K * 4, b->read_streams);
            unsigned u;
            memcpy(&u, &f, sizeof u);
            b->sink[t] += u;
            return;
        }
        unsigned long long a = 0;
        for (size_t i = 0; i < per * K / 2; i++) a += p[i];
        b->sink[t] += a;
        return;
    }
    if (b->kind == K_Q8PA8) { /* the q8p layout: panels of Q8P_W rows, [lo, lo + per) at once */
        k->gemv_q8p_a8(b->xq, (const uint8_t *)b->w, (int)lo, (int)(lo + per), b->y + lo);
        return;
    }
    for (size_t r = lo; r < lo + per; r += TILE) {
        float *y = b->y + r;
        const int nr = lo + per - r < TILE ? (int)(lo + per - r) : TILE;
        if (b->kind == K_F32)
            k->gemm_small(b->x, b->rows, K, K, (const float *)b->w + r * K, nr, y, (int)b->n);
        else if (b->kind == K_Q8A8)
            k->gemv_q8a8(b->xq, (const int8_t *)b->w + r * K, b->s + r * (K / Q8_BLOCK), nr, y);
        else if (b->kind == K_BF16 || b->kind == K_F16)
            (b->kind == K_BF16 ? k->gemm_small_bf16 : k->gemm_small_f16)(
                b->x, b->rows, K, K, (const uint16_t *)b->w + r * K, nr, y, (int)b->n);
        else
            k->gemm_small_q8(b->x, b->rows, K, K, (const int8_t *)b->w + r * K,
                             b->s + r * (K / Q8_BLOCK), nr, y, (int)b->n);
    }
}

static void *run(void *arg)
{
    bench *b = ((targ *)arg)->b;
    const int t = ((targ *)arg)->t;
    const size_t unit = unit_rows(b->kind), per = b->n / (size_t)b->threads / unit * unit;
    for (int i = 0; i < b->reps; i++) stream_rows(b, t, (size_t)t * per, per);
    return NULL;
}

/* --matrix: one matrix of b->piece rows from row r0, split among the pool's threads. */
typedef struct piece_job {
    bench *b;
    size_t r0;
} piece_job;

static void piece_part(void *arg, int tid, int nt)
{
    const piece_job *j = arg;
    int lo, hi;
    pool_range((int)j->b->piece,
               transposed(j->b->kind) ? SEG : j->b->kind == K_Q8PA8 ? Q8P_W : 16, tid, nt, &lo,
               &hi);
    if (lo < hi) stream_rows(j->b, tid, j->r0 + (size_t)lo, (size_t)(hi - lo));
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Best seconds of 6 passes over the matrix with b->threads threads. */
static double measure(bench *b)
{
    double best = 1e30;
    for (int pass = 0; pass < 6; pass++) {
        b->read_streams = pass % 2 ? 4 : 1;
        pthread_t th[MAX_THREADS];
        targ ta[MAX_THREADS];
        double t0 = now_s();
        if (b->piece) {
            for (int i = 0; i < b->reps; i++)
                for (size_t r0 = 0; r0 + b->piece <= b->n; r0 += b->piece) {
                    piece_job j = {b, r0};
                    pool_run(b->pool, piece_part, &j);
                }
            double dt = now_s() - t0;
            if (dt < best) best = dt;
            continue;
        }
        for (int t = 0; t < b->threads; t++) {
            ta[t] = (targ){b, t};
            if (pthread_create(&th[t], NULL, run, &ta[t]) != 0) return -1;
        }
        for (int t = 0; t < b->threads; t++) pthread_join(th[t], NULL);
        double dt = now_s() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

/* "f32,bf16" into want[N_KINDS] (1 = measure it); 0 if a name is unknown or none given. */
static int parse_kinds(const char *s, int *want)
{
    int any = 0, w[N_KINDS] = {0};
    for (const char *end; *s; s = *end ? end + 1 : end) {
        end = strchr(s, ',');
        if (!end) end = s + strlen(s);
        int found = 0;
        for (int i = 0; i < N_KINDS; i++) {
            const size_t len = (size_t)(end - s);
            if (len == strlen(kind_names[i]) && !strncmp(s, kind_names[i], len))
                w[i] = found = any = 1;
        }
        if (!found) return 0;
    }
    if (any) memcpy(want, w, sizeof w);
    return any;
}

/* "1,2,16" into out (at most MAX_LIST values in [1, max]); the count, or -1. */
static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    for (char *end; *s && n < MAX_LIST; s = *end ? end + 1 : end) {
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > max || (*end && *end != ',')) return -1;
        out[n++] = (int)v;
    }
    return n ? n : -1;
}

static const char usage[] =
    "usage: statesoup-kernbench [--threads LIST] [--rows LIST] [--kernels LIST] [--matrix MB]\n"
    "                           [--size MB] [--k N] [--seg S] [--offset B] [--tblock]\n"
    "                           [--huge]\n"
    "Stream a 1 GB weight matrix through the decode kernels (and a plain read) and report\n"
    "GB/s and GMAC/s: batch-1 decode is bound by how close the kernels get to the read.\n"
    "  --threads 1,2,16   thread counts (default: 1, 2 and all cores)\n"
    "  --rows 1,16        input rows per product: 1 = batch-1 decode, 16 = 16 streams\n"
    "                     (default 1,16)\n"
    "  --kernels LIST     read, f32, bf16, f16, q8 (8-bit weights, F32 activations: rows > 1),\n"
    "                     q8a8 (8-bit weights and activations: batch-1 decode, rows 1 only),\n"
    "                     q8pa8 (the same in the q8p layout: panels of 64 rows),\n"
    "                     f32t, bf16t, f16t, q8t (the transposed-weight kernels gemm_t*: the\n"
    "                     weights as Wt[rows][N], N = --k outputs, cut into segments of --seg\n"
    "                     rows; each thread takes whole segments and computes their partial\n"
    "                     products into its own scratch, as batch-1 decode does for x_proj and\n"
    "                     out_proj; the first and last segments are checked bitwise against\n"
    "                     the generic kernel first); q8k, q8ka8 (the same on 8-bit weights\n"
    "                     in the q8k layout, scales along k, with F32 / 8-bit activations:\n"
    "                     what --weights q8 decodes with under fused_decode; --seg a multiple\n"
    "                     of 32); comma-separated (default read, f32, bf16, f16, q8)\n"
    "  --matrix MB        stream the 1 GB as matrices of MB megabytes one after another, the\n"
    "                     threads splitting each and meeting before the next, as the model's\n"
    "                     projections do (130m: in_proj 9.4 MB in F32, out_proj 4.7, x_proj\n"
    "                     0.5); default: one matrix, one long stream per thread\n"
    "  --size MB          weight bytes per kernel (default 1000): 1 to a few MB stay in the\n"
    "                     caches, which measures what the kernels compute, not the memory\n"
    "  --k N              values per weight row, a multiple of 64 (default 1536; 130m's\n"
    "                     in_proj and logits have 768); the transposed kinds' outputs\n"
    "  --seg S            rows of Wt per segment for the transposed kinds, 1 to 4096 (default\n"
    "                     96: d_inner / 16 rounded up to 16 at 130m; 128 at 370m, 256 at 1.4b)\n"
    "  --offset B         the weights start B bytes past a 64-byte boundary (0 to 56, a\n"
    "                     multiple of 8; default 0): F32 weights used in place from a\n"
    "                     checkpoint lie where its header ends, which safetensors pads to 8\n"
    "                     bytes only, so every 64-byte load then spans two cache lines\n"
    "  --tblock           f32t, bf16t, f16t on the far layout: every 16 segments one matrix\n"
    "                     kept as 4 column blocks, each contiguous over its rows (kernels.h\n"
    "                     far_t_width; what the model loads when far streams are on)\n"
    "  --huge             the weights on transparent huge pages (madvise), as the model\n"
    "                     holds its copies (default: whatever malloc gives)\n";

int main(int argc, char **argv)
{
    int threads[MAX_LIST] = {1, 2, (int)sysconf(_SC_NPROCESSORS_ONLN)}, n_threads = 3;
    int rows[MAX_LIST] = {1, 16}, n_rows = 2;
    int want[N_KINDS] = {[K_READ] = 1, [K_F32] = 1, [K_BF16] = 1, [K_Q8] = 1, [K_F16] = 1};
    double matrix_mb = 0, size_mb = 1000;
    static const struct option opts[] = {{"threads", required_argument, NULL, 't'},
                                         {"rows", required_argument, NULL, 'r'},
                                         {"kernels", required_argument, NULL, 'k'},
                                         {"matrix", required_argument, NULL, 'm'},
                                         {"k", required_argument, NULL, 'K'},
                                         {"size", required_argument, NULL, 'S'},
                                         {"seg", required_argument, NULL, 'g'},
                                         {"offset", required_argument, NULL, 'o'},
                                         {"tblock", no_argument, NULL, 'b'},
                                         {"huge", no_argument, NULL, 'H'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    for (int c; (c = getopt_long(argc, argv, "h", opts, NULL)) != -1;) {
        if (c == 't' && (n_threads = parse_list(optarg, threads, MAX_THREADS)) > 0) continue;
        if (c == 'r' && (n_rows = parse_list(optarg, rows, 16)) > 0) continue;
        if (c == 'm') {
            char *end;
            matrix_mb = strtod(optarg, &end);
            if (end != optarg && !*end && matrix_mb > 0 && matrix_mb <= 1000) continue;
        }
        if (c == 'S') {
            char *end;
            size_mb = strtod(optarg, &end);
            if (end != optarg && !*end && size_mb >= 0.1 && size_mb <= 1000) continue;
        }
        if (c == 'K') {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (end != optarg && !*end && v >= 64 && v <= 65536 && v % 64 == 0) {
                K = (int)v;
                continue;
            }
        }
        if (c == 'g') {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (end != optarg && !*end && v >= 1 && v <= 4096) {
                SEG = (int)v;
                continue;
            }
        }
        if (c == 'o') {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (end != optarg && !*end && v >= 0 && v < 64 && v % 8 == 0) {
                OFFSET = (int)v;
                continue;
            }
        }
        if (c == 'k' && parse_kinds(optarg, want)) continue;
        if (c == 'b') {
            TBLOCK = 1;
            continue;
        }
        if (c == 'H') {
            HUGE = 1;
            continue;
        }
        fputs(usage, c == 'h' ? stdout : stderr);
        return c == 'h' ? 0 : 2;
    }
    if (n_threads == 3 && threads[2] <= 2) n_threads = 2;
    if (matrix_mb > 0)
        printf("statesoup-kernbench: %s kernels, K = %d, %.0f MB as matrices of %.2f MB\n",
               kernels_get()->name, K, size_mb, matrix_mb);
    else
        printf("statesoup-kernbench: %s kernels, K = %d, %.1f MB per matrix%s\n",
               kernels_get()->name, K, size_mb, size_mb < 200 ? " (passed over repeatedly)" : "");
    if (OFFSET) printf("weights %d bytes past a 64-byte boundary\n", OFFSET);
    if (want[K_F32T] || want[K_BF16T] || want[K_F16T] || want[K_Q8T] || want[K_Q8K] ||
        want[K_Q8KA8])
        printf("transposed kinds: Wt[rows][%d] in segments of %d rows%s, checked against the "
               "generic kernel\n", K, SEG, TBLOCK ? ", far layout (--tblock)" : "");
    float *x = aligned_alloc(64, 16 * K * sizeof *x);
    for (int i = 0; i < 16 * K; i++) x[i] = (float)(i % 7) * 0.1f;
    q8_act xq;
    void *xq_mem = aligned_alloc(64, q8_act_bytes(K));
    if (!xq_mem) return 1;
    q8_act_init(&xq, xq_mem, K);
    q8_act_quantize(&xq, x);
    int most = 1; /* the most threads of the list */
    for (int ti = 0; ti < n_threads; ti++) most = threads[ti] > most ? threads[ti] : most;
    /* the transposed kinds' inputs (SEGS segments' worth per row) and per-thread partials */
    float *xt = malloc((size_t)16 * SEGS * SEG * sizeof *xt);
    float *part = aligned_alloc(64, (size_t)most * 16 * K * sizeof *part);
    if (!xt || !part) {
        fprintf(stderr, "statesoup-kernbench: out of memory\n");
        return 1;
    }
    for (int i = 0; i < 16 * SEGS * SEG; i++) xt[i] = (float)(i % 11 - 5) * 0.03f;
    q8_act xqt[SEGS];
    void *xqt_mem = aligned_alloc(64, SEGS * q8_act_bytes(SEG));
    if (!xqt_mem) return 1;
    for (int j = 0; j < SEGS; j++) {
        q8_act_init(&xqt[j], (char *)xqt_mem + j * q8_act_bytes(SEG), SEG);
        q8_act_quantize(&xqt[j], xt + (size_t)j * SEG);
    }
    if ((want[K_Q8K] || want[K_Q8KA8]) && SEG % Q8_BLOCK) {
        fprintf(stderr, "statesoup-kernbench: q8k and q8ka8 need --seg a multiple of %d\n",
                Q8_BLOCK);
        return 2;
    }
    for (int kind = 0; kind < N_KINDS; kind++) {
        if (!want[kind]) continue;
        const enum kind base = base_kind((enum kind)kind);
        const size_t es = elem_size((enum kind)kind), unit = unit_rows((enum kind)kind);
        const size_t align = transposed((enum kind)kind) ? unit * (TBLOCK ? SEGS : 1) : 64;
        size_t n = (size_t)(size_mb * 1e6 / (double)es / K) / align * align;
        /* every thread gets at least one tile (segment) of rows, however small --size */
        if (n < unit * most) n = unit * most;
        /* --matrix: rows per matrix (a multiple of 16, or of the segment; its weight bytes, q8
         * scales included) */
        const int q8 = base == K_Q8 || base == K_Q8A8 || base == K_Q8PA8;
        const double row_bytes = K * (q8 ? 1.125 : (double)es);
        const size_t pu = transposed((enum kind)kind) ? align : kind == K_Q8PA8 ? Q8P_W : 16;
        size_t piece = matrix_mb > 0 ? (size_t)(matrix_mb * 1e6 / row_bytes) / pu * pu : 0;
        if (matrix_mb > 0 && piece < pu) piece = pu;
        if (piece > n) piece = n; /* --matrix above --size: one matrix of the whole size */
        /* 64-byte aligned, as the model's copies of its matrices are (a plain malloc of this
         * size returns 16 bytes past a page: every 64-byte load then spans two cache lines) */
        const size_t huge = (size_t)2 << 20; /* whole 2 MB pages, for --huge */
        /* the q8k and q8p layouts: the scales in the weights' stream, 9 / 8 their bytes */
        const int q8k = kind == K_Q8K || kind == K_Q8KA8 || kind == K_Q8PA8;
        const size_t vbytes = q8k ? n * K / 8 * 9 : n * K * es;
        const size_t wbytes = ((n ? vbytes : 0) + 64 + huge - 1) & ~(huge - 1);
        unsigned long long *w = aligned_alloc(huge, wbytes);
        if (w && HUGE) madvise(w, wbytes, MADV_HUGEPAGE);
        float *s = q8 && !q8k ? malloc(n * (K / Q8_BLOCK) * sizeof *s) : NULL;
        float *y = malloc(16 * n * sizeof *y);
        if (!w || (q8 && !q8k && !s) || !y) {
            fprintf(stderr, "statesoup-kernbench: out of memory\n");
            return 1;
        }
        /* varied bytes (identical pages could be merged by the host), and for F32 and BF16
         * normal floats in [1/128, 1/64) of either sign: subnormal weights (random bit patterns
         * give many) cost a microcode assist per multiply on some Xeons, 10x slower */
        const unsigned long long bits = base == K_F32    ? 0x803fffff803fffffull
                                        : base == K_BF16 ? 0x803f803f803f803full
                                        : base == K_F16  ? 0x83ff83ff83ff83ffull
                                                         : ~0ull;
        const unsigned long long one = base == K_F32    ? 0x3c0000003c000000ull
                                       : base == K_BF16 ? 0x3c003c003c003c00ull
                                       : base == K_F16  ? 0x2000200020002000ull
                                                        : 0;
        for (size_t i = 0; i < vbytes / 8 + 8; i++)
            w[i] = ((i * 0x9E3779B97F4A7C15ull >> 7) & bits) | one;
        if (q8) { /* weights in [-127, 127] as the quantiser writes them: -128 (the byte 0x80,
                   * or 0x00 in the layouts that store q + 128) breaks the AVX2 kernels' sign
                   * trick, and the check below then refused to measure them */
            const unsigned char bad = q8k ? 0 : 0x80; /* q8k, q8p: q + 128 */
            unsigned char *wb = (unsigned char *)w;
            for (size_t i = 0; i < vbytes + 64; i++)
                if (wb[i] == bad) wb[i] ^= 1;
            /* their rows of scales: normal floats, as the quantiser writes them (random bits give
             * subnormals, which some cores multiply far more slowly) */
            const size_t ldw = kind == K_Q8PA8 ? 4 * Q8P_W : 4 * (size_t)K;
            for (size_t r = Q8K_ROWS - 1; q8k && (r + 1) * ldw <= vbytes; r += Q8K_ROWS)
                for (size_t e = 0; e < ldw / 4; e++) {
                    const float v = 0.01f + (float)(e % 5) * 1e-3f;
                    memcpy(wb + r * ldw + 4 * e, &v, sizeof v);
                }
        }
        for (size_t i = 0; s && i < n * (K / Q8_BLOCK); i++) s[i] = 0.01f + (float)(i % 5) * 1e-3f;
        for (int ti = 0; ti < n_threads; ti++)
            for (int ri = 0; ri < (kind == K_READ ? 1 : n_rows); ri++) {
                if ((kind == K_Q8A8 || kind == K_Q8PA8 || kind == K_Q8KA8) && rows[ri] != 1)
                    continue; /* batch-1 decode only */
                bench b = {.kind = (enum kind)kind,
                           .rows = rows[ri],
                           .threads = threads[ti],
                           .n = piece ? n / piece * piece : n,
                           .w = (char *)w + OFFSET,
                           .s = s,
                           .x = x,
                           .xq = &xq,
                           .xqt = xqt,
                           .xt = xt,
                           .part = part,
                           .y = y,
                           .piece = piece,
                           .reps = size_mb < 200 ? (int)(200 / size_mb) : 1};
                if (transposed(b.kind) && check_segments(&b)) return 1;
                if (piece && !(b.pool = pool_new(threads[ti]))) {
                    fprintf(stderr, "statesoup-kernbench: cannot start %d threads\n", threads[ti]);
                    return 1;
                }
                double dt = measure(&b);
                pool_free(b.pool);
                if (dt <= 0) return 1;
                /* the rows streamed: whole tiles per thread, or whole matrices (--matrix) */
                const size_t done = piece ? b.n : b.n / threads[ti] / unit * unit * threads[ti];
                const double bytes = (double)done * row_bytes * b.reps;
                if (kind == K_READ)
                    printf("  %-5s threads %3d          %7.1f GB/s\n", kind_names[kind],
                           threads[ti], bytes / dt / 1e9);
                else
                    printf("  %-5s threads %3d rows %2d  %7.1f GB/s %8.1f GMAC/s\n",
                           kind_names[kind], threads[ti], rows[ri], bytes / dt / 1e9,
                           (double)done * K * rows[ri] * b.reps / dt / 1e9);
                fflush(stdout);
            }
        free(w);
        free(s);
        free(y);
    }
    free(x);
    free(xt);
    free(part);
    free(xq_mem);
    free(xqt_mem);
    return 0;
}
