/*
 * infer_job.c - the life of an inference request: its context, the engine's callbacks, the event
 * stream, and submitting its jobs.
 *
 * The handler (infer.c) parks the request after infer_submit; the jobs' callbacks run on the
 * engine thread: on_token detokenizes (whole UTF-8 characters only), runs the stop-string matcher
 * (ss_stopper) and, when streaming, appends an SSE event; on_done finishes the text and wakes the
 * request when every choice is done. The continuation (infer_finish, infer_answer.c) then runs on
 * a host thread.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer.h"
#include "ss_util.h"

/* ---- context lifetime ---------------------------------------------------------------------- */

/* Free the context and everything its choices hold (the host calls this when the last
 * reference to the request goes). */
static void infer_free(void *p)
{
    infer *inf = p;
    for (int i = 0; i < MAX_CHOICES; i++) {
        choice *c = &inf->ch[i];
        ss_job_free(c->job);
        free(c->prompt);
        free(c->cont);
        api_save_free(&c->save);
        free(c->prompt_text);
        ss_detok_free(c->detok);
        ss_stopper_free(c->stop);
        free(c->text);
        free(c->top_ids);
        free(c->top_lps);
    }
    api_start_free(&inf->start);
    api_save_free(&inf->save);
    api_search_free(&inf->search);
    api_retrieve_free(inf->retr);
    json_decref(inf->retrieved);
    for (int k = 0; k < API_MAX_CHECKPOINTS; k++) {
        free(inf->cp_data[k]);
        free(inf->ccp_data[k]);
    }
    pthread_mutex_destroy(&inf->mu);
    free(inf);
}

/* The request is over: if the client went away, stop the work done for it. */
static void infer_over(void *p, int aborted)
{
    infer *inf = p;
    if (!aborted) return;
    pthread_mutex_lock(&inf->mu);
    for (int i = 0; i < inf->n_choices; i++)
        if (inf->ch[i].job && !inf->ch[i].done) api_cancel(inf->a, inf->ch[i].job);
    api_retrieve_cancel(inf);
    pthread_mutex_unlock(&inf->mu);
}

ss_err infer_new(ss_api *a, ss_host_req *r, endpoint ep, infer **out)
{
    infer *inf = calloc(1, sizeof *inf);
    if (!inf) return ss_fail(SS_ERR_NOMEM, "out of memory");
    inf->a = a;
    inf->req = r;
    inf->scope = api_scope(r);
    inf->ep = ep;
    inf->stop_at_eos = 1;
    pthread_mutex_init(&inf->mu, NULL);
    for (int i = 0; i < MAX_CHOICES; i++) {
        inf->ch[i].inf = inf;
        inf->ch[i].index = i;
    }
    ss_host_set_user(r, inf, infer_free, infer_over);
    *out = inf;
    return SS_OK;
}

/* ---- event stream -------------------------------------------------------------------------- */

int infer_sse_send(ss_host_req *r, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    if (!text) return -1;
    size_t n = strlen(text);
    char *ev = malloc(n + 9);
    if (!ev) {
        free(text);
        return -1;
    }
    memcpy(ev, "data: ", 6);
    memcpy(ev + 6, text, n);
    memcpy(ev + 6 + n, "\n\n", 3);
    int rc = ss_host_stream_write(r, ev, n + 8);
    free(ev);
    free(text);
    return rc;
}

void infer_sse_done(ss_host_req *r)
{
    ss_host_stream_write(r, "data: [DONE]\n\n", 14);
    ss_host_stream_end(r);
}

/* ---- engine callbacks (engine thread) ------------------------------------------------------ */

/* Append n bytes to a growing buffer (NUL-terminated); -1 on OOM. */
static int buf_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 64;
        while (nc < *len + n + 1) nc *= 2;
        char *p = realloc(*buf, nc);
        if (!p) return -1;
        *buf = p;
        *cap = nc;
    }
    if (n) memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

/*
 * A token of choice c (engine thread): keep its top alternatives, detokenize it, run the stop
 * matcher, and when streaming send the new text as an event. Returns 1 when a stop string
 * matched, -1 to cancel (out of memory, or nobody waits for the answer any more), else 0.
 */
static int on_token(void *user, const ss_token_event *ev)
{
    choice *c = user;
    infer *inf = c->inf;
    if (c->top_ids && ev->n_top > 0 && ev->index <= inf->max_tokens) {
        memcpy(c->top_ids + (size_t)ev->index * inf->n_logprobs, ev->top_ids,
               (size_t)ev->n_top * sizeof(int32_t));
        memcpy(c->top_lps + (size_t)ev->index * inf->n_logprobs, ev->top_logprobs,
               (size_t)ev->n_top * sizeof(float));
    }
    const char *piece = "";
    size_t plen = 0;
    int is_eos = inf->stop_at_eos && ev->id == inf->a->info->eos_token_id;
    if (c->detok && !is_eos) {
        piece = ss_detok_push(c->detok, ev->id, &plen);
        if (!piece) {
            piece = "";
            plen = 0;
        }
    }
    size_t before = c->text_len, olen = 0;
    const char *out = ss_stopper_push(c->stop, piece, plen, &olen, &c->stop_hit);
    if (!out || buf_append(&c->text, &c->text_len, &c->text_cap, out, olen)) {
        c->oom = 1;
        return -1;
    }
    if (inf->stream) {
        json_t *j = infer_token_event(inf, c, ev, before);
        c->streamed = c->text_len;
        if (infer_sse_send(inf->req, j) < 0) return -1;
    } else if ((ev->index & 15) == 15 && ss_host_client_gone(inf->req)) {
        return -1; /* nobody waits for this answer any more */
    }
    return c->stop_hit ? 1 : 0;
}

