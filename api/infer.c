/*
 * infer.c - the endpoints that run the model: POST /v1/states (prefill and store), /v1/generate,
 * /v1/completions (OpenAI-compatible) and /v1/score.
 *
 * The handler validates everything on the HTTP thread (bad input never reaches the engine),
 * resolves the starting state (stored, merged on the fly, or zero), submits one engine job per
 * choice and parks the connection. The jobs' callbacks run on the engine thread: on_token
 * detokenizes (whole UTF-8 characters only), runs the stop-string matcher (ss_stopper) and, when
 * streaming, appends an SSE event; on_done finishes the text and wakes the request when every
 * choice is done. The continuation then runs on an HTTP thread and answers (storing a state first
 * when asked: LMDB commits never run on the engine thread).
 *
 * Batches: a request in a batch form (several prompts: `prompt` as an array of prompts in
 * /v1/completions, `prompts` in /v1/generate, `batch` in /v1/score and POST /v1/states) hands its
 * choices to the engine as one batch (ss_engine_submit_batch). For a Mixture-of-Tokens model the
 * engine steps them in lockstep groups and mixes them; for other models they are independent jobs.
 * A request with one prompt (even with n > 1 choices) is never mixed with anything.
 *
 * Lifetime: the request context (struct infer) belongs to the HTTP request; every submitted job
 * holds a reference on the request, dropped as the last action of its on_done, so the context
 * and its jobs are freed exactly once, after both the HTTP side and the engine are done.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "ss_util.h"

#define MAX_CHOICES 16
#define MAX_STOPS   16

typedef enum endpoint { EP_STATES, EP_GENERATE, EP_COMPLETIONS, EP_SCORE } endpoint;

struct infer;

typedef struct choice {
    struct infer *inf;
    int index;
    char label[32];  /* the request field it comes from, for messages ("prompts[2]") */
    ss_job *job;     /* set by submit / on_done; freed with the context */
    int done;        /* on_done ran (inf->mu) */
    int32_t *prompt; /* [n_prompt] (SCORE: the context) */
    int n_prompt;
    int32_t *cont; /* SCORE: the continuation [n_cont] */
    int n_cont;
    api_save save;     /* POST /v1/states in batch form: this member's name, tags, metadata */
    char *prompt_text; /* completions with echo: the prompt as text */
    uint64_t seed;
    /* engine thread until done, then the HTTP thread */
    ss_detok *detok;
    ss_stopper *stop;
    int stop_hit; /* a stop string matched */
    char *text;   /* emitted text, NUL-terminated */
    size_t text_len, text_cap;
    size_t streamed;  /* bytes of text already sent as events */
    int32_t *top_ids; /* [max_tokens + 1, n_logprobs] */
    float *top_lps;
    int oom;
} choice;

typedef struct infer {
    ss_api *a;
    ss_host_req *req;
    endpoint ep;
    pthread_mutex_t mu;
    int n_choices, n_done;
    choice ch[MAX_CHOICES];
    int batch; /* the request's batch form: the choices go to the engine as one batch */
    /* options */
    int stream;
    int want_logprobs, n_logprobs;
    int echo;
    int max_tokens;
    int stop_at_eos;
    api_start start;
    int want_save;
    api_save save;
    const char *stops[MAX_STOPS]; /* borrowed from the request body until the choices copy them */
    int n_stops;
    char cmpl_id[48];
    long long created;
} infer;

/* ---- context lifetime ---------------------------------------------------------------------- */

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
    pthread_mutex_unlock(&inf->mu);
}

