/*
 * catalog.c - the state catalog commands: ls, show, rm, merge, save, verify (export and import
 * are in transfer.c).
 *
 * Through a daemon (--url) they are thin wrappers over the HTTP API. ls and show also work
 * offline with --data DIR: they open the LMDB store read-only, which LMDB allows beside the
 * running daemon, so an operator can inspect a live catalog without going through the request
 * path; verify checks every blob's checksum that way. --json prints the JSON exactly as the
 * server or the store produced it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ss_store.h"

ss_store *cli_open_store(const char *cmd, const char *dir)
{
    ss_store *s = NULL;
    ss_store_params p = ss_store_default_params();
    p.read_only = 1;
    ss_err e = ss_store_open(&s, dir, &p);
    if (e) {
        fprintf(stderr, "statesoup %s: cannot open the store at %s: %s\n", cmd, dir,
                e == SS_ERR_NOT_FOUND ? "there is no store there (is it statesoupd's --data?)"
                                      : ss_errmsg());
        return NULL;
    }
    return s;
}

json_t *cli_parse_text(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
    if (!j) ss_fail(SS_ERR_FORMAT, "the store returned invalid JSON: %s", je.text);
    return j;
}

int cli_check_source(const char *cmd, const cli_common *o)
{
    if (o->url && o->data) return cli_usage(cmd, "give --url or --data, not both");
    return CLI_OK;
}

/* ---- ls -------------------------------------------------------------------------------------- */

static const char ls_help[] =
    "usage: statesoup ls [--url URL | --data DIR] [--tag T] [--prefix P] [--limit N] [--all]\n"
    "\n"
    "List stored states, newest first: ID, NAME, TAGS, TOKENS, SIZE and CREATED (UTC); a TENANT\n"
    "column after NAME when a listed state belongs to a tenant other than the default one or is\n"
    "shared (docs/api.md, Tenants). Through the daemon the key's tenant sees its own states and\n"
    "shared ones; --data lists every tenant's.\n"
    "\n"
    "  --tag T              only states tagged T\n"
    "  --prefix P           only states whose name starts with P (unnamed states never match)\n"
    "  --limit N            states per page, 1..1000 (default 100)\n"
    "  --cursor C           start at this page (the next_cursor of a previous --json page)\n"
    "  --all                follow next_cursor until every matching state is listed\n"
    "  --data DIR           read the daemon's store directly, read-only (safe while it runs)\n"
    CLI_CONN_HELP
    "\n"
    "examples:\n"
    "  statesoup ls --tag dict --all\n"
    "  statesoup ls --data /var/lib/statesoup --json | jq -r '.data[].id'\n";

enum { OPT_TAG = CLI_OPT_FIRST_LOCAL, OPT_PREFIX, OPT_LIMIT, OPT_CURSOR, OPT_ALL, OPT_NAME,
       OPT_NORMALIZE, OPT_MODE, OPT_PROMPT, OPT_PROMPT_FILE, OPT_TOKENS, OPT_FROM, OPT_METADATA,
       OPT_CHECKPOINTS, OPT_CHECKPOINT_EVERY };

/* One page of a listing, from the store or the daemon; *raw is its text (free() it). */
static ss_err list_page(ss_store *st, const cli_conn *c, const char *tag, const char *prefix,
                        int limit, const char *cursor, json_t **page, char **raw)
{
    if (st) {
        ss_err e = ss_store_list(st, tag, prefix, limit, cursor, raw);
        if (e) return e;
        *page = cli_parse_text(*raw);
        if (*page) return SS_OK;
        free(*raw);
        *raw = NULL;
        return SS_ERR_FORMAT;
    }
    char path[2048];
    ss_err e = cli_list_path(path, sizeof path, tag, prefix, limit, cursor, 0);
    return e ? e : cli_http_json(c, "GET", path, NULL, page, raw);
}

