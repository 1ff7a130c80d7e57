/*
 * http.c - the HTTP daemon of statesoupd over libmicrohttpd: listening, routing by the API's
 * table, auth, body checks, request ids and logging, and the MHD callbacks that drive a request
 * through the API's handlers. The request side that api/ calls (ss_host_*) is host.c.
 *
 * Per-request state is allocated on the first access-handler call and released from the
 * NOTIFY_COMPLETED callback (libmicrohttpd's post_example.c habit), through the request's
 * reference count (host.c).
 *
 * Paths are kept percent-encoded (an identity unescape callback) so that a state name containing
 * '/' can be sent as %2F inside one path segment; segments and query values are decoded here.
 */
#include "http.h"
#include "ss_log.h"
#include "ss_store.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <jansson.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "request.h"
#include "ss_util.h"

/* Most body bytes read and thrown away past --max-body so that a client that does not wait for
 * 100-continue can read its 413 (a lingering close); a body larger than that is cut. */
#define HTTP_LINGER_MAX ((size_t)32 << 20)

const char *const http_event_name[HTTP_N_EVENTS] = {"client_gone", "refused", "mhd"};

#define HTTP_DEFAULT_MAX_CONNECTIONS 4096
#define HTTP_DEFAULT_IDLE_TIMEOUT    30
#define HTTP_LIMIT_HEADROOM          16 /* MHD's limit above ours, per pool thread */
#define HTTP_LISTEN_BACKLOG          1024

static void log_request(ss_http *h, ss_host_req *r, int status, double secs, int aborted);

/* ---- small helpers -------------------------------------------------------------------------- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

char *http_pct_decode(const char *s, size_t n, int plus_space)
{
    char *out = malloc(n + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n) {
                free(out);
                return NULL;
            }
            int hi = hexval((unsigned char)s[i + 1]), lo = hexval((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(out);
                return NULL;
            }
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (s[i] == '+' && plus_space) {
            out[o++] = ' ';
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

static size_t unescape_none(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

static int ci_prefix(const char *s, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncasecmp(s, prefix, n) == 0;
}

/* Request header (case-insensitive name); NULL when absent. */
static const char *header(ss_host_req *r, const char *name)
{
    return r->conn ? MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name) : NULL;
}

/* The transport's own error answers (routing, auth, body checks), message printf-style. */
static void fail(ss_host_req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(ss_host_req *r, int status, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ss_host_respond_error(r, status, code, msg);
}

/* ---- routing and checks -------------------------------------------------------------------- */

/* Does `path` match `pattern`? On a match fills r's params (decoded) when r is not NULL. */
static int match(const char *pattern, const char *path, ss_host_req *r)
{
    const char *p = pattern, *s = path;
    int n = 0;
    while (*p && *s) {
        if (*p != '/' || *s != '/') return 0;
        p++;
        s++;
        const char *pe = strchr(p, '/'), *se = strchr(s, '/');
        size_t pl = pe ? (size_t)(pe - p) : strlen(p), sl = se ? (size_t)(se - s) : strlen(s);
        if (pl >= 2 && p[0] == '{' && p[pl - 1] == '}') {
            if (sl == 0 || n >= MAX_PARAMS) return 0;
            if (r) {
                char *v = http_pct_decode(s, sl, 0);
                if (!v) return 0;
                r->param_name[n] = p + 1;
                r->param_name_len[n] = pl - 2;
                r->param_value[n] = v;
                r->n_params = n + 1;
            }
            n++;
        } else if (pl != sl || memcmp(p, s, pl) != 0) {
            return 0;
        }
        p += pl;
        s += sl;
    }
    return *p == '\0' && *s == '\0';
}

static void clear_params(ss_host_req *r)
{
    for (int i = 0; i < r->n_params; i++) free(r->param_value[i]);
    r->n_params = 0;
}

/* Find the route; on failure answer 404/405 and return NULL. */
static const ss_host_route *route(ss_host_req *r)
{
    const ss_http *h = r->h;
    char allow[128] = "";
    for (int i = 0; i < h->p.n_routes; i++) {
        const ss_host_route *rt = &h->p.routes[i];
        if (!match(rt->pattern, r->path, NULL)) continue;
        if (strcmp(rt->method, r->method) != 0) {
            if (!strstr(allow, rt->method) &&
                strlen(allow) + strlen(rt->method) + 3 < sizeof allow) {
                if (allow[0]) strcat(allow, ", ");
                strcat(allow, rt->method);
            }
            continue;
        }
        if (match(rt->pattern, r->path, r)) return rt;
        clear_params(r); /* e.g. a segment that does not decode */
    }
    if (allow[0]) {
        ss_host_add_header(r, "Allow", allow);
        fail(r, 405, "method_not_allowed", "%s is not allowed on %s (allowed: %s)", r->method,
             r->path, allow);
    } else {
        fail(r, 404, "not_found", "no such endpoint: %s %s", r->method, r->path);
    }
    return NULL;
}

/* Constant-time string equality (keys). */
static int key_eq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la && i < lb; i++) d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

