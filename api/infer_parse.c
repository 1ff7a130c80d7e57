/*
 * infer_parse.c - reading the body of an inference request into its context: sampling, limits,
 * stop strings, the batch forms and each endpoint's prompts. Everything is validated here, on
 * the host thread, with messages that name the request's fields (the engine and the model then
 * receive only valid input).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer.h"
#include "ss_util.h"

/* ---- options ------------------------------------------------------------------------------- */

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
    if (n < 0 || n > SS_ENGINE_MAX_LOGPROBS)
        return ss_fail(SS_ERR_INVALID, "logprobs must be between 0 and %d", SS_ENGINE_MAX_LOGPROBS);
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

ss_job_params infer_base_params(infer *inf, ss_job_kind kind)
{
    ss_job_params p = {0};
    p.kind = kind;
    p.start_state = inf->start.st ? ss_state_cdata(inf->start.st) : NULL;
    p.start_decay = inf->start.st && ss_state_has_decay(inf->start.st)
                        ? ss_state_cdecay(inf->start.st) : NULL;
    p.start_has_hidden = inf->start.has_hidden;
    return p;
}

ss_err infer_parse_generation(ss_api *a, json_t *body, infer *inf, ss_job_params *p,
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
    if ((err = api_start_resolve(a, &inf->scope, body, "state", 1, &inf->start))) return err;
    *p = infer_base_params(inf, SS_JOB_GENERATE);
    p->max_tokens = inf->max_tokens;
    p->sample = sp;
    p->n_logprobs = inf->n_logprobs;
    p->stop_at_eos = inf->stop_at_eos;
    for (int i = 0; i < inf->n_choices; i++) {
        inf->ch[i].seed = seed + (uint64_t)i;
        if ((err = choice_setup(inf, &inf->ch[i]))) return err;
        if (inf->ch[i].n_prompt == 0 && !inf->start.has_hidden && inf->max_tokens > 0)
            return ss_fail(SS_ERR_INVALID,
                           "the prompt%s%s is empty: give a prompt, or a "
                           "starting state (state or merge) to predict the first "
                           "token from",
                           inf->batch ? " " : "", inf->batch ? inf->ch[i].label : "");
    }
    return SS_OK;
}

ss_err infer_parse_save_state(ss_api *a, json_t *body, infer *inf)
{
    json_t *sv = json_object_get(body, "save_state");
    if (!sv || json_is_null(sv) || json_is_false(sv)) return SS_OK;
    if (!json_is_object(sv) && !json_is_true(sv))
        return ss_fail(SS_ERR_FORMAT, "\"save_state\" must be an object {name?, tags?, "
                                      "metadata?}");
    if (ss_host_scope_of(inf->req) < SS_HOST_SCOPE_WRITE)
        return ss_fail(SS_ERR_PERM, "save_state stores a state: it needs a key with write "
                                    "scope");
    if (inf->batch && json_is_object(sv) && json_object_get(sv, "name") &&
        !json_is_null(json_object_get(sv, "name")))
        return ss_fail(SS_ERR_INVALID, "save_state.name cannot be used with \"prompts\": a name "
                                       "belongs to one state (use tags)");
    json_t *empty = json_object();
    ss_err err = api_save_parse(a, &inf->scope, json_is_object(sv) ? sv : empty, &inf->save);
    json_decref(empty);
    if (err) return err;
    inf->want_save = 1;
    return SS_OK;
}

/* ---- prompts and batch forms --------------------------------------------------------------- */

ss_err infer_batch_members(infer *inf, const json_t *v, const char *key)
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

ss_err infer_parse_batch(ss_api *a, json_t *body, infer *inf, const batch_spec *s)
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
    ss_err err = infer_batch_members(inf, bv, "batch");
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

ss_err infer_state_prompt(ss_api *a, json_t *o, int have_from, const char *where, choice *c)
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
    ss_err err = infer_state_prompt(a, item, json_object_get(body, "from") != NULL, where, c);
    if (err) return err;
    json_t *o = json_copy(item);
    if (!o) return ss_fail(SS_ERR_NOMEM, "out of memory");
    static const char *const shared[] = {"tags", "metadata"};
    for (int k = 0; k < 2; k++)
        if (!json_object_get(o, shared[k]) && json_object_get(body, shared[k]))
            json_object_set(o, shared[k], json_object_get(body, shared[k]));
    err = api_save_parse(a, &inf->scope, o, &c->save);
    json_decref(o);
    if (err) return err;
    for (int k = 0; k < i && c->save.name; k++)
        if (inf->ch[k].save.name && !strcmp(inf->ch[k].save.name, c->save.name))
            return ss_fail(SS_ERR_INVALID, "batch[%d] and batch[%d] are both named '%s'", k, i,
                           c->save.name);
    return SS_OK;
}

const batch_spec infer_states_batch = {
    .own = {"prompt", "tokens", "name", NULL},
    .own_text = "prompt or tokens and name",
    .shape = "{prompt | tokens, name?, tags?, metadata?}",
    .member = state_member,
};

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

ss_err infer_completion_prompts(ss_api *a, json_t *body, infer *inf)
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

ss_err infer_score_member(ss_api *a, json_t *body, json_t *o, const char *where, infer *inf, int i)
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

const batch_spec infer_score_batch = {
    .own = {"context", "continuation", NULL},
    .own_text = "context and continuation",
    .shape = "{context?, continuation}",
    .member = infer_score_member,
};
