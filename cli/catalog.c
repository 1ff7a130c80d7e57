/*
 * catalog.c - the state catalog commands: ls, show, rm, export, import, merge, save, verify.
 *
 * Through a daemon (--url) they are thin wrappers over the HTTP API. ls, show and export also
 * work offline with --data DIR: they open the LMDB store read-only, which LMDB allows beside the
 * running daemon (operators inspect a live catalog without a request path), and verify checks
 * every blob's checksum that way. Offline export has no daemon to lay the floats out, so it loads
 * the model (--model DIR) for the shapes and refuses states made by another model.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "ss_model.h"
#include "ss_store.h"

#define MAX_IMPORT ((size_t)1 << 34) /* state files are at most a few GiB */

/* Open the store at dir read-only; prints the problem and returns NULL on failure. */
static ss_store *open_store(const char *cmd, const char *dir)
{
    ss_store *s = NULL;
    ss_store_params p = ss_store_default_params();
    p.read_only = 1;
    ss_err e = ss_store_open(&s, dir, &p);
    if (e) {
        fprintf(stderr, "statesoup %s: cannot open the store at %s: %s\n", cmd, dir,
                e == SS_ERR_NOT_FOUND ? "there is no store there (is it statesoupd's --data?)"
                                      : ss_errmsg());
        return NULL;
    }
    return s;
}

/* Parse text returned by the store (it is ours, so a failure means memory). */
static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
    if (!j) ss_fail(SS_ERR_FORMAT, "the store returned invalid JSON: %s", je.text);
    return j;
}

/* Fail when both --url and --data were given. */
static int check_source(const char *cmd, const cli_common *o)
{
    if (o->url && o->data) return cli_usage(cmd, "give --url or --data, not both");
    return CLI_OK;
}

/* ---- ls -------------------------------------------------------------------------------------- */

static const char ls_help[] =
    "usage: statesoup ls [--url URL | --data DIR] [--tag T] [--prefix P] [--limit N] [--all]\n"
    "\n"
    "List stored states, newest first: ID, NAME, TAGS, TOKENS, SIZE and CREATED (UTC).\n"
    "\n"
    "  --tag T              only states tagged T\n"
    "  --prefix P           only states whose name starts with P (unnamed states never match)\n"
    "  --limit N            states per page, 1..1000 (default 100)\n"
    "  --cursor C           start at this page (the next_cursor of a previous --json page)\n"
    "  --all                follow next_cursor until every matching state is listed\n"
    "  --data DIR           read the daemon's store directly, read-only (safe while it runs)\n" CLI_CONN_HELP
    "\n"
    "examples:\n"
    "  statesoup ls --tag dict --all\n"
    "  statesoup ls --data /var/lib/statesoup --json | jq -r '.data[].id'\n";

enum { OPT_TAG = CLI_OPT_FIRST_LOCAL, OPT_PREFIX, OPT_LIMIT, OPT_CURSOR, OPT_ALL, OPT_DTYPE,
       OPT_MODEL, OPT_NAME, OPT_NORMALIZE, OPT_PROMPT, OPT_PROMPT_FILE, OPT_TOKENS, OPT_FROM,
       OPT_METADATA };

/* One page of a listing, from the store or the daemon. */
static ss_err list_page(ss_store *st, const cli_conn *c, const char *tag, const char *prefix,
                        int limit, const char *cursor, json_t **page)
{
    if (st) {
        char *text = NULL;
        ss_err e = ss_store_list(st, tag, prefix, limit, cursor, &text);
        if (e) return e;
        *page = parse(text);
        free(text);
        return *page ? SS_OK : SS_ERR_FORMAT;
    }
    char path[2048];
    char *et = tag ? cli_escape(tag) : NULL, *ep = prefix ? cli_escape(prefix) : NULL;
    char *ec = cursor ? cli_escape(cursor) : NULL;
    snprintf(path, sizeof path, "/v1/states?limit=%d%s%s%s%s%s%s", limit, et ? "&tag=" : "",
             et ? et : "", ep ? "&prefix=" : "", ep ? ep : "", ec ? "&cursor=" : "",
             ec ? ec : "");
    free(et);
    free(ep);
    free(ec);
    return cli_http_json(c, "GET", path, NULL, page);
}

