/*
 * infer.c - the commands that ask a running statesoupd to run its model: generate (--url), score,
 * plus models and health.
 *
 * generate streams: it asks for server-sent events and writes each token's text the moment its
 * event is complete, so output appears as it does with the local mode. The SSE parser is small
 * (only "data:" lines matter to us) and works on arbitrary chunk boundaries, since TCP hands
 * events over split anywhere.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "ss_buf.h"

/*
 * Put "state" or "merge" (from "A=0.5,B=0.5") into a request body; with a merge mode (--merge-mode)
 * the object form {"sources", "mode"}, where a sequential or symmetric source may omit "=W".
 */
static int add_start(const char *cmd, json_t *body, const char *state, const char *merge,
                     const char *mode)
{
    if (state && merge) return cli_usage(cmd, "give --state or --merge, not both");
    if (mode && !merge) return cli_usage(cmd, "--merge-mode needs --merge");
    if (state) json_object_set_new(body, "state", json_string(state));
    if (!merge) return CLI_OK;
    json_t *arr = json_array();
    char *copy = strdup(merge), *save = NULL;
    int rc = CLI_OK;
    if (!arr || !copy) {
        rc = CLI_FAIL;
        goto out;
    }
    int bare = mode && strcmp(mode, "linear") != 0; /* compositions take no weights */
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (bare && !strchr(tok, '=')) {
            json_array_append_new(arr, json_pack("{s:s}", "state", tok));
            continue;
        }
        if (cli_parse_source(tok, arr)) {
            rc = cli_usage(cmd, "--merge: %s", ss_errmsg());
            goto out;
        }
    }
    if (json_array_size(arr) == 0) {
        rc = cli_usage(cmd, "--merge: expected NAME=WEIGHT[,NAME=WEIGHT...]");
        goto out;
    }
    if (mode)
        json_object_set_new(body, "merge", json_pack("{s:O,s:s}", "sources", arr, "mode", mode));
    else
        json_object_set(body, "merge", arr);
out:
    free(copy);
    json_decref(arr);
    return rc;
}

/*
 * A text given as --OPT TEXT, --OPT-file FILE or --TOK_OPT IDS (generate: --prompt, --prompt-file,
 * --tokens; score: --context, --context-file, --context-tokens), as a JSON string or array of ids
 * in *out (the caller's), NULL when none is given. CLI_OK, or the exit status after saying why.
 */
static int prompt_value(const char *cmd, const char *opt, const char *tok_opt, const char *text,
                        const char *file, const char *tokens, json_t **out)
{
    if (!!text + !!file + !!tokens > 1) {
        return cli_usage(cmd, "give only one of --%s, --%s-file, --%s", opt, opt, tok_opt);
    }
    *out = NULL;
    if (tokens) {
        if (cli_parse_ids_json(tokens, out))
            return cli_usage(cmd, "--%s: %s", tok_opt, ss_errmsg());
        return CLI_OK;
    }
    char *buf = NULL;
    size_t len = 0;
    if (file) {
        if (cli_read_input(file, MAX_PROMPT_BYTES, &buf, &len)) return cli_fail(cmd);
        *out = json_stringn(buf, len);
        free(buf);
    } else if (text) {
        *out = json_string(text);
    } else {
        return CLI_OK;
    }
    if (!*out) return cli_usage(cmd, "the %s is not valid UTF-8", opt);
    return CLI_OK;
}

/* ---- generate -------------------------------------------------------------------------------- */

