/*
 * engine.c - the scheduler thread behind every inference request (continuous batching).
 *
 * Each step gathers every active job into one ss_model_eval() call: jobs that are decoding feed
 * their last sampled token, jobs still reading input feed a chunk of it (the oldest first, up to
 * prefill_chunk tokens per step in all), so streams keep flowing while a long prompt is read and
 * 16 streams cost one batched step instead of 16. Jobs join the batch at the next step after they
 * are submitted and leave it as soon as they finish.
 *
 * Ownership: a job is created by ss_engine_submit (inputs copied), owned by the engine until its
 * on_done callback ran, then by the caller, who frees it with ss_job_free.
 */
#include "engine.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_util.h"

typedef enum phase {
    PH_QUEUED,
    PH_INPUT,    /* feeding prompt / context (+ continuation for SCORE) */
    PH_DECODE,   /* GENERATE: feeding sampled tokens */
    PH_FINALIZE, /* GENERATE with want_state: feed the last sampled token, then done */
    PH_DONE,
} phase;

struct ss_job {
    ss_job_params p;
    int32_t *input; /* prompt (PREFILL/GENERATE) or context ++ continuation (SCORE) */
    int n_input;
    int n_ctx; /* SCORE: context length */
    ss_state *state;
    phase ph;
    int fed;       /* input tokens fed so far */
    int have_logits; /* logits hold the next-token distribution */
    float *logits; /* [V] next-token logits (GENERATE) */
    float *rows;   /* [chunk, V] per-position logits (SCORE) */
    int32_t pending; /* GENERATE: sampled token not yet fed */
    ss_sampler *sampler;
    int32_t *tokens;
    float *logprobs;
    int n_gen;
    float *token_logprobs; /* SCORE [n_cont] */
    int32_t *top_ids;      /* [n_logprobs] */
    float *top_lps;
    atomic_int cancel;
    ss_job_result res;
    int64_t t_submit, t_start, t_prefill_end, t_end;
    struct ss_job *next;
};

struct ss_engine {
    ss_model *m;
    ss_engine_params p;
    int V;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
    ss_job *queue_head, *queue_tail;
    int n_queued;
    ss_job **active; /* [max_batch] */
    int n_active;
    ss_ctx *ctx;
    ss_seq *seqs; /* [max_batch] */
    ss_job **seq_job;
    ss_engine_stats stats;
};

ss_engine_params ss_engine_default_params(void)
{
    return (ss_engine_params){.max_batch = 16, .max_queue = 256, .prefill_chunk = 256};
}

static double ms_between(int64_t a, int64_t b)
{
    return a && b && b > a ? (double)(b - a) / 1e6 : 0.0;
}

/* ---- job lifetime ------------------------------------------------------------------------- */

void ss_job_free(ss_job *j)
{
    if (!j) return;
    free(j->input);
    ss_state_free(j->state);
    free(j->logits);
    free(j->rows);
    ss_sampler_free(j->sampler);
    free(j->tokens);
    free(j->logprobs);
    free(j->token_logprobs);
    free(j->top_ids);
    free(j->top_lps);
    free(j);
}

const ss_job_result *ss_job_get_result(const ss_job *j)
{
    return &j->res;
}

static ss_err check_ids(const int32_t *ids, int n, int V, const char *what)
{
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= V) {
            return ss_fail(SS_ERR_INVALID, "%s token %d at position %d is outside the vocabulary "
                                           "[0, %d)", what, ids[i], i, V);
        }
    }
    return SS_OK;
}

