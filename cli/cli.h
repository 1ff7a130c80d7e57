/*
 * cli.h - subcommands of the `statesoup` command-line tool and their shared helpers (internal to
 * cli/). Each command takes the arguments after its name (argv[0] is the subcommand) and returns
 * the exit code: CLI_OK, CLI_FAIL (the command ran and failed) or CLI_USAGE (bad arguments).
 *
 * Commands reach the catalog one of two ways: through a running statesoupd (--url, HTTP via
 * libcurl, client.c) or, for the read-only ones, by opening its LMDB store directly (--data DIR,
 * read-only, safe beside the running daemon). Both paths hand the same JSON (records, pages) to
 * the same printers (format.c), so a table looks the same whichever way it was read.
 */
#ifndef SS_CLI_H
#define SS_CLI_H

#include <getopt.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "ss_err.h"

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

/* Largest prompt, context or continuation file (or stdin) a command reads. */
#define MAX_PROMPT_BYTES ((size_t)1 << 30)

/* ---- commands -------------------------------------------------------------------------------- */

int cmd_generate(int argc, char **argv);       /* local (--model) or daemon (--url) */
int cmd_generate_local(int argc, char **argv); /* generate.c */
int cmd_generate_remote(int argc, char **argv); /* infer.c */
int cmd_score(int argc, char **argv);
int cmd_models(int argc, char **argv);
int cmd_health(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_show(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_share(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_save(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_migrate(int argc, char **argv); /* migrate.c: local catalog <-> Redis Cluster */
int cmd_eval(int argc, char **argv); /* eval.c: the State Soup table through the daemon */
int cmd_plan(int argc, char **argv); /* plan.c: the MoE scaling-law planner, offline */
int cmd_search(int argc, char **argv); /* search.c: states most similar to a query */
int cmd_children(int argc, char **argv);   /* inspect.c: the states made from one */
int cmd_stats(int argc, char **argv);      /* inspect.c: a state's norms per layer */
int cmd_similarity(int argc, char **argv); /* inspect.c: pairwise cosine similarity */
int cmd_whoami(int argc, char **argv);     /* inspect.c: the key's scope and tenant */
int cmd_prune(int argc, char **argv);      /* prune.c: delete by tag, prefix, age */
int cmd_key_new(int argc, char **argv);    /* keys.c: a line for --api-keys */

/* The help of `generate` (both modes), shared by generate.c and infer.c. */
extern const char cli_generate_help[];

/* Print "statesoup: <what>: <ss_errmsg()>" to stderr and return CLI_FAIL. */
int cli_fail(const char *what);

/* ---- options shared by the commands ---------------------------------------------------------- */

/* getopt_long codes of the options every daemon command takes; command-specific codes start at
 * CLI_OPT_FIRST_LOCAL. */
enum {
    CLI_OPT_URL = 1000,
    CLI_OPT_API_KEY,
    CLI_OPT_JSON,
    CLI_OPT_DATA,
    CLI_OPT_FIRST_LOCAL = 1100,
};

#define CLI_CONN_OPTIONS                                                                           \
    {"url", required_argument, NULL, CLI_OPT_URL},                                                 \
        {"api-key", required_argument, NULL, CLI_OPT_API_KEY},                                     \
        {"json", no_argument, NULL, CLI_OPT_JSON}, {"help", no_argument, NULL, 'h'}

/* Help lines for CLI_CONN_OPTIONS. */
#define CLI_CONN_HELP                                                                              \
    "  --url URL            the daemon (default $STATESOUP_URL, else http://127.0.0.1:8080)\n"    \
    "  --api-key KEY        API key, sent as 'Authorization: Bearer KEY'\n"                       \
    "                       (default $STATESOUP_API_KEY)\n"                                       \
    "  --json               print the server's JSON instead of a human-readable view\n"          \
    "  -h, --help           this text\n"

/* What the shared options set. */
typedef struct cli_common {
    const char *url;     /* as given; NULL = from the environment or the default */
    const char *api_key; /* NULL = $STATESOUP_API_KEY or none */
    const char *data;    /* --data DIR (offline), NULL when not given */
    int json;
} cli_common;

/* Handle one of the shared options (c = getopt_long's return). 1 if it was one, else 0. */
int cli_common_opt(cli_common *o, int c, const char *arg);

/*
 * Parse a number in [lo, hi] for option `opt` of command `cmd`; prints the problem and returns
 * -1 when it is not one.
 */
int cli_parse_num(const char *cmd, const char *opt, const char *s, double lo, double hi,
                  double *out);

/*
 * Standard handling of a getopt_long result that no command case took: '?' (getopt already
 * printed why) prints a pointer to --help; returns CLI_USAGE.
 */
int cli_bad_option(const char *cmd);

/* Print "statesoup <cmd>: <msg>\n(statesoup <cmd> --help lists the options)" and give CLI_USAGE. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- the store, offline (catalog.c) ---------------------------------------------------------- */

typedef struct ss_store ss_store;
/* Open the store at dir read-only; prints why and returns NULL on failure. */
ss_store *cli_open_store(const char *cmd, const char *dir);
/* Parse JSON text the store produced; NULL (with ss_fail) if it is not JSON. */
json_t *cli_parse_text(const char *text);
/* CLI_USAGE (with a message) when both --url and --data were given, else CLI_OK. */
int cli_check_source(const char *cmd, const cli_common *o);

/* ---- HTTP client (client.c) ------------------------------------------------------------------ */

typedef struct cli_conn {
    char *base;          /* base URL, without a trailing '/' (owned) */
    const char *api_key; /* NULL = no Authorization header */
} cli_conn;

/*
 * Fill `c` from the shared options (--url / $STATESOUP_URL / default, --api-key /
 * $STATESOUP_API_KEY). SS_ERR_INVALID when the URL is not http:// or https://.
 * Free with cli_conn_free().
 */
ss_err cli_conn_init(cli_conn *c, const cli_common *o);
void cli_conn_free(cli_conn *c);

/* Receives a successful (2xx) body as it arrives. Return nonzero to abort the transfer. */
typedef int (*cli_sink_fn)(void *user, const char *data, size_t len);

typedef struct cli_req {
    const char *method; /* "GET", "POST", "DELETE" */
    const char *path;   /* "/v1/states?limit=5": escape parts with cli_escape() */
    const char *content_type; /* of the body; NULL = no body */
    const void *body;
    size_t body_len;
    cli_sink_fn sink; /* NULL: a 2xx body is collected into the response */
    void *sink_user;
} cli_req;

typedef struct cli_resp {
    long status; /* HTTP status */
    char *body;  /* the body (NUL-terminated, malloc'd) unless a sink took it; may be NULL */
    size_t len;
} cli_resp;

/*
 * Do one request. Returns SS_OK only for a 2xx answer. For an error answer the server's
 * {"error": {"code", "message"}} becomes the ss_err named by code (else one fitting the status)
 * with the message "<code>: <message>"; a failed connection is SS_ERR_IO with a message that asks
 * whether statesoupd is running at the URL; a sink's abort is SS_ERR_CANCELLED (the sink records
 * why). resp (may be NULL) receives the status and the collected body (free with
 * cli_resp_free()), also on error answers.
 */
ss_err cli_http(const cli_conn *c, const cli_req *rq, cli_resp *resp);
void cli_resp_free(cli_resp *r);

/*
 * GET/POST/DELETE a path with an optional JSON body; parse the JSON reply into *out (NULL allowed:
 * reply ignored). *raw (may be NULL) receives the reply's text as the server sent it (free() it),
 * which --json prints verbatim.
 */
ss_err cli_http_json(const cli_conn *c, const char *method, const char *path, json_t *body,
                     json_t **out, char **raw);

/* Percent-encode s for a path segment or query value (free() it). NULL on allocation failure. */
char *cli_escape(const char *s);

/*
 * "/v1/states/<ref>" into buf, the ref percent-encoded (names may hold '/': the daemon decodes
 * %2F inside a segment). SS_ERR_INVALID when it does not fit.
 */
ss_err cli_state_path(const char *ref, char *buf, size_t cap);

/*
 * "/v1/states?limit=N[&tag=][&prefix=][&cursor=][&include=cache]" into buf, the values
 * percent-encoded (NULL: left out). SS_ERR_INVALID when it does not fit, SS_ERR_NOMEM.
 */
ss_err cli_list_path(char *buf, size_t cap, const char *tag, const char *prefix, int limit,
                     const char *cursor, int include_cache);

/* ---- output (format.c) ----------------------------------------------------------------------- */

/* "999 B", "1.5 KiB", "3.2 MiB", ... into buf. */
const char *cli_human_bytes(uint64_t n, char *buf, size_t cap);

/* Print one state record as "key  value" lines. */
void cli_print_record(const json_t *rec);
/* Print records as a table: ID, NAME, TAGS, TOKENS, SIZE, CREATED (UTC). */
void cli_print_state_table(const json_t *records);
/* The tags (a JSON array of strings) joined by sep into buf (cap bytes, truncated at a tag); "-"
 * when there are none. */
void cli_join_tags(const json_t *tags, const char *sep, char *buf, size_t cap);
/* Print JSON we composed (compact, keys in their order, one line). */
void cli_print_json(const json_t *j);
/* Print JSON text as received (server or store), ending with a newline. */
void cli_print_raw(const char *text);

/* A table of strings printed with aligned columns. */
typedef struct cli_table cli_table;
/* ncol columns named by `head`; right[i] nonzero right-aligns column i. NULL on ENOMEM. */
cli_table *cli_table_new(int ncol, const char *const *head, const int *right);
/* Add a row of ncol cells (copied). SS_ERR_NOMEM. */
ss_err cli_table_add(cli_table *t, const char *const *cells);
void cli_table_print(const cli_table *t);
void cli_table_free(cli_table *t);

/* ---- inputs (util.c) ------------------------------------------------------------------------- */

/* Read a whole file, or stdin for "-", into a malloc'd NUL-terminated buffer. */
ss_err cli_read_input(const char *path, size_t max_bytes, char **buf, size_t *len);

/*
 * Parse comma/space separated token ids (0 <= id <= INT32_MAX) into *ids (malloc'd, free() it;
 * set only on success) and *n. SS_ERR_INVALID naming the bad one.
 */
ss_err cli_parse_ids(const char *s, int32_t **ids, size_t *n);
/* The same into a JSON array. */
ss_err cli_parse_ids_json(const char *s, json_t **out);

/*
 * Parse "STATE=WEIGHT" (split at the last '=') into {"state": STATE, "weight": WEIGHT} and append
 * it to `arr`. SS_ERR_INVALID with a message when malformed or the weight is not finite.
 */
ss_err cli_parse_source(const char *s, json_t *arr);

/* Append the comma-separated tags of `arg` to the JSON array `arr`. SS_ERR_INVALID (not UTF-8). */
ss_err cli_add_tags(json_t *arr, const char *arg);

/* Interpret \n, \t, \r and \\ (in place), as --stop takes them. */
void cli_unescape(char *s);

/* ---- generate's options (util.c; generate.c runs locally, infer.c asks the daemon) ----------- */

/* getopt_long codes of cli_generate_options (besides 'v', 'h' and CLI_CONN_OPTIONS'). */
enum {
    /* both modes */
    CLI_GEN_PROMPT = CLI_OPT_FIRST_LOCAL,
    CLI_GEN_PROMPT_FILE,
    CLI_GEN_TOKENS,
    CLI_GEN_MAX_TOKENS,
    CLI_GEN_TEMPERATURE,
    CLI_GEN_TOP_K,
    CLI_GEN_TOP_P,
    CLI_GEN_MIN_P,
    CLI_GEN_SEED,
    CLI_GEN_STOP,
    CLI_GEN_LOGPROBS,
    CLI_GEN_IDS,
    /* local (--model) only */
    CLI_GEN_MODEL,
    CLI_GEN_TOKENIZER,
    CLI_GEN_THREADS,
    CLI_GEN_STATE_IN,
    CLI_GEN_STATE_OUT,
    CLI_GEN_IGNORE_EOS,
    /* daemon only, with --url, --api-key and --json */
    CLI_GEN_STATE,
    CLI_GEN_MERGE,
    CLI_GEN_MERGE_MODE,
    CLI_GEN_SAVE_STATE,
    CLI_GEN_NO_STREAM,
    CLI_GEN_REUSE,
};

/* Every option of `generate`, both modes (each refuses the other's own; cli_generate_help). */
extern const struct option cli_generate_options[];

/* What the options both modes take set (--seed aside: each mode reads it for its engine). */
typedef struct cli_gen_opts {
    const char *prompt, *prompt_file, *tokens; /* the prompt, as given (cli_gen_check) */
    double max_tokens;                         /* 64 unless given */
    double temperature, top_k, top_p, min_p;   /* NAN unless given: the mode's default applies */
    const char **stops; /* --stop strings, unescaped in place in argv [n_stops] (array owned) */
    int n_stops;
    int logprobs, ids, verbose;
} cli_gen_opts;

void cli_gen_init(cli_gen_opts *g);
void cli_gen_free(cli_gen_opts *g);
/*
 * getopt_long over argv with cli_generate_options (set optind = 1 first), taking the options
 * both modes take into g. Returns the code of the next other option (*li: its index in
 * cli_generate_options, optarg its value), -1 at the end of the options, or 0 when a value was
 * bad (the message printed; *rc = CLI_USAGE, or CLI_FAIL when out of memory).
 */
int cli_gen_next(int argc, char **argv, cli_gen_opts *g, int *li, int *rc);
/* CLI_USAGE (with a message) when more than one of --prompt, --prompt-file, --tokens was given. */
int cli_gen_check(const cli_gen_opts *g);

#endif
