/*
 * daemon.h - what the integration tests share to drive the real statesoupd: start it on a free
 * port (its stderr drained by a thread; we wait on its log lines, never on a clock), stop it
 * (exit status checked), talk to it over HTTP with libcurl, and compare exported states with
 * golden tensors. Header-only, like test_util.h.
 */
#ifndef SS_TEST_DAEMON_H
#define SS_TEST_DAEMON_H

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dproc.h"
#include "golden.h"
#include "safetensors.h"
#include "test_util.h"

/* ---- the daemon --------------------------------------------------------------------------- */

/* The fields tests read: pid, port, base, log and len (under mu; cv wakes on each new chunk). */
typedef ss_dproc srv;

/* Start statesoupd with the given model and data dir plus extra args (NULL-terminated). */
static inline int daemon_start(srv *d, const char *model, const char *data, ...)
{
    char exe[1024];
    const char *br = getenv("SS_BUILD_ROOT");
    snprintf(exe, sizeof exe, "%s/statesoupd", br ? br : "build");
    const char *argv[64];
    int n = 0;
    argv[n++] = exe;
    argv[n++] = "--model";
    argv[n++] = model;
    argv[n++] = "--data";
    argv[n++] = data;
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--compute-threads";
    argv[n++] = "2";
    va_list ap;
    va_start(ap, data);
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < 62) argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    ss_dproc_init(d, 0);
    ss_dproc_opts o = {.timeout_s = 120, .quiet_stdout = 1};
    if (ss_dproc_start(d, argv, &o)) {
        fprintf(stderr, "statesoupd did not start:\n%s\n", d->log ? d->log : "");
        return -1;
    }
    return 0;
}

static inline void daemon_reap(srv *d, int *status)
{
    *status = ss_dproc_reap(d, 0);
}

/* Wait (bounded: 60 s, or the daemon's exit) until its log holds `what`. */
static inline int daemon_log_has(srv *d, const char *what)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 60;
    pthread_mutex_lock(&d->mu);
    while (!(d->log && strstr(d->log, what)) && !d->eof)
        if (pthread_cond_timedwait(&d->cv, &d->mu, &until) == ETIMEDOUT) break;
    int ok = d->log && strstr(d->log, what);
    pthread_mutex_unlock(&d->mu);
    return ok != 0;
}

/* SIGTERM and wait; the daemon must exit 0 (under ASan that also means: no leak, no error). */
static inline void daemon_stop(srv *d)
{
    int status = 0;
    kill(d->pid, SIGTERM);
    daemon_reap(d, &status);
    int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    CHECKF(clean, "statesoupd did not exit cleanly (status 0x%x); its log:\n%s", status,
           d->log ? d->log : "");
    ss_dproc_free(d);
}

/* ---- HTTP client (libcurl) --------------------------------------------------------------- */

typedef struct resp {
    long status;
    char *body;
    size_t len;
    char ctype[128];
    char rid[80];
    long retry_after; /* the Retry-After header's seconds, -1 when absent */
} resp;

static inline size_t on_body(char *p, size_t sz, size_t n, void *user)
{
    resp *r = user;
    r->body = realloc(r->body, r->len + sz * n + 1);
    memcpy(r->body + r->len, p, sz * n);
    r->len += sz * n;
    r->body[r->len] = '\0';
    return sz * n;
}

static inline size_t on_header(char *p, size_t sz, size_t n, void *user)
{
    resp *r = user;
    size_t len = sz * n;
    if (len > 14 && !strncasecmp(p, "Content-Type: ", 14))
        snprintf(r->ctype, sizeof r->ctype, "%.*s", (int)(len - 16), p + 14);
    if (len > 14 && !strncasecmp(p, "X-Request-Id: ", 14))
        snprintf(r->rid, sizeof r->rid, "%.*s", (int)(len - 16), p + 14);
    if (len > 13 && !strncasecmp(p, "Retry-After: ", 13)) r->retry_after = atol(p + 13);
    return len;
}

typedef struct req_opts {
    const char *ctype; /* NULL: application/json when a body is given */
    const char *key;   /* Bearer key */
    int chunked;       /* send the body without Content-Length */
    const char *rid;   /* X-Request-Id to send */
    long timeout_ms;   /* give up after this long (0: 300 s) */
} req_opts;

static inline resp request(srv *d, const char *method, const char *path, const void *body, long len,
                           const req_opts *o)
{
    resp r = {.retry_after = -1};
    req_opts none = {0};
    if (!o) o = &none;
    CURL *c = curl_easy_init();
    char url[2048], hdr[600], ct[200], rid[128];
    struct curl_slist *h = NULL;
    snprintf(url, sizeof url, "%s%s", d->base, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, o->timeout_ms ? o->timeout_ms : 300000L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        if (!o->chunked)
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, len);
        else
            h = curl_slist_append(h, "Transfer-Encoding: chunked");
        snprintf(ct, sizeof ct, "Content-Type: %s", o->ctype ? o->ctype : "application/json");
        h = curl_slist_append(h, ct);
    }
    h = curl_slist_append(h, "Expect:");
    if (o->key) {
        snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", o->key);
        h = curl_slist_append(h, hdr);
    }
    if (o->rid) {
        snprintf(rid, sizeof rid, "X-Request-Id: %s", o->rid);
        h = curl_slist_append(h, rid);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    else
        r.status = -1;
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (!r.body) r.body = calloc(1, 1);
    return r;
}