static ss_err job_new(ss_engine *e, const ss_job_params *p, ss_job **out)
{
    const ss_model_info *info = ss_model_get_info(e->m);
    const int V = info->vocab_size;
    ss_err err = SS_OK;
    if (p->n_prompt < 0 || p->n_cont < 0 || (p->n_prompt && !p->prompt) || (p->n_cont && !p->cont))
        return ss_fail(SS_ERR_INVALID, "bad token arrays");
    if ((err = check_ids(p->prompt, p->n_prompt, V, p->kind == SS_JOB_SCORE ? "context" : "prompt")))
        return err;
    if ((err = check_ids(p->cont, p->n_cont, V, "continuation"))) return err;
    if (p->kind == SS_JOB_GENERATE) {
        if (p->max_tokens < 0) return ss_fail(SS_ERR_INVALID, "max_tokens must be >= 0");
        if (p->n_logprobs < 0 || p->n_logprobs > 20)
            return ss_fail(SS_ERR_INVALID, "logprobs must be between 0 and 20");
        if ((err = ss_sample_params_check(&p->sample))) return err;
        if (p->n_prompt == 0 && !p->start_has_hidden && p->max_tokens > 0)
            return ss_fail(SS_ERR_INVALID,
                           "an empty prompt needs a starting state (state or merge) to predict "
                           "the first token from");
    }
    if (p->kind == SS_JOB_SCORE && p->n_cont == 0)
        return ss_fail(SS_ERR_INVALID, "continuation is empty");
    if (p->kind == SS_JOB_PREFILL && p->n_prompt == 0 && !p->start_state)
        return ss_fail(SS_ERR_INVALID, "prompt is empty");

    ss_job *j = calloc(1, sizeof *j);
    if (!j) return ss_fail(SS_ERR_NOMEM, "out of memory");
    j->p = *p;
    j->p.prompt = j->p.cont = NULL;
    j->p.start_state = NULL;
    j->n_input = p->n_prompt + (p->kind == SS_JOB_SCORE ? p->n_cont : 0);
    j->n_ctx = p->n_prompt;
    j->input = malloc((size_t)(j->n_input ? j->n_input : 1) * sizeof(int32_t));
    if (!j->input) goto nomem;
    if (p->n_prompt) memcpy(j->input, p->prompt, (size_t)p->n_prompt * sizeof(int32_t));
    if (p->kind == SS_JOB_SCORE)
        memcpy(j->input + p->n_prompt, p->cont, (size_t)p->n_cont * sizeof(int32_t));
    if ((err = ss_state_new(e->m, &j->state))) goto fail;
    if (p->start_state) {
        if ((err = ss_state_set(j->state, p->start_state, info->state_floats))) goto fail;
    }
    if (p->kind == SS_JOB_GENERATE) {
        j->logits = malloc((size_t)V * sizeof(float));
        j->tokens = malloc((size_t)(p->max_tokens + 1) * sizeof(int32_t));
        j->logprobs = malloc((size_t)(p->max_tokens + 1) * sizeof(float));
        if (!j->logits || !j->tokens || !j->logprobs) goto nomem;
        if (p->n_logprobs) {
            j->top_ids = malloc((size_t)p->n_logprobs * sizeof(int32_t));
            j->top_lps = malloc((size_t)p->n_logprobs * sizeof(float));
            if (!j->top_ids || !j->top_lps) goto nomem;
        }
        if ((err = ss_sampler_new(&p->sample, V, &j->sampler))) goto fail;
    }
    if (p->kind == SS_JOB_SCORE) {
        j->logits = malloc((size_t)V * sizeof(float));
        j->rows = malloc((size_t)e->p.prefill_chunk * V * sizeof(float));
        j->token_logprobs = malloc((size_t)p->n_cont * sizeof(float));
        if (!j->logits || !j->rows || !j->token_logprobs) goto nomem;
        for (int i = 0; i < p->n_cont; i++) j->token_logprobs[i] = NAN;
    }
    atomic_init(&j->cancel, 0);
    j->ph = PH_QUEUED;
    j->t_submit = ss_mono_ns();
    *out = j;
    return SS_OK;
nomem:
    err = ss_fail(SS_ERR_NOMEM, "out of memory for a job");
fail:
    ss_job_free(j);
    return err;
}