/* One request from key k's bucket: 0 when it had a token (taken), else the seconds until the
 * next one. The bucket refills at rate_per_s up to burst. */
static double take_token(api_key *k)
{
    const int64_t now = ss_mono_ns();
    pthread_mutex_lock(&k->rate_mu);
    k->tokens += (double)(now - k->last_ns) / 1e9 * k->rate_per_s;
    if (k->tokens > k->burst) k->tokens = k->burst;
    k->last_ns = now;
    double wait = 0;
    if (k->tokens >= 1)
        k->tokens -= 1;
    else
        wait = (1 - k->tokens) / k->rate_per_s;
    pthread_mutex_unlock(&k->rate_mu);
    return wait;
}

/* Authenticate (and apply the key's rate); on failure answer 401/403/429 and return 0. */
static int authorize(ss_host_req *r)
{
    ss_http *h = r->h;
    if (!h->p.api_keys) {
        r->scope = SS_HOST_SCOPE_WRITE;
        return 1;
    }
    if (r->route->scope == SS_HOST_SCOPE_PUBLIC) { /* the console's files: no key */
        r->scope = SS_HOST_SCOPE_READ;
        return 1;
    }
    const char *auth = header(r, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!auth) {
        fail(r, 401, "unauthorized",
             "this server needs an API key: send Authorization: Bearer <key>");
        return 0;
    }
    if (!ci_prefix(auth, "Bearer ")) {
        fail(r, 401, "unauthorized", "the Authorization header must be \"Bearer <key>\"");
        return 0;
    }
    const char *key = auth + 7;
    while (*key == ' ') key++;
    int found = 0;
    double wait_s = 0;
    pthread_rwlock_rdlock(&h->keys_lock);
    for (int i = 0; i < h->n_keys && !found; i++) {
        if (key_eq(key, h->keys[i].key)) {
            r->scope = h->keys[i].scope;
            r->tenant = h->keys[i].tenant; /* the table stays until stop (ss_http_reload_keys) */
            r->key_no = i + 1;
            found = 1;
            if (h->keys[i].rate_mu_ready) wait_s = take_token(&h->keys[i]);
        }
    }
    pthread_rwlock_unlock(&h->keys_lock);
    if (!found) {
        fail(r, 401, "unauthorized", "unknown API key");
        return 0;
    }
    if (wait_s > 0) {
        char after[32];
        snprintf(after, sizeof after, "%.0f", ceil(wait_s));
        ss_host_add_header(r, "Retry-After", after);
        fail(r, 429, "rate_limited",
             "this key's rate limit (rate= in the keys file) is used up: the next request is "
             "allowed in %.1f s",
             wait_s);
        return 0;
    }
    if (r->scope < r->route->scope) {
        fail(r, 403, "forbidden", "this key has %s scope; %s %s needs a key with %s scope",
             r->scope == SS_HOST_SCOPE_READ ? "read" : "write", r->method, r->path,
             r->route->scope == SS_HOST_SCOPE_ADMIN ? "admin" : "write");
        return 0;
    }
    return 1;
}