int cmd_ls(int argc, char **argv)
{
    static const struct option opts[] = {
        {"tag", required_argument, NULL, OPT_TAG},
        {"prefix", required_argument, NULL, OPT_PREFIX},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"cursor", required_argument, NULL, OPT_CURSOR},
        {"all", no_argument, NULL, OPT_ALL},
        {"data", required_argument, NULL, CLI_OPT_DATA},
        CLI_CONN_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_common o = {0};
    const char *tag = NULL, *prefix = NULL, *cursor0 = NULL;
    int limit = 100, all = 0, c, rc = CLI_FAIL;
    double v;
    ss_store *st = NULL;
    cli_conn conn = {0};
    json_t *page = NULL, *acc = NULL;
    char *cursor = NULL;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        switch (c) {
        case OPT_TAG: tag = optarg; break;
        case OPT_PREFIX: prefix = optarg; break;
        case OPT_LIMIT:
            if (cli_parse_num("ls", "limit", optarg, 1, 1000, &v)) return CLI_USAGE;
            limit = (int)v;
            break;
        case OPT_CURSOR: cursor0 = optarg; break;
        case OPT_ALL: all = 1; break;
        case 'h': fputs(ls_help, stdout); return CLI_OK;
        default: return cli_bad_option("ls");
        }
    }
    if (optind < argc) return cli_usage("ls", "unexpected argument '%s'", argv[optind]);
    if (check_source("ls", &o)) return CLI_USAGE;
    if (o.data) {
        if (!(st = open_store("ls", o.data))) goto out;
    } else if (cli_conn_init(&conn, &o)) {
        rc = cli_usage("ls", "%s", ss_errmsg());
        goto out;
    }
    acc = json_array();
    if (!acc || (cursor0 && !(cursor = strdup(cursor0)))) {
        rc = cli_fail("ls");
        goto out;
    }
    const char *next = NULL;
    for (;;) {
        json_decref(page);
        page = NULL;
        if (list_page(st, &conn, tag, prefix, limit, cursor, &page)) {
            rc = cli_fail("ls");
            goto out;
        }
        json_t *data = json_object_get(page, "data");
        if (!json_is_array(data)) {
            ss_fail(SS_ERR_FORMAT, "the listing has no \"data\" array");
            rc = cli_fail("ls");
            goto out;
        }
        json_array_extend(acc, data);
        next = json_string_value(json_object_get(page, "next_cursor"));
        if (!all || !next) break;
        free(cursor);
        if (!(cursor = strdup(next))) {
            rc = cli_fail("ls");
            goto out;
        }
    }
    if (o.json) {
        json_t *outj = json_pack("{s:O,s:s?}", "data", acc, "next_cursor", all ? NULL : next);
        cli_print_json(outj);
        json_decref(outj);
    } else {
        cli_print_state_table(acc);
        if (next && !all) {
            fprintf(stderr, "(more states: add --all, or --cursor %s for the next page)\n", next);
        }
    }
    rc = CLI_OK;
out:
    free(cursor);
    json_decref(page);
    json_decref(acc);
    cli_conn_free(&conn);
    ss_store_close(st);
    return rc;
}

/* ---- show ------------------------------------------------------------------------------------ */

static const char show_help[] =
    "usage: statesoup show [--url URL | --data DIR] [--json] STATE...\n"
    "\n"
    "Print the record of each STATE (a name or an id): tags, model fingerprint, token count, size,\n"
    "dtype, creation time, checksum, parents (for merges) with their weights, and metadata.\n"
    "\n"
    "  --data DIR           read the daemon's store directly, read-only (safe while it runs)\n" CLI_CONN_HELP
    "\n"
    "example:\n"
    "  statesoup show intro\n";

int cmd_show(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", required_argument, NULL, CLI_OPT_DATA},
        CLI_CONN_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_common o = {0};
    int c, rc = CLI_FAIL;
    ss_store *st = NULL;
    cli_conn conn = {0};

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        if (c == 'h') {
            fputs(show_help, stdout);
            return CLI_OK;
        }
        return cli_bad_option("show");
    }
    if (optind >= argc) return cli_usage("show", "name the state to show");
    if (check_source("show", &o)) return CLI_USAGE;
    if (o.data) {
        if (!(st = open_store("show", o.data))) goto out;
    } else if (cli_conn_init(&conn, &o)) {
        rc = cli_usage("show", "%s", ss_errmsg());
        goto out;
    }
    rc = CLI_OK;
    for (int i = optind; i < argc; i++) {
        json_t *rec = NULL;
        ss_err e;
        if (st) {
            char *text = NULL;
            e = ss_store_get_record(st, argv[i], &text);
            if (!e && !(rec = parse(text))) e = SS_ERR_FORMAT;
            free(text);
        } else {
            char path[1024];
            e = cli_state_path(argv[i], path, sizeof path);
            if (!e) e = cli_http_json(&conn, "GET", path, NULL, &rec);
        }
        if (e) {
            rc = cli_fail("show");
            continue;
        }
        if (i > optind && !o.json) putchar('\n');
        if (o.json) {
            cli_print_json(rec);
        } else {
            cli_print_record(rec);
        }
        json_decref(rec);
    }
out:
    cli_conn_free(&conn);
    ss_store_close(st);
    return rc;
}

/* ---- rm -------------------------------------------------------------------------------------- */

