/*
 * test_families.c - every model family of docs/model-format.md through the real daemon, against
 * its fixture, with nothing but HTTP (libcurl) and token ids (no tokenizer).
 *
 * For mamba2-tiny, mamba2-groups, moe-mamba-switch, moe-mamba-finegrained and
 * moe-mamba-blackmamba-like: /v1/models (family, MoE routing, total and active parameters counted
 * from the checkpoint's tensors), the states after seq a, b, c, q (conv, ssm, final_hidden),
 * greedy12 from seq_a's state with an empty prompt, every merge case of cases.json stored and on
 * the fly (the merged state, seq_q's log-probabilities against log_softmax of the golden query
 * logits, greedy8 after seq_q), export -> import bit-exact, resume ("from" equals one long run),
 * and the batch forms running independent members (different lengths are fine for these models).
 *
 * For moe-mamba-mot (Mixture of Tokens): a batch of batch.ids in one request is stepped in
 * lockstep: the batch score form gives batch.logits, the batch state form batch.state.*, the batch
 * generation forms start with the argmax of the last batch logits; a single request gives
 * single.logits; concurrent single requests are never mixed (each equals its result alone);
 * unequal lengths inside a group are refused (422); its states merge, export and resume like any.
 *
 * The worst error per family is printed. Nothing sleeps: the daemon is waited for on its log.
 */
#include <sys/mman.h>
#include <sys/stat.h>

#include "daemon.h"
#include "golden.h"
#include "safetensors.h"
#include "ss_model.h"
#include "test_util.h"

#define LP_TOL    4e-3 /* log-probabilities through the API (as test_api's Mamba-1 checks) */
#define STATE_TOL 1e-3

static char tmp_root[256];
static golden G;
static int V;

/* Worst errors seen for the current model, printed at its end. */
static double worst_state, worst_lp;

static void note(double *worst, double e)
{
    if (!(e <= *worst)) *worst = e;
}

static const int32_t *ids_of(const char *name, size_t *n)
{
    return gt(&G, name, n);
}

/* log_softmax(row)[id] - got, as |difference|. */
static double lp_err(const float *row, int32_t id, double got)
{
    return fabs(ss_logprob_of(row, V, id) - got);
}

/* Compare an exported tensor with n floats of a golden array; returns the max abs difference. */
static double tensor_err(const uint8_t *file, size_t len, const char *tname, const float *want,
                         size_t n)
{
    st_file f;
    double e = INFINITY;
    if (st_parse(&f, file, len, "export") != SS_OK) return e;
    const st_tensor *t = st_find(&f, tname);
    if (t && t->dtype == ST_F32 && t->n_elem == n) {
        float *got = malloc(n * sizeof(float));
        memcpy(got, t->data, n * sizeof(float));
        e = max_abs_diff(got, want, n);
        free(got);
    }
    st_free(&f);
    return e;
}

/* Export state `ref` and compare its tensors with the golden `prefix`.{state.conv,state.ssm,
 * final_hidden} (those the fixture has). */
static void check_state(srv *d, const char *ref, const char *prefix)
{
    size_t len;
    long st;
    uint8_t *f = get_data(d, ref, NULL, &len, &st);
    CHECKF(f, "export %s: %ld", ref, st);
    if (!f) return;
    static const char *const parts[][2] = {
        {"conv", "state.conv"}, {"ssm", "state.ssm"}, {"final_hidden", "final_hidden"}};
    for (int i = 0; i < 3; i++) {
        char gname[96];
        snprintf(gname, sizeof gname, "%s.%s", prefix, parts[i][1]);
        if (!has_gt(&G, gname)) continue;
        size_t n;
        const float *want = gt(&G, gname, &n);
        double e = tensor_err(f, len, parts[i][0], want, n);
        note(&worst_state, e);
        CHECKF(e <= STATE_TOL, "%s: %s vs golden %s off by %.3g", ref, parts[i][0], gname, e);
    }
    free(f);
}

/* ---- /v1/models against the checkpoint ------------------------------------------------------ */

typedef struct param_count {
    uint64_t total;
    uint64_t expert[64]; /* per layer: elements of all its experts */
    int n_experts[64];   /* per layer: experts seen */
} param_count;

/* Count the checkpoint's parameters (one model.safetensors) by tensor, independently of the
 * runtime: all elements, and the expert weights of each MoE layer. */