int cmd_ls(int argc, char **argv)
{
    static const struct option opts[] = {
        {"tag", required_argument, NULL, OPT_TAG},
        {"prefix", required_argument, NULL, OPT_PREFIX},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"cursor", required_argument, NULL, OPT_CURSOR},
        {"all", no_argument, NULL, OPT_ALL},
        {"data", required_argument, NULL, CLI_OPT_DATA},
        CLI_CONN_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_common o = {0};
    const char *tag = NULL, *prefix = NULL, *cursor0 = NULL;
    int limit = 100, all = 0, c, rc = CLI_FAIL;
    double v;
    ss_store *st = NULL;
    cli_conn conn = {0};
    json_t *page = NULL, *acc = NULL;
    char *cursor = NULL, *raw = NULL;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        switch (c) {
        case OPT_TAG: tag = optarg; break;
        case OPT_PREFIX: prefix = optarg; break;
        case OPT_LIMIT:
            if (cli_parse_num("ls", "limit", optarg, 1, 1000, &v)) return CLI_USAGE;
            limit = (int)v;
            break;
        case OPT_CURSOR: cursor0 = optarg; break;
        case OPT_ALL: all = 1; break;
        case 'h': fputs(ls_help, stdout); return CLI_OK;
        default: return cli_bad_option("ls");
        }
    }
    if (optind < argc) return cli_usage("ls", "unexpected argument '%s'", argv[optind]);
    if (cli_check_source("ls", &o)) return CLI_USAGE;
    if (o.data) {
        if (!(st = cli_open_store("ls", o.data))) goto out;
    } else if (cli_conn_init(&conn, &o)) {
        rc = cli_usage("ls", "%s", ss_errmsg());
        goto out;
    }
    acc = json_array();
    if (!acc || (cursor0 && !(cursor = strdup(cursor0)))) {
        rc = cli_fail("ls");
        goto out;
    }
    const char *next = NULL;
    long long skipped = 0; /* unreadable states the listing left out */
    for (;;) {
        json_decref(page);
        page = NULL;
        free(raw);
        raw = NULL;
        if (list_page(st, &conn, tag, prefix, limit, cursor, &page, &raw)) {
            rc = cli_fail("ls");
            goto out;
        }
        json_t *data = json_object_get(page, "data");
        if (!json_is_array(data)) {
            ss_fail(SS_ERR_FORMAT, "the listing has no \"data\" array");
            rc = cli_fail("ls");
            goto out;
        }
        json_array_extend(acc, data);
        skipped += json_integer_value(json_object_get(page, "skipped"));
        next = json_string_value(json_object_get(page, "next_cursor"));
        if (!all || !next) break;
        free(cursor);
        if (!(cursor = strdup(next))) {
            rc = cli_fail("ls");
            goto out;
        }
    }
    if (o.json && !all) {
        cli_print_raw(raw); /* the one page, as served */
    } else if (o.json) {
        json_t *outj = json_pack("{s:O,s:I,s:n}", "data", acc, "skipped", (json_int_t)skipped,
                                 "next_cursor");
        cli_print_json(outj);
        json_decref(outj);
    } else {
        cli_print_state_table(acc);
        if (next && !all) {
            fprintf(stderr, "(more states: add --all, or --cursor %s for the next page)\n", next);
        }
    }
    if (skipped) {
        fprintf(stderr,
                "statesoup ls: %lld state(s) could not be read and were left out; run statesoup "
                "verify --data DIR\n",
                skipped);
    }
    rc = CLI_OK;
out:
    free(raw);
    free(cursor);
    json_decref(page);
    json_decref(acc);
    cli_conn_free(&conn);
    ss_store_close(st);
    return rc;
}

/* ---- show ------------------------------------------------------------------------------------ */

static const char show_help[] =
    "usage: statesoup show [--url URL | --data DIR] [--json] STATE...\n"
    "\n"
    "Print the record of each STATE (a name or an id): tags, model fingerprint, token count,\n"
    "size, dtype, creation time, checksum, parents (for merges) with their weights, and\n"
    "metadata.\n"
    "\n"
    "  --data DIR           read the daemon's store directly, read-only (safe while it runs)\n"
    CLI_CONN_HELP
    "\n"
    "example:\n"
    "  statesoup show intro\n";

