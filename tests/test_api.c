/*
 * test_api.c - integration tests: the real statesoupd, started on a free port with fixture models,
 * spoken to over real HTTP by libcurl.
 *
 * Covered: every endpoint and error code of docs/api.md (400 401 403 404 405 409 413 415 422 507;
 * 503-before-load is not testable reliably), the mamba1-tiny golden through the API alone (state
 * after seq_a, greedy12 from it with an empty prompt, stored and on-the-fly merges scoring seq_q
 * with the golden log-probabilities and continuing with greedy8), the batch forms (independent
 * members on this model, and their errors), pagination, export -> import
 * bit-exact, a state of one model refused by a daemon serving another, restart persistence,
 * SSE parsed event by event, concurrency (catalog reads answer while a long generation runs,
 * parallel generations equal sequential ones), a client that disconnects mid-stream, garbage
 * input, and crash safety (kill -9 during a stream of writes: every acknowledged state is there
 * and verifies). The daemon's stderr is drained by a thread; we wait on its log lines, never on
 * a clock.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "golden.h"
#include "safetensors.h"
#include "ss_model.h"
#include "test_util.h"

static char tmp_root[256];

/* ---- SSE ---------------------------------------------------------------------------------- */

typedef struct sse {
    char *buf;
    size_t len;
    json_t *events;         /* parsed data: JSON values in order */
    int done;               /* [DONE] seen */
    int after_done;         /* events after [DONE] (a protocol error) */
    int bad;                /* unparsable data lines */
    atomic_int abort_after; /* > 0: abort the transfer after this many events */
    atomic_int n;
} sse;

static size_t on_sse(char *p, size_t sz, size_t nm, void *user)
{
    sse *s = user;
    size_t n = sz * nm;
    s->buf = realloc(s->buf, s->len + n + 1);
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    s->buf[s->len] = '\0';
    char *end;
    while ((end = strstr(s->buf, "\n\n"))) {
        *end = '\0';
        for (char *line = strtok(s->buf, "\n"); line; line = strtok(NULL, "\n")) {
            if (strncmp(line, "data: ", 6)) continue;
            if (!strcmp(line + 6, "[DONE]")) {
                s->done = 1;
                continue;
            }
            if (s->done) s->after_done++;
            json_t *j = json_loads(line + 6, 0, NULL);
            if (!j)
                s->bad++;
            else
                json_array_append_new(s->events, j);
            atomic_fetch_add(&s->n, 1);
        }
        size_t used = (size_t)(end + 2 - s->buf);
        memmove(s->buf, end + 2, s->len - used + 1);
        s->len -= used;
    }
    int ab = atomic_load(&s->abort_after);
    if (ab > 0 && atomic_load(&s->n) >= ab) return 0;
    return n;
}

/* POST a JSON body and parse the SSE answer. Returns the HTTP status (or -1). */
static long stream(srv *d, const char *path, json_t *body, sse *s, char *ctype, size_t ctcap)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    s->events = json_array();
    resp hr = {0};
    CURL *c = curl_easy_init();
    char url[512];
    snprintf(url, sizeof url, "%s%s", d->base, path);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_sse);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &hr);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 300L);
    long status = -1;
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK || rc == CURLE_WRITE_ERROR)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (ctype) snprintf(ctype, ctcap, "%s", hr.ctype);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(text);
    return status;
}

static void sse_free(sse *s)
{
    free(s->buf);
    json_decref(s->events);
}

/* ---- fixtures ----------------------------------------------------------------------------- */

static golden G;
static const char *const seqs[] = {"a", "b", "c", "q"};

static const int32_t *seq_ids(const char *x, size_t *n)
{
    char name[64];
    snprintf(name, sizeof name, "seq_%s.ids", x);
    return gt(&G, name, n);
}

/* POST /v1/states with token ids; returns the record (or NULL) and the status. */
static json_t *create_state(srv *d, const int32_t *ids, size_t n, const char *name, long *status)
{
    json_t *b = json_pack("{s:o}", "tokens", ids_json(ids, n));
    if (name) json_object_set_new(b, "name", json_string(name));
    return call(d, "POST", "/v1/states", b, status);
}


/* ---- tests -------------------------------------------------------------------------------- */

static char fingerprint[64];

static void test_basics(srv *d)
{
    long st;
    json_t *j = call(d, "GET", "/healthz", NULL, &st);
    CHECK(st == 200 && !strcmp(json_string_value(json_object_get(j, "status")), "ok"));
    json_decref(j);
    j = call(d, "GET", "/v1/models", NULL, &st);
    json_t *m = json_array_get(json_object_get(j, "data"), 0);
    CHECK(st == 200 && m);
    CHECK(!strcmp(json_string_value(json_object_get(m, "object")), "model"));
    CHECK(!strcmp(json_string_value(json_object_get(m, "architecture")), "MambaForCausalLM"));
    CHECK(json_integer_value(json_object_get(m, "vocab_size")) == 512);
    CHECK(json_integer_value(json_object_get(m, "n_layer")) == 4);
    CHECK(json_integer_value(json_object_get(m, "d_model")) == 64);
    CHECK(json_integer_value(json_object_get(m, "state_bytes")) ==
          4 * (4 * (128 * 4 + 128 * 16) + 64));
    const char *fp = json_string_value(json_object_get(m, "fingerprint"));
    CHECK(fp && strlen(fp) == 32);
    snprintf(fingerprint, sizeof fingerprint, "%s", fp ? fp : "");
    json_decref(j);
    /* request ids: ours is echoed, else one is made */
    req_opts o = {.rid = "test-rid-42"};
    resp r = request(d, "GET", "/healthz", NULL, 0, &o);
    CHECK(!strcmp(r.rid, "test-rid-42"));
    free(r.body);
    r = request(d, "GET", "/healthz", NULL, 0, NULL);
    CHECK(strlen(r.rid) >= 8);
    CHECK(!strncmp(r.ctype, "application/json", 16));
    free(r.body);
}

static void test_golden(srv *d)
{
    long st;
    /* the states after seq a, b, c from zero equal the golden ones */
    for (int i = 0; i < 3; i++) {
        size_t n;
        const int32_t *ids = seq_ids(seqs[i], &n);
        char name[32];
        snprintf(name, sizeof name, "seq_%s", seqs[i]);
        json_t *rec = create_state(d, ids, n, name, &st);
        CHECKF(st == 201, "create %s: %ld", name, st);
        CHECK(json_integer_value(json_object_get(rec, "n_tokens")) == (json_int_t)n);
        CHECK(!strcmp(json_string_value(json_object_get(rec, "model")), fingerprint));
        CHECK(!strcmp(json_string_value(json_object_get(rec, "dtype")), "F32"));
        CHECK(!strncmp(json_string_value(json_object_get(rec, "id")), "st_", 3));
        json_decref(rec);
        size_t len;
        uint8_t *f = get_data(d, name, NULL, &len, &st);
        CHECKF(f, "export %s: %ld", name, st);
        if (!f) continue;
        char gname[64];
        snprintf(gname, sizeof gname, "seq_%s.state.conv", seqs[i]);
        check_tensor(f, len, "conv", &G, gname, 1e-3);
        snprintf(gname, sizeof gname, "seq_%s.state.ssm", seqs[i]);
        check_tensor(f, len, "ssm", &G, gname, 1e-3);
        snprintf(gname, sizeof gname, "seq_%s.final_hidden", seqs[i]);
        check_tensor(f, len, "final_hidden", &G, gname, 1e-3);
        free(f);
    }

    /* generate from seq_a with an empty prompt at temperature 0: greedy12 */
    size_t n12;
    const int32_t *g12 = gt(&G, "seq_a.greedy12", &n12);
    json_t *j = call(d, "POST", "/v1/generate",
                     json_pack("{s:s,s:[],s:I,s:f,s:b}", "state", "seq_a", "prompt", "max_tokens",
                               (json_int_t)n12, "temperature", 0.0, "ignore_eos", 1),
                     &st);
    CHECKF(st == 200 && tokens_equal(json_object_get(j, "tokens"), g12, n12),
           "greedy12 from seq_a through the API (status %ld)", st);
    json_decref(j);
    /* the empty prompt as text works without a tokenizer too */
    j = call(d, "POST", "/v1/generate",
             json_pack("{s:s,s:s,s:I,s:f,s:b}", "state", "seq_a", "prompt", "", "max_tokens",
                       (json_int_t)n12, "temperature", 0.0, "ignore_eos", 1),
             &st);
    CHECKF(st == 200 && tokens_equal(json_object_get(j, "tokens"), g12, n12),
           "greedy12 with prompt \"\" (status %ld)", st);
    CHECK(!strcmp(json_string_value(json_object_get(j, "finish_reason")), "length"));
    json_t *t = json_object_get(j, "timings");
    CHECK(json_is_number(json_object_get(t, "queue_ms")) &&
          json_is_number(json_object_get(t, "prefill_ms")) &&
          json_is_number(json_object_get(t, "decode_ms")) &&
          json_is_number(json_object_get(t, "tokens_per_s")));
    CHECK(json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")) ==
          (json_int_t)n12);
    json_decref(j);

    /* merges: stored and on the fly, scored on seq_q and continued greedily */
    size_t qn;
    const int32_t *q = seq_ids("q", &qn);
    const int V = 512;
    json_t *merges = json_object_get(G.cases, "merges");
    size_t mi;
    json_t *mc;
    json_array_foreach(merges, mi, mc)
    {
        const char *mname = json_string_value(json_object_get(mc, "name"));
        json_t *srcs = json_object_get(mc, "sources"), *sources = merge_sources(mc);
        char stored[64], gname[96];
        snprintf(stored, sizeof stored, "merge_%s", mname);
        json_t *rec = call(d, "POST", "/v1/states/merge",
                           json_pack("{s:O,s:s}", "sources", sources, "name", stored), &st);
        CHECKF(st == 201, "stored merge %s: %ld", mname, st);
        CHECK(json_array_size(json_object_get(rec, "parents")) == json_array_size(srcs));
        json_decref(rec);
        size_t len;
        uint8_t *f = get_data(d, stored, NULL, &len, &st);
        if (f) {
            snprintf(gname, sizeof gname, "merge_%s.state.conv", mname);
            check_tensor(f, len, "conv", &G, gname, 1e-3);
            snprintf(gname, sizeof gname, "merge_%s.state.ssm", mname);
            check_tensor(f, len, "ssm", &G, gname, 1e-3);
            free(f);
        }
        snprintf(gname, sizeof gname, "merge_%s.query_logits", mname);
        const float *ql = gt(&G, gname, NULL);
        snprintf(gname, sizeof gname, "merge_%s.greedy8", mname);
        size_t n8;
        const int32_t *g8 = gt(&G, gname, &n8);
        for (int fly = 0; fly < 2; fly++) {
            /* score: context q[0], continuation q[1:] -> every log-prob has a golden */
            json_t *b =
                json_pack("{s:[i],s:o}", "context", q[0], "continuation", ids_json(q + 1, qn - 1));
            if (fly)
                json_object_set(b, "merge", sources);
            else
                json_object_set_new(b, "state", json_string(stored));
            j = call(d, "POST", "/v1/score", b, &st);
            json_t *lps = json_object_get(j, "token_logprobs");
            CHECKF(st == 200 && json_array_size(lps) == qn - 1, "score %s fly=%d: %ld", mname, fly,
                   st);
            double worst = 0, sum = 0;
            for (size_t i = 1; i < qn && json_array_size(lps) == qn - 1; i++) {
                double want = ss_logprob_of(ql + (i - 1) * V, V, q[i]);
                double got = json_number_value(json_array_get(lps, i - 1));
                sum += got;
                if (fabs(got - want) > worst) worst = fabs(got - want);
            }
            CHECKF(worst < 4e-3, "merge %s (fly=%d): log-probs off by %.3g", mname, fly, worst);
            CHECK(fabs(json_number_value(json_object_get(j, "logprob_sum")) - sum) < 1e-3);
            CHECK(json_integer_value(json_object_get(j, "n_tokens")) == (json_int_t)(qn - 1));
            double ppl = json_number_value(json_object_get(j, "perplexity"));
            CHECK(fabs(ppl - exp(-sum / (double)(qn - 1))) < 1e-3 * ppl);
            json_decref(j);

            /* the whole of q as continuation: the first log-prob comes from final_hidden */
            b = json_pack("{s:o}", "continuation", ids_json(q, qn));
            if (fly)
                json_object_set(b, "merge", sources);
            else
                json_object_set_new(b, "state", json_string(stored));
            j = call(d, "POST", "/v1/score", b, &st);
            lps = json_object_get(j, "token_logprobs");
            CHECK(st == 200 && json_is_real(json_array_get(lps, 0)));
            if (json_array_size(lps) == qn) {
                double want = ss_logprob_of(ql, V, q[1]);
                CHECK(fabs(json_number_value(json_array_get(lps, 1)) - want) < 4e-3);
            }
            json_decref(j);

            /* greedy8 after q */
            b = json_pack("{s:o,s:I,s:f,s:b}", "prompt", ids_json(q, qn), "max_tokens",
                          (json_int_t)n8, "temperature", 0.0, "ignore_eos", 1);
            if (fly)
                json_object_set(b, "merge", sources);
            else
                json_object_set_new(b, "state", json_string(stored));
            j = call(d, "POST", "/v1/generate", b, &st);
            CHECKF(st == 200 && tokens_equal(json_object_get(j, "tokens"), g8, n8),
                   "merge %s (fly=%d): greedy8 differs", mname, fly);
            json_decref(j);
        }
        json_decref(sources);
    }

    /* normalize: weights 1 and 3 become 0.25 / 0.75 = merge ab_25_75 */
    json_t *rec = call(d, "POST", "/v1/states/merge",
                       json_pack("{s:[{s:s,s:i},{s:s,s:i}],s:b}", "sources", "state", "seq_a",
                                 "weight", 1, "state", "seq_b", "weight", 3, "normalize", 1),
                       &st);
    CHECK(st == 201);
    json_t *par = json_object_get(rec, "parents");
    CHECK(fabs(json_number_value(json_object_get(json_array_get(par, 0), "weight")) - 0.25) < 1e-9);
    size_t len;
    uint8_t *f = get_data(d, json_string_value(json_object_get(rec, "id")), NULL, &len, &st);
    if (f) {
        check_tensor(f, len, "ssm", &G, "merge_ab_25_75.state.ssm", 1e-3);
        free(f);
    }
    json_decref(rec);

    /* score with neither context nor state: the first log-prob is null, left out of the sum */
    j = call(d, "POST", "/v1/score", json_pack("{s:o}", "continuation", ids_json(q, qn)), &st);
    json_t *lps = json_object_get(j, "token_logprobs");
    CHECK(st == 200 && json_is_null(json_array_get(lps, 0)) && json_array_size(lps) == qn);
    double sum = 0;
    for (size_t i = 1; i < json_array_size(lps); i++)
        sum += json_number_value(json_array_get(lps, i));
    CHECK(fabs(json_number_value(json_object_get(j, "logprob_sum")) - sum) < 1e-3);
    json_decref(j);

    /* "from": continue a stored state; the result equals the state of the concatenation */
    size_t an, bn;
    const int32_t *ai = seq_ids("a", &an), *bi = seq_ids("b", &bn);
    int32_t *ab = malloc((an + bn) * sizeof *ab);
    memcpy(ab, ai, an * sizeof *ab);
    memcpy(ab + an, bi, bn * sizeof *ab);
    rec = call(
        d, "POST", "/v1/states",
        json_pack("{s:o,s:s,s:s}", "tokens", ids_json(bi, bn), "from", "seq_a", "name", "a_then_b"),
        &st);
    CHECK(st == 201 &&
          json_integer_value(json_object_get(rec, "n_tokens")) == (json_int_t)(an + bn));
    CHECK(json_array_size(json_object_get(rec, "parents")) == 1);
    json_decref(rec);
    json_decref(create_state(d, ab, an + bn, "ab_direct", &st));
    size_t l1, l2;
    uint8_t *f1 = get_data(d, "a_then_b", NULL, &l1, NULL),
            *f2 = get_data(d, "ab_direct", NULL, &l2, NULL);
    if (f1 && f2) {
        st_file s1, s2;
        if (st_parse(&s1, f1, l1, "1") == SS_OK && st_parse(&s2, f2, l2, "2") == SS_OK) {
            const st_tensor *t1 = st_find(&s1, "ssm"), *t2 = st_find(&s2, "ssm");
            float *x = malloc(t1->n_bytes), *y = malloc(t2->n_bytes);
            memcpy(x, t1->data, t1->n_bytes);
            memcpy(y, t2->data, t2->n_bytes);
            CHECK(t1->n_bytes == t2->n_bytes && max_abs_diff(x, y, t1->n_elem) < 1e-4);
            free(x);
            free(y);
            st_free(&s1);
            st_free(&s2);
        }
    }
    free(f1);
    free(f2);
    free(ab);

    /* save_state: the state after the generated tokens is stored */
    j = call(d, "POST", "/v1/generate",
             json_pack("{s:s,s:[],s:i,s:f,s:b,s:{s:s,s:[s]}}", "state", "seq_a", "prompt",
                       "max_tokens", 4, "temperature", 0.0, "ignore_eos", 1, "save_state", "name",
                       "after_gen", "tags", "gen"),
             &st);
    json_t *srec = json_object_get(j, "state");
    CHECK(st == 200 && srec &&
          !strcmp(json_string_value(json_object_get(srec, "name")), "after_gen"));
    size_t an2;
    seq_ids("a", &an2);
    CHECK(json_integer_value(json_object_get(srec, "n_tokens")) == (json_int_t)(an2 + 4));
    json_decref(j);
}

