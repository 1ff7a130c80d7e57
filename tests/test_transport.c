/*
 * test_transport.c - the HTTP transport against the real statesoupd, over raw sockets where a
 * library client would hide what is being tested: a too-large body sent without
 * "Expect: 100-continue" still gets its 413; shutdown refuses new connections at once, answers
 * new requests on open connections 503, cancels queued jobs at once and lets running ones
 * finish; thousands of idle connections neither block /healthz nor pass the connection limit;
 * the operations metrics and log lines.
 *
 * No timing thresholds: every wait is for a condition (a log line, an answer, a refusal), with a
 * generous bound that only ends a hung test.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "daemon.h"

static char tmp_root[256];

/* ---- raw HTTP/1.1 over a socket ------------------------------------------------------------ */

static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Wait up to ms for fd to be readable; 1 readable, 0 not. */
static int readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) > 0;
}

typedef struct answer {
    int status;
    char head[4096];
    char *body; /* NUL-terminated */
    size_t len;
} answer;

/* Read one answer (headers + Content-Length body, or until close). 0 on success. */
static int read_answer(int fd, answer *a)
{
    memset(a, 0, sizeof *a);
    char buf[65536];
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        if (!readable(fd, 60000) || have == sizeof buf - 1) return -1;
        ssize_t n = recv(fd, buf + have, sizeof buf - 1 - have, 0);
        if (n <= 0) return -1;
        have += (size_t)n;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    size_t hl = (size_t)(end - buf) + 4;
    snprintf(a->head, sizeof a->head, "%.*s", (int)hl, buf);
    if (sscanf(buf, "HTTP/1.%*d %d", &a->status) != 1) return -1;
    const char *cl = strcasestr(a->head, "\r\nContent-Length:");
    long want = cl ? atol(cl + 17) : -1;
    a->body = malloc(have - hl + 1);
    memcpy(a->body, buf + hl, have - hl);
    a->len = have - hl;
    while (want < 0 || (long)a->len < want) {
        if (!readable(fd, 60000)) break;
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        a->body = realloc(a->body, a->len + (size_t)n + 1);
        memcpy(a->body + a->len, buf, (size_t)n);
        a->len += (size_t)n;
    }
    a->body[a->len] = '\0';
    return want < 0 || (long)a->len >= want ? 0 : -1;
}

/* The JSON error code of an answer ("" when none). */
static const char *answer_code(const answer *a, char *out, size_t cap)
{
    json_t *j = json_loads(a->body ? a->body : "", 0, NULL);
    snprintf(out, cap, "%s",
             j ? json_string_value(json_object_get(json_object_get(j, "error"), "code")) ?: ""
               : "");
    json_decref(j);
    return out;
}

static int send_request(int fd, const char *method, const char *path, const char *extra_headers,
                        const void *body, size_t len)
{
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Length: %zu\r\n"
                     "Content-Type: application/json\r\n\r\n",
                     method, path, extra_headers ? extra_headers : "", len);
    if (send_all(fd, head, (size_t)n)) return -1;
    return len ? send_all(fd, body, len) : 0;
}

/* ---- item 9: 413 for clients that do not wait for 100-continue ------------------------------- */

static void test_too_large(void)
{
    char data[512];
    snprintf(data, sizeof data, "%s/large", tmp_root);
    srv d;
    if (daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--max-body", "64K", "--quiet",
                     NULL)) {
        CHECK(0);
        return;
    }
    /* 16 MiB: far more than the socket buffers hold, so a server that answers and closes with
     * the body unread makes this send fail (reset / broken pipe) before any answer is read. */
    size_t big = (size_t)16 << 20;
    char *body = malloc(big);
    memset(body, ' ', big);
    char code[64];
    answer a;
    int fd = tcp_connect(d.port);
    CHECK(fd >= 0);
    CHECKF(send_request(fd, "POST", "/v1/states", NULL, body, big) == 0,
           "sending a 16 MiB body without Expect failed: %s", strerror(errno));
    CHECK(read_answer(fd, &a) == 0);
    CHECKF(a.status == 413 && !strcmp(answer_code(&a, code, sizeof code), "too_large"),
           "no Expect: got %d %s", a.status, a.body ? a.body : "");
    free(a.body);
    close(fd);

    /* with Expect: 100-continue the answer comes before any body is sent (no 100 Continue) */
    fd = tcp_connect(d.port);
    char head[512];
    int n = snprintf(head, sizeof head,
                     "POST /v1/states HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nExpect: 100-continue\r\n\r\n",
                     big);
    CHECK(send_all(fd, head, (size_t)n) == 0);
    CHECK(read_answer(fd, &a) == 0);
    CHECKF(a.status == 413 && !strcmp(answer_code(&a, code, sizeof code), "too_large"),
           "Expect: 100-continue: got %d", a.status);
    free(a.body);
    close(fd);

    /* the daemon is fine afterwards */
    resp r = request(&d, "GET", "/healthz", NULL, 0, NULL);
    CHECK(r.status == 200);
    free(r.body);
    free(body);
    daemon_stop(&d);
}