/* ---- scheduling --------------------------------------------------------------------------- */

static void finish(ss_engine *e, ss_job *j, ss_finish why, ss_err err)
{
    ss_job_result *r = &j->res;
    j->ph = PH_DONE;
    j->t_end = ss_mono_ns();
    r->finish = why;
    r->err = err;
    if (err) snprintf(r->errmsg, sizeof r->errmsg, "%s", ss_errmsg());
    r->n_prompt = j->fed;
    r->n_generated = j->n_gen;
    r->tokens = j->tokens;
    r->logprobs = j->logprobs;
    r->token_logprobs = j->token_logprobs;
    r->n_cont = j->p.kind == SS_JOB_SCORE ? j->p.n_cont : 0;
    r->state = (j->p.kind == SS_JOB_PREFILL || j->p.want_state) && !err ? j->state : NULL;
    int64_t pe = j->t_prefill_end ? j->t_prefill_end : j->t_end;
    r->queue_ms = ms_between(j->t_submit, j->t_start);
    r->prefill_ms = ms_between(j->t_start, pe);
    r->decode_ms = ms_between(pe, j->t_end);
    pthread_mutex_lock(&e->mu);
    e->stats.jobs_done++;
    pthread_mutex_unlock(&e->mu);
}

/* Log-softmax helper for scoring: log p(id) from a row of logits. */
static float row_logprob(const float *row, int V, int32_t id)
{
    return ss_logprob_of(row, V, id);
}

/* GENERATE: sample the next token from j->logits, report it, decide whether to go on. */
static void generate_next(ss_engine *e, ss_job *j)
{
    const int V = e->V;
    const ss_model_info *info = ss_model_get_info(e->m);
    if (j->n_gen >= j->p.max_tokens) {
        finish(e, j, SS_FINISH_LENGTH, SS_OK);
        return;
    }
    float lp;
    int32_t tok = ss_sampler_sample(j->sampler, j->logits, &lp);
    j->tokens[j->n_gen] = tok;
    j->logprobs[j->n_gen] = lp;
    ss_token_event ev = {.id = tok, .logprob = lp, .n_top = j->p.n_logprobs,
                         .top_ids = j->top_ids, .top_logprobs = j->top_lps, .index = j->n_gen};
    if (j->p.n_logprobs) ss_logprobs_top(j->logits, V, j->p.n_logprobs, j->top_ids, j->top_lps);
    j->n_gen++;
    pthread_mutex_lock(&e->mu);
    e->stats.tokens_generated++;
    pthread_mutex_unlock(&e->mu);
    int verdict = j->p.on_token ? j->p.on_token(j->p.user, &ev) : 0;
    ss_finish why = SS_FINISH_NONE;
    if (verdict < 0) why = SS_FINISH_CANCELLED;
    else if (verdict > 0) why = SS_FINISH_STOP;
    else if (j->p.stop_at_eos && tok == info->eos_token_id) why = SS_FINISH_EOS;
    else if (j->n_gen >= j->p.max_tokens) why = SS_FINISH_LENGTH;
    j->pending = tok;
    if (why == SS_FINISH_NONE) {
        j->ph = PH_DECODE;
    } else if (j->p.want_state && why != SS_FINISH_CANCELLED) {
        /* The saved state includes the last token: feed it, then finish. */
        j->ph = PH_FINALIZE;
        j->res.finish = why;
    } else {
        finish(e, j, why, SS_OK);
    }
}

/* First look at a job taken from the queue. */
static void start_job(ss_engine *e, ss_job *j)
{
    j->t_start = ss_mono_ns();
    j->ph = PH_INPUT;
    /* Predictions from the starting state itself (empty prompt / context). */
    if (j->p.start_has_hidden && j->n_ctx == 0) {
        if (j->p.kind == SS_JOB_GENERATE || j->p.kind == SS_JOB_SCORE) {
            ss_model_logits_from_state(e->m, e->ctx, j->state, j->logits);
            j->have_logits = 1;
        }
        if (j->p.kind == SS_JOB_SCORE)
            j->token_logprobs[0] = row_logprob(j->logits, e->V, j->input[0]);
    }
    if (j->fed == j->n_input) {
        /* nothing to read */
        j->t_prefill_end = ss_mono_ns();
        if (j->p.kind == SS_JOB_GENERATE) generate_next(e, j);
        else finish(e, j, SS_FINISH_LENGTH, SS_OK);
    }
}

