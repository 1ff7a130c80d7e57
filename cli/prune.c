/*
 * prune.c - `statesoup prune`: delete the states that match filters (tag, name prefix, age),
 * sparing the newest N, through the daemon: what an operator runs from cron to keep a catalog
 * of drafts and experiments from growing without end. The listing is paged to its end first
 * (GET /v1/states, newest first), then each match is deleted (DELETE /v1/states/{id}); --dry-run
 * stops after the listing. Only the caller's tenant's states are touched: shared states of other
 * tenants appear in its listing but are never pruned from here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "ss_util.h"

static const char prune_help[] =
    "usage: statesoup prune [--url URL] [--tag T] [--prefix P] [--older-than AGE] [--keep N]\n"
    "                       [--cache] [--dry-run]\n"
    "\n"
    "Delete the states that match every filter given, newest spared first: --tag, --prefix,\n"
    "--older-than (at least one of the three: a prune never empties a catalog by accident),\n"
    "then --keep N spares the newest N of the matches. Prints the states deleted (ID, NAME,\n"
    "TAGS, TOKENS, SIZE, CREATED) and a summary; --dry-run prints what would go and deletes\n"
    "nothing. Only the key's own tenant's states are deleted (shared states of other tenants\n"
    "are left alone). States merged from a deleted one keep their own copy. The exit code is 1\n"
    "if any deletion failed.\n"
    "\n"
    "  --tag T              only states tagged T\n"
    "  --prefix P           only states whose name starts with P\n"
    "  --older-than AGE     only states created more than AGE ago: a number and a unit,\n"
    "                       s, m, h, d or w (90m, 12h, 30d)\n"
    "  --keep N             spare the newest N matching states (default 0)\n"
    "  --cache              also the automatic prompt cache's entries (hidden from listings;\n"
    "                       the daemon evicts them by itself)\n"
    "  --dry-run            list what would be deleted, delete nothing\n" CLI_CONN_HELP
    "\n"
    "examples:\n"
    "  statesoup prune --tag draft --older-than 7d --dry-run\n"
    "  statesoup prune --prefix exp/ --keep 20\n";

enum { OPT_TAG = CLI_OPT_FIRST_LOCAL, OPT_PREFIX, OPT_OLDER, OPT_KEEP, OPT_CACHE, OPT_DRY };

/* "30d" -> seconds; -1 when malformed. */
static double parse_age(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v >= 0) || !end[0] || end[1]) return -1;
    switch (end[0]) {
    case 's': return v;
    case 'm': return v * 60;
    case 'h': return v * 3600;
    case 'd': return v * 86400;
    case 'w': return v * 7 * 86400;
    default: return -1;
    }
}

/* A record's created_at ("2026-12-06T18:38:28.294094Z") as seconds since the epoch; -1 when it
 * has none or it does not parse. */
