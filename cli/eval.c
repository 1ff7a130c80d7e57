/*
 * eval.c - `statesoup eval`: for every task of a task file and every condition (a way to build
 * the starting state: zero, each part alone, their soups and compositions, one pass, another
 * task's state...), the loss of the answer after the query (POST /v1/score) and whether greedy
 * decoding (POST /v1/generate, temperature 0) reproduces it. Everything goes through the daemon's
 * public API, so it measures the product a user runs: a daemon at --url, or a private one started
 * on a loopback port with a temporary catalog (--model DIR).
 *
 * Per task the harness stores the states of its parts and of its whole context (unnamed, tagged
 * statesoup-eval) and deletes them at the end. Conditions are the rows of `conds` below; adding
 * one is a start function that puts "state" or "merge" into a request.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "eval.h"
#include "ss_model.h"

/* ---- a run: the tasks and the states stored for them ----------------------------------------- */

#define EVAL_PART_TAG "statesoup-eval-part" /* the part states, which retrieval searches */

typedef struct eval_run {
    cli_conn conn;
    eval_task *tasks;
    int n_tasks;
    char ***part_ids;   /* [n_tasks][n_parts] ids of the stored part states */
    char **whole_ids;   /* [n_tasks] id of the stored one-pass state */
    int **answer;       /* [n_tasks] answer token ids */
    int *n_answer;      /* [n_tasks] */
    int max_parts;
    int *top1, *top5;   /* [n_tasks] retrieval by the query: a right part first / in the first 5
                           (-1: not measured) */
    int *ctop1, *ctop5; /* likewise by the task's whole context: one of its own parts */
    char key[32];       /* the daemon's retrieval key kind */
} eval_run;

/*
 * Put the starting state of condition `arg` for task t into the request body: "state", "merge",
 * or nothing (the zero state). SS_ERR_UNSUPPORTED: the condition does not apply to this task
 * (e.g. part 3 of a task with two parts); it is then left out of that condition's mean.
 */
typedef ss_err (*eval_start_fn)(const eval_run *r, int t, int arg, json_t *req);

typedef struct eval_cond {
    const char *name;
    const char *help;
    eval_start_fn start;
    int arg;
} eval_cond;

static ss_err start_zero(const eval_run *r, int t, int arg, json_t *req)
{
    (void)r, (void)t, (void)arg, (void)req;
    return SS_OK;
}

static ss_err start_part(const eval_run *r, int t, int arg, json_t *req)
{
    if (arg >= r->tasks[t].n_parts) return SS_ERR_UNSUPPORTED;
    return json_object_set_new(req, "state", json_string(r->part_ids[t][arg]))
               ? ss_fail(SS_ERR_NOMEM, "out of memory")
               : SS_OK;
}

static ss_err start_whole(const eval_run *r, int t, int arg, json_t *req)
{
    (void)arg;
    return json_object_set_new(req, "state", json_string(r->whole_ids[t]))
               ? ss_fail(SS_ERR_NOMEM, "out of memory")
               : SS_OK;
}

/* The task's parts, each with weight w (the on-the-fly merge's list form). */
static json_t *parts_list(const eval_run *r, int t, double w)
{
    json_t *m = json_array();
    for (int j = 0; m && j < r->tasks[t].n_parts; j++)
        json_array_append_new(m, json_pack("{s:s,s:f}", "state", r->part_ids[t][j], "weight", w));
    return m;
}

/* arg 0: the mean of the parts (linear soup); 1: their sum. */
static ss_err start_linear(const eval_run *r, int t, int arg, json_t *req)
{
    if (r->tasks[t].n_parts < 2) return SS_ERR_UNSUPPORTED;
    json_t *m = parts_list(r, t, arg ? 1.0 : 1.0 / r->tasks[t].n_parts);
    return m && !json_object_set_new(req, "merge", m) ? SS_OK
                                                      : ss_fail(SS_ERR_NOMEM, "out of memory");
}

/* arg 0: sequential composition of the parts in order; 1: symmetric (merge modes). */
static ss_err start_compose(const eval_run *r, int t, int arg, json_t *req)
{
    if (r->tasks[t].n_parts < 2) return SS_ERR_UNSUPPORTED;
    json_t *srcs = json_array();
    for (int j = 0; srcs && j < r->tasks[t].n_parts; j++)
        json_array_append_new(srcs, json_pack("{s:s}", "state", r->part_ids[t][j]));
    json_t *m = srcs ? json_pack("{s:o,s:s}", "sources", srcs, "mode",
                                 arg ? "symmetric" : "sequential")
                     : NULL;
    return m && !json_object_set_new(req, "merge", m) ? SS_OK
                                                      : ss_fail(SS_ERR_NOMEM, "out of memory");
}

/*
 * arg 0: 1/2 this task's one-pass state + 1/2 the next task's with another context; 1: that
 * task's alone. (Tasks of one dictionary's Query block share their context: they are skipped.)
 */
static ss_err start_other(const eval_run *r, int t, int arg, json_t *req)
{
    int o = (t + 1) % r->n_tasks;
    while (o != t && !strcmp(r->tasks[o].whole, r->tasks[t].whole)) o = (o + 1) % r->n_tasks;
    if (o == t) return SS_ERR_UNSUPPORTED;
    const char *other = r->whole_ids[o];
    if (arg)
        return json_object_set_new(req, "state", json_string(other))
                   ? ss_fail(SS_ERR_NOMEM, "out of memory")
                   : SS_OK;
    json_t *m = json_pack("[{s:s,s:f},{s:s,s:f}]", "state", r->whole_ids[t], "weight", 0.5,
                          "state", other, "weight", 0.5);
    return m && !json_object_set_new(req, "merge", m) ? SS_OK
                                                      : ss_fail(SS_ERR_NOMEM, "out of memory");
}

