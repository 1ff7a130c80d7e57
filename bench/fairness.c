/*
 * fairness.c - statesoup-bench's "fairness" phase: what one giant prompt does to everyone else.
 *
 * Running streams decode greedily; a short request's latency and the streams' tokens/s are
 * measured alone, then again while a long prompt (100k tokens by default) is being prefilled;
 * last, the long prompt's job is cancelled and the time until the engine lets go of it is
 * measured. The scheduler's job (server/engine.c) is to keep the short request's wait at a few
 * chunks and the streams at half their speed or more while the long prompt reads, and to drop a
 * cancelled prompt within one chunk.
 */
#include "bench.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "engine.h"

#define FAIR_STREAMS    4   /* decoding streams running through the whole phase */
#define FAIR_WINDOW_S   2.0 /* seconds over which stream speed is measured */
#define FAIR_SHORT_TOK  8   /* the short request: 8 prompt tokens, 8 generated */

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* One job's completion, waited for by the bench thread. */
typedef struct done_flag {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    double t_done;
} done_flag;

static void flag_init(done_flag *f)
{
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    f->done = 0;
}

static void flag_destroy(done_flag *f)
{
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
}

static void flag_on_done(void *user, ss_job *j)
{
    (void)j;
    done_flag *f = user;
    pthread_mutex_lock(&f->mu);
    f->done = 1;
    f->t_done = bench_now_s();
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void flag_wait(done_flag *f)
{
    pthread_mutex_lock(&f->mu);
    while (!f->done) pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
}

/* The streams that decode through the whole phase. */
typedef struct streams {
    done_flag done[FAIR_STREAMS];
    ss_job *jobs[FAIR_STREAMS];
} streams;

/* Tokens generated and prefilled per second by the engine over FAIR_WINDOW_S. */
static void engine_rates(ss_engine *e, double *gen, double *pre)
{
    ss_engine_stats a, b;
    ss_engine_get_stats(e, &a);
    double t0 = bench_now_s();
    sleep_s(FAIR_WINDOW_S);
    ss_engine_get_stats(e, &b);
    double dt = bench_now_s() - t0;
    *gen = (double)(b.tokens_generated - a.tokens_generated) / dt;
    *pre = (double)(b.tokens_prefilled - a.tokens_prefilled) / dt;
}

/* Submit-to-done time of one short greedy request (ms). */
static double short_latency(ss_engine *e, int V)
{
    int32_t prompt[FAIR_SHORT_TOK];
    for (int i = 0; i < FAIR_SHORT_TOK; i++) prompt[i] = (i * 613 + 5) % V;
    done_flag f;
    flag_init(&f);
    ss_job_params p = {.kind = SS_JOB_GENERATE, .prompt = prompt, .n_prompt = FAIR_SHORT_TOK,
                       .max_tokens = FAIR_SHORT_TOK, .sample = ss_sample_default_params(),
                       .stop_at_eos = 0, .on_done = flag_on_done, .user = &f};
    p.sample.temperature = 0;
    ss_job *j = NULL;
    double t0 = bench_now_s(), ms = NAN;
    if (!ss_engine_submit(e, &p, &j)) {
        flag_wait(&f);
        ms = (f.t_done - t0) * 1e3;
        ss_job_free(j);
    }
    flag_destroy(&f);
    return ms;
}

int bench_fairness(ss_model *m, int long_prompt, json_t *jm)
{
    const int V = ss_model_get_info(m)->vocab_size;
    ss_engine *e;
    if (ss_engine_open(&e, m, NULL)) return -1;
    streams s;
    int32_t one[FAIR_STREAMS];
    for (int k = 0; k < FAIR_STREAMS; k++) {
        one[k] = (k * 31 + 7) % V;
        flag_init(&s.done[k]);
        ss_job_params p = {.kind = SS_JOB_GENERATE, .prompt = &one[k], .n_prompt = 1,
                           .max_tokens = 1 << 30, .sample = ss_sample_default_params(),
                           .stop_at_eos = 0, .on_done = flag_on_done, .user = &s.done[k]};
        p.sample.temperature = 0;
        if (ss_engine_submit(e, &p, &s.jobs[k])) s.jobs[k] = NULL;
    }
    double rate_alone, rate_busy, prefill_alone, prefill_busy;
    sleep_s(0.5); /* warm up */
    engine_rates(e, &rate_alone, &prefill_alone);
    double lat_alone = short_latency(e, V);

    /* the long prompt */
    int32_t *big = malloc((size_t)long_prompt * sizeof *big);
    if (!big) return -1;
    for (int i = 0; i < long_prompt; i++) big[i] = (int32_t)((i * 7919L + 11) % V);
    done_flag fb;
    flag_init(&fb);
    ss_job_params pb = {.kind = SS_JOB_PREFILL, .prompt = big, .n_prompt = long_prompt,
                        .on_done = flag_on_done, .user = &fb};
    ss_job *jb = NULL;
    ss_engine_submit(e, &pb, &jb);
    sleep_s(0.5);
    /* the streams' tokens only: the short request runs after this window */
    engine_rates(e, &rate_busy, &prefill_busy);
    double lat_busy = short_latency(e, V);
    int giant_running = 0;
    pthread_mutex_lock(&fb.mu);
    giant_running = !fb.done;
    pthread_mutex_unlock(&fb.mu);
    double t_cancel = bench_now_s();
    ss_engine_cancel(e, jb);
    flag_wait(&fb);
    double cancel_ms = (fb.t_done - t_cancel) * 1e3;
    ss_job_free(jb);
    flag_destroy(&fb);
    free(big);
    for (int k = 0; k < FAIR_STREAMS; k++) {
        if (s.jobs[k]) {
            ss_engine_cancel(e, s.jobs[k]);
            flag_wait(&s.done[k]);
            ss_job_free(s.jobs[k]);
        }
        flag_destroy(&s.done[k]);
    }
    ss_engine_close(e);

    printf("  fairness: %d streams decoding, then a %d-token prompt prefilling%s\n",
           FAIR_STREAMS, long_prompt, giant_running ? "" : " (it finished early: make it longer)");
    printf("    streams                  %8.1f tok/s alone, %8.1f tok/s beside it = %.0f%%\n",
           rate_alone, rate_busy, 100 * rate_busy / rate_alone);
    printf("    short request (8+8 tok)  %8.1f ms alone,    %8.1f ms beside it\n", lat_alone,
           lat_busy);
    printf("    long prompt prefill      %8.0f tok/s beside the streams\n", prefill_busy);
    printf("    cancel of the long prompt: released in %.1f ms\n", cancel_ms);
    json_t *f = json_pack("{s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "streams", FAIR_STREAMS,
                          "long_prompt", long_prompt, "stream_tok_s_alone", rate_alone,
                          "stream_tok_s_beside", rate_busy, "stream_fraction",
                          rate_busy / rate_alone, "short_ms_alone", lat_alone, "short_ms_beside",
                          lat_busy, "long_prefill_tok_s", prefill_busy, "cancel_ms", cancel_ms);
    json_object_set_new(jm, "fairness", f);
    return 0;
}