static const char rm_help[] =
    "usage: statesoup rm [--url URL] STATE...\n"
    "\n"
    "Delete states (names or ids) from the daemon's catalog. Every STATE is tried; the exit code is\n"
    "1 if any could not be deleted. States merged from a deleted one keep their own copy.\n"
    "\n" CLI_CONN_HELP
    "\n"
    "example:\n"
    "  statesoup rm draft-1 st_0123456789abcdef0123456789abcdef\n";

int cmd_rm(int argc, char **argv)
{
    static const struct option opts[] = {CLI_CONN_OPTIONS, {NULL, 0, NULL, 0}};
    cli_common o = {0};
    int c, rc = CLI_FAIL;
    cli_conn conn = {0};
    json_t *done = NULL;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        if (c == 'h') {
            fputs(rm_help, stdout);
            return CLI_OK;
        }
        return cli_bad_option("rm");
    }
    if (optind >= argc) return cli_usage("rm", "name the states to delete");
    if (cli_conn_init(&conn, &o)) {
        rc = cli_usage("rm", "%s", ss_errmsg());
        goto out;
    }
    if (!(done = json_array())) goto out;
    rc = CLI_OK;
    for (int i = optind; i < argc; i++) {
        char path[1024];
        ss_err e = cli_state_path(argv[i], path, sizeof path);
        if (!e) e = cli_http_json(&conn, "DELETE", path, NULL, NULL);
        if (e) {
            fprintf(stderr, "statesoup: rm: %s: %s\n", argv[i], ss_errmsg());
            rc = CLI_FAIL;
            continue;
        }
        json_array_append_new(done, json_string(argv[i]));
        if (!o.json) printf("deleted %s\n", argv[i]);
    }
    if (o.json) {
        json_t *j = json_pack("{s:O}", "deleted", done);
        cli_print_json(j);
        json_decref(j);
    }
out:
    json_decref(done);
    cli_conn_free(&conn);
    return rc;
}

/* ---- export ---------------------------------------------------------------------------------- */

static const char export_help[] =
    "usage: statesoup export STATE [-o FILE] [--dtype F32|BF16|F16] [--url URL]\n"
    "       statesoup export STATE --data DIR --model MODEL_DIR [-o FILE] [--dtype ...]\n"
    "\n"
    "Write a state as a safetensors file: tensors conv [layers, channels, kernel], ssm and\n"
    "final_hidden [d_model], with the record and the model fingerprint in __metadata__ (the\n"
    "layout of HF's cache, readable with the safetensors Python package).\n"
    "\n"
    "  -o, --output FILE    write here (default: stdout, unless it is a terminal)\n"
    "  --dtype D            F32 (default, exact), BF16 or F16\n"
    "  --data DIR           read the daemon's store directly, read-only (safe while it runs);\n"
    "                       needs --model, whose config gives the tensor shapes\n"
    "  --model MODEL_DIR    with --data: the checkpoint the state was made with (checked by\n"
    "                       fingerprint)\n" CLI_CONN_HELP
    "\n"
    "examples:\n"
    "  statesoup export intro -o intro.safetensors\n"
    "  statesoup export intro --data /var/lib/statesoup --model models/demo-mamba1 > s.st\n";

/* Where an export goes: a temporary file renamed into place on success, or stdout. */
typedef struct out_file {
    const char *path; /* NULL = stdout */
    char *tmp;        /* path.XXXXXX while writing */
    FILE *f;
    uint64_t bytes;
    int failed;
} out_file;

static ss_err out_open(out_file *of, const char *path)
{
    of->path = path && strcmp(path, "-") ? path : NULL;
    if (!of->path) {
        of->f = stdout;
        return SS_OK;
    }
    size_t n = strlen(path) + 8;
    if (!(of->tmp = malloc(n))) return ss_fail(SS_ERR_NOMEM, "out of memory");
    snprintf(of->tmp, n, "%s.XXXXXX", path);
    int fd = mkstemp(of->tmp);
    if (fd < 0 || !(of->f = fdopen(fd, "wb"))) {
        ss_err e = ss_fail(SS_ERR_IO, "cannot create %s: %s", of->tmp, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(of->tmp);
        }
        free(of->tmp);
        of->tmp = NULL;
        return e;
    }
    /* mkstemp makes 0600; a state file is no secret beyond what umask says */
    mode_t um = umask(0);
    umask(um);
    fchmod(fd, 0666 & ~um);
    return SS_OK;
}

static int out_write(void *user, const char *data, size_t len)
{
    out_file *of = user;
    if (fwrite(data, 1, len, of->f) != len) {
        ss_fail(SS_ERR_IO, "cannot write %s: %s", of->path ? of->tmp : "stdout", strerror(errno));
        of->failed = 1;
        return 1;
    }
    of->bytes += len;
    return 0;
}

