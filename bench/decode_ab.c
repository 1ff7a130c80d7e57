/*
 * decode_ab.c - statesoup-decode-ab: Mamba-1's two decode layouts side by side in one process.
 *
 * The same checkpoint is opened twice, with ss_model_params.fused_decode = -1 (x_proj and
 * out_proj in rows: four parallel steps per layer) and 1 (transposed: two steps), and decode
 * steps of S streams run in short bursts that alternate between the two (A B, B A, A B, ...), so
 * that both see the same phases of a shared or noisy host; per burst the mean time of a step is
 * kept, and the summary gives the fastest, the first quartile and the median of the bursts of
 * each layout. Separate runs of statesoup-bench on a shared 2-vCPU host moved 2-3x from run to
 * run (docs/performance.md); interleaved bursts moved a few percent.
 *
 * --compare far instead compares the one-row kernels reading a call's weight rows as one stream
 * and as four far streams (kernels.h kernels_far_rows; SS_FAR_STREAMS): one layout (the
 * default), the switch flipped before each burst. --compare copy opens the checkpoint with
 * F32 matrices in place in the file mapping (ss_model_params.f32_in_place) and copied onto huge
 * pages (the default). --compare parts splits the one-row products' output rows in blocks of
 * one size (pool.h pool_parts 0) and in guided claims (pool_parts from SS_PARTS, default
 * POOL_PARTS_DEFAULT), flipped before each burst. --compare tlayout opens it twice with
 * fused_decode = 1: the transposed matrices (out_proj) in rows of N and in the far layout
 * (kernels.h far_t_width: four column blocks, read as four far streams at one row). --compare
 * ends has every part of a step claim rows (and Mamba-1's fused segments) from the bottom, or
 * odd parts from the top (pool.h pool_ends 1 vs 2), flipped before each burst. A new comparison
 * is one row of `modes` below: how each side opens the model, and what to switch before each of
 * its bursts. A comparison that only switches before each burst runs both sides on one model,
 * one context and the same states (two instances differ in where their memory lies, and each
 * has a pool whose idle workers spin beside the other's steps: an A/A run of two instances gave
 * 0.92 at 16 streams on the AMD host, of one instance 0.98-1.01); --compare aa is that A/A run,
 * the noise floor of the others.
 *
 * usage: statesoup-decode-ab --model DIR [--weights stored|q8] [--threads N] [--streams LIST]
 *                            [--rounds R] [--burst T]
 *                            [--compare layouts|far|copy|parts|tlayout|ends|prefetch|units|
 *                                       scan|q8layout|nta|spread|chunks|farm|
 *                                       q8streams|fuserows|pfrows|farpf|aa|scanpf|dta8]
 *   --model DIR      a checkpoint folder (statesoup-bench --keep writes random-weight ones)
 *   --weights W      stored (default) or q8
 *   --threads N      compute threads (default: all cores)
 *   --streams LIST   streams per decode step, comma-separated (default 1,4,16)
 *   --rounds R       bursts per layout (default 40)
 *   --burst T        decode steps per burst (default 8)
 *   --profile        then the per-phase profile of 20 steps of each layout (ss_ctx_set_profile)
 *   --compare C      layouts (default: rows vs fused), far (one stream vs four far streams),
 *                    copy (F32 matrices in the file mapping vs copied onto huge pages),
 *                    parts (equal blocks vs guided claims), tlayout (fused: the transposed
 *                    matrices in rows vs in the far layout), ends (claims from one end
 *                    vs both), prefetch (fused decode without / with step 2's prefetch of
 *                    its next segment: internal.h fused_prefetch), units (that step in
 *                    whole segments vs column-block units: internal.h fused_units), scan (the
 *                    one-token scan kernel and the small GEMM's 4 x 4 reductions before /
 *                    after: kernels.h kernels_scan_ahead, kernels_hsum_4x4), q8layout,
 *                    nta, spread, chunks, farm, q8streams, fuserows, pfrows, farpf, aa, scanpf
 *                    and dta8 (the help text below)
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "kernels.h"
#include "pool.h"
#include "ss_model.h"

enum { MAX_STREAMS = 16, MAX_LIST = 8 };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static const char usage[] =
    "usage: statesoup-decode-ab --model DIR [--weights stored|q8] [--threads N]\n"
    "                           [--streams LIST] [--rounds R] [--burst T] [--profile]\n"
    "                           [--compare layouts|far|copy|parts|tlayout|ends|prefetch|\n"
    "                                      units|scan|q8layout|nta|spread|\n"
    "                                      chunks|farm|q8streams|fuserows|pfrows|farpf|\n"
    "                                      aa|scanpf|dta8]\n"
    "Decode steps of Mamba-1's row layout (fused_decode -1) and transposed layout (1) in\n"
    "alternating bursts in one process; ms per step (fastest, first quartile, median burst).\n"
    "--compare far: the default layout, the one-row kernels reading one stream vs four far\n"
    "streams (SS_FAR_STREAMS) in the alternating bursts instead.\n"
    "--compare copy: F32 matrices in place (the file mapping) vs copied onto huge pages.\n"
    "--compare parts: the one-row products' rows in equal blocks vs guided claims (SS_PARTS).\n"
    "--compare tlayout: fused, the transposed matrices in rows vs in the far layout.\n"
    "--compare ends: every part claims from the bottom vs odd parts from the top (SS_ENDS).\n"
    "--compare prefetch: Mamba-1's fused decode without and with step 2's prefetch of its\n"
    "next segment (dt_proj's rows, A, SSM states; with claims from both ends).\n"
    "--compare units: that step in whole segments vs column-block units (SS_UNITS).\n"
    "--compare scan: the one-token scan kernel and the small GEMM's 4 x 4 reductions before\n"
    "and after (SS_SCAN_AHEAD and SS_HSUM4X4 0 vs 1).\n"
    "--compare q8layout: --weights q8's matrices in rows vs in the q8p panels (SS_Q8_LAYOUT).\n"
    "--compare nta: the one-row kernels' prefetches of the weights into L2 vs non-temporal\n"
    "(SS_PF_NTA 0 vs 1).\n"
    "--compare spread: up to 16 streams, the next weight rows prefetched by every block of\n"
    "input rows vs shared out among them (SS_PF_SPREAD 0 vs 1).\n"
    "--compare chunks: 2 to 16 streams, the small GEMM over all of K at once vs in chunks\n"
    "(SS_K_CHUNKS 0 vs 1).\n"
    "--compare farm: the four far streams for one input row only vs up to four (SS_FAR_M 1\n"
    "vs 4).\n"
    "--compare q8streams: --weights q8's panels read as SS_Q8P_STREAMS_A streams vs\n"
    "SS_Q8P_STREAMS_B (1, 2 or 4; defaults 1 and 4: gemv_q8p_a8, VNNI; the default is 4).\n"
    "--compare fuserows: the fused layout, Mamba-1's two-step decode layer up to 16 rows vs up\n"
    "to SS_FUSED_ROWS_B rows (default 4), the prompt's four steps above (same bits).\n"
    "--compare pfrows: the one-row kernels' prefetches of one stream 8 rows ahead vs\n"
    "SS_PF1_ROWS_B rows (default 16; SS_PF1_ROWS; with SS_FAR_STREAMS=0).\n"
    "--compare farpf: the four far streams' prefetches one row ahead vs SS_FAR_PF_B bytes\n"
    "(default 1536; SS_FAR_PF_BYTES).\n"
    "--compare aa: the same on both sides: the noise floor of a comparison on this machine.\n"
    "--compare scanpf: the one-token scan without prefetches vs prefetching its state and A\n"
    "rows SS_SCAN_PF_B channels ahead (default 32; kernels.h kernels_scan_pf, SS_SCAN_PF).\n"
    "--compare dta8: --weights q8's batch-1 dt_proj on F32 vs 8-bit activations (SS_DT_A8).\n"
    "A comparison switched before each burst (all but layouts, copy, tlayout, q8layout) runs\n"
    "both sides on one model, context and states; the others open the checkpoint twice.\n";

/* A comparison: the two sides' names, how each opens the model, what to set before its bursts. */
typedef struct ab_mode {
    const char *name, *side[2], *ratio;
    void (*open)(int v, ss_model_params *p);
    void (*before)(int v);
} ab_mode;

