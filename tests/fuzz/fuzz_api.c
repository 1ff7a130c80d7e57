/*
 * fuzz_api.c - libFuzzer target: a request body into the API's request parsing (api/internal.h):
 * the body check of api_body (relaxed JSON, an object), the optional-field readers
 * (api_get_int / _real / _bool / _string over the keys the endpoints read), the prompt
 * (api_tokens: text through the tokenizer or an array of ids), name / tags / metadata of a state
 * to save (api_save_parse), the starting state of generate / score (api_start_resolve: "state"
 * or an on-the-fly "merge") and the sources of POST /v1/states/merge (api_merge).
 *
 * Against the mamba1-tiny fixture model (vocabulary 512) with the demo tokenizer
 * (models/demo-mamba1, 4,097 ids: text beyond the model's vocabulary is a clean 422 path) and a
 * scratch store holding two named states, "alpha" and "beta" (seeds refer to them).
 * Properties: no crash, read outside a buffer, undefined arithmetic or leak, whatever the body;
 * on failure each parser leaves its outputs empty; on success: prompt ids are in [0, 512),
 * a parsed save has a valid free name (or none), tags that are valid tag strings and an object
 * of metadata; a resolved start has a state exactly when one was asked for, with one parent per
 * source; merge parents name every source; a search (k, tag, prefix, and a query {"state"})
 * gives at most k hits with scores in [-1, 1], best first.
 */
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "infer.h"
#include "ss_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ss_model *model;
static ss_tokenizer *tok;
static ss_store *store;
static ss_api *api;
static char store_dir[32];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    return remove(path);
}

static void cleanup(void)
{
    ss_api_free(api);
    ss_store_close(store);
    ss_tokenizer_close(tok);
    ss_model_close(model);
    if (store_dir[0]) nftw(store_dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static void die(const char *what)
{
    fprintf(stderr, "fuzz_api: %s: %s\n", what, ss_errmsg());
    exit(1);
}

/* A stored state named `name` whose values are small and finite. */
static void put_state(const char *name, float scale)
{
    const ss_model_info *in = ss_model_get_info(model);
    float *d = malloc(in->state_bytes);
    if (!d) die("out of memory");
    for (size_t i = 0; i < in->state_floats; i++) d[i] = scale * (float)((int)(i % 7) - 3);
    api_save s = {.name = strdup(name), .tags = json_pack("[s]", "seed"), .metadata = json_object()};
    char *rec = NULL;
    if (api_save_state(api, &s, d, 3, NULL, &rec) != SS_OK) die("storing a seed state");
    free(rec);
    api_save_free(&s);
    free(d);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char path[4096];
    ss_model_params mp = {.n_threads = 1};
    if (ss_model_open(&model, fuzz_src_path("tests/fixtures/models/mamba1-tiny", path, sizeof path),
                      &mp))
        die(path);
    if (ss_tokenizer_open(&tok, fuzz_src_path("models/demo-mamba1/tokenizer.json", path,
                                              sizeof path)))
        die(path);
    snprintf(store_dir, sizeof store_dir, "/tmp/ss-fuzz-api-XXXXXX");
    if (!mkdtemp(store_dir)) die("mkdtemp");
    atexit(cleanup);
    ss_store_params sp = ss_store_default_params();
    sp.initial_map_size = 8u << 20;
    if (ss_store_open(&store, store_dir, &sp)) die(store_dir);
    ss_api_params ap = {.max_body = 1 << 20, .max_tokens = 256, .model_name = "mamba1-tiny"};
    if (ss_api_new(&api, &ap)) die("ss_api_new");
    ss_api_attach(api, model, tok, store, NULL);
    put_state("alpha", 0.5f);
    put_state("beta", -2.0f);
    return 0;
}

/* The optional fields the endpoints read (docs/api.md), through the typed readers. */
static void fields(json_t *body)
{
    static const char *const ints[] = {"max_tokens", "n", "top_k", "seed", "logprobs",
                                       "top_logprobs", "best_of", "min_tokens"};
    static const char *const reals[] = {"temperature", "top_p", "min_p", "repetition_penalty",
                                        "presence_penalty", "frequency_penalty"};
    static const char *const bools[] = {"stream", "save_state", "normalize", "echo",
                                        "skip_special_tokens", "ignore_eos"};
    static const char *const strs[] = {"name", "model", "state", "from", "stop"};
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
        long long v = -7;
        ss_err e = api_get_int(body, ints[i], -7, &v);
        json_t *j = json_object_get(body, ints[i]);
        if (!e && json_is_integer(j))
            FUZZ_CHECK(v == json_integer_value(j), "%s read as %lld", ints[i], v);
    }
    for (size_t i = 0; i < sizeof reals / sizeof *reals; i++) {
        double v = 0.25;
        if (api_get_real(body, reals[i], 0.25, &v) == SS_OK)
            FUZZ_CHECK(isfinite(v), "%s read as %g", reals[i], v);
    }
    for (size_t i = 0; i < sizeof bools / sizeof *bools; i++) {
        int v = 2;
        if (api_get_bool(body, bools[i], 2, &v) == SS_OK && json_object_get(body, bools[i]) &&
            !json_is_null(json_object_get(body, bools[i])))
            FUZZ_CHECK(v == 0 || v == 1, "%s read as %d", bools[i], v);
    }
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) {
        const char *v = "x";
        if (api_get_string(body, strs[i], &v) != SS_OK) FUZZ_CHECK(v == NULL, "%s", strs[i]);
    }
}

