/*
 * bench.c - `statesoup-bench`: how fast statesoup runs on this machine, against this machine's
 * own limits, measured in the same run.
 *
 * For each model shape (real Mamba-1 shapes, random weights) it writes a real checkpoint to a
 * temporary folder, then times: loading it; prefill of a 512-token prompt; decode at 1, 4 and 16
 * concurrent sequences through the daemon's engine (continuous batching); saving a state to the
 * LMDB store, restoring it, merging 4 stored states; and the RSS during each. It also measures the
 * machine: memory read bandwidth (2 threads), OpenBLAS sgemm peak on prefill-shaped GEMMs, and
 * raw disk write + fsync, and prints every figure as a fraction of its limit:
 *   decode at batch 1 streams every weight once per token: bound = bandwidth / weight bytes;
 *   prefill costs 2 x (projection parameters) FLOPs per token: bound = sgemm peak / that;
 *   a merge of 4 states reads 4 and writes 1: bound = bandwidth / (5 x state bytes) roughly.
 * Results go to stdout as a table and to a JSON file (--json).
 */
#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "engine.h"
#include "read.h"
#include "safetensors.h"
#include "ss_model.h"
#include "ss_store.h"
#include "ss_util.h"

typedef struct shape {
    const char *name;
    int d, layers, vocab;
} shape;

/* state-spaces/mamba-*-hf: expand 2, state 16, conv 4, dt rank ceil(d/16), vocab 50280, tied */
static const shape shapes[] = {
    {"130m", 768, 24, 50280},   {"370m", 1024, 48, 50280}, {"790m", 1536, 48, 50280},
    {"1.4b", 2048, 48, 50280}, {"2.8b", 2560, 64, 50280},
};

double bench_now_s(void)
{
    return (double)ss_mono_ns() / 1e9;
}

int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Resident set size (current and peak) from /proc/self/status, in MB. */
void bench_rss_mb(double *cur, double *peak)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    *cur = *peak = 0;
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        long kb;
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) *cur = kb / 1024.0;
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) *peak = kb / 1024.0;
    }
    fclose(f);
}

int bench_catalog_sizes(const char *root, int quick, const char *phase, bench_catalog_fn fn,
                        void *user)
{
    static const int sizes[] = {10000, 100000};
    int rc = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0] && !rc; i++) {
        int n = quick ? sizes[i] / 10 : sizes[i];
        char dir[4096 + 64];
        snprintf(dir, sizeof dir, "%s/%s-%d", root, phase, n);
        rc = fn(user, dir, n);
        char cmd[8192 + 256];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "statesoup-bench: could not remove %s\n", dir);
    }
    return rc;
}

/* ---- machine limits ------------------------------------------------------------------------ */

/* --shape and --model folders per run. */
#define MAX_MODELS 8
/* --quick's prompt and tokens decoded per stream, unless --prompt / --decode say. */
#define QUICK_PROMPT 64
#define QUICK_DECODE 8
/* Decode is measured at 1, 4 and 16 concurrent streams. */
#define N_STREAM_COUNTS 3
/* States saved, then merged, by the store phase. */
#define MERGE_N 4
/* Most threads the bandwidth probe runs (its per-thread arrays are this long). */
#define MAX_BW_THREADS 64
/* Bytes the disk probe writes and fsyncs: about one mamba-2.8b state (SSM + conv windows). */
#define DISK_PROBE_BYTES (26u << 20)

typedef struct bw_job {
    const v16f *buf;
    size_t n;
    int threads;
    int streams; /* 1 or 4 per thread */
    float sink[MAX_BW_THREADS];
} bw_job;

static void *bw_thread(void *arg)
{
    bw_job *j = ((bw_job **)arg)[0];
    long t = (long)((bw_job **)arg)[1];
    size_t per = j->n / (size_t)j->threads & ~(size_t)3;
    j->sink[t] = bench_read(j->buf + (size_t)t * per, per * sizeof(v16f), j->streams);
    return NULL;
}

/* Read bandwidth in GB/s with `threads` threads over a buffer much larger than the L3: the best of
 * 5 runs each of one and of four streams per thread. */
static double measure_bandwidth(int threads)
{
    const size_t bytes = (size_t)1 << 30, n = bytes / sizeof(v16f);
    v16f *buf = aligned_alloc(64, bytes);
    if (!buf || threads > MAX_BW_THREADS) {
        free(buf);
        return 0;
    }
    memset(buf, 1, bytes);
    __builtin_cpu_init();
    bw_job j = {.buf = buf, .n = n, .threads = threads};
    double best = 0;
    for (int rep = 0; rep < 10; rep++) {
        j.streams = rep % 2 ? 4 : 1;
        pthread_t th[MAX_BW_THREADS];
        void *args[MAX_BW_THREADS][2];
        double t0 = bench_now_s();
        for (long t = 0; t < threads; t++) {
            args[t][0] = &j;
            args[t][1] = (void *)t;
            if (t > 0) pthread_create(&th[t], NULL, bw_thread, args[t]);
        }
        bw_thread(args[0]);
        for (int t = 1; t < threads; t++) pthread_join(th[t], NULL);
        double dt = bench_now_s() - t0;
        if (bytes / dt / 1e9 > best) best = bytes / dt / 1e9;
    }
    free(buf);
    return best;
}

/* Best sgemm GFLOP/s over the prefill-shaped GEMMs of a model with width d. */
static double measure_sgemm(int d)
{
    const int M = 512, shapes_nk[3][2] = {{4 * d, d}, {d, 2 * d}, {2 * d, 2 * d}};
    double best = 0;
    for (int s = 0; s < 3; s++) {
        int N = shapes_nk[s][0], K = shapes_nk[s][1];
        float *A = malloc((size_t)M * K * 4), *B = malloc((size_t)N * K * 4),
              *C = malloc((size_t)M * N * 4);
        for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)(i % 13) * 0.01f;
        for (size_t i = 0; i < (size_t)N * K; i++) B[i] = (float)(i % 7) * 0.01f;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, A, K, B, K, 0, C, N);
        int it = 0;
        double t0 = bench_now_s(), dt;
        do {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, A, K, B, K, 0, C, N);
            it++;
        } while ((dt = bench_now_s() - t0) < 0.5);
        double g = 2.0 * M * N * K * it / dt / 1e9;
        if (g > best) best = g;
        free(A);
        free(B);
        free(C);
    }
    return best;
}