/* JSON in, JSON out. body is stolen (may be NULL). Returns the parsed answer (NULL if none). */
static inline json_t *call(srv *d, const char *method, const char *path, json_t *body, long *status)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    resp r = request(d, method, path, text, text ? (long)strlen(text) : 0, NULL);
    free(text);
    if (status) *status = r.status;
    json_t *j = r.len ? json_loads(r.body, 0, NULL) : NULL;
    free(r.body);
    return j;
}

/* The error shape {"error": {"code", "message"}} with the wanted status and code. */
static inline void check_error_(json_t *j, long status, long want, const char *code,
                                const char *what, int line)
{
    json_t *e = json_object_get(j, "error");
    const char *c = json_string_value(json_object_get(e, "code"));
    const char *m = json_string_value(json_object_get(e, "message"));
    if (status != want || !c || !m || !*m || (code && strcmp(c, code))) {
        char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
        fprintf(stderr, "%s:%d: %s: got %ld %s, want %ld %s\n", __FILE__, line, what, status,
                t ? t : "(no JSON)", want, code ? code : "");
        free(t);
        test_failures++;
    }
    json_decref(j);
}
/* evaluates j first: it is usually the call() that sets st */
#define check_error(j, st, want, code, what)                                                       \
    do {                                                                                           \
        json_t *j_ = (j);                                                                          \
        check_error_(j_, st, want, code, what, __LINE__);                                          \
    } while (0)

static inline json_t *ids_json(const int32_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer(ids[i]));
    return a;
}

/* The sources of golden merge case mc as POST /v1/states/merge takes them: [{"state":
 * "seq_<source>", "weight": w}, ...] (the fixture's seq_* states must be stored). */
static inline json_t *merge_sources(const json_t *mc)
{
    json_t *srcs = json_object_get(mc, "sources"), *ws = json_object_get(mc, "weights");
    json_t *sources = json_array();
    for (size_t i = 0; i < json_array_size(srcs); i++) {
        char sn[32];
        snprintf(sn, sizeof sn, "seq_%s", json_string_value(json_array_get(srcs, i)));
        json_array_append_new(
            sources, json_pack("{s:s,s:O}", "state", sn, "weight", json_array_get(ws, i)));
    }
    return sources;
}

static inline int tokens_equal(json_t *arr, const int32_t *want, size_t n)
{
    if (!json_is_array(arr) || json_array_size(arr) < n) return 0;
    for (size_t i = 0; i < n; i++)
        if (json_integer_value(json_array_get(arr, i)) != want[i]) return 0;
    return 1;
}

/* GET /v1/states/{ref}/data: the whole file (malloc'd, *len). NULL unless 200. */
static inline uint8_t *get_data(srv *d, const char *ref, const char *query, size_t *len,
                                long *status)
{
    char path[512];
    snprintf(path, sizeof path, "/v1/states/%s/data%s", ref, query ? query : "");
    resp r = request(d, "GET", path, NULL, 0, NULL);
    if (status) *status = r.status;
    if (r.status != 200) {
        free(r.body);
        return NULL;
    }
    *len = r.len;
    return (uint8_t *)r.body;
}

/* Compare a tensor of an exported state with a golden tensor. */
static inline void check_tensor(const uint8_t *file, size_t len, const char *tname, const golden *g,
                                const char *gname, double tol)
{
    st_file f;
    if (st_parse(&f, file, len, "export") != SS_OK) {
        CHECKF(0, "exported state does not parse: %s", ss_errmsg());
        return;
    }
    const st_tensor *t = st_find(&f, tname);
    size_t n = 0;
    const float *want = gt(g, gname, &n);
    CHECKF(t && t->dtype == ST_F32 && t->n_elem == n, "%s: tensor %s missing or misshapen", gname,
           tname);
    if (t && t->n_elem == n) {
        float *got = malloc(n * sizeof(float));
        memcpy(got, t->data, n * sizeof(float));
        double e = max_abs_diff(got, want, n);
        CHECKF(e <= tol, "%s vs exported %s: max abs diff %.3g", gname, tname, e);
        free(got);
    }
    st_free(&f);
}

/* Whether the JSON value v is the string s (false for NULL or another type). */
static inline int jstr_is(const json_t *v, const char *s)
{
    const char *t = json_string_value(v);
    return t && !strcmp(t, s);
}

/* Whether two exported state files hold bit-identical conv, ssm and final_hidden tensors. */
static inline int same_tensors(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    st_file fa, fb;
    if (st_parse(&fa, a, al, "a") != SS_OK) return 0;
    if (st_parse(&fb, b, bl, "b") != SS_OK) {
        st_free(&fa);
        return 0;
    }
    int same = 1;
    static const char *const names[] = {"conv", "ssm", "final_hidden"};
    for (int i = 0; i < 3; i++) {
        const st_tensor *x = st_find(&fa, names[i]), *y = st_find(&fb, names[i]);
        if (!x || !y || x->n_bytes != y->n_bytes || x->dtype != y->dtype ||
            memcmp(x->data, y->data, x->n_bytes))
            same = 0;
    }
    st_free(&fa);
    st_free(&fb);
    return same;
}

#endif