/* Content-Type and Content-Length checks before the body arrives; answers 415/413. */
static int check_body(ss_host_req *r)
{
    const ss_host_route *rt = r->route;
    r->body_max = rt->max_body ? rt->max_body : r->h->p.max_body;
    if (rt->body != SS_HOST_BODY_NONE) {
        const char *ct = header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
        const char *want =
            rt->body == SS_HOST_BODY_JSON ? "application/json" : "application/octet-stream";
        if (ct && *ct) {
            size_t n = strlen(want);
            if (strncasecmp(ct, want, n) != 0 || (ct[n] && ct[n] != ';' && ct[n] != ' ')) {
                fail(r, 415, "unsupported_media_type", "%s %s takes Content-Type %s, not %s",
                     r->method, r->path, want, ct);
                return 0;
            }
        }
    }
    const char *cl = header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        errno = 0;
        char *end;
        unsigned long long n = strtoull(cl, &end, 10);
        if (!errno && end != cl && n > r->body_max && !header(r, "Expect") &&
            n - r->body_max <= HTTP_LINGER_MAX) {
            /* A client that sends its body without waiting for 100-continue (Python's
             * http.client, many SDKs) would get a reset, not the answer, if we answered now
             * and closed with its body unread: read and discard it, answer 413 at the end. */
            r->too_large = 1;
            return 1;
        }
        if (errno || end == cl || n > r->body_max) {
            fail(r, 413, "too_large",
                 "the request body (%s bytes) is larger than the limit of %zu "
                 "bytes",
                 cl, r->body_max);
            return 0;
        }
        if (n && rt->body != SS_HOST_BODY_NONE) {
            r->body = malloc((size_t)n + 1);
            if (!r->body) {
                fail(r, 503, "out_of_memory", "cannot buffer the request body");
                return 0;
            }
            r->body_cap = (size_t)n + 1;
        }
    }
    return 1;
}

static void append_body(ss_host_req *r, const char *data, size_t n)
{
    if (r->too_large || r->route->body == SS_HOST_BODY_NONE) return;
    if (r->body_len + n > r->body_max) {
        r->too_large = 1;
        free(r->body);
        r->body = NULL;
        r->body_len = r->body_cap = 0;
        return;
    }
    if (r->body_len + n + 1 > r->body_cap) {
        size_t nc = r->body_cap ? r->body_cap : 4096;
        while (nc < r->body_len + n + 1) nc *= 2;
        char *p = realloc(r->body, nc);
        if (!p) {
            r->too_large = 1; /* answered as 413: we could not hold it */
            free(r->body);
            r->body = NULL;
            r->body_len = r->body_cap = 0;
            return;
        }
        r->body = p;
        r->body_cap = nc;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
}

static void set_request_id(ss_host_req *r)
{
    const char *rid = header(r, "X-Request-Id");
    if (rid) {
        size_t n = strlen(rid);
        int ok = n >= 1 && n <= 64;
        for (size_t i = 0; ok && i < n; i++)
            ok = isalnum((unsigned char)rid[i]) || strchr("-_.:", rid[i]);
        if (ok) {
            memcpy(r->rid, rid, n + 1);
            return;
        }
    }
    unsigned char b[8];
    if (ss_random_bytes(b, sizeof b) != SS_OK) memset(b, 0, sizeof b);
    ss_hex(b, sizeof b, r->rid);
}

static ss_host_req *req_new(ss_http *h, struct MHD_Connection *conn, const char *url,
                            const char *method)
{
    ss_host_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->path = strdup(url);
    if (!r->path) {
        free(r);
        return NULL;
    }
    r->h = h;
    r->conn = conn;
    r->refs = 1; /* MHD's, dropped in on_completed */
    r->t0 = ss_mono_ns();
    snprintf(r->method, sizeof r->method, "%s", method);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->addr, sizeof r->addr);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->addr,
                  sizeof r->addr);
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_lock(&h->mu);
    r->next = h->live;
    if (h->live) h->live->prev = r;
    h->live = r;
    pthread_mutex_unlock(&h->mu);
    return r;
}

