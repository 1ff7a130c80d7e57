/*
 * bench.h - what the phases of statesoup-bench in other files share with bench.c's main.
 */
#ifndef SS_BENCH_H
#define SS_BENCH_H

#include <jansson.h>

#include "ss_model.h"

/*
 * The fairness phase (fairness.c): streams decoding, a short request's latency and the streams'
 * speed alone and beside a prefill of a `long_prompt`-token prompt, and how fast that prompt's
 * job is released when cancelled. Prints a table and adds "fairness" to jm. Returns 0, or -1
 * when the engine cannot start or memory runs out.
 */
int bench_fairness(ss_model *m, int long_prompt, json_t *jm);

/*
 * The prefix phase (prefix.c): time to first token of an n_prompt-token prompt whose first
 * n_shared tokens are stored (a store opened in store_dir), with and without resuming from
 * them. Prints a line and adds "prefix" to jm. Returns 0, or -1 (engine, store, memory).
 */
int bench_prefix(ss_model *m, const char *store_dir, int n_prompt, int n_shared, json_t *jm);

/*
 * The search phase (search.c): latency p50/p99 of a search over 10,000 and 100,000 stored
 * 256-dim retrieval keys (quick: a tenth), with and without a tag filter, the keys' memory, the
 * time to load them at a restart and the put rate, in stores made under root. Prints a table
 * and adds "search" to out. Returns 0, or -1 (store, memory).
 */
int bench_search(const char *root, int quick, json_t *out);

/*
 * The children phase (children.c): latency p50/p99 of the children lookup and of a depth-3 walk
 * (GET /v1/states/{state}/children's work) at 10,000 and 100,000 stored states (quick: a tenth)
 * with a random lineage, in stores made under root. Prints a table and adds "children" to out.
 * Returns 0, or -1 (store, memory).
 */
int bench_children(const char *root, int quick, json_t *out);

/*
 * Run fn(user, dir, n) for catalogs of 10,000 and then 100,000 states (quick: a tenth), each in a
 * fresh folder root/PHASE-N that is removed afterwards; stops at the first nonzero return, which
 * it returns (the search and children phases).
 */
typedef int (*bench_catalog_fn)(void *user, const char *dir, int n);
int bench_catalog_sizes(const char *root, int quick, const char *phase, bench_catalog_fn fn,
                        void *user);

/*
 * The paired decode bound (paired.c): `rounds` batch-1 greedy decode tokens, each right after a
 * plain read of the same bytes (stream_bytes, capped at 1 GiB) by `threads` threads; prints the
 * median and quartiles of (bytes / token time) / (the read's rate) and adds "decode_paired" to
 * jm. Returns 0, or -1 (memory, threads, eval).
 */
int bench_paired(ss_model *m, int threads, int rounds, double stream_bytes, json_t *jm);

/*
 * The decode profile (profile.c, --profile): greedy decode of n_tok steps of n_streams streams
 * (1 to 64; a token each per step), `reps` runs with the per-phase counters on and as many off,
 * alternating; prints microseconds per step per phase of the fastest run, the threads' meetings,
 * and the share that is not streaming the stream_bytes of weights a step reads at
 * bandwidth(bw_user) GB/s (called before and after; the better counts); with several streams
 * also the projections' GFLOP/s against gemm_gflops. Adds "profile" to jm. Returns 0, or -1
 * (memory, eval, n_streams out of range).
 */
int bench_profile(ss_model *m, int n_streams, int n_tok, int reps, double stream_bytes,
                  double gemm_gflops, double (*bandwidth)(void *user), void *bw_user, json_t *jm);

/* Resident set size (current and peak) from /proc/self/status, in MB (bench.c). */
void bench_rss_mb(double *cur, double *peak);
/* Seconds of the monotonic clock (bench.c). */
double bench_now_s(void);
/* qsort comparator of doubles, ascending (bench.c). */
int bench_cmp_double(const void *a, const void *b);

#endif