/* Seconds to write `bytes` to a new file in dir and fsync it. */
static double measure_disk_write(const char *dir, size_t bytes)
{
    char path[8192];
    snprintf(path, sizeof path, "%s/rawwrite.bin", dir);
    char *buf = malloc(bytes);
    if (!buf) return 0;
    memset(buf, 0x5a, bytes);
    double best = 1e9;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = bench_now_s();
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0) break;
        size_t off = 0;
        while (off < bytes) {
            ssize_t w = write(fd, buf + off, bytes - off);
            if (w <= 0) break;
            off += (size_t)w;
        }
        fsync(fd);
        close(fd);
        double dt = bench_now_s() - t0;
        if (dt < best) best = dt;
        unlink(path);
    }
    free(buf);
    return best;
}

/* ---- random checkpoint ---------------------------------------------------------------------- */

typedef struct tensor_spec {
    char name[96];
    int ndim;
    int64_t shape[3];
    int kind; /* how to fill it */
} tensor_spec;

enum { FILL_WEIGHT, FILL_ONES, FILL_ALOG, FILL_DTBIAS, FILL_CONV, FILL_EMBED };

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static inline float frand(void) /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static void fill(const tensor_spec *t, float *v, size_t n)
{
    int64_t cols = t->shape[t->ndim - 1];
    float scale = 1.0f / sqrtf((float)cols);
    for (size_t i = 0; i < n; i++) {
        switch (t->kind) {
        case FILL_WEIGHT: v[i] = frand() * scale; break;
        case FILL_ONES: v[i] = 1.0f; break;
        case FILL_ALOG: v[i] = logf((float)(i % (size_t)cols) + 1.0f); break;
        case FILL_DTBIAS: { /* softplus^-1 of dt, log-uniform in [0.001, 0.1] */
            float dt = expf(logf(0.001f) + (frand() * 0.5f + 0.5f) * (logf(0.1f) - logf(0.001f)));
            v[i] = dt + logf(-expm1f(-dt));
            break;
        }
        case FILL_CONV: v[i] = frand() * 0.5f; break;
        case FILL_EMBED: v[i] = frand() * 0.05f; break;
        }
    }
}

static int write_config(const shape *s, const char *dir)
{
    const int d = s->d, N = 16, R = (d + 15) / 16, K = 4;
    char path[8192];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f,
            "{\"architectures\": [\"MambaForCausalLM\"], \"model_type\": \"mamba\", "
            "\"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d, "
            "\"vocab_size\": %d, \"state_size\": %d, \"conv_kernel\": %d, \"expand\": 2, "
            "\"time_step_rank\": %d, \"use_bias\": false, \"use_conv_bias\": true, "
            "\"layer_norm_epsilon\": 1e-05, \"tie_word_embeddings\": true, "
            "\"eos_token_id\": 0, \"bos_token_id\": 0}\n",
            d, 2 * d, s->layers, s->vocab, N, K, R);
    return fclose(f) != 0 ? -1 : 0;
}

static void spec_add(tensor_spec *t, int kind, int ndim, int s0, int s1, int s2, const char *fmt,
                     ...) __attribute__((format(printf, 7, 8)));
static void spec_add(tensor_spec *t, int kind, int ndim, int s0, int s1, int s2, const char *fmt,
                     ...)
{
    va_list ap;
    memset(t, 0, sizeof *t);
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->ndim = ndim;
    t->shape[0] = s0;
    t->shape[1] = s1;
    t->shape[2] = s2;
    t->kind = kind;
}

/* The tensors of a Mamba-1 checkpoint of shape s (calloc'd, *nt of them). */
static tensor_spec *mamba_specs(const shape *s, int *nt)
{
    const int d = s->d, Di = 2 * d, N = 16, R = (d + 15) / 16, K = 4, L = s->layers;
    tensor_spec *ts = calloc((size_t)(2 + 10 * L), sizeof *ts);
    if (!ts) return NULL;
    int k = 0;
    spec_add(&ts[k++], FILL_EMBED, 2, s->vocab, d, 0, "backbone.embeddings.weight");
    for (int i = 0; i < L; i++) {
        spec_add(&ts[k++], FILL_ONES, 1, d, 0, 0, "backbone.layers.%d.norm.weight", i);
        spec_add(&ts[k++], FILL_WEIGHT, 2, 2 * Di, d, 0, "backbone.layers.%d.mixer.in_proj.weight",
                 i);
        spec_add(&ts[k++], FILL_CONV, 3, Di, 1, K, "backbone.layers.%d.mixer.conv1d.weight", i);
        spec_add(&ts[k++], FILL_CONV, 1, Di, 0, 0, "backbone.layers.%d.mixer.conv1d.bias", i);
        spec_add(&ts[k++], FILL_WEIGHT, 2, R + 2 * N, Di, 0,
                 "backbone.layers.%d.mixer.x_proj.weight", i);
        spec_add(&ts[k++], FILL_WEIGHT, 2, Di, R, 0, "backbone.layers.%d.mixer.dt_proj.weight", i);
        spec_add(&ts[k++], FILL_DTBIAS, 1, Di, 0, 0, "backbone.layers.%d.mixer.dt_proj.bias", i);
        spec_add(&ts[k++], FILL_ALOG, 2, Di, N, 0, "backbone.layers.%d.mixer.A_log", i);
        spec_add(&ts[k++], FILL_WEIGHT, 2, d, Di, 0, "backbone.layers.%d.mixer.out_proj.weight",
                 i);
    }
    for (int i = 0; i < L; i++)
        spec_add(&ts[k++], FILL_ONES, 1, Di, 0, 0, "backbone.layers.%d.mixer.D", i);
    spec_add(&ts[k++], FILL_ONES, 1, d, 0, 0, "backbone.norm_f.weight");
    *nt = k;
    return ts;
}

static size_t spec_elems(const tensor_spec *t)
{
    size_t n = 1;
    for (int j = 0; j < t->ndim; j++) n *= (size_t)t->shape[j];
    return n;
}