/* ---- item 8: shutdown ----------------------------------------------------------------------- */

#define log_has daemon_log_has

/* Count SSE token events read from a streaming answer's socket until `until_n` or end. Returns
 * the count; *ended is set when the terminal event and [DONE] arrived, *error when an error
 * event did. */
typedef struct sse_reader {
    int fd;
    char *buf;
    size_t len, cap;
    int events, done, error;
} sse_reader;

static void sse_pump(sse_reader *s, int until_events, int ms)
{
    while (!s->done && s->events < until_events && readable(s->fd, ms)) {
        if (s->len + 65536 > s->cap) {
            s->cap = (s->len + 65536) * 2;
            s->buf = realloc(s->buf, s->cap);
        }
        ssize_t n = recv(s->fd, s->buf + s->len, s->cap - s->len - 1, 0);
        if (n <= 0) break;
        s->len += (size_t)n;
        s->buf[s->len] = '\0';
        s->events = 0;
        for (const char *p = s->buf; (p = strstr(p, "\ndata: {")); p++) s->events++;
        s->error = strstr(s->buf, "data: {\"error\"") != NULL;
        s->done = strstr(s->buf, "data: [DONE]") != NULL;
    }
}

/* Start a streamed generation (body) and read until `events` token events arrived. */
static sse_reader open_stream(const srv *d, const char *body, int events)
{
    sse_reader s = {.fd = tcp_connect(d->port)};
    CHECK(send_request(s.fd, "POST", "/v1/generate", NULL, body, strlen(body)) == 0);
    sse_pump(&s, events, 60000);
    CHECKF(s.events >= events, "a stream gave %d events, %d wanted", s.events, events);
    return s;
}

static void test_shutdown(void)
{
    char data[512];
    snprintf(data, sizeof data, "%s/shutdown", tmp_root);
    srv d;
    if (daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--quiet", "--max-batch", "1",
                     "--drain-timeout", "3", "--max-tokens", "1000000", NULL)) {
        CHECK(0);
        return;
    }
    /* a kept-alive connection, used once before the signal */
    int keep = tcp_connect(d.port);
    answer a;
    char code[64];
    CHECK(send_request(keep, "GET", "/healthz", NULL, NULL, 0) == 0);
    CHECK(read_answer(keep, &a) == 0 && a.status == 200);
    free(a.body);

    /* a long stream runs (the only batch slot) ... */
    const char *sbody = "{\"prompt\": [1, 2], \"max_tokens\": 1000000, \"stream\": true, "
                        "\"ignore_eos\": true}";
    sse_reader s = open_stream(&d, sbody, 3);
    /* ... and a short request waits in the queue behind it */
    const char *qbody = "{\"prompt\": [3], \"max_tokens\": 4}";
    int q = tcp_connect(d.port);
    CHECK(send_request(q, "POST", "/v1/generate", NULL, qbody, strlen(qbody)) == 0);
    int queued = 0;
    for (int i = 0; i < 5000 && !queued; i++) {
        resp r = request(&d, "GET", "/metrics", NULL, 0, NULL);
        queued = strstr(r.body, "\nstatesoup_engine_jobs_queued 1\n") != NULL;
        free(r.body);
    }
    CHECK(queued);

    kill(d.pid, SIGTERM);
    CHECK(log_has(&d, "shutting down"));
    /* the queued request is cancelled at once: its 503 arrives while the stream still runs */
    CHECK(read_answer(q, &a) == 0);
    CHECKF(a.status == 503, "queued request at shutdown: %d %s", a.status, a.body);
    free(a.body);
    close(q);
    int before = s.events;
    sse_pump(&s, before + 3, 60000);
    CHECKF(s.events >= before + 3 && !s.done,
           "the running stream must go on decoding after the queue was cancelled (%d -> %d)",
           before, s.events);
    /* new connections are refused (bounded wait: the signal is handled on another thread) */
    int refused = 0;
    for (int i = 0; i < 200 && !refused; i++) {
        int fd = tcp_connect(d.port);
        if (fd < 0) {
            refused = errno == ECONNREFUSED;
        } else {
            close(fd);
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    CHECKF(refused, "connections must be refused once the daemon drains");
    /* a new request on the kept-alive connection gets 503 shutting_down */
    CHECK(send_request(keep, "GET", "/healthz", NULL, NULL, 0) == 0);
    CHECK(read_answer(keep, &a) == 0);
    CHECKF(a.status == 503 && !strcmp(answer_code(&a, code, sizeof code), "shutting_down"),
           "request on a kept-alive connection while draining: %d %s", a.status, a.body);
    CHECK(strcasestr(a.head, "Connection: close") != NULL);
    free(a.body);
    close(keep);
    /* the stream is cut at the drain deadline with an error event and [DONE] */
    sse_pump(&s, 1 << 30, 60000);
    CHECK(s.done && s.error);
    close(s.fd);
    free(s.buf);
    int status = 0;
    daemon_reap(&d, &status);
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status 0x%x; log:\n%s", status,
           d.log);
    free(d.log);
    pthread_mutex_destroy(&d.mu);
    pthread_cond_destroy(&d.cv);
}