const char cli_generate_help[] =
    "usage: statesoup generate --model DIR [options]   run a checkpoint on this machine\n"
    "       statesoup generate [--url URL] [options]   ask a running statesoupd\n"
    "\n"
    "Generate text from a prompt and stream it to stdout as it is produced. Without --model the\n"
    "request goes to the daemon at --url (default $STATESOUP_URL, else http://127.0.0.1:8080).\n"
    "\n"
    "where:\n"
    "  --model DIR          run locally: HF checkpoint folder (config.json + *.safetensors)\n"
    "  --url URL            the daemon (when --model is not given)\n"
    "  --api-key KEY        the daemon's API key (default $STATESOUP_API_KEY), sent as a Bearer\n"
    "                       token\n"
    "input:\n"
    "  --prompt TEXT        the prompt\n"
    "  --prompt-file FILE   read the prompt from FILE ('-' for stdin)\n"
    "  --tokens IDS         the prompt as comma-separated token ids (no tokenizer needed)\n"
    "starting state (default: the zero state):\n"
    "  --state NAME|ID      daemon: start from a stored state; the prompt may then be empty\n"
    "  --merge A=W,B=W      daemon: start from sum W*state, computed on the fly, not stored\n"
    "  --merge-mode M       daemon: how --merge combines: linear (default), sequential or\n"
    "                       symmetric (composed with the model's decay; then --merge A,B)\n"
    "  --state-in FILE      local: start from a state file (safetensors, as `export` writes)\n"
    "  --reuse              daemon: resume from the longest stored state whose tokens begin the\n"
    "                       prompt (same starting state), feeding only the rest (prompt\n"
    "                       caching; -v says how many tokens were resumed)\n"
    "sampling:\n"
    "  --max-tokens N       tokens to generate (default 64)\n"
    "  --temperature T      0 = greedy (default 1.0)\n"
    "  --top-k K            keep the K most likely tokens (default 0 = off)\n"
    "  --top-p P            nucleus sampling (default 1.0 = off)\n"
    "  --min-p P            drop tokens below P x the best probability (default 0 = off)\n"
    "  --seed S             random seed: same seed, same output (default: random)\n"
    "  --stop STR           stop before STR appears (repeatable; C escapes \\n \\t \\\\)\n"
    "output:\n"
    "  --save-state NAME    daemon: store the state after the last token under NAME\n"
    "  --no-stream          daemon: wait for the whole text instead of streaming it\n"
    "  --json               daemon: wait, then print the reply JSON (text, tokens, finish_reason,\n"
    "                       usage, state)\n"
    "  --state-out FILE     local: save the state after the last token (safetensors)\n"
    "  --logprobs           print each token's id and log-probability to stderr\n"
    "  --ids                print the generated token ids instead of text (for a model without\n"
    "                       a tokenizer)\n"
    "  -v, --verbose        finish reason and token counts (daemon); load progress and speed\n"
    "                       (local)\n"
    "  -h, --help           this text\n"
    "local only:\n"
    "  --tokenizer FILE     tokenizer.json (default: DIR/tokenizer.json)\n"
    "  --threads N          compute threads (default: all cores)\n"
    "  --ignore-eos         keep going after the end-of-sequence token\n"
    "\n"
    "examples:\n"
    "  statesoup generate --model models/demo-mamba1 --prompt 'Once upon a time' --max-tokens 40\n"
    "  statesoup generate --state intro --prompt ' and then' --temperature 0 --save-state intro-2\n"
    "  statesoup generate --merge dict-a=0.5,dict-b=0.5 --prompt $'Query:\\napple =' --stop "
    "'\\n'\n";

int cmd_generate(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++) {
        if (!strcmp(argv[i], "--model") || !strncmp(argv[i], "--model=", 8)) {
            return cmd_generate_local(argc, argv);
        }
    }
    return cmd_generate_remote(argc, argv);
}

/* The SSE reader: splits the stream into events and acts on each one's data. */
typedef struct sse {
    char *line; /* the current, incomplete line */
    size_t len, cap;
    char *data; /* data of the current event ("data:" lines joined by '\n') */
    size_t dlen, dcap;
    int done;           /* saw [DONE] */
    int wrote;          /* some text was written */
    char last;          /* last byte written */
    json_t *final;      /* the event with finish_reason */
    int ids;            /* --ids: print token ids instead of text */
    int logprobs;       /* --logprobs: each token's log-probability on stderr */
    int n_tok;          /* tokens seen so far */
} sse;

/* Token number s->n_tok: its id on stdout (--ids) and/or its log-probability on stderr. */
static int show_token(sse *s, json_int_t id, const json_t *logprob)
{
    if (s->ids && (printf("%s%" JSON_INTEGER_FORMAT, s->n_tok ? " " : "", id) < 0 ||
                   fflush(stdout) != 0)) {
        ss_fail(SS_ERR_IO, "cannot write to stdout");
        return 1;
    }
    if (s->logprobs) {
        if (json_is_number(logprob)) {
            fprintf(stderr, "[%d] id %" JSON_INTEGER_FORMAT " logprob %.4f\n", s->n_tok, id,
                    json_number_value(logprob));
        } else {
            fprintf(stderr, "[%d] id %" JSON_INTEGER_FORMAT " logprob -\n", s->n_tok, id);
        }
    }
    s->n_tok++;
    return 0;
}

