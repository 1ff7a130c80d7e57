/*
 * test_store.c - the LMDB state catalog: round trips of blobs from 1 byte to 30 MB, names, tags,
 * listing with cursors, delete, model checks, corruption (bytes flipped through LMDB directly),
 * map growth and its limit, a full disk (a small tmpfs in a private mount namespace), a read-only
 * reader in another process while the writer grows the map, reopen, and 4 threads at once.
 * Every check compares values; cross-process steps are sequenced through pipes, never by sleeping.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <jansson.h>
#include <lmdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "hash.h"
#include "ss_store.h"
#include "test_util.h"

#define MODEL "fp_test_model_0001"
#define MIB   ((size_t)1 << 20)

/* ---- helpers --------------------------------------------------------------------------------- */

/* Deterministic bytes from a seed (xorshift64). */
static void fill(unsigned char *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x1234567;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (unsigned char)(x >> 24);
        /* the top byte of each little-endian float: exponent below 128, so that blobs read as
         * F32 hold finite values of magnitude < 4 (merges of them are finite) */
        if (i % 4 == 3) p[i] &= 0xbf;
    }
}

/* Caller's part of a record. name NULL = unnamed; tags_json e.g. "[\"a\"]" or NULL. */
static char *rec_json(const char *name, const char *tags_json, const char *model, uint64_t seed,
                      size_t len)
{
    char *out = NULL;
    char namebuf[300];
    if (name)
        snprintf(namebuf, sizeof namebuf, "\"%s\"", name);
    else
        snprintf(namebuf, sizeof namebuf, "null");
    if (asprintf(&out,
                 "{\"name\": %s, \"tags\": %s, \"model\": \"%s\", \"n_tokens\": 12, \"dtype\": "
                 "\"f32\", \"metadata\": {\"seed\": %" PRIu64 ", \"len\": %zu}}",
                 namebuf, tags_json ? tags_json : "[]", model, seed, len) < 0) {
        exit(1);
    }
    return out;
}

/* Store a state whose blob is fill(len, seed); its id goes to id_out (36 bytes) when not NULL. */
static ss_err put_state(ss_store *s, const char *name, const char *tags_json, size_t len,
                        uint64_t seed, char *id_out)
{
    unsigned char *blob = malloc(len);
    char *rec = rec_json(name, tags_json, MODEL, seed, len);
    char *out = NULL;
    if (!blob) exit(1);
    fill(blob, len, seed);
    ss_err err = ss_store_put(s, rec, blob, len, &out);
    if (err == SS_OK && id_out) {
        json_t *j = json_loads(out, 0, NULL);
        const char *id = json_string_value(json_object_get(j, "id"));
        snprintf(id_out, 36, "%s", id ? id : "");
        json_decref(j);
    }
    free(out);
    free(rec);
    free(blob);
    return err;
}

/* Read state ref back and compare with fill(len, seed); returns 1 when bit-exact. */
static int blob_matches(ss_store *s, const char *ref, size_t len, uint64_t seed)
{
    unsigned char *want = malloc(len), *got = malloc(len + 1);
    size_t got_len = 0;
    int ok = 0;
    fill(want, len, seed);
    ss_err err = ss_store_get_blob(s, ref, MODEL, got, len + 1, &got_len, NULL);
    if (err == SS_OK && got_len == len && memcmp(want, got, len) == 0)
        ok = 1;
    else
        fprintf(stderr, "blob %s: %s (%s), %zu bytes\n", ref, ss_err_name(err), ss_errmsg(),
                got_len);
    free(want);
    free(got);
    return ok;
}

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (!j) fprintf(stderr, "bad JSON from the store: %s: %.200s\n", je.text, text);
    return j;
}

static const char *str_field(const json_t *j, const char *key)
{
    const char *v = json_string_value(json_object_get(j, key));
    return v ? v : "";
}

/* Walk every page of a listing; returns all records (json array, decref it). */
static json_t *list_all(ss_store *s, const char *tag, const char *prefix, int limit, int *pages)
{
    json_t *all = json_array();
    char *cursor = NULL;
    *pages = 0;
    for (;;) {
        char *page = NULL;
        ss_err err = ss_store_list(s, tag, prefix, limit, cursor, &page);
        CHECK_OK(err);
        if (err) break;
        (*pages)++;
        json_t *j = parse(page);
        free(page);
        json_t *data = json_object_get(j, "data");
        CHECK(json_is_array(data));
        CHECK(json_array_size(data) <= (size_t)(limit ? limit : 100));
        json_array_extend(all, data);
        json_t *next = json_object_get(j, "next_cursor");
        free(cursor);
        cursor = json_is_string(next) ? strdup(json_string_value(next)) : NULL;
        CHECK(json_is_string(next) || json_is_null(next));
        json_decref(j);
        if (!cursor || *pages > 1000) break;
    }
    free(cursor);
    return all;
}

static ss_store *open_store(const char *dir, size_t initial, size_t max)
{
    ss_store *s = NULL;
    ss_store_params p = ss_store_default_params();
    p.initial_map_size = initial;
    p.max_map_size = max;
    REQUIRE_OK(ss_store_open(&s, dir, &p));
    return s;
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void test_validation(void)
{
    CHECK(ss_store_is_id("st_0123456789abcdef0123456789abcdef"));
    CHECK(!ss_store_is_id("st_0123456789abcdef0123456789abcde"));
    CHECK(!ss_store_is_id("st_0123456789abcdef0123456789abcdef0"));
    CHECK(!ss_store_is_id("st_0123456789ABCDEF0123456789abcdef"));
    CHECK(!ss_store_is_id("xx_0123456789abcdef0123456789abcdef"));
    CHECK(!ss_store_is_id(NULL));

    CHECK_OK(ss_store_check_name("a"));
    CHECK_OK(ss_store_check_name("proj/run-1:v2.final_x"));
    char n128[129], n129[130];
    memset(n128, 'n', 128);
    n128[128] = 0;
    memset(n129, 'n', 129);
    n129[129] = 0;
    CHECK_OK(ss_store_check_name(n128));
    CHECK_ERR(ss_store_check_name(n129), SS_ERR_INVALID);
    CHECK_ERR(ss_store_check_name(""), SS_ERR_INVALID);
    CHECK_ERR(ss_store_check_name(NULL), SS_ERR_INVALID);
    CHECK_ERR(ss_store_check_name("has space"), SS_ERR_INVALID);
    CHECK(strstr(ss_errmsg(), "' '") != NULL);
    CHECK_ERR(ss_store_check_name("caf\xc3\xa9"), SS_ERR_INVALID);
    CHECK_ERR(ss_store_check_name("st_0123456789abcdef0123456789abcdef"), SS_ERR_INVALID);
    CHECK(strstr(ss_errmsg(), "looks like a state id") != NULL);
    CHECK_ERR(ss_store_check_name("st_0123456789ABCDEF0123456789ABCDEF"), SS_ERR_INVALID);
    CHECK_OK(ss_store_check_name("st_0123456789abcdef"));

    CHECK_OK(ss_store_check_tag("eval:v1"));
    char t65[66];
    memset(t65, 't', 65);
    t65[65] = 0;
    CHECK_ERR(ss_store_check_tag(t65), SS_ERR_INVALID);
    CHECK_OK(ss_store_check_tag(t65 + 1));
    CHECK_ERR(ss_store_check_tag("a,b"), SS_ERR_INVALID);
    CHECK_ERR(ss_store_check_tag(""), SS_ERR_INVALID);
}

static void test_roundtrip(const char *dir)
{
    ss_store *s = open_store(dir, 0, 0);
    static const size_t sizes[] = {1, 7, 4097, 100003, 30 * 1000 * 1000};
    char ids[5][36];
    for (int i = 0; i < 5; i++) {
        size_t len = sizes[i];
        unsigned char *blob = malloc(len);
        fill(blob, len, (uint64_t)i + 100);
        char name[32];
        snprintf(name, sizeof name, "rt-%d", i);
        char *rec = rec_json(name, "[\"rt\", \"size:x\"]", MODEL, (uint64_t)i + 100, len);
        char *out = NULL;
        REQUIRE_OK(ss_store_put(s, rec, blob, len, &out));
        json_t *j = parse(out);
        snprintf(ids[i], sizeof ids[i], "%s", str_field(j, "id"));
        CHECK(ss_store_is_id(ids[i]));
        CHECK(strcmp(str_field(j, "name"), name) == 0);
        CHECK(strcmp(str_field(j, "model"), MODEL) == 0);
        CHECK(strcmp(str_field(j, "dtype"), "f32") == 0);
        CHECK(json_integer_value(json_object_get(j, "n_tokens")) == 12);
        CHECK((size_t)json_integer_value(json_object_get(j, "bytes")) == len);
        char sum[17];
        snprintf(sum, sizeof sum, "%016" PRIx64, (uint64_t)XXH3_64bits(blob, len));
        CHECK(strcmp(str_field(j, "checksum"), sum) == 0);
        const char *when = str_field(j, "created_at");
        CHECKF(strlen(when) == 27 && when[4] == '-' && when[10] == 'T' && when[19] == '.' &&
                   when[26] == 'Z',
               "created_at %s", when);
        CHECK(json_array_size(json_object_get(j, "tags")) == 2);
        CHECK(json_is_array(json_object_get(j, "parents")) &&
              json_array_size(json_object_get(j, "parents")) == 0);
        CHECK(json_integer_value(json_object_get(json_object_get(j, "metadata"), "seed")) ==
              i + 100);
        /* Canonical key order, compact. */
        static const char *const order[] = {
            "\"id\":",       "\"name\":",       "\"tags\":",    "\"model\":",
            "\"n_tokens\":", "\"created_at\":", "\"bytes\":",   "\"dtype\":",
            "\"parents\":",  "\"metadata\":",   "\"checksum\":"};
        const char *prev = out;
        for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
            const char *at = strstr(out, order[k]);
            CHECKF(at && at >= prev, "key %s out of order in %s", order[k], out);
            if (at) prev = at;
        }
        CHECK(out[0] == '{' && strncmp(out, "{\"id\":\"st_", 10) == 0);
        CHECK(strchr(out, '\n') == NULL && strstr(out, ", ") == NULL);

        /* get_record by id and by name: the same text. */
        char *r1 = NULL, *r2 = NULL;
        CHECK_OK(ss_store_get_record(s, ids[i], &r1));
        CHECK_OK(ss_store_get_record(s, name, &r2));
        CHECK(r1 && strcmp(r1, out) == 0);
        CHECK(r2 && strcmp(r2, out) == 0);
        free(r1);
        free(r2);

        /* get_blob: exact cap, by id and by name, with the record. */
        unsigned char *got = malloc(len);
        size_t got_len = 0;
        char *r3 = NULL;
        CHECK_OK(ss_store_get_blob(s, ids[i], MODEL, got, len, &got_len, &r3));
        CHECK(got_len == len && memcmp(got, blob, len) == 0);
        CHECK(r3 && strcmp(r3, out) == 0);
        free(r3);
        memset(got, 0, len);
        CHECK_OK(ss_store_get_blob(s, name, NULL, got, len, NULL, NULL));
        CHECK(memcmp(got, blob, len) == 0);
        /* Too small: the size is still reported. */
        got_len = 0;
        CHECK_ERR(ss_store_get_blob(s, name, MODEL, got, len - 1, &got_len, NULL),
                  SS_ERR_TOO_LARGE);
        CHECK(got_len == len);
        got_len = 0;
        CHECK_ERR(ss_store_get_blob(s, ids[i], MODEL, NULL, 0, &got_len, NULL), SS_ERR_TOO_LARGE);
        CHECK(got_len == len);
        free(got);
        json_decref(j);
        free(out);
        free(rec);
        free(blob);
    }
    /* Ids are distinct. */
    for (int a = 0; a < 5; a++) {
        for (int b = a + 1; b < 5; b++) CHECK(strcmp(ids[a], ids[b]) != 0);
    }
    CHECK_ERR(ss_store_get_record(s, "st_00000000000000000000000000000000", &(char *){NULL}),
              SS_ERR_NOT_FOUND);
    CHECK_ERR(ss_store_get_record(s, "no-such-name", &(char *){NULL}), SS_ERR_NOT_FOUND);
    CHECK(strstr(ss_errmsg(), "no-such-name") != NULL);
    CHECK_ERR(ss_store_get_record(s, "", &(char *){NULL}), SS_ERR_NOT_FOUND);

    ss_store_stats st;
    CHECK_OK(ss_store_get_stats(s, &st));
    CHECK(st.n_states == 5);
    CHECK(st.blob_bytes == 1 + 7 + 4097 + 100003 + 30000000ull);
    CHECK(st.map_size >= st.file_bytes && st.file_bytes >= st.blob_bytes);
    uint64_t checked = 0, bad = 99;
    CHECK_OK(ss_store_verify(s, &checked, &bad));
    CHECK(checked == 5 && bad == 0);
    ss_store_close(s);
}

