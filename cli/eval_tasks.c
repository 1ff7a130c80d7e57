/*
 * eval_tasks.c - what `statesoup eval` reads and writes besides the daemon's answers: the JSONL
 * task file, the dictionary-task generator (a fixed seed gives the same file everywhere: the
 * PRNG is our own splitmix64, not the C library's), the statistics and the SVG chart.
 */
#include "eval.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ss_util.h"

#define EVAL_MAX_PARTS 64
#define EVAL_MAX_LINE ((size_t)1 << 24)

void eval_tasks_free(eval_task *tasks, int n)
{
    if (!tasks) return;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < tasks[i].n_parts; j++) free(tasks[i].parts[j]);
        free(tasks[i].parts);
        free(tasks[i].whole);
        free(tasks[i].query);
        free(tasks[i].answer);
        free(tasks[i].id);
    }
    free(tasks);
}

/* A required string field of task object o (line `line`), copied into *out. */
static ss_err task_str(const json_t *o, const char *key, int line, int required, char **out)
{
    const json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v && !required) return SS_OK;
    if (!json_is_string(v))
        return ss_fail(SS_ERR_FORMAT, "task line %d: \"%s\" must be a string", line, key);
    *out = strdup(json_string_value(v));
    return *out ? SS_OK : ss_fail(SS_ERR_NOMEM, "out of memory");
}

/* parts -> t->parts, and whole (given, else the parts concatenated). */
static ss_err task_parts(const json_t *o, int line, eval_task *t)
{
    const json_t *parts = json_object_get(o, "parts");
    size_t np = json_array_size(parts);
    if (!json_is_array(parts) || np == 0)
        return ss_fail(SS_ERR_FORMAT, "task line %d: \"parts\" must be a non-empty array of "
                                      "strings", line);
    if (np > EVAL_MAX_PARTS)
        return ss_fail(SS_ERR_INVALID, "task line %d: %zu parts (at most %d)", line, np,
                       EVAL_MAX_PARTS);
    t->parts = calloc(np, sizeof *t->parts);
    if (!t->parts) return ss_fail(SS_ERR_NOMEM, "out of memory");
    size_t total = 1;
    for (size_t j = 0; j < np; j++) {
        const char *s = json_string_value(json_array_get(parts, j));
        if (!s || !*s)
            return ss_fail(SS_ERR_FORMAT, "task line %d: part %zu is not a non-empty string",
                           line, j);
        if (!(t->parts[j] = strdup(s))) return ss_fail(SS_ERR_NOMEM, "out of memory");
        t->n_parts++;
        total += strlen(s);
    }
    ss_err err = task_str(o, "whole", line, 0, &t->whole);
    if (err || t->whole) return err;
    if (!(t->whole = malloc(total))) return ss_fail(SS_ERR_NOMEM, "out of memory");
    t->whole[0] = '\0';
    for (int j = 0; j < t->n_parts; j++) strcat(t->whole, t->parts[j]);
    return SS_OK;
}

static ss_err task_parse(const char *text, int line, eval_task *t)
{
    json_error_t je;
    json_t *o = json_loads(text, 0, &je);
    ss_err err = SS_OK;
    if (!json_is_object(o)) {
        err = ss_fail(SS_ERR_FORMAT, "task line %d is not a JSON object (%s)", line,
                      o ? "another JSON value" : je.text);
        goto out;
    }
    if ((err = task_parts(o, line, t))) goto out;
    if ((err = task_str(o, "query", line, 1, &t->query))) goto out;
    if ((err = task_str(o, "answer", line, 1, &t->answer))) goto out;
    if (!*t->answer) {
        err = ss_fail(SS_ERR_FORMAT, "task line %d: \"answer\" is empty", line);
        goto out;
    }
    if ((err = task_str(o, "id", line, 0, &t->id))) goto out;
    if (!t->id) {
        char buf[32];
        snprintf(buf, sizeof buf, "line %d", line);
        if (!(t->id = strdup(buf))) err = ss_fail(SS_ERR_NOMEM, "out of memory");
    }
out:
    json_decref(o);
    return err;
}

ss_err eval_tasks_load(const char *path, eval_task **tasks, int *n)
{
    FILE *f = fopen(path, "r");
    if (!f) return ss_fail(SS_ERR_IO, "cannot open task file %s: %s", path, strerror(errno));
    eval_task *v = NULL;
    int nv = 0, cap = 0, line = 0;
    char *buf = NULL;
    size_t bcap = 0;
    ssize_t len;
    ss_err err = SS_OK;
    while ((len = getline(&buf, &bcap, f)) >= 0) {
        line++;
        if ((size_t)len > EVAL_MAX_LINE) {
            err = ss_fail(SS_ERR_INVALID, "task line %d is longer than %zu bytes", line,
                          EVAL_MAX_LINE);
            break;
        }
        if (strspn(buf, " \t\r\n") == (size_t)len) continue;
        if (nv == cap) {
            int nc = cap ? cap * 2 : 64;
            eval_task *nt = realloc(v, (size_t)nc * sizeof *nt);
            if (!nt) {
                err = ss_fail(SS_ERR_NOMEM, "out of memory");
                break;
            }
            v = nt;
            cap = nc;
        }
        memset(&v[nv], 0, sizeof v[nv]);
        nv++;
        if ((err = task_parse(buf, line, &v[nv - 1]))) break;
    }
    if (!err && ferror(f)) err = ss_fail(SS_ERR_IO, "reading %s: %s", path, strerror(errno));
    if (!err && nv == 0) err = ss_fail(SS_ERR_INVALID, "task file %s holds no tasks", path);
    free(buf);
    fclose(f);
    if (err) {
        eval_tasks_free(v, nv);
        return err;
    }
    *tasks = v;
    *n = nv;
    return SS_OK;
}