/* One complete event. Returns nonzero to stop the transfer. */
static int sse_event(sse *s)
{
    if (s->dlen == 0) return 0;
    s->data[s->dlen] = '\0';
    if (!strcmp(s->data, "[DONE]")) {
        s->done = 1;
        return 0;
    }
    json_error_t je;
    json_t *ev = json_loadb(s->data, s->dlen, 0, &je);
    if (!ev) {
        ss_fail(SS_ERR_FORMAT, "the server sent an event that is not JSON: %s", je.text);
        return 1;
    }
    json_t *err = json_object_get(ev, "error");
    if (err) {
        const char *code = json_string_value(json_object_get(err, "code"));
        const char *msg = json_string_value(json_object_get(err, "message"));
        ss_fail(SS_ERR_INTERNAL, "%s: %s", code ? code : "error", msg ? msg : "(no message)");
        json_decref(ev);
        return 1;
    }
    json_t *tok = json_object_get(ev, "token");
    if (json_is_integer(tok) &&
        show_token(s, json_integer_value(tok), json_object_get(ev, "logprob"))) {
        json_decref(ev);
        return 1;
    }
    const char *text = json_string_value(json_object_get(ev, "text"));
    size_t n = json_string_length(json_object_get(ev, "text"));
    if (text && n && !s->ids) {
        if (fwrite(text, 1, n, stdout) != n || fflush(stdout) != 0) {
            ss_fail(SS_ERR_IO, "cannot write to stdout");
            json_decref(ev);
            return 1;
        }
        s->wrote = 1;
        s->last = text[n - 1];
    }
    json_t *fin = json_object_get(ev, "finish_reason");
    if (fin && !json_is_null(fin)) {
        json_decref(s->final);
        s->final = json_incref(ev);
    }
    json_decref(ev);
    return 0;
}

/* A complete line (without its end). */
static int sse_line(sse *s, const char *l, size_t n)
{
    if (n == 0) { /* blank line: dispatch */
        int r = sse_event(s);
        s->dlen = 0;
        return r;
    }
    if (n >= 5 && !memcmp(l, "data:", 5)) {
        l += 5;
        n -= 5;
        if (n && *l == ' ') {
            l++;
            n--;
        }
        if (ss_grow((void **)&s->data, &s->dcap, s->dlen + n + 2, 1)) {
            return 1;
        }
        if (s->dlen) s->data[s->dlen++] = '\n';
        memcpy(s->data + s->dlen, l, n);
        s->dlen += n;
    }
    /* comments (":"), "event:", "id:" and "retry:" carry nothing we use */
    return 0;
}

static int sse_feed(void *user, const char *p, size_t n)
{
    sse *s = user;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '\n') {
            size_t len = s->len;
            if (len && s->line[len - 1] == '\r') len--;
            int r = sse_line(s, s->line ? s->line : "", len);
            s->len = 0;
            if (r) return r;
            continue;
        }
        if (ss_grow((void **)&s->line, &s->cap, s->len + 2, 1)) {
            return 1;
        }
        s->line[s->len++] = ch;
    }
    return 0;
}

/* The request body of `generate` from the options: where it starts, the prompt (*pv, the
 * caller's to free), sampling and stop strings, save_state. CLI_OK, or the exit status after
 * saying why. */
