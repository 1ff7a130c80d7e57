/*
 * inspect.c - looking into the catalog through the daemon without running the model (docs/api.md,
 * "Inspecting states"), what the console's lineage graph, heatmap and norm chart show, for a
 * terminal or a script:
 *   statesoup children STATE     GET /v1/states/{state}/children: the states made from it
 *   statesoup stats STATE        GET /v1/states/{state}/stats: L2 norms per state layer
 *   statesoup similarity S1 S2   POST /v1/states/similarity: pairwise cosine similarity
 *   statesoup whoami             GET /v1/whoami: what the key may do, and whose states it sees
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* GET or POST `path` and print the answer: the server's JSON with --json, else print(ans). */
static int inspect_call(const char *cmd, const cli_common *o, const char *method, const char *path,
                        json_t *body, void (*print)(const json_t *ans))
{
    cli_conn conn = {0};
    json_t *ans = NULL;
    char *raw = NULL;
    int rc;
    if (cli_conn_init(&conn, o)) {
        rc = cli_usage(cmd, "%s", ss_errmsg());
    } else if (cli_http_json(&conn, method, path, body, &ans, &raw)) {
        rc = cli_fail(cmd);
    } else {
        if (o->json)
            cli_print_raw(raw);
        else
            print(ans);
        rc = CLI_OK;
    }
    free(raw);
    json_decref(ans);
    cli_conn_free(&conn);
    return rc;
}

/* Options common to all four: --url, --api-key, --json, -h. CLI_OK after --help, CLI_USAGE on a
 * bad option, else -1 (go on; *local holds the command's own option, 0 when none was given). */
static int inspect_opts(const char *cmd, const char *help, int argc, char **argv,
                        const struct option *opts, cli_common *o,
                        int (*local)(void *user, int c, const char *arg), void *user)
{
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_common_opt(o, c, optarg)) continue;
        if (c == 'h') {
            fputs(help, stdout);
            return CLI_OK;
        }
        if (!local || c < CLI_OPT_FIRST_LOCAL) return cli_bad_option(cmd);
        int rc = local(user, c, optarg);
        if (rc >= 0) return rc;
    }
    return -1;
}

/* A record's name, else "-". */
static const char *rec_name(const json_t *rec)
{
    const char *n = json_string_value(json_object_get(rec, "name"));
    return n && *n ? n : "-";
}

/* ---- children -------------------------------------------------------------------------------- */

static const char children_help[] =
    "usage: statesoup children [--url URL] [--depth N] [--limit N] STATE\n"
    "\n"
    "The states made from STATE (name or id): merges that used it as a source, states saved\n"
    "from it, generations saved from it; with --depth N also their children in turn, breadth\n"
    "first. One line each: DEPTH, WEIGHT (the weight the child's record gives the state it was\n"
    "reached from), ID, NAME (indented by depth), PARENT (the state it was reached from),\n"
    "TAGS. A state is listed once, at the depth where it is first met. Not available with\n"
    "the daemon's --remote.\n"
    "\n"
    "  --depth N            how many generations, 1..64 (default 1)\n"
    "  --limit N            at most N states, 1..10000 (default 1000)\n" CLI_CONN_HELP
    "\n"
    "examples:\n"
    "  statesoup children dict-a --depth 3\n"
    "  statesoup children dict-a --json | jq -r '.data[].state.name'\n";

enum { OPT_DEPTH = CLI_OPT_FIRST_LOCAL, OPT_LIMIT, OPT_PER_LAYER };

typedef struct children_opts {
    int depth, limit;
} children_opts;

static int children_opt(void *user, int c, const char *arg)
{
    children_opts *co = user;
    double v;
    if (c == OPT_DEPTH) {
        if (cli_parse_num("children", "depth", arg, 1, 64, &v)) return CLI_USAGE;
        co->depth = (int)v;
        return -1;
    }
    if (c == OPT_LIMIT) {
        if (cli_parse_num("children", "limit", arg, 1, 10000, &v)) return CLI_USAGE;
        co->limit = (int)v;
        return -1;
    }
    return cli_bad_option("children");
}