int cmd_show(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", required_argument, NULL, CLI_OPT_DATA},
        CLI_CONN_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_common o = {0};
    int c, rc = CLI_FAIL;
    ss_store *st = NULL;
    cli_conn conn = {0};

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        if (c == 'h') {
            fputs(show_help, stdout);
            return CLI_OK;
        }
        return cli_bad_option("show");
    }
    if (optind >= argc) return cli_usage("show", "name the state to show");
    if (cli_check_source("show", &o)) return CLI_USAGE;
    if (o.data) {
        if (!(st = cli_open_store("show", o.data))) goto out;
    } else if (cli_conn_init(&conn, &o)) {
        rc = cli_usage("show", "%s", ss_errmsg());
        goto out;
    }
    rc = CLI_OK;
    for (int i = optind; i < argc; i++) {
        json_t *rec = NULL;
        char *text = NULL;
        ss_err e;
        if (st) {
            e = ss_store_get_record(st, argv[i], &text);
            if (!e && !(rec = cli_parse_text(text))) e = SS_ERR_FORMAT;
        } else {
            char path[1024];
            e = cli_state_path(argv[i], path, sizeof path);
            if (!e) e = cli_http_json(&conn, "GET", path, NULL, &rec, &text);
        }
        if (e) {
            rc = cli_fail("show");
        } else if (o.json) {
            cli_print_raw(text);
        } else {
            if (i > optind) putchar('\n');
            cli_print_record(rec);
        }
        free(text);
        json_decref(rec);
    }
out:
    cli_conn_free(&conn);
    ss_store_close(st);
    return rc;
}

/* ---- share ----------------------------------------------------------------------------------- */

static const char share_help[] =
    "usage: statesoup share [--url URL] [--off] STATE...\n"
    "\n"
    "Share states (names or ids) with every tenant of the daemon, or stop sharing them (--off).\n"
    "A shared state can be read, exported, searched and merged or resumed from by every tenant;\n"
    "only its owner or an admin may delete it. Needs an admin key (docs/api.md, Tenants); names\n"
    "are the admin key's tenant's, other tenants' states are named by id.\n"
    "\n"
    "  --off                unshare\n"
    "\n" CLI_CONN_HELP
    "\n"
    "example:\n"
    "  statesoup share --api-key $ADMIN_KEY st_0123456789abcdef0123456789abcdef\n";

/* ---- rm -------------------------------------------------------------------------------------- */

static const char rm_help[] =
    "usage: statesoup rm [--url URL] STATE...\n"
    "\n"
    "Delete states (names or ids) from the daemon's catalog. Every STATE is tried; the exit code\n"
    "is 1 if any could not be deleted. States merged from a deleted one keep their own copy.\n"
    "\n" CLI_CONN_HELP
    "\n"
    "example:\n"
    "  statesoup rm draft-1 st_0123456789abcdef0123456789abcdef\n";

/*
 * rm and share: one request per STATE named on the command line; share 0 deletes the state,
 * 1 shares it (POST .../share), -1 (share --off) stops sharing it (DELETE .../share).
 */