/*
 * Batch forms on a model without Mixture of Tokens: the members are independent, so each gives
 * what a request of its own gives (and they may have any lengths). Then their errors.
 */
static void test_batches(srv *d)
{
    long st;
    size_t an, bn, qn, cn;
    const int32_t *a = seq_ids("a", &an), *b = seq_ids("b", &bn), *q = seq_ids("q", &qn),
                  *c = seq_ids("c", &cn);
    /* POST /v1/states, batch form: the request's tags for members without their own */
    json_t *j = call(d, "POST", "/v1/states",
                     json_pack("{s:[{s:o,s:s},{s:o,s:s,s:[s]}],s:[s]}", "batch", "tokens",
                               ids_json(a, an), "name", "bt_a", "tokens", ids_json(b, bn), "name",
                               "bt_b", "tags", "own", "tags", "bt"),
                     &st);
    json_t *data = json_object_get(j, "data");
    CHECKF(st == 201 && json_array_size(data) == 2, "states batch: %ld", st);
    json_t *ra = json_array_get(data, 0), *rb = json_array_get(data, 1);
    CHECK(jstr_is(json_object_get(ra, "name"), "bt_a") &&
          json_integer_value(json_object_get(ra, "n_tokens")) == (json_int_t)an &&
          jstr_is(json_array_get(json_object_get(ra, "tags"), 0), "bt"));
    CHECK(jstr_is(json_object_get(rb, "name"), "bt_b") &&
          json_integer_value(json_object_get(rb, "n_tokens")) == (json_int_t)bn &&
          jstr_is(json_array_get(json_object_get(rb, "tags"), 0), "own"));
    json_decref(j);
    size_t len;
    uint8_t *f = get_data(d, "bt_a", NULL, &len, &st);
    if (f) {
        check_tensor(f, len, "ssm", &G, "seq_a.state.ssm", 1e-3);
        check_tensor(f, len, "final_hidden", &G, "seq_a.final_hidden", 1e-3);
        free(f);
    }
    f = get_data(d, "bt_b", NULL, &len, &st);
    if (f) {
        check_tensor(f, len, "conv", &G, "seq_b.state.conv", 1e-3);
        free(f);
    }
    CHECK(f != NULL);

    /* POST /v1/score, batch form: each result equals the request alone */
    j = call(d, "POST", "/v1/score",
             json_pack("{s:s,s:[{s:[i],s:o},{s:o}]}", "state", "merge_ab_25_75", "batch",
                       "context", q[0], "continuation", ids_json(q + 1, qn - 1), "continuation",
                       ids_json(c, cn)),
             &st);
    json_t *res = json_object_get(j, "results");
    CHECKF(st == 200 && json_array_size(res) == 2, "score batch: %ld", st);
    json_t *one = call(d, "POST", "/v1/score",
                       json_pack("{s:s,s:[i],s:o}", "state", "merge_ab_25_75", "context", q[0],
                                 "continuation", ids_json(q + 1, qn - 1)),
                       NULL);
    json_t *two = call(d, "POST", "/v1/score",
                       json_pack("{s:s,s:o}", "state", "merge_ab_25_75", "continuation",
                                 ids_json(c, cn)),
                       NULL);
    for (int k = 0; k < 2 && json_array_size(res) == 2; k++) {
        json_t *got = json_array_get(res, (size_t)k), *want = k ? two : one;
        json_t *gl = json_object_get(got, "token_logprobs");
        json_t *wl = json_object_get(want, "token_logprobs");
        CHECK(json_integer_value(json_object_get(got, "index")) == k);
        CHECK(json_array_size(gl) == json_array_size(wl) && json_array_size(gl) > 0);
        for (size_t i = 0; i < json_array_size(gl) && i < json_array_size(wl); i++)
            CHECKF(fabs(json_number_value(json_array_get(gl, i)) -
                        json_number_value(json_array_get(wl, i))) < 1e-5,
                   "score batch member %d, token %zu differs from the request alone", k, i);
    }
    json_decref(one);
    json_decref(two);
    json_decref(j);

    /* POST /v1/generate, "prompts": greedy8 after q for the first, the request alone for the
     * second; save_state stores each member's state */
    size_t n8;
    const int32_t *g8 = gt(&G, "merge_ab_25_75.greedy8", &n8);
    j = call(d, "POST", "/v1/generate",
             json_pack("{s:s,s:[o,o],s:I,s:f,s:b,s:{s:[s]}}", "state", "merge_ab_25_75",
                       "prompts", ids_json(q, qn), ids_json(c, cn), "max_tokens", (json_int_t)n8,
                       "temperature", 0.0, "ignore_eos", 1, "save_state", "tags", "bsave"),
             &st);
    res = json_object_get(j, "results");
    CHECKF(st == 200 && json_array_size(res) == 2, "generate batch: %ld", st);
    json_t *alone = call(d, "POST", "/v1/generate",
                         json_pack("{s:s,s:o,s:I,s:f,s:b}", "state", "merge_ab_25_75", "prompt",
                                   ids_json(c, cn), "max_tokens", (json_int_t)n8, "temperature",
                                   0.0, "ignore_eos", 1),
                         NULL);
    json_t *r0 = json_array_get(res, 0), *r1 = json_array_get(res, 1);
    CHECK(tokens_equal(json_object_get(r0, "tokens"), g8, n8));
    CHECK(json_equal(json_object_get(r1, "tokens"), json_object_get(alone, "tokens")));
    json_t *mrec = call(d, "GET", "/v1/states/merge_ab_25_75", NULL, NULL);
    json_int_t base = json_integer_value(json_object_get(mrec, "n_tokens"));
    json_decref(mrec);
    json_t *s0 = json_object_get(r0, "state"), *s1 = json_object_get(r1, "state");
    CHECK(json_integer_value(json_object_get(s0, "n_tokens")) == base + (json_int_t)(qn + n8) &&
          json_integer_value(json_object_get(s1, "n_tokens")) == base + (json_int_t)(cn + n8) &&
          jstr_is(json_array_get(json_object_get(s1, "tags"), 0), "bsave"));
    CHECK(json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")) ==
          (json_int_t)(2 * n8));
    json_decref(alone);
    json_decref(j);

    /* errors */
    check_error(call(d, "POST", "/v1/states",
                     json_pack("{s:[{s:[i],s:s},{s:[i],s:s}]}", "batch", "tokens", 1, "name", "dup",
                               "tokens", 2, "name", "dup"),
                     &st),
                st, 422, "invalid_value", "two batch members with one name");
    check_error(call(d, "POST", "/v1/states",
                     json_pack("{s:[{s:[i],s:s}]}", "batch", "tokens", 1, "name", "seq_a"), &st),
                st, 409, "already_exists", "batch member with a taken name");
    check_error(call(d, "POST", "/v1/states",
                     json_pack("{s:[{s:[i]}],s:s}", "batch", "tokens", 1, "name", "x"), &st),
                st, 400, "bad_request", "batch with a name of its own");
    check_error(call(d, "POST", "/v1/states", json_pack("{s:[]}", "batch"), &st), st, 400,
                "bad_request", "empty batch");
    check_error(call(d, "POST", "/v1/states", json_pack("{s:[i]}", "batch", 3), &st), st, 400,
                "bad_request", "batch member not an object");
    json_t *many = json_array();
    for (int i = 0; i < 17; i++) json_array_append_new(many, json_pack("{s:[i]}", "tokens", 1));
    check_error(call(d, "POST", "/v1/states", json_pack("{s:o}", "batch", many), &st), st, 422,
                "invalid_value", "17 batch members");
    j = call(d, "POST", "/v1/score",
             json_pack("{s:[{s:[i]},{s:[i]}]}", "batch", "continuation", 1, "continuation", 99999),
             &st);
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    CHECKF(st == 422 && msg && strstr(msg, "batch[1].continuation"), "bad id in a member: %s",
           msg ? msg : "");
    json_decref(j);
    check_error(call(d, "POST", "/v1/score",
                     json_pack("{s:[{s:[i]}],s:[i]}", "batch", "continuation", 1, "continuation",
                               2),
                     &st),
                st, 400, "bad_request", "score batch and a continuation");
    check_error(call(d, "POST", "/v1/score", json_pack("{s:[{s:[i]}]}", "batch", "context", 1),
                     &st),
                st, 400, "bad_request", "score batch member without continuation");
    check_error(call(d, "POST", "/v1/generate",
                     json_pack("{s:[[i]],s:[i]}", "prompts", 1, "prompt", 1), &st),
                st, 400, "bad_request", "prompt and prompts");
    check_error(call(d, "POST", "/v1/generate",
                     json_pack("{s:[[i]],s:b}", "prompts", 1, "stream", 1), &st),
                st, 400, "unsupported", "prompts with stream");
    check_error(call(d, "POST", "/v1/generate",
                     json_pack("{s:[[i]],s:{s:s}}", "prompts", 1, "save_state", "name", "one"),
                     &st),
                st, 422, "invalid_value", "prompts with a named save_state");
    check_error(call(d, "POST", "/v1/generate", json_pack("{s:[[i],[]]}", "prompts", 1), &st), st,
                422, "invalid_value", "an empty member prompt from the zero state");
}