/* ---- item 2: connection floods -------------------------------------------------------------- */

/* Raise our own descriptor limit; returns how many connections this test may open. */
static int fd_budget(int want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)want + 64) return want;
    return rl.rlim_cur > 64 ? (int)rl.rlim_cur - 64 : 0;
}

/* A connection the server closed (or reset) within ms: 1; still open: 0. */
static int closed_by_server(int fd, int ms)
{
    if (!readable(fd, ms)) return 0;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static long metric_value(srv *d, const char *line_start)
{
    resp r = request(d, "GET", "/metrics", NULL, 0, NULL);
    const char *p = r.body ? strstr(r.body, line_start) : NULL;
    long v = p ? atol(p + strlen(line_start)) : -1;
    free(r.body);
    return v;
}

static void test_idle_flood(void)
{
    int n = fd_budget(2000);
    CHECKF(n >= 2000, "this test needs 2,064 descriptors; the hard limit allows %d", n + 64);
    char data[512];
    snprintf(data, sizeof data, "%s/flood", tmp_root);
    srv d;
    if (daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--quiet", NULL)) {
        CHECK(0);
        return;
    }
    int *fds = malloc((size_t)n * sizeof *fds);
    int opened = 0;
    for (int i = 0; i < n; i++)
        if ((fds[i] = tcp_connect(d.port)) >= 0) opened++;
    CHECKF(opened == n, "opened %d of %d idle connections", opened, n);
    /* with them all open (none sends a byte), /healthz answers, and the daemon counts them */
    resp r = request(&d, "GET", "/healthz", NULL, 0, NULL);
    CHECKF(r.status == 200, "/healthz with %d idle connections: %ld", opened, r.status);
    free(r.body);
    long open_now = -1;
    for (int i = 0; i < 1000 && open_now < opened; i++) /* MHD accepts them asynchronously */
        open_now = metric_value(&d, "\nstatesoup_http_connections ");
    CHECKF(open_now >= opened, "statesoup_http_connections %ld, %d open", open_now, opened);
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0) close(fds[i]);
    free(fds);
    daemon_stop(&d);
}