static void test_invalid_records(const char *dir)
{
    ss_store *s = open_store(dir, 0, 0);
    unsigned char b[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    static const struct {
        const char *json;
        ss_err want;
    } cases[] = {
        {"not json", SS_ERR_FORMAT},
        {"{\"model\": \"m\",", SS_ERR_FORMAT},
        {"{\"model\": \"m\", \"model\": \"n\", \"n_tokens\": 1, \"dtype\": \"f32\"}",
         SS_ERR_FORMAT},
        {"[1, 2]", SS_ERR_INVALID},
        {"\"str\"", SS_ERR_INVALID},
        {"{}", SS_ERR_INVALID},
        {"{\"n_tokens\": 1, \"dtype\": \"f32\"}", SS_ERR_INVALID},
        {"{\"model\": 5, \"n_tokens\": 1, \"dtype\": \"f32\"}", SS_ERR_INVALID},
        {"{\"model\": \"m\", \"dtype\": \"f32\"}", SS_ERR_INVALID},
        {"{\"model\": \"m\", \"n_tokens\": -1, \"dtype\": \"f32\"}", SS_ERR_INVALID},
        {"{\"model\": \"m\", \"n_tokens\": 1.5, \"dtype\": \"f32\"}", SS_ERR_INVALID},
        {"{\"model\": \"m\", \"n_tokens\": 1}", SS_ERR_INVALID},
        {"{\"model\": \"m\", \"n_tokens\": 1, \"dtype\": \"f32\", \"name\": 5}", SS_ERR_INVALID},
        {"{\"model\": \"m\", \"n_tokens\": 1, \"dtype\": \"f32\", \"name\": \"a b\"}",
         SS_ERR_INVALID},
        {"{\"model\": \"m\", \"n_tokens\": 1, \"dtype\": \"f32\", \"name\": \"\"}", SS_ERR_INVALID},
        {"{\"model\": \"m\", \"n_tokens\": 1, \"dtype\": \"f32\", "
         "\"name\": \"st_0123456789abcdef0123456789abcdef\"}",
         SS_ERR_INVALID},
        {"{\"model\": \"m\", \"n_tokens\": 1, \"dtype\": \"f32\", \"tags\": \"x\"}",
         SS_ERR_INVALID},
        {"{\"model\": \"m\", \"n_tokens\": 1, \"dtype\": \"f32\", \"tags\": [1]}", SS_ERR_INVALID},
        {"{\"model\": \"m\", \"n_tokens\": 1, \"dtype\": \"f32\", \"tags\": [\"a\", \"a\"]}",
         SS_ERR_INVALID},
        {"{\"model\": \"m\", \"n_tokens\": 1, \"dtype\": \"f32\", \"tags\": [\"a b\"]}",
         SS_ERR_INVALID},
        {"{\"model\": \"m\", \"n_tokens\": 1, \"dtype\": \"f32\", \"metadata\": []}",
         SS_ERR_INVALID},
        {"{\"model\": \"m\", \"n_tokens\": 1, \"dtype\": \"f32\", \"parents\": {}}",
         SS_ERR_INVALID},
        {"{\"model\": \"m\", \"n_tokens\": 1, \"dtype\": \"f32\", \"parents\": "
         "[{\"id\": \"foo\", \"weight\": 1}]}",
         SS_ERR_INVALID},
        {"{\"model\": \"m\", \"n_tokens\": 1, \"dtype\": \"f32\", \"parents\": "
         "[{\"id\": \"st_0123456789abcdef0123456789abcdef\", \"weight\": \"1\"}]}",
         SS_ERR_INVALID},
        {"{\"model\": \"m\", \"n_tokens\": 1, \"dtype\": \"f32\", \"tag\": [\"a\"]}",
         SS_ERR_INVALID},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = (char *)1;
        ss_err err = ss_store_put(s, cases[i].json, b, sizeof b, &out);
        CHECKF(err == cases[i].want, "case %zu (%s): got %s (%s)", i, cases[i].json,
               ss_err_name(err), ss_errmsg());
        CHECK(out == (char *)1); /* untouched on failure */
    }
    /* Wrong blob arguments. */
    const char *good = "{\"model\": \"m\", \"n_tokens\": 1, \"dtype\": \"f32\"}";
    CHECK_ERR(ss_store_put(s, good, b, 0, NULL), SS_ERR_INVALID);
    CHECK_ERR(ss_store_put(s, good, NULL, 8, NULL), SS_ERR_INVALID);
    CHECK_ERR(ss_store_put(s, NULL, b, 8, NULL), SS_ERR_INVALID);
    /* Store-owned fields are overwritten, parents are kept in canonical form. */
    char *out = NULL;
    CHECK_OK(ss_store_put(s,
                          "{\"id\": \"st_ffffffffffffffffffffffffffffffff\", \"bytes\": 99, "
                          "\"checksum\": \"x\", \"created_at\": \"yesterday\", \"model\": \"m\", "
                          "\"n_tokens\": 0, \"dtype\": \"bf16\", \"parents\": [{\"weight\": -0.5, "
                          "\"id\": \"st_0123456789abcdef0123456789abcdef\"}]}",
                          b, sizeof b, &out));
    json_t *j = parse(out);
    CHECK(strcmp(str_field(j, "id"), "st_ffffffffffffffffffffffffffffffff") != 0);
    CHECK(json_integer_value(json_object_get(j, "bytes")) == 8);
    CHECK(strlen(str_field(j, "checksum")) == 16);
    CHECK(json_is_null(json_object_get(j, "name")));
    CHECK(strstr(out, "\"parents\":[{\"id\":\"st_0123456789abcdef0123456789abcdef\","
                      "\"weight\":-0.5}]") != NULL);
    CHECK(strstr(out, "\"metadata\":{}") && strstr(out, "\"tags\":[]"));
    json_decref(j);
    free(out);
    ss_store_stats st;
    CHECK_OK(ss_store_get_stats(s, &st));
    CHECK(st.n_states == 1);
    ss_store_close(s);
}

static void test_names(const char *dir)
{
    ss_store *s = open_store(dir, 0, 0);
    char id1[36], id2[36];
    CHECK_OK(put_state(s, "alpha", NULL, 1000, 1, id1));
    CHECK_ERR(put_state(s, "alpha", NULL, 1000, 2, NULL), SS_ERR_EXISTS);
    CHECK(strstr(ss_errmsg(), id1) != NULL);
    CHECK_ERR(put_state(s, "st_0123456789abcdef0123456789abcdef", NULL, 10, 3, NULL),
              SS_ERR_INVALID);
    CHECK_OK(put_state(s, NULL, NULL, 1000, 4, id2)); /* unnamed ones never collide */
    CHECK_OK(put_state(s, NULL, NULL, 1000, 5, NULL));
    CHECK(blob_matches(s, "alpha", 1000, 1));
    CHECK(blob_matches(s, id1, 1000, 1));
    CHECK(blob_matches(s, id2, 1000, 4));
    ss_store_stats st;
    CHECK_OK(ss_store_get_stats(s, &st));
    CHECK(st.n_states == 3);
    ss_store_close(s);
}

/* 250 states, newest first, pages of 100, filters by tag and prefix, malformed cursors. */
static void test_list(const char *dir)
{
    ss_store *s = open_store(dir, 0, 0);
    enum { N = 250 };
    static char ids[N][36];
    for (int i = 0; i < N; i++) {
        char name[32], tags[64];
        snprintf(name, sizeof name, "s-%03d", i);
        snprintf(tags, sizeof tags, "[\"all\"%s%s]", i % 3 == 0 ? ", \"three\"" : "",
                 i % 5 == 0 ? ", \"five\"" : "");
        REQUIRE_OK(
            put_state(s, i % 4 == 1 ? NULL : name, tags, 64 + (size_t)i, (uint64_t)i, ids[i]));
    }

    int pages = 0;
    json_t *all = list_all(s, NULL, NULL, 100, &pages);
    CHECK(pages == 3);
    CHECK(json_array_size(all) == N);
    for (size_t k = 0; k < json_array_size(all) && k < N; k++) {
        const char *id = str_field(json_array_get(all, k), "id");
        CHECKF(strcmp(id, ids[N - 1 - k]) == 0, "position %zu: %s, want %s", k, id, ids[N - 1 - k]);
        if (k) {
            const char *a = str_field(json_array_get(all, k - 1), "created_at");
            const char *b = str_field(json_array_get(all, k), "created_at");
            CHECK(strcmp(a, b) >= 0);
        }
    }
    json_decref(all);

    /* Exactly full last page: next_cursor must be null, no empty extra page. */
    all = list_all(s, NULL, NULL, 125, &pages);
    CHECK(pages == 2 && json_array_size(all) == N);
    json_decref(all);
    all = list_all(s, NULL, NULL, 0, &pages); /* 0 = 100 */
    CHECK(pages == 3 && json_array_size(all) == N);
    json_decref(all);

    /* Tag filter, paged. */
    all = list_all(s, "three", NULL, 30, &pages);
    CHECK(json_array_size(all) == 84); /* 0, 3, ..., 249 */
    CHECK(pages == 3);
    int want = 249;
    for (size_t k = 0; k < json_array_size(all); k++, want -= 3) {
        CHECK(strcmp(str_field(json_array_get(all, k), "id"), ids[want]) == 0);
    }
    json_decref(all);
    all = list_all(s, "five", NULL, 1000, &pages);
    CHECK(json_array_size(all) == 50 && pages == 1);
    json_decref(all);
    all = list_all(s, "nosuchtag", NULL, 10, &pages);
    CHECK(json_array_size(all) == 0 && pages == 1);
    json_decref(all);

    /* Prefix filter: s-100 .. s-199 without the unnamed (i % 4 == 1): 75. */
    all = list_all(s, NULL, "s-1", 10, &pages);
    CHECK(json_array_size(all) == 75);
    CHECK(pages == 8);
    want = 199;
    for (size_t k = 0; k < json_array_size(all); k++, want--) {
        if (want % 4 == 1) want--;
        CHECK(strcmp(str_field(json_array_get(all, k), "id"), ids[want]) == 0);
    }
    json_decref(all);
    all = list_all(s, NULL, "", 1000, &pages); /* every named state, none of the unnamed */
    CHECK(json_array_size(all) == N - 63);     /* 63 unnamed: i % 4 == 1 */
    for (size_t k = 0; k < json_array_size(all); k++) {
        CHECK(json_is_string(json_object_get(json_array_get(all, k), "name")));
    }
    json_decref(all);
    /* Tag and prefix together: "five" and s-2xx: 200, 205, ..., 245 minus unnamed (205, 225, 245).
     */
    all = list_all(s, "five", "s-2", 3, &pages);
    CHECK(json_array_size(all) == 7);
    json_decref(all);

    /* Limits and malformed input. */
    char *page = NULL;
    CHECK_ERR(ss_store_list(s, NULL, NULL, 1001, NULL, &page), SS_ERR_INVALID);
    CHECK_ERR(ss_store_list(s, NULL, NULL, -1, NULL, &page), SS_ERR_INVALID);
    CHECK_ERR(ss_store_list(s, "bad tag", NULL, 10, NULL, &page), SS_ERR_INVALID);
    CHECK_ERR(ss_store_list(s, NULL, NULL, 10, "", &page), SS_ERR_INVALID);
    CHECK_ERR(ss_store_list(s, NULL, NULL, 10, "abc", &page), SS_ERR_INVALID);
    char bad[87];
    memset(bad, 'z', 86);
    bad[86] = 0;
    CHECK_ERR(ss_store_list(s, NULL, NULL, 10, bad, &page), SS_ERR_INVALID);
    memset(bad, '0', 86); /* hex, right length, but the id part is not an id */
    CHECK_ERR(ss_store_list(s, NULL, NULL, 10, bad, &page), SS_ERR_INVALID);
    CHECK(page == NULL);

    /* A cursor stays valid when the state it points at is deleted. */
    CHECK_OK(ss_store_list(s, NULL, NULL, 10, NULL, &page));
    json_t *j = parse(page);
    char *cursor = strdup(str_field(j, "next_cursor"));
    CHECK(strlen(cursor) == 86);
    json_decref(j);
    free(page);
    CHECK_OK(ss_store_delete(s, ids[N - 10]));
    CHECK_OK(ss_store_list(s, NULL, NULL, 1, cursor, &page));
    j = parse(page);
    CHECK(strcmp(str_field(json_array_get(json_object_get(j, "data"), 0), "id"), ids[N - 11]) == 0);
    json_decref(j);
    free(page);
    free(cursor);
    ss_store_close(s);
}

static void test_delete(const char *dir)
{
    ss_store *s = open_store(dir, 0, 0);
    char a[36], b[36], c[36];
    CHECK_OK(put_state(s, "keep", "[\"x\"]", 5000, 1, a));
    CHECK_OK(put_state(s, "gone", "[\"x\", \"y\"]", 7000, 2, b));
    CHECK_OK(put_state(s, NULL, "[\"y\"]", 9000, 3, c));
    ss_store_stats st;
    CHECK_OK(ss_store_get_stats(s, &st));
    CHECK(st.n_states == 3 && st.blob_bytes == 21000);

    CHECK_OK(ss_store_delete(s, "gone"));
    CHECK_ERR(ss_store_get_record(s, "gone", &(char *){NULL}), SS_ERR_NOT_FOUND);
    CHECK_ERR(ss_store_get_record(s, b, &(char *){NULL}), SS_ERR_NOT_FOUND);
    CHECK_ERR(ss_store_delete(s, "gone"), SS_ERR_NOT_FOUND);
    CHECK_ERR(ss_store_delete(s, b), SS_ERR_NOT_FOUND);
    CHECK_OK(ss_store_delete(s, c)); /* unnamed, by id */
    CHECK_OK(ss_store_get_stats(s, &st));
    CHECK(st.n_states == 1 && st.blob_bytes == 5000);

    int pages;
    json_t *all = list_all(s, NULL, NULL, 10, &pages);
    CHECK(json_array_size(all) == 1 && strcmp(str_field(json_array_get(all, 0), "id"), a) == 0);
    json_decref(all);
    all = list_all(s, "y", NULL, 10, &pages);
    CHECK(json_array_size(all) == 0);
    json_decref(all);
    all = list_all(s, "x", NULL, 10, &pages);
    CHECK(json_array_size(all) == 1);
    json_decref(all);

    /* The name is free again; the new state is a different one. */
    char b2[36];
    CHECK_OK(put_state(s, "gone", "[\"y\"]", 100, 9, b2));
    CHECK(strcmp(b, b2) != 0);
    CHECK(blob_matches(s, "gone", 100, 9));
    all = list_all(s, "y", NULL, 10, &pages);
    CHECK(json_array_size(all) == 1 && strcmp(str_field(json_array_get(all, 0), "id"), b2) == 0);
    json_decref(all);
    uint64_t checked, bad;
    CHECK_OK(ss_store_verify(s, &checked, &bad));
    CHECK(checked == 2 && bad == 0);
    ss_store_close(s);
}

/* View callback: checks the blobs against the expected seeds. */
typedef struct view_check {
    int calls;
    int n;
    const size_t *lens;
    const uint64_t *seeds;
    int bad;
    ss_store *s;
    ss_err reentry;
    ss_err ret;
} view_check;

static ss_err view_fn(void *user, const void *const *blobs, const size_t *lens, int n)
{
    view_check *v = user;
    v->calls++;
    if (n != v->n) v->bad++;
    for (int i = 0; i < n && i < v->n; i++) {
        if ((uintptr_t)blobs[i] % 16 != 0) v->bad++;
        if (lens[i] != v->lens[i]) {
            v->bad++;
            continue;
        }
        unsigned char *want = malloc(lens[i]);
        fill(want, lens[i], v->seeds[i]);
        if (memcmp(want, blobs[i], lens[i]) != 0) v->bad++;
        free(want);
    }
    if (v->s) {
        char *rec = NULL;
        v->reentry = ss_store_get_record(v->s, "v1", &rec);
        free(rec);
    }
    return v->ret;
}

static void test_view_and_models(const char *dir)
{
    ss_store *s = open_store(dir, 0, 0);
    const size_t lens[] = {1, 3, 4097, 250000, 33};
    const uint64_t seeds[] = {11, 12, 13, 14, 15};
    char ids[5][36];
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof name, "v%d", i);
        REQUIRE_OK(put_state(s, name, NULL, lens[i], seeds[i], ids[i]));
    }
    const char *refs[] = {"v0", ids[1], "v2", ids[3], "v4"};
    view_check v = {.n = 5, .lens = lens, .seeds = seeds, .ret = SS_OK};
    CHECK_OK(ss_store_view(s, refs, 5, MODEL, view_fn, &v));
    CHECK(v.calls == 1 && v.bad == 0);
    /* Same state twice, no model check, fn's error passed back. */
    const char *twice[] = {"v3", "v3"};
    const size_t lens2[] = {250000, 250000};
    const uint64_t seeds2[] = {14, 14};
    view_check v2 = {.n = 2, .lens = lens2, .seeds = seeds2, .ret = SS_ERR_CANCELLED};
    CHECK_ERR(ss_store_view(s, twice, 2, NULL, view_fn, &v2), SS_ERR_CANCELLED);
    CHECK(v2.calls == 1 && v2.bad == 0);
    /* Calling back into the store from fn is refused (it could deadlock). */
    view_check v3 = {.n = 1, .lens = lens, .seeds = seeds, .s = s, .reentry = SS_OK};
    CHECK_OK(ss_store_view(s, refs, 1, MODEL, view_fn, &v3));
    CHECK(v3.calls == 1 && v3.reentry == SS_ERR_INTERNAL);
    char *rec = NULL;
    CHECK_OK(ss_store_get_record(s, "v1", &rec)); /* and fine again afterwards */
    free(rec);

    /* Model mismatch: get_blob and view, fn not called. */
    unsigned char buf[4097];
    CHECK_ERR(ss_store_get_blob(s, "v2", "another_model", buf, sizeof buf, NULL, NULL),
              SS_ERR_MISMATCH);
    CHECK(strstr(ss_errmsg(), "another_model") != NULL);
    view_check v4 = {.n = 5, .lens = lens, .seeds = seeds};
    CHECK_ERR(ss_store_view(s, refs, 5, "another_model", view_fn, &v4), SS_ERR_MISMATCH);
    CHECK(v4.calls == 0);
    char *other = rec_json("foreign", NULL, "other_model", 1, 8);
    CHECK_OK(ss_store_put(s, other, buf, 8, NULL));
    free(other);
    const char *mixed[] = {"v0", "foreign"};
    CHECK_ERR(ss_store_view(s, mixed, 2, MODEL, view_fn, &v4), SS_ERR_MISMATCH);
    CHECK(strstr(ss_errmsg(), "foreign") != NULL);
    CHECK_OK(ss_store_get_blob(s, "foreign", "other_model", buf, sizeof buf, NULL, NULL));
    /* Missing ref, no refs. */
    const char *missing[] = {"v0", "nope"};
    CHECK_ERR(ss_store_view(s, missing, 2, MODEL, view_fn, &v4), SS_ERR_NOT_FOUND);
    CHECK_ERR(ss_store_view(s, missing, 0, MODEL, view_fn, &v4), SS_ERR_INVALID);
    CHECK(v4.calls == 0);
    ss_store_close(s);
}