/* Finish: keep the file (rename into place) only when ok; always releases. */
static ss_err out_close(out_file *of, int ok)
{
    ss_err e = SS_OK;
    if (!of->f) return SS_OK;
    if (!of->path) {
        if (fflush(stdout) != 0 && ok) e = ss_fail(SS_ERR_IO, "stdout: %s", strerror(errno));
        of->f = NULL;
        return e;
    }
    if (fclose(of->f) != 0 && ok) e = ss_fail(SS_ERR_IO, "%s: %s", of->tmp, strerror(errno));
    of->f = NULL;
    if (ok && !e && rename(of->tmp, of->path) != 0) {
        e = ss_fail(SS_ERR_IO, "cannot rename %s to %s: %s", of->tmp, of->path, strerror(errno));
    }
    if (!ok || e) unlink(of->tmp);
    free(of->tmp);
    of->tmp = NULL;
    return e;
}

/* Convert a stored blob of n floats in `dtype` ("f32"/"bf16"/"f16", any case) to F32. */
static ss_err blob_to_f32(const uint8_t *blob, size_t len, const char *dtype, size_t n, float *dst)
{
    if (!dtype || !strcasecmp(dtype, "f32") || !strcasecmp(dtype, "float32")) {
        if (len != n * 4) goto size;
        memcpy(dst, blob, len);
        return SS_OK;
    }
    int bf = !strcasecmp(dtype, "bf16") || !strcasecmp(dtype, "bfloat16");
    int hf = !strcasecmp(dtype, "f16") || !strcasecmp(dtype, "float16");
    if (!bf && !hf) return ss_fail(SS_ERR_UNSUPPORTED, "stored dtype '%s' is not known", dtype);
    if (len != n * 2) goto size;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = (uint16_t)(blob[2 * i] | blob[2 * i + 1] << 8);
        uint32_t u;
        if (bf) {
            u = (uint32_t)h << 16;
        } else {
            uint32_t sign = (uint32_t)(h >> 15) << 31, ex = (h >> 10) & 31, man = h & 1023;
            if (ex == 0 && man == 0) {
                u = sign;
            } else if (ex == 0) { /* subnormal: normalise */
                int e = -1;
                do {
                    man <<= 1;
                    e++;
                } while (!(man & 1024));
                u = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 1023) << 13;
            } else if (ex == 31) {
                u = sign | 0x7f800000u | man << 13;
            } else {
                u = sign | (ex + 112) << 23 | man << 13;
            }
        }
        memcpy(dst + i, &u, 4);
    }
    return SS_OK;
size:
    return ss_fail(SS_ERR_MISMATCH, "the stored blob has %zu bytes, not %zu %s values", len, n,
                   dtype ? dtype : "F32");
}

/* Offline export: store blob -> floats -> safetensors via the model's layout. */
static int export_offline(const char *data_dir, const char *model_dir, const char *ref,
                          const char *dtype, out_file *of)
{
    int rc = CLI_FAIL;
    ss_store *st = NULL;
    ss_model *m = NULL;
    char *rec_text = NULL, *meta_text = NULL;
    json_t *rec = NULL, *meta = NULL;
    uint8_t *blob = NULL, *file = NULL;
    float *floats = NULL;
    size_t len = 0, flen = 0;

    if (!(st = open_store("export", data_dir))) goto out;
    if (ss_store_get_record(st, ref, &rec_text) || !(rec = parse(rec_text))) {
        rc = cli_fail("export");
        goto out;
    }
    ss_model_params mp = ss_model_default_params();
    if (ss_model_open(&m, model_dir, &mp)) {
        fprintf(stderr, "statesoup export: cannot load the model %s: %s\n", model_dir, ss_errmsg());
        goto out;
    }
    const ss_model_info *info = ss_model_get_info(m);
    const char *rec_model = json_string_value(json_object_get(rec, "model"));
    if (!rec_model || strcmp(rec_model, info->fingerprint) != 0) {
        fprintf(stderr,
                "statesoup export: state %s was made by model %s, but %s is model %s: give the "
                "--model the daemon runs\n",
                ref, rec_model ? rec_model : "?", model_dir, info->fingerprint);
        goto out;
    }
    ss_err e = ss_store_get_blob(st, ref, info->fingerprint, NULL, 0, &len, NULL);
    if (e != SS_ERR_TOO_LARGE && e != SS_OK) {
        rc = cli_fail("export");
        goto out;
    }
    blob = malloc(len ? len : 1);
    floats = malloc(info->state_bytes);
    if (!blob || !floats) {
        ss_fail(SS_ERR_NOMEM, "cannot allocate %zu bytes", len + info->state_bytes);
        rc = cli_fail("export");
        goto out;
    }
    if (ss_store_get_blob(st, ref, info->fingerprint, blob, len, &len, NULL) ||
        blob_to_f32(blob, len, json_string_value(json_object_get(rec, "dtype")),
                    info->state_floats, floats)) {
        rc = cli_fail("export");
        goto out;
    }
    /* as the daemon's GET /v1/states/{s}/data writes it (safetensors metadata values are
     * strings): the record as JSON text, which import reads back for n_tokens and parents */
    meta = json_pack("{s:s,s:s}", "record", rec_text, "format", "statesoup.state.v1");
    if (!meta || !(meta_text = json_dumps(meta, JSON_COMPACT))) {
        ss_fail(SS_ERR_NOMEM, "out of memory");
        rc = cli_fail("export");
        goto out;
    }
    if (ss_state_export(m, floats, dtype, meta_text, &file, &flen)) {
        rc = cli_fail("export");
        goto out;
    }
    if (out_write(of, (const char *)file, flen)) {
        rc = cli_fail("export");
        goto out;
    }
    rc = CLI_OK;
out:
    free(file);
    free(floats);
    free(blob);
    free(meta_text);
    json_decref(meta);
    json_decref(rec);
    free(rec_text);
    ss_model_close(m);
    ss_store_close(st);
    return rc;
}