/*
 * arg 0: the part state the catalog search finds closest to the query, alone; 1: the k found
 * closest, k = the task's number of parts, merged with equal weights (retrieve-then-merge,
 * "merge": {"retrieve"}); 2: the same k searched with the task's whole context as the query
 * (what a search finds when the query resembles the stored contexts). The search runs over every
 * part state of the run (EVAL_PART_TAG), so it may pick another task's part: retrieval_hits
 * measures how often it picks the right one.
 */
static ss_err start_retrieved(const eval_run *r, int t, int arg, json_t *req)
{
    int k = arg ? r->tasks[t].n_parts : 1;
    if (arg && k < 2) return SS_ERR_UNSUPPORTED;
    json_t *m = json_pack("{s:{s:s,s:i,s:s}}", "retrieve", "query",
                          arg == 2 ? r->tasks[t].whole : r->tasks[t].query, "k", k, "tag",
                          EVAL_PART_TAG);
    return m && !json_object_set_new(req, "merge", m) ? SS_OK
                                                      : ss_fail(SS_ERR_NOMEM, "out of memory");
}

#define EVAL_PART_ROWS 8 /* "part1".."part8": a task's first parts, each alone */

/* Every condition, in the order of the table; `--conditions` picks some. */
static const eval_cond conds[] = {
    {"zero", "the zero state (the query alone)", start_zero, 0},
    {"part1", "part 1 alone", start_part, 0},
    {"part2", "part 2 alone", start_part, 1},
    {"part3", "part 3 alone", start_part, 2},
    {"part4", "part 4 alone", start_part, 3},
    {"part5", "part 5 alone", start_part, 4},
    {"part6", "part 6 alone", start_part, 5},
    {"part7", "part 7 alone", start_part, 6},
    {"part8", "part 8 alone", start_part, 7},
    {"mean", "linear soup: the mean of the parts' states", start_linear, 0},
    {"sum", "the sum of the parts' states", start_linear, 1},
    {"sequential", "the parts composed in order with the model's decay", start_compose, 0},
    {"symmetric", "the parts composed, averaged over every order", start_compose, 1},
    {"one-pass", "the whole context in one pass (the upper reference)", start_whole, 0},
    {"other-soup", "1/2 this task's one-pass state + 1/2 the next task's", start_other, 0},
    {"other", "the next task's one-pass state alone", start_other, 1},
    {"retrieved1", "the part state retrieved for the query (top 1 of all tasks' parts)",
     start_retrieved, 0},
    {"retrieved", "the top-k retrieved part states merged, k = the task's parts",
     start_retrieved, 1},
    {"retrieved-ctx", "the same, retrieved with the task's whole context as the query",
     start_retrieved, 2},
};
#define N_CONDS (int)(sizeof conds / sizeof conds[0])

/* ---- talking to the daemon ------------------------------------------------------------------- */

/* POST body to path; *out (may be NULL) the reply. Names the task on failure. */
static ss_err post(const eval_run *r, const char *path, json_t *body, json_t **out, int t)
{
    ss_err err = body ? cli_http_json(&r->conn, "POST", path, body, out, NULL)
                      : ss_fail(SS_ERR_NOMEM, "out of memory");
    if (err) {
        char why[512];
        snprintf(why, sizeof why, "%s", ss_errmsg());
        err = ss_fail(err, "task %s: %s: %s", r->tasks[t].id, path, why);
    }
    return err;
}

/* Store the state of `text` from the zero state, tagged statesoup-eval (and statesoup-eval-part
 * for a part: what the retrieval conditions search); *id receives its id (free() it). */
static ss_err save_state(const eval_run *r, int t, const char *text, int part, char **id)
{
    json_t *body = part ? json_pack("{s:s,s:[s,s]}", "prompt", text, "tags", "statesoup-eval",
                                    EVAL_PART_TAG)
                        : json_pack("{s:s,s:[s]}", "prompt", text, "tags", "statesoup-eval"),
           *rec = NULL;
    ss_err err = post(r, "/v1/states", body, &rec, t);
    json_decref(body);
    if (!err) {
        const char *s = json_string_value(json_object_get(rec, "id"));
        *id = s ? strdup(s) : NULL;
        if (!*id) err = ss_fail(SS_ERR_FORMAT, "the daemon's record has no id");
    }
    json_decref(rec);
    return err;
}

/* The answer's tokens as the daemon's tokenizer makes them. */
static ss_err tokenize_answer(eval_run *r, int t)
{
    json_t *body = json_pack("{s:s}", "text", r->tasks[t].answer), *rep = NULL;
    ss_err err = post(r, "/v1/tokenize", body, &rep, t);
    json_decref(body);
    const json_t *toks = json_object_get(rep, "tokens");
    size_t n = json_array_size(toks);
    if (!err && n == 0) err = ss_fail(SS_ERR_FORMAT, "task %s: the answer has no tokens",
                                      r->tasks[t].id);
    if (!err && !(r->answer[t] = malloc(n * sizeof(int)))) err = ss_fail(SS_ERR_NOMEM, "no memory");
    for (size_t i = 0; !err && i < n; i++)
        r->answer[t][i] = (int)json_integer_value(json_array_get(toks, i));
    if (!err) r->n_answer[t] = (int)n;
    json_decref(rep);
    return err;
}

/* Do tasks a and b have the same contexts (parts and whole)? */
static int same_contexts(const eval_task *a, const eval_task *b)
{
    if (a->n_parts != b->n_parts || strcmp(a->whole, b->whole)) return 0;
    for (int j = 0; j < a->n_parts; j++)
        if (strcmp(a->parts[j], b->parts[j])) return 0;
    return 1;
}

