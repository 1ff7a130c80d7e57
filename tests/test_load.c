/*
 * test_load.c - statesoup-load (bench/statesoup-load.c), the load and fault tool:
 *   - its percentiles and its loopback rule, against hand-computed values;
 *   - its refusals (a --url off the loopback, missing arguments: exit 2);
 *   - a short run against a daemon this test started, cross-checked from outside: the states
 *     the tool says it kept are exactly the states carrying its run tag in the daemon;
 *   - a short run with --restart and 3 kill -9 cycles on its own daemon: nothing lost, no 5xx;
 *   - that its verification catches a loss: states deleted behind its back make it fail.
 * Runs are a few seconds each (the tool's --seconds); every check is on values it reports.
 */
#include <math.h>
#include <stdatomic.h>

#include "daemon.h"
#include "load_stats.h"

static char tmp_root[256];

static void test_percentiles(void)
{
    double v[100];
    for (int i = 0; i < 100; i++) v[i] = 100 - i; /* 100..1, unsorted */
    ss_load_sort(v, 100);
    CHECK(v[0] == 1 && v[99] == 100);
    CHECK(ss_load_percentile(v, 100, 50) == 50);
    CHECK(ss_load_percentile(v, 100, 99) == 99);
    CHECK(ss_load_percentile(v, 100, 99.5) == 100);
    CHECK(ss_load_percentile(v, 100, 100) == 100);
    CHECK(ss_load_percentile(v, 100, 0) == 1);
    /* nearest rank on 4 values: rank = ceil(p / 100 * 4) */
    const double four[] = {10, 20, 30, 40};
    CHECK(ss_load_percentile(four, 4, 25) == 10);
    CHECK(ss_load_percentile(four, 4, 26) == 20);
    CHECK(ss_load_percentile(four, 4, 50) == 20);
    CHECK(ss_load_percentile(four, 4, 75) == 30);
    CHECK(ss_load_percentile(four, 4, 99) == 40);
    const double one[] = {7.5};
    CHECK(ss_load_percentile(one, 1, 50) == 7.5 && ss_load_percentile(one, 1, 99) == 7.5);
    CHECK(isnan(ss_load_percentile(one, 0, 50)));
    CHECK(isnan(ss_load_percentile(four, 4, -1)) && isnan(ss_load_percentile(four, 4, 101)));
    double dup[] = {3, 1, 2, 2, 2};
    ss_load_sort(dup, 5);
    CHECK(dup[0] == 1 && dup[1] == 2 && dup[3] == 2 && dup[4] == 3);
    CHECK(ss_load_percentile(dup, 5, 50) == 2 && ss_load_percentile(dup, 5, 81) == 3);
}

