/*
 * pool.h - the model's own fork-join thread pool (internal to model/).
 *
 * Why not OpenMP: libgomp stops spinning and sleeps on a futex at every parallel region as soon
 * as more threads than cores are "managed" (each thread that ever opened a parallel region brings
 * its own team), which is exactly the daemon's situation (engine thread, HTTP threads). Measured
 * on mamba-130m decode: 82 tok/s from the main thread, 58 from a second thread. This pool has one
 * set of workers per model that spin briefly between the many small parallel steps of a token,
 * then block.
 */
#ifndef SS_POOL_H
#define SS_POOL_H

#include <stdint.h>

typedef struct ss_pool ss_pool;

/*
 * The work of one parallel step: fn(arg, tid, nt) runs once per part tid in [0, nt), nt = the
 * pool's size. Parts are claimed by whichever thread is free (the caller included), so one
 * thread may run several and their order is not fixed: tid names a part (its range, its scratch
 * slot), not a thread, and fn must not wait for another part.
 */
typedef void (*pool_fn)(void *arg, int tid, int nt);

/*
 * A pool of n threads in all (the caller of pool_run counts as one): n-1 workers. NULL on OOM.
 * The workers are not pinned to CPUs: pinning them measured no consistent gain at 2 or 16
 * threads (docs/performance.md).
 */
ss_pool *pool_new(int n);
void pool_free(ss_pool *p);
/* Threads a step runs on. */
int pool_size(const ss_pool *p);

/*
 * Run the nt parts of fn on the pool's threads and return when all are done. One caller at a
 * time holds the pool; a concurrent caller waits. If fn is tiny, prefer calling it directly with
 * nt = 1.
 */
void pool_run(ss_pool *p, pool_fn fn, void *arg);

/*
 * Where a caller's time goes at the meeting points of its steps (pool_run_locked with times):
 * summed over steps, nanoseconds of CLOCK_MONOTONIC. Costs two clock reads per part and two per
 * step; nothing when not asked for.
 */
typedef struct pool_times {
    uint64_t steps;     /* parallel steps run */
    uint64_t wait_ns;   /* the caller spinning after its own parts until every part was done */
    uint64_t spread_ns; /* the first part finishing -> the last part finishing */
    uint64_t lag_ns;    /* the step published -> a worker starting its first part (steps where
                         * a worker ran a part) */
    uint64_t alone;     /* steps whose parts the caller ran all by itself: no worker came in
                         * time (asleep, or its core taken by another process) */
    uint64_t woken;     /* steps published while a worker slept on the futex (woken by the
                         * caller): their lag is a futex wake, not a spinning worker's poll */
    uint64_t woken_lag_ns; /* the part of lag_ns in those steps */
} pool_times;

/*
 * Hold the pool for a series of steps (a round of the forward pass): one lock and unlock per
 * series instead of per step. While held, the holder runs steps with pool_run_locked; any other
 * caller of pool_run waits for pool_unlock.
 */
void pool_lock(ss_pool *p);
void pool_unlock(ss_pool *p);
/* pool_run by the thread that holds the pool; times, when not NULL, accumulates the meetings. */
void pool_run_locked(ss_pool *p, pool_fn fn, void *arg, pool_times *times);

/*
 * How batch-1 decode's products (dense.c mm_rows at up to 16 rows) share their output rows
 * among the parts of a step: 0 = blocks of one size, about 8 per thread, taken as they come;
 * k > 0 = guided: each claim takes 1 / (k nt) of the rows still unclaimed (whole 16-row tiles,
 * no fewer than a minimum), so the first parts are big and the last ones small and the threads
 * finish close together. The ranges depend on the claim's position only, never on which thread
 * claims it. SS_PARTS=k sets it at the first pool_new (default POOL_PARTS_DEFAULT); a benchmark
 * may flip it between steps (statesoup-decode-ab --compare parts), never during one.
 */
#define POOL_PARTS_DEFAULT 2
extern int pool_parts;
/* The least rows a guided claim takes (but the last one); 0 = dense.c's choice (64 rows at one
 * row with four far streams, 16 per stream; else 32). SS_PARTS_MIN sets it, for measuring. */
extern int pool_parts_min;

/*
 * Which end of the rows the parts of a step claim from: pool_ends 2 (the default on AMD CPUs) =
 * even parts from the bottom, odd parts from the top, so that with two threads each reads one run
 * of rows in order and the prefetchers stream on from one claim into the next (the same for
 * Mamba-1's fused segments, mamba.c); 1 (the default elsewhere) = every part from the bottom,
 * claims interleaved. SS_ENDS=1 or 2 sets it at the first pool_new; a benchmark may flip it
 * between steps (statesoup-decode-ab --compare ends). Which rows a thread computes never changes
 * a result's bits.
 */
extern int pool_ends;

/*
 * (pool_guided_claim_in: the same in units of `unit` rows instead of 16, a multiple of 16; lo
 * and least multiples of it.)
 * A guided claim from the rows [lo, hi) still unclaimed (lo a multiple of 16; hi one too, or the
 * rows' end): 1 / div of them (div = k nt), in whole 16-row tiles, at least `least` rows (a
 * multiple of 16), and all of them when fewer than least / 2 would be left: no sliver at the
 * end. From the bottom (top 0) it is [lo, lo + take); from the top [hi - take, hi), its start
 * rounded down to a multiple of 16. Every claim starts and ends on a multiple of 16 or the rows'
 * end. Sets [*c0, *c1).
 */
static inline void pool_guided_claim_in(int lo, int hi, int top, int div, int least, int unit,
                                        int *c0, int *c1)
{
    const int left = hi - lo;
    int take = ((left + div - 1) / div + unit - 1) / unit * unit;
    if (take < least) take = least;
    *c0 = lo;
    *c1 = hi;
    if (left - take < least / 2) return;
    if (!top) {
        *c1 = lo + take;
        return;
    }
    const int start = (hi - take) / unit * unit;
    if (start - lo >= least / 2) *c0 = start;
}
static inline void pool_guided_claim(int lo, int hi, int top, int div, int least, int *c0,
                                     int *c1)
{
    pool_guided_claim_in(lo, hi, top, div, least, 16, c0, c1);
}

/* The two ends of [lo, hi) in one atomic word (pool_ends): lo in the low half, hi the high. */
static inline uint64_t pool_ends_pack(int lo, int hi)
{
    return (uint64_t)(uint32_t)hi << 32 | (uint32_t)lo;
}

/* Split [0, n) into nt ranges aligned to `unit`; the range of thread tid. */
static inline void pool_range(int n, int unit, int tid, int nt, int *lo, int *hi)
{
    int blocks = (n + unit - 1) / unit;
    int per = (blocks + nt - 1) / nt;
    *lo = tid * per * unit;
    *hi = (tid + 1) * per * unit;
    if (*lo > n) *lo = n;
    if (*hi > n) *hi = n;
}

#endif
