/*
 * test_cli.c - the `statesoup` binary end to end: it is run for real (fork/exec, stdout and
 * stderr captured to files, exit codes checked) against
 *   1. a store directory this test fills through the store API, read offline with --data while
 *      the test still holds it open for writing (ls, show, verify; export with --model, whose
 *      file must import back bit-exact through ss_state_import), and
 *   2. a real statesoupd on 127.0.0.1:0 with API keys (port read from its "listening on" line,
 *      readiness from its "ready" line): save, ls, show, merge, score, generate (streamed ==
 *      non-streamed at temperature 0), export -> import bit-exact, offline export beside the
 *      running daemon, rm, keys (401/403), and the error paths (server errors exit 1 with the
 *      server's code and message, bad usage exits 2, nothing listening names the URL).
 * Every check compares values; waiting is on log lines and process exits, never on a sleep.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "ss_model.h"
#include "ss_store.h"
#include "test_util.h"

#define TINY "models/mamba1-tiny" /* under tests/fixtures; vocab 512, no tokenizer */
#define DEMO "models/demo-mamba1" /* under the source root; has tokenizer.json */

static char cli_path[4096], daemon_path[4096], work[256];

/* ---- helpers --------------------------------------------------------------------------------- */

/* Whole file into a malloc'd NUL-terminated buffer; NULL if unreadable. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0, r;
    char *buf = malloc(cap);
    while (buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n - 1 == 0) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
            }
            buf = nb;
        }
    }
    fclose(f);
    if (!buf) return NULL;
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

/* What one run of the CLI gave. */
typedef struct result {
    int code; /* exit code, or 128 + signal */
    char *out, *err;
    size_t out_len;
} result;

static void result_free(result *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

/* Run `statesoup args...` (NULL-terminated), stdin from /dev/null. */
static void run_cli(result *r, const char *first, ...)
{
    const char *argv[64];
    int n = 0;
    va_list ap;
    argv[n++] = cli_path;
    argv[n++] = first;
    va_start(ap, first);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < 63) argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;

    char out_path[512], err_path[512];
    snprintf(out_path, sizeof out_path, "%s/cli.out", work);
    snprintf(err_path, sizeof err_path, "%s/cli.err", work);
    result_free(r);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY);
        int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || o < 0 || e < 0) _exit(126);
        dup2(in, 0);
        dup2(o, 1);
        dup2(e, 2);
        execv(cli_path, (char *const *)argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    r->code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r->out = slurp(out_path, &r->out_len);
    r->err = slurp(err_path, NULL);
    if (!r->out) r->out = strdup("");
    if (!r->err) r->err = strdup("");
}
#define RUN(r, ...) run_cli(r, __VA_ARGS__, (const char *)NULL)

/* Check the exit code; on a mismatch show what the command printed. */
#define CHECK_CODE(r, want)                                                                        \
    CHECKF((r)->code == (want), "exit %d, want %d\nstdout: %s\nstderr: %s", (r)->code, (want),     \
           (r)->out, (r)->err)

#define CHECK_HAS(hay, needle)                                                                     \
    CHECKF(strstr((hay), (needle)) != NULL, "no '%s' in:\n%s", (needle), (hay))

/* Parse a run's stdout as JSON (NULL and a failed check if it is not). */
static json_t *out_json(const result *r)
{
    json_error_t je;
    json_t *j = json_loads(r->out, JSON_DECODE_ANY, &je);
    CHECKF(j != NULL, "stdout is not JSON (%s): %s", je.text, r->out);
    return j;
}

static const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* Does some line of text start with `prefix` and contain every one of the strings that follow? */
static int has_line(const char *text, const char *prefix, ...)
{
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *end = strchr(l, '\n');
        size_t n = end ? (size_t)(end - l) : strlen(l);
        char *line = strndup(l, n);
        int ok = strncmp(line, prefix, strlen(prefix)) == 0;
        va_list ap;
        va_start(ap, prefix);
        const char *want;
        while (ok && (want = va_arg(ap, const char *)) != NULL) ok = strstr(line, want) != NULL;
        va_end(ap);
        free(line);
        if (ok) return 1;
    }
    return 0;
}
#define HAS_LINE(text, ...) has_line(text, __VA_ARGS__, (const char *)NULL)

/* ---- 1: offline, against a store filled here ------------------------------------------------- */

typedef struct put_state {
    char id[40];
    float *data; /* [state_floats] */
} put_state;

/* Run `n` tokens through the model from the zero state and store the result. */
static void put_from_tokens(ss_store *s, ss_model *m, const char *record, const int32_t *toks,
                            int n, put_state *out)
{
    const ss_model_info *info = ss_model_get_info(m);
    ss_ctx *ctx = NULL;
    ss_state *st = NULL;
    REQUIRE_OK(ss_ctx_new(m, &ctx));
    REQUIRE_OK(ss_state_new(m, &st));
    ss_seq q = {.state = st, .tokens = toks, .n_tokens = n};
    REQUIRE_OK(ss_model_eval(m, ctx, &q, 1, 0));
    out->data = malloc(info->state_bytes);
    memcpy(out->data, ss_state_cdata(st), info->state_bytes);
    char *rec = NULL;
    REQUIRE_OK(ss_store_put(s, record, out->data, info->state_bytes, &rec));
    json_t *j = json_loads(rec, 0, NULL);
    snprintf(out->id, sizeof out->id, "%s", jstr(j, "id"));
    json_decref(j);
    free(rec);
    ss_state_free(st);
    ss_ctx_free(ctx);
}

static void test_offline(void)
{
    char dir[512], rec[1024], file[512], file2[512];
    ss_store *s = NULL;
    ss_model *m = NULL;
    result r = {0};
    snprintf(dir, sizeof dir, "%s/store", work);
    REQUIRE_OK(ss_store_open(&s, dir, NULL));
    REQUIRE_OK(ss_model_open(&m, fixture_path(TINY), NULL));
    const ss_model_info *info = ss_model_get_info(m);
    const int32_t ta[] = {1, 2, 3}, tb[] = {7, 8, 9, 10, 11}, tc[] = {300};

    /* three states of this model (oldest first), one of another model */
    put_state a, b, c, other;
    snprintf(rec, sizeof rec,
             "{\"name\": \"alpha\", \"tags\": [\"t1\", \"t2\"], \"model\": \"%s\", \"n_tokens\": 3,"
             " \"dtype\": \"F32\", \"metadata\": {\"k\": \"v\"}}",
             info->fingerprint);
    put_from_tokens(s, m, rec, ta, 3, &a);
    snprintf(rec, sizeof rec,
             "{\"name\": \"dir/beta\", \"tags\": [\"t1\"], \"model\": \"%s\", \"n_tokens\": 5, "
             "\"dtype\": \"F32\"}",
             info->fingerprint);
    put_from_tokens(s, m, rec, tb, 5, &b);
    snprintf(rec, sizeof rec, "{\"model\": \"%s\", \"n_tokens\": 1, \"dtype\": \"F32\"}",
             info->fingerprint);
    put_from_tokens(s, m, rec, tc, 1, &c);
    snprintf(rec, sizeof rec,
             "{\"name\": \"foreign\", \"model\": \"0123456789abcdef0123456789abcdef\", "
             "\"n_tokens\": 1, \"dtype\": \"F32\"}");
    put_from_tokens(s, m, rec, tc, 1, &other);

    /* ls: a table, newest first; the store stays open for writing in this process meanwhile */
    RUN(&r, "ls", "--data", dir);
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "ID", "NAME", "TAGS", "TOKENS", "SIZE", "CREATED (UTC)"));
    char size[32];
    snprintf(size, sizeof size, "%.1f KiB", info->state_bytes / 1024.0);
    CHECK(HAS_LINE(r.out, a.id, " alpha ", " t1,t2 ", " 3 ", size, " 20"));
    CHECK(HAS_LINE(r.out, b.id, " dir/beta ", " t1 ", " 5 ", size));
    CHECK(HAS_LINE(r.out, c.id, " - ", " - ", " 1 ", size));
    const char *pa = strstr(r.out, a.id), *pc = strstr(r.out, c.id);
    CHECK(pa && pc && pc < pa); /* newest first */

    RUN(&r, "ls", "--data", dir, "--json");
    CHECK_CODE(&r, 0);
    json_t *j = out_json(&r);
    json_t *data = json_object_get(j, "data");
    CHECK(json_array_size(data) == 4);
    CHECK(!strcmp(jstr(json_array_get(data, 0), "id"), other.id));
    CHECK(!strcmp(jstr(json_array_get(data, 3), "id"), a.id));
    CHECK(json_is_null(json_object_get(j, "next_cursor")));
    json_decref(j);

    /* paging: --limit 1 leaves a cursor; --all follows it to the end */
    RUN(&r, "ls", "--data", dir, "--json", "--limit", "1");
    CHECK_CODE(&r, 0);
    j = out_json(&r);
    CHECK(json_array_size(json_object_get(j, "data")) == 1);
    CHECK(json_is_string(json_object_get(j, "next_cursor")));
    json_decref(j);
    RUN(&r, "ls", "--data", dir, "--limit", "1");
    CHECK_CODE(&r, 0);
    CHECK_HAS(r.err, "--all");
    RUN(&r, "ls", "--data", dir, "--json", "--limit", "1", "--all");
    CHECK_CODE(&r, 0);
    j = out_json(&r);
    data = json_object_get(j, "data");
    CHECK(json_array_size(data) == 4);
    CHECK(!strcmp(jstr(json_array_get(data, 1), "id"), c.id));
    CHECK(json_is_null(json_object_get(j, "next_cursor")));
    json_decref(j);

    /* filters */
    RUN(&r, "ls", "--data", dir, "--json", "--tag", "t1");
    j = out_json(&r);
    data = json_object_get(j, "data");
    CHECK(json_array_size(data) == 2);
    CHECK(!strcmp(jstr(json_array_get(data, 0), "name"), "dir/beta"));
    json_decref(j);
    RUN(&r, "ls", "--data", dir, "--prefix", "al");
    CHECK_CODE(&r, 0);
    CHECK(strstr(r.out, a.id) && !strstr(r.out, b.id) && !strstr(r.out, c.id));

    /* show: human-readable and exactly the store's JSON */
    RUN(&r, "show", "--data", dir, "alpha");
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "id", a.id));
    CHECK(HAS_LINE(r.out, "name", "alpha"));
    CHECK(HAS_LINE(r.out, "tags", "t1, t2"));
    CHECK(HAS_LINE(r.out, "model", info->fingerprint));
    CHECK(HAS_LINE(r.out, "tokens", "3"));
    CHECK(HAS_LINE(r.out, "metadata", "{\"k\":\"v\"}"));
    char *want = NULL;
    REQUIRE_OK(ss_store_get_record(s, "dir/beta", &want));
    RUN(&r, "show", "--data", dir, "--json", "dir/beta");
    CHECK_CODE(&r, 0);
    CHECKF(r.out_len == strlen(want) + 1 && !strncmp(r.out, want, strlen(want)), "%s", r.out);
    free(want);
    RUN(&r, "show", "--data", dir, "nope");
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "nope");

    /* verify: every checksum good */
    RUN(&r, "verify", "--data", dir);
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "checked", " 4"));
    CHECK(HAS_LINE(r.out, "bad", " 0"));
    RUN(&r, "verify", "--data", dir, "--json");
    CHECK_CODE(&r, 0);
    j = out_json(&r);
    CHECK(json_integer_value(json_object_get(j, "checked")) == 4);
    CHECK(json_integer_value(json_object_get(j, "bad")) == 0);
    CHECK(json_integer_value(json_object_get(j, "blob_bytes")) ==
          4 * (json_int_t)info->state_bytes);
    json_decref(j);

    /* export: needs --model; the file imports back bit-exact, with the record in its metadata */
    snprintf(file, sizeof file, "%s/alpha.safetensors", work);
    RUN(&r, "export", "--data", dir, "alpha", "-o", file);
    CHECK_CODE(&r, 2);
    CHECK_HAS(r.err, "--model");
    RUN(&r, "export", "--data", dir, "--model", fixture_path(TINY), "alpha", "-o", file);
    CHECK_CODE(&r, 0);
    size_t flen = 0;
    char *fbuf = slurp(file, &flen);
    float *back = malloc(info->state_bytes);
    char *meta = NULL;
    CHECK(fbuf != NULL);
    if (fbuf) {
        CHECK_OK(ss_state_import(m, (const uint8_t *)fbuf, flen, back, &meta));
        CHECK(memcmp(back, a.data, info->state_bytes) == 0);
        json_t *mj = json_loads(meta ? meta : "{}", 0, NULL);
        json_t *rj = json_loads(jstr(mj, "record"), 0, NULL);
        CHECK(!strcmp(jstr(rj, "id"), a.id));
        CHECK(!strcmp(jstr(mj, "model_fingerprint"), info->fingerprint));
        json_decref(rj);
        json_decref(mj);
        free(meta);
        meta = NULL;
    }
    /* to stdout when it is not a terminal: the same bytes */
    RUN(&r, "export", "--data", dir, "--model", fixture_path(TINY), a.id);
    CHECK_CODE(&r, 0);
    CHECK(fbuf && r.out_len == flen && memcmp(r.out, fbuf, flen) == 0);
    free(fbuf);
    /* BF16: half the bytes for the floats, every value within bf16 rounding */
    snprintf(file2, sizeof file2, "%s/beta16.safetensors", work);
    RUN(&r, "export", "--data", dir, "--model", fixture_path(TINY), "dir/beta", "--dtype", "bf16",
        "-o", file2);
    CHECK_CODE(&r, 0);
    fbuf = slurp(file2, &flen);
    CHECK(fbuf && flen < info->state_bytes / 2 + 2048);
    if (fbuf) {
        CHECK_OK(ss_state_import(m, (const uint8_t *)fbuf, flen, back, NULL));
        size_t bad = 0;
        for (size_t i = 0; i < info->state_floats; i++) {
            if (fabsf(back[i] - b.data[i]) > fabsf(b.data[i]) * (1.0f / 256)) bad++;
        }
        CHECKF(bad == 0, "%zu values off by more than bf16 rounding", bad);
    }
    free(fbuf);
    free(back);
    /* a state of another model is refused, naming both fingerprints */
    RUN(&r, "export", "--data", dir, "--model", fixture_path(TINY), "foreign", "-o", file2);
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "0123456789abcdef0123456789abcdef");
    CHECK_HAS(r.err, info->fingerprint);
    RUN(&r, "export", "--data", dir, "--model", fixture_path(TINY), "nope", "-o", file2);
    CHECK_CODE(&r, 1);
    CHECK(access(file2, F_OK) == 0); /* the earlier file was not clobbered by the failures */

    /* usage errors */
    RUN(&r, "ls", "--data", dir, "--url", "http://127.0.0.1:1");
    CHECK_CODE(&r, 2);
    RUN(&r, "ls", "--bogus");
    CHECK_CODE(&r, 2);
    RUN(&r, "verify");
    CHECK_CODE(&r, 2);
    RUN(&r, "ls", "--limit", "0", "--data", dir);
    CHECK_CODE(&r, 2);
    RUN(&r, "frobnicate");
    CHECK_CODE(&r, 2);
    RUN(&r, "ls", "--data", "/nonexistent/statesoup-store");
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "/nonexistent/statesoup-store");

    /* every command has a --help that exits 0 and shows an example */
    static const char *const cmds[] = {"generate", "score", "ls", "show", "save", "merge",
                                       "export", "import", "rm", "verify", "models", "health",
                                       "plan"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        RUN(&r, cmds[i], "--help");
        CHECK_CODE(&r, 0);
        CHECKF(strstr(r.out, "usage: statesoup ") && strstr(r.out, "example"), "%s --help",
               cmds[i]);
    }

    /* generate --model stays local */
    RUN(&r, "generate", "--model", fixture_path(TINY), "--tokens", "1,2,3", "--ids",
        "--temperature", "0", "--max-tokens", "4");
    CHECK_CODE(&r, 0);
    int ids[4], n = sscanf(r.out, "%d %d %d %d", &ids[0], &ids[1], &ids[2], &ids[3]);
    CHECKF(n == 4, "%s", r.out);

    result_free(&r);
    free(a.data);
    free(b.data);
    free(c.data);
    free(other.data);
    ss_model_close(m);
    ss_store_close(s);
}

