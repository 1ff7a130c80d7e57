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

int cmd_generate_local(int argc, char **argv)
{
    const char *model_dir = NULL, *tok_path = NULL, *state_in = NULL, *state_out = NULL;
    int threads = 0, ignore_eos = 0, have_seed = 0, max_tokens;
    cli_gen_opts g;
    ss_sample_params sp = ss_sample_default_params();
    double v;
    int c, li, rc = 1;
    ss_model *m = NULL;
    ss_ctx *ctx = NULL;
    ss_state *st = NULL;
    ss_tokenizer *tok = NULL;
    ss_sampler *smp = NULL;
    ss_detok *dt = NULL;
    ss_stopper *stp = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    char *text = NULL, *sbuf = NULL;
    float *logits = NULL;
    uint8_t *file = NULL;

    cli_gen_init(&g);
    optind = 1;
    while ((c = cli_gen_next(argc, argv, &g, &li, &rc)) != -1) {
        switch (c) {
        case 0: goto out;
        case CLI_GEN_MODEL: model_dir = optarg; break;
        case CLI_GEN_TOKENIZER: tok_path = optarg; break;
        case CLI_GEN_THREADS:
            if (cli_parse_num("generate", "threads", optarg, 0, 1024, &v)) goto usage;
            threads = (int)v;
            break;
        case CLI_GEN_STATE_IN: state_in = optarg; break;
        case CLI_GEN_STATE_OUT: state_out = optarg; break;
        case CLI_GEN_SEED:
            if (cli_parse_num("generate", "seed", optarg, 0, 1.8e19, &v)) goto usage;
            sp.seed = strtoull(optarg, NULL, 10);
            have_seed = 1;
            break;
        case CLI_GEN_IGNORE_EOS: ignore_eos = 1; break;
        case CLI_OPT_URL:
        case CLI_OPT_API_KEY:
        case CLI_OPT_JSON:
        case CLI_GEN_STATE:
        case CLI_GEN_MERGE:
        case CLI_GEN_SAVE_STATE:
        case CLI_GEN_NO_STREAM:
            rc = cli_usage("generate", "--%s is for a daemon (--url), not with --model",
                           cli_generate_options[li].name);
            goto out;
        case 'h':
            fputs(cli_generate_help, stdout);
            rc = 0;
            goto out;
        default:
            rc = cli_bad_option("generate");
            goto out;
        }
    }
    if (optind < argc || !model_dir) {
        rc = cli_usage("generate", "%s",
                       optind < argc ? "unexpected argument" : "--model DIR is required");
        goto out;
    }
    if (cli_gen_check(&g)) {
        rc = CLI_USAGE;
        goto out;
    }
    if (!isnan(g.temperature)) sp.temperature = (float)g.temperature;
    if (!isnan(g.top_k)) sp.top_k = (int)g.top_k;
    if (!isnan(g.top_p)) sp.top_p = (float)g.top_p;
    if (!isnan(g.min_p)) sp.min_p = (float)g.min_p;
    max_tokens = (int)g.max_tokens;
    if (!have_seed) ss_random_bytes(&sp.seed, sizeof sp.seed);

    ss_model_params mp = ss_model_default_params();
    mp.n_threads = threads;
    if (g.verbose) mp.progress = ss_progress_print;
    if (ss_model_open(&m, model_dir, &mp)) {
        rc = cli_fail("cannot load the model");
        goto out;
    }
    const ss_model_info *info = ss_model_get_info(m);
    char def_tok[4096];
    if (!tok_path) {
        snprintf(def_tok, sizeof def_tok, "%s/tokenizer.json", model_dir);
        if (access(def_tok, R_OK) == 0) tok_path = def_tok;
    }
    if (tok_path && ss_tokenizer_open(&tok, tok_path)) {
        rc = cli_fail("cannot load the tokenizer");
        goto out;
    }
    if (!tok && !g.ids && !g.tokens) {
        fprintf(stderr, "statesoup generate: no tokenizer (give --tokenizer FILE, or use --tokens "
                        "and --ids)\n");
        goto out;
    }

    /* the prompt */
    if (g.tokens) {
        if (cli_parse_ids(g.tokens, &ids, &n_ids)) {
            rc = cli_fail("bad --tokens");
            goto out;
        }
        for (size_t i = 0; i < n_ids; i++) {
            if (ids[i] >= info->vocab_size) {
                ss_fail(SS_ERR_INVALID, "--tokens: '%d' is not a token id in [0, %d)", ids[i],
                        info->vocab_size);
                rc = cli_fail("bad --tokens");
                goto out;
            }
        }
    } else {
        size_t len = 0;
        if (g.prompt_file) {
            if (cli_read_input(g.prompt_file, 1u << 30, &text, &len)) {
                rc = cli_fail("cannot read the prompt");
                goto out;
            }
        }
        const char *p = text ? text : g.prompt ? g.prompt : "";
        if (!text) len = strlen(p);
        if (len && !tok) {
            fprintf(stderr, "statesoup generate: a text prompt needs a tokenizer\n");
            goto out;
        }
        if (len && ss_tokenizer_encode(tok, p, len, &ids, &n_ids)) {
            rc = cli_fail("cannot tokenize the prompt");
            goto out;
        }
        for (size_t i = 0; i < n_ids; i++) {
            if (ids[i] >= info->vocab_size) {
                fprintf(stderr, "statesoup generate: the tokenizer produced id %d, outside the "
                                "model's vocabulary of %d: wrong tokenizer?\n",
                        ids[i], info->vocab_size);
                goto out;
            }
        }
    }

    if (ss_ctx_new(m, &ctx) || ss_state_new(m, &st)) {
        rc = cli_fail("out of memory");
        goto out;
    }
    if (state_in) {
        size_t len;
        if (ss_read_file(state_in, (size_t)1 << 34, &sbuf, &len) ||
            ss_state_import(m, (const uint8_t *)sbuf, len, ss_state_data(st), NULL)) {
            rc = cli_fail(state_in);
            goto out;
        }
    } else if (n_ids == 0 && max_tokens > 0) {
        fprintf(stderr, "statesoup generate: the prompt is empty (give --prompt, or --state-in to "
                        "continue from a state)\n");
        goto out;
    }
    logits = malloc((size_t)info->vocab_size * sizeof(float));
    if (!logits || ss_sampler_new(&sp, info->vocab_size, &smp) ||
        (tok && ss_detok_new(tok, &dt)) ||
        ss_stopper_new(g.stops, g.n_stops, &stp)) {
        rc = cli_fail("cannot start");
        goto out;
    }

    int64_t t0 = ss_mono_ns();
    if (n_ids) {
        ss_seq q = {.state = st, .tokens = ids, .n_tokens = (int)n_ids, .logits = logits};
        if (ss_model_eval(m, ctx, &q, 1, 0)) {
            rc = cli_fail("prompt");
            goto out;
        }
    } else {
        ss_model_logits_from_state(m, ctx, st, logits);
    }
    int64_t t1 = ss_mono_ns();
    int n_gen = 0, hit = 0;
    const char *why = "length";
    int32_t last = -1;
    while (n_gen < max_tokens && !hit) {
        float lp;
        int32_t t = ss_sampler_sample(smp, logits, &lp);
        n_gen++;
        last = t;
        if (g.ids) {
            printf("%s%d", n_gen > 1 ? " " : "", t);
        } else {
            size_t len, olen;
            const char *piece = ss_detok_push(dt, t, &len);
            const char *outp =
                ss_stopper_push(stp, piece ? piece : "", piece ? len : 0, &olen, &hit);
            if (!outp) {
                rc = cli_fail("stop strings");
                goto out;
            }
            fwrite(outp, 1, olen, stdout);
            if (hit) why = "stop";
        }
        if (g.logprobs) {
            size_t bl = 0;
            const char *b = tok ? ss_tokenizer_token_bytes(tok, t, &bl) : NULL;
            fprintf(stderr, "[%d] id %d %.*s logprob %.4f\n", n_gen - 1, t, (int)bl, b ? b : "",
                    (double)lp);
        }
        fflush(stdout);
        if (!ignore_eos && t == info->eos_token_id) {
            why = "eos";
            break;
        }
        if (hit || n_gen == max_tokens) break;
        ss_seq q = {.state = st, .tokens = &t, .n_tokens = 1, .logits = logits};
        if (ss_model_eval(m, ctx, &q, 1, 0)) {
            rc = cli_fail("decode");
            goto out;
        }
    }
    if (!g.ids && dt) {
        size_t len, olen;
        const char *tail = ss_detok_flush(dt, &len);
        const char *outp = ss_stopper_push(stp, tail ? tail : "", tail ? len : 0, &olen, &hit);
        if (outp) fwrite(outp, 1, olen, stdout);
        outp = outp ? ss_stopper_flush(stp, &olen) : NULL;
        if (!outp) {
            rc = cli_fail("stop strings");
            goto out;
        }
        fwrite(outp, 1, olen, stdout);
    }
    if (isatty(STDOUT_FILENO) || g.ids) putchar('\n');
    fflush(stdout);
    int64_t t2 = ss_mono_ns();
    if (state_out) {
        /* the saved state includes the last generated token */
        if (last >= 0) {
            ss_seq q = {.state = st, .tokens = &last, .n_tokens = 1};
            ss_model_eval(m, ctx, &q, 1, 0);
        }
        size_t flen;
        FILE *f = NULL;
        if (ss_state_export(m, ss_state_cdata(st), NULL, NULL, &file, &flen) ||
            !(f = fopen(state_out, "wb")) || fwrite(file, 1, flen, f) != flen) {
            if (f) fclose(f);
            fprintf(stderr, "statesoup generate: cannot write %s\n", state_out);
            goto out;
        }
        fclose(f);
    }
    if (g.verbose) {
        double pf = (double)(t1 - t0) / 1e9, dc = (double)(t2 - t1) / 1e9;
        fprintf(stderr,
                "model %s (%s, %s), seed %llu\n"
                "prompt: %zu tokens in %.3f s (%.1f tok/s); generated %d tokens in %.3f s "
                "(%.1f tok/s); finish: %s\n",
                info->architecture, info->dtype, info->fingerprint, (unsigned long long)sp.seed,
                n_ids, pf, pf > 0 ? (double)n_ids / pf : 0.0, n_gen, dc,
                dc > 0 ? n_gen / dc : 0.0, why);
    }
    rc = 0;
    goto out;
usage:
    rc = CLI_USAGE;
out:
    free(file);
    free(logits);
    free(sbuf);
    free(text);
    free(ids);
    cli_gen_free(&g);
    ss_stopper_free(stp);
    ss_detok_free(dt);
    ss_sampler_free(smp);
    ss_state_free(st);
    ss_ctx_free(ctx);
    ss_tokenizer_close(tok);
    ss_model_close(m);
    return rc;
}
