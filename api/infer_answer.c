/*
 * infer_answer.c - the answers of the inference endpoints, built on a host thread once every job
 * of a request is done (infer_finish), and the events of a stream (infer_token_event, engine
 * thread). States asked for are stored here, before answering: LMDB commits never run on the
 * engine thread.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer.h"
#include "ss_util.h"

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
    case SS_FINISH_LENGTH:
        return "length";
    case SS_FINISH_EOS:
        return openai ? "stop" : "eos";
    case SS_FINISH_STOP:
        return "stop";
    case SS_FINISH_CANCELLED:
        return "cancelled";
    default:
        return "error";
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

/* o with o[key] = v, unless v is NULL; v is stolen (dropped when o is NULL). Returns o. */
static json_t *set_member(json_t *o, const char *key, json_t *v)
{
    if (o && v)
        json_object_set_new(o, key, v);
    else
        json_decref(v);
    return o;
}

/* o with "retrieved": the states a retrieve-then-merge used (docs/api.md), when there are. */
static json_t *with_retrieved(const infer *inf, json_t *o)
{
    return inf->retrieved ? set_member(o, "retrieved", json_incref(inf->retrieved)) : o;
}

/* usage: n_prompt counts the prompt tokens resumed from a stored state (cached) too. */
static json_t *usage_json(int n_prompt, int n_gen, int cached)
{
    return json_pack("{s:i,s:i,s:i,s:i}", "prompt_tokens", n_prompt, "completion_tokens", n_gen,
                     "total_tokens", n_prompt + n_gen, "cached_tokens", cached);
}

/* The text of choice c not yet sent as events. */
static json_t *unsent_text(const choice *c)
{
    return jstr(c->text ? c->text + c->streamed : "", c->text_len - c->streamed);
}

json_t *infer_token_event(infer *inf, const choice *c, const ss_token_event *ev, size_t before)
{
    const char *nt = c->text ? c->text + before : "";
    size_t nn = c->text_len - before;
    if (inf->ep == EP_GENERATE) {
        json_t *j = json_pack("{s:o,s:i}", "text", jstr(nt, nn), "token", ev->id);
        if (j && inf->want_logprobs) {
            json_object_set_new(j, "logprob", api_real(ev->logprob));
            if (ev->n_top > 0) {
                json_t *top = json_array();
                for (int k = 0; top && k < ev->n_top; k++)
                    json_array_append_new(top, json_pack("{s:i,s:o,s:o}", "token", ev->top_ids[k],
                                                         "text", token_text(inf->a, ev->top_ids[k]),
                                                         "logprob", api_real(ev->top_logprobs[k])));
                json_object_set_new(j, "top_logprobs", top);
            }
        }
        return j;
    }
    json_t *lp = json_null();
    if (inf->want_logprobs) {
        /* a one-token logprobs object; top entries come from this event */
        json_t *top = json_object();
        for (int k = 0; top && k < ev->n_top; k++) {
            json_t *tt = token_text(inf->a, ev->top_ids[k]);
            json_object_set_new(top, json_string_value(tt), api_real(ev->top_logprobs[k]));
            json_decref(tt);
        }
        json_decref(lp);
        lp = json_pack("{s:[o],s:[o],s:[o],s:[I]}", "tokens", token_text(inf->a, ev->id),
                       "token_logprobs", api_real(ev->logprob), "top_logprobs",
                       ev->n_top > 0 ? top : (json_decref(top), json_null()), "text_offset",
                       (json_int_t)before);
    }
    return completion_chunk(inf, json_pack("[{s:o,s:i,s:o,s:n}]", "text", jstr(nt, nn), "index",
                                           c->index, "logprobs", lp, "finish_reason"));
}

/* ---- answers (host thread, once every job is done) ----------------------------------------- */

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
    infer_sse_send(
        r, json_pack("{s:{s:s,s:s}}", "error", "code", api_code_of(err), "message", ss_errmsg()));
    infer_sse_done(r);
}

static json_t *timings(const ss_job_result *res)
{
    double tps = res->decode_ms > 0 ? res->n_generated / (res->decode_ms / 1e3) : 0;
    return json_pack("{s:o,s:o,s:o,s:o}", "queue_ms", api_real(res->queue_ms), "prefill_ms",
                     api_real(res->prefill_ms), "decode_ms", api_real(res->decode_ms),
                     "tokens_per_s", api_real(tps));
}