/* A write transaction on one database of the store at dir, through LMDB itself, behind the
 * store's back (the store must be closed). */
typedef struct raw_db {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
} raw_db;

/* Open the environment at dir and database `name` in a write transaction; an MDB_* code. Call
 * raw_close in any case. */
static int raw_open(raw_db *r, const char *dir, const char *name)
{
    *r = (raw_db){0};
    int rc = mdb_env_create(&r->env);
    if (!rc) rc = mdb_env_set_maxdbs(r->env, 8);
    if (!rc) rc = mdb_env_open(r->env, dir, 0, 0600);
    if (!rc) rc = mdb_txn_begin(r->env, NULL, 0, &r->txn);
    if (!rc) rc = mdb_dbi_open(r->txn, name, 0, &r->dbi);
    return rc;
}

/* Commit when rc is 0, else abort (printing rc under `who`); close. Returns the final code. */
static int raw_close(raw_db *r, int rc, const char *who)
{
    if (!rc)
        rc = mdb_txn_commit(r->txn);
    else if (r->txn)
        mdb_txn_abort(r->txn);
    if (rc) fprintf(stderr, "%s: %s\n", who, mdb_strerror(rc));
    mdb_env_close(r->env);
    return rc;
}

/* Flip one byte of a stored blob. */
static int flip_blob_byte(const char *dir, const char *id, size_t at)
{
    raw_db r;
    MDB_val key = {35, (void *)id}, val;
    int rc = raw_open(&r, dir, "blobs");
    if (!rc) rc = mdb_get(r.txn, r.dbi, &key, &val);
    if (!rc) {
        unsigned char *copy = malloc(val.mv_size);
        memcpy(copy, val.mv_data, val.mv_size);
        copy[at % val.mv_size] ^= 0x40;
        MDB_val nv = {val.mv_size, copy};
        rc = mdb_put(r.txn, r.dbi, &key, &nv, 0);
        free(copy);
    }
    return raw_close(&r, rc, "flip_blob_byte");
}

/* Replace the JSON of a stored record with garbage (keeping the store's 8-byte header). */
static int clobber_record(const char *dir, const char *id)
{
    raw_db r;
    MDB_val key = {35, (void *)id}, val;
    int rc = raw_open(&r, dir, "records");
    if (!rc) rc = mdb_get(r.txn, r.dbi, &key, &val);
    if (!rc) {
        unsigned char v[8 + 7];
        memcpy(v, val.mv_data, 8);
        memcpy(v + 8, "{broken", 7);
        MDB_val nv = {sizeof v, v};
        rc = mdb_put(r.txn, r.dbi, &key, &nv, 0);
    }
    return raw_close(&r, rc, "clobber_record");
}

/* Flip one byte of a stored record value at `at`; or with at < 0, rewrite it in the format of
 * stores older than the record checksum (created_ns, then the text: the mark and sum dropped). */
static int damage_record(const char *dir, const char *id, long at)
{
    raw_db r;
    MDB_val key = {35, (void *)id}, val;
    int rc = raw_open(&r, dir, "records");
    if (!rc) rc = mdb_get(r.txn, r.dbi, &key, &val);
    if (!rc) {
        unsigned char *copy = malloc(val.mv_size);
        size_t n = val.mv_size;
        memcpy(copy, val.mv_data, n);
        if (at >= 0) {
            copy[(size_t)at % n] ^= 0x04;
        } else {
            memmove(copy + 8, copy + 17, n - 17);
            n -= 9;
        }
        MDB_val nv = {n, copy};
        rc = mdb_put(r.txn, r.dbi, &key, &nv, 0);
        free(copy);
    }
    return raw_close(&r, rc, "damage_record");
}

/*
 * Records carry a checksum: one flipped byte in a record makes that state corrupt (never served),
 * a listing skips it and says so ("skipped": 1) while serving the others, verify counts it.
 * Records in the older format (no checksum) still read, checked by parsing.
 */