static void print_children(const json_t *ans)
{
    const json_t *data = json_object_get(ans, "data");
    const json_t *root = json_object_get(ans, "state");
    /* names by id, for the PARENT column: the root's and each listed state's */
    json_t *names = json_object();
    json_object_set_new(names, json_string_value(json_object_get(root, "id")) ?: "",
                        json_string(rec_name(root)));
    size_t i;
    json_t *e;
    json_array_foreach (data, i, e) {
        const json_t *rec = json_object_get(e, "state");
        json_object_set_new(names, json_string_value(json_object_get(rec, "id")) ?: "",
                            json_string(rec_name(rec)));
    }
    printf("%s (%s): %zu state%s made from it%s\n", rec_name(root),
           json_string_value(json_object_get(root, "id")) ?: "?", json_array_size(data),
           json_array_size(data) == 1 ? "" : "s",
           json_is_true(json_object_get(ans, "truncated")) ? " (more left out: --limit)" : "");
    if (!json_array_size(data)) {
        json_decref(names);
        return;
    }
    static const char *const head[] = {"DEPTH", "WEIGHT", "ID", "NAME", "PARENT", "TAGS"};
    static const int right[] = {1, 1, 0, 0, 0, 0};
    cli_table *t = cli_table_new(6, head, right);
    json_array_foreach (data, i, e) {
        if (!t) break;
        const json_t *rec = json_object_get(e, "state");
        const int depth = (int)json_integer_value(json_object_get(e, "depth"));
        const char *parent = json_string_value(json_object_get(e, "parent")) ?: "";
        const char *pname = json_string_value(json_object_get(names, parent));
        char d[16], w[32], name[600], tags[1024];
        snprintf(d, sizeof d, "%d", depth);
        const json_t *wv = json_object_get(e, "weight");
        if (json_is_number(wv))
            snprintf(w, sizeof w, "%.4g", json_number_value(wv));
        else
            snprintf(w, sizeof w, "-");
        snprintf(name, sizeof name, "%*s%s", 2 * (depth > 1 ? depth - 1 : 0), "", rec_name(rec));
        cli_join_tags(json_object_get(rec, "tags"), ",", tags, sizeof tags);
        const char *row[] = {d, w, json_string_value(json_object_get(rec, "id")) ?: "?", name,
                             pname && strcmp(pname, "-") ? pname : parent, tags};
        if (cli_table_add(t, row)) break;
    }
    cli_table_print(t);
    cli_table_free(t);
    json_decref(names);
}