/* ---- the dictionary-task generator ----------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) without modulo bias. */
static uint32_t rand_below(uint64_t *s, uint32_t n)
{
    uint64_t lim = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do r = splitmix64(s);
    while (r >= lim);
    return (uint32_t)(r % n);
}

/* The words of the file, one a line (blank lines skipped); *words[i] point into *text. */
static ss_err load_words(const char *path, char **text, char ***words, int *n)
{
    FILE *f = fopen(path, "r");
    if (!f) return ss_fail(SS_ERR_IO, "cannot open words file %s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t cap = 0, len = 0;
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        char *nb = realloc(buf, len + got + 1);
        if (!nb) {
            free(buf);
            fclose(f);
            return ss_fail(SS_ERR_NOMEM, "out of memory");
        }
        buf = nb;
        memcpy(buf + len, chunk, got);
        len += got;
        cap = len + 1;
    }
    fclose(f);
    (void)cap;
    if (!buf) return ss_fail(SS_ERR_INVALID, "words file %s is empty", path);
    buf[len] = '\0';
    char **w = malloc((len / 2 + 2) * sizeof *w);
    if (!w) {
        free(buf);
        return ss_fail(SS_ERR_NOMEM, "out of memory");
    }
    int nw = 0;
    for (char *save = NULL, *tok = strtok_r(buf, "\r\n", &save); tok;
         tok = strtok_r(NULL, "\r\n", &save)) {
        if (*tok) w[nw++] = tok;
    }
    *text = buf;
    *words = w;
    *n = nw;
    return SS_OK;
}

/*
 * One task as a JSON object: pairs are keys[i] = vals[i]; the Query block is order[0..q] (keys
 * before q answered) and asks key order[q]. sub < 0: id "dict-N", else "dict-N.sub".
 */
static json_t *dict_task(int id, int sub, char **keys, char **vals, int n_pairs, int n_parts,
                         const int *order, int q)
{
    json_t *parts = json_array();
    char *whole = NULL;
    size_t wl = 0;
    FILE *wf = open_memstream(&whole, &wl);
    if (!parts || !wf) {
        if (wf) fclose(wf);
        free(whole);
        json_decref(parts);
        return NULL;
    }
    fputs("Dictionary:\n", wf);
    for (int p = 0, at = 0; p < n_parts; p++) {
        int end = (int)((long)n_pairs * (p + 1) / n_parts);
        char *part = NULL;
        size_t pl = 0;
        FILE *pf = open_memstream(&part, &pl);
        if (!pf) break;
        fputs("Dictionary:\n", pf);
        for (; at < end; at++) {
            fprintf(pf, "%s = %s\n", keys[at], vals[at]);
            fprintf(wf, "%s = %s\n", keys[at], vals[at]);
        }
        fclose(pf);
        json_array_append_new(parts, json_string(part));
        free(part);
    }
    fclose(wf);
    char *query = NULL, answer[128], tid[32];
    size_t ql = 0;
    FILE *qf = open_memstream(&query, &ql);
    if (!qf) {
        free(whole);
        json_decref(parts);
        return NULL;
    }
    fputs("\nQuery:\n", qf);
    for (int k = 0; k < q; k++) fprintf(qf, "%s = %s\n", keys[order[k]], vals[order[k]]);
    fprintf(qf, "%s =", keys[order[q]]);
    fclose(qf);
    snprintf(answer, sizeof answer, " %s", vals[order[q]]);
    if (sub < 0) snprintf(tid, sizeof tid, "dict-%d", id);
    else snprintf(tid, sizeof tid, "dict-%d.%d", id, sub);
    json_t *t = json_pack("{s:s,s:o,s:s,s:s,s:s}", "id", tid, "parts", parts, "whole", whole,
                          "query", query, "answer", answer);
    free(query);
    free(whole);
    return t;
}