/* The context of request r, owned by r from here on (SS_ERR_NOMEM). */
static ss_err infer_new(ss_api *a, ss_host_req *r, endpoint ep, infer **out)
{
    infer *inf = calloc(1, sizeof *inf);
    if (!inf) return ss_fail(SS_ERR_NOMEM, "out of memory");
    inf->a = a;
    inf->req = r;
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

/* ---- JSON pieces --------------------------------------------------------------------------- */

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

/* A JSON string from UTF-8 bytes; "" if they are not valid UTF-8 (cannot happen for detok output).
 */
static json_t *jstr(const char *s, size_t n)
{
    json_t *j = json_stringn(s ? s : "", s ? n : 0);
    return j ? j : json_string("");
}

/* Text of one token on its own (invalid UTF-8 replaced), for logprobs; "" without a tokenizer. */
static json_t *token_text(ss_api *a, int32_t id)
{
    char *t = NULL;
    size_t n = 0;
    if (!a->tok || id >= ss_tokenizer_vocab_size(a->tok) ||
        ss_tokenizer_decode(a->tok, &id, 1, 0, &t, &n) != SS_OK)
        return json_string("");
    json_t *j = jstr(t, n);
    free(t);
    return j;
}

static const char *finish_name(ss_finish f, int openai)
{
    switch (f) {
    case SS_FINISH_LENGTH: return "length";
    case SS_FINISH_EOS: return openai ? "stop" : "eos";
    case SS_FINISH_STOP: return "stop";
    case SS_FINISH_CANCELLED: return "cancelled";
    default: return "error";
    }
}

/* /v1/generate logprobs entry for generated token i of choice c. */
static json_t *gen_logprob(infer *inf, const choice *c, const ss_job_result *res, int i)
{
    json_t *o =
        json_pack("{s:i,s:o,s:o}", "token", res->tokens[i], "text",
                  token_text(inf->a, res->tokens[i]), "logprob", api_real(res->logprobs[i]));
    if (o && inf->n_logprobs > 0 && c->top_ids) {
        json_t *top = json_array();
        for (int k = 0; top && k < inf->n_logprobs; k++) {
            int32_t id = c->top_ids[(size_t)i * inf->n_logprobs + k];
            json_array_append_new(
                top, json_pack("{s:i,s:o,s:o}", "token", id, "text", token_text(inf->a, id),
                               "logprob", api_real(c->top_lps[(size_t)i * inf->n_logprobs + k])));
        }
        json_object_set_new(o, "top_logprobs", top);
    }
    return o;
}

/* OpenAI legacy logprobs object for tokens [from, to) of choice c; offsets start at `offset`. */
static json_t *openai_logprobs(infer *inf, const choice *c, const int32_t *ids, const float *lps,
                               int from, int to, size_t offset)
{
    json_t *tokens = json_array(), *tlp = json_array(), *top = json_array(), *off = json_array();
    for (int i = from; i < to; i++) {
        json_t *t = token_text(inf->a, ids[i]);
        json_array_append_new(off, json_integer((json_int_t)offset));
        offset += json_string_length(t);
        json_array_append_new(tokens, t);
        json_array_append_new(tlp, api_real(lps[i]));
        if (inf->n_logprobs > 0 && c->top_ids) {
            json_t *d = json_object();
            for (int k = 0; d && k < inf->n_logprobs; k++) {
                int32_t id = c->top_ids[(size_t)i * inf->n_logprobs + k];
                json_t *tt = token_text(inf->a, id);
                json_object_set_new(d, json_string_value(tt),
                                    api_real(c->top_lps[(size_t)i * inf->n_logprobs + k]));
                json_decref(tt);
            }
            json_array_append_new(top, d);
        } else {
            json_array_append_new(top, json_null());
        }
    }
    return json_pack("{s:o,s:o,s:o,s:o}", "tokens", tokens, "token_logprobs", tlp, "top_logprobs",
                     top, "text_offset", off);
}

static json_t *completion_chunk(infer *inf, json_t *choices)
{
    return json_pack("{s:s,s:s,s:I,s:s,s:o}", "id", inf->cmpl_id, "object", "text_completion",
                     "created", (json_int_t)inf->created, "model", inf->a->model_name, "choices",
                     choices);
}

/* Append "data: <json>\n\n" to the stream (reference stolen); -1 when the client is gone. */
static int sse_send(ss_host_req *r, json_t *j)
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

/* End an event stream: the "[DONE]" event, then the end of the response. */
static void sse_done(ss_host_req *r)
{
    ss_host_stream_write(r, "data: [DONE]\n\n", 14);
    ss_host_stream_end(r);
}

/* o with o[key] = v, unless v is NULL; v is stolen (dropped when o is NULL). Returns o. */
static json_t *set_member(json_t *o, const char *key, json_t *v)
{
    if (o && v)
        json_object_set_new(o, key, v);
    else
        json_decref(v);
    return o;
}

static json_t *usage_json(int n_prompt, int n_gen)
{
    return json_pack("{s:i,s:i,s:i}", "prompt_tokens", n_prompt, "completion_tokens", n_gen,
                     "total_tokens", n_prompt + n_gen);
}

/* The text of choice c not yet sent as events. */
static json_t *unsent_text(const choice *c)
{
    return jstr(c->text ? c->text + c->streamed : "", c->text_len - c->streamed);
}

/* ---- engine callbacks (engine thread) ------------------------------------------------------ */

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
        json_t *j;
        const char *nt = c->text ? c->text + before : "";
        size_t nn = c->text_len - before;
        if (inf->ep == EP_GENERATE) {
            j = json_pack("{s:o,s:i}", "text", jstr(nt, nn), "token", ev->id);
            if (j && inf->want_logprobs) {
                json_object_set_new(j, "logprob", api_real(ev->logprob));
                if (ev->n_top > 0) {
                    json_t *top = json_array();
                    for (int k = 0; top && k < ev->n_top; k++)
                        json_array_append_new(top,
                                              json_pack("{s:i,s:o,s:o}", "token", ev->top_ids[k],
                                                        "text", token_text(inf->a, ev->top_ids[k]),
                                                        "logprob", api_real(ev->top_logprobs[k])));
                    json_object_set_new(j, "top_logprobs", top);
                }
            }
        } else {
            json_t *lp = json_null();
            if (inf->want_logprobs) {
                int32_t id = ev->id;
                float l = ev->logprob;
                /* a one-token logprobs object; top entries come from this event */
                json_t *top = json_object();
                for (int k = 0; top && k < ev->n_top; k++) {
                    json_t *tt = token_text(inf->a, ev->top_ids[k]);
                    json_object_set_new(top, json_string_value(tt), api_real(ev->top_logprobs[k]));
                    json_decref(tt);
                }
                json_decref(lp);
                lp = json_pack("{s:[o],s:[o],s:[o],s:[I]}", "tokens", token_text(inf->a, id),
                               "token_logprobs", api_real(l), "top_logprobs",
                               ev->n_top > 0 ? top : (json_decref(top), json_null()), "text_offset",
                               (json_int_t)before);
            }
            j = completion_chunk(inf,
                                 json_pack("[{s:o,s:i,s:o,s:n}]", "text", jstr(nt, nn), "index",
                                           c->index, "logprobs", lp, "finish_reason"));
        }
        c->streamed = c->text_len;
        if (sse_send(inf->req, j) < 0) return -1;
    } else if ((ev->index & 15) == 15 && ss_host_client_gone(inf->req)) {
        return -1; /* nobody waits for this answer any more */
    }
    return c->stop_hit ? 1 : 0;
}

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

/* ---- answers (HTTP thread, once every job is done) ----------------------------------------- */