/* ---- 2: against a running statesoupd --------------------------------------------------------- */

/* Record of stdout JSON with the given name (checks the run succeeded). */
static json_t *json_ok(result *r)
{
    CHECK_CODE(r, 0);
    return out_json(r);
}

static void test_daemon(void)
{
    char data_dir[512], url[256], file[512], file2[512], demo[4096], keys[512];
    result r = {0};
    srv d;
    json_t *j = NULL, *intro = NULL, *dict = NULL, *soup = NULL, *models = NULL;
    ss_model *m = NULL;

    snprintf(data_dir, sizeof data_dir, "%s/daemon-data", work);
    snprintf(demo, sizeof demo, "%s/%s", test_source_root(), DEMO);
    /* auth on: every command below sends the write key from $STATESOUP_API_KEY */
    snprintf(keys, sizeof keys, "%s/keys", work);
    FILE *kf = fopen(keys, "w");
    if (!kf) {
        perror(keys);
        exit(1);
    }
    fputs("key-write-0123456789 write\nkey-read-0123456789 read\nkey-admin-0123456789 admin\n"
          "key-team-0123456789 write tenant=team\n",
          kf);
    fclose(kf);
    setenv("STATESOUP_API_KEY", "key-write-0123456789", 1);
    fflush(stdout);
    fflush(stderr);
    int up = daemon_start(&d, demo, data_dir, "--api-keys", keys, (char *)NULL) == 0;
    if (!up) {
        test_failures++;
        goto stop;
    }
    snprintf(url, sizeof url, "%s", d.base);

    /* health, with the URL from the environment */
    setenv("STATESOUP_URL", url, 1);
    RUN(&r, "health");
    CHECK_CODE(&r, 0);
    CHECK(!strcmp(r.out, "ok\n"));
    unsetenv("STATESOUP_URL");

    /* keys: none or an unknown one is refused (401); a read key may read but not delete (403) */
    unsetenv("STATESOUP_API_KEY");
    RUN(&r, "ls", "--url", url);
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "unauthorized");
    setenv("STATESOUP_API_KEY", "key-write-0123456789", 1);
    RUN(&r, "ls", "--url", url, "--api-key", "not-a-key");
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "unknown API key");

    /* models: the table and the JSON agree with the checkpoint */
    REQUIRE_OK(ss_model_open(&m, demo, NULL));
    const ss_model_info *info = ss_model_get_info(m);
    RUN(&r, "models", "--url", url);
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "ID", "ARCHITECTURE", "FINGERPRINT"));
    CHECK(HAS_LINE(r.out, "demo-mamba1", "MambaForCausalLM", info->fingerprint));
    RUN(&r, "models", "--url", url, "--json");
    models = json_ok(&r);
    json_t *m0 = json_array_get(json_object_get(models, "data"), 0);
    CHECK(!strcmp(jstr(m0, "fingerprint"), info->fingerprint));
    CHECK(json_integer_value(json_object_get(m0, "state_bytes")) == (json_int_t)info->state_bytes);

    /* save: a table-less record view, then JSON */
    RUN(&r, "save", "--url", url, "--name", "intro", "--tag", "demo", "--prompt",
        "Dictionary:\napple = red\nsky = blue\n\n");
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "name", "intro"));
    CHECK(HAS_LINE(r.out, "tags", "demo"));
    CHECK(HAS_LINE(r.out, "model", info->fingerprint));
    RUN(&r, "show", "--url", url, "intro", "--json");
    intro = json_ok(&r);
    CHECK(!strcmp(jstr(intro, "name"), "intro"));
    CHECK(json_integer_value(json_object_get(intro, "n_tokens")) > 5);
    /* the state's floats, then its decay's (docs/api.md) */
    CHECK(json_integer_value(json_object_get(intro, "bytes")) ==
          (json_int_t)(info->state_bytes + info->decay_floats * sizeof(float)));
    RUN(&r, "save", "--url", url, "--name", "dict/b", "--tag", "demo,b", "--tokens",
        "100,200,300", "--json");
    dict = json_ok(&r);
    CHECK(!strcmp(jstr(dict, "name"), "dict/b"));
    CHECK(json_integer_value(json_object_get(dict, "n_tokens")) == 3);
    CHECK(json_array_size(json_object_get(dict, "tags")) == 2);
    RUN(&r, "save", "--url", url, "--name", "cont", "--from", "intro", "--tokens", "5,6",
        "--json");
    j = json_ok(&r);
    CHECK(json_integer_value(json_object_get(j, "n_tokens")) ==
          json_integer_value(json_object_get(intro, "n_tokens")) + 2);
    json_decref(j);

    /* search: the state itself, or the text it was made from (the same state), scores 1 */
    RUN(&r, "search", "--url", url, "--state", "intro", "-k", "2", "--json");
    j = json_ok(&r);
    json_t *hit = json_array_get(json_object_get(j, "data"), 0);
    CHECK(json_array_size(json_object_get(j, "data")) == 2);
    CHECK(!strcmp(jstr(json_object_get(hit, "state"), "name"), "intro"));
    CHECK(fabs(json_number_value(json_object_get(hit, "score")) - 1) < 1e-5);
    json_decref(j);
    RUN(&r, "search", "--url", url, "-k", "1", "--json",
        "Dictionary:\napple = red\nsky = blue\n\n");
    j = json_ok(&r);
    hit = json_array_get(json_object_get(j, "data"), 0);
    CHECK(!strcmp(jstr(json_object_get(hit, "state"), "name"), "intro"));
    CHECK(fabs(json_number_value(json_object_get(hit, "score")) - 1) < 1e-5);
    json_decref(j);
    RUN(&r, "search", "--url", url, "--tag", "b", "--tokens", "100,200,300");
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "", "RANK", "SCORE", "ID", "NAME"));
    CHECK(HAS_LINE(r.out, "", "1.0000 ", jstr(dict, "id"), " dict/b "));
    RUN(&r, "search", "--url", url);
    CHECK_CODE(&r, 2);
    RUN(&r, "search", "--url", url, "--state", "nope");
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "no state named");

    /* children, stats, similarity, whoami: the table says what the server's JSON says */
    RUN(&r, "children", "--url", url, "intro");
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "intro (", jstr(intro, "id"), "): 1 state made from it"));
    CHECK(HAS_LINE(r.out, "    1       1  st_", " cont ", " intro "));
    RUN(&r, "children", "--url", url, "intro", "--depth", "3", "--json");
    j = json_ok(&r);
    hit = json_array_get(json_object_get(j, "data"), 0);
    CHECK(json_array_size(json_object_get(j, "data")) == 1);
    CHECK(!strcmp(jstr(json_object_get(hit, "state"), "name"), "cont"));
    CHECK(!strcmp(jstr(hit, "parent"), jstr(intro, "id")));
    json_decref(j);
    RUN(&r, "children", "--url", url, "intro", "--depth", "0");
    CHECK_CODE(&r, 2);
    RUN(&r, "children", "--url", url, "nope");
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "no state named");
    RUN(&r, "stats", "--url", url, "intro", "--json");
    j = json_ok(&r);
    CHECK(json_integer_value(json_object_get(j, "n_layers")) == info->n_layer);
    char fig[64];
    snprintf(fig, sizeof fig, "%.6g", json_number_value(json_object_get(j, "norm")));
    RUN(&r, "stats", "--url", url, "intro");
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "intro (", "): 8 state layers"));
    CHECK(HAS_LINE(r.out, "LAYER", "CONV", "SSM", "NORM"));
    CHECK(HAS_LINE(r.out, "  all", fig));
    json_t *l0 = json_array_get(json_object_get(j, "layers"), 7);
    snprintf(fig, sizeof fig, "%.6g", json_number_value(json_object_get(l0, "ssm_norm")));
    CHECK(HAS_LINE(r.out, "    7", fig));
    json_decref(j);
    RUN(&r, "similarity", "--url", url, "intro", "dict/b", "intro", "--per-layer", "--json");
    j = json_ok(&r);
    const json_t *sim = json_object_get(j, "similarity");
    CHECK(json_array_size(sim) == 3 && json_array_size(json_object_get(j, "layers")) == 8);
    CHECK(fabs(json_number_value(json_array_get(json_array_get(sim, 0), 2)) - 1) < 1e-6);
    snprintf(fig, sizeof fig, "%.4f",
             json_number_value(json_array_get(json_array_get(sim, 0), 1)));
    CHECK(strcmp(fig, "1.0000") != 0);
    RUN(&r, "similarity", "--url", url, "intro", "dict/b", "intro");
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "", "intro", "dict/b", "intro"));
    CHECK(HAS_LINE(r.out, "intro ", " 1.0000  ", fig, " 1.0000"));
    CHECK(HAS_LINE(r.out, "dict/b", fig, " 1.0000  ", fig));
    json_decref(j);
    RUN(&r, "similarity", "--url", url);
    CHECK_CODE(&r, 2);
    RUN(&r, "whoami", "--url", url, "--api-key", "key-read-0123456789");
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "scope read, tenant (default)"));
    RUN(&r, "whoami", "--url", url, "--api-key", "key-team-0123456789");
    CHECK(HAS_LINE(r.out, "scope write, tenant team"));

    /* key-new: a fresh line for the keys file; appended and reloaded (SIGHUP), the key works */
    RUN(&r, "key-new", "--scope", "read", "--tenant", "team");
    CHECK_CODE(&r, 0);
    char newkey[80] = "";
    CHECK(strlen(r.out) == 3 + 64 + strlen(" read tenant=team\n") && !strncmp(r.out, "ss_", 3) &&
          strspn(r.out + 3, "0123456789abcdef") == 64 &&
          !strcmp(r.out + 67, " read tenant=team\n"));
    snprintf(newkey, sizeof newkey, "%.67s", r.out);
    FILE *kf2 = fopen(keys, "a");
    if (kf2) {
        fputs(r.out, kf2);
        fclose(kf2);
    }
    RUN(&r, "key-new");
    CHECK(HAS_LINE(r.out, "ss_", " write") && strncmp(r.out, newkey, 67) != 0);
    kill(d.pid, SIGHUP);
    CHECK(daemon_log_has(&d, "SIGHUP: 5 API keys reloaded"));
    RUN(&r, "whoami", "--url", url, "--api-key", newkey);
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "scope read, tenant team"));
    RUN(&r, "key-new", "--scope", "root");
    CHECK_CODE(&r, 2);
    RUN(&r, "key-new", "--tenant", "no spaces");
    CHECK_CODE(&r, 2);
    RUN(&r, "key-new", "--rate", "100/m", "--scope", "admin");
    CHECK(HAS_LINE(r.out, "ss_", " admin rate=100/m"));
    RUN(&r, "key-new", "--rate", "fast");
    CHECK_CODE(&r, 2);

    /* prune: three states tagged prn; a dry run deletes nothing, --keep 1 spares the newest,
     * --older-than 1d spares a new one, a filter is required */
    const char *prn[3] = {"prn-1", "prn-2", "prn-3"};
    char prn_id[3][40];
    for (int i = 0; i < 3; i++) {
        RUN(&r, "save", "--url", url, "--name", prn[i], "--tag", "prn", "--tokens", "7,8",
            "--json");
        j = json_ok(&r);
        snprintf(prn_id[i], sizeof prn_id[i], "%s", jstr(j, "id"));
        json_decref(j);
    }
    RUN(&r, "prune", "--url", url, "--tag", "prn", "--dry-run");
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, prn_id[0], " prn-1 ", " prn "));
    CHECK(HAS_LINE(r.out, "would delete 3 states (", "(--dry-run: nothing deleted)"));
    RUN(&r, "show", "--url", url, "prn-1");
    CHECK_CODE(&r, 0);
    RUN(&r, "prune", "--url", url, "--tag", "prn", "--keep", "1", "--json");
    j = json_ok(&r);
    const json_t *del = json_object_get(j, "deleted");
    CHECK(json_array_size(del) == 2 && json_integer_value(json_object_get(j, "kept")) == 1 &&
          json_array_size(json_object_get(j, "failed")) == 0);
    CHECK(!strcmp(jstr(json_array_get(del, 0), "name"), "prn-2") &&
          !strcmp(jstr(json_array_get(del, 1), "name"), "prn-1"));
    json_decref(j);
    RUN(&r, "show", "--url", url, "prn-1");
    CHECK_CODE(&r, 1);
    RUN(&r, "prune", "--url", url, "--tag", "prn", "--older-than", "1d");
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "deleted 0 states"));
    RUN(&r, "prune", "--url", url, "--prefix", "prn-", "--older-than", "0s");
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, prn_id[2], " prn-3 "));
    CHECK(HAS_LINE(r.out, "deleted 1 state ("));
    RUN(&r, "show", "--url", url, "prn-3");
    CHECK_CODE(&r, 1);
    RUN(&r, "prune", "--url", url, "--keep", "3");
    CHECK_CODE(&r, 2);
    RUN(&r, "prune", "--url", url, "--older-than", "soon");
    CHECK_CODE(&r, 2);

    /* ls: table and JSON, newest first */
    RUN(&r, "ls", "--url", url);
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, jstr(intro, "id"), " intro ", " demo "));
    CHECK(HAS_LINE(r.out, jstr(dict, "id"), " dict/b ", " demo,b ", " 3 "));
    RUN(&r, "ls", "--url", url, "--json", "--tag", "demo");
    j = json_ok(&r);
    json_t *data = json_object_get(j, "data");
    CHECK(json_array_size(data) == 2);
    CHECK(!strcmp(jstr(json_array_get(data, 0), "id"), jstr(dict, "id")));
    CHECK(!strcmp(jstr(json_array_get(data, 1), "id"), jstr(intro, "id")));
    json_decref(j);
    RUN(&r, "ls", "--url", url, "--json", "--limit", "1", "--all");
    j = json_ok(&r);
    CHECK(json_array_size(json_object_get(j, "data")) == 3);
    json_decref(j);

    /* show by a name holding '/' and by id: the same record */
    RUN(&r, "show", "--url", url, "--json", jstr(dict, "id"));
    j = json_ok(&r);
    CHECK(json_equal(j, dict));
    json_decref(j);
    RUN(&r, "show", "--url", url, "dict/b", "--api-key", "key-read-0123456789");
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "checksum", jstr(dict, "checksum")));
    RUN(&r, "rm", "--url", url, "dict/b", "--api-key", "key-read-0123456789");
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "forbidden");
    CHECK(!HAS_LINE(r.out, "deleted"));

    /* tenants: the team's key sees none of the default tenant's states until an admin shares
     * one; then ls has a TENANT column; share needs an admin key */
    RUN(&r, "ls", "--url", url, "--api-key", "key-team-0123456789");
    CHECK_CODE(&r, 0);
    CHECK(!strstr(r.out, jstr(dict, "id")) && !strstr(r.out, "TENANT"));
    RUN(&r, "show", "--url", url, "--api-key", "key-team-0123456789", jstr(dict, "id"));
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "no state with id");
    RUN(&r, "share", "--url", url, "dict/b");
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "forbidden");
    RUN(&r, "share", "--url", url, "dict/b", "--api-key", "key-admin-0123456789");
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "shared", jstr(dict, "id")));
    RUN(&r, "ls", "--url", url, "--api-key", "key-team-0123456789");
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "ID", "NAME", "TENANT", "TAGS", "TOKENS"));
    CHECK(HAS_LINE(r.out, jstr(dict, "id"), " dict/b ", " - (shared) "));
    RUN(&r, "show", "--url", url, "--api-key", "key-team-0123456789", jstr(dict, "id"));
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "tenant", "- (shared)"));
    /* prune as team: the shared state is in its listing but not its own, so never pruned */
    RUN(&r, "prune", "--url", url, "--api-key", "key-team-0123456789", "--tag", "b",
        "--older-than", "0s");
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "deleted 0 states (0 B); 0 kept by --keep, 0 failed"));
    RUN(&r, "show", "--url", url, "dict/b");
    CHECK_CODE(&r, 0);
    RUN(&r, "share", "--url", url, "--off", "--json", "--api-key", "key-admin-0123456789",
        "dict/b");
    j = json_ok(&r);
    CHECK(json_equal(json_array_get(json_object_get(j, "data"), 0), dict)); /* as before */
    json_decref(j);
    RUN(&r, "show", "--url", url, "--api-key", "key-team-0123456789", jstr(dict, "id"));
    CHECK_CODE(&r, 1);

    /* merge: parents and weights recorded */
    RUN(&r, "merge", "--url", url, "--name", "soup", "--tag", "soup", "intro=0.5", "dict/b=0.5",
        "--json");
    soup = json_ok(&r);
    json_t *par = json_object_get(soup, "parents");
    CHECK(json_array_size(par) == 2);
    CHECK(!strcmp(jstr(json_array_get(par, 0), "id"), jstr(intro, "id")));
    CHECK(json_number_value(json_object_get(json_array_get(par, 1), "weight")) == 0.5);
    RUN(&r, "show", "--url", url, "soup");
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "parents", jstr(intro, "id"), "0.5"));
    CHECK(HAS_LINE(r.out, " ", jstr(dict, "id"), "0.5"));

    /* score: the stored soup and the same soup on the fly give the same numbers */
    RUN(&r, "score", "--url", url, "--state", "soup", "--context", "Query:\napple =",
        "--continuation", " red\nsky = blue", "--json");
    j = json_ok(&r);
    json_int_t n_tok = json_integer_value(json_object_get(j, "n_tokens"));
    double sum = json_number_value(json_object_get(j, "logprob_sum"));
    double ppl = json_number_value(json_object_get(j, "perplexity"));
    CHECK(n_tok >= 4 && sum < 0 && isfinite(sum));
    CHECKF(fabs(ppl - exp(-sum / (double)n_tok)) < 1e-6 * ppl, "ppl %g sum %g n %lld", ppl, sum,
           (long long)n_tok);
    CHECK(json_array_size(json_object_get(j, "token_logprobs")) == (size_t)n_tok);
    json_decref(j);
    RUN(&r, "score", "--url", url, "--merge", "intro=0.5,dict/b=0.5", "--context",
        "Query:\napple =", "--continuation", " red\nsky = blue", "-v");
    CHECK_CODE(&r, 0);
    char want[64];
    snprintf(want, sizeof want, " %lld", (long long)n_tok);
    CHECK(HAS_LINE(r.out, "tokens", want));
    snprintf(want, sizeof want, " %.6f", sum);
    CHECK(HAS_LINE(r.out, "logprob_sum", want));
    /* with a context every token is predicted: one line per token, adding up to the sum */
    int n_lines = 0;
    double line_sum = 0;
    for (const char *p = strstr(r.out, "  ["); p; p = strstr(p + 1, "  [")) {
        int idx;
        double lp;
        if (sscanf(p, "  [%d] %lf", &idx, &lp) == 2 && idx == n_lines) {
            n_lines++;
            line_sum += lp;
        }
    }
    CHECK(n_lines == (int)n_tok);
    CHECKF(fabs(line_sum - sum) < 1e-5 * (double)n_tok, "%f vs %f", line_sum, sum);
    RUN(&r, "score", "--url", url, "--state", "soup");
    CHECK_CODE(&r, 2); /* nothing to score */

    /* generate: streamed text == the non-streamed reply's text at temperature 0 */
    RUN(&r, "generate", "--url", url, "--state", "intro", "--prompt", "Query:\napple =",
        "--max-tokens", "24", "--temperature", "0", "--json");
    j = json_ok(&r);
    const char *full = jstr(j, "text");
    CHECK(strlen(full) > 0);
    CHECK(json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")) ==
          24 || !strcmp(jstr(j, "finish_reason"), "eos"));
    RUN(&r, "generate", "--url", url, "--state", "intro", "--prompt", "Query:\napple =",
        "--max-tokens", "24", "--temperature", "0", "-v");
    CHECK_CODE(&r, 0);
    CHECKF(!strcmp(r.out, full), "streamed '%s' vs '%s'", r.out, full);
    CHECK_HAS(r.err, "finish: ");
    RUN(&r, "generate", "--url", url, "--state", "intro", "--prompt", "Query:\napple =",
        "--max-tokens", "24", "--temperature", "0", "--no-stream");
    CHECK_CODE(&r, 0);
    CHECK(!strcmp(r.out, full));
    json_decref(j);
    /* a stop string cuts the streamed text where the reply's text is cut */
    RUN(&r, "generate", "--url", url, "--merge", "intro=1", "--prompt", "Query:\napple =",
        "--max-tokens", "24", "--temperature", "0", "--stop", "\\n", "--json");
    j = json_ok(&r);
    CHECK(strchr(jstr(j, "text"), '\n') == NULL);
    char *stopped = strdup(jstr(j, "text"));
    json_decref(j);
    RUN(&r, "generate", "--url", url, "--merge", "intro=1", "--prompt", "Query:\napple =",
        "--max-tokens", "24", "--temperature", "0", "--stop", "\\n", "--save-state", "after");
    CHECK_CODE(&r, 0);
    CHECK(!strcmp(r.out, stopped));
    CHECK_HAS(r.err, "saved state after");
    free(stopped);
    RUN(&r, "show", "--url", url, "after");
    CHECK_CODE(&r, 0);
    /* token ids work without text */
    RUN(&r, "generate", "--url", url, "--tokens", "1,2,3", "--max-tokens", "3", "--temperature",
        "0", "--json");
    j = json_ok(&r);
    CHECK(json_array_size(json_object_get(j, "tokens")) == 3);
    /* --ids prints the same ids, streamed or not; --logprobs one stderr line per token */
    char ids[256] = "", line[64];
    size_t ti;
    json_t *tv;
    json_array_foreach(json_object_get(j, "tokens"), ti, tv) {
        snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%lld", ti ? " " : "",
                 (long long)json_integer_value(tv));
    }
    strcat(ids, "\n");
    RUN(&r, "generate", "--url", url, "--tokens", "1,2,3", "--max-tokens", "3", "--temperature",
        "0", "--ids", "--logprobs");
    CHECK_CODE(&r, 0);
    CHECKF(!strcmp(r.out, ids), "'%s' vs '%s'", r.out, ids);
    json_array_foreach(json_object_get(j, "tokens"), ti, tv) {
        snprintf(line, sizeof line, "[%zu] id %lld logprob -", ti,
                 (long long)json_integer_value(tv));
        CHECK(HAS_LINE(r.err, line, ".")); /* a number, not "-" */
    }
    RUN(&r, "generate", "--url", url, "--tokens", "1,2,3", "--max-tokens", "3", "--temperature",
        "0", "--ids", "--no-stream");
    CHECK_CODE(&r, 0);
    CHECK(!strcmp(r.out, ids));
    json_decref(j);
    /* --seed reaches the daemon: sampling at temperature 1, the streamed ids equal the ids of
     * the --json reply with the same seed; bad seeds and local-only options are usage errors */
    RUN(&r, "generate", "--url", url, "--tokens", "1,2,3", "--max-tokens", "12", "--temperature",
        "1", "--seed", "4242", "--json");
    j = json_ok(&r);
    ids[0] = '\0';
    json_array_foreach(json_object_get(j, "tokens"), ti, tv) {
        snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%lld", ti ? " " : "",
                 (long long)json_integer_value(tv));
    }
    strcat(ids, "\n");
    json_decref(j);
    RUN(&r, "generate", "--url", url, "--tokens", "1,2,3", "--max-tokens", "12", "--temperature",
        "1", "--seed", "4242", "--ids");
    CHECK_CODE(&r, 0);
    CHECKF(!strcmp(r.out, ids), "'%s' vs '%s'", r.out, ids);
    static const char *const bad_seeds[] = {"-1", "x", "9223372036854775808", ""};
    for (size_t i = 0; i < sizeof bad_seeds / sizeof *bad_seeds; i++) {
        RUN(&r, "generate", "--url", url, "--tokens", "1", "--seed", bad_seeds[i]);
        CHECK_CODE(&r, 2);
        CHECK_HAS(r.err, "expected an integer in [0, 2^63)");
    }
    RUN(&r, "generate", "--url", url, "--tokens", "1", "--threads", "2");
    CHECK_CODE(&r, 2);
    CHECK_HAS(r.err, "--threads works only locally");
    RUN(&r, "generate", "--url", url, "--tokens", "1", "--mod", "x");
    CHECK_CODE(&r, 2);
    CHECK_HAS(r.err, "write --model in full");
    /* a prompt or context read from a file is the same text as given inline */
    char pfile[600];
    snprintf(pfile, sizeof pfile, "%s/prompt.txt", work);
    FILE *pf = fopen(pfile, "w");
    CHECK(pf && fputs("Query:\napple =", pf) >= 0);
    if (pf) fclose(pf);
    RUN(&r, "generate", "--url", url, "--state", "intro", "--prompt", "Query:\napple =",
        "--max-tokens", "8", "--temperature", "0");
    CHECK_CODE(&r, 0);
    char *inline_out = strdup(r.out);
    RUN(&r, "generate", "--url", url, "--state", "intro", "--prompt-file", pfile, "--max-tokens",
        "8", "--temperature", "0");
    CHECK_CODE(&r, 0);
    CHECKF(!strcmp(r.out, inline_out), "'%s' vs '%s'", r.out, inline_out);
    free(inline_out);
    RUN(&r, "score", "--url", url, "--state", "soup", "--context-file", pfile, "--continuation",
        " red\nsky = blue", "--json");
    j = json_ok(&r);
    CHECK(fabs(json_number_value(json_object_get(j, "logprob_sum")) - sum) <= 1e-5 * fabs(sum));
    json_decref(j);
    /* one source per text, and token ids that are not ids, name their option */
    RUN(&r, "generate", "--url", url, "--prompt", "a", "--tokens", "1");
    CHECK_CODE(&r, 2);
    CHECK_HAS(r.err, "give only one of --prompt, --prompt-file, --tokens");
    RUN(&r, "generate", "--url", url, "--tokens", "1,x");
    CHECK_CODE(&r, 2);
    CHECK_HAS(r.err, "--tokens: ");
    RUN(&r, "score", "--url", url, "--context", "a", "--context-file", pfile, "--continuation",
        "b");
    CHECK_CODE(&r, 2);
    CHECK_HAS(r.err, "give only one of --context, --context-file, --context-tokens");
    RUN(&r, "score", "--url", url, "--context-tokens", "1,x", "--continuation", "b");
    CHECK_CODE(&r, 2);
    CHECK_HAS(r.err, "--context-tokens: ");

    /* export -> import: the imported state has the same checksum (the blob is bit-exact) */
    snprintf(file, sizeof file, "%s/soup.safetensors", work);
    RUN(&r, "export", "--url", url, "soup", "-o", file);
    CHECK_CODE(&r, 0);
    RUN(&r, "import", "--url", url, file, "--name", "soup-copy", "--tag", "imported", "--json");
    j = json_ok(&r);
    CHECK(!strcmp(jstr(j, "checksum"), jstr(soup, "checksum")));
    CHECK(strcmp(jstr(j, "id"), jstr(soup, "id")) != 0);
    CHECK(!strcmp(json_string_value(json_array_get(json_object_get(j, "tags"), 0)), "imported"));
    json_decref(j);
    /* as text: the new record, its name and tags escaped into the query and read back whole */
    RUN(&r, "import", "--url", url, file, "--name", "soup:copy/2", "--tag", "x/y", "--tag",
        "p:q");
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "name", "soup:copy/2"));
    CHECK(HAS_LINE(r.out, "tags", "x/y, p:q"));
    CHECK(HAS_LINE(r.out, "checksum", jstr(soup, "checksum")));
    RUN(&r, "rm", "--url", url, "soup:copy/2");
    CHECK_CODE(&r, 0);
    RUN(&r, "import", "--url", url, file, "--name", "soup-copy");
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "already_exists");
    CHECK_HAS(r.err, "soup-copy");
    /* a state file of another model (the offline part's tiny one) is refused */
    snprintf(file2, sizeof file2, "%s/alpha.safetensors", work);
    RUN(&r, "import", "--url", url, file2, "--name", "alien");
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "model_mismatch");
    /* a failed export leaves no file behind */
    snprintf(file2, sizeof file2, "%s/nope.safetensors", work);
    RUN(&r, "export", "--url", url, "nope", "-o", file2);
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "not_found");
    CHECK(access(file2, F_OK) != 0 && errno == ENOENT);
    DIR *wd = opendir(work);
    for (struct dirent *de; wd && (de = readdir(wd));) {
        CHECKF(strncmp(de->d_name, "nope.", 5) != 0, "left behind: %s", de->d_name);
    }
    if (wd) closedir(wd);
    /* the daemon's file and an offline export beside the running daemon hold the same floats */
    snprintf(file2, sizeof file2, "%s/soup-offline.safetensors", work);
    RUN(&r, "export", "--data", data_dir, "--model", demo, "soup", "-o", file2);
    CHECK_CODE(&r, 0);
    size_t l1 = 0, l2 = 0;
    char *f1 = slurp(file, &l1), *f2 = slurp(file2, &l2);
    float *s1 = malloc(info->state_bytes), *s2 = malloc(info->state_bytes);
    CHECK(f1 && f2);
    if (f1 && f2) {
        char *m1 = NULL, *m2 = NULL;
        CHECK_OK(ss_state_import(m, (const uint8_t *)f1, l1, s1, &m1));
        CHECK_OK(ss_state_import(m, (const uint8_t *)f2, l2, s2, &m2));
        CHECK(memcmp(s1, s2, info->state_bytes) == 0);
        json_t *j1 = json_loads(m1, 0, NULL), *j2 = json_loads(m2, 0, NULL);
        CHECK(!strcmp(jstr(j1, "record"), jstr(j2, "record")));
        json_decref(j1);
        json_decref(j2);
        free(m1);
        free(m2);
    }
    free(f1);
    free(f2);
    free(s1);
    free(s2);
    RUN(&r, "export", "--url", url, "soup", "--dtype", "F16", "-o", file2);
    CHECK_CODE(&r, 0);
    struct stat sb;
    /* BF16 tensors, and the decay in F32 */
    CHECK(stat(file2, &sb) == 0 &&
          (size_t)sb.st_size < info->state_bytes / 2 + info->decay_floats * 4 + 4096);
    RUN(&r, "ls", "--data", data_dir, "--json", "--all");
    j = json_ok(&r);
    CHECK(json_array_size(json_object_get(j, "data")) == 6);
    json_decref(j);
    RUN(&r, "verify", "--data", data_dir);
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "bad", " 0"));

    /* rm: each deleted; an unknown one fails with the server's message, the others still go */
    RUN(&r, "rm", "--url", url, "soup-copy", "nope", "after");
    CHECK_CODE(&r, 1);
    CHECK(HAS_LINE(r.out, "deleted soup-copy"));
    CHECK(HAS_LINE(r.out, "deleted after"));
    CHECK_HAS(r.err, "not_found");
    CHECK_HAS(r.err, "nope");
    RUN(&r, "show", "--url", url, "soup-copy");
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "not_found");
    CHECK_HAS(r.err, "soup-copy");

    /* errors: the server's code and message, exit 1; bad usage exit 2 */
    RUN(&r, "save", "--url", url, "--name", "intro", "--tokens", "1");
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "already_exists");
    RUN(&r, "generate", "--url", url, "--state", "nope", "--prompt", "x");
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "nope");
    RUN(&r, "merge", "--url", url, "--name", "x", "intro");
    CHECK_CODE(&r, 2);
    RUN(&r, "merge", "--url", url, "--name", "x", "intro=nan");
    CHECK_CODE(&r, 2);
    RUN(&r, "generate", "--url", url, "--prompt", "x", "--temperature", "-1");
    CHECK_CODE(&r, 2);
    RUN(&r, "generate", "--url", url, "--prompt", "x", "--state-out", "f");
    CHECK_CODE(&r, 2);
    RUN(&r, "export", "--url", url, "soup", "--dtype", "F64", "-o", file2);
    CHECK_CODE(&r, 2);
    RUN(&r, "ls", "--url", "ftp://x");
    CHECK_CODE(&r, 2);

    /* prompt caching: save with checkpoints, then generate / score with --reuse resume from the
     * longest stored prefix and answer as without it */
    {
        const char *sys = "Dictionary:\ncase = word\nfor = next\nthis = options\n";
        const char *ask = "Dictionary:\ncase = word\nfor = next\nthis = options\nmake =";
        RUN(&r, "save", "--url", url, "--name", "pc-sys", "--prompt", sys, "--checkpoints", "4,8",
            "--json");
        j = json_ok(&r);
        json_t *cps = json_object_get(j, "checkpoints");
        CHECKF(json_array_size(cps) == 2 &&
                   !strcmp(jstr(json_array_get(cps, 1), "name"), "pc-sys:8") &&
                   json_integer_value(json_object_get(json_array_get(cps, 0), "n_tokens")) == 4,
               "save --checkpoints: %s", r.out);
        json_decref(j);
        j = NULL;
        RUN(&r, "save", "--url", url, "--prompt", sys, "--checkpoints", "4,2");
        CHECK_CODE(&r, 1);
        CHECK_HAS(r.err, "strictly increasing");
        RUN(&r, "generate", "--url", url, "--prompt", ask, "--max-tokens", "3", "--temperature",
            "0", "--no-stream");
        CHECK_CODE(&r, 0);
        char *plain = strdup(r.out);
        RUN(&r, "generate", "--url", url, "--prompt", ask, "--max-tokens", "3", "--temperature",
            "0", "--no-stream", "--reuse", "-v");
        CHECK_CODE(&r, 0);
        CHECKF(plain && !strcmp(plain, r.out), "--reuse changed the text: '%s' vs '%s'", plain,
               r.out);
        CHECK_HAS(r.err, "prompt caching: 17 prompt tokens resumed");
        free(plain);
        RUN(&r, "score", "--url", url, "--context", ask, "--continuation", " leg", "--json");
        json_t *sc0 = json_ok(&r);
        RUN(&r, "score", "--url", url, "--context", ask, "--continuation", " leg", "--json",
            "--reuse");
        json_t *sc1 = json_ok(&r);
        json_t *u = json_object_get(sc1, "usage");
        CHECKF(json_integer_value(json_object_get(u, "cached_tokens")) == 17 &&
                   fabs(json_number_value(json_object_get(sc0, "logprob_sum")) -
                        json_number_value(json_object_get(sc1, "logprob_sum"))) < 1e-3,
               "score --reuse: %s", r.out);
        json_decref(sc0);
        json_decref(sc1);
    }