static void open_layouts(int v, ss_model_params *p)
{
    p->fused_decode = v ? 1 : -1;
}
static void open_default(int v, ss_model_params *p)
{
    (void)v, (void)p;
}
static void open_copy(int v, ss_model_params *p)
{
    p->f32_in_place = !v;
}
static void before_far(int v)
{
    kernels_far_rows = v ? FAR_MIN_ROWS : INT_MAX;
}
static void before_none(int v)
{
    (void)v;
}
/* tlayout: kernels_far_t decides the transposed matrices' layout while a model loads (kernels.h
 * far_t_width): off for side 0, on for side 1; the one-row kernels as this CPU's default (or
 * SS_FAR_STREAMS) on both sides */
static void open_tlayout(int v, ss_model_params *p)
{
    (void)kernels_get(); /* (which reads SS_FAR_T first) */
    p->fused_decode = 1;
    kernels_far_t = v;
}
/* the guided side's pool_parts and pool_parts_min: SS_PARTS and SS_PARTS_MIN as the first pool
 * read them (else the default); the other side's SS_PARTS_A and SS_PARTS_MIN_A (default 0 and
 * 0: equal blocks) */
static int parts_ab[2][2] = {{-1, 0}, {0, 0}};
static void before_parts(int v)
{
    if (parts_ab[0][0] < 0) {
        const char *a = getenv("SS_PARTS_A"), *am = getenv("SS_PARTS_MIN_A");
        parts_ab[0][0] = a ? atoi(a) : 0;
        parts_ab[0][1] = am ? atoi(am) : 0;
        parts_ab[1][0] = pool_parts > 0 ? pool_parts : POOL_PARTS_DEFAULT;
        parts_ab[1][1] = pool_parts_min;
    }
    pool_parts = parts_ab[v][0];
    pool_parts_min = parts_ab[v][1];
}

