/*
 * util.c - argument helpers shared by the `statesoup` commands: the options every daemon command
 * takes, numbers with their allowed range, token-id lists, "STATE=WEIGHT" merge sources, and
 * reading an input file or stdin. Kept in one place so every command reports bad arguments the
 * same way (a line naming the option, exit code 2).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ss_buf.h"
#include "ss_util.h"

int cli_common_opt(cli_common *o, int c, const char *arg)
{
    switch (c) {
    case CLI_OPT_URL: o->url = arg; return 1;
    case CLI_OPT_API_KEY: o->api_key = arg; return 1;
    case CLI_OPT_JSON: o->json = 1; return 1;
    case CLI_OPT_DATA: o->data = arg; return 1;
    default: return 0;
    }
}

int cli_parse_num(const char *cmd, const char *opt, const char *s, double lo, double hi,
                  double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !(v >= lo && v <= hi)) {
        fprintf(stderr, "statesoup %s: --%s %s: expected a number in [%g, %g]\n", cmd, opt, s, lo,
                hi);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_bad_option(const char *cmd)
{
    fprintf(stderr, "(statesoup %s --help lists the options)\n", cmd);
    return CLI_USAGE;
}

int cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "statesoup %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(statesoup %s --help lists the options)\n", cmd);
    return CLI_USAGE;
}

/* Read all of stream f (stdin) into a growing buffer. */
static ss_err read_stream(FILE *f, size_t max_bytes, char **out, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) return ss_fail(SS_ERR_NOMEM, "out of memory");
    for (;;) {
        if (cap - n < 2) {
            char *nb = cap * 2 > max_bytes + 2 ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return cap * 2 > max_bytes + 2
                           ? ss_fail(SS_ERR_TOO_LARGE, "stdin: more than %zu bytes", max_bytes)
                           : ss_fail(SS_ERR_NOMEM, "out of memory");
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        if (r == 0) break;
        n += r;
    }
    if (ferror(f)) {
        free(buf);
        return ss_fail(SS_ERR_IO, "stdin: read error");
    }
    if (n > max_bytes) {
        free(buf);
        return ss_fail(SS_ERR_TOO_LARGE, "stdin: more than %zu bytes", max_bytes);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return SS_OK;
}

ss_err cli_read_input(const char *path, size_t max_bytes, char **buf, size_t *len)
{
    if (!strcmp(path, "-")) return read_stream(stdin, max_bytes, buf, len);
    return ss_read_file(path, max_bytes, buf, len);
}

ss_err cli_parse_ids(const char *s, int32_t **ids, size_t *n)
{
    size_t cap = 16, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) return ss_fail(SS_ERR_NOMEM, "out of memory");
    while (*s == ',' || *s == ' ') s++;
    while (*s) {
        char *end;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (end == s || x < 0 || x > INT32_MAX || errno == ERANGE ||
            (*end && *end != ',' && *end != ' ')) {
            free(v);
            return ss_fail(SS_ERR_INVALID, "'%s' is not a list of token ids (e.g. 1,2,3)", s);
        }
        if (ss_grow((void **)&v, &cap, k + 1, sizeof *v)) {
            free(v);
            return SS_ERR_NOMEM;
        }
        v[k++] = (int32_t)x;
        s = end;
        while (*s == ',' || *s == ' ') s++;
    }
    *ids = v;
    *n = k;
    return SS_OK;
}

ss_err cli_parse_ids_json(const char *s, json_t **out)
{
    int32_t *ids;
    size_t n;
    ss_err err = cli_parse_ids(s, &ids, &n);
    if (err) return err;
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        if (json_array_append_new(arr, json_integer(ids[i]))) {
            json_decref(arr);
            arr = NULL;
        }
    }
    free(ids);
    if (!arr) return ss_fail(SS_ERR_NOMEM, "out of memory");
    *out = arr;
    return SS_OK;
}

ss_err cli_parse_source(const char *s, json_t *arr)
{
    const char *eq = strrchr(s, '=');
    if (!eq || eq == s || !eq[1]) {
        return ss_fail(SS_ERR_INVALID, "'%s': expected STATE=WEIGHT (e.g. intro=0.5)", s);
    }
    char *end;
    errno = 0;
    double w = strtod(eq + 1, &end);
    if (*end || errno == ERANGE || !isfinite(w)) {
        return ss_fail(SS_ERR_INVALID, "'%s': the weight '%s' is not a finite number", s, eq + 1);
    }
    json_t *src = json_pack("{s:s%,s:f}", "state", s, (size_t)(eq - s), "weight", w);
    if (!src || json_array_append_new(arr, src)) return ss_fail(SS_ERR_NOMEM, "out of memory");
    return SS_OK;
}