stop:
    if (d.pid > 0) daemon_stop(&d); /* checks that it exits 0 */
    /* nothing listens there any more: the message names the URL */
    if (up) {
        RUN(&r, "ls", "--url", url);
        CHECK_CODE(&r, 1);
        CHECK_HAS(r.err, "is statesoupd running at");
        CHECK_HAS(r.err, url);
    }
    result_free(&r);
    json_decref(models);
    json_decref(soup);
    json_decref(dict);
    json_decref(intro);
    unsetenv("STATESOUP_API_KEY");
    ss_model_close(m);
}

/*
 * A data.mdb cut to 97 %: verify and ls --data report it and exit 1 (they used to die of SIGBUS),
 * naming the file as truncated.
 */
static void test_truncated_store(void)
{
    char dir[700], path[760];
    snprintf(dir, sizeof dir, "%s/truncated", work);
    ss_store *s = NULL;
    REQUIRE_OK(ss_store_open(&s, dir, NULL));
    size_t len = 1 << 20;
    float *blob = calloc(len / 4, sizeof(float));
    for (int i = 0; i < 6; i++) {
        blob[0] = (float)i;
        REQUIRE_OK(ss_store_put(s, "{\"model\":\"m\",\"n_tokens\":1,\"dtype\":\"F32\"}", blob, len,
                                NULL));
    }
    free(blob);
    ss_store_close(s);
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    struct stat st;
    CHECK(stat(path, &st) == 0 && truncate(path, st.st_size / 100 * 97) == 0);
    result r = {0};
    RUN(&r, "verify", "--data", dir);
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "truncated");
    RUN(&r, "ls", "--data", dir);
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "truncated");
    result_free(&r);
}