static void test_loopback(void)
{
    static const char *const yes[] = {
        "http://127.0.0.1:8080", "http://127.0.0.1",      "http://127.1.2.3:1/",
        "http://localhost:8080", "http://LocalHost",      "http://[::1]:8080",
        "http://[::1]",          "http://127.0.0.1:80/x", "HTTP://127.0.0.1:9",
    };
    static const char *const no[] = {
        "http://128.0.0.1:8080",
        "http://10.0.0.1",
        "http://0.0.0.0:8080",
        "http://example.com",
        "http://localhost.evil.com",
        "http://127.0.0.1.evil.com",
        "https://127.0.0.1",
        "http://[::2]:80",
        "http://[::1",
        "http://a@127.0.0.1",
        "http://127.0.0.1@evil.com",
        "ftp://127.0.0.1",
        "http://127.0.0:80",
        "http://127.0.0.256",
        "http://127.0.0.1:80x",
        "http://127.0.0.1:",
        "127.0.0.1:8080",
        "http://1270.0.0.1",
        "",
    };
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        CHECKF(ss_load_url_loopback(yes[i]), "%s should be allowed", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        CHECKF(!ss_load_url_loopback(no[i]), "%s should be refused", no[i]);
    CHECK(!ss_load_url_loopback(NULL));
}

/* Run statesoup-load with args (a shell fragment); its stdout parsed as JSON into *out (NULL if
 * it is not JSON). Returns the exit status (-1 if it did not exit). */
static int run_tool(const char *args, json_t **out)
{
    char cmd[4096];
    const char *br = getenv("SS_BUILD_ROOT");
    snprintf(cmd, sizeof cmd, "'%s/bench/statesoup-load' %s", br ? br : "build", args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char *text = NULL;
    size_t len = 0, cap = 0;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            text = realloc(text, cap);
        }
        memcpy(text + len, buf, n);
        len += n;
        text[len] = '\0';
    }
    int st = pclose(p);
    if (out) *out = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static json_int_t jint(const json_t *o, const char *a, const char *b)
{
    const json_t *v = json_object_get(o, a);
    if (b) v = json_object_get(v, b);
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

/* The tool's report says: every kind ran and got only its expected status (or a kill's cut),
 * no 5xx on either side, nothing lost, damaged or back from the dead. */
static void check_report(const json_t *r, const char *what)
{
    static const char *const want[][2] = {
        {"save", "201"},       {"list", "200"},        {"read", "200"},      {"export", "200"},
        {"import", "201"},     {"merge", "201"},       {"merge_fly", "200"}, {"generate", "200"},
        {"gen_stream", "200"}, {"gen_abandon", "200"}, {"score", "200"},     {"delete", "204"},
    };
    if (!r) {
        CHECKF(0, "%s: no JSON report", what);
        return;
    }
    json_t *kinds = json_object_get(r, "kinds");
    CHECKF(json_array_size(kinds) == 12, "%s: %zu kinds", what, json_array_size(kinds));
    for (size_t i = 0; i < json_array_size(kinds) && i < 12; i++) {
        json_t *k = json_array_get(kinds, i);
        CHECKF(jstr_is(json_object_get(k, "kind"), want[i][0]), "%s: kind %zu", what, i);
        json_t *codes = json_object_get(k, "status");
        json_int_t good = json_integer_value(json_object_get(codes, want[i][1]));
        json_int_t cut = json_integer_value(json_object_get(codes, "cut"));
        CHECKF(good > 0, "%s: %s never answered %s", what, want[i][0], want[i][1]);
        CHECKF(good + cut == jint(k, "requests", NULL) && jint(k, "bad", NULL) == 0,
               "%s: %s: %lld requests, %lld answered %s, %lld cut, %lld bad", what, want[i][0],
               (long long)jint(k, "requests", NULL), (long long)good, want[i][1], (long long)cut,
               (long long)jint(k, "bad", NULL));
        double p50 = json_real_value(json_object_get(k, "p50_ms"));
        double p99 = json_real_value(json_object_get(k, "p99_ms"));
        CHECKF(p50 > 0 && p99 >= p50, "%s: %s p50 %g p99 %g", what, want[i][0], p50, p99);
    }
    CHECKF(jint(r, "totals", "http_5xx") == 0 && jint(r, "totals", "daemon_5xx") == 0 &&
               jint(r, "totals", "unexpected") == 0 && jint(r, "totals", "bad") == 0,
           "%s: 5xx %lld (daemon %lld), unexpected %lld, bad %lld", what,
           (long long)jint(r, "totals", "http_5xx"), (long long)jint(r, "totals", "daemon_5xx"),
           (long long)jint(r, "totals", "unexpected"), (long long)jint(r, "totals", "bad"));
    CHECKF(jint(r, "totals", "states_lost") == 0 && jint(r, "totals", "resurrected") == 0,
           "%s: %lld states lost, %lld resurrected", what,
           (long long)jint(r, "totals", "states_lost"),
           (long long)jint(r, "totals", "resurrected"));
    CHECKF(jint(r, "totals", "states_acknowledged") > 0, "%s: no state acknowledged", what);
    CHECKF(json_is_true(json_object_get(r, "ok")), "%s: the tool says not ok", what);
}

/* The states carrying tag in the daemon (all pages). */
static long count_tagged(srv *d, const char *tag)
{
    long n = 0;
    char cursor[256] = "";
    for (int page = 0; page < 10000; page++) {
        char path[600];
        long st;
        snprintf(path, sizeof path, "/v1/states?limit=200&tag=%s%s%s", tag,
                 cursor[0] ? "&cursor=" : "", cursor);
        json_t *j = call(d, "GET", path, NULL, &st);
        if (st != 200) {
            json_decref(j);
            return -1;
        }
        n += (long)json_array_size(json_object_get(j, "data"));
        const char *next = json_string_value(json_object_get(j, "next_cursor"));
        snprintf(cursor, sizeof cursor, "%s", next ? next : "");
        json_decref(j);
        if (!next) break;
    }
    return n;
}

/* A daemon on the tiny fixture model with data dir tmp_root/sub (a failed check if it does
 * not start). 0 when it runs. */
static int start_tiny(srv *d, const char *sub)
{
    char data[512];
    snprintf(data, sizeof data, "%s/%s", tmp_root, sub);
    int rc = daemon_start(d, fixture_path("models/mamba1-tiny"), data, "--quiet", NULL);
    CHECKF(rc == 0, "statesoupd did not start for %s", sub);
    return rc;
}

/* The tool against a daemon started here (--url, --pid), cross-checked from outside. */
static void test_against_daemon(void)
{
    char args[1024];
    srv d;
    if (start_tiny(&d, "url")) return;
    json_t *r = NULL;
    snprintf(args, sizeof args,
             "--url %s --pid %d --clients 4 --seconds 3 --interval 1 --seed 7 --json", d.base,
             (int)d.pid);
    int rc = run_tool(args, &r);
    CHECKF(rc == 0, "statesoup-load --url exited %d", rc);
    check_report(r, "--url run");
    /* what the tool kept is what the daemon holds under its tag: no more, no less */
    const char *tag = json_string_value(json_object_get(r, "run_tag"));
    json_int_t acked = jint(r, "totals", "states_acknowledged");
    json_int_t deleted = jint(r, "totals", "states_deleted");
    long held = tag ? count_tagged(&d, tag) : -1;
    CHECKF(held == (long)(acked - deleted),
           "the daemon holds %ld states tagged %s, the tool kept "
           "%lld (%lld acknowledged - %lld deleted)",
           held, tag ? tag : "?", (long long)(acked - deleted), (long long)acked,
           (long long)deleted);
    json_t *v = json_object_get(r, "verify");
    CHECK(jint(v, "checked", NULL) == acked && jint(v, "lost", NULL) == 0 &&
          jint(v, "corrupt", NULL) == 0);
    /* it sampled the daemon's RSS and fds: figures of a live process */
    json_t *s = json_object_get(r, "samples");
    CHECK(json_array_size(s) >= 2);
    for (size_t i = 0; i < json_array_size(s); i++) {
        json_t *e = json_array_get(s, i);
        CHECK(json_real_value(json_object_get(e, "rss_mb")) > 1 && jint(e, "fds", NULL) > 3 &&
              jint(e, "daemon_5xx", NULL) == 0 && jint(e, "minor_faults", NULL) > 0);
        /* faults per request between samples: a number once requests were made */
        if (i > 0 && jint(e, "requests", NULL) > jint(json_array_get(s, i - 1), "requests", NULL))
            CHECK(json_is_real(json_object_get(e, "faults_per_request")) &&
                  json_real_value(json_object_get(e, "faults_per_request")) >= 0);
    }
    json_decref(r);
    daemon_stop(&d);
}

/* --restart and 3 kill -9 cycles on the tool's own daemon. */
static void test_restart_and_kill(void)
{
    char args[1024];
    json_t *r = NULL;
    snprintf(args, sizeof args,
             "--model '%s' --data '%s/restart' --clients 4 --seconds 2 --seed 11 --restart --json",
             fixture_path("models/mamba1-tiny"), tmp_root);
    int rc = run_tool(args, &r);
    CHECKF(rc == 0, "statesoup-load --restart exited %d", rc);
    check_report(r, "--restart run");
    json_int_t acked = jint(r, "totals", "states_acknowledged");
    json_t *v = json_object_get(r, "verify_after_restart");
    CHECKF(jint(v, "checked", NULL) == acked && jint(v, "lost", NULL) == 0 &&
               jint(v, "corrupt", NULL) == 0 && jint(v, "resurrected", NULL) == 0,
           "after a restart: %lld of %lld checked, %lld lost, %lld corrupt",
           (long long)jint(v, "checked", NULL), (long long)acked, (long long)jint(v, "lost", NULL),
           (long long)jint(v, "corrupt", NULL));
    json_decref(r);

    snprintf(
        args, sizeof args,
        "--model '%s' --data '%s/kill' --clients 4 --seconds 3 --seed 5 --kill-cycles 3 --json",
        fixture_path("models/mamba1-tiny"), tmp_root);
    rc = run_tool(args, &r);
    CHECKF(rc == 0, "statesoup-load --kill-cycles 3 exited %d", rc);
    check_report(r, "--kill-cycles run");
    json_t *k = json_object_get(r, "kill");
    CHECKF(jint(k, "cycles", NULL) == 3 && jint(k, "lost", NULL) == 0 &&
               jint(k, "corrupt", NULL) == 0 && jint(k, "resurrected", NULL) == 0,
           "kill -9: %lld cycles, %lld lost, %lld corrupt", (long long)jint(k, "cycles", NULL),
           (long long)jint(k, "lost", NULL), (long long)jint(k, "corrupt", NULL));
    /* every cycle checked every state acknowledged so far (deleted ones: still gone) */
    json_t *pc = json_object_get(k, "per_cycle");
    CHECK(json_array_size(pc) == 3);
    json_int_t prev = 0;
    for (size_t i = 0; i < json_array_size(pc); i++) {
        json_t *c = json_array_get(pc, i);
        json_int_t a = jint(c, "acknowledged", NULL);
        CHECKF(a > prev, "cycle %zu: %lld acknowledged (before: %lld)", i + 1, (long long)a,
               (long long)prev);
        CHECK(jint(c, "verify", "checked") == a);
        prev = a;
    }
    json_decref(r);
}

/* A thread that deletes 5 states behind the tool's back while it runs. */
typedef struct thief {
    srv *d;
    atomic_int stop;
    int stolen;
} thief;

static void *thief_main(void *arg)
{
    thief *t = arg;
    while (!atomic_load(&t->stop) && t->stolen < 5) {
        long st;
        json_t *j = call(t->d, "GET", "/v1/states?limit=5", NULL, &st);
        json_t *data = json_object_get(j, "data");
        for (size_t i = 0; i < json_array_size(data) && t->stolen < 5; i++) {
            char path[128];
            const char *id = json_string_value(json_object_get(json_array_get(data, i), "id"));
            snprintf(path, sizeof path, "/v1/states/%s", id ? id : "-");
            json_decref(call(t->d, "DELETE", path, NULL, &st));
            t->stolen += st == 204;
        }
        json_decref(j);
    }
    return NULL;
}

/* The verification is not a formality: states deleted by someone else are reported lost. */
static void test_detects_loss(void)
{
    char args[1024];
    srv d;
    if (start_tiny(&d, "thief")) return;
    thief t = {.d = &d};
    pthread_t th;
    pthread_create(&th, NULL, thief_main, &t);
    json_t *r = NULL;
    snprintf(args, sizeof args,
             "--url %s --clients 2 --seconds 2 --mix save=10,read=0,list=0,"
             "export=0,import=0,merge=0,merge_fly=0,generate=0,gen_stream=0,gen_abandon=0,"
             "score=0,delete=0 --json",
             d.base);
    int rc = run_tool(args, &r);
    atomic_store(&t.stop, 1);
    pthread_join(th, NULL);
    CHECKF(rc == 1, "statesoup-load exited %d with %d states deleted behind its back", rc,
           t.stolen);
    /* the thief is done within the first saves, long before the tool verifies: all it took
     * is reported (at most: a deletion racing the verification is not a loss yet) */
    json_int_t lost = jint(r, "totals", "states_lost");
    CHECK(t.stolen == 5);
    CHECKF(lost >= 1 && lost <= t.stolen,
           "the tool reports %lld lost, %d were deleted behind its back", (long long)lost,
           t.stolen);
    CHECK(r && json_is_false(json_object_get(r, "ok")));
    json_decref(r);
    daemon_stop(&d);
}

static void test_refusals(void)
{
    CHECK(run_tool("--url http://10.0.0.1:8080 2>/dev/null", NULL) == 2);
    CHECK(run_tool("--url http://example.com 2>/dev/null", NULL) == 2);
    CHECK(run_tool("--model x 2>/dev/null", NULL) == 2); /* no --data */
    CHECK(run_tool("2>/dev/null", NULL) == 2);           /* no target */
    CHECK(run_tool("--url http://127.0.0.1:1 --kill-cycles 2 2>/dev/null", NULL) == 2);
    CHECK(run_tool("--url http://127.0.0.1:1 --clients 5000 2>/dev/null", NULL) == 2);
    CHECK(run_tool("--url http://127.0.0.1:1 --mix bogus=3 2>/dev/null", NULL) == 2);
    /* each bounded integer option says its range */
    static const char *const ranges[][2] = {
        {"--clients 0", "--clients 0: expected 1..1024"},
        {"--seconds 3601", "--seconds 3601: expected 1..3600"},
        {"--interval x", "--interval x: expected 1..3600"},
        {"--kill-cycles 1001", "--kill-cycles 1001: expected 1..1000"},
        {"--idle 100001", "--idle 100001: expected 0..100000"},
    };
    for (size_t i = 0; i < sizeof ranges / sizeof *ranges; i++) {
        char args[256];
        snprintf(args, sizeof args, "--url http://127.0.0.1:1 %s 2>&1 | grep -qF -- '%s'",
                 ranges[i][0], ranges[i][1]);
        CHECKF(run_tool(args, NULL) == 0, "%s", ranges[i][0]);
    }
    /* allowed, but nothing listens there: a failed run, not a usage error */
    CHECK(run_tool("--url http://127.0.0.1:1 --seconds 1 2>/dev/null", NULL) == 1);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_tmpdir(tmp_root, sizeof tmp_root, "load");
    test_percentiles();
    test_loopback();
    test_refusals();
    test_against_daemon();
    test_detects_loss();
    test_restart_and_kill();
    curl_global_cleanup();
    if (!test_failures) test_rm_rf(tmp_root);
    return test_done("load");
}