int cmd_export(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"data", required_argument, NULL, CLI_OPT_DATA},
        {"model", required_argument, NULL, OPT_MODEL},
        CLI_CONN_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_common o = {0};
    const char *output = NULL, *dtype = "F32", *model_dir = NULL;
    int c, rc = CLI_FAIL;
    cli_conn conn = {0};
    out_file of = {0};

    optind = 1;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        switch (c) {
        case 'o': output = optarg; break;
        case OPT_DTYPE: dtype = optarg; break;
        case OPT_MODEL: model_dir = optarg; break;
        case 'h': fputs(export_help, stdout); return CLI_OK;
        default: return cli_bad_option("export");
        }
    }
    if (optind >= argc) return cli_usage("export", "name the state to export");
    if (optind + 1 < argc) return cli_usage("export", "export one state at a time");
    const char *ref = argv[optind];
    if (strcasecmp(dtype, "F32") && strcasecmp(dtype, "BF16") && strcasecmp(dtype, "F16")) {
        return cli_usage("export", "--dtype %s: expected F32, BF16 or F16", dtype);
    }
    if (check_source("export", &o)) return CLI_USAGE;
    if (o.data && !model_dir) {
        return cli_usage("export", "--data needs --model DIR: without a daemon, the tensor shapes "
                                   "of the file come from the model's config (give the checkpoint "
                                   "the daemon runs)");
    }
    if (model_dir && !o.data) return cli_usage("export", "--model goes with --data");
    if ((!output || !strcmp(output, "-")) && isatty(STDOUT_FILENO)) {
        return cli_usage("export", "not writing a binary file to a terminal: give -o FILE or "
                                   "redirect stdout");
    }
    char up[8];
    snprintf(up, sizeof up, "%s", dtype);
    for (char *p = up; *p; p++) *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);

    if (!o.data && cli_conn_init(&conn, &o)) {
        rc = cli_usage("export", "%s", ss_errmsg());
        goto out;
    }
    if (out_open(&of, output)) {
        rc = cli_fail("export");
        goto out;
    }
    if (o.data) {
        rc = export_offline(o.data, model_dir, ref, up, &of);
    } else {
        char path[1024];
        ss_err e = cli_state_path(ref, path, sizeof path);
        if (!e) {
            size_t n = strlen(path);
            snprintf(path + n, sizeof path - n, "/data?dtype=%s", up);
            cli_req rq = {.method = "GET", .path = path, .sink = out_write, .sink_user = &of};
            e = cli_http(&conn, &rq, NULL);
        }
        rc = e ? cli_fail("export") : CLI_OK;
    }
    if (out_close(&of, rc == CLI_OK)) rc = cli_fail("export");
    if (rc == CLI_OK && output && strcmp(output, "-")) {
        char hb[32];
        fprintf(stderr, "statesoup: exported %s to %s (%s)\n", ref, output,
                cli_human_bytes(of.bytes, hb, sizeof hb));
    }
out:
    out_close(&of, 0);
    cli_conn_free(&conn);
    return rc;
}

/* ---- import ---------------------------------------------------------------------------------- */

static const char import_help[] =
    "usage: statesoup import FILE [--name N] [--tag T]... [--url URL]\n"
    "\n"
    "Store a safetensors state file (as export writes it; F32, BF16 or F16) in the daemon's\n"
    "catalog and print the new record. The daemon refuses files from another model (fingerprint\n"
    "or shapes) and values that are not finite. FILE '-' reads stdin.\n"
    "\n"
    "  --name N             name the new state (names are unique; default: unnamed)\n"
    "  --tag T              tag it (repeatable)\n" CLI_CONN_HELP
    "\n"
    "example:\n"
    "  statesoup import intro.safetensors --name intro-copy --tag imported\n";

/* Append "&tags=a,b" style comma-joined, escaped tags to a growing string. */
static char *join_escaped(char *const *tags, int n)
{
    size_t cap = 1, off = 0;
    char *out = NULL;
    for (int i = 0; i < n; i++) cap += 3 * strlen(tags[i]) + 3;
    if (!(out = malloc(cap))) return NULL;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        char *e = cli_escape(tags[i]);
        if (!e) {
            free(out);
            return NULL;
        }
        off += (size_t)snprintf(out + off, cap - off, "%s%s", i ? "," : "", e);
        free(e);
    }
    return out;
}

