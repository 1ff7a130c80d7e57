/*
 * ss_host.h - what the API needs from whoever carries its requests (its "host"), and nothing
 * more: a request in, an answer or an event stream out, parking a request while work runs
 * elsewhere, and waking it again.
 *
 * api/ declares this interface; the host implements it. In the daemon the host is server/host.c
 * (beside the HTTP daemon, http.c); in tests/test_handlers.c it is a small in-memory one, so the
 * handlers run without a socket. No transport type appears here: a request is the opaque
 * ss_host_req. The functions are bound at link time (one host per program).
 *
 * Life of a request, as the API sees it:
 *   1. The host matched a route of the table (ss_api_routes), checked its scope and body type,
 *      read the whole body, and calls the route's handler on one of its threads.
 *   2. The handler answers at once (ss_host_respond / ss_host_respond_error), or starts an event
 *      stream (ss_host_stream_start), or parks the request (ss_host_wait) after handing work to
 *      another thread (the engine), which holds a reference (ss_host_req_ref) for as long as it
 *      may touch the request.
 *   3. That thread calls ss_host_wake() when the work is done; the continuation given to
 *      ss_host_wait then runs on a host thread and answers (or waits again).
 *   4. When the request is over (answered and sent, or the client went away) the host calls the
 *      over_fn given to ss_host_set_user; the user data is freed when the last reference goes.
 *
 * Threading: functions marked "host thread" are called from inside a handler or continuation;
 * those marked "any thread" from anywhere, by a holder of a reference.
 */
#ifndef SS_HOST_H
#define SS_HOST_H

#include <stddef.h>

typedef struct ss_host_req ss_host_req;

/* Scope a route needs (API keys have scope read, write or admin; no keys = write). Ordered for
 * keys: admin may do all that write may, write all that read may. PUBLIC routes need no key at
 * all (the console's static files); a caller of one has scope READ. */
typedef enum ss_host_scope {
    SS_HOST_SCOPE_READ = 0,
    SS_HOST_SCOPE_WRITE,
    SS_HOST_SCOPE_ADMIN, /* also shares/unshares states and reaches every tenant's by id */
    SS_HOST_SCOPE_PUBLIC,
} ss_host_scope;

/* What body a route takes; the host checks the Content-Type against it (415). */
typedef enum ss_host_body {
    SS_HOST_BODY_NONE = 0, /* a body, if any, is ignored */
    SS_HOST_BODY_JSON,     /* application/json (or no Content-Type) */
    SS_HOST_BODY_BINARY,   /* application/octet-stream (or no Content-Type) */
} ss_host_body;

/* A handler: answers, starts a stream, or parks the request. Host thread. */
typedef void (*ss_host_handler)(void *app, ss_host_req *req);
/* The continuation of a parked request (see ss_host_wait). Host thread. */
typedef void (*ss_host_cont)(void *app, ss_host_req *req, void *user);
/*
 * Called once when the request is over: `aborted` is nonzero when the client went away or the
 * host is shutting down before the answer was fully sent. Host thread; used to cancel work.
 */
typedef void (*ss_host_over_fn)(void *user, int aborted);

/* One endpoint. The table is the API's (ss_api_routes); the host routes by it. */
typedef struct ss_host_route {
    const char *method;  /* "GET", "POST", "DELETE" */
    const char *pattern; /* "/v1/states/{state}/data": {x} matches one path segment */
    const char *name;    /* metrics label ("states_get") */
    ss_host_handler handler;
    ss_host_scope scope;
    ss_host_body body;
    size_t max_body; /* 0 = the host's limit */
} ss_host_route;

/* ---- the request (host thread) --------------------------------------------------------------- */

/* Path parameter `name` ({name} in the pattern), percent-decoded; NULL if none. */
const char *ss_host_param(ss_host_req *r, const char *name);
/* Query argument (percent-decoded, '+' as space); NULL when absent. Valid for the request. */
const char *ss_host_query(ss_host_req *r, const char *name);
/* The whole body (NUL-terminated for convenience, "" when none); *len may be NULL. */
const char *ss_host_body_data(ss_host_req *r, size_t *len);
/* Scope of the caller's key (SS_HOST_SCOPE_WRITE when the host runs without keys). */
ss_host_scope ss_host_scope_of(ss_host_req *r);
/* Tenant of the caller's key ("tenant=NAME" in the keys file), or NULL for the default tenant
 * (no keys, or a key without a tenant). Valid for the request. */
const char *ss_host_tenant(ss_host_req *r);
/* Has the host begun to shut down? Continuations answer 503 then. Any thread. */
int ss_host_stopping(ss_host_req *r);

/*
 * Attach user data to the request: free_fn (may be NULL) frees it when the last reference goes,
 * over_fn (may be NULL) is called when the request is over. Host thread, once per request.
 */
void ss_host_set_user(ss_host_req *r, void *user, void (*free_fn)(void *), ss_host_over_fn over_fn);

/* ---- answers (host thread) ------------------------------------------------------------------- */

/*
 * Answer with `len` bytes of `body` (malloc'd or NULL; ownership passes to the host, which frees
 * it after sending) and the given Content-Type (NULL: none). Only the first answer counts.
 */
void ss_host_respond(ss_host_req *r, int status, const char *content_type, void *body, size_t len);
/*
 * Answer with the contract's error body {"error": {"code", "message"}} (the host builds it: its
 * own errors, 401 to 415, have the same shape). 401 answers also carry WWW-Authenticate, 429
 * and 503 Retry-After.
 */
void ss_host_respond_error(ss_host_req *r, int status, const char *code, const char *message);
/* Add a header to the coming answer (copied). At most 8. */
void ss_host_add_header(ss_host_req *r, const char *name, const char *value);

/* ---- parking and event streams --------------------------------------------------------------- */

/*
 * Park the request until ss_host_wake(): then `cont` runs on a host thread and answers (or waits
 * again). If the request is streaming, cont runs from inside the stream's writer side instead (it
 * may write and end the stream). Host thread.
 */
void ss_host_wait(ss_host_req *r, ss_host_cont cont, void *user);
/* Wake a parked request (or mark it woken, so that it does not park). Any thread. */
void ss_host_wake(ss_host_req *r);
/*
 * Has the client gone away from a parked request (or is the request over)? Long work that is not
 * streamed polls this to stop early. Any thread; cheap and non-blocking.
 */
int ss_host_client_gone(ss_host_req *r);

/* Answer 200 with a body produced over time (e.g. "text/event-stream"). Host thread. */
void ss_host_stream_start(ss_host_req *r, const char *content_type);
/* Append to the stream (copied); returns -1 when the client is gone. Any thread. */
int ss_host_stream_write(ss_host_req *r, const void *data, size_t len);
/* The stream ends once what was written is sent. Any thread. */
void ss_host_stream_end(ss_host_req *r);

/*
 * Take / drop a reference to the request. The host holds one until the request is over; the
 * request and its user data are freed when the last one is dropped. Any thread.
 */
void ss_host_req_ref(ss_host_req *r);
void ss_host_req_unref(ss_host_req *r);

#endif