static void test_record_checksum(const char *dir)
{
    char a[36], b[36], c[36], *ta = NULL, *text = NULL;
    ss_store *s = open_store(dir, 0, 0);
    CHECK_OK(put_state(s, "ra", "[\"t\"]", 100, 1, a));
    CHECK_OK(put_state(s, "rb", "[\"t\"]", 100, 2, b));
    CHECK_OK(put_state(s, "rc", "[\"t\"]", 100, 3, c));
    CHECK_OK(ss_store_get_record(s, a, &ta));
    ss_store_close(s);
    CHECK(damage_record(dir, b, 8 + 9 + 20) == 0); /* inside the JSON text */
    CHECK(damage_record(dir, a, -1) == 0);         /* old format, intact */
    s = open_store(dir, 0, 0);
    CHECK_ERR(ss_store_get_record(s, "rb", &text), SS_ERR_CORRUPT);
    CHECK(strstr(ss_errmsg(), b) && strstr(ss_errmsg(), "checksum"));
    CHECK_OK(ss_store_get_record(s, "ra", &text));
    CHECK(text && ta && strcmp(text, ta) == 0);
    free(text);
    CHECK(blob_matches(s, "ra", 100, 1));
    for (int t = 0; t < 2; t++) {
        char *page = NULL;
        CHECK_OK(ss_store_list(s, t ? "t" : NULL, NULL, 10, NULL, &page));
        json_t *j = parse(page);
        json_t *d = json_object_get(j, "data");
        CHECK(json_array_size(d) == 2 && json_integer_value(json_object_get(j, "skipped")) == 1);
        CHECK(!strcmp(str_field(json_array_get(d, 0), "id"), c) &&
              !strcmp(str_field(json_array_get(d, 1), "id"), a));
        json_decref(j);
        free(page);
    }
    uint64_t checked = 0, bad = 0;
    CHECK_OK(ss_store_verify(s, &checked, &bad));
    CHECK(checked == 3 && bad == 1 && strstr(ss_errmsg(), b));
    CHECK_OK(ss_store_delete(s, "rb")); /* a damaged record can still be deleted */
    CHECK_OK(ss_store_verify(s, &checked, &bad));
    CHECK(checked == 2 && bad == 0);
    free(ta);
    ss_store_close(s);
}

static void test_corruption(const char *dir)
{
    ss_store *s = open_store(dir, 0, 0);
    char small[36], big[36], fine[36];
    CHECK_OK(put_state(s, "small", NULL, 13, 1, small));
    CHECK_OK(put_state(s, "big", NULL, 300000, 2, big));
    CHECK_OK(put_state(s, "fine", "[\"x\", \"y\"]", 300000, 3, fine));
    ss_store_close(s);
    CHECK(flip_blob_byte(dir, big, 123457) == 0);

    s = open_store(dir, 0, 0);
    unsigned char *buf = malloc(300000);
    memset(buf, 0xee, 300000);
    CHECK_ERR(ss_store_get_blob(s, "big", MODEL, buf, 300000, NULL, NULL), SS_ERR_CORRUPT);
    CHECK(strstr(ss_errmsg(), big) != NULL && strstr(ss_errmsg(), "checksum") != NULL);
    /* (what reached buf is undefined: the checksum is computed as the bytes are copied) */
    const char *refs[] = {"fine", big};
    view_check v = {.n = 2};
    CHECK_ERR(ss_store_view(s, refs, 2, MODEL, view_fn, &v), SS_ERR_CORRUPT);
    CHECK(v.calls == 0);
    CHECK(blob_matches(s, "fine", 300000, 3));
    CHECK(blob_matches(s, "small", 13, 1));
    uint64_t checked = 0, bad = 0;
    CHECK_OK(ss_store_verify(s, &checked, &bad));
    CHECK(checked == 3 && bad == 1);
    CHECK(strstr(ss_errmsg(), big) != NULL);
    ss_store_close(s);

    /* A small blob (stored inside an LMDB leaf page) too. */
    CHECK(flip_blob_byte(dir, small, 0) == 0);
    s = open_store(dir, 0, 0);
    CHECK_ERR(ss_store_get_blob(s, small, MODEL, buf, 300000, NULL, NULL), SS_ERR_CORRUPT);
    CHECK_OK(ss_store_verify(s, &checked, &bad));
    CHECK(checked == 3 && bad == 2);
    /* Corrupt states can still be deleted. */
    CHECK_OK(ss_store_delete(s, "big"));
    CHECK_OK(ss_store_verify(s, &checked, &bad));
    CHECK(checked == 2 && bad == 1);
    ss_store_close(s);

    /* An unreadable record: blob reads fail as corrupt; delete still removes every index entry. */
    CHECK(clobber_record(dir, fine) == 0);
    s = open_store(dir, 0, 0);
    CHECK_ERR(ss_store_get_blob(s, "fine", MODEL, buf, 300000, NULL, NULL), SS_ERR_CORRUPT);
    CHECK(strstr(ss_errmsg(), fine) != NULL);
    CHECK_OK(ss_store_verify(s, &checked, &bad));
    CHECK(checked == 2 && bad == 2);
    CHECK_OK(ss_store_delete(s, "fine"));
    CHECK_ERR(ss_store_get_record(s, fine, &(char *){NULL}), SS_ERR_NOT_FOUND);
    CHECK_OK(put_state(s, "fine", "[\"again\"]", 10, 4, NULL)); /* the name was released */
    int pages;
    json_t *all = list_all(s, NULL, NULL, 10, &pages);
    CHECK(json_array_size(all) == 2);
    json_decref(all);
    all = list_all(s, "x", NULL, 10, &pages);
    CHECK(json_array_size(all) == 0);
    json_decref(all);
    ss_store_stats st;
    CHECK_OK(ss_store_get_stats(s, &st));
    CHECK(st.n_states == 2 && st.blob_bytes == 13 + 10);
    free(buf);
    ss_store_close(s);
}

/* ---- chunked view ------------------------------------------------------------------------ */

typedef struct chunk_check {
    int n;
    size_t len;
    const uint64_t *seeds;
    unsigned char **want; /* [n] expected blobs */
    unsigned char *seen;  /* [len] bytes of blob 0 copied out, to check coverage */
    atomic_int calls, bad;
} chunk_check;

static ss_err chunk_fn(void *user, const void *const *chunks, size_t off, size_t len, int n)
{
    chunk_check *c = user;
    atomic_fetch_add(&c->calls, 1);
    if (n != c->n || off + len > c->len) {
        atomic_fetch_add(&c->bad, 1);
        return SS_OK;
    }
    for (int i = 0; i < n; i++) {
        if ((uintptr_t)chunks[i] % 16 || memcmp(chunks[i], c->want[i] + off, len) != 0)
            atomic_fetch_add(&c->bad, 1);
    }
    memcpy(c->seen + off, chunks[0], len);
    return SS_OK;
}

/* Delete the per-piece checksums of a state, as in a store written before they existed. */
static int drop_chunk_sums(const char *dir, const char *id)
{
    raw_db r;
    MDB_val key = {35, (void *)id};
    int rc = raw_open(&r, dir, "chunks");
    if (!rc) rc = mdb_del(r.txn, r.dbi, &key, NULL);
    return raw_close(&r, rc, "drop_chunk_sums");
}

static int same_float(float a, float b)
{
    return (isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof a) == 0;
}

/* The merge of ss_store_merge_f32, element by element in its documented order. */
static void merge_want(float *out, unsigned char *const *blobs, const double *w, int n, size_t len)
{
    for (size_t e = 0; e < len / 4; e++) {
        float x;
        memcpy(&x, blobs[0] + 4 * e, 4);
        float a = (float)w[0] * x;
        for (int i = 1; i < n; i++) {
            memcpy(&x, blobs[i] + 4 * e, 4);
            a = fmaf((float)w[i], x, a);
        }
        out[e] = a;
    }
}

static int floats_same(const float *a, const float *b, size_t n)
{
    for (size_t e = 0; e < n; e++) {
        if (!same_float(a[e], b[e])) {
            printf("  element %zu: %g, not %g\n", e, a[e], b[e]);
            return 0;
        }
    }
    return 1;
}