/* After a handler or continuation returned: run a pending continuation, or park, or complain. */
static void after_dispatch(ss_host_req *r)
{
    for (;;) {
        if (r->responded) return;
        pthread_mutex_lock(&r->mu);
        if (!r->cont) {
            pthread_mutex_unlock(&r->mu);
            fail(r, 500, "internal_error", "the handler gave no answer");
            return;
        }
        if (r->woken) {
            http_run_cont_unlock(r);
            continue;
        }
        if (atomic_load(&r->h->stopping)) {
            pthread_mutex_unlock(&r->mu);
            fail(r, 503, "shutting_down", "the server is shutting down");
            return;
        }
        r->suspended = 1;
        MHD_suspend_connection(r->conn);
        pthread_mutex_unlock(&r->mu);
        return;
    }
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_size, void **con_cls)
{
    (void)version;
    ss_http *h = cls;
    ss_host_req *r = *con_cls;
    if (!r) {
        r = req_new(h, conn, url, method);
        if (!r) return MHD_NO;
        *con_cls = r;
        set_request_id(r);
        if (atomic_load(&h->draining)) { /* a new request on a kept-alive connection */
            ss_host_add_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
            fail(r, 503, "shutting_down", "the server is shutting down; retry on another replica");
            return MHD_YES;
        }
        if (!(r->route = route(r)) || !authorize(r) || !check_body(r))
            return r->broken ? MHD_NO : MHD_YES;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!r->responded) append_body(r, upload_data, *upload_size);
        if (r->too_large || r->responded) {
            r->discarded += *upload_size;
            if (r->discarded > HTTP_LINGER_MAX) { /* endless: no answer is worth reading it */
                *upload_size = 0;
                return MHD_NO;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->responded) return r->broken ? MHD_NO : MHD_YES;
    if (r->too_large) {
        fail(r, 413, "too_large", "the request body is larger than the limit of %zu bytes",
             r->body_max);
        return MHD_YES;
    }
    if (!r->started) {
        r->started = 1;
        r->route->handler(h->p.app, r);
    }
    after_dispatch(r);
    return r->broken ? MHD_NO : MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    ss_http *h = cls;
    ss_host_req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    pthread_mutex_lock(&r->mu);
    r->over = 1;
    r->suspended = 0;
    r->conn = NULL;
    pthread_mutex_unlock(&r->mu);
    int aborted = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK;
    int status = r->status ? r->status : 499; /* nginx's "client closed request" */
    double secs = (double)(ss_mono_ns() - r->t0) / 1e9;
    const char *endpoint = r->route ? r->route->name : "unknown";
    if (h->p.metrics) ss_metrics_request(h->p.metrics, endpoint, status, secs);
    if (h->p.metrics && r->started) ss_metrics_tenant_request(h->p.metrics, r->tenant);
    if (h->p.log_requests) log_request(h, r, status, secs, aborted);
    if (r->over_fn) r->over_fn(r->user, aborted);
    pthread_mutex_lock(&h->mu);
    if (r->prev)
        r->prev->next = r->next;
    else
        h->live = r->next;
    if (r->next) r->next->prev = r->prev;
    pthread_cond_broadcast(&h->idle);
    pthread_mutex_unlock(&h->mu);
    ss_host_req_unref(r);
}

/* ---- log lines ------------------------------------------------------------------------------ */

/* Request and transport lines: ss_log_stamped, text or JSON (--log-format; ss_log.h). */

static void log_request(ss_http *h, ss_host_req *r, int status, double secs, int aborted)
{
    char text[1400], key[24] = "";
    if (r->key_no) snprintf(key, sizeof key, " key=#%d", r->key_no);
    snprintf(text, sizeof text, "%s %s %.1024s %d %" PRIu64 "B %.1fms rid=%s%s%s",
             r->addr[0] ? r->addr : "-", r->method, r->path, status, r->bytes_out, secs * 1e3,
             r->rid, key, aborted ? " (aborted)" : "");
    json_t *kv = json_pack("{s:s,s:s,s:s,s:s,s:i,s:I,s:f,s:s,s:b}", "event", "request", "addr",
                           r->addr, "method", r->method, "path", r->path, "status", status,
                           "bytes", (json_int_t)r->bytes_out, "ms", secs * 1e3, "rid", r->rid,
                           "aborted", aborted);
    if (kv && r->key_no) json_object_set_new(kv, "key", json_integer(r->key_no));
    ss_log_stamped(kv, text);
}

#define LOG_WINDOW_S 60 /* repeated transport events are summed up once per this many seconds */

/* Print the counts of the window that ends now. Caller holds h->log_mu. */
static void log_flush_locked(ss_http *h)
{
    for (int k = 0; k < HTTP_N_EVENTS; k++) {
        if (h->ev_count[k] <= 1) {
            h->ev_count[k] = 0;
            continue;
        }
        char text[400];
        snprintf(text, sizeof text, "statesoupd: %s: %" PRIu64 " in the last %d s (e.g. %s)",
                 http_event_name[k], h->ev_count[k] - 1, LOG_WINDOW_S, h->ev_example[k]);
        ss_log_stamped(json_pack("{s:s,s:s,s:I,s:i,s:s}", "event", "summary", "kind",
                                 http_event_name[k], "count", (json_int_t)(h->ev_count[k] - 1),
                                 "seconds", LOG_WINDOW_S, "example", h->ev_example[k]),
                       text);
        h->ev_count[k] = 0;
    }
}

/* A transport event: the first of its kind in a window is logged, the rest are counted and
 * summed up in one line when the window is over (879 disconnects a minute are one line). */
void http_log_event(ss_http *h, const char *kind, const char *fmt, ...)
{
    int k = 0;
    while (k < HTTP_N_EVENTS - 1 && strcmp(http_event_name[k], kind)) k++;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int64_t now = ss_mono_ns();
    pthread_mutex_lock(&h->log_mu);
    if (now - h->window_start > (int64_t)LOG_WINDOW_S * 1000000000) {
        log_flush_locked(h);
        h->window_start = now;
    }
    if (h->ev_count[k]++ == 0) {
        snprintf(h->ev_example[k], sizeof h->ev_example[k], "%.199s", msg);
        char text[480];
        snprintf(text, sizeof text, "statesoupd: %s: %s%s", kind, msg,
                 k == HTTP_EV_MHD ? "" : " (more of these are summed up each minute)");
        ss_log_stamped(
            json_pack("{s:s,s:s,s:s}", "event", kind, "level", "warning", "message", msg), text);
    }
    pthread_mutex_unlock(&h->log_mu);
}

/* ---- connections and MHD's own messages ------------------------------------------------------ */

/* Admit a new connection unless --max-connections are open: beyond it the connection is closed
 * at once (the client sees a close, never a hang in the listen backlog). */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t len)
{
    (void)addr;
    (void)len;
    ss_http *h = cls;
    if (atomic_load(&h->open_conns) < h->p.max_connections) return MHD_YES;
    atomic_fetch_add(&h->refused, 1);
    if (h->p.metrics) ss_metrics_connection_refused(h->p.metrics);
    http_log_event(h, "refused", "connection limit (--max-connections %d) reached",
                   h->p.max_connections);
    return MHD_NO;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    (void)conn;
    (void)socket_context;
    ss_http *h = cls;
    int delta = toe == MHD_CONNECTION_NOTIFY_STARTED ? 1 : -1;
    atomic_fetch_add(&h->open_conns, delta);
    if (h->p.metrics) ss_metrics_connections(h->p.metrics, delta);
}

