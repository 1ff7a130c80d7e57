/*
 * infer.c - the handlers of the endpoints that run the model: POST /v1/states (prefill and
 * store), /v1/generate, /v1/completions (OpenAI-compatible) and /v1/score.
 *
 * Each reads its request into an inference context (infer_parse.c), which resolves the starting
 * state (stored, merged on the fly, or zero), then submits one engine job per choice and parks
 * the request (infer_job.c); the answer is built when every job is done (infer_answer.c).
 * infer.h tells the whole story.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "infer.h"
#include "ss_util.h"

/*
 * Each handler is run by api_with_body (model loaded, body a JSON object) and returns an error
 * to answer, or SS_OK once infer_submit has answered or parked the request. `inf` starts NULL:
 * infer_new sets it only on success and every use is behind a success check, but a release
 * build (gcc -O3) cannot see that ss_fail returns its nonzero code and warned "may be used
 * uninitialized".
 */

/* POST /v1/states: batch form [{prompt | tokens, name?, tags?, metadata?}, ...], one record each */
static ss_err states_create(ss_api *a, ss_host_req *r, json_t *body)
{
    infer *inf = NULL;
    ss_err err = infer_new(a, r, EP_STATES, &inf);
    if (!err) err = infer_parse_batch(a, body, inf, &infer_states_batch);
    if (!err && !inf->batch) {
        err = infer_state_prompt(a, body, json_object_get(body, "from") != NULL, "", &inf->ch[0]);
        if (!err) err = api_save_parse(a, &inf->scope, body, &inf->save);
    }
    if (!err) err = api_start_resolve(a, &inf->scope, body, "from", 0, &inf->start);
    if (!err) err = prefix_root(inf);
    if (!err && !inf->batch) err = prefix_parse_checkpoints(body, "", inf, inf->ch[0].n_prompt, 0);
    if (err) return err;
    for (int i = 0; i < inf->n_choices; i++)
        if (inf->ch[i].n_prompt == 0 && !inf->start.st)
            return ss_fail(SS_ERR_INVALID, "the prompt%s%s is empty", inf->batch ? " of " : "",
                           inf->ch[i].label);
    /* with `from` and an empty prompt the job just copies the state: a plain "save as" */
    ss_job_params p = infer_base_params(inf, SS_JOB_PREFILL);
    infer_submit(inf, &p);
    return SS_OK;
}

void api_h_states_create(void *app, ss_host_req *r)
{
    api_with_body(app, r, states_create);
}

/* /v1/generate: "prompt", or in batch form "prompts": [prompt, ...], one result each. */
static ss_err generate_parse(infer *inf, json_t *body)
{
    ss_api *a = inf->a;
    ss_job_params p;
    ss_err err;
    json_t *pv = json_object_get(body, "prompt"), *bv = json_object_get(body, "prompts");
    if (bv && !json_is_null(bv)) {
        if (pv && !json_is_null(pv))
            return ss_fail(SS_ERR_FORMAT, "give \"prompt\" or \"prompts\", not both");
        if ((err = infer_batch_members(inf, bv, "prompts"))) return err;
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
    if ((err = infer_parse_save_state(a, body, inf))) return err;
    if ((err = infer_parse_generation(a, body, inf, &p, 64))) return err;
    if (inf->batch && inf->stream)
        return ss_fail(SS_ERR_UNSUPPORTED, "stream is not supported with \"prompts\"; "
                                           "/v1/completions streams the choices of several "
                                           "prompts");
    json_t *sv = json_object_get(body, "save_state");
    if ((err = prefix_root(inf))) return err;
    if (inf->want_save && json_is_object(sv) &&
        (err = prefix_parse_checkpoints(sv, "save_state.", inf, inf->ch[0].n_prompt, 1)))
        return err;
    if ((err = prefix_reuse(a, body, inf, &p))) return err;
    p.want_state = inf->want_save;
    infer_submit(inf, &p);
    return SS_OK;
}

/*
 * A new context for endpoint ep, then parse(inf, body); with "merge": {"retrieve"} first the
 * retrieval (search.c), its query defaulting to the body's `query_key`, and parse after it.
 */
static ss_err start(ss_api *a, ss_host_req *r, json_t *body, endpoint ep, const char *query_key,
                    api_retrieve_next parse)
{
    infer *inf = NULL;
    ss_err err = infer_new(a, r, ep, &inf);
    if (err) return err;
    if (api_retrieve_wanted(body))
        return api_retrieve_start(inf, body, json_object_get(body, query_key), parse);
    return parse(inf, body);
}

static ss_err generate(ss_api *a, ss_host_req *r, json_t *body)
{
    return start(a, r, body, EP_GENERATE, "prompt", generate_parse);
}

void api_h_generate(void *app, ss_host_req *r)
{
    api_with_body(app, r, generate);
}

static ss_err completions_parse(infer *inf, json_t *body)
{
    ss_api *a = inf->a;
    ss_job_params p;
    ss_err err;
    unsigned char rnd[12];
    char hex[25];
    if ((err = ss_random_bytes(rnd, sizeof rnd))) return err;
    ss_hex(rnd, sizeof rnd, hex);
    snprintf(inf->cmpl_id, sizeof inf->cmpl_id, "cmpl-%s", hex);
    inf->created = (long long)time(NULL);
    if ((err = api_get_bool(body, "echo", 0, &inf->echo))) return err;
    if ((err = infer_completion_prompts(a, body, inf))) return err;
    if ((err = infer_parse_generation(a, body, inf, &p, 16))) return err;
    if (inf->echo && inf->want_logprobs)
        return ss_fail(SS_ERR_UNSUPPORTED, "echo together with logprobs is not supported: use "
                                           "POST /v1/score for the prompt's log-probabilities");
    if ((err = prefix_reuse(a, body, inf, &p))) return err;
    infer_submit(inf, &p);
    return SS_OK;
}

static ss_err completions(ss_api *a, ss_host_req *r, json_t *body)
{
    return start(a, r, body, EP_COMPLETIONS, "prompt", completions_parse);
}

void api_h_completions(void *app, ss_host_req *r)
{
    api_with_body(app, r, completions);
}

/* /v1/score: batch form [{context?, continuation}, ...], one result each */
static ss_err score_parse(infer *inf, json_t *body)
{
    ss_api *a = inf->a;
    ss_err err = infer_parse_batch(a, body, inf, &infer_score_batch);
    if (!err && !inf->batch) err = infer_score_member(a, body, body, "", inf, 0);
    if (!err) err = api_start_resolve(a, &inf->scope, body, "state", 1, &inf->start);
    if (err) return err;
    if ((err = prefix_reuse(a, body, inf, NULL))) return err;
    ss_job_params p = infer_base_params(inf, SS_JOB_SCORE);
    infer_submit(inf, &p);
    return SS_OK;
}

static ss_err score(ss_api *a, ss_host_req *r, json_t *body)
{
    return start(a, r, body, EP_SCORE, "context", score_parse);
}

void api_h_score(void *app, ss_host_req *r)
{
    api_with_body(app, r, score);
}
