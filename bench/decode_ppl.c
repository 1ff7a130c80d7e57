/*
 * decode_ppl.c - statesoup-decode-ppl: what a weight format costs in quality on the path a
 * generated token takes. bench/quality.py scores text through POST /v1/score, which feeds a
 * chunk in one step (many rows per projection); batch-1 decode is another path (one row per
 * step, and with --weights q8 its activations are quantised too), so this tool feeds the text
 * one token per step, as generation does, and reports the mean negative log-likelihood per token
 * and the perplexity, beside the same text fed one chunk per step.
 *
 * usage: statesoup-decode-ppl --model DIR [--weights stored|q8] [--f32-act] [--chunk N]
 *                             [--threads N] [--max-tokens N] FILE...
 */
#include "ss_model.h"
#include "ss_tokenizer.h"
#include "ss_util.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: statesoup-decode-ppl --model DIR [options] FILE...\n"
    "The perplexity of text files under a checkpoint, fed one token per step as generation\n"
    "does (batch-1 decode), and one chunk per step as POST /v1/score does; each chunk starts\n"
    "from the zero state. Compare weight formats with two runs (--weights stored, q8).\n"
    "  --model DIR        checkpoint folder (its tokenizer.json tokenises the files)\n"
    "  --weights W        stored (default) or q8 (statesoupd --weights q8)\n"
    "  --f32-act          with q8: keep batch-1 decode's activations in F32 (the default\n"
    "                     quantises them to 8 bits, as statesoupd does)\n"
    "  --chunk N          tokens per chunk (default 256)\n"
    "  --max-tokens N     stop after N scored tokens in all (default: every token)\n"
    "  --threads N        compute threads (default: all cores)\n"
    "  -h, --help         this text\n";

typedef struct totals {
    double nll_step, nll_chunk;
    long n;
} totals;

/* Score tokens[0..n) from the zero state: one token per step, then all in one step. */
static int score_chunk(ss_model *m, ss_ctx *c, ss_state *st, const int32_t *tok, int n,
                       float *logits, float *all, totals *t)
{
    const int V = ss_model_get_info(m)->vocab_size;
    ss_state_zero(st);
    for (int i = 0; i + 1 < n; i++) {
        ss_seq q = {.state = st, .tokens = tok + i, .n_tokens = 1, .logits = logits};
        if (ss_model_eval(m, c, &q, 1, 0)) return -1;
        t->nll_step -= ss_logprob_of(logits, V, tok[i + 1]);
    }
    ss_state_zero(st);
    ss_seq q = {.state = st, .tokens = tok, .n_tokens = n - 1, .logits = all, .logits_all = 1};
    if (ss_model_eval(m, c, &q, 1, 0)) return -1;
    for (int i = 0; i + 1 < n; i++)
        t->nll_chunk -= ss_logprob_of(all + (size_t)i * V, V, tok[i + 1]);
    t->n += n - 1;
    return 0;
}

static int score_file(ss_model *m, ss_tokenizer *tk, const char *path, int chunk, long max_tokens,
                      totals *t)
{
    char *text = NULL;
    size_t len = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (ss_read_file(path, (size_t)1 << 28, &text, &len) ||
        ss_tokenizer_encode(tk, text, len, &ids, &n_ids)) {
        fprintf(stderr, "statesoup-decode-ppl: %s: %s\n", path, ss_errmsg());
        free(text);
        return -1;
    }
    const size_t V = (size_t)ss_model_get_info(m)->vocab_size;
    ss_ctx *c = NULL;
    ss_state *st = NULL;
    float *logits = malloc(V * sizeof(float)), *all = malloc((size_t)chunk * V * sizeof(float));
    int rc = ss_ctx_new(m, &c) || ss_state_new(m, &st) || !logits || !all ? -1 : 0;
    for (size_t i = 0; !rc && i + 1 < n_ids && (max_tokens <= 0 || t->n < max_tokens); i += chunk) {
        const int n = (int)(n_ids - i < (size_t)chunk ? n_ids - i : (size_t)chunk);
        if (n >= 2) rc = score_chunk(m, c, st, ids + i, n, logits, all, t);
    }
    if (rc) fprintf(stderr, "statesoup-decode-ppl: %s: %s\n", path, ss_errmsg());
    free(logits);
    free(all);
    ss_state_free(st);
    ss_ctx_free(c);
    free(ids);
    free(text);
    return rc;
}

int main(int argc, char **argv)
{
    ss_model_params p = ss_model_default_params();
    const char *dir = NULL;
    int chunk = 256;
    long max_tokens = 0;
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},  {"weights", required_argument, NULL, 'w'},
        {"f32-act", no_argument, NULL, 'a'},      {"chunk", required_argument, NULL, 'c'},
        {"threads", required_argument, NULL, 't'}, {"max-tokens", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    for (int o; (o = getopt_long(argc, argv, "h", opts, NULL)) != -1;) {
        if (o == 'm') dir = optarg;
        else if (o == 'w' && (!strcmp(optarg, "stored") || !strcmp(optarg, "q8")))
            p.weights = !strcmp(optarg, "q8") ? SS_WEIGHTS_Q8 : SS_WEIGHTS_STORED;
        else if (o == 'a') p.q8_f32_act = 1;
        else if (o == 'c' && (chunk = atoi(optarg)) >= 2 && chunk <= 65536) continue;
        else if (o == 't' && (p.n_threads = atoi(optarg)) >= 1) continue;
        else if (o == 'n' && (max_tokens = atol(optarg)) >= 1) continue;
        else {
            fputs(usage, o == 'h' ? stdout : stderr);
            return o == 'h' ? 0 : 2;
        }
    }
    if (!dir || optind >= argc) {
        fputs(usage, stderr);
        return 2;
    }
    char tkpath[4096];
    snprintf(tkpath, sizeof tkpath, "%s/tokenizer.json", dir);
    ss_model *m = NULL;
    ss_tokenizer *tk = NULL;
    if (ss_model_open(&m, dir, &p) || ss_tokenizer_open(&tk, tkpath)) {
        fprintf(stderr, "statesoup-decode-ppl: %s\n", ss_errmsg());
        return 1;
    }
    totals t = {0};
    int rc = 0;
    for (int i = optind; i < argc && !rc; i++)
        rc = score_file(m, tk, argv[i], chunk, max_tokens, &t);
    if (!rc && t.n > 0) {
        printf(
            "weights %s%s, %ld tokens scored in chunks of %d from the zero state\n",
            ss_model_get_info(m)->weights,
            p.weights == SS_WEIGHTS_Q8
                ? (p.q8_f32_act ? " (F32 activations)" : " (8-bit activations at batch-1 decode)")
                : "",
            t.n, chunk);
        printf("  one token per step (decode):  %.4f nats/token, perplexity %.2f\n",
               t.nll_step / t.n, exp(t.nll_step / t.n));
        printf("  one chunk per step (score):   %.4f nats/token, perplexity %.2f\n",
               t.nll_chunk / t.n, exp(t.nll_chunk / t.n));
    }
    ss_tokenizer_close(tk);
    ss_model_close(m);
    return rc ? 1 : 0;
}
