/*
 * engine.h - the inference engine of statesoupd: one scheduler thread that owns the model's
 * compute and serves every request with continuous batching.
 *
 * Requests become jobs. At each step the scheduler builds one batch of every runnable job: decode
 * jobs contribute their next token, jobs still reading their prompt contribute a chunk of it, and
 * one ss_model_eval() runs them all. The input budget of a step is shared fairly among the jobs
 * reading input (a short prompt is read at once beside a long one) and, while streams decode, it
 * is sized by time so that a long prompt never takes more than a set share of each step.
 * Catalog reads and merges never go through the engine, so a long generation cannot block them.
 *
 * Jobs report back through callbacks that run on the scheduler thread: they must be quick (copy
 * the data, signal a waiter, resume an HTTP connection) and must not call back into the engine
 * except ss_engine_cancel().
 *
 * Mixture of Tokens (ss_seq.group): the engine mixes only the jobs of one batch submitted with
 * ss_engine_submit_batch (the prompts of one request), never jobs of different submissions; a job
 * submitted alone always runs as a group of one (mixing disabled).
 *
 * Threading: every function here is thread-safe.
 */
#ifndef SS_ENGINE_H
#define SS_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "ss_err.h"
#include "ss_model.h"

/* Most sequences one engine step decodes together (ss_engine_params.max_batch). */
#define SS_ENGINE_MAX_BATCH 64
/* Most top alternatives reported per generated token (ss_job_params.n_logprobs). */
#define SS_ENGINE_MAX_LOGPROBS 20
/* Most checkpoints one job may ask for (ss_job_params.checkpoints). */
#define SS_ENGINE_MAX_CHECKPOINTS 256

typedef struct ss_engine ss_engine;
typedef struct ss_job ss_job;

typedef enum ss_job_kind {
    SS_JOB_PREFILL,  /* feed the prompt, return the state (POST /v1/states) */
    SS_JOB_GENERATE, /* feed the prompt, then sample up to max_tokens */
    SS_JOB_SCORE,    /* feed context + continuation, return per-token logprobs of the latter */
} ss_job_kind;

typedef enum ss_finish {
    SS_FINISH_NONE = 0,
    SS_FINISH_LENGTH, /* max_tokens reached */
    SS_FINISH_EOS,    /* the model produced its end-of-sequence token */
    SS_FINISH_STOP,   /* on_token asked to stop (stop string matched) */
    SS_FINISH_CANCELLED, /* ss_engine_cancel() or on_token returned < 0 */
    SS_FINISH_ERROR,  /* see ss_job_result.err */
} ss_finish;

/* One generated token as reported to on_token. */
typedef struct ss_token_event {
    int32_t id;
    float logprob;        /* log p(id) under the model (temperature 1) */
    int n_top;            /* entries in top_ids/top_logprobs (the job's n_logprobs) */
    const int32_t *top_ids;
    const float *top_logprobs;
    int index;            /* 0-based position among generated tokens */
} ss_token_event;

/* What a finished job hands back. Pointers are owned by the job (freed by ss_job_free). */
typedef struct ss_job_result {
    ss_err err;           /* SS_OK unless finish == SS_FINISH_ERROR */
    char errmsg[256];
    ss_finish finish;
    int n_prompt;         /* tokens fed (prompt or context + continuation) */
    int n_generated;
    const int32_t *tokens; /* [n_generated] */
    const float *logprobs; /* [n_generated] */
    /* SCORE: [n_cont] log p(cont[i] | ...); NAN where nothing predicts the token */
    const float *token_logprobs;
    int n_cont;
    /* PREFILL always, GENERATE/SCORE when want_state: the state after the last token fed
     * (NULL for a cancelled member of a Mixture-of-Tokens group). */
    const ss_state *state;
    /* Mixture of Tokens: the group the job was stepped in (0: alone) and its number of members
     * (1: alone, mixing disabled). */
    int group, group_size;
    double queue_ms, prefill_ms, decode_ms; /* timings */
} ss_job_result;