static int per_state(int argc, char **argv, const char *cmd, const char *help, int share)
{
    enum { OPT_OFF = CLI_OPT_FIRST_LOCAL };
    static const struct option rm_opts[] = {CLI_CONN_OPTIONS, {NULL, 0, NULL, 0}};
    static const struct option share_opts[] = {
        {"off", no_argument, NULL, OPT_OFF}, CLI_CONN_OPTIONS, {NULL, 0, NULL, 0}};
    cli_common o = {0};
    int c, rc = CLI_FAIL;
    cli_conn conn = {0};
    json_t *done = NULL;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", share ? share_opts : rm_opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        if (c == OPT_OFF) {
            share = -1;
            continue;
        }
        if (c == 'h') {
            fputs(help, stdout);
            return CLI_OK;
        }
        return cli_bad_option(cmd);
    }
    if (optind >= argc) return cli_usage(cmd, "name the states to %s", share ? "share" : "delete");
    if (cli_conn_init(&conn, &o)) {
        rc = cli_usage(cmd, "%s", ss_errmsg());
        goto out;
    }
    if (!(done = json_array())) goto out;
    rc = CLI_OK;
    for (int i = optind; i < argc; i++) {
        char path[1024];
        json_t *rec = NULL;
        ss_err e = cli_state_path(argv[i], path, sizeof path);
        if (!e && share && strlen(path) + 7 >= sizeof path)
            e = ss_fail(SS_ERR_INVALID, "name too long");
        if (!e && share) strcat(path, "/share");
        if (!e)
            e = cli_http_json(&conn, share > 0 ? "POST" : "DELETE", path, NULL, share ? &rec : NULL,
                              NULL);
        if (e) {
            fprintf(stderr, "statesoup: %s: %s: %s\n", cmd, argv[i], ss_errmsg());
            rc = CLI_FAIL;
            continue;
        }
        const char *id = json_string_value(json_object_get(rec, "id"));
        json_array_append_new(done, share ? json_incref(rec) : json_string(argv[i]));
        if (!o.json)
            printf("%s %s\n",
                   share > 0 ? "shared"
                   : share   ? "unshared"
                             : "deleted",
                   share ? id : argv[i]);
        json_decref(rec);
    }
    if (o.json) {
        json_t *j = json_pack("{s:O}", share ? "data" : "deleted", done);
        cli_print_json(j);
        json_decref(j);
    }
out:
    json_decref(done);
    cli_conn_free(&conn);
    return rc;
}

int cmd_share(int argc, char **argv)
{
    return per_state(argc, argv, "share", share_help, 1);
}

int cmd_rm(int argc, char **argv)
{
    return per_state(argc, argv, "rm", rm_help, 0);
}

/* ---- merge and save: POST a JSON body, print the new record --------------------------------- */

/* POST body to path and print the record that comes back (or its JSON). */
static int post_record(const char *cmd, const cli_common *o, const char *path, json_t *body)
{
    cli_conn conn = {0};
    json_t *rec = NULL;
    char *raw = NULL;
    int rc = CLI_FAIL;
    if (cli_conn_init(&conn, o)) return cli_usage(cmd, "%s", ss_errmsg());
    if (cli_http_json(&conn, "POST", path, body, &rec, &raw)) {
        rc = cli_fail(cmd);
        goto out;
    }
    if (o->json) {
        cli_print_raw(raw);
    } else {
        cli_print_record(rec);
        size_t i;
        json_t *cp;
        json_array_foreach (json_object_get(rec, "checkpoints"), i, cp) {
            const char *cn = json_string_value(json_object_get(cp, "name"));
            printf("checkpoint  %s  %s  %" JSON_INTEGER_FORMAT " tokens\n",
                   json_string_value(json_object_get(cp, "id")), cn ? cn : "-",
                   json_integer_value(json_object_get(cp, "n_tokens")));
        }
    }
    rc = CLI_OK;
out:
    free(raw);
    json_decref(rec);
    cli_conn_free(&conn);
    return rc;
}

/* Add "tags" (when any) and "metadata" (when given) to a request body. */
static int add_tags_meta(const char *cmd, json_t *body, json_t *tags, const char *metadata)
{
    if (json_array_size(tags)) json_object_set(body, "tags", tags);
    if (metadata) {
        json_error_t je;
        json_t *m = json_loads(metadata, 0, &je);
        if (!json_is_object(m)) {
            json_decref(m);
            return cli_usage(cmd, "--metadata: expected a JSON object, e.g. '{\"src\": \"x\"}'");
        }
        json_object_set_new(body, "metadata", m);
    }
    return CLI_OK;
}

