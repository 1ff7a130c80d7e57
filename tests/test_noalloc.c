/*
 * test_noalloc.c - no allocation and no lock per decode token (issue 15).
 *
 * This binary is linked with -Wl,--wrap for the malloc family (malloc, calloc, realloc,
 * aligned_alloc, posix_memalign, strdup, strndup) and pthread_mutex_lock (tests/meson.build):
 * every such call made by our own code (the model, engine and common libraries are static
 * archives linked into it) goes through the counting wrappers below. Calls that libc or a shared
 * library makes internally are not seen; none of them is on the per-token path.
 *
 * After a warm-up, decode tokens are fed through ss_model_eval (batch 1 and a batch of 4, every
 * family, 1 and 2 threads, greedy and random sampling) and through the engine's step (a
 * generation counted from inside its on_token callback): 0 allocations; the model takes one lock
 * per eval (the pool's hold, once per round, only with more than one thread), never one per step.
 * Large buffers (a state's block, blob scratch, a job's logits) come from those the model keeps:
 * none allocated again once one of the size was given back (check_spares).
 */
#include "engine.h"
#include "ss_model.h"
#include "ss_util.h"
#include "test_util.h"

#include <pthread.h>
#include <stdatomic.h>

/* ---- counting wrappers ----------------------------------------------------------------------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t sz);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t al, size_t n);
int __real_posix_memalign(void **p, size_t al, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
int __real_pthread_mutex_lock(pthread_mutex_t *mu);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t sz);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_aligned_alloc(size_t al, size_t n);
int __wrap_posix_memalign(void **p, size_t al, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
int __wrap_pthread_mutex_lock(pthread_mutex_t *mu);

static atomic_int counting;
static atomic_long n_allocs, n_locks;

static void count(atomic_long *c)
{
    if (atomic_load_explicit(&counting, memory_order_relaxed))
        atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

void *__wrap_malloc(size_t n)
{
    count(&n_allocs);
    return __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t sz)
{
    count(&n_allocs);
    return __real_calloc(n, sz);
}
void *__wrap_realloc(void *p, size_t n)
{
    count(&n_allocs);
    return __real_realloc(p, n);
}
void *__wrap_aligned_alloc(size_t al, size_t n)
{
    count(&n_allocs);
    return __real_aligned_alloc(al, n);
}
int __wrap_posix_memalign(void **p, size_t al, size_t n)
{
    count(&n_allocs);
    return __real_posix_memalign(p, al, n);
}
char *__wrap_strdup(const char *s)
{
    count(&n_allocs);
    return __real_strdup(s);
}
char *__wrap_strndup(const char *s, size_t n)
{
    count(&n_allocs);
    return __real_strndup(s, n);
}
int __wrap_pthread_mutex_lock(pthread_mutex_t *mu)
{
    count(&n_locks);
    return __real_pthread_mutex_lock(mu);
}

static void start_counting(void)
{
    atomic_store(&n_allocs, 0);
    atomic_store(&n_locks, 0);
    atomic_store(&counting, 1);
}

static void stop_counting(void)
{
    atomic_store(&counting, 0);
}

/* The wrappers are really in the path: an allocation and a lock of our own are counted
 * (volatile: the compiler may not elide the pairs). */
static void *volatile keep_p;
static char *volatile keep_s;
static void check_wrappers(void)
{
    start_counting();
    void *p = keep_p = malloc(16);
    char *s = keep_s = strdup("x");
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    pthread_mutex_unlock(&mu);
    stop_counting();
    free(p);
    free(s);
    CHECKF(n_allocs == 2 && n_locks == 1, "wrappers counted %ld allocations, %ld locks",
           atomic_load(&n_allocs), atomic_load(&n_locks));
}

/* ---- ss_model_eval --------------------------------------------------------------------------- */

enum { SEQS = 4, WARM = 4, TOKENS = 12 };