/* MHD's messages. Those about clients that went away mid-answer ("Failed to send ...") come one
 * per connection and say nothing an operator acts on: they are counted and summed up in one line
 * a minute (http_log_event); others are logged as they come. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    ss_http *h = cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '.')) msg[--n] = '\0';
    if (!strncmp(msg, "Failed to send", 14) || !strncmp(msg, "Failed to receive", 17) ||
        strstr(msg, "connection reset") || strstr(msg, "Connection reset"))
        http_log_event(h, "client_gone", "%s", msg);
    else
        http_log_event(h, "mhd", "%s", msg);
}

/* ---- daemon -------------------------------------------------------------------------------- */

static void free_keys(api_key *k, int n)
{
    for (int i = 0; i < n; i++)
        if (k[i].rate_mu_ready) pthread_mutex_destroy(&k[i].rate_mu);
    for (int i = 0; i < n; i++) {
        free(k[i].key);
        free(k[i].tenant);
    }
    free(k);
}

/*
 * "N/s", "N/m", "N/h" as requests a second; 0 when malformed or not over 0. *burst: the bucket's
 * size, N (a whole period's requests may come at once), at least one request (rate=0.5/s: one,
 * then one every 2 s).
 */
static double parse_rate(const char *s, double *burst)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0) || v > 1e9 || end[0] != '/' || !end[1] || end[2]) return 0;
    *burst = v < 1 ? 1 : v;
    switch (end[1]) {
    case 's': return v;
    case 'm': return v / 60;
    case 'h': return v / 3600;
    default: return 0;
    }
}