static void count_params(const char *dir, param_count *pc)
{
    memset(pc, 0, sizeof *pc);
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int fd = open(path, O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        CHECKF(0, "cannot open %s", path);
        if (fd >= 0) close(fd);
        return;
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    st_file f;
    REQUIRE_OK(st_parse(&f, map, (size_t)sb.st_size, path));
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        pc->total += t->n_elem;
        int layer, e, used = 0;
        if (sscanf(t->name, "backbone.layers.%d.moe.experts.%d.%n", &layer, &e, &used) == 2 &&
            used > 0 && layer >= 0 && layer < 64) {
            pc->expert[layer] += t->n_elem;
            if (e + 1 > pc->n_experts[layer]) pc->n_experts[layer] = e + 1;
        }
    }
    st_free(&f);
    munmap(map, (size_t)sb.st_size);
}

static void check_models(srv *d, const char *dir, const char *family, const char *variant)
{
    long st;
    json_t *j = call(d, "GET", "/v1/models", NULL, &st);
    json_t *m = json_array_get(json_object_get(j, "data"), 0);
    CHECK(st == 200 && m);
    const char *fam = json_string_value(json_object_get(m, "family"));
    CHECKF(fam && !strcmp(fam, family), "%s: family %s, want %s", dir, fam ? fam : "(none)",
           family);
    char path[1024], *text = NULL;
    size_t tlen;
    json_t *cfg = NULL;
    snprintf(path, sizeof path, "%s/config.json", dir);
    REQUIRE_OK(ss_read_file(path, 1 << 20, &text, &tlen));
    REQUIRE_OK(ss_json_parse_relaxed(text, tlen, path, &cfg));
    free(text);
    const char *arch = json_string_value(json_array_get(json_object_get(cfg, "architectures"), 0));
    CHECK(arch && jstr_is(json_object_get(m, "architecture"), arch));
    CHECK(json_integer_value(json_object_get(m, "vocab_size")) == V);

    param_count pc;
    count_params(dir, &pc);
    json_t *moe = json_object_get(m, "moe");
    json_t *mc = json_object_get(cfg, "moe");
    uint64_t active = pc.total;
    if (mc) {
        const char *routing = json_string_value(json_object_get(mc, "routing"));
        int E = (int)json_integer_value(json_object_get(mc, "num_experts"));
        int tc = !strcmp(routing, "token_choice");
        int k = tc ? (int)json_integer_value(json_object_get(mc, "num_experts_per_tok")) : E;
        int n_moe = 0;
        for (int l = 0; l < 64; l++) {
            if (!pc.n_experts[l]) continue;
            n_moe++;
            CHECK(pc.n_experts[l] == E);
            active -= pc.expert[l] / (uint64_t)E * (uint64_t)(E - k); /* experts not routed to */
        }
        CHECK(json_is_object(moe));
        CHECK(jstr_is(json_object_get(moe, "routing"), routing));
        const char *v = json_string_value(json_object_get(moe, "variant"));
        CHECKF(v && !strcmp(v, variant), "%s: variant %s, want %s", dir, v ? v : "(none)", variant);
        CHECK(json_integer_value(json_object_get(moe, "num_experts")) == E);
        CHECK(json_integer_value(json_object_get(moe, "experts_per_token")) == k);
        CHECK(json_integer_value(json_object_get(moe, "n_moe_layers")) == n_moe);
        if (tc)
            CHECK(json_equal(json_object_get(moe, "router_activation"),
                             json_object_get(mc, "router_activation")));
        /* fine-grained: G and the expansion rate E / G (the fixture: 32 experts, G 4 -> 8) */
        json_int_t gr = json_integer_value(json_object_get(mc, "granularity"));
        if (tc && gr > 0) {
            CHECK(json_integer_value(json_object_get(moe, "granularity")) == gr);
            CHECK(json_real_value(json_object_get(moe, "expansion")) == (double)E / gr);
            CHECK(json_real_value(json_object_get(moe, "expansion")) ==
                  json_number_value(json_object_get(mc, "expansion_rate")));
        } else {
            CHECK(!json_object_get(moe, "granularity") && !json_object_get(moe, "expansion"));
        }
        if (!tc)
            CHECK(json_integer_value(json_object_get(moe, "group_size")) ==
                  json_integer_value(json_object_get(mc, "group_size")));
    } else {
        CHECK(json_is_null(moe));
    }
    json_int_t np = json_integer_value(json_object_get(m, "n_params"));
    json_int_t na = json_integer_value(json_object_get(m, "n_active_params"));
    CHECKF(np == (json_int_t)pc.total && na == (json_int_t)active,
           "%s: n_params %lld / active %lld, the checkpoint has %llu / %llu", dir, (long long)np,
           (long long)na, (unsigned long long)pc.total, (unsigned long long)active);
    json_decref(cfg);
    json_decref(j);
}

