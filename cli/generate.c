/*
 * generate.c - `statesoup generate --model DIR`: run a checkpoint locally and stream text.
 *
 * The whole runtime in one loop: tokenize, feed the prompt (from the zero state or a state file),
 * sample, decode with a streaming detokenizer (never half a UTF-8 character on stdout), stop on
 * eos, max tokens or a stop string, optionally save the final state for later use.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "ss_model.h"
#include "ss_tokenizer.h"
#include "ss_util.h"

enum {
    OPT_MODEL = 256, OPT_TOKENIZER, OPT_THREADS, OPT_PROMPT, OPT_PROMPT_FILE, OPT_TOKENS,
    OPT_STATE_IN, OPT_MAX_TOKENS, OPT_TEMPERATURE, OPT_TOP_K, OPT_TOP_P, OPT_MIN_P, OPT_SEED,
    OPT_STOP, OPT_IGNORE_EOS, OPT_STATE_OUT, OPT_LOGPROBS, OPT_IDS, OPT_REMOTE_ONLY,
};

static const struct option opts[] = {
    {"model", required_argument, NULL, OPT_MODEL},
    {"tokenizer", required_argument, NULL, OPT_TOKENIZER},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"prompt", required_argument, NULL, OPT_PROMPT},
    {"prompt-file", required_argument, NULL, OPT_PROMPT_FILE},
    {"tokens", required_argument, NULL, OPT_TOKENS},
    {"state-in", required_argument, NULL, OPT_STATE_IN},
    {"max-tokens", required_argument, NULL, OPT_MAX_TOKENS},
    {"temperature", required_argument, NULL, OPT_TEMPERATURE},
    {"top-k", required_argument, NULL, OPT_TOP_K},
    {"top-p", required_argument, NULL, OPT_TOP_P},
    {"min-p", required_argument, NULL, OPT_MIN_P},
    {"seed", required_argument, NULL, OPT_SEED},
    {"stop", required_argument, NULL, OPT_STOP},
    {"ignore-eos", no_argument, NULL, OPT_IGNORE_EOS},
    {"state-out", required_argument, NULL, OPT_STATE_OUT},
    {"logprobs", no_argument, NULL, OPT_LOGPROBS},
    {"ids", no_argument, NULL, OPT_IDS},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    /* the daemon's options, refused here with a pointer to --url */
    {"url", required_argument, NULL, OPT_REMOTE_ONLY},
    {"api-key", required_argument, NULL, OPT_REMOTE_ONLY},
    {"state", required_argument, NULL, OPT_REMOTE_ONLY},
    {"merge", required_argument, NULL, OPT_REMOTE_ONLY},
    {"save-state", required_argument, NULL, OPT_REMOTE_ONLY},
    {"no-stream", no_argument, NULL, OPT_REMOTE_ONLY},
    {"json", no_argument, NULL, OPT_REMOTE_ONLY},
    {NULL, 0, NULL, 0},
};

static ss_err parse_ids(const char *s, int vocab, int32_t **ids, size_t *n)
{
    size_t cap = 16, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) return ss_fail(SS_ERR_NOMEM, "out of memory");
    while (*s) {
        char *end;
        long x = strtol(s, &end, 10);
        if (end == s || x < 0 || x >= vocab) {
            free(v);
            return ss_fail(SS_ERR_INVALID, "--tokens: '%s' is not a token id in [0, %d)", s, vocab);
        }
        if (k == cap) {
            int32_t *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) {
                free(v);
                return ss_fail(SS_ERR_NOMEM, "out of memory");
            }
            v = nv;
        }
        v[k++] = (int32_t)x;
        s = end;
        while (*s == ',' || *s == ' ') s++;
    }
    *ids = v;
    *n = k;
    return SS_OK;
}