static int remote_body(json_t *body, json_t *stops, const cli_gen_opts *g, const char *state,
                       const char *merge, const char *merge_mode, const char *save_state,
                       json_t **pv)
{
    int rc;
    if ((rc = add_start("generate", body, state, merge, merge_mode))) return rc;
    if ((rc = cli_gen_check(g))) return rc;
    if ((rc = prompt_value("generate", "prompt", "tokens", g->prompt, g->prompt_file, g->tokens,
                           pv)))
        return rc;
    if (!*pv && !(*pv = json_string(""))) return CLI_FAIL;
    if (!g->tokens && !state && !merge && json_string_length(*pv) == 0) {
        return cli_usage("generate", "the prompt is empty (give --prompt, or --state/--merge to "
                                     "continue from a state)");
    }
    json_object_set(body, "prompt", *pv);
    json_object_set_new(body, "max_tokens", json_integer((json_int_t)g->max_tokens));
    if (!isnan(g->temperature)) json_object_set_new(body, "temperature", json_real(g->temperature));
    if (!isnan(g->top_k)) json_object_set_new(body, "top_k", json_integer((json_int_t)g->top_k));
    if (!isnan(g->top_p)) json_object_set_new(body, "top_p", json_real(g->top_p));
    if (!isnan(g->min_p)) json_object_set_new(body, "min_p", json_real(g->min_p));
    for (int i = 0; i < g->n_stops; i++) json_array_append_new(stops, json_string(g->stops[i]));
    if (json_array_size(stops)) json_object_set(body, "stop", stops);
    if (save_state) {
        json_object_set_new(body, "save_state", json_pack("{s:s}", "name", save_state));
    }
    return CLI_OK;
}

/* Release what the SSE reader holds. */
static void sse_free(sse *s)
{
    free(s->line);
    free(s->data);
    json_decref(s->final);
}

/* After a streamed reply: the last line and event, a check that it finished, a final newline. */
static int finish_stream(sse *s)
{
    if (s->len) sse_line(s, s->line, s->len); /* a last line without its newline */
    if (s->dlen && sse_event(s)) return cli_fail("generate");
    if (!s->done && !s->final) {
        ss_fail(SS_ERR_IO, "the stream ended before the generation finished");
        if (s->wrote) fputc('\n', stdout);
        return cli_fail("generate");
    }
    if (s->ids ? s->n_tok > 0 : s->wrote && isatty(STDOUT_FILENO) && s->last != '\n') {
        fputc('\n', stdout);
    }
    return CLI_OK;
}

/* A whole (not streamed) reply: parsed into *reply, then printed raw (--json) or as text/ids. */
static int print_reply(int raw, sse *s, const cli_resp *resp, json_t **reply)
{
    json_error_t je;
    *reply = json_loadb(resp->body ? resp->body : "", resp->len, 0, &je);
    if (!*reply) {
        ss_fail(SS_ERR_FORMAT, "the reply is not JSON: %s", je.text);
        return cli_fail("generate");
    }
    if (raw) {
        cli_print_raw(resp->body);
        return CLI_OK;
    }
    size_t i;
    json_t *id, *lps = json_object_get(*reply, "logprobs");
    json_array_foreach(json_object_get(*reply, "tokens"), i, id) {
        json_t *lp = json_object_get(json_array_get(lps, i), "logprob");
        if (show_token(s, json_integer_value(id), lp)) return cli_fail("generate");
    }
    const char *t = json_string_value(json_object_get(*reply, "text"));
    size_t n = json_string_length(json_object_get(*reply, "text"));
    if (s->ids) {
        if (s->n_tok) fputc('\n', stdout);
    } else {
        fwrite(t ? t : "", 1, n, stdout);
        if (isatty(STDOUT_FILENO) && n && t[n - 1] != '\n') fputc('\n', stdout);
    }
    return CLI_OK;
}

/* On stderr: the saved state's id, and with -v the finish reason and token counts. */
static void print_summary(const json_t *fin, const char *save_state, int verbose)
{
    json_t *st = json_object_get(fin, "state");
    const char *sid = json_string_value(json_object_get(st, "id"));
    if (save_state && sid) fprintf(stderr, "statesoup: saved state %s (%s)\n", save_state, sid);
    if (verbose) {
        json_t *u = json_object_get(fin, "usage");
        fprintf(stderr,
                "finish: %s; prompt %" JSON_INTEGER_FORMAT " tokens, generated "
                "%" JSON_INTEGER_FORMAT " tokens\n",
                json_string_value(json_object_get(fin, "finish_reason")),
                json_integer_value(json_object_get(u, "prompt_tokens")),
                json_integer_value(json_object_get(u, "completion_tokens")));
        json_int_t cached = json_integer_value(json_object_get(u, "cached_tokens"));
        if (cached > 0)
            fprintf(stderr, "prompt caching: %" JSON_INTEGER_FORMAT " prompt tokens resumed from a "
                            "stored state\n", cached);
    }
}