int cmd_import(int argc, char **argv)
{
    static const struct option opts[] = {
        {"name", required_argument, NULL, OPT_NAME},
        {"tag", required_argument, NULL, OPT_TAG},
        CLI_CONN_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_common o = {0};
    const char *name = NULL;
    char **tags = NULL, *buf = NULL, *etags = NULL, *ename = NULL, *path = NULL;
    int n_tags = 0, c, rc = CLI_FAIL;
    size_t len = 0;
    cli_conn conn = {0};
    cli_resp resp = {0};
    json_t *rec = NULL;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        switch (c) {
        case OPT_NAME: name = optarg; break;
        case OPT_TAG: {
            char **nt = realloc(tags, (size_t)(n_tags + 1) * sizeof *nt);
            if (!nt) goto out;
            tags = nt;
            tags[n_tags++] = optarg;
            break;
        }
        case 'h':
            fputs(import_help, stdout);
            rc = CLI_OK;
            goto out;
        default: rc = cli_bad_option("import"); goto out;
        }
    }
    if (optind >= argc) {
        rc = cli_usage("import", "name the file to import ('-' for stdin)");
        goto out;
    }
    if (optind + 1 < argc) {
        rc = cli_usage("import", "import one file at a time");
        goto out;
    }
    if (cli_conn_init(&conn, &o)) {
        rc = cli_usage("import", "%s", ss_errmsg());
        goto out;
    }
    if (cli_read_input(argv[optind], MAX_IMPORT, &buf, &len)) {
        rc = cli_fail("import");
        goto out;
    }
    ename = name ? cli_escape(name) : NULL;
    etags = n_tags ? join_escaped(tags, n_tags) : NULL;
    size_t plen = 64 + (ename ? strlen(ename) : 0) + (etags ? strlen(etags) : 0);
    if ((name && !ename) || (n_tags && !etags) || !(path = malloc(plen))) {
        ss_fail(SS_ERR_NOMEM, "out of memory");
        rc = cli_fail("import");
        goto out;
    }
    snprintf(path, plen, "/v1/states/import%s%s%s%s%s", ename || etags ? "?" : "",
             ename ? "name=" : "", ename ? ename : "", ename && etags ? "&" : "",
             etags ? "tags=" : "");
    if (etags) strcat(path, etags);
    cli_req rq = {.method = "POST",
                  .path = path,
                  .content_type = "application/octet-stream",
                  .body = buf,
                  .body_len = len};
    json_error_t je;
    if (cli_http(&conn, &rq, &resp)) {
        rc = cli_fail("import");
        goto out;
    }
    if (!(rec = json_loadb(resp.body ? resp.body : "", resp.len, 0, &je))) {
        ss_fail(SS_ERR_FORMAT, "the reply is not JSON: %s", je.text);
        rc = cli_fail("import");
        goto out;
    }
    if (o.json) {
        cli_print_json(rec);
    } else {
        cli_print_record(rec);
    }
    rc = CLI_OK;
out:
    json_decref(rec);
    cli_resp_free(&resp);
    free(path);
    free(etags);
    free(ename);
    free(buf);
    free(tags);
    cli_conn_free(&conn);
    return rc;
}

/* ---- merge and save: POST a JSON body, print the new record --------------------------------- */

/* POST body to path and print the record that comes back (or its JSON). */
static int post_record(const char *cmd, const cli_common *o, const char *path, json_t *body)
{
    cli_conn conn = {0};
    json_t *rec = NULL;
    int rc = CLI_FAIL;
    if (cli_conn_init(&conn, o)) return cli_usage(cmd, "%s", ss_errmsg());
    if (cli_http_json(&conn, "POST", path, body, &rec)) {
        rc = cli_fail(cmd);
        goto out;
    }
    if (o->json) {
        cli_print_json(rec);
    } else {
        cli_print_record(rec);
    }
    rc = CLI_OK;
out:
    json_decref(rec);
    cli_conn_free(&conn);
    return rc;
}

/* Add "tags" (when any) and "metadata" (when given) to a request body. */
static int add_tags_meta(const char *cmd, json_t *body, json_t *tags, const char *metadata)
{
    if (json_array_size(tags)) json_object_set(body, "tags", tags);
    if (metadata) {
        json_error_t je;
        json_t *m = json_loads(metadata, 0, &je);
        if (!json_is_object(m)) {
            json_decref(m);
            return cli_usage(cmd, "--metadata: expected a JSON object (e.g. '{\"source\": \"x\"}')");
        }
        json_object_set_new(body, "metadata", m);
    }
    return CLI_OK;
}

