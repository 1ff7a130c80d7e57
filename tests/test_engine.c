/*
 * test_engine.c - the scheduler against the mamba1-tiny golden: prefill jobs give the golden
 * states, generation from a state with an empty prompt gives the golden greedy tokens, scoring
 * from a merged state gives the golden log-probabilities; and batching many concurrent jobs gives
 * the same tokens as running each alone.
 */
#include "engine.h"
#include "golden.h"
#include "ss_model.h"
#include "test_util.h"

#include <pthread.h>

static ss_model *m;
static ss_engine *eng;
static golden g;
static int V;

static ss_job *run(ss_job_params *p)
{
    ss_job *j = NULL;
    REQUIRE_OK(ss_engine_run(eng, p, &j));
    const ss_job_result *r = ss_job_get_result(j);
    if (r->err) fprintf(stderr, "job failed: %s\n", r->errmsg);
    return j;
}

/* Prefill seq X from zero; returns a malloc'd copy of the state. */
static float *prefill(const char *seq)
{
    char name[64];
    size_t n;
    snprintf(name, sizeof name, "seq_%s.ids", seq);
    const int32_t *ids = gt(&g, name, &n);
    ss_job_params p = {.kind = SS_JOB_PREFILL, .prompt = ids, .n_prompt = (int)n};
    ss_job *j = run(&p);
    const ss_job_result *r = ss_job_get_result(j);
    CHECK(r->err == SS_OK && r->state && r->n_prompt == (int)n);
    size_t nf = ss_model_get_info(m)->state_floats;
    float *copy = malloc(nf * sizeof(float));
    memcpy(copy, ss_state_cdata(r->state), nf * sizeof(float));
    ss_job_free(j);
    return copy;
}

static void test_golden_through_engine(void)
{
    ss_state_layout lay;
    ss_model_state_layout(m, &lay);
    float *sa = prefill("a"), *sb = prefill("b");
    double e = max_abs_diff(sa + lay.ssm_off, gt(&g, "seq_a.state.ssm", NULL), lay.ssm_n);
    CHECKF(e < 1e-3, "seq_a ssm via engine off by %.3g", e);
    e = max_abs_diff(sa + lay.conv_off, gt(&g, "seq_a.state.conv", NULL), lay.conv_n);
    CHECKF(e < 1e-3, "seq_a conv via engine off by %.3g", e);

    /* generate 12 greedy tokens from seq_a's state with an empty prompt */
    ss_job_params p = {.kind = SS_JOB_GENERATE, .start_state = sa, .start_has_hidden = 1,
                       .max_tokens = 12, .sample = ss_sample_default_params()};
    p.sample.temperature = 0;
    ss_job *j = run(&p);
    const ss_job_result *r = ss_job_get_result(j);
    size_t n;
    const int32_t *want = gt(&g, "seq_a.greedy12", &n);
    CHECK(r->n_generated == 12 && r->finish == SS_FINISH_LENGTH);
    CHECK(memcmp(r->tokens, want, n * sizeof(int32_t)) == 0);
    ss_job_free(j);

    /* score seq_q from the 0.25/0.75 merge of a and b: golden query log-probs */
    size_t nf = ss_model_get_info(m)->state_floats;
    ss_state *ms;
    REQUIRE_OK(ss_state_new(m, &ms));
    const float *src[2] = {sa, sb};
    double w[2] = {0.25, 0.75};
    REQUIRE_OK(ss_state_combine(ms, src, w, 2));
    size_t qn;
    const int32_t *q = gt(&g, "seq_q.ids", &qn);
    const float *ql = gt(&g, "merge_ab_25_75.query_logits", NULL);
    /* context = first 2 tokens of q, continuation = the rest; and no context at all */
    for (int ctx = 0; ctx <= 2; ctx += 2) {
        ss_job_params sp = {.kind = SS_JOB_SCORE, .start_state = ss_state_cdata(ms),
                            .start_has_hidden = 0, .prompt = q, .n_prompt = ctx,
                            .cont = q + ctx, .n_cont = (int)qn - ctx};
        j = run(&sp);
        r = ss_job_get_result(j);
        CHECK(r->err == SS_OK && r->n_cont == (int)qn - ctx);
        for (int i = 0; i < r->n_cont; i++) {
            int pos = ctx + i; /* predicted by golden row pos - 1 */
            if (pos == 0) {
                CHECKF(isnan(r->token_logprobs[i]), "first token without context is null");
                continue;
            }
            float want_lp = ss_logprob_of(ql + (size_t)(pos - 1) * V, V, q[pos]);
            CHECKF(fabsf(r->token_logprobs[i] - want_lp) < 2e-3, "ctx %d token %d: %g vs %g", ctx,
                   i, r->token_logprobs[i], want_lp);
        }
        ss_job_free(j);
    }
    /* merged state with its (merged) final_hidden predicts q[0] too */
    ss_job_params sp = {.kind = SS_JOB_SCORE, .start_state = ss_state_cdata(ms),
                        .start_has_hidden = 1, .cont = q, .n_cont = (int)qn};
    j = run(&sp);
    r = ss_job_get_result(j);
    CHECK(!isnan(r->token_logprobs[0]) && r->token_logprobs[0] < 0);
    ss_job_free(j);
    ss_state_free(ms);
    (void)nf;
    free(sa);
    free(sb);
}