static const char merge_help[] =
    "usage: statesoup merge [--name N] [--tag T]... [--normalize] STATE=WEIGHT... [--url URL]\n"
    "       statesoup merge --mode sequential|symmetric [--name N] STATE... [--url URL]\n"
    "\n"
    "Store the weighted sum of states, sum_i WEIGHT_i * STATE_i over every tensor (conv, ssm and\n"
    "final_hidden), as a new state whose parents are recorded. Weights may be negative (task\n"
    "arithmetic). A STATE is a name or an id.\n"
    "With --mode sequential the states are composed with the model's own decay, as if their\n"
    "contexts had been read one after another in the order given; symmetric averages that over\n"
    "every order (docs/api.md, merge modes). These take no weights (STATE or STATE=1).\n"
    "\n"
    "  --mode M             linear (default), sequential or symmetric\n"
    "  --name N             name the new state (default: unnamed, addressed by its id)\n"
    "  --tag T              tag it (repeatable, or T1,T2)\n"
    "  --normalize          divide the weights by their sum first\n"
    "  --metadata JSON      a JSON object stored with the record\n" CLI_CONN_HELP
    "\n"
    "example:\n"
    "  statesoup merge --name soup --normalize dict-a=1 dict-b=1\n";

int cmd_merge(int argc, char **argv)
{
    static const struct option opts[] = {
        {"name", required_argument, NULL, OPT_NAME},
        {"tag", required_argument, NULL, OPT_TAG},
        {"normalize", no_argument, NULL, OPT_NORMALIZE},
        {"metadata", required_argument, NULL, OPT_METADATA},
        {"mode", required_argument, NULL, OPT_MODE},
        CLI_CONN_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_common o = {0};
    const char *name = NULL, *metadata = NULL, *mode = NULL;
    int normalize = 0, c, rc = CLI_FAIL;
    json_t *tags = json_array(), *sources = json_array(), *body = NULL;

    if (!tags || !sources) goto out;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        switch (c) {
        case OPT_NAME: name = optarg; break;
        case OPT_TAG:
            if (cli_add_tags(tags, optarg)) {
                rc = cli_usage("merge", "--tag: %s", ss_errmsg());
                goto out;
            }
            break;
        case OPT_NORMALIZE: normalize = 1; break;
        case OPT_METADATA: metadata = optarg; break;
        case OPT_MODE: mode = optarg; break;
        case 'h':
            fputs(merge_help, stdout);
            rc = CLI_OK;
            goto out;
        default: rc = cli_bad_option("merge"); goto out;
        }
    }
    if (optind >= argc) {
        rc = cli_usage("merge", "give the sources as STATE=WEIGHT (e.g. a=0.5 b=0.5)");
        goto out;
    }
    int decay_mode = mode && strcmp(mode, "linear") != 0;
    for (int i = optind; i < argc; i++) {
        if (decay_mode && !strchr(argv[i], '=')) { /* composition: no weight */
            json_array_append_new(sources, json_pack("{s:s}", "state", argv[i]));
            continue;
        }
        if (cli_parse_source(argv[i], sources)) {
            rc = cli_usage("merge", "%s", ss_errmsg());
            goto out;
        }
    }
    body = json_pack("{s:O,s:b}", "sources", sources, "normalize", normalize);
    if (!body) goto out;
    if (name) json_object_set_new(body, "name", json_string(name));
    if (mode) json_object_set_new(body, "mode", json_string(mode));
    if ((rc = add_tags_meta("merge", body, tags, metadata))) goto out;
    rc = post_record("merge", &o, "/v1/states/merge", body);
out:
    json_decref(body);
    json_decref(sources);
    json_decref(tags);
    return rc;
}

