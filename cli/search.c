/*
 * search.c - `statesoup search`: the stored states most similar to a query (POST
 * /v1/states/search), best first, with their cosine similarity. The query is a text (run from the
 * zero state by the daemon), token ids, or a stored state.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char search_help[] =
    "usage: statesoup search [--url URL] [-k N] [--tag T] [--prefix P] QUERY\n"
    "       statesoup search [--url URL] [-k N] [--tag T] [--prefix P] --state STATE\n"
    "       statesoup search [--url URL] [-k N] [--tag T] [--prefix P] --tokens IDS\n"
    "\n"
    "The stored states most similar to a query, best first: RANK, SCORE (cosine similarity\n"
    "of the states' retrieval keys, 1 = same direction), ID, NAME, TAGS, TOKENS. The query\n"
    "is a text (the daemon runs it from the zero state and compares the state it ends in),\n"
    "token ids, or a stored state. The daemon's --retrieval-key says which key compares\n"
    "them (docs/retrieval.md). Prompt-cache entries are never results unless --tag names\n"
    "their tag (statesoup:cache).\n"
    "\n"
    "  -k, --k N            how many states, 1..100 (default 5)\n"
    "  --tag T              only states tagged T\n"
    "  --prefix P           only states whose name starts with P\n"
    "  --state STATE        the query is this stored state (name or id)\n"
    "  --tokens IDS         the query is these token ids (comma-separated)\n"
    CLI_CONN_HELP
    "\n"
    "examples:\n"
    "  statesoup search \"$(printf 'Dictionary:\\ncase = word\\n')\" -k 3\n"
    "  statesoup search --state dict-a --tag dict --json | jq -r '.data[].state.name'\n";

enum { OPT_K = CLI_OPT_FIRST_LOCAL, OPT_TAG, OPT_PREFIX, OPT_STATE, OPT_TOKENS };

/* "1,2,3" as a JSON array of integers; NULL (after printing why) when malformed. */
static json_t *token_list(const char *s)
{
    json_t *a = json_array();
    const char *p = s;
    while (a && *p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || (*end && *end != ',')) {
            fprintf(stderr, "statesoup search: --tokens takes ids separated by commas\n");
            json_decref(a);
            return NULL;
        }
        json_array_append_new(a, json_integer(v));
        p = *end ? end + 1 : end;
    }
    return a;
}

static void print_hits(const json_t *data)
{
    static const char *const head[] = {"RANK", "SCORE", "ID", "NAME", "TAGS", "TOKENS"};
    static const int right[] = {1, 1, 0, 0, 0, 1};
    cli_table *t = cli_table_new(6, head, right);
    if (!t) return;
    size_t i;
    json_t *h;
    json_array_foreach (data, i, h) {
        const json_t *rec = json_object_get(h, "state");
        char rank[32], score[32], tags[1024], tokens[32];
        snprintf(rank, sizeof rank, "%zu", i + 1);
        snprintf(score, sizeof score, "%.4f", json_number_value(json_object_get(h, "score")));
        cli_join_tags(json_object_get(rec, "tags"), ",", tags, sizeof tags);
        snprintf(tokens, sizeof tokens, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(rec, "n_tokens")));
        const char *name = json_string_value(json_object_get(rec, "name"));
        const char *row[] = {rank, score, json_string_value(json_object_get(rec, "id")),
                             name ? name : "-", tags, tokens};
        if (cli_table_add(t, row)) break;
    }
    cli_table_print(t);
    cli_table_free(t);
}

int cmd_search(int argc, char **argv)
{
    static const struct option opts[] = {
        {"k", required_argument, NULL, OPT_K},
        {"tag", required_argument, NULL, OPT_TAG},
        {"prefix", required_argument, NULL, OPT_PREFIX},
        {"state", required_argument, NULL, OPT_STATE},
        {"tokens", required_argument, NULL, OPT_TOKENS},
        CLI_CONN_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_common o = {0};
    const char *tag = NULL, *prefix = NULL, *state = NULL, *tokens = NULL;
    int k = 5, c, rc = CLI_FAIL;
    double v;
    cli_conn conn = {0};
    json_t *body = NULL, *ans = NULL, *query = NULL;
    char *raw = NULL;

    optind = 1;
    while ((c = getopt_long(argc, argv, "hk:", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        switch (c) {
        case 'k':
        case OPT_K:
            if (cli_parse_num("search", "k", optarg, 1, 100, &v)) return CLI_USAGE;
            k = (int)v;
            break;
        case OPT_TAG: tag = optarg; break;
        case OPT_PREFIX: prefix = optarg; break;
        case OPT_STATE: state = optarg; break;
        case OPT_TOKENS: tokens = optarg; break;
        case 'h': fputs(search_help, stdout); return CLI_OK;
        default: return cli_bad_option("search");
        }
    }
    int n_queries = (optind < argc) + (state != NULL) + (tokens != NULL);
    if (n_queries != 1 || argc - optind > 1)
        return cli_usage("search", "give one query: a text, --state STATE or --tokens IDS");
    if (state)
        query = json_pack("{s:s}", "state", state);
    else if (tokens && !(query = token_list(tokens)))
        return CLI_USAGE;
    else if (!tokens)
        query = json_string(argv[optind]);
    body = query ? json_pack("{s:o,s:i}", "query", query, "k", k) : NULL;
    if (!body || (tag && json_object_set_new(body, "tag", json_string(tag))) ||
        (prefix && json_object_set_new(body, "prefix", json_string(prefix)))) {
        ss_fail(SS_ERR_NOMEM, "out of memory");
        rc = cli_fail("search");
        goto out;
    }
    if (cli_conn_init(&conn, &o)) {
        rc = cli_usage("search", "%s", ss_errmsg());
        goto out;
    }
    if (cli_http_json(&conn, "POST", "/v1/states/search", body, &ans, &raw)) {
        rc = cli_fail("search");
        goto out;
    }
    if (o.json)
        cli_print_raw(raw);
    else
        print_hits(json_object_get(ans, "data"));
    rc = CLI_OK;
out:
    free(raw);
    json_decref(ans);
    json_decref(body);
    cli_conn_free(&conn);
    return rc;
}
