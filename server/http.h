/*
 * http.h - the daemon's HTTP layer: the API's host (api/ss_host.h) over libmicrohttpd.
 *
 * It owns everything MHD: the listening daemon (internal polling thread pool), routing from the
 * API's table of (method, path pattern with {param} segments), per-request state, body
 * accumulation under a size limit (413), Content-Type checks (415), Bearer-key auth with
 * read/write scopes (401/403), request ids, request logging and per-endpoint metrics. The
 * request side (answers, streams, parking) is the ss_host_* interface that api/ declares and
 * host.c implements; this header only starts and stops the daemon. No MHD type leaves server/.
 *
 * Threading: ss_http_start / ss_http_quiesce / ss_http_drain / ss_http_stop are called by the
 * daemon's main thread; handlers and continuations run on the pool's threads.
 */
#ifndef SS_HTTP_H
#define SS_HTTP_H

#include <stddef.h>

#include "metrics.h"
#include "ss_err.h"
#include "ss_host.h"

typedef struct ss_http ss_http;

typedef struct ss_http_params {
    const char *host;     /* numeric address or name to bind ("127.0.0.1", "::1", "0.0.0.0") */
    int port;             /* 0 = any free port (see ss_http_port) */
    int threads;          /* size of the connection thread pool (>= 1) */
    size_t max_body;      /* bytes; larger bodies are refused with 413 */
    const char *api_keys; /* path of the keys file, or NULL for no auth */
    int log_requests;     /* one line per request on stderr */
    const ss_host_route *routes; /* the API's (not copied: must outlive the daemon) */
    int n_routes;
    void *app;           /* passed to every handler */
    ss_metrics *metrics; /* may be NULL; requests are counted there */
    int max_connections; /* open connections beyond which new ones are closed at once (>= 1) */
    int max_per_ip;      /* open connections from one address; 0 = no limit */
    int idle_timeout;    /* seconds a connection may stay idle before it is closed (>= 1) */
} ss_http_params;

/*
 * Bind and start serving. Keys file lines are "KEY SCOPE [tenant=NAME]" (scope read|write|admin;
 * no tenant: the default tenant; '#' comments and blank lines ignored). *out is set only on
 * success. Returns SS_ERR_FORMAT naming a bad keys-file line, the errors of ss_read_file for the
 * keys file, SS_ERR_INVALID when the address does not resolve, SS_ERR_IO when it cannot be bound,
 * SS_ERR_NOMEM.
 */
ss_err ss_http_start(ss_http **out, const ss_http_params *p);
/* The bound port (the real one when params.port was 0). */
int ss_http_port(const ss_http *h);
/*
 * Stop accepting new connections at once (the listening socket is shut down: connects are
 * refused) and answer new requests on kept-alive connections 503 shutting_down with
 * Connection: close; requests in progress go on. Idempotent.
 */
void ss_http_quiesce(ss_http *h);
/*
 * Wait until no request is in progress (every answer sent), at most timeout_ms. Returns 1 when
 * none is left. Used at shutdown, after the engine is closed, so answers already made get out.
 */
int ss_http_drain(ss_http *h, int timeout_ms);
/*
 * Stop: parked requests are woken (their continuations see ss_host_stopping() and answer 503,
 * streams end), then the daemon shuts down and every request is completed. NULL is a no-op.
 * Call after the work that could wake requests is finished (the engine closed).
 */
void ss_http_stop(ss_http *h);
/*
 * Read the --api-keys file again and use it from the next request on (SIGHUP): keys added,
 * removed, rescoped or moved to another tenant. A file that does not parse changes nothing
 * (SS_ERR_FORMAT naming the line, or ss_read_file's error); SS_ERR_UNSUPPORTED without
 * --api-keys (auth is not switched on at run time). *n_keys: the keys now in use. Call from one
 * thread at a time (the main thread's signal loop).
 */
ss_err ss_http_reload_keys(ss_http *h, int *n_keys);

#endif
