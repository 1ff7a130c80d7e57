/*
 * profile.c - statesoup-bench --profile: where one decode token's time goes, phase by phase.
 *
 * Batch-1 greedy decode as the engine runs it (ss_model_eval of one token, then the engine's
 * sampler with the token's logprob), on the calling thread with the context's per-phase counters
 * on (ss_ctx_set_profile): microseconds per token in each phase of the forward pass, in sampling,
 * and at the meeting points of the pool's threads; beside it, the time streaming the weights
 * needs at the bandwidth measured just before and after. What is left is the fixed cost per
 * token, measured directly rather than as (time per token - bytes / bandwidth) of a whole run.
 * The same loop with the counters off says what counting costs.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"
#include "ss_util.h"

/* One run of n tokens: totals in ns, and the context's counts. */
typedef struct prof_run {
    double token_ns, sample_ns;
    ss_profile pr;
} prof_run;

/* Decode n tokens greedily from st (fed `tok` first), counters on or off. */
static int decode_run(ss_model *m, ss_ctx *c, ss_state *st, ss_sampler *smp, float *logits, int n,
                      int on, prof_run *out)
{
    int32_t tok = 1;
    ss_seq q = {.state = st, .tokens = &tok, .n_tokens = 1, .logits = logits};
    *out = (prof_run){0};
    ss_ctx_set_profile(c, on);
    for (int i = 0; i < n; i++) {
        const int64_t t0 = ss_mono_ns();
        if (ss_model_eval(m, c, &q, 1, 0)) return -1;
        const int64_t t1 = ss_mono_ns();
        float lp;
        tok = ss_sampler_sample(smp, logits, &lp);
        const int64_t t2 = ss_mono_ns();
        out->token_ns += (double)(t2 - t0);
        out->sample_ns += (double)(t2 - t1);
    }
    ss_ctx_get_profile(c, &out->pr);
    ss_ctx_set_profile(c, 0);
    return 0;
}

