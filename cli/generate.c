/*
 * generate.c - `statesoup generate --model DIR`: run a checkpoint locally and stream text.
 *
 * The whole runtime in one loop: tokenize, feed the prompt (from the zero state or a state file),
 * sample, decode with a streaming detokenizer (never half a UTF-8 character on stdout), stop on
 * eos, max tokens or a stop string, optionally save the final state for later use.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "ss_model.h"
#include "ss_tokenizer.h"
#include "ss_util.h"

/* Largest --state-in file read. */
#define MAX_STATE_FILE_BYTES ((size_t)1 << 34)

/* Everything one local run holds; freed by local_free. Steps return GO_ON or the exit status. */
typedef struct local_run {
    const char *model_dir, *tok_path, *state_in, *state_out;
    int threads, ignore_eos, have_seed, max_tokens;
    cli_gen_opts g;
    ss_sample_params sp;
    ss_model *m;
    const ss_model_info *info;
    ss_ctx *ctx;
    ss_state *st;
    ss_tokenizer *tok;
    ss_sampler *smp;
    ss_detok *dt;
    ss_stopper *stp;
    int32_t *ids;
    size_t n_ids;
    char *text, *sbuf;
    float *logits;
    uint8_t *file;
    char def_tok[4096];
    /* results */
    int n_gen;
    const char *why;
    int32_t last;
} local_run;

enum { GO_ON = -1 };

/* The options; GO_ON, or the exit status (help, or a usage error already printed). */
static int local_parse(local_run *L, int argc, char **argv)
{
    double v;
    int c, li, rc = 1;
    optind = 1;
    while ((c = cli_gen_next(argc, argv, &L->g, &li, &rc)) != -1) {
        switch (c) {
        case 0: return rc;
        case CLI_GEN_MODEL: L->model_dir = optarg; break;
        case CLI_GEN_TOKENIZER: L->tok_path = optarg; break;
        case CLI_GEN_THREADS:
            if (cli_parse_num("generate", "threads", optarg, 0, 1024, &v)) return CLI_USAGE;
            L->threads = (int)v;
            break;
        case CLI_GEN_STATE_IN: L->state_in = optarg; break;
        case CLI_GEN_STATE_OUT: L->state_out = optarg; break;
        case CLI_GEN_SEED:
            if (cli_parse_num("generate", "seed", optarg, 0, 1.8e19, &v)) return CLI_USAGE;
            L->sp.seed = strtoull(optarg, NULL, 10);
            L->have_seed = 1;
            break;
        case CLI_GEN_IGNORE_EOS: L->ignore_eos = 1; break;
        case CLI_OPT_URL:
        case CLI_OPT_API_KEY:
        case CLI_OPT_JSON:
        case CLI_GEN_STATE:
        case CLI_GEN_MERGE:
        case CLI_GEN_MERGE_MODE:
        case CLI_GEN_SAVE_STATE:
        case CLI_GEN_NO_STREAM:
        case CLI_GEN_REUSE:
            return cli_usage("generate", "--%s is for a daemon (--url), not with --model",
                             cli_generate_options[li].name);
        case 'h': fputs(cli_generate_help, stdout); return 0;
        default: return cli_bad_option("generate");
        }
    }
    if (optind < argc || !L->model_dir)
        return cli_usage("generate", "%s",
                         optind < argc ? "unexpected argument" : "--model DIR is required");
    if (cli_gen_check(&L->g)) return CLI_USAGE;
    const cli_gen_opts *g = &L->g;
    if (!isnan(g->temperature)) L->sp.temperature = (float)g->temperature;
    if (!isnan(g->top_k)) L->sp.top_k = (int)g->top_k;
    if (!isnan(g->top_p)) L->sp.top_p = (float)g->top_p;
    if (!isnan(g->min_p)) L->sp.min_p = (float)g->min_p;
    L->max_tokens = (int)g->max_tokens;
    if (!L->have_seed) ss_random_bytes(&L->sp.seed, sizeof L->sp.seed);
    return GO_ON;
}