static void before_ends(int v)
{
    pool_ends = v ? 2 : 1;
}

static void before_prefetch(int v)
{
    fused_prefetch = v;
}

static void before_units(int v)
{
    fused_units = v;
}

/* q8layout: --weights q8's matrices in the row layout (side 0) or the q8p panels (side 1; the
 * default), as SS_Q8_LAYOUT tells the loader */
static void open_q8layout(int v, ss_model_params *p)
{
    (void)p;
    setenv("SS_Q8_LAYOUT", v ? "panels" : "rows", 1);
}

/* scan: the one-token scan kernel and the small GEMM's 4 x 4 reductions (dt_proj at 16 streams;
 * kernels.h kernels_scan_ahead, kernels_hsum_4x4), before / after */
static void before_scan(int v)
{
    kernels_scan_ahead = v;
    kernels_hsum_4x4 = v;
}

/* nta: the one-row kernels' prefetches of the weights into L2 (side 0) or non-temporal (side 1;
 * the default on AMD), kernels.h kernels_pf_nta */
static void before_nta(int v)
{
    kernels_pf_nta = v;
}

/* spread: gemm_small's next-block prefetches all in each block vs spread over the blocks
 * (kernels.h kernels_pf_spread) */
static void before_spread(int v)
{
    kernels_pf_spread = v;
}

/* farm: gemm_small's four far streams for one input row only vs up to four (kernels_far_m) */
static void before_farm(int v)
{
    kernels_far_m = v ? 4 : 1;
}

/* chunks: gemm_small from 2 to 16 rows over all of K vs in chunks of k (kernels_k_chunks) */
static void before_chunks(int v)
{
    kernels_k_chunks = v;
}

/* q8streams: gemv_q8p_a8's panels side by side, SS_Q8P_STREAMS_A (1, 2 or 4, default 1) on side
 * 0, SS_Q8P_STREAMS_B (default 4) on side 1 (kernels.h kernels_q8p_streams: 4 by default) */
static int q8streams_env(const char *name, int dflt)
{
    const char *a = getenv(name);
    return a && (!strcmp(a, "1") || !strcmp(a, "2") || !strcmp(a, "4")) ? a[0] - '0' : dflt;
}
static void before_q8streams(int v)
{
    kernels_q8p_streams =
        v ? q8streams_env("SS_Q8P_STREAMS_B", 4) : q8streams_env("SS_Q8P_STREAMS_A", 1);
}