static void test_errors(srv *d)
{
    long st;
    resp r;
    /* 400: not JSON, not an object, wrong types, text without a tokenizer, both state+merge */
    r = request(d, "POST", "/v1/generate", "{not json", 9, NULL);
    check_error(json_loads(r.body, 0, NULL), r.status, 400, "bad_json", "bad JSON");
    free(r.body);
    r = request(d, "POST", "/v1/score", "[1,2]", 5, NULL);
    check_error(json_loads(r.body, 0, NULL), r.status, 400, "bad_json", "array body");
    free(r.body);
    r = request(d, "POST", "/v1/states", "", 0, NULL);
    check_error(json_loads(r.body, 0, NULL), r.status, 400, NULL, "empty body");
    free(r.body);
    check_error(call(d, "POST", "/v1/generate", json_pack("{s:s}", "prompt", "hello"), &st), st,
                400, "unsupported", "text without a tokenizer");
    check_error(call(d, "POST", "/v1/tokenize", json_pack("{s:s}", "text", "hello"), &st), st, 400,
                "unsupported", "tokenize without a tokenizer");
    check_error(call(d, "POST", "/v1/generate",
                     json_pack("{s:[i],s:s}", "prompt", 1, "max_tokens", "x"), &st),
                st, 400, NULL, "max_tokens a string");
    check_error(call(d, "POST", "/v1/generate",
                     json_pack("{s:[i],s:s,s:[{s:s,s:i}]}", "prompt", 1, "state", "seq_a", "merge",
                               "state", "seq_b", "weight", 1),
                     &st),
                st, 400, NULL, "state and merge");
    check_error(call(d, "POST", "/v1/states", json_pack("{s:s}", "name", "x"), &st), st, 400, NULL,
                "no prompt");
    /* 404 */
    check_error(call(d, "GET", "/v1/states/no_such_state", NULL, &st), st, 404, "not_found",
                "unknown state");
    check_error(call(d, "GET", "/v1/states/st_00000000000000000000000000000000", NULL, &st), st,
                404, "not_found", "unknown id");
    check_error(call(d, "DELETE", "/v1/states/no_such_state", NULL, &st), st, 404, "not_found",
                "delete unknown");
    check_error(call(d, "GET", "/v1/states/no_such_state/data", NULL, &st), st, 404, "not_found",
                "export unknown");
    check_error(
        call(d, "POST", "/v1/generate", json_pack("{s:s,s:[]}", "state", "nope", "prompt"), &st),
        st, 404, "not_found", "generate from unknown");
    check_error(call(d, "POST", "/v1/score",
                     json_pack("{s:[{s:s,s:f}],s:[i]}", "merge", "state", "nope", "weight", 1.0,
                               "continuation", 1),
                     &st),
                st, 404, "not_found", "merge of unknown");
    check_error(call(d, "GET", "/v1/nothing", NULL, &st), st, 404, "not_found", "unknown endpoint");
    /* 405 */
    check_error(call(d, "GET", "/v1/generate", NULL, &st), st, 405, "method_not_allowed",
                "GET generate");
    /* 409: name taken */
    size_t n;
    const int32_t *ids = seq_ids("a", &n);
    check_error(create_state(d, ids, n, "seq_a", &st), st, 409, "already_exists", "name taken");
    check_error(call(d, "POST", "/v1/states/merge",
                     json_pack("{s:[{s:s,s:i}],s:s}", "sources", "state", "seq_b", "weight", 1,
                               "name", "seq_a"),
                     &st),
                st, 409, "already_exists", "merge name taken");
    /* 415 */
    req_opts o = {.ctype = "text/plain"};
    r = request(d, "POST", "/v1/generate", "{}", 2, &o);
    check_error(json_loads(r.body, 0, NULL), r.status, 415, "unsupported_media_type", "text/plain");
    free(r.body);
    o.ctype = "application/json";
    r = request(d, "POST", "/v1/states/import", "xx", 2, &o);
    check_error(json_loads(r.body, 0, NULL), r.status, 415, "unsupported_media_type",
                "import json");
    free(r.body);
    /* 422: NaN weight (bare NaN, as Python writes it), empty merge, bad ids, bad values */
    const char *nan_merge = "{\"sources\": [{\"state\": \"seq_a\", \"weight\": NaN}, {\"state\": "
                            "\"seq_b\", \"weight\": 1}]}";
    r = request(d, "POST", "/v1/states/merge", nan_merge, (long)strlen(nan_merge), NULL);
    check_error(json_loads(r.body, 0, NULL), r.status, 422, "invalid_value", "NaN weight");
    free(r.body);
    const char *big_merge = "{\"sources\": [{\"state\": \"seq_a\", \"weight\": 1e39}]}";
    r = request(d, "POST", "/v1/states/merge", big_merge, (long)strlen(big_merge), NULL);
    check_error(json_loads(r.body, 0, NULL), r.status, 422, "invalid_value", "weight 1e39");
    CHECK(strstr(r.body, "too large") != NULL);
    free(r.body);
    const char *inf_gen =
        "{\"merge\": [{\"state\": \"seq_a\", \"weight\": Infinity}], \"prompt\": [1]}";
    r = request(d, "POST", "/v1/generate", inf_gen, (long)strlen(inf_gen), NULL);
    check_error(json_loads(r.body, 0, NULL), r.status, 422, "invalid_value", "Infinity weight");
    free(r.body);
    check_error(call(d, "POST", "/v1/states/merge", json_pack("{s:[]}", "sources"), &st), st, 422,
                "invalid_value", "empty merge");
    check_error(
        call(d, "POST", "/v1/generate", json_pack("{s:[],s:[i]}", "merge", "prompt", 1), &st), st,
        422, "invalid_value", "empty on-the-fly merge");
    check_error(call(d, "POST", "/v1/states/merge",
                     json_pack("{s:[{s:s,s:i},{s:s,s:i}],s:b}", "sources", "state", "seq_a",
                               "weight", 1, "state", "seq_b", "weight", -1, "normalize", 1),
                     &st),
                st, 422, "invalid_value", "normalize with zero sum");
    check_error(call(d, "POST", "/v1/generate", json_pack("{s:[i]}", "prompt", 512), &st), st, 422,
                "invalid_value", "token id = vocab");
    check_error(call(d, "POST", "/v1/generate", json_pack("{s:[i]}", "prompt", -1), &st), st, 422,
                "invalid_value", "negative token id");
    check_error(call(d, "POST", "/v1/score", json_pack("{s:[i,i]}", "continuation", 1, 99999), &st),
                st, 422, "invalid_value", "bad continuation id");
    check_error(call(d, "POST", "/v1/states", json_pack("{s:[i]}", "tokens", 600), &st), st, 422,
                "invalid_value", "bad id in a state prompt");
    check_error(call(d, "POST", "/v1/generate",
                     json_pack("{s:[i],s:f}", "prompt", 1, "temperature", -1.0), &st),
                st, 422, "invalid_value", "negative temperature");
    check_error(call(d, "POST", "/v1/generate",
                     json_pack("{s:[i],s:i}", "prompt", 1, "max_tokens", 1 << 30), &st),
                st, 422, "invalid_value", "max_tokens above the limit");
    check_error(call(d, "POST", "/v1/generate", json_pack("{s:[]}", "prompt"), &st), st, 422,
                "invalid_value", "empty prompt from the zero state");
    check_error(call(d, "POST", "/v1/states",
                     json_pack("{s:[i],s:s}", "tokens", 1, "name", "bad name!"), &st),
                st, 422, "invalid_value", "bad name");
    check_error(
        call(d, "POST", "/v1/states",
             json_pack("{s:[i],s:s}", "tokens", 1, "name", "st_0123456789abcdef0123456789abcdef"),
             &st),
        st, 422, "invalid_value", "id-shaped name");
    check_error(call(d, "GET", "/v1/states?limit=0", NULL, &st), st, 422, "invalid_value",
                "limit 0");
    check_error(call(d, "GET", "/v1/states?limit=abc", NULL, &st), st, 422, "invalid_value",
                "limit abc");
    check_error(call(d, "GET", "/v1/states/seq_a/data?dtype=F64", NULL, &st), st, 422,
                "invalid_value", "export dtype");
    check_error(call(d, "POST", "/v1/score", json_pack("{s:[]}", "continuation"), &st), st, 422,
                "invalid_value", "empty continuation");
    /* import: garbage is 400, a truncated file 400 */
    o.ctype = "application/octet-stream";
    r = request(d, "POST", "/v1/states/import", "garbage!garbage!", 16, &o);
    check_error(json_loads(r.body, 0, NULL), r.status, 400, NULL, "import garbage");
    free(r.body);
    size_t len;
    uint8_t *f = get_data(d, "seq_a", NULL, &len, &st);
    if (f) {
        r = request(d, "POST", "/v1/states/import", f, (long)len / 2, &o);
        check_error(json_loads(r.body, 0, NULL), r.status, 400, NULL, "import truncated");
        free(r.body);
        /* a non-finite value inside: 422 */
        st_file sf;
        if (st_parse(&sf, f, len, "x") == SS_OK) {
            const st_tensor *t = st_find(&sf, "ssm");
            float nanv = NAN;
            memcpy(f + t->offset + 8, &nanv, 4);
            st_free(&sf);
            r = request(d, "POST", "/v1/states/import", f, (long)len, &o);
            check_error(json_loads(r.body, 0, NULL), r.status, 422, "invalid_value", "import NaN");
            free(r.body);
        }
        free(f);
    }
}

static void test_garbage(srv *d)
{
    /* none of these may crash the daemon or get a bare 500 */
    static const char *const bodies[] = {
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        "{\"prompt\": [1e999]}",
        "{\"prompt\": [1.5]}",
        "{\"prompt\": [99999999999999999999999]}",
        "{\"prompt\": \"\\u0000\"}",
        "{\"prompt\": [1], \"stop\": [\"\"]}",
        "{\"prompt\": [1], \"stop\": 5}",
        "{\"prompt\": [1], \"logprobs\": 1000}",
        "{\"prompt\": [1], \"seed\": \"x\"}",
        "{\"prompt\": [1], \"top_p\": 2}",
        "{\"prompt\": [1], \"save_state\": 3}",
        "{\"prompt\": {}, \"merge\": 5}",
        "{\"state\": 7}",
        "\xff\xfe{}",
        "{\"prompt\": \"\xc3\x28\"}",
        "null",
    };
    static const char *const paths[] = {"/v1/generate",     "/v1/score",       "/v1/states",
                                        "/v1/states/merge", "/v1/completions", "/v1/detokenize",
                                        "/v1/states/search"};
    for (size_t p = 0; p < sizeof paths / sizeof *paths; p++) {
        for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
            resp r = request(d, "POST", paths[p], bodies[i], (long)strlen(bodies[i]), NULL);
            /* fields an endpoint does not take are ignored: 2xx is fine, 5xx never */
            CHECKF(r.status >= 200 && r.status < 500, "%s %s: status %ld", paths[p], bodies[i],
                   r.status);
            json_t *j = json_loads(r.body, 0, NULL);
            CHECKF(r.status < 400 || json_object_get(j, "error") != NULL, "%s: no error object",
                   paths[p]);
            json_decref(j);
            free(r.body);
        }
    }
    static const char *const bad_paths[] = {
        "/v1/states/%zz",
        "/v1/states/%00",
        "/v1/states/a%2",
        "/v1/states//data",
        "/v1/states/"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "/v1/states?limit=99999999999999999999",
        "/v1/states?cursor=%ff%fe"};
    for (size_t i = 0; i < sizeof bad_paths / sizeof *bad_paths; i++) {
        resp r = request(d, "GET", bad_paths[i], NULL, 0, NULL);
        CHECKF(r.status >= 400 && r.status < 500, "GET %s: status %ld", bad_paths[i], r.status);
        free(r.body);
    }
    long st;
    json_decref(call(d, "GET", "/healthz", NULL, &st));
    CHECK(st == 200);
}

