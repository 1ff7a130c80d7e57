/*
 * client.c - the CLI's HTTP client for statesoupd, over libcurl (easy interface, one request at
 * a time).
 *
 * Every command funnels through cli_http(): it adds the Bearer key, collects the body or hands a
 * successful one to a sink as it arrives (streamed generation, state exports of any size), and
 * turns both failure kinds into one ss_err with a message fit for the user: the server's
 * {"error": {"code", "message"}} for an error answer, and "is statesoupd running at URL?" when
 * nothing answers. No curl type leaves this file.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ss_buf.h"

#define DEFAULT_URL   "http://127.0.0.1:8080"
#define MAX_BODY      ((size_t)1 << 32) /* largest reply collected in memory */
#define MAX_ERR_BODY  ((size_t)1 << 20)

ss_err cli_conn_init(cli_conn *c, const cli_common *o)
{
    const char *url = o->url;
    if (!url || !*url) url = getenv("STATESOUP_URL");
    if (!url || !*url) url = DEFAULT_URL;
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        return ss_fail(SS_ERR_INVALID, "--url %s: expected http://HOST:PORT or https://...", url);
    }
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/') n--;
    c->base = strndup(url, n);
    if (!c->base) return ss_fail(SS_ERR_NOMEM, "out of memory");
    c->api_key = o->api_key;
    if (!c->api_key || !*c->api_key) c->api_key = getenv("STATESOUP_API_KEY");
    if (c->api_key && !*c->api_key) c->api_key = NULL;
    return SS_OK;
}

void cli_conn_free(cli_conn *c)
{
    free(c->base);
    c->base = NULL;
}

void cli_resp_free(cli_resp *r)
{
    if (!r) return;
    free(r->body);
    r->body = NULL;
    r->len = 0;
}

char *cli_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = malloc(3 * n + 1), *w = out;
    if (!out) return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            *w++ = (char)*p;
        } else {
            *w++ = '%';
            *w++ = hex[*p >> 4];
            *w++ = hex[*p & 15];
        }
    }
    *w = '\0';
    return out;
}

/* Per-transfer state seen by the write callback. */
typedef struct xfer {
    CURL *curl;
    const cli_req *rq;
    long status;      /* read from curl on the first chunk */
    char *buf;        /* collected body */
    size_t len, cap;
    size_t limit;     /* collected bodies stop here */
    int sink_aborted; /* the sink asked to stop */
    int too_large;
} xfer;

static size_t on_data(char *p, size_t size, size_t nmemb, void *user)
{
    xfer *x = user;
    size_t n = size * nmemb;
    if (x->status == 0) curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &x->status);
    int ok = x->status >= 200 && x->status < 300;
    if (ok && x->rq->sink) {
        if (x->rq->sink(x->rq->sink_user, p, n)) {
            x->sink_aborted = 1;
            return 0;
        }
        return n;
    }
    size_t limit = ok ? x->limit : MAX_ERR_BODY;
    if (x->len + n > limit) {
        x->too_large = 1;
        return 0;
    }
    if (ss_grow((void **)&x->buf, &x->cap, x->len + n + 1, 1)) {
        x->too_large = 1;
        return 0;
    }
    memcpy(x->buf + x->len, p, n);
    x->len += n;
    x->buf[x->len] = '\0';
    return n;
}

/* The ss_err a server's error code names, else one fitting the HTTP status. */
static ss_err err_of(const char *code, long status)
{
    for (int e = 1; code && e < SS_ERR__COUNT; e++) {
        if (!strcmp(code, ss_err_name((ss_err)e))) return (ss_err)e;
    }
    switch (status) {
    case 400: return SS_ERR_FORMAT;
    case 401:
    case 403: return SS_ERR_PERM;
    case 404: return SS_ERR_NOT_FOUND;
    case 409: return SS_ERR_EXISTS;
    case 413: return SS_ERR_TOO_LARGE;
    case 422: return SS_ERR_INVALID;
    case 429:
    case 503: return SS_ERR_BUSY;
    case 507: return SS_ERR_FULL;
    default: return status >= 500 ? SS_ERR_INTERNAL : SS_ERR_INVALID;
    }
}