/* Store a job's final state (save_state / POST /v1/states) with `save`; *rec gets the record. */
static ss_err save_result(infer *inf, const api_save *save, const choice *c, json_t **rec)
{
    return prefix_save(inf, save, c, ss_job_get_result(c->job), rec);
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
        err = save_result(inf, inf->batch ? &c->save : &inf->save, c, &rec);
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
static json_t *score_json(const infer *inf, const choice *c, const ss_job_result *res)
{
    int n_prompt = res->n_prompt + inf->cached;
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
    return json_pack("{s:i,s:o,s:o,s:o,s:o,s:i,s:{s:i,s:i,s:i}}", "n_tokens", res->n_cont,
                     "logprob_sum", json_real(sum), "perplexity",
                     counted ? api_real(exp(-sum / counted)) : json_null(), "token_logprobs", lps,
                     "tokens", toks, "n_scored", counted, "usage", "prompt_tokens", n_prompt,
                     "context_tokens", n_prompt - res->n_cont, "cached_tokens", inf->cached);
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
        api_json(r, 200, with_retrieved(inf, score_json(inf, &inf->ch[0],
                                                        ss_job_get_result(inf->ch[0].job))));
        return;
    }
    json_t *results = json_array();
    int n_prompt = 0;
    for (int i = 0; results && i < inf->n_choices; i++) {
        const ss_job_result *res = ss_job_get_result(inf->ch[i].job);
        n_prompt += res->n_prompt;
        json_t *o = score_json(inf, &inf->ch[i], res);
        if (o) json_object_set_new(o, "index", json_integer(i));
        json_array_append_new(results, o);
    }
    api_json(r, 200,
             with_retrieved(inf, json_pack("{s:s,s:o,s:{s:i,s:i}}", "object", "list", "results",
                                           results, "usage", "prompt_tokens", n_prompt,
                                           "cached_tokens", 0))); /* batches never reuse */
}

/* The non-streamed /v1/generate answer for one choice (rec, the saved state, is stolen). */
static json_t *generate_json(infer *inf, const choice *c, const ss_job_result *res, json_t *rec)
{
    json_t *usage = usage_json(res->n_prompt + inf->cached, res->n_generated, inf->cached);
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
        if (inf->want_save && (err = save_result(inf, &inf->save, &inf->ch[i], &rec))) break;
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
    api_json(r, 200, with_retrieved(inf, json_pack("{s:s,s:o,s:o,s:s}", "object", "list",
                                                   "results", results, "usage",
                                                   usage_json(n_prompt, n_gen, 0), "model",
                                                   inf->a->model_name)));
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
    if (!err && inf->want_save) err = save_result(inf, &inf->save, c, &rec);
    if (err) {
        answer_error(inf, r, err);
        return;
    }
    if (inf->stream) {
        json_t *j = json_pack("{s:o,s:s,s:o,s:o}", "text", unsent_text(c), "finish_reason",
                              finish_name(res->finish, 0), "usage",
                              usage_json(res->n_prompt + inf->cached, res->n_generated,
                                         inf->cached),
                              "timings", timings(res));
        infer_sse_send(r, with_retrieved(inf, set_member(j, "state", rec)));
        infer_sse_done(r);
        return;
    }
    api_json(r, 200, with_retrieved(inf, generate_json(inf, c, res, rec)));
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
        n_prompt += res->n_prompt + inf->cached;
        n_gen += res->n_generated;
        const char *fin = finish_name(res->finish, 1);
        if (inf->stream) {
            json_t *ch = json_pack("{s:o,s:i,s:n,s:s}", "text", unsent_text(c), "index", c->index,
                                   "logprobs", "finish_reason", fin);
            infer_sse_send(r, completion_chunk(inf, json_pack("[o]", ch)));
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
    json_t *usage = usage_json(n_prompt, n_gen, inf->cached * inf->n_choices);
    if (inf->stream) {
        json_decref(choices);
        infer_sse_send(r, with_retrieved(inf, set_member(completion_chunk(inf, json_array()),
                                                         "usage", usage)));
        infer_sse_done(r);
        return;
    }
    api_json(r, 200,
             with_retrieved(inf, set_member(completion_chunk(inf, choices), "usage", usage)));
}

void infer_finish(void *app, ss_host_req *r, void *user)
{
    (void)app;
    infer *inf = user;
    if (ss_host_stopping(r) && !inf->stream) {
        api_reject(r, SS_ERR_BUSY, API_CODE_SHUTTING_DOWN, "the server is shutting down");
        return;
    }
    switch (inf->ep) {
    case EP_STATES:
        answer_states(inf, r);
        break;
    case EP_SCORE:
        answer_score(inf, r);
        break;
    case EP_GENERATE:
        answer_generate(inf, r);
        break;
    case EP_COMPLETIONS:
        answer_completions(inf, r);
        break;
    case EP_SEARCH:
        api_search_answer(inf, r);
        break;
    }
    /* after the answer: the automatic cache keeps the prompt's checkpoints */
    if (inf->n_ccps && jobs_error(inf) == SS_OK) api_cache_store(inf);
    ss_err_clear();
}