/* ---- families with the seq / merge golden ------------------------------------------------- */

static const char *const seqs[] = {"a", "b", "c", "q"};

/* Score q (context q[0], continuation q[1:]) from `start` (a "state" or a "merge" value). */
static void score_q(srv *d, const char *key, json_t *start, const float *ql, const char *what)
{
    size_t qn;
    const int32_t *q = ids_of("seq_q.ids", &qn);
    long st;
    json_t *b = json_pack("{s:[i],s:o,s:O}", "context", q[0], "continuation",
                          ids_json(q + 1, qn - 1), key, start);
    json_t *j = call(d, "POST", "/v1/score", b, &st);
    json_t *lps = json_object_get(j, "token_logprobs");
    CHECKF(st == 200 && json_array_size(lps) == qn - 1, "score %s: %ld", what, st);
    double worst = 0;
    for (size_t i = 1; i < qn && json_array_size(lps) == qn - 1; i++)
        note(&worst,
             lp_err(ql + (i - 1) * (size_t)V, q[i], json_number_value(json_array_get(lps, i - 1))));
    note(&worst_lp, worst);
    CHECKF(worst < LP_TOL, "%s: seq_q log-probs off by %.3g", what, worst);
    json_decref(j);
}

static void greedy_q(srv *d, const char *key, json_t *start, const int32_t *g8, size_t n8,
                     const char *what)
{
    size_t qn;
    const int32_t *q = ids_of("seq_q.ids", &qn);
    long st;
    json_t *b = json_pack("{s:o,s:I,s:f,s:b,s:O}", "prompt", ids_json(q, qn), "max_tokens",
                          (json_int_t)n8, "temperature", 0.0, "ignore_eos", 1, key, start);
    json_t *j = call(d, "POST", "/v1/generate", b, &st);
    CHECKF(st == 200 && tokens_equal(json_object_get(j, "tokens"), g8, n8),
           "%s: greedy8 after seq_q differs (status %ld)", what, st);
    json_decref(j);
}