static void prompt(json_t *body, const char *key)
{
    json_t *v = json_object_get(body, key);
    if (!v) return;
    int32_t *ids = (int32_t *)1;
    int n = -1;
    ss_err e = api_tokens(api, v, key, &ids, &n);
    if (e) {
        FUZZ_CHECK(ids == NULL && n == 0, "failed api_tokens left output");
        return;
    }
    FUZZ_CHECK(n >= 0 && (n == 0 || ids), "%d ids", n);
    for (int i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < 512, "id %d", ids[i]);
    free(ids);
}

static void save(json_t *body)
{
    api_save s;
    if (api_save_parse(api, NULL, body, &s) != SS_OK) {
        FUZZ_CHECK(!s.name && !s.tags && !s.metadata, "failed api_save_parse left output");
        return;
    }
    FUZZ_CHECK(json_is_array(s.tags) && json_is_object(s.metadata), "tags / metadata types");
    size_t i;
    json_t *t;
    json_array_foreach(s.tags, i, t)
        FUZZ_CHECK(json_is_string(t) && ss_store_check_tag(json_string_value(t)) == SS_OK,
                   "tag %zu", i);
    if (s.name) {
        char *rec = NULL;
        FUZZ_CHECK(ss_store_check_name(s.name) == SS_OK, "name %s", s.name);
        FUZZ_CHECK(ss_store_get_record(store, s.name, &rec) != SS_OK, "name %s is taken", s.name);
        free(rec);
    }
    api_save_free(&s);
}

static void start(json_t *body, const char *key, int allow_merge)
{
    api_start st;
    json_t *sv = json_object_get(body, key), *mv = json_object_get(body, "merge");
    int asked = (sv && !json_is_null(sv)) || (allow_merge && mv && !json_is_null(mv));
    if (api_start_resolve(api, NULL, body, key, allow_merge, &st) != SS_OK) {
        FUZZ_CHECK(!st.st && !st.parents, "failed api_start_resolve left output");
        return;
    }
    FUZZ_CHECK(!st.st == !asked, "a state %s, but %s asked for", st.st ? "came" : "did not come",
               asked ? "one was" : "none was");
    if (st.st) {
        size_t want = sv && !json_is_null(sv) ? 1 : json_array_size(mv);
        FUZZ_CHECK(json_array_size(st.parents) == want && st.n_tokens == 3,
                   "%zu parents for %zu sources, n_tokens %lld", json_array_size(st.parents),
                   want, st.n_tokens);
    }
    api_start_free(&st);
}

static void merge(json_t *body)
{
    json_t *src = json_object_get(body, "sources");
    if (!src) return;
    int norm = 0;
    if (api_get_bool(body, "normalize", 0, &norm) != SS_OK) return;
    ss_state *dst = NULL;
    if (ss_state_new(model, &dst) != SS_OK) return;
    json_t *parents = NULL;
    long long nt = -1;
    if (api_merge(api, NULL, src, norm, dst, &parents, &nt) == SS_OK)
        FUZZ_CHECK(json_array_size(parents) == json_array_size(src) && nt == 3,
                   "%zu parents for %zu sources", json_array_size(parents), json_array_size(src));
    else
        FUZZ_CHECK(parents == NULL, "failed api_merge set parents");
    json_decref(parents);
    ss_state_free(dst);
}

/* POST /v1/states/search's fields, then a search from a stored state's key when the query is
 * {"state": name}. */
static void search(json_t *body)
{
    api_search s;
    if (api_search_parse(api, NULL, body, "", 5, &s) != SS_OK) return;
    FUZZ_CHECK(s.k >= 1 && s.k <= SS_STORE_SEARCH_MAX, "k %d", s.k);
    const char *ref = json_string_value(json_object_get(json_object_get(body, "query"), "state"));
    ss_state *st = NULL;
    json_t *data = NULL;
    if (ref && ss_state_new(model, &st) == SS_OK && api_load_state(api, NULL, ref, st, NULL) == SS_OK &&
        api_search_run(api, &s, ss_state_cdata(st), &data) == SS_OK) {
        size_t i;
        json_t *h;
        double prev = 2;
        FUZZ_CHECK(json_array_size(data) <= (size_t)s.k, "%zu hits for k %d",
                   json_array_size(data), s.k);
        json_array_foreach (data, i, h) {
            double sc = json_number_value(json_object_get(h, "score"));
            FUZZ_CHECK(sc >= -1.0001 && sc <= 1.0001 && sc <= prev, "hit %zu scores %g", i, sc);
            prev = sc;
        }
    }
    json_decref(data);
    ss_state_free(st);
    api_search_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *body = NULL;
    /* what api_body does with a request's bytes */
    if (!size || ss_json_parse_relaxed((const char *)data, size, "request body", &body)) return 0;
    if (!json_is_object(body)) {
        json_decref(body);
        return 0;
    }
    fields(body);
    prompt(body, "prompt");
    prompt(body, "text");
    save(body);
    start(body, "state", 1);
    start(body, "from", 0);
    merge(body);
    search(body);
    json_decref(body);
    return 0;
}
