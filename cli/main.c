/*
 * main.c - `statesoup`, the user's and operator's command-line tool.
 *
 * Subcommands run a model locally (generate --model) or talk to a running statesoupd (--url) or
 * read its catalog directly (--data, read-only, safe beside the running daemon).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ss_err.h"
#include "ss_model.h"

static const char usage[] =
    "usage: statesoup <command> [options]\n"
    "\n"
    "Run a Mamba-family model on CPU and manage its recurrent states.\n"
    "\n"
    "commands:\n"
    "  generate   generate text: locally with --model DIR, or through a daemon with --url\n"
    "\n"
    "Run `statesoup <command> --help` for the options of a command.\n";

int cli_fail(const char *what)
{
    fprintf(stderr, "statesoup: %s: %s\n", what, ss_errmsg());
    return 1;
}

int main(int argc, char **argv)
{
    ss_blas_ensure_kernels(argv);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "generate")) return cmd_generate_local(argc - 1, argv + 1);
    fprintf(stderr, "statesoup: unknown command '%s'\n\n%s", cmd, usage);
    return 2;
}
