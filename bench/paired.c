/*
 * paired.c - statesoup-bench's decode bound measured token by token.
 *
 * The bound of batch-1 decode is the memory bandwidth over the bytes a token streams. On a
 * shared host that bandwidth moves within milliseconds: 1 GB reads by two threads in a row here
 * took anywhere from 35 to 69 GB/s, and the best of ten of them (the machine limits' figure)
 * is a quiet moment that a run of 128 tokens, which averages over the quiet and the busy ones,
 * is then held against. So this phase pairs them instead: before each decode token, the same
 * threads read the same number of bytes (capped at 1 GiB) plainly, once as one stream per
 * thread and then, from another buffer, as four, and the better of the two is that token's
 * bound. The figure is the median over the tokens of (bytes / token time) / (that read's rate),
 * with its quartiles.
 *
 * Both sides are measured so as to favour the read: the reading threads sleep in barriers and
 * the decode's threads are left to fall asleep before each read (a spinning worker would steal
 * a core from it), so each token starts with sleeping workers and caches the read has flushed,
 * which a token in a running stream does not. So each read is followed by two tokens, both
 * timed: the first as above ("token by token", a token after an idle pause), the second straight
 * after it, as every token of a running generation follows the one before (the workers awake,
 * the caches holding what the first left, which at these sizes is the logits head's tail), held
 * against the same read: that is batch-1 decode as a stream runs it.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#include "bench.h"
#include "read.h"
#include "ss_util.h"

/* Longer than a worker of the model's pool spins before it sleeps (model/pool.c SPIN_LIMIT). */
#define SETTLE_NS 300000
#define MAX_PROBE_THREADS 64

typedef struct probe {
    pthread_mutex_t init; /* held while the threads are created: then threads is final */
    pthread_barrier_t go, start, end;
    const char *buf; /* this pass's half of the buffer */
    size_t bytes;    /* asked for per pass, all threads together */
    size_t per;      /* read per thread (bytes / threads, whole blocks of 256) */
    int threads, streams, quit;
    pthread_t th[MAX_PROBE_THREADS];
    float sink[MAX_PROBE_THREADS];
} probe;

typedef struct probe_arg {
    probe *p;
    int t;
} probe_arg;

/* Thread t's share of a pass. */
static void probe_share(probe *p, int t)
{
    p->sink[t] = bench_read(p->buf + (size_t)t * p->per, p->per, p->streams);
}

static void *probe_thread(void *arg)
{
    probe_arg *a = arg;
    probe *p = a->p;
    pthread_mutex_lock(&p->init);
    pthread_mutex_unlock(&p->init);
    for (;;) {
        pthread_barrier_wait(&p->go);
        if (p->quit) return NULL;
        pthread_barrier_wait(&p->start);
        probe_share(p, a->t);
        pthread_barrier_wait(&p->end);
    }
}

/* One pass of `streams` streams per thread: GB/s, timed from all threads starting. */
static double probe_pass(probe *p, int streams)
{
    p->streams = streams;
    pthread_barrier_wait(&p->go);
    pthread_barrier_wait(&p->start);
    const int64_t t0 = ss_mono_ns();
    probe_share(p, 0);
    pthread_barrier_wait(&p->end);
    const int64_t t1 = ss_mono_ns();
    return (double)(p->per * (size_t)p->threads) / (double)(t1 - t0);
}

static void settle(void)
{
    struct timespec ts = {0, SETTLE_NS};
    nanosleep(&ts, NULL);
}

/* One greedy token fed and sampled (*t in, the sampled token out): its nanoseconds, -1 on error. */
static double timed_token(ss_model *m, ss_ctx *c, ss_seq *q, ss_sampler *smp, int32_t *t)
{
    float lp;
    const int64_t t0 = ss_mono_ns();
    if (ss_model_eval(m, c, q, 1, 0)) return -1;
    *t = ss_sampler_sample(smp, q->logits, &lp);
    return (double)(ss_mono_ns() - t0);
}