/* Turn an error answer into ss_fail(): the server's code and message when it sent them. */
static ss_err http_error(long status, const char *body, size_t len)
{
    json_error_t je;
    json_t *j = body ? json_loadb(body, len, 0, &je) : NULL;
    json_t *e = json_object_get(j, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    ss_err err;
    if (code && msg) {
        err = ss_fail(err_of(code, status), "%s: %s", code, msg);
    } else {
        /* not our JSON (a proxy, another program on the port): show the start of the text */
        int show = body ? (int)(len > 200 ? 200 : len) : 0;
        while (show > 0 && (body[show - 1] == '\n' || body[show - 1] == '\r')) show--;
        err = ss_fail(err_of(NULL, status), "HTTP %ld%s%.*s", status, show ? ": " : "", show,
                      body ? body : "");
    }
    json_decref(j);
    return err;
}

/* Append one header line (curl copies it); nonzero when out of memory, the list left as it was. */
static int add_header(struct curl_slist **hdr, const char *line)
{
    struct curl_slist *n = curl_slist_append(*hdr, line);
    if (!n) return 1;
    *hdr = n;
    return 0;
}

/* The request's headers (free with curl_slist_free_all): "Expect:" off, its Content-Type, the
 * Bearer key. NULL after ss_fail when out of memory. */
static struct curl_slist *request_headers(const cli_conn *c, const cli_req *rq)
{
    struct curl_slist *hdr = NULL;
    char ctype[256], *auth = NULL;
    /* "Expect:" off: no 100-continue round trip before an import's body */
    int bad = add_header(&hdr, "Expect:");
    if (!bad && rq->content_type) {
        snprintf(ctype, sizeof ctype, "Content-Type: %s", rq->content_type);
        bad = add_header(&hdr, ctype);
    }
    if (!bad && c->api_key) {
        size_t n = strlen(c->api_key) + 32;
        bad = !(auth = malloc(n));
        if (!bad) {
            snprintf(auth, n, "Authorization: Bearer %s", c->api_key);
            bad = add_header(&hdr, auth);
        }
    }
    free(auth);
    if (!bad) return hdr;
    curl_slist_free_all(hdr);
    ss_fail(SS_ERR_NOMEM, "out of memory");
    return NULL;
}

/* Set the method (POST with the body, GET, or any other by name) on the handle. */
static void set_method(CURL *curl, const cli_req *rq)
{
    if (!strcmp(rq->method, "POST")) {
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, rq->body ? rq->body : "");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
    } else if (!strcmp(rq->method, "GET")) {
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, rq->method);
    }
}

/* The ss_err of a transfer that curl gave up on (cc), with a message for the user: the sink's
 * own reason, a reply too large, nothing answering at the URL, or curl's words (errbuf). */
static ss_err transfer_error(const cli_conn *c, const cli_req *rq, const xfer *x, CURLcode cc,
                             const char *errbuf)
{
    if (x->sink_aborted) return SS_ERR_CANCELLED; /* the sink recorded its reason */
    if (x->too_large) {
        return ss_fail(SS_ERR_TOO_LARGE, "%s %s: the reply is too large to hold in memory",
                       rq->method, rq->path);
    }
    if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
        cc == CURLE_OPERATION_TIMEDOUT) {
        return ss_fail(SS_ERR_IO, "cannot connect to %s (%s): is statesoupd running at %s?",
                       c->base, curl_easy_strerror(cc), c->base);
    }
    return ss_fail(SS_ERR_IO, "%s %s%s: %s", rq->method, c->base, rq->path,
                   *errbuf ? errbuf : curl_easy_strerror(cc));
}