/* The safetensors header for ts in dtype; *data_bytes gets the size of the data after it. */
static char *st_header(const tensor_spec *ts, int nt, int dtype, uint64_t *data_bytes)
{
    const size_t esz = st_dtype_size((st_dtype)dtype);
    json_t *hdr = json_object();
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        json_t *shp = json_array();
        for (int j = 0; j < ts[i].ndim; j++)
            json_array_append_new(shp, json_integer(ts[i].shape[j]));
        uint64_t n = spec_elems(&ts[i]);
        json_object_set_new(hdr, ts[i].name,
                            json_pack("{s:s, s:o, s:[I,I]}", "dtype",
                                      st_dtype_name((st_dtype)dtype), "shape", shp,
                                      "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + n * esz)));
        off += n * esz;
    }
    char *htext = json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(hdr);
    *data_bytes = off;
    return htext;
}

/* Every tensor's data, filled and converted to dtype (BF16 / F16: every tensor, as HF writes
 * such checkpoints). */
static int write_tensors(FILE *f, const tensor_spec *ts, int nt, int dtype)
{
    const size_t esz = st_dtype_size((st_dtype)dtype);
    size_t cap = 0;
    float *buf = NULL;
    uint16_t *narrow = NULL;
    int rc = 0;
    for (int i = 0; i < nt && rc == 0; i++) {
        size_t n = spec_elems(&ts[i]);
        if (n > cap) {
            free(buf);
            free(narrow);
            buf = malloc(n * 4);
            narrow = malloc(n * 2);
            cap = n;
            if (!buf || !narrow) {
                rc = -1;
                break;
            }
        }
        fill(&ts[i], buf, n);
        if (esz == 4) {
            if (fwrite(buf, 4, n, f) != n) rc = -1;
        } else {
            st_from_f32((st_dtype)dtype, buf, narrow, n);
            if (fwrite(narrow, 2, n, f) != n) rc = -1;
        }
    }
    free(buf);
    free(narrow);
    return rc;
}

/* A random-weight Mamba-1 checkpoint of shape s in dir; returns its weight bytes, 0 on error. */
static uint64_t write_checkpoint(const shape *s, const char *dir, int dtype)
{
    int nt = 0;
    tensor_spec *ts;
    if (write_config(s, dir) || !(ts = mamba_specs(s, &nt))) return 0;
    uint64_t off = 0;
    char *htext = st_header(ts, nt, dtype, &off);
    char path[8192];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = htext ? fopen(path, "wb") : NULL;
    if (!f) {
        free(htext);
        free(ts);
        return 0;
    }
    size_t hl = strlen(htext);
    uint64_t hlen = (hl + 7) & ~(size_t)7;
    int ok = fwrite(&hlen, 8, 1, f) == 1 && fwrite(htext, 1, hl, f) == hl;
    for (size_t i = hl; i < hlen; i++) fputc(' ', f);
    free(htext);
    ok = ok && write_tensors(f, ts, nt, dtype) == 0;
    free(ts);
    /* on disk before anything is measured, so that no writeback runs beside the figures */
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) ok = 0;
    if (fclose(f) != 0) ok = 0;
    return ok ? off : 0;
}

/* ---- decode through the engine ------------------------------------------------------------- */

typedef struct dec_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int left;
} dec_wait;