/* The first failed choice's error, or SS_OK. */
static ss_err jobs_error(infer *inf)
{
    for (int i = 0; i < inf->n_choices; i++) {
        const ss_job_result *res = ss_job_get_result(inf->ch[i].job);
        if (inf->ch[i].oom) return ss_fail(SS_ERR_NOMEM, "out of memory while generating");
        if (res->finish == SS_FINISH_ERROR)
            return ss_fail(res->err ? res->err : SS_ERR_INTERNAL, "%s", res->errmsg);
        if (res->finish == SS_FINISH_CANCELLED)
            return ss_fail(SS_ERR_CANCELLED, "the request was cancelled (server shutting down)");
    }
    return SS_OK;
}

/* Answer err: as an HTTP error, or, once streaming, as a last error event. */
static void answer_error(infer *inf, ss_host_req *r, ss_err err)
{
    if (!inf->stream) {
        api_fail(r, err);
        return;
    }
    sse_send(r, json_pack("{s:{s:s,s:s}}", "error", "code", api_code_of(err), "message",
                          ss_errmsg()));
    sse_done(r);
}

static json_t *timings(const ss_job_result *res)
{
    double tps = res->decode_ms > 0 ? res->n_generated / (res->decode_ms / 1e3) : 0;
    return json_pack("{s:o,s:o,s:o,s:o}", "queue_ms", api_real(res->queue_ms), "prefill_ms",
                     api_real(res->prefill_ms), "decode_ms", api_real(res->decode_ms),
                     "tokens_per_s", api_real(tps));
}

/* Store a job's final state (save_state / POST /v1/states) with `save`; *rec gets the record. */
static ss_err save_result(infer *inf, const api_save *save, const ss_job_result *res, json_t **rec)
{
    if (!res->state) return ss_fail(SS_ERR_INTERNAL, "the job kept no state");
    char *text = NULL;
    long long n_tokens = inf->start.n_tokens + res->n_prompt + res->n_generated;
    ss_err err = api_save_state(inf->a, save, ss_state_cdata(res->state), n_tokens,
                                inf->start.parents, &text);
    if (err) return err;
    *rec = json_loads(text, 0, NULL);
    free(text);
    return *rec ? SS_OK : ss_fail(SS_ERR_NOMEM, "out of memory");
}

/* POST /v1/states: the record, or in batch form {"object": "list", "data": [records]}; states
 * are stored one by one in the batch's order (on an error, those stored before it stay). */
static void answer_states(infer *inf, ss_host_req *r)
{
    json_t *rec = NULL, *list = NULL;
    ss_err err = jobs_error(inf);
    if (!err && inf->batch && !(list = json_array())) err = ss_fail(SS_ERR_NOMEM, "out of memory");
    for (int i = 0; i < inf->n_choices && !err; i++) {
        choice *c = &inf->ch[i];
        err = save_result(inf, inf->batch ? &c->save : &inf->save, ss_job_get_result(c->job), &rec);
        if (!err && list) {
            json_array_append_new(list, rec);
            rec = NULL;
        }
    }
    if (err) {
        json_decref(list);
        api_fail(r, err);
        return;
    }
    api_json(r, 201, list ? json_pack("{s:s,s:o}", "object", "list", "data", list) : rec);
}

/* The /v1/score answer for one choice. */
static json_t *score_json(const choice *c, const ss_job_result *res)
{
    json_t *lps = json_array(), *toks = json_array();
    double sum = 0;
    int counted = 0;
    for (int i = 0; i < res->n_cont; i++) {
        float v = res->token_logprobs[i];
        json_array_append_new(lps, api_real(v));
        json_array_append_new(toks, json_integer(c->cont[i]));
        if (isfinite(v)) {
            sum += v;
            counted++;
        }
    }
    return json_pack("{s:i,s:o,s:o,s:o,s:o,s:i,s:{s:i,s:i}}", "n_tokens", res->n_cont,
                     "logprob_sum", json_real(sum), "perplexity",
                     counted ? api_real(exp(-sum / counted)) : json_null(), "token_logprobs", lps,
                     "tokens", toks, "n_scored", counted, "usage", "prompt_tokens", res->n_prompt,
                     "context_tokens", res->n_prompt - res->n_cont);
}

/* /v1/score: one answer, or in batch form {"object": "list", "results": [answers]}. */
static void answer_score(infer *inf, ss_host_req *r)
{
    ss_err err = jobs_error(inf);
    if (err) {
        api_fail(r, err);
        return;
    }
    if (!inf->batch) {
        api_json(r, 200, score_json(&inf->ch[0], ss_job_get_result(inf->ch[0].job)));
        return;
    }
    json_t *results = json_array();
    int n_prompt = 0;
    for (int i = 0; results && i < inf->n_choices; i++) {
        const ss_job_result *res = ss_job_get_result(inf->ch[i].job);
        n_prompt += res->n_prompt;
        json_t *o = score_json(&inf->ch[i], res);
        if (o) json_object_set_new(o, "index", json_integer(i));
        json_array_append_new(results, o);
    }
    api_json(r, 200, json_pack("{s:s,s:o,s:{s:i}}", "object", "list", "results", results, "usage",
                               "prompt_tokens", n_prompt));
}

/* The non-streamed /v1/generate answer for one choice (rec, the saved state, is stolen). */
static json_t *generate_json(infer *inf, const choice *c, const ss_job_result *res, json_t *rec)
{
    json_t *usage = usage_json(res->n_prompt, res->n_generated);
    json_t *toks = json_array();
    for (int i = 0; i < res->n_generated; i++)
        json_array_append_new(toks, json_integer(res->tokens[i]));
    json_t *j = json_pack("{s:o,s:o,s:s,s:o,s:o,s:s}", "text", jstr(c->text, c->text_len), "tokens",
                          toks, "finish_reason", finish_name(res->finish, 0), "usage", usage,
                          "timings", timings(res), "model", inf->a->model_name);
    if (j && inf->want_logprobs) {
        json_t *lp = json_array();
        for (int i = 0; lp && i < res->n_generated; i++)
            json_array_append_new(lp, gen_logprob(inf, c, res, i));
        json_object_set_new(j, "logprobs", lp);
    }
    return set_member(j, "state", rec);
}