static ss_err load_keys(const char *path, api_key **out, int *n_out)
{
    char *text = NULL;
    size_t len;
    api_key *keys = NULL;
    int n = 0, cap = 0, lineno = 0;
    ss_err err = ss_read_file(path, 1 << 20, &text, &len);
    if (err) return err;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char *k = line;
        while (*k == ' ' || *k == '\t' || *k == '\r') k++;
        if (!*k || *k == '#') continue;
        char key[512], scope[32], opt[2][128], extra[2];
        int got = sscanf(k, "%511s %31s %127s %127s %1s", key, scope, opt[0], opt[1], extra);
        const char *tenant = NULL;
        double rate = 0, burst = 0;
        int bad = got < 2 || got > 4 ||
                  (strcmp(scope, "read") && strcmp(scope, "write") && strcmp(scope, "admin"));
        for (int o = 0; !bad && o < got - 2; o++) {
            if (!strncmp(opt[o], "tenant=", 7) && !tenant && !ss_store_check_tenant(opt[o] + 7))
                tenant = opt[o] + 7;
            else if (!strncmp(opt[o], "rate=", 5) && rate == 0)
                bad = (rate = parse_rate(opt[o] + 5, &burst)) <= 0;
            else
                bad = 1;
        }
        if (bad) {
            err = ss_fail(SS_ERR_FORMAT,
                          "%s line %d: expected \"KEY read|write|admin [tenant=NAME] "
                          "[rate=N/s|N/m|N/h]\" (NAME: 1..64 of letters, digits, . _ : / -; N: "
                          "requests a second, minute or hour, over 0)",
                          path, lineno);
            goto out;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            api_key *p = realloc(keys, (size_t)cap * sizeof *keys);
            if (!p) {
                err = ss_fail(SS_ERR_NOMEM, "out of memory reading %s", path);
                goto out;
            }
            keys = p;
        }
        keys[n].key = strdup(key);
        keys[n].scope = !strcmp(scope, "admin")   ? SS_HOST_SCOPE_ADMIN
                        : !strcmp(scope, "write") ? SS_HOST_SCOPE_WRITE
                                                  : SS_HOST_SCOPE_READ;
        keys[n].tenant = tenant ? strdup(tenant) : NULL;
        keys[n].rate_per_s = rate;
        keys[n].burst = keys[n].tokens = burst;
        keys[n].last_ns = ss_mono_ns();
        keys[n].rate_mu_ready = 0; /* after the last realloc: a mutex must not move */
        if (!keys[n++].key || (tenant && !keys[n - 1].tenant)) {
            err = ss_fail(SS_ERR_NOMEM, "out of memory reading %s", path);
            goto out;
        }
    }
    if (n == 0) {
        err = ss_fail(SS_ERR_FORMAT, "%s: no keys (lines \"KEY read|write|admin [tenant=NAME]\")",
                      path);
        goto out;
    }
    for (int i = 0; i < n; i++)
        if (keys[i].rate_per_s > 0)
            keys[i].rate_mu_ready = !pthread_mutex_init(&keys[i].rate_mu, NULL);
    *out = keys;
    *n_out = n;
    keys = NULL;
    n = 0;