static void test_family(const char *name, const char *family, const char *variant)
{
    char dir[1024], data[512], fx[128];
    snprintf(fx, sizeof fx, "models/%s", name);
    snprintf(dir, sizeof dir, "%s", fixture_path(fx));
    snprintf(data, sizeof data, "%s/%s", tmp_root, name);
    golden_open(&G, dir);
    worst_state = worst_lp = 0;
    srv d;
    if (daemon_start(&d, dir, data, NULL)) {
        test_failures++;
        golden_close(&G);
        return;
    }
    size_t n;
    gt(&G, "seq_a.logits", &n);
    size_t an;
    ids_of("seq_a.ids", &an);
    V = (int)(n / an);
    check_models(&d, dir, family, variant);
    long st;

    /* the states after seq a, b, c, q */
    for (int i = 0; i < 4; i++) {
        char iname[32], sname[32];
        snprintf(iname, sizeof iname, "seq_%s.ids", seqs[i]);
        snprintf(sname, sizeof sname, "seq_%s", seqs[i]);
        const int32_t *ids = ids_of(iname, &n);
        json_t *rec = call(&d, "POST", "/v1/states",
                           json_pack("{s:o,s:s}", "tokens", ids_json(ids, n), "name", sname), &st);
        CHECKF(st == 201 && json_integer_value(json_object_get(rec, "n_tokens")) == (json_int_t)n,
               "%s: create %s: %ld", name, sname, st);
        json_decref(rec);
        check_state(&d, sname, sname);
    }

    /* greedy12 from seq_a's state, empty prompt */
    size_t n12;
    const int32_t *g12 = ids_of("seq_a.greedy12", &n12);
    json_t *j = call(&d, "POST", "/v1/generate",
                     json_pack("{s:s,s:[],s:I,s:f,s:b}", "state", "seq_a", "prompt", "max_tokens",
                               (json_int_t)n12, "temperature", 0.0, "ignore_eos", 1),
                     &st);
    CHECKF(st == 200 && tokens_equal(json_object_get(j, "tokens"), g12, n12),
           "%s: greedy12 from seq_a (status %ld)", name, st);
    json_decref(j);

    /* every merge case: stored and on the fly */
    json_t *mc;
    size_t mi;
    json_array_foreach(json_object_get(G.cases, "merges"), mi, mc)
    {
        const char *mname = json_string_value(json_object_get(mc, "name"));
        json_t *srcs = json_object_get(mc, "sources"), *sources = merge_sources(mc);
        char stored[64], gname[96], what[128];
        snprintf(stored, sizeof stored, "merge_%s", mname);
        json_t *rec = call(&d, "POST", "/v1/states/merge",
                           json_pack("{s:O,s:s}", "sources", sources, "name", stored), &st);
        CHECKF(st == 201 &&
                   json_array_size(json_object_get(rec, "parents")) == json_array_size(srcs),
               "%s: stored merge %s: %ld", name, mname, st);
        json_decref(rec);
        check_state(&d, stored, stored);
        snprintf(gname, sizeof gname, "merge_%s.query_logits", mname);
        const float *ql = gt(&G, gname, NULL);
        snprintf(gname, sizeof gname, "merge_%s.greedy8", mname);
        size_t n8;
        const int32_t *g8 = gt(&G, gname, &n8);
        json_t *sref = json_string(stored);
        snprintf(what, sizeof what, "%s stored merge %s", name, mname);
        score_q(&d, "state", sref, ql, what);
        greedy_q(&d, "state", sref, g8, n8, what);
        snprintf(what, sizeof what, "%s on-the-fly merge %s", name, mname);
        score_q(&d, "merge", sources, ql, what);
        greedy_q(&d, "merge", sources, g8, n8, what);
        /* the batch forms on a model without Mixture of Tokens: independent members */
        size_t qn;
        const int32_t *q = ids_of("seq_q.ids", &qn);
        j = call(&d, "POST", "/v1/generate",
                 json_pack("{s:[o,o],s:I,s:f,s:b,s:O}", "prompts", ids_json(q, qn), ids_json(q, qn),
                           "max_tokens", (json_int_t)n8, "temperature", 0.0, "ignore_eos", 1,
                           "merge", sources),
                 &st);
        json_t *res = json_object_get(j, "results");
        CHECKF(st == 200 && json_array_size(res) == 2 &&
                   tokens_equal(json_object_get(json_array_get(res, 0), "tokens"), g8, n8) &&
                   tokens_equal(json_object_get(json_array_get(res, 1), "tokens"), g8, n8),
               "%s: generate batch of two seq_q: greedy8 each (status %ld)", what, st);
        json_decref(j);
        json_decref(sref);
        json_decref(sources);
    }

    /* export -> import: bit-exact, same checksum */
    size_t len, len2;
    uint8_t *f = get_data(&d, "seq_b", NULL, &len, &st);
    CHECK(f != NULL);
    if (f) {
        req_opts o = {.ctype = "application/octet-stream"};
        resp r = request(&d, "POST", "/v1/states/import?name=seq_b_copy", f, (long)len, &o);
        json_t *rec = json_loads(r.body, 0, NULL),
               *orig = call(&d, "GET", "/v1/states/seq_b", NULL, &st);
        CHECK(r.status == 201 && json_is_string(json_object_get(rec, "checksum")) &&
              json_equal(json_object_get(rec, "checksum"), json_object_get(orig, "checksum")));
        free(r.body);
        json_decref(rec);
        json_decref(orig);
        uint8_t *f2 = get_data(&d, "seq_b_copy", NULL, &len2, &st);
        CHECKF(f2 && same_tensors(f, len, f2, len2), "%s: export -> import not bit-exact", name);
        free(f2);
        free(f);
    }

    /* resume: seq_a, then seq_b with "from", equals a ++ b in one run */
    size_t bn;
    const int32_t *ai = ids_of("seq_a.ids", &an), *bi = ids_of("seq_b.ids", &bn);
    int32_t *ab = malloc((an + bn) * sizeof *ab);
    memcpy(ab, ai, an * sizeof *ab);
    memcpy(ab + an, bi, bn * sizeof *ab);
    json_t *rec = call(
        &d, "POST", "/v1/states",
        json_pack("{s:o,s:s,s:s}", "tokens", ids_json(bi, bn), "from", "seq_a", "name", "a_then_b"),
        &st);
    CHECK(st == 201 &&
          json_integer_value(json_object_get(rec, "n_tokens")) == (json_int_t)(an + bn));
    json_decref(rec);
    json_decref(call(&d, "POST", "/v1/states",
                     json_pack("{s:o,s:s}", "tokens", ids_json(ab, an + bn), "name", "ab_direct"),
                     &st));
    free(ab);
    f = get_data(&d, "a_then_b", NULL, &len, NULL);
    uint8_t *f2 = get_data(&d, "ab_direct", NULL, &len2, NULL);
    if (f && f2) {
        static const char *const parts[] = {"conv", "ssm", "final_hidden"};
        st_file s1, s2;
        REQUIRE_OK(st_parse(&s1, f, len, "resumed"));
        REQUIRE_OK(st_parse(&s2, f2, len2, "direct"));
        for (int i = 0; i < 3; i++) {
            const st_tensor *t2 = st_find(&s2, parts[i]);
            float *y = malloc(t2->n_bytes);
            memcpy(y, t2->data, t2->n_bytes);
            double e = tensor_err(f, len, parts[i], y, t2->n_elem);
            CHECKF(e < 1e-4, "%s: resumed %s differs from one run by %.3g", name, parts[i], e);
            free(y);
        }
        st_free(&s1);
        st_free(&s2);
    }
    CHECK(f && f2);
    free(f);
    free(f2);

    /* POST /v1/states in batch form: seq a, b, c (three lengths) in one request */
    json_t *batch = json_array();
    for (int i = 0; i < 3; i++) {
        char iname[32], sname[32];
        snprintf(iname, sizeof iname, "seq_%s.ids", seqs[i]);
        snprintf(sname, sizeof sname, "batch_%s", seqs[i]);
        const int32_t *ids = ids_of(iname, &n);
        json_array_append_new(batch,
                              json_pack("{s:o,s:s}", "tokens", ids_json(ids, n), "name", sname));
    }
    j = call(&d, "POST", "/v1/states", json_pack("{s:o,s:[s]}", "batch", batch, "tags", "b"), &st);
    CHECKF(st == 201 && json_array_size(json_object_get(j, "data")) == 3, "%s: states batch: %ld",
           name, st);
    json_decref(j);
    for (int i = 0; i < 3 && st == 201; i++) {
        char sname[32], gp[32];
        snprintf(sname, sizeof sname, "batch_%s", seqs[i]);
        snprintf(gp, sizeof gp, "seq_%s", seqs[i]);
        check_state(&d, sname, gp);
    }

    printf("%-28s worst |state error| %.3g, worst |log-prob error| %.3g (through the API)\n", name,
           worst_state, worst_lp);
    daemon_stop(&d);
    golden_close(&G);
}

