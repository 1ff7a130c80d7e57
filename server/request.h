/*
 * request.h - what the two files of the HTTP host share (private to server/): the daemon and the
 * request as libmicrohttpd carries them. http.c is the daemon (routing, auth, body checks, the
 * MHD callbacks, start and stop); host.c is the request side, the ss_host_* functions that api/
 * calls (answers, parking, streams, references).
 */
#ifndef SS_SERVER_REQUEST_H
#define SS_SERVER_REQUEST_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "http.h"

#define MAX_PARAMS  4
#define MAX_HEADERS 8
#define MAX_QUERY   16

/* Transport events summed up per minute in the log (http_log_event). */
enum { HTTP_EV_GONE, HTTP_EV_REFUSED, HTTP_EV_MHD, HTTP_N_EVENTS };
extern const char *const http_event_name[HTTP_N_EVENTS];

typedef struct api_key {
    char *key;
    ss_host_scope scope;
    char *tenant; /* NULL: the default tenant */
    /* rate=N/s|N/m|N/h: a token bucket of N requests refilled over the period (0: no limit) */
    double rate_per_s, burst;
    pthread_mutex_t rate_mu; /* tokens, last_ns (only with a rate, once the table is built) */
    int rate_mu_ready;
    double tokens;
    int64_t last_ns;
} api_key;

struct ss_http {
    struct MHD_Daemon *d;
    ss_http_params p;
    api_key *keys; /* [n_keys]; NULL = no auth */
    int n_keys;
    pthread_rwlock_t keys_lock; /* keys, n_keys: read by authorize, swapped by a reload */
    /* tables a reload replaced, kept until stop: a request in flight points at its key's
     * tenant (ss_host_req.tenant) */
    struct retired_keys {
        api_key *keys;
        int n;
    } *retired;
    int n_retired;
    int port;
    atomic_int stopping;
    atomic_int draining; /* quiesced: new requests on open connections get 503 */
    int quiesced;
    MHD_socket listen_fd; /* handed back by MHD_quiesce_daemon; closed after MHD_stop_daemon */
    pthread_mutex_t mu;   /* guards the list of live requests */
    pthread_cond_t idle;  /* signalled when a request leaves the list */
    ss_host_req *live;
    atomic_int open_conns;  /* connections MHD holds now */
    atomic_ullong refused;  /* closed at once for --max-connections */
    pthread_mutex_t log_mu; /* the event window below */
    int64_t window_start;   /* ss_mono_ns of the window's start */
    uint64_t ev_count[HTTP_N_EVENTS];
    char ev_example[HTTP_N_EVENTS][200];
};

struct ss_host_req {
    ss_http *h;
    struct MHD_Connection *conn; /* NULL once MHD completed the request */
    const ss_host_route *route;
    char method[16];
    char *path; /* raw, without the query string */
    int n_params;
    const char *param_name[MAX_PARAMS]; /* point into the route pattern (name + len) */
    size_t param_name_len[MAX_PARAMS];
    char *param_value[MAX_PARAMS];
    int n_query;
    char *query_name[MAX_QUERY], *query_value[MAX_QUERY]; /* decoded copies handed out */
    char *body;
    size_t body_len, body_cap, body_max;
    int too_large;
    size_t discarded; /* body bytes thrown away (too large, or after an early answer) */
    ss_host_scope scope;
    const char *tenant; /* the key's (owned by the key table), NULL: the default tenant */
    char rid[72];
    char addr[48];     /* the client's address, as text ("" when unknown) */
    int key_no;        /* 1-based line of the API key used (0: none) */
    uint64_t bytes_out; /* answer body bytes handed to MHD */
    int64_t t0;
    int started; /* the handler ran */
    int status;
    int responded;
    int broken; /* no response could be queued: close the connection */
    int n_headers;
    char *hdr_name[MAX_HEADERS], *hdr_value[MAX_HEADERS];
    void *user;
    void (*user_free)(void *);
    ss_host_over_fn over_fn;

    pthread_mutex_t mu; /* guards everything below (touched from other threads) */
    int refs;
    int over;      /* MHD completed the request */
    int suspended; /* the connection is suspended (only resume when set) */
    int woken;     /* ss_host_wake arrived and was not consumed yet */
    ss_host_cont cont;
    void *cont_user;
    int streaming;
    char *sbuf; /* queued stream bytes [soff, slen) */
    size_t slen, scap, soff;
    int send; /* stream ended by the writer */

    ss_host_req *prev, *next; /* live list */
};

/*
 * Percent-decode n bytes of s into a new string (free it); '+' is a space when plus_space. NULL
 * when the encoding is bad, decodes to a NUL byte, or memory runs out.
 */
char *http_pct_decode(const char *s, size_t n, int plus_space);
/* Resume the connection if it is suspended. Caller holds r->mu. */
void http_resume_locked(ss_host_req *r);
/*
 * The request was woken with a continuation pending: take it and run it. Called holding r->mu,
 * which it releases before the continuation runs.
 */
void http_run_cont_unlock(ss_host_req *r);
/* Log a transport event of kind "client_gone", "refused" or "mhd" (printf-style message): the
 * first of a kind per minute is printed, the others counted and summed up in one line. */
void http_log_event(ss_http *h, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