static int fused; /* ss_model_params.fused_decode for check_eval (0: the default) */

/* Decode TOKENS steps of `n_seqs` sequences (each step: eval, then sample every sequence) after
 * WARM untimed ones; counts only the measured steps. */
static void check_eval(const char *dir, int threads, int n_seqs, float temperature,
                       ss_weights weights)
{
    ss_model_params p = ss_model_default_params();
    p.n_threads = threads;
    p.weights = weights;
    p.fused_decode = fused;
    ss_model *m;
    ss_ctx *c;
    REQUIRE_OK(ss_model_open(&m, dir, &p));
    REQUIRE_OK(ss_ctx_new(m, &c));
    const int V = ss_model_get_info(m)->vocab_size;
    ss_state *st[SEQS];
    ss_sampler *smp[SEQS];
    float *lg[SEQS];
    int32_t tok[SEQS];
    ss_seq q[SEQS];
    ss_sample_params sp = ss_sample_default_params();
    sp.temperature = temperature;
    sp.top_p = temperature > 0 ? 0.9f : 1.0f;
    for (int s = 0; s < n_seqs; s++) {
        REQUIRE_OK(ss_state_new(m, &st[s]));
        REQUIRE_OK(ss_sampler_new(&sp, V, &smp[s]));
        lg[s] = malloc((size_t)V * sizeof(float));
        tok[s] = (int32_t)(s + 1);
    }
    /* a short prompt first (the rounds' scratch for several rows), then the decode steps */
    int32_t prompt[8];
    for (int i = 0; i < 8; i++) prompt[i] = (int32_t)(i * 5 % (V - 1) + 1);
    for (int s = 0; s < n_seqs; s++) {
        ss_seq pq = {.state = st[s], .tokens = prompt, .n_tokens = 8, .logits = lg[s]};
        REQUIRE_OK(ss_model_eval(m, c, &pq, 1, 0));
    }
    long allocs = 0, locks = 0;
    for (int step = 0; step < WARM + TOKENS; step++) {
        if (step == WARM) start_counting();
        for (int s = 0; s < n_seqs; s++)
            q[s] = (ss_seq){.state = st[s], .tokens = &tok[s], .n_tokens = 1, .logits = lg[s]};
        REQUIRE_OK(ss_model_eval(m, c, q, n_seqs, 0));
        for (int s = 0; s < n_seqs; s++) tok[s] = ss_sampler_sample(smp[s], lg[s], NULL);
    }
    stop_counting();
    allocs = atomic_load(&n_allocs);
    locks = atomic_load(&n_locks);
    CHECKF(allocs == 0, "%s, %d threads, %d sequences: %ld allocations in %d decode steps", dir,
           threads, n_seqs, allocs, TOKENS);
    /* the pool's hold once per eval when there is a pool to hold, and nothing else */
    const long want_locks = threads > 1 ? TOKENS : 0;
    CHECKF(locks == want_locks, "%s, %d threads, %d sequences: %ld locks in %d decode steps", dir,
           threads, n_seqs, locks, TOKENS);
    for (int s = 0; s < n_seqs; s++) {
        ss_state_free(st[s]);
        ss_sampler_free(smp[s]);
        free(lg[s]);
    }
    ss_ctx_free(c);
    ss_model_close(m);
}

/* ---- the engine's step ----------------------------------------------------------------------- */

enum { ENGINE_TOKENS = 40, FROM = 8, TO = 38 };

typedef struct gen_watch {
    long allocs, locks;
} gen_watch;

/* Count from token FROM's callback to token TO's: the steps in between, nothing of the job's
 * start or end. */
static int on_token(void *user, const ss_token_event *ev)
{
    gen_watch *w = user;
    if (ev->index == FROM) start_counting();
    if (ev->index == TO) {
        stop_counting();
        w->allocs = atomic_load(&n_allocs);
        w->locks = atomic_load(&n_locks);
    }
    return 0;
}