/* Async jobs: many at once must give what each gives alone. */
typedef struct slot {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} slot;

static void on_done(void *user, ss_job *j)
{
    (void)j;
    slot *s = user;
    pthread_mutex_lock(&s->mu);
    s->done = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void test_batching(void)
{
    enum { NJ = 12 };
    size_t n;
    const int32_t *ids = gt(&g, "seq_a.ids", &n);
    int32_t alone[NJ][20];
    for (int k = 0; k < NJ; k++) {
        ss_job_params p = {.kind = SS_JOB_GENERATE, .prompt = ids, .n_prompt = (int)n - k,
                           .max_tokens = 20, .sample = ss_sample_default_params()};
        p.sample.seed = (uint64_t)k;
        p.sample.temperature = k % 3 == 0 ? 0.0f : 0.8f;
        ss_job *j = run(&p);
        CHECK(ss_job_get_result(j)->n_generated == 20);
        memcpy(alone[k], ss_job_get_result(j)->tokens, 20 * sizeof(int32_t));
        ss_job_free(j);
    }
    ss_job *jobs[NJ];
    slot slots[NJ];
    for (int k = 0; k < NJ; k++) {
        pthread_mutex_init(&slots[k].mu, NULL);
        pthread_cond_init(&slots[k].cv, NULL);
        slots[k].done = 0;
        ss_job_params p = {.kind = SS_JOB_GENERATE, .prompt = ids, .n_prompt = (int)n - k,
                           .max_tokens = 20, .sample = ss_sample_default_params(),
                           .on_done = on_done, .user = &slots[k]};
        p.sample.seed = (uint64_t)k;
        p.sample.temperature = k % 3 == 0 ? 0.0f : 0.8f;
        REQUIRE_OK(ss_engine_submit(eng, &p, &jobs[k]));
    }
    for (int k = 0; k < NJ; k++) {
        pthread_mutex_lock(&slots[k].mu);
        while (!slots[k].done) pthread_cond_wait(&slots[k].cv, &slots[k].mu);
        pthread_mutex_unlock(&slots[k].mu);
        const ss_job_result *r = ss_job_get_result(jobs[k]);
        CHECKF(r->n_generated == 20 && memcmp(r->tokens, alone[k], 20 * sizeof(int32_t)) == 0,
               "job %d: batched tokens differ from the job alone", k);
        ss_job_free(jobs[k]);
        pthread_mutex_destroy(&slots[k].mu);
        pthread_cond_destroy(&slots[k].cv);
    }
    ss_engine_stats st;
    ss_engine_get_stats(eng, &st);
    CHECK(st.tokens_generated >= 2 * NJ * 20);
}

static int stop_after_3(void *user, const ss_token_event *ev)
{
    (void)user;
    return ev->index == 2 ? 1 : 0;
}

static void test_errors_and_stops(void)
{
    int32_t bad = V + 5;
    ss_job_params p = {.kind = SS_JOB_GENERATE, .prompt = &bad, .n_prompt = 1, .max_tokens = 3,
                       .sample = ss_sample_default_params()};
    ss_job *j = NULL;
    CHECK_ERR(ss_engine_run(eng, &p, &j), SS_ERR_INVALID);
    p.n_prompt = 0;
    CHECK_ERR(ss_engine_run(eng, &p, &j), SS_ERR_INVALID); /* empty prompt, no state */
    int32_t one = 3;
    p.prompt = &one;
    p.n_prompt = 1;
    p.sample.top_p = 0;
    CHECK_ERR(ss_engine_run(eng, &p, &j), SS_ERR_INVALID);
    p.sample = ss_sample_default_params();
    p.on_token = stop_after_3;
    p.max_tokens = 10;
    p.want_state = 1;
    j = run(&p);
    const ss_job_result *r = ss_job_get_result(j);
    CHECK(r->finish == SS_FINISH_STOP && r->n_generated == 3 && r->state != NULL);
    ss_job_free(j);
    /* stop at eos: the tiny model's eos is 0; force it with a logit bias-free check of the path */
    p.on_token = NULL;
    p.max_tokens = 0;
    j = run(&p);
    CHECK(ss_job_get_result(j)->finish == SS_FINISH_LENGTH &&
          ss_job_get_result(j)->n_generated == 0);
    ss_job_free(j);
}

int main(int argc, char **argv)
{
    (void)argc;
    ss_blas_ensure_kernels(argv);
    REQUIRE_OK(ss_model_open(&m, fixture_path("models/mamba1-tiny"), NULL));
    V = ss_model_get_info(m)->vocab_size;
    golden_open(&g, fixture_path("models/mamba1-tiny"));
    ss_engine_params ep = ss_engine_default_params();
    ep.prefill_chunk = 16; /* force several chunks per prompt */
    REQUIRE_OK(ss_engine_open(&eng, m, &ep));
    test_golden_through_engine();
    test_batching();
    test_errors_and_stops();
    ss_engine_close(eng);
    golden_close(&g);
    ss_model_close(m);
    return test_done("test_engine");
}
