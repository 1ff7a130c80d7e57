/*
 * test_engine.c - the scheduler against the mamba1-tiny golden: prefill jobs give the golden
 * states, generation from a state with an empty prompt gives the golden greedy tokens, scoring
 * from a merged state gives the golden log-probabilities; and batching many concurrent jobs gives
 * the same tokens as running each alone.
 *
 * Mixture of Tokens (moe-mamba-mot): a batch submitted as one is stepped in lockstep and gives the
 * golden batch logits and states; a job submitted alone gives the single (unmixed) logits, also
 * when it shares engine steps with other jobs and with a group; a member that finishes early
 * keeps the group's shape (the others' tokens do not change, its state is the one at its end);
 * members of unequal lengths are refused.
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

static ss_job *run_on(ss_engine *en, ss_job_params *p)
{
    ss_job *j = NULL;
    REQUIRE_OK(ss_engine_run(en, p, &j));
    const ss_job_result *r = ss_job_get_result(j);
    if (r->err) fprintf(stderr, "job failed: %s\n", r->errmsg);
    return j;
}

static ss_job *run(ss_job_params *p)
{
    return run_on(eng, p);
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
    test_merge(ss_state_data(ms), src, w, 2, nf);
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

static int cancel_member(void *user, const ss_token_event *ev)
{
    return ev->index == *(int *)user ? -1 : 0;
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

/* ---- Mixture of Tokens ---------------------------------------------------------------------- */

static ss_model *mm;
static ss_engine *meng;
static golden mg;
static int MV, ML;
static const int32_t *mids; /* batch.ids [4, ML] */

/* The job's score log-probs against log_softmax of golden rows: worst difference. */
static double score_err(const ss_job_result *r, const int32_t *ids, const float *rows)
{
    double worst = 0;
    CHECK(r->n_cont == ML && isnan(r->token_logprobs[0]));
    for (int t = 1; t < r->n_cont; t++) {
        double want = ss_logprob_of(rows + (size_t)(t - 1) * MV, MV, ids[t]);
        double d = fabs(r->token_logprobs[t] - want);
        if (!(d <= worst)) worst = d;
    }
    return worst;
}

static ss_job_params mot_score(int b)
{
    return (ss_job_params){.kind = SS_JOB_SCORE, .cont = mids + b * ML, .n_cont = ML};
}

static ss_job_params mot_gen(int b, int max_tokens)
{
    ss_job_params p = {.kind = SS_JOB_GENERATE, .prompt = mids + b * ML, .n_prompt = ML,
                       .max_tokens = max_tokens, .sample = ss_sample_default_params()};
    p.sample.temperature = 0;
    return p;
}

/* A generation job that holds the engine thread in its first on_token until released. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered, released, done;
} gate;

static int gate_on_token(void *user, const ss_token_event *ev)
{
    gate *gw = user;
    pthread_mutex_lock(&gw->mu);
    if (ev->index == 0) {
        gw->entered = 1;
        pthread_cond_broadcast(&gw->cv);
        while (!gw->released) pthread_cond_wait(&gw->cv, &gw->mu);
    }
    pthread_mutex_unlock(&gw->mu);
    return 0;
}

static void gate_on_done(void *user, ss_job *j)
{
    (void)j;
    gate *gw = user;
    pthread_mutex_lock(&gw->mu);
    gw->done = 1;
    pthread_cond_broadcast(&gw->cv);
    pthread_mutex_unlock(&gw->mu);
}

static int cut_member(void *user, const ss_token_event *ev)
{
    int at = *(int *)user;
    return ev->index == at ? 1 : 0; /* "stop string" after token `at` */
}

