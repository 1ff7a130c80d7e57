/*
 * cli.h - subcommands of the `statesoup` command-line tool (internal to cli/).
 * Each takes the arguments after its name (argv[0] is the subcommand) and returns the exit code.
 */
#ifndef SS_CLI_H
#define SS_CLI_H

int cmd_generate_local(int argc, char **argv);

/* Print "statesoup: <what>: <ss_errmsg()>" to stderr and return exit code 1. */
int cli_fail(const char *what);

#endif
