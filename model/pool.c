/*
 * pool.c - fork-join thread pool with spin-then-sleep workers (see pool.h for why).
 *
 * A step is published by bumping `gen`; workers spin on it for a short while (a token's forward
 * pass is ~100 steps a few microseconds apart), then sleep on a futex. A step has n parts
 * (fn(arg, part, n)); every participant, the caller included, claims parts from `claim` until
 * none is left, so a worker the OS has not scheduled (a busy host, more threads than cores) or
 * one still waking up never holds a step up: the caller runs its parts. Completion is counted in
 * `done`, which the caller spins on (steps are short and the caller has nothing else to do).
 * `claim` carries the step's number in its high half, so a worker that arrives late cannot
 * claim a part of a step that is over, and fn and arg are read only after a part is claimed
 * (the caller waits for every claimed part, so they are still valid then).
 */
#include "pool.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Spin iterations before a worker sleeps: about 50-100 us of pause instructions. */
#define SPIN_LIMIT 2000

/*
 * What a worker reads to start a step (gen, then stop, claim, fn, arg, timed, n) shares one cache
 * line, so a spinning worker that sees the new generation finds the rest in the same transfer
 * from the caller's core; `done`, which the caller spins on while workers count their parts,
 * has a line of its own, as has the caller's side. (Before, gen and claim were in two lines:
 * the worker's start waited for two transfers.)
 */
struct ss_pool {
    _Alignas(64) _Atomic unsigned gen; /* futex word: bumped per step (and at shutdown) */
    atomic_int stop;
    _Atomic uint64_t claim;   /* step number << 32 | next unclaimed part */
    pool_fn fn;
    void *arg;
    int n;
    atomic_int sleepers;      /* workers blocked in futex wait */
    /* timed steps (pool_run_locked with times): published with fn and arg; each part writes its
     * own slots before counting itself done, the caller reads them after every part is done */
    int timed;
    _Alignas(64) atomic_int done; /* parts of the current step finished */
    _Alignas(64) uint32_t step;   /* number of the current step (the caller's side) */
    pthread_t *threads;
    pthread_mutex_t hold;     /* one caller at a time */
    uint64_t t_start[64], t_fin[64];
    unsigned char by_caller[64];
};
_Static_assert(offsetof(struct ss_pool, timed) < 64, "a step's publication in one cache line");

int pool_parts = POOL_PARTS_DEFAULT; /* pool.h */
int pool_parts_min = 0;
int pool_ends = 2;
static pthread_once_t parts_once = PTHREAD_ONCE_INIT;

static void parts_from_env(void)
{
    const char *e = getenv("SS_PARTS");
    if (e && *e >= '0' && *e <= '9') pool_parts = atoi(e) > 64 ? 64 : atoi(e);
    /* two ends gained 4-8 % a token on the AMD host at 2 threads; on the Intel Xeon of the
     * device machine 0.98-1.03 at 2 threads and 1.04-1.07 (worse) at 16 (docs/performance.md) */
    __builtin_cpu_init();
    pool_ends = __builtin_cpu_is("amd") ? 2 : 1;
    e = getenv("SS_ENDS");
    if (e && (*e == '1' || *e == '2')) pool_ends = *e - '0';
    e = getenv("SS_PARTS_MIN");
    if (e && *e >= '0' && *e <= '9') pool_parts_min = (atoi(e) + 15) / 16 * 16;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Run parts of the current step until none is left (any thread, any part). */
static void participate(ss_pool *p, int caller)
{
    uint64_t c = atomic_load_explicit(&p->claim, memory_order_acquire);
    for (;;) {
        const int part = (int)(uint32_t)c;
        if (part >= p->n) return;
        if (!atomic_compare_exchange_weak_explicit(&p->claim, &c, c + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue; /* c now holds the current value: retry with it */
        if (p->timed) {
            p->t_start[part] = now_ns();
            p->by_caller[part] = (unsigned char)caller;
        }
        p->fn(p->arg, part, p->n);
        if (p->timed) p->t_fin[part] = now_ns();
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
        c = atomic_load_explicit(&p->claim, memory_order_acquire);
    }
}

static void futex_wait(_Atomic unsigned *addr, unsigned val)
{
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic unsigned *addr)
{
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static void *worker(void *varg)
{
    ss_pool *p = varg;
    /* gen starts at 0 and only pool_run bumps it: start from 0, not from a load, or a step
     * published before this thread got here would be missed. */
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
            if (++spins < SPIN_LIMIT) {
                cpu_relax();
                continue;
            }
            /* seq_cst on both sides (here and in run_locked) so that either the caller sees a
             * sleeper and wakes it, or this thread sees the new generation; futex_wait also
             * re-checks the word in the kernel. */
            atomic_fetch_add(&p->sleepers, 1);
            if (atomic_load(&p->gen) == seen) futex_wait(&p->gen, seen);
            atomic_fetch_sub(&p->sleepers, 1);
            spins = 0;
        }
        seen = g;
        if (atomic_load(&p->stop)) return NULL;
        participate(p, 0);
    }
}

ss_pool *pool_new(int n)
{
    pthread_once(&parts_once, parts_from_env);
    if (n < 1) n = 1;
    if (n > 64) n = 64;
    ss_pool *p = aligned_alloc(64, (sizeof *p + 63) / 64 * 64);
    if (!p) return NULL;
    memset(p, 0, sizeof *p);
    p->n = n;
    pthread_mutex_init(&p->hold, NULL);
    p->threads = calloc((size_t)n, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return NULL;
    }
    for (int i = 1; i < n; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p)) {
            p->n = i; /* run with the workers we have */
            break;
        }
    }
    return p;
}

