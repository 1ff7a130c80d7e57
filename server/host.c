/*
 * host.c - the request side of the HTTP host: the ss_host_* functions api/ calls (api/ss_host.h),
 * over libmicrohttpd's connections.
 *
 * A request is reference counted: an inference job may still hold it when MHD is done with it
 * (client gone), and it must be freed exactly once, after both let go.
 *
 * Parking a request is MHD_suspend_connection(); waking it is MHD_resume_connection() from any
 * thread. Both happen under the request's mutex with a `suspended` flag, so a wake that arrives
 * before the park (the job finished while the handler was still returning) is remembered in
 * `woken` instead of resuming a connection that is not suspended. The same holds for streams: the
 * reader callback suspends when it has nothing to send (returning 0 without suspending would spin)
 * and writers resume it.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "request.h"

/* ---- request lifetime ---------------------------------------------------------------------- */

static void req_free(ss_host_req *r)
{
    if (r->user_free) r->user_free(r->user);
    free(r->path);
    for (int i = 0; i < r->n_params; i++) free(r->param_value[i]);
    for (int i = 0; i < r->n_query; i++) {
        free(r->query_name[i]);
        free(r->query_value[i]);
    }
    for (int i = 0; i < r->n_headers; i++) {
        free(r->hdr_name[i]);
        free(r->hdr_value[i]);
    }
    free(r->body);
    free(r->sbuf);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void ss_host_req_ref(ss_host_req *r)
{
    pthread_mutex_lock(&r->mu);
    r->refs++;
    pthread_mutex_unlock(&r->mu);
}

void ss_host_req_unref(ss_host_req *r)
{
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    int left = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (left == 0) req_free(r);
}

/* ---- answers ------------------------------------------------------------------------------- */

static void queue(ss_host_req *r, int status, struct MHD_Response *resp, const char *ctype)
{
    if (!resp) {
        /* Out of memory: nothing sensible left to say; on_access closes the connection. */
        r->status = 500;
        r->responded = 1;
        r->broken = 1;
        return;
    }
    if (ctype) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "X-Request-Id", r->rid);
    for (int i = 0; i < r->n_headers; i++)
        MHD_add_response_header(resp, r->hdr_name[i], r->hdr_value[i]);
    MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->status = status;
    r->responded = 1;
}

/* Answer with a copy of `len` bytes of a constant body. */
static void respond_copy(ss_host_req *r, int status, const char *content_type, const void *body,
                         size_t len)
{
    if (r->responded) return;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    r->bytes_out = len;
    queue(r, status, resp, content_type);
}

void ss_host_respond(ss_host_req *r, int status, const char *content_type, void *body, size_t len)
{
    if (!body) {
        respond_copy(r, status, content_type, "", 0);
        return;
    }
    if (r->responded) {
        free(body);
        return;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    r->bytes_out = len;
    if (!resp) free(body);
    queue(r, status, resp, content_type);
}

void ss_host_add_header(ss_host_req *r, const char *name, const char *value)
{
    if (r->n_headers >= MAX_HEADERS) return;
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return;
    }
    r->hdr_name[r->n_headers] = n;
    r->hdr_value[r->n_headers++] = v;
}

void ss_host_respond_error(ss_host_req *r, int status, const char *code, const char *message)
{
    json_t *j = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (status == 401) ss_host_add_header(r, "WWW-Authenticate", "Bearer");
    int has_retry = 0; /* a rate limit says how long itself */
    for (int i = 0; i < r->n_headers; i++) has_retry |= !strcasecmp(r->hdr_name[i], "Retry-After");
    if ((status == 503 || status == 429) && !has_retry) ss_host_add_header(r, "Retry-After", "1");
    if (!text) {
        static const char fallback[] =
            "{\"error\":{\"code\":\"internal_error\",\"message\":\"out of memory\"}}";
        respond_copy(r, status, "application/json", fallback, sizeof fallback - 1);
        return;
    }
    ss_host_respond(r, status, "application/json", text, strlen(text));
}

/* ---- the request ---------------------------------------------------------------------------- */

const char *ss_host_param(ss_host_req *r, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < r->n_params; i++)
        if (r->param_name_len[i] == n && !memcmp(r->param_name[i], name, n))
            return r->param_value[i];
    return NULL;
}

const char *ss_host_query(ss_host_req *r, const char *name)
{
    for (int i = 0; i < r->n_query; i++)
        if (!strcmp(r->query_name[i], name)) return r->query_value[i];
    if (!r->conn || r->n_query >= MAX_QUERY) return NULL;
    const char *raw = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
    if (!raw) return NULL;
    char *v = http_pct_decode(raw, strlen(raw), 1);
    char *n = strdup(name);
    if (!v || !n) {
        free(v);
        free(n);
        return NULL;
    }
    r->query_name[r->n_query] = n;
    r->query_value[r->n_query++] = v;
    return v;
}