int cmd_children(int argc, char **argv)
{
    static const struct option opts[] = {
        {"depth", required_argument, NULL, OPT_DEPTH},
        {"limit", required_argument, NULL, OPT_LIMIT},
        CLI_CONN_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_common o = {0};
    children_opts co = {.depth = 1, .limit = 1000};
    int rc = inspect_opts("children", children_help, argc, argv, opts, &o, children_opt, &co);
    if (rc >= 0) return rc;
    if (argc - optind != 1) return cli_usage("children", "name one state");
    char path[1200];
    if (cli_state_path(argv[optind], path, 1000)) return cli_usage("children", "%s", ss_errmsg());
    snprintf(path + strlen(path), sizeof path - strlen(path), "/children?depth=%d&limit=%d",
             co.depth, co.limit);
    return inspect_call("children", &o, "GET", path, NULL, print_children);
}

/* ---- stats ----------------------------------------------------------------------------------- */

static const char stats_help[] =
    "usage: statesoup stats [--url URL] STATE...\n"
    "\n"
    "The L2 norms of a stored state (name or id), per layer that carries state: LAYER,\n"
    "CONV (the conv window), SSM (the SSM state), NORM (both together); then the whole\n"
    "state's and the final hidden vector's. Computed by the daemon from the stored blob,\n"
    "without running the model: a quick look at a merge's scale (a soup of unnormalised\n"
    "weights shows here first).\n" CLI_CONN_HELP
    "\n"
    "example:\n"
    "  statesoup stats dict-soup\n";

static void print_stats(const json_t *ans)
{
    printf("%s (%s): %" JSON_INTEGER_FORMAT " state layers%s\n", rec_name(ans),
           json_string_value(json_object_get(ans, "id")) ?: "?",
           json_integer_value(json_object_get(ans, "n_layers")),
           json_is_true(json_object_get(ans, "has_decay")) ? ", with decay sums" : "");
    static const char *const head[] = {"LAYER", "CONV", "SSM", "NORM"};
    static const int right[] = {1, 1, 1, 1};
    cli_table *t = cli_table_new(4, head, right);
    size_t i;
    json_t *l;
    json_array_foreach (json_object_get(ans, "layers"), i, l) {
        if (!t) break;
        char c0[32], c1[32], c2[32], c3[32];
        snprintf(c0, sizeof c0, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(l, "layer")));
        snprintf(c1, sizeof c1, "%.6g", json_number_value(json_object_get(l, "conv_norm")));
        snprintf(c2, sizeof c2, "%.6g", json_number_value(json_object_get(l, "ssm_norm")));
        snprintf(c3, sizeof c3, "%.6g", json_number_value(json_object_get(l, "norm")));
        const char *row[] = {c0, c1, c2, c3};
        if (cli_table_add(t, row)) break;
    }
    char c1[32], c2[32], c3[32];
    snprintf(c1, sizeof c1, "%.6g", json_number_value(json_object_get(ans, "conv_norm")));
    snprintf(c2, sizeof c2, "%.6g", json_number_value(json_object_get(ans, "ssm_norm")));
    snprintf(c3, sizeof c3, "%.6g", json_number_value(json_object_get(ans, "norm")));
    const char *row[] = {"all", c1, c2, c3};
    if (t && !cli_table_add(t, row)) cli_table_print(t);
    cli_table_free(t);
    printf("final hidden vector: %.6g\n",
           json_number_value(json_object_get(ans, "final_hidden_norm")));
}

int cmd_stats(int argc, char **argv)
{
    static const struct option opts[] = {CLI_CONN_OPTIONS, {NULL, 0, NULL, 0}};
    cli_common o = {0};
    int rc = inspect_opts("stats", stats_help, argc, argv, opts, &o, NULL, NULL);
    if (rc >= 0) return rc;
    if (optind >= argc) return cli_usage("stats", "name the state to look into");
    rc = CLI_OK;
    for (int i = optind; i < argc; i++) {
        char path[1200];
        if (cli_state_path(argv[i], path, 1000)) return cli_usage("stats", "%s", ss_errmsg());
        strcat(path, "/stats");
        if (i > optind && !o.json) putchar('\n');
        if (inspect_call("stats", &o, "GET", path, NULL, print_stats) != CLI_OK) rc = CLI_FAIL;
    }
    return rc;
}

/* ---- similarity ------------------------------------------------------------------------------ */

static const char similarity_help[] =
    "usage: statesoup similarity [--url URL] [--per-layer] STATE STATE...\n"
    "\n"
    "The pairwise cosine similarity of 1..64 stored states (names or ids) over their recurrent\n"
    "state (every layer's conv window and SSM state): a matrix, one row and column per state\n"
    "in the order given, 1 = same direction, '-' for a pair with a zero state. With\n"
    "--per-layer also one matrix per state layer (where task states part ways). Computed by\n"
    "the daemon from the stored blobs, without running the model.\n"
    "\n"
    "  --per-layer          also each state layer's matrix\n" CLI_CONN_HELP
    "\n"
    "example:\n"
    "  statesoup similarity dict-a dict-b cipher-a\n";

static int similarity_opt(void *user, int c, const char *arg)
{
    (void)arg;
    if (c != OPT_PER_LAYER) return cli_bad_option("similarity");
    *(int *)user = 1;
    return -1;
}