/* The model, and the tokenizer (--tokenizer, else DIR/tokenizer.json when there is one). */
static int local_load(local_run *L)
{
    ss_model_params mp = ss_model_default_params();
    mp.n_threads = L->threads;
    if (L->g.verbose) mp.progress = ss_progress_print;
    if (ss_model_open(&L->m, L->model_dir, &mp)) return cli_fail("cannot load the model");
    L->info = ss_model_get_info(L->m);
    if (!L->tok_path) {
        snprintf(L->def_tok, sizeof L->def_tok, "%s/tokenizer.json", L->model_dir);
        if (access(L->def_tok, R_OK) == 0) L->tok_path = L->def_tok;
    }
    if (L->tok_path && ss_tokenizer_open(&L->tok, L->tok_path))
        return cli_fail("cannot load the tokenizer");
    if (!L->tok && !L->g.ids && !L->g.tokens) {
        fprintf(stderr, "statesoup generate: no tokenizer (give --tokenizer FILE, or use --tokens "
                        "and --ids)\n");
        return 1;
    }
    return GO_ON;
}

/* The prompt as ids: --tokens, or the text of --prompt / --prompt-file tokenized. */
static int local_prompt(local_run *L)
{
    const int vocab = L->info->vocab_size;
    if (L->g.tokens) {
        if (cli_parse_ids(L->g.tokens, &L->ids, &L->n_ids)) return cli_fail("bad --tokens");
        for (size_t i = 0; i < L->n_ids; i++) {
            if (L->ids[i] >= vocab) {
                ss_fail(SS_ERR_INVALID, "--tokens: '%d' is not a token id in [0, %d)", L->ids[i],
                        vocab);
                return cli_fail("bad --tokens");
            }
        }
        return GO_ON;
    }
    size_t len = 0;
    if (L->g.prompt_file && cli_read_input(L->g.prompt_file, MAX_PROMPT_BYTES, &L->text, &len))
        return cli_fail("cannot read the prompt");
    const char *p = L->text ? L->text : L->g.prompt ? L->g.prompt : "";
    if (!L->text) len = strlen(p);
    if (len && !L->tok) {
        fprintf(stderr, "statesoup generate: a text prompt needs a tokenizer\n");
        return 1;
    }
    if (len && ss_tokenizer_encode(L->tok, p, len, &L->ids, &L->n_ids))
        return cli_fail("cannot tokenize the prompt");
    for (size_t i = 0; i < L->n_ids; i++) {
        if (L->ids[i] >= vocab) {
            fprintf(stderr, "statesoup generate: the tokenizer produced id %d, outside the "
                            "model's vocabulary of %d: wrong tokenizer?\n",
                    L->ids[i], vocab);
            return 1;
        }
    }
    return GO_ON;
}

/* Scratch, the starting state (zero, or --state-in), sampler, detokenizer and stop matcher. */
static int local_start(local_run *L)
{
    if (ss_ctx_new(L->m, &L->ctx) || ss_state_new(L->m, &L->st)) return cli_fail("out of memory");
    if (L->state_in) {
        size_t len;
        if (ss_read_file(L->state_in, MAX_STATE_FILE_BYTES, &L->sbuf, &len) ||
            ss_state_import(L->m, (const uint8_t *)L->sbuf, len, ss_state_data(L->st), NULL))
            return cli_fail(L->state_in);
    } else if (L->n_ids == 0 && L->max_tokens > 0) {
        fprintf(stderr, "statesoup generate: the prompt is empty (give --prompt, or --state-in to "
                        "continue from a state)\n");
        return 1;
    }
    L->logits = malloc((size_t)L->info->vocab_size * sizeof(float));
    if (!L->logits || ss_sampler_new(&L->sp, L->info->vocab_size, &L->smp) ||
        (L->tok && ss_detok_new(L->tok, &L->dt)) ||
        ss_stopper_new(L->g.stops, L->g.n_stops, &L->stp))
        return cli_fail("cannot start");
    return GO_ON;
}