static void test_connection_limits(void)
{
    char data[512];
    snprintf(data, sizeof data, "%s/limits", tmp_root);
    srv d;
    if (daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--quiet", "--max-connections",
                     "20", "--idle-timeout", "2", NULL)) {
        CHECK(0);
        return;
    }
    /* 20 connections, each proven accepted by an answer on it (kept alive) */
    int fds[30];
    answer a;
    for (int i = 0; i < 20; i++) {
        fds[i] = tcp_connect(d.port);
        CHECK(send_request(fds[i], "GET", "/healthz", NULL, NULL, 0) == 0);
        CHECK(read_answer(fds[i], &a) == 0 && a.status == 200);
        free(a.body);
    }
    /* beyond the limit a connection is closed at once, not left hanging */
    int closed = 0;
    for (int i = 20; i < 30; i++) {
        fds[i] = tcp_connect(d.port);
        closed += fds[i] < 0 || closed_by_server(fds[i], 30000);
    }
    CHECKF(closed == 10, "%d of the 10 connections beyond --max-connections 20 were closed",
           closed);
    for (int i = 0; i < 30; i++)
        if (fds[i] >= 0) close(fds[i]);
    long refused = -1;
    for (int i = 0; i < 1000 && refused < 0; i++) /* until the closes free a slot */
        refused = metric_value(&d, "\nstatesoup_http_connections_refused_total ");
    CHECKF(refused >= 10, "statesoup_http_connections_refused_total %ld", refused);
    /* an idle connection is closed after --idle-timeout (2 s; bounded wait 30 s) */
    int idle = tcp_connect(d.port);
    CHECK(idle >= 0 && closed_by_server(idle, 30000));
    close(idle);
    daemon_stop(&d);

    snprintf(data, sizeof data, "%s/perip", tmp_root);
    if (daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--quiet", "--max-per-ip", "5",
                     NULL)) {
        CHECK(0);
        return;
    }
    for (int i = 0; i < 5; i++) {
        fds[i] = tcp_connect(d.port);
        CHECK(send_request(fds[i], "GET", "/healthz", NULL, NULL, 0) == 0);
        CHECK(read_answer(fds[i], &a) == 0 && a.status == 200);
        free(a.body);
    }
    fds[5] = tcp_connect(d.port);
    CHECKF(fds[5] < 0 || closed_by_server(fds[5], 30000),
           "a 6th connection from one address with --max-per-ip 5 must be closed");
    for (int i = 0; i < 6; i++)
        if (fds[i] >= 0) close(fds[i]);
    daemon_stop(&d);
}

/* ---- item 10: log lines and metrics; the client-gone hook ----------------------------------- */

/* daemon_stop, keeping d->log for the caller to read (and free). */
static void daemon_stop_keep_log(srv *d)
{
    int status = 0;
    kill(d->pid, SIGTERM);
    daemon_reap(d, &status);
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status 0x%x; log:\n%s", status,
           d->log ? d->log : "");
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
}

/*
 * With --log-format json every line the daemon wrote is one JSON object with a time and an event
 * (a log shipper parses them all, not only the request lines), and its own lines say what it did:
 * from its start to its stop, the model and the catalog, each with a level and a message.
 */
static void check_json_log(const char *log)
{
    static const char *const want[] = {"start",   "listening", "loading",       "model",
                                       "catalog", "ready",     "shutting_down", "stopped"};
    int seen[sizeof want / sizeof *want] = {0}, lines = 0;
    for (const char *l = log; l && *l;) {
        const char *e = strchr(l, '\n');
        const size_t n = e ? (size_t)(e - l) : strlen(l);
        json_error_t jerr;
        json_t *j = json_loadb(l, n, 0, &jerr);
        const char *ev = json_string_value(json_object_get(j, "event"));
        CHECKF(json_is_object(j) && json_is_string(json_object_get(j, "time")) && ev,
               "a log line that is not a JSON object with time and event: %.*s", (int)n, l);
        for (size_t i = 0; ev && i < sizeof want / sizeof *want; i++) {
            if (strcmp(ev, want[i])) continue;
            seen[i] = 1;
            CHECKF(json_is_string(json_object_get(j, "level")) &&
                       json_is_string(json_object_get(j, "message")),
                   "the daemon's %s line lacks a level or a message: %.*s", ev, (int)n, l);
            if (!strcmp(ev, "listening"))
                CHECKF(json_integer_value(json_object_get(j, "port")) > 0, "no port: %.*s",
                       (int)n, l);
            if (!strcmp(ev, "model"))
                CHECKF(json_integer_value(json_object_get(j, "layers")) == 4 &&
                           json_is_string(json_object_get(j, "fingerprint")),
                       "model line: %.*s", (int)n, l);
        }
        json_decref(j);
        lines++;
        l = e ? e + 1 : l + n;
    }
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        CHECKF(seen[i], "no \"%s\" line in the JSON log (%d lines)", want[i], lines);
}