static void dec_done(void *user, ss_job *j)
{
    (void)j;
    dec_wait *w = user;
    pthread_mutex_lock(&w->mu);
    w->left--;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Aggregate decode tokens/s with `streams` concurrent generations of n_tok tokens each. */
static double bench_decode(ss_model *m, int streams, int n_tok, double *rss)
{
    ss_engine *e;
    ss_engine_params ep = ss_engine_default_params();
    ep.max_batch = streams > 16 ? streams : 16;
    if (ss_engine_open(&e, m, &ep)) return 0;
    int V = ss_model_get_info(m)->vocab_size;
    int32_t prompt[8];
    for (int i = 0; i < 8; i++) prompt[i] = (i * 977 + 13) % V;
    ss_job **jobs = calloc((size_t)streams, sizeof *jobs);
    if (!jobs) {
        ss_engine_close(e);
        return 0;
    }
    ss_job_params p = {.kind = SS_JOB_GENERATE, .prompt = prompt, .n_prompt = 8,
                       .sample = ss_sample_default_params()};
    p.sample.temperature = 0;
    p.stop_at_eos = 0;
    p.on_done = dec_done;
    dec_wait w;
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    p.user = &w;
    double t0 = 0;
    /* round 0, the warm-up: `streams` short jobs at once, so that the engine's and the model's
     * scratch for a step of that many rows is reserved and touched before the clock starts
     * (with --quick's few tokens per stream, a 16-stream run timed its first steps' page
     * faults); round 1, the measured run: prefill is negligible (one token), decode counts */
    for (int round = 0; round < 2; round++) {
        p.max_tokens = round ? n_tok : 4;
        p.n_prompt = round ? 1 : 8;
        pthread_mutex_lock(&w.mu);
        w.left = streams;
        pthread_mutex_unlock(&w.mu);
        if (round) t0 = bench_now_s();
        for (int s = 0; s < streams; s++) {
            prompt[0] = (s * 31 + 7) % V;
            if (ss_engine_submit(e, &p, &jobs[s])) {
                jobs[s] = NULL;
                pthread_mutex_lock(&w.mu);
                w.left--;
                pthread_mutex_unlock(&w.mu);
            }
        }
        pthread_mutex_lock(&w.mu);
        while (w.left > 0) pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        if (!round)
            for (int s = 0; s < streams; s++) {
                ss_job_free(jobs[s]);
                jobs[s] = NULL;
            }
    }
    double dt = bench_now_s() - t0, peak;
    bench_rss_mb(rss, &peak);
    long total = 0;
    for (int s = 0; s < streams; s++) {
        if (jobs[s]) total += ss_job_get_result(jobs[s])->n_generated;
        ss_job_free(jobs[s]);
    }
    free(jobs);
    ss_engine_close(e);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return total / dt;
}

/* ---- main ---------------------------------------------------------------------------------- */

static const char help[] =
    "usage: statesoup-bench [options]\n"
    "\n"
    "Measure statesoup on this machine: model load, prefill, decode at 1/4/16 concurrent\n"
    "sequences, state save/restore/merge in the LMDB store, and this machine's limits (memory\n"
    "bandwidth, OpenBLAS sgemm peak, disk write) in the same run. Models are random-weight\n"
    "checkpoints of real Mamba-1 shapes written to a temporary folder, or checkpoints you name.\n"
    "\n"
    "  --shape S        130m, 370m, 790m, 1.4b or 2.8b (repeatable; default 130m)\n"
    "  --model DIR      also (or only) measure this checkpoint folder, as statesoupd loads it\n"
    "                   (repeatable; any supported family and dtype)\n"
    "  --only LIST      measure only these phases, comma-separated: prefill, decode, store\n"
    "                   (save, restore, linear merge of 4 and the sequential and symmetric\n"
    "                   compositions of 4),\n"
    "                   fairness, prefix (load and the machine's limits are always measured;\n"
    "                   fairness runs only when named: a long prompt beside streams and a\n"
    "                   short request; prefix too: time to first token of a 2,000-token\n"
    "                   prompt whose first 1,900 tokens are stored, with and without reuse;\n"
    "                   search too: latency p50/p99 of POST /v1/states/search's scoring over\n"
    "                   10,000 and 100,000 stored 256-dim keys, their memory and load time;\n"
    "                   it needs no model, and --only search measures no model);\n"
    "                   children too: GET /v1/states/{state}/children's lookups and depth-3\n"
    "                   walks at 10,000 and 100,000 stored states (no model either)\n"
    "  --long-prompt N  the fairness phase's long prompt (default 100000 tokens)\n"
    "  --prefix N,K     the prefix phase's prompt and stored tokens (default 2000,1900)\n"
    "  --prompt N       prefill prompt length (default 512)\n"
    "  --decode N       tokens generated per stream (default 128)\n"
    "                   (one-stream decode also runs 64 tokens, 16 with --quick, one at a\n"
    "                   time, each after a plain read of the same bytes by the same threads,\n"
    "                   and prints the median fraction of that read's rate)\n"
    "  --threads N      compute threads (default: all cores)\n"
    "  --tmp DIR        where to write checkpoints and the store (default $TMPDIR or /tmp)\n"
    "  --json FILE      also write the results as JSON\n"
    "  --quick          shorter runs (for a smoke test): one round of each phase, a prompt of\n"
    "                   64 tokens and 8 decoded per stream unless --prompt / --decode say\n"
    "  --keep           keep the generated checkpoints (their folder is printed)\n"
    "  --f32-in-place   use F32 weight matrices straight from the file mapping (statesoupd\n"
    "                   --f32-in-place) instead of the default copy onto huge pages\n"
    "  --huge-pages     accepted for old command lines: the default now\n"
    "  --profile        with decode: also time each phase of a batch-1 decode token (norms,\n"
    "                   projections, conv, scan, logits, sampling, the threads' meetings)\n"
    "                   with the model's per-phase counters, and print microseconds per\n"
    "                   token per phase and the share that is not streaming weights\n"
    "  --profile-streams N  the same profile of decode steps of N streams at once (1 to 64;\n"
    "                   implies --profile): microseconds per step, and the projections'\n"
    "                   GFLOP/s against the sgemm peak measured at the start of the run\n"
    "  --dtype D        dtype of the --shape checkpoints written: F32 (default), BF16 or F16\n"
    "  --weights W      stored (default) or q8: quantise the matrices at load (statesoupd\n"
    "                   --weights q8); the decode bound then counts 1.125 bytes per parameter\n"
    "  -h, --help       this text\n"
    "\n"
    "example: statesoup-bench --shape 130m --shape 2.8b --json bench.json\n";

/* What the command line asked for. */
typedef struct bench_opts {
    const char *json_out, *tmp;
    int n_prompt, n_decode, threads, quick, keep, in_place, dtype, q8, profile, prof_streams;
    int prompt_set, decode_set; /* --prompt / --decode given (--quick leaves them) */
    int do_prefill, do_decode, do_store, do_fair, long_prompt;
    int do_prefix, prefix_prompt, prefix_shared;
    int do_search, do_children;
    const shape *want[MAX_MODELS];
    const char *model_dirs[MAX_MODELS];
    int n_want, n_dirs;
} bench_opts;

/* Parse argv into o; returns -1 to go on, else the exit status (help printed, or a bad option). */
static int parse_args(int argc, char **argv, bench_opts *o)
{
    *o = (bench_opts){.tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
                      .n_prompt = 512, .n_decode = 128,
                      .do_prefill = 1, .do_decode = 1, .do_store = 1,
                      .long_prompt = 100000, .dtype = ST_F32,
                      .prefix_prompt = 2000, .prefix_shared = 1900, .prof_streams = 1};
    static const struct option opts[] = {
        {"shape", required_argument, NULL, 's'}, {"prompt", required_argument, NULL, 'p'},
        {"decode", required_argument, NULL, 'd'}, {"threads", required_argument, NULL, 't'},
        {"tmp", required_argument, NULL, 'T'},   {"json", required_argument, NULL, 'j'},
        {"quick", no_argument, NULL, 'q'},       {"help", no_argument, NULL, 'h'},
        {"keep", no_argument, NULL, 'k'},      {"huge-pages", no_argument, NULL, 'H'},
        {"f32-in-place", no_argument, NULL, 'I'},
        {"model", required_argument, NULL, 'm'}, {"only", required_argument, NULL, 'o'},
        {"long-prompt", required_argument, NULL, 'L'},
        {"prefix", required_argument, NULL, 'P'},
        {"dtype", required_argument, NULL, 'D'}, {"weights", required_argument, NULL, 'W'},
        {"profile", no_argument, NULL, 'f'},
        {"profile-streams", required_argument, NULL, 'S'},
        {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's': {
            const shape *found = NULL;
            for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
                if (!strcmp(shapes[i].name, optarg)) found = &shapes[i];
            if (!found || o->n_want == MAX_MODELS) {
                fprintf(stderr, "statesoup-bench: unknown shape %s\n", optarg);
                return 2;
            }
            o->want[o->n_want++] = found;
            break;
        }
        case 'm':
            if (o->n_dirs == MAX_MODELS) {
                fprintf(stderr, "statesoup-bench: at most %d --model folders\n", MAX_MODELS);
                return 2;
            }
            o->model_dirs[o->n_dirs++] = optarg;
            break;
        case 'o':
            o->do_prefill = strstr(optarg, "prefill") != NULL;
            o->do_decode = strstr(optarg, "decode") != NULL;
            o->do_store = strstr(optarg, "store") != NULL;
            o->do_fair = strstr(optarg, "fairness") != NULL;
            o->do_prefix = strstr(optarg, "prefix") != NULL;
            o->do_search = strstr(optarg, "search") != NULL;
            o->do_children = strstr(optarg, "children") != NULL;
            if (!o->do_prefill && !o->do_decode && !o->do_store && !o->do_fair && !o->do_prefix &&
                !o->do_search && !o->do_children) {
                fprintf(stderr, "statesoup-bench: --only takes prefill, decode, store, fairness, "
                                "prefix, search and/or children\n");
                return 2;
            }
            break;
        case 'p': o->n_prompt = atoi(optarg), o->prompt_set = 1; break;
        case 'L': o->long_prompt = atoi(optarg); break;
        case 'P':
            if (sscanf(optarg, "%d,%d", &o->prefix_prompt, &o->prefix_shared) != 2 ||
                o->prefix_shared < 1 || o->prefix_shared >= o->prefix_prompt) {
                fprintf(stderr, "statesoup-bench: --prefix takes N,K with 1 <= K < N\n");
                return 2;
            }
            break;
        case 'd': o->n_decode = atoi(optarg), o->decode_set = 1; break;
        case 't': o->threads = atoi(optarg); break;
        case 'T': o->tmp = optarg; break;
        case 'j': o->json_out = optarg; break;
        case 'q': o->quick = 1; break;
        case 'k': o->keep = 1; break;
        case 'H': break; /* the default now */
        case 'I': o->in_place = 1; break;
        case 'f': o->profile = 1; break;
        case 'S':
            o->profile = 1;
            if ((o->prof_streams = atoi(optarg)) < 1 || o->prof_streams > 64) {
                fprintf(stderr, "statesoup-bench: --profile-streams takes 1 to 64\n");
                return 2;
            }
            break;
        case 'D':
            if ((o->dtype = st_dtype_parse(optarg)) != ST_F32 && o->dtype != ST_BF16 &&
                o->dtype != ST_F16) {
                fprintf(stderr, "statesoup-bench: --dtype takes F32, BF16 or F16\n");
                return 2;
            }
            break;
        case 'W':
            if (strcmp(optarg, "q8") && strcmp(optarg, "stored")) {
                fprintf(stderr, "statesoup-bench: --weights takes stored or q8\n");
                return 2;
            }
            o->q8 = !strcmp(optarg, "q8");
            break;
        case 'h': fputs(help, stdout); return 0;
        default: fputs(help, stderr); return 2;
        }
    }
    if (o->n_prompt < 1 || o->n_decode < 1 || o->long_prompt < 1) {
        fprintf(stderr, "statesoup-bench: --prompt, --decode and --long-prompt must be >= 1\n");
        return 2;
    }
    if (!o->n_want && !o->n_dirs) o->want[o->n_want++] = &shapes[0];
    if (o->quick) {
        if (!o->prompt_set) o->n_prompt = QUICK_PROMPT;
        if (!o->decode_set) o->n_decode = QUICK_DECODE;
    }
    return -1;
}

/* This machine's limits, measured in the same run as what they bound. */
typedef struct machine {
    int nthreads;
    double bw;     /* best read bandwidth seen so far, GB/s, all threads */
    double bw1;    /* one thread */
    double gemm;   /* sgemm peak, GFLOP/s */
    double disk_s; /* DISK_PROBE_BYTES written + fsync */
} machine;

static void measure_machine(const bench_opts *o, const char *root, machine *mc, json_t *out)
{
    printf("statesoup-bench: OpenBLAS core %s, %d threads\n", ss_blas_core_name(), mc->nthreads);
    printf("measuring this machine's limits...\n");
    mc->bw = measure_bandwidth(mc->nthreads);
    mc->bw1 = measure_bandwidth(1);
    mc->gemm = measure_sgemm(o->quick ? 768 : 1024);
    mc->disk_s = measure_disk_write(root, DISK_PROBE_BYTES);
    printf("  memory read bandwidth: %.1f GB/s (%d threads), %.1f GB/s (1 thread)\n", mc->bw,
           mc->nthreads, mc->bw1);
    printf("  sgemm peak (prefill-shaped): %.0f GFLOP/s\n", mc->gemm);
    printf("  disk: %u MiB written + fsync in %.1f ms (%.2f GB/s)\n", DISK_PROBE_BYTES >> 20,
           mc->disk_s * 1e3, DISK_PROBE_BYTES / mc->disk_s / 1e9);
    json_t *jmc = json_object();
    json_object_set_new(jmc, "openblas_core", json_string(ss_blas_core_name()));
    json_object_set_new(jmc, "threads", json_integer(mc->nthreads));
    json_object_set_new(jmc, "bandwidth_gbs_first", json_real(mc->bw));
    json_object_set_new(jmc, "bandwidth_1t_gbs", json_real(mc->bw1));
    json_object_set_new(jmc, "sgemm_gflops", json_real(mc->gemm));
    json_object_set_new(jmc, "disk_write_26mib_ms", json_real(mc->disk_s * 1e3));
    json_object_set_new(out, "machine", jmc);
}

/* Re-measure the bandwidth next to what it bounds (the host's neighbours come and go: two-thread
 * bandwidth was seen anywhere between 44 and 80 GB/s here) and keep the best of all; returns
 * this measurement. */
static double remeasure_bandwidth(machine *mc)
{
    double now = measure_bandwidth(mc->nthreads);
    if (now > mc->bw) mc->bw = now;
    return now;
}

/* The bandwidth beside the decode profile (bench_profile's callback). */
static double profile_bandwidth(void *user)
{
    return remeasure_bandwidth(user);
}

/* Everything measured on one model. */
typedef struct result {
    double load_s, rss_load, peak;
    double stream_bytes, flop_tok; /* per decoded token */
    double prefill_tps, rss_prefill;
    double dec[N_STREAM_COUNTS], rss_dec[N_STREAM_COUNTS];
    double paired; /* best one-stream decode against the bandwidth measured beside it */
    double overhead_ms; /* least of (time per token - bytes / bandwidth beside) over the runs */
    double save_ms, restore_ms, merge_ms, rss_store, raw_ms;
    double compose_ms[2]; /* sequential, symmetric merge of 4: read the 4 blobs + compose */
} result;

static const int stream_counts[N_STREAM_COUNTS] = {1, 4, 16};

static void run_prefill(const bench_opts *o, ss_model *m, ss_ctx *ctx, ss_state *st,
                        const int32_t *prompt, float *logits, result *r)
{
    double best = 1e9;
    for (int rep = 0; o->do_prefill && rep < (o->quick ? 1 : 3); rep++) {
        ss_state_zero(st);
        ss_seq q = {.state = st, .tokens = prompt, .n_tokens = o->n_prompt, .logits = logits};
        double t0 = bench_now_s();
        ss_model_eval(m, ctx, &q, 1, 0);
        double dt = bench_now_s() - t0;
        if (dt < best) best = dt;
    }
    r->prefill_tps = o->do_prefill ? o->n_prompt / best : 0;
    bench_rss_mb(&r->rss_prefill, &r->peak);
}

static void run_decode(const bench_opts *o, ss_model *m, machine *mc, result *r)
{
    double bw_now = remeasure_bandwidth(mc);
    /* Also each one-stream run against the bandwidth measured just before and just after it
     * (the better of the two): the host changes phase within seconds, and the best of the
     * whole run may come from a quieter minute than the decode run it bounds. */
    double bw_before = bw_now;
    for (int k = 0; k < N_STREAM_COUNTS; k++) { /* best of three */
        r->dec[k] = 0;
        for (int rep = 0; o->do_decode && rep < (o->quick ? 1 : 3); rep++) {
            double tps = bench_decode(m, stream_counts[k],
                                      k == 0 ? o->n_decode : o->n_decode / 2 + 1, &r->rss_dec[k]);
            if (tps > r->dec[k]) r->dec[k] = tps;
            if (k == 0) {
                bw_now = remeasure_bandwidth(mc);
                double beside = bw_now > bw_before ? bw_now : bw_before;
                double f = tps * r->stream_bytes / (beside * 1e9);
                if (f > r->paired) r->paired = f;
                /* the per-token cost that is not streaming weights: threads meeting, short
                 * matrices, the scan, the engine's step and sampling */
                double over = 1e3 / tps - r->stream_bytes / (beside * 1e9) * 1e3;
                if (rep == 0 || over < r->overhead_ms) r->overhead_ms = over;
                bw_before = bw_now;
            }
        }
    }
}

/*
 * Decay-aware merges of the 4 stored states (merge modes sequential and symmetric) as the daemon
 * does them: read each blob (checksummed copy), then ss_state_compose over every SSM element. The
 * decays are synthetic (their values do not change the work).
 */
static void run_compose(const ss_model *m, ss_store *store, char ids[][40], result *r)
{
    const ss_model_info *info = ss_model_get_info(m);
    const size_t F = info->state_floats, D = info->decay_floats;
    float *buf = malloc(MERGE_N * (F + D) * sizeof(float)), *out = malloc(F * sizeof(float));
    float *od = malloc(D * sizeof(float) + 1);
    const float *st[MERGE_N], *dc[MERGE_N];
    if (!buf || !out || !od) goto out;
    for (int i = 0; i < MERGE_N; i++) {
        st[i] = buf + i * (F + D);
        dc[i] = st[i] + F;
        for (size_t k = 0; k < D; k++) buf[i * (F + D) + F + k] = 0.05f * (float)(i + 1 + k % 7);
    }
    for (int mode = 0; mode < 2; mode++) {
        double best = 1e9;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = bench_now_s();
            for (int i = 0; i < MERGE_N; i++)
                ss_store_get_blob(store, ids[i], info->fingerprint, buf + i * (F + D),
                                  F * sizeof(float), NULL, NULL);
            ss_state_compose(m, mode ? SS_COMPOSE_SYMMETRIC : SS_COMPOSE_SEQUENTIAL, st, dc,
                             MERGE_N, out, od);
            double dt = bench_now_s() - t0;
            if (dt < best) best = dt;
        }
        r->compose_ms[mode] = best * 1e3;
    }
out:
    free(buf);
    free(out);
    free(od);
}