static const char save_help[] =
    "usage: statesoup save [--name N] (--prompt TEXT | --prompt-file FILE | --tokens IDS)\n"
    "                      [--from STATE] [--tag T]... [--url URL]\n"
    "\n"
    "Run the daemon's model over a prompt and store the resulting recurrent state: from the zero\n"
    "state, or continuing from a stored one (--from). Prints the new record.\n"
    "\n"
    "  --name N             name the new state (default: unnamed, addressed by its id)\n"
    "  --prompt TEXT        the prompt (the daemon tokenizes it)\n"
    "  --prompt-file FILE   read the prompt from FILE ('-' for stdin)\n"
    "  --tokens IDS         the prompt as token ids, e.g. 1,2,3 (no tokenizer needed)\n"
    "  --from STATE         start from this stored state instead of the zero state\n"
    "  --tag T              tag it (repeatable, or T1,T2)\n"
    "  --metadata JSON      a JSON object stored with the record\n"
    "  --checkpoints P1,P2  also store the state after each of these prompt token positions\n"
    "                       (increasing, below the prompt's length, at most 64), as NAME:P,\n"
    "                       each the parent of the next: one prefill (prompt caching)\n"
    "  --checkpoint-every N the same every N tokens\n" CLI_CONN_HELP
    "\n"
    "examples:\n"
    "  statesoup save --name intro --tag demo --prompt $'Dictionary:\\napple = red\\n'\n"
    "  statesoup save --name sys --prompt-file system.txt --checkpoint-every 256\n";

int cmd_save(int argc, char **argv)
{
    static const struct option opts[] = {
        {"name", required_argument, NULL, OPT_NAME},
        {"prompt", required_argument, NULL, OPT_PROMPT},
        {"prompt-file", required_argument, NULL, OPT_PROMPT_FILE},
        {"tokens", required_argument, NULL, OPT_TOKENS},
        {"from", required_argument, NULL, OPT_FROM},
        {"tag", required_argument, NULL, OPT_TAG},
        {"metadata", required_argument, NULL, OPT_METADATA},
        {"checkpoints", required_argument, NULL, OPT_CHECKPOINTS},
        {"checkpoint-every", required_argument, NULL, OPT_CHECKPOINT_EVERY},
        CLI_CONN_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_common o = {0};
    const char *name = NULL, *prompt = NULL, *prompt_file = NULL, *tokens = NULL, *from = NULL;
    const char *metadata = NULL, *checkpoints = NULL, *every = NULL;
    json_t *cps = NULL;
    int c, rc = CLI_FAIL;
    json_t *tags = json_array(), *body = NULL, *ids = NULL;
    char *text = NULL;
    size_t len = 0;

    if (!tags) goto out;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        switch (c) {
        case OPT_NAME: name = optarg; break;
        case OPT_PROMPT: prompt = optarg; break;
        case OPT_PROMPT_FILE: prompt_file = optarg; break;
        case OPT_TOKENS: tokens = optarg; break;
        case OPT_FROM: from = optarg; break;
        case OPT_TAG:
            if (cli_add_tags(tags, optarg)) {
                rc = cli_usage("save", "--tag: %s", ss_errmsg());
                goto out;
            }
            break;
        case OPT_METADATA: metadata = optarg; break;
        case OPT_CHECKPOINTS: checkpoints = optarg; break;
        case OPT_CHECKPOINT_EVERY: every = optarg; break;
        case 'h':
            fputs(save_help, stdout);
            rc = CLI_OK;
            goto out;
        default: rc = cli_bad_option("save"); goto out;
        }
    }
    if (optind < argc) {
        rc = cli_usage("save", "unexpected argument '%s'", argv[optind]);
        goto out;
    }
    if (!!prompt + !!prompt_file + !!tokens != 1) {
        rc = cli_usage("save", "give exactly one of --prompt, --prompt-file, --tokens");
        goto out;
    }
    if (tokens && cli_parse_ids_json(tokens, &ids)) {
        rc = cli_usage("save", "--tokens: %s", ss_errmsg());
        goto out;
    }
    if (prompt_file && cli_read_input(prompt_file, MAX_PROMPT_BYTES, &text, &len)) {
        rc = cli_fail("save");
        goto out;
    }
    if (!(body = json_object())) goto out;
    if (ids) {
        json_object_set(body, "tokens", ids);
    } else {
        json_object_set_new(body, "prompt",
                            text ? json_stringn(text, len) : json_string(prompt));
        if (!json_object_get(body, "prompt")) {
            rc = cli_usage("save", "the prompt is not valid UTF-8");
            goto out;
        }
    }
    if (name) json_object_set_new(body, "name", json_string(name));
    if (from) json_object_set_new(body, "from", json_string(from));
    if (checkpoints && every) {
        rc = cli_usage("save", "give --checkpoints or --checkpoint-every, not both");
        goto out;
    }
    if (checkpoints) {
        if (cli_parse_ids_json(checkpoints, &cps)) {
            rc = cli_usage("save", "--checkpoints: %s", ss_errmsg());
            goto out;
        }
        json_object_set(body, "checkpoints", cps);
    }
    if (every) {
        double v;
        if (cli_parse_num("save", "checkpoint-every", every, 1, 1 << 30, &v)) {
            rc = CLI_USAGE;
            goto out;
        }
        json_object_set_new(body, "checkpoint_every", json_integer((json_int_t)v));
    }
    if ((rc = add_tags_meta("save", body, tags, metadata))) goto out;
    rc = post_record("save", &o, "/v1/states", body);
out:
    json_decref(cps);
    free(text);
    json_decref(ids);
    json_decref(body);
    json_decref(tags);
    return rc;
}

