/*
 * http.h - the daemon's HTTP layer: a thin, generic wrapper over libmicrohttpd.
 *
 * It owns everything MHD: the listening daemon (internal polling thread pool), routing from a
 * table of (method, path pattern with {param} segments), per-request state, body accumulation
 * under a size limit (413), Content-Type checks (415), Bearer-key auth with read/write scopes
 * (401/403), request ids, request logging and per-endpoint metrics. Handlers (api/) see only the
 * opaque ss_http_req and the functions below; no MHD type leaves this module.
 *
 * Asynchronous requests. A handler that cannot answer at once (it queued inference work) calls
 * ss_http_wait(); the connection is then parked (MHD suspend) without holding a thread, and any
 * thread may later call ss_http_wake(): the continuation then runs on an HTTP thread and answers
 * (or waits again). Streaming answers (SSE) start with ss_http_stream_start(); any thread appends
 * with ss_http_stream_write() and finishes with ss_http_stream_end(). A request is reference
 * counted: whoever may touch it from another thread (an engine job) holds a reference
 * (ss_http_req_ref) and drops it when done; the request and its user data are freed when both
 * the HTTP side and every other holder are finished with it.
 *
 * Threading: handlers and continuations run on the pool's threads; functions marked "any thread"
 * may be called from anywhere while the caller holds a reference.
 */
#ifndef SS_HTTP_H
#define SS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "ss_err.h"

typedef struct ss_http ss_http;
typedef struct ss_http_req ss_http_req;
typedef struct ss_metrics ss_metrics;

/* Scope a route needs (keys in the --api-keys file have scope read or write). */
typedef enum ss_http_scope {
    SS_HTTP_SCOPE_READ = 0,
    SS_HTTP_SCOPE_WRITE,
} ss_http_scope;

/* What body a route takes; the Content-Type is checked against it (415). */
typedef enum ss_http_body {
    SS_HTTP_BODY_NONE = 0, /* a body, if any, is ignored */
    SS_HTTP_BODY_JSON,     /* application/json (or no Content-Type) */
    SS_HTTP_BODY_BINARY,   /* application/octet-stream (or no Content-Type) */
} ss_http_body;

/* A handler: answers with one of the ss_http_respond* calls, ss_http_stream_start, or parks the
 * request with ss_http_wait. Runs on an HTTP thread. */
typedef void (*ss_http_handler)(void *app, ss_http_req *req);

typedef struct ss_http_route {
    const char *method;  /* "GET", "POST", "DELETE" */
    const char *pattern; /* "/v1/states/{state}/data": {x} matches one path segment */
    const char *name;    /* metrics label ("states_get") */
    ss_http_handler handler;
    ss_http_scope scope;
    ss_http_body body;
    size_t max_body; /* 0 = the daemon's max_body */
} ss_http_route;

/*
 * Called once when a request is over (after the HTTP side let go of it): `aborted` is nonzero when
 * the client went away or the daemon is shutting down before the answer was fully sent.
 * Runs on an HTTP thread; used to cancel work done on the request's behalf.
 */
typedef void (*ss_http_abort_fn)(void *user, int aborted);

typedef struct ss_http_params {
    const char *host;     /* numeric address or name to bind ("127.0.0.1", "::1", "0.0.0.0") */
    int port;             /* 0 = any free port (see ss_http_port) */
    int threads;          /* size of the connection thread pool (>= 1) */
    size_t max_body;      /* bytes; larger bodies are refused with 413 */
    const char *api_keys; /* path of the keys file, or NULL for no auth */
    int log_requests;     /* one line per request on stderr */
    const ss_http_route *routes; /* not copied: must outlive the daemon */
    int n_routes;
    void *app;           /* passed to every handler */
    ss_metrics *metrics; /* may be NULL; requests are counted there */
} ss_http_params;

/*
 * Bind and start serving. Keys file lines are "KEY SCOPE" (scope read|write; '#' comments and
 * blank lines ignored): SS_ERR_FORMAT names a bad line. SS_ERR_IO when the address cannot be bound.
 * *out is set only on success.
 */
ss_err ss_http_start(ss_http **out, const ss_http_params *p);
/* The bound port (the real one when params.port was 0). */
int ss_http_port(const ss_http *h);
/* Stop accepting new connections; requests in progress go on. Idempotent. */
void ss_http_quiesce(ss_http *h);
/*
 * Wait until no request is in progress (every answer sent), at most timeout_ms. Returns 1 when
 * none is left. Used at shutdown, after the engine is closed, so answers already made get out.
 */