/* /v1/generate in batch form: {"object": "list", "results": [answers with "index"], "usage"}. */
static void answer_generate_batch(infer *inf, ss_host_req *r)
{
    ss_err err = jobs_error(inf);
    json_t *results = err ? NULL : json_array();
    int n_prompt = 0, n_gen = 0;
    if (!err && !results) err = ss_fail(SS_ERR_NOMEM, "out of memory");
    for (int i = 0; !err && i < inf->n_choices; i++) {
        choice *c = &inf->ch[i];
        const ss_job_result *res = ss_job_get_result(c->job);
        json_t *rec = NULL;
        if (inf->want_save && (err = save_result(inf, &inf->save, res, &rec))) break;
        n_prompt += res->n_prompt;
        n_gen += res->n_generated;
        json_t *o = generate_json(inf, c, res, rec);
        if (o) {
            json_object_del(o, "model");
            json_object_set_new(o, "index", json_integer(i));
        }
        json_array_append_new(results, o);
    }
    if (err) {
        json_decref(results);
        api_fail(r, err);
        return;
    }
    api_json(r, 200,
             json_pack("{s:s,s:o,s:o,s:s}", "object", "list", "results", results, "usage",
                       usage_json(n_prompt, n_gen), "model", inf->a->model_name));
}

static void answer_generate(infer *inf, ss_host_req *r)
{
    if (inf->batch) {
        answer_generate_batch(inf, r);
        return;
    }
    ss_err err = jobs_error(inf);
    json_t *rec = NULL;
    choice *c = &inf->ch[0];
    const ss_job_result *res = err ? NULL : ss_job_get_result(c->job);
    if (!err && inf->want_save) err = save_result(inf, &inf->save, res, &rec);
    if (err) {
        answer_error(inf, r, err);
        return;
    }
    if (inf->stream) {
        json_t *j = json_pack("{s:o,s:s,s:o,s:o}", "text", unsent_text(c), "finish_reason",
                              finish_name(res->finish, 0), "usage",
                              usage_json(res->n_prompt, res->n_generated), "timings", timings(res));
        sse_send(r, set_member(j, "state", rec));
        sse_done(r);
        return;
    }
    api_json(r, 200, generate_json(inf, c, res, rec));
}

static void answer_completions(infer *inf, ss_host_req *r)
{
    ss_err err = jobs_error(inf);
    if (err) {
        answer_error(inf, r, err);
        return;
    }
    int n_prompt = 0, n_gen = 0;
    json_t *choices = json_array();
    for (int i = 0; i < inf->n_choices; i++) {
        choice *c = &inf->ch[i];
        const ss_job_result *res = ss_job_get_result(c->job);
        n_prompt += res->n_prompt;
        n_gen += res->n_generated;
        const char *fin = finish_name(res->finish, 1);
        if (inf->stream) {
            json_t *ch = json_pack("{s:o,s:i,s:n,s:s}", "text", unsent_text(c), "index", c->index,
                                   "logprobs", "finish_reason", fin);
            sse_send(r, completion_chunk(inf, json_pack("[o]", ch)));
            continue;
        }
        size_t echo_len = inf->echo && c->prompt_text ? strlen(c->prompt_text) : 0;
        char *full = malloc(echo_len + c->text_len + 1);
        if (!full) continue;
        if (echo_len) memcpy(full, c->prompt_text, echo_len);
        if (c->text_len) memcpy(full + echo_len, c->text, c->text_len);
        full[echo_len + c->text_len] = '\0';
        json_t *lp = inf->want_logprobs ? openai_logprobs(inf, c, res->tokens, res->logprobs, 0,
                                                          res->n_generated, echo_len)
                                        : json_null();
        json_array_append_new(choices, json_pack("{s:o,s:i,s:o,s:s}", "text",
                                                 jstr(full, echo_len + c->text_len), "index",
                                                 c->index, "logprobs", lp, "finish_reason", fin));
        free(full);
    }
    json_t *usage = usage_json(n_prompt, n_gen);
    if (inf->stream) {
        json_decref(choices);
        sse_send(r, set_member(completion_chunk(inf, json_array()), "usage", usage));
        sse_done(r);
        return;
    }
    api_json(r, 200, set_member(completion_chunk(inf, choices), "usage", usage));
}

static void finish_cont(void *app, ss_host_req *r, void *user)
{
    (void)app;
    infer *inf = user;
    if (ss_host_stopping(r) && !inf->stream) {
        api_reject(r, SS_ERR_BUSY, API_CODE_SHUTTING_DOWN, "the server is shutting down");
        return;
    }
    switch (inf->ep) {
    case EP_STATES: answer_states(inf, r); break;
    case EP_SCORE: answer_score(inf, r); break;
    case EP_GENERATE: answer_generate(inf, r); break;
    case EP_COMPLETIONS: answer_completions(inf, r); break;
    }
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
                           cont                         ? "continuation"
                           : inf->ep == EP_SCORE        ? "context"
                                                        : "prompt",
                           f->label, cont ? f->n_cont : f->n_prompt, g);
        }
    }
    return SS_OK;
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
    return p;
}

/*
 * Submit one job per choice (base params completed per choice; in batch form all of them as one
 * engine batch), then park or start the stream. On failure answers the error (jobs already
 * queued are cancelled).
 */