typedef struct ss_job_params {
    ss_job_kind kind;
    /* Starting state: state_floats floats, copied at submit; NULL = the zero state. */
    const float *start_state;
    /* Its cumulative decay (decay_floats floats, copied at submit), or NULL: unknown when
     * start_state is given (the job's state then has no decay: ss_state_has_decay is 0). */
    const float *start_decay;
    int start_has_hidden; /* the start state has a meaningful final_hidden (not the zero state) */
    /* PREFILL / GENERATE: the prompt; SCORE: the context (may be empty). Copied at submit. */
    const int32_t *prompt;
    int n_prompt;
    /* SCORE: the continuation. Copied at submit. */
    const int32_t *cont;
    int n_cont;
    /* GENERATE */
    int max_tokens;
    ss_sample_params sample;
    int n_logprobs;    /* top alternatives to report per token (0..SS_ENGINE_MAX_LOGPROBS) */
    int stop_at_eos;   /* finish with SS_FINISH_EOS on the model's eos token (default yes) */
    int want_state;    /* keep the final state in the result */
    /*
     * Called on the scheduler thread for each generated token. Return 0 to go on, 1 to stop
     * (SS_FINISH_STOP: a stop string matched), -1 to cancel (client went away).
     */
    int (*on_token)(void *user, const ss_token_event *ev);
    /*
     * Optional. Called on the scheduler thread after each chunk of the job's input (prompt,
     * context, continuation) was fed, with the tokens fed so far and the total. Return 0 to go
     * on, -1 to cancel (the client went away): a long prompt then stops within one chunk.
     */
    int (*on_input)(void *user, int fed, int total);
    /*
     * Optional checkpoints: n_checkpoints input positions, strictly increasing, in
     * 1..n_prompt (at most SS_ENGINE_MAX_CHECKPOINTS; copied at submit). The engine cuts the
     * input chunks at these positions, and once the first pos tokens are fed it calls
     * on_checkpoint (scheduler thread) with the state at that point, lent for the call only:
     * copy it out (ss_state_copy or ss_state_cdata). Return 0 to go on, -1 to cancel (out of
     * memory). A member of a Mixture-of-Tokens group (its state depends on the
     * others) takes no checkpoints: they are ignored.
     */
    const int *checkpoints;
    int n_checkpoints;
    int (*on_checkpoint)(void *user, int pos, const ss_state *state);
    /* Called once on the scheduler thread when the job ends (any way). The job's result is
     * readable from then on; the user may free the job from inside or after this callback. */
    void (*on_done)(void *user, ss_job *job);
    void *user;
} ss_job_params;

typedef struct ss_engine_params {
    int max_batch;     /* most sequences decoded together (1..SS_ENGINE_MAX_BATCH, default 16) */
    int max_queue;     /* most jobs waiting (default 256): beyond that submit gives SS_ERR_BUSY */
    int prefill_chunk; /* most input tokens fed in one step, shared by all jobs reading input
                        * (default 256) */
    /*
     * While jobs are decoding, the share of the time that input chunks may take (0 < x <= 1,
     * default 0.4): input steps are paid from a credit that every step earns in proportion to x,
     * so running streams keep about (1 - x) of their speed beside a long prompt (1: no limit).
     * With nothing decoding a step feeds prefill_chunk tokens.
     */
    double prefill_share;
} ss_engine_params;

/* The defaults named above (max_batch 16, max_queue 256, prefill_chunk 256). */
ss_engine_params ss_engine_default_params(void);

/*
 * Start the scheduler thread for model m (not owned; must outlive the engine); p may be NULL for
 * the defaults. SS_ERR_INVALID for parameters out of range, SS_ERR_NOMEM, SS_ERR_INTERNAL when
 * the thread cannot be started. *out is set only on success.
 */