int ss_http_drain(ss_http *h, int timeout_ms);
/*
 * Stop: parked requests are woken (their continuations see ss_http_stopping() and answer 503,
 * streams end), then the daemon shuts down and every request is completed. NULL is a no-op.
 * Call after the work that could wake requests is finished (the engine closed).
 */
void ss_http_stop(ss_http *h);

/* ---- request accessors (HTTP thread, inside a handler or continuation) ------------------------
 */

const char *ss_http_method(const ss_http_req *r);
/* The request path without the query string, as sent (still percent-encoded). */
const char *ss_http_path(const ss_http_req *r);
/* Value of path parameter `name` ({name} in the pattern), percent-decoded; NULL if none. */
const char *ss_http_param(const ss_http_req *r, const char *name);
/* Query argument (percent-decoded, '+' as space); NULL when absent. Valid for the request. */
const char *ss_http_query(ss_http_req *r, const char *name);
/* Request header (case-insensitive name); NULL when absent. */
const char *ss_http_header(ss_http_req *r, const char *name);
/* The accumulated body (NUL-terminated for convenience; *len may be NULL). */
const char *ss_http_body_data(const ss_http_req *r, size_t *len);
/* Scope of the caller's key (SS_HTTP_SCOPE_WRITE when the daemon runs without keys). */
ss_http_scope ss_http_scope_of(const ss_http_req *r);
/* The request id (client's X-Request-Id when sane, else generated); echoed in every answer. */
const char *ss_http_request_id(const ss_http_req *r);
/* The route's metrics name. */
const char *ss_http_route_name(const ss_http_req *r);
/* Has ss_http_stop begun? Continuations answer 503 then. Any thread. */
int ss_http_stopping(const ss_http_req *r);

/* Attach user data freed with free_fn (may be NULL) when the request is freed (refs at zero). */
void ss_http_set_user(ss_http_req *r, void *user, void (*free_fn)(void *));
void *ss_http_user(const ss_http_req *r);
/* Called when the request is over (see ss_http_abort_fn). */
void ss_http_on_over(ss_http_req *r, ss_http_abort_fn fn);

/* ---- answers (HTTP thread) --------------------------------------------------------------------
 */

/* Answer with `len` bytes of `body` (copied) and the given Content-Type. */
void ss_http_respond(ss_http_req *r, int status, const char *content_type, const void *body,
                     size_t len);
/* Answer with `body` (malloc'd; ownership passes to this function, freed after sending). */
void ss_http_respond_take(ss_http_req *r, int status, const char *content_type, void *body,
                          size_t len);
/*
 * Answer with the contract's error body {"error": {"code", "message"}} (message printf-style).
 * 401 answers also carry WWW-Authenticate, 503 Retry-After.
 */
void ss_http_respond_error(ss_http_req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Add a response header to the coming answer (copied). At most 8. */
void ss_http_add_header(ss_http_req *r, const char *name, const char *value);
/* Has an answer been queued? */
int ss_http_responded(const ss_http_req *r);
/* The status answered (0 while none). */
int ss_http_status(const ss_http_req *r);

/* ---- asynchronous answers ---------------------------------------------------------------------
 */

typedef void (*ss_http_cont)(void *app, ss_http_req *req, void *user);

/*
 * Park the request until ss_http_wake(): then `cont` runs on an HTTP thread and answers (or waits
 * again). If the request is streaming, cont runs from inside the stream's reader instead (it may
 * write and end the stream). HTTP thread.
 */
void ss_http_wait(ss_http_req *r, ss_http_cont cont, void *user);
/* Wake a parked request (or mark it woken so it does not park). Any thread. */
void ss_http_wake(ss_http_req *r);
/*
 * Has the client closed its side of a parked request's connection (or is the request over)?
 * MHD does not watch suspended connections, so long non-streamed work polls this to stop early.
 * Any thread; a cheap non-blocking peek.
 */
int ss_http_client_gone(ss_http_req *r);

/* Answer 200 with a body produced over time (chunked); e.g. "text/event-stream". HTTP thread. */
void ss_http_stream_start(ss_http_req *r, const char *content_type);
/* Append to the stream (copied); returns -1 when the client is gone. Any thread. */
int ss_http_stream_write(ss_http_req *r, const void *data, size_t len);
/* The stream ends once what was written is sent. Any thread. */
void ss_http_stream_end(ss_http_req *r);

/* Take / drop a reference to the request. Any thread. */
void ss_http_req_ref(ss_http_req *r);
void ss_http_req_unref(ss_http_req *r);

#endif