const char *ss_host_body_data(ss_host_req *r, size_t *len)
{
    if (len) *len = r->body_len;
    return r->body ? r->body : "";
}

ss_host_scope ss_host_scope_of(ss_host_req *r)
{
    return r->scope;
}

const char *ss_host_tenant(ss_host_req *r)
{
    return r->tenant;
}

int ss_host_stopping(ss_host_req *r)
{
    return atomic_load(&r->h->stopping);
}

void ss_host_set_user(ss_host_req *r, void *user, void (*free_fn)(void *), ss_host_over_fn over_fn)
{
    r->user = user;
    r->user_free = free_fn;
    r->over_fn = over_fn;
}

/* ---- parking and streaming ----------------------------------------------------------------- */

void ss_host_wait(ss_host_req *r, ss_host_cont cont, void *user)
{
    pthread_mutex_lock(&r->mu);
    r->cont = cont;
    r->cont_user = user;
    pthread_mutex_unlock(&r->mu);
}

void http_resume_locked(ss_host_req *r)
{
    if (r->suspended && !r->over) {
        r->suspended = 0;
        MHD_resume_connection(r->conn);
    }
}

void ss_host_wake(ss_host_req *r)
{
    pthread_mutex_lock(&r->mu);
    r->woken = 1;
    http_resume_locked(r);
    pthread_mutex_unlock(&r->mu);
}

int ss_host_client_gone(ss_host_req *r)
{
    int gone = 0;
    pthread_mutex_lock(&r->mu);
    if (r->over) {
        gone = 1;
    } else if (r->suspended) {
        /* a suspended connection is not polled by MHD, so look at the socket ourselves: an
         * orderly shutdown by the peer reads as 0 bytes, a reset as ECONNRESET (pipelined
         * data would read as > 0) */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        char c;
        ssize_t n = ci ? recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) : 1;
        if (n == 0 || (n < 0 && (errno == ECONNRESET || errno == ENOTCONN || errno == EPIPE)))
            gone = 1;
    }
    pthread_mutex_unlock(&r->mu);
    return gone;
}

int ss_host_stream_write(ss_host_req *r, const void *data, size_t len)
{
    int rc = 0;
    pthread_mutex_lock(&r->mu);
    if (r->over || r->send) {
        rc = -1;
        goto out;
    }
    if (r->slen + len > r->scap) {
        size_t nc = r->scap ? r->scap : 4096;
        while (nc < r->slen + len) nc *= 2;
        char *p = realloc(r->sbuf, nc);
        if (!p) {
            rc = -1;
            goto out;
        }
        r->sbuf = p;
        r->scap = nc;
    }
    memcpy(r->sbuf + r->slen, data, len);
    r->slen += len;
    http_resume_locked(r);
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void ss_host_stream_end(ss_host_req *r)
{
    pthread_mutex_lock(&r->mu);
    r->send = 1;
    http_resume_locked(r);
    pthread_mutex_unlock(&r->mu);
}

void http_run_cont_unlock(ss_host_req *r)
{
    ss_host_cont cont = r->cont;
    void *user = r->cont_user;
    r->woken = 0;
    r->cont = NULL;
    pthread_mutex_unlock(&r->mu);
    cont(r->h->p.app, r, user);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    ss_host_req *r = cls;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        if (r->soff < r->slen) {
            size_t n = r->slen - r->soff;
            if (n > max) n = max;
            memcpy(buf, r->sbuf + r->soff, n);
            r->soff += n;
            r->bytes_out += n;
            if (r->soff == r->slen) r->soff = r->slen = 0;
            pthread_mutex_unlock(&r->mu);
            return (ssize_t)n;
        }
        if (r->send) {
            pthread_mutex_unlock(&r->mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (r->woken && r->cont) {
            http_run_cont_unlock(r);
            continue;
        }
        if (atomic_load(&r->h->stopping)) {
            pthread_mutex_unlock(&r->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        r->suspended = 1;
        MHD_suspend_connection(r->conn);
        pthread_mutex_unlock(&r->mu);
        return 0;
    }
}

void ss_host_stream_start(ss_host_req *r, const char *content_type)
{
    if (r->responded) return;
    pthread_mutex_lock(&r->mu);
    r->streaming = 1;
    pthread_mutex_unlock(&r->mu);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader, r, NULL);
    if (resp) {
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    }
    queue(r, 200, resp, content_type);
}