static void test_mot(void)
{
    REQUIRE_OK(ss_model_open(&mm, fixture_path("models/moe-mamba-mot"), NULL));
    golden_open(&mg, fixture_path("models/moe-mamba-mot"));
    MV = ss_model_get_info(mm)->vocab_size;
    size_t n;
    mids = gt(&mg, "batch.ids", &n);
    ML = (int)n / 4;
    const float *blogits = gt(&mg, "batch.logits", NULL);
    const float *slogits = gt(&mg, "single.logits", NULL);
    const int32_t *sids = gt(&mg, "single.ids", NULL);
    ss_engine_params ep = ss_engine_default_params();
    REQUIRE_OK(ss_engine_open(&meng, mm, &ep));
    ss_state_layout lay;
    ss_model_state_layout(mm, &lay);

    /* the batch in lockstep: golden states and logits; a group of 4 with one id */
    ss_job_params ps[4];
    ss_job *js[4];
    for (int b = 0; b < 4; b++)
        ps[b] = (ss_job_params){.kind = SS_JOB_PREFILL, .prompt = mids + b * ML, .n_prompt = ML};
    REQUIRE_OK(ss_engine_run_batch(meng, ps, 4, js));
    const float *gconv = gt(&mg, "batch.state.conv", NULL);
    const float *gssm = gt(&mg, "batch.state.ssm", NULL);
    for (int b = 0; b < 4; b++) {
        const ss_job_result *r = ss_job_get_result(js[b]);
        CHECK(r->err == SS_OK && r->state && r->group_size == 4 && r->group > 0 &&
              r->group == ss_job_get_result(js[0])->group);
        if (!r->state) continue;
        double e = max_abs_diff(ss_state_cdata(r->state) + lay.conv_off, gconv + b * lay.conv_n,
                                lay.conv_n);
        CHECKF(e <= 1e-3, "mot batch member %d conv off by %.3g", b, e);
        e = max_abs_diff(ss_state_cdata(r->state) + lay.ssm_off, gssm + b * lay.ssm_n, lay.ssm_n);
        CHECKF(e <= 1e-3, "mot batch member %d ssm off by %.3g", b, e);
    }
    int first_group = ss_job_get_result(js[0])->group;
    for (int b = 0; b < 4; b++) ss_job_free(js[b]);
    for (int b = 0; b < 4; b++) ps[b] = mot_score(b);
    REQUIRE_OK(ss_engine_run_batch(meng, ps, 4, js));
    for (int b = 0; b < 4; b++) {
        const ss_job_result *r = ss_job_get_result(js[b]);
        double e = score_err(r, mids + b * ML, blogits + (size_t)b * ML * MV);
        CHECKF(e < 2e-3, "mot batch score member %d off by %.3g", b, e);
        CHECK(r->group != first_group); /* a new request, a new group */
        ss_job_free(js[b]);
    }
    /* alone: the single logits, group of one */
    ss_job_params sp = mot_score(0);
    CHECK(memcmp(sids, mids, (size_t)ML * sizeof(int32_t)) == 0);
    ss_job *j = run_on(meng, &sp);
    double e = score_err(ss_job_get_result(j), sids, slogits);
    CHECKF(e < 2e-3, "mot single score off by %.3g", e);
    CHECK(ss_job_get_result(j)->group == 0 && ss_job_get_result(j)->group_size == 1);
    ss_job_free(j);
    sp = mot_score(1);
    j = run_on(meng, &sp);
    float alone1[64];
    memcpy(alone1, ss_job_get_result(j)->token_logprobs, (size_t)ML * sizeof(float));
    ss_job_free(j);

    /* Two lone jobs and a group of 4, queued while the engine is held, so that they are admitted
     * together and share one step: the loners are not mixed, the group is. */
    gate hold = {.entered = 0};
    pthread_mutex_init(&hold.mu, NULL);
    pthread_cond_init(&hold.cv, NULL);
    ss_job_params hp = mot_gen(2, 2);
    hp.on_token = gate_on_token;
    hp.on_done = gate_on_done;
    hp.user = &hold;
    ss_job *holder, *lone[2], *grp[4];
    slot sl[6];
    REQUIRE_OK(ss_engine_submit(meng, &hp, &holder));
    pthread_mutex_lock(&hold.mu);
    while (!hold.entered) pthread_cond_wait(&hold.cv, &hold.mu);
    pthread_mutex_unlock(&hold.mu);
    for (int k = 0; k < 6; k++) {
        pthread_mutex_init(&sl[k].mu, NULL);
        pthread_cond_init(&sl[k].cv, NULL);
        sl[k].done = 0;
    }
    for (int k = 0; k < 2; k++) {
        ss_job_params p = mot_score(k);
        p.on_done = on_done;
        p.user = &sl[k];
        REQUIRE_OK(ss_engine_submit(meng, &p, &lone[k]));
    }
    for (int b = 0; b < 4; b++) {
        ps[b] = mot_score(b);
        ps[b].on_done = on_done;
        ps[b].user = &sl[2 + b];
    }
    REQUIRE_OK(ss_engine_submit_batch(meng, ps, 4, grp));
    ss_engine_stats before, after;
    ss_engine_get_stats(meng, &before);
    pthread_mutex_lock(&hold.mu);
    hold.released = 1;
    pthread_cond_broadcast(&hold.cv);
    pthread_mutex_unlock(&hold.mu);
    for (int k = 0; k < 6; k++) {
        pthread_mutex_lock(&sl[k].mu);
        while (!sl[k].done) pthread_cond_wait(&sl[k].cv, &sl[k].mu);
        pthread_mutex_unlock(&sl[k].mu);
    }
    ss_engine_get_stats(meng, &after);
    /* the holder's second token and the six inputs went through one eval */
    CHECKF(after.steps - before.steps == 1, "the jobs took %llu steps, not one shared step",
           (unsigned long long)(after.steps - before.steps));
    e = score_err(ss_job_get_result(lone[0]), sids, slogits);
    CHECKF(e < 2e-3, "lone job 0 next to a group: off the single logits by %.3g", e);
    e = max_abs_diff(ss_job_get_result(lone[1])->token_logprobs + 1, alone1 + 1, (size_t)ML - 1);
    CHECKF(e < 1e-5, "lone job 1 next to others differs from alone by %.3g", e);
    for (int b = 0; b < 4; b++) {
        e = score_err(ss_job_get_result(grp[b]), mids + b * ML, blogits + (size_t)b * ML * MV);
        CHECKF(e < 2e-3, "group member %d next to loners off by %.3g", b, e);
    }
    for (int k = 0; k < 2; k++) ss_job_free(lone[k]);
    for (int b = 0; b < 4; b++) ss_job_free(grp[b]);
    for (int k = 0; k < 6; k++) {
        pthread_mutex_destroy(&sl[k].mu);
        pthread_cond_destroy(&sl[k].cv);
    }
    pthread_mutex_lock(&hold.mu);
    while (!hold.done) pthread_cond_wait(&hold.cv, &hold.mu);
    pthread_mutex_unlock(&hold.mu);
    CHECK(ss_job_get_result(holder)->n_generated == 2);
    ss_job_free(holder);
    pthread_mutex_destroy(&hold.mu);
    pthread_cond_destroy(&hold.cv);

    /* Generation in lockstep; members that end early keep the group's shape. */
    enum { NT = 6 };
    for (int b = 0; b < 4; b++) ps[b] = mot_gen(b, NT);
    REQUIRE_OK(ss_engine_run_batch(meng, ps, 4, js));
    int32_t full[4][NT];
    for (int b = 0; b < 4; b++) {
        const ss_job_result *r = ss_job_get_result(js[b]);
        CHECK(r->n_generated == NT && r->finish == SS_FINISH_LENGTH && r->group_size == 4);
        memcpy(full[b], r->tokens, sizeof full[b]);
        ss_job_free(js[b]);
    }
    /* member 0 stops at 2 tokens (max_tokens) keeping its state, member 2 at a "stop string"
     * after 3, member 3 cancels after 1: member 1 sees the same group and the same tokens */
    int at2 = 2, at3 = 0;
    for (int b = 0; b < 4; b++) ps[b] = mot_gen(b, NT);
    ps[0].max_tokens = 2;
    ps[0].want_state = 1;
    ps[2].on_token = cut_member;
    ps[2].user = &at2;
    ps[3].on_token = cancel_member;
    ps[3].user = &at3;
    REQUIRE_OK(ss_engine_run_batch(meng, ps, 4, js));
    const ss_job_result *r0 = ss_job_get_result(js[0]), *r1 = ss_job_get_result(js[1]),
                        *r2 = ss_job_get_result(js[2]), *r3 = ss_job_get_result(js[3]);
    CHECK(r0->finish == SS_FINISH_LENGTH && r0->n_generated == 2 &&
          !memcmp(r0->tokens, full[0], 2 * sizeof(int32_t)) && r0->state);
    CHECK(r1->finish == SS_FINISH_LENGTH && r1->n_generated == NT &&
          !memcmp(r1->tokens, full[1], sizeof full[1]));
    CHECK(r2->finish == SS_FINISH_STOP && r2->n_generated == 3 &&
          !memcmp(r2->tokens, full[2], 3 * sizeof(int32_t)));
    CHECK(r3->finish == SS_FINISH_CANCELLED && r3->n_generated == 1 && !r3->state);
    /* member 0's state is the one right after its second token, in the group: the same as
     * prefilling the 4 prompts + their first 2 tokens in lockstep */
    int32_t ext[4][64];
    for (int b = 0; b < 4; b++) {
        memcpy(ext[b], mids + b * ML, (size_t)ML * sizeof(int32_t));
        memcpy(ext[b] + ML, full[b], 2 * sizeof(int32_t));
        ps[b] = (ss_job_params){.kind = SS_JOB_PREFILL, .prompt = ext[b], .n_prompt = ML + 2};
    }
    ss_job *pre[4];
    REQUIRE_OK(ss_engine_run_batch(meng, ps, 4, pre));
    if (r0->state && ss_job_get_result(pre[0])->state) {
        const ss_state *want = ss_job_get_result(pre[0])->state;
        e = max_abs_diff(ss_state_cdata(r0->state), ss_state_cdata(want),
                         lay.conv_n + lay.ssm_n + lay.hidden_n);
        CHECKF(e < 1e-4, "early member's state differs from the lockstep prefill by %.3g", e);
    }
    for (int b = 0; b < 4; b++) {
        ss_job_free(pre[b]);
        ss_job_free(js[b]);
    }

    /* 6 members: a group of 4, then a group of 2 */
    ss_job_params six[6];
    ss_job *sj[6];
    for (int k = 0; k < 6; k++) six[k] = mot_score(k % 4);
    REQUIRE_OK(ss_engine_run_batch(meng, six, 6, sj));
    CHECK(ss_job_get_result(sj[0])->group_size == 4 && ss_job_get_result(sj[4])->group_size == 2 &&
          ss_job_get_result(sj[4])->group != ss_job_get_result(sj[0])->group);
    for (int b = 0; b < 4; b++) {
        e = score_err(ss_job_get_result(sj[b]), mids + b * ML, blogits + (size_t)b * ML * MV);
        CHECKF(e < 2e-3, "first group of six, member %d off by %.3g", b, e);
    }
    for (int k = 0; k < 6; k++) ss_job_free(sj[k]);
    /* unequal lengths in a group are refused, naming the member */
    for (int b = 0; b < 4; b++) ps[b] = mot_score(b);
    ps[2].n_cont = ML - 1;
    CHECK_ERR(ss_engine_run_batch(meng, ps, 4, js), SS_ERR_INVALID);
    CHECK(strstr(ss_errmsg(), "member 2") != NULL);
    ps[2] = mot_gen(2, 3);
    CHECK_ERR(ss_engine_run_batch(meng, ps, 4, js), SS_ERR_INVALID);
    ss_engine_close(meng);
    /* an engine whose batch is smaller than the group cannot run it */
    ep.max_batch = 3;
    REQUIRE_OK(ss_engine_open(&meng, mm, &ep));
    for (int b = 0; b < 4; b++) ps[b] = mot_score(b);
    CHECK_ERR(ss_engine_run_batch(meng, ps, 4, js), SS_ERR_INVALID);
    CHECK_OK(ss_engine_run_batch(meng, ps, 3, js)); /* a group of 3 fits */
    for (int b = 0; b < 3; b++) {
        CHECK(ss_job_get_result(js[b])->group_size == 3);
        ss_job_free(js[b]);
    }
    ss_engine_close(meng);
    golden_close(&mg);
    ss_model_close(mm);
}