static void test_pagination(srv *d)
{
    long st;
    char ids[7][40];
    for (int i = 0; i < 7; i++) {
        char name[32];
        snprintf(name, sizeof name, "page/%d", i);
        json_t *rec = call(d, "POST", "/v1/states",
                           json_pack("{s:[i,i],s:s,s:[s],s:{s:i}}", "tokens", i + 1, i + 2, "name",
                                     name, "tags", "paged", "metadata", "i", i),
                           &st);
        CHECK(st == 201);
        CHECK(json_integer_value(json_object_get(json_object_get(rec, "metadata"), "i")) == i);
        snprintf(ids[i], sizeof ids[i], "%s", json_string_value(json_object_get(rec, "id")));
        json_decref(rec);
    }
    /* newest first, 3 per page, by tag */
    char path[512] = "/v1/states?tag=paged&limit=3";
    int seen = 0, pages = 0;
    while (pages < 10) {
        json_t *j = call(d, "GET", path, NULL, &st);
        CHECK(st == 200);
        json_t *data = json_object_get(j, "data");
        for (size_t i = 0; i < json_array_size(data); i++) {
            const char *id = json_string_value(json_object_get(json_array_get(data, i), "id"));
            CHECKF(seen < 7 && !strcmp(id, ids[6 - seen]), "page order at %d", seen);
            seen++;
        }
        pages++;
        const char *next = json_string_value(json_object_get(j, "next_cursor"));
        if (!next) {
            json_decref(j);
            break;
        }
        char *enc = curl_easy_escape(NULL, next, 0);
        snprintf(path, sizeof path, "/v1/states?tag=paged&limit=3&cursor=%s", enc);
        curl_free(enc);
        json_decref(j);
    }
    CHECK(seen == 7 && pages == 3);
    /* prefix filter (a name with '/' as %2F in a path segment, too) */
    json_t *j = call(d, "GET", "/v1/states?prefix=page/&limit=100", NULL, &st);
    CHECK(st == 200 && json_array_size(json_object_get(j, "data")) == 7);
    json_decref(j);
    j = call(d, "GET", "/v1/states/page%2F3", NULL, &st);
    CHECK(st == 200 && !strcmp(json_string_value(json_object_get(j, "id")), ids[3]));
    json_decref(j);
    j = call(d, "GET", "/v1/states?tag=nothing-has-this", NULL, &st);
    CHECK(st == 200 && json_array_size(json_object_get(j, "data")) == 0 &&
          json_is_null(json_object_get(j, "next_cursor")));
    json_decref(j);
    /* delete by name, then by id */
    resp r = request(d, "DELETE", "/v1/states/page%2F0", NULL, 0, NULL);
    CHECK(r.status == 204 && r.len == 0);
    free(r.body);
    char p2[128];
    snprintf(p2, sizeof p2, "/v1/states/%s", ids[1]);
    r = request(d, "DELETE", p2, NULL, 0, NULL);
    CHECK(r.status == 204);
    free(r.body);
    check_error(call(d, "GET", p2, NULL, &st), st, 404, "not_found", "deleted state");
    j = call(d, "GET", "/v1/states?tag=paged", NULL, &st);
    CHECK(json_array_size(json_object_get(j, "data")) == 5);
    json_decref(j);
}

/* Tensor bytes of an exported state file (metadata excluded): conv ++ ssm ++ final_hidden. */
static void test_export_import(srv *d)
{
    long st;
    size_t len;
    uint8_t *f = get_data(d, "seq_b", NULL, &len, &st);
    CHECK(f != NULL);
    if (!f) return;
    /* the metadata carries the record and the fingerprint */
    st_file sf;
    CHECK_OK(st_parse(&sf, f, len, "export"));
    json_t *md = sf.metadata_json ? json_loads(sf.metadata_json, 0, NULL) : NULL;
    CHECK(md && !strcmp(json_string_value(json_object_get(md, "model_fingerprint")), fingerprint));
    json_t *orig = json_loads(json_string_value(json_object_get(md, "record")), 0, NULL);
    CHECK(orig && !strcmp(json_string_value(json_object_get(orig, "name")), "seq_b"));
    json_decref(md);
    st_free(&sf);

    req_opts o = {.ctype = "application/octet-stream"};
    resp r =
        request(d, "POST", "/v1/states/import?name=seq_b_copy&tags=imported,x", f, (long)len, &o);
    CHECK(r.status == 201);
    json_t *rec = json_loads(r.body, 0, NULL);
    free(r.body);
    CHECK(!strcmp(json_string_value(json_object_get(rec, "checksum")),
                  json_string_value(json_object_get(orig, "checksum"))));
    CHECK(json_integer_value(json_object_get(rec, "n_tokens")) ==
          json_integer_value(json_object_get(orig, "n_tokens")));
    CHECK(json_array_size(json_object_get(rec, "tags")) == 2);
    json_decref(rec);
    size_t len2;
    uint8_t *f2 = get_data(d, "seq_b_copy", NULL, &len2, &st);
    CHECK(f2 && same_tensors(f, len, f2, len2));
    free(f2);
    /* data changed after the export (one low bit of the last float): the record no longer
     * describes it, so it imports as a fresh state (n_tokens 0, no parents) */
    {
        uint8_t *mf = malloc(len);
        memcpy(mf, f, len);
        mf[len - 4] ^= 1;
        r = request(d, "POST", "/v1/states/import?name=seq_b_changed", mf, (long)len, &o);
        CHECK(r.status == 201);
        json_t *cj = json_loads(r.body, 0, NULL);
        CHECK(json_integer_value(json_object_get(orig, "n_tokens")) > 0);
        CHECK(json_integer_value(json_object_get(cj, "n_tokens")) == 0 &&
              json_array_size(json_object_get(cj, "parents")) == 0);
        json_decref(cj);
        free(r.body);
        free(mf);
    }
    /* a file without final_hidden (its name altered in the header): 422 naming the tensor */
    {
        uint8_t *nf = malloc(len);
        memcpy(nf, f, len);
        uint8_t *at = memmem(nf, len, "\"final_hidden\"", 14);
        CHECK(at != NULL);
        if (at) at[12] = 'X';
        r = request(d, "POST", "/v1/states/import?name=no_hidden", nf, (long)len, &o);
        json_t *ej = json_loads(r.body, 0, NULL);
        const char *m = json_string_value(json_object_get(json_object_get(ej, "error"), "message"));
        CHECKF(m && strstr(m, "final_hidden"), "message: %s", m ? m : "(none)");
        check_error(ej, r.status, 422, "invalid_value", "import without final_hidden");
        free(r.body);
        free(nf);
    }
        /* importing again under the same name: 409; without a name: a new unnamed state */
    r = request(d, "POST", "/v1/states/import?name=seq_b_copy", f, (long)len, &o);
    check_error(json_loads(r.body, 0, NULL), r.status, 409, "already_exists", "import name taken");
    free(r.body);
    r = request(d, "POST", "/v1/states/import", f, (long)len, &o);
    CHECK(r.status == 201);
    rec = json_loads(r.body, 0, NULL);
    CHECK(json_is_null(json_object_get(rec, "name")));
    json_decref(rec);
    free(r.body);
    /* BF16 export: smaller, imports, values within BF16 rounding */
    size_t lb;
    uint8_t *fb = get_data(d, "seq_b", "?dtype=BF16", &lb, &st);
    CHECK(fb && lb < len);
    if (fb) {
        st_file bf;
        if (st_parse(&bf, fb, lb, "bf16") == SS_OK) {
            CHECK(st_find(&bf, "ssm") && st_find(&bf, "ssm")->dtype == ST_BF16);
            st_free(&bf);
        }
        r = request(d, "POST", "/v1/states/import?name=seq_b_bf16", fb, (long)lb, &o);
        CHECK(r.status == 201);
        /* the file's data_checksum covers its rounded values: the provenance is kept */
        rec = json_loads(r.body, 0, NULL);
        CHECK(json_integer_value(json_object_get(rec, "n_tokens")) ==
              json_integer_value(json_object_get(orig, "n_tokens")));
        json_decref(rec);
        free(r.body);
        size_t l3;
        uint8_t *f3 = get_data(d, "seq_b_bf16", NULL, &l3, &st);
        if (f3) {
            check_tensor(f3, l3, "ssm", &G, "seq_b.state.ssm", 0.05);
            free(f3);
        }
        free(fb);
    }
    json_decref(orig);
    free(f);
}

/* SSE: events in order, [DONE] last, concatenated text/tokens equal the non-streamed answer. */
static void test_sse(srv *d)
{
    size_t qn;
    const int32_t *q = seq_ids("q", &qn);
    long st;
    json_t *plain = call(d, "POST", "/v1/generate",
                         json_pack("{s:o,s:i,s:f,s:b}", "prompt", ids_json(q, qn), "max_tokens", 24,
                                   "temperature", 0.0, "ignore_eos", 1),
                         &st);
    CHECK(st == 200);
    sse s = {0};
    char ctype[128];
    long status =
        stream(d, "/v1/generate",
               json_pack("{s:o,s:i,s:f,s:b,s:b,s:i}", "prompt", ids_json(q, qn), "max_tokens", 24,
                         "temperature", 0.0, "ignore_eos", 1, "stream", 1, "logprobs", 2),
               &s, ctype, sizeof ctype);
    CHECK(status == 200 && !strncmp(ctype, "text/event-stream", 17));
    CHECK(s.done && !s.after_done && !s.bad);
    size_t ne = json_array_size(s.events);
    CHECKF(ne == 25, "%zu events, want 24 tokens + a last one", ne);
    json_t *toks = json_object_get(plain, "tokens");
    for (size_t i = 0; i + 1 < ne && i < json_array_size(toks); i++) {
        json_t *e = json_array_get(s.events, i);
        CHECKF(json_integer_value(json_object_get(e, "token")) ==
                   json_integer_value(json_array_get(toks, i)),
               "stream token %zu", i);
        CHECK(json_is_string(json_object_get(e, "text")) &&
              json_is_real(json_object_get(e, "logprob")));
        CHECK(json_array_size(json_object_get(e, "top_logprobs")) == 2);
    }
    json_t *last = json_array_get(s.events, ne - 1);
    CHECK(!strcmp(json_string_value(json_object_get(last, "finish_reason")), "length"));
    CHECK(json_integer_value(
              json_object_get(json_object_get(last, "usage"), "completion_tokens")) == 24);
    sse_free(&s);
    json_decref(plain);

    /* completions, streamed vs not: same tokens; [DONE] last; OpenAI shape */
    json_t *c = call(d, "POST", "/v1/completions",
                     json_pack("{s:[o,o],s:i,s:f,s:i}", "prompt", ids_json(q, qn), ids_json(q, 3),
                               "max_tokens", 6, "temperature", 0.0, "logprobs", 1),
                     &st);
    CHECK(st == 200 && !strncmp(json_string_value(json_object_get(c, "id")), "cmpl-", 5));
    CHECK(!strcmp(json_string_value(json_object_get(c, "object")), "text_completion"));
    CHECK(json_is_integer(json_object_get(c, "created")));
    json_t *choices = json_object_get(c, "choices");
    CHECK(json_array_size(choices) == 2);
    json_t *lp = json_object_get(json_array_get(choices, 0), "logprobs");
    CHECK(json_array_size(json_object_get(lp, "token_logprobs")) == 6 &&
          json_array_size(json_object_get(lp, "tokens")) == 6 &&
          json_array_size(json_object_get(lp, "text_offset")) == 6 &&
          json_array_size(json_object_get(lp, "top_logprobs")) == 6);
    json_t *usage = json_object_get(c, "usage");
    CHECK(json_integer_value(json_object_get(usage, "completion_tokens")) <= 12 &&
          json_integer_value(json_object_get(usage, "prompt_tokens")) == (json_int_t)(qn + 3));
    json_decref(c);
    memset(&s, 0, sizeof s);
    status = stream(d, "/v1/completions",
                    json_pack("{s:o,s:i,s:f,s:b}", "prompt", ids_json(q, qn), "max_tokens", 6,
                              "temperature", 0.0, "stream", 1),
                    &s, NULL, 0);
    CHECK(status == 200 && s.done && !s.after_done && !s.bad && json_array_size(s.events) >= 2);
    for (size_t i = 0; i < json_array_size(s.events); i++) {
        json_t *e = json_array_get(s.events, i);
        CHECK(!strcmp(json_string_value(json_object_get(e, "object")), "text_completion"));
    }
    sse_free(&s);

    /* a client that goes away mid-stream: the job is cancelled, the daemon carries on */
    memset(&s, 0, sizeof s);
    atomic_store(&s.abort_after, 3);
    stream(d, "/v1/generate",
           json_pack("{s:[i],s:i,s:b,s:b}", "prompt", 1, "max_tokens", 4000, "ignore_eos", 1,
                     "stream", 1),
           &s, NULL, 0);
    CHECK(!s.done);
    sse_free(&s);
    /* the engine drops the job at its next token: /metrics shows nothing running (bounded poll) */
    int idle = 0;
    for (int i = 0; i < 2000 && !idle; i++) {
        resp r = request(d, "GET", "/metrics", NULL, 0, NULL);
        idle = strstr(r.body, "statesoup_engine_jobs_running 0\n") &&
               strstr(r.body, "statesoup_engine_jobs_queued 0\n");
        free(r.body);
    }
    CHECK(idle);
}