/* fuserows: the fused layout on both sides; the two-step layer up to 16 rows (side 0) or up to
 * SS_FUSED_ROWS_B (side 1), internal.h fused_max_rows */
static void open_fused(int v, ss_model_params *p)
{
    (void)v;
    p->fused_decode = 1;
}
static void before_fuserows(int v)
{
    const char *b = getenv("SS_FUSED_ROWS_B");
    fused_max_rows = !v ? 16 : b && atoi(b) >= 1 && atoi(b) <= 16 ? atoi(b) : 4;
}

/* pfrows: gemm_small's one-row prefetches of one stream 8 rows ahead (side 0) or SS_PF1_ROWS_B
 * (side 1, default 16; kernels.h kernels_pf1_rows) */
static void before_pfrows(int v)
{
    const char *b = getenv("SS_PF1_ROWS_B");
    const int r = b ? atoi(b) : 16;
    kernels_pf1_rows = v && r >= 4 && r <= 64 && r % 4 == 0 ? r : v ? 16 : 8;
}

/* farpf: gemm_small's far streams prefetched one row ahead (side 0, before) or SS_FAR_PF_B
 * bytes (side 1, default FAR_PF_BYTES; kernels.h kernels_far_pf_bytes) */
static void before_farpf(int v)
{
    const char *b = getenv("SS_FAR_PF_B");
    const int n = b ? atoi(b) : FAR_PF_BYTES;
    kernels_far_pf_bytes = !v ? 0 : n > 0 && n <= 65536 && n % 64 == 0 ? n : FAR_PF_BYTES;
}