/* After a step fed `n` input tokens of j: bookkeeping, scores, next phase. */
static void after_input(ss_engine *e, ss_job *j, int n, int rows_from)
{
    const int V = e->V;
    if (j->p.kind == SS_JOB_SCORE && rows_from >= 0) {
        /* rows hold logits for input positions [rows_from, j->fed + n) */
        for (int pos = rows_from; pos < j->fed + n; pos++) {
            int ci = pos - j->n_ctx + 1; /* continuation index predicted by position pos */
            if (ci >= 0 && ci < j->p.n_cont)
                j->token_logprobs[ci] =
                    row_logprob(j->rows + (size_t)(pos - rows_from) * V, V, j->input[pos + 1]);
        }
    }
    j->fed += n;
    pthread_mutex_lock(&e->mu);
    e->stats.tokens_prefilled += (uint64_t)n;
    pthread_mutex_unlock(&e->mu);
    if (j->fed < j->n_input) return;
    j->t_prefill_end = ss_mono_ns();
    if (j->p.kind == SS_JOB_GENERATE) {
        j->have_logits = 1;
        generate_next(e, j);
    } else {
        finish(e, j, SS_FINISH_LENGTH, SS_OK);
    }
}

/* One batched step over the active jobs. */
static void step(ss_engine *e)
{
    int n = 0, budget = e->p.prefill_chunk;
    int rows_from[64];
    /* decode / finalize jobs first: they always get their token */
    for (int a = 0; a < e->n_active; a++) {
        ss_job *j = e->active[a];
        if (j->ph != PH_DECODE && j->ph != PH_FINALIZE) continue;
        e->seqs[n] = (ss_seq){.state = j->state, .tokens = &j->pending, .n_tokens = 1,
                              .logits = j->ph == PH_DECODE ? j->logits : NULL};
        e->seq_job[n++] = j;
    }
    /* then input chunks, oldest first, within the prefill budget */
    for (int a = 0; a < e->n_active && budget > 0; a++) {
        ss_job *j = e->active[a];
        if (j->ph != PH_INPUT) continue;
        int left = j->n_input - j->fed;
        int take = left < budget ? left : budget;
        if (take <= 0) continue;
        ss_seq q = {.state = j->state, .tokens = j->input + j->fed, .n_tokens = take};
        rows_from[n] = -1;
        if (j->p.kind == SS_JOB_GENERATE && take == left) {
            q.logits = j->logits;
        } else if (j->p.kind == SS_JOB_SCORE && j->fed + take >= j->n_ctx) {
            /* only positions >= n_ctx - 1 predict continuation tokens */
            int first = j->n_ctx - 1 > j->fed ? j->n_ctx - 1 : j->fed;
            if (first > j->fed) take = first - j->fed; /* stop just before: next chunk has logits */
            else {
                q.logits = j->rows;
                q.logits_all = 1;
                rows_from[n] = j->fed;
            }
            q.n_tokens = take;
        }
        budget -= take;
        e->seqs[n] = q;
        e->seq_job[n++] = j;
    }
    if (!n) return;
    ss_err err = ss_model_eval(e->m, e->ctx, e->seqs, n, 0);
    pthread_mutex_lock(&e->mu);
    e->stats.steps++;
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < n; i++) {
        ss_job *j = e->seq_job[i];
        if (err) {
            finish(e, j, SS_FINISH_ERROR, err);
            continue;
        }
        switch (j->ph) {
        case PH_DECODE:
            generate_next(e, j);
            break;
        case PH_FINALIZE:
            finish(e, j, j->res.finish, SS_OK);
            break;
        case PH_INPUT:
            after_input(e, j, e->seqs[i].n_tokens, rows_from[i]);
            break;
        default:
            break;
        }
    }
}