typedef struct gen_thread {
    srv *d;
    json_t *body;
    json_t *answer;
    long status;
    atomic_int done;
    int64_t end_ns;
} gen_thread;

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void *gen_main(void *arg)
{
    gen_thread *g = arg;
    g->answer = call(g->d, "POST", "/v1/generate", g->body, &g->status);
    g->end_ns = now_ns();
    atomic_store(&g->done, 1);
    return NULL;
}

typedef struct stream_thread {
    srv *d;
    int max_tokens;
    sse s;
    long status;
    atomic_int done;
    int64_t end_ns;
} stream_thread;

static void *stream_main(void *arg)
{
    stream_thread *t = arg;
    t->status = stream(t->d, "/v1/generate",
                       json_pack("{s:[i,i,i],s:i,s:b,s:b,s:f}", "prompt", 5, 6, 7, "max_tokens",
                                 t->max_tokens, "ignore_eos", 1, "stream", 1, "temperature", 0.0),
                       &t->s, NULL, 0);
    t->end_ns = now_ns();
    atomic_store(&t->done, 1);
    return NULL;
}

static void test_concurrency(srv *d)
{
    /* a long generation is running (its first events arrived) while the catalog answers */
    stream_thread t = {.d = d, .max_tokens = 100000};
    pthread_t th;
    pthread_create(&th, NULL, stream_main, &t);
    while (atomic_load(&t.s.n) < 2 && !atomic_load(&t.done)) {
        struct timespec ts = {0, 1000000}; /* waiting for a condition: the first events */
        nanosleep(&ts, NULL);
    }
    long st;
    json_t *j = call(d, "GET", "/v1/states?limit=5", NULL, &st);
    CHECK(st == 200);
    json_decref(j);
    j = call(d, "GET", "/v1/states/seq_a", NULL, &st);
    CHECK(st == 200);
    json_decref(j);
    int64_t list_done = now_ns();
    int gen_running = !atomic_load(&t.done);
    atomic_store(&t.s.abort_after, 1); /* done with it: hang up, the daemon cancels the job */
    pthread_join(th, NULL);
    CHECKF(gen_running && list_done < t.end_ns,
           "the catalog answer did not arrive while the generation ran");
    CHECK(t.status == 200 && !t.s.done && json_array_size(t.s.events) >= 2);
    sse_free(&t.s);

    /* parallel generations are served together and give what each gives alone */
    enum { N = 6 };
    gen_thread g[N];
    json_t *alone[N];
    for (int i = 0; i < N; i++) {
        alone[i] = call(d, "POST", "/v1/generate",
                        json_pack("{s:[i,i],s:i,s:f,s:b}", "prompt", 10 + i, 20 + i, "max_tokens",
                                  32, "temperature", 0.0, "ignore_eos", 1),
                        &st);
        CHECK(st == 200);
    }
    pthread_t ths[N];
    for (int i = 0; i < N; i++) {
        g[i] =
            (gen_thread){.d = d,
                         .body = json_pack("{s:[i,i],s:i,s:f,s:b}", "prompt", 10 + i, 20 + i,
                                           "max_tokens", 32, "temperature", 0.0, "ignore_eos", 1)};
        pthread_create(&ths[i], NULL, gen_main, &g[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(ths[i], NULL);
        CHECK(g[i].status == 200);
        CHECKF(
            json_equal(json_object_get(g[i].answer, "tokens"), json_object_get(alone[i], "tokens")),
            "parallel generation %d differs from running alone", i);
        json_decref(g[i].answer);
        json_decref(alone[i]);
    }
}

static void test_metrics(srv *d)
{
    resp r = request(d, "GET", "/metrics", NULL, 0, NULL);
    CHECK(r.status == 200 && !strncmp(r.ctype, "text/plain", 10));
    static const char *const want[] = {
        "statesoup_http_requests_total{endpoint=\"generate\",status=\"200\"}",
        "statesoup_http_requests_total{endpoint=\"states_get\",status=\"404\"}",
        "statesoup_http_request_duration_seconds_bucket{endpoint=\"score\",le=\"+Inf\"}",
        "statesoup_tokens_prefilled_total ",
        "statesoup_tokens_generated_total ",
        "statesoup_states_stored ",
        "statesoup_state_bytes ",
        "statesoup_merges_total{kind=\"stored\"} ",
        "statesoup_merges_total{kind=\"on_the_fly\"} ",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        CHECKF(strstr(r.body, want[i]) != NULL, "/metrics lacks %s", want[i]);
    const char *g = strstr(r.body, "\nstatesoup_tokens_generated_total ");
    CHECK(g && atol(g + strlen("\nstatesoup_tokens_generated_total ")) > 100);
    free(r.body);
}

/* Snapshot of a few states' exported bytes, to compare across restarts. */
typedef struct snap {
    char ref[64];
    uint8_t *data;
    size_t len;
} snap;

static void test_restart_and_cross_model(srv *d, const char *data)
{
    static const char *const refs[] = {"seq_a", "seq_b", "merge_ab_extrap", "seq_b_copy"};
    snap s[4];
    for (int i = 0; i < 4; i++) {
        snprintf(s[i].ref, sizeof s[i].ref, "%s", refs[i]);
        s[i].data = get_data(d, refs[i], NULL, &s[i].len, NULL);
        CHECK(s[i].data != NULL);
    }
    long st;
    json_t *list = call(d, "GET", "/v1/states?limit=1000", NULL, &st);
    size_t n_states = json_array_size(json_object_get(list, "data"));
    json_decref(list);
    daemon_stop(d);

    /* another model on the same catalog: the states are there but not usable (409) */
    srv o;
    if (daemon_start(&o, fixture_path("models/mamba1-untied"), data, NULL) == 0) {
        json_t *j = call(&o, "GET", "/v1/states/seq_a", NULL, &st);
        CHECK(st == 200); /* the record is just data */
        json_decref(j);
        check_error(call(&o, "GET", "/v1/states/seq_a/data", NULL, &st), st, 409, "model_mismatch",
                    "export of another model's state");
        check_error(call(&o, "POST", "/v1/generate",
                         json_pack("{s:s,s:[i]}", "state", "seq_a", "prompt", 1), &st),
                    st, 409, "model_mismatch", "generate from another model's state");
        check_error(call(&o, "POST", "/v1/score",
                         json_pack("{s:[{s:s,s:f}],s:[i]}", "merge", "state", "seq_a", "weight",
                                   1.0, "continuation", 1),
                         &st),
                    st, 409, "model_mismatch", "merge of another model's state");
        check_error(call(&o, "POST", "/v1/states/merge",
                         json_pack("{s:[{s:s,s:f}]}", "sources", "state", "seq_a", "weight", 1.0),
                         &st),
                    st, 409, "model_mismatch", "stored merge of another model's state");
        check_error(call(&o, "POST", "/v1/states",
                         json_pack("{s:s,s:[i]}", "from", "seq_a", "tokens", 1), &st),
                    st, 409, "model_mismatch", "from another model's state");
        /* and a file exported by the tiny model does not import here */
        req_opts io = {.ctype = "application/octet-stream"};
        resp r =
            request(&o, "POST", "/v1/states/import?name=foreign", s[0].data, (long)s[0].len, &io);
        check_error(json_loads(r.body, 0, NULL), r.status, 409, "model_mismatch", "foreign import");
        free(r.body);
        daemon_stop(&o);
    } else {
        CHECK(0);
    }

    /* the tiny model again: every state is still there, bit for bit */
    if (daemon_start(d, fixture_path("models/mamba1-tiny"), data, NULL) != 0) {
        CHECK(0);
        exit(test_done("api"));
    }
    list = call(d, "GET", "/v1/states?limit=1000", NULL, &st);
    CHECK(json_array_size(json_object_get(list, "data")) == n_states);
    json_decref(list);
    for (int i = 0; i < 4; i++) {
        size_t len;
        uint8_t *f = get_data(d, s[i].ref, NULL, &len, NULL);
        CHECKF(f && len == s[i].len && !memcmp(f, s[i].data, len), "%s changed across a restart",
               s[i].ref);
        free(f);
        free(s[i].data);
    }
}

/* Write `text` as the keys file, send the daemon SIGHUP and wait for `logged` in its log. */
static int reload_keys(srv *d, const char *path, const char *text, const char *logged)
{
    FILE *f = fopen(path, "w");
    if (!f) return 0;
    fputs(text, f);
    fclose(f);
    kill(d->pid, SIGHUP);
    return daemon_log_has(d, logged);
}

/* One request with key `key`: its status, and its body parsed into *j (NULL: not kept). */
static long keyed(srv *d, const char *key, const char *method, const char *path, const char *body,
                  json_t **j)
{
    req_opts o = {.key = key};
    resp r = request(d, method, path, body, body ? (long)strlen(body) : 0, &o);
    if (j) *j = r.body ? json_loads(r.body, 0, NULL) : NULL;
    free(r.body);
    return r.status;
}

static void test_auth_and_limits(const char *data)
{
    char keys[512];
    snprintf(keys, sizeof keys, "%s/keys.txt", tmp_root);
    FILE *f = fopen(keys, "w");
    fprintf(f, "# test keys\nreader-key read\nwriter-key write\n");
    fclose(f);
    srv d;
    if (daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--api-keys", keys, "--max-body",
                     "4096", "--quiet", NULL)) {
        CHECK(0);
        return;
    }
    resp r = request(&d, "GET", "/v1/states", NULL, 0, NULL);
    check_error(json_loads(r.body, 0, NULL), r.status, 401, "unauthorized", "no key");
    free(r.body);
    req_opts bad = {.key = "nope"};
    r = request(&d, "GET", "/v1/states", NULL, 0, &bad);
    check_error(json_loads(r.body, 0, NULL), r.status, 401, "unauthorized", "unknown key");
    free(r.body);
    req_opts rd = {.key = "reader-key"}, wr = {.key = "writer-key"};
    r = request(&d, "GET", "/v1/states", NULL, 0, &rd);
    CHECK(r.status == 200);
    free(r.body);
    const char *create = "{\"tokens\": [1, 2, 3], \"name\": \"authed\"}";
    r = request(&d, "POST", "/v1/states", create, (long)strlen(create), &rd);
    check_error(json_loads(r.body, 0, NULL), r.status, 403, "forbidden", "read key creates");
    free(r.body);
    r = request(&d, "DELETE", "/v1/states/seq_a", NULL, 0, &rd);
    check_error(json_loads(r.body, 0, NULL), r.status, 403, "forbidden", "read key deletes");
    free(r.body);
    const char *merge = "{\"sources\": [{\"state\": \"seq_a\", \"weight\": 1}]}";
    r = request(&d, "POST", "/v1/states/merge", merge, (long)strlen(merge), &rd);
    check_error(json_loads(r.body, 0, NULL), r.status, 403, "forbidden", "read key merges");
    free(r.body);
    req_opts rdi = {.key = "reader-key", .ctype = "application/octet-stream"};
    r = request(&d, "POST", "/v1/states/import", "x", 1, &rdi);
    check_error(json_loads(r.body, 0, NULL), r.status, 403, "forbidden", "read key imports");
    free(r.body);
    const char *gen_save =
        "{\"prompt\": [1], \"max_tokens\": 2, \"save_state\": {\"name\": \"zz\"}}";
    r = request(&d, "POST", "/v1/generate", gen_save, (long)strlen(gen_save), &rd);
    check_error(json_loads(r.body, 0, NULL), r.status, 403, "forbidden", "read key save_state");
    free(r.body);
    const char *gen = "{\"prompt\": [1], \"max_tokens\": 2}";
    r = request(&d, "POST", "/v1/generate", gen, (long)strlen(gen), &rd);
    CHECK(r.status == 200);
    free(r.body);
    r = request(&d, "POST", "/v1/states", create, (long)strlen(create), &wr);
    CHECK(r.status == 201);
    free(r.body);
    /* 413: declared too large, and streamed (chunked) too large */
    char *big = malloc(8192);
    memset(big, ' ', 8192);
    memcpy(big, "{\"tokens\": [1]", 14);
    big[8190] = '}';
    big[8191] = '\0';
    r = request(&d, "POST", "/v1/states", big, 8191, &wr);
    check_error(json_loads(r.body, 0, NULL), r.status, 413, "too_large", "Content-Length too big");
    free(r.body);
    req_opts wrc = {.key = "writer-key", .chunked = 1};
    r = request(&d, "POST", "/v1/states", big, 8191, &wrc);
    check_error(json_loads(r.body, 0, NULL), r.status, 413, "too_large", "chunked body too big");
    free(r.body);
    free(big);
    r = request(&d, "GET", "/healthz", NULL, 0, &rd);
    CHECK(r.status == 200);
    free(r.body);

    /* SIGHUP reads the keys file again: reader-key is gone, new-key (admin, tenant t2) works;
     * a file that does not parse changes nothing (the keys in use stay) */
    CHECK(reload_keys(&d, keys, "writer-key write\nnew-key admin tenant=t2\n",
                      "SIGHUP: 2 API keys reloaded"));
    r = request(&d, "GET", "/v1/states", NULL, 0, &rd);
    check_error(json_loads(r.body, 0, NULL), r.status, 401, "unauthorized", "removed key");
    free(r.body);
    json_t *who = NULL;
    CHECK(keyed(&d, "new-key", "GET", "/v1/whoami", NULL, &who) == 200);
    CHECK(!strcmp(json_string_value(json_object_get(who, "scope")) ?: "", "admin") &&
          !strcmp(json_string_value(json_object_get(who, "tenant")) ?: "", "t2"));
    json_decref(who);
    CHECK(reload_keys(&d, keys, "new-key superuser\n",
                      "the API keys were not reloaded (the ones in use stay)"));
    CHECK(keyed(&d, "new-key", "GET", "/v1/whoami", NULL, NULL) == 200);
    CHECK(keyed(&d, "writer-key", "GET", "/v1/states", NULL, NULL) == 200);

    /* rate=2/m: two requests pass, the third is 429 rate_limited with the wait (~30 s) in
     * Retry-After; another key is not slowed; the limit shows in the metrics' 429s */
    CHECK(reload_keys(
        &d, keys,
        "limited-key write rate=2/m\nwriter-key write\nslow-key read tenant=t rate=0.5/h\n",
        "SIGHUP: 3 API keys reloaded"));
    req_opts lim = {.key = "limited-key"};
    for (int i = 0; i < 2; i++) {
        r = request(&d, "GET", "/v1/states", NULL, 0, &lim);
        CHECK(r.status == 200 && r.retry_after == -1);
        free(r.body);
    }
    r = request(&d, "GET", "/v1/states", NULL, 0, &lim);
    CHECKF(r.retry_after >= 25 && r.retry_after <= 31, "Retry-After %ld", r.retry_after);
    check_error(json_loads(r.body, 0, NULL), r.status, 429, "rate_limited", "third in a minute");
    free(r.body);
    CHECK(keyed(&d, "writer-key", "GET", "/v1/states", NULL, NULL) == 200);
    CHECK(keyed(&d, "slow-key", "GET", "/v1/whoami", NULL, NULL) == 200);
    CHECK(keyed(&d, "slow-key", "GET", "/v1/whoami", NULL, NULL) == 429);
    /* a bad rate is refused like any bad line: the keys in use stay */
    CHECK(reload_keys(&d, keys, "writer-key write\nlimited-key write rate=fast\n",
                      "keys.txt line 2: expected"));
    CHECK(keyed(&d, "limited-key", "GET", "/v1/states", NULL, NULL) == 429);
    daemon_stop(&d);
}


/* Tenants over HTTP: keys with tenant=, names per tenant, 404 for another tenant's states on
 * every path, the admin-only share routes, prompt-cache chains per tenant, per-tenant metrics. */
static void test_tenants_http(void)
{
    char keys[512], data[512];
    snprintf(keys, sizeof keys, "%s/tenant-keys.txt", tmp_root);
    snprintf(data, sizeof data, "%s/tenants", tmp_root);
    FILE *f = fopen(keys, "w");
    fprintf(f, "ka write tenant=alice\nkb write tenant=bob\nkbr read tenant=bob\n"
               "kadm admin tenant=ops\nkdef write\n");
    fclose(f);
    srv d;
    if (daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--api-keys", keys, "--quiet",
                     NULL)) {
        CHECK(0);
        return;
    }
    int bob_requests = 0;
    json_t *j = NULL;
    /* both own "x" */
    CHECK(keyed(&d, "ka", "POST", "/v1/states", "{\"tokens\": [5, 6, 7, 8], \"name\": \"x\"}",
                &j) == 201);
    char ax[64];
    snprintf(ax, sizeof ax, "%s", json_string_value(json_object_get(j, "id")));
    CHECK(!strcmp(json_string_value(json_object_get(j, "tenant")), "alice"));
    json_decref(j);
    CHECK(keyed(&d, "kb", "POST", "/v1/states", "{\"tokens\": [9, 10], \"name\": \"x\"}", &j) ==
          201);
    bob_requests++;
    char bx[64];
    snprintf(bx, sizeof bx, "%s", json_string_value(json_object_get(j, "id")));
    json_decref(j);
    CHECK(keyed(&d, "ka", "POST", "/v1/states", "{\"tokens\": [1], \"name\": \"x\"}", NULL) == 409);
    /* bob: "x" is his, alice's id is unknown everywhere */
    CHECK(keyed(&d, "kbr", "GET", "/v1/states/x", NULL, &j) == 200 &&
          json_integer_value(json_object_get(j, "n_tokens")) == 2);
    bob_requests++;
    json_decref(j);
    char path[256], body[512];
    snprintf(path, sizeof path, "/v1/states/%s", ax);
    json_t *missing = NULL;
    CHECK(keyed(&d, "kb", "GET", "/v1/states/st_00000000000000000000000000000000", NULL,
                &missing) == 404);
    bob_requests++;
    CHECK(keyed(&d, "kb", "GET", path, NULL, &j) == 404);
    bob_requests++;
    /* the same error as for an id that never existed, up to the id itself */
    const char *m1 = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    const char *m0 =
        json_string_value(json_object_get(json_object_get(missing, "error"), "message"));
    CHECKF(m1 && m0 && strlen(m1) == strlen(m0) && !strncmp(m1, m0, strlen("no state with id")),
           "%s vs %s", m1 ? m1 : "-", m0 ? m0 : "-");
    json_decref(j);
    json_decref(missing);
    snprintf(body, sizeof body, "{\"state\": \"%s\", \"prompt\": [1], \"max_tokens\": 1}", ax);
    CHECK(keyed(&d, "kb", "POST", "/v1/generate", body, NULL) == 404);
    snprintf(body, sizeof body, "{\"state\": \"%s\", \"context\": [1], \"continuation\": [2]}",
             ax);
    CHECK(keyed(&d, "kb", "POST", "/v1/score", body, NULL) == 404);
    snprintf(body, sizeof body, "{\"from\": \"%s\", \"tokens\": [1]}", ax);
    CHECK(keyed(&d, "kb", "POST", "/v1/states", body, NULL) == 404);
    snprintf(body, sizeof body, "{\"sources\": [{\"state\": \"%s\", \"weight\": 1}]}", ax);
    CHECK(keyed(&d, "kb", "POST", "/v1/states/merge", body, NULL) == 404);
    snprintf(body, sizeof body, "{\"prompt\": [1], \"max_tokens\": 1, \"merge\": [{\"state\": "
                                "\"%s\", \"weight\": 1}]}", ax);
    CHECK(keyed(&d, "kb", "POST", "/v1/generate", body, NULL) == 404);
    snprintf(path, sizeof path, "/v1/states/%s/data", ax);
    CHECK(keyed(&d, "kb", "GET", path, NULL, NULL) == 404);
    snprintf(path, sizeof path, "/v1/states/%s", ax);
    CHECK(keyed(&d, "kb", "DELETE", path, NULL, NULL) == 404);
    /* the console's endpoints too: lineage, statistics, similarity */
    snprintf(path, sizeof path, "/v1/states/%s/children", ax);
    CHECK(keyed(&d, "kb", "GET", path, NULL, NULL) == 404);
    snprintf(path, sizeof path, "/v1/states/%s/stats", ax);
    CHECK(keyed(&d, "kb", "GET", path, NULL, NULL) == 404);
    snprintf(body, sizeof body, "{\"states\": [\"x\", \"%s\"]}", ax);
    CHECK(keyed(&d, "kb", "POST", "/v1/states/similarity", body, NULL) == 404);
    CHECK(keyed(&d, "kb", "GET", "/v1/whoami", NULL, &j) == 200 &&
          !strcmp(json_string_value(json_object_get(j, "tenant")), "bob"));
    json_decref(j);
    bob_requests += 11;
    CHECK(keyed(&d, "kb", "GET", "/v1/states", NULL, &j) == 200);
    bob_requests++;
    json_t *data_arr = json_object_get(j, "data");
    CHECK(json_array_size(data_arr) == 1 &&
          !strcmp(json_string_value(json_object_get(json_array_get(data_arr, 0), "id")), bx));
    json_decref(j);
    /* search: bob's query is alice's x's tokens, yet only his own state is found */
    CHECK(keyed(&d, "kb", "POST", "/v1/states/search", "{\"query\": [5, 6, 7, 8], \"k\": 10}",
                &j) == 200);
    bob_requests++;
    data_arr = json_object_get(j, "data");
    CHECKF(json_array_size(data_arr) == 1 &&
               !strcmp(json_string_value(json_object_get(
                           json_object_get(json_array_get(data_arr, 0), "state"), "id")),
                       bx),
           "bob's search: %s", json_dumps(j, 0));
    json_decref(j);
    CHECK(keyed(&d, "ka", "POST", "/v1/states/search", "{\"query\": [5, 6, 7, 8], \"k\": 10}",
                &j) == 200 &&
          json_array_size(json_object_get(j, "data")) == 1);
    json_decref(j);
    /* the default tenant sees neither */
    CHECK(keyed(&d, "kdef", "GET", "/v1/states", NULL, &j) == 200 &&
          json_array_size(json_object_get(j, "data")) == 0);
    json_decref(j);
    /* prompt cache: bob's prompt starts like alice's x, but her state is not his to resume */
    const char *reuse = "{\"prompt\": [5, 6, 7, 8, 9], \"max_tokens\": 1, \"reuse\": true}";
    CHECK(keyed(&d, "kb", "POST", "/v1/generate", reuse, &j) == 200 &&
          json_integer_value(json_object_get(json_object_get(j, "usage"), "cached_tokens")) == 0);
    bob_requests++;
    json_decref(j);
    CHECK(keyed(&d, "ka", "POST", "/v1/generate", reuse, &j) == 200 &&
          json_integer_value(json_object_get(json_object_get(j, "usage"), "cached_tokens")) == 4);
    json_decref(j);
    /* sharing: admin keys only */
    snprintf(path, sizeof path, "/v1/states/%s/share", ax);
    CHECK(keyed(&d, "kb", "POST", path, NULL, NULL) == 403); /* refused before any handler: */
    CHECK(keyed(&d, "ka", "POST", path, NULL, NULL) == 403); /* not a tenant's request */
    CHECK(keyed(&d, "kadm", "POST", path, NULL, &j) == 200 &&
          json_is_true(json_object_get(j, "shared")));
    json_decref(j);
    snprintf(path, sizeof path, "/v1/states/%s", ax);
    CHECK(keyed(&d, "kbr", "GET", path, NULL, &j) == 200 &&
          json_integer_value(json_object_get(j, "n_tokens")) == 4);
    json_decref(j);
    snprintf(body, sizeof body, "{\"sources\": [{\"state\": \"%s\", \"weight\": 0.5}, {\"state\": "
                                "\"x\", \"weight\": 0.5}], \"name\": \"mix\"}", ax);
    CHECK(keyed(&d, "kb", "POST", "/v1/states/merge", body, &j) == 201 &&
          !strcmp(json_string_value(json_object_get(j, "tenant")), "bob"));
    json_decref(j);
    CHECK(keyed(&d, "kb", "DELETE", path, NULL, &j) == 403);
    json_decref(j);
    bob_requests += 3;
    /* alice's lineage of x does not show bob's merge of it (his, not shared) */
    snprintf(path, sizeof path, "/v1/states/%s/children", ax);
    CHECK(keyed(&d, "ka", "GET", path, NULL, &j) == 200 &&
          json_array_size(json_object_get(j, "data")) == 0);
    json_decref(j);
    CHECK(keyed(&d, "kb", "GET", path, NULL, &j) == 200 &&
          json_array_size(json_object_get(j, "data")) == 1);
    json_decref(j);
    bob_requests++;
    snprintf(path, sizeof path, "/v1/states/%s/share", ax);
    CHECK(keyed(&d, "kadm", "DELETE", path, NULL, &j) == 200 &&
          !json_object_get(j, "shared"));
    json_decref(j);
    snprintf(path, sizeof path, "/v1/states/%s", ax);
    CHECK(keyed(&d, "kb", "GET", path, NULL, NULL) == 404);
    bob_requests++;
    /* per-tenant metrics */
    char want[128];
    snprintf(want, sizeof want, "statesoup_tenant_requests_total{tenant=\"bob\"} %d\n",
             bob_requests);
    /* a request is counted when MHD completes it, just after its answer went out: the last one
     * may not be counted yet when this request arrives, so look again (bounded) */
    resp r = request(&d, "GET", "/metrics", NULL, 0, &(req_opts){.key = "kadm"});
    for (int i = 0; i < 1000 && r.status == 200 && !strstr(r.body, want); i++) {
        free(r.body);
        r = request(&d, "GET", "/metrics", NULL, 0, &(req_opts){.key = "kadm"});
    }
    CHECKF(r.status == 200 && strstr(r.body, "statesoup_tenant_states{tenant=\"alice\"} 1\n") &&
               strstr(r.body, "statesoup_tenant_states{tenant=\"bob\"} 2\n") &&
               strstr(r.body, "statesoup_tenant_states{tenant=\"\"} 0\n") && strstr(r.body, want),
           "metrics (want %s): %s", want, r.body);
    free(r.body);
    /* a tenant's key sees its own tenant's lines only (they would name the others) */
    r = request(&d, "GET", "/metrics", NULL, 0, &(req_opts){.key = "kbr"});
    CHECKF(r.status == 200 && strstr(r.body, "statesoup_tenant_states{tenant=\"bob\"} 2\n") &&
               strstr(r.body, "statesoup_tenant_state_bytes{tenant=\"bob\"} ") &&
               !strstr(r.body, "alice") && !strstr(r.body, "tenant=\"ops\"") &&
               !strstr(r.body, "statesoup_tenant_states{tenant=\"\"}"),
           "bob's metrics: %s", r.body);
    free(r.body);
    daemon_stop(&d);
    /* a bad keys file line is refused at start */
    f = fopen(keys, "w");
    fprintf(f, "k1 write tenant=has space\n");
    fclose(f);
    CHECK(daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--api-keys", keys,
                       "--quiet", NULL) != 0);
    CHECK(d.log && strstr(d.log, "tenant=NAME"));
    int status;
    daemon_reap(&d, &status);
    free(d.log);
}

