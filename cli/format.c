/*
 * format.c - the CLI's human-readable output: aligned tables, state records as "key  value"
 * lines, sizes in binary units. Records reach these printers as JSON whether they came from the
 * daemon or straight from the store, so both paths print identically. Scripts use --json instead.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ss_buf.h"

const char *cli_human_bytes(uint64_t n, char *buf, size_t cap)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
    if (n < 1024) {
        snprintf(buf, cap, "%" PRIu64 " B", n);
        return buf;
    }
    double v = (double)n / 1024;
    int u = 0;
    while (v >= 1023.95 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, cap, "%.1f %s", v, units[u]);
    return buf;
}

struct cli_table {
    int ncol;
    int *right;   /* [ncol] */
    char **cells; /* [nrow + 1][ncol], row 0 = header */
    size_t nrow, cap;
};

cli_table *cli_table_new(int ncol, const char *const *head, const int *right)
{
    cli_table *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->ncol = ncol;
    t->right = calloc((size_t)ncol, sizeof *t->right);
    if (!t->right) goto fail;
    for (int i = 0; i < ncol; i++) t->right[i] = right ? right[i] : 0;
    if (cli_table_add(t, head)) goto fail;
    return t;
fail:
    cli_table_free(t);
    return NULL;
}

ss_err cli_table_add(cli_table *t, const char *const *cells)
{
    if (ss_grow((void **)&t->cells, &t->cap, t->nrow + 1, (size_t)t->ncol * sizeof *t->cells))
        return SS_ERR_NOMEM;
    char **row = t->cells + t->nrow * (size_t)t->ncol;
    for (int i = 0; i < t->ncol; i++) {
        row[i] = strdup(cells[i] ? cells[i] : "");
        if (!row[i]) {
            while (i-- > 0) free(row[i]);
            return ss_fail(SS_ERR_NOMEM, "out of memory");
        }
    }
    t->nrow++;
    return SS_OK;
}

void cli_table_print(const cli_table *t)
{
    size_t *w = calloc((size_t)t->ncol, sizeof *w);
    if (!w) return;
    for (size_t r = 0; r < t->nrow; r++) {
        for (int i = 0; i < t->ncol; i++) {
            size_t n = strlen(t->cells[r * (size_t)t->ncol + i]);
            if (n > w[i]) w[i] = n;
        }
    }
    for (size_t r = 0; r < t->nrow; r++) {
        for (int i = 0; i < t->ncol; i++) {
            const char *s = t->cells[r * (size_t)t->ncol + i];
            int last = i == t->ncol - 1;
            if (t->right[i]) {
                printf("%*s%s", (int)w[i], s, last ? "" : "  ");
            } else if (last) {
                fputs(s, stdout);
            } else {
                printf("%-*s  ", (int)w[i], s);
            }
        }
        putchar('\n');
    }
    free(w);
}

void cli_table_free(cli_table *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->nrow * (size_t)t->ncol; i++) free(t->cells[i]);
    free(t->cells);
    free(t->right);
    free(t);
}

/* "2024-05-01T12:34:56.123456Z" -> "2024-05-01 12:34:56" (UTC, as the header says). */
static void short_time(const char *rfc, char *buf, size_t cap)
{
    if (!rfc || strlen(rfc) < 19) {
        snprintf(buf, cap, "%s", rfc ? rfc : "-");
        return;
    }
    snprintf(buf, cap, "%.10s %.8s", rfc, rfc + 11);
}

/* Tags joined by sep, or "-" when there are none. */
void cli_join_tags(const json_t *tags, const char *sep, char *buf, size_t cap)
{
    size_t i, off = 0;
    json_t *t;
    buf[0] = '\0';
    json_array_foreach(tags, i, t) {
        int n = snprintf(buf + off, cap - off, "%s%s", i ? sep : "", json_string_value(t));
        if (n < 0 || (size_t)n >= cap - off) break;
        off += (size_t)n;
    }
    if (!buf[0]) snprintf(buf, cap, "-");
}

/* A record's tenant for tables: "-" for the default tenant, " (shared)" added when shared. */
static void tenant_cell(const json_t *rec, char *buf, size_t cap)
{
    const char *t = json_string_value(json_object_get(rec, "tenant"));
    snprintf(buf, cap, "%s%s", t ? t : "-",
             json_is_true(json_object_get(rec, "shared")) ? " (shared)" : "");
}