static void submit_all(infer *inf, const ss_job_params *base)
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
    ss_host_wait(r, finish_cont, inf);
}

/* ---- request parsing ----------------------------------------------------------------------- */

static ss_err parse_sampling(json_t *body, ss_sample_params *sp)
{
    ss_err err;
    double t, tp, mp;
    long long tk;
    *sp = ss_sample_default_params();
    if ((err = api_get_real(body, "temperature", sp->temperature, &t))) return err;
    if ((err = api_get_real(body, "top_p", sp->top_p, &tp))) return err;
    if ((err = api_get_real(body, "min_p", sp->min_p, &mp))) return err;
    if ((err = api_get_int(body, "top_k", sp->top_k, &tk))) return err;
    if (tk < 0 || tk > 1000000000) return ss_fail(SS_ERR_INVALID, "top_k must be >= 0");
    sp->temperature = (float)t;
    sp->top_p = (float)tp;
    sp->min_p = (float)mp;
    sp->top_k = (int)tk;
    return ss_sample_params_check(sp);
}

static ss_err parse_seed(json_t *body, uint64_t *seed)
{
    json_t *v = json_object_get(body, "seed");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v)) return ss_fail(SS_ERR_FORMAT, "\"seed\" must be an integer");
        *seed = (uint64_t)json_integer_value(v);
        return SS_OK;
    }
    return ss_random_bytes(seed, sizeof *seed);
}

static ss_err parse_max_tokens(ss_api *a, json_t *body, long long dflt, int *out)
{
    long long mt;
    ss_err err = api_get_int(body, "max_tokens", dflt, &mt);
    if (err) return err;
    if (mt < 0 || mt > a->p.max_tokens)
        return ss_fail(SS_ERR_INVALID, "max_tokens must be between 0 and %d, not %lld",
                       a->p.max_tokens, mt);
    *out = (int)mt;
    return SS_OK;
}

static ss_err parse_logprobs(json_t *body, infer *inf)
{
    json_t *v = json_object_get(body, "logprobs");
    if (!v || json_is_null(v) || json_is_false(v)) return SS_OK;
    if (json_is_true(v)) { /* the chat API's habit: logprobs: true */
        inf->want_logprobs = 1;
        return SS_OK;
    }
    if (!json_is_integer(v)) return ss_fail(SS_ERR_FORMAT, "\"logprobs\" must be an integer");
    json_int_t n = json_integer_value(v);
    if (n < 0 || n > 20) return ss_fail(SS_ERR_INVALID, "logprobs must be between 0 and 20");
    inf->want_logprobs = 1;
    inf->n_logprobs = (int)n;
    return SS_OK;
}

/*
 * "stop": a string or an array of strings (absent/null: none). The strings are borrowed from the
 * body into inf->stops until choice_setup copies them into each choice's matcher.
 */
static ss_err parse_stops(const json_t *v, infer *inf)
{
    inf->n_stops = 0;
    if (!v || json_is_null(v)) return SS_OK;
    if (!json_is_string(v) && !json_is_array(v))
        return ss_fail(SS_ERR_FORMAT, "stop must be a string or an array of strings");
    size_t n = json_is_string(v) ? 1 : json_array_size(v);
    if (n > MAX_STOPS)
        return ss_fail(SS_ERR_INVALID, "at most %d stop strings, not %zu", MAX_STOPS, n);
    for (size_t i = 0; i < n; i++) {
        const json_t *sv = json_is_string(v) ? v : json_array_get(v, i);
        if (!json_is_string(sv)) return ss_fail(SS_ERR_FORMAT, "stop[%zu] is not a string", i);
        size_t len = json_string_length(sv);
        if (len == 0 || len > 256 || memchr(json_string_value(sv), 0, len))
            return ss_fail(SS_ERR_INVALID, "stop[%zu] must be 1 to 256 bytes of text", i);
        inf->stops[inf->n_stops++] = json_string_value(sv);
    }
    return SS_OK;
}

/* Per-choice buffers for generation (detokenizer, stop matcher, top logprobs). */
static ss_err choice_setup(infer *inf, choice *c)
{
    ss_err err;
    if (inf->a->tok && (err = ss_detok_new(inf->a->tok, &c->detok))) return err;
    if ((err = ss_stopper_new(inf->stops, inf->n_stops, &c->stop))) return err;
    if (inf->n_logprobs > 0) {
        size_t n = (size_t)(inf->max_tokens + 1) * inf->n_logprobs;
        c->top_ids = malloc(n * sizeof *c->top_ids);
        c->top_lps = malloc(n * sizeof *c->top_lps);
        if (!c->top_ids || !c->top_lps) return ss_fail(SS_ERR_NOMEM, "out of memory");
    }
    return SS_OK;
}

static ss_job_params base_params(infer *inf, ss_job_kind kind)
{
    ss_job_params p = {0};
    p.kind = kind;
    p.start_state = inf->start.st ? ss_state_cdata(inf->start.st) : NULL;
    p.start_has_hidden = inf->start.has_hidden;
    return p;
}

/*
 * The array of a batch form: 1..MAX_CHOICES members; sets inf->batch and inf->n_choices and
 * each choice's label ("<key>[i]").
 */
static ss_err batch_members(infer *inf, const json_t *v, const char *key)
{
    if (!json_is_array(v) || json_array_size(v) == 0)
        return ss_fail(SS_ERR_FORMAT, "\"%s\" must be a non-empty array", key);
    if (json_array_size(v) > MAX_CHOICES)
        return ss_fail(SS_ERR_INVALID, "at most %d members in \"%s\", not %zu", MAX_CHOICES, key,
                       json_array_size(v));
    inf->batch = 1;
    inf->n_choices = (int)json_array_size(v);
    for (int i = 0; i < inf->n_choices; i++)
        snprintf(inf->ch[i].label, sizeof inf->ch[i].label, "%s[%d]", key, i);
    return SS_OK;
}