static void *engine_main(void *arg)
{
    ss_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stopping && !e->queue_head && e->n_active == 0)
            pthread_cond_wait(&e->cv, &e->mu);
        if (e->stopping) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        /* admit queued jobs */
        ss_job *admitted[64];
        int n_adm = 0;
        while (e->queue_head && e->n_active + n_adm < e->p.max_batch) {
            ss_job *j = e->queue_head;
            e->queue_head = j->next;
            if (!e->queue_head) e->queue_tail = NULL;
            e->n_queued--;
            j->next = NULL;
            admitted[n_adm++] = j;
        }
        pthread_mutex_unlock(&e->mu);
        for (int i = 0; i < n_adm; i++) {
            e->active[e->n_active++] = admitted[i];
            start_job(e, admitted[i]);
        }
        for (int a = 0; a < e->n_active; a++) {
            ss_job *j = e->active[a];
            if (j->ph != PH_DONE && atomic_load(&j->cancel)) finish(e, j, SS_FINISH_CANCELLED, SS_OK);
        }
        step(e);
        /* retire finished jobs, keeping the order (oldest first) */
        int w = 0;
        ss_job *done[64];
        int n_done = 0;
        for (int a = 0; a < e->n_active; a++) {
            ss_job *j = e->active[a];
            if (j->ph == PH_DONE) done[n_done++] = j;
            else e->active[w++] = j;
        }
        e->n_active = w;
        pthread_mutex_lock(&e->mu);
        e->stats.running = e->n_active;
        e->stats.queued = e->n_queued;
        pthread_mutex_unlock(&e->mu);
        for (int i = 0; i < n_done; i++) done[i]->p.on_done(done[i]->p.user, done[i]);
    }
    /* Shutting down: everything still here is cancelled. */
    for (int a = 0; a < e->n_active; a++) {
        finish(e, e->active[a], SS_FINISH_CANCELLED, SS_OK);
        e->active[a]->p.on_done(e->active[a]->p.user, e->active[a]);
    }
    e->n_active = 0;
    pthread_mutex_lock(&e->mu);
    ss_job *j = e->queue_head;
    e->queue_head = e->queue_tail = NULL;
    e->n_queued = 0;
    pthread_mutex_unlock(&e->mu);
    while (j) {
        ss_job *next = j->next;
        finish(e, j, SS_FINISH_CANCELLED, SS_OK);
        j->p.on_done(j->p.user, j);
        j = next;
    }
    return NULL;
}

/* ---- public ------------------------------------------------------------------------------- */

ss_err ss_engine_open(ss_engine **out, ss_model *m, const ss_engine_params *p)
{
    ss_engine_params def = ss_engine_default_params();
    if (!p) p = &def;
    if (p->max_batch < 1 || p->max_batch > 64 || p->max_queue < 1 || p->prefill_chunk < 1)
        return ss_fail(SS_ERR_INVALID, "engine: max_batch must be 1..64, others >= 1");
    ss_engine *e = calloc(1, sizeof *e);
    if (!e) return ss_fail(SS_ERR_NOMEM, "out of memory");
    e->m = m;
    e->p = *p;
    e->V = ss_model_get_info(m)->vocab_size;
    e->active = calloc((size_t)p->max_batch, sizeof *e->active);
    e->seqs = calloc((size_t)p->max_batch * 2, sizeof *e->seqs);
    e->seq_job = calloc((size_t)p->max_batch * 2, sizeof *e->seq_job);
    ss_err err = SS_OK;
    if (!e->active || !e->seqs || !e->seq_job) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((err = ss_ctx_new(m, &e->ctx))) goto fail;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        err = ss_fail(SS_ERR_INTERNAL, "cannot start the engine thread");
        pthread_mutex_destroy(&e->mu);
        pthread_cond_destroy(&e->cv);
        goto fail;
    }
    *out = e;
    return SS_OK;