static void test_view_chunks(const char *dir)
{
    enum { N = 3 };
    const size_t len = 5 * MIB / 2 + 12; /* 3 pieces, the last one short */
    const uint64_t seeds[N] = {21, 22, 23};
    char ids[N][36], odd[36];
    unsigned char *want[N];
    ss_store *s = open_store(dir, 0, 0);
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "c%d", i);
        REQUIRE_OK(put_state(s, name, NULL, len, seeds[i], ids[i]));
        want[i] = malloc(len);
        fill(want[i], len, seeds[i]);
    }
    REQUIRE_OK(put_state(s, "odd", NULL, len - 4, 9, odd));
    const char *refs[N] = {"c0", ids[1], "c2"};
    for (int threads = 1; threads <= 4; threads += 3) {
        chunk_check c = {.n = N, .len = len, .seeds = seeds, .want = want, .seen = calloc(1, len)};
        CHECK_OK(ss_store_view_chunks(s, refs, N, MODEL, threads, chunk_fn, &c));
        CHECK(atomic_load(&c.calls) == 3 && atomic_load(&c.bad) == 0);
        CHECK(memcmp(c.seen, want[0], len) == 0); /* every byte seen once, in its place */
        free(c.seen);
    }
    /* ss_store_merge_f32: the weighted sum, in the documented order, on 1 and 2 threads */
    const double wts[N] = {0.5, -0.25, 2.0};
    float *mo = malloc(len), *mw = malloc(len);
    merge_want(mw, want, wts, N, len);
    for (int threads = 1; threads <= 2; threads++) {
        memset(mo, 0, len);
        CHECK_OK(ss_store_merge_f32(s, refs, wts, N, MODEL, mo, len, threads, NULL));
        CHECK(floats_same(mo, mw, len / 4));
    }
    /* The sources as resolved: the ids of exactly the states summed, and their n_tokens (12 from
     * rec_json). Then "c0" is deleted and re-created with other data: the next merge
     * names the new id and sums the new data, resolved in the same transaction. */
    ss_store_source src[N];
    CHECK_OK(ss_store_merge_f32(s, refs, wts, N, MODEL, mo, len, 2, src));
    for (int i = 0; i < N; i++)
        CHECK(strcmp(src[i].id, ids[i]) == 0 && src[i].n_tokens == 12);
    char c0b[36];
    CHECK_OK(ss_store_delete(s, "c0"));
    REQUIRE_OK(put_state(s, "c0", NULL, len, 41, c0b));
    unsigned char *was0 = want[0];
    want[0] = malloc(len);
    fill(want[0], len, 41);
    merge_want(mw, want, wts, N, len);
    CHECK_OK(ss_store_merge_f32(s, refs, wts, N, MODEL, mo, len, 2, src));
    CHECK(strcmp(src[0].id, c0b) == 0 && strcmp(src[0].id, ids[0]) != 0 && src[0].n_tokens == 12);
    CHECK(floats_same(mo, mw, len / 4));
    free(want[0]);
    want[0] = was0;
    memcpy(ids[0], c0b, sizeof c0b);
    CHECK_OK(ss_store_delete(s, "c0"));
    REQUIRE_OK(put_state(s, "c0", NULL, len, seeds[0], ids[0]));
    merge_want(mw, want, wts, N, len);
    /* 1e38 + 1e38 overflows a float: refused, whatever the threads, naming the first bad piece */
    const double huge_w[N] = {1e38, 1e38, 1e38};
    char fin_a[36], fin_b[36];
    const size_t flen = 3 * MIB;
    float *fa = malloc(flen);
    for (size_t k = 0; k < flen / 4; k++) fa[k] = 2.0f;
    const char *frec = "{\"model\":\"" MODEL "\",\"n_tokens\":1,\"dtype\":\"F32\"}";
    char *r1 = NULL, *r2 = NULL;
    REQUIRE_OK(ss_store_put(s, frec, fa, flen, &r1));
    REQUIRE_OK(ss_store_put(s, frec, fa, flen, &r2));
    json_t *j1 = parse(r1), *j2 = parse(r2);
    snprintf(fin_a, sizeof fin_a, "%s", str_field(j1, "id"));
    snprintf(fin_b, sizeof fin_b, "%s", str_field(j2, "id"));
    json_decref(j1);
    json_decref(j2);
    const char *frefs[2] = {fin_a, fin_b};
    float *fo = malloc(flen);
    CHECK_ERR(ss_store_merge_f32(s, frefs, huge_w, 2, MODEL, fo, flen, 2, NULL), SS_ERR_INVALID);
    CHECK(strstr(ss_errmsg(), "not finite"));
    const double ok_w[2] = {1e37, 1e37}; /* 4e37: still a float */
    CHECK_OK(ss_store_merge_f32(s, frefs, ok_w, 2, MODEL, fo, flen, 1, NULL));
    CHECK(fo[0] == 4e37f && fo[flen / 4 - 1] == 4e37f);
    free(fa);
    free(fo);
    free(r1);
    free(r2);
    const double bad_w[2][N] = {{0.5, NAN, 1}, {1e39, 0, 1}};
    for (int k = 0; k < 2; k++)
        CHECK_ERR(ss_store_merge_f32(s, refs, bad_w[k], N, MODEL, mo, len, 2, NULL),
                  SS_ERR_INVALID);
    CHECK_ERR(ss_store_merge_f32(s, refs, wts, N, MODEL, mo, len - 4, 2, NULL), SS_ERR_MISMATCH);
    const char *mixed_m[2] = {"c0", "odd"};
    CHECK_ERR(ss_store_merge_f32(s, mixed_m, wts, 2, MODEL, mo, len, 2, NULL), SS_ERR_MISMATCH);
    CHECK_ERR(ss_store_merge_f32(s, refs, wts, N, "another_model", mo, len, 2, NULL),
              SS_ERR_MISMATCH);

    /* A state of 4 MiB or more is restored on two threads, each piece checked as it is copied. */
    char big[36];
    const size_t big_len = 4 * MIB + 100;
    REQUIRE_OK(put_state(s, "big", NULL, big_len, 31, big));
    CHECK(blob_matches(s, "big", big_len, 31));

    /* sizes differ; other model; missing */
    chunk_check c = {.n = 2, .len = len, .want = want, .seen = calloc(1, len)};
    const char *mixed[2] = {"c0", "odd"};
    CHECK_ERR(ss_store_view_chunks(s, mixed, 2, MODEL, 2, chunk_fn, &c), SS_ERR_MISMATCH);
    CHECK_ERR(ss_store_view_chunks(s, refs, N, "another_model", 2, chunk_fn, &c), SS_ERR_MISMATCH);
    const char *missing[2] = {"c0", "nope"};
    CHECK_ERR(ss_store_view_chunks(s, missing, 2, MODEL, 2, chunk_fn, &c), SS_ERR_NOT_FOUND);
    CHECK(atomic_load(&c.calls) == 0);
    ss_store_close(s);

    /* A flipped byte in the second piece of c1: that piece is refused, named by its range. */
    CHECK(flip_blob_byte(dir, ids[1], MIB + 77) == 0);
    s = open_store(dir, 0, 0);
    c = (chunk_check){.n = N, .len = len, .want = want, .seen = c.seen};
    CHECK_ERR(ss_store_view_chunks(s, refs, N, MODEL, 1, chunk_fn, &c), SS_ERR_CORRUPT);
    CHECK(strstr(ss_errmsg(), ids[1]) && strstr(ss_errmsg(), "[1048576, 2097152)"));
    CHECK(atomic_load(&c.calls) <= 1 && atomic_load(&c.bad) == 0);
    CHECK_ERR(ss_store_merge_f32(s, refs, wts, N, MODEL, mo, len, 2, NULL), SS_ERR_CORRUPT);
    CHECK(strstr(ss_errmsg(), ids[1]) && strstr(ss_errmsg(), "[1048576, 2097152)"));
    ss_store_close(s);
    CHECK(flip_blob_byte(dir, big, 3 * MIB + 5) == 0);
    s = open_store(dir, 0, 0);
    unsigned char *bigbuf = malloc(big_len);
    CHECK_ERR(ss_store_get_blob(s, "big", MODEL, bigbuf, big_len, NULL, NULL), SS_ERR_CORRUPT);
    CHECK(strstr(ss_errmsg(), big) && strstr(ss_errmsg(), "[3145728, 4194304)"));
    ss_store_close(s);

    /* Without per-piece checksums (an older store) the blob is verified whole, up front. */
    CHECK(drop_chunk_sums(dir, ids[1]) == 0);
    CHECK(drop_chunk_sums(dir, ids[2]) == 0);
    CHECK(drop_chunk_sums(dir, big) == 0);
    s = open_store(dir, 0, 0);
    CHECK_ERR(ss_store_get_blob(s, "big", MODEL, bigbuf, big_len, NULL, NULL), SS_ERR_CORRUPT);
    CHECK(strstr(ss_errmsg(), "checksum mismatch (recorded"));
    free(bigbuf);
    CHECK_ERR(ss_store_merge_f32(s, refs, wts, N, MODEL, mo, len, 2, NULL), SS_ERR_CORRUPT);
    const char *intact_m[2] = {"c0", "c2"};
    const double wts2[2] = {wts[0], wts[2]};
    unsigned char *want2[2] = {want[0], want[2]};
    merge_want(mw, want2, wts2, 2, len);
    CHECK_OK(ss_store_merge_f32(s, intact_m, wts2, 2, MODEL, mo, len, 2, NULL));
    CHECK(floats_same(mo, mw, len / 4));
    free(mo);
    free(mw);
    c = (chunk_check){.n = N, .len = len, .want = want, .seen = c.seen};
    CHECK_ERR(ss_store_view_chunks(s, refs, N, MODEL, 2, chunk_fn, &c), SS_ERR_CORRUPT);
    CHECK(atomic_load(&c.calls) == 0);
    const char *intact[2] = {"c0", "c2"};
    unsigned char *w2[2] = {want[0], want[2]};
    c = (chunk_check){.n = 2, .len = len, .want = w2, .seen = c.seen};
    CHECK_OK(ss_store_view_chunks(s, intact, 2, MODEL, 2, chunk_fn, &c));
    CHECK(atomic_load(&c.calls) == 3 && atomic_load(&c.bad) == 0);
    CHECK_OK(ss_store_delete(s, "c2")); /* deleting a state without checksums is fine */
    free(c.seen);
    for (int i = 0; i < N; i++) free(want[i]);
    ss_store_close(s);
}

/* ---- the fused checksum kernels (store/hash.h) --------------------------------------------- */

typedef struct isa_kernels {
    const char *name;
    int usable;
    void (*copy)(void *, const void *, size_t, uint64_t *);
    int (*sum)(float *, const float *const *, const float *, int, size_t, uint64_t *);
} isa_kernels;

/*
 * Every build of ss_hash64_copy and ss_hash64_sum_f32 this CPU can run gives XXH3_64bits (the
 * Debian library) of each input and the exact copy / the sum in the documented order, for lengths
 * around every boundary of XXH3's long form: 240 bytes, the 64-byte stripe, the 1 KiB block, and
 * a 1 MiB piece; for 1 to 9 sources (groups of 4 and their remainders), 64 and 65 (the fallback);
 * from aligned and unaligned addresses.
 */
static void test_hash_kernels(void)
{
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const isa_kernels isas[] = {
        {"base", 1, ss_hash64_copy_base, ss_hash64_sum_f32_base},
        {"avx2", avx2, ss_hash64_copy_avx2, ss_hash64_sum_f32_avx2},
        {"avx512", avx2 && __builtin_cpu_supports("avx512f"), ss_hash64_copy_avx512,
         ss_hash64_sum_f32_avx512},
    };
    enum { MAXN = 65 };
    const size_t big = MIB + 64;
    unsigned char *src[MAXN];
    for (int i = 0; i < MAXN; i++) {
        src[i] = malloc(big + 8);
        fill(src[i], big + 8, 100 + (uint64_t)i);
        /* mostly ordinary floats, so that the sums are not all NaN */
        for (size_t k = 0; k + 4 <= big + 8; k += 4) {
            float f = (float)((int)(src[i][k] % 200) - 100) * 0.01f + (float)i;
            if (src[i][k + 1] % 16) memcpy(src[i] + k, &f, 4);
        }
    }
    unsigned char *dst = malloc(big + 8);
    float *out = malloc(big + 8), *want = malloc(big + 8);
    float w[MAXN];
    for (int i = 0; i < MAXN; i++) w[i] = (i % 3 ? -0.25f : 0.5f) + 0.01f * (float)i;
    const size_t lens[] = {0,    4,    60,   64,    236,   240,    244,        256,
                           1020, 1024, 1028, 1088,  1092,  2044,   2048,       2052,
                           3136, 5000, 9996, 65536, 65540, MIB,    MIB + 4,    MIB + 64};
    const int ns[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 64, 65};
    int bad = 0;
    for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
        if (!isas[k].usable) {
            printf("  (hash kernels: %s not supported here)\n", isas[k].name);
            continue;
        }
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            for (size_t shift = 0; shift <= 4; shift += 4) {
                size_t len = lens[li];
                uint64_t h = 0;
                memset(dst, 0, big + 8);
                isas[k].copy(dst + shift, src[0] + shift, len, &h);
                const unsigned char *in = src[0] + shift;
                if (h != XXH3_64bits(in, len) || memcmp(dst + shift, in, len))
                    bad += printf("  %s copy: len %zu shift %zu\n", isas[k].name, len, shift) > 0;
                for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                    int n = ns[ni];
                    if (n > 9 && len > 5000) continue; /* the fallback path: short inputs do */
                    const float *sp[MAXN];
                    uint64_t hs[MAXN];
                    size_t count = len / 4;
                    for (int i = 0; i < n; i++) sp[i] = (const float *)(src[i] + shift);
                    int want_finite = 1;
                    for (size_t e = 0; e < count; e++) {
                        float a = w[0] * sp[0][e];
                        for (int i = 1; i < n; i++) a = fmaf(w[i], sp[i][e], a);
                        want[e] = a;
                        want_finite &= isfinite(a) != 0;
                    }
                    /* once with the data as it is, once with one overflowing element */
                    if (isas[k].sum(out, sp, w, n, len, hs) != want_finite)
                        bad += printf("  %s sum: len %zu n %d: finite flag wrong\n",
                                      isas[k].name, len, n) > 0;
                    if (want_finite && count > 0) {
                        float keep = sp[0][count / 2], huge = 3e38f, w0 = w[0];
                        memcpy((float *)sp[0] + count / 2, &huge, 4);
                        w[0] = 8.0f; /* 8 * 3e38 overflows a float */
                        if (isas[k].sum(out, sp, w, n, len, hs) != 0)
                            bad += printf("  %s sum: len %zu n %d: inf not flagged\n",
                                          isas[k].name, len, n) > 0;
                        w[0] = w0;
                        memcpy((float *)sp[0] + count / 2, &keep, 4);
                        isas[k].sum(out, sp, w, n, len, hs);
                    }
                    for (int i = 0; i < n; i++)
                        if (hs[i] != XXH3_64bits(sp[i], len))
                            bad += printf("  %s sum: len %zu n %d source %d: wrong hash\n",
                                          isas[k].name, len, n, i) > 0;
                    for (size_t e = 0; e < count; e++) {
                        if (!same_float(out[e], want[e])) {
                            bad += printf("  %s sum: len %zu n %d: element %zu is %g, not %g\n",
                                          isas[k].name, len, n, e, out[e], want[e]) > 0;
                            break;
                        }
                    }
                }
            }
        }
    }
    CHECK(bad == 0);
    printf("hash kernels %s (dispatch: %s)\n", bad ? "FAILED" : "ok", ss_hash_isa());
    for (int i = 0; i < MAXN; i++) free(src[i]);
    free(dst);
    free(out);
    free(want);
}

/* Start at 1 MiB and store 40 MB, including one 30 MB blob larger than the map. */
static void test_growth(const char *dir)
{
    ss_store *s = open_store(dir, MIB, 0);
    ss_store_stats st;
    CHECK_OK(ss_store_get_stats(s, &st));
    CHECK(st.map_size < 2 * MIB);
    char ids[12][36];
    size_t lens[12];
    for (int i = 0; i < 11; i++) {
        lens[i] = i == 5 ? 30 * MIB : 1 * MIB - 17;
        REQUIRE_OK(put_state(s, NULL, "[\"grow\"]", lens[i], (uint64_t)i + 40, ids[i]));
    }
    for (int i = 0; i < 11; i++) CHECK(blob_matches(s, ids[i], lens[i], (uint64_t)i + 40));
    CHECK_OK(ss_store_get_stats(s, &st));
    CHECK(st.n_states == 11);
    CHECK(st.blob_bytes == 30 * MIB + 10 * (MIB - 17));
    CHECK(st.map_size >= st.blob_bytes && st.map_size >= st.file_bytes);
    ss_store_close(s);

    /* Reopening with a small initial size maps at least the file. */
    s = open_store(dir, MIB, 0);
    CHECK_OK(ss_store_get_stats(s, &st));
    CHECK(st.map_size >= st.file_bytes);
    for (int i = 0; i < 11; i++) CHECK(blob_matches(s, ids[i], lens[i], (uint64_t)i + 40));
    ss_store_close(s);
}