static const char merge_help[] =
    "usage: statesoup merge [--name N] [--tag T]... [--normalize] STATE=WEIGHT... [--url URL]\n"
    "\n"
    "Store the weighted sum of states, sum_i WEIGHT_i * STATE_i over every tensor (conv, ssm and\n"
    "final_hidden), as a new state whose parents are recorded. Weights may be negative (task\n"
    "arithmetic). A STATE is a name or an id.\n"
    "\n"
    "  --name N             name the new state (default: unnamed, addressed by its id)\n"
    "  --tag T              tag it (repeatable)\n"
    "  --normalize          divide the weights by their sum first\n"
    "  --metadata JSON      a JSON object stored with the record\n" CLI_CONN_HELP
    "\n"
    "example:\n"
    "  statesoup merge --name soup --normalize dict-a=1 dict-b=1\n";

int cmd_merge(int argc, char **argv)
{
    static const struct option opts[] = {
        {"name", required_argument, NULL, OPT_NAME},
        {"tag", required_argument, NULL, OPT_TAG},
        {"normalize", no_argument, NULL, OPT_NORMALIZE},
        {"metadata", required_argument, NULL, OPT_METADATA},
        CLI_CONN_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_common o = {0};
    const char *name = NULL, *metadata = NULL;
    int normalize = 0, c, rc = CLI_FAIL;
    json_t *tags = json_array(), *sources = json_array(), *body = NULL;

    if (!tags || !sources) goto out;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        switch (c) {
        case OPT_NAME: name = optarg; break;
        case OPT_TAG: json_array_append_new(tags, json_string(optarg)); break;
        case OPT_NORMALIZE: normalize = 1; break;
        case OPT_METADATA: metadata = optarg; break;
        case 'h':
            fputs(merge_help, stdout);
            rc = CLI_OK;
            goto out;
        default: rc = cli_bad_option("merge"); goto out;
        }
    }
    if (optind >= argc) {
        rc = cli_usage("merge", "give the sources as STATE=WEIGHT (e.g. a=0.5 b=0.5)");
        goto out;
    }
    for (int i = optind; i < argc; i++) {
        if (cli_parse_source(argv[i], sources)) {
            rc = cli_usage("merge", "%s", ss_errmsg());
            goto out;
        }
    }
    body = json_pack("{s:O,s:b}", "sources", sources, "normalize", normalize);
    if (!body) goto out;
    if (name) json_object_set_new(body, "name", json_string(name));
    if ((rc = add_tags_meta("merge", body, tags, metadata))) goto out;
    rc = post_record("merge", &o, "/v1/states/merge", body);
out:
    json_decref(body);
    json_decref(sources);
    json_decref(tags);
    return rc;
}

static const char save_help[] =
    "usage: statesoup save [--name N] (--prompt TEXT | --prompt-file FILE | --tokens IDS)\n"
    "                      [--from STATE] [--tag T]... [--url URL]\n"
    "\n"
    "Run the daemon's model over a prompt and store the resulting recurrent state: from the zero\n"
    "state, or continuing from a stored one (--from). Prints the new record.\n"
    "\n"
    "  --name N             name the new state (default: unnamed, addressed by its id)\n"
    "  --prompt TEXT        the prompt (the daemon tokenizes it)\n"
    "  --prompt-file FILE   read the prompt from FILE ('-' for stdin)\n"
    "  --tokens IDS         the prompt as token ids, e.g. 1,2,3 (no tokenizer needed)\n"
    "  --from STATE         start from this stored state instead of the zero state\n"
    "  --tag T              tag it (repeatable)\n"
    "  --metadata JSON      a JSON object stored with the record\n" CLI_CONN_HELP
    "\n"
    "example:\n"
    "  statesoup save --name intro --tag demo --prompt 'Dictionary:\\napple = red\\n'\n";