/* The id stored for text: the previous task's when it has the same contexts, else a new state. */
static ss_err state_for(eval_run *r, int t, const char *text, const char *prev_id, int part,
                        char **id)
{
    if (t > 0 && same_contexts(&r->tasks[t], &r->tasks[t - 1])) {
        *id = strdup(prev_id);
        return *id ? SS_OK : ss_fail(SS_ERR_NOMEM, "out of memory");
    }
    return save_state(r, t, text, part, id);
}

/* Store task t's part states and its one-pass state (shared with the previous task when it has
 * the same contexts: the tasks of one Query block); tokenize its answer. */
static ss_err prepare_task(eval_run *r, int t)
{
    const eval_task *k = &r->tasks[t];
    if (!(r->part_ids[t] = calloc((size_t)k->n_parts, sizeof(char *))))
        return ss_fail(SS_ERR_NOMEM, "out of memory");
    for (int j = 0; j < k->n_parts; j++) {
        ss_err err = state_for(r, t, k->parts[j], t ? r->part_ids[t - 1][j] : NULL, 1,
                               &r->part_ids[t][j]);
        if (err) return err;
    }
    ss_err err = state_for(r, t, k->whole, t ? r->whole_ids[t - 1] : NULL, 0, &r->whole_ids[t]);
    return err ? err : tokenize_answer(r, t);
}

/* Delete every state the run stored (best effort: the first failure is reported). */
static void cleanup_states(eval_run *r)
{
    int warned = 0;
    for (int t = 0; t < r->n_tasks; t++) {
        if (t > 0 && same_contexts(&r->tasks[t], &r->tasks[t - 1])) continue; /* shared */
        for (int j = 0; r->part_ids && r->part_ids[t] && j <= r->tasks[t].n_parts; j++) {
            const char *id = j < r->tasks[t].n_parts ? r->part_ids[t][j] : r->whole_ids[t];
            char path[128];
            if (!id || cli_state_path(id, path, sizeof path)) continue;
            if (cli_http_json(&r->conn, "DELETE", path, NULL, NULL, NULL) && !warned++)
                fprintf(stderr, "statesoup eval: cannot delete stored state %s: %s\n", id,
                        ss_errmsg());
        }
    }
}

static void run_free(eval_run *r)
{
    for (int t = 0; t < r->n_tasks; t++) {
        for (int j = 0; r->part_ids && r->part_ids[t] && j < r->tasks[t].n_parts; j++)
            free(r->part_ids[t][j]);
        if (r->part_ids) free(r->part_ids[t]);
        if (r->whole_ids) free(r->whole_ids[t]);
        if (r->answer) free(r->answer[t]);
    }
    free(r->part_ids);
    free(r->whole_ids);
    free(r->answer);
    free(r->n_answer);
    free(r->top1);
    free(r->top5);
    free(r->ctop1);
    free(r->ctop5);
}

/*
 * Measure condition c on task t: *loss = -(sum of the answer's log-probabilities) / tokens after
 * the query, *exact = 1 when greedy decoding after the query gives exactly the answer's tokens.
 * SS_ERR_UNSUPPORTED when the condition does not apply to the task.
 */
static ss_err measure(const eval_run *r, const eval_cond *c, int t, double *loss, int *exact)
{
    const eval_task *k = &r->tasks[t];
    json_t *sc = json_pack("{s:s,s:s}", "context", k->query, "continuation", k->answer);
    json_t *gen = json_pack("{s:s,s:i,s:f,s:b}", "prompt", k->query, "max_tokens",
                            r->n_answer[t], "temperature", 0.0, "ignore_eos", 1);
    json_t *rs = NULL, *rg = NULL;
    ss_err err = sc && gen ? SS_OK : ss_fail(SS_ERR_NOMEM, "out of memory");
    if (!err) err = c->start(r, t, c->arg, sc);
    if (!err) err = c->start(r, t, c->arg, gen);
    if (err == SS_ERR_UNSUPPORTED) goto out;
    if (!err) err = post(r, "/v1/score", sc, &rs, t);
    if (!err) err = post(r, "/v1/generate", gen, &rg, t);
    if (err) goto out;
    json_int_t n = json_integer_value(json_object_get(rs, "n_tokens"));
    double lp = json_number_value(json_object_get(rs, "logprob_sum"));
    if (n <= 0 || n != r->n_answer[t]) {
        err = ss_fail(SS_ERR_FORMAT, "task %s: /v1/score scored %lld answer tokens, /v1/tokenize "
                                     "gave %d", k->id, (long long)n, r->n_answer[t]);
        goto out;
    }
    *loss = -lp / (double)n;
    const json_t *toks = json_object_get(rg, "tokens");
    *exact = json_array_size(toks) == (size_t)n;
    for (size_t i = 0; *exact && i < (size_t)n; i++)
        *exact = json_integer_value(json_array_get(toks, i)) == r->answer[t][i];
out:
    json_decref(sc);
    json_decref(gen);
    json_decref(rs);
    json_decref(rg);
    return err;
}

/* Does part j of task t hold what its query asks (the answer's text)? */
static int holds_answer(const eval_task *k, int j)
{
    return strstr(k->parts[j], k->answer) != NULL;
}

/*
 * Retrieval accuracy on task t: search the run's part states (EVAL_PART_TAG, every task's) with
 * the task's query (whole = 0) or its whole context (whole = 1), k = 5; *top1 = the first hit is
 * a right part, *top5 = one of the first five is. The right parts: for the query, the task's parts
 * that hold the answer (all its parts when none does); for the whole context, any of its parts.
 * The daemon's key kind goes to r->key.
 */