/* One matrix: a row per state, labelled with its name (else id), cells with 4 decimals. */
static void print_matrix(const json_t *states, const json_t *m)
{
    const size_t n = json_array_size(states);
    const char **head = calloc(n + 1, sizeof *head);
    int *right = calloc(n + 1, sizeof *right);
    char(*cells)[32] = calloc(n + 1, sizeof *cells);
    const char **row = calloc(n + 1, sizeof *row);
    cli_table *t = NULL;
    if (!head || !right || !cells || !row) goto out;
    head[0] = "";
    for (size_t j = 0; j < n; j++) {
        const json_t *s = json_array_get(states, j);
        head[j + 1] = strcmp(rec_name(s), "-") ? rec_name(s)
                                               : json_string_value(json_object_get(s, "id"));
        right[j + 1] = 1;
    }
    if (!(t = cli_table_new((int)n + 1, head, right))) goto out;
    for (size_t i = 0; i < n; i++) {
        const json_t *r = json_array_get(m, i);
        row[0] = head[i + 1];
        for (size_t j = 0; j < n; j++) {
            const json_t *v = json_array_get(r, j);
            if (json_is_number(v))
                snprintf(cells[j + 1], sizeof cells[j + 1], "%.4f", json_number_value(v));
            else
                snprintf(cells[j + 1], sizeof cells[j + 1], "-");
            row[j + 1] = cells[j + 1];
        }
        if (cli_table_add(t, row)) break;
    }
    cli_table_print(t);
out:
    cli_table_free(t);
    free(row);
    free(cells);
    free(right);
    free(head);
}

static void print_similarity(const json_t *ans)
{
    const json_t *states = json_object_get(ans, "states");
    print_matrix(states, json_object_get(ans, "similarity"));
    size_t l;
    json_t *m;
    json_array_foreach (json_object_get(ans, "layers"), l, m) {
        printf("\nstate layer %zu\n", l);
        print_matrix(states, m);
    }
}

int cmd_similarity(int argc, char **argv)
{
    static const struct option opts[] = {
        {"per-layer", no_argument, NULL, OPT_PER_LAYER},
        CLI_CONN_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_common o = {0};
    int per_layer = 0;
    int rc = inspect_opts("similarity", similarity_help, argc, argv, opts, &o, similarity_opt,
                          &per_layer);
    if (rc >= 0) return rc;
    if (optind >= argc) return cli_usage("similarity", "name the states to compare");
    if (argc - optind > 64) return cli_usage("similarity", "at most 64 states");
    json_t *names = json_array();
    for (int i = optind; names && i < argc; i++)
        if (json_array_append_new(names, json_string(argv[i]))) {
            json_decref(names);
            names = NULL;
        }
    json_t *body = names ? json_pack("{s:o,s:b}", "states", names, "per_layer", per_layer) : NULL;
    if (!body) {
        ss_fail(SS_ERR_NOMEM, "out of memory");
        return cli_fail("similarity");
    }
    rc = inspect_call("similarity", &o, "POST", "/v1/states/similarity", body, print_similarity);
    json_decref(body);
    return rc;
}

/* ---- whoami ---------------------------------------------------------------------------------- */

static const char whoami_help[] =
    "usage: statesoup whoami [--url URL] [--api-key KEY]\n"
    "\n"
    "What the API key may do (read, write or admin) and whose states it sees (its tenant;\n"
    "none: the default one). A daemon without --api-keys answers write, no tenant.\n" CLI_CONN_HELP;

static void print_whoami(const json_t *ans)
{
    const char *tenant = json_string_value(json_object_get(ans, "tenant"));
    printf("scope %s, tenant %s\n", json_string_value(json_object_get(ans, "scope")) ?: "?",
           tenant ? tenant : "(default)");
}

int cmd_whoami(int argc, char **argv)
{
    static const struct option opts[] = {CLI_CONN_OPTIONS, {NULL, 0, NULL, 0}};
    cli_common o = {0};
    int rc = inspect_opts("whoami", whoami_help, argc, argv, opts, &o, NULL, NULL);
    if (rc >= 0) return rc;
    if (optind < argc) return cli_usage("whoami", "takes no arguments");
    return inspect_call("whoami", &o, "GET", "/v1/whoami", NULL, print_whoami);
}
