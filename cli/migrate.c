/*
 * migrate.c - `statesoup migrate`: copy a local catalog (statesoupd's --data) into the shared
 * catalog on Redis Cluster, or the shared catalog into a local one (docs/scale-out.md).
 *
 * States keep their ids, names, created_at and records (ss_store_put_copy), so parents and
 * cursors stay valid; every blob is verified against its record's checksum on the way. Copies go
 * oldest first, so the listing order is the same on both sides. A state already at the
 * destination (same id) is skipped, so a migration can be run again after an interruption; a
 * name held there by another state is reported and the state skipped (exit 1).
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "ss_err.h"
#include "ss_store.h"

static const char migrate_help[] =
    "usage: statesoup migrate --data DIR --to redis://HOST:PORT[,...] [options]\n"
    "       statesoup migrate --from redis://HOST:PORT[,...] --data DIR [options]\n"
    "\n"
    "Copy every state of a local catalog (statesoupd's --data) into the shared catalog on Redis\n"
    "Cluster (--to), or of the shared catalog into a local one (--from; DIR is created if\n"
    "missing). Ids, names, tags, records and creation times are kept; every blob is checked\n"
    "against its checksum. States already at the destination are skipped, so it can be run\n"
    "again. Reading a local catalog is safe while its daemon runs.\n"
    "\n"
    "  --data DIR             the local catalog\n"
    "  --to URL | --from URL  the Redis Cluster seeds, as statesoupd --remote takes them\n"
    "  --remote-prefix P      key namespace in Redis (default: ss, as statesoupd)\n"
    "  --remote-password P    Redis AUTH (default $STATESOUP_REMOTE_PASSWORD)\n"
    "  --remote-wait N        Redis replicas that confirm each copy (default: 1)\n"
    "  --json                 print the counts as JSON\n"
    "  -h, --help             this text\n"
    "\n"
    "example:\n"
    "  statesoup migrate --data /var/lib/statesoup --to redis://10.0.0.5:6379,10.0.0.6:6379\n";

enum { MIG_TO = CLI_OPT_FIRST_LOCAL, MIG_FROM, MIG_PREFIX, MIG_PASS, MIG_WAIT };

typedef struct mig_counts {
    long copied, present, failed;
} mig_counts;

/* Every id of src, oldest first (malloc'd array of malloc'd strings). */
static ss_err all_ids(ss_store *src, char ***ids_out, size_t *n_out)
{
    char **ids = NULL, *cursor = NULL;
    size_t n = 0, cap = 0;
    ss_err err = SS_OK;
    do {
        char *page = NULL;
        if ((err = ss_store_list(src, NULL, NULL, 1000, cursor, &page))) break;
        free(cursor);
        cursor = NULL;
        json_t *j = cli_parse_text(page);
        free(page);
        if (!j) {
            err = SS_ERR_FORMAT;
            break;
        }
        size_t i;
        json_t *rec;
        json_array_foreach (json_object_get(j, "data"), i, rec) {
            if (n == cap) {
                cap = cap ? 2 * cap : 256;
                char **grown = realloc(ids, cap * sizeof *ids);
                if (!grown) {
                    err = ss_fail(SS_ERR_NOMEM, "out of memory");
                    break;
                }
                ids = grown;
            }
            ids[n] = strdup(json_string_value(json_object_get(rec, "id")));
            if (ids[n]) n++;
        }
        const char *next = json_string_value(json_object_get(j, "next_cursor"));
        if (!err && next) cursor = strdup(next);
        json_decref(j);
    } while (!err && cursor);
    free(cursor);
    for (size_t i = 0; i < n / 2; i++) { /* listings are newest first */
        char *t = ids[i];
        ids[i] = ids[n - 1 - i];
        ids[n - 1 - i] = t;
    }
    *ids_out = ids;
    *n_out = n;
    return err;
}

/* Copy one state; counts it. */
static void copy_one(ss_store *src, ss_store *dst, const char *id, mig_counts *c)
{
    size_t len = 0;
    char *rec = NULL;
    void *blob = NULL;
    ss_err err = ss_store_get_blob(src, id, NULL, NULL, 0, &len, NULL);
    if (err == SS_ERR_TOO_LARGE) {
        blob = malloc(len ? len : 1);
        err = blob ? ss_store_get_blob(src, id, NULL, blob, len, &len, &rec)
                   : ss_fail(SS_ERR_NOMEM, "out of memory for %zu bytes", len);
    }
    if (!err) err = ss_store_put_copy(dst, rec, blob, len);
    if (err == SS_OK) {
        c->copied++;
    } else if (err == SS_ERR_EXISTS && strstr(ss_errmsg(), id)) {
        c->present++; /* this very state is there already */
    } else {
        fprintf(stderr, "statesoup migrate: %s: %s\n", id, ss_errmsg());
        c->failed++;
    }
    free(rec);
    free(blob);
}