/* Store: save 4 states, then restore and merge them (the first few rounds warm the map up). */
static void run_store(const bench_opts *o, const machine *mc, const char *sdir,
                      const ss_model *m, ss_state *st, result *r)
{
    const ss_model_info *info = ss_model_get_info(m);
    ss_store *store = NULL;
    if (ss_store_open(&store, sdir, NULL)) return;
    char rec[512], ids[MERGE_N][40];
    double best_save = 1e9;
    for (int i = 0; i < MERGE_N; i++) {
        for (size_t f = 0; f < info->state_floats; f += 97)
            ss_state_data(st)[f] = (float)(i + 1) * 0.001f * (float)(f % 13);
        snprintf(rec, sizeof rec,
                 "{\"name\": \"bench-%d\", \"model\": \"%s\", \"n_tokens\": %d, "
                 "\"dtype\": \"F32\"}",
                 i, info->fingerprint, o->n_prompt);
        char *rj = NULL;
        double t0 = bench_now_s();
        ss_err err = ss_store_put(store, rec, ss_state_cdata(st), info->state_bytes, &rj);
        double dt = bench_now_s() - t0;
        if (err) {
            fprintf(stderr, "statesoup-bench: store put: %s\n", ss_errmsg());
            break;
        }
        if (dt < best_save) best_save = dt;
        json_t *jr = json_loads(rj, 0, NULL);
        snprintf(ids[i], sizeof ids[i], "%s", json_string_value(json_object_get(jr, "id")));
        json_decref(jr);
        free(rj);
    }
    r->save_ms = best_save * 1e3;
    double best_get = 1e9, best_merge = 1e9;
    for (int rep = 0; rep < 3 * MERGE_N; rep++) {
        double t0 = bench_now_s();
        ss_store_get_blob(store, ids[rep % MERGE_N], info->fingerprint, ss_state_data(st),
                          info->state_bytes, NULL, NULL);
        double dt = bench_now_s() - t0;
        if (dt < best_get) best_get = dt;
        const double w[MERGE_N] = {0.4, 0.3, 0.2, 0.1};
        const char *refs[MERGE_N] = {ids[0], ids[1], ids[2], ids[3]};
        t0 = bench_now_s();
        ss_store_merge_f32(store, refs, w, MERGE_N, info->fingerprint, ss_state_data(st),
                           info->state_bytes, mc->nthreads, NULL);
        dt = bench_now_s() - t0;
        if (dt < best_merge) best_merge = dt;
    }
    r->restore_ms = best_get * 1e3;
    r->merge_ms = best_merge * 1e3;
    run_compose(m, store, ids, r);
    bench_rss_mb(&r->rss_store, &r->peak);
    ss_store_close(store);
}