/* max_map_size: SS_ERR_FULL at the cap, reads keep working, deleting makes room again. */
static void test_map_limit(const char *dir)
{
    ss_store *s = open_store(dir, MIB, 4 * MIB);
    char ids[16][36];
    int n_ok = 0;
    ss_err err = SS_OK;
    for (int i = 0; i < 16; i++) {
        err = put_state(s, NULL, NULL, 512 * 1024, (uint64_t)i, ids[n_ok]);
        if (err) break;
        n_ok++;
    }
    CHECK_ERR(err, SS_ERR_FULL);
    CHECK(n_ok >= 4 && n_ok < 8);
    ss_store_stats st;
    CHECK_OK(ss_store_get_stats(s, &st));
    CHECK(st.map_size <= 4 * MIB);
    CHECK(st.n_states == (uint64_t)n_ok);
    for (int i = 0; i < n_ok; i++) CHECK(blob_matches(s, ids[i], 512 * 1024, (uint64_t)i));
    int pages;
    json_t *all = list_all(s, NULL, NULL, 100, &pages);
    CHECK(json_array_size(all) == (size_t)n_ok);
    json_decref(all);
    /* A blob larger than the cap can never fit. */
    CHECK_ERR(put_state(s, NULL, NULL, 5 * MIB, 99, NULL), SS_ERR_FULL);
    uint64_t checked, bad;
    CHECK_OK(ss_store_verify(s, &checked, &bad));
    CHECK(checked == (uint64_t)n_ok && bad == 0);
    /* Space freed by deletes is reused (LMDB reuses pages freed before the previous commit). */
    CHECK_OK(ss_store_delete(s, ids[0]));
    CHECK_OK(ss_store_delete(s, ids[1]));
    CHECK_OK(put_state(s, NULL, NULL, 512 * 1024, 77, ids[0]));
    CHECK(blob_matches(s, ids[0], 512 * 1024, 77));
    ss_store_close(s);
}

static void test_reopen(const char *dir)
{
    ss_store *s = open_store(dir, 0, 0);
    char ids[20][36];
    for (int i = 0; i < 20; i++) {
        char name[16];
        snprintf(name, sizeof name, "r%02d", i);
        REQUIRE_OK(put_state(s, i % 2 ? name : NULL, "[\"re\"]", 1000 + (size_t)i * 997,
                             (uint64_t)i, ids[i]));
    }
    char *before = NULL, *after = NULL;
    CHECK_OK(ss_store_list(s, NULL, NULL, 1000, NULL, &before));
    ss_store_stats st1, st2;
    CHECK_OK(ss_store_get_stats(s, &st1));
    ss_store_close(s);

    s = open_store(dir, 0, 0);
    CHECK_OK(ss_store_list(s, NULL, NULL, 1000, NULL, &after));
    CHECK(before && after && strcmp(before, after) == 0);
    CHECK_OK(ss_store_get_stats(s, &st2));
    CHECK(st1.n_states == st2.n_states && st1.blob_bytes == st2.blob_bytes);
    for (int i = 0; i < 20; i++) {
        CHECK(blob_matches(s, ids[i], 1000 + (size_t)i * 997, (uint64_t)i));
    }
    CHECK(blob_matches(s, "r03", 1000 + 3 * 997, 3));
    /* New states still sort newest first after the reopen. */
    char newest[36];
    CHECK_OK(put_state(s, NULL, NULL, 10, 1, newest));
    char *page = NULL;
    CHECK_OK(ss_store_list(s, NULL, NULL, 1, NULL, &page));
    CHECK(page && strstr(page, newest) != NULL);
    free(page);
    free(before);
    free(after);
    ss_store_close(s);

    /* Read-only: same content, writes refused; a missing store is not created. */
    ss_store_params p = ss_store_default_params();
    p.read_only = 1;
    REQUIRE_OK(ss_store_open(&s, dir, &p));
    CHECK(blob_matches(s, "r05", 1000 + 5 * 997, 5));
    CHECK_ERR(put_state(s, NULL, NULL, 10, 1, NULL), SS_ERR_PERM);
    CHECK_ERR(ss_store_delete(s, "r05"), SS_ERR_PERM);
    ss_store_close(s);
    char missing[300];
    snprintf(missing, sizeof missing, "%s/not-there", dir);
    ss_store *none = NULL;
    CHECK_ERR(ss_store_open(&none, missing, &p), SS_ERR_NOT_FOUND);
    CHECK(none == NULL);
    struct stat sb;
    CHECK(stat(missing, &sb) != 0);
    /* Created with mode 0700 (parents too) when writable. */
    snprintf(missing, sizeof missing, "%s/new/deeper", dir);
    REQUIRE_OK(ss_store_open(&none, missing, NULL));
    CHECK(stat(missing, &sb) == 0 && (sb.st_mode & 0777) == 0700);
    ss_store_close(none);
    ss_store_close(NULL);
}

/* ---- another process reads while this one writes and grows the map --------------------------- */

static int read_line(int fd, char *out, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        if (c == '\n') break;
        out[n++] = c;
    }
    out[n] = 0;
    return (int)n;
}

static void write_line(int fd, const char *text)
{
    size_t n = strlen(text);
    if (write(fd, text, n) != (ssize_t)n || write(fd, "\n", 1) != 1) perror("write");
}

/* Child: list everything and read every blob back (the seed and size are in the metadata). */
static int child_check_all(ss_store *s, uint64_t *count)
{
    int errors = 0, pages = 0;
    json_t *all = list_all(s, NULL, NULL, 100, &pages);
    *count = json_array_size(all);
    size_t k;
    json_t *r;
    json_array_foreach (all, k, r) {
        json_t *meta = json_object_get(r, "metadata");
        uint64_t seed = (uint64_t)json_integer_value(json_object_get(meta, "seed"));
        size_t len = (size_t)json_integer_value(json_object_get(meta, "len"));
        if (!blob_matches(s, str_field(r, "id"), len, seed)) errors++;
    }
    json_decref(all);
    return errors + test_failures;
}

static void child_reader(const char *dir, int in, int outfd)
{
    ss_store *s = NULL;
    ss_store_params p = ss_store_default_params();
    p.read_only = 1;
    p.initial_map_size = MIB;
    char line[128], reply[128];
    int errors = 0;
    test_failures = 0; /* count this process's checks only */
    if (ss_store_open(&s, dir, &p) != SS_OK) {
        fprintf(stderr, "child: open: %s\n", ss_errmsg());
        write_line(outfd, "fail open");
        _exit(1);
    }
    write_line(outfd, "ready");
    /* Lock-step rounds: "check N" -> "ok <count> <map_size>". */
    while (read_line(in, line, sizeof line) > 0 && strncmp(line, "check", 5) == 0) {
        uint64_t count = 0;
        int e = child_check_all(s, &count);
        errors += e;
        ss_store_stats st = {0};
        if (ss_store_get_stats(s, &st)) errors++;
        snprintf(reply, sizeof reply, "%s %" PRIu64 " %" PRIu64, e ? "fail" : "ok", count,
                 st.map_size);
        write_line(outfd, reply);
    }
    /* Free-running: read everything again and again until the writer says stop. */
    int rounds = 0;
    for (;;) {
        uint64_t count;
        errors += child_check_all(s, &count);
        rounds++;
        struct pollfd pfd = {in, POLLIN, 0};
        if (poll(&pfd, 1, 0) > 0) break; /* "stop" or EOF */
    }
    snprintf(reply, sizeof reply, "%s %d", errors ? "fail" : "done", rounds);
    write_line(outfd, reply);
    ss_store_close(s);
    _exit(errors ? 1 : 0);
}

static void test_reader_process(const char *dir)
{
    ss_store *s = open_store(dir, MIB, 0);
    for (int i = 0; i < 3; i++) REQUIRE_OK(put_state(s, NULL, NULL, 1000, (uint64_t)i, NULL));
    int to_child[2], to_parent[2];
    if (pipe(to_child) || pipe(to_parent)) {
        perror("pipe");
        exit(1);
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        close(to_child[1]);
        close(to_parent[0]);
        child_reader(dir, to_child[0], to_parent[1]);
    }
    close(to_child[0]);
    close(to_parent[1]);
    char line[128];
    read_line(to_parent[0], line, sizeof line);
    CHECK(strcmp(line, "ready") == 0);

    int n = 3, seed = 100;
    uint64_t child_map = 0;
    for (int round = 0; round < 5; round++) {
        /* 1, 2, 4, 8, 16 MiB more each round: far past the reader's map. */
        size_t len = MIB << round;
        REQUIRE_OK(put_state(s, NULL, "[\"ro\"]", len, (uint64_t)seed++, NULL));
        REQUIRE_OK(put_state(s, NULL, NULL, 3 + (size_t)round, (uint64_t)seed++, NULL));
        n += 2;
        write_line(to_child[1], "check");
        read_line(to_parent[0], line, sizeof line);
        uint64_t count = 0;
        char word[16] = "";
        CHECKF(sscanf(line, "%15s %" SCNu64 " %" SCNu64, word, &count, &child_map) == 3 &&
                   strcmp(word, "ok") == 0 && count == (uint64_t)n,
               "round %d: child said '%s', want ok %d", round, line, n);
    }
    ss_store_stats st;
    CHECK_OK(ss_store_get_stats(s, &st));
    /* The reader adopted the grown map (MDB_MAP_RESIZED handled) rather than failing. */
    CHECKF(child_map >= st.file_bytes, "child map %" PRIu64 ", file %" PRIu64, child_map,
           st.file_bytes);
    write_line(to_child[1], "go");
    /* While the child reads in a loop, write more and grow the map again. */
    for (int i = 0; i < 6; i++) {
        REQUIRE_OK(put_state(s, NULL, NULL, 6 * MIB + (size_t)i, (uint64_t)seed++, NULL));
    }
    write_line(to_child[1], "stop");
    read_line(to_parent[0], line, sizeof line);
    CHECKF(strncmp(line, "done", 4) == 0, "child: %s", line);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(to_child[1]);
    close(to_parent[0]);
    ss_store_close(s);
}

/* ---- threads --------------------------------------------------------------------------------- */

typedef struct worker {
    ss_store *s;
    int index;
    int errors;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    char name[32], prev[32] = "", id[36];
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "t%d-%02d", w->index, i);
        size_t len = 50000 + (size_t)((w->index * 20 + i) * 7919 % 350000);
        uint64_t seed = (uint64_t)(w->index * 1000 + i);
        ss_err err = put_state(w->s, name, "[\"thr\"]", len, seed, id);
        if (err) {
            fprintf(stderr, "thread %d: put %s: %s\n", w->index, name, ss_errmsg());
            w->errors++;
            continue;
        }
        if (!blob_matches(w->s, name, len, seed) || !blob_matches(w->s, id, len, seed)) w->errors++;
        char *page = NULL;
        if (ss_store_list(w->s, "thr", NULL, 10, NULL, &page)) w->errors++;
        free(page);
        if (prev[0]) {
            const char *refs[] = {prev, name};
            view_check v = {.n = -1}; /* only counts calls; contents are checked above */
            if (ss_store_view(w->s, refs, 2, MODEL, view_fn, &v) || v.calls != 1) w->errors++;
        }
        snprintf(prev, sizeof prev, "%s", name);
    }
    return NULL;
}

static void test_threads(const char *dir)
{
    ss_store *s = open_store(dir, MIB, 0); /* small: the map grows while readers are busy */
    pthread_t th[4];
    worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){s, i, 0};
        CHECK(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECKF(w[i].errors == 0, "thread %d: %d errors", i, w[i].errors);
    }
    ss_store_stats st;
    CHECK_OK(ss_store_get_stats(s, &st));
    CHECK(st.n_states == 80);
    int pages;
    json_t *all = list_all(s, "thr", NULL, 1000, &pages);
    CHECK(json_array_size(all) == 80);
    json_decref(all);
    uint64_t checked, bad;
    CHECK_OK(ss_store_verify(s, &checked, &bad));
    CHECK(checked == 80 && bad == 0);
    ss_store_close(s);
}

/* ---- a really full disk ---------------------------------------------------------------------- */