static void test_store_full(void)
{
    char data[512];
    snprintf(data, sizeof data, "%s/full", tmp_root);
    srv d;
    if (daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--store-max-bytes", "256K",
                     "--quiet", NULL)) {
        CHECK(0);
        return;
    }
    long st = 0;
    int stored = 0;
    for (int i = 0; i < 100; i++) {
        json_t *j = call(&d, "POST", "/v1/states", json_pack("{s:[i,i]}", "tokens", i, i + 1), &st);
        if (st != 201) {
            check_error(j, st, 507, "store_full", "full store");
            break;
        }
        stored++;
        json_decref(j);
    }
    CHECKF(st == 507 && stored > 0, "store never filled (%d stored)", stored);
    json_t *j = call(&d, "GET", "/v1/states?limit=1000", NULL, &st);
    CHECK(st == 200 && (int)json_array_size(json_object_get(j, "data")) == stored);
    json_decref(j);
    daemon_stop(&d);
}

/*
 * The data directory deleted under a running daemon: /healthz answers 503 "degraded" with the
 * reason, and a save is refused with 503 "unavailable" instead of a 201 for a state that would be
 * lost with the deleted file.
 */
static void test_lost_data_dir(void)
{
    char data[512], cmd[600];
    snprintf(data, sizeof data, "%s/lost", tmp_root);
    srv d;
    if (daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--quiet", NULL)) {
        CHECK(0);
        return;
    }
    long st = 0;
    json_decref(call(&d, "POST", "/v1/states", json_pack("{s:[i,i]}", "tokens", 1, 2), &st));
    CHECK(st == 201);
    json_t *j = call(&d, "GET", "/healthz", NULL, &st);
    CHECK(st == 200 && jstr_is(json_object_get(j, "status"), "ok"));
    json_decref(j);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", data);
    CHECK(system(cmd) == 0);
    j = call(&d, "GET", "/healthz", NULL, &st);
    CHECK(st == 503 && jstr_is(json_object_get(j, "status"), "degraded"));
    const char *why = json_string_value(json_object_get(j, "reason"));
    CHECKF(why && strstr(why, "is gone"), "reason: %s", why ? why : "(none)");
    json_decref(j);
    j = call(&d, "POST", "/v1/states", json_pack("{s:[i,i]}", "tokens", 3, 4), &st);
    check_error(j, st, 503, "unavailable", "save into a deleted store");
    daemon_stop(&d);
}

