/*
 * util.c - argument helpers shared by the `statesoup` commands: the options every daemon command
 * takes, numbers with their allowed range, token-id lists, "STATE=WEIGHT" merge sources, and
 * reading an input file or stdin. Kept in one place so every command reports bad arguments the
 * same way (a line naming the option, exit code 2).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ss_util.h"

int cli_common_opt(cli_common *o, int c, const char *arg)
{
    switch (c) {
    case CLI_OPT_URL: o->url = arg; return 1;
    case CLI_OPT_API_KEY: o->api_key = arg; return 1;
    case CLI_OPT_JSON: o->json = 1; return 1;
    case CLI_OPT_DATA: o->data = arg; return 1;
    default: return 0;
    }
}

int cli_parse_num(const char *cmd, const char *opt, const char *s, double lo, double hi,
                  double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !(v >= lo && v <= hi)) {
        fprintf(stderr, "statesoup %s: --%s %s: expected a number in [%g, %g]\n", cmd, opt, s, lo,
                hi);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_bad_option(const char *cmd)
{
    fprintf(stderr, "(statesoup %s --help lists the options)\n", cmd);
    return CLI_USAGE;
}

int cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "statesoup %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(statesoup %s --help lists the options)\n", cmd);
    return CLI_USAGE;
}

/* Read all of stream f (stdin) into a growing buffer. */
static ss_err read_stream(FILE *f, size_t max_bytes, char **out, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) return ss_fail(SS_ERR_NOMEM, "out of memory");
    for (;;) {
        if (cap - n < 2) {
            char *nb = cap * 2 > max_bytes + 2 ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return cap * 2 > max_bytes + 2
                           ? ss_fail(SS_ERR_TOO_LARGE, "stdin: more than %zu bytes", max_bytes)
                           : ss_fail(SS_ERR_NOMEM, "out of memory");
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        if (r == 0) break;
        n += r;
    }
    if (ferror(f)) {
        free(buf);
        return ss_fail(SS_ERR_IO, "stdin: read error");
    }
    if (n > max_bytes) {
        free(buf);
        return ss_fail(SS_ERR_TOO_LARGE, "stdin: more than %zu bytes", max_bytes);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return SS_OK;
}

ss_err cli_read_input(const char *path, size_t max_bytes, char **buf, size_t *len)
{
    if (!strcmp(path, "-")) return read_stream(stdin, max_bytes, buf, len);
    return ss_read_file(path, max_bytes, buf, len);
}

ss_err cli_parse_ids_json(const char *s, json_t **out)
{
    json_t *arr = json_array();
    if (!arr) return ss_fail(SS_ERR_NOMEM, "out of memory");
    while (*s == ',' || *s == ' ') s++;
    while (*s) {
        char *end;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (end == s || x < 0 || x > INT32_MAX || errno == ERANGE ||
            (*end && *end != ',' && *end != ' ')) {
            json_decref(arr);
            return ss_fail(SS_ERR_INVALID, "'%s' is not a list of token ids (e.g. 1,2,3)", s);
        }
        if (json_array_append_new(arr, json_integer(x))) {
            json_decref(arr);
            return ss_fail(SS_ERR_NOMEM, "out of memory");
        }
        s = end;
        while (*s == ',' || *s == ' ') s++;
    }
    *out = arr;
    return SS_OK;
}

ss_err cli_parse_source(const char *s, json_t *arr)
{
    const char *eq = strrchr(s, '=');
    if (!eq || eq == s || !eq[1]) {
        return ss_fail(SS_ERR_INVALID, "'%s': expected STATE=WEIGHT (e.g. intro=0.5)", s);
    }
    char *end;
    errno = 0;
    double w = strtod(eq + 1, &end);
    if (*end || errno == ERANGE || !isfinite(w)) {
        return ss_fail(SS_ERR_INVALID, "'%s': the weight '%s' is not a finite number", s, eq + 1);
    }
    json_t *src = json_pack("{s:s%,s:f}", "state", s, (size_t)(eq - s), "weight", w);
    if (!src || json_array_append_new(arr, src)) return ss_fail(SS_ERR_NOMEM, "out of memory");
    return SS_OK;
}

void cli_unescape(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == '\\' && r[1]) {
            r++;
            *w++ = *r == 'n' ? '\n' : *r == 't' ? '\t' : *r == 'r' ? '\r' : *r;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

ss_err cli_add_tags(json_t *arr, const char *arg)
{
    while (*arg) {
        const char *c = strchr(arg, ',');
        size_t n = c ? (size_t)(c - arg) : strlen(arg);
        if (n) {
            json_t *t = json_stringn(arg, n);
            if (!t) return ss_fail(SS_ERR_INVALID, "tag '%.*s' is not valid UTF-8", (int)n, arg);
            if (json_array_append_new(arr, t)) return ss_fail(SS_ERR_NOMEM, "out of memory");
        }
        arg += n + (c ? 1 : 0);
    }
    return SS_OK;
}
