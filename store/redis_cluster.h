/*
 * redis_cluster.h - the one small Redis Cluster client of statesoup, on top of hiredis (which has
 * no cluster support in Debian 12's 0.14): key slots (CRC16/XMODEM of the key or of its {hash
 * tag}, mod 16384), a slot map from CLUSTER SLOTS, MOVED and ASK redirects, slot-map refresh,
 * reconnects with a deadline, connect/command timeouts and AUTH. Nothing more: no pipelines across
 * slots, no pub/sub multiplexing (the subscriber has its own plain connection, see remote.c).
 *
 * Seeds: "redis://[:password@]host:port[,host:port...]" (a bare "host:port,..." works too).
 * "rediss://" (TLS) is refused with SS_ERR_UNSUPPORTED: the hiredis Debian 12 ships (0.14.1) has
 * no TLS (libhiredis-ssl arrived with hiredis 1.0).
 *
 * Threading: one ss_rc may be used from any number of threads: each command takes one of four
 * lanes (a connection per node each) for its whole run, so a command and its WAIT share a
 * connection and up to four commands run at once.
 */
#ifndef SS_REDIS_CLUSTER_H
#define SS_REDIS_CLUSTER_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "ss_err.h"

#define SS_RC_SLOTS 16384

typedef struct ss_rc ss_rc;

typedef struct ss_rc_params {
    const char *password;  /* AUTH password; NULL = the URL's, if any */
    int timeout_ms;        /* connect and per-command timeout; 0 = 2000 */
    int retry_ms;          /* how long one command keeps retrying through redirects, reconnects,
                              CLUSTERDOWN and failovers before SS_ERR_UNAVAILABLE; 0 = 5000 */
} ss_rc_params;

/* CRC16/XMODEM (poly 0x1021, init 0), the checksum Redis Cluster uses for key slots. */
uint16_t ss_rc_crc16(const void *buf, size_t len);
/* The slot of a key: CRC16 of the first non-empty {...} section if any, else of the whole key. */
int ss_rc_key_slot(const void *key, size_t len);

/*
 * Parse the seeds and try to load the slot map. A cluster that does not answer yet is not an
 * error (the client keeps trying on each command: statesoupd starts degraded); a malformed URL is
 * SS_ERR_INVALID, TLS SS_ERR_UNSUPPORTED. *out is set only on success.
 */
ss_err ss_rc_open(ss_rc **out, const char *url, const ss_rc_params *params);
void ss_rc_close(ss_rc *c);

/*
 * Run one command routed by argv[key_arg] (its slot), following MOVED/ASK redirects and
 * reconnecting until retry_ms has passed. When wait_replicas > 0, "WAIT wait_replicas wait_ms"
 * is sent on the same connection right after it and *acked (may be NULL) receives its answer.
 * Returns the command's reply (freeReplyObject it; an error reply other than a redirect or
 * CLUSTERDOWN/TRYAGAIN/LOADING is returned as it is), or NULL with SS_ERR_UNAVAILABLE in
 * ss_errmsg() when the cluster could not be reached in time.
 */
redisReply *ss_rc_command(ss_rc *c, int key_arg, int argc, const char **argv, const size_t *lens,
                          int wait_replicas, int wait_ms, long long *acked);

/* Reload the slot map from any node that answers: SS_OK or SS_ERR_UNAVAILABLE. */
ss_err ss_rc_refresh(ss_rc *c);

/* A new plain connection (timeouts set, AUTH done) to any node that answers, for pub/sub.
 * NULL with SS_ERR_UNAVAILABLE when none does. */
redisContext *ss_rc_connect_any(ss_rc *c);

/* Counters: redirects followed (MOVED, ASK), slot-map refreshes, reconnects, failed commands. */
typedef struct ss_rc_stats {
    uint64_t moved, ask, refreshes, reconnects, failures;
} ss_rc_stats;
void ss_rc_get_stats(ss_rc *c, ss_rc_stats *out);

#endif