/* An option of the local mode given to the remote one (li: its index in cli_generate_options):
 * the exit status after saying so. */
static int local_only(int c, int li)
{
    if (c == CLI_GEN_MODEL) /* only an abbreviation gets here: cmd_generate looks for --model */
        return cli_usage("generate", "write --model in full to run the model locally");
    return cli_usage("generate", "--%s works only locally, with --model DIR",
                     cli_generate_options[li].name);
}

/* "seed" from --seed ARG, an integer in [0, 2^63). CLI_OK, or the exit status after saying why. */
static int add_seed(json_t *body, const char *arg)
{
    char *end;
    unsigned long long sd = strtoull(arg, &end, 10);
    if (*arg == '-' || end == arg || *end || sd > (unsigned long long)INT64_MAX) {
        return cli_usage("generate", "--seed %s: expected an integer in [0, 2^63)", arg);
    }
    json_object_set_new(body, "seed", json_integer((json_int_t)sd));
    return CLI_OK;
}

/* POST /v1/generate: a streamed reply goes through the SSE reader s as it arrives, a whole one
 * into *resp (the caller frees it). CLI_OK, or the exit status after saying why. */
static int post_generate(const cli_conn *conn, const json_t *body, int stream, sse *s,
                         cli_resp *resp)
{
    char *req = json_dumps(body, JSON_COMPACT);
    if (!req) return CLI_FAIL;
    cli_req rq = {.method = "POST",
                  .path = "/v1/generate",
                  .content_type = "application/json",
                  .body = req,
                  .body_len = strlen(req),
                  .sink = stream ? sse_feed : NULL,
                  .sink_user = s};
    ss_err e = cli_http(conn, &rq, resp);
    free(req);
    if (!e) return CLI_OK;
    if (s->wrote) fputc('\n', stdout);
    return cli_fail("generate");
}