/* ---- Mixture of Tokens ------------------------------------------------------------------- */

static int ML; /* tokens per sequence of batch.ids */

static const int32_t *mot_row(int b)
{
    return ids_of("batch.ids", NULL) + (size_t)b * ML;
}

/* Log-probs of a score answer (continuation = row, no context) against golden logits rows. */
static double mot_score_err(json_t *res, const int32_t *ids, const float *rows)
{
    json_t *lps = json_object_get(res, "token_logprobs");
    if (json_array_size(lps) != (size_t)ML || !json_is_null(json_array_get(lps, 0)))
        return INFINITY;
    double worst = 0;
    for (int t = 1; t < ML; t++)
        note(&worst, lp_err(rows + (size_t)(t - 1) * V, ids[t],
                            json_number_value(json_array_get(lps, (size_t)t))));
    return worst;
}

typedef struct lone_req {
    srv *d;
    int row;
    pthread_barrier_t *go;
    json_t *lps; /* out: token_logprobs */
    long status;
} lone_req;

static void *lone_main(void *arg)
{
    lone_req *q = arg;
    pthread_barrier_wait(q->go);
    json_t *j =
        call(q->d, "POST", "/v1/score",
             json_pack("{s:o}", "continuation", ids_json(mot_row(q->row), (size_t)ML)), &q->status);
    q->lps = json_incref(json_object_get(j, "token_logprobs"));
    json_decref(j);
    return NULL;
}

static double lps_diff(json_t *a, json_t *b)
{
    if (json_array_size(a) != json_array_size(b) || !json_array_size(a)) return INFINITY;
    double worst = 0;
    for (size_t i = 1; i < json_array_size(a); i++)
        note(&worst, fabs(json_number_value(json_array_get(a, i)) -
                          json_number_value(json_array_get(b, i))));
    return worst;
}

/* The argmax of a logits row, or -1 when the best two are too close to call. */
static int32_t clear_argmax(const float *row)
{
    int32_t best = ss_argmax(row, V);
    for (int i = 0; i < V; i++)
        if (i != best && row[best] - row[i] < 1e-2f) return -1;
    return best;
}