ss_err eval_generate_dict(const eval_gen_params *p, FILE *f)
{
    if (p->n_pairs < 2 || p->n_pairs > 64 || p->n_parts < 1 || p->n_parts > p->n_pairs ||
        p->n_tasks < 1)
        return ss_fail(SS_ERR_INVALID, "dictionary tasks: 2..64 pairs, 1..pairs parts, >= 1 task");
    char *text = NULL, **words = NULL;
    int nw = 0;
    ss_err err = load_words(p->words, &text, &words, &nw);
    if (err) return err;
    if (nw < 2 * p->n_pairs) {
        err = ss_fail(SS_ERR_INVALID, "words file %s has %d words, %d pairs need %d", p->words,
                      nw, p->n_pairs, 2 * p->n_pairs);
        goto out;
    }
    uint64_t s = p->seed;
    for (int t = 0; t < p->n_tasks && !err; t++) {
        /* 2 * n_pairs distinct words: a partial Fisher-Yates shuffle */
        for (int i = 0; i < 2 * p->n_pairs; i++) {
            int j = i + (int)rand_below(&s, (uint32_t)(nw - i));
            char *tmp = words[i];
            words[i] = words[j];
            words[j] = tmp;
        }
        int order[64];
        if (!p->query_block) {
            order[0] = (int)rand_below(&s, (uint32_t)p->n_pairs);
        } else { /* the Query block's order: a shuffle of the pairs */
            for (int i = 0; i < p->n_pairs; i++) order[i] = i;
            for (int i = p->n_pairs - 1; i > 0; i--) {
                int j = (int)rand_below(&s, (uint32_t)(i + 1)), tmp = order[i];
                order[i] = order[j];
                order[j] = tmp;
            }
        }
        for (int q = 0; q < (p->query_block ? p->n_pairs : 1) && !err; q++) {
            json_t *task = p->query_block
                               ? dict_task(t, q, words, words + p->n_pairs, p->n_pairs,
                                           p->n_parts, order, q)
                               : dict_task(t, -1, words, words + p->n_pairs, p->n_pairs,
                                           p->n_parts, order, 0);
            char *line = task ? json_dumps(task, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
            if (!line) err = ss_fail(SS_ERR_NOMEM, "out of memory");
            else if (fprintf(f, "%s\n", line) < 0) err = ss_fail(SS_ERR_IO, "writing tasks failed");
            free(line);
            json_decref(task);
        }
    }
out:
    free(words);
    free(text);
    return err;
}

/* ---- statistics and the chart ---------------------------------------------------------------- */

void eval_mean_ci(const double *x, int n, double *mean, double *ci95)
{
    double s = 0, ss = 0;
    for (int i = 0; i < n; i++) s += x[i];
    *mean = n ? s / n : NAN;
    for (int i = 0; i < n; i++) ss += (x[i] - *mean) * (x[i] - *mean);
    *ci95 = n > 1 ? 1.96 * sqrt(ss / (n - 1)) / sqrt((double)n) : 0.0;
}

/* s with the five XML special characters escaped, into f. */
static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        default: fputc(*s, f);
        }
    }
}

ss_err eval_write_svg(const char *path, const char *title, const eval_summary *s, int n)
{
    FILE *f = fopen(path, "w");
    if (!f) return ss_fail(SS_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    const int row = 28, left = 170, plot = 460, top = 50;
    double vmax = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(s[i].loss) && s[i].loss + s[i].loss_ci > vmax) vmax = s[i].loss + s[i].loss_ci;
    vmax = vmax > 0 ? ceil(vmax) : 1;
    int h = top + n * row + 50, w = left + plot + 140;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "font-family=\"sans-serif\" font-size=\"13\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
               "<text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">", w, h);
    xml_text(f, title);
    fprintf(f, "</text>\n<text x=\"%d\" y=\"40\" fill=\"#555\">loss of the answer (nats/token, "
               "mean with 95%% interval); right: greedy exact match</text>\n", left);
    for (int i = 0; i < n; i++) {
        int y = top + i * row;
        double v = isfinite(s[i].loss) ? s[i].loss : 0;
        double x1 = plot * v / vmax, lo = plot * fmax(0, v - s[i].loss_ci) / vmax,
               hi = plot * (v + s[i].loss_ci) / vmax;
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">", left - 8, y + 17);
        xml_text(f, s[i].name);
        fprintf(f, "</text>\n<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" "
                   "fill=\"#4c78a8\"/>\n", left, y + 4, x1, row - 8);
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"black\"/>\n",
                left + lo, left + hi, y + row / 2, y + row / 2);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\">%.2f</text>\n", left + hi + 6, y + 17, v);
        fprintf(f, "<text x=\"%d\" y=\"%d\" fill=\"#555\">%.1f %%</text>\n", left + plot + 70,
                y + 17, 100 * s[i].exact);
    }
    int ya = top + n * row + 5;
    fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#888\"/>\n", left,
            left + plot, ya, ya);
    for (int k = 0; k <= 4; k++) {
        double v = vmax * k / 4;
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" fill=\"#555\">%.2g</text>\n",
                left + plot * v / vmax, ya + 18, v);
    }
    fputs("</svg>\n", f);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return ss_fail(SS_ERR_IO, "writing %s failed", path);
    return SS_OK;
}