/* Sample, print and feed back tokens until eos, --max-tokens or a stop string. */
static int local_decode(local_run *L)
{
    const cli_gen_opts *g = &L->g;
    int hit = 0;
    L->why = "length";
    L->last = -1;
    while (L->n_gen < L->max_tokens && !hit) {
        float lp;
        int32_t t = ss_sampler_sample(L->smp, L->logits, &lp);
        L->n_gen++;
        L->last = t;
        if (g->ids) {
            printf("%s%d", L->n_gen > 1 ? " " : "", t);
        } else {
            size_t len, olen;
            const char *piece = ss_detok_push(L->dt, t, &len);
            const char *outp =
                ss_stopper_push(L->stp, piece ? piece : "", piece ? len : 0, &olen, &hit);
            if (!outp) return cli_fail("stop strings");
            fwrite(outp, 1, olen, stdout);
            if (hit) L->why = "stop";
        }
        if (g->logprobs) {
            size_t bl = 0;
            const char *b = L->tok ? ss_tokenizer_token_bytes(L->tok, t, &bl) : NULL;
            fprintf(stderr, "[%d] id %d %.*s logprob %.4f\n", L->n_gen - 1, t, (int)bl,
                    b ? b : "", (double)lp);
        }
        fflush(stdout);
        if (!L->ignore_eos && t == L->info->eos_token_id) {
            L->why = "eos";
            break;
        }
        if (hit || L->n_gen == L->max_tokens) break;
        ss_seq q = {.state = L->st, .tokens = &t, .n_tokens = 1, .logits = L->logits};
        if (ss_model_eval(L->m, L->ctx, &q, 1, 0)) return cli_fail("decode");
    }
    if (!g->ids && L->dt) {
        size_t len, olen;
        const char *tail = ss_detok_flush(L->dt, &len);
        const char *outp =
            ss_stopper_push(L->stp, tail ? tail : "", tail ? len : 0, &olen, &hit);
        if (outp) fwrite(outp, 1, olen, stdout);
        outp = outp ? ss_stopper_flush(L->stp, &olen) : NULL;
        if (!outp) return cli_fail("stop strings");
        fwrite(outp, 1, olen, stdout);
    }
    if (isatty(STDOUT_FILENO) || g->ids) putchar('\n');
    fflush(stdout);
    return GO_ON;
}

/* --state-out: the final state, which includes the last generated token, as a state file. */
static int local_save(local_run *L)
{
    if (L->last >= 0) {
        ss_seq q = {.state = L->st, .tokens = &L->last, .n_tokens = 1};
        ss_model_eval(L->m, L->ctx, &q, 1, 0);
    }
    size_t flen;
    FILE *f = NULL;
    if (ss_state_export(L->m, ss_state_cdata(L->st), NULL, NULL, &L->file, &flen) ||
        !(f = fopen(L->state_out, "wb")) || fwrite(L->file, 1, flen, f) != flen) {
        if (f) fclose(f);
        fprintf(stderr, "statesoup generate: cannot write %s\n", L->state_out);
        return 1;
    }
    fclose(f);
    return GO_ON;
}

static void local_free(local_run *L)
{
    free(L->file);
    free(L->logits);
    free(L->sbuf);
    free(L->text);
    free(L->ids);
    cli_gen_free(&L->g);
    ss_stopper_free(L->stp);
    ss_detok_free(L->dt);
    ss_sampler_free(L->smp);
    ss_state_free(L->st);
    ss_ctx_free(L->ctx);
    ss_tokenizer_close(L->tok);
    ss_model_close(L->m);
}

int cmd_generate_local(int argc, char **argv)
{
    local_run L = {.sp = ss_sample_default_params()};
    cli_gen_init(&L.g);
    int rc = local_parse(&L, argc, argv);
    if (rc == GO_ON) rc = local_load(&L);
    if (rc == GO_ON) rc = local_prompt(&L);
    if (rc == GO_ON) rc = local_start(&L);
    if (rc != GO_ON) goto out;

    int64_t t0 = ss_mono_ns();
    if (L.n_ids) {
        ss_seq q = {.state = L.st, .tokens = L.ids, .n_tokens = (int)L.n_ids, .logits = L.logits};
        if (ss_model_eval(L.m, L.ctx, &q, 1, 0)) {
            rc = cli_fail("prompt");
            goto out;
        }
    } else {
        ss_model_logits_from_state(L.m, L.ctx, L.st, L.logits);
    }
    int64_t t1 = ss_mono_ns();
    rc = local_decode(&L);
    int64_t t2 = ss_mono_ns();
    if (rc == GO_ON && L.state_out) rc = local_save(&L);
    if (rc != GO_ON) goto out;
    if (L.g.verbose) {
        double pf = (double)(t1 - t0) / 1e9, dc = (double)(t2 - t1) / 1e9;
        fprintf(stderr,
                "model %s (%s, %s), seed %llu\n"
                "prompt: %zu tokens in %.3f s (%.1f tok/s); generated %d tokens in %.3f s "
                "(%.1f tok/s); finish: %s\n",
                L.info->architecture, L.info->dtype, L.info->fingerprint,
                (unsigned long long)L.sp.seed, L.n_ids, pf, pf > 0 ? (double)L.n_ids / pf : 0.0,
                L.n_gen, dc, dc > 0 ? L.n_gen / dc : 0.0, L.why);
    }
    rc = 0;
out:
    local_free(&L);
    return rc;
}