static void test_operations(void)
{
    char data[512];
    snprintf(data, sizeof data, "%s/ops", tmp_root);
    srv d;
    if (daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--log-format", "json",
                     "--prefill-chunk", "64", NULL)) {
        CHECK(0);
        return;
    }
    resp r = request(&d, "GET", "/metrics", NULL, 0, NULL);
    static const char *const names[] = {
        "\nstatesoup_build_info{version=\"", "\nstatesoup_uptime_seconds ",
        "\nstatesoup_process_resident_memory_bytes ", "\nstatesoup_process_open_fds ",
        "\nstatesoup_http_connections ", "\nstatesoup_http_connections_refused_total 0\n",
        "\nstatesoup_store_map_bytes ", "\nstatesoup_store_free_bytes ",
        "\nstatesoup_store_corrupt_reads_total 0\n"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        CHECKF(r.body && strstr(r.body, names[i]), "/metrics lacks %s", names[i] + 1);
    free(r.body);
    /* a JSON log line per request, with time, address, method, path, status and bytes */
    r = request(&d, "GET", "/healthz", NULL, 0, NULL);
    free(r.body);
    CHECK(log_has(&d, "\"path\":\"/healthz\""));
    pthread_mutex_lock(&d.mu);
    const char *l = strstr(d.log, "\"path\":\"/healthz\"");
    while (l > d.log && l[-1] != '\n') l--;
    const char *e = strchr(l, '\n');
    char *line = strndup(l, e ? (size_t)(e - l) : strlen(l));
    pthread_mutex_unlock(&d.mu);
    json_t *j = json_loads(line, 0, NULL);
    CHECKF(j && json_is_string(json_object_get(j, "time")) &&
               !strcmp(json_string_value(json_object_get(j, "addr")) ?: "", "127.0.0.1") &&
               !strcmp(json_string_value(json_object_get(j, "method")) ?: "", "GET") &&
               json_integer_value(json_object_get(j, "status")) == 200 &&
               json_integer_value(json_object_get(j, "bytes")) == 15,
           "request log line: %s", line);
    json_decref(j);
    free(line);

    /* a client that leaves during a long prompt stops its prefill within a chunk */
    long before = metric_value(&d, "\nstatesoup_tokens_prefilled_total ");
    int n = 200000;
    size_t cap = (size_t)n * 4 + 64, at = 0;
    char *body = malloc(cap);
    at += (size_t)snprintf(body, cap, "{\"max_tokens\": 1, \"prompt\": [");
    for (int i = 0; i < n; i++)
        at += (size_t)snprintf(body + at, cap - at, i ? ",%d" : "%d", 1 + i % 9);
    at += (size_t)snprintf(body + at, cap - at, "]}");
    int fd = tcp_connect(d.port);
    CHECK(send_request(fd, "POST", "/v1/generate", NULL, body, at) == 0);
    free(body);
    long running = 0;
    for (int i = 0; i < 100000 && running < 1; i++) /* until the job runs */
        running = metric_value(&d, "\nstatesoup_engine_jobs_running ");
    close(fd); /* the client leaves */
    for (int i = 0; i < 100000 && running > 0; i++)
        running = metric_value(&d, "\nstatesoup_engine_jobs_running ");
    long after = metric_value(&d, "\nstatesoup_tokens_prefilled_total ");
    CHECKF(running == 0 && after - before < n / 2,
           "the prompt of a client that left was read on: %ld of %d tokens", after - before, n);

    /* streams abandoned mid-answer make one log line of their kind, not one each */
    for (int i = 0; i < 20; i++) {
        const char *sb = "{\"prompt\": [1], \"max_tokens\": 4000, \"stream\": true, "
                         "\"ignore_eos\": true}";
        sse_reader s = open_stream(&d, sb, 2);
        close(s.fd);
        free(s.buf);
    }
    daemon_stop_keep_log(&d);
    int gone_lines = 0;
    for (const char *p = d.log; (p = strstr(p, "\"event\":\"client_gone\"")); p++) gone_lines++;
    CHECKF(gone_lines <= 1, "%d client_gone log lines for 20 abandoned streams", gone_lines);
    check_json_log(d.log);
    free(d.log);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_tmpdir(tmp_root, sizeof tmp_root, "transport");
    test_too_large();
    test_shutdown();
    test_idle_flood();
    test_connection_limits();
    test_operations();
    curl_global_cleanup();
    if (!test_failures) test_rm_rf(tmp_root);
    return test_done("transport");
}