ss_err ss_engine_open(ss_engine **out, ss_model *m, const ss_engine_params *p);
/* Stop: pending and running jobs finish with SS_FINISH_CANCELLED (their on_done runs), then the
 * thread exits. NULL is a no-op. */
void ss_engine_close(ss_engine *e);

/*
 * Queue a job. Validates the parameters (token ids in range, sample params, sizes: SS_ERR_INVALID)
 * and copies every input; SS_ERR_BUSY when the queue is full, SS_ERR_NOMEM. Requests of the HTTP
 * API arrive here already validated by api/ (whose messages name the request's fields); this
 * check is the engine's own contract towards its direct callers (bench, tests). On success *out is
 * the job (free it with ss_job_free once on_done has run). For a Mixture-of-Tokens model the job
 * runs alone (a group of one).
 */
ss_err ss_engine_submit(ss_engine *e, const ss_job_params *p, ss_job **out);

/*
 * Queue the n jobs of one batch (the prompts of one request) at once: all are queued or none.
 *
 * For a Mixture-of-Tokens model (ss_model_info.mot_group_size g > 1) the jobs are split into
 * consecutive groups of g (the last one may be smaller; a group of one runs alone). The members
 * of a group are admitted together and stepped in lockstep: at every step they feed the same
 * number of tokens and go to ss_model_eval() with one group id that no other group shares, so
 * the model mixes them. Members of a group must be of the same kind and have prompts of the same
 * length (SCORE: contexts and continuations of the same lengths); SS_ERR_INVALID names the first
 * that does not. A group larger than the engine's max_batch cannot run: SS_ERR_INVALID.
 * A member that finishes before the others (end-of-sequence token, stop, its max_tokens,
 * cancelled) goes on being stepped with the tokens it samples, so that the group does not change
 * under the others; its result is cut at its own finish (tokens, logprobs, state, timings) and
 * on_token is not called for it any more. The on_done of every member runs once the whole group
 * is over.
 *
 * For other models the jobs are independent, exactly as if submitted one by one.
 * SS_ERR_BUSY when the queue has no room for all n. On success out[0..n-1] are the jobs (each
 * freed with ss_job_free once its on_done has run).
 */
ss_err ss_engine_submit_batch(ss_engine *e, const ss_job_params *ps, int n, ss_job **out);
/*
 * The first step of a shutdown: from now on submissions fail (SS_ERR_BUSY, "shutting down") and
 * every job still waiting in the queue is cancelled at the scheduler's next turn, without
 * running (SS_FINISH_CANCELLED, its on_done runs); jobs already running go on to their end.
 * Idempotent; ss_engine_close() still has to be called.
 */
void ss_engine_drain(ss_engine *e);
/* Ask the job to stop at the next step (idempotent; safe after it finished). */
void ss_engine_cancel(ss_engine *e, ss_job *job);
/* Result of a finished job (valid after on_done). */
const ss_job_result *ss_job_get_result(const ss_job *job);
/* Free a job. Must be called exactly once, after on_done ran; NULL is a no-op. */
void ss_job_free(ss_job *job);

/*
 * Convenience for synchronous callers (CLI, tests): submit and wait for the end.
 * on_done in p is ignored (used internally); on_token is honoured. Returns ss_engine_submit's
 * errors; a job that ran reports how it ended in its result.
 */
ss_err ss_engine_run(ss_engine *e, const ss_job_params *p, ss_job **out);
/* The same for a batch (ss_engine_submit_batch): returns once every job of it is done. */
ss_err ss_engine_run_batch(ss_engine *e, const ss_job_params *ps, int n, ss_job **out);

/* Counters for /metrics. */
typedef struct ss_engine_stats {
    uint64_t tokens_prefilled;
    uint64_t tokens_generated;
    uint64_t steps;
    uint64_t jobs_done;
    int queued;
    int running;
} ss_engine_stats;
/* A snapshot of the counters (consistent with each other: taken under the engine's lock). */
void ss_engine_get_stats(ss_engine *e, ss_engine_stats *out);

#endif