/* In a child: a private mount namespace with an 8 MiB tmpfs on dir. 0 = ready, -1 = cannot. */
static int mount_small_tmpfs(const char *dir)
{
    if (unshare(CLONE_NEWNS) != 0) {
        uid_t uid = getuid();
        gid_t gid = getgid();
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return -1;
        char map[64];
        int fd = open("/proc/self/setgroups", O_WRONLY);
        if (fd >= 0) {
            if (write(fd, "deny", 4) != 4) {
                close(fd);
                return -1;
            }
            close(fd);
        }
        snprintf(map, sizeof map, "0 %u 1", (unsigned)uid);
        fd = open("/proc/self/uid_map", O_WRONLY);
        if (fd < 0 || write(fd, map, strlen(map)) < 0) return -1;
        close(fd);
        snprintf(map, sizeof map, "0 %u 1", (unsigned)gid);
        fd = open("/proc/self/gid_map", O_WRONLY);
        if (fd < 0 || write(fd, map, strlen(map)) < 0) return -1;
        close(fd);
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return -1;
    if (mount("ss_test", dir, "tmpfs", 0, "size=8m,mode=0700") != 0) return -1;
    return 0;
}

static int child_disk_full(const char *dir)
{
    test_failures = 0; /* count this process's checks only */
    if (mount_small_tmpfs(dir) != 0) {
        fprintf(stderr, "disk-full test skipped: cannot mount a tmpfs here (%s)\n",
                strerror(errno));
        return 77;
    }
    ss_store *s = open_store(dir, MIB, 0);
    char ids[32][36];
    int n_ok = 0;
    ss_err err = SS_OK;
    for (int i = 0; i < 32; i++) {
        err = put_state(s, NULL, "[\"full\"]", 700 * 1000, (uint64_t)i, ids[n_ok]);
        if (err) break;
        n_ok++;
    }
    CHECK_ERR(err, SS_ERR_FULL);
    fprintf(stderr, "disk full after %d states: %s\n", n_ok, ss_errmsg());
    CHECK(n_ok >= 4 && n_ok < 12);
    /* Consistent: everything acknowledged is there, nothing else. */
    for (int i = 0; i < n_ok; i++) CHECK(blob_matches(s, ids[i], 700 * 1000, (uint64_t)i));
    ss_store_stats st;
    CHECK_OK(ss_store_get_stats(s, &st));
    CHECK(st.n_states == (uint64_t)n_ok && st.blob_bytes == (uint64_t)n_ok * 700 * 1000);
    /* Small writes may still fit; whatever happens the answer is OK or FULL. */
    err = put_state(s, "tiny", NULL, 10, 1, NULL);
    CHECK(err == SS_OK || err == SS_ERR_FULL);
    int tiny = err == SS_OK;
    ss_store_close(s);
    s = open_store(dir, MIB, 0);
    uint64_t checked, bad;
    CHECK_OK(ss_store_verify(s, &checked, &bad));
    CHECK(checked == (uint64_t)(n_ok + tiny) && bad == 0);
    int pages;
    json_t *all = list_all(s, "full", NULL, 100, &pages);
    CHECK(json_array_size(all) == (size_t)n_ok);
    json_decref(all);
    /* Deleting makes room again. */
    CHECK_OK(ss_store_delete(s, ids[0]));
    CHECK_OK(ss_store_delete(s, ids[1]));
    CHECK_OK(put_state(s, NULL, NULL, 700 * 1000, 5, NULL));
    ss_store_close(s);
    return test_failures ? 1 : 0;
}

static void test_disk_full(const char *dir)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) _exit(child_disk_full(dir));
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code == 77)
        printf("test_store: disk-full test skipped (no mount namespace)\n");
    else
        CHECKF(code == 0, "disk-full child exited with %d", code);
}

/*
 * A data.mdb cut to 97 % of its size: the open is refused with SS_ERR_CORRUPT and a message that
 * says what to do, read-write and read-only, instead of a SIGBUS on the first page read past the
 * end of the file.
 */
/* ss_store_remove: a store with states goes, files and folder; a folder that holds something
 * else too keeps that and itself, the store's files still go. */
static void test_remove(const char *dir)
{
    char sub[256], path[300], id[36];
    struct stat st;
    for (int extra = 0; extra < 2; extra++) {
        snprintf(sub, sizeof sub, "%s/s%d", dir, extra);
        ss_store *s = open_store(sub, 0, 0);
        REQUIRE_OK(put_state(s, "r", NULL, MIB, 5, id));
        ss_store_close(s);
        snprintf(path, sizeof path, "%s/keep.txt", sub);
        FILE *f = extra ? fopen(path, "w") : NULL;
        if (f) fclose(f);
        ss_store_remove(sub);
        snprintf(path, sizeof path, "%s/data.mdb", sub);
        CHECK(stat(path, &st) != 0 && errno == ENOENT);
        snprintf(path, sizeof path, "%s/lock.mdb", sub);
        CHECK(stat(path, &st) != 0 && errno == ENOENT);
        CHECKF((stat(sub, &st) == 0) == extra, "%s: %s", sub, extra ? "removed" : "still there");
        snprintf(path, sizeof path, "%s/keep.txt", sub);
        CHECK((stat(path, &st) == 0) == extra);
    }
}

static void test_truncated(const char *dir)
{
    char path[128], id[36];
    struct stat st;
    ss_store *s = open_store(dir, 0, 0);
    for (int i = 0; i < 6; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        REQUIRE_OK(put_state(s, name, NULL, MIB, 60 + (uint64_t)i, id));
    }
    ss_store_close(s);
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (stat(path, &st) != 0 || truncate(path, st.st_size / 100 * 97) != 0) {
        CHECKF(0, "cannot truncate %s", path);
        return;
    }
    ss_store *t = NULL;
    ss_store_params ro = ss_store_default_params();
    ro.read_only = 1;
    CHECK_ERR(ss_store_open(&t, dir, &ro), SS_ERR_CORRUPT);
    CHECK(t == NULL && strstr(ss_errmsg(), "truncated") && strstr(ss_errmsg(), "backup"));
    CHECK_ERR(ss_store_open(&t, dir, NULL), SS_ERR_CORRUPT);
    CHECK(t == NULL);
}

/* ---- retrieval keys ---------------------------------------------------------------------- */

#define KEY_DIM 4
static int key_calls;

/* The test's keyer: the blob's first KEY_DIM floats, normalised; blobs under 64 bytes get none. */
static ss_err test_key(void *user, const void *blob, size_t len, float *key)
{
    (void)user;
    key_calls++;
    if (len < 64) return ss_fail(SS_ERR_MISMATCH, "too short for a key");
    float f[KEY_DIM];
    memcpy(f, blob, sizeof f);
    double ss = 0;
    for (int i = 0; i < KEY_DIM; i++) ss += (double)f[i] * f[i];
    for (int i = 0; i < KEY_DIM; i++) key[i] = (float)(f[i] / sqrt(ss));
    return SS_OK;
}

/* The key test_key gives fill(len, seed), computed here again. */
static void key_of_seed(uint64_t seed, float *key)
{
    unsigned char b[64];
    fill(b, sizeof b, seed);
    test_key(NULL, b, sizeof b, key);
}

static ss_err keys_open(ss_store *s, const char *kind, uint64_t *loaded, uint64_t *computed)
{
    ss_store_keyer k = {.kind = kind, .model = MODEL, .dim = KEY_DIM, .fn = test_key};
    return ss_store_keys_open(s, &k, loaded, computed);
}

/* Search with the key of seed q: the hits must be the states (seeds) in want_seeds' order
 * that the test ranks itself by dot product, with those scores. */