/*
 * The "batch" form of POST /v1/states and /v1/score: an array of objects, one choice each, that
 * carry their own fields instead of the body.
 */
typedef struct batch_spec {
    const char *own[4];   /* a member's own fields (NULL-terminated): not allowed in the body */
    const char *own_text; /* them, in words, for the message */
    const char *shape;    /* a member, in words, for the message */
    /* Read member i from item (an object); `where` ("batch[i].") prefixes its fields. */
    ss_err (*member)(ss_api *a, json_t *body, json_t *item, const char *where, infer *inf, int i);
} batch_spec;

/*
 * The batch form of s when the body has one (not absent, not null): sets inf->batch and the
 * choices and reads every member. Otherwise one choice, inf->batch stays 0 and the caller reads
 * it from the body.
 */
static ss_err parse_batch(ss_api *a, json_t *body, infer *inf, const batch_spec *s)
{
    json_t *bv = json_object_get(body, "batch");
    if (!bv || json_is_null(bv)) {
        inf->n_choices = 1;
        return SS_OK;
    }
    for (int k = 0; s->own[k]; k++)
        if (json_object_get(body, s->own[k]))
            return ss_fail(SS_ERR_FORMAT,
                           "with \"batch\", each member has its own %s: give them inside the batch",
                           s->own_text);
    ss_err err = batch_members(inf, bv, "batch");
    for (int i = 0; !err && i < inf->n_choices; i++) {
        json_t *item = json_array_get(bv, (size_t)i);
        char where[48];
        snprintf(where, sizeof where, "batch[%d].", i);
        if (!json_is_object(item))
            return ss_fail(SS_ERR_FORMAT, "batch[%d] must be an object %s", i, s->shape);
        err = s->member(a, body, item, where, inf, i);
    }
    return err;
}

/* ---- handlers ------------------------------------------------------------------------------ */

/*
 * Each handler is run by api_with_body (model loaded, body a JSON object) and returns an error
 * to answer, or SS_OK once submit_all has answered or parked the request.
 */

/* One state to create: `prompt` (text) or `tokens` (ids) of o, into choice c. `where` prefixes
 * the field names in messages ("" or "batch[2]."). An empty prompt is allowed with `from`. */
static ss_err state_prompt(ss_api *a, json_t *o, int have_from, const char *where, choice *c)
{
    json_t *pv = json_object_get(o, "prompt"), *tv = json_object_get(o, "tokens");
    char what[64];
    if (pv && tv)
        return ss_fail(SS_ERR_FORMAT, "give %sprompt or %stokens, not both", where, where);
    if (!pv) pv = tv;
    if (!pv) {
        if (have_from) return SS_OK;
        return ss_fail(SS_ERR_FORMAT, "\"%sprompt\" (text) or \"%stokens\" (ids) is required",
                       where, where);
    }
    snprintf(what, sizeof what, "%s%s", where, pv == tv ? "tokens" : "prompt");
    return api_tokens(a, pv, what, &c->prompt, &c->n_prompt);
}

/* A member of POST /v1/states in batch form: its prompt, and its name, tags and metadata (the
 * request's own tags and metadata apply to members that have none). */
static ss_err state_member(ss_api *a, json_t *body, json_t *item, const char *where, infer *inf,
                           int i)
{
    choice *c = &inf->ch[i];
    ss_err err = state_prompt(a, item, json_object_get(body, "from") != NULL, where, c);
    if (err) return err;
    json_t *o = json_copy(item);
    if (!o) return ss_fail(SS_ERR_NOMEM, "out of memory");
    static const char *const shared[] = {"tags", "metadata"};
    for (int k = 0; k < 2; k++)
        if (!json_object_get(o, shared[k]) && json_object_get(body, shared[k]))
            json_object_set(o, shared[k], json_object_get(body, shared[k]));
    err = api_save_parse(a, o, &c->save);
    json_decref(o);
    if (err) return err;
    for (int k = 0; k < i && c->save.name; k++)
        if (inf->ch[k].save.name && !strcmp(inf->ch[k].save.name, c->save.name))
            return ss_fail(SS_ERR_INVALID, "batch[%d] and batch[%d] are both named '%s'", k, i,
                           c->save.name);
    return SS_OK;
}

static const batch_spec states_batch = {
    .own = {"prompt", "tokens", "name", NULL},
    .own_text = "prompt or tokens and name",
    .shape = "{prompt | tokens, name?, tags?, metadata?}",
    .member = state_member,
};

/* POST /v1/states: batch form [{prompt | tokens, name?, tags?, metadata?}, ...], one record each */
static ss_err states_create(ss_api *a, ss_host_req *r, json_t *body)
{
    infer *inf;
    ss_err err = infer_new(a, r, EP_STATES, &inf);
    if (!err) err = parse_batch(a, body, inf, &states_batch);
    if (!err && !inf->batch) {
        err = state_prompt(a, body, json_object_get(body, "from") != NULL, "", &inf->ch[0]);
        if (!err) err = api_save_parse(a, body, &inf->save);
    }
    if (!err) err = api_start_resolve(a, body, "from", 0, &inf->start);
    if (err) return err;
    for (int i = 0; i < inf->n_choices; i++)
        if (inf->ch[i].n_prompt == 0 && !inf->start.st)
            return ss_fail(SS_ERR_INVALID, "the prompt%s%s is empty", inf->batch ? " of " : "",
                           inf->ch[i].label);
    /* with `from` and an empty prompt the job just copies the state: a plain "save as" */
    ss_job_params p = base_params(inf, SS_JOB_PREFILL);
    submit_all(inf, &p);
    return SS_OK;
}