static void test_text(void)
{
    char data[512], model[1024];
    snprintf(data, sizeof data, "%s/demo", tmp_root);
    snprintf(model, sizeof model, "%s/models/demo-mamba1", test_source_root());
    srv d;
    if (daemon_start(&d, model, data, "--quiet", NULL)) {
        CHECK(0);
        return;
    }
    long st;
    const char *text = "The state of a recurrent model is a summary of everything it has read.";
    json_t *j = call(&d, "POST", "/v1/tokenize", json_pack("{s:s}", "text", text), &st);
    json_t *toks = json_incref(json_object_get(j, "tokens"));
    CHECK(st == 200 && json_array_size(toks) > 5);
    json_decref(j);
    j = call(&d, "POST", "/v1/detokenize", json_pack("{s:O}", "tokens", toks), &st);
    CHECK(st == 200 && !strcmp(json_string_value(json_object_get(j, "text")), text));
    json_decref(j);
    check_error(call(&d, "POST", "/v1/detokenize", json_pack("{s:[i]}", "tokens", 99999), &st), st,
                422, "invalid_value", "detokenize bad id");

    /* text prompt == its token ids */
    json_t *a =
        call(&d, "POST", "/v1/generate",
             json_pack("{s:s,s:i,s:f}", "prompt", text, "max_tokens", 40, "temperature", 0.0), &st);
    CHECK(st == 200);
    json_t *b =
        call(&d, "POST", "/v1/generate",
             json_pack("{s:O,s:i,s:f}", "prompt", toks, "max_tokens", 40, "temperature", 0.0), &st);
    CHECK(json_equal(json_object_get(a, "tokens"), json_object_get(b, "tokens")));
    const char *full = json_string_value(json_object_get(a, "text"));
    CHECK(full && strlen(full) > 10);

    /* streamed text, concatenated, equals the plain answer */
    sse s = {0};
    long status = stream(&d, "/v1/generate",
                         json_pack("{s:s,s:i,s:f,s:b}", "prompt", text, "max_tokens", 40,
                                   "temperature", 0.0, "stream", 1),
                         &s, NULL, 0);
    CHECK(status == 200 && s.done);
    char cat[8192] = "";
    for (size_t i = 0; i < json_array_size(s.events); i++) {
        const char *t = json_string_value(json_object_get(json_array_get(s.events, i), "text"));
        if (t) strncat(cat, t, sizeof cat - strlen(cat) - 1);
    }
    CHECKF(full && !strcmp(cat, full), "streamed text '%s' != '%s'", cat, full ? full : "");
    sse_free(&s);

    /* a stop string cuts the text just before it, streamed or not */
    if (full && strlen(full) > 12) {
        char stop[8];
        size_t at = 6;
        while (full[at] && (full[at] & 0xC0) == 0x80) at++;
        snprintf(stop, sizeof stop, "%.4s", full + at);
        const char *first = strstr(full, stop);
        size_t want_len = (size_t)(first - full);
        json_t *c = call(&d, "POST", "/v1/generate",
                         json_pack("{s:s,s:i,s:f,s:[s]}", "prompt", text, "max_tokens", 40,
                                   "temperature", 0.0, "stop", stop),
                         &st);
        const char *ct = json_string_value(json_object_get(c, "text"));
        CHECKF(ct && strlen(ct) == want_len && !strncmp(ct, full, want_len), "stop '%s': got '%s'",
               stop, ct ? ct : "");
        CHECK(!strcmp(json_string_value(json_object_get(c, "finish_reason")), "stop"));
        json_decref(c);
        memset(&s, 0, sizeof s);
        stream(&d, "/v1/generate",
               json_pack("{s:s,s:i,s:f,s:[s],s:b}", "prompt", text, "max_tokens", 40, "temperature",
                         0.0, "stop", stop, "stream", 1),
               &s, NULL, 0);
        cat[0] = '\0';
        for (size_t i = 0; i < json_array_size(s.events); i++) {
            const char *t = json_string_value(json_object_get(json_array_get(s.events, i), "text"));
            if (t) strncat(cat, t, sizeof cat - strlen(cat) - 1);
        }
        CHECKF(strlen(cat) == want_len && !strncmp(cat, full, want_len), "streamed stop: '%s'",
               cat);
        json_t *last = json_array_get(s.events, json_array_size(s.events) - 1);
        CHECK(!strcmp(json_string_value(json_object_get(last, "finish_reason")), "stop"));
        sse_free(&s);
        /* completions: stop, echo */
        c = call(&d, "POST", "/v1/completions",
                 json_pack("{s:s,s:i,s:f,s:s,s:b}", "prompt", text, "max_tokens", 40, "temperature",
                           0.0, "stop", stop, "echo", 1),
                 &st);
        const char *t = json_string_value(
            json_object_get(json_array_get(json_object_get(c, "choices"), 0), "text"));
        CHECK(st == 200 && t && !strncmp(t, text, strlen(text)) &&
              strlen(t) == strlen(text) + want_len);
        json_decref(c);
    }
    json_decref(a);
    json_decref(b);

    /* states from text, scoring text */
    j = call(&d, "POST", "/v1/states", json_pack("{s:s,s:s}", "prompt", text, "name", "intro"),
             &st);
    CHECK(st == 201 &&
          json_integer_value(json_object_get(j, "n_tokens")) == (json_int_t)json_array_size(toks));
    json_decref(j);
    json_t *s1 =
        call(&d, "POST", "/v1/score",
             json_pack("{s:s,s:s}", "state", "intro", "continuation", " It is small."), &st);
    CHECK(st == 200);
    json_t *s2 =
        call(&d, "POST", "/v1/score",
             json_pack("{s:s,s:s}", "context", text, "continuation", " It is small."), &st);
    CHECK(fabs(json_number_value(json_object_get(s1, "logprob_sum")) -
               json_number_value(json_object_get(s2, "logprob_sum"))) < 1e-3);
    json_decref(s1);
    json_decref(s2);
    json_decref(toks);
    daemon_stop(&d);
}

/* A stored blob that no longer matches its checksum is refused (500 corrupt), never served. */
static void test_corrupt(void)
{
    char data[512], path[600];
    snprintf(data, sizeof data, "%s/corrupt", tmp_root);
    srv d;
    if (daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--quiet", NULL)) {
        CHECK(0);
        return;
    }
    size_t n, len;
    long st;
    const int32_t *ids = seq_ids("c", &n);
    json_decref(create_state(&d, ids, n, "victim", &st));
    CHECK(st == 201);
    uint8_t *f = get_data(&d, "victim", NULL, &len, &st);
    daemon_stop(&d);
    if (!f) {
        CHECK(0);
        return;
    }
    /* find the state's ssm floats in the database file and flip one bit */
    st_file sf;
    REQUIRE_OK(st_parse(&sf, f, len, "victim"));
    const st_tensor *t = st_find(&sf, "ssm");
    snprintf(path, sizeof path, "%s/data.mdb", data);
    char *db = NULL;
    size_t dblen = 0;
    REQUIRE_OK(ss_read_file(path, 1u << 30, &db, &dblen));
    uint8_t *hit = memmem(db, dblen, t->data, 256);
    CHECKF(hit != NULL, "the state's bytes are not in %s", path);
    if (hit) {
        FILE *w = fopen(path, "r+b");
        fseek(w, (long)(hit - (uint8_t *)db) + 100, SEEK_SET);
        unsigned char b = (unsigned char)(hit[100] ^ 0x10);
        fwrite(&b, 1, 1, w);
        fclose(w);
    }
    free(db);
    st_free(&sf);
    free(f);
    if (daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--quiet", NULL)) {
        CHECK(0);
        return;
    }
    check_error(call(&d, "GET", "/v1/states/victim/data", NULL, &st), st, 500, "corrupt",
                "export of a corrupt state");
    check_error(call(&d, "POST", "/v1/generate",
                     json_pack("{s:s,s:[i]}", "state", "victim", "prompt", 1), &st),
                st, 500, "corrupt", "generate from a corrupt state");
    check_error(call(&d, "POST", "/v1/states/merge",
                     json_pack("{s:[{s:s,s:f}]}", "sources", "state", "victim", "weight", 1.0),
                     &st),
                st, 500, "corrupt", "merge of a corrupt state");
    json_decref(call(&d, "GET", "/v1/states/victim", NULL, &st));
    CHECK(st == 200);
    daemon_stop(&d);
}