static ss_err retrieval_hits(eval_run *r, int t, int whole, int *top1, int *top5)
{
    const eval_task *k = &r->tasks[t];
    json_t *body = json_pack("{s:s,s:i,s:s}", "query", whole ? k->whole : k->query, "k", 5, "tag",
                             EVAL_PART_TAG);
    json_t *rep = NULL;
    ss_err err = post(r, "/v1/states/search", body, &rep, t);
    json_decref(body);
    if (err) return err;
    int any = 0;
    for (int j = 0; !whole && j < k->n_parts; j++) any |= holds_answer(k, j);
    *top1 = *top5 = 0;
    size_t i;
    json_t *h;
    json_array_foreach (json_object_get(rep, "data"), i, h) {
        const char *id = json_string_value(json_object_get(json_object_get(h, "state"), "id"));
        int right = 0;
        for (int j = 0; id && j < k->n_parts; j++)
            right |= (!any || holds_answer(k, j)) && !strcmp(id, r->part_ids[t][j]);
        if (right && i == 0) *top1 = 1;
        if (right && i < 5) *top5 = 1;
    }
    const char *key = json_string_value(json_object_get(rep, "key"));
    snprintf(r->key, sizeof r->key, "%s", key ? key : "?");
    json_decref(rep);
    return SS_OK;
}

/* Mean and 95% interval of the 0/1 values of x[n_tasks] that are not -1; *n counts them. */
static void rate(const int *x, int n_tasks, double *tmp, double *mean, double *ci, int *n)
{
    *n = 0;
    for (int t = 0; t < n_tasks; t++)
        if (x[t] >= 0) tmp[(*n)++] = x[t];
    eval_mean_ci(tmp, *n, mean, ci);
}

/* ---- the private daemon of --model ----------------------------------------------------------- */

typedef struct priv_daemon {
    pid_t pid;
    char dir[64];  /* its temporary data folder */
    char url[64];
} priv_daemon;

/* statesoupd beside this program (installed) or one folder up (the build tree). */
static ss_err find_daemon(char *path, size_t cap)
{
    char self[PATH_MAX - 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return ss_fail(SS_ERR_IO, "cannot find this program's path");
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash) *slash = '\0';
    snprintf(path, cap, "%s/statesoupd", self);
    if (access(path, X_OK) == 0) return SS_OK;
    snprintf(path, cap, "%s/../statesoupd", self);
    if (access(path, X_OK) == 0) return SS_OK;
    return ss_fail(SS_ERR_NOT_FOUND, "statesoupd is not beside %s (needed by --model; or give "
                                     "--url of a running daemon)", self);
}

/* Wait for "listening on http://127.0.0.1:PORT" and "statesoupd: ready" on the daemon's stderr. */
static ss_err await_daemon(priv_daemon *d, int fd)
{
    FILE *f = fdopen(fd, "r");
    char line[1024];
    int port = 0, ready = 0;
    const char *tag = "listening on http://127.0.0.1:";
    while (f && !ready && fgets(line, sizeof line, f)) {
        const char *l = strstr(line, tag);
        if (l) port = atoi(l + strlen(tag));
        if (!strcmp(line, "statesoupd: ready\n")) ready = 1;
        else if (strstr(line, "error") || strstr(line, "cannot")) fputs(line, stderr);
    }
    if (f) fclose(f); /* from here on its stderr goes nowhere: it writes with no reader (EPIPE) */
    if (!ready || port <= 0)
        return ss_fail(SS_ERR_IO, "the private statesoupd did not start (its messages above)");
    snprintf(d->url, sizeof d->url, "http://127.0.0.1:%d", port);
    return SS_OK;
}