void api_h_states_create(void *app, ss_host_req *r)
{
    api_with_body(app, r, states_create);
}

/* Shared by generate and completions: the parts that are the same. */
static ss_err parse_generation(ss_api *a, json_t *body, infer *inf, ss_job_params *p,
                               long long dflt_max)
{
    ss_err err;
    if ((err = api_get_bool(body, "stream", 0, &inf->stream))) return err;
    if ((err = parse_max_tokens(a, body, dflt_max, &inf->max_tokens))) return err;
    if ((err = parse_logprobs(body, inf))) return err;
    int ignore_eos = 0;
    if ((err = api_get_bool(body, "ignore_eos", 0, &ignore_eos))) return err;
    inf->stop_at_eos = !ignore_eos;
    json_t *stops = json_object_get(body, "stop");
    if (stops && !json_is_null(stops) && !a->tok &&
        (json_is_string(stops) || json_array_size(stops) > 0))
        return ss_fail(SS_ERR_UNSUPPORTED, "stop strings need a tokenizer (none is loaded)");
    if ((err = parse_stops(stops, inf))) return err;
    ss_sample_params sp;
    if ((err = parse_sampling(body, &sp))) return err;
    uint64_t seed;
    if ((err = parse_seed(body, &seed))) return err;
    if ((err = api_start_resolve(a, body, "state", 1, &inf->start))) return err;
    *p = base_params(inf, SS_JOB_GENERATE);
    p->max_tokens = inf->max_tokens;
    p->sample = sp;
    p->n_logprobs = inf->n_logprobs;
    p->stop_at_eos = inf->stop_at_eos;
    for (int i = 0; i < inf->n_choices; i++) {
        inf->ch[i].seed = seed + (uint64_t)i;
        if ((err = choice_setup(inf, &inf->ch[i]))) return err;
        if (inf->ch[i].n_prompt == 0 && !inf->start.has_hidden && inf->max_tokens > 0)
            return ss_fail(SS_ERR_INVALID, "the prompt%s%s is empty: give a prompt, or a "
                                           "starting state (state or merge) to predict the first "
                                           "token from",
                           inf->batch ? " " : "", inf->batch ? inf->ch[i].label : "");
    }
    return SS_OK;
}

/* "save_state" of /v1/generate: absent, null or false, true, or {name?, tags?, metadata?}. */
static ss_err parse_save_state(ss_api *a, json_t *body, infer *inf)
{
    json_t *sv = json_object_get(body, "save_state");
    if (!sv || json_is_null(sv) || json_is_false(sv)) return SS_OK;
    if (!json_is_object(sv) && !json_is_true(sv))
        return ss_fail(SS_ERR_FORMAT, "\"save_state\" must be an object {name?, tags?, "
                                      "metadata?}");
    if (ss_host_scope_of(inf->req) != SS_HOST_SCOPE_WRITE)
        return ss_fail(SS_ERR_PERM, "save_state stores a state: it needs a key with write "
                                    "scope");
    if (inf->batch && json_is_object(sv) && json_object_get(sv, "name") &&
        !json_is_null(json_object_get(sv, "name")))
        return ss_fail(SS_ERR_INVALID, "save_state.name cannot be used with \"prompts\": a name "
                                       "belongs to one state (use tags)");
    json_t *empty = json_object();
    ss_err err = api_save_parse(a, json_is_object(sv) ? sv : empty, &inf->save);
    json_decref(empty);
    if (err) return err;
    inf->want_save = 1;
    return SS_OK;
}

/* /v1/generate: "prompt", or in batch form "prompts": [prompt, ...], one result each. */
static ss_err generate(ss_api *a, ss_host_req *r, json_t *body)
{
    infer *inf;
    ss_job_params p;
    ss_err err = infer_new(a, r, EP_GENERATE, &inf);
    if (err) return err;
    json_t *pv = json_object_get(body, "prompt"), *bv = json_object_get(body, "prompts");
    if (bv && !json_is_null(bv)) {
        if (pv && !json_is_null(pv))
            return ss_fail(SS_ERR_FORMAT, "give \"prompt\" or \"prompts\", not both");
        if ((err = batch_members(inf, bv, "prompts"))) return err;
        for (int i = 0; i < inf->n_choices; i++) {
            choice *c = &inf->ch[i];
            if ((err = api_tokens(a, json_array_get(bv, (size_t)i), c->label, &c->prompt,
                                  &c->n_prompt)))
                return err;
        }
    } else {
        inf->n_choices = 1;
        if (pv && !json_is_null(pv) &&
            (err = api_tokens(a, pv, "prompt", &inf->ch[0].prompt, &inf->ch[0].n_prompt)))
            return err;
    }
    if ((err = parse_save_state(a, body, inf))) return err;
    if ((err = parse_generation(a, body, inf, &p, 64))) return err;
    if (inf->batch && inf->stream)
        return ss_fail(SS_ERR_UNSUPPORTED, "stream is not supported with \"prompts\"; "
                                           "/v1/completions streams the choices of several "
                                           "prompts");
    p.want_state = inf->want_save;
    submit_all(inf, &p);
    return SS_OK;
}

void api_h_generate(void *app, ss_host_req *r)
{
    api_with_body(app, r, generate);
}