void pool_free(ss_pool *p)
{
    if (!p) return;
    atomic_store(&p->stop, 1);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    futex_wake_all(&p->gen);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->hold);
    free(p->threads);
    free(p);
}

int pool_size(const ss_pool *p)
{
    return p ? p->n : 1;
}

static void run_locked(ss_pool *p, pool_fn fn, void *arg, pool_times *t)
{
    uint64_t t_pub = 0;
    p->fn = fn;
    p->arg = arg;
    p->timed = t != NULL;
    if (t) t_pub = now_ns();
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    /* publishes fn, arg and done with the new step number (release) */
    atomic_store_explicit(&p->claim, (uint64_t)++p->step << 32, memory_order_release);
    atomic_fetch_add(&p->gen, 1);
    const int slept = atomic_load(&p->sleepers) > 0;
    if (slept) futex_wake_all(&p->gen);
    participate(p, 1);
    const uint64_t t_own = t ? now_ns() : 0;
    /* Parts claimed by workers finish within microseconds unless the OS took their core away
     * (a busy machine): then yield instead of burning the slice they need. */
    for (int spins = 0; atomic_load_explicit(&p->done, memory_order_acquire) < p->n; spins++) {
        if (spins < SPIN_LIMIT) cpu_relax();
        else sched_yield();
    }
    if (t) {
        const uint64_t t_end = now_ns();
        uint64_t first = UINT64_MAX, last = 0, woke = UINT64_MAX;
        for (int i = 0; i < p->n; i++) {
            if (p->t_fin[i] < first) first = p->t_fin[i];
            if (p->t_fin[i] > last) last = p->t_fin[i];
            if (!p->by_caller[i] && p->t_start[i] < woke) woke = p->t_start[i];
        }
        t->steps++;
        t->wait_ns += t_end - t_own;
        t->spread_ns += last - first;
        const uint64_t lag = woke != UINT64_MAX && woke > t_pub ? woke - t_pub : 0;
        if (woke == UINT64_MAX)
            t->alone++;
        t->lag_ns += lag;
        if (slept) {
            t->woken++;
            t->woken_lag_ns += lag;
        }
    }
}

void pool_lock(ss_pool *p)
{
    if (p && p->n > 1) pthread_mutex_lock(&p->hold);
}

void pool_unlock(ss_pool *p)
{
    if (p && p->n > 1) pthread_mutex_unlock(&p->hold);
}

void pool_run_locked(ss_pool *p, pool_fn fn, void *arg, pool_times *times)
{
    if (!p || p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    run_locked(p, fn, arg, times);
}

void pool_run(ss_pool *p, pool_fn fn, void *arg)
{
    if (!p || p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->hold);
    run_locked(p, fn, arg, NULL);
    pthread_mutex_unlock(&p->hold);
}
