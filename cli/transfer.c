/*
 * transfer.c - state files in and out of the catalog: `export` (a state as a safetensors file)
 * and `import` (such a file into the catalog).
 *
 * Through a daemon both are single requests whose bodies are streamed to or read from a file.
 * Offline (--data DIR) export has no daemon to lay the floats out, so it loads the model
 * (--model DIR) for the tensor shapes, refuses states made by another model, and writes the same
 * metadata the daemon writes, so that either file imports the same way. A file being written
 * lives under a temporary name until it is complete: a failed export never leaves half a file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "ss_model.h"
#include "ss_store.h"

#define MAX_IMPORT ((size_t)1 << 34) /* state files are at most a few GiB */

enum { OPT_DTYPE = CLI_OPT_FIRST_LOCAL, OPT_MODEL, OPT_NAME, OPT_TAG };

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

/* The stored state `ref` (its blob in `dtype`, NULL = F32) as info->state_floats F32 values in
 * *floats, and its decay in *decay (NULL when the blob carries none; it points into *blob). *blob
 * and *floats are the caller's to free, also on failure. */
static ss_err read_state(ss_store *st, const char *ref, const ss_model_info *info,
                         const char *dtype, uint8_t **blob, float **floats, const float **decay)
{
    size_t len = 0;
    ss_err e = ss_store_get_blob(st, ref, info->fingerprint, NULL, 0, &len, NULL);
    if (e != SS_ERR_TOO_LARGE && e != SS_OK) return e;
    *blob = malloc(len ? len : 1);
    *floats = malloc(info->state_bytes);
    if (!*blob || !*floats) {
        return ss_fail(SS_ERR_NOMEM, "cannot allocate %zu bytes", len + info->state_bytes);
    }
    /* an F32 blob may carry the state's decay after its floats (docs/api.md) */
    size_t db = info->decay_floats * sizeof(float), sl = len;
    *decay = NULL;
    if (db && len == info->state_bytes + db) {
        sl = info->state_bytes;
        *decay = (const float *)(*blob + sl);
    }
    if ((e = ss_store_get_blob(st, ref, info->fingerprint, *blob, len, &len, NULL))) return e;
    return blob_to_f32(*blob, sl, dtype, info->state_floats, *floats);
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
    size_t flen = 0;

    if (!(st = cli_open_store("export", data_dir))) goto out;
    if (ss_store_get_record(st, ref, &rec_text) || !(rec = cli_parse_text(rec_text))) {
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
    const float *decay = NULL;
    if (read_state(st, ref, info, json_string_value(json_object_get(rec, "dtype")), &blob, &floats,
                   &decay)) {
        rc = cli_fail("export");
        goto out;
    }
    /* as the daemon's GET /v1/states/{s}/data writes it (safetensors metadata values are
     * strings): the record as JSON text, which import reads back for n_tokens and parents */
    meta = json_pack("{s:s,s:s}", "record", rec_text, "format", "statesoup-state-v1");
    if (!meta || !(meta_text = json_dumps(meta, JSON_COMPACT))) {
        ss_fail(SS_ERR_NOMEM, "out of memory");
        rc = cli_fail("export");
        goto out;
    }
    if (ss_state_export_decay(m, floats, decay, dtype, meta_text, &file, &flen)) {
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
    if (cli_check_source("export", &o)) return CLI_USAGE;
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
    "  --tag T              tag it (repeatable, or T1,T2)\n" CLI_CONN_HELP
    "\n"
    "example:\n"
    "  statesoup import intro.safetensors --name intro-copy --tag imported\n";

/* Tags escaped and joined by ',' for the tags= query parameter (free() it). */
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

/* "/v1/states/import" with the name and tags as query parameters, escaped (free() it); NULL
 * after ss_fail when out of memory. */
static char *import_path(const char *name, char *const *tags, int n_tags)
{
    char *ename = name ? cli_escape(name) : NULL;
    char *etags = n_tags ? join_escaped(tags, n_tags) : NULL;
    size_t plen = 64 + (ename ? strlen(ename) : 0) + (etags ? strlen(etags) : 0);
    char *path = NULL;
    if ((name && !ename) || (n_tags && !etags) || !(path = malloc(plen))) {
        ss_fail(SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    snprintf(path, plen, "/v1/states/import%s%s%s%s%s", ename || etags ? "?" : "",
             ename ? "name=" : "", ename ? ename : "", ename && etags ? "&" : "",
             etags ? "tags=" : "");
    if (etags) strcat(path, etags);
out:
    free(etags);
    free(ename);
    return path;
}

/* Print import's reply: the new record, or with raw the JSON as it came. CLI_OK, or the exit
 * status after saying why. */
static int print_imported(const cli_resp *resp, int raw)
{
    json_error_t je;
    json_t *rec = json_loadb(resp->body ? resp->body : "", resp->len, 0, &je);
    if (!rec) {
        ss_fail(SS_ERR_FORMAT, "the reply is not JSON: %s", je.text);
        return cli_fail("import");
    }
    if (raw) {
        cli_print_raw(resp->body);
    } else {
        cli_print_record(rec);
    }
    json_decref(rec);
    return CLI_OK;
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
    char **tags = NULL, *buf = NULL, *path = NULL;
    int n_tags = 0, c, rc = CLI_FAIL;
    size_t len = 0;
    cli_conn conn = {0};
    cli_resp resp = {0};

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
    if (!(path = import_path(name, tags, n_tags))) {
        rc = cli_fail("import");
        goto out;
    }
    cli_req rq = {.method = "POST",
                  .path = path,
                  .content_type = "application/octet-stream",
                  .body = buf,
                  .body_len = len};
    rc = cli_http(&conn, &rq, &resp) ? cli_fail("import") : print_imported(&resp, o.json);
out:
    cli_resp_free(&resp);
    free(path);
    free(buf);
    free(tags);
    cli_conn_free(&conn);
    return rc;
}