/* ---- verify ---------------------------------------------------------------------------------- */

static const char verify_help[] =
    "usage: statesoup verify --data DIR [--json]\n"
    "\n"
    "Check every stored state's checksum (fsck for the catalog), reading the store read-only;\n"
    "safe while the daemon runs (it never holds off its writes). Prints the counts and the\n"
    "store's size; exits 1 when a state fails its checksum, naming the last one.\n"
    "\n"
    "  --data DIR           the daemon's store directory (its --data)\n"
    "  --json               print the counts as JSON\n"
    "  -h, --help           this text\n"
    "\n"
    "example:\n"
    "  statesoup verify --data /var/lib/statesoup\n";

int cmd_verify(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", required_argument, NULL, CLI_OPT_DATA},
        {"json", no_argument, NULL, CLI_OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cli_common o = {0};
    int c, rc = CLI_FAIL;
    ss_store *st = NULL;
    uint64_t checked = 0, bad = 0;
    ss_store_stats stats;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        if (c == 'h') {
            fputs(verify_help, stdout);
            return CLI_OK;
        }
        return cli_bad_option("verify");
    }
    if (optind < argc) return cli_usage("verify", "unexpected argument '%s'", argv[optind]);
    if (!o.data) return cli_usage("verify", "--data DIR is required (the daemon's store)");
    if (!(st = cli_open_store("verify", o.data))) goto out;
    if (ss_store_verify(st, &checked, &bad)) {
        rc = cli_fail("verify");
        goto out;
    }
    const char *why = bad ? ss_errmsg() : NULL;
    char *why_copy = why ? strdup(why) : NULL;
    if (ss_store_get_stats(st, &stats)) {
        free(why_copy);
        rc = cli_fail("verify");
        goto out;
    }
    if (o.json) {
        json_t *j = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "checked", (json_int_t)checked, "bad",
                              (json_int_t)bad, "states", (json_int_t)stats.n_states, "blob_bytes",
                              (json_int_t)stats.blob_bytes, "map_size", (json_int_t)stats.map_size,
                              "file_bytes", (json_int_t)stats.file_bytes);
        cli_print_json(j);
        json_decref(j);
    } else {
        char b1[32], b2[32], b3[32];
        printf("states      %llu\n"
               "checked     %llu\n"
               "bad         %llu\n"
               "blob bytes  %s\n"
               "file bytes  %s\n"
               "map size    %s\n",
               (unsigned long long)stats.n_states, (unsigned long long)checked,
               (unsigned long long)bad, cli_human_bytes(stats.blob_bytes, b1, sizeof b1),
               cli_human_bytes(stats.file_bytes, b2, sizeof b2),
               cli_human_bytes(stats.map_size, b3, sizeof b3));
    }
    if (bad) {
        fprintf(stderr,
                "statesoup verify: %llu item(s) unreadable or failing a checksum; last: %s\n",
                (unsigned long long)bad, why_copy ? why_copy : "?");
    }
    free(why_copy);
    rc = bad ? CLI_FAIL : CLI_OK;
out:
    ss_store_close(st);
    return rc;
}
