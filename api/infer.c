/*
 * infer.c - the endpoints that run the model: POST /v1/states (prefill and store), /v1/generate,
 * /v1/completions (OpenAI-compatible) and /v1/score.
 *
 * The handler validates everything on the HTTP thread (bad input never reaches the engine),
 * resolves the starting state (stored, merged on the fly, or zero), submits one engine job per
 * choice and parks the connection. The jobs' callbacks run on the engine thread: on_token
 * detokenizes (whole UTF-8 characters only), runs the stop-string matcher and, when streaming,
 * appends an SSE event; on_done finishes the text and wakes the request when every choice is done.
 * The continuation then runs on an HTTP thread and answers (storing a state first when asked:
 * LMDB commits never run on the engine thread).
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

typedef enum endpoint { EP_STATES, EP_GENERATE, EP_COMPLETIONS, EP_SCORE } endpoint;

struct infer;

typedef struct choice {
    struct infer *inf;
    int index;
    ss_job *job;     /* set by submit / on_done; freed with the context */
    int done;        /* on_done ran (inf->mu) */
    int32_t *prompt; /* [n_prompt] (SCORE: the context) */
    int n_prompt;
    char *prompt_text; /* completions with echo: the prompt as text */
    uint64_t seed;
    /* engine thread until done, then the HTTP thread */
    ss_detok *detok;
    api_stop stop;
    char *text; /* emitted text, NUL-terminated */
    size_t text_len, text_cap;
    size_t streamed;  /* bytes of text already sent as events */
    int32_t *top_ids; /* [max_tokens + 1, n_logprobs] */
    float *top_lps;
    int oom;
} choice;

typedef struct infer {
    ss_api *a;
    ss_http_req *req;
    endpoint ep;
    pthread_mutex_t mu;
    int n_choices, n_done;
    choice ch[MAX_CHOICES];
    /* options */
    int stream;
    int want_logprobs, n_logprobs;
    int echo;
    int max_tokens;
    int stop_at_eos;
    api_start start;
    int want_save;
    api_save save;
    int32_t *cont; /* SCORE: continuation [n_cont] */
    int n_cont;
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
        free(c->prompt_text);
        ss_detok_free(c->detok);
        api_stop_free(&c->stop);
        free(c->text);
        free(c->top_ids);
        free(c->top_lps);
    }
    api_start_free(&inf->start);
    api_save_free(&inf->save);
    free(inf->cont);
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

static infer *infer_new(ss_api *a, ss_http_req *r, endpoint ep)
{
    infer *inf = calloc(1, sizeof *inf);
    if (!inf) return NULL;
    inf->a = a;
    inf->req = r;
    inf->ep = ep;
    inf->stop_at_eos = 1;
    pthread_mutex_init(&inf->mu, NULL);
    for (int i = 0; i < MAX_CHOICES; i++) {
        inf->ch[i].inf = inf;
        inf->ch[i].index = i;
    }
    ss_http_set_user(r, inf, infer_free);
    ss_http_on_over(r, infer_over);
    return inf;
}

/* ---- JSON pieces --------------------------------------------------------------------------- */

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
static int sse_send(ss_http_req *r, json_t *j)
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
    int rc = ss_http_stream_write(r, ev, n + 8);
    free(ev);
    free(text);
    return rc;
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
    size_t before = c->text_len;
    int m = api_stop_push(&c->stop, piece, plen, &c->text, &c->text_len, &c->text_cap);
    if (m < 0) {
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
    } else if ((ev->index & 15) == 15 && ss_http_client_gone(inf->req)) {
        return -1; /* nobody waits for this answer any more */
    }
    return m == 1 ? 1 : 0;
}

