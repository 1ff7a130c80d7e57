/*
 * load_stats.h - the pure helpers of statesoup-load (bench/statesoup-load.c) that a unit test
 * checks on their own: latency percentiles and the loopback-only rule for --url.
 */
#ifndef SS_LOAD_STATS_H
#define SS_LOAD_STATS_H

#include <stddef.h>

/*
 * The p-th percentile (0 <= p <= 100) of n values sorted ascending, by nearest rank: the
 * smallest value such that at least p % of the values are <= it (p = 0 gives the smallest,
 * p = 100 the largest). Returns NAN when n == 0 or p is outside [0, 100]. Pure, thread-safe.
 */
double ss_load_percentile(const double *sorted, size_t n, double p);

/*
 * Sort v (n values) ascending in place; NaNs are not expected (latencies are measured).
 */
void ss_load_sort(double *v, size_t n);

/*
 * Whether url is an http:// URL whose host is on this machine's loopback: an IPv4 address in
 * 127.0.0.0/8 (dotted quad), [::1], or "localhost" (any case). A user part ("a@host") is refused,
 * as are https:// and anything unparsable: the tool that uses this floods its target, so it only
 * ever targets a daemon on the same machine. Returns 1 if allowed, else 0. Pure, thread-safe.
 */
int ss_load_url_loopback(const char *url);

#endif
