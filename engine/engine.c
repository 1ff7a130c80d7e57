/*
 * engine.c - the scheduler thread behind every inference request (continuous batching).
 *
 * Each step gathers every active job into one ss_model_eval() call: jobs that are decoding feed
 * their last sampled token, jobs still reading input feed a chunk of it, so 16 streams cost one
 * batched step instead of 16. Jobs join the batch at the next step after they are submitted and
 * leave it as soon as they finish.
 *
 * The input budget of a step (prefill_chunk tokens at most) is shared by water-filling: every job
 * reading input gets an equal share, and what a short prompt does not need goes to the others, so
 * a short prompt is read in one step beside a 100k-token one. While streams decode, the budget is
 * also sized by time: the engine keeps moving averages of a decode-only step's time and of one
 * input token's cost, and input time is paid from a credit that every step earns in proportion
 * to prefill_share (input_budget), so streams keep their share of the time on average. A job's
 * on_input callback runs after each of its chunks, so a prompt whose client left stops within
 * one chunk.
 *
 * Mixture of Tokens: the jobs of one batch (ss_engine_submit_batch) are split into groups that
 * move in lockstep. A group is admitted as a whole, its input chunks are cut to the same length
 * for every member, and its members carry one group id (unique among the groups in flight) into
 * ss_model_eval(); every other job carries 0 and runs alone. A member that finishes early becomes
 * a "ghost": its result is frozen (the state copied aside when one is wanted) but it keeps feeding
 * the tokens it samples until the whole group is over, so the others always see the same group.
 *
 * Ownership: a job is created by ss_engine_submit (inputs copied), owned by the engine until its
 * on_done callback ran, then by the caller, who frees it with ss_job_free.
 */
#include "engine.h"

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_util.h"

#define MIN_INPUT_CHUNK 16  /* input tokens a step with input feeds at least (beside decoding) */
#define EMA_WEIGHT      0.25 /* weight of the newest measurement in the moving averages */
#define MAX_STEP_SEQS   128 /* sequences one step can carry: 2 x the largest max_batch */

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
    int *cps;      /* checkpoint positions (copied from p.checkpoints) */
    int next_cp;   /* index of the next checkpoint to reach */
    int have_logits; /* logits hold the next-token distribution */
    float *logits; /* [V] next-token logits (GENERATE) */
    float *rows;   /* [chunk, V] per-position logits (SCORE) */
    const ss_model *m; /* logits and rows are its kept buffers (ss_buf_take) */
    int32_t pending; /* GENERATE: sampled token not yet fed */
    ss_sampler *sampler;
    int32_t *tokens;
    float *logprobs;
    int n_gen;
    float *token_logprobs; /* SCORE [n_cont] */
    int32_t *top_ids;      /* [n_logprobs] */
    float *top_lps;
    /* Mixture of Tokens */
    int group;       /* group id shared by the members (0: alone) */
    int group_n;     /* members of the group (1: alone) */
    int over;        /* grouped: the result is final; still stepped for the group's sake */
    ss_state *final; /* grouped: the state at the member's own finish (when a state is wanted) */
    int in_step;     /* placed in the batch of the current step */
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
    int draining; /* ss_engine_drain: no new jobs, queued ones cancelled by the thread */
    ss_job *queue_head, *queue_tail;
    int n_queued;
    ss_job **active; /* [max_batch] */
    int n_active;
    ss_ctx *ctx;
    ss_seq *seqs; /* [max_batch] */
    ss_job **seq_job;
    int next_group; /* next Mixture-of-Tokens group id (under mu) */
    ss_engine_stats stats;
    /* scheduler thread only: moving averages for the time-sized input budget (0: unknown) */
    double decode_ns; /* one decode-only step */
    double token_ns;  /* one input token beside decoding */
    double credit_ns; /* input time the streams can still give (see input_budget) */
    /* stats.steps and stats.tokens_generated, counted without the lock (the scheduler thread
     * writes them once per step and per token; ss_engine_get_stats reads them) */
    _Atomic uint64_t n_steps, n_tokens;
};