int cmd_generate_local(int argc, char **argv)
{
    const char *model_dir = NULL, *tok_path = NULL, *prompt = NULL, *prompt_file = NULL;
    const char *tokens_arg = NULL, *state_in = NULL, *state_out = NULL;
    char **stops = NULL;
    int n_stops = 0, max_tokens = 64, threads = 0, ignore_eos = 0, show_lp = 0, show_ids = 0;
    int verbose = 0, have_seed = 0;
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

    optind = 1;
    while ((c = getopt_long(argc, argv, "vh", opts, &li)) != -1) {
        switch (c) {
        case OPT_MODEL: model_dir = optarg; break;
        case OPT_TOKENIZER: tok_path = optarg; break;
        case OPT_THREADS:
            if (cli_parse_num("generate", "threads", optarg, 0, 1024, &v)) goto usage;
            threads = (int)v;
            break;
        case OPT_PROMPT: prompt = optarg; break;
        case OPT_PROMPT_FILE: prompt_file = optarg; break;
        case OPT_TOKENS: tokens_arg = optarg; break;
        case OPT_STATE_IN: state_in = optarg; break;
        case OPT_STATE_OUT: state_out = optarg; break;
        case OPT_MAX_TOKENS:
            if (cli_parse_num("generate", "max-tokens", optarg, 0, 1e7, &v)) goto usage;
            max_tokens = (int)v;
            break;
        case OPT_TEMPERATURE:
            if (cli_parse_num("generate", "temperature", optarg, 0, 100, &v)) goto usage;
            sp.temperature = (float)v;
            break;
        case OPT_TOP_K:
            if (cli_parse_num("generate", "top-k", optarg, 0, 1e9, &v)) goto usage;
            sp.top_k = (int)v;
            break;
        case OPT_TOP_P:
            if (cli_parse_num("generate", "top-p", optarg, 1e-9, 1, &v)) goto usage;
            sp.top_p = (float)v;
            break;
        case OPT_MIN_P:
            if (cli_parse_num("generate", "min-p", optarg, 0, 1, &v)) goto usage;
            sp.min_p = (float)v;
            break;
        case OPT_SEED:
            if (cli_parse_num("generate", "seed", optarg, 0, 1.8e19, &v)) goto usage;
            sp.seed = strtoull(optarg, NULL, 10);
            have_seed = 1;
            break;
        case OPT_STOP: {
            char **ns = realloc(stops, (size_t)(n_stops + 1) * sizeof *ns);
            if (!ns) goto out;
            stops = ns;
            stops[n_stops++] = optarg;
            cli_unescape(optarg);
            break;
        }
        case OPT_IGNORE_EOS: ignore_eos = 1; break;
        case OPT_LOGPROBS: show_lp = 1; break;
        case OPT_IDS: show_ids = 1; break;
        case 'v': verbose = 1; break;
        case OPT_REMOTE_ONLY:
            rc = cli_usage("generate", "--%s is for a daemon (--url), not with --model",
                           opts[li].name);
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
    if (!!prompt + !!prompt_file + !!tokens_arg > 1) {
        rc = cli_usage("generate", "give only one of --prompt, --prompt-file, --tokens");
        goto out;
    }
    if (!have_seed) ss_random_bytes(&sp.seed, sizeof sp.seed);

    ss_model_params mp = ss_model_default_params();
    mp.n_threads = threads;
    if (verbose) mp.progress = ss_progress_print;
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
    if (!tok && !show_ids && !tokens_arg) {
        fprintf(stderr, "statesoup generate: no tokenizer (give --tokenizer FILE, or use --tokens "
                        "and --ids)\n");
        goto out;
    }

    /* the prompt */
    if (tokens_arg) {
        if (parse_ids(tokens_arg, info->vocab_size, &ids, &n_ids)) {
            rc = cli_fail("bad --tokens");
            goto out;
        }
    } else {
        size_t len = 0;
        if (prompt_file) {
            if (cli_read_input(prompt_file, 1u << 30, &text, &len)) {
                rc = cli_fail("cannot read the prompt");
                goto out;
            }
        }
        const char *p = text ? text : prompt ? prompt : "";
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
        ss_stopper_new((const char *const *)stops, n_stops, &stp)) {
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
        if (show_ids) {
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
        if (show_lp) {
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
    if (!show_ids && dt) {
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
    if (isatty(STDOUT_FILENO) || show_ids) putchar('\n');
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
    if (verbose) {
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
    free(stops);
    ss_stopper_free(stp);
    ss_detok_free(dt);
    ss_sampler_free(smp);
    ss_state_free(st);
    ss_ctx_free(ctx);
    ss_tokenizer_close(tok);
    ss_model_close(m);
    return rc;
}