static void check_search(ss_store *s, uint64_t q, int k, const char *tag, const char *prefix,
                         const char *exclude, const uint64_t *seeds, char (*ids)[36], int n)
{
    float qk[KEY_DIM], sk[KEY_DIM];
    key_of_seed(q, qk);
    /* the reference: every candidate's score, then a selection sort of the best k */
    double score[16];
    int order[16];
    for (int i = 0; i < n; i++) {
        key_of_seed(seeds[i], sk);
        score[i] = 0;
        for (int d = 0; d < KEY_DIM; d++) score[i] += (double)qk[d] * sk[d];
        order[i] = i;
    }
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (score[order[j]] > score[order[i]]) {
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    ss_store_hit hits[16];
    int got = -1;
    ss_store_query sq = {.key = qk, .dim = KEY_DIM, .k = k, .tag = tag, .prefix = prefix,
                         .exclude_tag = exclude};
    CHECK_OK(ss_store_search(s, &sq, hits, &got));
    int want = n < k ? n : k;
    CHECKF(got == want, "%d hits, want %d", got, want);
    for (int i = 0; i < got && i < want; i++) {
        CHECKF(!strcmp(hits[i].id, ids[order[i]]), "hit %d is %s, want %s", i, hits[i].id,
               ids[order[i]]);
        CHECKF(fabs(hits[i].score - score[order[i]]) < 1e-6, "hit %d scores %g, want %g", i,
               hits[i].score, score[order[i]]);
    }
}

/*
 * Keys are computed for states stored before the keyer was set, stored with every new state in
 * its transaction, kept across a reopen (loaded, not computed again), redone for another kind,
 * removed with their state; search ranks by the dot product the test computes itself, with the
 * tag / prefix / exclusion filters; bad queries are refused.
 */
static void test_keys(const char *dir)
{
    ss_store *s = open_store(dir, 0, 0);
    char ids[8][36];
    uint64_t seeds[8] = {11, 12, 13, 14, 15, 16, 17, 18};
    float qk[KEY_DIM];
    key_of_seed(1, qk);
    ss_store_hit hits[8];
    int n = -1;
    ss_store_query q = {.key = qk, .dim = KEY_DIM, .k = 3};
    CHECK_ERR(ss_store_search(s, &q, hits, &n), SS_ERR_UNSUPPORTED); /* no keyer yet */
    /* two states before the keyer, one of another model, one too short to have a key */
    REQUIRE_OK(put_state(s, "k0", "[\"even\"]", 4096, seeds[0], ids[0]));
    REQUIRE_OK(put_state(s, "k1", NULL, 4096, seeds[1], ids[1]));
    char *other = rec_json("other", NULL, "another_model", 3, 4096);
    unsigned char blob[4096];
    fill(blob, sizeof blob, 3);
    REQUIRE_OK(ss_store_put(s, other, blob, sizeof blob, NULL));
    free(other);
    REQUIRE_OK(put_state(s, "short", NULL, 16, 4, NULL));
    uint64_t loaded = 9, computed = 9;
    key_calls = 0;
    REQUIRE_OK(keys_open(s, "first4", &loaded, &computed));
    CHECK(loaded == 0 && computed == 2 && key_calls == 3);
    CHECK(ss_store_keys_dim(s) == KEY_DIM);
    /* an empty result is not an error: nothing is tagged "none" */
    q.tag = "none";
    CHECK_OK(ss_store_search(s, &q, hits, &n));
    CHECK(n == 0);
    q.tag = NULL;
    /* new states get their key in the put */
    for (int i = 2; i < 6; i++) {
        char name[16];
        snprintf(name, sizeof name, "k%d", i);
        REQUIRE_OK(put_state(s, name, i % 2 ? NULL : "[\"even\"]", 4096, seeds[i], ids[i]));
    }
    uint64_t nk = 0, bytes = 0;
    CHECK_OK(ss_store_keys_stats(s, &nk, &bytes));
    CHECK(nk == 6 && bytes >= 6 * KEY_DIM * sizeof(float));
    check_search(s, 1, 3, NULL, NULL, NULL, seeds, ids, 6);
    check_search(s, 2, 6, NULL, NULL, NULL, seeds, ids, 6);
    check_search(s, 2, 100, NULL, NULL, NULL, seeds, ids, 6);
    uint64_t even[3] = {seeds[0], seeds[2], seeds[4]};
    char even_ids[3][36];
    memcpy(even_ids[0], ids[0], 36), memcpy(even_ids[1], ids[2], 36),
        memcpy(even_ids[2], ids[4], 36);
    check_search(s, 5, 5, "even", NULL, NULL, even, even_ids, 3);
    uint64_t odd[3] = {seeds[1], seeds[3], seeds[5]};
    char odd_ids[3][36];
    memcpy(odd_ids[0], ids[1], 36), memcpy(odd_ids[1], ids[3], 36), memcpy(odd_ids[2], ids[5], 36);
    check_search(s, 5, 5, NULL, NULL, "even", odd, odd_ids, 3);
    check_search(s, 5, 5, NULL, "k3", NULL, &seeds[3], &ids[3], 1);
    /* a state's own key scores 1 */
    key_of_seed(seeds[3], qk);
    q.k = 1;
    CHECK_OK(ss_store_search(s, &q, hits, &n));
    CHECK(n == 1 && !strcmp(hits[0].id, ids[3]) && fabs(hits[0].score - 1) < 1e-6);
    /* bad queries */
    q.k = 0;
    CHECK_ERR(ss_store_search(s, &q, hits, &n), SS_ERR_INVALID);
    q.k = SS_STORE_SEARCH_MAX + 1;
    CHECK_ERR(ss_store_search(s, &q, hits, &n), SS_ERR_INVALID);
    q.k = 1;
    q.dim = KEY_DIM + 1;
    CHECK_ERR(ss_store_search(s, &q, hits, &n), SS_ERR_MISMATCH);
    q.dim = KEY_DIM;
    /* a delete removes the key too */
    CHECK_OK(ss_store_delete(s, "k3"));
    uint64_t s5[5] = {seeds[0], seeds[1], seeds[2], seeds[4], seeds[5]};
    char i5[5][36];
    memcpy(i5[0], ids[0], 36), memcpy(i5[1], ids[1], 36), memcpy(i5[2], ids[2], 36);
    memcpy(i5[3], ids[4], 36), memcpy(i5[4], ids[5], 36);
    check_search(s, 3, 8, NULL, NULL, NULL, s5, i5, 5);
    CHECK_ERR(keys_open(s, "first4", NULL, NULL), SS_ERR_EXISTS);
    ss_store_close(s);

    /* reopened: every key is loaded from the catalog, none computed again */
    s = open_store(dir, 0, 0);
    key_calls = 0;
    REQUIRE_OK(keys_open(s, "first4", &loaded, &computed));
    CHECK(loaded == 5 && computed == 0 && key_calls == 1); /* "short" is tried again */
    check_search(s, 3, 8, NULL, NULL, NULL, s5, i5, 5);
    ss_store_close(s);

    /* states stored without a keyer (another tool) get theirs at the next open */
    s = open_store(dir, 0, 0);
    char id6[36];
    REQUIRE_OK(put_state(s, "k6", NULL, 4096, seeds[6], id6));
    ss_store_close(s);
    s = open_store(dir, 0, 0);
    REQUIRE_OK(keys_open(s, "first4", &loaded, &computed));
    CHECK(loaded == 5 && computed == 1);
    ss_store_close(s);
    /* another kind: every key is computed again */
    s = open_store(dir, 0, 0);
    REQUIRE_OK(keys_open(s, "other-kind", &loaded, &computed));
    CHECK(loaded == 0 && computed == 6);
    ss_store_close(s);
}

/*
 * The in-memory index under churn: 3,000 states, every other one deleted in a scattered order
 * (rows move, the id table shifts entries back), then 500 more: each state left is found by its
 * name with its own key (score 1), the deleted ones are not, and the count is right, also after
 * a reopen.
 */
static void test_keys_churn(const char *dir)
{
    ss_store_params p = ss_store_default_params();
    p.no_sync = 1; /* a throwaway store: thousands of puts in seconds */
    ss_store *s = NULL;
    REQUIRE_OK(ss_store_open(&s, dir, &p));
    REQUIRE_OK(keys_open(s, "first4", NULL, NULL));
    enum { N = 3000, MORE = 500 };
    static char ids[N + MORE][36];
    static int gone[N + MORE];
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "c-%05d", i);
        REQUIRE_OK(put_state(s, name, NULL, 64, 1000 + (uint64_t)i, ids[i]));
    }
    for (int k = 0; k < N / 2; k++) {
        int i = (int)((uint64_t)k * 7919 % N); /* a permutation of 0..N-1: 7919 is prime */
        if (gone[i]) continue;
        CHECK_OK(ss_store_delete(s, ids[i]));
        gone[i] = 1;
    }
    for (int i = N; i < N + MORE; i++) {
        char name[16];
        snprintf(name, sizeof name, "c-%05d", i);
        REQUIRE_OK(put_state(s, name, NULL, 64, 1000 + (uint64_t)i, ids[i]));
    }
    for (int pass = 0; pass < 2; pass++) {
        int left = 0, wrong = 0;
        for (int i = 0; i < N + MORE; i++) {
            char name[16];
            snprintf(name, sizeof name, "c-%05d", i);
            float qk[KEY_DIM];
            key_of_seed(1000 + (uint64_t)i, qk);
            ss_store_hit hits[2];
            int n = -1;
            ss_store_query q = {.key = qk, .dim = KEY_DIM, .k = 2, .prefix = name};
            CHECK_OK(ss_store_search(s, &q, hits, &n));
            left += !gone[i];
            if (gone[i] ? n != 0
                        : n != 1 || strcmp(hits[0].id, ids[i]) || fabs(hits[0].score - 1) > 1e-6)
                wrong++;
        }
        uint64_t nk = 0;
        CHECK_OK(ss_store_keys_stats(s, &nk, NULL));
        CHECKF(wrong == 0 && nk == (uint64_t)left, "pass %d: %d states wrong, %llu keys for %d",
               pass, wrong, (unsigned long long)nk, left);
        ss_store_close(s);
        s = NULL;
        if (pass == 0) {
            REQUIRE_OK(ss_store_open(&s, dir, &p));
            uint64_t loaded = 0, computed = 0;
            REQUIRE_OK(keys_open(s, "first4", &loaded, &computed));
            CHECK(loaded == (uint64_t)left && computed == 0);
        }
    }
}

/* Store a state with parents [{id, weight}] given as JSON; its id to id_out (36 bytes). */
static void put_child(ss_store *s, const char *name, const char *parents_json, char *id_out)
{
    char *rec = NULL, *out = NULL;
    unsigned char blob[64];
    fill(blob, sizeof blob, 99);
    if (asprintf(&rec,
                 "{\"name\": \"%s\", \"model\": \"%s\", \"n_tokens\": 1, \"dtype\": \"f32\", "
                 "\"parents\": %s}",
                 name, MODEL, parents_json) < 0)
        exit(1);
    REQUIRE_OK(ss_store_put(s, rec, blob, sizeof blob, &out));
    json_t *j = parse(out);
    snprintf(id_out, 36, "%s", str_field(j, "id"));
    json_decref(j);
    free(out);
    free(rec);
}

/* The children of id as one string of ids joined by ' ' (SS_OK expected). */
static void children_of(ss_store *s, const char *id, char *out, size_t cap)
{
    char *ids = NULL;
    int n = -1;
    out[0] = '\0';
    CHECK_OK(ss_store_children(s, id, &ids, &n));
    for (int i = 0; i < n; i++) {
        if (i) strncat(out, " ", cap - strlen(out) - 1);
        strncat(out, ids + (size_t)i * 36, cap - strlen(out) - 1);
    }
    free(ids);
}

/*
 * The children index: children newest first, a parent listed twice indexed once, deletes
 * (also of a damaged record) remove their entries; a store from before the index (its database
 * and mark removed behind the store's back) has none read-only and is indexed at its first
 * writable open.
 */
static void test_children(const char *dir)
{
    char p1[36], p2[36], c1[36], c2[36], c3[36], c4[36], parents[256], got[256], want[256];
    ss_store *s = open_store(dir, 0, 0);
    REQUIRE_OK(put_state(s, "p1", NULL, 64, 1, p1));
    REQUIRE_OK(put_state(s, "p2", NULL, 64, 2, p2));
    snprintf(parents, sizeof parents, "[{\"id\": \"%s\", \"weight\": 0.5}, {\"id\": \"%s\", "
             "\"weight\": 0.5}]", p1, p2);
    put_child(s, "c1", parents, c1);
    snprintf(parents, sizeof parents, "[{\"id\": \"%s\", \"weight\": 1}, {\"id\": \"%s\", "
             "\"weight\": 2}]", p1, p1);
    put_child(s, "c2", parents, c2);
    snprintf(parents, sizeof parents, "[{\"id\": \"%s\", \"weight\": 1}]", c1);
    put_child(s, "c3", parents, c3);
    children_of(s, p1, got, sizeof got);
    snprintf(want, sizeof want, "%s %s", c2, c1);
    CHECKF(!strcmp(got, want), "children of p1: '%s', want '%s'", got, want);
    children_of(s, p2, got, sizeof got);
    CHECKF(!strcmp(got, c1), "children of p2: '%s'", got);
    children_of(s, c1, got, sizeof got);
    CHECKF(!strcmp(got, c3), "children of c1: '%s'", got);
    children_of(s, c3, got, sizeof got);
    CHECK(got[0] == '\0');
    children_of(s, "st_00000000000000000000000000000000", got, sizeof got);
    CHECK(got[0] == '\0');
    CHECK_OK(ss_store_delete(s, "c1"));
    children_of(s, p1, got, sizeof got);
    CHECKF(!strcmp(got, c2), "children of p1 after deleting c1: '%s'", got);
    children_of(s, p2, got, sizeof got);
    CHECKF(got[0] == '\0', "children of p2 after deleting c1: '%s'", got);
    snprintf(parents, sizeof parents, "[{\"id\": \"%s\", \"weight\": 1}]", p2);
    put_child(s, "c4", parents, c4);
    ss_store_close(s);

    /* a damaged record is deleted with its entries (found by scanning) */
    CHECK(damage_record(dir, c2, 8 + 9 + 20) == 0);
    s = open_store(dir, 0, 0);
    CHECK_OK(ss_store_delete(s, c2));
    children_of(s, p1, got, sizeof got);
    CHECKF(got[0] == '\0', "children of p1 after deleting the damaged c2: '%s'", got);
    ss_store_close(s);

    /* a store from before the index */
    raw_db r;
    int rc = raw_open(&r, dir, "children");
    if (!rc) rc = mdb_drop(r.txn, r.dbi, 1);
    if (!rc) rc = mdb_dbi_open(r.txn, "meta", 0, &r.dbi);
    MDB_val key = {14, "children_index"};
    if (!rc) rc = mdb_del(r.txn, r.dbi, &key, NULL);
    CHECK(raw_close(&r, rc, "removing the children index") == 0);
    ss_store_params ro = ss_store_default_params();
    ro.read_only = 1;
    REQUIRE_OK(ss_store_open(&s, dir, &ro));
    char *ids = NULL;
    int n = -1;
    CHECK_ERR(ss_store_children(s, p2, &ids, &n), SS_ERR_UNSUPPORTED);
    CHECK(strstr(ss_errmsg(), "for writing") != NULL);
    ss_store_close(s);
    s = open_store(dir, 0, 0);
    children_of(s, p2, got, sizeof got);
    CHECKF(!strcmp(got, c4), "children of p2 after indexing an old store: '%s'", got);
    children_of(s, p1, got, sizeof got);
    CHECK(got[0] == '\0');
    ss_store_close(s);
    REQUIRE_OK(ss_store_open(&s, dir, &ro));
    children_of(s, p2, got, sizeof got);
    CHECKF(!strcmp(got, c4), "read-only, once indexed: '%s'", got);
    ss_store_close(s);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(const char *dir);
    } tests[] = {
        {"roundtrip", test_roundtrip},   {"invalid", test_invalid_records},
        {"names", test_names},           {"list", test_list},
        {"delete", test_delete},         {"view", test_view_and_models},
        {"corruption", test_corruption}, {"growth", test_growth},
        {"map_limit", test_map_limit},   {"reopen", test_reopen},
        {"reader", test_reader_process}, {"threads", test_threads},
        {"disk_full", test_disk_full},   {"view_chunks", test_view_chunks},
        {"truncated", test_truncated},   {"record_sum", test_record_checksum},
        {"keys", test_keys},             {"keys_churn", test_keys_churn},
        {"children", test_children},     {"remove", test_remove},
    };
    test_validation();
    test_hash_kernels();
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        char dir[64];
        test_tmpdir(dir, sizeof dir, "store");
        int before = test_failures;
        tests[i].fn(dir);
        test_rm_rf(dir);
        printf("%-12s %s\n", tests[i].name, test_failures == before ? "ok" : "FAILED");
        fflush(stdout);
    }
    return test_done("test_store");
}