/* The table of one model, and its JSON object. */
static json_t *report(const bench_opts *o, const machine *mc, const char *label,
                      const ss_model_info *info, const result *r)
{
    double sb = (double)info->state_bytes;
    double dec_bound = mc->bw * 1e9 / r->stream_bytes;
    double pf_bound = mc->gemm * 1e9 / r->flop_tok;
    /* a merge of 4 reads 4 states and writes one */
    double merge_gbs = r->merge_ms > 0 ? (MERGE_N + 1) * sb / (r->merge_ms / 1e3) / 1e9 : 0;
    double restore_gbs = r->restore_ms > 0 ? sb / (r->restore_ms / 1e3) / 1e9 : 0;
    const double *dec = r->dec;

    printf("  %-34s %10s %12s %10s\n", "", "measured", "limit", "fraction");
    printf("  %-34s %8.2f s %12s %10s   RSS %.0f MB\n", "load (page cache warm)", r->load_s, "",
           "", r->rss_load);
    char pf_label[64];
    snprintf(pf_label, sizeof pf_label, "prefill (%d tokens)", o->n_prompt);
    if (o->do_prefill)
        printf("  %-34s %6.0f tok/s %7.0f tok/s %9.0f%%   RSS %.0f MB\n", pf_label,
               r->prefill_tps, pf_bound, 100 * r->prefill_tps / pf_bound, r->rss_prefill);
    for (int k = 0; o->do_decode && k < N_STREAM_COUNTS; k++)
        printf("  decode, %2d stream%s %16s %6.1f tok/s %7.1f tok/s %9s   RSS %.0f MB\n",
               stream_counts[k], stream_counts[k] > 1 ? "s" : " ", "", dec[k],
               k == 0 ? dec_bound : 0, "", r->rss_dec[k]);
    if (o->do_decode) {
        printf("  %-34s %9.0f%% of the bandwidth bound; 16 streams = %.1fx one stream\n",
               "decode, 1 stream", 100 * dec[0] / dec_bound, dec[2] / dec[0]);
        printf("  %-34s %9.0f%% of the bandwidth measured beside the run (best run)\n", "",
               100 * r->paired);
        printf("  %-34s %9.2f ms per token beyond streaming the weights (least of the runs)\n",
               "decode, 1 stream: fixed cost", r->overhead_ms);
    }
    if (o->do_store) {
        printf("  %-34s %6.1f ms   (raw write+fsync %.1f ms: %.1fx)\n",
               "state save (store put)", r->save_ms, r->raw_ms, r->save_ms / r->raw_ms);
        printf("  %-34s %6.2f ms   %.1f GB/s\n", "state restore (get + checksum)", r->restore_ms,
               restore_gbs);
        printf("  %-34s %6.2f ms   %.1f GB/s = %.0f%% of bandwidth   RSS %.0f MB\n",
               "merge of 4 stored states", r->merge_ms, merge_gbs, 100 * merge_gbs / mc->bw,
               r->rss_store);
        printf("  %-34s %6.2f ms   (mode sequential)\n", "composition of 4 stored states",
               r->compose_ms[0]);
        printf("  %-34s %6.2f ms   (mode symmetric)\n", "", r->compose_ms[1]);
    }
    printf("  state: %.1f MB; weights streamed per token: %.0f MB; %.0f MFLOP/token\n",
           sb / 1e6, r->stream_bytes / 1e6, r->flop_tok / 1e6);

    const double speedup16 = dec[0] > 0 ? dec[2] / dec[0] : 0;
    const double save_vs_raw = r->raw_ms > 0 ? r->save_ms / r->raw_ms : 0;
    json_t *jm = json_pack(
        "{s:s, s:i, s:i, s:s, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f,"
        " s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}",
        "shape", label, "d_model", info->d_model, "layers", info->n_layer,
        "dtype", info->dtype, "load_s",
        r->load_s, "rss_load_mb", r->rss_load, "prefill_tok_s", r->prefill_tps,
        "prefill_bound_tok_s", pf_bound, "prefill_fraction", r->prefill_tps / pf_bound,
        "decode_1_tok_s", dec[0], "decode_4_tok_s", dec[1], "decode_16_tok_s", dec[2],
        "decode_bound_tok_s", dec_bound, "decode_fraction", dec[0] / dec_bound,
        "batch16_speedup", speedup16, "state_mb", sb / 1e6, "save_ms", r->save_ms,
        "raw_write_ms", r->raw_ms, "save_vs_raw", save_vs_raw, "restore_ms", r->restore_ms,
        "restore_gbs", restore_gbs, "merge4_ms", r->merge_ms, "merge4_gbs", merge_gbs,
        "merge4_fraction", merge_gbs / mc->bw, "rss_decode16_mb", r->rss_dec[2],
        "rss_prefill_mb", r->rss_prefill);
    json_object_set_new(jm, "merge4_sequential_ms", json_real(r->compose_ms[0]));
    json_object_set_new(jm, "merge4_symmetric_ms", json_real(r->compose_ms[1]));
    json_object_set_new(jm, "bandwidth_gbs", json_real(mc->bw));
    json_object_set_new(jm, "decode_fraction_beside", json_real(r->paired));
    json_object_set_new(jm, "decode_overhead_ms", json_real(r->overhead_ms));
    json_object_set_new(jm, "weights", json_string(info->weights));
    json_object_set_new(jm, "stream_mb", json_real(r->stream_bytes / 1e6));
    json_object_set_new(jm, "sgemm_gflops", json_real(mc->gemm));
    return jm;
}