ss_engine_params ss_engine_default_params(void)
{
    return (ss_engine_params){
        .max_batch = 16, .max_queue = 256, .prefill_chunk = 256, .prefill_share = 0.4};
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
    free(j->cps);
    ss_state_free(j->state);
    if (j->m) {
        ss_buf_give(j->m, j->logits);
        ss_buf_give(j->m, j->rows);
    }
    ss_sampler_free(j->sampler);
    free(j->tokens);
    free(j->logprobs);
    free(j->token_logprobs);
    free(j->top_ids);
    free(j->top_lps);
    ss_state_free(j->final);
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

/* Checkpoint positions: at most SS_ENGINE_MAX_CHECKPOINTS, increasing, within the prompt. */
static ss_err check_checkpoints(const ss_job_params *p)
{
    if (p->n_checkpoints < 0 || p->n_checkpoints > SS_ENGINE_MAX_CHECKPOINTS ||
        (p->n_checkpoints && (!p->checkpoints || !p->on_checkpoint)))
        return ss_fail(SS_ERR_INVALID, "bad checkpoints (at most %d, with a callback)",
                       SS_ENGINE_MAX_CHECKPOINTS);
    for (int i = 0; i < p->n_checkpoints; i++) {
        int pos = p->checkpoints[i];
        if (pos < 1 || pos > p->n_prompt || (i && pos <= p->checkpoints[i - 1]))
            return ss_fail(SS_ERR_INVALID, "checkpoint %d at position %d: positions must be "
                           "increasing, within 1..%d", i, pos, p->n_prompt);
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
    if ((err =
             check_ids(p->prompt, p->n_prompt, V, p->kind == SS_JOB_SCORE ? "context" : "prompt")))
        return err;
    if ((err = check_ids(p->cont, p->n_cont, V, "continuation"))) return err;
    if (p->kind == SS_JOB_GENERATE) {
        if (p->max_tokens < 0) return ss_fail(SS_ERR_INVALID, "max_tokens must be >= 0");
        if (p->n_logprobs < 0 || p->n_logprobs > SS_ENGINE_MAX_LOGPROBS)
            return ss_fail(SS_ERR_INVALID, "logprobs must be between 0 and %d",
                           SS_ENGINE_MAX_LOGPROBS);
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
    if ((err = check_checkpoints(p))) return err;

    ss_job *j = calloc(1, sizeof *j);
    if (!j) return ss_fail(SS_ERR_NOMEM, "out of memory");
    j->p = *p;
    j->p.prompt = j->p.cont = NULL;
    j->p.start_state = NULL;
    j->p.start_decay = NULL;
    j->p.checkpoints = NULL;
    if (p->n_checkpoints) {
        j->cps = malloc((size_t)p->n_checkpoints * sizeof(int));
        if (!j->cps) goto nomem;
        memcpy(j->cps, p->checkpoints, (size_t)p->n_checkpoints * sizeof(int));
    }
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
        if (p->start_decay &&
            (err = ss_state_set_decay(j->state, p->start_decay, info->decay_floats)))
            goto fail;
    }
    /* logits and rows from the model's kept buffers: fresh, a scoring job's rows (51 MB at V =
     * 50,280) took a third of a 256-token score's time to touch on this VM (model/state.c) */
    j->m = e->m;
    if (p->kind == SS_JOB_GENERATE) {
        j->logits = ss_buf_take(e->m, (size_t)V);
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
        j->logits = ss_buf_take(e->m, (size_t)V);
        j->rows = ss_buf_take(e->m, (size_t)e->p.prefill_chunk * V);
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

/*
 * The job's own end: fill its result. A job that runs alone is done (PH_DONE); a member of a
 * group is only marked over (its result is frozen, the state copied aside) and keeps being
 * stepped until settle_groups() sees the whole group over. Idempotent for grouped jobs.
 */
static void finish(ss_engine *e, ss_job *j, ss_finish why, ss_err err)
{
    ss_job_result *r = &j->res;
    if (j->over) return;
    j->t_end = ss_mono_ns();
    const ss_state *st = (j->p.kind == SS_JOB_PREFILL || j->p.want_state) && !err ? j->state : NULL;
    if (j->group) {
        j->over = 1;
        if (st && why != SS_FINISH_CANCELLED) {
            /* the ghost steps that follow must not change the state handed back */
            err = j->final ? SS_OK : ss_state_new(e->m, &j->final);
            if (!err) err = ss_state_copy(j->final, j->state);
            if (err) why = SS_FINISH_ERROR;
            st = err ? NULL : j->final;
        } else {
            st = NULL;
        }
    } else {
        j->ph = PH_DONE;
    }
    r->finish = why;
    r->err = err;
    if (err) snprintf(r->errmsg, sizeof r->errmsg, "%s", ss_errmsg());
    r->n_prompt = j->fed;
    r->n_generated = j->n_gen;
    r->tokens = j->tokens;
    r->logprobs = j->logprobs;
    r->token_logprobs = j->token_logprobs;
    r->n_cont = j->p.kind == SS_JOB_SCORE ? j->p.n_cont : 0;
    r->state = st;
    r->group = j->group;
    r->group_size = j->group_n;
    int64_t pe = j->t_prefill_end ? j->t_prefill_end : j->t_end;
    r->queue_ms = ms_between(j->t_submit, j->t_start);
    r->prefill_ms = ms_between(j->t_start, pe);
    r->decode_ms = ms_between(pe, j->t_end);
    pthread_mutex_lock(&e->mu);
    e->stats.jobs_done++;
    pthread_mutex_unlock(&e->mu);
}

/* A group is done once every member is over: then all of them are (their on_done may run). */
static void settle_groups(ss_engine *e)
{
    for (int a = 0; a < e->n_active; a++) {
        ss_job *j = e->active[a];
        if (!j->group || j->ph == PH_DONE || !j->over) continue;
        int all = 1;
        for (int b = 0; b < e->n_active && all; b++)
            if (e->active[b]->group == j->group && !e->active[b]->over) all = 0;
        if (!all) continue;
        for (int b = 0; b < e->n_active; b++)
            if (e->active[b]->group == j->group) e->active[b]->ph = PH_DONE;
    }
}

/* Log-softmax helper for scoring: log p(id) from a row of logits. */
static float row_logprob(const float *row, int V, int32_t id)
{
    return ss_logprob_of(row, V, id);
}

/* A ghost (grouped member already over) picks its next token to keep the group's shape. */
static void ghost_next(ss_job *j)
{
    j->pending = j->have_logits ? ss_sampler_sample(j->sampler, j->logits, NULL) : 0;
    j->ph = PH_DECODE;
}

/* GENERATE: sample the next token from j->logits, report it, decide whether to go on. */
static void generate_next(ss_engine *e, ss_job *j)
{
    const int V = e->V;
    const ss_model_info *info = ss_model_get_info(e->m);
    if (j->over) {
        ghost_next(j);
        return;
    }
    if (j->n_gen >= j->p.max_tokens) {
        finish(e, j, SS_FINISH_LENGTH, SS_OK);
        if (j->over) ghost_next(j);
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
    atomic_fetch_add_explicit(&e->n_tokens, 1, memory_order_relaxed);
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
        if (j->over) j->ph = PH_DECODE; /* a ghost feeds its last token like any other */
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
    if (j->p.kind == SS_JOB_SCORE && rows_from >= 0 && !j->over) {
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
    if (j->p.on_input && !j->over && j->p.on_input(j->p.user, j->fed, j->n_input) < 0) {
        finish(e, j, SS_FINISH_CANCELLED, SS_OK);
        return;
    }
    if (j->next_cp < j->p.n_checkpoints && j->cps[j->next_cp] == j->fed && !j->over) {
        j->next_cp++;
        if (j->p.on_checkpoint(j->p.user, j->fed, j->state) < 0) {
            finish(e, j, SS_FINISH_CANCELLED, SS_OK);
            return;
        }
    }
    if (j->fed < j->n_input) return;
    j->t_prefill_end = ss_mono_ns();
    if (j->p.kind == SS_JOB_GENERATE) {
        j->have_logits = 1;
        generate_next(e, j);
    } else {
        finish(e, j, SS_FINISH_LENGTH, SS_OK);
    }
}

/*
 * How many of `take` input tokens j feeds now. SCORE stops a chunk just before position
 * n_ctx - 1: from there on every position predicts a continuation token, so those chunks ask
 * for the logits of all their rows.
 */
static int input_take(const ss_job *j, int take)
{
    if (j->p.kind == SS_JOB_SCORE && j->fed < j->n_ctx - 1 && j->fed + take >= j->n_ctx)
        take = j->n_ctx - 1 - j->fed;
    /* a chunk ends at the next checkpoint, so the state there can be copied out */
    if (j->next_cp < j->p.n_checkpoints && j->fed + take > j->cps[j->next_cp])
        take = j->cps[j->next_cp] - j->fed;
    return take;
}

/* The sequence of j for a step that feeds `take` of its input tokens. */
static ss_seq input_seq(ss_job *j, int take, int *rows_from)
{
    ss_seq q = {.state = j->state, .tokens = j->input + j->fed, .n_tokens = take,
                .group = j->group};
    *rows_from = -1;
    if (j->p.kind == SS_JOB_GENERATE && j->fed + take == j->n_input) {
        q.logits = j->logits;
    } else if (j->p.kind == SS_JOB_SCORE && j->fed >= j->n_ctx - 1) {
        q.logits = j->rows;
        q.logits_all = 1;
        *rows_from = j->fed;
    }
    return q;
}

/*
 * Input tokens this step may feed. With nothing decoding: prefill_chunk. While n_decode streams
 * decode, input time is paid for with credit: every step earns prefill_share of its time, a step
 * with input spends what it took beyond a decode-only step, and input runs only while the credit
 * is not negative (0 then: this step decodes alone). So the streams keep (1 - prefill_share) of
 * their speed on average, whatever a chunk costs on this model and machine. A step with input
 * feeds what the moving averages say fits in its share, and MIN_INPUT_CHUNK at least (fewer rows
 * would make the step's GEMMs no cheaper per token).
 */
static int input_budget(ss_engine *e, int n_decode)
{
    const int full = e->p.prefill_chunk;
    const double share = e->p.prefill_share;
    if (!n_decode || share >= 1) return full;
    /* Nothing measured yet: one full mixed step (its jobs may be short), then it is paid for. */
    if (e->decode_ns <= 0) return e->credit_ns < 0 ? 0 : full;
    if (e->credit_ns < 0) return 0;
    double k = e->token_ns > 0 ? e->decode_ns * share / (1 - share) / e->token_ns : 0;
    if (k < MIN_INPUT_CHUNK) k = MIN_INPUT_CHUNK;
    return k >= full ? full : (int)k;
}

/* Fold a step's time into the moving averages and the input credit. */
static void note_step_time(ss_engine *e, int n_decode, int n_input, double ns)
{
    if (!n_decode) return; /* nobody to be fair to */
    const double share = e->p.prefill_share;
    if (!n_input) {
        e->decode_ns = e->decode_ns > 0 ? e->decode_ns + EMA_WEIGHT * (ns - e->decode_ns) : ns;
        e->credit_ns += share * ns;
        /* no hoarding: idle decoding earns at most one step's worth of input time */
        if (e->credit_ns > e->decode_ns) e->credit_ns = e->decode_ns;
        return;
    }
    double extra = e->decode_ns > 0 ? ns - e->decode_ns : ns;
    if (extra < 0) extra = 0;
    e->credit_ns += share * ns - extra;
    if (e->decode_ns > 0) {
        double per = extra / n_input;
        e->token_ns = e->token_ns > 0 ? e->token_ns + EMA_WEIGHT * (per - e->token_ns) : per;
    }
}

/* A job reading input this step, alone or as the first member of its group. */
typedef struct input_unit {
    ss_job *j;
    int members; /* 1, or the group's members */
    long want;   /* input tokens it could feed (all members together) */
} input_unit;

/*
 * Share `budget` input tokens among the jobs reading input (water-filling: the smallest demands
 * are met first, the rest split equally), and place their chunks in the step from seq n on.
 * Returns the new number of sequences; *fed is the input tokens placed.
 */
static int place_inputs(ss_engine *e, int n, int budget, int *rows_from, int *fed)
{
    input_unit units[MAX_STEP_SEQS];
    int nu = 0;
    *fed = 0;
    for (int a = 0; a < e->n_active; a++) {
        ss_job *j = e->active[a];
        if (j->ph != PH_INPUT || j->in_step || j->fed >= j->n_input) continue;
        int members = j->group ? j->group_n : 1;
        int seen = 0; /* another member of its group comes first */
        for (int u = 0; u < nu && !seen; u++) seen = j->group && units[u].j->group == j->group;
        if (seen) continue;
        /* insertion by demand, smallest first */
        long want = (long)(j->n_input - j->fed) * members;
        int at = nu++;
        while (at > 0 && units[at - 1].want > want) {
            units[at] = units[at - 1];
            at--;
        }
        units[at] = (input_unit){.j = j, .members = members, .want = want};
    }
    int left = budget;
    for (int u = 0; u < nu && left > 0; u++) {
        ss_job *j = units[u].j;
        long share = left / (nu - u);
        long give = units[u].want < share ? units[u].want : share;
        int take = (int)(give / units[u].members);
        if (take < 1) take = 1; /* a group wider than its share still moves */
        take = input_take(j, take);
        for (int b = 0; b < e->n_active; b++) {
            ss_job *m = e->active[b];
            if (m != j && (!j->group || m->group != j->group)) continue;
            if (m->ph != PH_INPUT || m->in_step || m->fed != j->fed) continue;
            e->seqs[n] = input_seq(m, take, &rows_from[n]);
            m->in_step = 1;
            e->seq_job[n++] = m;
            *fed += take;
        }
        left -= take * units[u].members;
    }
    return n;
}

/* One batched step over the active jobs. */
static void step(ss_engine *e)
{
    int n = 0;
    int rows_from[MAX_STEP_SEQS];
    for (int a = 0; a < e->n_active; a++) e->active[a]->in_step = 0;
    /* decode / finalize jobs first: they always get their token */
    for (int a = 0; a < e->n_active; a++) {
        ss_job *j = e->active[a];
        if (j->ph != PH_DECODE && j->ph != PH_FINALIZE) continue;
        /* a grouped job that finalizes goes on as a ghost: it needs logits to sample from */
        int want_logits = j->ph == PH_DECODE || j->group;
        e->seqs[n] = (ss_seq){.state = j->state, .tokens = &j->pending, .n_tokens = 1,
                              .logits = want_logits ? j->logits : NULL, .group = j->group};
        rows_from[n] = -1;
        e->seq_job[n++] = j;
    }
    const int n_decode = n;
    int n_input = 0;
    n = place_inputs(e, n, input_budget(e, n_decode), rows_from, &n_input);
    if (!n) return;
    int64_t t0 = ss_mono_ns();
    ss_err err = ss_model_eval(e->m, e->ctx, e->seqs, n, 0);
    note_step_time(e, n_decode, n_input, (double)(ss_mono_ns() - t0));
    atomic_fetch_add_explicit(&e->n_steps, 1, memory_order_relaxed);
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
            if (j->over) {
                j->have_logits = 1;
                ghost_next(j);
            }
            break;
        case PH_INPUT:
            after_input(e, j, e->seqs[i].n_tokens, rows_from[i]);
            break;
        default:
            break;
        }
    }
}

/* Jobs taken off the queue that will never start: each finishes cancelled (on_done runs). */
static void cancel_list(ss_engine *e, ss_job *j)
{
    while (j) {
        ss_job *next = j->next;
        finish(e, j, SS_FINISH_CANCELLED, SS_OK);
        j->p.on_done(j->p.user, j);
        j = next;
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
        /* draining: what waits in the queue is cancelled now, never started */
        ss_job *dropped = NULL;
        if (e->draining && e->queue_head) {
            dropped = e->queue_head;
            e->queue_head = e->queue_tail = NULL;
            e->n_queued = 0;
            e->stats.queued = 0;
        }
        /* admit queued jobs */
        ss_job *admitted[SS_ENGINE_MAX_BATCH];
        int n_adm = 0;
        while (e->queue_head) {
            /* a group comes in whole (its members are queued one after the other) */
            int need = e->queue_head->group ? e->queue_head->group_n : 1;
            if (e->n_active + n_adm + need > e->p.max_batch) break;
            for (int k = 0; k < need && e->queue_head; k++) {
                ss_job *j = e->queue_head;
                e->queue_head = j->next;
                if (!e->queue_head) e->queue_tail = NULL;
                e->n_queued--;
                j->next = NULL;
                admitted[n_adm++] = j;
            }
        }
        pthread_mutex_unlock(&e->mu);
        cancel_list(e, dropped);
        for (int i = 0; i < n_adm; i++) {
            e->active[e->n_active++] = admitted[i];
            start_job(e, admitted[i]);
        }
        for (int a = 0; a < e->n_active; a++) {
            ss_job *j = e->active[a];
            if (j->ph != PH_DONE && !j->over && atomic_load(&j->cancel))
                finish(e, j, SS_FINISH_CANCELLED, SS_OK);
        }
        settle_groups(e);
        step(e);
        settle_groups(e);
        /* retire finished jobs, keeping the order (oldest first) */
        int w = 0;
        ss_job *done[SS_ENGINE_MAX_BATCH];
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
    cancel_list(e, j);
    return NULL;
}

/* ---- public ------------------------------------------------------------------------------- */

ss_err ss_engine_open(ss_engine **out, ss_model *m, const ss_engine_params *p)
{
    ss_engine_params def = ss_engine_default_params();
    if (!p) p = &def;
    if (p->max_batch < 1 || p->max_batch > SS_ENGINE_MAX_BATCH || p->max_queue < 1 ||
        p->prefill_chunk < 1 || !(p->prefill_share > 0 && p->prefill_share <= 1))
        return ss_fail(SS_ERR_INVALID, "engine: max_batch must be 1..%d, prefill_share in (0, 1], "
                                       "others >= 1", SS_ENGINE_MAX_BATCH);
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
    return ss_engine_submit_batch(e, p, 1, out);
}

/* Members of one Mixture-of-Tokens group must be able to move in lockstep. */
static ss_err check_group(const ss_job_params *ps, int from, int to)
{
    const ss_job_params *a = &ps[from];
    for (int i = from + 1; i < to; i++) {
        const ss_job_params *b = &ps[i];
        if (b->kind != a->kind)
            return ss_fail(SS_ERR_INVALID, "batch members %d and %d are jobs of different kinds; "
                                           "a mixture-of-tokens group runs one kind", from, i);
        if (b->n_prompt != a->n_prompt)
            return ss_fail(SS_ERR_INVALID,
                           "batch member %d has %d %s tokens and member %d has %d: the members "
                           "of a mixture-of-tokens group move in lockstep and need the same "
                           "length",
                           i, b->n_prompt, a->kind == SS_JOB_SCORE ? "context" : "prompt", from,
                           a->n_prompt);
        if (a->kind == SS_JOB_SCORE && b->n_cont != a->n_cont)
            return ss_fail(SS_ERR_INVALID,
                           "batch member %d has %d continuation tokens and member %d has %d: the "
                           "members of a mixture-of-tokens group move in lockstep and need the "
                           "same length",
                           i, b->n_cont, from, a->n_cont);
    }
    return SS_OK;
}

ss_err ss_engine_submit_batch(ss_engine *e, const ss_job_params *ps, int n, ss_job **out)
{
    if (n < 1) return ss_fail(SS_ERR_INVALID, "an empty batch");
    for (int i = 0; i < n; i++)
        if (!ps[i].on_done) return ss_fail(SS_ERR_INVALID, "a job needs an on_done callback");
    const int g = ss_model_get_info(e->m)->mot_group_size;
    const int grouped = g > 1 && n > 1;
    ss_err err = SS_OK;
    if (grouped) {
        if ((n < g ? n : g) > e->p.max_batch)
            return ss_fail(SS_ERR_INVALID,
                           "a mixture-of-tokens group of %d sequences does not fit in the "
                           "engine's batch of %d (statesoupd --max-batch)",
                           n < g ? n : g, e->p.max_batch);
        for (int s = 0; s < n; s += g)
            if ((err = check_group(ps, s, s + g < n ? s + g : n))) return err;
    }
    ss_job **jobs = calloc((size_t)n, sizeof *jobs);
    if (!jobs) return ss_fail(SS_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && !err; i++) {
        err = job_new(e, &ps[i], &jobs[i]);
        if (err && n > 1) {
            char msg[256];
            snprintf(msg, sizeof msg, "%s", ss_errmsg());
            err = ss_fail(err, "batch member %d: %s", i, msg);
        }
    }
    if (err) goto fail;
    pthread_mutex_lock(&e->mu);
    if (e->stopping || e->draining) {
        pthread_mutex_unlock(&e->mu);
        err = ss_fail(SS_ERR_BUSY, "the server is shutting down");
        goto fail;
    }
    if (e->n_queued + n > e->p.max_queue) {
        pthread_mutex_unlock(&e->mu);
        err = ss_fail(SS_ERR_BUSY, "too many requests are waiting (%d); try again later",
                      e->p.max_queue);
        goto fail;
    }
    for (int s = 0; grouped && s < n; s += g) {
        int members = s + g < n ? g : n - s;
        if (members < 2) continue; /* a group of one runs alone */
        if (e->next_group < 1 || e->next_group == INT_MAX) e->next_group = 1;
        int id = e->next_group++;
        for (int i = s; i < s + members; i++) {
            jobs[i]->group = id;
            jobs[i]->group_n = members;
            jobs[i]->p.n_checkpoints = 0; /* a mixed state is not the prompt's alone */
        }
    }
    for (int i = 0; i < n; i++) {
        if (!jobs[i]->group) jobs[i]->group_n = 1;
        if (e->queue_tail) e->queue_tail->next = jobs[i];
        else e->queue_head = jobs[i];
        e->queue_tail = jobs[i];
        out[i] = jobs[i]; /* set before the engine can run on_done */
    }
    e->n_queued += n;
    e->stats.queued = e->n_queued;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    free(jobs);
    return SS_OK;
fail:
    for (int i = 0; i < n; i++) ss_job_free(jobs[i]);
    free(jobs);
    return err;
}

void ss_engine_drain(ss_engine *e)
{
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->draining = 1;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
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
    out->steps = atomic_load_explicit(&e->n_steps, memory_order_relaxed);
    out->tokens_generated = atomic_load_explicit(&e->n_tokens, memory_order_relaxed);
}

/* ---- synchronous helper ------------------------------------------------------------------- */

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int left; /* jobs not done yet */
} waiter;

/* on_token must still see the caller's user pointer: wrap it. */
typedef struct sync_job {
    waiter *w;
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
    (void)j;
    waiter *w = ((sync_job *)user)->w;
    pthread_mutex_lock(&w->mu);
    if (--w->left == 0) pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

ss_err ss_engine_run_batch(ss_engine *e, const ss_job_params *ps, int n, ss_job **out)
{
    if (n < 1) return ss_fail(SS_ERR_INVALID, "an empty batch");
    waiter w = {.left = n};
    sync_job *s = calloc((size_t)n, sizeof *s);
    ss_job_params *q = calloc((size_t)n, sizeof *q);
    if (!s || !q) {
        free(s);
        free(q);
        return ss_fail(SS_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    for (int i = 0; i < n; i++) {
        s[i] = (sync_job){.w = &w, .on_token = ps[i].on_token, .user = ps[i].user};
        q[i] = ps[i];
        q[i].on_token = sync_on_token;
        q[i].on_done = sync_on_done;
        q[i].user = &s[i];
    }
    ss_err err = ss_engine_submit_batch(e, q, n, out);
    if (!err) {
        pthread_mutex_lock(&w.mu);
        while (w.left > 0) pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        /* the jobs' params point at s: clear them before handing the jobs out */
        for (int i = 0; i < n; i++) {
            out[i]->p.on_token = ps[i].on_token;
            out[i]->p.on_done = ps[i].on_done;
            out[i]->p.user = ps[i].user;
        }
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    free(s);
    free(q);
    return err;
}

ss_err ss_engine_run(ss_engine *e, const ss_job_params *p, ss_job **out)
{
    return ss_engine_run_batch(e, p, 1, out);
}