/*
 * Choice c's job ended (engine thread): finish its text, and wake the request when it was the
 * last choice. Drops the job's reference on the request, as its very last action.
 */
static void on_done(void *user, ss_job *job)
{
    choice *c = user;
    infer *inf = c->inf;
    ss_host_req *r = inf->req;
    /* Finish the text: what the decoder and the stop matcher still hold. */
    if (c->stop) {
        size_t n = 0, olen = 0;
        const char *tail = c->detok && !c->stop_hit ? ss_detok_flush(c->detok, &n) : NULL;
        const char *out = tail && n ? ss_stopper_push(c->stop, tail, n, &olen, &c->stop_hit) : "";
        if (!out || buf_append(&c->text, &c->text_len, &c->text_cap, out, olen)) c->oom = 1;
        out = ss_stopper_flush(c->stop, &olen);
        if (!out || buf_append(&c->text, &c->text_len, &c->text_cap, out, olen)) c->oom = 1;
    }
    pthread_mutex_lock(&inf->mu);
    c->job = job;
    c->done = 1;
    int all = ++inf->n_done == inf->n_choices;
    pthread_mutex_unlock(&inf->mu);
    if (all) ss_host_wake(r);
    ss_host_req_unref(r); /* last: the context may be freed from here on */
}

/* ---- submitting ---------------------------------------------------------------------------- */

/*
 * A Mixture-of-Tokens model steps the choices of a batch in lockstep, in groups of
 * mot_group_size consecutive choices: within a group, every prompt (and continuation) must have
 * the same number of tokens. Checked here so that the message names the request's fields.
 */
static ss_err check_lockstep(infer *inf)
{
    const int g = inf->a->info->mot_group_size;
    if (!inf->batch || g < 2) return SS_OK;
    for (int s = 0; s < inf->n_choices; s += g) {
        const choice *f = &inf->ch[s];
        for (int i = s + 1; i < s + g && i < inf->n_choices; i++) {
            const choice *c = &inf->ch[i];
            if (c->n_prompt == f->n_prompt && c->n_cont == f->n_cont) continue;
            int cont = c->n_prompt == f->n_prompt;
            return ss_fail(SS_ERR_INVALID,
                           "%s has %d %s tokens and %s has %d: this model (Mixture of Tokens) "
                           "mixes the sequences of a batch token by token in groups of %d, so "
                           "the members of a group need the same number of tokens",
                           c->label, cont ? c->n_cont : c->n_prompt,
                           cont                  ? "continuation"
                           : inf->ep == EP_SCORE ? "context"
                                                 : "prompt",
                           f->label, cont ? f->n_cont : f->n_prompt, g);
        }
    }
    return SS_OK;
}

/* After each chunk of input (engine thread): when the client has gone, the prompt stops here,
 * within one chunk, instead of keeping the engine busy for nobody. */
static int on_input(void *user, int fed, int total)
{
    (void)fed;
    (void)total;
    choice *c = user;
    return ss_host_client_gone(c->inf->req) ? -1 : 0;
}

/* The job parameters of choice c (base params completed for it). */
static ss_job_params choice_params(choice *c, const ss_job_params *base)
{
    ss_job_params p = *base;
    p.prompt = c->prompt;
    p.n_prompt = c->n_prompt;
    p.cont = c->cont;
    p.n_cont = c->n_cont;
    p.sample.seed = c->seed;
    p.user = c;
    p.on_token = base->kind == SS_JOB_GENERATE ? on_token : NULL;
    p.on_done = on_done;
    p.on_input = on_input;
    prefix_job_params(c, &p);
    return p;
}

void infer_submit(infer *inf, const ss_job_params *base)
{
    ss_host_req *r = inf->req;
    ss_err err = check_lockstep(inf);
    int submitted = 0;
    if (!err && inf->batch) {
        ss_job_params ps[MAX_CHOICES];
        ss_job *jobs[MAX_CHOICES];
        for (int i = 0; i < inf->n_choices; i++) {
            ps[i] = choice_params(&inf->ch[i], base);
            ss_host_req_ref(r); /* one per job, dropped by its on_done */
        }
        err = api_submit_batch(inf->a, ps, inf->n_choices, jobs);
        if (err) {
            for (int i = 0; i < inf->n_choices; i++) ss_host_req_unref(r);
        } else {
            pthread_mutex_lock(&inf->mu);
            for (int i = 0; i < inf->n_choices; i++) inf->ch[i].job = jobs[i];
            pthread_mutex_unlock(&inf->mu);
            submitted = inf->n_choices;
        }
    }
    for (int i = 0; !err && !inf->batch && i < inf->n_choices; i++) {
        choice *c = &inf->ch[i];
        ss_job_params p = choice_params(c, base);
        ss_job *job = NULL;
        ss_host_req_ref(r);
        err = api_submit(inf->a, &p, &job);
        if (err) {
            ss_host_req_unref(r);
            break;
        }
        pthread_mutex_lock(&inf->mu);
        c->job = job;
        pthread_mutex_unlock(&inf->mu);
        submitted++;
    }
    if (err) {
        pthread_mutex_lock(&inf->mu);
        inf->n_choices = submitted; /* the wake then comes when these are done; we answer now */
        for (int i = 0; i < submitted; i++)
            if (!inf->ch[i].done) api_cancel(inf->a, inf->ch[i].job);
        pthread_mutex_unlock(&inf->mu);
        api_fail(r, err);
        return;
    }
    if (inf->stream) ss_host_stream_start(r, "text/event-stream");
    ss_host_wait(r, infer_finish, inf);
}