/* ---- 3: plan, the scaling-law planner (offline) ---------------------------------------------- */

static double jnum(const json_t *o, const char *key)
{
    return json_number_value(json_object_get(o, key));
}

static void test_plan_cmd(void)
{
    result r = {0};
    /* One budget. References from a separate python3 solver (tests/test_plan.c has more):
     * G 16, loss 2.26686302427048, tokens 60883704385.9, dense needs 23.250547x. */
    RUN(&r, "plan", "--flops", "1e21", "--json");
    CHECK_CODE(&r, 0);
    json_t *j = out_json(&r);
    CHECK(jnum(j, "granularity") == 16 && jnum(j, "expansion") == 64 && jnum(j, "experts") == 1024);
    CHECKF(fabs(jnum(j, "loss") - 2.26686302427048) < 1e-9, "loss %.15g", jnum(j, "loss"));
    CHECKF(fabs(jnum(j, "tokens") / 60883704385.9 - 1) < 1e-5, "tokens %g", jnum(j, "tokens"));
    CHECK(jnum(j, "flops") == 1e21);
    json_t *b = json_object_get(j, "buildable"), *dn = json_object_get(j, "dense");
    CHECK(json_is_integer(json_object_get(b, "n_blocks")) && jnum(b, "n_blocks") == 37);
    CHECK(jnum(b, "d_model") == 64 * 37 && jnum(b, "granularity") == 16);
    /* 1e21/((12*2368**2*6 + 2368*64*16*14)*37) */
    CHECKF(fabs(jnum(b, "tokens") / 61750348789.6821 - 1) < 1e-12, "%g", jnum(b, "tokens"));
    CHECKF(fabs(jnum(dn, "compute_ratio") / 23.250547 - 1) < 1e-5, "ratio %g",
           jnum(dn, "compute_ratio"));
    json_decref(j);
    RUN(&r, "plan", "--flops", "1e21");
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "  granularity G", "16", "16"));
    CHECK(HAS_LINE(r.out, "  n_blocks", "37.18", "37"));
    CHECK(HAS_LINE(r.out, "  a dense model needs 23.3x this budget"));
    RUN(&r, "plan", "--flops", "1e21", "--expansion", "16", "--json");
    CHECK_CODE(&r, 0);
    j = out_json(&r);
    CHECK(jnum(j, "expansion") == 16);
    json_decref(j);

    /* A sweep: a row per decade and one where G doubles, at the budgets python3 finds
     * (5.72876e18, 2.56642e21, 1.05972e24). */
    RUN(&r, "plan", "--sweep", "1e18:1e26", "--json");
    CHECK_CODE(&r, 0);
    j = out_json(&r);
    CHECK(json_array_size(j) == 12);
    const double steps[] = {5.72876e18, 2.56642e21, 1.05972e24};
    int n_steps = 0;
    for (size_t i = 0; i < json_array_size(j); i++) {
        json_t *row = json_array_get(j, i);
        if (!json_is_true(json_object_get(row, "granularity_step"))) continue;
        CHECKF(n_steps < 3 && fabs(jnum(row, "flops") / steps[n_steps] - 1) < 1e-4,
               "step %d at %g", n_steps, jnum(row, "flops"));
        CHECK(jnum(row, "granularity") == 16 << n_steps);
        n_steps++;
    }
    CHECK(n_steps == 3);
    json_decref(j);
    RUN(&r, "plan", "--sweep", "1e18:1e26");
    CHECK_CODE(&r, 0);
    CHECK(HAS_LINE(r.out, "1e+25 ", " 64 ", "4096", "32.0x"));

    char svg[512];
    snprintf(svg, sizeof svg, "%s/plan.svg", work);
    RUN(&r, "plan", "--svg", svg);
    CHECK_CODE(&r, 0);
    char *text = slurp(svg, NULL);
    CHECK(text && !strncmp(text, "<svg ", 5) && strstr(text, "</svg>"));
    int lines = 0;
    for (const char *p = text; p && (p = strstr(p, "<polyline")); p++) lines++;
    CHECK(lines == 3); /* MoE loss, dense loss, optimal G */
    CHECK(text && strstr(text, ">1e18</text>") && strstr(text, ">1e26</text>"));
    free(text);

    /* A checkpoint: the fine-grained fixture (E = 16 fit, the nearest to its expansion 8) */
    RUN(&r, "plan", "--model", fixture_path("models/moe-mamba-finegrained"), "--json");
    CHECK_CODE(&r, 0);
    j = out_json(&r);
    CHECK(jnum(j, "total_params") == 393280 && jnum(j, "active_params") == 135232);
    CHECK(jnum(j, "granularity") == 4 && jnum(j, "expansion") == 8 && jnum(j, "n_blocks") == 3);
    CHECK(jnum(j, "coeffs_expansion") == 16);
    CHECKF(fabs(jnum(j, "tokens") / 33064258.04563254 - 1) < 1e-12, "%g", jnum(j, "tokens"));
    json_decref(j);
    RUN(&r, "plan", "--model", fixture_path("models/moe-mamba-finegrained"));
    CHECK_CODE(&r, 0);
    CHECK_HAS(r.out, "planning aid, not a promise");
    CHECK_HAS(r.out, "one Mamba layer + one MoE layer = one Transformer block");

    /* Bad input: exit 2 with the reason */
    static const char *const bad_flops[] = {"0", "-1e21", "inf", "nan", "1e400", "abc", "1e5"};
    for (size_t i = 0; i < sizeof bad_flops / sizeof *bad_flops; i++) {
        RUN(&r, "plan", "--flops", bad_flops[i]);
        CHECK_CODE(&r, 2);
        CHECK_HAS(r.err, "--flops");
    }
    RUN(&r, "plan", "--flops", "1e21", "--expansion", "32");
    CHECK_CODE(&r, 2);
    CHECK_HAS(r.err, "64 and 16 only");
    RUN(&r, "plan", "--model", fixture_path(TINY));
    CHECK_CODE(&r, 2);
    CHECK_HAS(r.err, "not a mixture of experts");
    char coeffs[512];
    snprintf(coeffs, sizeof coeffs, "%s/coeffs.json", work);
    FILE *f = fopen(coeffs, "w");
    fputs("{\"expansion\": 64, \"moe\": {\"a\": 18.1, \"alpha\": 0.115}}", f);
    fclose(f);
    RUN(&r, "plan", "--flops", "1e21", "--coeffs", coeffs);
    CHECK_CODE(&r, 2);
    CHECK_HAS(r.err, "moe.b is missing");
    RUN(&r, "plan");
    CHECK_CODE(&r, 2);
    RUN(&r, "plan", "--flops", "1e21", "--model", fixture_path(TINY));
    CHECK_CODE(&r, 2);
    RUN(&r, "plan", "--sweep", "1e26:1e18");
    CHECK_CODE(&r, 2);
    result_free(&r);
}

