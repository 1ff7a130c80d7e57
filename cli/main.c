/*
 * main.c - `statesoup`, the user's and operator's command-line tool.
 *
 * Subcommands run a model locally (generate --model), talk to a running statesoupd (--url), or
 * read its catalog directly (--data, read-only, safe beside the running daemon). Dispatch is a
 * static table; each command parses its own options (getopt_long) and has its own --help.
 * Exit codes: 0 ok, 1 the command failed, 2 usage error.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ss_err.h"
#include "ss_model.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    int needs_http; /* libcurl is initialised only for these */
    const char *summary;
} command;

static const command commands[] = {
    {"generate", cmd_generate, 1, "generate text: locally with --model DIR, or through a daemon"},
    {"score", cmd_score, 1, "log-likelihood of a continuation after a state (State Soup metric)"},
    {"ls", cmd_ls, 1, "list stored states (--url, or --data DIR read-only)"},
    {"show", cmd_show, 1, "print a state's record (--url, or --data DIR read-only)"},
    {"save", cmd_save, 1, "run the model over a prompt and store the state"},
    {"merge", cmd_merge, 1, "store a weighted sum of states (a state soup)"},
    {"export", cmd_export, 1, "write a state as a safetensors file (--url, or --data + --model)"},
    {"import", cmd_import, 1, "store a safetensors state file"},
    {"rm", cmd_rm, 1, "delete states"},
    {"prune", cmd_prune, 1, "delete the states a tag, a name prefix or an age selects"},
    {"share", cmd_share, 1, "share states with every tenant, or stop (--off); admin keys"},
    {"search", cmd_search, 1, "the stored states most similar to a text, tokens or a state"},
    {"children", cmd_children, 1, "the states made from a state (its lineage), --depth deep"},
    {"stats", cmd_stats, 1, "a stored state's L2 norms per layer"},
    {"similarity", cmd_similarity, 1, "pairwise cosine similarity of stored states"},
    {"whoami", cmd_whoami, 1, "what the API key may do and whose states it sees"},
    {"verify", cmd_verify, 0, "check every stored state's checksum (--data DIR, read-only)"},
    {"migrate", cmd_migrate, 0, "copy a local catalog into Redis Cluster (--to) or back (--from)"},
    {"models", cmd_models, 1, "the model the daemon serves"},
    {"health", cmd_health, 1, "is the daemon up and its model loaded?"},
    {"key-new", cmd_key_new, 0, "a new API key, as a line of statesoupd's --api-keys file"},
    {"eval", cmd_eval, 1, "the State Soup table: which starting state answers a task file best"},
    {"plan", cmd_plan, 0, "compute-optimal fine-grained MoE for a budget or a checkpoint"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fputs("usage: statesoup <command> [options]\n"
          "\n"
          "Run a Mamba-family model on CPU and manage its recurrent states, locally or through a\n"
          "running statesoupd.\n"
          "\n"
          "commands:\n",
          f);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    }
    fputs("\n"
          "Daemon commands take --url URL (default $STATESOUP_URL, else http://127.0.0.1:8080),\n"
          "--api-key KEY (default $STATESOUP_API_KEY) and --json (the server's JSON instead of a\n"
          "table). Exit codes: 0 ok, 1 failure, 2 usage error.\n"
          "Run `statesoup <command> --help` for the options of a command.\n",
          f);
}

int cli_fail(const char *what)
{
    fprintf(stderr, "statesoup: %s: %s\n", what, ss_errmsg());
    return CLI_FAIL;
}

int main(int argc, char **argv)
{
    ss_blas_ensure_kernels(argv);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    const char *name = argv[1];
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(name, commands[i].name) != 0) continue;
        if (commands[i].needs_http && curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
            fprintf(stderr, "statesoup: cannot initialise libcurl\n");
            return CLI_FAIL;
        }
        /* getopt_long's own messages then start with "statesoup <command>:" */
        char prog[64];
        snprintf(prog, sizeof prog, "statesoup %s", name);
        argv[1] = prog;
        int rc = commands[i].run(argc - 1, argv + 1);
        if (commands[i].needs_http) curl_global_cleanup();
        return rc;
    }
    fprintf(stderr, "statesoup: unknown command '%s'\n\n", name);
    usage(stderr);
    return CLI_USAGE;
}