/* Write the checkpoint of shape s into dir (or use the folder named), load it, measure; NULL
 * when the model could not be written or loaded (said on stderr). */
static json_t *bench_model(const bench_opts *o, machine *mc, const char *root, int si,
                           const shape *s, char *dir, size_t dir_cap)
{
    double t0 = bench_now_s();
    if (s) {
        snprintf(dir, dir_cap, "%s/mamba-%s", root, s->name);
        mkdir(dir, 0700);
        printf("\n== mamba-%s shape (d=%d, %d layers), %s, random weights%s%s\n", s->name,
               s->d, s->layers, st_dtype_name((st_dtype)o->dtype), o->q8 ? ", quantised to q8" : "",
               o->in_place ? ", F32 in place" : "");
        uint64_t wbytes = write_checkpoint(s, dir, o->dtype);
        if (!wbytes) {
            fprintf(stderr, "statesoup-bench: cannot write the checkpoint in %s\n", dir);
            return NULL;
        }
        printf("  wrote %.0f MB checkpoint in %.1f s\n", wbytes / 1e6, bench_now_s() - t0);
    } else {
        printf("\n== %s%s%s\n", dir, o->q8 ? ", quantised to q8" : "",
               o->in_place ? ", F32 in place" : "");
    }

    ss_model *m = NULL;
    ss_model_params mp = ss_model_default_params();
    mp.n_threads = mc->nthreads;
    mp.f32_in_place = o->in_place;
    mp.weights = o->q8 ? SS_WEIGHTS_Q8 : SS_WEIGHTS_STORED;
    t0 = bench_now_s();
    if (ss_model_open(&m, dir, &mp)) {
        fprintf(stderr, "statesoup-bench: load: %s\n", ss_errmsg());
        return NULL;
    }
    result r = {.load_s = bench_now_s() - t0};
    bench_rss_mb(&r.rss_load, &r.peak);
    const ss_model_info *info = ss_model_get_info(m);
    /* streamed per decoded token: the weights as held (model/ss_model.h token_weight_bytes:
     * the tied head is the embedding matrix, read in full by the logits GEMV) */
    r.stream_bytes = (double)info->token_weight_bytes;
    r.flop_tok = 2.0 * ((double)info->n_active_params - (double)info->vocab_size * info->d_model);

    ss_ctx *ctx;
    ss_state *st;
    ss_ctx_new(m, &ctx);
    ss_state_new(m, &st);
    int32_t *prompt = malloc((size_t)o->n_prompt * sizeof(int32_t));
    for (int i = 0; i < o->n_prompt; i++) prompt[i] = (i * 7919 + 11) % info->vocab_size;
    float *logits = malloc((size_t)info->vocab_size * sizeof(float));
    run_prefill(o, m, ctx, st, prompt, logits, &r);
    run_decode(o, m, mc, &r);

    char sdir[4096 + 128];
    snprintf(sdir, sizeof sdir, "%s/store-%d", root, si);
    r.raw_ms = o->do_store ? measure_disk_write(root, info->state_bytes) * 1e3 : 0;
    if (o->do_store) run_store(o, mc, sdir, m, st, &r);
    remeasure_bandwidth(mc);
    json_t *jm = report(o, mc, s ? s->name : dir, info, &r);
    if (o->do_decode && bench_paired(m, mc->nthreads, o->quick ? 16 : 64, r.stream_bytes, jm))
        fprintf(stderr, "statesoup-bench: paired decode: %s\n", ss_errmsg());
    if (o->do_decode && o->profile &&
        bench_profile(m, o->prof_streams, o->n_decode, o->quick ? 2 : 3, r.stream_bytes, mc->gemm,
                      profile_bandwidth, mc, jm))
        fprintf(stderr, "statesoup-bench: profile: %s\n", ss_errmsg());
    if (o->do_fair && bench_fairness(m, o->long_prompt, jm))
        fprintf(stderr, "statesoup-bench: fairness: %s\n", ss_errmsg());
    if (o->do_prefix) {
        char pdir[4096 + 160];
        snprintf(pdir, sizeof pdir, "%s/prefix-%d", root, si);
        if (bench_prefix(m, pdir, o->prefix_prompt, o->prefix_shared, jm))
            fprintf(stderr, "statesoup-bench: prefix: %s\n", ss_errmsg());
        char rm[8192 + 256];
        snprintf(rm, sizeof rm, "rm -rf '%s'", pdir);
        if (system(rm) != 0) fprintf(stderr, "statesoup-bench: could not remove %s\n", pdir);
    }

    free(prompt);
    free(logits);
    ss_state_free(st);
    ss_ctx_free(ctx);
    ss_model_close(m);
    char cmd[8192 + 256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", sdir);
    if (system(cmd) != 0) fprintf(stderr, "statesoup-bench: could not remove %s\n", sdir);
    return jm;
}

int main(int argc, char **argv)
{
    ss_blas_ensure_kernels(argv);
    bench_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;
    machine mc = {.nthreads = o.threads > 0 ? o.threads : (int)sysconf(_SC_NPROCESSORS_ONLN)};
    openblas_set_num_threads(mc.nthreads);

    char root[4000];
    snprintf(root, sizeof root, "%s/statesoup-bench-XXXXXX", o.tmp);
    if (!mkdtemp(root)) {
        fprintf(stderr, "statesoup-bench: cannot create a folder in %s: %s\n", o.tmp,
                strerror(errno));
        return 1;
    }
    json_t *out = json_object();
    measure_machine(&o, root, &mc, out);
    json_t *models = json_array();
    int want_models = o.do_prefill || o.do_decode || o.do_store || o.do_fair || o.do_prefix;
    for (int si = 0; want_models && si < o.n_want + o.n_dirs; si++) {
        const shape *s = si < o.n_want ? o.want[si] : NULL;
        char dir[4096 + 64];
        if (!s) snprintf(dir, sizeof dir, "%s", o.model_dirs[si - o.n_want]);
        json_t *jm = bench_model(&o, &mc, root, si, s, dir, sizeof dir);
        if (!jm) continue;
        json_array_append_new(models, jm);
        if (s && !o.keep) {
            char cmd[8192 + 256];
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
            if (system(cmd) != 0) fprintf(stderr, "statesoup-bench: could not remove %s\n", dir);
        }
        if (s && o.keep)
            printf("  checkpoint kept in %s (statesoup-bench --model %s)\n", dir, dir);
    }
    json_object_set_new(out, "models", models);
    if (o.do_search && bench_search(root, o.quick, out))
        fprintf(stderr, "statesoup-bench: search: %s\n", ss_errmsg());
    if (o.do_children && bench_children(root, o.quick, out))
        fprintf(stderr, "statesoup-bench: children: %s\n", ss_errmsg());
    if (o.json_out && json_dump_file(out, o.json_out, JSON_INDENT(2)) != 0)
        fprintf(stderr, "statesoup-bench: cannot write %s\n", o.json_out);
    json_decref(out);
    if (!o.keep) rmdir(root);
    return 0;
}