/* The Redis side: a store whose local tier is a throw-away cache in a temporary folder. */
static ss_store *open_remote(const char *url, const char *prefix, const char *password, int wait,
                             char *tmpdir)
{
    snprintf(tmpdir, 64, "/tmp/statesoup-migrate.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("statesoup migrate: mkdtemp");
        return NULL;
    }
    ss_store_params p = ss_store_default_params();
    p.remote = url;
    p.remote_prefix = prefix;
    p.remote_password = password ? password : getenv("STATESOUP_REMOTE_PASSWORD");
    p.remote_wait_replicas = wait;
    p.cache_max_bytes = 1; /* keep nothing but the last state */
    ss_store *s = NULL;
    if (ss_store_open(&s, tmpdir, &p)) {
        cli_fail("migrate: opening the remote catalog");
        return NULL;
    }
    return s;
}

int cmd_migrate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", required_argument, NULL, CLI_OPT_DATA},
        {"json", no_argument, NULL, CLI_OPT_JSON},
        {"to", required_argument, NULL, MIG_TO},
        {"from", required_argument, NULL, MIG_FROM},
        {"remote-prefix", required_argument, NULL, MIG_PREFIX},
        {"remote-password", required_argument, NULL, MIG_PASS},
        {"remote-wait", required_argument, NULL, MIG_WAIT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cli_common o = {0};
    const char *to = NULL, *from = NULL, *prefix = NULL, *password = NULL;
    double wait = 1;
    int c, rc = CLI_FAIL;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        switch (c) {
        case MIG_TO: to = optarg; continue;
        case MIG_FROM: from = optarg; continue;
        case MIG_PREFIX: prefix = optarg; continue;
        case MIG_PASS: password = optarg; continue;
        case MIG_WAIT:
            if (cli_parse_num("migrate", "--remote-wait", optarg, 0, 16, &wait)) return CLI_USAGE;
            continue;
        case 'h': fputs(migrate_help, stdout); return CLI_OK;
        }
        return cli_bad_option("migrate");
    }
    if (optind < argc) return cli_usage("migrate", "unexpected argument '%s'", argv[optind]);
    if (!o.data) return cli_usage("migrate", "--data DIR is required (the local catalog)");
    if (!to == !from) return cli_usage("migrate", "give exactly one of --to URL and --from URL");

    char tmpdir[64] = "";
    ss_store *local = NULL, *remote = NULL, *src, *dst;
    if (to) {
        if (!(local = cli_open_store("migrate", o.data))) goto out;
    } else {
        ss_store_params p = ss_store_default_params();
        if (ss_store_open(&local, o.data, &p)) {
            cli_fail("migrate: opening the local catalog");
            goto out;
        }
    }
    if (!(remote = open_remote(to ? to : from, prefix, password, (int)wait, tmpdir))) goto out;
    src = to ? local : remote;
    dst = to ? remote : local;

    char **ids = NULL;
    size_t n = 0;
    mig_counts counts = {0};
    if (all_ids(src, &ids, &n)) {
        cli_fail("migrate: listing the source");
    } else {
        for (size_t i = 0; i < n; i++) copy_one(src, dst, ids[i], &counts);
        if (o.json) {
            printf("{\"states\":%zu,\"copied\":%ld,\"already_there\":%ld,\"failed\":%ld}\n", n,
                   counts.copied, counts.present, counts.failed);
        } else {
            printf("%zu states: %ld copied, %ld already there, %ld failed\n", n, counts.copied,
                   counts.present, counts.failed);
        }
        rc = counts.failed ? CLI_FAIL : CLI_OK;
    }
    for (size_t i = 0; i < n; i++) free(ids[i]);
    free(ids);
out:
    ss_store_close(local);
    ss_store_close(remote);
    if (tmpdir[0] && strchr(tmpdir, '/') && strncmp(tmpdir, "/tmp/statesoup-migrate.", 23) == 0)
        ss_store_remove(tmpdir);
    return rc;
}
