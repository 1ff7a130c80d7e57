/*
 * profile.c - statesoup-bench --profile: where one decode token's time goes, phase by phase.
 *
 * Greedy decode as the engine runs it (ss_model_eval of one token of each of n streams, then the
 * engine's sampler with each token's logprob), on the calling thread with the context's per-phase
 * counters on (ss_ctx_set_profile): microseconds per step in each phase of the forward pass, in
 * sampling, and at the meeting points of the pool's threads; beside it, the time streaming the
 * weights needs at the bandwidth measured just before and after. What is left is the fixed cost
 * per step, measured directly rather than as (time per token - bytes / bandwidth) of a whole run.
 * With several streams (--profile-streams) the projections also say how much of the sgemm peak
 * measured at the start of the run their arithmetic reaches. The same loop with the counters off
 * says what counting costs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "ss_util.h"

/* One run of n tokens: totals in ns, and the context's counts. */
typedef struct prof_run {
    double token_ns, sample_ns;
    ss_profile pr;
} prof_run;

/* Most streams --profile-streams takes. */
#define PROF_MAX_STREAMS 64

/* Decode n steps greedily of the ns streams q[] (stream s fed tok[s] first, then its greedy
 * tokens), counters on or off. */
static int decode_run(ss_model *m, ss_ctx *c, ss_seq *q, int32_t *tok, int ns, ss_sampler *smp,
                      int n, int on, prof_run *out)
{
    *out = (prof_run){0};
    ss_ctx_set_profile(c, on);
    for (int i = 0; i < n; i++) {
        const int64_t t0 = ss_mono_ns();
        if (ss_model_eval(m, c, q, ns, 0)) return -1;
        const int64_t t1 = ss_mono_ns();
        for (int s = 0; s < ns; s++) {
            float lp;
            tok[s] = ss_sampler_sample(smp, q[s].logits, &lp);
        }
        const int64_t t2 = ss_mono_ns();
        out->token_ns += (double)(t2 - t0);
        out->sample_ns += (double)(t2 - t1);
    }
    ss_ctx_get_profile(c, &out->pr);
    ss_ctx_set_profile(c, 0);
    return 0;
}