out:
    free_keys(keys, n);
    free(text);
    return err;
}

ss_err ss_http_start(ss_http **out, const ss_http_params *p)
{
    ss_err err = SS_OK;
    struct addrinfo *ai = NULL;
    ss_http *h = calloc(1, sizeof *h);
    if (!h) return ss_fail(SS_ERR_NOMEM, "out of memory");
    h->p = *p;
    pthread_mutex_init(&h->mu, NULL);
    pthread_mutex_init(&h->log_mu, NULL);
    h->window_start = ss_mono_ns();
    pthread_cond_init(&h->idle, NULL);
    atomic_init(&h->stopping, 0);
    atomic_init(&h->draining, 0);
    pthread_rwlock_init(&h->keys_lock, NULL);
    if (p->api_keys && (err = load_keys(p->api_keys, &h->keys, &h->n_keys))) goto fail;

    char port[16];
    snprintf(port, sizeof port, "%d", p->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    int rc = getaddrinfo(p->host, port, &hints, &ai);
    if (rc != 0) {
        err = ss_fail(SS_ERR_INVALID, "cannot resolve listen address %s: %s", p->host,
                      gai_strerror(rc));
        goto fail;
    }
    /*
     * poll() (no select() limit on descriptors) wherever libmicrohttpd has it. Not epoll: with a
     * pool of epoll threads, MHD_quiesce_daemon (SIGTERM, ss_http_quiesce) removes the listening
     * socket from each thread's epoll set while that thread may be removing it itself, and
     * libmicrohttpd 0.9.75-0.9.77 aborts the process when the second removal finds it gone
     * ("Failed to remove listen FD from epoll set", seen in CI). With poll the threads are told
     * through their inter-thread channel and drop the socket from their own poll sets.
     */
    unsigned flags = MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                     (MHD_is_feature_supported(MHD_FEATURE_POLL) == MHD_YES
                          ? MHD_USE_POLL_INTERNAL_THREAD
                          : MHD_USE_AUTO_INTERNAL_THREAD);
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    if (h->p.max_connections < 1) h->p.max_connections = HTTP_DEFAULT_MAX_CONNECTIONS;
    if (h->p.idle_timeout < 1) h->p.idle_timeout = HTTP_DEFAULT_IDLE_TIMEOUT;
    /* MHD's own limit sits above ours so that on_accept, not MHD, meets the clients beyond it
     * (MHD at its limit stops accepting: clients would wait in the backlog) */
    h->d = MHD_start_daemon(
        flags, (uint16_t)p->port, on_accept, h, on_access, h, MHD_OPTION_EXTERNAL_LOGGER,
        on_mhd_log, h, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(p->threads > 0 ? p->threads : 1),
        MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_UNESCAPE_CALLBACK,
        unescape_none, NULL, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)h->p.idle_timeout,
        MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(h->p.max_connections + HTTP_LIMIT_HEADROOM * (p->threads > 0 ? p->threads : 1)),
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)(p->max_per_ip > 0 ? p->max_per_ip : 0),
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)HTTP_LISTEN_BACKLOG, MHD_OPTION_END);
    if (!h->d) {
        err = ss_fail(SS_ERR_IO, "cannot listen on %s:%d (address in use, or not ours?)", p->host,
                      p->port);
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : p->port;
    freeaddrinfo(ai);
    *out = h;
    return SS_OK;
fail:
    if (ai) freeaddrinfo(ai);
    free_keys(h->keys, h->n_keys);
    pthread_rwlock_destroy(&h->keys_lock);
    pthread_mutex_destroy(&h->mu);
    pthread_mutex_destroy(&h->log_mu);
    pthread_cond_destroy(&h->idle);
    free(h);
    return err;
}