ss_err cli_http(const cli_conn *c, const cli_req *rq, cli_resp *resp)
{
    ss_err err = SS_OK;
    struct curl_slist *hdr = NULL;
    char *url = NULL, errbuf[CURL_ERROR_SIZE] = "";
    xfer x = {.rq = rq, .limit = MAX_BODY};

    if (resp) *resp = (cli_resp){0};
    x.curl = curl_easy_init();
    url = malloc(strlen(c->base) + strlen(rq->path) + 1);
    if (!x.curl || !url) {
        err = ss_fail(SS_ERR_NOMEM, "cannot start an HTTP request");
        goto out;
    }
    strcpy(url, c->base);
    strcat(url, rq->path);
    if (!(hdr = request_headers(c, rq))) {
        err = SS_ERR_NOMEM;
        goto out;
    }

    curl_easy_setopt(x.curl, CURLOPT_URL, url);
    curl_easy_setopt(x.curl, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(x.curl, CURLOPT_USERAGENT, "statesoup-cli/1");
    curl_easy_setopt(x.curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(x.curl, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(x.curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(x.curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(x.curl, CURLOPT_WRITEDATA, &x);
    set_method(x.curl, rq);

    CURLcode cc = curl_easy_perform(x.curl);
    if (x.status == 0) curl_easy_getinfo(x.curl, CURLINFO_RESPONSE_CODE, &x.status);
    if (cc != CURLE_OK) {
        err = transfer_error(c, rq, &x, cc, errbuf);
    } else if (x.status < 200 || x.status >= 300) {
        err = http_error(x.status, x.buf, x.len);
    }

out:
    if (resp && (err == SS_OK || x.status >= 300)) {
        resp->status = x.status;
        resp->body = x.buf;
        resp->len = x.len;
        x.buf = NULL;
    }
    free(x.buf);
    free(url);
    curl_slist_free_all(hdr);
    if (x.curl) curl_easy_cleanup(x.curl);
    return err;
}

ss_err cli_http_json(const cli_conn *c, const char *method, const char *path, json_t *body,
                     json_t **out, char **raw)
{
    char *text = NULL;
    cli_resp r = {0};
    ss_err err = SS_OK;
    if (body) {
        text = json_dumps(body, JSON_COMPACT);
        if (!text) return ss_fail(SS_ERR_NOMEM, "out of memory");
    }
    cli_req rq = {.method = method,
                  .path = path,
                  .content_type = text ? "application/json" : NULL,
                  .body = text,
                  .body_len = text ? strlen(text) : 0};
    err = cli_http(c, &rq, &r);
    if (err || !out) goto out;
    json_error_t je;
    *out = r.len ? json_loadb(r.body, r.len, JSON_DECODE_ANY, &je) : json_null();
    if (!*out) {
        err = ss_fail(SS_ERR_FORMAT, "%s %s: the reply is not JSON (%s)", method, path, je.text);
        goto out;
    }
    if (raw) {
        *raw = r.body ? r.body : strdup("");
        r.body = NULL;
        if (!*raw) {
            json_decref(*out);
            *out = NULL;
            err = ss_fail(SS_ERR_NOMEM, "out of memory");
        }
    }
out:
    cli_resp_free(&r);
    free(text);
    return err;
}

ss_err cli_list_path(char *buf, size_t cap, const char *tag, const char *prefix, int limit,
                     const char *cursor, int include_cache)
{
    char *et = tag ? cli_escape(tag) : NULL, *ep = prefix ? cli_escape(prefix) : NULL;
    char *ec = cursor ? cli_escape(cursor) : NULL;
    ss_err err = SS_OK;
    if ((tag && !et) || (prefix && !ep) || (cursor && !ec)) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
    } else {
        int n = snprintf(buf, cap, "/v1/states?limit=%d%s%s%s%s%s%s%s", limit, et ? "&tag=" : "",
                         et ? et : "", ep ? "&prefix=" : "", ep ? ep : "", ec ? "&cursor=" : "",
                         ec ? ec : "", include_cache ? "&include=cache" : "");
        if (n < 0 || (size_t)n >= cap)
            err = ss_fail(SS_ERR_INVALID, "the listing's URL is too long");
    }
    free(et);
    free(ep);
    free(ec);
    return err;
}

ss_err cli_state_path(const char *ref, char *buf, size_t cap)
{
    char *esc = cli_escape(ref);
    if (!esc) return ss_fail(SS_ERR_NOMEM, "out of memory");
    int n = snprintf(buf, cap, "/v1/states/%s", esc);
    free(esc);
    if (n < 0 || (size_t)n >= cap) return ss_fail(SS_ERR_INVALID, "'%.64s...' is too long", ref);
    return SS_OK;
}