int cmd_generate_remote(int argc, char **argv)
{
    cli_common o = {0};
    cli_gen_opts g;
    const char *state = NULL, *merge = NULL, *merge_mode = NULL, *save_state = NULL;
    int c, li, rc = CLI_FAIL, no_stream = 0;
    cli_conn conn = {0};
    cli_resp resp = {0};
    json_t *body = json_object(), *stops = json_array(), *pv = NULL, *reply = NULL;
    sse s = {0};

    cli_gen_init(&g);
    if (!body || !stops) goto out;
    optind = 1;
    while ((c = cli_gen_next(argc, argv, &g, &li, &rc)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        switch (c) {
        case 0: goto out;
        case CLI_GEN_STATE: state = optarg; break;
        case CLI_GEN_MERGE: merge = optarg; break;
        case CLI_GEN_MERGE_MODE: merge_mode = optarg; break;
        case CLI_GEN_SAVE_STATE: save_state = optarg; break;
        case CLI_GEN_NO_STREAM: no_stream = 1; break;
        case CLI_GEN_REUSE: json_object_set_new(body, "reuse", json_true()); break;
        case CLI_GEN_SEED:
            if ((rc = add_seed(body, optarg))) goto out;
            break;
        case CLI_GEN_TOKENIZER:
        case CLI_GEN_THREADS:
        case CLI_GEN_STATE_IN:
        case CLI_GEN_STATE_OUT:
        case CLI_GEN_IGNORE_EOS:
        case CLI_GEN_MODEL: rc = local_only(c, li); goto out;
        case 'h':
            fputs(cli_generate_help, stdout);
            rc = CLI_OK;
            goto out;
        default: rc = cli_bad_option("generate"); goto out;
        }
    }
    if (optind < argc) {
        rc = cli_usage("generate", "unexpected argument '%s'", argv[optind]);
        goto out;
    }
    if ((rc = remote_body(body, stops, &g, state, merge, merge_mode, save_state, &pv))) goto out;
    rc = CLI_FAIL;
    int stream = !no_stream && !o.json;
    json_object_set_new(body, "stream", json_boolean(stream));
    s.ids = g.ids;
    s.logprobs = g.logprobs;
    if (s.logprobs) json_object_set_new(body, "logprobs", json_integer(1));
    if (cli_conn_init(&conn, &o)) {
        rc = cli_usage("generate", "%s", ss_errmsg());
        goto out;
    }
    if ((rc = post_generate(&conn, body, stream, &s, &resp))) goto out;
    rc = stream ? finish_stream(&s) : print_reply(o.json, &s, &resp, &reply);
    if (rc) goto out;
    const json_t *fin = stream ? s.final : reply;
    fflush(stdout);
    if (!o.json) print_summary(fin, save_state, g.verbose);
    rc = CLI_OK;
out:
    sse_free(&s);
    json_decref(reply);
    cli_resp_free(&resp);
    json_decref(pv);
    json_decref(stops);
    json_decref(body);
    cli_conn_free(&conn);
    cli_gen_free(&g);
    return rc;
}

/* ---- score ----------------------------------------------------------------------------------- */

static const char score_help[] =
    "usage: statesoup score [--state S | --merge A=W,B=W] [--context TEXT] --continuation TEXT\n"
    "\n"
    "The log-likelihood of a continuation after a context, fed from a starting state: the State\n"
    "Soup metric. Prints the number of scored tokens, the sum of their log-probabilities (nats)\n"
    "and the perplexity; --verbose adds each token's log-probability. The first token's is '-'\n"
    "when nothing predicts it (no context and no starting state).\n"
    "\n"
    "  --state NAME|ID          start from a stored state (default: the zero state)\n"
    "  --merge A=W,B=W          start from sum W*state, computed on the fly, not stored\n"
    "  --merge-mode M           how --merge combines: linear (default), sequential or symmetric\n"
    "                           (composed with the model's decay; then --merge A,B)\n"
    "  --context TEXT           text fed before the continuation (not scored)\n"
    "  --context-file FILE      ... read from FILE ('-' for stdin)\n"
    "  --context-tokens IDS     ... as token ids, e.g. 1,2,3\n"
    "  --continuation TEXT      the text to score (required: this, -file or -tokens)\n"
    "  --continuation-file FILE\n"
    "  --continuation-tokens IDS\n"
    "  --reuse                  resume from the longest stored state whose tokens begin the\n"
    "                           context (prompt caching; the same log-probabilities)\n"
    "  -v, --verbose            per-token log-probabilities\n" CLI_CONN_HELP
    "\n"
    "example:\n"
    "  statesoup score --merge dict-a=0.5,dict-b=0.5 --context $'Query:\\napple =' \\\n"
    "      --continuation ' red'\n";

enum {
    OPT_STATE = CLI_OPT_FIRST_LOCAL,
    OPT_MERGE,
    OPT_MERGE_MODE,
    OPT_CONTEXT,
    OPT_CONTEXT_FILE,
    OPT_CONTEXT_TOKENS,
    OPT_CONTINUATION,
    OPT_CONTINUATION_FILE,
    OPT_CONTINUATION_TOKENS,
    OPT_REUSE,
};

/* score's options that make the request body: where it starts and the two texts. */
typedef struct score_input {
    const char *state, *merge, *merge_mode;
    const char *ctx, *ctx_file, *ctx_tok;    /* --context, -file, -tokens */
    const char *cont, *cont_file, *cont_tok; /* --continuation, -file, -tokens */
} score_input;

/* Fill score's request body: the start, "context" (optional) and "continuation" (required).
 * CLI_OK, or the exit status after saying why. */
static int score_body(json_t *body, const score_input *in)
{
    json_t *cv = NULL, *kv = NULL;
    int rc;
    if ((rc = add_start("score", body, in->state, in->merge, in->merge_mode))) return rc;
    if ((rc = prompt_value("score", "context", "context-tokens", in->ctx, in->ctx_file, in->ctx_tok,
                           &cv)))
        return rc;
    if ((rc = prompt_value("score", "continuation", "continuation-tokens", in->cont, in->cont_file,
                           in->cont_tok, &kv)))
        goto out;
    if (!kv) {
        rc = cli_usage("score", "give the text to score: --continuation TEXT (or -file, -tokens)");
        goto out;
    }
    if (cv) json_object_set(body, "context", cv);
    json_object_set(body, "continuation", kv);
out:
    json_decref(kv);
    json_decref(cv);
    return rc;
}

/* The score reply as text: token count, log-probability sum, perplexity ('-' when undefined),
 * and with verbose each token's log-probability. */
static void print_score(const json_t *reply, int verbose)
{
    json_t *ppl = json_object_get(reply, "perplexity");
    printf("tokens       %" JSON_INTEGER_FORMAT "\n",
           json_integer_value(json_object_get(reply, "n_tokens")));
    printf("logprob_sum  %.6f\n", json_number_value(json_object_get(reply, "logprob_sum")));
    if (json_is_number(ppl)) {
        printf("perplexity   %.6g\n", json_number_value(ppl));
    } else {
        printf("perplexity   -\n");
    }
    if (!verbose) return;
    size_t i;
    json_t *lp;
    json_array_foreach(json_object_get(reply, "token_logprobs"), i, lp) {
        if (json_is_number(lp)) {
            printf("  [%zu] %.6f\n", i, json_number_value(lp));
        } else {
            printf("  [%zu] -\n", i);
        }
    }
}

int cmd_score(int argc, char **argv)
{
    static const struct option opts[] = {
        {"state", required_argument, NULL, OPT_STATE},
        {"merge", required_argument, NULL, OPT_MERGE},
        {"merge-mode", required_argument, NULL, OPT_MERGE_MODE},
        {"context", required_argument, NULL, OPT_CONTEXT},
        {"context-file", required_argument, NULL, OPT_CONTEXT_FILE},
        {"context-tokens", required_argument, NULL, OPT_CONTEXT_TOKENS},
        {"continuation", required_argument, NULL, OPT_CONTINUATION},
        {"continuation-file", required_argument, NULL, OPT_CONTINUATION_FILE},
        {"continuation-tokens", required_argument, NULL, OPT_CONTINUATION_TOKENS},
        {"reuse", no_argument, NULL, OPT_REUSE},
        {"verbose", no_argument, NULL, 'v'},
        CLI_CONN_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_common o = {0};
    score_input in = {0};
    int c, rc = CLI_FAIL, verbose = 0;
    cli_conn conn = {0};
    json_t *body = json_object(), *reply = NULL;
    char *raw = NULL;

    if (!body) goto out;
    optind = 1;
    while ((c = getopt_long(argc, argv, "hv", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        switch (c) {
        case OPT_STATE: in.state = optarg; break;
        case OPT_MERGE: in.merge = optarg; break;
        case OPT_MERGE_MODE: in.merge_mode = optarg; break;
        case OPT_CONTEXT: in.ctx = optarg; break;
        case OPT_CONTEXT_FILE: in.ctx_file = optarg; break;
        case OPT_CONTEXT_TOKENS: in.ctx_tok = optarg; break;
        case OPT_CONTINUATION: in.cont = optarg; break;
        case OPT_CONTINUATION_FILE: in.cont_file = optarg; break;
        case OPT_CONTINUATION_TOKENS: in.cont_tok = optarg; break;
        case OPT_REUSE: json_object_set_new(body, "reuse", json_true()); break;
        case 'v': verbose = 1; break;
        case 'h':
            fputs(score_help, stdout);
            rc = CLI_OK;
            goto out;
        default: rc = cli_bad_option("score"); goto out;
        }
    }
    if (optind < argc) {
        rc = cli_usage("score", "unexpected argument '%s'", argv[optind]);
        goto out;
    }
    if ((rc = score_body(body, &in))) goto out;
    if (cli_conn_init(&conn, &o)) {
        rc = cli_usage("score", "%s", ss_errmsg());
        goto out;
    }
    rc = CLI_FAIL;
    if (cli_http_json(&conn, "POST", "/v1/score", body, &reply, &raw)) {
        rc = cli_fail("score");
        goto out;
    }
    if (o.json) {
        cli_print_raw(raw);
    } else {
        print_score(reply, verbose);
    }
    rc = CLI_OK;
out:
    free(raw);
    json_decref(reply);
    json_decref(body);
    cli_conn_free(&conn);
    return rc;
}

/* ---- models and health ----------------------------------------------------------------------- */

static const char models_help[] =
    "usage: statesoup models [--url URL] [--json]\n"
    "\n"
    "The model the daemon serves: id, architecture, layers, d_model, vocabulary, the size of one\n"
    "state and the fingerprint that stored states are checked against.\n"
    "\n" CLI_CONN_HELP
    "\n"
    "example:\n"
    "  statesoup models --url http://127.0.0.1:8080\n";

int cmd_models(int argc, char **argv)
{
    static const struct option opts[] = {CLI_CONN_OPTIONS, {NULL, 0, NULL, 0}};
    static const char *const head[] = {"ID", "ARCHITECTURE", "LAYERS", "D_MODEL", "VOCAB",
                                       "STATE", "FINGERPRINT"};
    static const int right[] = {0, 0, 1, 1, 1, 1, 0};
    cli_common o = {0};
    int c, rc = CLI_FAIL;
    cli_conn conn = {0};
    json_t *reply = NULL;
    char *raw = NULL;
    cli_table *t = NULL;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        if (c == 'h') {
            fputs(models_help, stdout);
            return CLI_OK;
        }
        return cli_bad_option("models");
    }
    if (optind < argc) return cli_usage("models", "unexpected argument '%s'", argv[optind]);
    if (cli_conn_init(&conn, &o)) return cli_usage("models", "%s", ss_errmsg());
    if (cli_http_json(&conn, "GET", "/v1/models", NULL, &reply, &raw)) {
        rc = cli_fail("models");
        goto out;
    }
    if (o.json) {
        cli_print_raw(raw);
        rc = CLI_OK;
        goto out;
    }
    if (!(t = cli_table_new(7, head, right))) goto out;
    size_t i;
    json_t *mj;
    json_array_foreach(json_object_get(reply, "data"), i, mj) {
        char nl[24], dm[24], vs[24], sb[32];
        snprintf(nl, sizeof nl, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(mj, "n_layer")));
        snprintf(dm, sizeof dm, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(mj, "d_model")));
        snprintf(vs, sizeof vs, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(mj, "vocab_size")));
        cli_human_bytes((uint64_t)json_integer_value(json_object_get(mj, "state_bytes")), sb,
                        sizeof sb);
        const char *row[] = {json_string_value(json_object_get(mj, "id")),
                             json_string_value(json_object_get(mj, "architecture")),
                             nl, dm, vs, sb,
                             json_string_value(json_object_get(mj, "fingerprint"))};
        cli_table_add(t, row);
    }
    cli_table_print(t);
    rc = CLI_OK;
out:
    free(raw);
    cli_table_free(t);
    json_decref(reply);
    cli_conn_free(&conn);
    return rc;
}