static void on_done(void *user, ss_job *job)
{
    choice *c = user;
    infer *inf = c->inf;
    ss_http_req *r = inf->req;
    /* Finish the text: what the decoder and the stop matcher still hold. */
    if (!c->stop.matched && c->detok) {
        size_t n = 0;
        const char *tail = ss_detok_flush(c->detok, &n);
        if (tail && n && api_stop_push(&c->stop, tail, n, &c->text, &c->text_len, &c->text_cap) < 0)
            c->oom = 1;
    }
    if (api_stop_flush(&c->stop, &c->text, &c->text_len, &c->text_cap) < 0) c->oom = 1;
    pthread_mutex_lock(&inf->mu);
    c->job = job;
    c->done = 1;
    int all = ++inf->n_done == inf->n_choices;
    pthread_mutex_unlock(&inf->mu);
    if (all) ss_http_wake(r);
    ss_http_req_unref(r); /* last: the context may be freed from here on */
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

static json_t *timings(const ss_job_result *res)
{
    double tps = res->decode_ms > 0 ? res->n_generated / (res->decode_ms / 1e3) : 0;
    return json_pack("{s:o,s:o,s:o,s:o}", "queue_ms", api_real(res->queue_ms), "prefill_ms",
                     api_real(res->prefill_ms), "decode_ms", api_real(res->decode_ms),
                     "tokens_per_s", api_real(tps));
}

/* Store the job's final state (save_state / POST /v1/states); *rec receives the record. */
static ss_err save_result(infer *inf, const ss_job_result *res, json_t **rec)
{
    if (!res->state) return ss_fail(SS_ERR_INTERNAL, "the job kept no state");
    char *text = NULL;
    long long n_tokens = inf->start.n_tokens + res->n_prompt + res->n_generated;
    ss_err err = api_save_state(inf->a, &inf->save, ss_state_cdata(res->state), n_tokens,
                                inf->start.parents, &text);
    if (err) return err;
    *rec = json_loads(text, 0, NULL);
    free(text);
    return *rec ? SS_OK : ss_fail(SS_ERR_NOMEM, "out of memory");
}

static void answer_states(infer *inf, ss_http_req *r)
{
    json_t *rec = NULL;
    ss_err err = jobs_error(inf);
    if (!err) err = save_result(inf, ss_job_get_result(inf->ch[0].job), &rec);
    if (err) {
        api_fail(r, err);
        return;
    }
    api_json(r, 201, rec);
}

static void answer_score(infer *inf, ss_http_req *r)
{
    ss_err err = jobs_error(inf);
    if (err) {
        api_fail(r, err);
        return;
    }
    const ss_job_result *res = ss_job_get_result(inf->ch[0].job);
    json_t *lps = json_array(), *toks = json_array();
    double sum = 0;
    int counted = 0;
    for (int i = 0; i < res->n_cont; i++) {
        float v = res->token_logprobs[i];
        json_array_append_new(lps, api_real(v));
        json_array_append_new(toks, json_integer(inf->cont[i]));
        if (isfinite(v)) {
            sum += v;
            counted++;
        }
    }
    json_t *j = json_pack("{s:i,s:o,s:o,s:o,s:o,s:i,s:{s:i,s:i}}", "n_tokens", res->n_cont,
                          "logprob_sum", json_real(sum), "perplexity",
                          counted ? api_real(exp(-sum / counted)) : json_null(), "token_logprobs",
                          lps, "tokens", toks, "n_scored", counted, "usage", "prompt_tokens",
                          res->n_prompt, "context_tokens", res->n_prompt - res->n_cont);
    api_json(r, 200, j);
}

static void answer_generate(infer *inf, ss_http_req *r)
{
    ss_err err = jobs_error(inf);
    json_t *rec = NULL;
    choice *c = &inf->ch[0];
    const ss_job_result *res = err ? NULL : ss_job_get_result(c->job);
    if (!err && inf->want_save) err = save_result(inf, res, &rec);
    if (err) {
        if (!inf->stream) {
            api_fail(r, err);
        } else {
            sse_send(r, json_pack("{s:{s:s,s:s}}", "error", "code", api_code_of(err), "message",
                                  ss_errmsg()));
            ss_http_stream_write(r, "data: [DONE]\n\n", 14);
            ss_http_stream_end(r);
        }
        return;
    }
    json_t *usage = json_pack("{s:i,s:i,s:i}", "prompt_tokens", res->n_prompt, "completion_tokens",
                              res->n_generated, "total_tokens", res->n_prompt + res->n_generated);
    if (inf->stream) {
        json_t *j = json_pack("{s:o,s:s,s:o,s:o}", "text",
                              jstr(c->text ? c->text + c->streamed : "", c->text_len - c->streamed),
                              "finish_reason", finish_name(res->finish, 0), "usage", usage,
                              "timings", timings(res));
        if (j && rec)
            json_object_set_new(j, "state", rec);
        else
            json_decref(rec);
        sse_send(r, j);
        ss_http_stream_write(r, "data: [DONE]\n\n", 14);
        ss_http_stream_end(r);
        return;
    }
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
    if (j && rec)
        json_object_set_new(j, "state", rec);
    else
        json_decref(rec);
    api_json(r, 200, j);
}

static void answer_completions(infer *inf, ss_http_req *r)
{
    ss_err err = jobs_error(inf);
    if (err) {
        if (!inf->stream) {
            api_fail(r, err);
        } else {
            sse_send(r, json_pack("{s:{s:s,s:s}}", "error", "code", api_code_of(err), "message",
                                  ss_errmsg()));
            ss_http_stream_write(r, "data: [DONE]\n\n", 14);
            ss_http_stream_end(r);
        }
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
            json_t *ch =
                json_pack("{s:o,s:i,s:n,s:s}", "text",
                          jstr(c->text ? c->text + c->streamed : "", c->text_len - c->streamed),
                          "index", c->index, "logprobs", "finish_reason", fin);
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
    json_t *usage = json_pack("{s:i,s:i,s:i}", "prompt_tokens", n_prompt, "completion_tokens",
                              n_gen, "total_tokens", n_prompt + n_gen);
    if (inf->stream) {
        json_decref(choices);
        json_t *last = completion_chunk(inf, json_array());
        if (last)
            json_object_set_new(last, "usage", usage);
        else
            json_decref(usage);
        sse_send(r, last);
        ss_http_stream_write(r, "data: [DONE]\n\n", 14);
        ss_http_stream_end(r);
        return;
    }
    json_t *j = completion_chunk(inf, choices);
    if (j)
        json_object_set_new(j, "usage", usage);
    else
        json_decref(usage);
    api_json(r, 200, j);
}

static void finish_cont(void *app, ss_http_req *r, void *user)
{
    (void)app;
    infer *inf = user;
    if (ss_http_stopping(r) && !inf->stream) {
        ss_http_respond_error(r, 503, "shutting_down", "the server is shutting down");
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
 * Submit one job per choice (base params completed per choice), then park or start the stream.
 * On failure answers the error (jobs already queued are cancelled).
 */
static void submit_all(infer *inf, const ss_job_params *base)
{
    ss_http_req *r = inf->req;
    ss_err err = SS_OK;
    int submitted = 0;
    for (int i = 0; i < inf->n_choices; i++) {
        choice *c = &inf->ch[i];
        ss_job_params p = *base;
        p.prompt = c->prompt;
        p.n_prompt = c->n_prompt;
        p.sample.seed = c->seed;
        p.user = c;
        p.on_token = base->kind == SS_JOB_GENERATE ? on_token : NULL;
        p.on_done = on_done;
        ss_job *job = NULL;
        ss_http_req_ref(r);
        err = api_submit(inf->a, &p, &job);
        if (err) {
            ss_http_req_unref(r);
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
    if (inf->stream) ss_http_stream_start(r, "text/event-stream");
    ss_http_wait(r, finish_cont, inf);
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

/* Per-choice buffers for generation (detokenizer, stop matcher, top logprobs). */
static ss_err choice_setup(infer *inf, choice *c, const json_t *stops)
{
    ss_err err;
    if (inf->a->tok && (err = ss_detok_new(inf->a->tok, &c->detok))) return err;
    if ((err = api_stop_init(&c->stop, stops))) return err;
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

/* ---- handlers ------------------------------------------------------------------------------ */

void api_h_states_create(void *app, ss_http_req *r)
{
    ss_api *a = app;
    if (!api_ready(a, r)) return;
    json_t *body = api_body(r);
    if (!body) return;
    ss_err err = SS_OK;
    infer *inf = infer_new(a, r, EP_STATES);
    if (!inf) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    json_t *pv = json_object_get(body, "prompt"), *tv = json_object_get(body, "tokens");
    if (pv && tv) {
        err = ss_fail(SS_ERR_FORMAT, "give \"prompt\" or \"tokens\", not both");
        goto out;
    }
    if (!pv) pv = tv;
    if (!pv && !json_object_get(body, "from")) {
        err = ss_fail(SS_ERR_FORMAT, "\"prompt\" (text) or \"tokens\" (ids) is required");
        goto out;
    }
    if (pv && (err = api_tokens(a, pv, pv == tv ? "tokens" : "prompt", &inf->ch[0].prompt,
                                &inf->ch[0].n_prompt)))
        goto out;
    if ((err = api_save_parse(a, body, &inf->save))) goto out;
    if ((err = api_start_resolve(a, body, "from", 0, &inf->start))) goto out;
    if (inf->ch[0].n_prompt == 0 && !inf->start.st) {
        err = ss_fail(SS_ERR_INVALID, "the prompt is empty");
        goto out;
    }
    inf->n_choices = 1;
    /* with `from` and an empty prompt the job just copies the state: a plain "save as" */
    ss_job_params p = base_params(inf, SS_JOB_PREFILL);
    submit_all(inf, &p);
out:
    if (err) api_fail(r, err);
    json_decref(body);
}

/* Shared by generate and completions: the parts that are the same. */
static ss_err parse_generation(ss_api *a, ss_http_req *r, json_t *body, infer *inf,
                               ss_job_params *p, long long dflt_max)
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
        if ((err = choice_setup(inf, &inf->ch[i], stops))) return err;
        if (inf->ch[i].n_prompt == 0 && !inf->start.has_hidden && inf->max_tokens > 0)
            return ss_fail(SS_ERR_INVALID, "the prompt is empty: give a prompt, or a starting "
                                           "state (state or merge) to predict the first token "
                                           "from");
    }
    (void)r;
    return SS_OK;
}

void api_h_generate(void *app, ss_http_req *r)
{
    ss_api *a = app;
    if (!api_ready(a, r)) return;
    json_t *body = api_body(r);
    if (!body) return;
    ss_err err = SS_OK;
    ss_job_params p;
    infer *inf = infer_new(a, r, EP_GENERATE);
    if (!inf) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    inf->n_choices = 1;
    json_t *pv = json_object_get(body, "prompt");
    if (pv && !json_is_null(pv) &&
        (err = api_tokens(a, pv, "prompt", &inf->ch[0].prompt, &inf->ch[0].n_prompt)))
        goto out;
    json_t *sv = json_object_get(body, "save_state");
    if (sv && !json_is_null(sv) && !json_is_false(sv)) {
        if (!json_is_object(sv) && !json_is_true(sv)) {
            err = ss_fail(SS_ERR_FORMAT, "\"save_state\" must be an object {name?, tags?, "
                                         "metadata?}");
            goto out;
        }
        if (ss_http_scope_of(r) != SS_HTTP_SCOPE_WRITE) {
            err = ss_fail(SS_ERR_PERM, "save_state stores a state: it needs a key with write "
                                       "scope");
            goto out;
        }
        json_t *empty = json_object();
        err = api_save_parse(a, json_is_object(sv) ? sv : empty, &inf->save);
        json_decref(empty);
        if (err) goto out;
        inf->want_save = 1;
    }
    if ((err = parse_generation(a, r, body, inf, &p, 64))) goto out;
    p.want_state = inf->want_save;
    submit_all(inf, &p);
out:
    if (err) api_fail(r, err);
    json_decref(body);
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

void api_h_completions(void *app, ss_http_req *r)
{
    ss_api *a = app;
    if (!api_ready(a, r)) return;
    json_t *body = api_body(r);
    if (!body) return;
    ss_err err = SS_OK;
    ss_job_params p;
    infer *inf = infer_new(a, r, EP_COMPLETIONS);
    if (!inf) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    unsigned char rnd[12];
    char hex[25];
    if ((err = ss_random_bytes(rnd, sizeof rnd))) goto out;
    ss_hex(rnd, sizeof rnd, hex);
    snprintf(inf->cmpl_id, sizeof inf->cmpl_id, "cmpl-%s", hex);
    inf->created = (long long)time(NULL);
    if ((err = api_get_bool(body, "echo", 0, &inf->echo))) goto out;
    long long n_per;
    if ((err = api_get_int(body, "n", 1, &n_per))) goto out;
    if (n_per < 1 || n_per > MAX_CHOICES) {
        err = ss_fail(SS_ERR_INVALID, "n must be between 1 and %d", MAX_CHOICES);
        goto out;
    }
    /* prompt: "text" | [ids] | ["text", ...] | [[ids], ...]; absent = empty */
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
            err = ss_fail(SS_ERR_INVALID, "at most %d choices (prompts x n) per request",
                          MAX_CHOICES);
            goto out;
        }
        for (int i = 0; i < n_prompts; i++) prompts[i] = json_array_get(pv, (size_t)i);
    }
    inf->n_choices = n_prompts * (int)n_per;
    for (int i = 0; i < inf->n_choices && !err; i++) {
        choice *c = &inf->ch[i];
        char what[32];
        snprintf(what, sizeof what, n_prompts > 1 ? "prompt[%d]" : "prompt", i / (int)n_per);
        err = api_tokens(a, prompts[i / (int)n_per], what, &c->prompt, &c->n_prompt);
        if (!err && inf->echo) err = prompt_text(a, prompts[i / (int)n_per], c);
    }
    json_decref(empty);
    if (err) goto out;
    if ((err = parse_generation(a, r, body, inf, &p, 16))) goto out;
    if (inf->echo && inf->want_logprobs) {
        err = ss_fail(SS_ERR_UNSUPPORTED, "echo together with logprobs is not supported: use "
                                          "POST /v1/score for the prompt's log-probabilities");
        goto out;
    }
    submit_all(inf, &p);
out:
    if (err) api_fail(r, err);
    json_decref(body);
}

void api_h_score(void *app, ss_http_req *r)
{
    ss_api *a = app;
    if (!api_ready(a, r)) return;
    json_t *body = api_body(r);
    if (!body) return;
    ss_err err = SS_OK;
    infer *inf = infer_new(a, r, EP_SCORE);
    if (!inf) {
        err = ss_fail(SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    inf->n_choices = 1;
    json_t *cv = json_object_get(body, "context"), *kv = json_object_get(body, "continuation");
    if (!kv) {
        err = ss_fail(SS_ERR_FORMAT, "\"continuation\" (text or token ids) is required");
        goto out;
    }
    if (cv && !json_is_null(cv) &&
        (err = api_tokens(a, cv, "context", &inf->ch[0].prompt, &inf->ch[0].n_prompt)))
        goto out;
    if ((err = api_tokens(a, kv, "continuation", &inf->cont, &inf->n_cont))) goto out;
    if (inf->n_cont == 0) {
        err = ss_fail(SS_ERR_INVALID, "the continuation is empty");
        goto out;
    }
    if ((err = api_start_resolve(a, body, "state", 1, &inf->start))) goto out;
    ss_job_params p = base_params(inf, SS_JOB_SCORE);
    p.cont = inf->cont;
    p.n_cont = inf->n_cont;
    submit_all(inf, &p);
out:
    if (err) api_fail(r, err);
    json_decref(body);
}