int bench_profile(ss_model *m, int n_tok, int reps, double stream_bytes,
                  double (*bandwidth)(void *user), void *bw_user, json_t *jm)
{
    const ss_model_info *info = ss_model_get_info(m);
    ss_ctx *c = NULL;
    ss_state *st = NULL;
    ss_sampler *smp = NULL;
    float *logits = malloc((size_t)info->vocab_size * sizeof(float));
    ss_sample_params sp = ss_sample_default_params();
    sp.temperature = 0;
    int rc = -1;
    if (!logits || ss_ctx_new(m, &c) || ss_state_new(m, &st) ||
        ss_sampler_new(&sp, info->vocab_size, &smp))
        goto out;
    prof_run warm, best = {0}, off = {0}, run;
    if (decode_run(m, c, st, smp, logits, 8, 0, &warm)) goto out;
    const double bw0 = bandwidth(bw_user);
    /* alternate off and on, keep the fastest of each (the host's neighbours come and go) */
    for (int r = 0; r < reps; r++) {
        if (decode_run(m, c, st, smp, logits, n_tok, 0, &run)) goto out;
        if (r == 0 || run.token_ns < off.token_ns) off = run;
        if (decode_run(m, c, st, smp, logits, n_tok, 1, &run)) goto out;
        if (r == 0 || run.token_ns < best.token_ns) best = run;
    }
    const double bw1 = bandwidth(bw_user), bw = bw0 > bw1 ? bw0 : bw1;
    const double per = 1e-3 / n_tok; /* ns in all -> us per token */
    const double tok_us = best.token_ns * per;
    const ss_profile *pr = &best.pr;
    /* the big matrices' bytes per token: their phases' streaming speed (Mamba-1 only) */
    const double bpp = stream_bytes / (double)info->n_active_params;
    double mbytes[SS_PHASE_COUNT] = {0};
    /* a decode token of Mamba-1 takes two parallel steps per layer (model/mamba.c,
     * mamba1_fused): "in_proj" is in_proj, the conv and x_proj's partial products, "dt+scan" is
     * dt_proj, the scan and out_proj's partial products, "residual" the sum of out_proj's
     * partials into the residual stream (the small matrices' sizes from the shapes' dt_rank,
     * ceil(d_model / 16)) */
    const int fused = pr->calls[SS_PHASE_X_PROJ] == 0 && pr->calls[SS_PHASE_RESIDUAL] > 0;
    if (info->arch == SS_ARCH_MAMBA1) {
        const double L = info->n_layer, Di = info->d_inner, R = (info->d_model + 15) / 16;
        const double dDi = (double)info->d_model * Di * L * bpp;
        mbytes[SS_PHASE_IN_PROJ] = 2 * dDi + (fused ? Di * (R + 2 * info->d_state) * L * bpp : 0);
        mbytes[fused ? SS_PHASE_SCAN : SS_PHASE_OUT_PROJ] = dDi + (fused ? Di * R * L * bpp : 0);
        mbytes[SS_PHASE_LM_HEAD] = (double)info->vocab_size * info->d_model * bpp;
    }

    printf("  decode profile: 1 stream, %d tokens, fastest of %d runs, microseconds per token\n",
           n_tok, reps);
    if (fused)
        printf("    (two parallel steps per layer: in_proj = in_proj + conv + x_proj's partials, "
               "dt+scan = dt_proj + scan + out_proj's partials,\n     residual = out_proj's "
               "partials summed into the residual stream)\n");
    printf("    %-12s %9s %7s %12s %10s %8s\n", "phase", "us/token", "share", "calls/token",
           "weight MB", "GB/s");
    json_t *jp = json_object(), *jph = json_object();
    for (int ph = 0; ph < SS_PHASE_COUNT; ph++) {
        if (!pr->calls[ph]) continue;
        const double us = (double)pr->ns[ph] * per;
        printf("    %-12s %9.1f %6.1f%% %12.1f", ss_phase_name((ss_phase)ph), us,
               100 * us / tok_us, (double)pr->calls[ph] / n_tok);
        if (mbytes[ph] > 0) printf(" %10.1f %8.1f", mbytes[ph] / 1e6, mbytes[ph] / (us * 1e3));
        putchar('\n');
        json_object_set_new(jph, ss_phase_name((ss_phase)ph), json_real(us));
    }
    const double sample_us = best.sample_ns * per, eval_us = (double)pr->eval_ns * per;
    const double rest_us = tok_us - eval_us - sample_us; /* the loop and the clock reads */
    printf("    %-12s %9.1f %6.1f%%\n", "sampling", sample_us, 100 * sample_us / tok_us);
    printf("    %-12s %9.1f %6.1f%%\n", "loop", rest_us, 100 * rest_us / tok_us);
    printf("    %-12s %9.1f  100.0%%   (%.1f tok/s; counters off: %.1f tok/s)\n", "token", tok_us,
           1e6 / tok_us, 1e9 * n_tok / off.token_ns);
    const double steps = (double)pr->pool_steps / n_tok;
    const double wait_us = (double)pr->pool_wait_ns * per;
    const double spread_us = (double)pr->pool_spread_ns * per;
    const double lag_us = (double)pr->pool_lag_ns * per;
    const double alone = (double)pr->pool_alone / n_tok;
    printf("    meetings of the threads: %.0f parallel steps per token, %.1f of them run by the "
           "caller alone (no worker came);\n      the caller waited %.1f us after its own parts "
           "(%.0f%%), first to last part finishing %.1f us,\n      a worker starting %.1f us "
           "after the step was published (sums over the steps of a token)\n",
           steps, alone, wait_us, 100 * wait_us / tok_us, spread_us, lag_us);
    printf("      %.1f steps per token had to wake a sleeping worker (futex), %.1f us of the lag\n",
           (double)pr->pool_woken / n_tok, (double)pr->pool_woken_lag_ns * per);
    printf("    meetings by phase, per token: %-10s %6s %9s %9s %9s\n", "phase", "steps",
           "wait us", "spread us", "lag us");
    json_t *jmp = json_object();
    for (int ph = 0; ph < SS_PHASE_COUNT; ph++) {
        if (!pr->ph_steps[ph]) continue;
        const double w = (double)pr->ph_wait_ns[ph] * per, sd = (double)pr->ph_spread_ns[ph] * per,
                     lg = (double)pr->ph_lag_ns[ph] * per;
        printf("    %30s %-10s %6.1f %9.1f %9.1f %9.1f\n", "", ss_phase_name((ss_phase)ph),
               (double)pr->ph_steps[ph] / n_tok, w, sd, lg);
        json_t *o = json_object();
        json_object_set_new(o, "steps", json_real((double)pr->ph_steps[ph] / n_tok));
        json_object_set_new(o, "wait_us", json_real(w));
        json_object_set_new(o, "spread_us", json_real(sd));
        json_object_set_new(o, "lag_us", json_real(lg));
        json_object_set_new(jmp, ss_phase_name((ss_phase)ph), o);
    }
    const double stream_us = stream_bytes / (bw * 1e9) * 1e6;
    const double fixed_us = tok_us - stream_us;
    printf("    streaming %.0f MB at %.1f GB/s (beside) takes %.1f us = %.0f%% of the token; the "
           "rest, %.1f us (%.0f%%), is the fixed cost per token\n",
           stream_bytes / 1e6, bw, stream_us, 100 * stream_us / tok_us, fixed_us,
           100 * fixed_us / tok_us);
    json_object_set_new(jp, "phases_us", jph);
    json_object_set_new(jp, "sampling_us", json_real(sample_us));
    json_object_set_new(jp, "token_us", json_real(tok_us));
    json_object_set_new(jp, "token_us_counters_off", json_real(off.token_ns * per));
    json_object_set_new(jp, "parallel_steps", json_real(steps));
    json_object_set_new(jp, "caller_wait_us", json_real(wait_us));
    json_object_set_new(jp, "finish_spread_us", json_real(spread_us));
    json_object_set_new(jp, "wake_lag_us", json_real(lag_us));
    json_object_set_new(jp, "steps_alone", json_real(alone));
    json_object_set_new(jp, "steps_woken", json_real((double)pr->pool_woken / n_tok));
    json_object_set_new(jp, "woken_lag_us", json_real((double)pr->pool_woken_lag_ns * per));
    json_object_set_new(jp, "meetings_by_phase", jmp);
    json_object_set_new(jp, "bandwidth_gbs", json_real(bw));
    json_object_set_new(jp, "stream_us", json_real(stream_us));
    json_object_set_new(jp, "fixed_us", json_real(fixed_us));
    json_object_set_new(jm, "profile", jp);
    rc = 0;
out:
    ss_sampler_free(smp);
    ss_state_free(st);
    ss_ctx_free(c);
    free(logits);
    return rc;
}