/* Other models: a batch is independent jobs, whatever their lengths. */
static void test_batch_dense(void)
{
    size_t na, nb;
    const int32_t *a = gt(&g, "seq_a.ids", &na), *b = gt(&g, "seq_b.ids", &nb);
    ss_job_params ps[2] = {{.kind = SS_JOB_PREFILL, .prompt = a, .n_prompt = (int)na},
                           {.kind = SS_JOB_PREFILL, .prompt = b, .n_prompt = (int)nb}};
    ss_job *js[2];
    REQUIRE_OK(ss_engine_run_batch(eng, ps, 2, js));
    ss_state_layout lay;
    ss_model_state_layout(m, &lay);
    for (int k = 0; k < 2; k++) {
        const ss_job_result *r = ss_job_get_result(js[k]);
        CHECK(r->group == 0 && r->group_size == 1 && r->state);
        if (r->state) {
            double e = max_abs_diff(ss_state_cdata(r->state) + lay.ssm_off,
                                    gt(&g, k ? "seq_b.state.ssm" : "seq_a.state.ssm", NULL),
                                    lay.ssm_n);
            CHECKF(e < 1e-3, "dense batch member %d off by %.3g", k, e);
        }
        ss_job_free(js[k]);
    }
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
    test_batch_dense();
    ss_engine_close(eng);
    golden_close(&g);
    ss_model_close(m);
    test_mot();
    return test_done("test_engine");
}
