/*
 * eval.h - `statesoup eval`: the State Soup table (which starting state helps a model answer a
 * task) measured through the daemon's public API. Internal to cli/.
 *
 * Task file (JSONL, one task per line, docs/eval.md):
 *   {"parts": [text, ...], "query": text, "answer": text, "whole"?: text, "id"?: str}
 * parts are contexts processed separately from the zero state; whole (default: the parts
 * concatenated) is the one-pass context; the answer is scored, and decoded greedily, after the
 * query, starting from each condition's state.
 *
 * Conditions are rows of a table (eval.c): each names how a task's starting state is built from
 * the states the harness saved for it (its parts, its whole context, another task's). A new
 * condition (e.g. top-k retrieved states) is one more row and one more start function.
 */
#ifndef SS_CLI_EVAL_H
#define SS_CLI_EVAL_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "ss_err.h"

/* One task of a task file. Strings are owned by the task. */
typedef struct eval_task {
    char **parts; /* [n_parts] */
    int n_parts;
    char *whole;  /* one-pass context (the parts concatenated unless the file gives it) */
    char *query;
    char *answer;
    char *id;     /* the file's id, else "line N" */
} eval_task;

/*
 * Read a JSONL task file (blank lines skipped). *tasks (free with eval_tasks_free) and *n are set
 * only on success. SS_ERR_IO (unreadable), SS_ERR_FORMAT (a line that is not a task object:
 * the message names the line and the field), SS_ERR_INVALID (no tasks, more than 64 parts),
 * SS_ERR_NOMEM.
 */
ss_err eval_tasks_load(const char *path, eval_task **tasks, int *n);
void eval_tasks_free(eval_task *tasks, int n);

/* What the dictionary-task generator is asked for. */
typedef struct eval_gen_params {
    const char *words; /* file of words, one a line (models/demo-mamba1/words.txt) */
    int n_tasks;       /* tasks to write */
    int n_pairs;       /* key = value lines per dictionary (2..64) */
    int n_parts;       /* parts the dictionary is split into (1..n_pairs) */
    uint64_t seed;     /* same seed, same words file: the same tasks */
    int query_block;   /* 0: ask one random key per dictionary; 1: n_pairs tasks per dictionary,
                          the Query block in a random order up to each key (earlier keys answered) */
} eval_gen_params;

/*
 * Write n_tasks dictionary tasks (models/demo-mamba1/README.md) as JSONL to f: per task,
 * n_pairs distinct keys and values drawn from the words, split into n_parts parts that each
 * start with "Dictionary:\n"; whole is the dictionary in one; the query asks one key
 * ("\nQuery:\n<key> =") and the answer is " <value>". With query_block, every dictionary gives
 * n_pairs tasks (ids dict-N.Q): the Query block in a random order, with the keys before Q
 * answered, up to key Q (the model's training format; mean over them = the README's value loss).
 * SS_ERR_IO, SS_ERR_INVALID (too few words for 2 * n_pairs, bad counts), SS_ERR_NOMEM.
 */
ss_err eval_generate_dict(const eval_gen_params *p, FILE *f);

/* Mean and 95% interval half-width (normal approximation, 1.96 * sd / sqrt(n)) of x[n]. */
void eval_mean_ci(const double *x, int n, double *mean, double *ci95);

/* One condition's summary, as the table, --json and the chart show it. */
typedef struct eval_summary {
    const char *name;
    const char *help;
    int n;                  /* tasks it was measured on */
    double loss, loss_ci;   /* nats per answer token */
    double exact, exact_ci; /* greedy exact match, fraction */
} eval_summary;

/* A bar chart of the losses with their intervals (and exact match as text) as SVG into f. */
ss_err eval_write_svg(const char *path, const char *title, const eval_summary *s, int n);

#endif