static void check_engine(const char *dir, int threads)
{
    ss_model_params mp = ss_model_default_params();
    mp.n_threads = threads;
    ss_model *m;
    REQUIRE_OK(ss_model_open(&m, dir, &mp));
    ss_engine *e;
    ss_engine_params ep = ss_engine_default_params();
    REQUIRE_OK(ss_engine_open(&e, m, &ep));
    int32_t prompt[4] = {1, 2, 3, 4};
    gen_watch w = {-1, -1};
    ss_job_params p = {.kind = SS_JOB_GENERATE, .prompt = prompt, .n_prompt = 4,
                       .max_tokens = ENGINE_TOKENS, .sample = ss_sample_default_params(),
                       .on_token = on_token, .user = &w};
    p.sample.temperature = 0.8f;
    p.sample.top_k = 40;
    ss_job *j = NULL;
    REQUIRE_OK(ss_engine_run(e, &p, &j));
    const ss_job_result *r = ss_job_get_result(j);
    CHECKF(r->err == SS_OK && r->n_generated == ENGINE_TOKENS, "%s: generated %d tokens", dir,
           r->n_generated);
    CHECKF(w.allocs == 0, "%s, %d threads: %ld allocations in %d engine steps", dir, threads,
           w.allocs, TO - FROM);
    /* the engine's own mutex guards its queue and statistics, shared with the submitting
     * threads: taken twice per step (admitting jobs, then publishing the step's statistics),
     * not per token; the model adds the pool's hold, once per step */
    const long want = (TO - FROM) * (2 + (threads > 1));
    CHECKF(w.locks == want, "%s, %d threads: %ld locks in %d engine steps, want %ld", dir,
           threads, w.locks, TO - FROM, want);
    ss_job_free(j);
    ss_engine_close(e);
    ss_model_close(m);
}

/* ---- states -------------------------------------------------------------------------------- */

/* A freed state's block is kept by the model and handed out again by ss_state_new (one small
 * allocation: the state's own struct) zeroed, its decay zeroed and known again, and by
 * ss_scratch_take (none); the model keeps at most 40 buffers (the demo's states are small: its
 * byte budget allows more); ss_buf_take reuses a kept buffer of the size asked, not one more
 * than twice it; ss_model_close frees the ones it keeps (ASan). */