static double created_s(const json_t *rec)
{
    const char *t = json_string_value(json_object_get(rec, "created_at"));
    struct tm tm = {0};
    const char *rest = t ? strptime(t, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (!rest) return -1;
    double frac = *rest == '.' ? strtod(rest, NULL) : 0;
    return (double)timegm(&tm) + frac;
}

typedef struct prune_opts {
    const char *tag, *prefix;
    double older; /* seconds, or < 0: any age */
    long keep;
    int cache, dry;
} prune_opts;

/* Every state of the listing that matches (newest first) into out; the caller's tenant from
 * GET /v1/whoami. SS_OK or the failing call's error. */
static ss_err collect(const cli_conn *c, const prune_opts *po, json_t *out)
{
    json_t *who = NULL;
    char *raw = NULL;
    ss_err e = cli_http_json(c, "GET", "/v1/whoami", NULL, &who, &raw);
    free(raw);
    if (e) return e;
    const char *mine = json_string_value(json_object_get(who, "tenant"));
    const double now = (double)ss_now_ns() / 1e9;
    char *cursor = NULL;
    for (;;) {
        char path[2048];
        json_t *page = NULL;
        if ((e = cli_list_path(path, sizeof path, po->tag, po->prefix, 1000, cursor, po->cache)) ||
            (e = cli_http_json(c, "GET", path, NULL, &page, &raw)))
            break;
        free(raw);
        raw = NULL;
        size_t i;
        json_t *rec;
        json_array_foreach (json_object_get(page, "data"), i, rec) {
            const char *t = json_string_value(json_object_get(rec, "tenant"));
            if (strcmp(t ? t : "", mine ? mine : "")) continue; /* another tenant's, shared */
            const double at = created_s(rec);
            if (po->older >= 0 && !(at >= 0 && now - at > po->older)) continue;
            json_array_append(out, rec);
        }
        const char *next = json_string_value(json_object_get(page, "next_cursor"));
        free(cursor);
        cursor = next ? strdup(next) : NULL;
        json_decref(page);
        if (!cursor) break;
    }
    free(cursor);
    json_decref(who);
    return e;
}

int cmd_prune(int argc, char **argv)
{
    static const struct option opts[] = {
        {"tag", required_argument, NULL, OPT_TAG},
        {"prefix", required_argument, NULL, OPT_PREFIX},
        {"older-than", required_argument, NULL, OPT_OLDER},
        {"keep", required_argument, NULL, OPT_KEEP},
        {"cache", no_argument, NULL, OPT_CACHE},
        {"dry-run", no_argument, NULL, OPT_DRY},
        CLI_CONN_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_common o = {0};
    prune_opts po = {.older = -1};
    int c, rc = CLI_FAIL;
    double v;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        switch (c) {
        case OPT_TAG: po.tag = optarg; break;
        case OPT_PREFIX: po.prefix = optarg; break;
        case OPT_OLDER:
            if ((po.older = parse_age(optarg)) < 0)
                return cli_usage("prune", "--older-than takes a number and s, m, h, d or w "
                                          "(e.g. 30d), not '%s'",
                                 optarg);
            break;
        case OPT_KEEP:
            if (cli_parse_num("prune", "keep", optarg, 0, 1e9, &v)) return CLI_USAGE;
            po.keep = (long)v;
            break;
        case OPT_CACHE: po.cache = 1; break;
        case OPT_DRY: po.dry = 1; break;
        case 'h': fputs(prune_help, stdout); return CLI_OK;
        default: return cli_bad_option("prune");
        }
    }
    if (optind < argc) return cli_usage("prune", "takes no arguments: name states by filters");
    if (!po.tag && !po.prefix && po.older < 0)
        return cli_usage("prune", "give --tag, --prefix or --older-than (or several)");
    cli_conn conn = {0};
    json_t *found = json_array(), *gone = json_array(), *failed = json_array();
    if (cli_conn_init(&conn, &o)) {
        rc = cli_usage("prune", "%s", ss_errmsg());
        goto out;
    }
    if (!found || !gone || !failed || collect(&conn, &po, found)) {
        rc = cli_fail("prune");
        goto out;
    }
    uint64_t bytes = 0;
    for (size_t i = (size_t)po.keep; i < json_array_size(found); i++) {
        json_t *rec = json_array_get(found, i);
        const char *id = json_string_value(json_object_get(rec, "id"));
        char path[1024];
        json_t *ans = NULL;
        char *raw = NULL;
        ss_err e = SS_OK;
        if (!id) continue;
        if (!po.dry && !(e = cli_state_path(id, path, sizeof path)))
            e = cli_http_json(&conn, "DELETE", path, NULL, &ans, &raw);
        if (e) {
            json_array_append_new(failed, json_pack("{s:s,s:s,s:s}", "id", id, "code",
                                                    ss_err_name(e), "message", ss_errmsg()));
            fprintf(stderr, "statesoup prune: %s: %s\n", id, ss_errmsg());
        } else {
            json_array_append(gone, rec);
            bytes += (uint64_t)json_integer_value(json_object_get(rec, "bytes"));
        }
        ss_err_clear();
        free(raw);
        json_decref(ans);
    }
    if (o.json) {
        json_t *j = json_pack("{s:b,s:O,s:I,s:O,s:I}", "dry_run", po.dry, "deleted", gone,
                              "bytes", (json_int_t)bytes, "failed", failed, "kept",
                              (json_int_t)(json_array_size(found) < (size_t)po.keep
                                               ? json_array_size(found)
                                               : (size_t)po.keep));
        cli_print_json(j);
        json_decref(j);
    } else {
        if (json_array_size(gone)) cli_print_state_table(gone);
        char hb[32];
        printf("%s %zu state%s (%s)%s; %zu kept by --keep, %zu failed\n",
               po.dry ? "would delete" : "deleted", json_array_size(gone),
               json_array_size(gone) == 1 ? "" : "s", cli_human_bytes(bytes, hb, sizeof hb),
               po.dry ? " (--dry-run: nothing deleted)" : "",
               json_array_size(found) < (size_t)po.keep ? json_array_size(found)
                                                        : (size_t)po.keep,
               json_array_size(failed));
    }
    rc = json_array_size(failed) ? CLI_FAIL : CLI_OK;
out:
    json_decref(found);
    json_decref(gone);
    json_decref(failed);
    cli_conn_free(&conn);
    return rc;
}