/* ---- statesoup eval ------------------------------------------------------------------------- */

/* -logprob_sum / n_tokens of the answer after the query from the start in `start` (stolen). */
static double ref_loss(srv *d, json_t *start, const char *query, const char *answer)
{
    json_object_set_new(start, "context", json_string(query));
    json_object_set_new(start, "continuation", json_string(answer));
    long st = 0;
    json_t *j = call(d, "POST", "/v1/score", start, &st);
    CHECKF(st == 200, "score: %ld", st);
    double n = (double)json_integer_value(json_object_get(j, "n_tokens"));
    double l = -json_number_value(json_object_get(j, "logprob_sum")) / n;
    json_decref(j);
    return l;
}

/* Store the state of `prompt`; its id into id. */
static void ref_save(srv *d, const char *prompt, char *id, size_t cap)
{
    long st = 0;
    json_t *j = call(d, "POST", "/v1/states", json_pack("{s:s}", "prompt", prompt), &st);
    CHECKF(st == 201, "save: %ld", st);
    snprintf(id, cap, "%s", json_string_value(json_object_get(j, "id")) ?: "");
    json_decref(j);
}

/* The generator: deterministic for a seed, and every task is a dictionary whose answer is the
 * value of the key asked (checked by parsing the lines back). */
static void test_eval_generator(const char *words)
{
    result r = {0};
    RUN(&r, "eval", "--make-dict-tasks", "5", "--words", words, "--seed", "7", "--pairs", "6",
        "--parts", "3");
    CHECK_CODE(&r, 0);
    char *first = strdup(r.out);
    RUN(&r, "eval", "--make-dict-tasks", "5", "--words", words, "--seed", "7", "--pairs", "6",
        "--parts", "3");
    CHECK(!strcmp(first, r.out));
    RUN(&r, "eval", "--make-dict-tasks", "5", "--words", words, "--seed", "8", "--pairs", "6",
        "--parts", "3");
    CHECK(strcmp(first, r.out) != 0);
    int lines = 0;
    for (char *save = NULL, *l = strtok_r(first, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        json_t *t = json_loads(l, 0, NULL);
        lines++;
        json_t *parts = json_object_get(t, "parts");
        CHECK(json_array_size(parts) == 3);
        const char *whole = json_string_value(json_object_get(t, "whole"));
        const char *q = json_string_value(json_object_get(t, "query"));
        const char *a = json_string_value(json_object_get(t, "answer"));
        CHECK(whole && q && a && !strncmp(whole, "Dictionary:\n", 12) &&
              !strncmp(q, "\nQuery:\n", 8));
        /* whole = "Dictionary:\n" + the parts' lines; 6 distinct keys; the asked key's value */
        char joined[4096] = "Dictionary:\n";
        for (size_t i = 0; i < json_array_size(parts); i++) {
            const char *p = json_string_value(json_array_get(parts, i));
            CHECK(!strncmp(p, "Dictionary:\n", 12));
            strncat(joined, p + 12, sizeof joined - strlen(joined) - 1);
        }
        CHECK(whole && !strcmp(joined, whole));
        /* the query "\nQuery:\n<key> =" and the answer " <value>": a line "<key> = <value>" */
        char want[256];
        snprintf(want, sizeof want, "\n%.*s =%s\n", (int)strlen(q + 8) - 2, q + 8, a);
        CHECKF(strstr(joined, want) != NULL, "%s not in %s", want, joined);
        int n_lines = 0;
        for (const char *c = joined; *c; c++) n_lines += *c == '\n';
        CHECK(n_lines == 7);
        json_decref(t);
    }
    CHECK(lines == 5);
    free(first);
    /* --query-block: P tasks per dictionary, the block up to each key, earlier keys answered
     * with their values (every "k = v" line of the query is a line of the dictionary) */
    RUN(&r, "eval", "--make-dict-tasks", "2", "--words", words, "--pairs", "3", "--query-block");
    CHECK_CODE(&r, 0);
    lines = 0;
    char *block = strdup(r.out);
    for (char *save = NULL, *l = strtok_r(block, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        json_t *t = json_loads(l, 0, NULL);
        const char *whole = json_string_value(json_object_get(t, "whole"));
        const char *q = json_string_value(json_object_get(t, "query"));
        const char *a = json_string_value(json_object_get(t, "answer"));
        char want[64];
        snprintf(want, sizeof want, "dict-%d.%d", lines / 3, lines % 3);
        CHECK(!strcmp(jstr(t, "id"), want));
        /* query = "\nQuery:\n" + (lines % 3) answered lines + "key =" */
        int nl = 0;
        for (const char *c = q + 8; *c; c++) nl += *c == '\n';
        CHECK(nl == lines % 3);
        char qa[512];
        snprintf(qa, sizeof qa, "%s%s\n", q + 8, a); /* the block with this answer */
        for (char *s2 = NULL, *ln = strtok_r(qa, "\n", &s2); ln; ln = strtok_r(NULL, "\n", &s2)) {
            char full[128];
            snprintf(full, sizeof full, "\n%s\n", ln);
            CHECKF(whole && strstr(whole, full), "%s not in the dictionary", ln);
        }
        json_decref(t);
        lines++;
    }
    CHECK(lines == 6);
    free(block);
    RUN(&r, "eval", "--make-dict-tasks", "5", "--words", words, "--pairs", "4", "--parts", "5");
    CHECK_CODE(&r, 2);
    result_free(&r);
}

/* eval through a daemon on a tiny task file: every number against /v1/score and /v1/generate. */
static void test_eval(void)
{
    char demo[4096], data_dir[512], tasks[512], words[4200], svg[512];
    snprintf(demo, sizeof demo, "%s/%s", test_source_root(), DEMO);
    snprintf(words, sizeof words, "%s/words.txt", demo);
    test_eval_generator(words);
    snprintf(data_dir, sizeof data_dir, "%s/eval-data", work);
    snprintf(tasks, sizeof tasks, "%s/tasks.jsonl", work);
    snprintf(svg, sizeof svg, "%s/eval.svg", work);
    static const char *const parts[3][2] = {
        {"Dictionary:\ncase = word\nfor = next\n", "Dictionary:\nthis = options\nmake = write\n"},
        {"Dictionary:\nlist = value\nsee = file\n", "Dictionary:\nnew = more\nrun = time\n"},
        {"Dictionary:\ntext = line\nuse = code\n", "Dictionary:\nname = list\nset = type\n"},
    };
    static const char *const query[3] = {"\nQuery:\nthis =", "\nQuery:\nlist =", "\nQuery:\nset ="};
    static const char *const answer[3] = {" options", " value", " type"};
    FILE *f = fopen(tasks, "w");
    for (int t = 0; f && t < 3; t++) {
        json_t *o = json_pack("{s:[s,s],s:s,s:s}", "parts", parts[t][0], parts[t][1], "query",
                              query[t], "answer", answer[t]);
        char *line = json_dumps(o, JSON_COMPACT);
        fprintf(f, "%s\n\n", line);
        free(line);
        json_decref(o);
    }
    if (f) fclose(f);
    srv d;
    result r = {0};
    if (daemon_start(&d, demo, data_dir, (char *)NULL) != 0) {
        test_failures++;
        return;
    }
    RUN(&r, "eval", "--url", d.base, "--tasks", tasks, "--json", "--svg", svg, "--conditions",
        "zero,part1,part2,mean,sum,sequential,symmetric,one-pass,other-soup,other");
    json_t *j = json_ok(&r), *conds = json_object_get(j, "conditions");
    CHECK(json_integer_value(json_object_get(j, "tasks")) == 3);
    CHECK(json_array_size(conds) == 10);
    /* the references, computed here through the API: states of the parts and wholes */
    char pid[3][2][64], wid[3][64], whole[3][256];
    for (int t = 0; t < 3; t++) {
        snprintf(whole[t], sizeof whole[t], "%s%s", parts[t][0], parts[t][1]);
        for (int p = 0; p < 2; p++) ref_save(&d, parts[t][p], pid[t][p], sizeof pid[t][p]);
        ref_save(&d, whole[t], wid[t], sizeof wid[t]);
    }
    for (size_t c = 0; c < json_array_size(conds); c++) {
        json_t *cj = json_array_get(conds, c);
        const char *name = jstr(cj, "name");
        double sum = 0;
        for (int t = 0; t < 3; t++) {
            const char *other = wid[(t + 1) % 3];
            json_t *st = json_object();
            if (!strcmp(name, "part1")) json_object_set_new(st, "state", json_string(pid[t][0]));
            if (!strcmp(name, "part2")) json_object_set_new(st, "state", json_string(pid[t][1]));
            if (!strcmp(name, "one-pass")) json_object_set_new(st, "state", json_string(wid[t]));
            if (!strcmp(name, "other")) json_object_set_new(st, "state", json_string(other));
            double w = !strcmp(name, "mean") ? 0.5 : 1.0;
            if (!strcmp(name, "mean") || !strcmp(name, "sum"))
                json_object_set_new(st, "merge", json_pack("[{s:s,s:f},{s:s,s:f}]", "state",
                                                           pid[t][0], "weight", w, "state",
                                                           pid[t][1], "weight", w));
            if (!strcmp(name, "sequential") || !strcmp(name, "symmetric"))
                json_object_set_new(st, "merge", json_pack("{s:s,s:[{s:s},{s:s}]}", "mode", name,
                                                           "sources", "state", pid[t][0],
                                                           "state", pid[t][1]));
            if (!strcmp(name, "other-soup"))
                json_object_set_new(st, "merge", json_pack("[{s:s,s:f},{s:s,s:f}]", "state",
                                                           wid[t], "weight", 0.5, "state", other,
                                                           "weight", 0.5));
            json_t *gen = json_deep_copy(st);
            double want = ref_loss(&d, st, query[t], answer[t]);
            json_t *pt = json_array_get(json_object_get(cj, "per_task"), (size_t)t);
            double got = json_number_value(json_object_get(pt, "loss"));
            CHECKF(fabs(got - want) < 1e-9 * (1 + fabs(want)), "%s task %d: %.9g vs %.9g", name,
                   t, got, want);
            sum += want;
            /* exact match: greedy decoding gives the answer's tokens */
            json_object_set_new(gen, "prompt", json_string(query[t]));
            json_object_set_new(gen, "max_tokens", json_integer(1));
            json_object_set_new(gen, "temperature", json_real(0));
            long s1 = 0, s2 = 0;
            json_t *g = call(&d, "POST", "/v1/generate", gen, &s1);
            json_t *tk = call(&d, "POST", "/v1/tokenize", json_pack("{s:s}", "text", answer[t]),
                              &s2);
            json_t *tokens = json_object_get(tk, "tokens");
            CHECK(s1 == 200 && s2 == 200 && json_array_size(tokens) == 1);
            int ex = json_integer_value(json_array_get(json_object_get(g, "tokens"), 0)) ==
                     json_integer_value(json_array_get(tokens, 0));
            CHECKF(json_is_true(json_object_get(pt, "exact")) == ex, "%s task %d exact", name, t);
            json_decref(g);
            json_decref(tk);
        }
        CHECKF(fabs(json_number_value(json_object_get(cj, "loss")) - sum / 3) < 1e-9,
               "%s mean", name);
        CHECK(json_integer_value(json_object_get(cj, "n")) == 3);
    }
    json_decref(j);
    /* its states are gone; the chart was written */
    long st = 0;
    j = call(&d, "GET", "/v1/states?tag=statesoup-eval", NULL, &st);
    CHECK(st == 200 && json_array_size(json_object_get(j, "data")) == 0);
    json_decref(j);
    size_t svg_len = 0;
    char *svg_text = slurp(svg, &svg_len);
    CHECK(svg_text && strstr(svg_text, "<svg") && strstr(svg_text, "other-soup"));
    free(svg_text);
    /* retrieval: the references are searches made here among the same part states (stored
     * again under a tag of the test's: the same prompts give the same states and keys) */
    char rid[3][2][64];
    for (int t = 0; t < 3; t++)
        for (int p = 0; p < 2; p++) {
            long s3 = 0;
            json_t *rec = call(&d, "POST", "/v1/states",
                               json_pack("{s:s,s:[s]}", "prompt", parts[t][p], "tags", "ref-part"),
                               &s3);
            CHECK(s3 == 201);
            snprintf(rid[t][p], sizeof rid[t][p], "%s", jstr(rec, "id") ?: "");
            json_decref(rec);
        }
    double want1 = 0, want5 = 0, wantc1 = 0, want_loss = 0;
    for (int t = 0; t < 3; t++) {
        int right = strstr(parts[t][0], answer[t]) ? 0 : 1; /* the part holding the answer */
        for (int w = 0; w < 2; w++) {
            long s3 = 0;
            json_t *hits = call(&d, "POST", "/v1/states/search",
                                json_pack("{s:s,s:i,s:s}", "query", w ? whole[t] : query[t], "k",
                                          5, "tag", "ref-part"), &s3);
            json_t *data = json_object_get(hits, "data");
            const char *first = jstr(json_object_get(json_array_get(data, 0), "state"), "id");
            CHECK(s3 == 200 && first && json_array_size(data) == 5);
            if (!w) {
                want1 += first && !strcmp(first, rid[t][right]);
                for (size_t i = 0; i < json_array_size(data); i++)
                    want5 += !strcmp(jstr(json_object_get(json_array_get(data, i), "state"), "id"),
                                     rid[t][right]);
                want_loss += ref_loss(&d, json_pack("{s:s}", "state", first ? first : "?"),
                                      query[t], answer[t]);
            } else {
                wantc1 += first && (!strcmp(first, rid[t][0]) || !strcmp(first, rid[t][1]));
            }
            json_decref(hits);
        }
    }
    RUN(&r, "eval", "--url", d.base, "--tasks", tasks, "--json", "--conditions",
        "retrieved1,retrieved");
    j = json_ok(&r);
    json_t *ret = json_object_get(j, "retrieval");
    CHECK(!strcmp(jstr(ret, "key"), "ssm_slow") &&
          json_integer_value(json_object_get(ret, "n")) == 3 &&
          json_integer_value(json_object_get(ret, "candidates")) == 6);
    CHECKF(fabs(json_number_value(json_object_get(ret, "top1")) - want1 / 3) < 1e-9 &&
               fabs(json_number_value(json_object_get(ret, "top5")) - want5 / 3) < 1e-9 &&
               fabs(json_number_value(json_object_get(ret, "context_top1")) - wantc1 / 3) < 1e-9,
           "retrieval %s, want top1 %g top5 %g context %g", r.out, want1 / 3, want5 / 3,
           wantc1 / 3);
    json_t *c0 = json_array_get(json_object_get(j, "conditions"), 0);
    CHECKF(!strcmp(jstr(c0, "name"), "retrieved1") &&
               fabs(json_number_value(json_object_get(c0, "loss")) - want_loss / 3) < 1e-6,
           "retrieved1 loss %s, want %g", r.out, want_loss / 3);
    json_decref(j);
    /* one key kind per private daemon: the same accuracy for the daemon's kind */
    RUN(&r, "eval", "--model", demo, "--tasks", tasks, "--json", "--retrieval-keys",
        "ssm_slow,final_hidden");
    j = json_ok(&r);
    json_t *rk = json_object_get(j, "retrieval_keys");
    CHECK(json_array_size(rk) == 2 && !strcmp(jstr(json_array_get(rk, 1), "key"), "final_hidden"));
    CHECK(fabs(json_number_value(json_object_get(json_array_get(rk, 0), "top1")) - want1 / 3) <
          1e-9);
    json_decref(j);
    RUN(&r, "eval", "--url", d.base, "--tasks", tasks, "--retrieval-keys", "ssm_norm");
    CHECK_CODE(&r, 2);
    RUN(&r, "eval", "--model", demo, "--tasks", tasks, "--retrieval-keys", "nope");
    CHECK_CODE(&r, 2);

    /* the terminal table names every condition */
    RUN(&r, "eval", "--url", d.base, "--tasks", tasks, "--conditions", "zero,mean");
    CHECK_CODE(&r, 0);
    CHECK_HAS(r.out, "mean");
    CHECK_HAS(r.out, "3 tasks");
    /* bad input: an unknown condition (2), a broken task line (1, naming the line) */
    RUN(&r, "eval", "--url", d.base, "--tasks", tasks, "--conditions", "zero,nope");
    CHECK_CODE(&r, 2);
    f = fopen(tasks, "a");
    if (f) fputs("{\"parts\": [\"x\"], \"query\": 5, \"answer\": \"y\"}\n", f), fclose(f);
    RUN(&r, "eval", "--url", d.base, "--tasks", tasks);
    CHECK_CODE(&r, 1);
    CHECK_HAS(r.err, "task line 7");
    result_free(&r);
    daemon_stop(&d);
}

/* ---- merge modes through the daemon ---------------------------------------------------------- */

/* Export `ref` and read it back in-process: state floats into data, decay into decay (*has). */
static void fetch_state(srv *d, ss_model *m, const char *ref, float *data, float *decay, int *has)
{
    size_t len = 0;
    long st = 0;
    uint8_t *f = get_data(d, ref, NULL, &len, &st);
    CHECKF(f && st == 200, "export %s: %ld", ref, st);
    if (f) CHECK_OK(ss_state_import_decay(m, f, len, data, decay, has, NULL));
    free(f);
}

static json_t *post_json(srv *d, const char *path, json_t *body, long want)
{
    long st = 0;
    json_t *j = call(d, "POST", path, body, &st);
    CHECKF(st == want, "%s: %ld, want %ld", path, st, want);
    return j;
}

static void test_modes(void)
{
    char demo[4096], data_dir[512];
    snprintf(demo, sizeof demo, "%s/%s", test_source_root(), DEMO);
    snprintf(data_dir, sizeof data_dir, "%s/modes-data", work);
    srv d;
    ss_model *m = NULL;
    ss_ctx *c = NULL;
    REQUIRE_OK(ss_model_open(&m, demo, NULL));
    REQUIRE_OK(ss_ctx_new(m, &c));
    const ss_model_info *in = ss_model_get_info(m);
    const size_t F = in->state_floats, D = in->decay_floats;
    if (daemon_start(&d, demo, data_dir, (char *)NULL) != 0) {
        test_failures++;
        return;
    }
    static const int32_t ta[] = {5, 17, 42, 100, 7}, tb[] = {300, 12, 9, 250}, tc[] = {33, 71, 2};
    const int32_t *toks[3] = {ta, tb, tc};
    const int nt[3] = {5, 4, 3};
    const char *names[3] = {"m-a", "m-b", "m-c"};
    float *data[3], *dec[3];
    for (int i = 0; i < 3; i++) {
        json_decref(post_json(&d, "/v1/states",
                              json_pack("{s:s,s:o}", "name", names[i], "prompt",
                                        ids_json(toks[i], (size_t)nt[i])), 201));
        data[i] = malloc(F * sizeof(float));
        dec[i] = malloc(D * sizeof(float));
        int has = 0;
        fetch_state(&d, m, names[i], data[i], dec[i], &has);
        CHECK(has);
        /* the stored decay is the one the model computes here */
        ss_state *s;
        REQUIRE_OK(ss_state_new(m, &s));
        ss_seq q = {.state = s, .tokens = toks[i], .n_tokens = nt[i]};
        REQUIRE_OK(ss_model_eval(m, c, &q, 1, 0));
        CHECKF(max_abs_diff(ss_state_cdecay(s), dec[i], D) < 1e-4, "decay of %s", names[i]);
        ss_state_free(s);
    }
    float *out = malloc(F * sizeof(float)), *od = malloc(D * sizeof(float));
    float *got = malloc(F * sizeof(float)), *gd = malloc(D * sizeof(float));
    static const char *const modes[2] = {"sequential", "symmetric"};
    for (int k = 0; k < 2; k++) {
        /* stored merge: the record, and the data = ss_state_compose of the sources */
        json_t *rec = post_json(&d, "/v1/states/merge",
                                json_pack("{s:s,s:s,s:[{s:s},{s:s,s:f},{s:s}]}", "name",
                                          k ? "m-sym" : "m-seq", "mode", modes[k], "sources",
                                          "state", "m-a", "state", "m-b", "weight", 1.0, "state",
                                          "m-c"),
                                201);
        CHECK(!strcmp(jstr(rec, "merge_mode"), modes[k]));
        CHECK(json_integer_value(json_object_get(rec, "n_tokens")) == 12);
        CHECK(json_array_size(json_object_get(rec, "parents")) == 3);
        json_decref(rec);
        const float *st[3] = {data[0], data[1], data[2]}, *dc[3] = {dec[0], dec[1], dec[2]};
        REQUIRE_OK(ss_state_compose(m, k ? SS_COMPOSE_SYMMETRIC : SS_COMPOSE_SEQUENTIAL, st, dc,
                                    3, out, od));
        int has = 0;
        fetch_state(&d, m, k ? "m-sym" : "m-seq", got, gd, &has);
        CHECK(has && max_abs_diff(got, out, F) == 0 && max_abs_diff(gd, od, D) == 0);
        /* on the fly (object form) scores as the stored state does */
        json_t *s1 = post_json(&d, "/v1/score",
                               json_pack("{s:s,s:[i,i]}", "state", k ? "m-sym" : "m-seq",
                                         "continuation", 11, 12),
                               200);
        json_t *s2 = post_json(
            &d, "/v1/score",
            json_pack("{s:{s:s,s:[{s:s},{s:s},{s:s}]},s:[i,i]}", "merge", "mode", modes[k],
                      "sources", "state", "m-a", "state", "m-b", "state", "m-c", "continuation",
                      11, 12),
            200);
        CHECK(json_number_value(json_object_get(s1, "logprob_sum")) ==
              json_number_value(json_object_get(s2, "logprob_sum")));
        json_decref(s1);
        json_decref(s2);
    }
    /* linear: the record says so; decays are summed with the weights; the list form still works */
    json_t *rec = post_json(&d, "/v1/states/merge",
                            json_pack("{s:s,s:[{s:s,s:f},{s:s,s:f}]}", "name", "m-lin", "sources",
                                      "state", "m-a", "weight", 0.25, "state", "m-b", "weight",
                                      0.75),
                            201);
    CHECK(!strcmp(jstr(rec, "merge_mode"), "linear"));
    json_decref(rec);
    int has = 0;
    fetch_state(&d, m, "m-lin", got, gd, &has);
    CHECK(has);
    for (size_t i = 0; i < D; i++) CHECK(gd[i] == fmaf(0.75f, dec[1][i], 0.25f * dec[0][i]));
    json_decref(post_json(&d, "/v1/score",
                          json_pack("{s:[{s:s,s:f}],s:[i]}", "merge", "state", "m-a", "weight",
                                    1.0, "continuation", 11),
                          200));
    /* a state without decay: an exported file stripped of it (re-exported by the model with no
     * decay) imports; linear merges with it; decay-aware modes refuse it, naming it */
    uint8_t *f = NULL;
    size_t flen = 0;
    REQUIRE_OK(ss_state_export(m, data[0], NULL, NULL, &f, &flen));
    char path[128];
    snprintf(path, sizeof path, "/v1/states/import?name=m-old");
    resp r =
        request(&d, "POST", path, f, (long)flen, &(req_opts){.ctype = "application/octet-stream"});
    CHECKF(r.status == 201, "import: %ld %s", r.status, r.body);
    free(r.body);
    free(f);
    json_decref(post_json(&d, "/v1/states/merge",
                          json_pack("{s:[{s:s,s:f},{s:s,s:f}]}", "sources", "state", "m-old",
                                    "weight", 0.5, "state", "m-a", "weight", 0.5),
                          201));
    long st = 0;
    json_t *e = call(&d, "POST", "/v1/states/merge",
                     json_pack("{s:s,s:[{s:s},{s:s}]}", "mode", "sequential", "sources", "state",
                               "m-a", "state", "m-old"),
                     &st);
    const char *msg = json_string_value(json_object_get(json_object_get(e, "error"), "message"));
    CHECKF(st == 422 && msg && strstr(msg, "m-old") && strstr(msg, "decay"), "%ld %s", st,
           msg ? msg : "");
    json_decref(e);
    /* bad input */
    check_error(call(&d, "POST", "/v1/states/merge",
                     json_pack("{s:s,s:[{s:s,s:f}]}", "mode", "diagonal", "sources", "state",
                               "m-a", "weight", 1.0),
                     &st),
                st, 422, "invalid_value", "unknown mode");
    check_error(call(&d, "POST", "/v1/states/merge",
                     json_pack("{s:s,s:[{s:s,s:f},{s:s}]}", "mode", "sequential", "sources",
                               "state", "m-a", "weight", 0.5, "state", "m-b"),
                     &st),
                st, 422, "invalid_value", "weight with sequential");
    check_error(call(&d, "POST", "/v1/states/merge",
                     json_pack("{s:s,s:b,s:[{s:s}]}", "mode", "symmetric", "normalize", 1,
                               "sources", "state", "m-a"),
                     &st),
                st, 422, "invalid_value", "normalize with symmetric");
    check_error(call(&d, "POST", "/v1/states/merge",
                     json_pack("{s:i,s:[{s:s}]}", "mode", 3, "sources", "state", "m-a"), &st),
                st, 400, NULL, "mode not a string");
    check_error(call(&d, "POST", "/v1/score",
                     json_pack("{s:{s:[{s:s}],s:s},s:[i]}", "merge", "sources", "state", "m-a",
                               "order", "x", "continuation", 11),
                     &st),
                st, 400, NULL, "unknown merge field");
    check_error(call(&d, "POST", "/v1/score",
                     json_pack("{s:{s:s},s:[i]}", "merge", "mode", "sequential", "continuation",
                               11),
                     &st),
                st, 400, NULL, "merge object without sources");
    for (int i = 0; i < 3; i++) free(data[i]), free(dec[i]);
    free(out);
    free(od);
    free(got);
    free(gd);
    /* the CLI: --mode, sources without weights */
    result r2 = {0};
    RUN(&r2, "merge", "--url", d.base, "--json", "--mode", "symmetric", "--name", "m-cli", "m-a",
        "m-b");
    json_t *cj = json_ok(&r2);
    CHECK(cj && !strcmp(jstr(cj, "merge_mode"), "symmetric"));
    json_decref(cj);
    RUN(&r2, "score", "--url", d.base, "--json", "--merge", "m-a,m-b,m-c", "--merge-mode",
        "sequential", "--continuation-tokens", "11,12");
    cj = json_ok(&r2);
    json_t *sw = post_json(&d, "/v1/score",
                           json_pack("{s:{s:s,s:[{s:s},{s:s},{s:s}]},s:[i,i]}", "merge", "mode",
                                     "sequential", "sources", "state", "m-a", "state", "m-b",
                                     "state", "m-c", "continuation", 11, 12),
                           200);
    CHECK(cj && json_number_value(json_object_get(cj, "logprob_sum")) ==
                    json_number_value(json_object_get(sw, "logprob_sum")));
    json_decref(cj);
    json_decref(sw);
    RUN(&r2, "merge", "--url", d.base, "--mode", "diagonal", "m-a");
    CHECK_CODE(&r2, 1);
    CHECK_HAS(r2.err, "unknown merge mode");
    result_free(&r2);
    daemon_stop(&d);
    ss_ctx_free(c);
    ss_model_close(m);
}

int main(void)
{
    const char *build = getenv("SS_BUILD_ROOT");
    if (!build) {
        fprintf(stderr, "SS_BUILD_ROOT is not set (run through meson test)\n");
        return 77;
    }
    snprintf(cli_path, sizeof cli_path, "%s/cli/statesoup", build);
    snprintf(daemon_path, sizeof daemon_path, "%s/statesoupd", build);
    if (access(cli_path, X_OK) != 0) {
        fprintf(stderr, "%s is missing\n", cli_path);
        return 1;
    }
    unsetenv("STATESOUP_URL");
    unsetenv("STATESOUP_API_KEY");
    test_tmpdir(work, sizeof work, "cli");

    test_offline();
    test_truncated_store();
    test_plan_cmd();
    int skipped = 0;
    if (access(daemon_path, X_OK) == 0) {
        test_daemon();
        test_eval();
        test_modes();
    } else {
        fprintf(stderr, "%s is not built yet: the daemon part is skipped\n", daemon_path);
        skipped = 1;
    }
    test_rm_rf(work);
    if (skipped && !test_failures) return 77;
    return test_done("test_cli");
}