int cmd_save(int argc, char **argv)
{
    static const struct option opts[] = {
        {"name", required_argument, NULL, OPT_NAME},
        {"prompt", required_argument, NULL, OPT_PROMPT},
        {"prompt-file", required_argument, NULL, OPT_PROMPT_FILE},
        {"tokens", required_argument, NULL, OPT_TOKENS},
        {"from", required_argument, NULL, OPT_FROM},
        {"tag", required_argument, NULL, OPT_TAG},
        {"metadata", required_argument, NULL, OPT_METADATA},
        CLI_CONN_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_common o = {0};
    const char *name = NULL, *prompt = NULL, *prompt_file = NULL, *tokens = NULL, *from = NULL;
    const char *metadata = NULL;
    int c, rc = CLI_FAIL;
    json_t *tags = json_array(), *body = NULL, *ids = NULL;
    char *text = NULL;
    size_t len = 0;

    if (!tags) goto out;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        switch (c) {
        case OPT_NAME: name = optarg; break;
        case OPT_PROMPT: prompt = optarg; break;
        case OPT_PROMPT_FILE: prompt_file = optarg; break;
        case OPT_TOKENS: tokens = optarg; break;
        case OPT_FROM: from = optarg; break;
        case OPT_TAG: json_array_append_new(tags, json_string(optarg)); break;
        case OPT_METADATA: metadata = optarg; break;
        case 'h':
            fputs(save_help, stdout);
            rc = CLI_OK;
            goto out;
        default: rc = cli_bad_option("save"); goto out;
        }
    }
    if (optind < argc) {
        rc = cli_usage("save", "unexpected argument '%s'", argv[optind]);
        goto out;
    }
    if (!!prompt + !!prompt_file + !!tokens != 1) {
        rc = cli_usage("save", "give exactly one of --prompt, --prompt-file, --tokens");
        goto out;
    }
    if (tokens && cli_parse_ids_json(tokens, &ids)) {
        rc = cli_usage("save", "--tokens: %s", ss_errmsg());
        goto out;
    }
    if (prompt_file && cli_read_input(prompt_file, (size_t)1 << 30, &text, &len)) {
        rc = cli_fail("save");
        goto out;
    }
    if (!(body = json_object())) goto out;
    if (ids) {
        json_object_set(body, "tokens", ids);
    } else {
        json_object_set_new(body, "prompt",
                            text ? json_stringn(text, len) : json_string(prompt));
        if (!json_object_get(body, "prompt")) {
            rc = cli_usage("save", "the prompt is not valid UTF-8");
            goto out;
        }
    }
    if (name) json_object_set_new(body, "name", json_string(name));
    if (from) json_object_set_new(body, "from", json_string(from));
    if ((rc = add_tags_meta("save", body, tags, metadata))) goto out;
    rc = post_record("save", &o, "/v1/states", body);
out:
    free(text);
    json_decref(ids);
    json_decref(body);
    json_decref(tags);
    return rc;
}

/* ---- verify ---------------------------------------------------------------------------------- */

static const char verify_help[] =
    "usage: statesoup verify --data DIR [--json]\n"
    "\n"
    "Check every stored state's checksum (fsck for the catalog), reading the store read-only; safe\n"
    "while the daemon runs (it never holds off its writes). Prints the counts and the store's size;\n"
    "exits 1 when a state fails its checksum, naming the last one.\n"
    "\n"
    "  --data DIR           the daemon's store directory (its --data)\n"
    "  --json               print the counts as JSON\n"
    "  -h, --help           this text\n"
    "\n"
    "example:\n"
    "  statesoup verify --data /var/lib/statesoup\n";

int cmd_verify(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", required_argument, NULL, CLI_OPT_DATA},
        {"json", no_argument, NULL, CLI_OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cli_common o = {0};
    int c, rc = CLI_FAIL;
    ss_store *st = NULL;
    uint64_t checked = 0, bad = 0;
    ss_store_stats stats;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (cli_common_opt(&o, c, optarg)) continue;
        if (c == 'h') {
            fputs(verify_help, stdout);
            return CLI_OK;
        }
        return cli_bad_option("verify");
    }
    if (optind < argc) return cli_usage("verify", "unexpected argument '%s'", argv[optind]);
    if (!o.data) return cli_usage("verify", "--data DIR is required (the daemon's store)");
    if (!(st = open_store("verify", o.data))) goto out;
    if (ss_store_verify(st, &checked, &bad)) {
        rc = cli_fail("verify");
        goto out;
    }
    const char *why = bad ? ss_errmsg() : NULL;
    char *why_copy = why ? strdup(why) : NULL;
    if (ss_store_get_stats(st, &stats)) {
        free(why_copy);
        rc = cli_fail("verify");
        goto out;
    }
    if (o.json) {
        json_t *j = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "checked", (json_int_t)checked, "bad",
                              (json_int_t)bad, "states", (json_int_t)stats.n_states, "blob_bytes",
                              (json_int_t)stats.blob_bytes, "map_size", (json_int_t)stats.map_size,
                              "file_bytes", (json_int_t)stats.file_bytes);
        cli_print_json(j);
        json_decref(j);
    } else {
        char b1[32], b2[32], b3[32];
        printf("states      %llu\n"
               "checked     %llu\n"
               "bad         %llu\n"
               "blob bytes  %s\n"
               "file bytes  %s\n"
               "map size    %s\n",
               (unsigned long long)stats.n_states, (unsigned long long)checked,
               (unsigned long long)bad, cli_human_bytes(stats.blob_bytes, b1, sizeof b1),
               cli_human_bytes(stats.file_bytes, b2, sizeof b2),
               cli_human_bytes(stats.map_size, b3, sizeof b3));
    }
    if (bad) {
        fprintf(stderr, "statesoup verify: %llu state(s) failed the checksum; last: %s\n",
                (unsigned long long)bad, why_copy ? why_copy : "?");
    }
    free(why_copy);
    rc = bad ? CLI_FAIL : CLI_OK;
out:
    ss_store_close(st);
    return rc;
}