fail:
    ss_ctx_free(e->ctx);
    free(e->active);
    free(e->seqs);
    free(e->seq_job);
    free(e);
    return err;
}

void ss_engine_close(ss_engine *e)
{
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->stopping = 1;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->thread, NULL);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    ss_ctx_free(e->ctx);
    free(e->active);
    free(e->seqs);
    free(e->seq_job);
    free(e);
}

ss_err ss_engine_submit(ss_engine *e, const ss_job_params *p, ss_job **out)
{
    if (!p->on_done) return ss_fail(SS_ERR_INVALID, "a job needs an on_done callback");
    ss_job *j = NULL;
    ss_err err = job_new(e, p, &j);
    if (err) return err;
    pthread_mutex_lock(&e->mu);
    if (e->stopping) {
        pthread_mutex_unlock(&e->mu);
        ss_job_free(j);
        return ss_fail(SS_ERR_BUSY, "the server is shutting down");
    }
    if (e->n_queued >= e->p.max_queue) {
        pthread_mutex_unlock(&e->mu);
        ss_job_free(j);
        return ss_fail(SS_ERR_BUSY, "too many requests are waiting (%d); try again later",
                       e->p.max_queue);
    }
    if (e->queue_tail) e->queue_tail->next = j;
    else e->queue_head = j;
    e->queue_tail = j;
    e->n_queued++;
    e->stats.queued = e->n_queued;
    *out = j; /* set before the engine can run on_done */
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return SS_OK;
}

void ss_engine_cancel(ss_engine *e, ss_job *j)
{
    (void)e;
    if (j) atomic_store(&j->cancel, 1);
}

void ss_engine_get_stats(ss_engine *e, ss_engine_stats *out)
{
    pthread_mutex_lock(&e->mu);
    *out = e->stats;
    pthread_mutex_unlock(&e->mu);
}

/* ---- synchronous helper ------------------------------------------------------------------- */

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} waiter;

static void waiter_done(void *user, ss_job *j)
{
    (void)j;
    waiter *w = user;
    pthread_mutex_lock(&w->mu);
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* on_token must still see the caller's user pointer: wrap it. */
typedef struct sync_job {
    waiter w;
    int (*on_token)(void *, const ss_token_event *);
    void *user;
} sync_job;

static int sync_on_token(void *user, const ss_token_event *ev)
{
    sync_job *s = user;
    return s->on_token ? s->on_token(s->user, ev) : 0;
}

static void sync_on_done(void *user, ss_job *j)
{
    waiter_done(&((sync_job *)user)->w, j);
}

ss_err ss_engine_run(ss_engine *e, const ss_job_params *p, ss_job **out)
{
    sync_job s = {.on_token = p->on_token, .user = p->user};
    pthread_mutex_init(&s.w.mu, NULL);
    pthread_cond_init(&s.w.cv, NULL);
    ss_job_params q = *p;
    q.on_token = sync_on_token;
    q.on_done = sync_on_done;
    q.user = &s;
    ss_job *j = NULL;
    ss_err err = ss_engine_submit(e, &q, &j);
    if (!err) {
        pthread_mutex_lock(&s.w.mu);
        while (!s.w.done) pthread_cond_wait(&s.w.cv, &s.w.mu);
        pthread_mutex_unlock(&s.w.mu);
        /* the job's params point at s: clear them before handing the job out */
        j->p.on_token = p->on_token;
        j->p.on_done = p->on_done;
        j->p.user = p->user;
        *out = j;
    }
    pthread_mutex_destroy(&s.w.mu);
    pthread_cond_destroy(&s.w.cv);
    return err;
}