void cli_print_state_table(const json_t *records)
{
    /* TENANT appears when a listed state is another tenant's than the default, or shared */
    static const char *const head[] = {"ID", "NAME", "TENANT", "TAGS", "TOKENS", "SIZE",
                                       "CREATED (UTC)"};
    static const int right[] = {0, 0, 0, 0, 1, 1, 0};
    size_t i;
    json_t *rec;
    int tenants = 0;
    json_array_foreach(records, i, rec) tenants |= json_object_get(rec, "tenant") ||
                                                   json_is_true(json_object_get(rec, "shared"));
    const char *head5[] = {head[0], head[1], head[3], head[4], head[5], head[6]};
    const int right5[] = {0, 0, 0, 1, 1, 0};
    cli_table *t = tenants ? cli_table_new(7, head, right) : cli_table_new(6, head5, right5);
    if (!t) return;
    json_array_foreach(records, i, rec) {
        char tags[1024], tokens[32], size[32], created[64];
        const char *name = json_string_value(json_object_get(rec, "name"));
        cli_join_tags(json_object_get(rec, "tags"), ",", tags, sizeof tags);
        snprintf(tokens, sizeof tokens, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(rec, "n_tokens")));
        cli_human_bytes((uint64_t)json_integer_value(json_object_get(rec, "bytes")), size,
                        sizeof size);
        short_time(json_string_value(json_object_get(rec, "created_at")), created,
                   sizeof created);
        char tenant[128];
        tenant_cell(rec, tenant, sizeof tenant);
        const char *row[] = {json_string_value(json_object_get(rec, "id")), name ? name : "-",
                             tenant, tags, tokens, size, created};
        const char *row5[] = {row[0], row[1], row[3], row[4], row[5], row[6]};
        if (cli_table_add(t, tenants ? row : row5)) break;
    }
    cli_table_print(t);
    cli_table_free(t);
}

void cli_print_record(const json_t *rec)
{
    char buf[1024], hb[32];
    const char *name = json_string_value(json_object_get(rec, "name"));
    printf("id          %s\n", json_string_value(json_object_get(rec, "id")));
    printf("name        %s\n", name ? name : "-");
    if (json_object_get(rec, "tenant") || json_object_get(rec, "shared")) {
        tenant_cell(rec, buf, sizeof buf);
        printf("tenant      %s\n", buf);
    }
    cli_join_tags(json_object_get(rec, "tags"), ", ", buf, sizeof buf);
    printf("tags        %s\n", buf);
    printf("model       %s\n", json_string_value(json_object_get(rec, "model")));
    printf("tokens      %" JSON_INTEGER_FORMAT "\n",
           json_integer_value(json_object_get(rec, "n_tokens")));
    json_int_t bytes = json_integer_value(json_object_get(rec, "bytes"));
    printf("size        %s (%" JSON_INTEGER_FORMAT " bytes)\n",
           cli_human_bytes((uint64_t)bytes, hb, sizeof hb), bytes);
    printf("dtype       %s\n", json_string_value(json_object_get(rec, "dtype")));
    printf("created     %s\n", json_string_value(json_object_get(rec, "created_at")));
    printf("checksum    %s\n", json_string_value(json_object_get(rec, "checksum")));
    json_t *parents = json_object_get(rec, "parents");
    if (json_array_size(parents) == 0) printf("parents     -\n");
    size_t i;
    json_t *p;
    json_array_foreach(parents, i, p) {
        printf("%s%s  %g\n", i ? "            " : "parents     ",
               json_string_value(json_object_get(p, "id")),
               json_number_value(json_object_get(p, "weight")));
    }
    json_t *meta = json_object_get(rec, "metadata");
    char *mt = meta && json_object_size(meta) ? json_dumps(meta, JSON_COMPACT) : NULL;
    printf("metadata    %s\n", mt ? mt : "-");
    free(mt);
}

void cli_print_json(const json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s) cli_print_raw(s);
    free(s);
}

void cli_print_raw(const char *text)
{
    size_t n = text ? strlen(text) : 0;
    fwrite(text ? text : "", 1, n, stdout);
    if (n == 0 || text[n - 1] != '\n') putchar('\n');
}