int ss_http_port(const ss_http *h)
{
    return h->port;
}

void ss_http_quiesce(ss_http *h)
{
    if (!h || h->quiesced) return;
    h->quiesced = 1;
    atomic_store(&h->draining, 1);
    h->listen_fd = MHD_quiesce_daemon(h->d);
    /* Stop listening at once: on Linux a shut-down listening socket refuses new connections
     * (and resets those waiting in its backlog) instead of leaving them hanging until the drain
     * ends. The descriptor itself is closed only after MHD_stop_daemon, as MHD asks. */
    if (h->listen_fd != MHD_INVALID_SOCKET) shutdown(h->listen_fd, SHUT_RDWR);
}

int ss_http_drain(ss_http *h, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&h->mu);
    while (h->live)
        if (pthread_cond_timedwait(&h->idle, &h->mu, &until) != 0) break;
    int empty = h->live == NULL;
    pthread_mutex_unlock(&h->mu);
    return empty;
}

void ss_http_stop(ss_http *h)
{
    if (!h) return;
    atomic_store(&h->stopping, 1);
    /* MHD_stop_daemon must not see suspended connections: wake every parked one. The list lock
     * is not held while resuming (MHD takes its own locks), the references keep them alive. */
    for (;;) {
        ss_host_req *batch[64];
        int n = 0;
        pthread_mutex_lock(&h->mu);
        for (ss_host_req *r = h->live; r && n < 64; r = r->next) {
            pthread_mutex_lock(&r->mu);
            if (r->suspended && !r->over) {
                r->refs++;
                batch[n++] = r;
            }
            pthread_mutex_unlock(&r->mu);
        }
        pthread_mutex_unlock(&h->mu);
        if (n == 0) break;
        for (int i = 0; i < n; i++) {
            pthread_mutex_lock(&batch[i]->mu);
            http_resume_locked(batch[i]);
            pthread_mutex_unlock(&batch[i]->mu);
            ss_host_req_unref(batch[i]);
        }
    }
    MHD_stop_daemon(h->d);
    if (h->quiesced && h->listen_fd != MHD_INVALID_SOCKET) close(h->listen_fd);
    pthread_mutex_lock(&h->log_mu);
    log_flush_locked(h);
    pthread_mutex_unlock(&h->log_mu);
    free_keys(h->keys, h->n_keys);
    for (int i = 0; i < h->n_retired; i++) free_keys(h->retired[i].keys, h->retired[i].n);
    free(h->retired);
    pthread_rwlock_destroy(&h->keys_lock);
    pthread_mutex_destroy(&h->mu);
    pthread_mutex_destroy(&h->log_mu);
    pthread_cond_destroy(&h->idle);
    free(h);
}

ss_err ss_http_reload_keys(ss_http *h, int *n_keys)
{
    if (!h->p.api_keys)
        return ss_fail(SS_ERR_UNSUPPORTED, "no --api-keys file to reload (started without keys)");
    api_key *keys = NULL;
    int n = 0;
    ss_err err = load_keys(h->p.api_keys, &keys, &n);
    if (err) return err; /* the keys in use stay */
    struct retired_keys *r = realloc(h->retired, (size_t)(h->n_retired + 1) * sizeof *r);
    if (!r) {
        free_keys(keys, n);
        return ss_fail(SS_ERR_NOMEM, "out of memory");
    }
    h->retired = r;
    pthread_rwlock_wrlock(&h->keys_lock);
    h->retired[h->n_retired++] = (struct retired_keys){h->keys, h->n_keys};
    h->keys = keys;
    h->n_keys = n;
    pthread_rwlock_unlock(&h->keys_lock);
    if (n_keys) *n_keys = n;
    return SS_OK;
}