int bench_paired(ss_model *m, int threads, int rounds, double stream_bytes, json_t *jm)
{
    const ss_model_info *info = ss_model_get_info(m);
    if (threads < 1) threads = 1;
    if (threads > MAX_PROBE_THREADS) threads = MAX_PROBE_THREADS;
    size_t bytes = (size_t)stream_bytes;
    if (bytes > (size_t)1 << 30) bytes = (size_t)1 << 30;
    if (bytes < (size_t)128 << 20) bytes = (size_t)128 << 20; /* past the L3 (64 MB was not) */
    probe p = {.init = PTHREAD_MUTEX_INITIALIZER, .bytes = bytes};
    probe_arg args[MAX_PROBE_THREADS];
    ss_ctx *c = NULL;
    ss_state *st = NULL;
    ss_sampler *smp = NULL;
    float *logits = malloc((size_t)info->vocab_size * sizeof(float));
    double *frac = malloc((size_t)rounds * sizeof(double));
    double *tok = malloc((size_t)rounds * sizeof(double));
    double *bw = malloc((size_t)rounds * sizeof(double));
    double *run_frac = malloc((size_t)rounds * sizeof(double)); /* the token after it */
    double *run_tok = malloc((size_t)rounds * sizeof(double));
    /* two halves, read in turn: no pass reads what the one before it read (a 145 MB pass read
     * twice in a row ran at up to 95 GB/s here, from the L3, against ~60 for memory) */
    const size_t half = (bytes + (2 << 20) - 1) & ~(size_t)((2 << 20) - 1);
    char *buf = aligned_alloc(2 << 20, 2 * half);
    ss_sample_params sp = ss_sample_default_params();
    sp.temperature = 0;
    int rc = -1, started = 0; /* threads created beside the caller */
    if (!logits || !frac || !tok || !bw || !run_frac || !run_tok || !buf || ss_ctx_new(m, &c) ||
        ss_state_new(m, &st) || ss_sampler_new(&sp, info->vocab_size, &smp))
        goto out;
    madvise(buf, 2 * half, MADV_HUGEPAGE); /* as the weights are (a TLB miss per 4 KiB otherwise) */
    for (size_t i = 0; i < 2 * half; i += 4096) buf[i] = (char)i;
    pthread_mutex_lock(&p.init);
    for (int t = 1; t < threads; t++) {
        args[t] = (probe_arg){&p, t};
        if (pthread_create(&p.th[t], NULL, probe_thread, &args[t])) break;
        started = t;
    }
    p.threads = started + 1; /* (fewer than asked if a thread could not start) */
    p.per = bytes / (size_t)p.threads & ~(size_t)255;
    pthread_barrier_init(&p.go, NULL, (unsigned)p.threads);
    pthread_barrier_init(&p.start, NULL, (unsigned)p.threads);
    pthread_barrier_init(&p.end, NULL, (unsigned)p.threads);
    pthread_mutex_unlock(&p.init);
    int32_t t = 1;
    ss_seq q = {.state = st, .tokens = &t, .n_tokens = 1, .logits = logits};
    for (int w = 0; w < 8; w++) /* warm-up: the pool's threads, the context's buffers */
        if (timed_token(m, c, &q, smp, &t) < 0) goto stop;
    for (int r = 0; r < rounds; r++) {
        settle();
        p.buf = buf;
        const double a = probe_pass(&p, 1);
        p.buf = buf + half;
        const double b = probe_pass(&p, 4);
        bw[r] = a > b ? a : b;
        settle();
        if ((tok[r] = timed_token(m, c, &q, smp, &t)) < 0) goto stop;
        if ((run_tok[r] = timed_token(m, c, &q, smp, &t)) < 0) goto stop; /* the next, running */
        frac[r] = stream_bytes / tok[r] / bw[r];
        run_frac[r] = stream_bytes / run_tok[r] / bw[r];
    }
    qsort(frac, (size_t)rounds, sizeof *frac, bench_cmp_double);
    qsort(tok, (size_t)rounds, sizeof *tok, bench_cmp_double);
    qsort(bw, (size_t)rounds, sizeof *bw, bench_cmp_double);
    qsort(run_frac, (size_t)rounds, sizeof *run_frac, bench_cmp_double);
    qsort(run_tok, (size_t)rounds, sizeof *run_tok, bench_cmp_double);
    const double f50 = frac[rounds / 2], f25 = frac[rounds / 4], f75 = frac[3 * rounds / 4];
    printf(
        "  %-34s %9.0f%% of a plain read of the same bytes just before each token (median of\n"
        "  %-34s %10s %d tokens, quartiles %.0f-%.0f%%; medians: token %.2f ms, read %.1f GB/s)\n",
        "decode, 1 stream, token by token", 100 * f50, "", "", rounds, 100 * f25, 100 * f75,
        tok[rounds / 2] / 1e6, bw[rounds / 2]);
    const double w50 = run_frac[rounds / 2], w25 = run_frac[rounds / 4],
                 w75 = run_frac[3 * rounds / 4];
    printf("  %-34s %9.0f%% of that read (quartiles %.0f-%.0f%%; median token %.2f ms)\n",
           "  the token after it (running)", 100 * w50, 100 * w25, 100 * w75,
           run_tok[rounds / 2] / 1e6);
    json_t *jp = json_object();
    json_object_set_new(jp, "fraction_median", json_real(f50));
    json_object_set_new(jp, "fraction_p25", json_real(f25));
    json_object_set_new(jp, "fraction_p75", json_real(f75));
    json_object_set_new(jp, "token_ms_median", json_real(tok[rounds / 2] / 1e6));
    json_object_set_new(jp, "read_gbs_median", json_real(bw[rounds / 2]));
    json_object_set_new(jp, "running_fraction_median", json_real(w50));
    json_object_set_new(jp, "running_fraction_p25", json_real(w25));
    json_object_set_new(jp, "running_fraction_p75", json_real(w75));
    json_object_set_new(jp, "running_token_ms_median", json_real(run_tok[rounds / 2] / 1e6));
    json_object_set_new(jp, "tokens", json_integer(rounds));
    json_object_set_new(jp, "read_threads", json_integer(p.threads));
    json_object_set_new(jm, "decode_paired", jp);
    rc = 0;
stop:
    p.quit = 1;
    pthread_barrier_wait(&p.go);
    for (int i = 1; i <= started; i++) pthread_join(p.th[i], NULL);
    pthread_barrier_destroy(&p.go);
    pthread_barrier_destroy(&p.start);
    pthread_barrier_destroy(&p.end);
out:
    ss_sampler_free(smp);
    ss_state_free(st);
    ss_ctx_free(c);
    free(logits);
    free(frac);
    free(tok);
    free(bw);
    free(run_frac);
    free(run_tok);
    free(buf);
    return rc;
}
