/*
 * prefix.c - statesoup-bench's "prefix" phase: the time to first token of a long prompt whose
 * beginning is already stored, with and without resuming from it (prompt caching, docs/api.md).
 *
 * A 2,000-token prompt shares its first 1,900 tokens with a stored state (stored the way the
 * daemon stores a state made from tokens: indexed under its prefix chain). Without reuse the
 * engine prefills all 2,000 tokens and samples one; with reuse the request does what the API
 * does for "reuse": the chain of every prefix of the prompt (XXH3-128 per token), the index
 * lookup of the longest stored one, the state read (checksummed) into the job's start, and a
 * prefill of the 100 tokens left. Both must pick the same first token (greedy).
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "ss_store.h"

#define PFX_RUNS 3 /* each way; the median is reported */

/* Greedy first token of prompt[0..n) from start (NULL: the zero state); -1 on failure. */
static int32_t first_token(ss_engine *e, const float *start, const int32_t *prompt, int n)
{
    ss_job_params p = {.kind = SS_JOB_GENERATE, .prompt = prompt, .n_prompt = n,
                       .start_state = start, .start_has_hidden = start != NULL, .max_tokens = 1,
                       .sample = ss_sample_default_params(), .stop_at_eos = 0};
    p.sample.temperature = 0;
    ss_job *j = NULL;
    if (ss_engine_run(e, &p, &j)) return -1;
    const ss_job_result *r = ss_job_get_result(j);
    int32_t t = r->n_generated == 1 ? r->tokens[0] : -1;
    ss_job_free(j);
    return t;
}

/* The stored prefix: prefill shared[0..n), store the state indexed under its chain. */
static ss_err store_prefix(ss_engine *e, ss_store *st, const ss_model_info *info,
                           const int32_t *shared, int n)
{
    ss_job_params p = {.kind = SS_JOB_PREFILL, .prompt = shared, .n_prompt = n};
    ss_job *j = NULL;
    ss_err err = ss_engine_run(e, &p, &j);
    const ss_job_result *r = err ? NULL : ss_job_get_result(j);
    if (!err && !r->state) err = ss_fail(SS_ERR_INTERNAL, "the prefill kept no state");
    if (!err) {
        ss_store_prefix_entry pe = {.model = info->fingerprint, .n_tokens = n};
        ss_prefix_root(info->fingerprint, NULL, &pe.chain);
        ss_prefix_root(info->fingerprint, "*", &pe.any);
        for (int i = 0; i < n; i++) {
            ss_prefix_step(&pe.chain, shared[i]);
            ss_prefix_step(&pe.any, shared[i]);
        }
        char rec[512];
        snprintf(rec, sizeof rec, "{\"model\": \"%s\", \"n_tokens\": %d, \"dtype\": \"F32\"}",
                 info->fingerprint, n);
        err = ss_store_put_prefixed(st, rec, ss_state_cdata(r->state), info->state_bytes, &pe,
                                    NULL);
    }
    ss_job_free(j);
    return err;
}

/* One request with reuse: lookup, state read, prefill of the rest. Returns the token or -1. */
static int32_t with_reuse(ss_engine *e, ss_store *st, const ss_model_info *info, float *buf,
                          const int32_t *prompt, int n, int *cached)
{
    ss_prefix *chains = malloc((size_t)n * sizeof *chains);
    if (!chains) return -1;
    ss_prefix h;
    ss_prefix_root(info->fingerprint, NULL, &h);
    for (int i = 0; i < n - 1; i++) { /* one token is always fed */
        ss_prefix_step(&h, prompt[i]);
        chains[i] = h;
    }
    char id[SS_STORE_ID_LEN + 1];
    int pos = 0;
    ss_err err = ss_store_prefix_find(st, chains, n - 1, 0, &pos, id);
    free(chains);
    if (!err)
        err = ss_store_get_blob(st, id, info->fingerprint, buf, info->state_bytes, NULL, NULL);
    if (err) {
        pos = 0;
        *cached = 0;
        return first_token(e, NULL, prompt, n);
    }
    *cached = pos;
    return first_token(e, buf, prompt + pos, n - pos);
}

int bench_prefix(ss_model *m, const char *store_dir, int n_prompt, int n_shared, json_t *jm)
{
    const ss_model_info *info = ss_model_get_info(m);
    ss_engine *e = NULL;
    ss_store *st = NULL;
    int rc = -1;
    int32_t *prompt = malloc((size_t)n_prompt * sizeof *prompt);
    float *buf = malloc(info->state_bytes);
    ss_store_params sp = ss_store_default_params();
    if (!prompt || !buf || ss_engine_open(&e, m, NULL) || ss_store_open(&st, store_dir, &sp))
        goto out;
    for (int i = 0; i < n_prompt; i++) prompt[i] = (int32_t)((i * 7919 + 101) % info->vocab_size);
    printf("  prefix: %d-token prompt, the first %d stored\n", n_prompt, n_shared);
    if (store_prefix(e, st, info, prompt, n_shared)) goto out;
    double t_full[PFX_RUNS], t_reuse[PFX_RUNS];
    int32_t tok_full = -2, tok_reuse = -3;
    int cached = 0;
    for (int r = 0; r < PFX_RUNS; r++) {
        double t0 = bench_now_s();
        tok_full = first_token(e, NULL, prompt, n_prompt);
        t_full[r] = bench_now_s() - t0;
        t0 = bench_now_s();
        tok_reuse = with_reuse(e, st, info, buf, prompt, n_prompt, &cached);
        t_reuse[r] = bench_now_s() - t0;
    }
    qsort(t_full, PFX_RUNS, sizeof(double), bench_cmp_double);
    qsort(t_reuse, PFX_RUNS, sizeof(double), bench_cmp_double);
    double full = t_full[PFX_RUNS / 2], reuse = t_reuse[PFX_RUNS / 2];
    printf("  time to first token: %.1f ms full prefill, %.1f ms resuming %d stored tokens: "
           "%.1fx; first token %s\n",
           full * 1e3, reuse * 1e3, cached, full / reuse,
           tok_full == tok_reuse && tok_full >= 0 ? "the same" : "DIFFERENT");
    json_object_set_new(jm, "prefix",
                        json_pack("{s:i,s:i,s:i,s:f,s:f,s:f,s:b}", "prompt_tokens", n_prompt,
                                  "stored_tokens", n_shared, "cached_tokens", cached,
                                  "ttft_full_ms", full * 1e3, "ttft_reuse_ms", reuse * 1e3,
                                  "speedup", full / reuse, "same_first_token",
                                  tok_full == tok_reuse && tok_full >= 0));
    rc = 0;
out:
    ss_engine_close(e);
    ss_store_close(st);
    free(prompt);
    free(buf);
    return rc;
}