static void test_mot(void)
{
    char dir[1024], data[512];
    snprintf(dir, sizeof dir, "%s", fixture_path("models/moe-mamba-mot"));
    snprintf(data, sizeof data, "%s/moe-mamba-mot", tmp_root);
    golden_open(&G, dir);
    worst_state = worst_lp = 0;
    size_t n;
    ids_of("batch.ids", &n);
    ML = (int)n / 4;
    ids_of("single.ids", &n);
    size_t nl;
    const float *blogits = gt(&G, "batch.logits", NULL), *slogits = gt(&G, "single.logits", &nl);
    V = (int)(nl / n);
    srv d;
    if (daemon_start(&d, dir, data, NULL)) {
        test_failures++;
        golden_close(&G);
        return;
    }
    check_models(&d, dir, "moe_mamba", "mixture_of_tokens");
    long st;

    /* the batch as one request: states (lockstep) */
    json_t *batch = json_array();
    for (int b = 0; b < 4; b++) {
        char sname[32];
        snprintf(sname, sizeof sname, "mot_%d", b);
        json_array_append_new(batch, json_pack("{s:o,s:s}", "tokens",
                                               ids_json(mot_row(b), (size_t)ML), "name", sname));
    }
    json_t *j = call(&d, "POST", "/v1/states", json_pack("{s:o}", "batch", batch), &st);
    json_t *recs = json_object_get(j, "data");
    CHECKF(st == 201 && json_array_size(recs) == 4, "mot states batch: %ld", st);
    for (size_t b = 0; b < json_array_size(recs); b++)
        CHECK(json_integer_value(json_object_get(json_array_get(recs, b), "n_tokens")) == ML);
    json_decref(j);
    ss_state_layout lay = {0};
    size_t conv_n, ssm_n;
    const float *gconv = gt(&G, "batch.state.conv", &conv_n);
    const float *gssm = gt(&G, "batch.state.ssm", &ssm_n);
    lay.conv_n = conv_n / 4;
    lay.ssm_n = ssm_n / 4;
    for (int b = 0; b < 4; b++) {
        char sname[32];
        snprintf(sname, sizeof sname, "mot_%d", b);
        size_t len;
        uint8_t *f = get_data(&d, sname, NULL, &len, &st);
        CHECKF(f, "export %s: %ld", sname, st);
        if (!f) continue;
        double e = tensor_err(f, len, "conv", gconv + b * lay.conv_n, lay.conv_n);
        note(&worst_state, e);
        CHECKF(e <= STATE_TOL, "mot batch member %d: conv off by %.3g", b, e);
        e = tensor_err(f, len, "ssm", gssm + b * lay.ssm_n, lay.ssm_n);
        note(&worst_state, e);
        CHECKF(e <= STATE_TOL, "mot batch member %d: ssm off by %.3g", b, e);
        free(f);
    }

    /* the batch score form: batch.logits */
    batch = json_array();
    for (int b = 0; b < 4; b++)
        json_array_append_new(batch,
                              json_pack("{s:o}", "continuation", ids_json(mot_row(b), (size_t)ML)));
    j = call(&d, "POST", "/v1/score", json_pack("{s:o}", "batch", batch), &st);
    json_t *res = json_object_get(j, "results");
    CHECKF(st == 200 && json_array_size(res) == 4, "mot score batch: %ld", st);
    for (int b = 0; b < 4 && json_array_size(res) == 4; b++) {
        double e =
            mot_score_err(json_array_get(res, (size_t)b), mot_row(b), blogits + (size_t)b * ML * V);
        note(&worst_lp, e);
        CHECKF(e < LP_TOL, "mot score batch member %d off batch.logits by %.3g", b, e);
        CHECK(json_integer_value(json_object_get(json_array_get(res, (size_t)b), "index")) == b);
    }
    json_decref(j);

    /* a single request: single.logits (a group of one) */
    const int32_t *sids = ids_of("single.ids", NULL);
    j = call(&d, "POST", "/v1/score",
             json_pack("{s:o}", "continuation", ids_json(sids, (size_t)ML)), &st);
    double e = mot_score_err(j, sids, slogits);
    note(&worst_lp, e);
    CHECKF(st == 200 && e < LP_TOL, "mot single score off single.logits by %.3g (%ld)", e, st);
    json_decref(j);

    /* generation in a batch starts with the argmax of the last batch logits; alone, of the
     * last single logits (where the top two are not too close to call) */
    json_t *prompts = json_array();
    for (int b = 0; b < 4; b++) json_array_append_new(prompts, ids_json(mot_row(b), (size_t)ML));
    j = call(&d, "POST", "/v1/generate",
             json_pack("{s:O,s:i,s:f,s:b}", "prompts", prompts, "max_tokens", 3, "temperature", 0.0,
                       "ignore_eos", 1),
             &st);
    json_t *c = call(&d, "POST", "/v1/completions",
                     json_pack("{s:O,s:i,s:f,s:b}", "prompt", prompts, "max_tokens", 3,
                               "temperature", 0.0, "ignore_eos", 1),
                     NULL);
    res = json_object_get(j, "results");
    CHECKF(st == 200 && json_array_size(res) == 4, "mot generate batch: %ld", st);
    CHECK(json_array_size(json_object_get(c, "choices")) == 4);
    int checked = 0;
    for (int b = 0; b < 4 && json_array_size(res) == 4; b++) {
        json_t *toks = json_object_get(json_array_get(res, (size_t)b), "tokens");
        int32_t want = clear_argmax(blogits + ((size_t)b * ML + ML - 1) * V);
        if (want >= 0) {
            CHECKF(json_integer_value(json_array_get(toks, 0)) == want,
                   "mot generate batch member %d: first token %lld, batch.logits say %d", b,
                   (long long)json_integer_value(json_array_get(toks, 0)), want);
            checked++;
        }
        CHECK(json_array_size(toks) == 3);
    }
    CHECK(checked > 0);
    /* completions with an array of prompts is the same batch: same tokens (no tokenizer, so
     * compare usage and finish; the texts are empty) */
    CHECK(json_integer_value(json_object_get(json_object_get(c, "usage"), "completion_tokens")) ==
          12);
    json_decref(c);
    json_decref(j);
    json_decref(prompts);
    int32_t want = clear_argmax(slogits + (size_t)(ML - 1) * V);
    j = call(&d, "POST", "/v1/generate",
             json_pack("{s:o,s:i,s:f,s:b}", "prompt", ids_json(sids, (size_t)ML), "max_tokens", 3,
                       "temperature", 0.0, "ignore_eos", 1),
             &st);
    CHECK(st == 200);
    if (want >= 0)
        CHECKF(json_integer_value(json_array_get(json_object_get(j, "tokens"), 0)) == want,
               "mot generate alone: first token differs from single.logits' argmax");
    json_decref(j);

    /* separate requests are never mixed: four concurrent single requests, each equal to its
     * result alone (row 0: single.logits) */
    json_t *alone[4];
    for (int b = 0; b < 4; b++) {
        j = call(&d, "POST", "/v1/score",
                 json_pack("{s:o}", "continuation", ids_json(mot_row(b), (size_t)ML)), &st);
        alone[b] = json_incref(json_object_get(j, "token_logprobs"));
        json_decref(j);
    }
    for (int round = 0; round < 4; round++) {
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, 4);
        lone_req q[4];
        pthread_t th[4];
        for (int b = 0; b < 4; b++) {
            q[b] = (lone_req){.d = &d, .row = b, .go = &go};
            pthread_create(&th[b], NULL, lone_main, &q[b]);
        }
        for (int b = 0; b < 4; b++) {
            pthread_join(th[b], NULL);
            double diff = lps_diff(q[b].lps, alone[b]);
            CHECKF(q[b].status == 200 && diff < 1e-4,
                   "concurrent single request %d (round %d) differs from alone by %.3g", b, round,
                   diff);
            json_decref(q[b].lps);
        }
        pthread_barrier_destroy(&go);
    }
    j = json_pack("{s:O}", "token_logprobs", alone[0]);
    CHECK(mot_score_err(j, sids, slogits) < LP_TOL);
    json_decref(j);
    for (int b = 0; b < 4; b++) json_decref(alone[b]);

    /* unequal lengths inside a group: 422, naming the fields; across groups they are fine */
    batch = json_array();
    for (int b = 0; b < 4; b++)
        json_array_append_new(batch,
                              json_pack("{s:o}", "continuation",
                                        ids_json(mot_row(b), (size_t)(b == 2 ? ML - 1 : ML))));
    j = call(&d, "POST", "/v1/score", json_pack("{s:O}", "batch", batch), &st);
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    CHECKF(st == 422 && msg && strstr(msg, "batch[2]"), "unequal batch: %ld %s", st,
           msg ? msg : "");
    json_decref(j);
    json_decref(batch);
    batch = json_array(); /* 4 of one length, then a fifth of another: groups of 4 and of 1 */
    for (int b = 0; b < 5; b++)
        json_array_append_new(batch, json_pack("{s:o}", "continuation",
                                               ids_json(mot_row(b % 4), (size_t)(b < 4 ? ML : 3))));
    j = call(&d, "POST", "/v1/score", json_pack("{s:O}", "batch", batch), &st);
    res = json_object_get(j, "results");
    CHECKF(st == 200 && json_array_size(res) == 5, "a group of 4 and a group of 1: %ld", st);
    for (int b = 0; b < 4 && json_array_size(res) == 5; b++) {
        e = mot_score_err(json_array_get(res, (size_t)b), mot_row(b), blogits + (size_t)b * ML * V);
        CHECKF(e < LP_TOL, "first group of 5 members, member %d off by %.3g", b, e);
    }
    json_decref(j);
    json_decref(batch);
    json_t *uneq = json_array();
    json_array_append_new(uneq, ids_json(mot_row(0), (size_t)ML));
    json_array_append_new(uneq, ids_json(mot_row(1), (size_t)ML - 2));
    check_error(call(&d, "POST", "/v1/completions",
                     json_pack("{s:O,s:i}", "prompt", uneq, "max_tokens", 2), &st),
                st, 422, "invalid_value", "completions with prompts of unequal lengths");
    check_error(call(&d, "POST", "/v1/generate",
                     json_pack("{s:O,s:i}", "prompts", uneq, "max_tokens", 2), &st),
                st, 422, "invalid_value", "generate with prompts of unequal lengths");
    json_decref(uneq);
    check_error(call(&d, "POST", "/v1/states",
                     json_pack("{s:[{s:[i,i]},{s:[i]}]}", "batch", "tokens", 1, 2, "tokens", 3),
                     &st),
                st, 422, "invalid_value", "states batch of unequal lengths");

    /* its states merge, export, import and resume like any other */
    json_t *rec =
        call(&d, "POST", "/v1/states/merge",
             json_pack("{s:[{s:s,s:f},{s:s,s:f}],s:s}", "sources", "state", "mot_0", "weight", 0.25,
                       "state", "mot_1", "weight", 0.75, "name", "mot_merge"),
             &st);
    CHECK(st == 201);
    json_decref(rec);
    size_t len, len2;
    uint8_t *f = get_data(&d, "mot_merge", NULL, &len, &st);
    if (f) {
        float *want_ssm = malloc(lay.ssm_n * sizeof(float));
        for (size_t i = 0; i < lay.ssm_n; i++)
            want_ssm[i] = 0.25f * gssm[i] + 0.75f * gssm[lay.ssm_n + i];
        e = tensor_err(f, len, "ssm", want_ssm, lay.ssm_n);
        note(&worst_state, e);
        CHECKF(e <= STATE_TOL, "mot merge off the merged golden states by %.3g", e);
        free(want_ssm);
        req_opts o = {.ctype = "application/octet-stream"};
        resp r = request(&d, "POST", "/v1/states/import?name=mot_merge_copy", f, (long)len, &o);
        CHECK(r.status == 201);
        free(r.body);
        uint8_t *f2 = get_data(&d, "mot_merge_copy", NULL, &len2, &st);
        CHECK(f2 && same_tensors(f, len, f2, len2));
        free(f2);
        free(f);
    }
    CHECK(f != NULL);
    json_decref(call(&d, "POST", "/v1/states",
                     json_pack("{s:o,s:s}", "tokens", ids_json(sids, 5), "name", "single_5"), &st));
    json_decref(call(&d, "POST", "/v1/states",
                     json_pack("{s:o,s:s,s:s}", "tokens", ids_json(sids + 5, (size_t)ML - 5),
                               "from", "single_5", "name", "single_resumed"),
                     &st));
    json_decref(call(
        &d, "POST", "/v1/states",
        json_pack("{s:o,s:s}", "tokens", ids_json(sids, (size_t)ML), "name", "single_whole"), &st));
    f = get_data(&d, "single_resumed", NULL, &len, NULL);
    uint8_t *f2 = get_data(&d, "single_whole", NULL, &len2, NULL);
    CHECK(f && f2);
    if (f && f2) {
        st_file s2;
        REQUIRE_OK(st_parse(&s2, f2, len2, "whole"));
        const st_tensor *t2 = st_find(&s2, "ssm");
        float *y = malloc(t2->n_bytes);
        memcpy(y, t2->data, t2->n_bytes);
        e = tensor_err(f, len, "ssm", y, t2->n_elem);
        CHECKF(e < 1e-4, "mot resumed state differs from one run by %.3g", e);
        free(y);
        st_free(&s2);
    }
    free(f);
    free(f2);

    printf("%-28s worst |state error| %.3g, worst |log-prob error| %.3g (through the API)\n",
           "moe-mamba-mot", worst_state, worst_lp);
    daemon_stop(&d);
    golden_close(&G);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_tmpdir(tmp_root, sizeof tmp_root, "families");
    test_family("mamba2-tiny", "mamba2", NULL);
    test_family("mamba2-groups", "mamba2", NULL);
    test_family("moe-mamba-switch", "moe_mamba", "switch");
    test_family("moe-mamba-finegrained", "moe_mamba", "fine_grained");
    test_family("moe-mamba-blackmamba-like", "moe_mamba", "sigmoid");
    test_mot();
    curl_global_cleanup();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (!test_failures && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_root);
    return test_done("families");
}