static void check_spares(const char *dir)
{
    enum { N = 44, KEPT = 40 - 3 }; /* (40 kept at most: the three buffers below stay kept) */
    ss_model *m;
    REQUIRE_OK(ss_model_open(&m, dir, NULL));
    const ss_model_info *info = ss_model_get_info(m);
    float *big = ss_buf_take(m, 1 << 20), *small = ss_buf_take(m, 1000);
    if (!big || !small) abort();
    big[(1 << 20) - 1] = small[999] = 1.0f;
    ss_buf_give(m, big);
    ss_buf_give(m, small);
    atomic_store(&n_allocs, 0);
    start_counting();
    float *again = ss_buf_take(m, 1 << 20), *tiny = ss_buf_take(m, 100), *mid = ss_buf_take(m, 600);
    stop_counting();
    CHECKF(again == big && mid == small && tiny != small && n_allocs == 1,
           "kept buffers: the same one again %d, the small one for 600 floats %d, not for 100 "
           "%d, %ld allocations (1)",
           again == big, mid == small, tiny != small, atomic_load(&n_allocs));
    ss_buf_give(m, again);
    ss_buf_give(m, tiny);
    ss_buf_give(m, mid);
    ss_state *st[N];
    for (int i = 0; i < N; i++) {
        REQUIRE_OK(ss_state_new(m, &st[i]));
        float *d = ss_state_data(st[i]);
        const size_t n = ss_state_floats(st[i]);
        for (size_t k = 0; k < n; k++) d[k] = 1.0f + (float)i;
        REQUIRE_OK(ss_state_set(st[i], d, n)); /* its decay now unknown */
        ss_state_decay(st[i])[0] = 2.0f;
    }
    for (int i = 0; i < N; i++) ss_state_free(st[i]);
    atomic_store(&n_allocs, 0);
    start_counting();
    for (int i = 0; i < KEPT; i++) REQUIRE_OK(ss_state_new(m, &st[i]));
    stop_counting();
    CHECKF(n_allocs == KEPT, "%ld allocations taking %d kept states (one each, the struct)",
           atomic_load(&n_allocs), KEPT);
    atomic_store(&n_allocs, 0);
    start_counting();
    for (int i = KEPT; i < N; i++) REQUIRE_OK(ss_state_new(m, &st[i]));
    stop_counting();
    CHECKF(n_allocs == 2 * (N - KEPT), "%ld allocations for %d new states (2 each)",
           atomic_load(&n_allocs), N - KEPT);
    int dirty = 0;
    for (int i = 0; i < N; i++) {
        const float *d = ss_state_cdata(st[i]);
        for (size_t k = 0; k < ss_state_floats(st[i]); k++) dirty += d[k] != 0.0f;
        for (size_t k = 0; k < info->decay_floats; k++) dirty += ss_state_cdecay(st[i])[k] != 0.0f;
        dirty += !ss_state_has_decay(st[i]);
    }
    CHECKF(dirty == 0, "%d values of reused states not zero (or decay unknown)", dirty);
    for (int i = 0; i < N; i++) ss_state_free(st[i]);
    /* scratch for a blob comes from the same blocks: state + decay + 1 floats, writable */
    atomic_store(&n_allocs, 0);
    start_counting();
    float *b = ss_scratch_take(m);
    stop_counting();
    CHECKF(b && n_allocs == 0, "scratch: %ld allocations", atomic_load(&n_allocs));
    const size_t run = info->state_floats + info->decay_floats + 1;
    for (size_t k = 0; b && k < run; k++) b[k] = (float)k;
    ss_scratch_give(m, b);
    ss_scratch_give(m, NULL);
    ss_model_close(m);
}

int main(int argc, char **argv)
{
    (void)argc;
    ss_blas_ensure_kernels(argv);
    check_wrappers();
    char demo[4096];
    snprintf(demo, sizeof demo, "%s/models/demo-mamba1", test_source_root());
    static const char *const fixtures[] = {
        "models/mamba1-tiny", "models/mamba2-tiny", "models/moe-mamba-switch",
        "models/moe-mamba-finegrained", "models/moe-mamba-mot",
    };
    check_spares(demo);
    for (int threads = 1; threads <= 2; threads++) {
        check_eval(demo, threads, 1, 0, SS_WEIGHTS_STORED);
        check_eval(demo, threads, SEQS, 1.0f, SS_WEIGHTS_STORED);
        /* 8-bit weights: batch-1 decode quantises its activations into the context's scratch */
        check_eval(demo, threads, 1, 0, SS_WEIGHTS_Q8);
        check_eval(demo, threads, SEQS, 1.0f, SS_WEIGHTS_Q8);
        for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
            check_eval(fixture_path(fixtures[i]), threads, 1, 0, SS_WEIGHTS_STORED);
            check_eval(fixture_path(fixtures[i]), threads, SEQS, 1.0f, SS_WEIGHTS_STORED);
        }
        check_engine(demo, threads);
        /* the other layout (SS_FUSED_DECODE=1): fused_decode, two
         * steps a layer, for stored and q8 weights */
        fused = 1;
        check_eval(demo, threads, 1, 0, SS_WEIGHTS_STORED);
        check_eval(demo, threads, SEQS, 1.0f, SS_WEIGHTS_STORED);
        check_eval(demo, threads, 1, 0, SS_WEIGHTS_Q8);
        check_eval(demo, threads, SEQS, 1.0f, SS_WEIGHTS_Q8);
        fused = 0;
    }
    return test_done("test_noalloc");
}