/* scanpf: the one-token scan without prefetches (side 0) or SS_SCAN_PF_B channels ahead (32) */
static void before_scanpf(int v)
{
    const char *b = getenv("SS_SCAN_PF_B");
    kernels_scan_pf = !v ? 0 : b && atoi(b) > 0 && atoi(b) % 16 == 0 ? atoi(b) : 32;
}
/* dta8: q8 batch-1 decode's dt_proj on F32 (side 0) or 8-bit activations (internal.h dt_a8) */
static void before_dta8(int v)
{
    dt_a8 = v;
}
static const ab_mode modes[] = {
    {"aa", {"side 0", "side 1 (the same)"}, "1 / 0", open_default, before_none},
    {"scanpf", {"scan, no prefetch", "prefetch SS_SCAN_PF_B ahead"}, "prefetch / none",
     open_default, before_scanpf},
    {"dta8", {"q8 dt_proj, F32 activations", "8-bit activations"}, "8-bit / F32", open_default,
     before_dta8},
    {"layouts", {"rows (fused_decode -1)", "fused (fused_decode 1)"}, "fused / rows",
     open_layouts, before_none},
    {"far", {"one stream", "four far streams"}, "far / one", open_default, before_far},
    {"copy", {"F32 in place", "copied, huge pages"}, "copied / in place", open_copy,
     before_none},
    {"parts", {"equal blocks", "guided claims"}, "guided / equal", open_default, before_parts},
    {"tlayout", {"plain Wt", "far Wt (4 blocks)"}, "far Wt / plain Wt", open_tlayout,
     before_none},
    {"ends", {"claims from one end", "from both ends"}, "both / one", open_default, before_ends},
    {"prefetch", {"no prefetch", "prefetch"}, "prefetch / none", open_default, before_prefetch},
    {"units", {"whole segments", "column-block units"}, "units / segments", open_default,
     before_units},
    {"scan", {"scan and dt_proj before", "after"}, "after / before",
     open_default, before_scan},
    {"q8layout", {"q8 rows", "q8 panels (q8p)"}, "panels / rows", open_q8layout, before_none},
    {"nta", {"prefetcht1", "prefetchnta"}, "nta / t1", open_default, before_nta},
    {"spread", {"next rows in every block", "spread over the blocks"}, "spread / every",
     open_default, before_spread},
    {"chunks", {"all of K at once", "chunks of K"}, "chunks / at once", open_default,
     before_chunks},
    {"farm", {"far streams at 1 row", "far streams up to 4 rows"}, "up to 4 / 1", open_default,
     before_farm},
    {"q8streams", {"q8p panels, SS_Q8P_STREAMS_A streams", "q8p, SS_Q8P_STREAMS_B streams"},
     "B / A streams", open_default, before_q8streams},
    {"fuserows", {"two steps up to 16 rows", "two steps up to SS_FUSED_ROWS_B rows"},
     "B / 16 rows", open_fused, before_fuserows},
    {"pfrows", {"prefetch 8 rows ahead", "prefetch SS_PF1_ROWS_B rows ahead"}, "B / 8 rows",
     open_default, before_pfrows},
    {"farpf", {"far streams prefetched one row ahead", "SS_FAR_PF_B bytes ahead"}, "B / one row",
     open_default, before_farpf},
};

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int threads = 0, rounds = 40, burst = 8, streams[MAX_LIST] = {1, 4, 16}, n_streams = 3;
    int profile = 0;
    const ab_mode *mode = &modes[0];
    ss_weights weights = SS_WEIGHTS_STORED;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--profile")) {
            profile = 1;
            continue;
        }
        if (!strcmp(a, "--model") && v) {
            dir = v;
        } else if (!strcmp(a, "--compare") && v) {
            mode = NULL;
            for (size_t k = 0; k < sizeof modes / sizeof *modes; k++)
                if (!strcmp(v, modes[k].name)) mode = &modes[k];
            if (!mode) {
                fputs(usage, stderr);
                return 2;
            }
        } else if (!strcmp(a, "--weights") && v && (!strcmp(v, "q8") || !strcmp(v, "stored"))) {
            weights = !strcmp(v, "q8") ? SS_WEIGHTS_Q8 : SS_WEIGHTS_STORED;
        } else if (!strcmp(a, "--threads") && v && atoi(v) > 0) {
            threads = atoi(v);
        } else if (!strcmp(a, "--rounds") && v && atoi(v) >= 4) {
            rounds = atoi(v);
        } else if (!strcmp(a, "--burst") && v && atoi(v) > 0) {
            burst = atoi(v);
        } else if (!strcmp(a, "--streams") && v) {
            n_streams = 0;
            for (const char *p = v; *p && n_streams < MAX_LIST;
                 p = strchr(p, ',') ? strchr(p, ',') + 1 : "") {
                const int s = atoi(p);
                if (s < 1 || s > MAX_STREAMS) {
                    fputs(usage, stderr);
                    return 2;
                }
                streams[n_streams++] = s;
            }
        } else {
            fputs(usage, !strcmp(a, "-h") || !strcmp(a, "--help") ? stdout : stderr);
            return !strcmp(a, "-h") || !strcmp(a, "--help") ? 0 : 2;
        }
        i++;
    }
    if (!dir || !n_streams) {
        fputs(usage, stderr);
        return 2;
    }
    const char *const *name = mode->side;
    ss_model *m[2];
    ss_ctx *c[2];
    ss_state *st[2][MAX_STREAMS];
    /* a mode switched at run time: both sides on one model, context and states (see the top) */
    const int shared = mode->open == open_default || mode->open == open_fused;
    for (int v = 0; v < 2; v++) {
        if (v == 1 && shared) {
            m[1] = m[0];
            c[1] = c[0];
            for (int i = 0; i < MAX_STREAMS; i++) st[1][i] = st[0][i];
            break;
        }
        ss_model_params p = ss_model_default_params();
        p.n_threads = threads;
        p.weights = weights;
        mode->open(v, &p);
        if (ss_model_open(&m[v], dir, &p) || ss_ctx_new(m[v], &c[v])) {
            fprintf(stderr, "statesoup-decode-ab: %s\n", ss_errmsg());
            return 1;
        }
        for (int i = 0; i < MAX_STREAMS; i++)
            if (ss_state_new(m[v], &st[v][i])) {
                fprintf(stderr, "statesoup-decode-ab: %s\n", ss_errmsg());
                return 1;
            }
    }
    const int V = ss_model_get_info(m[0])->vocab_size;
    float *logits = malloc((size_t)MAX_STREAMS * V * sizeof *logits);
    double *t[2] = {malloc((size_t)rounds * sizeof(double)),
                    malloc((size_t)rounds * sizeof(double))};
    if (!logits || !t[0] || !t[1]) return 1;
    printf("statesoup-decode-ab: %s, weights %s, %d bursts of %d steps per layout\n", dir,
           weights == SS_WEIGHTS_Q8 ? "q8" : "stored", rounds, burst);
    for (int si = 0; si < n_streams; si++) {
        const int S = streams[si];
        for (int r = -2; r < rounds; r++) /* two rounds of warm-up */
            for (int o = 0; o < 2; o++) {
                const int v = r & 1 ? 1 - o : o;
                mode->before(v);
                int32_t tok[MAX_STREAMS];
                ss_seq q[MAX_STREAMS];
                const double t0 = now_s();
                for (int k = 0; k < burst; k++) {
                    for (int i = 0; i < S; i++) {
                        tok[i] = (int32_t)(((r + 2) * burst + k) * 31 + i * 7) % V;
                        q[i] = (ss_seq){.state = st[v][i], .tokens = &tok[i], .n_tokens = 1,
                                        .logits = logits + (size_t)i * V};
                    }
                    if (ss_model_eval(m[v], c[v], q, S, 0)) {
                        fprintf(stderr, "statesoup-decode-ab: %s\n", ss_errmsg());
                        return 1;
                    }
                }
                if (r >= 0) t[v][r] = (now_s() - t0) / burst;
            }
        for (int v = 0; v < 2; v++) {
            qsort(t[v], (size_t)rounds, sizeof(double), cmp_double);
            printf("  %2d streams  %-22s ms/step  fastest %7.3f  p25 %7.3f  median %7.3f  "
                   "(%.1f tok/s at the median)\n",
                   S, name[v], t[v][0] * 1e3, t[v][rounds / 4] * 1e3, t[v][rounds / 2] * 1e3,
                   S / t[v][rounds / 2]);
        }
        printf("  %2d streams  %s, median: %.3f\n", S, mode->ratio,
               t[1][rounds / 2] / t[0][rounds / 2]);
        for (int v = 0; profile && v < 2; v++) { /* us per step and phase, 20 steps */
            mode->before(v);
            ss_ctx_set_profile(c[v], 1);
            for (int k = 0; k < 20; k++) {
                int32_t tok[MAX_STREAMS];
                ss_seq q[MAX_STREAMS];
                for (int i = 0; i < S; i++) {
                    tok[i] = (int32_t)(k * 13 + i * 5) % V;
                    q[i] = (ss_seq){.state = st[v][i], .tokens = &tok[i], .n_tokens = 1,
                                    .logits = logits + (size_t)i * V};
                }
                if (ss_model_eval(m[v], c[v], q, S, 0)) return 1;
            }
            ss_profile pr;
            ss_ctx_get_profile(c[v], &pr);
            ss_ctx_set_profile(c[v], 0);
            printf("  %2d streams  %-22s us/step:", S, name[v]);
            for (int ph = 0; ph < SS_PHASE_COUNT; ph++)
                if (pr.ns[ph] >= pr.evals * 500) /* phases of 0.5 us a step or more */
                    printf(" %s %.0f", ss_phase_name((ss_phase)ph), pr.ns[ph] / 1e3 / pr.evals);
            printf(" | %.0f parallel steps, caller waiting %.0f (",
                   (double)pr.pool_steps / pr.evals, pr.pool_wait_ns / 1e3 / pr.evals);
            for (int ph = 0, first = 1; ph < SS_PHASE_COUNT; ph++)
                if (pr.ph_steps[ph]) {
                    printf("%s%s %.0f", first ? "" : ", ", ss_phase_name((ss_phase)ph),
                           pr.ph_wait_ns[ph] / 1e3 / pr.evals);
                    first = 0;
                }
            printf("), worker lag %.0f\n", pr.pool_lag_ns / 1e3 / pr.evals);
        }
        fflush(stdout);
    }
    for (int v = 0; v < 2 - shared; v++) {
        for (int i = 0; i < MAX_STREAMS; i++) ss_state_free(st[v][i]);
        ss_ctx_free(c[v]);
        ss_model_close(m[v]);
    }
    free(logits);
    free(t[0]);
    free(t[1]);
    return 0;
}