/* The prompt of choice c as text, for echo. */
static ss_err prompt_text(ss_api *a, const json_t *pv, choice *c)
{
    if (json_is_string(pv)) {
        c->prompt_text = strdup(json_string_value(pv));
        return c->prompt_text ? SS_OK : ss_fail(SS_ERR_NOMEM, "out of memory");
    }
    if (!a->tok) {
        c->prompt_text = strdup("");
        return c->prompt_text ? SS_OK : ss_fail(SS_ERR_NOMEM, "out of memory");
    }
    return ss_tokenizer_decode(a->tok, c->prompt, (size_t)c->n_prompt, 0, &c->prompt_text, NULL);
}

/*
 * The choices of /v1/completions: n per prompt, from "prompt": "text" | [ids] | ["text", ...] |
 * [[ids], ...]; absent = empty. The two array forms are a batch: its choices go to the engine
 * together (Mixture of Tokens mixes them).
 */
static ss_err completion_prompts(ss_api *a, json_t *body, infer *inf)
{
    long long n_per;
    ss_err err = api_get_int(body, "n", 1, &n_per);
    if (err) return err;
    if (n_per < 1 || n_per > MAX_CHOICES)
        return ss_fail(SS_ERR_INVALID, "n must be between 1 and %d", MAX_CHOICES);
    json_t *pv = json_object_get(body, "prompt");
    json_t *prompts[MAX_CHOICES];
    int n_prompts = 1;
    json_t *empty = json_array();
    prompts[0] = pv && !json_is_null(pv) ? pv : empty;
    if (json_is_array(pv) && json_array_size(pv) > 0 &&
        (json_is_string(json_array_get(pv, 0)) || json_is_array(json_array_get(pv, 0)))) {
        n_prompts = (int)json_array_size(pv);
        if (n_prompts * n_per > MAX_CHOICES) {
            json_decref(empty);
            return ss_fail(SS_ERR_INVALID, "at most %d choices (prompts x n) per request",
                           MAX_CHOICES);
        }
        for (int i = 0; i < n_prompts; i++) prompts[i] = json_array_get(pv, (size_t)i);
        inf->batch = 1;
    }
    inf->n_choices = n_prompts * (int)n_per;
    for (int i = 0; i < inf->n_choices && !err; i++) {
        choice *c = &inf->ch[i];
        snprintf(c->label, sizeof c->label, inf->batch ? "prompt[%d]" : "prompt", i / (int)n_per);
        err = api_tokens(a, prompts[i / (int)n_per], c->label, &c->prompt, &c->n_prompt);
        if (!err && inf->echo) err = prompt_text(a, prompts[i / (int)n_per], c);
    }
    json_decref(empty);
    return err;
}

static ss_err completions(ss_api *a, ss_host_req *r, json_t *body)
{
    infer *inf;
    ss_job_params p;
    ss_err err = infer_new(a, r, EP_COMPLETIONS, &inf);
    if (err) return err;
    unsigned char rnd[12];
    char hex[25];
    if ((err = ss_random_bytes(rnd, sizeof rnd))) return err;
    ss_hex(rnd, sizeof rnd, hex);
    snprintf(inf->cmpl_id, sizeof inf->cmpl_id, "cmpl-%s", hex);
    inf->created = (long long)time(NULL);
    if ((err = api_get_bool(body, "echo", 0, &inf->echo))) return err;
    if ((err = completion_prompts(a, body, inf))) return err;
    if ((err = parse_generation(a, body, inf, &p, 16))) return err;
    if (inf->echo && inf->want_logprobs)
        return ss_fail(SS_ERR_UNSUPPORTED, "echo together with logprobs is not supported: use "
                                           "POST /v1/score for the prompt's log-probabilities");
    submit_all(inf, &p);
    return SS_OK;
}

void api_h_completions(void *app, ss_host_req *r)
{
    api_with_body(app, r, completions);
}

/* Context (optional) and continuation of scoring member i from o (the body itself outside the
 * batch form); `where` prefixes the field names in messages. */
static ss_err score_member(ss_api *a, json_t *body, json_t *o, const char *where, infer *inf,
                           int i)
{
    (void)body;
    choice *c = &inf->ch[i];
    char what[64];
    json_t *cv = json_object_get(o, "context"), *kv = json_object_get(o, "continuation");
    if (!kv)
        return ss_fail(SS_ERR_FORMAT, "\"%scontinuation\" (text or token ids) is required", where);
    ss_err err;
    snprintf(what, sizeof what, "%scontext", where);
    if (cv && !json_is_null(cv) && (err = api_tokens(a, cv, what, &c->prompt, &c->n_prompt)))
        return err;
    snprintf(what, sizeof what, "%scontinuation", where);
    if ((err = api_tokens(a, kv, what, &c->cont, &c->n_cont))) return err;
    if (c->n_cont == 0) return ss_fail(SS_ERR_INVALID, "the %s is empty", what);
    return SS_OK;
}

static const batch_spec score_batch = {
    .own = {"context", "continuation", NULL},
    .own_text = "context and continuation",
    .shape = "{context?, continuation}",
    .member = score_member,
};

/* /v1/score: batch form [{context?, continuation}, ...], one result each */
static ss_err score(ss_api *a, ss_host_req *r, json_t *body)
{
    infer *inf;
    ss_err err = infer_new(a, r, EP_SCORE, &inf);
    if (!err) err = parse_batch(a, body, inf, &score_batch);
    if (!err && !inf->batch) err = score_member(a, body, body, "", inf, 0);
    if (!err) err = api_start_resolve(a, body, "state", 1, &inf->start);
    if (err) return err;
    ss_job_params p = base_params(inf, SS_JOB_SCORE);
    submit_all(inf, &p);
    return SS_OK;
}

void api_h_score(void *app, ss_host_req *r)
{
    api_with_body(app, r, score);
}