static const char health_help[] =
    "usage: statesoup health [--url URL] [--json]\n"
    "\n"
    "Ask the daemon whether it is ready (GET /healthz): prints 'ok' and exits 0 once the model is\n"
    "loaded; exits 1 while it is still loading or when nothing answers at URL.\n"
    "\n" CLI_CONN_HELP
    "\n"
    "example:\n"
    "  until statesoup health; do sleep 1; done\n";

int cmd_health(int argc, char **argv)
{
    static const struct option opts[] = {CLI_CONN_OPTIONS, {NULL, 0, NULL, 0}};
    cli_common o = {0};
    int c, rc = CLI_FAIL;
    cli_conn conn = {0};
    json_t *reply = NULL;
    char *raw = NULL;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        if (c == 'h') {
            fputs(health_help, stdout);
            return CLI_OK;
        }
        return cli_bad_option("health");
    }
    if (optind < argc) return cli_usage("health", "unexpected argument '%s'", argv[optind]);
    if (cli_conn_init(&conn, &o)) return cli_usage("health", "%s", ss_errmsg());
    if (cli_http_json(&conn, "GET", "/healthz", NULL, &reply, &raw)) {
        rc = cli_fail("health");
        goto out;
    }
    if (o.json) {
        cli_print_raw(raw);
    } else {
        const char *st = json_string_value(json_object_get(reply, "status"));
        printf("%s\n", st ? st : "ok");
    }
    rc = CLI_OK;
out:
    free(raw);
    json_decref(reply);
    cli_conn_free(&conn);
    return rc;
}