void cli_unescape(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == '\\' && r[1]) {
            r++;
            *w++ = *r == 'n' ? '\n' : *r == 't' ? '\t' : *r == 'r' ? '\r' : *r;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

ss_err cli_add_tags(json_t *arr, const char *arg)
{
    while (*arg) {
        const char *c = strchr(arg, ',');
        size_t n = c ? (size_t)(c - arg) : strlen(arg);
        if (n) {
            json_t *t = json_stringn(arg, n);
            if (!t) return ss_fail(SS_ERR_INVALID, "tag '%.*s' is not valid UTF-8", (int)n, arg);
            if (json_array_append_new(arr, t)) return ss_fail(SS_ERR_NOMEM, "out of memory");
        }
        arg += n + (c ? 1 : 0);
    }
    return SS_OK;
}

/* ---- generate's options ---------------------------------------------------------------------- */

const struct option cli_generate_options[] = {
    /* both modes (cli_gen_next takes them), but --seed: each mode reads it for its engine */
    {"prompt", required_argument, NULL, CLI_GEN_PROMPT},
    {"prompt-file", required_argument, NULL, CLI_GEN_PROMPT_FILE},
    {"tokens", required_argument, NULL, CLI_GEN_TOKENS},
    {"max-tokens", required_argument, NULL, CLI_GEN_MAX_TOKENS},
    {"temperature", required_argument, NULL, CLI_GEN_TEMPERATURE},
    {"top-k", required_argument, NULL, CLI_GEN_TOP_K},
    {"top-p", required_argument, NULL, CLI_GEN_TOP_P},
    {"min-p", required_argument, NULL, CLI_GEN_MIN_P},
    {"seed", required_argument, NULL, CLI_GEN_SEED},
    {"stop", required_argument, NULL, CLI_GEN_STOP},
    {"logprobs", no_argument, NULL, CLI_GEN_LOGPROBS},
    {"ids", no_argument, NULL, CLI_GEN_IDS},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    /* local (--model) only */
    {"model", required_argument, NULL, CLI_GEN_MODEL},
    {"tokenizer", required_argument, NULL, CLI_GEN_TOKENIZER},
    {"threads", required_argument, NULL, CLI_GEN_THREADS},
    {"state-in", required_argument, NULL, CLI_GEN_STATE_IN},
    {"state-out", required_argument, NULL, CLI_GEN_STATE_OUT},
    {"ignore-eos", no_argument, NULL, CLI_GEN_IGNORE_EOS},
    /* daemon (--url) only */
    {"url", required_argument, NULL, CLI_OPT_URL},
    {"api-key", required_argument, NULL, CLI_OPT_API_KEY},
    {"json", no_argument, NULL, CLI_OPT_JSON},
    {"state", required_argument, NULL, CLI_GEN_STATE},
    {"merge", required_argument, NULL, CLI_GEN_MERGE},
    {"merge-mode", required_argument, NULL, CLI_GEN_MERGE_MODE},
    {"save-state", required_argument, NULL, CLI_GEN_SAVE_STATE},
    {"no-stream", no_argument, NULL, CLI_GEN_NO_STREAM},
    {"reuse", no_argument, NULL, CLI_GEN_REUSE},
    {NULL, 0, NULL, 0},
};

void cli_gen_init(cli_gen_opts *g)
{
    *g = (cli_gen_opts){.max_tokens = 64, .temperature = NAN, .top_k = NAN, .top_p = NAN,
                        .min_p = NAN};
}

void cli_gen_free(cli_gen_opts *g)
{
    free(g->stops);
    g->stops = NULL;
    g->n_stops = 0;
}

/* A number in [lo, hi] for --<opt> into *out: CLI_OK, or CLI_USAGE (the message printed). */
static int gen_num(const char *opt, const char *arg, double lo, double hi, double *out)
{
    return cli_parse_num("generate", opt, arg, lo, hi, out) ? CLI_USAGE : CLI_OK;
}

/* Take option c if it is one that both modes take: -1 when it is not, else CLI_OK, CLI_USAGE (a
 * bad number) or CLI_FAIL (out of memory), the message printed. */
static int gen_opt(cli_gen_opts *g, int c, char *arg)
{
    switch (c) {
    case CLI_GEN_PROMPT: g->prompt = arg; return CLI_OK;
    case CLI_GEN_PROMPT_FILE: g->prompt_file = arg; return CLI_OK;
    case CLI_GEN_TOKENS: g->tokens = arg; return CLI_OK;
    case CLI_GEN_MAX_TOKENS: return gen_num("max-tokens", arg, 0, 1e7, &g->max_tokens);
    case CLI_GEN_TEMPERATURE: return gen_num("temperature", arg, 0, 100, &g->temperature);
    case CLI_GEN_TOP_K: return gen_num("top-k", arg, 0, 1e9, &g->top_k);
    case CLI_GEN_TOP_P: return gen_num("top-p", arg, 1e-9, 1, &g->top_p);
    case CLI_GEN_MIN_P: return gen_num("min-p", arg, 0, 1, &g->min_p);
    case CLI_GEN_STOP: {
        const char **ns = realloc(g->stops, (size_t)(g->n_stops + 1) * sizeof *ns);
        if (!ns) {
            ss_fail(SS_ERR_NOMEM, "out of memory");
            return cli_fail("generate");
        }
        g->stops = ns;
        cli_unescape(arg);
        g->stops[g->n_stops++] = arg;
        return CLI_OK;
    }
    case CLI_GEN_LOGPROBS: g->logprobs = 1; return CLI_OK;
    case CLI_GEN_IDS: g->ids = 1; return CLI_OK;
    case 'v': g->verbose = 1; return CLI_OK;
    default: return -1;
    }
}

int cli_gen_next(int argc, char **argv, cli_gen_opts *g, int *li, int *rc)
{
    int c;
    while ((c = getopt_long(argc, argv, "vh", cli_generate_options, li)) != -1) {
        int r = gen_opt(g, c, optarg);
        if (r == CLI_OK) continue;
        if (r < 0) return c;
        *rc = r;
        return 0;
    }
    return -1;
}

int cli_gen_check(const cli_gen_opts *g)
{
    if (!!g->prompt + !!g->prompt_file + !!g->tokens > 1)
        return cli_usage("generate", "give only one of --prompt, --prompt-file, --tokens");
    return CLI_OK;
}