static ss_err daemon_start(priv_daemon *d, const char *model, const char *key)
{
    char exe[PATH_MAX];
    ss_err err = find_daemon(exe, sizeof exe);
    if (err) return err;
    snprintf(d->dir, sizeof d->dir, "/tmp/statesoup-eval-XXXXXX");
    if (!mkdtemp(d->dir)) return ss_fail(SS_ERR_IO, "mkdtemp: %s", strerror(errno));
    int pfd[2];
    if (pipe(pfd)) return ss_fail(SS_ERR_IO, "pipe: %s", strerror(errno));
    char data[96];
    snprintf(data, sizeof data, "%s/data", d->dir);
    d->pid = fork();
    if (d->pid == 0) {
        dup2(pfd[1], 2);
        close(pfd[0]);
        close(pfd[1]);
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) dup2(nul, 1);
        if (key)
            execl(exe, exe, "--model", model, "--data", data, "--listen", "127.0.0.1:0",
                  "--retrieval-key", key, (char *)NULL);
        else
            execl(exe, exe, "--model", model, "--data", data, "--listen", "127.0.0.1:0",
                  (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    if (d->pid < 0) {
        close(pfd[0]);
        return ss_fail(SS_ERR_IO, "fork: %s", strerror(errno));
    }
    return await_daemon(d, pfd[0]);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(p);
    return 0;
}

static void daemon_stop(priv_daemon *d)
{
    if (d->pid > 0) {
        kill(d->pid, SIGTERM);
        waitpid(d->pid, NULL, 0);
    }
    if (d->dir[0]) nftw(d->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- output ---------------------------------------------------------------------------------- */

static void progress(const char *what, int done, int total)
{
    if (!isatty(2)) return;
    int w = 40, fill = total ? done * w / total : w;
    fprintf(stderr, "\r%-15s [%.*s%*s] %d/%d tasks", what, fill,
            "########################################", w - fill, "", done, total);
    if (done == total) fputc('\n', stderr);
}

static void print_table(const eval_summary *s, int n, int n_tasks)
{
    static const char *const head[] = {"CONDITION", "TASKS", "LOSS", "+/-",
                                       "EXACT %", "+/-", "START STATE"};
    static const int right[] = {0, 1, 1, 1, 1, 1, 0};
    cli_table *t = cli_table_new(7, head, right);
    for (int i = 0; t && i < n; i++) {
        char tasks[16], loss[32], lci[32], ex[32], eci[32];
        snprintf(tasks, sizeof tasks, "%d", s[i].n);
        snprintf(loss, sizeof loss, "%.3f", s[i].loss);
        snprintf(lci, sizeof lci, "%.3f", s[i].loss_ci);
        snprintf(ex, sizeof ex, "%.1f", 100 * s[i].exact);
        snprintf(eci, sizeof eci, "%.1f", 100 * s[i].exact_ci);
        const char *cells[] = {s[i].name, tasks, loss, lci, ex, eci, s[i].help};
        cli_table_add(t, cells);
    }
    printf("%d tasks; loss of the answer in nats/token and greedy exact match, mean +/- 95%% "
           "interval\n", n_tasks);
    if (t) cli_table_print(t);
    cli_table_free(t);
}

/* {"tasks", "conditions": [{name, help, n, loss, loss_ci95, exact, exact_ci95, per_task}]} */
static json_t *summary_json(const eval_summary *s, int n, int n_tasks, double **loss, int **exact,
                            const int *sel)
{
    json_t *arr = json_array();
    for (int i = 0; arr && i < n; i++) {
        json_t *pt = json_array();
        for (int t = 0; pt && t < n_tasks; t++) {
            double l = loss[sel[i]][t];
            json_array_append_new(pt, isnan(l) ? json_null()
                                               : json_pack("{s:f,s:b}", "loss", l, "exact",
                                                           exact[sel[i]][t]));
        }
        json_array_append_new(arr, json_pack("{s:s,s:s,s:i,s:f,s:f,s:f,s:f,s:o}", "name",
                                             s[i].name, "help", s[i].help, "n", s[i].n, "loss",
                                             s[i].loss, "loss_ci95", s[i].loss_ci, "exact",
                                             s[i].exact, "exact_ci95", s[i].exact_ci, "per_task",
                                             pt));
    }
    return json_pack("{s:i,s:s,s:o}", "tasks", n_tasks, "loss_unit", "nats/token", "conditions",
                     arr);
}

/* ---- the command ----------------------------------------------------------------------------- */

static const char eval_help[] =
    "usage: statesoup eval --tasks FILE [--url URL | --model DIR] [--conditions A,B,...]\n"
    "                      [--limit N] [--svg FILE] [--json]\n"
    "       statesoup eval --make-dict-tasks N --words FILE [--pairs P] [--parts K] [--seed S]\n"
    "\n"
    "The State Soup table: for every task of a JSONL task file ({\"parts\": [text...], \"query\",\n"
    "\"answer\", \"whole\"?, \"id\"?}, docs/eval.md) and every condition (a starting state: zero,\n"
    "each part alone, their mean and sum, one pass over the whole context, a soup with another\n"
    "task's state...), the loss of the answer after the query (nats/token, /v1/score) and greedy\n"
    "exact match (/v1/generate, temperature 0). Prints the mean and 95% interval per condition.\n"
    "Runs through a daemon's public API; the states it stores (tag statesoup-eval) are deleted at\n"
    "the end.\n"
    "\n"
    "  --tasks FILE         the task file\n"
    "  --model DIR          start a private statesoupd on DIR (loopback, temporary catalog)\n"
    "                       instead of using the daemon at --url\n"
    "  --conditions LIST    comma-separated conditions to run (default: all; --list-conditions)\n"
    "  --list-conditions    print the conditions and what each starts from\n"
    "  --limit N            only the first N tasks\n"
    "  --svg FILE           also draw the table as an SVG bar chart\n"
    "  --make-dict-tasks N  write N dictionary tasks (models/demo-mamba1/README.md) as JSONL to\n"
    "                       stdout, from --words FILE, --pairs P (8) split into --parts K (2),\n"
    "                       --seed S (1): the same seed gives the same file\n"
    "  --query-block        with --make-dict-tasks: P tasks per dictionary, the Query block\n"
    "                       up to each key with the earlier keys answered (as in training)\n"
    "  --retrieval-keys LIST  with --model: instead of the table, the retrieval accuracy of\n"
    "                       each key kind (ssm_slow, ssm_norm, projection, final_hidden; a\n"
    "                       private daemon per kind): how often a search among every task's part\n"
    "                       states ranks the part holding the answer first / in the first 5\n"
    "                       for the task's query, and one of the task's own parts for its\n"
    "                       whole context (docs/retrieval.md)\n"
    CLI_CONN_HELP
    "\n"
    "examples:\n"
    "  statesoup eval --model models/demo-mamba1 --tasks models/demo-mamba1/dict-tasks.jsonl\n"
    "  statesoup eval --make-dict-tasks 300 --words models/demo-mamba1/words.txt > tasks.jsonl\n"
    "  statesoup eval --model models/demo-mamba1 --tasks models/demo-mamba1/dict-tasks.jsonl \\\n"
    "      --retrieval-keys ssm_slow,ssm_norm,projection,final_hidden\n";

enum {
    OPT_TASKS = CLI_OPT_FIRST_LOCAL,
    OPT_MODEL,
    OPT_CONDITIONS,
    OPT_LIST,
    OPT_LIMIT,
    OPT_SVG,
    OPT_MAKE,
    OPT_WORDS,
    OPT_PAIRS,
    OPT_PARTS,
    OPT_SEED,
    OPT_QUERY_BLOCK,
    OPT_KEYS,
};

typedef struct eval_opts {
    cli_common o;
    const char *tasks, *model, *conditions, *svg, *words, *keys;
    double limit, make, pairs, parts, seed;
    int list, query_block;
} eval_opts;

/* sel[] = indexes into conds of the chosen conditions; returns how many, or -1 (printed). */
static int pick_conditions(const char *list, int *sel)
{
    if (!list) {
        for (int i = 0; i < N_CONDS; i++) sel[i] = i;
        return N_CONDS;
    }
    int n = 0;
    char *copy = strdup(list);
    for (char *save = NULL, *tok = copy ? strtok_r(copy, ", ", &save) : NULL; tok;
         tok = strtok_r(NULL, ", ", &save)) {
        int found = -1;
        for (int i = 0; i < N_CONDS; i++)
            if (!strcmp(conds[i].name, tok)) found = i;
        if (found < 0 || n == N_CONDS) {
            cli_usage("eval", "unknown or repeated condition \"%s\" (--list-conditions)", tok);
            free(copy);
            return -1;
        }
        sel[n++] = found;
    }
    free(copy);
    if (n == 0) cli_usage("eval", "--conditions names none");
    return n ? n : -1;
}

static int parse_opts(int argc, char **argv, eval_opts *e)
{
    static const struct option opts[] = {
        {"tasks", required_argument, NULL, OPT_TASKS},
        {"model", required_argument, NULL, OPT_MODEL},
        {"conditions", required_argument, NULL, OPT_CONDITIONS},
        {"list-conditions", no_argument, NULL, OPT_LIST},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"svg", required_argument, NULL, OPT_SVG},
        {"make-dict-tasks", required_argument, NULL, OPT_MAKE},
        {"words", required_argument, NULL, OPT_WORDS},
        {"pairs", required_argument, NULL, OPT_PAIRS},
        {"parts", required_argument, NULL, OPT_PARTS},
        {"seed", required_argument, NULL, OPT_SEED},
        {"query-block", no_argument, NULL, OPT_QUERY_BLOCK},
        {"retrieval-keys", required_argument, NULL, OPT_KEYS},
        CLI_CONN_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_common_opt(&e->o, c, optarg)) continue;
        int bad = 0;
        switch (c) {
        case OPT_TASKS: e->tasks = optarg; break;
        case OPT_MODEL: e->model = optarg; break;
        case OPT_CONDITIONS: e->conditions = optarg; break;
        case OPT_LIST: e->list = 1; break;
        case OPT_QUERY_BLOCK: e->query_block = 1; break;
        case OPT_KEYS: e->keys = optarg; break;
        case OPT_SVG: e->svg = optarg; break;
        case OPT_WORDS: e->words = optarg; break;
        case OPT_LIMIT: bad = cli_parse_num("eval", "--limit", optarg, 1, 1e9, &e->limit); break;
        case OPT_MAKE: bad = cli_parse_num("eval", "--make-dict-tasks", optarg, 1, 1e7, &e->make);
            break;
        case OPT_PAIRS: bad = cli_parse_num("eval", "--pairs", optarg, 2, 64, &e->pairs); break;
        case OPT_PARTS: bad = cli_parse_num("eval", "--parts", optarg, 1, 64, &e->parts); break;
        case OPT_SEED: bad = cli_parse_num("eval", "--seed", optarg, 0, 9007199254740992.0,
                                           &e->seed);
            break;
        case 'h': fputs(eval_help, stdout); return -1;
        default: return cli_bad_option("eval");
        }
        if (bad) return CLI_USAGE;
    }
    if (optind < argc) return cli_usage("eval", "unexpected argument %s", argv[optind]);
    if (e->model && e->o.url) return cli_usage("eval", "give --model or --url, not both");
    if (e->keys && !e->model)
        return cli_usage("eval", "--retrieval-keys starts a daemon per key: it needs --model");
    return CLI_OK;
}

static int make_tasks(const eval_opts *e)
{
    if (!e->words) return cli_usage("eval", "--make-dict-tasks needs --words FILE");
    eval_gen_params p = {.words = e->words, .n_tasks = (int)e->make,
                         .n_pairs = e->pairs > 0 ? (int)e->pairs : 8,
                         .n_parts = e->parts > 0 ? (int)e->parts : 2,
                         .seed = e->seed >= 0 ? (uint64_t)e->seed : 1,
                         .query_block = e->query_block};
    if (p.n_parts > p.n_pairs) return cli_usage("eval", "--parts must not exceed --pairs");
    return eval_generate_dict(&p, stdout) ? cli_fail("eval") : CLI_OK;
}

/*
 * Store every task's states first (a condition may use another task's), then measure every
 * selected condition on every task into loss[c][t] (NAN: not applicable) and exact[c][t].
 */
static ss_err store_all(eval_run *r)
{
    for (int t = 0; t < r->n_tasks; t++) {
        ss_err err = prepare_task(r, t);
        if (err) return err;
        progress("storing states", t + 1, r->n_tasks);
    }
    return SS_OK;
}

/* Retrieval accuracy of every task into r->top1 / r->top5 (once every part is stored). */
static ss_err retrieve_all(eval_run *r)
{
    for (int t = 0; t < r->n_tasks; t++) {
        ss_err err = retrieval_hits(r, t, 0, &r->top1[t], &r->top5[t]);
        if (!err) err = retrieval_hits(r, t, 1, &r->ctop1[t], &r->ctop5[t]);
        if (err) return err;
        progress("retrieving", t + 1, r->n_tasks);
    }
    return SS_OK;
}

static int is_retrieval(const eval_cond *c)
{
    return c->start == start_retrieved;
}

static ss_err run_all(eval_run *r, const int *sel, int n_sel, double **loss, int **exact)
{
    ss_err err = store_all(r);
    if (err) return err;
    for (int i = 0; i < n_sel && !err; i++)
        if (is_retrieval(&conds[sel[i]])) {
            err = retrieve_all(r);
            break;
        }
    if (err) return err;
    for (int t = 0; t < r->n_tasks; t++) {
        for (int i = 0; i < n_sel; i++) {
            loss[sel[i]][t] = NAN;
            err = measure(r, &conds[sel[i]], t, &loss[sel[i]][t], &exact[sel[i]][t]);
            if (err && err != SS_ERR_UNSUPPORTED) return err;
        }
        progress("measuring", t + 1, r->n_tasks);
    }
    return SS_OK;
}

static void summarize(const int *sel, int n_sel, int n_tasks, double **loss, int **exact,
                      eval_summary *s, double *tmp)
{
    for (int i = 0; i < n_sel; i++) {
        const eval_cond *c = &conds[sel[i]];
        int n = 0;
        for (int t = 0; t < n_tasks; t++)
            if (!isnan(loss[sel[i]][t])) tmp[n++] = loss[sel[i]][t];
        s[i] = (eval_summary){.name = c->name, .help = c->help, .n = n};
        eval_mean_ci(tmp, n, &s[i].loss, &s[i].loss_ci);
        n = 0;
        for (int t = 0; t < n_tasks; t++)
            if (!isnan(loss[sel[i]][t])) tmp[n++] = exact[sel[i]][t];
        eval_mean_ci(tmp, n, &s[i].exact, &s[i].exact_ci);
    }
}

/* {"key", "n", "candidates", "top1", "top1_ci95", "top5", "top5_ci95", "context_top1", ...},
 * or NULL when not measured. */
static json_t *retrieval_json(const eval_run *r)
{
    if (!r->top1 || r->top1[0] < 0) return NULL;
    double *tmp = malloc((size_t)r->n_tasks * sizeof *tmp), m[4], c[4];
    int n = 0;
    if (!tmp) return NULL;
    const int *x[4] = {r->top1, r->top5, r->ctop1, r->ctop5};
    for (int i = 0; i < 4; i++) rate(x[i], r->n_tasks, tmp, &m[i], &c[i], &n);
    free(tmp);
    int parts = 0; /* distinct part states: the candidates */
    for (int t = 0; t < r->n_tasks; t++)
        if (t == 0 || !same_contexts(&r->tasks[t], &r->tasks[t - 1])) parts += r->tasks[t].n_parts;
    return json_pack("{s:s,s:i,s:i,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "key", r->key, "n", n,
                     "candidates", parts, "top1", m[0], "top1_ci95", c[0], "top5", m[1],
                     "top5_ci95", c[1], "context_top1", m[2], "context_top1_ci95", c[2],
                     "context_top5", m[3], "context_top5_ci95", c[3]);
}

/* "12.3 +/- 4.5" of a retrieval_json field (a fraction) as a percentage. */
static const char *pct(const json_t *ret, const char *field, char *buf, size_t cap)
{
    char ci[64];
    snprintf(ci, sizeof ci, "%s_ci95", field);
    snprintf(buf, cap, "%.1f +/- %.1f", 100 * json_number_value(json_object_get(ret, field)),
             100 * json_number_value(json_object_get(ret, ci)));
    return buf;
}

/* One line per key kind: KEY, TASKS, CANDIDATES, TOP-1 %, TOP-5 % by query and by context. */
static void print_retrieval(json_t *const *rets, int n)
{
    static const char *const head[] = {"KEY", "TASKS", "PARTS", "QUERY TOP-1 %", "QUERY TOP-5 %",
                                       "CONTEXT TOP-1 %", "CONTEXT TOP-5 %"};
    static const int right[] = {0, 1, 1, 1, 1, 1, 1};
    cli_table *t = cli_table_new(7, head, right);
    for (int i = 0; t && i < n; i++) {
        char tasks[16], parts[16], a[4][48];
        snprintf(tasks, sizeof tasks, "%lld",
                 (long long)json_integer_value(json_object_get(rets[i], "n")));
        snprintf(parts, sizeof parts, "%lld",
                 (long long)json_integer_value(json_object_get(rets[i], "candidates")));
        const char *cells[] = {json_string_value(json_object_get(rets[i], "key")), tasks, parts,
                               pct(rets[i], "top1", a[0], sizeof a[0]),
                               pct(rets[i], "top5", a[1], sizeof a[1]),
                               pct(rets[i], "context_top1", a[2], sizeof a[2]),
                               pct(rets[i], "context_top5", a[3], sizeof a[3])};
        cli_table_add(t, cells);
    }
    printf("retrieval among every task's part states: by the task's query, the part that holds "
           "the answer;\nby the task's whole context, one of its own parts (mean +/- 95%% "
           "interval)\n");
    if (t) cli_table_print(t);
    cli_table_free(t);
}

static int report(const eval_opts *e, const eval_run *r, const int *sel, int n_sel, int n_tasks,
                  double **loss, int **exact)
{
    eval_summary s[N_CONDS];
    double *tmp = malloc((size_t)n_tasks * sizeof *tmp);
    if (!tmp) return cli_fail("eval");
    summarize(sel, n_sel, n_tasks, loss, exact, s, tmp);
    free(tmp);
    /* conditions that applied to no task are left out of the table and the chart */
    int k = 0, ksel[N_CONDS];
    for (int i = 0; i < n_sel; i++)
        if (s[i].n > 0) ksel[k] = sel[i], s[k++] = s[i];
    json_t *ret = retrieval_json(r);
    if (e->o.json) {
        json_t *j = summary_json(s, k, n_tasks, loss, exact, ksel);
        if (!j) return cli_fail("eval");
        if (ret) json_object_set(j, "retrieval", ret);
        cli_print_json(j);
        json_decref(j);
    } else {
        print_table(s, k, n_tasks);
        if (ret) print_retrieval(&ret, 1);
    }
    json_decref(ret);
    if (e->svg && eval_write_svg(e->svg, e->tasks, s, k)) return cli_fail("eval");
    return CLI_OK;
}

/* Allocate the per-task arrays of a run (run_free frees them). */
static ss_err run_alloc(eval_run *r)
{
    size_t nt = (size_t)r->n_tasks;
    r->part_ids = calloc(nt, sizeof *r->part_ids);
    r->whole_ids = calloc(nt, sizeof *r->whole_ids);
    r->answer = calloc(nt, sizeof *r->answer);
    r->n_answer = calloc(nt, sizeof *r->n_answer);
    r->top1 = malloc(nt * sizeof *r->top1);
    r->top5 = malloc(nt * sizeof *r->top5);
    r->ctop1 = malloc(nt * sizeof *r->ctop1);
    r->ctop5 = malloc(nt * sizeof *r->ctop5);
    if (!r->part_ids || !r->whole_ids || !r->answer || !r->n_answer || !r->top1 || !r->top5 ||
        !r->ctop1 || !r->ctop5)
        return ss_fail(SS_ERR_NOMEM, "out of memory");
    for (size_t t = 0; t < nt; t++) r->top1[t] = r->top5[t] = r->ctop1[t] = r->ctop5[t] = -1;
    return SS_OK;
}

static int evaluate(const eval_opts *e, eval_run *r, const int *sel, int n_sel)
{
    double *loss[N_CONDS] = {0};
    int *exact[N_CONDS] = {0}, rc = CLI_FAIL;
    size_t nt = (size_t)r->n_tasks;
    int ok = run_alloc(r) == SS_OK;
    for (int i = 0; ok && i < n_sel; i++) {
        loss[sel[i]] = calloc(nt, sizeof(double));
        exact[sel[i]] = calloc(nt, sizeof(int));
        ok = loss[sel[i]] && exact[sel[i]];
    }
    if (!ok) {
        ss_fail(SS_ERR_NOMEM, "out of memory");
        rc = cli_fail("eval");
    } else if (run_all(r, sel, n_sel, loss, exact)) {
        rc = cli_fail("eval");
    } else {
        rc = report(e, r, sel, n_sel, r->n_tasks, loss, exact);
    }
    if (r->part_ids && r->whole_ids) cleanup_states(r);
    for (int i = 0; i < N_CONDS; i++) free(loss[i]), free(exact[i]);
    run_free(r);
    return rc;
}

/*
 * --retrieval-keys: for each key kind in e->keys, a private daemon on e->model serving that kind,
 * every task's states stored in it, and the retrieval accuracy of every task; one table (or
 * --json: {"tasks", "retrieval_keys": [retrieval_json...]}).
 */
static int compare_keys(const eval_opts *e, eval_run *r)
{
    json_t *rets[SS_KEY__COUNT] = {0};
    int n = 0, rc = CLI_FAIL;
    char *copy = strdup(e->keys);
    for (char *save = NULL, *tok = copy ? strtok_r(copy, ", ", &save) : NULL; tok;
         tok = strtok_r(NULL, ", ", &save)) {
        ss_key_kind kind;
        if (ss_key_kind_parse(tok, &kind) || n == SS_KEY__COUNT) {
            rc = cli_usage("eval", "--retrieval-keys: %s", n == SS_KEY__COUNT ? "too many"
                                                                              : ss_errmsg());
            goto out;
        }
        priv_daemon d = {0};
        cli_common o = e->o;
        ss_err err = daemon_start(&d, e->model, tok);
        if (!err) {
            o.url = d.url;
            err = cli_conn_init(&r->conn, &o);
        }
        if (!err) err = run_alloc(r);
        if (!err) err = store_all(r);
        if (!err) err = retrieve_all(r);
        if (!err && !(rets[n++] = retrieval_json(r))) err = ss_fail(SS_ERR_NOMEM, "out of memory");
        cli_conn_free(&r->conn);
        run_free(r);
        r->part_ids = NULL, r->whole_ids = NULL, r->answer = NULL, r->n_answer = NULL;
        r->top1 = r->top5 = r->ctop1 = r->ctop5 = NULL;
        daemon_stop(&d); /* its catalog goes with it */
        if (err) {
            rc = cli_fail("eval");
            goto out;
        }
    }
    if (e->o.json) {
        json_t *arr = json_array();
        for (int i = 0; arr && i < n; i++) json_array_append(arr, rets[i]);
        json_t *j = json_pack("{s:i,s:o}", "tasks", r->n_tasks, "retrieval_keys", arr);
        if (j) cli_print_json(j);
        json_decref(j);
    } else {
        print_retrieval(rets, n);
    }
    rc = CLI_OK;
out:
    for (int i = 0; i < n; i++) json_decref(rets[i]);
    free(copy);
    return rc;
}

int cmd_eval(int argc, char **argv)
{
    eval_opts e = {.limit = 0, .make = 0, .pairs = 0, .parts = 0, .seed = -1};
    int rc = parse_opts(argc, argv, &e), sel[N_CONDS];
    if (rc < 0) return CLI_OK; /* --help */
    if (rc) return rc;
    if (e.list) {
        for (int i = 0; i < N_CONDS; i++) printf("%-11s %s\n", conds[i].name, conds[i].help);
        return CLI_OK;
    }
    if (e.make > 0) return make_tasks(&e);
    if (!e.tasks) return cli_usage("eval", "give --tasks FILE (or --make-dict-tasks N)");
    int n_sel = pick_conditions(e.conditions, sel);
    if (n_sel < 0) return CLI_USAGE;
    eval_run r = {0};
    if (eval_tasks_load(e.tasks, &r.tasks, &r.n_tasks)) return cli_fail("eval");
    int n_all = r.n_tasks;
    if (e.limit > 0 && e.limit < r.n_tasks) r.n_tasks = (int)e.limit;
    if (e.keys) {
        rc = compare_keys(&e, &r);
        eval_tasks_free(r.tasks, n_all);
        return rc;
    }
    priv_daemon d = {0};
    cli_common o = e.o;
    rc = CLI_FAIL;
    if (e.model) {
        if (daemon_start(&d, e.model, NULL)) {
            cli_fail("eval");
            goto out;
        }
        o.url = d.url;
    }
    if (cli_conn_init(&r.conn, &o)) {
        rc = cli_fail("eval");
        goto out;
    }
    rc = evaluate(&e, &r, sel, n_sel);
    cli_conn_free(&r.conn);
out:
    if (e.model) daemon_stop(&d);
    eval_tasks_free(r.tasks, n_all);
    return rc;
}