int bench_profile(ss_model *m, int n_streams, int n_tok, int reps, double stream_bytes,
                  double gemm_gflops, double (*bandwidth)(void *user), void *bw_user, json_t *jm)
{
    const ss_model_info *info = ss_model_get_info(m);
    const int ns = n_streams;
    ss_ctx *c = NULL;
    ss_state *st[PROF_MAX_STREAMS] = {0};
    ss_seq q[PROF_MAX_STREAMS];
    int32_t tok[PROF_MAX_STREAMS];
    ss_sampler *smp = NULL;
    float *logits = ns >= 1 && ns <= PROF_MAX_STREAMS
                        ? malloc((size_t)ns * info->vocab_size * sizeof(float))
                        : NULL;
    ss_sample_params sp = ss_sample_default_params();
    sp.temperature = 0;
    int rc = -1;
    if (!logits || ss_ctx_new(m, &c) || ss_sampler_new(&sp, info->vocab_size, &smp)) goto out;
    for (int s = 0; s < ns; s++) {
        if (ss_state_new(m, &st[s])) goto out;
        tok[s] = 1 + s; /* the streams apart from their first token */
        q[s] = (ss_seq){.state = st[s], .tokens = &tok[s], .n_tokens = 1,
                        .logits = logits + (size_t)s * info->vocab_size};
    }
    prof_run warm, best = {0}, off = {0}, run;
    if (decode_run(m, c, q, tok, ns, smp, 8, 0, &warm)) goto out;
    const double bw0 = bandwidth(bw_user);
    /* alternate off and on, keep the fastest of each (the host's neighbours come and go) */
    for (int r = 0; r < reps; r++) {
        if (decode_run(m, c, q, tok, ns, smp, n_tok, 0, &run)) goto out;
        if (r == 0 || run.token_ns < off.token_ns) off = run;
        if (decode_run(m, c, q, tok, ns, smp, n_tok, 1, &run)) goto out;
        if (r == 0 || run.token_ns < best.token_ns) best = run;
    }
    const double bw1 = bandwidth(bw_user), bw = bw0 > bw1 ? bw0 : bw1;
    const double per = 1e-3 / n_tok; /* ns in all -> us per step */
    const double tok_us = best.token_ns * per;
    const ss_profile *pr = &best.pr;
    /* the big matrices' bytes per token: their phases' streaming speed (Mamba-1 only; bytes
     * per weight as held: 8-bit values with an F32 scale per 32, or the checkpoint's type) */
    const double bpp = !strcmp(info->weights, "q8")                                ? 1.125
                       : strcmp(info->dtype, "BF16") && strcmp(info->dtype, "F16") ? 4
                                                                                   : 2;
    double mbytes[SS_PHASE_COUNT] = {0};
    double params[SS_PHASE_COUNT] = {0}; /* weights multiplied per stream: 2 FLOP each */
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
        for (int ph = 0; ph < SS_PHASE_COUNT; ph++) params[ph] = mbytes[ph] / bpp;
        if (!fused) { /* x_proj, and dt_proj beside the scan */
            params[SS_PHASE_X_PROJ] = Di * (R + 2 * info->d_state) * L;
            params[SS_PHASE_SCAN] = Di * R * L;
        }
    }

    if (ns == 1)
        printf("  decode profile: 1 stream, %d tokens, fastest of %d runs, microseconds per "
               "token\n",
               n_tok, reps);
    else
        printf("  decode profile: %d streams, %d steps of a token each, fastest of %d runs, "
               "microseconds per step;\n    GFLOP/s of the projections' products against the "
               "sgemm peak (%.0f GFLOP/s)\n",
               ns, n_tok, reps, gemm_gflops);
    if (fused)
        printf("    (two parallel steps per layer: in_proj = in_proj + conv + x_proj's partials, "
               "dt+scan = dt_proj + scan + out_proj's partials,\n     residual = out_proj's "
               "partials summed into the residual stream)\n");
    printf("    %-12s %9s %7s %12s %10s %8s", "phase", ns == 1 ? "us/token" : "us/step", "share",
           ns == 1 ? "calls/token" : "calls/step", "weight MB", "GB/s");
    printf(ns == 1 ? "\n" : " %8s %6s\n", "GFLOP/s", "peak");
    json_t *jp = json_object(), *jph = json_object();
    for (int ph = 0; ph < SS_PHASE_COUNT; ph++) {
        if (!pr->calls[ph]) continue;
        const double us = (double)pr->ns[ph] * per;
        printf("    %-12s %9.1f %6.1f%% %12.1f", ss_phase_name((ss_phase)ph), us,
               100 * us / tok_us, (double)pr->calls[ph] / n_tok);
        if (mbytes[ph] > 0) printf(" %10.1f %8.1f", mbytes[ph] / 1e6, mbytes[ph] / (us * 1e3));
        else if (ns > 1 && params[ph] > 0) printf(" %10s %8s", "", "");
        if (ns > 1 && params[ph] > 0) {
            const double gf = 2 * ns * params[ph] / (us * 1e3);
            printf(" %8.1f %5.0f%%", gf, gemm_gflops > 0 ? 100 * gf / gemm_gflops : 0);
        }
        putchar('\n');
        json_object_set_new(jph, ss_phase_name((ss_phase)ph), json_real(us));
    }
    const double sample_us = best.sample_ns * per, eval_us = (double)pr->eval_ns * per;
    const double rest_us = tok_us - eval_us - sample_us; /* the loop and the clock reads */
    printf("    %-12s %9.1f %6.1f%%\n", "sampling", sample_us, 100 * sample_us / tok_us);
    printf("    %-12s %9.1f %6.1f%%\n", "loop", rest_us, 100 * rest_us / tok_us);
    printf("    %-12s %9.1f  100.0%%   (%.1f tok/s; counters off: %.1f tok/s)\n",
           ns == 1 ? "token" : "step", tok_us, ns * 1e6 / tok_us, ns * 1e9 * n_tok / off.token_ns);
    const double steps = (double)pr->pool_steps / n_tok;
    const double wait_us = (double)pr->pool_wait_ns * per;
    const double spread_us = (double)pr->pool_spread_ns * per;
    const double lag_us = (double)pr->pool_lag_ns * per;
    const double alone = (double)pr->pool_alone / n_tok;
    const char *unit = ns == 1 ? "token" : "decode step"; /* what the figures are per */
    printf("    meetings of the threads: %.0f parallel steps per %s, %.1f of them run by the "
           "caller alone (no worker came);\n      the caller waited %.1f us after its own parts "
           "(%.0f%%), first to last part finishing %.1f us,\n      a worker starting %.1f us "
           "after the step was published (sums over the parallel steps of a %s)\n",
           steps, unit, alone, wait_us, 100 * wait_us / tok_us, spread_us, lag_us, unit);
    printf("      %.1f steps per %s had to wake a sleeping worker (futex), %.1f us of the lag\n",
           (double)pr->pool_woken / n_tok, unit, (double)pr->pool_woken_lag_ns * per);
    printf("    meetings by phase, per %-11s %-10s %6s %9s %9s %9s\n", unit, "phase", "steps",
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
    printf("    streaming %.0f MB at %.1f GB/s (beside) takes %.1f us = %.0f%% of the %s; the "
           "rest, %.1f us (%.0f%%), is the fixed cost per %s\n",
           stream_bytes / 1e6, bw, stream_us, 100 * stream_us / tok_us, unit, fixed_us,
           100 * fixed_us / tok_us, unit);
    json_object_set_new(jp, "phases_us", jph);
    json_object_set_new(jp, "sampling_us", json_real(sample_us));
    json_object_set_new(jp, "streams", json_integer(ns));
    json_object_set_new(jp, "token_us", json_real(tok_us)); /* per step with several streams */
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
    for (int s = 0; s < ns && s < PROF_MAX_STREAMS; s++) ss_state_free(st[s]);
    ss_ctx_free(c);
    free(logits);
    return rc;
}