/* --weights q8: the daemon says so, scores close to the exact daemon; a bad value is refused. */
static void test_weights_q8(void)
{
    char data[512];
    snprintf(data, sizeof data, "%s/q8", tmp_root);
    srv d;
    long st;
    size_t qn;
    const int32_t *q = seq_ids("q", &qn);
    double sums[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        if (daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--quiet", "--weights",
                         k ? "q8" : "stored", NULL)) {
            CHECK(0);
            return;
        }
        json_t *j = call(&d, "GET", "/v1/models", NULL, &st);
        json_t *m = json_array_get(json_object_get(j, "data"), 0);
        CHECK(st == 200 && !strcmp(json_string_value(json_object_get(m, "weights")),
                                   k ? "q8" : "stored"));
        json_decref(j);
        j = call(&d, "POST", "/v1/score", json_pack("{s:o}", "continuation", ids_json(q, qn)), &st);
        CHECK(st == 200);
        sums[k] = json_number_value(json_object_get(j, "logprob_sum"));
        json_decref(j);
        daemon_stop(&d);
    }
    /* the same sum of log-probabilities within 1 % (random tiny weights quantise worst) */
    CHECKF(fabs(sums[1] - sums[0]) <= 0.01 * fabs(sums[0]), "q8 logprob_sum %g, exact %g", sums[1],
           sums[0]);
    CHECK(daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--weights", "q4", NULL) != 0);
    CHECK(d.log && strstr(d.log, "bad value for --weights"));
    int status;
    daemon_reap(&d, &status);
    free(d.log);
    /* the message names the option given, also past the two names of one (drain-timeout) */
    CHECK(daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--retrieval-key", "bogus",
                       NULL) != 0);
    CHECKF(d.log && strstr(d.log, "bad value for --retrieval-key: 'bogus'"), "%s", d.log);
    daemon_reap(&d, &status);
    free(d.log);
    /* a share of a budget that is not there: refused, not ignored */
    CHECK(daemon_start(&d, fixture_path("models/mamba1-tiny"), data,
                       "--prefix-cache-tenant-share", "0.5", NULL) != 0);
    CHECKF(d.log && strstr(d.log, "give --prefix-cache-budget too"), "%s", d.log);
    daemon_reap(&d, &status);
    free(d.log);
}

/* With one batch slot and one queue slot, a third request is refused with 503 overloaded. */
static void test_overload(void)
{
    char data[512];
    snprintf(data, sizeof data, "%s/busy", tmp_root);
    srv d;
    if (daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--quiet", "--max-batch", "1",
                     "--max-queue", "1", "--max-tokens", "100000", NULL)) {
        CHECK(0);
        return;
    }
    /* a long stream holds the batch slot ... */
    stream_thread t = {.d = &d, .max_tokens = 100000};
    pthread_t th;
    pthread_create(&th, NULL, stream_main, &t);
    while (atomic_load(&t.s.n) < 2 && !atomic_load(&t.done)) {
        struct timespec ts = {0, 1000000}; /* waiting for a condition: the stream runs */
        nanosleep(&ts, NULL);
    }
    /* ... a second request waits in the queue ... */
    gen_thread g = {
        .d = &d,
        .body = json_pack("{s:[i],s:i,s:b}", "prompt", 3, "max_tokens", 4, "ignore_eos", 1)};
    pthread_t gth;
    pthread_create(&gth, NULL, gen_main, &g);
    int queued = 0;
    for (int i = 0; i < 5000 && !queued && !atomic_load(&t.done); i++) {
        resp r = request(&d, "GET", "/metrics", NULL, 0, NULL);
        queued = strstr(r.body, "\nstatesoup_engine_jobs_queued 1\n") != NULL;
        free(r.body);
    }
    /* ... so a third is refused */
    long st;
    if (queued && !atomic_load(&t.done)) {
        check_error(
            call(&d, "POST", "/v1/score", json_pack("{s:[i,i]}", "continuation", 1, 2), &st), st,
            503, "overloaded", "queue full");
    } else {
        fprintf(stderr, "test_overload: the stream ended before the queue filled; not checked\n");
    }
    atomic_store(&t.s.abort_after, 1); /* hang up on the long stream: the daemon cancels it */
    pthread_join(th, NULL);
    pthread_join(gth, NULL);
    CHECK(g.status == 200);
    json_decref(g.answer);
    sse_free(&t.s);

    /* a client that gives up on a long non-streamed generation: the job stops early too */
    const char *big = "{\"prompt\": [1], \"max_tokens\": 100000, \"ignore_eos\": true}";
    req_opts quick = {.timeout_ms = 300};
    resp r = request(&d, "POST", "/v1/generate", big, (long)strlen(big), &quick);
    CHECK(r.status == -1); /* timed out */
    free(r.body);
    int idle = 0;
    long generated = 0;
    for (int i = 0; i < 20000 && !idle; i++) {
        r = request(&d, "GET", "/metrics", NULL, 0, NULL);
        idle = strstr(r.body, "\nstatesoup_engine_jobs_running 0\n") != NULL;
        const char *gtok = strstr(r.body, "\nstatesoup_tokens_generated_total ");
        if (gtok) generated = atol(gtok + strlen("\nstatesoup_tokens_generated_total "));
        free(r.body);
    }
    CHECKF(idle, "the abandoned generation is still running");
    CHECKF(generated < 100000, "the abandoned generation ran to the end (%ld tokens)", generated);
    daemon_stop(&d);
}


/* SIGTERM with a stream running and a request queued: both get an answer, the daemon exits 0. */
static void test_shutdown_inflight(void)
{
    char data[512];
    snprintf(data, sizeof data, "%s/shutdown", tmp_root);
    srv d;
    if (daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--quiet", "--max-batch", "1",
                     "--shutdown-timeout", "0", "--max-tokens", "1000000", NULL)) {
        CHECK(0);
        return;
    }
    stream_thread t = {.d = &d, .max_tokens = 1000000};
    pthread_t th;
    pthread_create(&th, NULL, stream_main, &t);
    while (atomic_load(&t.s.n) < 2 && !atomic_load(&t.done)) {
        struct timespec ts = {0, 1000000}; /* waiting for a condition: the stream runs */
        nanosleep(&ts, NULL);
    }
    gen_thread g = {.d = &d,
                    .body = json_pack("{s:[i],s:i,s:b}", "prompt", 3, "max_tokens", 4, "ignore_eos",
                                      1)};
    pthread_t gth;
    pthread_create(&gth, NULL, gen_main, &g);
    int queued = 0;
    for (int i = 0; i < 5000 && !queued; i++) {
        resp r = request(&d, "GET", "/metrics", NULL, 0, NULL);
        queued = strstr(r.body, "\nstatesoup_engine_jobs_queued 1\n") != NULL;
        free(r.body);
    }
    CHECK(queued);
    daemon_stop(&d); /* checks the exit status */
    pthread_join(th, NULL);
    pthread_join(gth, NULL);
    /* the stream ends with an error event and [DONE]; the queued request gets a 503 */
    CHECK(t.status == 200 && t.s.done);
    json_t *last = json_array_get(t.s.events, json_array_size(t.s.events) - 1);
    CHECK(json_object_get(last, "error") != NULL);
    check_error(g.answer, g.status, 503, NULL, "request queued at shutdown");
    sse_free(&t.s);
}

/* Crash safety: writes go on while the daemon is killed with SIGKILL. */
typedef struct writer {
    srv *d;
    char ids[4096][40];
    char sums[4096][20];
    atomic_int acked;
    atomic_int stop;
} writer;

static void *writer_main(void *arg)
{
    writer *w = arg;
    for (int i = 0; i < 4096 && !atomic_load(&w->stop); i++) {
        long st;
        json_t *j = call(w->d, "POST", "/v1/states",
                         json_pack("{s:[i,i,i],s:{s:i}}", "tokens", i % 500, (i * 7) % 500, 3,
                                   "metadata", "i", i),
                         &st);
        if (st != 201) {
            json_decref(j);
            break; /* the daemon is gone */
        }
        int k = atomic_load(&w->acked);
        snprintf(w->ids[k], sizeof w->ids[k], "%s", json_string_value(json_object_get(j, "id")));
        snprintf(w->sums[k], sizeof w->sums[k], "%s",
                 json_string_value(json_object_get(j, "checksum")));
        atomic_store(&w->acked, k + 1);
        json_decref(j);
    }
    return NULL;
}

static void test_crash(void)
{
    char data[512];
    snprintf(data, sizeof data, "%s/crash", tmp_root);
    srv d;
    if (daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--quiet", NULL)) {
        CHECK(0);
        return;
    }
    writer *w = calloc(1, sizeof *w);
    w->d = &d;
    pthread_t th;
    pthread_create(&th, NULL, writer_main, w);
    while (atomic_load(&w->acked) < 25) {
        struct timespec ts = {0, 1000000}; /* waiting for a condition: 25 acknowledged writes */
        nanosleep(&ts, NULL);
    }
    kill(d.pid, SIGKILL); /* mid-stream: the writer has a request in flight */
    pthread_join(th, NULL);
    int status;
    daemon_reap(&d, &status);
    free(d.log);
    int acked = atomic_load(&w->acked);
    if (daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--quiet", NULL)) {
        CHECK(0);
        free(w);
        return;
    }
    int missing = 0, bad = 0;
    for (int i = 0; i < acked; i++) {
        char path[128];
        long st;
        snprintf(path, sizeof path, "/v1/states/%s", w->ids[i]);
        json_t *rec = call(&d, "GET", path, NULL, &st);
        if (st != 200)
            missing++;
        else if (strcmp(json_string_value(json_object_get(rec, "checksum")), w->sums[i]))
            bad++;
        json_decref(rec);
        size_t len;
        uint8_t *f = get_data(&d, w->ids[i], NULL, &len, &st); /* the blob's checksum is verified */
        if (!f) bad++;
        free(f);
    }
    CHECKF(missing == 0 && bad == 0, "after kill -9: %d of %d acknowledged states missing, %d bad",
           missing, acked, bad);
    /* every acknowledged state's retrieval key was committed with it: none had to be computed at
     * the restart (the daemon logs a count when it does), and each state finds itself first */
    pthread_mutex_lock(&d.mu);
    CHECKF(!strstr(d.log, "computed now"), "keys were missing after kill -9: %s", d.log);
    pthread_mutex_unlock(&d.mu);
    int lost = 0;
    for (int i = 0; i < acked; i++) {
        long st;
        json_t *j = call(&d, "POST", "/v1/states/search",
                         json_pack("{s:{s:s},s:i}", "query", "state", w->ids[i], "k", 1), &st);
        json_t *h = json_array_get(json_object_get(j, "data"), 0);
        const char *id = json_string_value(json_object_get(json_object_get(h, "state"), "id"));
        if (st != 200 || !id || strcmp(id, w->ids[i]) ||
            fabs(json_number_value(json_object_get(h, "score")) - 1) > 1e-5)
            lost++;
        json_decref(j);
    }
    CHECKF(lost == 0, "after kill -9: %d of %d states do not find themselves by search", lost,
           acked);
    daemon_stop(&d);
    free(w);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_tmpdir(tmp_root, sizeof tmp_root, "api");
    golden_open(&G, fixture_path("models/mamba1-tiny"));
    char data[512];
    snprintf(data, sizeof data, "%s/main", tmp_root);

    srv d;
    if (daemon_start(&d, fixture_path("models/mamba1-tiny"), data, "--max-tokens", "100000", NULL))
        return 1;
    test_basics(&d);
    test_golden(&d);
    test_batches(&d);
    test_errors(&d);
    test_garbage(&d);
    test_pagination(&d);
    test_export_import(&d);
    test_sse(&d);
    test_concurrency(&d);
    test_metrics(&d);
    test_restart_and_cross_model(&d, data);
    daemon_stop(&d);
    test_auth_and_limits(data);
    test_tenants_http();
    test_store_full();
    test_lost_data_dir();
    test_corrupt();
    test_overload();
    test_weights_q8();
    test_shutdown_inflight();
    test_text();
    test_crash();

    golden_close(&G);
    curl_global_cleanup();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (!test_failures && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_root);
    return test_done("api");
}
